"""The trainer in its own process on a real broker: a worker's child (its pid is not the worker's, its metrics come
through the worker's ``/metrics``), started again when SIGKILLed and learning on, gone with a SIGKILLed worker,
fenced when paused past its session timeout, and ``python -m app trainer`` alone for workers without one."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from app.kafka.clients import consume, produce
from app.serialization import dumps, loads
from tests.cases import transaction
from tests.conftest import REPO_ROOT, WorkerProcess, free_port
from tests.watch import metric as _metric
from tests.watch import wait as _wait

pytestmark = pytest.mark.kafka

WorkerFactory = Callable[..., WorkerProcess]


def _trainer_process(worker: WorkerProcess) -> dict[str, Any]:
    """What the worker says of its trainer child (the operator page's document, from the health event)."""
    document: dict[str, Any] = loads(worker.http_get("/status.json"))
    return dict(document["models"]["trainer_process"])


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        result: dict[str, Any] = loads(response.read())
    return result


def _labels_seen(worker: WorkerProcess) -> int:
    view = loads(worker.http_get("/models"))
    header = next((v for v in view["versions"] if v["version"] == view["champion"]), {})
    return int(header.get("labels_seen", -1))


def _publish(bootstrap: str, worker: WorkerProcess, prefix: str, start: int, n: int) -> None:
    """``n`` transactions and their labels (every seventh a fraud)."""
    txs = [transaction(i, tx_id=f"{prefix}-{i}", customer_id=f"c-{i % 17}") for i in range(start, start + n)]
    produce(bootstrap, worker.topics["TRANSACTIONS_TOPIC"], [(str(t["customer_id"]).encode(), dumps(t)) for t in txs])
    produce(bootstrap, worker.topics["LABELS_TOPIC"], [
        (str(t["tx_id"]).encode(), dumps({"tx_id": t["tx_id"], "is_fraud": i % 7 == 0,
                                          "timestamp": "2018-04-08T00:00:00Z"}))
        for i, t in zip(range(start, start + n), txs, strict=True)])  # fmt: skip


def _audit(bootstrap: str, worker: WorkerProcess, more_than: int) -> Counter[str]:
    records = consume(bootstrap, f"{worker.env['APP_ID']}-learning-audit", lambda rs: len(rs) > more_than,
                      timeout_s=5)  # fmt: skip
    return Counter(loads(r.value or b"")["tx_id"] for r in records)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_trainer_runs_in_a_child_process_seen_through_the_worker_restarted_when_killed(
    worker_factory: WorkerFactory, kafka_bootstrap: str
) -> None:
    worker = worker_factory(partitions=2)
    worker.wait_ready()
    assert worker.process is not None
    _wait(lambda: _metric(worker, "fraud_trainer_active") == 1, 60, "the child trains (through the worker's /metrics)")
    assert _metric(worker, "fraud_trainer_process_up") == 1
    # The worker's view of its child is refreshed by polling the child's /status: it may say standby a moment longer.
    _wait(lambda: _trainer_process(worker)["role"] == "active", 30, "the worker sees its child active")
    child = _trainer_process(worker)
    assert child["pid"] is not None and child["pid"] != worker.process.pid and child["role"] == "active"
    status = _get_json(f"http://127.0.0.1:{child['port']}/status")
    assert status["pid"] == child["pid"] and status["role"] == "active"
    process = psutil.Process(child["pid"])
    assert process.ppid() == worker.process.pid and process.cmdline()[-3:] == ["-m", "app", "trainer"]
    # Training, so at a lower priority than the worker (app.learning.process.lower_priority, once it trains).
    assert process.nice() == psutil.Process(worker.process.pid).nice() + 10
    # One family per name in the worker's exposition, the child's appended (a duplicate breaks Prometheus' scrape).
    text = worker.http_get("/metrics").decode()
    types = [line for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types)) and "# TYPE fraud_labels_total counter" in types
    assert "fraud_trainer_process_resident_memory_bytes" in text

    _publish(kafka_bootstrap, worker, "k", 0, 60)
    _wait(lambda: _labels_seen(worker) == 60, 60, "60 labels learned by the child")
    first = child["pid"]
    os.kill(first, signal.SIGKILL)
    _wait(lambda: _trainer_process(worker)["pid"] not in (None, first) and _trainer_process(worker)["role"] == "active",
          60, "the worker starts another trainer process, which takes the lease")  # fmt: skip
    again = _trainer_process(worker)
    assert again["starts"] == 2
    _publish(kafka_bootstrap, worker, "k", 60, 60)
    _wait(lambda: _labels_seen(worker) == 120, 60, "learning goes on in the new trainer process")
    time.sleep(2)  # anything learned twice would show in a later version
    assert _labels_seen(worker) == 120
    learned = _audit(kafka_bootstrap, worker, 120)
    assert set(learned) == {f"k-{i}" for i in range(120)} and set(learned.values()) == {1}
    assert worker.process.poll() is None  # the worker never stopped deciding

    # SIGTERM: the worker stops its trainer process too.
    trainer_pid = again["pid"]
    worker.stop()
    assert worker.process.returncode == 0
    assert _gone(trainer_pid)


