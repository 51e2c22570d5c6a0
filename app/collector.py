"""Python's cyclic collector in a worker: full collections when memory really grew, or rarely, between batches.

After the start's ``gc.freeze()`` (:meth:`app.components.Components.start`) the oldest generation holds only what
the loops made since: 35,000-55,000 objects at 1x (the batches in flight, the caches' entries, the clients'
buffers), most of them freed by their reference counts soon after their promotion. CPython runs a full collection
once ten collections of the middle generation have happened and the objects *promoted* since the last full one
exceed a quarter of those it kept; promotions count even when the promoted objects die young, so at 1,000 tx/s that
rule fired every 3-7 seconds: 8-43 ms of CPU each, freeing 0-270 objects (BENCHMARKS.md "The collector's full
collections off the decision path"). The decisions make almost no cyclic garbage.

With ``GC_FULL_INTERVAL_S`` > 0 (the default), :func:`configure` turns Python's automatic full collections off (the
oldest generation's threshold at :data:`NEVER`) and :class:`FullCollections` runs them on the event loop instead:
when the memory blocks Python's allocator holds (``sys.getallocatedblocks()``, ~40 µs) grew by a quarter since the
last full collection and by at least :data:`MARGIN_BLOCKS` (looked at every second: garbage, or live state, that
really accumulated), or ``GC_FULL_INTERVAL_S`` after the last one; each at a moment when the decision loop has no
batch in flight if one comes within ``wait_idle_s``, otherwise regardless. So a worker that makes little cyclic
garbage collects its oldest generation once an interval, and one that makes much (a cycle per batch, as the
batch's ``on_commit`` once was) still collects it as its memory grows. ``GC_FULL_INTERVAL_S=0``: Python's rule
back. Pure: no faust, no Kafka.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# gc.set_threshold takes C ints; the oldest generation's count grows by one per middle-generation collection, so
# at tens a second this is never reached.
NEVER = 2**31 - 1
GROWTH = 0.25  # a full collection once the allocator's blocks grew by this share of what the last one left,
MARGIN_BLOCKS = 250_000  # and by at least this many (not reached in the benchmark's timed phases at 1,000 tx/s)
CHECK_S = 1.0  # how often the blocks are counted. (The oldest generation's own size, len(gc.get_objects(2)), cost
# 3-6 ms of CPU a look in the worker: a stall a second.)


def thresholds(current: tuple[int, int, int], gen0: int = 0, full_interval_s: float = 0.0) -> tuple[int, int, int]:
    """The collector's thresholds for these settings, from ``current`` (``gc.get_threshold()``): 0 keeps the
    youngest generation's, a full interval turns the automatic full collections off.

    >>> thresholds((700, 10, 10))
    (700, 10, 10)
    >>> thresholds((700, 10, 10), gen0=50_000, full_interval_s=300)
    (50000, 10, 2147483647)
    """
    return (gen0 if gen0 > 0 else current[0], current[1], NEVER if full_interval_s > 0 else current[2])


def configure(gen0: int = 0, full_interval_s: float = 0.0) -> tuple[int, int, int] | None:
    """Set the collector's thresholds for these settings; the ones before, to put back at the stop (None: none
    changed)."""
    before = gc.get_threshold()
    wanted = thresholds(before, gen0, full_interval_s)
    if wanted == before:
        return None
    gc.set_threshold(*wanted)
    return before


def allocated_blocks() -> int:
    """The memory blocks Python's small-object allocator holds now (objects of 512 bytes or less: live ones and
    cyclic garbage alike; a large buffer counts only by the small objects that hold it)."""
    return sys.getallocatedblocks()


class FullCollections:
    """Decides and runs the full collections (see the module): :meth:`due` says whether one is needed now,
    :meth:`collect` runs it and notes the blocks left; :meth:`run` checks every ``check_s`` on the event loop and
    collects, when due, at a moment when ``is_idle()`` (the decision loop has no batch in flight), looking every
    ``poll_s`` for up to ``wait_idle_s``."""

    def __init__(
        self,
        interval_s: float,
        is_idle: Callable[[], bool],
        *,
        growth: float = GROWTH,
        margin_blocks: int = MARGIN_BLOCKS,
        check_s: float = CHECK_S,
        wait_idle_s: float = 5.0,
        poll_s: float = 0.005,
        collect: Callable[[int], int] = gc.collect,
        size: Callable[[], int] = allocated_blocks,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.is_idle = is_idle
        self.growth = growth
        self.margin_blocks = margin_blocks
        self.check_s = check_s
        self.wait_idle_s = wait_idle_s
        self.poll_s = poll_s
        self._collect = collect
        self.size = size
        self.clock = clock
        self.kept = size()  # the blocks after the last full collection (or at the start)
        self.last_s = clock()
        self.runs = 0
        self.runs_idle = 0  # of which found the decision loop idle
        self.runs_grown = 0  # of which ran because the blocks grew, not for the interval

    def due(self) -> str | None:
        """Why a full collection is due now: ``"grown"``, ``"interval"``, or None."""
        if self.size() - self.kept >= max(self.margin_blocks, self.growth * self.kept):
            return "grown"
        if self.clock() - self.last_s >= self.interval_s:
            return "interval"
        return None

    def collect(self, why: str = "interval") -> int:
        """One full collection now; what it collected."""
        collected = self._collect(2)
        self.kept = self.size()
        self.last_s = self.clock()
        self.runs += 1
        self.runs_grown += why == "grown"
        log.debug("full collection (%s): %d collected, %d blocks left", why, collected, self.kept)
        return collected

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.check_s)
            why = self.due()
            if why is not None:
                await self.collect_when_idle(why)

    async def collect_when_idle(self, why: str = "interval") -> bool:
        """One full collection, at the first idle moment within ``wait_idle_s``; whether it found one."""
        deadline = self.clock() + self.wait_idle_s
        idle = self.is_idle()
        while not idle and self.clock() < deadline:
            await asyncio.sleep(self.poll_s)
            idle = self.is_idle()
        self.collect(why)
        self.runs_idle += idle
        return idle
