"""Event-time features per customer and per terminal: pure functions over small, sorted, JSON-able states.

State is plain lists sorted by event time, holding only what the longest window needs (plus the allowed
lateness), so it travels as one small changelog record per entry. Windows follow the transactions' own timestamps: a
replay of last month gives the features that living through it gave.

Definitions (t = the transaction's event time, "before" = arrived earlier in the stream):
- customer windows (t - w, t] over the customer's transactions that arrived before, plus this one:
  count, mean, std (population), max for w in 1 hour, 1, 7 and 30 days;
- z-score of the amount against the 30-day mean and std (0 when the std is 0, or rounding noise <= 1e-9);
- seconds since the customer's latest earlier transaction (capped at 30 days; 30 days when none);
- terminal new for the customer within 30 days, and the customer's distinct terminals in 30 days;
- terminal windows [t - delay - n days, t - delay) over transactions that arrived before: count and risk
  (frauds / count; 0 when empty), n in 1, 7, 30; and the terminal's count over (t - 1 hour, t] with this one.
A fraud counts toward its transaction's time, only once its label has arrived and only from the label's own
time on (``known_s <= t``), so a replay that delivers labels early still never sees the future. Fraud marks
are not stored in the terminal state: the caller keeps one mapping ``frauds_known_s`` (fraud ``tx_id`` ->
earliest ``known_s``), updated the moment a fraud label arrives (:func:`record_fraud`).

``tx_id`` is the idempotency key: a transaction seen again (a replay after a crash, a producer retry) while its
entry is still held (it is, within the lateness) is not added twice; it gets the features it had on its first
arrival and the state is unchanged (the very same object is returned). Both states number a key's arrivals
(``seq``) for this: "before" is by arrival, not by event time.
"""

from __future__ import annotations

import bisect
import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

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
# What a customer lookup shows: the windows themselves, not the per-transaction comparisons.
CUSTOMER_WINDOW_NAMES: tuple[str, ...] = (*CUSTOMER_FEATURE_NAMES[:16], "customer_nb_terminals_30day")
TERMINAL_FEATURE_NAMES: tuple[str, ...] = (
    *(f"terminal_{m}_{n}day_delay" for n in TERMINAL_DAYS for m in ("nb_tx", "risk")),
    "terminal_nb_tx_1hour",
)

# Customer state: [(t, amount, terminal_id, tx_id, seq), ...]; terminal state: [(t, tx_id, seq), ...]; both
# sorted by t, ties by arrival. ``seq`` numbers a key's arrivals (larger = later) for the repeat semantics: the
# transactions that arrived before a repeat's first arrival. Callers never need it (the functions keep it).
# Terminal entries given as (t, tx_id) (no seq: count as arrived before every numbered entry) or with a 4th
# field (the per-entry fraud mark of earlier versions, ignored) are read as well.
# Entries are tuples of numbers and strings: the garbage collector stops tracking them, so a full collection
# does not walk every entry of every key (with lists it did: pauses of 100-200 ms on the decision loop).
CustomerState = list[tuple[Any, ...]]
TerminalState = list[tuple[Any, ...]]

_T = operator.itemgetter(0)
_30_DAYS_S = 30 * DAY_S
_CUSTOMER_WINDOWS = tuple(
    (w, f"customer_nb_tx_{n}", f"customer_avg_amount_{n}", f"customer_std_amount_{n}", f"customer_max_amount_{n}")
    for n, w in CUSTOMER_WINDOWS_S.items()
)
assert sorted(CUSTOMER_WINDOWS_S.values()) == list(CUSTOMER_WINDOWS_S.values())[:-1] + [_30_DAYS_S]  # nested
_TERMINAL_WINDOWS = tuple((n, f"terminal_nb_tx_{n}day_delay", f"terminal_risk_{n}day_delay") for n in TERMINAL_DAYS)
_STD_NOISE = 1e-9  # below this a standard deviation is rounding noise of equal amounts, not spread


def _time(entry: Sequence[Any]) -> float:
    return entry[0]  # type: ignore[return-value]


