"""The product's features beyond the handbook's (hand-computed), and the protocol's 15 as their own subset: equal to
the batch reference (``lab/batch_features.py``), and a model restricted to them sees nothing else (pure: no broker)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from app.features import spec
from app.features.engine import (
    DAY_S,
    EMPTY_TERMINAL,
    EMPTY_WINDOW,
    customer_features,
    record_fraud,
    terminal_features,
    terminal_windows_at,
    terminal_x,
)
from app.features.halves import customer_side_features
from app.learning.model import FraudModel, parse_name
from app.records import Transaction
from lab.batch_features import BASELINE_FEATURES, baseline_features
from lab.simulator import SimulatorConfig, replay, simulate
from tests.reference import LabelArrival, Tx, reference

T0 = 1_600_000_000.0
WEEK_S = 7 * DAY_S


def customer_run(rows: list[tuple[float, str, str]]) -> list[dict[str, float]]:
    """Customer features of ``(t, terminal, tx_id)`` arrivals of one customer (amount 1.0)."""
    state, out = EMPTY_WINDOW, []
    for t, terminal, tx_id in rows:
        x, state = customer_features(state, t, 1.0, terminal, tx_id)
        out.append(x)
    return out


def test_the_customers_count_over_the_last_10_minutes() -> None:
    xs = customer_run([(T0, "k", "a"), (T0 + 300, "k", "b"), (T0 + 599, "k", "c"), (T0 + 600, "k", "d")])
    # (t - 600 s, t]: at T0 + 600 the first one, exactly 10 minutes old, is out
    assert [x["customer_nb_tx_10min"] for x in xs] == [1.0, 2.0, 3.0, 3.0]
    state = EMPTY_WINDOW
    for i, (dt, amount) in enumerate([(0, 40.0), (30, 1.0), (60, 2.0)]):
        x, state = customer_features(state, T0 + dt, amount, "k", f"t{i}")
    assert (x["customer_avg_amount_10min"], x["customer_max_amount_10min"]) == (pytest.approx(43 / 3), 40.0)
    assert x["customer_nb_tx_1hour"] == 3.0


def test_the_customers_transactions_at_this_terminal_over_30_days() -> None:
    rows = [(T0, "k1", "a"), (T0 + 60, "k2", "b"), (T0 + 120, "k1", "c"), (T0 + 180, "k1", "d"),
            (T0 + 30 * DAY_S, "k1", "e"), (T0 + 30 * DAY_S + 121, "k1", "f")]  # fmt: skip
    xs = customer_run(rows)
    # this one included; (t - 30 days, t]: at T0 + 30 days "a" (exactly 30 days old) is out, then "c" too
    assert [x["customer_nb_tx_at_terminal_30day"] for x in xs] == [1.0, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert [x["terminal_new_for_customer_30day"] for x in xs] == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    state = EMPTY_WINDOW
    for t, terminal, tx_id in rows[:4]:
        _, state = customer_features(state, t, 1.0, terminal, tx_id)
    again, same = customer_features(state, T0 + 120, 1.0, "k1", "c")  # a repeat: its first arrival's count
    assert same is state and again["customer_nb_tx_at_terminal_30day"] == 2.0


def test_the_customers_usual_amounts_leave_out_its_frauds_known_by_then() -> None:
    state = EMPTY_WINDOW
    for i, (t, amount) in enumerate([(T0, 10.0), (T0 + 60, 900.0)]):
        _, state = customer_features(state, t, amount, "k", f"t{i}")
    frauds = {}
    record_fraud(frauds, "t1", known_s=T0 + 7 * DAY_S)  # the 900.0 is a fraud, labelled a week later
    before, _ = customer_features(state, T0 + 7 * DAY_S - 1, 20.0, "k", "t2", frauds_known_s=frauds)
    after, state = customer_features(state, T0 + 7 * DAY_S, 20.0, "k", "t3", frauds_known_s=frauds)
    assert before["customer_avg_amount_30day_known_legit"] == pytest.approx(310.0)  # not known yet: counted
    assert before["customer_avg_amount_30day"] == pytest.approx(310.0)
    assert after["customer_avg_amount_30day_known_legit"] == pytest.approx(15.0)  # known from then on: left out
    assert after["amount_zscore_30day_known_legit"] == pytest.approx(1.0)  # (20 - 15) / 5
    assert after["customer_avg_amount_30day"] == pytest.approx(310.0)  # the protocol's window keeps it
    again, same = customer_features(state, T0 + 7 * DAY_S, 20.0, "k", "t3", frauds_known_s=frauds)  # a repeat
    assert same is state and again == after


def test_seconds_since_the_terminals_previous_transaction() -> None:
    cap = 7 * DAY_S
    assert terminal_x(EMPTY_TERMINAL, T0, {})["terminal_seconds_since_previous_tx"] == cap  # none: the cap
    state = [(T0, "a", 0), (T0 + 100, "b", 1), (T0 + 500, "late-arrival-later-in-time", 2)]
    assert terminal_x(state, T0 + 160, {})["terminal_seconds_since_previous_tx"] == 60.0  # b; not the later one
    assert terminal_x(state, T0 + 100, {})["terminal_seconds_since_previous_tx"] == 0.0  # a tie that arrived before
    assert terminal_x(state, T0 + 500 + 8 * DAY_S, {})["terminal_seconds_since_previous_tx"] == cap  # capped
    x, after = terminal_features(EMPTY_TERMINAL, T0, "a", {})
    x2, after = terminal_features(after, T0 + 30, "b", {})
    again, same = terminal_features(after, T0 + 30, "b", {})  # a repeat: measured from what arrived before it
    assert (x["terminal_seconds_since_previous_tx"], x2["terminal_seconds_since_previous_tx"]) == (cap, 30.0)
    assert same is after and again == x2
    # a lookup: between the terminal's two newest entries
    assert terminal_windows_at(after, {})[1]["terminal_seconds_since_previous_tx"] == 30.0
    assert terminal_windows_at([(T0, "a", 0)], {})[1]["terminal_seconds_since_previous_tx"] == cap


def test_the_terminals_fraud_streak_tells_an_exploited_terminal_from_a_stolen_cards_single_visit() -> None:
    streak, age = "terminal_fraud_streak_30day_delay", "terminal_fraud_streak_age_s_30day_delay"
    # one transaction a day; days 0-2 legitimate, from day 3 on every one a fraud (an exploited terminal)
    state = [(T0 + d * DAY_S, f"e{d}", d) for d in range(8)]
    frauds: dict[str, float] = {}
    for d in range(3, 8):
        record_fraud(frauds, f"e{d}", known_s=T0 + (d + 7) * DAY_S)  # labelled a week later
    t = T0 + 12.5 * DAY_S  # the delayed span ends at day 5.5: e0..e5, frauds e3..e5 all known by then
    x = terminal_x(state, t, frauds)
    assert (x[streak], x[age]) == (3.0, t - (T0 + 3 * DAY_S))
    assert terminal_x(state, T0 + 9.5 * DAY_S, frauds)[streak] == 0.0  # e3's label not in yet: no streak
    assert terminal_x(state, T0 + 10.5 * DAY_S, frauds)[streak] == 1.0  # e3's is (at day 10)
    # a stolen card's cash-out (e3) followed by legitimate transactions: no streak, though the risk windows see it
    single = {"e3": T0 + 10 * DAY_S}
    x = terminal_x(state, t, single)
    assert (x[streak], x[age]) == (0.0, 0.0) and x["terminal_risk_7day_delay"] > 0
    assert terminal_x(EMPTY_TERMINAL, t, frauds)[streak] == 0.0
    # the span is 30 days: a streak older than it is cut at its start
    long = [(T0 + d * DAY_S, f"l{d}", d) for d in range(40)]
    every = {f"l{d}": T0 + (d + 7) * DAY_S for d in range(40)}
    t = T0 + 46.5 * DAY_S  # delayed span [9.5, 39.5): l10..l39
    assert terminal_x(long, t, every)[streak] == 30.0
    assert terminal_x(long, t, every)[age] == t - (T0 + 10 * DAY_S)


def test_the_new_features_equal_the_brute_force_reference_on_a_mixed_stream() -> None:
    rng = random.Random(7)
    times = np.cumsum([rng.choice([0.0, 5.0, 120.0, 3600.0, DAY_S, 8 * DAY_S]) for _ in range(120)]) + T0
    events: list[Tx | LabelArrival] = []
    for i, t in enumerate(times):
        tx = Tx(f"t{i}", float(t), f"c{rng.randint(0, 2)}", f"k{rng.randint(0, 3)}", rng.choice([1.0, 4.0, 60.0]))
        events.append(tx)
        if rng.random() < 0.3:  # a fraud, labelled some time later (a later transaction may come before it)
            events.append(LabelArrival(tx.tx_id, tx.t, tx.terminal, True, tx.t + rng.choice([1.0, 3600.0, 9 * DAY_S])))
    events.sort(key=lambda e: e.t if isinstance(e, Tx) else e.known_s)  # labels arrive in their own time
    state_c: dict[str, object] = {}
    state_t: dict[str, object] = {}
    frauds: dict[str, float] = {}
    txs = [e for e in events if isinstance(e, Tx)]
    wanted = reference(events)
    assert len(wanted) == len(txs)
    rows = iter(zip(wanted, txs, strict=True))
    for event in events:
        if isinstance(event, LabelArrival):
            record_fraud(frauds, event.tx_id, event.known_s)
            continue
        (tx_id, want), tx = next(rows)
        x, state_c[tx.customer] = customer_features(state_c.get(tx.customer, EMPTY_WINDOW), tx.t, tx.amount,  # type: ignore[arg-type]
                                                    tx.terminal, tx.tx_id, frauds_known_s=frauds)  # fmt: skip
        xt, state_t[tx.terminal] = terminal_features(state_t.get(tx.terminal, EMPTY_TERMINAL), tx.t, tx.tx_id, frauds)  # type: ignore[arg-type]
        got = x | xt
        for name in ("customer_nb_tx_10min", "customer_nb_tx_at_terminal_30day", "terminal_seconds_since_previous_tx",
                     "customer_avg_amount_30day_known_legit", "amount_zscore_30day_known_legit",
                     "terminal_fraud_streak_30day_delay", "terminal_fraud_streak_age_s_30day_delay"):  # fmt: skip
            assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-9), (tx_id, name)


# ---- the protocol's subset ------------------------------------------------------------------------------------


def test_the_protocol_subset_is_declared_and_is_the_batch_references_15_in_its_order() -> None:
    assert len(spec.PROTOCOL_FEATURE_NAMES) == len(BASELINE_FEATURES) == 15
    assert set(spec.PROTOCOL_FEATURE_NAMES) < set(spec.FEATURE_NAMES)
    assert spec.FEATURE_SUBSETS == {"product": spec.FEATURE_NAMES, "protocol": spec.PROTOCOL_FEATURE_NAMES}
    products = [n for n in spec.FEATURE_NAMES if n not in spec.PROTOCOL_FEATURE_NAMES]
    for name in ("customer_nb_tx_10min", "customer_nb_tx_at_terminal_30day", "terminal_seconds_since_previous_tx"):
        assert name in products


def test_the_engine_computes_the_protocol_subset_as_the_batch_reference_does() -> None:
    """Labels 7 days after their transaction (as the terminal delay): the streaming values of the 15 equal the
    batch reference's, column by column."""
    config = SimulatorConfig(n_customers=80, n_terminals=160, n_days=50, seed=5)
    txs = simulate(config)
    customers: dict[str, object] = {}
    terminals: dict[str, object] = {}
    frauds: dict[str, float] = {}
    got: dict[str, dict[str, float]] = {}
    for kind, tx, at in replay(txs, WEEK_S):
        if kind == "label":
            if tx.is_fraud:
                record_fraud(frauds, tx.tx_id, at.timestamp())
            continue
        t = Transaction(tx.tx_id, tx.timestamp, tx.customer_id, tx.terminal_id, tx.amount)
        x, customers[tx.customer_id] = customer_side_features(t, customers.get(tx.customer_id, EMPTY_WINDOW), DAY_S)  # type: ignore[arg-type]
        xt, terminals[tx.terminal_id] = terminal_features(terminals.get(tx.terminal_id, EMPTY_TERMINAL),  # type: ignore[arg-type]
                                                          tx.timestamp.timestamp(), tx.tx_id, frauds)  # fmt: skip
        got[tx.tx_id] = x | xt
    time_s = np.array([int(tx.timestamp.timestamp()) for tx in txs])
    batch = baseline_features(
        time_s, np.array([tx.timestamp.weekday() for tx in txs]), np.array([tx.timestamp.hour for tx in txs]),
        np.array([int(tx.customer_id[2:]) for tx in txs]), np.array([int(tx.terminal_id[2:]) for tx in txs]),
        np.array([tx.amount for tx in txs]), np.array([tx.is_fraud for tx in txs]),
    )  # fmt: skip
    streamed = np.array([[got[tx.tx_id][name] for name in spec.PROTOCOL_FEATURE_NAMES] for tx in txs])
    assert batch[:, 10].max() > 0  # terminal risk was exercised
    # Customer windows: the batch counts others at the very same second too; the stream, those that arrived
    # before. Such ties are rare: every other value is equal.
    close = np.isclose(streamed, batch, rtol=1e-9, atol=1e-9)
    assert close.mean(axis=0).min() > 0.999, dict(zip(spec.PROTOCOL_FEATURE_NAMES, close.mean(axis=0), strict=True))


