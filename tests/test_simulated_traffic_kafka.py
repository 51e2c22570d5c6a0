"""10,000 simulated transactions through the worker on a real broker: exactly one valid prediction each."""

from __future__ import annotations

import time

import pytest

from app.kafka.clients import at_least, consume, produce
from app.serialization import dumps, loads
from lab.simulator import SimulatorConfig, simulate, to_wire
from tests.conftest import WorkerProcess
from tests.contract import assert_valid

pytestmark = pytest.mark.kafka

N = 10_000


def test_ten_thousand_simulated_transactions_give_ten_thousand_predictions(
    worker_factory: type[WorkerProcess], kafka_bootstrap: str
) -> None:
    transactions = simulate(SimulatorConfig(n_customers=500, n_terminals=1000, n_days=20, seed=11))[:N]
    assert len(transactions) == N
    worker = worker_factory(partitions=4)
    worker.wait_ready()
    produce(
        kafka_bootstrap,
        worker.topics["TRANSACTIONS_TOPIC"],
        [(tx.customer_id.encode(), dumps(to_wire(tx))) for tx in transactions],
    )
    records = consume(kafka_bootstrap, worker.topics["PREDICTIONS_TOPIC"], at_least(N), timeout_s=180)
    time.sleep(2)  # anything extra (a duplicate) would arrive now
    records = consume(kafka_bootstrap, worker.topics["PREDICTIONS_TOPIC"], at_least(N + 1), timeout_s=5)
    assert len(records) == N
    predictions = [loads(r.value or b"") for r in records]
    by_id = {p["tx_id"]: p for p in predictions}
    assert set(by_id) == {tx.tx_id for tx in transactions}
    for record, prediction in zip(records, predictions, strict=True):
        assert record.key == prediction["tx_id"].encode()
        assert_valid("predictions.schema.json", prediction)
    for tx in transactions[:: N // 100]:
        prediction = by_id[tx.tx_id]
        assert (prediction["customer_id"], prediction["terminal_id"]) == (tx.customer_id, tx.terminal_id)
    dead = consume(kafka_bootstrap, worker.topics["TRANSACTIONS_DLQ_TOPIC"], at_least(1), timeout_s=3)
    assert dead == []
