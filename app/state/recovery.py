"""Whether a local partition may resume from its stored changelog offset or must be rebuilt from the start.

The changelog is the source of truth; a local partition is a cache of it that is right only if replaying the
changelog from its stored offset gives what a replay from the start would. The rules (:func:`plan_recovery`) are
pure; :func:`open_for_recovery` applies them to a :class:`~app.state.store.Store` (a rebuild wipes the
partition's directory; the caller then replays the changelog from ``plan.replay_from``).
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass

from app.state.store import OpenedAs, Store, StoreCorrupt, StorePartition

logger = logging.getLogger(__name__)


class Found(enum.Enum):
    """What opening the local partition found."""

    MISSING = "missing"  # no partition on disk: it was created empty
    OPENED = "opened"  # opened, and its format marker is ours
    CORRUPT = "corrupt"  # opening raised, or the format marker is missing or different


class Action(enum.Enum):
    RESUME = "resume"  # keep the local data; replay from the stored offset
    REBUILD = "rebuild"  # wipe the local data; replay from the changelog's start


@dataclass(frozen=True, slots=True)
class RecoveryPlan:
    action: Action
    replay_from: int  # the first changelog offset to read
    reason: str

    def records_to_replay(self, high_watermark: int) -> int:
        """At most this many records (fewer once compaction has removed some)."""
        return max(0, high_watermark - self.replay_from)


def plan_recovery(
    found: Found,
    stored_offset: int | None,
    low_watermark: int,
    high_watermark: int,
    *,
    stored_at_s: float | None = None,
    now_s: float | None = None,
    tombstone_retention_s: float | None = None,
) -> RecoveryPlan:
    """Decide from what the local partition holds and the changelog's watermarks (its first offset and its end,
    as a ``read_committed`` consumer sees them).

    ``tombstone_retention_s`` (the changelog's ``delete.retention.ms``, less a margin for clock skew): a
    compacted changelog drops a deletion's tombstone that long after it was cleaned, so a partition idle for
    longer may have missed deletions that a replay can no longer show; it is rebuilt. ``None``: the changelog
    keeps its deletions (or has none).

    >>> plan_recovery(Found.OPENED, 120, 0, 150)
    RecoveryPlan(action=<Action.RESUME: 'resume'>, replay_from=120, reason='stored offset 120 within [0, 150]')
    >>> plan_recovery(Found.OPENED, 200, 0, 150).reason
    'stored offset 200 beyond the changelog end 150: the changelog was recreated'
    """
    if low_watermark < 0 or high_watermark < low_watermark:
        raise ValueError(f"watermarks [{low_watermark}, {high_watermark}] are not a changelog's")

    def rebuild(reason: str) -> RecoveryPlan:
        return RecoveryPlan(Action.REBUILD, low_watermark, reason)

    if found is Found.MISSING:
        return rebuild("no local state")
    if found is Found.CORRUPT:
        return rebuild("local state corrupt or of another format")
    if stored_offset is None:
        return rebuild("local state holds no committed offset")
    if stored_offset > high_watermark:
        return rebuild(f"stored offset {stored_offset} beyond the changelog end {high_watermark}: "
                       "the changelog was recreated")  # fmt: skip
    if stored_offset < low_watermark:
        return rebuild(f"stored offset {stored_offset} below the changelog start {low_watermark}: "
                       "the records in between were deleted")  # fmt: skip
    if tombstone_retention_s is not None and stored_offset < high_watermark:
        if stored_at_s is None or now_s is None:
            raise ValueError("tombstone_retention_s needs stored_at_s and now_s")
        idle_s = now_s - stored_at_s
        if idle_s > tombstone_retention_s:
            return rebuild(f"local state {idle_s:.0f} s old, longer than the changelog keeps tombstones "
                           f"({tombstone_retention_s:.0f} s): deletions may be gone")  # fmt: skip
    return RecoveryPlan(
        Action.RESUME, stored_offset, f"stored offset {stored_offset} within [{low_watermark}, {high_watermark}]"
    )


def open_for_recovery(
    store: Store,
    partition: int,
    low_watermark: int,
    high_watermark: int,
    *,
    tombstone_retention_s: float | None = None,
    now_s: float | None = None,
) -> tuple[StorePartition, RecoveryPlan]:
    """Open ``partition`` and apply :func:`plan_recovery`: on a rebuild, wipe it and open it empty.

    :class:`~app.state.store.StoreLocked` is not handled: a partition another process holds is never wiped.
    """
    opened: StorePartition | None
    try:
        opened = store.open_partition(partition)
        found = Found.MISSING if opened.opened_as is OpenedAs.CREATED else Found.OPENED
    except StoreCorrupt as exc:
        logger.warning("state store %s partition %d: %s", store.name, partition, exc)
        opened, found = None, Found.CORRUPT
    plan = plan_recovery(
        found,
        None if opened is None else opened.committed_offset,
        low_watermark,
        high_watermark,
        stored_at_s=None if opened is None else opened.committed_at_s,
        now_s=time.time() if now_s is None else now_s,
        tombstone_retention_s=tombstone_retention_s,
    )
    if opened is None or (plan.action is Action.REBUILD and found is not Found.MISSING):
        store.wipe_partition(partition)
        opened = store.open_partition(partition)
    logger.info("state store %s partition %d: %s from changelog offset %d (%s; up to %d records)", store.name,
                partition, plan.action.value, plan.replay_from, plan.reason,
                plan.records_to_replay(high_watermark))  # fmt: skip
    return opened, plan
