"""The event-time feature engine against a brute-force reference over the whole event list."""

from __future__ import annotations

import copy
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.features.engine import (
    DAY_S,
    EMPTY_TERMINAL,
    HOUR_S,
    CustomerState,
    TerminalState,
    TerminalWindow,
    customer_features,
    record_fraud,
    terminal_features,
    terminal_with_entry,
    terminal_x,
)
from lab.simulator import SimulatorConfig, simulate
from tests.reference import Event, LabelArrival, Tx, approx_equal, reference


def engine(
    events: list[Event], lateness_s: float = DAY_S, split: bool = False, check_states: bool = False
) -> list[tuple[str, dict[str, float]]]:
    """The features as the runtime computes them. ``split``: the terminal half as the runtime calls it,
    ``terminal_x`` then ``terminal_with_entry`` on the stored state (``terminal_features`` for a repeat, which
    ``terminal_with_entry`` reports by returning the state itself); otherwise ``terminal_features``.
    ``check_states``: the input states are never modified and a repeat, only a repeat, returns the very same
    state object."""
    customers: dict[str, CustomerState] = {}
    terminals: dict[str, TerminalState] = {}
    frauds_known_s: dict[str, float] = {}
    seen: set[str] = set()
    out = []
    for event in events:
        if isinstance(event, LabelArrival):
            if event.fraud:
                record_fraud(frauds_known_s, event.tx_id, event.known_s)
            continue
        repeat = event.tx_id in seen
        seen.add(event.tx_id)
        customer = customers.get(event.customer, [])
        before = copy.deepcopy(customer) if check_states else None
        x, customers[event.customer] = customer_features(
            customer, event.t, event.amount, event.terminal, event.tx_id, lateness_s, frauds_known_s
        )
        if check_states:
            assert customer == before
            assert (customers[event.customer] is customer) == repeat
        terminal = terminals.setdefault(event.terminal, EMPTY_TERMINAL)
        before = copy.deepcopy(terminal) if check_states else None
        if split:
            xt = terminal_x(terminal, event.t, frauds_known_s)
            if check_states:
                assert terminal == before
            after = terminal_with_entry(terminal, event.t, event.tx_id, lateness_s=lateness_s)
            if check_states:
                assert terminal == before
            if after is terminal:
                assert repeat
                xt, same = terminal_features(terminal, event.t, event.tx_id, frauds_known_s, lateness_s=lateness_s)
                assert same is terminal
            else:
                assert not repeat and len(after) <= len(terminal) + 1
                assert after.next_seq == max(after.seqs, default=-1) + 1  # kept, not scanned: the seqs' own
                terminals[event.terminal] = after
        else:
            xt, terminals[event.terminal] = terminal_features(
                terminal, event.t, event.tx_id, frauds_known_s, lateness_s=lateness_s
            )
            if check_states:
                assert terminal == before
                assert (terminals[event.terminal] is terminal) == repeat
        out.append((event.tx_id, {**x, **xt}))
    return out


def assert_same(got: list[tuple[str, dict[str, float]]], want: list[tuple[str, dict[str, float]]]) -> None:
    assert [tx_id for tx_id, _ in got] == [tx_id for tx_id, _ in want]
    for (tx_id, features), (_, got_features) in zip(want, got, strict=True):
        assert got_features.keys() == features.keys()
        for name, value in features.items():
            if got_features[name] != value:  # approx only where they differ: on every value it took 3 s per 10,000 rows
                assert got_features[name] == pytest.approx(value, rel=1e-9, abs=1e-9), (tx_id, name)


def with_labels(
    txs: list[Tx],
    fraud: set[str],
    delay_s: float,
    rng: random.Random,
    early_s: float = 0.0,
    wait_for_tx: bool = True,
) -> list[Event]:
    """Arrival order: transactions as given, each label some time after its transaction's arrival; a label may
    arrive up to ``early_s`` before its own time (a replay that publishes labels ahead must not leak them).
    ``wait_for_tx=False``: a label arriving before its (late) transaction is not held back for it."""
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
            (merged if labels[j][2].tx_id in arrived or not wait_for_tx else waiting).append(labels[j][2])
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
                      draw(st.sampled_from([0.0, 0.1, 1.0, 10.5, 99.99, 250.0, 9999.99]))))  # fmt: skip
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
    early_s = draw(st.sampled_from([0.0, 3 * DAY_S]))
    return with_labels(arrival, fraud, delay_s, random.Random(n), early_s, wait_for_tx=draw(st.booleans()))


@settings(max_examples=150, deadline=None)
@given(streams())
def test_engine_equals_reference_on_generated_streams(events: list[Event]) -> None:
    want = reference(events)
    assert_same(engine(events, check_states=True), want)
    assert_same(engine(events, split=True, check_states=True), want)


