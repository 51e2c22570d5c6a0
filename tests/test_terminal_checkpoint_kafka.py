"""A worker on an empty disk, on the real broker: it starts its terminal aggregates from the Kafka checkpoint (not
from the 40-day terminal log), is ready within the bound, and decides every remaining transaction once with the
reference features."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from app.kafka.clients import at_least, consume
from tests.conftest import WorkerProcess
from tests.test_features_kafka import (
    assert_features_within_reference,
    every_tx_id,
    expected,
    metric,
    publish_labels,
    publish_live,
    same_deployment,
    simulated_run,
)

pytestmark = pytest.mark.kafka

WorkerFactory = Callable[..., WorkerProcess]
# Issue 16's target for a replacement on an empty disk at 10x the simulator (this history is smaller). It keeps its
# WORKER_ID, as a replacement pod keeps its name on a new volume: static membership gives it the partitions at once.
READY_BOUND_S = 30.0


def wait_for_checkpoint(worker: WorkerProcess, after: float, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while metric(worker, "fraud_terminal_checkpoints_total") <= after:
        assert time.monotonic() < deadline, "no terminal checkpoint written"
        time.sleep(0.2)


@pytest.mark.exclusive  # ready within READY_BOUND_S, the feed's 2 s lag, exact delayed terminal features
def test_an_empty_disk_replacement_starts_from_the_checkpoint_and_gives_the_reference_features(
    worker_factory: WorkerFactory, kafka_bootstrap: str, tmp_path: Path
) -> None:
    txs, known_s = simulated_run(seed=15)
    want = expected(txs, known_s)
    settings = {"TERMINAL_CHECKPOINT_INTERVAL_S": "1"}
    worker = worker_factory(partitions=4, DATA_DIR=str(tmp_path / "first"), **settings)
    worker.wait_ready()
    publish_labels(kafka_bootstrap, worker, txs, known_s)
    publisher = publish_live(kafka_bootstrap, worker, txs)
    consume(kafka_bootstrap, worker.topics["PREDICTIONS_TOPIC"], every_tx_id(len(txs) // 2), timeout_s=120)
    wait_for_checkpoint(worker, metric(worker, "fraud_terminal_checkpoints_total"))
    worker.kill()  # mid-stream: its last checkpoint is up to a second old, the logs' tail follows it

    empty = tmp_path / "replacement"
    started = time.monotonic()
    replacement = worker_factory(
        partitions=4, **same_deployment(worker, DATA_DIR=str(empty), WORKER_ID="worker-0", **settings)
    )
    replacement.wait_ready(timeout_s=READY_BOUND_S + 30)
    ready_s = time.monotonic() - started
    assert ready_s <= READY_BOUND_S, f"ready {ready_s:.1f} s after its start on an empty disk"
    assert metric(replacement, 'fraud_terminal_start{source="checkpoint"}') == 1, replacement.log_tail()
    log = replacement.log_path.read_text(errors="replace")
    assert "taken from the checkpoint" in log
    assert log.count("(rebuild from changelog offset 0") == 4, replacement.log_tail()  # the customers: changelog
    publisher.join()
    records = consume(kafka_bootstrap, worker.topics["PREDICTIONS_TOPIC"], every_tx_id(len(txs)), timeout_s=120)
    time.sleep(2)  # a duplicate would be committed by now
    records = consume(kafka_bootstrap, worker.topics["PREDICTIONS_TOPIC"], at_least(len(records) + 1), timeout_s=5)
    assert_features_within_reference(records, txs, want)  # each tx_id exactly once, features as the reference
    assert metric(replacement, "fraud_transactions_total") > 0
    assert (empty / "state" / "terminals" / "0" / "CURRENT").exists()
