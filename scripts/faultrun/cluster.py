"""The workers a fault run starts, kills and stops (each a ``python -m app`` process), and the run's topics."""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil
from local_processes import http_status, scrape, stop_process

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Worker:
    """One ``python -m app`` worker; its name, data dir and web port stay the same across restarts."""

    name: str
    env: dict[str, str]
    command: list[str]
    log_path: Path
    cwd: Path = REPO_ROOT
    process: subprocess.Popen[bytes] | None = None
    wanted: bool = False  # should be running: an exit that nobody asked for is unexpected
    started_at: float = 0.0
    ready_at: float | None = None
    awaited_since: float = 0.0  # its start, or the broker's return after a restart: readiness is awaited since
    last_probe: float = 0.0
    restarts: int = 0
    paused: bool = False  # SIGSTOPped: it answers nothing, so nobody asks
    decided_before_kills: int = 0  # what its /metrics counted just before each SIGKILL (its counters start again)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['WEB_PORT']}/ready"

    def decided(self, timeout_s: float = 5.0) -> int | None:
        """Transactions it decided (scored or dead-lettered) in committed Kafka transactions since its last start,
        from its ``/metrics``; None when it does not answer."""
        if self.paused:
            return None
        try:
            samples = scrape(self.url.replace("/ready", "/metrics"), timeout_s=timeout_s)
        except OSError:
            return None
        return sum(int(samples.get(f'fraud_transactions_total{{outcome="{o}"}}', 0)) for o in ("scored", "dead_letter"))

    def decided_in_all(self) -> int | None:
        """:meth:`decided` plus what it had counted before each SIGKILL (read just before it: a lower bound), so a
        worker killed and restarted still shows what it decided under its name; None when it does not answer."""
        now = self.decided()
        return None if now is None else self.decided_before_kills + now

    def metrics(self, timeout_s: float = 2.0) -> dict[str, float] | None:
        """Its ``/metrics`` samples; None when it does not answer (or is paused)."""
        if self.paused or not self.alive():
            return None
        try:
            return scrape(self.url.replace("/ready", "/metrics"), timeout_s=timeout_s)
        except OSError:
            return None

    def trainer_active(self) -> bool | None:
        """Whether it holds the trainer lease and trains (``fraud_trainer_active`` 1); None when it does not answer."""
        samples = self.metrics()
        return None if samples is None else samples.get("fraud_trainer_active", 0.0) == 1.0

    def trainer_pid(self) -> int | None:
        """The pid of its trainer process (the ``python -m app trainer`` child it started: the trainer runs
        there, not on the worker's event loop); None without one."""
        if not self.alive():
            return None
        assert self.process is not None
        try:
            children = psutil.Process(self.process.pid).children()
        except psutil.Error:
            return None
        for child in children:
            try:
                if child.cmdline()[-2:] == ["app", "trainer"]:
                    return int(child.pid)
            except psutil.Error:
                continue
        return None

    def start(self) -> None:
        with self.log_path.open("ab") as log_file:
            log_file.write(f"\n=== chaos: start {self.name} at {datetime.now(UTC).isoformat()} ===\n".encode())
            log_file.flush()
            self.process = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=log_file,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
        self.wanted = True
        self.started_at = time.time()
        self.await_ready(since=self.started_at)

    def await_ready(self, since: float) -> None:
        """Forget the last 200 of ``/ready``: readiness is awaited again from ``since``."""
        self.ready_at = None
        self.awaited_since = since
        self.last_probe = 0.0

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def probe_ready(self, min_interval_s: float = 0.25) -> bool:
        """Poll GET /ready (at most every min_interval_s); remembers the first 200 since readiness was awaited."""
        if self.ready_at is not None:
            return True
        now = time.time()
        if now - self.last_probe < min_interval_s or not self.alive():
            return False
        self.last_probe = now
        ok = http_status(self.url, timeout_s=0.5) == 200
        if ok:
            self.ready_at = time.time()
        return ok

    def kill(self) -> float:
        """SIGKILL: no shutdown hook, no flush, no commit. Returns when it was sent."""
        assert self.process is not None
        if self.alive():
            self.decided_before_kills += self.decided(timeout_s=1.0) or 0
        at = time.time()
        self.process.kill()
        self.process.wait(timeout=30)
        return at

    def terminate(self) -> float:
        assert self.process is not None
        self.wanted = False
        at = time.time()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return at

    def stop(self, timeout_s: float = 30.0) -> None:
        self.wanted = False
        if self.process is not None:
            stop_process(self.process, timeout_s)


class SetupError(RuntimeError):
    """The run could not be set up (broker, worker readiness, helper processes)."""


async def create_topics(bootstrap: str, topics: dict[str, str], partitions: int) -> None:
    """The contract's topics (configs from topics/manifest.json) under the run's names, before anyone publishes:
    a topic auto-created by the publisher would get one partition."""
    from app.kafka.clients import Connection
    from app.kafka.topics import create_topics as create_kafka_topics
    from app.kafka.topics import manifest_specs

    await create_kafka_topics(Connection(bootstrap), manifest_specs(topics, partitions))
