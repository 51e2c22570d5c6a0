"""The features the worker scores with, in two halves that live on different partitions.

The customer half (calendar flags of the handbook's baseline and the customer's event-time windows from
:mod:`app.features.engine`) is computed where the customer's state lives; the terminal half (delayed risk
windows and the 1-hour burst count) from the terminal aggregates every worker keeps off the terminal log
(:mod:`app.state.terminals`). Both states are lists sorted by event time (:mod:`app.state.customers` has how the
customer half travels on the changelog). Names and windows are declared in
:mod:`app.features.spec`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from app.features import spec
from app.features.engine import CustomerState, customer_features
from app.features.spec import FEATURE_NAMES
from app.records import Transaction

__all__ = ["CALENDAR_FEATURE_NAMES", "FEATURE_NAMES", "calendar_features", "customer_side_features"]

_AMOUNT, _HOUR, _WEEKEND, _NIGHT = (spec.one(kind).name for kind in ("amount", "hour_of_day", "weekend", "night"))
CALENDAR_FEATURE_NAMES: tuple[str, ...] = (_HOUR, _WEEKEND, _NIGHT)


def calendar_features(timestamp: datetime) -> dict[str, float]:
    """Hour, weekend and night flags in the timestamp's own offset (the terminal's local time).

    >>> from datetime import datetime, timezone
    >>> calendar_features(datetime(2018, 4, 1, 6, 59, tzinfo=timezone.utc))  # a Sunday
    {'hour_of_day': 6.0, 'is_weekend': 1.0, 'is_night': 1.0}
    """
    hour = timestamp.hour
    return {
        _HOUR: float(hour),
        _WEEKEND: 1.0 if timestamp.weekday() >= 5 else 0.0,
        _NIGHT: 1.0 if hour <= 6 else 0.0,
    }


def customer_side_features(
    tx: Transaction, state: CustomerState, lateness_s: float, frauds_known_s: Mapping[str, float] | None = None
) -> tuple[dict[str, float], CustomerState]:
    """The customer half of ``x`` and the customer's state with ``tx`` added, to be stored back (``frauds_known_s``:
    the known frauds, which the customer's ``known_legit`` windows leave out).

    >>> from datetime import datetime, timezone
    >>> tx = Transaction("t1", datetime(2018, 4, 2, 12, tzinfo=timezone.utc), "c1", "k1", 40.0)
    >>> x, state = customer_side_features(tx, [], lateness_s=86400.0)
    >>> x["customer_nb_tx_1day"], x["terminal_new_for_customer_30day"], len(state)
    (1.0, 1.0, 1)
    """
    customer_x, state = customer_features(
        state, tx.event_time_s, tx.amount, tx.terminal_id, tx.tx_id, lateness_s, frauds_known_s or {}
    )
    return {_AMOUNT: tx.amount, **calendar_features(tx.timestamp), **customer_x}, state
