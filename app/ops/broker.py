"""The commands' Kafka side: connect within a bounded wait, and read topics from a chosen position, committed only.

A broker that does not answer within ``timeout_s`` raises :class:`BrokerUnavailable`, which the command line
turns into one line and a non-zero exit.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from app.kafka.clients import Connection, admin_client, committed_reader, plain_producer
from app.kafka.reading import read_to_end
from app.settings import Settings


class BrokerUnavailable(Exception):
    """The broker did not answer in time (or refused the connection)."""


class UnknownTopic(Exception):
    """A topic the command was asked to read does not exist."""


def client_id(settings: Settings) -> str:
    """The client id every client of the commands shares."""
    return f"{settings.app_id}-ops"


def _unreachable(settings: Settings, timeout_s: float, exc: BaseException) -> BrokerUnavailable:
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return BrokerUnavailable(f"Kafka broker {settings.bootstrap_servers} unreachable within {timeout_s:g} s ({detail})")


async def _start(client: Any, settings: Settings, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(client.start(), timeout_s)
    except (KafkaError, TimeoutError, OSError) as exc:
        await _close(client)
        raise _unreachable(settings, timeout_s, exc) from exc


async def _close(client: Any) -> None:
    try:
        await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
    except Exception:  # noqa: BLE001 - closing a client that never connected
        pass


@asynccontextmanager
async def consumer(settings: Settings, timeout_s: float) -> AsyncIterator[AIOKafkaConsumer]:
    """A group-less consumer reading committed messages only (the worker writes in transactions)."""
    client = committed_reader(
        Connection.of(settings),
        client_id=client_id(settings),
        request_timeout_ms=max(1000, int(timeout_s * 1000)),
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await _start(client, settings, timeout_s)
    try:
        yield client
    finally:
        await _close(client)


@asynccontextmanager
async def producer(settings: Settings, timeout_s: float) -> AsyncIterator[AIOKafkaProducer]:
    """An idempotent producer acknowledged by all replicas, with the Java client's key partitioner (murmur2)."""
    client = plain_producer(
        Connection.of(settings),
        client_id=client_id(settings),
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=max(1000, int(timeout_s * 1000)),
        max_request_size=4 * 1024 * 1024,
    )
    await _start(client, settings, timeout_s)
    try:
        yield client
    finally:
        await _close(client)


@asynccontextmanager
async def admin(settings: Settings, timeout_s: float) -> AsyncIterator[AIOKafkaAdminClient]:
    client = admin_client(
        Connection.of(settings), client_id=client_id(settings), request_timeout_ms=max(1000, int(timeout_s * 1000))
    )
    await _start(client, settings, timeout_s)
    try:
        yield client
    finally:
        await _close(client)


async def partitions(client: AIOKafkaConsumer, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of ``topics``; :class:`UnknownTopic` names the ones that do not exist."""
    cluster = await client._client.fetch_all_metadata()  # noqa: SLF001 - consumer.topics() keeps no partitions
    missing = [t for t in topics if not cluster.partitions_for_topic(t)]
    if missing:
        raise UnknownTopic(f"topic {', '.join(missing)} does not exist (the worker creates its topics at start)")
    return [TopicPartition(t, p) for t in topics for p in sorted(cluster.partitions_for_topic(t) or ())]


TAIL_OFFSETS_PER_MESSAGE = 2


def _order(record: Any) -> tuple[int, str, int, int]:
    return (record.timestamp, record.topic, record.partition, record.offset)


@dataclass(frozen=True, slots=True)
class Start:
    """Where to start in each partition: ``from_beginning``, else its last ``last`` messages (0: only new ones)."""

    from_beginning: bool = False
    last: int = 10


async def tail(
    client: AIOKafkaConsumer, topics: Sequence[str], start: Start, follow: bool
) -> AsyncIterator[Any]:  # fmt: skip
    """Committed messages of ``topics`` from ``start``, in timestamp order within each fetch; without ``follow``
    it ends at the end the partitions had when it began, with ``follow`` it waits for more until cancelled."""
    tps = await partitions(client, topics)
    client.assign(tps)
    begin = await client.beginning_offsets(tps)
    end = await client.end_offsets(tps)  # read_committed: the last stable offset
    for tp in tps:
        # Commit markers take offsets (one per transaction), so the last N messages lie further back than N offsets;
        # twice as far covers the worker's topics (a dead letter is at worst alone in its transaction).
        back = TAIL_OFFSETS_PER_MESSAGE * start.last
        client.seek(tp, begin[tp] if start.from_beginning else max(begin[tp], end[tp] - back))
    if not start.from_beginning and start.last > 0:
        last: dict[TopicPartition, deque[Any]] = {tp: deque(maxlen=start.last) for tp in tps}
        async for batch in read_to_end(client, tps, ends=end, timeout_ms=500, max_records=1000):
            for tp, messages in batch.items():
                last[tp].extend(messages)
        for record in sorted((m for kept in last.values() for m in kept), key=_order):
            yield record
    batches = _follow(client) if follow else read_to_end(client, tps, ends=end, timeout_ms=500, max_records=1000)
    async for batch in batches:
        records = [m for messages in batch.values() for m in messages]
        records.sort(key=_order)
        for record in records:
            yield record


async def _follow(client: AIOKafkaConsumer) -> AsyncIterator[dict[TopicPartition, list[Any]]]:
    while True:
        yield await client.getmany(timeout_ms=500, max_records=1000)
