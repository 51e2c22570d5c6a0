"""Fixtures: a real Kafka broker for the session and factories for workers and unique names.

The broker comes from, in this order: ``KAFKA_BOOTSTRAP_SERVERS`` when set; testcontainers when a Docker
engine answers; otherwise ``scripts/kafka_local.py`` (Apache Kafka from Maven Central, run with the machine's
Java). A test that needs a broker and cannot get one fails with the reason; it is never skipped.

With pytest-xdist (``make test`` runs ``-n 2``) the workers share one ``kafka_local.py`` broker: the first worker
that needs it starts it under a file lock in a folder the controller made for this run (an exclusive test, before
its turn: the other workers go on meanwhile), the others read its address there, the last one to finish stops it,
and the controller stops one a crashed worker left behind. Every test names its own topics and groups
(``unique_name``), so tests on different workers never meet on the broker.
"""

from __future__ import annotations

import fcntl
import functools
import importlib.util
import json
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
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from local_processes import free_port  # noqa: E402


@functools.cache
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


def _start_local_broker() -> tuple[str, Path]:
    """A ``kafka_local.py`` broker on free ports with its data in a new temp folder: (bootstrap, data dir)."""
    kafka_local = _load_kafka_local()
    port, controller_port = free_port(), free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="kafka-test-")) / "data"
    try:
        return kafka_local.start(port=port, controller_port=controller_port, data_dir=data_dir), data_dir
    except Exception:
        shutil.rmtree(data_dir.parent, ignore_errors=True)
        raise


def _stop_local_broker(data_dir: Path) -> None:
    """Stop it and delete its data. Its data goes, so no clean shutdown is waited for (that takes about 10 s)."""
    _load_kafka_local().stop(data_dir=data_dir, timeout_s=1.0)
    shutil.rmtree(data_dir.parent, ignore_errors=True)


# --- pytest-xdist: one broker for all workers, and tests that run alone ------------------------------------------

RUN_DIR = "fraud_stream_run_dir"  # key, in each xdist worker's workerinput, of the folder this run's workers share
_run_dir_key = pytest.StashKey[Path]()
_turn_key = pytest.StashKey["_Turn"]()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:  # xdist's hook, on the controller
    """Give every xdist worker this run's shared folder (made on the first worker's setup)."""
    stash = node.config.stash
    if _run_dir_key not in stash:
        stash[_run_dir_key] = Path(tempfile.mkdtemp(prefix="fraud-stream-xdist-"))
    node.workerinput[RUN_DIR] = str(stash[_run_dir_key])


def pytest_unconfigure(config: pytest.Config) -> None:
    """On the xdist controller, after every worker ended: stop a broker a crashed worker left, drop the folder."""
    run_dir = config.stash.get(_run_dir_key, None)
    if run_dir is None:
        return
    with _file_lock(run_dir / "broker.lock"):
        state = _read_shared_state(run_dir)
        if state.get("data_dir"):
            _stop_local_broker(Path(state["data_dir"]))
    shutil.rmtree(run_dir, ignore_errors=True)


def _worker_run_dir(config: pytest.Config) -> Path | None:
    """This run's shared folder on an xdist worker; None without xdist workers."""
    workerinput = getattr(config, "workerinput", None)
    return Path(workerinput[RUN_DIR]) if workerinput is not None and RUN_DIR in workerinput else None


def _is_exclusive(item: pytest.Item | None) -> bool:
    return item is not None and item.get_closest_marker("exclusive") is not None


def _is_timing(item: pytest.Item) -> bool:
    return _is_exclusive(item) or item.get_closest_marker("timing") is not None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On xdist workers, the ``exclusive`` tests first, then the other ``timing`` tests, then the rest as collected
    (every worker sorts alike: xdist wants the same list from each). The first worker's first batch holds them
    all: the exclusive ones run back to back while the other workers wait once, at the start. ``make test``
    schedules with ``--dist worksteal``, so the plain tests queued behind them are taken by the other workers."""
    if _worker_run_dir(config) is not None:
        items.sort(key=_run_order)  # stable: each class keeps its collected order


def _run_order(item: pytest.Item) -> int:
    exclusive = item.get_closest_marker("exclusive")
    if exclusive is not None:
        return 1 if exclusive.kwargs.get("last") else 0
    return 2 if _is_timing(item) else 3


class _Turn:
    """A test's turn to run among this run's xdist workers, with ``flock`` on files in the run's folder: any number
    of tests share the slot, an ``exclusive`` test holds it alone, and a ``timing`` test (exclusive ones too) also
    holds the timing lock, so no two of those run at once. A worker takes the gate, then the slot, and lets the
    gate go: a waiting exclusive test holds the gate, so no new shared turn starts before it."""

    def __init__(self, run_dir: Path, exclusive: bool, timing: bool) -> None:
        self.exclusive = exclusive
        self._files = [(run_dir / name).open("a") for name in ("gate.lock", "slot.lock", "timing.lock")]
        gate, slot, timing_lock = self._files
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(slot, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        if timing:
            fcntl.flock(timing_lock, fcntl.LOCK_EX)

    def end(self) -> None:
        for handle in self._files:
            handle.close()  # closing the last descriptor of a file releases its flock


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Under xdist, each test runs in a turn (``_Turn``), its setup and teardown too (and so any broker a fixture
    starts or stops), outside pytest-timeout's clock: the wait for a turn is no part of a test's time. A worker
    keeps an exclusive turn from one exclusive test to the next."""
    run_dir = _worker_run_dir(item.config)
    if run_dir is None:
        return (yield)
    turn = item.config.stash.get(_turn_key, None)
    if turn is None:
        if _is_exclusive(item) and "kafka_bootstrap" in getattr(item, "fixturenames", ()):
            _start_shared_broker_early(run_dir)
        turn = item.config.stash[_turn_key] = _Turn(run_dir, _is_exclusive(item), _is_timing(item))
    try:
        return (yield)
    finally:
        if not (turn.exclusive and _is_exclusive(nextitem)):
            turn.end()
            del item.config.stash[_turn_key]


