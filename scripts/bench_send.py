#!/usr/bin/env python3
"""The CPU a Kafka transaction's outputs cost the worker's process: one ``send`` per record (the transactional loop
before) against a record batch per partition (:func:`app.kafka.transactional.by_partition`, ``send_batch``: the
loop now), in one process, rounds alternating, on a broker given (``scripts/kafka_local.py start --port ...``).

    python3 scripts/kafka_local.py start --port 19110 --controller-port 19111 --data-dir /tmp/k/data --wipe
    python scripts/bench_send.py --bootstrap-servers 127.0.0.1:19110 --rounds 20
    python3 scripts/kafka_local.py stop --data-dir /tmp/k/data

Each transaction holds what 500 decisions write: a prediction (``--value-bytes``, keyed by tx id, placed by the
key), a terminal-log record and two changelog records (an entry, a tombstone) a decision, on 4-partition topics.
Process CPU (the producer's sender and the event loop included) per output, median over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import NewTopic  # noqa: E402

from app.kafka.clients import Connection, admin_client, transactional_producer  # noqa: E402
from app.kafka.transactional import Batch, Output, TransactionalLoop  # noqa: E402

DECISIONS = 500


class _Loop:
    """What :meth:`TransactionalLoop._transaction` reads of its loop."""

    offsets_in_state = True
    group_id = "bench-send"


async def per_record(producer: AIOKafkaProducer, outputs: list[Output]) -> None:
    await producer.begin_transaction()
    pending = [await producer.send(o.topic, key=o.key, value=o.value, partition=o.partition) for o in outputs]
    await producer.commit_transaction()
    for future in pending:
        await future


async def batched(producer: AIOKafkaProducer, outputs: list[Output]) -> None:
    batch = Batch(outputs, track=("bench-send-changelog", 0))
    await TransactionalLoop._transaction(_Loop(), producer, TopicPartition("bench-send-in", 0), (), batch)  # type: ignore[arg-type]


def outputs(round_: int, value: bytes) -> list[Output]:
    out: list[Output] = []
    for i in range(DECISIONS):
        tx_id = f"{round_:04d}{i:08d}".encode()
        out.append(Output("bench-send-predictions", tx_id, value))
        out.append(Output("bench-send-terminals", b"T%d" % i, b'[1.0,"%s"]' % tx_id, 0))
    for i in range(DECISIONS):
        out.append(Output("bench-send-changelog", b"c\x1f%d" % i, b'[1.0,2.0,"T1",3]', 0))
        out.append(Output("bench-send-changelog", b"c\x1fold%d" % i, None, 0))
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    connection = Connection(args.bootstrap_servers)
    admin = admin_client(connection)
    await admin.start()
    try:
        names = ("bench-send-predictions", "bench-send-terminals", "bench-send-changelog")
        await admin.create_topics([NewTopic(name, 4, 1) for name in names])
    except Exception as exc:  # already there from an earlier run
        print(f"topics: {exc!r}")
    finally:
        await admin.close()
    producer = transactional_producer(connection, "bench-send", transaction_timeout_ms=60_000)
    await producer.start()
    value = b"x" * args.value_bytes
    ways = {"per_record": per_record, "batched": batched}
    cpu_us: dict[str, list[float]] = {name: [] for name in ways}
    try:
        for round_ in range(args.rounds):
            order = list(ways.items()) if round_ % 2 == 0 else list(ways.items())[::-1]
            for name, way in order:
                out = outputs(round_, value)
                started = time.process_time()
                await way(producer, out)
                cpu_us[name].append((time.process_time() - started) / len(out) * 1e6)
    finally:
        await producer.stop()
    return {name: {"median_us": statistics.median(v), "min_us": min(v), "rounds": v} for name, v in cpu_us.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--value-bytes", type=int, default=1300, help="a prediction's size (uncompressed)")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    for name, r in result.items():
        print(f"{name}: process CPU per output, median {r['median_us']:.2f} µs, min {r['min_us']:.2f} "
              f"({len(r['rounds'])} transactions of {4 * DECISIONS} outputs)")  # fmt: skip
    before, after = result["per_record"]["median_us"], result["batched"]["median_us"]
    print(f"per decision (4 outputs): {4 * before:.1f} -> {4 * after:.1f} µs ({after / before:.2f})")


if __name__ == "__main__":
    main()
