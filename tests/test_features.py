from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from app.features import FEATURE_NAMES, add_to_history, calendar_features, compute_features, window_stats
from app.records import Transaction

DAY_S = 86400.0
T0 = datetime(2018, 4, 2, tzinfo=UTC)  # a Monday


def tx_at(seconds: float, amount: float, i: int = 0) -> Transaction:
    return Transaction(f"tx-{i}", T0 + timedelta(seconds=seconds), "c-1", "t-1", amount)


def test_calendar_flags_follow_the_handbook() -> None:
    assert calendar_features(T0.replace(hour=6, minute=59)) == {"hour_of_day": 6.0, "is_weekend": 0.0, "is_night": 1.0}
    assert calendar_features(T0.replace(hour=7))["is_night"] == 0.0
    assert calendar_features(T0 - timedelta(days=1))["is_weekend"] == 1.0  # Sunday
    assert calendar_features(T0 - timedelta(days=2))["is_weekend"] == 1.0  # Saturday
    assert calendar_features(T0 - timedelta(days=3))["is_weekend"] == 0.0  # Friday


def test_window_includes_current_and_excludes_exactly_one_day_ago() -> None:
    history: list[list[float]] = []
    x0, history = compute_features(tx_at(0, 10.0, 0), history, DAY_S)
    assert (x0["customer_nb_tx_1day"], x0["customer_avg_amount_1day"]) == (1.0, 10.0)
    x1, history = compute_features(tx_at(DAY_S - 1, 30.0, 1), history, DAY_S)
    assert (x1["customer_nb_tx_1day"], x1["customer_avg_amount_1day"]) == (2.0, 20.0)
    x2, history = compute_features(tx_at(DAY_S, 50.0, 2), history, DAY_S)  # the first is exactly 1 day old
    assert (x2["customer_nb_tx_1day"], x2["customer_avg_amount_1day"]) == (2.0, 40.0)
    assert set(x2) == set(FEATURE_NAMES)


def test_history_keeps_only_what_the_window_needs() -> None:
    history: list[list[float]] = []
    for i in range(1000):
        history = add_to_history(history, i * 3600.0, 1.0, DAY_S)
    assert len(history) == 24
    assert history[0][0] > history[-1][0] - DAY_S


def test_matches_brute_force_on_random_in_order_streams() -> None:
    rng = random.Random(7)
    times = sorted(rng.uniform(0, 5 * DAY_S) for _ in range(400))
    events = [(t, round(rng.uniform(0, 200), 2)) for t in times]
    history: list[list[float]] = []
    for i, (t, amount) in enumerate(events):
        x, history = compute_features(tx_at(t, amount, i), history, DAY_S)
        inside = [a for (s, a) in events[: i + 1] if t - DAY_S < s <= t]
        assert x["customer_nb_tx_1day"] == len(inside)
        assert abs(x["customer_avg_amount_1day"] - sum(inside) / len(inside)) < 1e-9


def test_window_stats_of_empty_history() -> None:
    assert window_stats([], 10.0, DAY_S) == (0, 0.0)
