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
import urllib.request
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import kafka_local
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from local_processes import free_port, http_status, scrape, stop_process
from simulate import publish, wire_events

from app.serialization import dumps, loads
from bench.process import dir_bytes, peak_rss_bytes, process_tree, wait_idle
from bench.scale_report import TRAINER_TOPICS, bytes_per_transaction, published_summary
from bench.traffic import Message, drive
from bench.written import end_offsets
from lab.simulator import SimulatedTransaction, SimulatorConfig, label_of, simulate, to_wire

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
PROBES = 5  # transactions (and their labels) each trainer probe sends: the restore's and the takeover's
PROBE_TIMEOUT_S = 300.0
DECIDED = ('fraud_transactions_total{outcome="scored"}', 'fraud_transactions_total{outcome="dead_letter"}')
GAUGES = (
    'fraud_allocator_bytes{kind="in_use"}',
    'fraud_allocator_bytes{kind="free"}',
    "fraud_allocator_released_bytes_total",
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
    ``interval_s``, until :meth:`finish`; the children's apart in ``trainer_samples`` (a worker's only child is its
    trainer process), with the last child's pid."""

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []
        self.trainer_samples: list[tuple[float, int]] = []
        self.trainer_pid: int | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                tree = process_tree(self.pid)
            except psutil.Error:
                return
            rss = children = 0
            for process in tree:
                try:
                    one = process.memory_info().rss
                except psutil.Error:
                    continue
                rss += one
                if process.pid != self.pid:
                    children += one
                    self.trainer_pid = process.pid
            now = time.monotonic()
            self.samples.append((now, rss))
            self.trainer_samples.append((now, children))
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


class TrainerTopicsFollower(threading.Thread):
    """Every committed record the trainer writes on its topics (``<APP_ID>-trainer-state``, ``-trainer-labels``,
    ``-learning-audit``), read as they come from the first offset: compaction and segment rolls leave on disk only
    what the cleaner kept, these are what was published. Kept as (timestamp_s, topic, bytes, records) per topic and
    millisecond (bytes: key and value as serialized), and the time each watched key (a probe's ``tx_id``) first came
    on the audit topic."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap = bootstrap
        self.topics = {f"{APP_ID}{name[len('<APP_ID>') :]}": short for name, short in TRAINER_TOPICS.items()}
        self.buckets: dict[tuple[int, str], list[int]] = {}
        self.watched: set[bytes] = set()
        self.seen: dict[bytes, float] = {}
        self.error: BaseException | None = None
        self._stop_event = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        try:
            asyncio.run(self._follow())
        except BaseException as exc:  # noqa: BLE001 - said in the report, the run goes on
            self.error = exc

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_bytes=32 * 2**20,
            max_partition_fetch_bytes=8 * 2**20,
        )
        await consumer.start()
        try:
            # without a group: every partition of the topics, from the first offset, as they are created
            consumer.subscribe(topics=sorted(self.topics))
            while not self._stop_event.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=20_000)
                now = time.monotonic()
                with self._lock:
                    for tp, records in batches.items():
                        short = self.topics[tp.topic]
                        for r in records:
                            size = max(0, r.serialized_key_size) + max(0, r.serialized_value_size)
                            bucket = self.buckets.setdefault((r.timestamp, short), [0, 0])
                            bucket[0] += size
                            bucket[1] += 1
                            if short == "audit" and r.key in self.watched and r.key not in self.seen:
                                self.seen[r.key] = now
        finally:
            await consumer.stop()

    def watch(self, keys: list[bytes]) -> None:
        with self._lock:
            self.watched.update(keys)

    def first_seen(self, keys: list[bytes]) -> float | None:
        """When the last of ``keys`` came on the audit topic (monotonic), None while one has not."""
        with self._lock:
            times = [self.seen.get(k) for k in keys]
        return None if any(t is None for t in times) else max(t for t in times if t is not None)

    def finish(self) -> list[tuple[float, str, int, int]]:
        self._stop_event.set()
        self.join(timeout=30)
        with self._lock:
            return [(ms / 1000.0, topic, v[0], v[1]) for (ms, topic), v in sorted(self.buckets.items())]


def trainer_status(port: int) -> dict[str, Any] | None:
    """A trainer process's ``/status`` (role, restored, labels_seen, pid), None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=1.0) as response:
            body = loads(response.read())
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def _labels_settled(port: int, timeout_s: float, quiet_s: float = 3.0) -> dict[str, Any]:
    """The trainer's status once it is active and its ``labels_seen`` did not move for ``quiet_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    since = time.monotonic()
    while time.monotonic() < deadline:
        status = trainer_status(port)
        if status and status.get("role") == "active" and status.get("restored"):
            if status.get("labels_seen") != last:
                last, since = status.get("labels_seen"), time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return status
        time.sleep(0.2)
    raise RuntimeError(f"the trainer on port {port} did not settle within {timeout_s:g} s (last {last})")


async def _send(bootstrap: str, messages: list[tuple[str, bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, key=key, value=value) for topic, key, value in messages])
    finally:
        await producer.stop()


def _probe_decided(bootstrap: str, worker: WorkerProcess, probes: list[SimulatedTransaction]) -> None:
    """Publish the probes' transactions and wait until the worker decided them (their predictions are on Kafka)."""
    before = worker.decided()
    messages = [(TOPICS["TRANSACTIONS_TOPIC"], tx.customer_id.encode(), dumps(to_wire(tx))) for tx in probes]
    asyncio.run(_send(bootstrap, messages))
    deadline = time.monotonic() + 120
    while worker.decided() < before + len(probes):
        if time.monotonic() > deadline:
            raise RuntimeError("the worker did not decide the probe transactions within 120 s")
        time.sleep(0.2)


