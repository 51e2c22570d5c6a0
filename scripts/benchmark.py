#!/usr/bin/env python3
"""End-to-end throughput and latency of the worker on a real broker, against raw aiokafka passthroughs, and the
Faust ceiling on the same broker, in one run.

    python scripts/benchmark.py --out results/benchmark.json     # defaults: 50,000 tx; 200 and 1000 tx/s for 60 s

The three systems (``passthrough``: the raw client; ``passthrough-eos``: the raw client committing each
partition's batch in a Kafka transaction, exactly once and nothing else; ``worker``) run as their own process
on the same broker in the same run and are fed the same simulated transactions (one continuous stream in event
time, cut into phases); outputs are read with ``isolation_level="read_committed"`` (the plain passthrough writes
outside transactions, which read_committed reads as they come):
- maximum sustained throughput: N transactions published as fast as possible, time until the last committed
  output is read;
- latency from publish to committed output read (p50, p95, p99, p99.9) at fixed offered rates, held by the
  publisher, which reports whether it kept each rate;
- messages per transaction of the maximum-throughput phase: on every topic the system writes (for the worker:
  predictions, dead letters, health, its ``<APP_ID>-*`` topics), the offsets it took (end minus start; Kafka
  transaction commit markers take offsets too) and the records a read_committed reader sees, divided by the
  transactions published; for the worker also the Kafka transactions it committed (its
  ``fraud_decision_batch_records_count``);
- peak memory (VmHWM); for the worker the bytes of its DATA_DIR and of its topics on the broker's disk, and
  the CPU split from py-spy samples taken during the throughput phase;
- the Faust ceiling (``scripts/faust_ceiling.py``): how fast raw aiokafka and Faust agents of several shapes
  move small messages on the same broker, first to last output.

A compact summary in markdown (systems, Faust ceiling, messages per transaction) closes the printed output.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import faust_ceiling  # noqa: E402
import kafka_local  # noqa: E402
import psutil  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402
from aiokafka.protocol.api import Request, RequestStruct, Response  # noqa: E402
from aiokafka.protocol.types import Array, Boolean, Int16, Int32, Int64, Schema, String  # noqa: E402
from local_processes import free_port, stop_process, wait_http_ok  # noqa: E402
from progress_bars import add_progress_argument, bar  # noqa: E402
from tqdm import tqdm  # noqa: E402

from app.kafka.clients import Connection  # noqa: E402
from app.kafka.topics import TopicSpec  # noqa: E402
from app.kafka.topics import create_topics as create_kafka_topics  # noqa: E402
from app.learning.quality import percentiles  # noqa: E402
from app.serialization import dumps, loads  # noqa: E402
from lab.simulator import SimulatorConfig, simulate, to_wire  # noqa: E402

FRAMEWORK = "asyncio, faust, web and the rest"
CATEGORIES = (  # a sample's category: the first frame that matches one, from the innermost frame outwards
    ("parsing (app/records.py)", ("app/records.py",)),
    ("customer features (app/features/)", ("app/features/",)),
    ("terminal aggregates (app/state/terminals.py)", ("app/state/terminals.py",)),
    (
        "model (app/learning/model.py, app/decisions/assess.py, river)",
        ("app/learning/model.py", "app/decisions/assess.py", "river/"),
    ),  # noqa: E501
    ("decisions (app/decisions/scorer.py: batch, outputs, their JSON)", ("app/decisions/scorer.py",)),
    ("terminal feed (app/state/terminal_feed.py)", ("app/state/terminal_feed.py",)),
    (
        "trainer (app/learning/trainer.py, training.py: reads predictions and labels)",
        ("app/learning/trainer.py", "app/learning/training.py"),
    ),  # noqa: E501
    ("aiokafka producer (sends, batches, transactions)", ("aiokafka/producer/",)),
    ("aiokafka consumer (fetches, records)", ("aiokafka/consumer/",)),
    ("transactional loop (app/kafka/transactional.py)", ("app/kafka/transactional.py",)),
)
# aiokafka's shared layers count for the producer or consumer that called them, else on their own
CLIENT: tuple[str, tuple[str, ...]] = ("aiokafka client and connections (requests, socket I/O)", ("aiokafka/",))

Message = tuple[bytes, bytes, str]  # key, value, tx_id
# The raw client, the raw client in Kafka transactions shaped like the decision loop (exactly once alone), the worker.
SYSTEMS = ("passthrough", "passthrough-eos", "worker")


# ---- traffic -----------------------------------------------------------------------------------------------


def traffic(phases: list[tuple[str, int]], seed: int = 2) -> dict[str, list[Message]]:
    """One simulated stream, cut into consecutive phases in event time (so no phase replays old event times);
    each phase's tx_ids are its own."""
    total = sum(n for _, n in phases)
    txs = simulate(SimulatorConfig(n_customers=2500, n_terminals=5000, n_days=max(10, total // 4000 + 5), seed=seed))
    if len(txs) < total:
        raise RuntimeError(f"the simulator made {len(txs)} transactions, {total} needed")
    out: dict[str, list[Message]] = {}
    start = 0
    for phase, n in phases:
        batch = []
        for i, tx in enumerate(txs[start : start + n]):
            wire = to_wire(tx)
            wire["tx_id"] = f"{phase}-{i}"
            batch.append((tx.customer_id.encode(), dumps(wire), wire["tx_id"]))
        out[phase] = batch
        start += n
    return out


async def create_topics(bootstrap: str, names: list[str], partitions: int, timeout_s: float = 30.0) -> None:
    """Create the topics and wait until every partition answers an offset lookup (a reader started before that
    logs NotLeaderForPartition)."""
    await create_kafka_topics(Connection(bootstrap), [TopicSpec(name, partitions) for name in names])
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
) -> dict[str, Any]:
    """Publish ``batch`` (at ``rate_tps``, or as fast as possible when 0) and read the sink with read_committed
    until every transaction's output came back (or ``timeout_s`` after the last publish); ``progress`` counts
    the outputs read, once per fetch."""
    consumer = AIOKafkaConsumer(sink, bootstrap_servers=bootstrap, auto_offset_reset="latest", group_id=None,
                                isolation_level="read_committed")  # fmt: skip
    await consumer.start()
    await consumer.seek_to_end()
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
        if len(pending) >= 1000:
            await asyncio.gather(*pending)
            pending.clear()
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


# ---- what a system wrote -----------------------------------------------------------------------------------


async def end_offsets(bootstrap: str, topics: list[str]) -> dict[TopicPartition, int]:
    """The high watermark of every partition of ``topics`` (what exists of them)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()  # consumer.topics() keeps no partitions
        tps = [TopicPartition(t, p) for t in topics for p in sorted(cluster.partitions_for_topic(t) or ())]
        return dict(await consumer.end_offsets(tps)) if tps else {}
    finally:
        await consumer.stop()


async def written_topics(bootstrap: str, app_id: str | None, named: list[str]) -> list[str]:
    """``named`` (those that exist) and every topic whose name starts with ``app_id``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    prefixed = sorted(t for t in existing if app_id and t.startswith(app_id))
    return [t for t in named if t in existing] + [t for t in prefixed if t not in named]


async def committed_records(
    bootstrap: str, ranges: dict[TopicPartition, tuple[int, int]], timeout_s: float = 120.0
) -> dict[str, dict[str, int]]:
    """Records (and key + value bytes) that a read_committed reader sees in each ``[start, end)`` offset range,
    by topic. Commit markers and aborted records take offsets but are never returned."""
    counts: dict[str, dict[str, int]] = {tp.topic: {"records": 0, "bytes": 0} for tp in ranges}
    todo = {tp: r for tp, r in ranges.items() if r[1] > r[0]}
    if not todo:
        return counts
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed")  # fmt: skip
    await consumer.start()
    try:
        consumer.assign(list(todo))
        for tp, (start, _) in todo.items():
            consumer.seek(tp, start)
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=200, max_records=10_000)).items():
                end = ranges[tp][1]
                for r in records:
                    if r.offset < end:
                        counts[tp.topic]["records"] += 1
                        counts[tp.topic]["bytes"] += len(r.key or b"") + len(r.value or b"")
            for tp in list(todo):
                if await consumer.position(tp) >= todo[tp][1]:
                    consumer.pause(tp)
                    del todo[tp]
        if todo:
            raise TimeoutError(f"read_committed did not reach the end offsets of {sorted(map(str, todo))}")
        return counts
    finally:
        await consumer.stop()


