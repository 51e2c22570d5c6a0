#!/usr/bin/env python3
"""The benchmark's baselines: raw aiokafka consume-and-produce, no parsing, no features, no model.

    python scripts/passthrough.py --bootstrap-servers 127.0.0.1:9092 --source in --sink out --group g
    python scripts/passthrough.py ... --transactional   # exactly once, shaped like the worker's decision loop

What the Kafka client itself allows on this machine; the worker's figures are read as a ratio to it. With
``--transactional`` each input partition has its own transactional producer, and each fetched batch of a
partition is one Kafka transaction holding its outputs and its input offset, the partitions committing side by
side: the cost of exactly once alone, the floor under the worker's latency.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.kafka.tuning import RETRY_BACKOFF_MS, apply_tuning  # noqa: E402
from app.settings import Settings  # noqa: E402

# The worker's client tuning (retry backoff, fetch pause): the same client, so the difference is the worker's own work.
apply_tuning(fetch_pause_ms=Settings().fetch_pause_ms)


async def passthrough(bootstrap: str, source: str, sink: str, group: str, transactional: bool) -> None:
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                                enable_auto_commit=not transactional, isolation_level="read_committed")  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    producers: dict[TopicPartition, AIOKafkaProducer] = {}
    await consumer.start()
    if not transactional:
        await producer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    async def commit(tp: TopicPartition, messages: list) -> None:  # type: ignore[type-arg]
        txn = producers.get(tp)
        if txn is None:
            txn = producers[tp] = AIOKafkaProducer(
                bootstrap_servers=bootstrap, transactional_id=f"{group}-{tp.topic}-{tp.partition}",
                enable_idempotence=True, linger_ms=2, retry_backoff_ms=RETRY_BACKOFF_MS,
            )  # fmt: skip
            await txn.start()
        async with txn.transaction():
            for message in messages:
                await txn.send(sink, key=message.key, value=message.value)
            await txn.send_offsets_to_transaction({tp: messages[-1].offset + 1}, group)

    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=1000)
            if transactional:
                await asyncio.gather(*(commit(tp, messages) for tp, messages in batches.items() if messages))
                continue
            for messages in batches.values():
                for message in messages:
                    await producer.send(sink, key=message.key, value=message.value)
    finally:
        for txn in producers.values():
            await txn.stop()
        if not transactional:
            await producer.stop()
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--transactional", action="store_true", help="one Kafka transaction per partition batch")
    args = parser.parse_args()
    asyncio.run(passthrough(args.bootstrap_servers, args.source, args.sink, args.group, args.transactional))


if __name__ == "__main__":
    main()