def test_engine_equals_reference_on_simulator_output() -> None:
    # 60 days (15,000 transactions, each entity as busy as in a larger run): every window fills, slides and drops
    # entries, the terminals' 30 days after their 7-day delay too
    txs = simulate(SimulatorConfig(n_customers=150, n_terminals=300, n_days=60, seed=3))
    assert len(txs) >= 15_000 and (txs[-1].timestamp - txs[0].timestamp).days >= 59
    rows = [Tx(tx.tx_id, tx.timestamp.timestamp(), tx.customer_id, tx.terminal_id, tx.amount) for tx in txs]
    fraud = {tx.tx_id for tx in txs if tx.is_fraud}
    events = with_labels(rows, fraud, 7 * DAY_S, random.Random(1))
    got, want = engine(events), reference(events)
    assert_same(got, want)
    assert any(x["terminal_risk_30day_delay"] > 0 for _, x in want)  # the risk features were exercised
    assert all(len({x[name] for _, x in want}) > 1 for name in want[0][1])  # and every feature takes several values


T0 = 1_600_000_000.0


def test_out_of_order_arrivals_and_repeats_use_arrival_order() -> None:
    # c1 at T0 + 2h arrives first, then a late one at T0 + 1h, then T0 + 3h; repeats of each afterwards
    a, late, b = (Tx("a", T0 + 2 * HOUR_S, "c", "k", 10.0), Tx("late", T0 + HOUR_S, "c", "k", 30.0),
                  Tx("b", T0 + 3 * HOUR_S, "c", "k", 50.0))  # fmt: skip
    events: list[Event] = [a, late, b, a, late, b]
    got, want = engine(events, check_states=True), reference(events)
    assert_same(got, want)
    assert_same(engine(events, split=True, check_states=True), want)
    first_a, repeat_a = got[0][1], got[3][1]
    assert repeat_a == first_a  # "late" arrived after "a" did: not in a's windows, even though it is older
    assert (first_a["customer_nb_tx_1day"], first_a["terminal_nb_tx_1hour"]) == (1.0, 1.0)
    first_late = got[1][1]
    assert first_late["seconds_since_previous_tx"] == 30 * DAY_S  # "a" is later in event time
    assert (first_late["customer_nb_tx_1day"], first_late["customer_max_amount_1day"]) == (1.0, 30.0)
    assert (got[2][1]["customer_nb_tx_1day"], got[2][1]["customer_avg_amount_1day"]) == (3.0, 30.0)
    assert got[2][1]["terminal_nb_tx_1hour"] == 1.0  # (b - 1 h, b]: a, at exactly b - 1 h, is out
    assert got[5][1] == got[2][1] and got[4][1] == first_late


def test_customer_state_is_never_modified_and_a_repeat_returns_it() -> None:
    state: CustomerState = []
    for i, t in enumerate([T0, T0 + 60.0, T0 - 30.0, T0 + 60.0]):  # out of order, a tie
        before = copy.deepcopy(state)
        x, new = customer_features(state, t, float(i), "k", f"tx{i}")
        assert state == before and new is not state and len(new) == len(state) + 1
        state = new
    assert [e[0] for e in state] == [T0 - 30.0, T0, T0 + 60.0, T0 + 60.0]  # sorted; the tie by arrival
    assert [e[3] for e in state][2:] == ["tx1", "tx3"]
    x, again = customer_features(state, 123.0, 99.0, "other", "tx2")  # a repeat, whatever its other values
    assert again is state
    arrived_before = [e for e in state if e[3] in ("tx0", "tx1")]  # tx3 came later, though at the same time
    assert x == customer_features(arrived_before, T0 - 30.0, 2.0, "k", "tx2")[0]


def test_equal_amounts_have_no_zscore() -> None:
    # 0.1 + 0.1 + 0.1 is not 0.3: the standard deviation of equal amounts comes out as rounding noise
    events: list[Event] = [Tx(f"t{i}", T0 + i, "c", "k", 0.1) for i in range(3)]
    got = engine(events)
    assert_same(got, reference(events))
    assert got[-1][1]["amount_zscore_30day"] == 0.0 and got[-1][1]["customer_std_amount_30day"] < 1e-9


def test_terminal_windows_labels_before_and_after_and_the_hour() -> None:
    k = "k"
    txs = [Tx("f1", T0, "c1", k, 1.0), Tx("f2", T0 + DAY_S, "c2", k, 1.0), Tx("n1", T0 + DAY_S + 1, "c3", k, 1.0)]
    events: list[Event] = [
        LabelArrival("f2", T0 + DAY_S, k, True, known_s=T0 + 9 * DAY_S),  # before its transaction arrives
        *txs,
        LabelArrival("f1", T0, k, True, known_s=T0 + 3 * DAY_S),  # after
        LabelArrival("f1", T0, k, True, known_s=T0 + 2 * DAY_S),  # sent again, earlier: the earliest counts
        LabelArrival("n1", T0, k, False, known_s=T0 + DAY_S),  # not fraud
        Tx("p1", T0 + 8.5 * DAY_S, "c4", k, 1.0),  # f2 in its 1-day window, f2's label not known yet
        Tx("p2", T0 + 9 * DAY_S, "c4", k, 1.0),  # f2's label known from exactly now
        Tx("p3", T0 + 9 * DAY_S, "c5", k, 1.0),  # a tie: p2 is in its 1-hour window
        Tx("p4", T0 + 9 * DAY_S + HOUR_S, "c5", k, 1.0),  # p2, p3 exactly 1 hour old: out
    ]
    got = engine(events, check_states=True)
    assert_same(got, reference(events))
    assert_same(engine(events, split=True, check_states=True), reference(events))
    x = dict(got)
    assert (x["p1"]["terminal_nb_tx_1day_delay"], x["p1"]["terminal_risk_1day_delay"]) == (2.0, 0.0)
    assert (x["p1"]["terminal_nb_tx_7day_delay"], x["p1"]["terminal_risk_7day_delay"]) == (3.0, 1 / 3)
    assert (x["p2"]["terminal_risk_1day_delay"], x["p2"]["terminal_risk_7day_delay"]) == (0.5, 2 / 3)
    assert [x[p]["terminal_nb_tx_1hour"] for p in ("p1", "p2", "p3", "p4")] == [1.0, 1.0, 2.0, 1.0]


