"""The collector's settings and its full collections (app/collector.py): Python's automatic ones off with
GC_FULL_INTERVAL_S, one when the oldest generation really grew or the interval passed, between batches."""

from __future__ import annotations

import asyncio
import gc
from collections import deque
from collections.abc import Callable

from aiokafka import TopicPartition

from app import collector
from app.kafka.transactional import TransactionalLoop
from app.settings import Settings, load


def test_settings_parse_the_full_interval() -> None:
    assert load({"GC_FULL_INTERVAL_S": "120"}).gc_full_interval_s == 120.0
    assert load({"GC_FULL_INTERVAL_S": "0"}).gc_full_interval_s == 0.0  # Python's rule
    assert load({}).gc_full_interval_s == Settings().gc_full_interval_s > 0  # the collections of this module


def test_thresholds_keep_pythons_unless_set() -> None:
    assert collector.thresholds((700, 10, 10)) == (700, 10, 10)
    assert collector.thresholds((700, 10, 10), gen0=5000) == (5000, 10, 10)
    assert collector.thresholds((700, 10, 10), full_interval_s=60.0) == (700, 10, collector.NEVER)


def test_configure_sets_and_returns_the_thresholds_to_put_back() -> None:
    before = gc.get_threshold()
    try:
        assert collector.configure() is None  # nothing asked: nothing changed
        assert gc.get_threshold() == before
        assert collector.configure(full_interval_s=30.0) == before
        assert gc.get_threshold() == (before[0], before[1], collector.NEVER)
    finally:
        gc.set_threshold(*before)


def recorder(collected: list[int]) -> Callable[[int], int]:
    """A stand-in for gc.collect: notes the generation asked for."""

    def collect(generation: int) -> int:
        collected.append(generation)
        return 0

    return collect


class Fake:
    """The clock and the allocator's blocks, moved by the test."""

    def __init__(self) -> None:
        self.now = 0.0
        self.blocks = 1_000_000

    def clock(self) -> float:
        return self.now

    def size(self) -> int:
        return self.blocks


def test_a_full_collection_is_due_when_the_blocks_grew_or_the_interval_passed() -> None:
    fake, collected = Fake(), list[int]()

    def collect(generation: int) -> int:  # the garbage freed
        collected.append(generation)
        fake.blocks = 1_200_000
        return 40_000

    full = collector.FullCollections(300.0, lambda: True, growth=0.25, margin_blocks=100_000, collect=collect,
                                     size=fake.size, clock=fake.clock)  # fmt: skip
    assert full.due() is None
    fake.blocks = 1_240_000  # the batches in flight come and go: not yet
    fake.now = 299.0
    assert full.due() is None
    fake.blocks = 1_250_000  # a quarter more than the start's
    assert full.due() == "grown"
    assert full.collect("grown") == 40_000  # 1,200,000 left: the next one at 1,500,000
    assert (full.due(), full.runs, full.runs_grown, collected) == (None, 1, 1, [2])
    fake.blocks = 1_500_000
    assert full.due() == "grown"
    fake.blocks = 1_200_000
    fake.now = 299.0 + 300.0  # no growth, but the interval since the last one
    assert full.due() == "interval"


def test_the_margin_holds_for_a_small_heap() -> None:
    fake = Fake()
    fake.blocks = 100_000
    full = collector.FullCollections(300.0, lambda: True, growth=0.25, margin_blocks=250_000, size=fake.size,
                                     clock=fake.clock)  # fmt: skip
    fake.blocks = 349_999  # +250 % but under the margin
    assert full.due() is None
    fake.blocks = 350_000
    assert full.due() == "grown"


def test_a_full_collection_waits_for_the_decision_loop_to_be_idle() -> None:
    fake = Fake()
    seen: list[float] = []
    busy_until = 0.3

    def collect(generation: int) -> int:
        seen.append(fake.now)
        return 0

    async def main() -> bool:
        full = collector.FullCollections(60.0, lambda: fake.now >= busy_until, wait_idle_s=5.0, poll_s=0.0,
                                         collect=collect, size=fake.size, clock=fake.clock)  # fmt: skip

        async def tick() -> None:  # the loop's time passing while the collection waits
            while not seen:
                fake.now += 0.1
                await asyncio.sleep(0)

        ticking = asyncio.ensure_future(tick())
        idle = await full.collect_when_idle()
        await ticking
        assert (full.runs, full.runs_idle) == (1, 1)
        return idle

    assert asyncio.run(main()) is True
    assert len(seen) == 1 and seen[0] >= busy_until  # not while a batch was in flight


def test_a_full_collection_runs_anyway_when_the_loop_stays_busy() -> None:
    fake, collected = Fake(), list[int]()

    async def main() -> bool:
        full = collector.FullCollections(60.0, lambda: False, wait_idle_s=1.0, poll_s=0.0,
                                         collect=recorder(collected), size=fake.size, clock=fake.clock)  # fmt: skip

        async def tick() -> None:
            while not collected:
                fake.now += 0.25
                await asyncio.sleep(0)

        ticking = asyncio.ensure_future(tick())
        idle = await full.collect_when_idle()
        await ticking
        assert fake.now >= 1.0  # it waited its bound first
        return idle

    assert asyncio.run(main()) is False
    assert collected == [2]


def test_the_loop_collects_when_due_and_not_otherwise() -> None:
    fake, collected = Fake(), list[int]()

    async def main() -> None:
        full = collector.FullCollections(1000.0, lambda: True, check_s=0.001, collect=recorder(collected),
                                         size=fake.size, clock=fake.clock)  # fmt: skip
        task = asyncio.ensure_future(full.run())
        for _ in range(20):  # checks without growth: nothing
            await asyncio.sleep(0.002)
        assert collected == []
        fake.blocks = 5_000_000  # garbage piling up
        while not collected:
            await asyncio.sleep(0.002)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert full.runs_grown == 1

    asyncio.run(main())
    assert collected == [2]


def test_the_decision_loop_is_busy_with_a_batch_in_flight_or_records_queued() -> None:
    async def main() -> list[bool]:
        loop = TransactionalLoop(name="decisions", bootstrap_servers="127.0.0.1:1", topics=["t"], group_id="g",
                                 instance_id=None, handler=None)  # type: ignore[arg-type]  # fmt: skip
        tp = TopicPartition("t", 0)
        seen = [loop.busy()]  # no partition
        loop._inflight[tp] = asyncio.Lock()
        loop._queues[tp] = deque()
        seen.append(loop.busy())  # a partition with nothing to do
        loop._queues[tp].append("record")
        seen.append(loop.busy())  # records waiting for the next batch
        loop._queues[tp].clear()
        async with loop._inflight[tp]:
            seen.append(loop.busy())  # a batch being processed or committed
        seen.append(loop.busy())
        return seen

    assert asyncio.run(main()) == [False, False, True, True, False]
