"""One size of ``scripts/scale.py``: the worker on a broker of its own, fed a simulated issuer of that size as fast
as possible, then killed and replaced, then held at a rate; its memory, disk and times measured from outside."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kafka_local
import psutil
from local_processes import free_port, http_status, scrape, stop_process
from simulate import publish, wire_events

from app.serialization import dumps
from bench.process import dir_bytes, peak_rss_bytes, process_tree, wait_idle
from bench.scale_report import bytes_per_transaction
from bench.traffic import Message, drive
from bench.written import end_offsets
from lab.simulator import SimulatedTransaction, SimulatorConfig, simulate, to_wire

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_CUSTOMERS, BASE_TERMINALS = 2000, 4000  # 1x: a small issuer (~154,000 transactions in 40 days)
APP_ID = "scale"
TOPICS = {
    "TRANSACTIONS_TOPIC": "transactions",
    "LABELS_TOPIC": "labels",
    "PREDICTIONS_TOPIC": "predictions",
    "HEALTH_TOPIC": "health",
    "TRANSACTIONS_DLQ_TOPIC": "transactions-dlq",
    "LABELS_DLQ_TOPIC": "labels-dlq",
    "MODELS_TOPIC": "models",
    "MODEL_EVENTS_TOPIC": "model-events",
}
DECIDED = ('fraud_transactions_total{outcome="scored"}', 'fraud_transactions_total{outcome="dead_letter"}')
GAUGES = (
    "fraud_customer_states",
    "fraud_terminal_states",
    "fraud_learning_entries",
    "fraud_model_labels_learned",
    'fraud_labels_total{outcome="received"}',
    'fraud_labels_total{outcome="learned"}',
    'fraud_transactions_total{outcome="scored"}',
    'fraud_transactions_total{outcome="dead_letter"}',
    "fraud_late_transactions_total",
)


class RssSampler(threading.Thread):
    """The resident set of one process and its children (a worker and its trainer process), summed, every
    ``interval_s``, until :meth:`finish`."""

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                tree = process_tree(self.pid)
            except psutil.Error:
                return
            rss = 0
            for process in tree:
                try:
                    rss += process.memory_info().rss
                except psutil.Error:
                    pass
            self.samples.append((time.monotonic(), rss))
            self._stop_event.wait(self.interval_s)

    def finish(self) -> int:
        """Stop sampling; the largest sample."""
        self._stop_event.set()
        self.join(timeout=5)
        return max((rss for _, rss in self.samples), default=0)


@dataclass
class WorkerProcess:
    """``python -m app`` with this size's settings; ``env`` changes between the kill, restart and replacements."""

    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    history: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['WEB_PORT']}"

    def start(self) -> None:
        with self.log_path.open("ab") as log_file:
            log_file.write(f"\n=== scale: start {self.env['WORKER_ID']} on {self.env['DATA_DIR']} ===\n".encode())
            log_file.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app"],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def wait_ready(self, timeout_s: float, poll_s: float = 0.1) -> float:
        """Seconds from the start until ``/ready`` first answers 200."""
        assert self.process is not None
        deadline = self.started_at + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited with {self.process.returncode}; see {self.log_path}")
            if http_status(f"{self.url}/ready", timeout_s=1.0) == 200:
                return time.monotonic() - self.started_at
            time.sleep(poll_s)
        raise RuntimeError(f"the worker was not ready within {timeout_s:g} s; see {self.log_path}")

    def metrics(self) -> dict[str, float]:
        return scrape(f"{self.url}/metrics")

    def decided(self) -> int:
        """Transactions scored or dead-lettered in committed Kafka transactions since its start."""
        samples = self.metrics()
        return int(sum(samples.get(name, 0) for name in DECIDED))

    def kill(self) -> None:
        """SIGKILL: no shutdown, no commit, no snapshot."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout_s: float = 60.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout_s)


def size_of(scale: float, days: int) -> tuple[int, int, int]:
    """Customers, terminals and days of a size: 1x is 2,000 customers and 4,000 terminals.

    >>> size_of(10, 40)
    (20000, 40000, 40)
    """
    return round(BASE_CUSTOMERS * scale), round(BASE_TERMINALS * scale), days


def split_traffic(
    txs: list[SimulatedTransaction], days: int, held_n: int
) -> tuple[list[SimulatedTransaction], list[SimulatedTransaction]]:
    """The first ``days`` days (published as fast as possible), then the next ``held_n`` transactions (the held
    rate), which continue the stream in event time."""
    if not txs:
        return [], []
    start = txs[0].timestamp.replace(hour=0, minute=0, second=0)
    cut = next((i for i, tx in enumerate(txs) if (tx.timestamp - start).days >= days), len(txs))
    held = txs[cut : cut + held_n]
    if len(held) < held_n:
        raise RuntimeError(f"the simulator made {len(held)} transactions after day {days}, {held_n} needed")
    return txs[:cut], held


def data_dir_files(path: Path) -> dict[str, Any]:
    files = {str(f.relative_to(path)): f.stat().st_size for f in sorted(path.rglob("*")) if f.is_file()}
    return {"files": files, "total_bytes": sum(files.values())}


def topic_dirs(broker_data: Path, transactions: int) -> dict[str, dict[str, Any]]:
    """Per topic: the sizes of its partition folders in the broker's log dir. ``log_bytes`` is the segment files
    (``*.log``: the records as stored, batches and headers included, what DescribeLogDirs reports);
    ``allocated_bytes`` is every file's blocks (indexes included; Kafka preallocates them sparse)."""
    topics: dict[str, dict[str, Any]] = {}
    for folder in sorted(p for p in broker_data.iterdir() if p.is_dir() and "-" in p.name):
        topic, _, partition = folder.name.rpartition("-")
        if not partition.isdigit():
            continue  # the metadata log (__cluster_metadata-0 is a topic folder too, kept)
        entry = topics.setdefault(topic, {"partitions": 0, "log_bytes": 0, "allocated_bytes": 0})
        entry["partitions"] += 1
        for f in folder.iterdir():
            if f.is_file():
                st = f.stat()
                entry["allocated_bytes"] += st.st_blocks * 512
                if f.suffix == ".log":
                    entry["log_bytes"] += st.st_size
    for entry in topics.values():
        entry["bytes_per_tx"] = bytes_per_transaction(entry["log_bytes"], transactions)
    return topics


