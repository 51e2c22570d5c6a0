"""Every Kafka client by preset (what each kind always sets), and plain produce/consume helpers for scripts and tests.

A :class:`Connection` is the bootstrap servers and the TLS/SASL options (``client_security_options(settings)`` of
:mod:`app.kafka.security`); the presets apply it, so a caller names it once and adds only its own options (fetch
sizes, client id, timeouts). The producer presets also compress with the connection's ``compression``
(``OUTPUT_COMPRESSION``); consumers decompress whatever codec they meet. ``client_options`` of the helpers are
extra aiokafka arguments, such as those TLS/SASL options.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from app.kafka.partitioner import default_partitioner
from app.kafka.security import client_security_options
from app.settings import Settings

TRANSACTION_MAX_REQUEST_BYTES = 16 * 2**20  # a transaction's batch: a model snapshot or a state chunk fits
# A partition's records in one record batch, up to this many bytes before compression (aiokafka's max_batch_size,
# 16 KiB by default). An idempotent producer has one produce request in flight per broker, with one batch per
# partition: at 16 KiB a Kafka transaction of 500 decisions took about ten round trips and compressed ten small
# batches a partition, at 512 KiB one, and zstd gets the whole transaction's repetition (BENCHMARKS.md, "Bytes per
# transaction"). Under the broker's default message.max.bytes (1 MiB), even uncompressed.
TRANSACTION_BATCH_BYTES = 512 * 2**10


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the broker is and how to reach it: what every client shares."""

    bootstrap_servers: str
    security: Mapping[str, Any] = field(default_factory=dict)  # protocol, TLS context, SASL
    compression: str = "none"  # the producers' codec (OUTPUT_COMPRESSION): none, gzip, lz4, zstd

    @classmethod
    def of(cls, settings: Settings) -> Connection:
        return cls(settings.bootstrap_servers, client_security_options(settings), settings.output_compression)

    def options(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap_servers, **self.security}

    def producer_options(self) -> dict[str, Any]:
        """:meth:`options` plus the codec: record batches are compressed by the producer, stored so by the broker
        (topics keep ``compression.type=producer``) and decompressed by every consumer, kcat included."""
        codec = None if self.compression == "none" else self.compression
        return {**self.options(), "compression_type": codec}


def committed_reader(connection: Connection, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """A consumer without a group (``topics`` subscribed, else partitions assigned by hand; positions kept by the
    caller) that reads committed messages only: what the worker's transactions committed."""
    return AIOKafkaConsumer(
        *topics,
        **connection.options(),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        **options,
    )


def group_member(connection: Connection, group_id: str, *, session_timeout_ms: int, **options: Any) -> AIOKafkaConsumer:
    """A consumer in ``group_id`` that commits its offsets itself (never automatically), heartbeating five times per
    session timeout (at least every 500 ms)."""
    return AIOKafkaConsumer(
        **connection.options(),
        group_id=group_id,
        enable_auto_commit=False,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=max(500, session_timeout_ms // 5),
        **options,
    )


def transactional_producer(
    connection: Connection, transactional_id: str, *, transaction_timeout_ms: int, **options: Any
) -> AIOKafkaProducer:
    """An idempotent producer writing in transactions as ``transactional_id``: its start fences a previous
    producer of the same id and aborts that one's open transaction. Its record batches hold up to
    :data:`TRANSACTION_BATCH_BYTES`; a keyed record without a partition goes where aiokafka's default partitioner
    puts it, hashed in fewer steps (:mod:`app.kafka.partitioner`)."""
    return AIOKafkaProducer(
        **{
            **connection.producer_options(),
            "transactional_id": transactional_id,
            "enable_idempotence": True,
            "transaction_timeout_ms": transaction_timeout_ms,
            "max_request_size": TRANSACTION_MAX_REQUEST_BYTES,
            "max_batch_size": TRANSACTION_BATCH_BYTES,
            "partitioner": default_partitioner,
            **options,
        }
    )


def plain_producer(connection: Connection, **options: Any) -> AIOKafkaProducer:
    """A producer outside transactions (idempotence, acks and sizes as the caller asks)."""
    return AIOKafkaProducer(**{**connection.producer_options(), **options})


def admin_client(connection: Connection, **options: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**connection.options(), **options)


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int


async def _produce(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes | None]],
    rate_tps: float | None,
    client_options: Mapping[str, Any] | None,
) -> int:
    client = plain_producer(Connection(bootstrap, client_options or {}), linger_ms=5, max_request_size=4 * 1024 * 1024)
    await client.start()
    count = 0
    started = time.monotonic()
    try:
        batch = []
        for key, value in messages:
            if rate_tps:
                delay = started + count / rate_tps - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            batch.append(await client.send(topic, key=key, value=value))
            count += 1
            if len(batch) >= 1000:
                await asyncio.gather(*batch)
                batch.clear()
        await asyncio.gather(*batch)
    finally:
        await client.stop()
    return count


def produce(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes | None]],
    rate_tps: float | None = None,
    client_options: Mapping[str, Any] | None = None,
) -> int:
    """Publish (key, value) pairs (at ``rate_tps`` when given) and wait until the broker acknowledged all."""
    return asyncio.run(_produce(bootstrap, topic, messages, rate_tps, client_options))


async def _consume(
    bootstrap: str,
    topic: str,
    until: Callable[[list[Record]], bool],
    timeout_s: float,
    client_options: Mapping[str, Any] | None,
) -> list[Record]:
    # read_committed: the worker writes in transactions, only committed output counts
    consumer = committed_reader(
        Connection(bootstrap, client_options or {}),
        topic,
        auto_offset_reset="earliest",
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not until(records) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for messages in batches.values():
                records.extend(Record(m.key, m.value, m.partition, m.offset) for m in messages)
    finally:
        await consumer.stop()
    return records


def consume(
    bootstrap: str,
    topic: str,
    until: Callable[[list[Record]], bool],
    timeout_s: float = 60.0,
    client_options: Mapping[str, Any] | None = None,
) -> list[Record]:
    """Read ``topic``'s committed messages from the beginning until ``until(records)`` is true or the time is up."""
    return asyncio.run(_consume(bootstrap, topic, until, timeout_s, client_options))


def at_least(n: int) -> Callable[[list[Record]], bool]:
    return lambda records: len(records) >= n
