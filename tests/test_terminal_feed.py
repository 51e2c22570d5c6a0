"""The terminal aggregates on a store, and their Kafka checkpoint, without a broker: a flush writes the data with
the positions it covers; a crash before a flush loses nothing the logs cannot give again; a checkpoint taken at a
flush, then the logs' tail, restores the same aggregates; an untrustworthy checkpoint is refused."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import cramjam
import pytest
from aiokafka import TopicPartition

from app.features.engine import TerminalWindow
from app.serialization import dumps, loads
from app.state import terminal_checkpoint, terminal_feed
from app.state.memory_store import MemoryStore
from app.state.rocksdb_store import RocksDBConfig, RocksDBStore
from app.state.store import Store
from app.state.terminal_feed import TerminalFeed
from app.state.terminals import META_KEY, TERMINAL_PREFIX, TerminalAggregates, decode_state, encode_state
from tests.reference import Tx, features_of

DAY_S = 86400.0
WINDOWS = {"delay_days": 7.0, "lateness_s": DAY_S, "ttl_s": 38 * DAY_S}


def aggregates(store: Store | None = None, cache_size: int = 5000) -> TerminalAggregates:
    a = TerminalAggregates(7.0, DAY_S, 38 * DAY_S, cache_size=cache_size)
    a.store = (store or MemoryStore("terminals")).open_partition(0)
    a.load()
    return a


def history(n: int, terminals: int, seed: int = 0) -> list[tuple[str, float, str]]:
    rng = random.Random(seed)
    t = 0.0
    out = []
    for i in range(n):
        t += rng.expovariate(1 / 600.0)
        out.append((f"k{rng.randrange(terminals)}", t, f"tx{i}"))
    return out


def feed_of(store: Store) -> TerminalFeed:
    a = TerminalAggregates(7.0, DAY_S, 38 * DAY_S)
    return TerminalFeed(a, store, bootstrap_servers="unused:9092", terminal_topic="terminal-log", labels_topic="labels",
                        checkpoint_topic="checkpoints", checkpoint_transactional_id="x", checkpoint_interval_s=60.0,
                        sweep_interval_s=60.0, max_message_bytes=65536)  # fmt: skip


@pytest.mark.parametrize("backend", ["memory", "rocksdb"])
def test_a_small_cache_gives_the_same_features_as_holding_everything(tmp_path: Path, backend: str) -> None:
    store: Store = MemoryStore("t") if backend == "memory" else RocksDBStore("t", tmp_path, RocksDBConfig(8, 1, 2))
    small, whole = aggregates(store, cache_size=3), aggregates(MemoryStore("w"), cache_size=10**6)
    events = history(3000, 40)
    for i, (terminal, t, tx_id) in enumerate(events):
        if i % 50 == 7:
            small.add_fraud(events[i - 5][2], t)
            whole.add_fraud(events[i - 5][2], t)
        assert small.features(terminal, t, tx_id) == whole.features(terminal, t, tx_id)
        small.add(terminal, t, tx_id)
        whole.add(terminal, t, tx_id)
        if i % 97 == 0:
            small.flush({"terminal-log/0": i + 1})
    assert len(small.caches.parsed) <= 3
    assert small.all_states() == whole.all_states()
    store.close()


def test_the_features_equal_the_reference_implementation() -> None:
    a = aggregates()
    events = history(2000, 15, seed=3)
    frauds: dict[str, float] = {}
    seen: dict[str, list[Tx]] = {}
    for i, (terminal, t, tx_id) in enumerate(events):
        if i % 40 == 39:
            frauds[events[i - 30][2]] = t
            a.add_fraud(events[i - 30][2], t)
        x = a.features(terminal, t, tx_id)
        tx = Tx(tx_id, t, "c", terminal, 1.0)
        ref = features_of(tx, [], seen.get(terminal, []), frauds, 7.0)
        assert x == pytest.approx({k: ref[k] for k in x}), i
        a.add(terminal, t, tx_id)
        seen.setdefault(terminal, []).append(tx)
        if i % 13 == 0:
            a.flush({"terminal-log/0": i + 1})


def test_pending_transactions_of_the_batch_count_as_if_added() -> None:
    a = aggregates()
    for terminal, t, tx_id in history(300, 3, seed=4):
        a.add(terminal, t, tx_id)
    a.add_fraud("tx5", known_s=0.0)
    t = a.stream_time_s + 60.0
    pending = [(t - 30.0, "p1"), (t - 8 * DAY_S, "p2"), (t, "me")]  # "me": the transaction itself, left out
    x = a.features("k1", t, "me", pending)
    for te, tx_id in pending[:2]:
        a.add("k1", te, tx_id)
    assert x == a.features("k1", t, "me") and x["terminal_nb_tx_1hour"] >= 2.0
    assert a.state("k1") == TerminalWindow.of(sorted(a.state("k1"), key=lambda e: e[0]))


@pytest.mark.parametrize(
    "entries",
    [
        [],
        [(1.5, "t1", 0)],
        [(-3e9, "", -1), (0.0, 'q"uo\\te', 0), (1e300, "\u00e9\u2028\x00\U0001f642", 2**40), (1e300, "[]", 7)],
    ],
)
def test_a_stored_terminal_reads_back_as_it_was(entries: list[tuple[float, str, int]]) -> None:
    raw = encode_state(entries)
    assert raw[:1] == b"\x01" and decode_state(raw) == entries == list(decode_state(raw))
    assert decode_state(dumps(entries)) == entries  # the earlier format: a JSON list of entries
    with pytest.raises(ValueError):
        decode_state(b"\x02" + raw[1:])


def test_terminals_stored_in_the_earlier_json_format_are_read_swept_and_rewritten() -> None:
    store = MemoryStore("t")
    part = store.open_partition(0)
    tx = part.begin()  # a store as the earlier version wrote it
    tx.put(TERMINAL_PREFIX + b"k1", b'[[0.0,"a",0],[60.0,"b",1]]')
    tx.put(TERMINAL_PREFIX + b"idle", b'[[-4000000.0,"z",0]]')
    tx.put(META_KEY, dumps({"positions": {"terminal-log/0": 2}, "stream_time_s": 60.0, "terminals": 2}))
    tx.commit(1)
    a = aggregates(store)
    assert a.state("k1") == [(0.0, "a", 0), (60.0, "b", 1)]
    assert a.features("k1", 120.0, "c")["terminal_nb_tx_1hour"] == 3.0
    assert a.add("k1", 120.0, "c") and not a.add("k1", 60.0, "b")
    assert a.sweep() == 1  # the idle terminal's newest time, read from its JSON value
    a.flush({"terminal-log/0": 3})
    assert part.get(TERMINAL_PREFIX + b"idle") is None
    raw = part.get(TERMINAL_PREFIX + b"k1")
    assert raw is not None and raw[:1] == b"\x01"
    assert decode_state(raw) == [(0.0, "a", 0), (60.0, "b", 1), (120.0, "c", 2)]
    assert a.all_states() == {"k1": [(0.0, "a", 0), (60.0, "b", 1), (120.0, "c", 2)]}


def test_a_crash_before_the_flush_loses_nothing_the_logs_cannot_give_again(tmp_path: Path) -> None:
    events = history(1500, 30, seed=1)
    live = aggregates(RocksDBStore("t", tmp_path / "live", RocksDBConfig(8, 1, 2)))
    for terminal, t, tx_id in events[:1000]:
        live.add(terminal, t, tx_id)
    live.add_fraud("tx10", 5000.0)
    live.flush({"terminal-log/0": 1000, "labels/0": 1})
    for terminal, t, tx_id in events[1000:1200]:  # applied, never flushed: the process dies here
        live.add(terminal, t, tx_id)
    assert live.write_some(5) > 0  # a slice of a flush written ahead of the positions, the rest lost
    assert live.store is not None
    live.store.close()

    store = RocksDBStore("t", tmp_path / "live", RocksDBConfig(8, 1, 2))
    feed = feed_of(store)
    feed.open_store()
    assert feed.restored_from == "store"
    assert feed.positions == {TopicPartition("terminal-log", 0): 1000, TopicPartition("labels", 0): 1}
    for terminal, t, tx_id in events[1000:]:  # the logs again from the positions
        feed.aggregates.add(terminal, t, tx_id)
    expected = aggregates()
    for terminal, t, tx_id in events:
        expected.add(terminal, t, tx_id)
    expected.add_fraud("tx10", 5000.0)
    assert feed.aggregates.all_states() == expected.all_states()
    assert feed.aggregates.frauds_known_s == expected.frauds_known_s
    assert feed.aggregates.terminal_count == len(expected.all_states()) == 30
    feed.close()


def test_a_store_without_positions_is_wiped(tmp_path: Path) -> None:
    store = RocksDBStore("t", tmp_path, RocksDBConfig(8, 1, 2))
    part = store.open_partition(0)
    tx = part.begin()
    tx.put(b"kA", b'[[1.0,"t",0]]')  # a checkpoint load cut short before its positions
    tx.commit(1)
    store.close()
    feed = feed_of(RocksDBStore("t", tmp_path, RocksDBConfig(8, 1, 2)))
    feed.open_store()
    assert not feed.restored and feed.aggregates.all_states() == {}
    feed.close()


def test_a_checkpoint_at_a_flush_and_the_logs_tail_restore_the_same_aggregates() -> None:
    events = history(6000, 3000, seed=2)  # several chunks of terminals
    live = aggregates()
    for terminal, t, tx_id in events[:4000]:
        live.add(terminal, t, tx_id)
    live.add_fraud("tx3", known_s=5000.0)
    positions = {"terminal-log/0": 4000, "labels/0": 1}
    live.flush(positions)
    encoded = list(terminal_checkpoint.encode(live, positions, WINDOWS))
    head = encoded[-1]
    assert isinstance(head, dict) and head["chunks"] == len(encoded) - 1 >= 2
    latest: dict[bytes, bytes | None] = {terminal_checkpoint.chunk_key(i): c for i, c in enumerate(encoded[:-1])}  # type: ignore[misc]
    latest[terminal_checkpoint.HEAD_KEY] = terminal_checkpoint.dumps(head)
    checkpoint = terminal_checkpoint.decode(latest, WINDOWS)
    assert checkpoint is not None and checkpoint.positions == positions
    body = loads(bytes(cramjam.zstd.decompress(encoded[-2])))  # type: ignore[arg-type]
    terminal, entries = next(iter(body["terminals"].items()))  # JSON entry lists, as every version writes them
    assert entries == [list(e) for e in live.state(terminal)] and len(entries[0]) == 3

    restored = aggregates()
    restored.replace(checkpoint.chunks, checkpoint.frauds_known_s, checkpoint.stream_time_s, checkpoint.positions)
    assert restored.load() == positions
    for terminal, t, tx_id in [*events[3900:4000], *events[4000:]]:  # the tail, and some repeats
        restored.add(terminal, t, tx_id)
    for terminal, t, tx_id in events[4000:]:
        live.add(terminal, t, tx_id)
    assert restored.all_states() == live.all_states()
    assert restored.frauds_known_s == live.frauds_known_s
    assert restored.terminal_count == live.terminal_count
    assert restored.stream_time_s == live.stream_time_s

    # A chunk that is not the head's (a torn or mixed checkpoint), or other windows: refused.
    torn = dict(latest)
    torn[terminal_checkpoint.chunk_key(1)] = encoded[0]  # type: ignore[assignment]
    assert terminal_checkpoint.decode(torn, WINDOWS) is None
    missing = {k: v for k, v in latest.items() if k != terminal_checkpoint.chunk_key(0)}
    assert terminal_checkpoint.decode(missing, WINDOWS) is None
    assert terminal_checkpoint.decode(latest, {**WINDOWS, "delay_days": 3.0}) is None


def test_the_sweep_removes_idle_terminals_a_slice_at_a_time() -> None:
    a = aggregates()
    for i in range(50):
        a.add(f"old{i:02d}", float(i), f"o{i}")
    a.add("busy", 100 * DAY_S, "b")
    a.add_fraud("o1", 10.0)
    a.flush({})
    removed = 0
    for _ in range(6):  # 10 terminals a slice: every terminal seen after 6 slices
        removed += a.sweep(max_terminals=10)
        a.flush({})
    assert removed == 50
    assert list(a.all_states()) == ["busy"] and a.terminal_count == 1
    assert a.frauds_known_s == {}
    assert a.load() == {} and a.terminal_count == 1 and a.frauds_known_s == {}


class Record:
    """What the feed reads from the terminal log: key = terminal, value = [t, tx_id]."""

    def __init__(self, terminal: str, t: float, tx_id: str, offset: int) -> None:
        self.key, self.value, self.offset, self.timestamp = terminal.encode(), dumps([t, tx_id]), offset, 0


def test_the_feed_skips_what_the_scorer_added_and_adds_the_rest_once() -> None:
    feed = feed_of(MemoryStore("t"))
    feed.open_store()
    a = feed.aggregates
    events = history(400, 20, seed=5)
    mine = [e for i, e in enumerate(events) if i % 3 == 0]  # this worker's partitions: added when they commit
    for terminal, t, tx_id in mine:
        a.add_scored(terminal, t, tx_id)
    assert len(a.added_here) == len(mine)
    calls: list[str] = []
    real_add = a.add
    a.add = lambda terminal, t, tx_id: calls.append(tx_id) or real_add(terminal, t, tx_id)  # type: ignore[method-assign]
    feed._apply_terminal_records([Record(*e, offset=i) for i, e in enumerate(events)], now_wall_s=0.0)  # noqa: SLF001
    assert sorted(calls) == sorted(tx_id for i, (_, _, tx_id) in enumerate(events) if i % 3 != 0)
    assert a.added_here == {}
    expected = aggregates()
    for terminal, t, tx_id in events:
        expected.add(terminal, t, tx_id)

    def entries(states: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
        return {k: [e[:2] for e in v] for k, v in states.items()}  # seq numbers this worker's arrival order

    assert entries(a.all_states()) == entries(expected.all_states())


def test_marks_of_scored_transactions_go_with_the_state_they_were_added_to() -> None:
    a = aggregates()
    a.add_scored("k1", 1.0, "tx1")
    assert a.read_back("tx1") and not a.read_back("tx1")  # read back once
    a.add_scored("k1", 2.0, "tx2")
    a.load()  # the state is reloaded (a wipe, a checkpoint taken over): the log's records must be added again
    assert not a.read_back("tx2")


def test_only_fraud_labels_are_marked_and_the_others_are_passed_by_unparsed(monkeypatch: pytest.MonkeyPatch) -> None:
    feed = feed_of(MemoryStore("t"))
    parsed: list[bytes] = []
    real = terminal_feed.parse_label
    monkeypatch.setattr(terminal_feed, "parse_label", lambda raw, limit: parsed.append(raw) or real(raw, limit))
    at = "2018-04-08T10:00:00Z"
    values = [
        dumps({"tx_id": "f1", "is_fraud": True, "timestamp": at}),
        b'{"tx_id": "f2", "is_fraud" :\n true, "timestamp": "2018-04-08T10:00:01Z"}',  # spaces: JSON all the same
        dumps({"tx_id": "l1", "is_fraud": False, "timestamp": at}),
        dumps({"tx_id": "true-but-legit", "is_fraud": False, "timestamp": at}),  # "true" in it: parsed, not marked
        dumps({"tx_id": "f3", "is_fraud": True}),  # no timestamp: invalid, the learner dead-letters it
        b"not json, true",
        b"not json",
        None,
    ]
    feed._apply_labels([type("Record", (), {"value": v})() for v in values])  # noqa: SLF001
    assert set(feed.aggregates.frauds_known_s) == {"f1", "f2"}
    assert [v for v in values if v is not None and b"true" in v] == parsed  # the rest not even parsed