def customer_features(
    state: CustomerState, t: float, amount: float, terminal_id: str, tx_id: str, lateness_s: float = DAY_S
) -> tuple[dict[str, float], CustomerState]:
    """Features of one transaction from the customer's state, and a new state with it added and pruned.

    ``state`` is never modified. A repeated ``tx_id`` returns the features of its first arrival and ``state``
    itself (``new_state is state`` tells a repeat).

    >>> x, state = customer_features([], 0.0, 10.0, "k1", "t1")
    >>> x2, state = customer_features(state, 60.0, 30.0, "k1", "t2")
    >>> x2["customer_nb_tx_1hour"], x2["customer_avg_amount_1hour"], x2["terminal_new_for_customer_30day"]
    (2.0, 20.0, 0.0)
    >>> again = customer_features(state, 0.0, 10.0, "k1", "t1")  # a repeat: first features, no change
    >>> again[0] == x, again[1] is state
    (True, True)
    """
    if not state:
        return _customer_x((), (), (), t, amount, terminal_id), [(t, amount, terminal_id, tx_id, 0)]
    # One C-level transpose of the state gives every column the windows need (cheaper than Python loops).
    times, amounts, terminals, ids, seqs = zip(*state, strict=True)
    if tx_id in ids:
        seen = state[ids.index(tx_id)]
        earlier = [e for e in state if e[4] < seen[4]]  # type: ignore[operator]
        columns = tuple(zip(*earlier, strict=True)) or ((), (), ())
        x = _customer_x(columns[0], columns[1], columns[2], _time(seen), seen[1], seen[2])  # type: ignore[arg-type]
        return x, state
    x = _customer_x(times, amounts, terminals, t, amount, terminal_id)
    at = bisect.bisect_right(times, t)  # after equal times: ties keep arrival order
    horizon = max(times[-1], t) - _30_DAYS_S - lateness_s
    keep = bisect.bisect_right(times, horizon)
    if t <= horizon:  # later than the lateness: scored, but already out of what the state holds
        return x, state[keep:]
    return x, [*state[keep:at], (t, amount, terminal_id, tx_id, max(seqs) + 1), *state[at:]]


def _customer_x(
    times: Sequence[Any], amounts: Sequence[Any], terminals: Sequence[Any], t: float, amount: float, terminal_id: str
) -> dict[str, float]:
    """Columns of what arrived before the transaction, sorted by time; the transaction itself is added here.

    The windows are nested and all end at ``t``. One pass backward from ``t``, shortest window first: each
    window adds the segment just older than the previous one (boundaries by binary search) to the running
    count, sum and maximum, one C-level ``sum``/``max`` per segment, and emits its values. The deviations are
    the reference's two-pass formula around each window's own mean, one C-level ``math.dist`` over the window
    (extended precision inside), never a sum of squares minus a squared sum, which cancels catastrophically
    when the spread is small against the mean.
    """
    end = bisect.bisect_right(times, t)  # entries with time <= t
    start = bisect.bisect_right(times, t - _30_DAYS_S, 0, end)
    x: dict[str, float] = {}
    total, top, done = amount, amount, end  # amounts[done:end] and this one are in ``total`` and ``top``
    for window_s, nb_tx, avg, std, max_ in _CUSTOMER_WINDOWS:  # shortest first
        lo = bisect.bisect_right(times, t - window_s, start, done)
        if lo < done:
            segment = amounts[lo:done]
            total += sum(segment)
            top = max(top, max(segment))
            done = lo
        n = end - lo + 1
        mean = total / n
        x[nb_tx] = float(n)
        x[avg] = mean
        if n == 1:
            x[std] = 0.0
        else:
            x[std] = math.sqrt((math.dist(amounts[lo:end], (mean,) * (n - 1)) ** 2 + (amount - mean) ** 2) / n)
        x[max_] = float(top)
    std30 = x["customer_std_amount_30day"]
    x["amount_zscore_30day"] = (amount - x["customer_avg_amount_30day"]) / std30 if std30 > _STD_NOISE else 0.0
    x["seconds_since_previous_tx"] = min(t - times[end - 1], _30_DAYS_S) if end else _30_DAYS_S
    recent = set(terminals[start:end])
    new = terminal_id not in recent
    x["terminal_new_for_customer_30day"] = 1.0 if new else 0.0
    x["customer_nb_terminals_30day"] = float(len(recent) + new)
    return x