def _file_lock(path: Path) -> AbstractContextManager[None]:
    """The lock scripts/kafka_local.py takes on its Maven cache: one holder at a time across processes."""
    return _load_kafka_local()._locked(path)  # type: ignore[no-any-return]


def _read_shared_state(run_dir: Path) -> dict[str, Any]:
    try:
        state = json.loads((run_dir / "broker.json").read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_shared_state(run_dir: Path, state: dict[str, Any]) -> None:
    temp = run_dir / "broker.json.tmp"
    temp.write_text(json.dumps(state))
    temp.replace(run_dir / "broker.json")


def _start_shared_broker_early(run_dir: Path) -> None:
    """Before an exclusive test's turn: the run's broker, if no worker started it yet, so that its start is not
    spent while the other workers wait for the turn to end. A failure is left for ``kafka_bootstrap`` to report."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or _docker_reachable():
        return  # the fixture's other sources: nothing to start here
    with _file_lock(run_dir / "broker.lock"):
        state = _read_shared_state(run_dir)
        if state.get("bootstrap") or state.get("error"):
            return
        try:
            bootstrap, data_dir = _start_local_broker()
        except Exception as exc:
            _write_shared_state(run_dir, {"error": str(exc)})
            return
        _write_shared_state(run_dir, {"bootstrap": bootstrap, "data_dir": str(data_dir), "users": []})


@contextmanager
def _shared_local_broker(shared: Path, worker_id: str) -> Iterator[str]:
    """The run's one broker: started by the first worker that asks, stopped by the last one that used it."""
    with _file_lock(shared / "broker.lock"):
        state = _read_shared_state(shared)
        if state.get("error"):  # one worker tried and failed: the others fail with its reason at once
            pytest.fail(f"no Kafka broker: scripts/kafka_local.py could not start one: {state['error']}",
                        pytrace=False)  # fmt: skip
        if not state.get("bootstrap"):
            try:
                bootstrap, data_dir = _start_local_broker()
            except Exception as exc:  # the reason must reach the test report
                _write_shared_state(shared, {"error": str(exc)})
                pytest.fail(f"no Kafka broker: scripts/kafka_local.py could not start one: {exc}", pytrace=False)
            state = {"bootstrap": bootstrap, "data_dir": str(data_dir), "users": []}
        state["users"] = [*state["users"], worker_id]
        _write_shared_state(shared, state)
    try:
        yield state["bootstrap"]
    finally:
        with _file_lock(shared / "broker.lock"):
            state = _read_shared_state(shared)
            users = [user for user in state.get("users", []) if user != worker_id]
            if users:
                _write_shared_state(shared, {**state, "users": users})
            elif state.get("data_dir"):
                _stop_local_broker(Path(state["data_dir"]))
                (shared / "broker.json").unlink(missing_ok=True)


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> Iterator[str]:
    """Bootstrap servers of a real Apache Kafka broker, for the whole test session (all xdist workers)."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    if _docker_reachable():  # a container per xdist worker
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    run_dir = _worker_run_dir(request.config)
    if run_dir is not None:
        with _shared_local_broker(run_dir, request.config.workerinput["workerid"]) as bootstrap:  # type: ignore[attr-defined]
            yield bootstrap
        return
    try:
        bootstrap, data_dir = _start_local_broker()
    except Exception as exc:  # the reason must reach the test report
        pytest.fail(f"no Kafka broker: scripts/kafka_local.py could not start one: {exc}", pytrace=False)
    try:
        yield bootstrap
    finally:
        _stop_local_broker(data_dir)


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
        self.wait_stopped()

    def wait_stopped(self) -> None:
        """Wait for the SIGTERM sent to take effect; SIGKILL after 30 s."""
        assert self.process is not None
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def worker_factory(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers with unique topics (``start=False``: made, for the test to start later); every one is stopped
    at the end of the test."""
    started: list[WorkerProcess] = []

    def make(partitions: int = 2, start: bool = True, **overrides: str) -> WorkerProcess:
        topics = {
            "TRANSACTIONS_TOPIC": unique_name("transactions"),
            "LABELS_TOPIC": unique_name("labels"),
            "PREDICTIONS_TOPIC": unique_name("predictions"),
            "HEALTH_TOPIC": unique_name("health"),
            "TRANSACTIONS_DLQ_TOPIC": unique_name("transactions-dlq"),
            "LABELS_DLQ_TOPIC": unique_name("labels-dlq"),
            "MODELS_TOPIC": unique_name("models"),
            "MODEL_EVENTS_TOPIC": unique_name("model-events"),
            "RULES_TOPIC": unique_name("rules"),
            "RULE_LISTS_TOPIC": unique_name("rule-lists"),
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
        return worker.start() if start else worker

    yield make
    running = [w for w in started if w.process is not None and w.process.poll() is None]
    for worker in running:  # SIGTERM to all, then wait: each takes a second or two to commit and leave its group
        assert worker.process is not None
        worker.process.send_signal(signal.SIGTERM)
    for worker in running:
        worker.wait_stopped()
