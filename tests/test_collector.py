"""The collector's settings: thresholds from GC_GEN0_THRESHOLD / GC_GEN1_THRESHOLD / GC_FULL_INTERVAL_S, and the
full collections run on a timer, waiting for a moment with no batch in flight (app/collector.py)."""

from __future__ import annotations

import asyncio
import gc

from app import collector
from app.settings import Settings, load


def test_settings_parse_the_collector_settings() -> None:
    settings = load({"GC_GEN1_THRESHOLD": "50", "GC_FULL_INTERVAL_S": "120"})
    assert (settings.gc_gen1_threshold, settings.gc_full_interval_s) == (50, 120.0)
    assert load({"GC_FULL_INTERVAL_S": "0"}).gc_full_interval_s == 0.0
    assert load({}).gc_full_interval_s == Settings().gc_full_interval_s > 0  # the timer is the default
    assert load({}).gc_gen1_threshold == 0


def test_thresholds_keep_pythons_unless_set() -> None:
    assert collector.thresholds((700, 10, 10)) == (700, 10, 10)
    assert collector.thresholds((700, 10, 10), gen0=5000) == (5000, 10, 10)
    assert collector.thresholds((700, 10, 10), gen1=100) == (700, 100, 10)
    assert collector.thresholds((700, 10, 10), full_interval_s=60.0) == (700, 10, collector.NEVER)


def test_configure_sets_and_returns_the_thresholds_to_put_back() -> None:
    before = gc.get_threshold()
    try:
        assert collector.configure() is None  # nothing asked: nothing changed
        assert gc.get_threshold() == before
        assert collector.configure(gen1=before[1] + 7, full_interval_s=30.0) == before
        assert gc.get_threshold() == (before[0], before[1] + 7, collector.NEVER)
    finally:
        gc.set_threshold(*before)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_full_collection_waits_for_the_decision_loop_to_be_idle() -> None:
    clock = FakeClock()
    collected: list[tuple[int, float]] = []
    busy_until = 0.3

    async def main() -> bool:
        def collect(generation: int) -> int:
            collected.append((generation, clock.now))
            return 0

        full = collector.FullCollections(60.0, lambda: clock.now >= busy_until, wait_idle_s=5.0, poll_s=0.0,
                                         collect=collect, clock=clock)  # fmt: skip

        async def tick() -> None:  # the loop's time passing while the collection waits
            while not collected:
                clock.now += 0.1
                await asyncio.sleep(0)

        ticking = asyncio.ensure_future(tick())
        idle = await full.collect_when_idle()
        await ticking
        assert (full.runs, full.runs_idle) == (1, 1)
        return idle

    assert asyncio.run(main()) is True
    assert len(collected) == 1
    generation, at = collected[0]
    assert generation == 2 and at >= busy_until  # not while a batch was in flight


def test_a_full_collection_runs_anyway_when_the_loop_stays_busy() -> None:
    clock = FakeClock()
    collected: list[int] = []

    async def main() -> bool:
        full = collector.FullCollections(60.0, lambda: False, wait_idle_s=1.0, poll_s=0.0,
                                         collect=lambda g: collected.append(g) or 0, clock=clock)  # fmt: skip

        async def tick() -> None:
            while not collected:
                clock.now += 0.25
                await asyncio.sleep(0)

        ticking = asyncio.ensure_future(tick())
        idle = await full.collect_when_idle()
        await ticking
        assert clock.now >= 1.0  # it waited its bound first
        return idle

    assert asyncio.run(main()) is False
    assert collected == [2]


def test_the_timer_runs_a_full_collection_each_interval() -> None:
    collected: list[int] = []

    async def main() -> None:
        full = collector.FullCollections(0.01, lambda: True, collect=lambda g: collected.append(g) or 0)
        task = asyncio.ensure_future(full.run())
        while len(collected) < 2:
            await asyncio.sleep(0.005)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert collected[:2] == [2, 2]
