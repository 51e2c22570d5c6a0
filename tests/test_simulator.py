from __future__ import annotations

import doctest
from datetime import timedelta

import numpy as np

import app.simulator
from app.simulator import SimulatorConfig, label_of, profiles, replay, simulate, to_wire

SMALL = SimulatorConfig(n_customers=200, n_terminals=400, n_days=30, seed=5)


def test_doctests() -> None:
    assert doctest.testmod(app.simulator).failed == 0


def test_deterministic_sorted_and_unique() -> None:
    first, second = simulate(SMALL), simulate(SMALL)
    assert first == second
    assert [tx.timestamp for tx in first] == sorted(tx.timestamp for tx in first)
    assert len({tx.tx_id for tx in first}) == len(first)
    assert simulate(SimulatorConfig(n_customers=200, n_terminals=400, n_days=30, seed=6)) != first


def test_amounts_and_terminals_follow_the_profiles() -> None:
    txs = simulate(SMALL)
    p = profiles(SMALL)
    for tx in txs:
        assert tx.amount >= 0 and round(tx.amount, 2) == tx.amount
        c, t = int(tx.customer_id[2:]), int(tx.terminal_id[2:])
        assert np.hypot(*(p.customer_xy[c] - p.terminal_xy[t])) < SMALL.radius
        assert 0 < (tx.timestamp - tx.timestamp.replace(hour=0, minute=0, second=0)).total_seconds() < 86400


def test_scenarios() -> None:
    txs = simulate(SMALL)
    for tx in txs:
        assert tx.is_fraud == (tx.fraud_scenario > 0)
        if tx.amount > SMALL.fraud_amount_over and tx.fraud_scenario == 0:
            raise AssertionError(f"{tx} is over the amount limit but not fraud")
        if tx.fraud_scenario == 1:
            assert tx.amount > SMALL.fraud_amount_over
    table = app.simulator._generate(SMALL)
    day = table.time_s // 86400
    on_compromised = table.compromised[table.terminal, day]
    assert on_compromised.any()
    assert (table.scenario[on_compromised] >= 2).all()  # scenario 2, or 3 which overwrites it
    assert not (table.scenario[~on_compromised] == 2).any()
    assert table.compromised.sum(axis=1).max() >= SMALL.compromised_terminal_days


def test_fraud_rate_is_near_the_published_one() -> None:
    # The published rate is 0.84 % for 5,000 customers over 183 days. Scenario 2 and 3 frauds do not scale
    # with the number of customers (2 terminals and 3 customers a day whatever the size), so with 1,000
    # customers the rate is higher: about 5x the scenario 2+3 share (0.78 % -> ~3.5 %) plus scenario 1.
    txs = simulate(SimulatorConfig(n_customers=1000, n_terminals=2000, n_days=60, seed=2))
    rate = sum(tx.is_fraud for tx in txs) / len(txs)
    assert 0.015 < rate < 0.06, rate
    assert 100_000 < len(txs) < 130_000  # 1000 customers x 2 a day x 60 days x 97 % inside the day


def test_replay_delays_labels_in_event_time() -> None:
    txs = simulate(SMALL)
    delay_s = 7 * 86400
    events = list(replay(txs, delay_s))
    assert len(events) == 2 * len(txs)
    times = [t for _, _, t in events]
    assert times == sorted(times)
    due = {tx.tx_id: t for kind, tx, t in events if kind == "label"}
    for tx in txs:
        assert due[tx.tx_id] - tx.timestamp == timedelta(seconds=delay_s)
    seen = set()
    for kind, tx, _ in events:
        if kind == "transaction":
            seen.add(tx.tx_id)
        else:
            assert tx.tx_id in seen  # never before its transaction


def test_wire_records() -> None:
    tx = simulate(SMALL)[0]
    wire = to_wire(tx)
    assert set(wire) == {"tx_id", "timestamp", "customer_id", "terminal_id", "amount"}
    assert wire["timestamp"].endswith("Z")
    assert label_of(tx, tx.timestamp)["is_fraud"] == tx.is_fraud
