"""The orchestrator of a fault run: broker, workers, publisher and reader; supervises the workers while the
faults are applied on schedule, waits (with labels) for the trainer to learn what it can, then collects what the
report needs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import shlex
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kafka_local
from local_processes import free_port

from faultrun.cluster import REPO_ROOT, SetupError, Worker, create_topics
from faultrun.faults import apply_fault, note_ready, probe_trainer
from faultrun.files import read_json
from faultrun.measurement import PREDICTION, read_outputs, read_published
from faultrun.publisher import publisher_main
from faultrun.reader import read_audit, reader_main, scan_input
from faultrun.report import build_report
from faultrun.scenarios import fault_schedule, trailing_labels

DAY_S = 86400.0


@dataclass
class ChaosRun:
    args: argparse.Namespace
    run_id: str = ""
    work: Path = Path()
    bootstrap: str = ""
    own_broker: bool = False
    broker_port: int = 0
    controller_port: int = 0
    topics: dict[str, str] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    t0: float = 0.0
    faults: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    unexpected_exits: list[dict[str, Any]] = field(default_factory=list)
    stopping: list[tuple[Worker, float, dict[str, Any]]] = field(default_factory=list)
    publisher: Any = None
    reader: Any = None
    last_progress: float = 0.0
    last_trainer_probe: float = 0.0
    trainer_probes: list[tuple[float, str | None]] = field(default_factory=list)  # (when, the worker that trained)
    learning_wait: dict[str, Any] = field(default_factory=dict)
    trainer_end: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.run_id = self.args.run_id or uuid.uuid4().hex[:8]
        default = REPO_ROOT / ".kafka" / f"chaos-{self.run_id}"
        self.work = Path(self.args.work_dir).resolve() if self.args.work_dir else default
        prefix = f"chaos-{self.run_id}"
        self.topics = {
            "TRANSACTIONS_TOPIC": f"{prefix}-transactions",
            "LABELS_TOPIC": f"{prefix}-labels",
            "PREDICTIONS_TOPIC": f"{prefix}-predictions",
            "HEALTH_TOPIC": f"{prefix}-health",
            "TRANSACTIONS_DLQ_TOPIC": f"{prefix}-transactions-dlq",
            "LABELS_DLQ_TOPIC": f"{prefix}-labels-dlq",
        }

    @property
    def broker_data(self) -> Path:
        return self.work / "kafka" / "data"

    def rel(self, at: float | None) -> float | None:
        return None if at is None else round(at - self.t0, 3)

    def event(self, what: str, at: float | None = None, **details: Any) -> None:
        at = time.time() if at is None else at
        entry = {"at_s": self.rel(at) if self.t0 else None, "what": what, **details}
        self.timeline.append(entry)
        stamp = f"t+{at - self.t0:7.1f}s" if self.t0 else "setup    "
        extra = " ".join(f"{k}={v}" for k, v in details.items())
        print(f"[{stamp}] {what} {extra}".rstrip(), flush=True)

    # --- setup ---

    def start_broker(self) -> None:
        if self.args.bootstrap_servers:
            self.bootstrap = self.args.bootstrap_servers
            return
        self.own_broker = True
        self.broker_port = self.args.broker_port or free_port()
        self.controller_port = free_port()
        while self.controller_port == self.broker_port:
            self.controller_port = free_port()
        self.bootstrap = kafka_local.start(port=self.broker_port, controller_port=self.controller_port,
                                           data_dir=self.broker_data, wipe=True)  # fmt: skip
        self.event("broker started", bootstrap=self.bootstrap, data_dir=str(self.broker_data))

    def create_topics(self) -> None:
        asyncio.run(create_topics(self.bootstrap, self.topics, self.args.partitions))

    def new_worker(self) -> Worker:
        index = len(self.workers)
        env = {
            **os.environ,
            **self.topics,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "APP_ID": f"chaos-{self.run_id}",
            "WORKER_ID": f"worker-{index}",
            "TOPIC_PARTITIONS": str(self.args.partitions),
            "DATA_DIR": str(self.work / f"worker-{index}"),
            "WEB_PORT": str(free_port()),
            "GRPC_PORT": str(free_port()),
            "WEB_BIND": "127.0.0.1",
            "LOG_LEVEL": self.args.worker_log_level,
        }
        if self.args.labels:
            env["MODEL_PUBLISH_INTERVAL_S"] = str(self.args.model_publish_interval_s)
        for item in self.args.worker_env:
            name, _, value = item.partition("=")
            env[name] = value
        command = shlex.split(self.args.worker_cmd) if self.args.worker_cmd else [sys.executable, "-m", "app"]
        cwd = Path(self.args.worker_cwd).resolve() if self.args.worker_cwd else REPO_ROOT
        worker = Worker(f"worker-{index}", env, command, self.work / f"worker-{index}.log", cwd)
        self.workers.append(worker)
        return worker

    def wait_ready(self, worker: Worker, timeout_s: float) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if not worker.alive():
                raise SetupError(f"{worker.name} exited with {worker.process and worker.process.returncode} "
                                 f"before it was ready; see {worker.log_path}")  # fmt: skip
            if worker.probe_ready():
                return
            time.sleep(0.1)
        raise SetupError(f"{worker.name} not ready after {timeout_s:g} s; see {worker.log_path}")

    def spawn(self, target: Any, cfg: dict[str, Any], marker: str, timeout_s: float) -> Any:
        ctx = multiprocessing.get_context("spawn")
        process = ctx.Process(target=target, args=(cfg,), name=marker.split(".")[0], daemon=True)
        process.start()
        deadline = time.time() + timeout_s
        while not (self.work / marker).exists():
            if not process.is_alive():
                raise SetupError(f"{process.name} exited with {process.exitcode}; see {self.work}/{process.name}.log")
            if time.time() > deadline:
                raise SetupError(f"{process.name} did not start within {timeout_s:g} s")
            time.sleep(0.05)
        return process

    # --- while running ---

    def supervise(self) -> None:
        """Restart workers that died on their own, note readiness, finish scale-downs, print progress."""
        now = time.time()
        for worker in self.workers:
            if worker.wanted and not worker.alive():
                code = worker.process.returncode if worker.process else None
                self.unexpected_exits.append({"worker": worker.name, "at_s": self.rel(now), "returncode": code})
                self.event("worker exited unexpectedly, restarting", worker=worker.name, returncode=code)
                worker.restarts += 1
                worker.start()
            if worker.wanted and worker.ready_at is None and worker.probe_ready():
                assert worker.ready_at is not None
                self.event("ready", worker=worker.name, after_s=round(worker.ready_at - worker.awaited_since, 2))
                note_ready(self, worker)
        for entry in list(self.stopping):
            worker, deadline, fault = entry
            if not worker.alive():
                fault["exited_after_s"] = round(time.time() - fault["_at"], 3)
                fault["returncode"] = worker.process.returncode if worker.process else None
                self.event("stopped", worker=worker.name, returncode=fault["returncode"])
                self.stopping.remove(entry)
            elif now > deadline:
                assert worker.process is not None
                worker.process.kill()
                fault["sigkilled_after_timeout"] = True
                self.event("did not stop after SIGTERM: SIGKILL", worker=worker.name)
        watch = self.args.labels or any(f.get("_awaiting_trainer") for f in self.faults)
        if watch and now - self.last_trainer_probe >= 1.0:
            self.last_trainer_probe = now
            probe_trainer(self)
        if now - self.last_progress >= self.args.progress_s:
            self.last_progress = now
            self.print_progress()

    def print_progress(self) -> None:
        pub = read_json(self.work / "publisher.status.json") or {}
        rd = read_json(self.work / "reader.status.json") or {}
        states = ", ".join(f"{w.name} {'ready' if w.ready_at else 'starting'}" for w in self.workers if w.wanted)
        behind = pub.get("behind_s", 0.0)
        lag = f" (publisher {behind:.1f} s behind)" if behind > 1 else ""
        labels = f" (+{pub.get('labels_acked', 0)} labels)" if self.args.labels else ""
        retries = pub.get("retries", 0) + pub.get("resends", 0)
        print(f"[t+{time.time() - self.t0:7.1f}s] published {pub.get('acked', 0)}/{self.args.transactions}"
              f"{labels}{lag}, retries {retries}; outputs {rd.get('outputs', 0)}, "
              f"with outcome {rd.get('with_outcome', 0)}/{rd.get('published_seen', 0)}; {states}",
              flush=True)  # fmt: skip

    def wait_all_ready(self, timeout_s: float) -> float:
        """Supervise until every wanted worker answered ready (or ``timeout_s``); the seconds waited."""
        started = time.time()
        while time.time() - started < timeout_s and any(w.ready_at is None for w in self.running()):
            self.sleep_until(time.time() + 0.1)
        return round(time.time() - started, 3)

    def sleep_until(self, at: float) -> None:
        while time.time() < at:
            self.supervise()
            time.sleep(min(0.1, max(0.0, at - time.time())))

    def running(self) -> list[Worker]:
        return [w for w in self.workers if w.wanted]

    # --- the whole run ---

    def execute(self) -> dict[str, Any]:
        a = self.args
        self.work.mkdir(parents=True, exist_ok=True)
        for stale in ("published.tsv", "outputs.tsv", "publisher.started.json", "publisher.done.json",
                      "publisher.status.json", "reader.started.json", "reader.done.json", "reader.status.json",
                      "reader.stop", "audit.tsv", "publisher.hold"):  # fmt: skip
            (self.work / stale).unlink(missing_ok=True)
        publish_s = publishing_s(a)
        schedule = fault_schedule(publish_s, a.kills, a.broker_restart, a.scale, a.pauses, a.trainer_kills,
                                  a.trainer_process_kills)  # fmt: skip
        labels = f" and their labels {a.label_delay_days:g} days later" if a.labels else ""
        print(f"chaos run {self.run_id}: {a.transactions} messages at {a.rate_tps:g} tx/s{labels} "
              f"(~{publish_s:.0f} s), {len(schedule)} faults; work dir {self.work}", flush=True)  # fmt: skip
        self.start_broker()
        self.create_topics()
        first = self.new_worker()
        first.start()
        self.event("worker started", worker=first.name, web_port=first.env["WEB_PORT"])
        self.wait_ready(first, a.ready_timeout_s)
        self.event("ready", worker=first.name, after_s=round((first.ready_at or 0) - first.started_at, 2))

        common = {"work": str(self.work), "bootstrap": self.bootstrap, "run_id": self.run_id}
        self.reader = self.spawn(reader_main, {**common, "predictions_topic": self.topics["PREDICTIONS_TOPIC"],
                                               "dlq_topic": self.topics["TRANSACTIONS_DLQ_TOPIC"],
                                               "settle_s": a.settle_s, "drain_timeout_s": a.drain_timeout_s},
                                 "reader.started.json", 60)  # fmt: skip
        request_timeout_ms = int(max(60.0, 3 * a.broker_down_s + 90.0) * 1000)
        self.publisher = self.spawn(publisher_main, {**common, "topic": self.topics["TRANSACTIONS_TOPIC"],
                                                     "labels_topic": self.topics["LABELS_TOPIC"],
                                                     "label_delay_s": a.label_delay_days * DAY_S if a.labels
                                                     else None,
                                                     "n": a.transactions, "rate_tps": a.rate_tps, "seed": a.seed,
                                                     "bad_share": a.bad_share,
                                                     "request_timeout_ms": request_timeout_ms},
                                    "publisher.started.json", 120)  # fmt: skip
        self.t0 = float(read_json(self.work / "publisher.started.json")["t0"])
        self.last_progress = self.t0
        self.event("publishing started")

        kills = 0
        held_s = 0.0  # publishing held so far (--fault-after-ready): the faults' places in the stream move with it
        for fault in schedule:
            self.sleep_until(self.t0 + held_s + fault.planned_at_s)
            waited_s = held = None
            if a.fault_after_ready:
                # A worker still starting holds the fault, and the publishing with it: on a slow machine the faults
                # keep their places in the stream instead of piling up after the last transaction, unmeasured.
                hold = self.work / "publisher.hold"
                if any(w.ready_at is None for w in self.running()):
                    hold.touch()
                waited_s = self.wait_all_ready(a.ready_timeout_s)
                if hold.exists():
                    hold.unlink()
                    held = waited_s
                    held_s += waited_s
            if not self.publisher.is_alive():
                self.event("publishing ended before this fault", fault=fault.kind)
            apply_fault(self, fault, kills)
            if waited_s is not None:
                self.faults[-1]["waited_for_ready_s"] = waited_s
                self.faults[-1]["publishing_held_s"] = held or 0.0
            kills += fault.kind == "sigkill"

        while self.publisher.is_alive():
            self.sleep_until(time.time() + 0.2)
        if self.publisher.exitcode != 0:
            raise SetupError(f"the publisher exited with {self.publisher.exitcode}; see {self.work}/publisher.log")
        done = read_json(self.work / "publisher.done.json") or {}
        self.event("publishing ended", acked=done.get("count"), labels=done.get("labels"), retries=done.get("retries"),
                   resends=done.get("resends"), acked_by_s=round(done.get("acked_done", 0) - self.t0, 1))  # fmt: skip

        hard_deadline = time.time() + a.drain_timeout_s + a.settle_s + 120
        while self.reader.is_alive():
            if time.time() > hard_deadline:
                (self.work / "reader.stop").touch()
                self.reader.join(30)
                break
            self.sleep_until(time.time() + 0.2)
        reader_done = read_json(self.work / "reader.done.json") or {}
        reader_done["exitcode"] = self.reader.exitcode  # a reader that died read only part of the outputs
        self.event("reading ended", complete=reader_done.get("complete"), outputs=reader_done.get("outputs"))
        if a.labels:
            self.wait_for_learning()
        for worker in self.workers:
            worker.stop()
        topic_ids = asyncio.run(scan_input(self.bootstrap, self.topics["TRANSACTIONS_TOPIC"], 300.0))
        label_ids = asyncio.run(scan_input(self.bootstrap, self.topics["LABELS_TOPIC"], 300.0)) if a.labels else None
        return build_report(self, done, reader_done, topic_ids, label_ids)

    def wait_for_learning(self) -> None:
        """Decisions settled: read the trainer's learning audit until every labelled, decided transaction has a
        record (then ``--learn-settle-s`` more, for a pair learned twice), or nothing new came for
        ``--learn-idle-s``, or ``--learn-timeout-s``; the workers stay supervised meanwhile. Then the trainer's own
        counters, from the worker that trains."""
        a = self.args
        published = read_published(self.work / "published.tsv")
        predicted = {o.id for o in read_outputs(self.work / "outputs.tsv") if o.kind == PREDICTION}
        expected = {p.id for p in published if p.label is not None and p.id in predicted}
        self.event("waiting for the trainer", labelled_decided=len(expected))
        last = [time.time()]

        def tick(records: int, covered: int) -> None:
            self.supervise()
            if time.time() - last[0] >= a.progress_s:
                last[0] = time.time()
                self.event("learning", audited=f"{covered}/{len(expected)}", audit_records=records)

        topic = f"{self.workers[0].env['APP_ID']}-learning-audit"
        self.learning_wait = asyncio.run(read_audit(self.bootstrap, topic, expected, self.work / "audit.tsv", tick,
                                                    a.learn_settle_s, a.learn_idle_s, a.learn_timeout_s))  # fmt: skip
        self.event("learning read", **self.learning_wait)
        owner = next((w for w in self.running() if w.trainer_active()), None)
        samples = owner.metrics() if owner is not None else None
        wanted = ("fraud_labels_total", "fraud_learning_entries", "fraud_trainer_labels_watermark_lag_seconds",
                  "fraud_model_labels_learned")  # fmt: skip
        self.trainer_end = {"worker": owner.name if owner else None,
                            **{k: v for k, v in (samples or {}).items() if k.startswith(wanted)}}  # fmt: skip

    def cleanup(self) -> None:
        if self.work.exists():
            (self.work / "reader.stop").touch()  # a reader still running ends its loop
        for process in (self.publisher, self.reader):
            if process is not None and process.is_alive():
                process.join(5)
                if process.is_alive():
                    process.terminate()
                    process.join(10)
        for worker in self.workers:
            with contextlib.suppress(Exception):
                worker.stop()
        if self.own_broker:
            with contextlib.suppress(Exception):
                kafka_local.stop(self.broker_data)
        if not self.args.keep_data:
            shutil.rmtree(self.broker_data, ignore_errors=True)
            for worker in self.workers:
                shutil.rmtree(worker.env["DATA_DIR"], ignore_errors=True)


def publishing_s(args: argparse.Namespace) -> float:
    """The planned publishing time: the messages of the transactions topic at ``--rate-tps``, then (with labels) the
    labels due after the last transaction at the same rate; 0 for as fast as possible."""
    if args.rate_tps <= 0:
        return 0.0
    slots = args.transactions
    if args.labels:
        slots += trailing_labels(args.transactions, args.seed, args.bad_share, args.label_delay_days * DAY_S)
    return slots / args.rate_tps
