"""The event-time feature engine against a brute-force reference over the whole event list."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.feature_engine import (
    DAY_S,
    HOUR_S,
    CustomerState,
    TerminalState,
    customer_features,
    mark_fraud,
    terminal_features,
)
from app.simulator import SimulatorConfig, simulate
from tests.reference import Event, LabelArrival, Tx, reference


def engine(events: list[Event], lateness_s: float = DAY_S) -> list[tuple[str, dict[str, float]]]:
    customers: dict[str, CustomerState] = {}
    terminals: dict[str, TerminalState] = {}
    out = []
    for event in events:
        if isinstance(event, LabelArrival):
            if event.fraud and event.terminal in terminals:
                terminals[event.terminal] = mark_fraud(terminals[event.terminal], event.tx_id, event.known_s)
            continue
        x, customers[event.customer] = customer_features(
            customers.get(event.customer, []), event.t, event.amount, event.terminal, event.tx_id, lateness_s
        )
        xt, terminals[event.terminal] = terminal_features(
            terminals.get(event.terminal, []), event.t, event.tx_id, lateness_s=lateness_s
        )
        out.append((event.tx_id, {**x, **xt}))
    return out


def assert_same(got: list[tuple[str, dict[str, float]]], want: list[tuple[str, dict[str, float]]]) -> None:
    assert [tx_id for tx_id, _ in got] == [tx_id for tx_id, _ in want]
    for (tx_id, features), (_, got_features) in zip(want, got, strict=True):
        assert got_features.keys() == features.keys()
        for name, value in features.items():
            assert got_features[name] == pytest.approx(value, rel=1e-6, abs=1e-6), (tx_id, name)


def with_labels(
    txs: list[Tx], fraud: set[str], delay_s: float, rng: random.Random, early_s: float = 0.0
) -> list[Event]:
    """Arrival order: transactions as given, each label some time after its transaction's arrival; a label may
    arrive up to ``early_s`` before its own time (a replay that publishes labels ahead must not leak them)."""
    events: list[tuple[float, int, Event]] = []
    for i, tx in enumerate(txs):
        events.append((tx.t, 2 * i, tx))
        known_s = tx.t + delay_s * rng.uniform(0.5, 1.5)
        arrives = max(tx.t, known_s - early_s * rng.random())
        events.append((arrives, 2 * i + 1, LabelArrival(tx.tx_id, tx.t, tx.terminal, tx.tx_id in fraud, known_s)))
    # transactions keep their given (possibly shuffled) order; labels slot in by due time, but never before
    # their own transaction has arrived (the worker joins a label to its scored transaction first)
    ordered_tx = [e for e in events if isinstance(e[2], Tx)]
    labels = sorted(e for e in events if isinstance(e[2], LabelArrival))
    merged: list[Event] = []
    arrived: set[str] = set()
    waiting: list[Event] = []
    j = 0
    for _, _, tx in ordered_tx:
        while j < len(labels) and labels[j][0] < tx.t:  # type: ignore[union-attr]
            (merged if labels[j][2].tx_id in arrived else waiting).append(labels[j][2])
            j += 1
        merged.append(tx)
        arrived.add(tx.tx_id)
        if waiting:
            merged.extend(e for e in waiting if e.tx_id in arrived)
            waiting = [e for e in waiting if e.tx_id not in arrived]
    merged.extend(e[2] for e in labels[j:])
    return merged


@st.composite
def streams(draw: st.DrawFn) -> list[Event]:
    n = draw(st.integers(1, 60))
    grid = draw(st.sampled_from([HOUR_S, DAY_S, 1.0]))  # hours and days put events exactly on window edges
    span = draw(st.integers(1, 80))
    times = sorted(draw(st.lists(st.integers(0, span), min_size=n, max_size=n)))
    burst = draw(st.booleans())
    txs = []
    for i, k in enumerate(times):
        t = 1_600_000_000.0 + (k * grid if not burst else k)  # bursts: many within seconds
        txs.append(Tx(f"tx{i}", t, f"c{draw(st.integers(0, 3))}", f"k{draw(st.integers(0, 2))}",
                      draw(st.sampled_from([0.0, 1.0, 10.5, 99.99, 250.0]))))  # fmt: skip
    jitter = draw(st.lists(st.floats(0, DAY_S * 0.999), min_size=n, max_size=n))
    arrival = [tx for _, tx in sorted(zip([tx.t + j for tx, j in zip(txs, jitter, strict=True)], txs, strict=True),
                                      key=lambda pair: pair[0])]  # fmt: skip
    # replays after a crash, producer retries: a repeat within the lateness of the stream time is not counted
    # again (older ones are late transactions, whose entries may be pruned already)
    for i in draw(st.lists(st.integers(0, n - 1), max_size=5)):
        at = min(len(arrival), arrival.index(txs[i]) + draw(st.integers(1, 10)))
        if max(tx.t for tx in arrival[:at]) - txs[i].t <= DAY_S:
            arrival.insert(at, txs[i])
    fraud = {tx.tx_id for tx in txs if draw(st.booleans())}
    delay_s = draw(st.sampled_from([0.0, 3600.0, 7 * DAY_S]))
    return with_labels(arrival, fraud, delay_s, random.Random(n), early_s=draw(st.sampled_from([0.0, 3 * DAY_S])))


@settings(max_examples=150, deadline=None)
@given(streams())
def test_engine_equals_reference_on_generated_streams(events: list[Event]) -> None:
    assert_same(engine(events), reference(events))


def test_engine_equals_reference_on_simulator_output() -> None:
    txs = simulate(SimulatorConfig(n_customers=300, n_terminals=600, n_days=90, seed=3))
    assert len(txs) >= 50_000
    rows = [Tx(tx.tx_id, tx.timestamp.timestamp(), tx.customer_id, tx.terminal_id, tx.amount) for tx in txs]
    fraud = {tx.tx_id for tx in txs if tx.is_fraud}
    events = with_labels(rows, fraud, 7 * DAY_S, random.Random(1))
    got, want = engine(events), reference(events)
    assert_same(got, want)
    assert any(x["terminal_risk_30day_delay"] > 0 for _, x in want)  # the risk features were exercised