def test_a_sigkilled_worker_leaves_no_trainer_process_behind(worker_factory: WorkerFactory) -> None:
    worker = worker_factory(partitions=1)
    worker.wait_ready()
    _wait(lambda: _trainer_process(worker)["pid"] is not None, 60, "the trainer process started")
    pid = _trainer_process(worker)["pid"]
    assert not _gone(pid)
    worker.kill()
    deadline = time.monotonic() + 10
    while not _gone(pid):
        assert time.monotonic() < deadline, f"trainer process {pid} outlived its SIGKILLed worker"
        time.sleep(0.1)


@pytest.mark.timing  # the paused trainer's lease moves within the session timeout while the test waits
def test_a_trainer_process_paused_past_its_session_is_fenced_and_publishes_nothing(
    worker_factory: WorkerFactory, kafka_bootstrap: str
) -> None:
    first = worker_factory(partitions=2, SESSION_TIMEOUT_MS="6000")
    shared = {k: v for k, v in first.env.items() if k.endswith("_TOPIC") or k in ("APP_ID", "SESSION_TIMEOUT_MS")}
    second = worker_factory(partitions=2, **shared)
    first.wait_ready()
    second.wait_ready()
    workers = [first, second]
    _wait(lambda: sum(_metric(w, "fraud_trainer_active") == 1 for w in workers) == 1, 60, "one trainer")
    owner = next(w for w in workers if _metric(w, "fraud_trainer_active") == 1)
    other = second if owner is first else first
    _publish(kafka_bootstrap, first, "z", 0, 50)
    _wait(lambda: _labels_seen(owner) == 50, 60, "50 labels learned")
    paused = _trainer_process(owner)["pid"]
    log_size = owner.log_path.stat().st_size
    other_log_size = other.log_path.stat().st_size
    os.kill(paused, signal.SIGSTOP)
    try:
        assert owner.process is not None and owner.process.poll() is None
        _wait(lambda: _metric(other, "fraud_trainer_active") == 1, 60, "the other worker's trainer takes the lease")
        # The standby kept its label store caught up (every TRAINER_STANDBY_REFRESH_S, 5 s, less than the 6 s session
        # timeout the lease waits for): the takeover resumes it and replays the last records at most, where a cold
        # store is rebuilt from the changelog's start (a record per label learned, 50 here).
        with other.log_path.open("rb") as log:
            log.seek(other_log_size)
            takeover = log.read().decode(errors="replace")
        restored = re.findall(
            r"trainer label store: (\w+) from changelog offset (\d+), (\d+) records replayed", takeover
        )
        assert restored, takeover[-3000:]
        action, from_offset, replayed = restored[-1]
        assert action == "resume" and int(from_offset) > 0 and int(replayed) < 25, restored
        _publish(kafka_bootstrap, first, "z", 50, 50)  # learned by the new owner while the old one is stopped
        _wait(lambda: _labels_seen(other) == 100, 60, "100 labels learned by the new owner")
    finally:
        os.kill(paused, signal.SIGCONT)
    # Resumed, its session is fenced at its next publication (nothing it learned while stopped is published); it
    # then stands by, or takes the lease back in a new session restored from the last published state (the sticky
    # assignor may hand the partition back to the member that claimed it first): either way it answers again.
    _wait(lambda: _trainer_process(owner)["up"] and _trainer_process(owner)["role"] in ("standby", "active"), 60,
          "the resumed trainer answers again")  # fmt: skip
    _publish(kafka_bootstrap, first, "z", 100, 20)
    _wait(lambda: _labels_seen(other) == 120, 60, "120 labels learned")
    time.sleep(3)  # a version the zombie published would show as more labels, or pairs audited twice
    assert _labels_seen(other) == _labels_seen(owner) == 120  # whichever trains now, every label once
    learned = _audit(kafka_bootstrap, first, 120)
    assert set(learned) == {f"z-{i}" for i in range(120)} and set(learned.values()) == {1}
    with owner.log_path.open("rb") as log:
        log.seek(log_size)
        after = log.read().decode(errors="replace")
    assert "trainer fenced" in after or "trainer lease released" in after, after[-3000:]
    assert _trainer_process(owner)["pid"] == paused  # the same process, resumed: not restarted


