"""The customer caches change the cost of a decision, never its features: tiny parsed and packed caches (every
customer read back from the store or unpacked) give the same predictions and the same committed states as caches
that hold everyone."""

from __future__ import annotations

import random
import time
from types import SimpleNamespace

from aiokafka import TopicPartition

from app.decisions.scorer import Scorer
from app.features.engine import EMPTY_WINDOW, customer_features
from app.learning.model import FraudModel
from app.monitoring.health import HealthWindow
from app.serialization import dumps, loads
from app.settings import load
from app.state.customers import (
    PartitionState,
    after_entry,
    entry_key,
    entry_value,
    pack_window,
    pruned,
    unpack_window,
)
from app.state.memory_store import MemoryStore
from app.state.terminals import TerminalAggregates
from lab.simulator import SimulatorConfig, simulate, to_wire


def run(env: dict[str, str], records: list[SimpleNamespace]) -> tuple[list[bytes], Scorer]:
    settings = load(env)
    scorer = Scorer(settings, FraudModel(settings.model_name), TerminalAggregates(7.0, 86400.0, 38 * 86400.0),
                    HealthWindow(60.0, time.monotonic()), store=MemoryStore("customers"),
                    changelog_topic="changelog", terminal_topic="terminal-log")  # fmt: skip
    scorer.open_state(0)
    tp = TopicPartition("transactions", 0)
    predictions = []
    for i in range(0, len(records), 97):
        batch = scorer.process(tp, records[i : i + 97])
        batch.produced_to = i + 97
        assert batch.on_commit is not None
        batch.on_commit()
        predictions += [o.value for o in batch.outputs if o.topic == settings.predictions_topic]
    return predictions, scorer


def test_tiny_parsed_and_packed_caches_give_the_same_predictions_and_states() -> None:
    simulated = simulate(SimulatorConfig(n_customers=60, n_terminals=120, n_days=12, seed=4))
    records = [SimpleNamespace(topic="transactions", partition=0, offset=i, key=b"", value=dumps(to_wire(t)))
               for i, t in enumerate(simulated)]  # fmt: skip
    whole, big = run({}, records)
    small_env = {"STATE_CUSTOMER_CACHE": "3", "STATE_CUSTOMER_PACKED_MB": "0.01"}  # ~10 KB: a few customers
    tiny, small = run(small_env, records)
    store_only, none = run({"STATE_CUSTOMER_CACHE": "1"}, records)
    assert len(whole) == len(records) > 500
    drop = ("scored_at", "latency_ms", "received_at")  # the wall clock
    strip = [{k: v for k, v in loads(p).items() if k not in drop} for p in whole]
    assert [{k: v for k, v in loads(p).items() if k not in drop} for p in tiny] == strip
    assert [{k: v for k, v in loads(p).items() if k not in drop} for p in store_only] == strip
    state, small_state = big.partitions[0], small.partitions[0]
    assert (
        0 < small_state.caches.packed_bytes <= small_state.caches.packed_budget_bytes
        and len(small_state.caches.parsed) == 3
    )
    assert small_state.caches.packed_bytes == sum(len(v) for v in small_state.caches.packed.values())
    assert not set(small_state.caches.packed) & set(small_state.caches.parsed)
    for customer_id in state.customer_ids():
        assert small_state.peek(customer_id) == state.peek(customer_id) == state.read(customer_id)
        assert small_state.customer(customer_id) == state.customer(customer_id)


def test_a_packed_customer_is_dropped_when_it_changes_or_expires() -> None:
    state = PartitionState(MemoryStore("customers").open_partition(0), cache_size=1, packed_cache_bytes=10_000)
    entries = {c: [(i * 60.0, 1.0 + i, "k1", f"{c}-tx{i}", i) for i in range(5)] for c in ("a", "b")}
    updates = {entry_key(c, e[3]): entry_value(e) for c, es in entries.items() for e in es}
    state.apply(updates, 1, {}, [])
    a, b = state.customer("a"), state.customer("b")  # a goes to the packed cache
    assert (
        list(state.caches.parsed) == ["b"]
        and list(state.caches.packed) == ["a"]
        and unpack_window(state.caches.packed["a"]) == a
    )
    newer = a.since(2)
    state.apply({entry_key("a", e[3]): None for e in entries["a"][:2]}, 2, {"a": newer}, [])
    assert list(state.caches.parsed) == ["a"] and list(state.caches.packed) == ["b"] and state.customer("a") == newer
    state.apply({entry_key("b", e[3]): None for e in entries["b"]}, 3, {}, ["b"])
    assert not state.caches.packed and state.caches.packed_bytes == 0 and not state.customer("b")
    assert pack_window(b) is not None and unpack_window(pack_window(b) or b"") == b


def test_a_window_as_held_reads_packs_and_grows_as_its_entries_do() -> None:
    """The columns as held (terminal indices, the escaped id text) against the plain entries: ids holding the
    separator or the escape, terminals past 256 distinct (four-byte indices) and the unused ones dropped, arrivals
    out of order, pruning; each window read back from its packed form and from its entries gives the same features."""
    rng = random.Random(7)
    ids = ["a", "\x00", "b\x00c", "\x01", "\x01a", "\x01b", "x\x01\x00", "", "tx-1"]
    window, entries = EMPTY_WINDOW, []
    frauds = {"\x01a": 0.0, "tx-40": 0.0}
    for i in range(900):
        t = i * 7200.0 + (rng.random() * 40_000 if i % 5 == 0 else 0.0)
        tx_id = ids[i] if i < len(ids) else f"tx-{i}"
        terminal = f"k{i}" if 200 <= i < 500 or i % 20 == 0 else f"k{rng.randrange(4)}"
        x, after = customer_features(window, t, float(i % 13), terminal, tx_id, 3600.0 * 6, frauds)
        unpacked = unpack_window(pack_window(window) or b"") if window else window
        assert customer_features(unpacked, t, float(i % 13), terminal, tx_id, 3600.0 * 6, frauds) == (x, after)
        assert customer_features(entries, t, float(i % 13), terminal, tx_id, 3600.0 * 6, frauds) == (x, after)
        assert after_entry(after, tx_id) in (None, next(e for e in after if e[3] == tx_id))
        removed = pruned(window, after)
        assert removed == pruned(entries, list(after)) and not {e[3] for e in removed} & set(after.ids)
        window, entries = after, list(after)
        assert window.ids == tuple(e[3] for e in entries) and [window[i] for i in range(len(window))] == entries
        assert all(window.index(e[3]) == i for i, e in enumerate(entries))
        assert set(window.terminals) <= set(window.names) and len(window.names) <= 2 * len(window) + 17
        if i == 450:
            assert not isinstance(window.tix, bytes) and len(window.names) > 256  # four-byte indices
    assert len(set(window.terminals)) < 100 < len(window.names)  # the burst pruned; its names until a compaction
    assert customer_features(window, 0.0, 1.0, "k1", "\x00", 60.0)[1] is not window  # pruned long ago: not a repeat
    assert customer_features(window, t, 1.0, "k1", "tx-899", 60.0)[1] is window  # a repeat
    assert customer_features(unpacked, 0.0, 1.0, "k1", "x\x01\x00", 60.0)[1] is not unpacked