def test_a_model_named_features_protocol_learns_and_scores_the_protocol_features_alone() -> None:
    assert parse_name("logreg:bins=8,features=protocol")[1]["features"] == "protocol"
    assert parse_name("bagged-ht")[1]["features"] == "product"
    with pytest.raises(ValueError, match="features='all'"):
        parse_name("logreg:features=all")
    rng = random.Random(1)
    protocol, product = FraudModel("logreg:features=protocol"), FraudModel("logreg")
    rows = []
    for _ in range(300):
        x = {name: rng.random() for name in spec.FEATURE_NAMES}
        y = x["customer_nb_tx_10min"] > 0.9  # a product feature alone tells the class
        protocol.learn_one(x, y)
        product.learn_one(x, y)
        rows.append(x)
    assert set(protocol.scaler.means) == set(spec.PROTOCOL_FEATURE_NAMES)
    assert set(product.scaler.means) == set(spec.FEATURE_NAMES)
    x = rows[0]
    moved = x | {name: 1e6 for name in spec.FEATURE_NAMES if name not in spec.PROTOCOL_FEATURE_NAMES}
    assert protocol.predict_proba_one(moved) == protocol.predict_proba_one(x)  # the product's features: not seen
    assert protocol.score_one(moved) == protocol.score_one(x)
    assert set(protocol.reasons(moved, k=40)) <= set(spec.PROTOCOL_FEATURE_NAMES)
    assert product.predict_proba_one(moved) != product.predict_proba_one(x)