class DescribeLogDirsResponse_v1(Response):
    API_KEY = 35
    API_VERSION = 1
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("results", Array(("error_code", Int16), ("log_dir", String("utf-8")),
                          ("topics", Array(("name", String("utf-8")),
                                           ("partitions", Array(("partition_index", Int32), ("partition_size", Int64),
                                                                ("offset_lag", Int64), ("is_future_key", Boolean))))))),
    )  # fmt: skip


class DescribeLogDirsRequest_v1(RequestStruct):
    API_KEY = 35
    API_VERSION = 1
    RESPONSE_TYPE = DescribeLogDirsResponse_v1
    SCHEMA = Schema(("topics", Array(("topic", String("utf-8")), ("partitions", Array(Int32)))))


class DescribeLogDirsRequest(Request[DescribeLogDirsRequest_v1]):
    """DescribeLogDirs (aiokafka's admin client has no call for it): bytes on disk per partition."""

    API_KEY = 35

    def __init__(self, topics: list[tuple[str, list[int]]]) -> None:
        self.topics = topics

    def build(self, request_struct_class: type[DescribeLogDirsRequest_v1]) -> DescribeLogDirsRequest_v1:
        return request_struct_class(self.topics)


async def disk_bytes(bootstrap: str, topics: list[str]) -> dict[str, int] | None:
    """Bytes of ``topics`` in the brokers' log directories (all replicas); None when the broker will not say."""
    try:
        offsets = await end_offsets(bootstrap, topics)
        by_topic: dict[str, list[int]] = {}
        for tp in offsets:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            sizes = dict.fromkeys(by_topic, 0)
            for broker in admin._client.cluster.brokers():
                response = await admin._send_request_to_node(
                    broker.nodeId, DescribeLogDirsRequest(sorted(by_topic.items()))
                )
                for _error, _log_dir, log_topics in response.results:
                    for name, partitions in log_topics:
                        sizes[name] = sizes.get(name, 0) + sum(p[1] for p in partitions)
            return sizes
        finally:
            await admin.close()
    except Exception as exc:  # an older or restricted broker: the figure is optional
        print(f"(topic bytes on disk unavailable: {exc!r})", file=sys.stderr)
        return None