def add(state: TerminalState, t: float, tx_id: str, lateness_s: float = DAY_S) -> tuple[bool, TerminalState]:
    """:func:`terminal_with_entry`, and whether it added (a repeat returns the state itself, unchanged)."""
    before = copy.deepcopy(state)
    after = terminal_with_entry(state, t, tx_id, lateness_s=lateness_s)
    assert state == before
    return after is not state, after


def test_terminal_with_entry_returns_a_new_window_and_terminal_x_is_read_only() -> None:
    added_a, state = add(EMPTY_TERMINAL, T0, "a")
    added_b, state = add(state, T0 - 60.0, "b")
    added_c, state = add(state, T0, "c")
    added, same = add(state, T0 + 5.0, "a")
    assert added_a and added_b and added_c and not added and same is state
    assert [tuple(e[:2]) for e in state] == [(T0 - 60.0, "b"), (T0, "a"), (T0, "c")]
    assert [e[2] for e in state] == [1, 0, 2]  # numbered by arrival
    before = copy.deepcopy(state)
    assert terminal_x(state, T0 + 30.0, {"a": T0})["terminal_nb_tx_1hour"] == 4.0
    assert state == before
    # pruned: older than the newest - (7 + 30) days - the lateness (exactly that old stays)
    added, state = add(state, T0 + 38 * DAY_S, "d", lateness_s=DAY_S)
    assert added and [e[1] for e in state] == ["a", "c", "d"]
    added, state = add(state, T0 + 38 * DAY_S + 1, "e")
    assert added and [e[1] for e in state] == ["d", "e"]
    added, state = add(state, T0, "too-late")
    assert added and [e[1] for e in state] == ["d", "e"]


def test_entries_without_seq_are_read_as_given() -> None:
    # the runtime may hand over [t, tx_id] entries (a merged copy, a snapshot): they count, and count as older
    given = [[T0 - 60.0, "x"], [T0, "y"]]
    state = TerminalWindow.of(given)
    assert state == [(T0 - 60.0, "x", -1), (T0, "y", -1)]  # no seq: -1, before every numbered entry
    assert terminal_with_entry(state, T0, "y") is state and terminal_with_entry(given, T0, "y") == state
    state = terminal_with_entry(state, T0 - 30.0, "z")
    assert [e[1] for e in state] == ["x", "z", "y"] and state[1][2] == 0
    assert terminal_x(state, T0, {})["terminal_nb_tx_1hour"] == 4.0
    x, same = terminal_features(state, T0 - 30.0, "z", {"x": T0 - 60.0})
    assert same is state and x["terminal_nb_tx_1hour"] == 2.0  # x and y arrived before z; y is later in time
    assert x["terminal_nb_tx_1day_delay"] == 0.0
    assert terminal_features(state, T0, "y", {})[0]["terminal_nb_tx_1hour"] == 2.0  # x; z is numbered: later


def test_approx_equal_agrees_with_pytest_approx() -> None:
    """The broker tests' fast comparison (tests/reference.py) says what ``pytest.approx(rel=1e-9, abs=1e-9)`` says."""
    inf, nan = float("inf"), float("nan")
    wants = [0, 0.0, 1, 1.0, -3.5, 1e-12, 1e12, 123456.789, True, False, inf, -inf, nan]
    gots = [*wants, None, "x", 1e-9, 2e-9, 1 + 1e-9, 1 + 3e-9, 1e12 + 900, 1e12 + 1100, -3.5 - 3e-9,
            123456.789 * (1 + 1e-10), 0.999999999, 1.0000000011]  # fmt: skip
    for want in wants:
        for got in gots:
            assert approx_equal(got, want) == (got == pytest.approx(want, rel=1e-9, abs=1e-9)), (got, want)


@given(st.floats(allow_nan=False, allow_infinity=False, width=32), st.floats(-1e-8, 1e-8))
def test_approx_equal_agrees_with_pytest_approx_near_the_tolerance(want: float, offset: float) -> None:
    for got in (want + offset, want * (1 + offset)):
        assert approx_equal(got, want) == (got == pytest.approx(want, rel=1e-9, abs=1e-9)), (got, want)
