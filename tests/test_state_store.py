"""The state store's contract, the same tests over every implementation (dicts, RocksDB with and without its
write-ahead log), then what only RocksDB can show: data on disk across store objects and processes, corruption
detected, a SIGKILL in the middle of commits, memory under 200k keys.

``python -m tests.test_state_store child DIR WAL`` is the SIGKILL test's child: it commits batches until killed.
"""

from __future__ import annotations

import gc
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.settings import Settings, load, state_directory
from app.state.memory_store import MemoryStore
from app.state.rocksdb_store import RocksDBConfig, RocksDBStore
from app.state.store import (
    FORMAT_MARKER,
    OpenedAs,
    Store,
    StoreCorrupt,
    StoreLocked,
    StorePartition,
    TransactionFinished,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
StoreFactory = Callable[[], Store]
SMALL = {"block_cache_mb": 8, "write_buffer_mb": 1, "write_buffer_count": 2}


@pytest.fixture(params=["memory", "rocksdb", "rocksdb-no-wal"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory of the store under test; every call on a RocksDB store gives a new store object on the same
    directory (the memory store lives in its object, so it gives the same one)."""
    stores: list[Store] = []
    memory = MemoryStore("customers", tmp_path)
    config = RocksDBConfig(**SMALL, wal=request.param == "rocksdb")  # type: ignore[arg-type]

    def make() -> Store:
        store: Store = memory if request.param == "memory" else RocksDBStore("customers", tmp_path, config)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def _reopen(store: Store, partition: int = 0) -> StorePartition:
    store.close_partition(partition)
    return store.open_partition(partition)


def test_a_new_partition_is_created_empty(make_store: StoreFactory) -> None:
    part = make_store().open_partition(0)
    assert part.opened_as is OpenedAs.CREATED
    assert (part.committed_offset, part.committed_at_s) == (None, None)
    assert list(part.iter_prefix(b"")) == []


def test_commit_writes_the_data_and_the_offset_together(make_store: StoreFactory) -> None:
    part = make_store().open_partition(0)
    tx = part.begin()
    tx.put(b"a", b"1")
    tx.put(b"b", b"2")
    assert (part.get(b"a"), part.committed_offset) == (None, None)  # nothing visible before the commit
    before_s = time.time()
    tx.commit(10)
    assert part.get_many([b"a", b"b"]) == {b"a": b"1", b"b": b"2"}
    assert part.committed_offset == 10
    assert part.committed_at_s is not None and before_s <= part.committed_at_s <= time.time()


def test_a_transaction_dropped_before_commit_leaves_nothing(make_store: StoreFactory) -> None:
    store = make_store()
    part = store.open_partition(0)
    first = part.begin()
    first.put(b"kept", b"1")
    first.commit(5)
    crashed = part.begin()
    crashed.put(b"lost", b"2")
    crashed.delete(b"kept")
    del crashed  # the process died before commit
    gc.collect()
    part = _reopen(store)
    assert part.opened_as is OpenedAs.EXISTING
    assert dict(part.iter_prefix(b"")) == {b"kept": b"1"}
    assert part.committed_offset == 5


def test_reads_see_the_transactions_own_writes(make_store: StoreFactory) -> None:
    part = make_store().open_partition(0)
    setup = part.begin()
    for key in (b"c/1", b"c/2", b"c/3", b"d/1"):
        setup.put(key, b"old " + key)
    setup.commit(1)
    tx = part.begin()
    tx.put(b"c/2", b"new")
    tx.delete(b"c/3")
    tx.put(b"c/0", b"added")
    tx.put(b"c/9", b"added")
    assert (tx.get(b"c/2"), tx.get(b"c/3"), tx.get(b"c/1"), tx.get(b"nope")) == (b"new", None, b"old c/1", None)
    assert tx.get_many([b"c/1", b"c/2", b"c/3", b"nope"]) == {b"c/1": b"old c/1", b"c/2": b"new"}
    assert list(tx.iter_prefix(b"c/")) == [(b"c/0", b"added"), (b"c/1", b"old c/1"), (b"c/2", b"new"),
                                           (b"c/9", b"added")]  # fmt: skip
    assert part.get(b"c/2") == b"old c/2"  # the partition still shows the committed state
    tx.commit(2)
    assert dict(part.iter_prefix(b"c/")) == {b"c/0": b"added", b"c/1": b"old c/1", b"c/2": b"new", b"c/9": b"added"}


def test_abort_discards_and_a_finished_transaction_refuses_use(make_store: StoreFactory) -> None:
    part = make_store().open_partition(0)
    tx = part.begin()
    tx.put(b"a", b"1")
    tx.abort()
    assert (part.get(b"a"), part.committed_offset) == (None, None)
    with pytest.raises(TransactionFinished):
        tx.put(b"a", b"1")
    with pytest.raises(TransactionFinished):
        tx.commit(1)


def test_prefix_iteration_is_bounded_and_ordered(make_store: StoreFactory) -> None:
    part = make_store().open_partition(0)
    tx = part.begin()
    keys = [b"a", b"a\xff", b"a\xff\xff", b"a\xff\x00", b"ab", b"b", b"\xff", b"\xff\xff", b"", b"a\x00"]
    for key in keys:
        tx.put(key, key * 2)
    tx.commit(1)
    assert [k for k, _ in part.iter_prefix(b"a")] == [b"a", b"a\x00", b"ab", b"a\xff", b"a\xff\x00", b"a\xff\xff"]
    assert [k for k, _ in part.iter_prefix(b"a\xff")] == [b"a\xff", b"a\xff\x00", b"a\xff\xff"]
    assert [k for k, _ in part.iter_prefix(b"\xff")] == [b"\xff", b"\xff\xff"]
    assert [k for k, _ in part.iter_prefix(b"")] == sorted(keys)
    assert list(part.iter_prefix(b"zz")) == []
    assert dict(part.iter_prefix(b"ab")) == {b"ab": b"abab"}


def test_reopen_keeps_the_data_and_the_offset(make_store: StoreFactory) -> None:
    store = make_store()
    part = store.open_partition(3)
    tx = part.begin()
    tx.put(b"k", b"v")
    tx.put(b"gone", b"v")
    tx.commit(7)
    tx = part.begin()
    tx.delete(b"gone")
    tx.commit(9)
    at_s = part.committed_at_s
    store.close()
    part = make_store().open_partition(3)
    assert part.opened_as is OpenedAs.EXISTING
    assert (dict(part.iter_prefix(b"")), part.committed_offset, part.committed_at_s) == ({b"k": b"v"}, 9, at_s)


def test_an_offset_below_the_committed_one_is_refused(make_store: StoreFactory) -> None:
    part = make_store().open_partition(0)
    part.begin().commit(10)
    with pytest.raises(ValueError, match="below the committed offset"):
        part.begin().commit(9)
    part.begin().commit(10)  # the same offset again (a batch with no changelog record) is fine
    assert part.committed_offset == 10


def test_partitions_are_independent_and_a_wipe_empties_one(make_store: StoreFactory) -> None:
    store = make_store()
    for partition in (0, 1):
        tx = store.open_partition(partition).begin()
        tx.put(b"k", b"%d" % partition)
        tx.commit(partition + 1)
    store.wipe_partition(0)
    assert 0 not in store.partitions
    wiped = store.open_partition(0)
    assert (wiped.opened_as, wiped.get(b"k"), wiped.committed_offset) == (OpenedAs.CREATED, None, None)
    assert (store.partitions[1].get(b"k"), store.partitions[1].committed_offset) == (b"1", 2)


_keys = st.binary(min_size=0, max_size=3)


@settings(max_examples=60, deadline=None)
@given(
    committed=st.dictionaries(_keys, st.binary(max_size=2), max_size=12),
    ops=st.lists(st.tuples(_keys, st.none() | st.binary(max_size=2)), max_size=12),
    prefix=st.binary(max_size=2),
)
def test_a_transactions_view_is_the_committed_state_with_its_writes_applied(
    committed: dict[bytes, bytes], ops: list[tuple[bytes, bytes | None]], prefix: bytes
) -> None:
    part = MemoryStore("s").open_partition(0)
    setup = part.begin()
    for key, value in committed.items():
        setup.put(key, value)
    setup.commit(1)
    expected = dict(committed)
    tx = part.begin()
    for key, value in ops:
        if value is None:
            tx.delete(key)
            expected.pop(key, None)
        else:
            tx.put(key, value)
            expected[key] = value
    assert list(tx.iter_prefix(prefix)) == sorted((k, v) for k, v in expected.items() if k.startswith(prefix))
    assert tx.get_many(list(committed) + [k for k, _ in ops]) == expected
    tx.commit(2)
    assert dict(part.iter_prefix(b"")) == expected


# RocksDB only.


def test_settings_build_the_rocksdb_config_and_place_the_state_under_data_dir(tmp_path: Path) -> None:
    settings = load({"DATA_DIR": str(tmp_path), "STATE_BLOCK_CACHE_MB": "32", "STATE_WRITE_BUFFER_MB": "4",
                     "STATE_WRITE_BUFFER_COUNT": "2", "STATE_WAL": "false"})  # fmt: skip
    config = RocksDBConfig.from_settings(settings)
    assert (config.block_cache_mb, config.write_buffer_mb, config.write_buffer_count, config.wal) == (32, 4, 2, False)
    assert config.write_buffer_budget_mb == 8
    store = RocksDBStore.from_settings("customers", settings, config)
    store.open_partition(2)
    store.close()
    assert (tmp_path / "state" / "customers" / "2" / "CURRENT").exists()
    assert state_directory(Settings(data_dir=str(tmp_path), state_dir="/elsewhere")) == Path("/elsewhere")
    with pytest.raises(ValueError, match="STATE_WRITE_BUFFER_COUNT"):
        RocksDBConfig(write_buffer_count=1)


def test_a_partition_held_by_another_handle_is_locked_not_corrupt(tmp_path: Path) -> None:
    config = RocksDBConfig(**SMALL)  # type: ignore[arg-type]
    first = RocksDBStore("s", tmp_path, config)
    first.open_partition(0)
    with pytest.raises(StoreLocked):
        RocksDBStore("s", tmp_path, config).open_partition(0)
    first.close()


def test_a_corrupt_or_foreign_partition_is_reported_corrupt(tmp_path: Path) -> None:
    from rocksdict import Options, Rdict

    config = RocksDBConfig(**SMALL)  # type: ignore[arg-type]
    store = RocksDBStore("s", tmp_path, config)
    tx = store.open_partition(0).begin()
    tx.put(b"k", b"v")
    tx.commit(1)
    store.close()
    (store.partition_path(0) / "CURRENT").write_text("garbage\n")
    with pytest.raises(StoreCorrupt, match="cannot be opened"):
        store.open_partition(0)
    foreign = Rdict(str(store.partition_path(1)))  # rocksdict's own key encoding: another comparator
    foreign[b"k"] = b"v"
    foreign.close()
    with pytest.raises(StoreCorrupt, match="cannot be opened.*comparator"):
        store.open_partition(1)
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    foreign = Rdict(str(store.partition_path(2)), options)  # raw bytes, but no format marker
    foreign[b"k"] = b"v"
    foreign.close()
    with pytest.raises(StoreCorrupt, match="format marker None"):
        store.open_partition(2)
    assert FORMAT_MARKER.startswith(b"fraud-stream-state/")


def _batch(i: int) -> dict[bytes, bytes | None]:
    """Batch ``i`` of the SIGKILL test: 40 puts, an overwritten counter, and deletions of earlier batches' keys."""
    updates: dict[bytes, bytes | None] = {b"k%05d" % ((i * 40 + j) % 5000): b"%d:%d:" % (i, j) + b"x" * 100
                                          for j in range(40)}  # fmt: skip
    updates[b"counter"] = b"%d" % i
    if i >= 3:
        updates.update({b"k%05d" % (((i - 3) * 40 + j) % 5000): None for j in range(0, 40, 4)})
    return updates


def _state_after(batches: int) -> dict[bytes, bytes]:
    state: dict[bytes, bytes] = {}
    for i in range(batches):
        for key, value in _batch(i).items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
    return state


def _child(directory: str, wal: bool) -> None:
    """Commit batch after batch (offset = batches committed), printing each offset once it is committed."""
    part = RocksDBStore("s", directory, RocksDBConfig(**SMALL, wal=wal)).open_partition(0)  # type: ignore[arg-type]
    i = 0
    while True:
        tx = part.begin()
        for key, value in _batch(i).items():
            if value is None:
                tx.delete(key)
            else:
                tx.put(key, value)
        tx.commit(i + 1)
        i += 1
        sys.stdout.write(f"{i}\n")
        sys.stdout.flush()


@pytest.mark.parametrize("wal", [True, False], ids=["wal", "no-wal"])
def test_sigkill_during_commits_leaves_exactly_the_batches_up_to_the_stored_offset(tmp_path: Path, wal: bool) -> None:
    child = subprocess.Popen([sys.executable, "-m", "tests.test_state_store", "child", str(tmp_path), str(wal)],
                             cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert child.stdout is not None
    reported = 0
    target = random.Random(16).randint(1500, 2500)  # ~6-11 MB written: several memtable flushes
    while reported < target:
        line = child.stdout.readline()
        assert line, f"the child ended (status {child.poll()}) after {reported} commits"
        reported = int(line)
    os.kill(child.pid, signal.SIGKILL)  # the child is still committing
    reported = max([reported] + [int(line) for line in child.stdout.read().split()])  # what it printed before
    assert child.wait(10) == -signal.SIGKILL
    part = RocksDBStore("s", tmp_path, RocksDBConfig(**SMALL)).open_partition(0)  # type: ignore[arg-type]
    stored = part.committed_offset
    assert stored is not None
    if wal:
        assert stored >= reported  # a process crash loses no commit: the log's tail is in the page cache
    else:
        assert stored <= reported  # commits since the last flush are lost, whole
    assert dict(part.iter_prefix(b"")) == _state_after(stored)
    part.close()


def test_200k_keys_under_a_small_cache_and_write_buffer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """RSS growth is reported, not asserted (BENCHMARKS.md "State store" has the figures); the data must read back."""
    import psutil

    process = psutil.Process()
    gc.collect()
    rss_before = process.memory_info().rss
    store = RocksDBStore("s", tmp_path, RocksDBConfig(block_cache_mb=8, write_buffer_mb=4, write_buffer_count=2))
    part = store.open_partition(0)
    keys = 200_000
    for start in range(0, keys, 1000):
        tx = part.begin()
        for n in range(start, start + 1000):
            tx.put(b"customer-%07d" % n, b"%d" % n + b"v" * 120)
        tx.commit(start + 1000)
    rng = random.Random(16)
    sample = rng.sample(range(keys), 2000)
    assert part.get_many([b"customer-%07d" % n for n in sample]) == {
        b"customer-%07d" % n: b"%d" % n + b"v" * 120 for n in sample
    }
    assert sum(1 for _ in part.iter_prefix(b"customer-00")) == 100_000
    rss_after = process.memory_info().rss
    store.close()
    with capsys.disabled():
        sys.stdout.write(f"\n  state store: {keys} keys (~{keys * 137 / 2**20:.0f} MB of data), cache 8 MB, write "
                         f"buffers 2 x 4 MB: RSS +{(rss_after - rss_before) / 2**20:.1f} MB\n")  # fmt: skip


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    _child(sys.argv[2], sys.argv[3] == "True")
