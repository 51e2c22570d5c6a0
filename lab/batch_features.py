"""The handbook's 15 baseline features (benchmark section 2) over a whole event list at once, with numpy.

For the batch baselines the evaluator trains, and as a reference the streaming features are checked against.
Customer windows are (t - n days, t] including the current transaction (and any other at the same second);
terminal windows are [t - delay - n days, t - delay) with risk = frauds / count (0 when empty).
"""

from __future__ import annotations

import numpy as np

DAY_S = 86400
WINDOW_DAYS = (1, 7, 30)
BASELINE_FEATURES: tuple[str, ...] = (
    "TX_AMOUNT",
    "TX_DURING_WEEKEND",
    "TX_DURING_NIGHT",
    *(f"CUSTOMER_ID_{m}_{n}DAY_WINDOW" for n in WINDOW_DAYS for m in ("NB_TX", "AVG_AMOUNT")),
    *(f"TERMINAL_ID_{m}_{n}DAY_WINDOW" for n in WINDOW_DAYS for m in ("NB_TX", "RISK")),
)


def _window_sums(
    group: np.ndarray, time_s: np.ndarray, values: np.ndarray, lo_s: np.ndarray, hi_s: np.ndarray, closed: str
) -> tuple[np.ndarray, np.ndarray]:
    """Count and sum of ``values`` per row over the same group's rows with time in the window.

    ``closed="right"``: (lo, hi]; ``closed="left"``: [lo, hi).
    """
    span = int(time_s.max()) + 4 * DAY_S * 40 if len(time_s) else 1
    key = group.astype(np.int64) * span + time_s.astype(np.int64)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    cumulative = np.r_[0.0, np.cumsum(values[order])]
    base = group.astype(np.int64) * span
    side = "right" if closed == "right" else "left"
    lo = np.searchsorted(sorted_key, base + lo_s.astype(np.int64), side=side)  # type: ignore[call-overload]
    hi = np.searchsorted(sorted_key, base + hi_s.astype(np.int64), side=side)  # type: ignore[call-overload]
    return (hi - lo).astype(float), cumulative[hi] - cumulative[lo]


def baseline_features(
    time_s: np.ndarray,
    weekday: np.ndarray,
    hour: np.ndarray,
    customer: np.ndarray,
    terminal: np.ndarray,
    amount: np.ndarray,
    fraud: np.ndarray,
    delay_days: int = 7,
) -> np.ndarray:
    """Matrix of the 15 features, one row per transaction, columns in :data:`BASELINE_FEATURES` order.

    ``time_s`` is event time in seconds (any origin, shifted so windows reaching before it are valid);
    ``weekday`` 0 = Monday.

    >>> t = np.array([0, 3600, 86500]); z = np.zeros(3, int)
    >>> x = baseline_features(t + 40 * 86400, z, z, z, z, np.array([10.0, 20.0, 30.0]), np.zeros(3, bool))
    >>> x[:, 3].tolist(), x[:, 4].tolist()  # customer count and mean over 1 day
    ([1.0, 2.0, 2.0], [10.0, 15.0, 25.0])
    """
    t = time_s.astype(np.int64) - int(time_s.min()) + 40 * DAY_S if len(time_s) else time_s
    columns = [amount.astype(float), (weekday >= 5).astype(float), (hour <= 6).astype(float)]
    for n in WINDOW_DAYS:
        count, total = _window_sums(customer, t, amount.astype(float), t - n * DAY_S, t, "right")
        columns += [count, np.divide(total, count, out=np.zeros_like(total), where=count > 0)]
    for n in WINDOW_DAYS:
        end = t - delay_days * DAY_S
        count, frauds = _window_sums(terminal, t, fraud.astype(float), end - n * DAY_S, end, "left")
        columns += [count, np.divide(frauds, count, out=np.zeros_like(frauds), where=count > 0)]
    return np.column_stack(columns)
