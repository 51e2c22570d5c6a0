"""Feature computation: pure functions from a transaction and the customer's recent history to ``x``.

Placeholder set for the first pipeline (the event-time feature engine replaces it): the amount, calendar
flags of the handbook's baseline (section 2 of the benchmark) and the customer's count and mean amount
over the last day. The customer history is a list of ``[event_time_s, amount]`` pairs sorted by time, so it
serializes to JSON as it is and windows follow the transactions' own timestamps, never the wall clock.
"""

from __future__ import annotations

import bisect
from datetime import datetime

from app.records import Transaction

FEATURE_NAMES: tuple[str, ...] = (
    "amount",
    "hour_of_day",
    "is_weekend",
    "is_night",
    "customer_nb_tx_1day",
    "customer_avg_amount_1day",
)

History = list[list[float]]


def calendar_features(timestamp: datetime) -> dict[str, float]:
    """Hour, weekend and night flags in the timestamp's own offset (the terminal's local time).

    >>> from datetime import datetime, timezone
    >>> calendar_features(datetime(2018, 4, 1, 6, 59, tzinfo=timezone.utc))  # a Sunday
    {'hour_of_day': 6.0, 'is_weekend': 1.0, 'is_night': 1.0}
    """
    hour = timestamp.hour
    return {
        "hour_of_day": float(hour),
        "is_weekend": 1.0 if timestamp.weekday() >= 5 else 0.0,
        "is_night": 1.0 if hour <= 6 else 0.0,
    }


def add_to_history(history: History, event_time_s: float, amount: float, window_s: float) -> History:
    """Insert one transaction in time order and drop what no window can use any more.

    Entries are kept while they are inside ``window_s`` of the newest event time seen for the key.

    >>> add_to_history([[0.0, 5.0], [50.0, 1.0]], 120.0, 2.0, window_s=100.0)
    [[50.0, 1.0], [120.0, 2.0]]
    """
    bisect.insort(history, [event_time_s, amount])
    horizon = history[-1][0] - window_s
    cut = bisect.bisect_right(history, [horizon, float("inf")])
    return history[cut:]


def window_stats(history: History, event_time_s: float, window_s: float) -> tuple[int, float]:
    """Count and mean amount over (t - window_s, t], the current transaction included.

    >>> window_stats([[0.0, 5.0], [50.0, 1.0], [120.0, 2.0]], 120.0, 100.0)
    (2, 1.5)
    """
    lo = bisect.bisect_right(history, [event_time_s - window_s, float("inf")])
    hi = bisect.bisect_right(history, [event_time_s, float("inf")])
    count = hi - lo
    if count == 0:
        return 0, 0.0
    return count, sum(entry[1] for entry in history[lo:hi]) / count


def compute_features(tx: Transaction, history: History, window_s: float) -> tuple[dict[str, float], History]:
    """Features of ``tx`` and the customer's history with ``tx`` added, to be stored back."""
    history = add_to_history(history, tx.event_time_s, tx.amount, window_s)
    count, mean = window_stats(history, tx.event_time_s, window_s)
    x = {"amount": tx.amount, **calendar_features(tx.timestamp)}
    x["customer_nb_tx_1day"] = float(count)
    x["customer_avg_amount_1day"] = mean
    return x, history
