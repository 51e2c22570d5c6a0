"""The event-time feature engine against a brute-force reference over the whole event list."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.feature_engine import (
    CUSTOMER_WINDOWS_S,
    DAY_S,
    HOUR_S,
    TERMINAL_DAYS,
    CustomerState,
    TerminalState,
    customer_features,
    mark_fraud,
    terminal_features,
)
from app.simulator import SimulatorConfig, simulate


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


Event = Tx | LabelArrival


def reference(events: list[Event], delay_days: float = 7.0) -> dict[str, dict[str, float]]:
    """Features by brute force: for each transaction, scan every earlier arrival of its customer / terminal."""
    by_customer: dict[str, list[Tx]] = defaultdict(list)
    by_terminal: dict[str, list[Tx]] = defaultdict(list)
    known_fraud: set[str] = set()
    out = {}
    for event in events:
        if isinstance(event, LabelArrival):
            if event.fraud:
                known_fraud.add(event.tx_id)
            continue
        tx = event
        mine = [*by_customer[tx.customer], tx]
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
        earlier = [o.t for o in by_customer[tx.customer] if o.t <= tx.t]
        x["seconds_since_previous_tx"] = min(tx.t - max(earlier), 30 * DAY_S) if earlier else 30 * DAY_S
        month = [o for o in by_customer[tx.customer] if tx.t - 30 * DAY_S < o.t <= tx.t]
        x["terminal_new_for_customer_30day"] = 0.0 if any(o.terminal == tx.terminal for o in month) else 1.0
        x["customer_nb_terminals_30day"] = len({o.terminal for o in month} | {tx.terminal})
        end = tx.t - delay_days * DAY_S
        for n in TERMINAL_DAYS:
            rows = [o for o in by_terminal[tx.terminal] if end - n * DAY_S <= o.t < end]
            frauds = sum(1 for o in rows if o.tx_id in known_fraud)
            x[f"terminal_nb_tx_{n}day_delay"] = len(rows)
            x[f"terminal_risk_{n}day_delay"] = frauds / len(rows) if rows else 0.0
        x["terminal_nb_tx_1hour"] = 1 + sum(1 for o in by_terminal[tx.terminal] if tx.t - HOUR_S < o.t <= tx.t)
        out[tx.tx_id] = x
        by_customer[tx.customer].append(tx)
        by_terminal[tx.terminal].append(tx)
    return out


def engine(events: list[Event], lateness_s: float = DAY_S) -> dict[str, dict[str, float]]:
    customers: dict[str, CustomerState] = {}
    terminals: dict[str, TerminalState] = {}
    out = {}
    for event in events:
        if isinstance(event, LabelArrival):
            if event.fraud and event.terminal in terminals:
                terminals[event.terminal] = mark_fraud(terminals[event.terminal], event.t, event.tx_id)
            continue
        x, customers[event.customer] = customer_features(
            customers.get(event.customer, []), event.t, event.amount, event.terminal, lateness_s
        )
        xt, terminals[event.terminal] = terminal_features(
            terminals.get(event.terminal, []), event.t, event.tx_id, lateness_s=lateness_s
        )
        out[event.tx_id] = {**x, **xt}
    return out


def assert_same(got: dict[str, dict[str, float]], want: dict[str, dict[str, float]]) -> None:
    assert got.keys() == want.keys()
    for tx_id, features in want.items():
        assert got[tx_id].keys() == features.keys()
        for name, value in features.items():
            assert got[tx_id][name] == pytest.approx(value, rel=1e-6, abs=1e-6), (tx_id, name)


def with_labels(txs: list[Tx], fraud: set[str], delay_s: float, rng: random.Random) -> list[Event]:
    """Arrival order: transactions as given, each label some time after its transaction's arrival."""
    events: list[tuple[float, int, Event]] = []
    for i, tx in enumerate(txs):
        events.append((tx.t, 2 * i, tx))
        events.append((tx.t + delay_s * rng.uniform(0.5, 1.5), 2 * i + 1, LabelArrival(tx.tx_id, tx.t, tx.terminal,
                                                                                       tx.tx_id in fraud)))  # fmt: skip
    # transactions keep their given (possibly shuffled) order; labels slot in by due time
    ordered_tx = [e for e in events if isinstance(e[2], Tx)]
    labels = sorted(e for e in events if isinstance(e[2], LabelArrival))
    merged: list[Event] = []
    j = 0
    for _, _, tx in ordered_tx:
        while j < len(labels) and labels[j][0] < tx.t:  # type: ignore[union-attr]
            merged.append(labels[j][2])
            j += 1
        merged.append(tx)
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
    fraud = {tx.tx_id for tx in txs if draw(st.booleans())}
    return with_labels(arrival, fraud, draw(st.sampled_from([0.0, 3600.0, 7 * DAY_S])), random.Random(n))


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
    assert any(x["terminal_risk_30day_delay"] > 0 for x in want.values())  # the risk features were exercised
