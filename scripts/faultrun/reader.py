"""The reader process: reads predictions and dead letters with ``read_committed`` into ``outputs.tsv`` until every
published id has an outcome; the scan of an input topic that checks the publisher wrote each id once; and, with
labels, the read of the trainer's learning audit at the end of the run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faultrun.files import process_logging, read_json, write_json
from faultrun.measurement import DEAD_LETTER, LABEL_FRAUD, LABEL_LEGIT, PREDICTION, audit_entry, input_id, output_id

log = logging.getLogger(__name__)


def reader_main(cfg: dict[str, Any]) -> None:
    """Process entry: read the outputs until every published id has one (or the drain times out)."""
    process_logging(Path(cfg["work"]) / "reader.log")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_read(cfg))


async def _read(cfg: dict[str, Any]) -> None:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError

    work = Path(cfg["work"])
    kinds = {cfg["predictions_topic"]: PREDICTION, cfg["dlq_topic"]: DEAD_LETTER}
    consumer = AIOKafkaConsumer(
        *kinds, bootstrap_servers=cfg["bootstrap"], group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", isolation_level="read_committed", fetch_max_wait_ms=100,
        client_id=f"chaos-reader-{cfg['run_id']}",
    )  # fmt: skip
    await consumer.start()
    out = (work / "outputs.tsv").open("w", encoding="utf-8", buffering=1 << 16)
    record_path = work / "published.tsv"
    done_path = work / "publisher.done.json"
    stop_path = work / "reader.stop"
    published: set[str] = set()
    seen: Counter[str] = Counter()
    with_outcome = outputs = 0
    tail = b""
    offset = 0
    done: dict[str, Any] | None = None
    done_seen_at = complete_at = None
    last_status = 0.0
    write_json(work / "reader.started.json", {"at": time.time()})
    try:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=200, max_records=20000)
            except KafkaError as exc:  # the broker restarting: keep going
                log.warning("getmany: %r", exc)
                await asyncio.sleep(0.5)
                batches = {}
            now = time.time()
            for tp, records in batches.items():
                kind = kinds[tp.topic]
                for r in records:
                    msg_id = output_id(kind, r.key, r.value)
                    out.write(f"{kind}\t{msg_id}\t{now:.6f}\t{r.partition}\t{r.offset}\n")
                    outputs += 1
                    seen[msg_id] += 1
                    if seen[msg_id] == 1 and msg_id in published:
                        with_outcome += 1
            # what was published so far: complete lines of the record
            if done is None:
                done = read_json(done_path)  # read before the record, so the record is complete after it
                if done is not None:
                    done_seen_at = now
            if record_path.exists():
                with record_path.open("rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
                offset += len(chunk)
                lines = (tail + chunk).split(b"\n")
                tail = lines.pop()
                for line in lines:
                    fields = line.split(b"\t", 2)
                    if len(fields) > 1 and fields[1].decode() in (LABEL_FRAUD, LABEL_LEGIT):
                        continue  # a label: its outcome is the trainer's, read at the end
                    msg_id = fields[0].decode()
                    if msg_id not in published:
                        published.add(msg_id)
                        if seen[msg_id]:
                            with_outcome += 1
            complete = done is not None and len(published) >= done["count"] and with_outcome == len(published)
            if complete:
                complete_at = complete_at or now
                if now - complete_at >= cfg["settle_s"]:
                    break
            else:
                complete_at = None
            if done_seen_at is not None and now - done_seen_at > cfg["drain_timeout_s"]:
                log.warning("drain timeout: %d of %d published ids have an outcome", with_outcome, len(published))
                break
            if stop_path.exists():
                break
            if now - last_status >= 0.5:
                out.flush()
                write_json(work / "reader.status.json", {"outputs": outputs, "published_seen": len(published),
                                                          "with_outcome": with_outcome})  # fmt: skip
                last_status = now
    finally:
        out.flush()
        out.close()
        with contextlib.suppress(Exception):
            await consumer.stop()
    write_json(work / "reader.done.json", {"outputs": outputs, "published_seen": len(published),
                                            "with_outcome": with_outcome, "complete": complete_at is not None,
                                            "complete_at": complete_at, "at": time.time()})  # fmt: skip


async def scan_input(bootstrap: str, topic: str, timeout_s: float) -> list[str]:
    """The id of every message on the input topic, to check the publisher wrote each once."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20)  # fmt: skip
    await consumer.start()
    ids: list[str] = []
    try:
        # subscribed first, so the consumer's metadata knows the topic's partitions; then assigned by hand
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.unsubscribe()
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        deadline = time.time() + timeout_s
        remaining = {tp for tp in tps if end[tp] > 0}
        while remaining and time.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500, max_records=50000)).values():
                ids.extend(input_id(r.key, r.value) for r in records)
            remaining = {tp for tp in remaining if await consumer.position(tp) < end[tp]}
    finally:
        await consumer.stop()
    return ids


async def read_audit(
    bootstrap: str,
    topic: str,
    expected: set[str],
    path: Path,
    tick: Callable[[int, int], None],
    settle_s: float,
    idle_s: float,
    timeout_s: float,
) -> dict[str, Any]:
    """Read the learning audit ``read_committed`` from its start into ``path`` (one line a record: tx_id, learned_as,
    how, version, read time, partition, offset) until every ``expected`` id has a record and ``settle_s`` more have
    passed (a pair learned twice shows in a later version), or nothing new came for ``idle_s`` (the trainer learns
    nothing more), or ``timeout_s``. ``tick(records, covered)`` is called between fetches (the orchestrator
    supervises its workers meanwhile)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", isolation_level="read_committed",
                                fetch_max_wait_ms=200)  # fmt: skip
    started = last_new = time.time()
    covered: set[str] = set()
    records = 0
    complete_at: float | None = None
    ended = "timeout"
    await consumer.start()
    try:
        with path.open("w", encoding="utf-8") as out:
            while True:
                try:
                    batches = await consumer.getmany(timeout_ms=500, max_records=20000)
                except KafkaError as exc:
                    log.warning("audit getmany: %r", exc)
                    await asyncio.sleep(0.5)
                    batches = {}
                now = time.time()
                for rs in batches.values():
                    for r in rs:
                        tx_id, learned_as, how, version = audit_entry(r.value)
                        out.write(f"{tx_id}\t{learned_as}\t{how}\t{version}\t{now:.6f}\t{r.partition}\t{r.offset}\n")
                        records += 1
                        last_new = now
                        if tx_id in expected:
                            covered.add(tx_id)
                out.flush()
                tick(records, len(covered))
                if len(covered) == len(expected):
                    complete_at = complete_at or now
                    if now - complete_at >= settle_s:
                        ended = "complete"
                        break
                elif now - last_new >= idle_s:
                    ended = "idle"
                    break
                if now - started >= timeout_s:
                    break
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
    return {"ended": ended, "records": records, "covered": len(covered), "expected": len(expected),
            "waited_s": round(time.time() - started, 3)}  # fmt: skip
