"""The customer store's layout: one packed window per customer, written from the committed windows, rebuilt from
the changelog's per-entry records (which stay the source of truth), and a store of the per-entry layout rebuilt."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from app.decisions.scorer import Scorer
from app.features.engine import EMPTY_WINDOW, CustomerWindow
from app.learning.model import FraudModel
from app.monitoring.health import HealthWindow
from app.serialization import dumps, loads
from app.settings import load
from app.state.customers import (
    CUSTOMER_FORMAT_MARKER,
    POSITION_KEY,
    ChangelogReplay,
    PartitionState,
    changed_window,
    customer_key,
    entry_key,
    entry_value,
    idle_slice,
    position_value,
    restored_state,
)
from app.state.memory_store import MemoryStore
from app.state.recovery import Action, open_for_recovery
from app.state.rocksdb_store import RocksDBConfig, RocksDBStore
from app.state.store import FORMAT_MARKER, Store, StorePartition
from app.state.terminals import TerminalAggregates
from tests.cases import transaction

DAY_S = 86400.0
TP = TopicPartition("transactions", 0)
SMALL = RocksDBConfig(block_cache_mb=8, write_buffer_mb=1, write_buffer_count=2)

ids = st.text(min_size=1, max_size=40)  # any unicode, the separator and NUL included
entries = st.lists(
    st.tuples(st.floats(-1e12, 1e12), st.floats(0.0, 1e7), ids, ids, st.integers(-(2**63), 2**63 - 1)),
    max_size=80,
    unique_by=lambda e: e[3],
).map(lambda es: sorted(es, key=lambda e: (e[0], e[4])))


# ---- packing -------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(entries)
def test_a_packed_window_reads_back_equal_with_its_newest_time(es: list[tuple[Any, ...]]) -> None:
    window = CustomerWindow.of(es)
    raw = window.to_bytes()
    back = CustomerWindow.from_bytes(raw)
    assert back == window and list(back) == es
    assert CustomerWindow.newest_time_s_of(raw) == (es[-1][0] if es else float("-inf"))
    assert back.to_bytes() == raw
    assert isinstance(back.ids, tuple) and isinstance(back.terminals, tuple)
    assert all(t is sys.intern(t) for t in back.terminals)  # one string per terminal however many customers


def test_the_empty_window_packs_to_a_count_and_an_empty_list() -> None:
    raw = EMPTY_WINDOW.to_bytes()
    assert raw == b"\0\0\0\0[]" and not CustomerWindow.from_bytes(raw)
    assert CustomerWindow.newest_time_s_of(raw) == float("-inf")


def test_unicode_ids_and_the_layout_of_a_packed_window() -> None:
    es = [(1.5, 2.25, "térm\u2603", "tx-\U0001f600", 3), (9.0, 0.0, "k\x1f\x00", "日本", 4)]
    raw = CustomerWindow.of(es).to_bytes()
    strings = dumps([es[0][2], es[1][2], es[0][3], es[1][3]])
    assert raw[:4] == (2).to_bytes(4, "little") and len(raw) == 4 + 3 * 2 * 8 + len(strings)
    assert list(CustomerWindow.from_bytes(raw)) == es


def test_a_damaged_packed_window_is_refused_not_misread() -> None:
    raw = CustomerWindow.of([(1.0, 2.0, "k", "a", 0), (2.0, 3.0, "k", "b", 1)]).to_bytes()
    with pytest.raises(ValueError):
        CustomerWindow.from_bytes(raw[:20])
    with pytest.raises(ValueError):
        CustomerWindow.from_bytes(raw[:4] + raw[4 + 8 :])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_changelog_records_applied_to_a_packed_window_give_what_a_replay_from_nothing_gives(
    data: st.DataObject,
) -> None:
    """Deletions and rewrites of held entries, adds before, among and after them: the columns' fast path (oldest
    gone, newer added) and the sort agree with the reference."""
    times = st.floats(0.0, 100.0).map(lambda t: round(t, 1))  # few distinct times: ties by seq
    n = data.draw(st.integers(0, 12))
    seqs = data.draw(st.lists(st.integers(0, 10**6), min_size=n + 8, max_size=n + 8, unique=True))
    held = sorted(((data.draw(times), float(i), f"k{i % 3}", f"tx{i}", seqs[i]) for i in range(n)),
                  key=lambda e: (e[0], e[4]))  # fmt: skip
    changes: dict[str, bytes | None] = {}
    for e in held:
        action = data.draw(st.sampled_from(["keep", "delete", "rewrite"]))
        if action == "delete":
            changes[e[3]] = None
        elif action == "rewrite":
            changes[e[3]] = entry_value((e[0], e[1] + 0.5, e[2], e[3], e[4]))
    later = data.draw(st.booleans())  # the usual case: every add after the held entries
    top = max((e[0] for e in held), default=0.0)
    for j in range(data.draw(st.integers(0, 8))):
        t = top + 1.0 + j if later else data.draw(times)
        changes[f"new{j}"] = entry_value((t, 7.0, "k9", f"new{j}", seqs[n + j] + (10**7 if later else 0)))
    if data.draw(st.booleans()):
        changes["never-held"] = None
    raw = CustomerWindow.of(held).to_bytes() if held else None
    merged = {e[3]: entry_value(e) for e in held}
    merged.update(changes)
    want = restored_state({tx_id: value for tx_id, value in merged.items() if value is not None})
    got = changed_window(raw, changes)
    assert got == want
    assert CustomerWindow.from_bytes(got.to_bytes()) == want


# ---- the store written on commit, and the replay of the changelog --------------------------------------------


@pytest.fixture(params=["memory", "rocksdb"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], Store]]:
    """A new customer store per name (a directory of its own on RocksDB)."""
    stores: list[Store] = []

    def make(name: str) -> Store:
        store: Store
        if request.param == "memory":
            store = MemoryStore(name, format_marker=CUSTOMER_FORMAT_MARKER)
        else:
            store = RocksDBStore(name, tmp_path, SMALL, CUSTOMER_FORMAT_MARKER)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def _replayed(part: StorePartition, records: list[tuple[bytes, bytes | None]], slice_records: int) -> None:
    """``records`` (changelog offsets 0, 1, ...) applied a slice at a time, like Scorer._replay."""
    replay = ChangelogReplay(part)
    for offset, (key, value) in enumerate(records):
        replay.add(key, value)
        if replay.records >= slice_records:
            replay.commit(offset + 1)
    replay.commit(max(len(records), part.committed_offset or 0))


def _contents(part: StorePartition) -> dict[bytes, bytes]:
    return dict(part.iter_from(b""))


def test_a_replay_adds_and_removes_entries_by_tx_id_keeps_them_in_order_and_takes_the_position(
    make_store: Callable[[str], Store],
) -> None:
    part = make_store("replay").open_partition(0)
    e = [(float(10 - i), 1.0 + i, f"k{i % 3}", f"tx{i}", i) for i in range(10)]  # arriving newest first
    records: list[tuple[bytes, bytes | None]] = [(entry_key("c1", x[3]), entry_value(x)) for x in e]
    records += [(POSITION_KEY, position_value(10.0, 10, 2)), (entry_key("c2", "only"), entry_value(e[0]))]
    records += [(entry_key("c1", "tx0"), None), (entry_key("c1", "never-held"), None)]
    records += [(entry_key("c2", "only"), None), (POSITION_KEY, position_value(10.0, 14, 1))]
    _replayed(part, records, slice_records=3)  # adds and deletions of one customer across slices
    assert part.committed_offset == len(records)
    assert CustomerWindow.from_bytes(part.get(customer_key("c1")) or b"") == sorted(e[1:])
    assert part.get(customer_key("c2")) is None  # emptied: deleted
    assert loads(part.get(POSITION_KEY) or b"") == {"stream_time_s": 10.0, "next_offset": 14, "customers": 1}
    state = PartitionState(part)
    state.load_position()
    assert (state.customer_ids(), state.customer_count, state.next_offset) == (["c1"], 1, 14)
    assert state.peek("c1") == restored_state({x[3]: entry_value(x) for x in e[1:]})


def test_a_replay_of_one_slice_reads_and_writes_each_customer_once(make_store: Callable[[str], Store]) -> None:
    part = make_store("once").open_partition(0)
    writes: list[dict[bytes, bytes | None]] = []
    apply = part.apply

    def counted(updates: dict[bytes, bytes | None], offset: int, committed_at_s: float) -> None:
        writes.append(dict(updates))
        apply(updates, offset, committed_at_s)

    part.apply = counted  # type: ignore[method-assign]
    records = [(entry_key(f"c{i % 4}", f"tx{i}"), entry_value((float(i), 1.0, "k", f"tx{i}", i))) for i in range(40)]
    _replayed(part, records, slice_records=100)
    assert len(writes) == 1 and sorted(writes[0]) == [customer_key(f"c{i}") for i in range(4)]
    assert [len(CustomerWindow.from_bytes(part.get(customer_key(f"c{i}")) or b"")) for i in range(4)] == [10] * 4


def scorer(store: Store, **env: str) -> Scorer:
    handler = Scorer(load({"PREDICTIONS_TOPIC": "predictions", **env}), FraudModel(),
                     TerminalAggregates(7.0, DAY_S, 38 * DAY_S), HealthWindow(60.0, time.monotonic()), store=store,
                     changelog_topic="changelog", terminal_topic="terminal-log")  # fmt: skip
    handler.open_state(0)
    return handler


def _run(handler: Scorer, days: int = 70) -> list[tuple[bytes, bytes | None, int]]:
    """A batch a day (pruning past 30 days, idle expiry, repeats, late ones), committed; the changelog they wrote
    as (key, value, the changelog offset the batch's commit reached)."""
    changelog: list[tuple[bytes, bytes | None, int]] = []
    offset = 0

    def commit(batch: Any) -> None:
        nonlocal offset
        records = [(o.key, o.value) for o in batch.outputs if o.topic == "changelog"]
        offset += len(records) + 1  # the transaction's commit marker
        changelog.extend((key, value, offset) for key, value in records)
        batch.produced_to = offset
        batch.on_commit()

    start = 1522576800.0  # 2018-04-01
    n = 0
    for day in range(days):
        txs = []
        for j in range(6):
            customer = f"c-{(day // 40) * 3 + j % 4}"  # c-0..c-3, then c-3..c-6: c-0..c-2 go idle
            t = start + day * DAY_S + j * 3000.0
            if j == 5:
                t -= 2 * DAY_S  # late
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
            txs.append(transaction(n, customer_id=customer, terminal_id=f"t-{n % 5}", timestamp=stamp))
            n += 1
        if day % 9 == 0:
            txs.append(txs[0])  # a repeat: dead-lettered, nothing written for it
        records = [SimpleNamespace(topic="transactions", partition=0, offset=day * 10 + i, key=b"c", value=dumps(t))
                   for i, t in enumerate(txs)]  # fmt: skip
        commit(handler.process(TP, records))
        idle = handler.idle(TP)
        if idle is not None:
            commit(idle)
    return changelog


def test_a_restore_from_the_changelog_equals_the_committed_store(make_store: Callable[[str], Store]) -> None:
    env = {"CUSTOMER_TTL_S": str(10 * DAY_S), "FEATURES_SWEEP_INTERVAL_S": "0", "STATE_SWEEP_CUSTOMERS": "2"}
    live = scorer(make_store("live"), **env)
    changelog = _run(live)
    committed = _contents(live.partitions[0].store)
    assert live.partitions[0].customer_ids() == ["c-3", "c-4", "c-5", "c-6"]  # c-0..c-2 expired
    records = [(key, value) for key, value, _ in changelog]
    deleted = {key for key, value in records if value is None}
    assert any(key.startswith(b"c-3\x1f") for key in deleted), "c-3 lived longer than 30 days: entries pruned"
    for slice_records in (1, 7, 10_000):  # a rebuild: many slices or one
        rebuilt = make_store(f"rebuilt-{slice_records}").open_partition(0)
        _replayed(rebuilt, records, slice_records)
        assert _contents(rebuilt) == committed
    # A resume: the store as the commits of the first 45 days left it, then the changelog's tail from its offset.
    middle = scorer(make_store("middle"), **env)
    head = _run(middle, days=45)
    assert head == changelog[: len(head)]
    resumed = middle.partitions[0].store
    assert resumed.committed_offset == head[-1][2]
    tail = ChangelogReplay(resumed)
    for key, value in records[len(head) :]:
        tail.add(key, value)
    tail.commit(changelog[-1][2])
    assert _contents(resumed) == committed
    restored = PartitionState(resumed)
    restored.load_position()
    state = live.partitions[0]
    assert (restored.stream_time_s, restored.next_offset, restored.customer_count) == (
        state.stream_time_s, state.next_offset, state.customer_count)  # fmt: skip
    for customer_id in state.customer_ids():
        by_tx_id = {key.split(b"\x1f", 1)[1].decode(): value for key, value in dict(records).items()
                    if key.startswith(f"{customer_id}\x1f".encode()) and value is not None}  # fmt: skip
        assert restored.peek(customer_id) == state.peek(customer_id) == restored_state(by_tx_id)


def test_the_idle_sweep_names_the_changelog_keys_of_a_packed_customer(make_store: Callable[[str], Store]) -> None:
    state = PartitionState(make_store("idle").open_partition(0))
    old = CustomerWindow.of([(1.0, 1.0, "k", "a", 0), (5.0, 1.0, "k", "b", 1)])
    new = CustomerWindow.of([(1.0, 1.0, "k", "c", 0), (50.0, 1.0, "k", "d", 1)])
    state.apply(position_value(50.0, 3, 3), 3, {"old": old, "new": new, "older": old}, [])
    assert idle_slice(state.store, b"", 10, horizon_s=10.0) == (
        {"old": [entry_key("old", "a"), entry_key("old", "b")], "older": [entry_key("older", "a"),
                                                                          entry_key("older", "b")]}, b"")  # fmt: skip
    old_keys = {"old": [entry_key("old", "a"), entry_key("old", "b")]}
    assert idle_slice(state.store, b"", 2, horizon_s=10.0) == (old_keys, customer_key("older"))  # "new": not idle


# ---- the layout's own format marker ---------------------------------------------------------------------------


def test_a_customer_store_of_the_per_entry_layout_is_rebuilt_and_the_other_stores_keep_their_marker(
    tmp_path: Path,
) -> None:
    old = RocksDBStore("customers", tmp_path, SMALL)  # what the per-entry layout was written with
    transaction_ = old.open_partition(0).begin()
    transaction_.put(entry_key("c1", "tx1"), entry_value((1.0, 2.0, "k", "tx1", 0)))
    transaction_.commit(120)
    old.close()
    store = RocksDBStore("customers", tmp_path, SMALL, CUSTOMER_FORMAT_MARKER)
    part, plan = open_for_recovery(store, 0, 0, 150)
    assert (plan.action, plan.replay_from, _contents(part)) == (Action.REBUILD, 0, {})
    store.close()
    assert CUSTOMER_FORMAT_MARKER != FORMAT_MARKER

    from app.components import build
    from app.settings import Settings

    components = build(Settings(worker_id="w1", bootstrap_servers="127.0.0.1:1", data_dir=str(tmp_path)))
    assert components.scorer.store.format_marker == CUSTOMER_FORMAT_MARKER
    assert components.feed.store.format_marker == FORMAT_MARKER  # the terminal store: unchanged