def test_a_trainer_run_alone_learns_for_workers_without_one(
    worker_factory: WorkerFactory, kafka_bootstrap: str, tmp_path: Path
) -> None:
    worker = worker_factory(partitions=2, TRAINER_ENABLED="false")
    worker.wait_ready()
    port = free_port()
    env = {**worker.env, "WORKER_ID": "trainer-alone", "TRAINER_WEB_PORT": str(port), "TRAINER_WEB_BIND": "127.0.0.1"}
    log_path = tmp_path / "trainer.log"
    with log_path.open("wb") as log:
        trainer = subprocess.Popen([sys.executable, "-m", "app", "trainer"], cwd=REPO_ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    try:
        _wait(lambda: _get_json(f"http://127.0.0.1:{port}/ready")["ready"], 60, "the trainer process is ready")
        # /ready is 200 for a standby too (the lease's group joined): alone, it takes the lease a moment later.
        _wait(lambda: _get_json(f"http://127.0.0.1:{port}/status")["role"] == "active", 30, "the lone trainer leads")
        status = _get_json(f"http://127.0.0.1:{port}/status")
        assert status["role"] == "active" and status["pid"] == trainer.pid
        assert _metric(worker, "fraud_trainer_process_up") == 0  # the worker started none
        assert "fraud_trainer_active" not in worker.http_get("/metrics").decode()
        assert _trainer_process(worker)["pid"] is None
        _publish(kafka_bootstrap, worker, "a", 0, 40)
        _wait(lambda: _labels_seen(worker) == 40, 60, "the worker serves what the trainer process learned")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        assert re.search(r'^fraud_labels_total\{outcome="learned"\} 40\.0$', text, re.M), text
        assert "fraud_transactions_total" not in text
        trainer.send_signal(signal.SIGTERM)
        assert trainer.wait(timeout=20) == 0
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait(10)
    output = log_path.read_text(errors="replace")
    assert "trainer process" in output and "stopped in" in output, output[-3000:]


def test_the_trainer_process_refuses_an_invalid_setting_with_exit_status_78(kafka_bootstrap: str) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "OUTPUT_COMPRESSION": "rot13"}
    result = subprocess.run([sys.executable, "-m", "app", "trainer"], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 78, result.stderr
    assert "configuration error" in result.stderr


def test_the_trainer_refuses_a_feature_log_kept_shorter_than_the_labels_can_come(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """``predictions`` kept 7 days with a 120-day horizon: exit 78 and the line that fixes it (the other tests' trainers
    start on the topic as ``ensure_topics`` creates it, kept long enough)."""
    predictions = unique_name("predictions")
    created = asyncio.run(_create(kafka_bootstrap, predictions, 7 * 86_400_000))
    assert created == [predictions]
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "APP_ID": unique_name("fraud"),
           "PREDICTIONS_TOPIC": predictions, "LABEL_HORIZON_S": str(120 * 86400), "TRAINER_WEB_PORT": "0"}  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "app", "trainer"], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=90)  # fmt: skip
    assert result.returncode == 78, result.stderr[-2000:]
    assert "keeps records 7 days" in result.stderr and "needs 128" in result.stderr, result.stderr[-2000:]
    assert f"--entity-name {predictions} --add-config retention.ms=11059200000" in result.stderr


async def _create(bootstrap: str, topic: str, retention_ms: int) -> list[str]:
    from app.kafka.clients import Connection
    from app.kafka.topics import TopicSpec, create_topics

    return await create_topics(Connection(bootstrap), [TopicSpec(topic, 1, {"retention.ms": str(retention_ms)})])
