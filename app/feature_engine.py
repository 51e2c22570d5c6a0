"""Event-time features per customer and per terminal: pure functions over small, sorted, JSON-able states.

State is plain lists sorted by event time, holding only what the longest window needs (plus the allowed
lateness), so it fits a RocksDB table and its changelog. Windows follow the transactions' own timestamps: a
replay of last month gives the features that living through it gave.

Definitions (t = the transaction's event time, "before" = arrived earlier in the stream):
- customer windows (t - w, t] over the customer's transactions that arrived before, plus this one:
  count, mean, std (population), max for w in 1 hour, 1, 7 and 30 days;
- z-score of the amount against the 30-day mean and std (0 when std is 0);
- seconds since the customer's latest earlier transaction (capped at 30 days; 30 days when none);
- terminal new for the customer within 30 days, and the customer's distinct terminals in 30 days;
- terminal windows [t - delay - n days, t - delay) over transactions that arrived before: count and risk
  (frauds / count; 0 when empty), n in 1, 7, 30; and the terminal's count over (t - 1 hour, t] with this one.
A fraud counts toward its transaction's time, only once its label has arrived and only from the label's own
time on (``known_s <= t``), so a replay that delivers labels early still never sees the future.

``tx_id`` is the idempotency key: a transaction seen again (a replay after a crash, a producer retry) while its
entry is still held (it is, within the lateness) is not added twice; it gets the features it had on its first
arrival (from the entries that came before it, by arrival sequence number) and the state is unchanged.
"""

from __future__ import annotations

import bisect
import math

HOUR_S = 3600.0
DAY_S = 86400.0
CUSTOMER_WINDOWS_S: dict[str, float] = {"1hour": HOUR_S, "1day": DAY_S, "7day": 7 * DAY_S, "30day": 30 * DAY_S}
TERMINAL_DAYS = (1, 7, 30)
CUSTOMER_FEATURE_NAMES: tuple[str, ...] = (
    *(f"customer_{m}_{w}" for w in CUSTOMER_WINDOWS_S for m in ("nb_tx", "avg_amount", "std_amount", "max_amount")),
    "amount_zscore_30day",
    "seconds_since_previous_tx",
    "terminal_new_for_customer_30day",
    "customer_nb_terminals_30day",
)
TERMINAL_FEATURE_NAMES: tuple[str, ...] = (
    *(f"terminal_{m}_{n}day_delay" for n in TERMINAL_DAYS for m in ("nb_tx", "risk")),
    "terminal_nb_tx_1hour",
)

# Customer state: [[t, amount, terminal_id, tx_id, seq], ...]; terminal state: [[t, tx_id, seq, fraud_known_s
# or None], ...]; both sorted by t (ties by arrival). ``seq`` numbers arrivals per key.
CustomerState = list[list[object]]
TerminalState = list[list[object]]


def _time(entry: list[object]) -> float:
    return entry[0]  # type: ignore[return-value]


def _inside(state: list[list[object]], lo: float, hi: float, hi_inclusive: bool) -> list[list[object]]:
    """Entries with lo < t <= hi (``hi_inclusive``) or lo <= t < hi (not); binary search, no copy of times."""
    if hi_inclusive:
        return state[bisect.bisect_right(state, lo, key=_time) : bisect.bisect_right(state, hi, key=_time)]
    return state[bisect.bisect_left(state, lo, key=_time) : bisect.bisect_left(state, hi, key=_time)]


def _find(state: list[list[object]], tx_id: str, id_index: int) -> list[object] | None:
    for entry in state:
        if entry[id_index] == tx_id:
            return entry
    return None


def _next_seq(state: list[list[object]], seq_index: int) -> int:
    return max((int(e[seq_index]) for e in state), default=-1) + 1  # type: ignore[call-overload]


def _before(state: list[list[object]], seq_index: int, seq: object) -> list[list[object]]:
    return [e for e in state if int(e[seq_index]) < int(seq)]  # type: ignore[call-overload]


def customer_features(
    state: CustomerState, t: float, amount: float, terminal_id: str, tx_id: str, lateness_s: float = DAY_S
) -> tuple[dict[str, float], CustomerState]:
    """Features of one transaction from the customer's state, and the state with it added and pruned.

    >>> x, state = customer_features([], 0.0, 10.0, "k1", "t1")
    >>> x2, state = customer_features(state, 60.0, 30.0, "k1", "t2")
    >>> x2["customer_nb_tx_1hour"], x2["customer_avg_amount_1hour"], x2["terminal_new_for_customer_30day"]
    (2.0, 20.0, 0.0)
    >>> customer_features(state, 0.0, 10.0, "k1", "t1") == (x, state)  # a repeat: first features, no change
    True
    """
    seen = _find(state, tx_id, 3)
    if seen is not None:
        earlier = _before(state, 4, seen[4])
        with_seen = list(earlier)
        bisect.insort_right(with_seen, seen, key=_time)
        return _customer_x(with_seen, earlier, _time(seen), float(seen[1]), str(seen[2])), state  # type: ignore[arg-type]
    after = list(state)
    bisect.insort_right(after, [t, amount, terminal_id, tx_id, _next_seq(state, 4)], key=_time)
    x = _customer_x(after, state, t, amount, terminal_id)
    horizon = _time(after[-1]) - 30 * DAY_S - lateness_s
    return x, after[bisect.bisect_right(after, horizon, key=_time) :]