def terminal_x(
    state: TerminalState, t: float, frauds_known_s: Mapping[str, float], delay_days: float = 7.0
) -> dict[str, float]:
    """Terminal features of a transaction at ``t`` from the entries that arrived before it (read-only).

    Over ``[t - delay - n days, t - delay)`` for n in 1, 7, 30: the count, and the risk (entries whose fraud
    label is known by ``t``, ``frauds_known_s[tx_id] <= t``, over the count; 0 when empty); and
    ``terminal_nb_tx_1hour``: 1 (this one) plus the entries in ``(t - 1 hour, t]``. ``state`` must not hold
    the transaction itself (it would count in its own 1-hour window): see :func:`terminal_features`.

    >>> state = [(0.0, "t1", 0), (3600.0, "t2", 1)]
    >>> x = terminal_x(state, 7.5 * 86400, {"t1": 2 * 86400.0})  # t1 known to be fraud from day 2
    >>> x["terminal_nb_tx_1day_delay"], x["terminal_risk_1day_delay"], x["terminal_nb_tx_1hour"]
    (2.0, 0.5, 1.0)
    >>> terminal_x(state, 1.5 * 86400, {"t1": 2 * 86400.0}, delay_days=1)["terminal_risk_1day_delay"]  # not yet
    0.0
    """
    end = t - delay_days * DAY_S
    stop = bisect.bisect_left(state, end, key=_T)
    first = bisect.bisect_left(state, end - TERMINAL_DAYS[-1] * DAY_S, 0, stop, key=_T)
    # Frauds are rare: pick the entries of the longest window that have a fraud label at all, then look closer.
    flagged = [e for e in state[first:stop] if e[1] in frauds_known_s] if frauds_known_s else ()
    known = [_time(e) for e in flagged if frauds_known_s[e[1]] <= t]  # type: ignore[index]
    x: dict[str, float] = {}
    for n, nb_tx, risk in _TERMINAL_WINDOWS:
        lo = end - n * DAY_S
        count = stop - bisect.bisect_left(state, lo, first, stop, key=_T)
        x[nb_tx] = float(count)
        x[risk] = sum(lo <= e_t for e_t in known) / count if count else 0.0
    recent = bisect.bisect_right(state, t, key=_T) - bisect.bisect_right(state, t - HOUR_S, key=_T)
    x["terminal_nb_tx_1hour"] = float(recent + 1)
    return x


def add_terminal_entry(
    state: TerminalState, t: float, tx_id: str, delay_days: float = 7.0, lateness_s: float = DAY_S
) -> bool:
    """Add ``(t, tx_id, seq)`` to ``state`` IN PLACE (after equal times), prune; False, unchanged, on a repeat.

    Pruning keeps what the longest window of the newest entry needs, plus the lateness: entries older than
    ``newest - (delay_days + 30) days - lateness_s`` go (the new entry too, when it is that late).

    >>> state = [(0.0, "t1", 0)]
    >>> add_terminal_entry(state, 60.0, "t2"), add_terminal_entry(state, 60.0, "t2"), state
    (True, False, [(0.0, 't1', 0), (60.0, 't2', 1)])
    >>> add_terminal_entry(state, 39 * 86400.0, "t3"), state  # t1 and t2 are past 37 days + 1 day
    (True, [(3369600.0, 't3', 2)])
    """
    ids, next_seq = _ids_and_next_seq(state)
    if tx_id in ids:
        return False
    _insert_and_prune(state, (t, tx_id, next_seq), delay_days, lateness_s)
    return True


def _ids_and_next_seq(state: TerminalState) -> tuple[Sequence[Any], int]:
    """The tx_ids, and a seq above every one held: one C-level transpose when every entry has its seq (entries
    given as ``(t, tx_id)`` have none and count as arrived before every numbered one)."""
    columns = tuple(zip(*state, strict=False))
    if len(columns) >= 3:
        return columns[1], max(columns[2]) + 1
    return [e[1] for e in state], max((e[2] for e in state if len(e) > 2), default=-1) + 1  # type: ignore[type-var, operator]


def _arrived_before(state: TerminalState, i: int) -> TerminalState:
    """The entries that arrived before ``state[i]``: lower seq (entries without one: before it in the list)."""
    seen = state[i]
    if len(seen) > 2:
        return [e for e in state if (e[2] if len(e) > 2 else -1) < seen[2]]  # type: ignore[operator]
    return [e for e in state[:i] if len(e) <= 2]


def _insert_and_prune(state: TerminalState, entry: tuple[Any, ...], delay_days: float, lateness_s: float) -> None:
    t = _time(entry)
    if not state or _time(state[-1]) <= t:
        state.append(entry)  # the common case: in event-time order
    else:
        bisect.insort_right(state, entry, key=_T)
    horizon = _time(state[-1]) - (delay_days + 30) * DAY_S - lateness_s
    if _time(state[0]) < horizon:
        del state[: bisect.bisect_left(state, horizon, key=_T)]


