"""The recovery rules: resume from the stored changelog offset, or wipe and rebuild from the changelog's start."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from app.state.memory_store import MemoryStore
from app.state.recovery import Action, Found, open_for_recovery, plan_recovery
from app.state.rocksdb_store import RocksDBConfig, RocksDBStore
from app.state.store import OpenedAs, Store

DAY_S = 86400.0


@pytest.mark.parametrize(
    ("found", "stored", "low", "high", "action", "replay_from", "reason"),
    [
        (Found.OPENED, 120, 0, 150, Action.RESUME, 120, "within"),
        (Found.OPENED, 150, 0, 150, Action.RESUME, 150, "within"),  # up to date: nothing to replay
        (Found.OPENED, 40, 40, 150, Action.RESUME, 40, "within"),  # exactly at the start
        (Found.OPENED, 0, 0, 0, Action.RESUME, 0, "within"),  # an empty changelog, an empty store
        (Found.MISSING, None, 10, 150, Action.REBUILD, 10, "no local state"),
        (Found.CORRUPT, None, 10, 150, Action.REBUILD, 10, "corrupt"),
        (Found.OPENED, None, 10, 150, Action.REBUILD, 10, "no committed offset"),
        (Found.OPENED, 151, 0, 150, Action.REBUILD, 0, "recreated"),
        (Found.OPENED, 9, 10, 150, Action.REBUILD, 10, "deleted"),
    ],
)
def test_plan(
    found: Found, stored: int | None, low: int, high: int, action: Action, replay_from: int, reason: str
) -> None:
    plan = plan_recovery(found, stored, low, high)
    assert (plan.action, plan.replay_from) == (action, replay_from)
    assert reason in plan.reason
    assert plan.records_to_replay(high) == high - replay_from


def test_a_store_idle_longer_than_the_changelog_keeps_tombstones_is_rebuilt() -> None:
    def plan(idle_s: float, stored: int = 100, high: int = 150) -> Action:
        return plan_recovery(Found.OPENED, stored, 0, high, stored_at_s=1000.0, now_s=1000.0 + idle_s,
                             tombstone_retention_s=DAY_S).action  # fmt: skip

    assert plan(DAY_S - 1) is Action.RESUME
    assert plan(DAY_S + 1) is Action.REBUILD
    assert plan(30 * DAY_S, stored=150) is Action.RESUME  # nothing written since: nothing missed
    assert plan_recovery(Found.OPENED, 100, 0, 150, stored_at_s=0.0, now_s=1e9).action is Action.RESUME  # no rule
    with pytest.raises(ValueError, match="needs stored_at_s"):
        plan_recovery(Found.OPENED, 100, 0, 150, tombstone_retention_s=DAY_S)


def test_watermarks_that_are_not_a_changelogs_are_refused() -> None:
    with pytest.raises(ValueError, match="watermarks"):
        plan_recovery(Found.OPENED, 5, 10, 9)


@pytest.fixture(params=["memory", "rocksdb"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    memory = MemoryStore("customers", tmp_path)
    config = RocksDBConfig(block_cache_mb=8, write_buffer_mb=1, write_buffer_count=2)
    return lambda: memory if request.param == "memory" else RocksDBStore("customers", tmp_path, config)


def _committed(store: Store, offset: int) -> None:
    tx = store.open_partition(0).begin()
    tx.put(b"k", b"v")
    tx.commit(offset)
    store.close()


def test_open_for_recovery_resumes_a_good_partition(make_store: Callable[[], Store]) -> None:
    store = make_store()
    _committed(store, 120)
    part, plan = open_for_recovery(make_store(), 0, 0, 150)
    assert (plan.action, plan.replay_from, part.get(b"k"), part.opened_as) == (
        Action.RESUME, 120, b"v", OpenedAs.EXISTING)  # fmt: skip
    part.close()


def test_open_for_recovery_wipes_a_partition_ahead_of_a_recreated_changelog(make_store: Callable[[], Store]) -> None:
    store = make_store()
    _committed(store, 120)
    store = make_store()
    part, plan = open_for_recovery(store, 0, 0, 30)
    assert (plan.action, plan.replay_from, part.get(b"k"), part.committed_offset) == (Action.REBUILD, 0, None, None)
    store.close()


def test_open_for_recovery_creates_a_missing_partition(make_store: Callable[[], Store]) -> None:
    store = make_store()
    part, plan = open_for_recovery(store, 0, 5, 30)
    assert (plan.action, plan.replay_from, part.opened_as) == (Action.REBUILD, 5, OpenedAs.CREATED)
    store.close()


def test_open_for_recovery_wipes_a_partition_of_another_format(tmp_path: Path) -> None:
    memory = MemoryStore("customers")
    _committed(memory, 120)
    memory.set_format_marker(0, b"fraud-stream-state/0")
    part, plan = open_for_recovery(memory, 0, 0, 150)
    assert (plan.action, plan.reason, part.get(b"k")) == (Action.REBUILD, "local state corrupt or of another format",
                                                         None)  # fmt: skip


def test_open_for_recovery_wipes_a_corrupt_rocksdb_partition(tmp_path: Path) -> None:
    config = RocksDBConfig(block_cache_mb=8, write_buffer_mb=1, write_buffer_count=2)
    store = RocksDBStore("customers", tmp_path, config)
    _committed(store, 120)
    (store.partition_path(0) / "CURRENT").write_text("garbage\n")
    part, plan = open_for_recovery(store, 0, 0, 150)
    assert (plan.action, plan.replay_from, part.get(b"k"), part.opened_as) == (
        Action.REBUILD, 0, None, OpenedAs.CREATED)  # fmt: skip
    tx = part.begin()
    tx.put(b"k", b"replayed")
    tx.commit(150)
    store.close()
    part, plan = open_for_recovery(RocksDBStore("customers", tmp_path, config), 0, 0, 150)
    assert (plan.action, part.get(b"k")) == (Action.RESUME, b"replayed")
    part.close()
