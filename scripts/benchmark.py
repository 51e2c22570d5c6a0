#!/usr/bin/env python3
"""End-to-end throughput and latency of the worker on a real broker, against a raw aiokafka passthrough.

    python scripts/benchmark.py --transactions 50000 --rates 200 1000 --rate-seconds 20 --out results/bench.json

Both systems run as their own process on the same broker in the same run and read the same messages:
- maximum sustained throughput: N transactions published as fast as possible, time until the last output
  message is read;
- latency from publish to output read (p50, p95, p99, p99.9) at fixed offered rates, held by the publisher,
  which reports when it could not keep a rate;
- for the worker: peak memory (VmHWM), RocksDB bytes on disk, and the CPU split between parsing, features,
  model, producing and the framework, from py-spy samples taken during the throughput phase.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import kafka_local  # noqa: E402
import psutil  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402
from local_processes import free_port, stop_process, wait_http_ok  # noqa: E402

from app.evaluation import percentiles  # noqa: E402
from app.serialization import dumps, loads  # noqa: E402
from app.simulator import SimulatorConfig, simulate, to_wire  # noqa: E402

CATEGORIES = (  # first match from the innermost frame outwards
    ("parsing", ("parse_transaction", "records.py")),
    ("features", ("features.py",)),
    ("model", ("model.py", "river/")),
    ("producing", ("aiokafka/producer", "faust/transport/producer", "send_soon", "topics.py:send", "publish_message")),
)


def messages(n: int, phase: str, seed: int) -> list[tuple[bytes, bytes, str]]:
    """n transactions of a simulated run, renamed so each phase's tx_ids are its own."""
    days = max(10, n // 5000 + 10)
    txs = simulate(SimulatorConfig(n_customers=2500, n_terminals=5000, n_days=days, seed=seed))[:n]
    out = []
    for i, tx in enumerate(txs):
        wire = to_wire(tx)
        wire["tx_id"] = f"{phase}-{i}"
        out.append((tx.customer_id.encode(), dumps(wire), wire["tx_id"]))
    return out


async def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        await admin.close()


async def drive(
    bootstrap: str, source: str, sink: str, batch: list[tuple[bytes, bytes, str]], rate_tps: float, timeout_s: float
) -> dict[str, Any]:
    """Publish ``batch`` (at ``rate_tps``, or as fast as possible when 0) and read the sink until all came back."""
    consumer = AIOKafkaConsumer(sink, bootstrap_servers=bootstrap, auto_offset_reset="latest", group_id=None)
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
            for records in (await consumer.getmany(timeout_ms=100, max_records=5000)).values():
                now = time.perf_counter()
                for record in records:
                    tx_id = loads(record.value)["tx_id"]
                    if tx_id in sent_at:
                        latencies.append((now - sent_at.pop(tx_id)) * 1000.0)
                        last_read = now
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
    offered_kept = rate_tps <= 0 or len(batch) / publish_s >= 0.95 * rate_tps
    return {
        "offered_tps": rate_tps or None,
        "published": len(batch),
        "publish_tps": len(batch) / publish_s,
        "publisher_kept_rate": offered_kept,
        "received": len(latencies),
        "seconds": elapsed,
        "throughput_tps": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "latency_ms": percentiles(latencies, (50, 95, 99, 99.9)),
    }


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
        frames = stack.split(";")
        category = "framework (faust, aiokafka consumer, asyncio)"
        for frame in reversed(frames):
            hit = next((name for name, needles in CATEGORIES if any(n in frame for n in needles)), None)
            if hit:
                category = hit
                break
        counts[category] += int(count)
    total = sum(counts.values()) or 1
    return {name: round(value / total, 4) for name, value in counts.most_common()}


def run_system(name: str, bootstrap: str, args: argparse.Namespace, work: Path, partitions: int) -> dict[str, Any]:
    run = f"{name}-{uuid.uuid4().hex[:8]}"  # topics and groups of this run only
    source, sink = f"bench-{run}-in", f"bench-{run}-out"
    asyncio.run(create_topics(bootstrap, [source, sink], partitions))
    log = (work / f"{name}.log").open("wb")
    data_dir = work / f"{name}-data"
    if name == "passthrough":
        command = [sys.executable, "scripts/passthrough.py", "--bootstrap-servers", bootstrap, "--source", source,
                   "--sink", sink, "--group", f"bench-{run}"]  # fmt: skip
        env = dict(os.environ)
    else:
        web_port = free_port()
        command = [sys.executable, "-m", "app"]
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "APP_ID": f"bench-{run}",
               "TRANSACTIONS_TOPIC": source, "PREDICTIONS_TOPIC": sink, "TOPIC_PARTITIONS": str(partitions),
               "DATA_DIR": str(data_dir), "WEB_PORT": str(web_port), "WEB_BIND": "127.0.0.1",
               "LOG_LEVEL": "warn"}  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    result: dict[str, Any] = {"system": name}
    try:
        if name == "worker":
            wait_http_ok(f"http://127.0.0.1:{env['WEB_PORT']}/ready", process, 120)
        # warm-up: the consumer group joins and the first fetches happen outside the measurements
        asyncio.run(drive(bootstrap, source, sink, messages(500, f"{name}-warmup", 1), 0, 120))
        wait_idle(process.pid)
        profile = work / f"{name}-profile.txt"
        spy = None
        if name == "worker" and shutil.which(str(Path(sys.executable).parent / "py-spy")):
            spy = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(process.pid), "--rate", "200",
                 "--format", "raw", "--output", str(profile), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        result["max_throughput"] = asyncio.run(
            drive(bootstrap, source, sink, messages(args.transactions, f"{name}-max", 2), 0, args.timeout_s)
        )
        m = result["max_throughput"]
        m["busy_s_after_last_output"] = wait_idle(process.pid)  # the learning backlog, for the worker
        m["sustained_tps_until_idle"] = m["published"] / (m["seconds"] + max(m["busy_s_after_last_output"] - 1.0, 0))
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
            result["cpu_split"] = cost_split(profile) if profile.exists() else {}
        result["rates"] = []
        for rate in args.rates:
            count = int(rate * args.rate_seconds)
            result["rates"].append(
                asyncio.run(
                    drive(bootstrap, source, sink, messages(count, f"{name}-r{rate:g}", 3), rate, args.timeout_s)
                )
            )
        result["peak_rss_bytes"] = peak_rss_bytes(process.pid)
        if name == "worker":
            result["state_bytes"] = dir_bytes(data_dir)
    finally:
        stop_process(process)
        log.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transactions", type=int, default=50_000, help="for the maximum-throughput phase")
    parser.add_argument("--rates", type=float, nargs="*", default=[200, 1000])
    parser.add_argument("--rate-seconds", type=float, default=20)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--timeout-s", type=float, default=300)
    parser.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "benchmark.json")
    args = parser.parse_args(argv)
    work = REPO_ROOT / ".kafka" / "bench"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    own_broker = not args.bootstrap_servers
    bootstrap = args.bootstrap_servers or kafka_local.start(
        port=free_port(), controller_port=free_port(), data_dir=work / "kafka", wipe=True
    )
    try:
        systems = [run_system(name, bootstrap, args, work, args.partitions) for name in ("passthrough", "worker")]
    finally:
        if own_broker:
            kafka_local.stop(work / "kafka")
    base, worker = systems
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
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(dumps(report))
    for system in systems:
        m = system["max_throughput"]
        print(f"{system['system']}: max {m['throughput_tps']:.0f} tx/s to the last output "
              f"({m['received']}/{m['published']}), {m['sustained_tps_until_idle']:.0f} tx/s until idle")  # fmt: skip
        for r in system["rates"]:
            lat = r["latency_ms"]
            kept = "" if r["publisher_kept_rate"] else " (publisher could not keep the rate)"
            print(f"  at {r['offered_tps']:g} tx/s{kept}: p50 {lat['p50']:.1f} p95 {lat['p95']:.1f} "
                  f"p99 {lat['p99']:.1f} p99.9 {lat['p99.9']:.1f} ms, {r['received']}/{r['published']}")  # fmt: skip
        print(f"  peak RSS {system['peak_rss_bytes'] / 2**20:.0f} MiB")
    print(f"worker state on disk {worker.get('state_bytes', 0) / 2**20:.1f} MiB; cpu split {worker.get('cpu_split')}")
    print(f"ratios {report['ratios']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
