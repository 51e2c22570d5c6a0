"""Event-time features per customer and per terminal (groundwork for the feature-engine issue; not wired yet).

State is plain JSON-able lists, sorted by event time, holding only what the longest window needs (plus the
allowed lateness), so it fits a RocksDB table and its changelog. Windows follow the transactions' own
timestamps: a replay of last month gives the features that living through it gave.

Definitions (t = the transaction's event time, "before" = arrived earlier in the stream):
- customer windows (t - w, t] over the customer's transactions that arrived before, plus this one:
  count, mean, std (population), max for w in 1 hour, 1, 7 and 30 days;
- z-score of the amount against the 30-day mean and std (0 when std is 0);
- seconds since the customer's latest earlier transaction (capped at 30 days; 30 days when none);
- terminal new for the customer within 30 days, and the customer's distinct terminals in 30 days;
- terminal windows [t - delay - n days, t - delay) over transactions that arrived before: count and risk
  (frauds known by now / count; 0 when empty), n in 1, 7, 30; and the terminal's count over (t - 1 hour, t].
A fraud label counts only once it has arrived, toward its transaction's time.
"""

from __future__ import annotations

import bisect
import math

HOUR_S = 3600.0
DAY_S = 86400.0
CUSTOMER_WINDOWS_S: dict[str, float] = {"1hour": HOUR_S, "1day": DAY_S, "7day": 7 * DAY_S, "30day": 30 * DAY_S}
TERMINAL_DAYS = (1, 7, 30)

# Customer state: [[t, amount, terminal_id], ...] sorted by t. Terminal state: [[t, tx_id, fraud], ...].
CustomerState = list[list[object]]
TerminalState = list[list[object]]


def _time(entry: list[object]) -> float:
    return entry[0]  # type: ignore[return-value]


def _inside(state: list[list[object]], lo: float, hi: float, hi_inclusive: bool) -> list[list[object]]:
    """Entries with lo < t <= hi (``hi_inclusive``) or lo <= t < hi (not); binary search, no copy of times."""
    if hi_inclusive:
        return state[bisect.bisect_right(state, lo, key=_time) : bisect.bisect_right(state, hi, key=_time)]
    return state[bisect.bisect_left(state, lo, key=_time) : bisect.bisect_left(state, hi, key=_time)]


def customer_features(
    state: CustomerState, t: float, amount: float, terminal_id: str, lateness_s: float = DAY_S
) -> tuple[dict[str, float], CustomerState]:
    """Features of one transaction from the customer's state, and the state with it added and pruned."""
    before = list(state)
    bisect.insort_right(before, [t, amount, terminal_id], key=_time)
    x: dict[str, float] = {}
    for name, window_s in CUSTOMER_WINDOWS_S.items():
        amounts = [float(e[1]) for e in _inside(before, t - window_s, t, True)]  # type: ignore[arg-type]
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
    horizon = _time(before[-1]) - 30 * DAY_S - lateness_s
    return x, before[bisect.bisect_right(before, horizon, key=_time) :]


def terminal_features(
    state: TerminalState, t: float, tx_id: str, delay_days: float = 7.0, lateness_s: float = DAY_S
) -> tuple[dict[str, float], TerminalState]:
    """Terminal risk features of one transaction, and the state with it added (fraud unknown yet) and pruned."""
    x: dict[str, float] = {}
    end = t - delay_days * DAY_S
    for n in TERMINAL_DAYS:
        rows = _inside(state, end - n * DAY_S, end, False)
        count = len(rows)
        frauds = sum(1 for e in rows if e[2])
        x[f"terminal_nb_tx_{n}day_delay"] = float(count)
        x[f"terminal_risk_{n}day_delay"] = frauds / count if count else 0.0
    x["terminal_nb_tx_1hour"] = float(len(_inside(state, t - HOUR_S, t, True)) + 1)
    after = list(state)
    bisect.insort_right(after, [t, tx_id, False], key=_time)
    horizon = _time(after[-1]) - (delay_days + 30) * DAY_S - lateness_s
    return x, after[bisect.bisect_left(after, horizon, key=_time) :]


def mark_fraud(state: TerminalState, t: float, tx_id: str) -> TerminalState:
    """Count a fraud label that just arrived toward its transaction's bucket (no-op when pruned or unknown)."""
    return [[e[0], e[1], True] if e[1] == tx_id and float(e[0]) == t else e for e in state]  # type: ignore[arg-type]
