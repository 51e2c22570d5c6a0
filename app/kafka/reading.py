"""Reading partitions to their end: the restores and catch-ups of the loops and the operator's tail.

Under ``read_committed`` a partition's end offset is its last stable offset: what is committed and not waiting
behind an open transaction. Commit markers take offsets but are never returned, so "read to the end" means "the
position reached the end", never "this many records arrived".
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


async def read_to_end(
    consumer: AIOKafkaConsumer,
    partitions: Sequence[TopicPartition],
    *,
    starts: Mapping[TopicPartition, int] | None = None,
    ends: Mapping[TopicPartition, int] | None = None,
    in_order: bool = False,
    timeout_ms: int = 1000,
    max_records: int | None = None,
    timeout_s: float | None = None,
) -> AsyncIterator[dict[TopicPartition, list[Any]]]:
    """Fetched batches of ``partitions`` (assigned to ``consumer``) until every position reaches its end.

    The reading starts at ``starts`` (else where the consumer stands) and ends at ``ends`` (else the end offsets
    asked once, after seeking: messages committed later are not waited for). A batch may hold messages past a
    partition's end (fetched along with the last ones before it). ``in_order`` reads each partition to its end
    before the next (the registry: snapshots before the events that name them). Past ``timeout_s`` it raises
    :class:`TimeoutError` naming the topic it was reading."""
    if starts is not None:
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
    if ends is None:
        ends = await consumer.end_offsets(list(partitions))
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    groups = [[tp] for tp in partitions] if in_order else [list(partitions)]
    for group in groups:
        while True:
            behind = [tp for tp in group if await consumer.position(tp) < ends[tp]]
            if not behind:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"reading {behind[0].topic} took over {timeout_s} s")
            batches = await consumer.getmany(*group, timeout_ms=timeout_ms, max_records=max_records)
            if batches:
                yield batches


async def read_latest(
    consumer: AIOKafkaConsumer, tp: TopicPartition, *, timeout_ms: int = 1000
) -> dict[bytes, bytes | None]:
    """The newest value per key of a compacted partition (``None``: a tombstone), read from its start to its end
    (assigns ``tp`` to ``consumer``): the trainer's state and the terminal checkpoint."""
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    latest: dict[bytes, bytes | None] = {}
    async for batch in read_to_end(consumer, [tp], timeout_ms=timeout_ms):
        for record in batch.get(tp, []):
            latest[record.key] = record.value
    return latest
