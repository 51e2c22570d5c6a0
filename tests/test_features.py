from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.features.engine import TERMINAL_FEATURE_NAMES, newest_event_time_s
from app.features.halves import FEATURE_NAMES, calendar_features, customer_side_features
from app.records import Transaction

DAY_S = 86400.0
T0 = datetime(2018, 4, 2, tzinfo=UTC)  # a Monday


def tx_at(seconds: float, amount: float, i: int = 0, terminal: str = "t-1") -> Transaction:
    return Transaction(f"tx-{i}", T0 + timedelta(seconds=seconds), "c-1", terminal, amount)


def test_calendar_flags_follow_the_handbook() -> None:
    assert calendar_features(T0.replace(hour=6, minute=59)) == {"hour_of_day": 6.0, "is_weekend": 0.0, "is_night": 1.0}
    assert calendar_features(T0.replace(hour=7))["is_night"] == 0.0
    assert calendar_features(T0 - timedelta(days=1))["is_weekend"] == 1.0  # Sunday
    assert calendar_features(T0 - timedelta(days=2))["is_weekend"] == 1.0  # Saturday
    assert calendar_features(T0 - timedelta(days=3))["is_weekend"] == 0.0  # Friday


def test_every_feature_is_present_and_windows_include_the_current_transaction() -> None:
    state: list[list[object]] = []
    x0, state = customer_side_features(tx_at(0, 10.0, 0), state, DAY_S)
    assert set(x0) == set(FEATURE_NAMES) - set(TERMINAL_FEATURE_NAMES)
    assert (x0["customer_nb_tx_1day"], x0["customer_avg_amount_1day"], x0["customer_std_amount_1day"]) == (1, 10, 0)
    x1, state = customer_side_features(tx_at(DAY_S - 1, 30.0, 1, terminal="t-2"), state, DAY_S)
    assert (x1["customer_nb_tx_1day"], x1["customer_avg_amount_1day"], x1["customer_max_amount_1day"]) == (2, 20, 30)
    assert x1["seconds_since_previous_tx"] == DAY_S - 1
    assert (x1["terminal_new_for_customer_30day"], x1["customer_nb_terminals_30day"]) == (1.0, 2.0)
    x2, state = customer_side_features(tx_at(DAY_S, 50.0, 2), state, DAY_S)  # the first is exactly 1 day old: out
    assert (x2["customer_nb_tx_1day"], x2["customer_avg_amount_1day"]) == (2, 40)
    assert x2["customer_nb_tx_7day"] == 3 and x2["terminal_new_for_customer_30day"] == 0.0
    assert newest_event_time_s(state) == (T0 + timedelta(seconds=DAY_S)).timestamp()


def test_state_keeps_only_the_longest_window_and_the_lateness() -> None:
    state: list[list[object]] = []
    for i in range(24 * 60):  # one transaction an hour for 60 days
        _, state = customer_side_features(tx_at(i * 3600.0, 1.0, i), state, DAY_S)
    assert len(state) == 31 * 24  # 30 days of window and 1 day of lateness
    assert newest_event_time_s([]) == float("-inf")
