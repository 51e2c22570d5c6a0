"""Fixtures: a real Kafka broker for the session and factories for workers and unique names.

The broker comes from, in this order: ``KAFKA_BOOTSTRAP_SERVERS`` when set; testcontainers when a Docker
engine answers; otherwise ``scripts/kafka_local.py`` (Apache Kafka from Maven Central, run with the machine's
Java). A test that needs a broker and cannot get one fails with the reason; it is never skipped.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from local_processes import free_port  # noqa: E402


def _docker_reachable() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _load_kafka_local():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("kafka_local", REPO_ROOT / "scripts" / "kafka_local.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real Apache Kafka broker, for the whole test session."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    if _docker_reachable():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    kafka_local = _load_kafka_local()
    port, controller_port = free_port(), free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="kafka-test-")) / "data"
    try:
        bootstrap = kafka_local.start(port=port, controller_port=controller_port, data_dir=data_dir)
    except Exception as exc:  # the reason must reach the test report
        pytest.fail(f"no Kafka broker: scripts/kafka_local.py could not start one: {exc}", pytrace=False)
    try:
        yield bootstrap
    finally:
        kafka_local.stop(data_dir=data_dir)
        shutil.rmtree(data_dir.parent, ignore_errors=True)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Topic and group names no other test shares."""
    suffix = uuid.uuid4().hex[:8]
    test = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]

    def make(base: str) -> str:
        return f"{base}-{test}-{suffix}"

    return make


@dataclass
class WorkerProcess:
    """A ``python -m app`` worker in its own process, with its own topics, group, port and data dir."""

    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    topics: dict[str, str] = field(default_factory=dict)

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.env['WEB_PORT']}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.env['GRPC_PORT']}"

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        return self

    def http_status(self, path: str) -> int | None:
        try:
            with urllib.request.urlopen(self.web_url + path, timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return None

    def http_get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.web_url + path, timeout=5) as response:
            return bytes(response.read())

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"worker exited with {self.process.returncode}:\n{self.log_tail()}", pytrace=False)
            if self.http_status("/ready") == 200:
                return
            time.sleep(0.25)
        pytest.fail(f"worker not ready after {timeout_s} s:\n{self.log_tail()}", pytrace=False)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flush, no commit - a crash."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def worker_factory(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers with unique topics; every one is stopped at the end of the test."""
    started: list[WorkerProcess] = []

    def make(partitions: int = 2, **overrides: str) -> WorkerProcess:
        topics = {
            "TRANSACTIONS_TOPIC": unique_name("transactions"),
            "LABELS_TOPIC": unique_name("labels"),
            "PREDICTIONS_TOPIC": unique_name("predictions"),
            "HEALTH_TOPIC": unique_name("health"),
            "TRANSACTIONS_DLQ_TOPIC": unique_name("transactions-dlq"),
            "LABELS_DLQ_TOPIC": unique_name("labels-dlq"),
            "MODELS_TOPIC": unique_name("models"),
            "MODEL_EVENTS_TOPIC": unique_name("model-events"),
        }
        index = len(started)
        env = {
            **os.environ,
            **topics,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "APP_ID": unique_name("fraud"),
            "WORKER_ID": f"worker-{index}",
            "TOPIC_PARTITIONS": str(partitions),
            "DATA_DIR": str(tmp_path / f"worker-{index}"),
            "WEB_PORT": str(free_port()),
            "GRPC_PORT": str(free_port()),
            "WEB_BIND": "127.0.0.1",
            "HEALTH_INTERVAL_S": "2",
            "MODEL_PUBLISH_INTERVAL_S": "1",
            "LOG_LEVEL": "info",
            **overrides,
        }
        worker = WorkerProcess(env=env, log_path=tmp_path / f"worker-{index}.log", topics=topics)
        started.append(worker)
        return worker.start()

    yield make
    for worker in started:
        worker.stop()
