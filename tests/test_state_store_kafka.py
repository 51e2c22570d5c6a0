"""The decision path's local store on the real broker: a SIGKILLed worker restarted on the same disk replays only
the changelog's tail, and a deleted store is rebuilt from the changelog; every transaction is decided once and the
customer windows (what the store holds) stay equal to the reference. (A replacement on an empty disk:
tests/test_terminal_checkpoint_kafka.py.)

The terminal half is not compared here: it comes from the terminal store and feed, not from this store;
tests/test_features_kafka.py (across a SIGKILL) and tests/test_terminal_checkpoint_kafka.py (an empty disk) compare
it with the reference."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from app.features.engine import CUSTOMER_FEATURE_NAMES
from app.kafka.clients import Connection, at_least, committed_reader, consume
from app.kafka.topics import changelog_topic
from app.serialization import loads
from app.settings import load
from tests.conftest import WorkerProcess
from tests.reference import approx_equal
from tests.test_features_kafka import (
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
PARTITIONS = 2
CUSTOMER_SIDE = ("amount", *CUSTOMER_FEATURE_NAMES)


def assert_customer_features_equal(records: list, want: dict[str, dict[str, float]]) -> None:  # type: ignore[type-arg]
    predictions = [loads(r.value) for r in records]
    assert sorted(p["tx_id"] for p in predictions) == sorted(want), "each tx_id exactly once"
    mismatches = [(p["tx_id"], name, p["features"][name], want[p["tx_id"]][name]) for p in predictions
                  for name in CUSTOMER_SIDE
                  if not approx_equal(p["features"][name], want[p["tx_id"]][name])]  # fmt: skip
    assert not mismatches, f"{len(mismatches)} customer feature values differ, first: {mismatches[:5]}"


def changelog_end(bootstrap: str, worker: WorkerProcess) -> int:
    """The changelog's committed end, summed over its partitions (records and commit markers)."""

    async def ends() -> int:
        consumer = committed_reader(Connection(bootstrap, {}))
        await consumer.start()
        try:
            topic = changelog_topic(load({"APP_ID": worker.env["APP_ID"]}))
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(tps)
            return sum((await consumer.end_offsets(tps)).values())
        finally:
            await consumer.stop()

    return asyncio.run(ends())


def all_predictions(bootstrap: str, worker: WorkerProcess, n: int) -> list:  # type: ignore[type-arg]
    records = consume(bootstrap, worker.topics["PREDICTIONS_TOPIC"], every_tx_id(n), timeout_s=120)
    time.sleep(2)  # a duplicate would be committed by now
    return consume(bootstrap, worker.topics["PREDICTIONS_TOPIC"], at_least(len(records) + 1), timeout_s=5)


def test_a_sigkilled_worker_restarted_on_the_same_disk_replays_only_the_changelog_tail(
    worker_factory: WorkerFactory, kafka_bootstrap: str, tmp_path: Path
) -> None:
    txs, known_s = simulated_run(seed=13)
    want = expected(txs, known_s)
    data_dir = str(tmp_path / "worker")
    worker = worker_factory(partitions=PARTITIONS, DATA_DIR=data_dir, STATE_BACKEND="rocksdb")
    worker.wait_ready()
    assert metric(worker, "fraud_changelog_records_replayed_total") == 0  # a new deployment: nothing to replay
    publish_labels(kafka_bootstrap, worker, txs, known_s)
    publisher = publish_live(kafka_bootstrap, worker, txs)
    consume(kafka_bootstrap, worker.topics["PREDICTIONS_TOPIC"], every_tx_id(len(txs) // 2), timeout_s=120)
    worker.kill()
    written = changelog_end(kafka_bootstrap, worker)
    assert (Path(data_dir) / "state" / "customers" / "0" / "CURRENT").exists()
    restarted = worker_factory(
        partitions=PARTITIONS,
        **same_deployment(worker, DATA_DIR=data_dir, WORKER_ID="worker-0", STATE_BACKEND="rocksdb"),
    )
    restarted.wait_ready()
    replayed = metric(restarted, "fraud_changelog_records_replayed_total")
    log = restarted.log_path.read_text(errors="replace")
    assert log.count("(resume from changelog offset") == PARTITIONS, restarted.log_tail()
    assert replayed < written / 20, f"replayed {replayed:.0f} of {written} changelog records: not only the tail"
    publisher.join()
    records = all_predictions(kafka_bootstrap, worker, len(txs))
    assert_customer_features_equal(records, want)
    assert metric(restarted, "fraud_transactions_total") > 0
    logging.getLogger(__name__).warning("changelog %d records at the kill; the restart replayed %d", written, replayed)


def test_a_deleted_store_is_rebuilt_from_the_changelog_and_decisions_go_on(
    worker_factory: WorkerFactory, kafka_bootstrap: str, tmp_path: Path
) -> None:
    txs, known_s = simulated_run(seed=14)
    want = expected(txs, known_s)
    data_dir = tmp_path / "worker"
    worker = worker_factory(partitions=PARTITIONS, DATA_DIR=str(data_dir), STATE_BACKEND="rocksdb")
    worker.wait_ready()
    publish_labels(kafka_bootstrap, worker, txs, known_s)
    publisher = publish_live(kafka_bootstrap, worker, txs)
    consume(kafka_bootstrap, worker.topics["PREDICTIONS_TOPIC"], every_tx_id(len(txs) // 2), timeout_s=120)
    worker.stop()
    shutil.rmtree(data_dir / "state" / "customers")
    restarted = worker_factory(
        partitions=PARTITIONS,
        **same_deployment(worker, DATA_DIR=str(data_dir), WORKER_ID="worker-0", STATE_BACKEND="rocksdb"),
    )
    restarted.wait_ready()
    log = restarted.log_path.read_text(errors="replace")
    assert log.count("(rebuild from changelog offset") == PARTITIONS, restarted.log_tail()
    assert metric(restarted, "fraud_changelog_records_replayed_total") > 0
    publisher.join()
    records = all_predictions(kafka_bootstrap, worker, len(txs))
    assert_customer_features_equal(records, want)
    assert (data_dir / "state" / "customers" / "0" / "CURRENT").exists()
