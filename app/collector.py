"""Python's cyclic collector in a worker: full collections when the oldest generation really grew, between batches.

After the start's ``gc.freeze()`` (:meth:`app.components.Components.start`) the oldest generation holds only what
the loops made since: ~35,000-55,000 objects at 1x (the batches in flight, the caches' entries, the clients'
buffers), most of them freed by their reference counts soon after their promotion. CPython runs a full collection
once ten collections of the middle generation have happened and the objects *promoted* since the last full one
exceed a quarter of those it kept; promotions count even when the promoted objects die young, so at 1,000 tx/s that
rule fired every 3-7 seconds: 8-43 ms of CPU each, freeing 0-270 objects (BENCHMARKS.md "The collector's full
collections off the decision path"). The decisions make almost no cyclic garbage.

With ``GC_FULL_INTERVAL_S`` > 0 (the default), :func:`configure` turns Python's automatic full collections off (the
oldest generation's threshold at :data:`NEVER`) and :class:`FullCollections` runs them on the event loop instead:
when the oldest generation *holds* at least :data:`GROWTH` times the objects it kept after the last full collection
and at least :data:`FLOOR_OBJECTS` (looked at every second: garbage, or live state, that really accumulated), or
``GC_FULL_INTERVAL_S`` after the last one; each at a moment when the decision loop has no batch in flight if one
comes within ``wait_idle_s``, otherwise regardless. So a worker that makes little cyclic garbage collects its
oldest generation every few minutes, and one that makes much (a cycle per batch, as the batch's ``on_commit`` once
was) still collects it as often as the garbage needs. ``GC_FULL_INTERVAL_S=0``: Python's rule back. Pure: no faust,
no Kafka.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# gc.set_threshold takes C ints; the oldest generation's count grows by one per middle-generation collection, so
# at tens a second this is never reached.
NEVER = 2**31 - 1
GROWTH = 2.0  # a full collection once the oldest generation holds this many times what the last one kept,
FLOOR_OBJECTS = 100_000  # and at least this many objects (the 1x worker's kept 35,000-55,000)
CHECK_S = 1.0  # how often the oldest generation's size is looked at (len(gc.get_objects(2)): ~0.2 ms at 50,000)


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


def oldest_generation_size() -> int:
    """The objects the collector tracks in its oldest generation (the frozen ones are apart)."""
    return len(gc.get_objects(generation=2))


class FullCollections:
    """Decides and runs the full collections (see the module): :meth:`due` says whether one is needed now,
    :meth:`collect` runs it and notes what it kept; :meth:`run` checks every ``check_s`` on the event loop and
    collects, when due, at a moment when ``is_idle()`` (the decision loop has no batch in flight), looking every
    ``poll_s`` for up to ``wait_idle_s``."""

    def __init__(
        self,
        interval_s: float,
        is_idle: Callable[[], bool],
        *,
        growth: float = GROWTH,
        floor_objects: int = FLOOR_OBJECTS,
        check_s: float = CHECK_S,
        wait_idle_s: float = 5.0,
        poll_s: float = 0.005,
        collect: Callable[[int], int] = gc.collect,
        size: Callable[[], int] = oldest_generation_size,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.is_idle = is_idle
        self.growth = growth
        self.floor_objects = floor_objects
        self.check_s = check_s
        self.wait_idle_s = wait_idle_s
        self.poll_s = poll_s
        self._collect = collect
        self.size = size
        self.clock = clock
        self.kept = size()  # what the oldest generation held after the last full collection (or at the start)
        self.last_s = clock()
        self.runs = 0
        self.runs_idle = 0  # of which found the decision loop idle
        self.runs_grown = 0  # of which ran because the oldest generation grew, not for the interval

    def due(self) -> str | None:
        """Why a full collection is due now: ``"grown"``, ``"interval"``, or None."""
        if self.size() >= max(self.floor_objects, self.growth * self.kept):
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
        log.debug("full collection (%s): %d collected, %d kept", why, collected, self.kept)
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
