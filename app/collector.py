"""Python's cyclic collector in a worker: its thresholds, and its full collections on a timer, between batches.

After the start's ``gc.freeze()`` (:meth:`app.components.Components.start`) the oldest generation holds only what
the loops made since: ~40,000-50,000 objects at 1x (the batches in flight, the caches' entries, the clients'
buffers), most of them freed by their reference counts soon after their promotion. CPython runs a full collection
once ten collections of the middle generation have happened and the objects promoted since the last full one
exceed a quarter of those it kept; promotions count even when the promoted objects die young, so at 1,000 tx/s
that rule fired every 3-7 seconds: 15-42 ms of CPU each, freeing 0-270 objects (BENCHMARKS.md "The collector's
full collections off the decision path"). The decisions make almost no cyclic garbage, so a full collection is
rarely worth it.

:func:`configure` (``GC_FULL_INTERVAL_S`` > 0): the automatic full collections off (the oldest generation's
threshold set to :data:`NEVER`), and :class:`FullCollections` runs ``gc.collect(2)`` every ``GC_FULL_INTERVAL_S``
on the event loop, at a moment when the decision loop has no batch in flight if one comes within
``wait_idle_s``, otherwise regardless. ``GC_GEN0_THRESHOLD`` / ``GC_GEN1_THRESHOLD`` (0: Python's 700 / 10) are the
younger generations'. Pure: no faust, no Kafka.
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


def thresholds(
    current: tuple[int, int, int], gen0: int = 0, gen1: int = 0, full_interval_s: float = 0.0
) -> tuple[int, int, int]:
    """The collector's thresholds for these settings, from ``current`` (``gc.get_threshold()``): 0 keeps a
    generation's, a full interval turns the automatic full collections off.

    >>> thresholds((700, 10, 10))
    (700, 10, 10)
    >>> thresholds((700, 10, 10), gen1=50, full_interval_s=300)
    (700, 50, 2147483647)
    """
    return (
        gen0 if gen0 > 0 else current[0],
        gen1 if gen1 > 0 else current[1],
        NEVER if full_interval_s > 0 else current[2],
    )


def configure(gen0: int = 0, gen1: int = 0, full_interval_s: float = 0.0) -> tuple[int, int, int] | None:
    """Set the collector's thresholds for these settings; the ones before, to put back at the stop (None: none
    changed)."""
    before = gc.get_threshold()
    wanted = thresholds(before, gen0, gen1, full_interval_s)
    if wanted == before:
        return None
    gc.set_threshold(*wanted)
    return before


class FullCollections:
    """Runs a full collection every ``interval_s`` on the event loop, preferring a moment when ``is_idle()`` (the
    decision loop has no batch in flight): it looks every ``poll_s`` for up to ``wait_idle_s``, then collects
    regardless. The collection itself is the same walk as an automatic one; what changes is how often, and that it
    never lands inside a batch's step."""

    def __init__(
        self,
        interval_s: float,
        is_idle: Callable[[], bool],
        *,
        wait_idle_s: float = 5.0,
        poll_s: float = 0.005,
        collect: Callable[[int], int] = gc.collect,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.is_idle = is_idle
        self.wait_idle_s = wait_idle_s
        self.poll_s = poll_s
        self.collect = collect
        self.clock = clock
        self.runs = 0
        self.runs_idle = 0  # of which found the decision loop idle

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.collect_when_idle()

    async def collect_when_idle(self) -> bool:
        """One full collection, at the first idle moment within ``wait_idle_s``; whether it found one."""
        deadline = self.clock() + self.wait_idle_s
        idle = self.is_idle()
        while not idle and self.clock() < deadline:
            await asyncio.sleep(self.poll_s)
            idle = self.is_idle()
        collected = self.collect(2)
        self.runs += 1
        self.runs_idle += idle
        log.debug("full collection %s: %d collected", "between batches" if idle else "with batches in flight",
                  collected)  # fmt: skip
        return idle
