"""A brute-force reference for the event-time features: scan the whole event list for every transaction.

Shared by the engine's property tests and the broker tests (several workers, SIGKILL), so every one of them
is measured against the same definition.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from app.features.engine import CUSTOMER_WINDOWS_S, DAY_S, HOUR_S, TERMINAL_DAYS


@dataclass(frozen=True)
class Tx:
    tx_id: str
    t: float
    customer: str
    terminal: str
    amount: float


@dataclass(frozen=True)
class LabelArrival:
    tx_id: str
    t: float  # the transaction's time
    terminal: str
    fraud: bool
    known_s: float  # the label's own time: it counts from then on, never before


Event = Tx | LabelArrival


def approx_equal(got: object, want: object, tol: float = 1e-9) -> bool:
    """``got == pytest.approx(want, rel=tol, abs=tol)`` for a scalar, its rules copied (a bool wants a bool, equal
    values match, anything not a number must be equal, NaN and infinities only themselves): the broker tests compare
    tens of thousands of features, where ``pytest.approx`` costs seconds (tests/test_features.py checks the two
    agree)."""
    if isinstance(want, bool) and not isinstance(got, bool):
        return False
    if got == want:
        return True
    if not (isinstance(want, (int, float)) and isinstance(got, (int, float))):
        return False
    if math.isnan(want) or math.isinf(want):
        return False
    return abs(want - got) <= max(tol * abs(want), tol)


def reference(events: list[Event], delay_days: float = 7.0) -> list[tuple[str, dict[str, float]]]:
    """Features by brute force, one row per transaction arrival (repeats included): for each, scan every
    earlier arrival of its customer / terminal. A repeated tx_id gets the windows of its first arrival (only
    what arrived before that) and the labels that have arrived by now."""
    by_customer: dict[str, list[Tx]] = defaultdict(list)
    by_terminal: dict[str, list[Tx]] = defaultdict(list)
    known_fraud: dict[str, float] = {}
    first: dict[str, tuple[list[Tx], list[Tx]]] = {}
    out = []
    for event in events:
        if isinstance(event, LabelArrival):
            if event.fraud:
                known_fraud[event.tx_id] = min(known_fraud.get(event.tx_id, math.inf), event.known_s)
            continue
        tx = event
        if tx.tx_id in first:
            customer_before, terminal_before = first[tx.tx_id]
        else:
            customer_before, terminal_before = list(by_customer[tx.customer]), list(by_terminal[tx.terminal])
            first[tx.tx_id] = customer_before, terminal_before
            by_customer[tx.customer].append(tx)
            by_terminal[tx.terminal].append(tx)
        out.append((tx.tx_id, features_of(tx, customer_before, terminal_before, known_fraud, delay_days)))
    return out


def features_of(
    tx: Tx, customer_before: list[Tx], terminal_before: list[Tx], known_fraud: dict[str, float], delay_days: float
) -> dict[str, float]:
    mine = [*customer_before, tx]
    x: dict[str, float] = {}
    for name, w in CUSTOMER_WINDOWS_S.items():
        amounts = [o.amount for o in mine if tx.t - w < o.t <= tx.t]
        mean = sum(amounts) / len(amounts)
        x[f"customer_nb_tx_{name}"] = len(amounts)
        x[f"customer_avg_amount_{name}"] = mean
        x[f"customer_std_amount_{name}"] = math.sqrt(sum((a - mean) ** 2 for a in amounts) / len(amounts))
        x[f"customer_max_amount_{name}"] = max(amounts)
    std = x["customer_std_amount_30day"]
    x["amount_zscore_30day"] = (tx.amount - x["customer_avg_amount_30day"]) / std if std > 1e-9 else 0.0
    earlier = [o.t for o in customer_before if o.t <= tx.t]
    x["seconds_since_previous_tx"] = min(tx.t - max(earlier), 30 * DAY_S) if earlier else 30 * DAY_S
    month = [o for o in customer_before if tx.t - 30 * DAY_S < o.t <= tx.t]
    x["terminal_new_for_customer_30day"] = 0.0 if any(o.terminal == tx.terminal for o in month) else 1.0
    x["customer_nb_terminals_30day"] = len({o.terminal for o in month} | {tx.terminal})
    x["customer_nb_tx_at_terminal_30day"] = 1 + sum(1 for o in month if o.terminal == tx.terminal)
    # the earlier ones not known to be fraud by t, and this one (always: it is the amount compared)
    month_before = [o for o in customer_before if tx.t - 30 * DAY_S < o.t <= tx.t]
    legit = [o.amount for o in month_before if not known_fraud.get(o.tx_id, math.inf) <= tx.t] + [tx.amount]
    mean = sum(legit) / len(legit)
    std = math.sqrt(sum((a - mean) ** 2 for a in legit) / len(legit))
    x["customer_avg_amount_30day_known_legit"] = mean
    x["amount_zscore_30day_known_legit"] = (tx.amount - mean) / std if std > 1e-9 else 0.0
    end = tx.t - delay_days * DAY_S
    for n in TERMINAL_DAYS:
        rows = [o for o in terminal_before if end - n * DAY_S <= o.t < end]
        frauds = sum(1 for o in rows if known_fraud.get(o.tx_id, math.inf) <= tx.t)
        x[f"terminal_nb_tx_{n}day_delay"] = len(rows)
        x[f"terminal_risk_{n}day_delay"] = frauds / len(rows) if rows else 0.0
    x["terminal_nb_tx_1hour"] = 1 + sum(1 for o in terminal_before if tx.t - HOUR_S < o.t <= tx.t)
    at_or_before = [o.t for o in terminal_before if o.t <= tx.t]
    x["terminal_seconds_since_previous_tx"] = min(tx.t - max(at_or_before), 7 * DAY_S) if at_or_before else 7 * DAY_S
    # the latest entries of [end - 30 days, end) in time order (ties by arrival), all known frauds by t
    span = sorted((o for o in terminal_before if end - 30 * DAY_S <= o.t < end), key=lambda o: o.t)
    streak = 0
    while streak < len(span) and known_fraud.get(span[-1 - streak].tx_id, math.inf) <= tx.t:
        streak += 1
    x["terminal_fraud_streak_30day_delay"] = streak
    x["terminal_fraud_streak_age_s_30day_delay"] = tx.t - span[-streak].t if streak else 0.0
    return x