def scrape(url: str) -> dict[str, float]:
    """Prometheus text samples of a /metrics page, by name with labels."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                samples[name] = float(value)
            except ValueError:
                continue
    return samples


def messages_per_transaction(
    bootstrap: str, topics: list[str], before: dict[TopicPartition, int], published: int
) -> dict[str, Any]:
    """Offsets and read_committed records that a phase of ``published`` transactions left on ``topics``, by
    topic and in total, per transaction."""
    after = asyncio.run(end_offsets(bootstrap, topics))
    ranges = {tp: (before.get(tp, 0), end) for tp, end in after.items()}
    read = asyncio.run(committed_records(bootstrap, ranges))
    rows: list[dict[str, Any]] = []
    for topic in topics:
        offsets = sum(end - start for tp, (start, end) in ranges.items() if tp.topic == topic)
        records = read.get(topic, {}).get("records", 0)
        rows.append({"topic": topic, "offsets": offsets, "records": records,
                     "bytes": read.get(topic, {}).get("bytes", 0), "markers_or_aborted": offsets - records,
                     "offsets_per_tx": offsets / published, "records_per_tx": records / published})  # fmt: skip
    offsets = sum(r["offsets"] for r in rows)
    records = sum(r["records"] for r in rows)
    return {"published": published, "topics": rows,
            "total": {"offsets": offsets, "records": records, "bytes": sum(r["bytes"] for r in rows),
                      "markers_or_aborted": offsets - records, "offsets_per_tx": offsets / published,
                      "records_per_tx": records / published}}  # fmt: skip


# ---- the worker's process ----------------------------------------------------------------------------------


def wait_idle(pid: int, timeout_s: float = 120.0, busy_share: float = 0.05) -> float:
    """Wait until the process is idle (it may still be working through a backlog such as the learning
    topic after a burst); returns the seconds waited."""
    process = psutil.Process(pid)
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if process.cpu_percent(interval=1.0) / 100.0 < busy_share:
            break
    return time.monotonic() - started


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def cost_split(raw_profile: Path) -> dict[str, float]:
    """Share of CPU samples per category from py-spy's raw (collapsed stack) output."""
    counts: Counter[str] = Counter()
    for line in raw_profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        category = None
        for frame in reversed(stack.split(";")):
            category = next((name for name, needles in CATEGORIES if any(n in frame for n in needles)), None)
            if category:
                break
        if category is None:
            category = CLIENT[0] if any(n in stack for n in CLIENT[1]) else FRAMEWORK
        counts[category] += int(count)
    total = sum(counts.values()) or 1
    return {name: round(value / total, 4) for name, value in counts.most_common()}


