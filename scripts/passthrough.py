#!/usr/bin/env python3
"""The benchmark's baseline: raw aiokafka consume-and-produce, no parsing, no features, no model.

    python scripts/passthrough.py --bootstrap-servers 127.0.0.1:9092 --source in --sink out --group g

What the Kafka client itself allows on this machine; the worker's figures are read as a ratio to it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def passthrough(bootstrap: str, source: str, sink: str, group: str) -> None:
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await consumer.start()
    await producer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=1000)
            for messages in batches.values():
                for message in messages:
                    await producer.send(sink, key=message.key, value=message.value)
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--group", required=True)
    args = parser.parse_args()
    asyncio.run(passthrough(args.bootstrap_servers, args.source, args.sink, args.group))


if __name__ == "__main__":
    main()