def _probe_labels(bootstrap: str, probes: list[SimulatedTransaction]) -> None:
    """The probes' labels, an hour after each in event time: the trainer learns them on arrival (their predictions
    are in its window)."""
    messages = [
        (TOPICS["LABELS_TOPIC"], tx.tx_id.encode(), dumps(label_of(tx, tx.timestamp + timedelta(hours=1))))
        for tx in probes
    ]
    asyncio.run(_send(bootstrap, messages))


def _watch_trainer(
    port: int, old_pid: int | None, killed_at: float, labels_before: int, follower: TrainerTopicsFollower,
    keys: list[bytes], timeout_s: float,
) -> dict[str, Any]:  # fmt: skip
    """Seconds from the SIGKILL until the trainer on ``port`` (another pid) answers, holds the lease with its state
    restored (``active_s``), learned the probes' labels (``labels_seen`` past ``labels_before``: ``learned_s``) and
    published them (their pairs on the audit topic: ``published_s``)."""
    out: dict[str, Any] = {"up_s": None, "active_s": None, "learned_s": None, "published_s": None}
    n = len(keys)
    deadline = killed_at + timeout_s
    while time.monotonic() < deadline:
        status = trainer_status(port)
        now = time.monotonic() - killed_at
        if status and status.get("pid") != old_pid:
            if out["up_s"] is None:
                out["up_s"] = now
            if out["active_s"] is None and status.get("role") == "active" and status.get("restored"):
                out["active_s"] = now
                out["pid"] = status.get("pid")
            if out["learned_s"] is None and out["active_s"] is not None:
                if (status.get("labels_seen") or 0) >= labels_before + n:
                    out["learned_s"] = now
                    out["labels_seen"] = status.get("labels_seen")
        seen = follower.first_seen(keys)
        if out["published_s"] is None and seen is not None:
            out["published_s"] = seen - killed_at
        if out["learned_s"] is not None and out["published_s"] is not None:
            break
        time.sleep(0.1)
    if out["learned_s"] is None or out["published_s"] is None:
        out["timed_out"] = True
    out["labels_seen_before"] = labels_before
    return out