def terminal_features(
    state: TerminalState,
    t: float,
    tx_id: str,
    frauds_known_s: Mapping[str, float],
    delay_days: float = 7.0,
    lateness_s: float = DAY_S,
) -> tuple[dict[str, float], TerminalState]:
    """:func:`terminal_x` and a copy of ``state`` with the transaction added (:func:`add_terminal_entry`).

    ``state`` is never modified. A ``tx_id`` already held returns ``state`` itself and the features of its
    first arrival: its own time, the entries that arrived before it (by ``seq``), the labels known now.

    >>> frauds = {}
    >>> x, state = terminal_features([], 0.0, "t1", frauds)
    >>> x["terminal_nb_tx_1hour"], x["terminal_nb_tx_7day_delay"]
    (1.0, 0.0)
    >>> record_fraud(frauds, "t1", known_s=2 * 86400.0)
    >>> terminal_features(state, 7.5 * 86400, "t2", frauds)[0]["terminal_risk_1day_delay"]  # label known by then
    1.0
    >>> terminal_features(state, 1.5 * 86400, "t3", frauds, delay_days=1)[0]["terminal_risk_1day_delay"]  # not yet
    0.0
    >>> again = terminal_features(state, 0.0, "t1", frauds)  # a repeat: state unchanged, first features
    >>> again == (x, state), again[1] is state
    (True, True)
    """
    ids, next_seq = _ids_and_next_seq(state)
    if tx_id in ids:
        i = ids.index(tx_id)
        return terminal_x(_arrived_before(state, i), _time(state[i]), frauds_known_s, delay_days), state
    x = terminal_x(state, t, frauds_known_s, delay_days)
    after = list(state)
    _insert_and_prune(after, (t, tx_id, next_seq), delay_days, lateness_s)
    return x, after


def record_fraud(frauds_known_s: dict[str, float], tx_id: str, known_s: float) -> None:
    """Record a fraud label the moment it arrives: it counts from ``known_s`` on (the earliest, if sent twice)."""
    known = frauds_known_s.get(tx_id)
    frauds_known_s[tx_id] = known_s if known is None else min(known, known_s)


def newest_event_time_s(state: Sequence[Sequence[Any]]) -> float:
    """Event time of the key's newest entry (states are sorted), for expiring idle keys in stream time."""
    return _time(state[-1]) if state else float("-inf")


def customer_windows_at(state: CustomerState) -> tuple[float, dict[str, float]]:
    """A customer's windows over ``(t - w, t]`` at its newest event time ``t`` (read-only, for lookups): count,
    mean, std and max per window and the distinct terminals in 30 days, over every entry held.

    >>> t, x = customer_windows_at([(0.0, 10.0, "k1", "a", 0), (60.0, 30.0, "k2", "b", 1)])
    >>> t, x["customer_nb_tx_1hour"], x["customer_avg_amount_1hour"], x["customer_nb_terminals_30day"]
    (60.0, 2.0, 20.0, 2.0)
    """
    if not state:
        raise ValueError("no entries")
    times, amounts, terminals, _, _ = zip(*state, strict=True)
    t = times[-1]
    x = _customer_x(times[:-1], amounts[:-1], terminals[:-1], t, amounts[-1], terminals[-1])
    return t, {name: x[name] for name in CUSTOMER_WINDOW_NAMES}


def terminal_windows_at(
    state: TerminalState, frauds_known_s: Mapping[str, float], delay_days: float = 7.0
) -> tuple[float, dict[str, float]]:
    """A terminal's windows at its newest event time ``t`` (read-only, for lookups): the delayed counts and risks
    as :func:`terminal_x` gives them, and the entries held in ``(t - 1 hour, t]``.

    >>> t, x = terminal_windows_at([(0.0, "a", 0), (600.0, "b", 1)], {})
    >>> t, x["terminal_nb_tx_1hour"], x["terminal_nb_tx_1day_delay"]
    (600.0, 2.0, 0.0)
    """
    if not state:
        raise ValueError("no entries")
    t = _time(state[-1])
    x = terminal_x(state, t, frauds_known_s, delay_days)
    x["terminal_nb_tx_1hour"] -= 1.0  # terminal_x counts the transaction being scored; here there is none
    return t, x
