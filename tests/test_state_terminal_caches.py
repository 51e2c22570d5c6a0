"""The terminal caches change the cost of a decision, never its features: a terminal read back from its stored
value (the packed cache, the store) gives the features and fraud lookups of the parsed one, and tiny parsed and
packed caches give the same predictions and the same flushed states as caches that hold every terminal."""

from __future__ import annotations

import random
import time
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from app.decisions.scorer import Scorer
from app.features.engine import TerminalWindow, terminal_features, terminal_x
from app.learning.model import FraudModel
from app.monitoring.health import HealthWindow
from app.serialization import dumps, loads
from app.settings import load
from app.state import terminals
from app.state.memory_store import MemoryStore
from app.state.terminals import TerminalAggregates, decode_state, encode_state, with_pending
from lab.simulator import SimulatorConfig, simulate, to_wire

DAY_S = 86400.0
DELAY_DAYS = 7.0


def simulated() -> list[Any]:
    return simulate(SimulatorConfig(n_customers=60, n_terminals=120, n_days=20, seed=4))


def test_a_terminal_read_back_from_its_stored_value_gives_the_same_features_and_fraud_lookups() -> None:
    """Every transaction of 20 simulated days, its terminal's window parsed and read back from its stored value:
    the same features (the fraud lookups of the delayed windows included), the same windows after the addition."""
    txs = simulated()
    frauds: dict[str, float] = {}
    labels = sorted((t.timestamp.timestamp() + DELAY_DAYS * DAY_S, t.tx_id) for t in txs if t.is_fraud)
    windows: dict[str, Any] = {}
    risky = 0
    for tx in txs:
        t = tx.timestamp.timestamp()
        while labels and labels[0][0] <= t:
            known_s, tx_id = labels.pop(0)
            frauds[tx_id] = known_s
        parsed = windows.get(tx.terminal_id, [])
        stored = decode_state(encode_state(parsed))
        x, after = terminal_features(parsed, t, tx.tx_id, frauds, DELAY_DAYS)
        x_stored, after_stored = terminal_features(stored, t, tx.tx_id, frauds, DELAY_DAYS)
        assert x_stored == x and after_stored == after and after_stored.next_seq == after.next_seq
        assert terminal_x(stored, t + 1.0, frauds, DELAY_DAYS) == terminal_x(parsed, t + 1.0, frauds, DELAY_DAYS)
        risky += x["terminal_risk_30day_delay"] > 0
        windows[tx.terminal_id] = after
    assert len(txs) > 1500 and risky > 20  # the fraud lookups found frauds


def run(
    txs: list[Any], cache_size: int, packed_bytes: int
) -> tuple[list[dict[str, Any]], TerminalAggregates, dict[str, list[tuple[Any, ...]]]]:
    """The decision path over ``txs`` (one partition, batches of 97), the terminals on a store flushed every 3
    batches as the feed does, the fraud labels applied 7 days after their transactions."""
    settings = load({})
    aggregates = TerminalAggregates(DELAY_DAYS, DAY_S, 38 * DAY_S, MemoryStore("terminals").open_partition(0),
                                    cache_size=cache_size, packed_cache_bytes=packed_bytes)  # fmt: skip
    aggregates.load()
    scorer = Scorer(settings, FraudModel(settings.model_name), aggregates, HealthWindow(60.0, time.monotonic()),
                    store=MemoryStore("customers"), changelog_topic="changelog",
                    terminal_topic="terminal-log")  # fmt: skip
    scorer.open_state(0)
    records = [SimpleNamespace(topic="transactions", partition=0, offset=i, key=b"", value=dumps(to_wire(t)))
               for i, t in enumerate(txs)]  # fmt: skip
    labels = sorted((t.timestamp.timestamp() + DELAY_DAYS * DAY_S, t.tx_id) for t in txs if t.is_fraud)
    tp = TopicPartition("transactions", 0)
    drop = ("scored_at", "latency_ms", "received_at")  # the wall clock
    predictions = []
    for n, i in enumerate(range(0, len(records), 97)):
        now_s = txs[i].timestamp.timestamp()
        while labels and labels[0][0] <= now_s:
            known_s, tx_id = labels.pop(0)
            aggregates.add_fraud(tx_id, known_s)
        batch = scorer.process(tp, records[i : i + 97])
        batch.produced_to = i + 97
        assert batch.on_commit is not None
        batch.on_commit()
        predictions += [{k: v for k, v in loads(o.value).items() if k not in drop}
                        for o in batch.outputs if o.topic == settings.predictions_topic]  # fmt: skip
        if n % 3 == 2:
            aggregates.flush({"terminal-log/0": i + 97})
    before_flush = aggregates.all_states()
    aggregates.flush({"terminal-log/0": len(records)})
    return predictions, aggregates, before_flush