def _restore_probe(
    bootstrap: str, worker: WorkerProcess, port: int, follower: TrainerTopicsFollower,
    probes: list[SimulatedTransaction],
) -> dict[str, Any]:  # fmt: skip
    """SIGKILL the worker's trainer process (the worker starts another after its backoff, on the same DATA_DIR):
    how long until the new one holds the lease and learns."""
    _probe_decided(bootstrap, worker, probes)
    before = _labels_settled(port, PROBE_TIMEOUT_S)
    keys = [tx.tx_id.encode() for tx in probes]
    follower.watch(keys)
    old_pid = int(before["pid"])
    os.kill(old_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    _probe_labels(bootstrap, probes)
    out = _watch_trainer(port, old_pid, killed_at, int(before["labels_seen"]), follower, keys, PROBE_TIMEOUT_S)
    print(f"  trainer restore after SIGKILL: {out}", file=sys.stderr)
    return out


@dataclass
class StandbyTrainer:
    """``python -m app trainer`` alone (as docker-compose's trainer service runs it), another WORKER_ID and
    DATA_DIR: it stands by in the lease's group while the worker's child holds the lease."""

    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return int(self.env["TRAINER_WEB_PORT"])

    def start(self) -> None:
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app", "trainer"],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def wait_standby(self, timeout_s: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"the standby trainer exited with {self.process.returncode}; see {self.log_path}")
            status = trainer_status(self.port)
            if status and status.get("ready"):
                return time.monotonic() - started
            time.sleep(0.2)
        raise RuntimeError(f"the standby trainer was not ready within {timeout_s:g} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 30)


def _takeover_probe(
    bootstrap: str, worker: WorkerProcess, child_port: int, standby: StandbyTrainer,
    follower: TrainerTopicsFollower, probes: list[SimulatedTransaction], ready_timeout_s: float,
) -> dict[str, Any]:  # fmt: skip
    """A standby trainer joins the lease's group; the worker whose child holds the lease is SIGKILLed (its child dies
    with it): how long until the standby holds the lease and learns. The worker is started again afterwards (its
    child then stands by: the sticky assignor leaves the lease where it is)."""
    standby.start()
    out: dict[str, Any] = {"standby_ready_s": standby.wait_standby(ready_timeout_s)}
    _probe_decided(bootstrap, worker, probes)
    before = _labels_settled(child_port, PROBE_TIMEOUT_S)
    keys = [tx.tx_id.encode() for tx in probes]
    follower.watch(keys)
    worker.kill()  # the child dies with it (PR_SET_PDEATHSIG)
    killed_at = time.monotonic()
    _probe_labels(bootstrap, probes)
    out.update(_watch_trainer(standby.port, None, killed_at, int(before["labels_seen"]), follower, keys,
                              PROBE_TIMEOUT_S))  # fmt: skip
    out["session_timeout_ms"] = int(worker.env.get("SESSION_TIMEOUT_MS", "10000"))
    assert standby.process is not None
    out["standby_rss_bytes"] = psutil.Process(standby.process.pid).memory_info().rss
    out["standby_peak_rss_bytes"] = peak_rss_bytes(standby.process.pid)
    print(f"  trainer takeover after its owner's SIGKILL: {out}", file=sys.stderr)
    worker.start()
    out["worker_ready_after_s"] = worker.wait_ready(ready_timeout_s)
    return out


def run_size(scale: float, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One size from a fresh broker to its held rate; the broker and the worker are stopped at the end."""
    customers, terminals, days = size_of(scale, args.days)
    held_n = int(args.held_rate * args.held_s)
    print(f"== {scale:g}x: {customers:,} customers, {terminals:,} terminals, {days} days", file=sys.stderr)
    started = time.monotonic()
    config = SimulatorConfig(
        n_customers=customers, n_terminals=terminals, n_days=days + 2 + held_n // customers, seed=args.seed
    )
    with_trainer = not getattr(args, "no_trainer", False)
    probes_n = 2 * PROBES if with_trainer else 0
    # held on the first worker, the trainer's probes, then held on the replacement
    txs, held_txs = split_traffic(simulate(config), days, 2 * held_n + probes_n)
    probes = held_txs[held_n : held_n + probes_n]
    held_txs = held_txs[:held_n] + held_txs[held_n + probes_n :]
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
        "TRAINER_WEB_PORT": str(free_port()),  # the child's /status at a known port, whichever child it is
        **dict(item.split("=", 1) for item in getattr(args, "worker_env", [])),
    }
    worker = WorkerProcess(env, here / "worker.log")
    standby = StandbyTrainer(
        {**env, "WORKER_ID": "trainer-2", "DATA_DIR": str(here / "trainer-2"), "TRAINER_WEB_PORT": str(free_port()),
         **dict(item.split("=", 1) for item in getattr(args, "standby_env", []) or [])},
        here / "trainer-2.log",
    )  # fmt: skip
    follower = TrainerTopicsFollower(bootstrap) if with_trainer else None
    sampler: RssSampler | None = None
    try:
        worker.start()
        result["first_start_ready_s"] = worker.wait_ready(args.ready_timeout_s)
        if follower is not None:
            follower.start()
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
        trainer_steady = [rss for t, rss in sampler.trainer_samples if t >= quiet_from]
        result["rss"] = {
            "steady_bytes": int(statistics.median(steady)),
            "peak_bytes": max(sampler.finish(), peak_rss_bytes(worker.pid)),
            "trace": [(round(t - worker.started_at, 1), rss) for t, rss in sampler.samples[::20]],
        }
        if with_trainer and sampler.trainer_pid is not None:
            trainer_peak = max(rss for _, rss in sampler.trainer_samples)
            try:
                trainer_peak = max(trainer_peak, peak_rss_bytes(sampler.trainer_pid))
            except OSError:
                pass
            result["trainer"] = {
                "rss": {
                    "steady_bytes": int(statistics.median(trainer_steady)),
                    "peak_bytes": trainer_peak,
                    "pid": sampler.trainer_pid,
                    "trace": [(round(t - worker.started_at, 1), rss) for t, rss in sampler.trainer_samples[::20]],
                },
                "status": trainer_status(int(env["TRAINER_WEB_PORT"])),
            }
            # the worker alone: what the decision path holds
            result["rss"]["worker_steady_bytes"] = (
                result["rss"]["steady_bytes"] - result["trainer"]["rss"]["steady_bytes"]
            )
        sampler = None
        result["metrics"] = _gauges(worker)
        pause_s = getattr(args, "pause_s", 0.0)
        if pause_s > 0:  # the idle worker held for an inspection from outside (smaps, py-spy, gdb)
            print(f"  worker pid {worker.pid} idle: paused {pause_s:.0f} s for inspection", file=sys.stderr)
            time.sleep(pause_s)
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
        if follower is not None and "trainer" in result:
            port = int(env["TRAINER_WEB_PORT"])
            trainer = result["trainer"]
            trainer["restore"] = _restore_probe(bootstrap, worker, port, follower, probes[:PROBES])
            trainer["takeover"] = _takeover_probe(bootstrap, worker, port, standby, follower, probes[PROBES:],
                                                  args.ready_timeout_s)  # fmt: skip
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
        if follower is not None:
            buckets = follower.finish()
            interval_s = float(env.get("MODEL_PUBLISH_INTERVAL_S", "30"))
            result.setdefault("trainer", {})["published"] = published_summary(buckets, interval_s)
            if follower.error is not None:
                result["trainer"]["published"]["error"] = repr(follower.error)
        standby.stop()
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
