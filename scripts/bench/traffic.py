"""The benchmark's load: one simulated stream cut into phases, published at a held rate or as fast as possible,
each transaction timed from its publish to its committed output read back."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from tqdm import tqdm

from app.kafka.clients import Connection
from app.kafka.topics import TopicSpec
from app.kafka.topics import create_topics as create_kafka_topics
from app.learning.quality import percentiles
from app.serialization import dumps, loads
from lab.simulator import SimulatorConfig, label_of, simulate, to_wire

Message = tuple[bytes, bytes, str]  # key, value, tx_id
Label = tuple[bytes, bytes]  # key, value: a transaction's label on LABELS_TOPIC


def traffic(
    phases: list[tuple[str, int]],
    seed: int = 2,
    labels: dict[str, list[Label]] | None = None,
    label_delay_s: float = 86400.0,
) -> dict[str, list[Message]]:
    """One simulated stream, cut into consecutive phases in event time (so no phase replays old event times);
    each phase's tx_ids are its own. With ``labels``, each phase's labels are put there in the same order, stamped
    ``label_delay_s`` of event time after their transaction (so the trainer learns beside the decisions)."""
    total = sum(n for _, n in phases)
    txs = simulate(SimulatorConfig(n_customers=2500, n_terminals=5000, n_days=max(10, total // 4000 + 5), seed=seed))
    if len(txs) < total:
        raise RuntimeError(f"the simulator made {len(txs)} transactions, {total} needed")
    out: dict[str, list[Message]] = {}
    start = 0
    for phase, n in phases:
        batch, phase_labels = [], []
        for i, tx in enumerate(txs[start : start + n]):
            wire = to_wire(tx)
            wire["tx_id"] = f"{phase}-{i}"
            batch.append((tx.customer_id.encode(), dumps(wire), wire["tx_id"]))
            if labels is not None:
                label = label_of(tx, tx.timestamp + timedelta(seconds=label_delay_s))
                label["tx_id"] = wire["tx_id"]
                phase_labels.append((wire["tx_id"].encode(), dumps(label)))
        out[phase] = batch
        if labels is not None:
            labels[phase] = phase_labels
        start += n
    return out


async def create_topics(bootstrap: str, names: list[str], partitions: int, timeout_s: float = 30.0) -> None:
    """Create the topics and wait until every partition answers an offset lookup (a reader started before that
    logs NotLeaderForPartition)."""
    # Kept forever (the broker's run ends with the benchmark): the worker's trainer refuses a feature log kept
    # shorter than its label horizon, and the broker's default is 7 days.
    await create_kafka_topics(Connection(bootstrap), [TopicSpec(name, partitions, {"retention.ms": "-1"})
                                                      for name in names])  # fmt: skip
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    fetcher_log = logging.getLogger("aiokafka.consumer.fetcher")
    level = fetcher_log.level
    fetcher_log.setLevel(logging.CRITICAL)  # its retries while the leaders are being elected
    try:
        tps = [TopicPartition(n, p) for n in names for p in range(partitions)]
        await asyncio.wait_for(consumer.end_offsets(tps), timeout_s)
    finally:
        fetcher_log.setLevel(level)
        await consumer.stop()


async def drive(
    bootstrap: str,
    source: str,
    sink: str,
    batch: list[Message],
    rate_tps: float,
    timeout_s: float,
    progress: tqdm | None = None,
    labels: tuple[str, list[Label]] | None = None,
    label_lag: int = 200,
) -> dict[str, Any]:
    """Publish ``batch`` (at ``rate_tps``, or as fast as possible when 0) and read the sink with read_committed
    until every transaction's output came back (or ``timeout_s`` after the last publish); ``progress`` counts
    the outputs read, once per fetch. ``labels`` (topic, one label per transaction of ``batch``): each published
    ``label_lag`` transactions after its own, so the trainer learns while the decisions are timed."""
    consumer = AIOKafkaConsumer(sink, bootstrap_servers=bootstrap, auto_offset_reset="latest", group_id=None,
                                isolation_level="read_committed")  # fmt: skip
    await consumer.start()
    await consumer.seek_to_end()
    for tp in consumer.assignment():  # the reset to the end happens now, not at a first fetch after outputs came
        await consumer.position(tp)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    wanted = {tx_id for _, _, tx_id in batch}
    done = asyncio.Event()
    last_read = 0.0

    async def read() -> None:
        nonlocal last_read
        while len(latencies) < len(wanted):
            before = len(latencies)
            for records in (await consumer.getmany(timeout_ms=100, max_records=5000)).values():
                now = time.perf_counter()
                for record in records:
                    tx_id = loads(record.value)["tx_id"]
                    if tx_id in sent_at:
                        latencies.append((now - sent_at.pop(tx_id)) * 1000.0)
                        last_read = now
            if progress is not None and len(latencies) > before:
                progress.update(len(latencies) - before)
        done.set()

    reader = asyncio.create_task(read())
    started = time.perf_counter()
    pending = []
    for i, (key, value, tx_id) in enumerate(batch):
        if rate_tps > 0:
            due = started + i / rate_tps
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        sent_at[tx_id] = time.perf_counter()
        pending.append(await producer.send(source, key=key, value=value))
        if labels is not None and i >= label_lag:
            pending.append(
                await producer.send(labels[0], key=labels[1][i - label_lag][0], value=labels[1][i - label_lag][1])
            )
        if len(pending) >= 1000:
            await asyncio.gather(*pending)
            pending.clear()
    if labels is not None:
        for key, value in labels[1][max(0, len(batch) - label_lag) :]:
            pending.append(await producer.send(labels[0], key=key, value=value))
    await asyncio.gather(*pending)
    publish_s = time.perf_counter() - started
    try:
        await asyncio.wait_for(done.wait(), timeout_s)
    except TimeoutError:
        reader.cancel()
    await producer.stop()
    await consumer.stop()
    elapsed = (last_read or time.perf_counter()) - started
    return {
        "offered_tps": rate_tps or None,
        "published": len(batch),
        "publish_tps": len(batch) / publish_s,
        "publisher_kept_rate": rate_tps <= 0 or len(batch) / publish_s >= 0.95 * rate_tps,
        "received": len(latencies),
        "seconds": elapsed,
        "throughput_tps": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "latency_ms": percentiles(latencies, (50, 95, 99, 99.9)),
    }
