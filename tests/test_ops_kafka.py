"""The operator's commands as an operator runs them (``python -m app <command>`` subprocesses) on a real broker."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from app.kafka.clients import at_least, consume, produce
from app.kafka.topics import ensure_topics
from app.serialization import dumps, loads
from app.settings import load
from tests.cases import transaction
from tests.conftest import REPO_ROOT, WorkerProcess

pytestmark = pytest.mark.kafka


def run_app(env: dict[str, str], *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout_s)  # fmt: skip


def ok(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_every_command_on_a_running_worker_and_a_fixed_dead_letter_replayed_and_decided(
    worker_factory: Callable[..., WorkerProcess], kafka_bootstrap: str, tmp_path: Path
) -> None:
    worker = worker_factory(partitions=2)  # `python -m app`: the worker is still the default
    env, topics = worker.env, worker.topics
    worker.wait_ready()
    bad = dumps(transaction(3, amount=-5.0))
    produce(kafka_bootstrap, topics["TRANSACTIONS_TOPIC"],
            [(b"c-0", dumps(transaction(0))), (b"c-1", dumps(transaction(1))), (b"bad", bad),
             (b"c-2", dumps(transaction(2)))])  # fmt: skip
    consume(kafka_bootstrap, topics["PREDICTIONS_TOPIC"], at_least(3))
    consume(kafka_bootstrap, topics["TRANSACTIONS_DLQ_TOPIC"], at_least(1))
    consume(kafka_bootstrap, topics["HEALTH_TOPIC"], at_least(1))

    lines = ok(run_app(env, "predictions", "--from-beginning"))
    assert sorted(line.split()[1] for line in lines) == ["tx-0", "tx-1", "tx-2"]
    assert all(" model " in line and " p=" in line and "\x1b[" not in line for line in lines)
    assert ok(run_app(env, "predictions", "--from-beginning", "--min-probability", "1.01")) == []
    decided = [loads(line) for line in ok(run_app(env, "predictions", "--from-beginning", "--json", "-n", "2"))]
    assert len(decided) == 2 and all("reasons" in p for p in decided)

    health = ok(run_app(env, "health", "--from-beginning", "--limit", "1", "--no-color"))
    assert len(health) == 1 and health[0].split()[1] == "worker-0"
    assert health[0].split()[2] in ("healthy", "degraded", "unhealthy", "stale")
    coloured = ok(run_app(env, "health", "--from-beginning", "--limit", "1", "--color", "always"))
    assert coloured[0].startswith("\x1b[") and coloured[0].endswith("\x1b[0m")

    letters = ok(run_app(env, "dlq", "--from-beginning"))
    assert len(letters) == 1
    assert "invalid_amount" in letters[0] and f"from {topics['TRANSACTIONS_TOPIC']} " in letters[0]
    assert f"key bad text {bad.decode()}" in letters[0]
    assert ok(run_app(env, "dlq", "--from-beginning", "--which", "labels")) == []
    assert ok(run_app(env, "dlq", "--last", "1")) == letters  # the last message, not the last offset (a marker)

    # The edit step: export, a refused replay of the unedited line, a dry run, then the replay of the fixed one.
    exported = ok(run_app(env, "dlq", "list", "--from-beginning", "--json"))
    still_bad = tmp_path / "still-bad.jsonl"
    still_bad.write_text("\n".join(exported) + "\n")
    refused = run_app(env, "dlq", "replay", "--file", str(still_bad))
    assert refused.returncode == 1 and "refused file line 1: invalid_amount" in refused.stderr
    record = loads(exported[0])
    record["value"] = dumps(transaction(3, amount=5.0)).decode()
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text(dumps(record).decode() + "\n")
    dry = ok(run_app(env, "dlq", "replay", "--file", str(fixed), "--dry-run"))
    assert dry[0].startswith(f"would publish file line 1 -> {topics['TRANSACTIONS_TOPIC']} key c-3 ")
    inputs = consume(kafka_bootstrap, topics["TRANSACTIONS_TOPIC"], lambda rs: False, 2)
    assert len(inputs) == 4  # neither the refused replay nor the dry run published anything
    replayed = ok(run_app(env, "dlq", "replay", "--file", str(fixed)))
    assert replayed[-1] == "replayed 1 message(s), 0 refused"

    predictions = consume(kafka_bootstrap, topics["PREDICTIONS_TOPIC"], at_least(4))
    by_tx = {loads(r.value or b"")["tx_id"]: loads(r.value or b"") for r in predictions}
    assert by_tx["tx-3"]["features"]["amount"] == 5.0  # the fixed message was decided
    inputs = consume(kafka_bootstrap, topics["TRANSACTIONS_TOPIC"], at_least(5))
    # Records of two partitions come in no set order: the fixed message is there once, with its key.
    published = [(r.key, loads(r.value or b"")) for r in inputs]
    assert published.count((b"c-3", transaction(3, amount=5.0))) == 1, published

    # lag: the decisions group commits its offsets once a second, for this view
    deadline = time.monotonic() + 30
    rows: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        rows = [loads(line) for line in ok(run_app(env, "lag", "--json"))]
        decisions = [r for r in rows if r["group"] == f"{env['APP_ID']}-decisions"]
        if sum(int(str(r["committed"] or 0)) for r in decisions) == 5:
            break
        time.sleep(1)
    assert {(r["topic"], r["partition"]) for r in decisions} == {(topics["TRANSACTIONS_TOPIC"], p) for p in (0, 1)}
    assert sum(int(str(r["lag"])) for r in decisions) == 0
    assert sum(int(str(r["log_end"])) for r in decisions) == 5
    # The trainer: no group, its positions from its last published state (it has read the 5 predictions by then).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = [loads(line) for line in ok(run_app(env, "lag", "--json"))]
        trainer = [r for r in rows if r["group"] == f"{env['APP_ID']}-trainer"]
        predicted = [r for r in trainer if r["topic"] == topics["PREDICTIONS_TOPIC"]]
        if predicted and all(r["committed"] is not None and int(str(r["lag"])) <= 1 for r in predicted):
            break
        time.sleep(1)
    assert {r["topic"] for r in trainer} == {topics["PREDICTIONS_TOPIC"], topics["LABELS_TOPIC"]}
    # Caught up: a transactional topic's last offset is a commit marker, so a caught-up reader shows a lag of 1.
    assert all(r["committed"] is not None and int(str(r["lag"])) <= 1 for r in predicted), trainer
    assert sum(int(str(r["committed"])) for r in predicted) >= 4, trainer  # four predictions read
    table = ok(run_app(env, "lag"))
    assert table[0].split() == ["GROUP", "TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG"]
    assert f"{env['APP_ID']}-decisions: total lag 0" in table[-2]


def test_replay_of_dead_letters_selected_by_code_republishes_their_original_bytes(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TOPIC_PARTITIONS": "1",
           **{name: unique_name(name.lower().replace("_", "-")) for name in
              ("TRANSACTIONS_TOPIC", "LABELS_TOPIC", "PREDICTIONS_TOPIC", "HEALTH_TOPIC", "TRANSACTIONS_DLQ_TOPIC",
               "LABELS_DLQ_TOPIC")}}  # fmt: skip
    settings = load(env)
    asyncio.run(ensure_topics(settings))
    good = dumps(transaction(1))

    def letter(error: str, raw: bytes) -> bytes:
        raw_b64 = base64.b64encode(raw).decode()
        return dumps({"error": error, "reason": "r", "topic": settings.transactions_topic, "partition": 0,
                      "offset": 0, "raw": raw_b64, "received_at": "2026-01-01T00:00:00Z"})  # fmt: skip

    produce(kafka_bootstrap, settings.transactions_dlq_topic,
            [(b"k", letter("invalid_json", b"{")), (b"k", letter("scoring_error", good))])  # fmt: skip

    usage = run_app(env, "dlq", "replay")
    assert usage.returncode == 1 and usage.stderr.startswith("error: choose what to replay")
    lines = ok(run_app(env, "dlq", "replay", "--code", "scoring_error"))
    assert lines[0].startswith(
        f"published {settings.transactions_dlq_topic} 0:1 -> {settings.transactions_topic} key c-1"
    )
    inputs = consume(kafka_bootstrap, settings.transactions_topic, at_least(1), 10)
    assert [(r.key, r.value) for r in inputs] == [(b"c-1", good)]
    refused = run_app(env, "dlq", "replay", "--offset", "0:0")
    assert refused.returncode == 1 and "refused transactions-dlq" in refused.stderr and "invalid_json" in refused.stderr
