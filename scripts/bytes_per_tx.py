#!/usr/bin/env python3
"""Bytes per transaction on every topic the worker writes, per ``OUTPUT_COMPRESSION``, on the same data (issue 16).

    python scripts/bytes_per_tx.py --transactions 20000 --compressions none lz4 zstd --rounds 2

A local broker (scripts/kafka_local.py) is started; for each round and each codec (alternating, so the machine's
drift falls on all alike) a worker runs as its own process with its own topics and ``APP_ID``, is warmed up, then
gets the same N simulated transactions, as fast as possible (or at ``--rate``) until every prediction is read
back committed. Then, once it is idle again (the trainer has read the predictions): per topic, the bytes its
segment files (``*.log`` in the broker's log dir) grew by, the records a read_committed reader sees and their
key + value bytes (uncompressed), each divided by N; the decision path's throughput (tx/s to the last committed
prediction) and the CPU seconds over the phase (until idle) of the worker (its trainer process included), of the
broker (it validates every batch it stores, decompressing those compressed) and of this script (publishing, reading
back), per transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import kafka_local  # noqa: E402
from bench.process import process_tree, wait_idle  # noqa: E402
from bench.traffic import Message, create_topics, drive, traffic  # noqa: E402
from bench.written import end_offsets, messages_per_transaction, written_topics  # noqa: E402
from local_processes import free_port, stop_process, wait_http_ok  # noqa: E402

from app.kafka.clients import at_least, consume  # noqa: E402
from app.serialization import dumps  # noqa: E402

CODECS = {"none": 0, "gzip": 1, "lz4": 3, "zstd": 4}  # a record batch's attributes & 0x7


def segment_bytes(log_dir: Path, topics: list[str]) -> dict[str, int]:
    """Bytes of each topic's segment files (``<topic>-<partition>/*.log``) in the broker's log dir; the indexes
    (preallocated) are left out."""
    sizes = dict.fromkeys(topics, 0)
    for partition_dir in log_dir.rglob("*-*"):
        if not partition_dir.is_dir():
            continue
        topic = re.sub(r"-\d+$", "", partition_dir.name)
        if topic in sizes:
            sizes[topic] += sum(f.stat().st_size for f in partition_dir.glob("*.log"))
    return sizes


def cpu_s(pid: int) -> float:
    """CPU seconds of the process and its children (a worker and its trainer process)."""
    total = 0.0
    for process in process_tree(pid):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def run_worker(
    compression: str, bootstrap: str, log_dir: Path, work: Path, phases: dict[str, list[Message]], args: Any
) -> dict[str, Any]:
    run = f"{compression}-{uuid.uuid4().hex[:6]}"
    app_id = f"bpt-{run}-app"
    topics = {"TRANSACTIONS_TOPIC": f"bpt-{run}-transactions", "PREDICTIONS_TOPIC": f"bpt-{run}-predictions",
              "LABELS_TOPIC": f"bpt-{run}-labels", "HEALTH_TOPIC": f"bpt-{run}-health",
              "TRANSACTIONS_DLQ_TOPIC": f"bpt-{run}-transactions-dlq",
              "LABELS_DLQ_TOPIC": f"bpt-{run}-labels-dlq"}  # fmt: skip
    source, sink = topics["TRANSACTIONS_TOPIC"], topics["PREDICTIONS_TOPIC"]
    asyncio.run(create_topics(bootstrap, [source, sink], args.partitions))
    web_port = free_port()
    env = {**os.environ, **topics, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "APP_ID": app_id, "WORKER_ID": run,
           "TOPIC_PARTITIONS": str(args.partitions), "DATA_DIR": str(work / f"{run}-data"), "WEB_PORT": str(web_port),
           "GRPC_PORT": str(free_port()), "WEB_BIND": "127.0.0.1", "LOG_LEVEL": "warn",
           "OUTPUT_COMPRESSION": compression}  # fmt: skip
    named = [sink, topics["TRANSACTIONS_DLQ_TOPIC"], topics["HEALTH_TOPIC"], topics["LABELS_DLQ_TOPIC"]]
    log = (work / f"{run}.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "app"], cwd=REPO_ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_http_ok(f"http://127.0.0.1:{web_port}/ready", process, 120)
        asyncio.run(drive(bootstrap, source, sink, phases["warmup"], 0, 120))
        wait_idle(process.pid)
        written = asyncio.run(written_topics(bootstrap, app_id, named))
        offsets_before = asyncio.run(end_offsets(bootstrap, written))
        disk_before = segment_bytes(log_dir, written)
        broker_pid = int((log_dir.parent / "kafka.pid").read_text().split()[0])
        cpu_before, broker_before, driver_before = cpu_s(process.pid), cpu_s(broker_pid), time.process_time()
        phase = asyncio.run(drive(bootstrap, source, sink, phases["main"], args.rate, args.timeout_s))
        driver = time.process_time() - driver_before
        wait_idle(process.pid)
        cpu = cpu_s(process.pid) - cpu_before
        broker = cpu_s(broker_pid) - broker_before
        written = asyncio.run(written_topics(bootstrap, app_id, named))
        per_tx = messages_per_transaction(bootstrap, written, offsets_before, phase["published"])
        disk_after = segment_bytes(log_dir, written)
    finally:
        stop_process(process)
        log.close()
    n = phase["published"]
    rows = []
    for row in per_tx["topics"]:
        topic = row["topic"]
        disk = disk_after.get(topic, 0) - disk_before.get(topic, 0)
        name = topic.removeprefix(f"bpt-{run}-").removeprefix("app-")
        rows.append({"topic": name, "records": row["records"], "disk_bytes": disk, "disk_bytes_per_tx": disk / n,
                     "payload_bytes_per_tx": row["bytes"] / n})  # fmt: skip
    return {"compression": compression, "run": run, "published": n, "received": phase["received"],
            "throughput_tps": phase["throughput_tps"], "latency_ms": phase["latency_ms"],
            "cpu_ms_per_tx": cpu * 1000 / n, "broker_cpu_ms_per_tx": broker * 1000 / n,
            "driver_cpu_ms_per_tx": driver * 1000 / n, "topics": rows}  # fmt: skip


def codec_cost(records: list[tuple[bytes, bytes]], codecs: list[str], batch_sizes: list[int]) -> list[dict[str, Any]]:
    """CPU of the codecs alone, on the worker's own predictions: aiokafka's batch builder (where the producer
    compresses) and batch reader, per record, for batches of each size; and the batch's bytes per record."""
    rows = []
    for size in batch_sizes:
        batches = [records[i : i + size] for i in range(0, len(records) - size + 1, size)]
        for codec in codecs:
            built: list[bytes] = []
            started = time.process_time()
            for batch in batches:
                builder = DefaultRecordBatchBuilder(2, CODECS[codec], 1, 1, 0, 0, 2**24)
                for offset, (key, value) in enumerate(batch):
                    builder.append(offset, int(time.time() * 1000), key, value, [])
                built.append(bytes(builder.build()))
            write_s = time.process_time() - started
            started = time.process_time()
            for data in built:
                read = MemoryRecords(data).next_batch()
                assert read is not None and sum(1 for _ in read) == size
            read_s = time.process_time() - started
            n = size * len(batches)
            rows.append({"batch_records": size, "codec": codec, "bytes_per_record": sum(map(len, built)) / n,
                         "write_us_per_record": write_s * 1e6 / n, "read_us_per_record": read_s * 1e6 / n})  # fmt: skip
    return rows


