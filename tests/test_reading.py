"""Reading to the end without a broker: from the given positions to the end offsets taken at start, commit
markers included, each partition in turn when asked, and a bounded wait."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import TopicPartition

from app.kafka.reading import read_to_end

A, B = TopicPartition("a", 0), TopicPartition("b", 0)


@dataclass
class Message:
    offset: int


class FakeConsumer:
    """Partitions of messages at the given offsets (the gaps are commit markers); fetches ``per_fetch`` offsets of
    each asked partition at a time."""

    def __init__(self, logs: dict[TopicPartition, list[int]], per_fetch: int = 2, stall: bool = False) -> None:
        self.logs = logs
        self.ends = {tp: (offsets[-1] + 2 if offsets else 0) for tp, offsets in logs.items()}  # a marker last
        self.positions = dict.fromkeys(logs, 0)
        self.per_fetch = per_fetch
        self.stall = stall
        self.fetched: list[list[TopicPartition]] = []

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.ends[tp] for tp in tps}

    async def getmany(self, *tps: TopicPartition, timeout_ms: int, max_records: int | None) -> dict[Any, Any]:
        self.fetched.append(list(tps))
        await asyncio.sleep(0)
        if self.stall:
            return {}
        out = {}
        for tp in tps:
            start, stop = self.positions[tp], self.positions[tp] + self.per_fetch
            out[tp] = [Message(o) for o in self.logs[tp] if start <= o < stop]
            self.positions[tp] = min(stop, self.ends[tp])
            if not out[tp]:
                del out[tp]
        return out

    def grow(self, tp: TopicPartition, offset: int) -> None:
        self.logs[tp].append(offset)


def read(consumer: FakeConsumer, **options: Any) -> list[tuple[str, int]]:
    async def collect() -> list[tuple[str, int]]:
        got = []
        async for batch in read_to_end(consumer, list(consumer.logs), **options):  # type: ignore[arg-type]
            got += [(tp.topic, m.offset) for tp, messages in batch.items() for m in messages]
        return got

    return asyncio.run(collect())


def test_reads_from_the_given_positions_past_the_markers_to_the_ends_taken_at_start() -> None:
    consumer = FakeConsumer({A: [0, 1, 2, 4, 5], B: [0, 1, 3]})  # ends: a 7, b 5
    consumer.grow(A, 7)  # past the end offset taken at start (a 7): not read
    got = read(consumer, starts={A: 1, B: 0})
    assert sorted(got) == [("a", 1), ("a", 2), ("a", 4), ("a", 5), ("b", 0), ("b", 1), ("b", 3)]
    assert consumer.positions == {A: 7, B: 5}
    assert all(tps == [A, B] for tps in consumer.fetched)


def test_in_order_reads_each_partition_to_its_end_before_the_next() -> None:
    consumer = FakeConsumer({A: [0, 1, 2, 3], B: [0, 1]})
    got = read(consumer, in_order=True)
    assert [topic for topic, _ in got] == ["a"] * 4 + ["b"] * 2
    assert consumer.fetched == [[A], [A], [A], [B], [B]]  # the last fetch of each only passes its marker


def test_partitions_already_at_their_end_are_not_fetched_and_a_stall_times_out() -> None:
    assert read(FakeConsumer({A: []})) == []
    stalled = FakeConsumer({A: [0, 1]}, stall=True)
    with pytest.raises(TimeoutError, match="reading a took over 0.05 s"):
        read(stalled, timeout_s=0.05)