def test_tiny_parsed_and_packed_terminal_caches_give_the_same_predictions_and_states() -> None:
    txs = simulated()
    whole, big, big_states = run(txs, cache_size=10**6, packed_bytes=0)
    tiny, small, small_states = run(txs, cache_size=3, packed_bytes=10_000)  # ~10 terminals packed
    store_only, none, none_states = run(txs, cache_size=1, packed_bytes=0)
    assert len(whole) == len(txs) > 1500
    assert any(p["features"]["terminal_risk_30day_delay"] > 0 for p in whole)  # frauds were looked up
    assert tiny == whole and store_only == whole
    assert small_states == big_states == none_states and small.all_states() == big.all_states()
    assert len(small.caches.parsed) == 3 and 0 < small.caches.packed_bytes <= small.caches.packed_budget_bytes
    assert small.caches.packed_bytes == sum(len(v) for v in small.caches.packed.values())
    assert not set(small.caches.packed) & set(small.caches.parsed) and not none.caches.packed
    for terminal_id in big.all_states():
        assert small.peek(terminal_id) == big.peek(terminal_id) == none.peek(terminal_id)
        assert small.state(terminal_id) == big.state(terminal_id)
    assert small.terminal_count == big.terminal_count


def test_a_packed_terminal_is_dropped_when_it_changes_or_expires() -> None:
    a = TerminalAggregates(DELAY_DAYS, DAY_S, 38 * DAY_S, MemoryStore("t").open_partition(0), cache_size=1,
                           packed_cache_bytes=10_000)  # fmt: skip
    a.load()
    for i in range(5):
        a.add("old", i * 60.0, f"o{i}")
        a.add("new", 30 * DAY_S + i * 60.0, f"n{i}")
    assert list(a.caches.parsed) == ["new"] and list(a.caches.packed) == [
        "old"
    ]  # packed unflushed: "dirty" is read first
    a.flush({})
    packed_old = decode_state(a.caches.packed["old"])
    assert a.state("old") == packed_old and list(a.caches.parsed) == ["old"] and list(a.caches.packed) == ["new"]
    assert a.caches.packed_bytes == len(a.caches.packed["new"])
    a.add("new", 30 * DAY_S + 600.0, "n5")  # a change: parsed again, the packed copy gone
    assert list(a.caches.parsed) == ["new"] and list(a.caches.packed) == ["old"] and len(a.state("new")) == 6
    a.stream_time_s = 39 * DAY_S + 1.0  # "old" is past the TTL
    assert (
        a.sweep() == 1 and "old" not in a.caches.packed and "old" not in a.caches.parsed and a.caches.packed_bytes == 0
    )
    a.flush({})
    assert not a.state("old") and list(a.all_states()) == ["new"]


def test_the_packed_cache_keeps_to_its_budget_and_peek_and_prefetch_leave_it_be() -> None:
    a = TerminalAggregates(DELAY_DAYS, DAY_S, 38 * DAY_S, MemoryStore("t").open_partition(0), cache_size=2,
                           packed_cache_bytes=1_000)  # fmt: skip
    a.load()
    for k in range(30):
        for i in range(4):
            a.add(f"k{k}", i * 60.0 + k, f"{k}-{i}")
    a.flush({})
    assert len(a.caches.parsed) == 2 and 0 < a.caches.packed_bytes <= 1_000
    assert a.caches.packed_bytes == sum(len(v) for v in a.caches.packed.values())
    held = list(a.caches.packed)
    assert (
        a.peek(held[0]) == decode_state(a.caches.packed[held[0]]) and list(a.caches.packed) == held
    )  # peek moves nothing
    reads: list[bytes] = []
    store = a.store
    assert store is not None
    real = store.get_many

    def counted(keys: Any) -> dict[bytes, bytes]:
        keys = list(keys)
        reads.extend(keys)
        return real(keys)

    store.get_many = counted  # type: ignore[method-assign]
    a.prefetch([held[-1], "k0", *a.caches.parsed])  # only "k0" (neither parsed nor packed) is read from the store
    assert reads == [terminals.TERMINAL_PREFIX + b"k0"] and held[-1] in a.caches.packed
    assert a.state(held[-1]) == [(i * 60.0 + int(held[-1][1:]), f"{held[-1][1:]}-{i}", i) for i in range(4)]


def test_scored_marks_past_the_limit_are_forgotten_a_tenth_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(terminals, "ADDED_HERE_MAX", 100)
    monkeypatch.setattr(terminals, "ADDED_HERE_FORGET", 10)
    a = TerminalAggregates(DELAY_DAYS, DAY_S, 38 * DAY_S)
    for i in range(101):
        a.add_scored("k", float(i), f"tx{i}")
    assert len(a.added_here) == 91 and next(iter(a.added_here)) == "tx10"  # the oldest tenth forgotten
    assert not a.read_back("tx3") and a.read_back("tx10") and not a.read_back("tx10")


def test_the_batch_pending_entries_merge_by_column_as_the_sorted_entries_did() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        held = sorted(((float(rng.randrange(10)), f"a{i}", i) for i in range(rng.randrange(6))), key=lambda e: e[0])
        window = TerminalWindow.of(held)
        extra = [(float(rng.randrange(10)), f"p{i}") for i in range(rng.randrange(1, 4))]
        merged = with_pending(window, extra)
        expected = TerminalWindow.of(sorted([*window, *extra], key=lambda e: e[0]))
        assert merged == expected and merged.next_seq == expected.next_seq