def cost_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| records per batch | codec | bytes per record | write µs per record | read µs per record |",
             "|---:|---|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['batch_records']} | {r['codec']} | {r['bytes_per_record']:,.0f} | "
                     f"{r['write_us_per_record']:.1f} | {r['read_us_per_record']:.1f} |")  # fmt: skip
    return lines


def table(results: list[dict[str, Any]]) -> list[str]:
    """Markdown: per codec (mean over rounds), disk bytes per transaction by topic, throughput and CPU."""
    codecs = list(dict.fromkeys(r["compression"] for r in results))
    topics = list(dict.fromkeys(t["topic"] for r in results for t in r["topics"]))

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else 0.0

    def per_topic(codec: str, topic: str, key: str) -> float:
        return mean([t[key] for r in results if r["compression"] == codec for t in r["topics"] if t["topic"] == topic])

    base = codecs[0]
    base_tps = mean([r["throughput_tps"] for r in results if r["compression"] == base])
    lines = ["| topic | uncompressed payload B/tx | " + " | ".join(f"on disk B/tx, {c}" for c in codecs) + " |",
             "|---|---:|" + "---:|" * len(codecs)]  # fmt: skip
    for topic in topics:
        payload = per_topic(base, topic, "payload_bytes_per_tx")
        cells = [f"{per_topic(c, topic, 'disk_bytes_per_tx'):,.1f}" for c in codecs]
        lines.append(f"| {topic} | {payload:,.1f} | " + " | ".join(cells) + " |")
    totals = [mean([sum(t["disk_bytes_per_tx"] for t in r["topics"]) for r in results if r["compression"] == c])
              for c in codecs]  # fmt: skip
    lines.append("| all topics | | " + " | ".join(f"{v:,.1f}" for v in totals) + " |")
    lines.append("")
    lines.append("| codec | decision path tx/s (to the last committed prediction), each round | mean | vs "
                 f"{base} | CPU ms/tx (until idle): worker, broker, load driver | "
                 "p50 / p99 latency ms (mean) |")  # fmt: skip
    lines.append("|---|---|---:|---:|---|---|")
    for c in codecs:
        runs = [r for r in results if r["compression"] == c]
        tps = mean([r["throughput_tps"] for r in runs])
        each = ", ".join(f"{r['throughput_tps']:,.0f}" for r in runs)
        lines.append(f"| {c} | {each} | {tps:,.0f} | "
                     f"{tps / base_tps:.2f} | {mean([r['cpu_ms_per_tx'] for r in runs]):.3f}, "
                     f"{mean([r.get('broker_cpu_ms_per_tx', 0.0) for r in runs]):.3f}, "
                     f"{mean([r.get('driver_cpu_ms_per_tx', 0.0) for r in runs]):.3f} | "
                     f"{mean([r['latency_ms']['p50'] for r in runs]):,.0f} / "
                     f"{mean([r['latency_ms']['p99'] for r in runs]):,.0f} |")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transactions", type=int, default=20_000)
    parser.add_argument("--compressions", nargs="+", default=["none", "lz4", "zstd"],
                        help="OUTPUT_COMPRESSION values; the first is the baseline")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=1, help="runs per codec, alternating")
    parser.add_argument("--rate", type=float, default=0, help="offered tx/s; 0: as fast as possible")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--timeout-s", type=float, default=300)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "bytes_per_tx.json")
    args = parser.parse_args(argv)
    phases = traffic([("warmup", 500), ("main", args.transactions)])
    work = REPO_ROOT / ".kafka" / "bytes-per-tx"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log_dir = work / "kafka"
    bootstrap = kafka_local.start(port=free_port(), controller_port=free_port(), data_dir=log_dir, wipe=True)
    results = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        for round_ in range(args.rounds):
            for compression in args.compressions:
                result = run_worker(compression, bootstrap, log_dir, work, phases, args)
                print(f"round {round_ + 1} {compression}: {result['throughput_tps']:,.0f} tx/s, "
                      f"{result['cpu_ms_per_tx']:.3f} CPU ms/tx, broker {result['broker_cpu_ms_per_tx']:.3f}, "
                      f"driver {result['driver_cpu_ms_per_tx']:.3f}, "
                      + ", ".join(f"{t['topic']} {t['disk_bytes_per_tx']:,.1f} B/tx" for t in result["topics"]),
                      flush=True)  # fmt: skip
                results.append(result)
        sink = f"bpt-{results[0]['run']}-predictions"
        sample = [(r.key or b"", r.value or b"") for r in consume(bootstrap, sink, at_least(args.transactions))]
        costs = codec_cost(sample[: args.transactions], ["none", *(c for c in args.compressions if c != "none")],
                           [1, 10, 100, 500])  # fmt: skip
    finally:
        kafka_local.stop(log_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(dumps({"date": started, "argv": argv if argv is not None else sys.argv[1:],
                                "results": results, "codec_cost": costs}))  # fmt: skip
    print()
    print("\n".join(table(results)))
    print()
    print("\n".join(cost_table(costs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