def label(topic: str) -> str:
    return "<APP_ID>" + topic[len(APP_ID) :] if topic.startswith(APP_ID + "-") else topic


async def _publish_and_follow(
    bootstrap: str, worker: WorkerProcess, events: Any, n: int, timeout_s: float, poll_s: float
) -> dict[str, Any]:
    """Publish every event as fast as possible while polling the worker's decided count; time to the last one."""
    started = time.monotonic()
    published_at: list[float] = []
    trace: list[tuple[float, int]] = []

    async def follow() -> float:
        while True:
            decided = await asyncio.to_thread(worker.decided)
            now = time.monotonic()
            trace.append((round(now - started, 2), decided))
            if decided >= n:
                return now
            if published_at and now - published_at[0] > timeout_s:
                raise TimeoutError(f"decided {decided} of {n} transactions {timeout_s:g} s after the last publish")
            if worker.process is not None and worker.process.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.process.returncode}")
            await asyncio.sleep(poll_s)

    follower = asyncio.create_task(follow())
    report = await publish(bootstrap, events, TOPICS["TRANSACTIONS_TOPIC"], TOPICS["LABELS_TOPIC"])
    published_at.append(time.monotonic())
    decided_at_publish_end = trace[-1][1] if trace else 0
    done_at = await follower
    seconds = done_at - started
    after_publish_s = done_at - published_at[0]
    return {
        "published": report.transactions,
        "labels": report.labels,
        "publish_s": report.seconds,
        "publish_tps": report.achieved_tps,
        "seconds": seconds,
        "throughput_tps": n / seconds,
        "decided_when_publish_ended": decided_at_publish_end,
        "tps_after_publish_ended": (n - decided_at_publish_end) / after_publish_s if after_publish_s > 0 else None,
        "trace": trace[:: max(1, len(trace) // 200)],
    }


def _gauges(worker: WorkerProcess) -> dict[str, float]:
    samples = worker.metrics()
    return {name: samples[name] for name in GAUGES if name in samples}


def _restart(worker: WorkerProcess, what: str, env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """SIGKILL the worker, start it again with ``env``, and time it to ``/ready``; its memory once ready."""
    worker.kill()
    killed_at = time.monotonic()
    worker.env = env
    worker.start()
    sampler = RssSampler(worker.pid)
    sampler.start()
    ready_s = worker.wait_ready(timeout_s)
    rss_max = sampler.finish()
    print(f"  {what}: ready {ready_s:.1f} s after its start", file=sys.stderr)
    return {
        "ready_s": ready_s,
        "since_kill_s": time.monotonic() - killed_at,
        "rss_at_ready_bytes": sum(p.memory_info().rss for p in process_tree(worker.pid)),
        "peak_rss_at_ready_bytes": max(rss_max, peak_rss_bytes(worker.pid)),
        "worker_id": env["WORKER_ID"],
        "data_dir_bytes_at_ready": dir_bytes(Path(env["DATA_DIR"])),
    }


def _held(
    bootstrap: str, worker: WorkerProcess, txs: list[SimulatedTransaction], rate: float, on: str
) -> dict[str, Any]:
    """``txs`` published at ``rate``: latency from each publish to its committed prediction read back."""
    batch: list[Message] = [(tx.customer_id.encode(), dumps(to_wire(tx)), tx.tx_id) for tx in txs]
    held = asyncio.run(drive(bootstrap, TOPICS["TRANSACTIONS_TOPIC"], TOPICS["PREDICTIONS_TOPIC"], batch, rate, 60))
    held["on_worker"] = on
    held["peak_rss_bytes_after"] = peak_rss_bytes(worker.pid)
    lat = held["latency_ms"]
    print(
        f"  held {rate:g} tx/s on {on}: p50 {lat['p50']:.1f} p99 {lat['p99']:.1f} ms, "
        f"{held['received']}/{held['published']}",
        file=sys.stderr,
    )
    return held


def _checkpoints(worker: WorkerProcess) -> float:
    return worker.metrics().get("fraud_terminal_checkpoints_total", 0.0)


def _wait_checkpoint(worker: WorkerProcess, timeout_s: float) -> float | None:
    """Wait for the next terminal checkpoint the worker writes to Kafka (what a worker on an empty disk starts
    from); seconds waited, None if none came."""
    started = time.monotonic()
    before = _checkpoints(worker)
    while time.monotonic() - started < timeout_s:
        time.sleep(0.5)
        if _checkpoints(worker) > before:
            return time.monotonic() - started
    return None


def run_size(scale: float, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One size from a fresh broker to its held rate; the broker and the worker are stopped at the end."""
    customers, terminals, days = size_of(scale, args.days)
    held_n = int(args.held_rate * args.held_s)
    print(f"== {scale:g}x: {customers:,} customers, {terminals:,} terminals, {days} days", file=sys.stderr)
    started = time.monotonic()
    config = SimulatorConfig(
        n_customers=customers, n_terminals=terminals, n_days=days + 2 + held_n // customers, seed=args.seed
    )
    txs, held_txs = split_traffic(simulate(config), days, 2 * held_n)  # held on the first worker, then its replacement
    n = len(txs)
    simulate_s = time.monotonic() - started
    print(f"  simulated {n:,} transactions (+{held_n:,} held) in {simulate_s:.0f} s", file=sys.stderr)
    here = work / f"x{scale:g}"
    shutil.rmtree(here, ignore_errors=True)
    here.mkdir(parents=True)
    broker_data = here / "kafka"
    bootstrap = kafka_local.start(port=free_port(), controller_port=free_port(), data_dir=broker_data, wipe=True)
    result: dict[str, Any] = {
        "scale": scale,
        "customers": customers,
        "terminals": terminals,
        "days": days,
        "transactions": n,
        "simulate_s": simulate_s,
        "load_average_at_start": os.getloadavg(),
        "trainer_enabled": not getattr(args, "no_trainer", False),
        "worker_env": list(getattr(args, "worker_env", [])),
    }
    env = {
        **os.environ,
        **TOPICS,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "APP_ID": APP_ID,
        "WORKER_ID": "w1",
        "TOPIC_PARTITIONS": str(args.partitions),
        "DATA_DIR": str(here / "data-1"),
        "WEB_PORT": str(free_port()),
        "GRPC_PORT": str(free_port()),
        "WEB_BIND": "127.0.0.1",
        "LOG_LEVEL": "warn",
        "MODEL_SIGNING_KEY": "scale-benchmark",
        "TRAINER_ENABLED": "false" if getattr(args, "no_trainer", False) else "true",
        **dict(item.split("=", 1) for item in getattr(args, "worker_env", [])),
    }
    worker = WorkerProcess(env, here / "worker.log")
    sampler: RssSampler | None = None
    try:
        worker.start()
        result["first_start_ready_s"] = worker.wait_ready(args.ready_timeout_s)
        sampler = RssSampler(worker.pid)
        sampler.start()
        events = wire_events(config, args.label_delay_days * 86400, transactions=txs)
        result["throughput"] = m = asyncio.run(
            _publish_and_follow(bootstrap, worker, events, n, args.timeout_s, args.poll_s)
        )
        print(
            f"  decided {n:,} in {m['seconds']:.0f} s: {m['throughput_tps']:,.0f} tx/s "
            f"(published in {m['publish_s']:.0f} s)",
            file=sys.stderr,
        )
        busy_s = wait_idle(worker.pid, timeout_s=args.idle_timeout_s)
        result["busy_s_after_last_decision"] = busy_s
        checkpoint_wait = _wait_checkpoint(worker, 75)
        quiet_from = time.monotonic()
        time.sleep(5)
        steady = [rss for t, rss in sampler.samples if t >= quiet_from]
        result["rss"] = {
            "steady_bytes": int(statistics.median(steady)),
            "peak_bytes": max(sampler.finish(), peak_rss_bytes(worker.pid)),
            "trace": [(round(t - worker.started_at, 1), rss) for t, rss in sampler.samples[::20]],
        }
        sampler = None
        result["metrics"] = _gauges(worker)
        result["terminal_checkpoint_wait_s"] = checkpoint_wait
        result["data_dir"] = data_dir_files(Path(env["DATA_DIR"]))
        offsets = asyncio.run(end_offsets(bootstrap, sorted(t for t in _topic_names(broker_data))))
        topics = topic_dirs(broker_data, n)
        for tp, end in offsets.items():
            topics.setdefault(tp.topic, {"partitions": 0, "log_bytes": 0, "allocated_bytes": 0, "bytes_per_tx": 0.0})
            topics[tp.topic]["offsets"] = topics[tp.topic].get("offsets", 0) + end
        for entry in topics.values():
            entry["offsets_per_tx"] = entry.get("offsets", 0) / n
        result["topics"] = {label(t): entry for t, entry in topics.items()}
        total_log = sum(e["log_bytes"] for e in topics.values())
        result["topics_total"] = {
            "log_bytes": total_log,
            "bytes_per_tx": bytes_per_transaction(total_log, n),
            "allocated_bytes": sum(e["allocated_bytes"] for e in topics.values()),
            "offsets_per_tx": sum(e.get("offsets", 0) for e in topics.values()) / n,
        }
        print(
            f"  RSS steady {result['rss']['steady_bytes'] / 2**20:,.0f} MiB, peak "
            f"{result['rss']['peak_bytes'] / 2**20:,.0f} MiB; topics {total_log / 2**20:,.0f} MiB",
            file=sys.stderr,
        )

        if held_n:
            result["held_before_kill"] = _held(bootstrap, worker, held_txs[:held_n], args.held_rate, "the first worker")
            # the replacements below start from a terminal checkpoint as fresh as after the catch-up
            result["terminal_checkpoint_wait_s_before_kill"] = _wait_checkpoint(worker, 75)
        result["restart"] = _restart(worker, "restart after SIGKILL, same disk", dict(env), args.ready_timeout_s)
        same_id = {**env, "DATA_DIR": str(here / "data-2")}
        result["replacement_same_id"] = _restart(worker, "empty disk, same id", same_id, args.ready_timeout_s)
        new_id = {**env, "DATA_DIR": str(here / "data-3"), "WORKER_ID": "w2"}
        result["replacement_new_id"] = _restart(worker, "empty disk, new id", new_id, args.ready_timeout_s)

        if held_n:
            # the replacement restores, and may hold the trainer's lease and catch up with its backlog: its p99 is
            # measured once it is idle
            result["busy_s_before_held"] = wait_idle(worker.pid, timeout_s=args.idle_timeout_s)
            result["held"] = _held(bootstrap, worker, held_txs[held_n:], args.held_rate, "the new-id replacement")
    finally:
        if sampler is not None:
            sampler.finish()
        worker.stop()
        kafka_local.stop(broker_data)
        result["load_average_at_end"] = os.getloadavg()
        result["seconds"] = time.monotonic() - started
        if not args.keep:
            shutil.rmtree(here / "kafka", ignore_errors=True)
    return result


def _topic_names(broker_data: Path) -> set[str]:
    return {
        p.name.rpartition("-")[0]
        for p in broker_data.iterdir()
        if p.is_dir() and p.name.rpartition("-")[2].isdigit() and not p.name.startswith("__cluster_metadata")
    }
