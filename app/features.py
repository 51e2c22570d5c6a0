"""The features the worker scores with: pure functions from a transaction and its customer's state to ``x``.

Calendar flags of the handbook's baseline (benchmark section 2) and the customer's event-time windows from
:mod:`app.feature_engine` (1 hour, 1, 7 and 30 days: count, mean, std, max; z-score; seconds since the
previous transaction; new terminal; distinct terminals). The customer state is a JSON list sorted by event
time, so it is stored as it is in a RocksDB table, and windows follow the transactions' own timestamps.
Terminal features need state partitioned by terminal (a repartition step) and are not scored with yet.
"""

from __future__ import annotations

from datetime import datetime

from app.feature_engine import CUSTOMER_WINDOWS_S, CustomerState, customer_features
from app.records import Transaction

FEATURE_NAMES: tuple[str, ...] = (
    "amount",
    "hour_of_day",
    "is_weekend",
    "is_night",
    *(f"customer_{m}_{w}" for w in CUSTOMER_WINDOWS_S for m in ("nb_tx", "avg_amount", "std_amount", "max_amount")),
    "amount_zscore_30day",
    "seconds_since_previous_tx",
    "terminal_new_for_customer_30day",
    "customer_nb_terminals_30day",
)


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


def compute_features(
    tx: Transaction, state: CustomerState, lateness_s: float
) -> tuple[dict[str, float], CustomerState]:
    """Features of ``tx`` and the customer's state with ``tx`` added, to be stored back.

    >>> from datetime import datetime, timezone
    >>> tx = Transaction("t1", datetime(2018, 4, 2, 12, tzinfo=timezone.utc), "c1", "k1", 40.0)
    >>> x, state = compute_features(tx, [], lateness_s=86400.0)
    >>> x["customer_nb_tx_1day"], x["terminal_new_for_customer_30day"], len(state)
    (1.0, 1.0, 1)
    """
    customer_x, state = customer_features(state, tx.event_time_s, tx.amount, tx.terminal_id, lateness_s)
    return {"amount": tx.amount, **calendar_features(tx.timestamp), **customer_x}, state


def newest_event_time_s(state: CustomerState) -> float:
    """Event time of the customer's newest transaction (the state is sorted), for expiring idle keys."""
    return float(state[-1][0]) if state else float("-inf")  # type: ignore[arg-type]