def _customer_x(
    with_this: CustomerState, state: CustomerState, t: float, amount: float, terminal_id: str
) -> dict[str, float]:
    """``state`` holds what arrived before the transaction, ``with_this`` the same plus the transaction."""
    x: dict[str, float] = {}
    for name, window_s in CUSTOMER_WINDOWS_S.items():
        amounts = [float(e[1]) for e in _inside(with_this, t - window_s, t, True)]  # type: ignore[arg-type]
        n = len(amounts)
        mean = sum(amounts) / n
        x[f"customer_nb_tx_{name}"] = float(n)
        x[f"customer_avg_amount_{name}"] = mean
        x[f"customer_std_amount_{name}"] = math.sqrt(sum((a - mean) ** 2 for a in amounts) / n)
        x[f"customer_max_amount_{name}"] = max(amounts)
    std30 = x["customer_std_amount_30day"]
    x["amount_zscore_30day"] = (amount - x["customer_avg_amount_30day"]) / std30 if std30 > 0 else 0.0
    previous = bisect.bisect_right(state, t, key=_time)  # state is sorted: the latest earlier one is just before
    x["seconds_since_previous_tx"] = min(t - _time(state[previous - 1]), 30 * DAY_S) if previous else 30 * DAY_S
    month = _inside(state, t - 30 * DAY_S, t, True)
    x["terminal_new_for_customer_30day"] = 0.0 if any(e[2] == terminal_id for e in month) else 1.0
    x["customer_nb_terminals_30day"] = float(len({e[2] for e in month} | {terminal_id}))
    return x


def terminal_features(
    state: TerminalState, t: float, tx_id: str, delay_days: float = 7.0, lateness_s: float = DAY_S
) -> tuple[dict[str, float], TerminalState]:
    """Terminal features of one transaction, and the state with it added (fraud unknown yet) and pruned.

    >>> x, state = terminal_features([], 0.0, "t1")
    >>> x["terminal_nb_tx_1hour"], x["terminal_nb_tx_7day_delay"]
    (1.0, 0.0)
    >>> state = mark_fraud(state, "t1", known_s=2 * 86400.0)
    >>> terminal_features(state, 7.5 * 86400, "t2")[0]["terminal_risk_1day_delay"]  # label known by then
    1.0
    >>> terminal_features(state, 1.5 * 86400, "t3", delay_days=1)[0]["terminal_risk_1day_delay"]  # not yet
    0.0
    """
    seen = _find(state, tx_id, 1)
    if seen is not None:
        return _terminal_x(_before(state, 2, seen[2]), _time(seen), delay_days), state
    x = _terminal_x(state, t, delay_days)
    after = list(state)
    entry: list[object] = [t, tx_id, _next_seq(state, 2), None]
    bisect.insort_right(after, entry, key=_time)
    horizon = _time(after[-1]) - (delay_days + 30) * DAY_S - lateness_s
    return x, after[bisect.bisect_left(after, horizon, key=_time) :]


def _terminal_x(state: TerminalState, t: float, delay_days: float) -> dict[str, float]:
    x: dict[str, float] = {}
    end = t - delay_days * DAY_S
    for n in TERMINAL_DAYS:
        rows = _inside(state, end - n * DAY_S, end, False)
        count = len(rows)
        frauds = sum(1 for e in rows if _fraud_known_by(e, t))
        x[f"terminal_nb_tx_{n}day_delay"] = float(count)
        x[f"terminal_risk_{n}day_delay"] = frauds / count if count else 0.0
    x["terminal_nb_tx_1hour"] = float(len(_inside(state, t - HOUR_S, t, True)) + 1)
    return x


def _fraud_known_by(entry: list[object], t: float) -> bool:
    known = entry[3]
    return known is not None and float(known) <= t  # type: ignore[arg-type]


def mark_fraud(state: TerminalState, tx_id: str, known_s: float) -> TerminalState:
    """Record a fraud label that arrived, known from ``known_s`` (no-op when pruned or unknown; idempotent)."""
    out = []
    for e in state:
        if e[1] == tx_id:
            known = known_s if e[3] is None else min(float(e[3]), known_s)  # type: ignore[arg-type]
            e = [e[0], e[1], e[2], known]
        out.append(e)
    return out


def newest_event_time_s(state: list[list[object]]) -> float:
    """Event time of the key's newest entry (states are sorted), for expiring idle keys in stream time."""
    return _time(state[-1]) if state else float("-inf")
