"""Plain Kafka clients for scripts and tests: publish raw bytes, read a topic until a condition holds.

``client_options`` are extra aiokafka arguments: for a secured broker, ``client_security_options(settings)`` of
:mod:`app.kafka.security`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


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
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, max_request_size=4 * 1024 * 1024, **(client_options or {})
    )
    await producer.start()
    count = 0
    started = time.monotonic()
    try:
        batch = []
        for key, value in messages:
            if rate_tps:
                delay = started + count / rate_tps - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            batch.append(await producer.send(topic, key=key, value=value))
            count += 1
            if len(batch) >= 1000:
                await asyncio.gather(*batch)
                batch.clear()
        await asyncio.gather(*batch)
    finally:
        await producer.stop()
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
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        isolation_level="read_committed",  # the worker writes in transactions: only committed output counts
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        **(client_options or {}),
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
