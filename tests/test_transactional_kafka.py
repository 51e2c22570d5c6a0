"""The transactional loop's consumer lag, on a real broker: what waits is counted, commit markers are not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from app.kafka.clients import Connection
from app.kafka.topics import TopicSpec, create_topics
from app.kafka.transactional import Batch, Output, TransactionalLoop
from app.kafka.tuning import apply_tuning

pytestmark = pytest.mark.kafka


@pytest.fixture(autouse=True, scope="module")
def _worker_tuning() -> None:
    """The loop under the client tuning the worker applies at start (importing it no longer patches aiokafka)."""
    apply_tuning()


RECORDS = 300


class SlowHandler:
    """Copies each record to ``out_topic``, taking 20 ms of the event loop per batch (a slow model)."""

    def __init__(self, out_topic: str) -> None:
        self.out_topic = out_topic
        self.committed = 0

    async def restore(self, tp: TopicPartition) -> int | None:
        return None

    def drop(self, tp: TopicPartition) -> None:
        pass

    def process(self, tp: TopicPartition, records: Sequence[Any]) -> Batch:
        time.sleep(0.02)

        def on_commit() -> None:
            self.committed += len(records)

        return Batch([Output(self.out_topic, r.key, r.value) for r in records], on_commit)

    def idle(self, tp: TopicPartition) -> Batch | None:
        return None

    def event_time(self, record: Any) -> float:
        return float("-inf")

    def stream_time(self, tp: TopicPartition) -> float | None:
        return None


async def _publish_in_one_transaction(bootstrap: str, topic: str, count: int, transactional_id: str) -> None:
    """Input written in a transaction, as the learning loop's predictions are: a commit marker follows it."""
    await create_topics(Connection(bootstrap), [TopicSpec(topic, 1)])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=transactional_id)
    await producer.start()
    try:
        async with producer.transaction():
            for i in range(count):
                await producer.send(topic, key=b"k", value=str(i).encode())
    finally:
        await producer.stop()


async def _run_until(loop: TransactionalLoop, done: Callable[[], bool], timeout_s: float) -> None:
    task = asyncio.ensure_future(loop.run())
    try:
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    finally:
        await loop.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_consumer_lag_counts_waiting_records_and_ends_at_zero(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    source, sink = unique_name("lag-in"), unique_name("lag-out")
    handler = SlowHandler(sink)
    seen: list[tuple[int, int]] = []  # (records committed, lag reported) once a second
    loop = TransactionalLoop(
        name="lag-test",
        bootstrap_servers=kafka_bootstrap,
        topics=[source],
        group_id=unique_name("lag-group"),
        instance_id=None,
        handler=handler,
        max_records=5,
        on_lag=lambda lag: seen.append((handler.committed, lag)),
    )

    async def scenario() -> None:
        await _publish_in_one_transaction(kafka_bootstrap, source, RECORDS, unique_name("lag-producer"))
        # The fetch after the last records moves the position past the commit marker: 0 follows within a fetch.
        await _run_until(loop, lambda: bool(seen) and seen[-1] == (RECORDS, 0), timeout_s=60)

    asyncio.run(scenario())
    assert handler.committed == RECORDS, seen
    waiting = [lag for committed, lag in seen if committed < RECORDS]
    assert waiting and max(waiting) > 0, f"no lag seen while records waited: {seen}"
    assert all(0 <= lag <= RECORDS for _, lag in seen), seen
    # Everything committed: 0, although the last stable offset is one past the last record (the commit marker).
    assert seen[-1] == (RECORDS, 0), seen