def start_profiler(pid: int, output: Path) -> subprocess.Popen[bytes] | None:
    py_spy = Path(sys.executable).parent / "py-spy"
    if not shutil.which(str(py_spy)):
        return None
    return subprocess.Popen(
        [str(py_spy), "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--output", str(output),
         "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def run_system(
    name: str,
    bootstrap: str,
    args: argparse.Namespace,
    work: Path,
    phases: dict[str, list[Message]],
    progress: tqdm | None = None,
) -> dict[str, Any]:
    run = f"{name}-{uuid.uuid4().hex[:8]}"  # topics, groups and state of this run only
    source, sink = f"bench-{run}-transactions", f"bench-{run}-predictions"
    asyncio.run(create_topics(bootstrap, [source, sink], args.partitions))
    log = (work / f"{name}.log").open("wb")
    data_dir = work / f"{name}-data"
    app_id: str | None = None
    metrics_url = None
    if name.startswith("passthrough"):
        command = [sys.executable, "scripts/passthrough.py", "--bootstrap-servers", bootstrap, "--source", source,
                   "--sink", sink, "--group", f"bench-{run}"]  # fmt: skip
        if name == "passthrough-eos":
            command.append("--transactional")
        env = dict(os.environ)
        named = [sink]
    else:
        app_id = f"bench-{run}-app"  # its own prefix: no topic of the benchmark's starts with it
        topics = {"TRANSACTIONS_TOPIC": source, "PREDICTIONS_TOPIC": sink, "LABELS_TOPIC": f"bench-{run}-labels",
                  "HEALTH_TOPIC": f"bench-{run}-health", "TRANSACTIONS_DLQ_TOPIC": f"bench-{run}-transactions-dlq",
                  "LABELS_DLQ_TOPIC": f"bench-{run}-labels-dlq"}  # fmt: skip
        web_port = free_port()
        metrics_url = f"http://127.0.0.1:{web_port}/metrics"
        command = [sys.executable, "-m", "app"]
        env = {**os.environ, **topics, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "APP_ID": app_id, "WORKER_ID": run,
               "TOPIC_PARTITIONS": str(args.partitions), "DATA_DIR": str(data_dir), "WEB_PORT": str(web_port),
               "GRPC_PORT": str(free_port()), "WEB_BIND": "127.0.0.1", "LOG_LEVEL": "warn"}  # fmt: skip
        named = [sink, topics["TRANSACTIONS_DLQ_TOPIC"], topics["HEALTH_TOPIC"], topics["LABELS_DLQ_TOPIC"]]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    result: dict[str, Any] = {"system": name, "run": run, "app_id": app_id}
    try:
        if metrics_url is not None:
            wait_http_ok(metrics_url.replace("/metrics", "/ready"), process, 120)
        # warm-up: the consumer group joins and the first fetches happen outside the measurements
        asyncio.run(drive(bootstrap, source, sink, phases["warmup"], 0, 120, progress))
        wait_idle(process.pid)
        written = asyncio.run(written_topics(bootstrap, app_id, named))
        offsets_before = asyncio.run(end_offsets(bootstrap, written))
        samples_before = scrape(metrics_url) if metrics_url else {}
        profile = work / f"{name}-profile.txt"
        spy = start_profiler(process.pid, profile) if name == "worker" else None
        m = result["max_throughput"] = asyncio.run(
            drive(bootstrap, source, sink, phases["max"], 0, args.timeout_s, progress)
        )
        m["busy_s_after_last_output"] = wait_idle(process.pid)  # the learning backlog, for the worker
        m["sustained_tps_until_idle"] = m["published"] / (m["seconds"] + max(m["busy_s_after_last_output"] - 1.0, 0))
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
            result["cpu_split"] = cost_split(profile) if profile.exists() else {}
        written = asyncio.run(written_topics(bootstrap, app_id, named))  # any topic created during the phase
        per_tx = messages_per_transaction(bootstrap, written, offsets_before, m["published"])
        if metrics_url:
            samples = scrape(metrics_url)
            batches = samples.get("fraud_decision_batch_records_count", 0) - samples_before.get(
                "fraud_decision_batch_records_count", 0
            )
            per_tx["kafka_transactions"] = int(batches)
            per_tx["tx_per_kafka_transaction"] = m["published"] / batches if batches else None
            per_tx["markers_or_aborted_per_kafka_transaction"] = (
                per_tx["total"]["markers_or_aborted"] / batches if batches else None
            )
            per_tx["scored"] = int(samples.get('fraud_transactions_total{outcome="scored"}', 0)
                                   - samples_before.get('fraud_transactions_total{outcome="scored"}', 0))  # fmt: skip
        result["messages_per_transaction"] = per_tx
        result["rates"] = [
            asyncio.run(drive(bootstrap, source, sink, phases[f"r{rate:g}"], rate, args.timeout_s, progress))
            for rate in args.rates
        ]
        result["peak_rss_bytes"] = peak_rss_bytes(process.pid)
        if app_id is not None:
            result["topic_disk_bytes"] = asyncio.run(disk_bytes(bootstrap, written))
    finally:
        stop_process(process)
        log.close()
    if name == "worker":
        result["state_bytes"] = dir_bytes(data_dir)  # what the worker leaves in DATA_DIR after its shutdown
    return result


# ---- the report --------------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _latencies(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    text = " / ".join(_ms(lat[p]) if lat[p] is not None else "n/a" for p in ("p50", "p95", "p99", "p99.9"))
    if not r["publisher_kept_rate"]:
        text += f" (publisher held only {r['publish_tps']:,.0f} tx/s)"
    if r["received"] < r["published"]:
        text += f" ({r['received']:,}/{r['published']:,} received)"
    return text


def _topic_label(topic: str, system: dict[str, Any]) -> str:
    app_id = system.get("app_id")
    if app_id and topic.startswith(app_id):
        return "<APP_ID>" + topic[len(app_id) :]
    return topic.removeprefix(f"bench-{system['run']}-")


def summary(report: dict[str, Any]) -> list[str]:
    systems = report["systems"]
    rates = [r["offered_tps"] for r in systems[0]["rates"]]
    head = ["system", "max tx/s", *[f"p50 / p95 / p99 / p99.9 at {rate:,.0f} tx/s (ms)" for rate in rates],
            "peak RSS (MiB)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in systems:
        m = s["max_throughput"]
        tps = f"{m['throughput_tps']:,.0f}"
        if m["received"] < m["published"]:
            tps += f" ({m['received']:,}/{m['published']:,} received)"
        cells = [s["system"], tps, *[_latencies(r) for r in s["rates"]], f"{s['peak_rss_bytes'] / 2**20:,.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    ratios = report["ratios"]
    lines.append("| worker / passthrough | " + " | ".join(
        [f"{ratios['throughput_worker_over_passthrough']:.3f}",
         *[f"p99 x {x:,.1f}" for x in ratios["p99_latency_worker_over_passthrough"]], ""]) + " |")  # fmt: skip
    if "p99_latency_worker_over_passthrough_eos" in ratios:
        lines.append("| worker / passthrough-eos | | " + " | ".join(
            [*[f"p99 x {x:,.1f}" for x in ratios["p99_latency_worker_over_passthrough_eos"]], ""]) + " |")  # fmt: skip
    worker = systems[-1]
    lines.append("")
    lines.append(f"Worker state: DATA_DIR {worker['state_bytes'] / 2**20:.2f} MiB on disk after shutdown"
                 + "".join(f"; {_topic_label(t, worker)} {b / 2**20:.2f} MiB on the broker's disk"
                           for t, b in sorted((worker.get("topic_disk_bytes") or {}).items())
                           if t.startswith(worker["app_id"])) + ".")  # fmt: skip
    if worker.get("cpu_split"):
        lines.append("CPU split (py-spy, maximum-throughput phase): "
                     + ", ".join(f"{k} {v:.0%}" for k, v in worker["cpu_split"].items()) + ".")  # fmt: skip
    if report.get("ceiling"):
        lines += ["", *faust_ceiling.markdown(report["ceiling"])]
    for s in systems:
        per = s["messages_per_transaction"]
        lines += ["", f"Messages per transaction, {s['system']}: the {per['published']:,} transactions of the "
                  "maximum-throughput phase", "",
                  "| topic | offsets | offsets / tx | records (read_committed) | records / tx | markers or aborted |"
                  " MiB read |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for row in [*per["topics"], {"topic": "total", **per["total"]}]:
            label = row["topic"] if row["topic"] == "total" else _topic_label(row["topic"], s)
            lines.append(f"| {label} | {row['offsets']:,} | {row['offsets_per_tx']:.3f} | {row['records']:,} | "
                         f"{row['records_per_tx']:.3f} | {row['markers_or_aborted']:,} | "
                         f"{row['bytes'] / 2**20:.2f} |")  # fmt: skip
        if per.get("kafka_transactions"):
            markers = per["markers_or_aborted_per_kafka_transaction"]
            lines += ["", f"{per['kafka_transactions']:,} committed Kafka transactions of decisions "
                      f"(fraud_decision_batch_records_count): {per['tx_per_kafka_transaction']:.1f} transactions and "
                      f"{markers:.1f} markers (or aborted records) each."]  # fmt: skip
    lines += ["", "Offsets: end minus start over the phase (a Kafka transaction's commit takes one on every partition "
              "it wrote). Records: what a read_committed reader sees in that range; on the compacted changelog a "
              "lower bound if the log cleaner ran meanwhile."]  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transactions", type=int, default=50_000, help="for the maximum-throughput phase")
    parser.add_argument("--rates", type=float, nargs="*", default=[200, 1000], help="offered rates held, tx/s")
    parser.add_argument("--rate-seconds", type=float, default=60, help="how long each rate is held")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--timeout-s", type=float, default=300, help="wait for outputs after the last publish")
    parser.add_argument("--faust-ceiling", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the Faust ceiling (scripts/faust_ceiling.py) on the same broker")  # fmt: skip
    parser.add_argument("--ceiling-messages", type=int, default=60_000)
    parser.add_argument("--ceiling-variants", nargs="+", default=list(faust_ceiling.DEFAULT_VARIANTS))
    parser.add_argument("--ceiling-partitions", type=int, default=4)
    parser.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
                        help="a broker to use; without one, a local broker is started and stopped")  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "benchmark.json")
    add_progress_argument(parser)
    args = parser.parse_args(argv)
    unknown = [v for v in args.ceiling_variants if not faust_ceiling.known_variant(v)]
    if unknown:
        parser.error(f"unknown --ceiling-variants {unknown}")
    phase_sizes = [("warmup", 500), ("max", args.transactions)]
    phase_sizes += [(f"r{rate:g}", int(rate * args.rate_seconds)) for rate in args.rates]
    phases = traffic(phase_sizes)
    work = REPO_ROOT / ".kafka" / "bench"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    own_broker = not args.bootstrap_servers
    bootstrap = args.bootstrap_servers or kafka_local.start(
        port=free_port(), controller_port=free_port(), data_dir=work / "kafka", wipe=True
    )
    try:
        # One bar over the outputs of every phase of every system (the Faust ceiling afterwards has none).
        outputs = len(SYSTEMS) * sum(n for _, n in phase_sizes)
        with bar(outputs, "benchmark outputs", enabled=not args.no_progress) as progress:
            systems = []
            for name in SYSTEMS:
                progress.set_description(f"benchmark {name}")
                systems.append(run_system(name, bootstrap, args, work, phases, progress))
        ceiling = None
        if args.faust_ceiling:
            ceiling = faust_ceiling.run_ceiling(bootstrap, args.ceiling_messages, args.ceiling_variants,
                                                args.ceiling_partitions, work, args.timeout_s)  # fmt: skip
    finally:
        if own_broker:
            kafka_local.stop(work / "kafka")
    base, eos, worker = systems
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}",
        "command": " ".join(["python", "scripts/benchmark.py", *(argv if argv is not None else sys.argv[1:])]),
        "systems": systems,
        "ratios": {
            "throughput_worker_over_passthrough": worker["max_throughput"]["throughput_tps"]
            / base["max_throughput"]["throughput_tps"],
            "p99_latency_worker_over_passthrough": [
                w["latency_ms"]["p99"] / b["latency_ms"]["p99"]
                for w, b in zip(worker["rates"], base["rates"], strict=True)
            ],
            "p99_latency_worker_over_passthrough_eos": [
                w["latency_ms"]["p99"] / b["latency_ms"]["p99"]
                for w, b in zip(worker["rates"], eos["rates"], strict=True)
            ],
        },
        "ceiling": ceiling,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(dumps(report))
    for system in systems:
        m = system["max_throughput"]
        print(f"{system['system']}: max {m['throughput_tps']:.0f} tx/s to the last committed output "
              f"({m['received']}/{m['published']}), {m['sustained_tps_until_idle']:.0f} tx/s until idle")  # fmt: skip
        for r in system["rates"]:
            lat = r["latency_ms"]
            kept = "" if r["publisher_kept_rate"] else f" (publisher held only {r['publish_tps']:.0f} tx/s)"
            print(f"  at {r['offered_tps']:g} tx/s{kept}: p50 {lat['p50']:.1f} p95 {lat['p95']:.1f} "
                  f"p99 {lat['p99']:.1f} p99.9 {lat['p99.9']:.1f} ms, {r['received']}/{r['published']}")  # fmt: skip
        print(f"  peak RSS {system['peak_rss_bytes'] / 2**20:.0f} MiB")
    print(f"ratios {report['ratios']}")
    print(f"wrote {args.out}")
    print()
    print(f"{report['date']}, {report['machine']}: {report['command']}")
    print()
    print("\n".join(summary(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
