"""The worker's features on the real broker equal the brute-force reference: with 2 workers over 4 partitions
(customer state by customer, terminal state by terminal, joined by a repartition), and across a SIGKILL.

The simulated run is published before the workers start, as a replay would be: every partition has a backlog,
so the event-time alignment is exercised for real. Labels go first: a label that arrives early must still count
only from its own time (some are due after the 7-day terminal delay, so that matters).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from datetime import timedelta

import pytest

from app.feature_engine import CUSTOMER_FEATURE_NAMES, TERMINAL_FEATURE_NAMES
from app.kafka_clients import Record, consume, produce
from app.serialization import dumps, loads
from app.simulator import SimulatedTransaction, SimulatorConfig, label_of, simulate, to_wire
from tests.conftest import WorkerProcess
from tests.reference import Event, LabelArrival, Tx, reference

pytestmark = pytest.mark.kafka

WorkerFactory = Callable[..., WorkerProcess]
CHECKED = ("amount", *CUSTOMER_FEATURE_NAMES, *TERMINAL_FEATURE_NAMES)
# Held transactions are never forced out early here: a forced release would be a test failure, not noise.
ALIGNED = {"ALIGN_MAX_WAIT_S": "600", "TOPIC_PARTITIONS": "4"}


def simulated_run(seed: int) -> tuple[list[SimulatedTransaction], dict[str, float]]:
    """A small run and, per transaction, when its label is known: 1 to 10 days later (whole seconds, as on
    the wire)."""
    txs = simulate(SimulatorConfig(n_customers=150, n_terminals=300, n_days=40, seed=seed))
    rng = random.Random(seed)
    known_s = {tx.tx_id: tx.timestamp.timestamp() + rng.randint(86400, 10 * 86400) for tx in txs}
    return txs, known_s


def expected(txs: list[SimulatedTransaction], known_s: dict[str, float]) -> dict[str, dict[str, float]]:
    """The reference in the order the worker must reproduce: event time, ties by tx_id; a label is with the
    worker right after its transaction (it was published first), and counts from its own time."""
    events: list[Event] = []
    for tx in sorted(txs, key=lambda t: (t.timestamp, t.tx_id)):
        t = tx.timestamp.timestamp()
        events.append(Tx(tx.tx_id, t, tx.customer_id, tx.terminal_id, tx.amount))
        events.append(LabelArrival(tx.tx_id, t, tx.terminal_id, tx.is_fraud, known_s[tx.tx_id]))
    rows = dict(reference(events))
    for tx in txs:
        rows[tx.tx_id]["amount"] = tx.amount
    return rows


def publish(bootstrap: str, worker: WorkerProcess, txs: list[SimulatedTransaction], known_s: dict[str, float]) -> None:
    def label(tx: SimulatedTransaction) -> bytes:
        return dumps(label_of(tx, tx.timestamp + timedelta(seconds=known_s[tx.tx_id] - tx.timestamp.timestamp())))

    produce(bootstrap, worker.topics["LABELS_TOPIC"], [(tx.tx_id.encode(), label(tx)) for tx in txs])
    ordered = sorted(txs, key=lambda t: (t.timestamp, t.tx_id))
    transactions = [(t.customer_id.encode(), dumps(to_wire(t))) for t in ordered]
    produce(bootstrap, worker.topics["TRANSACTIONS_TOPIC"], transactions)


def every_tx_id(n: int) -> Callable[[list[Record]], bool]:
    return lambda records: len({r.key for r in records}) >= n


def metric(worker: WorkerProcess, name: str) -> float:
    total = 0.0
    for match in re.finditer(rb"^" + name.encode() + rb"(?:\{[^}]*\})? (\S+)$", worker.http_get("/metrics"), re.M):
        total += float(match.group(1))
    return total


def assert_features_equal_reference(records: list[Record], want: dict[str, dict[str, float]]) -> None:
    """Every prediction (repeats included) carries exactly the reference's features."""
    assert {r.key.decode() for r in records if r.key} == set(want)
    mismatches = []
    for record in records:
        prediction = loads(record.value)
        wanted = want[prediction["tx_id"]]
        for name in CHECKED:
            if prediction["features"][name] != pytest.approx(wanted[name], rel=1e-9, abs=1e-9):
                mismatches.append((prediction["tx_id"], name, prediction["features"][name], wanted[name]))
    assert not mismatches, f"{len(mismatches)} feature values differ, first: {mismatches[:5]}"
    assert any(w["terminal_risk_30day_delay"] > 0 for w in want.values())  # risk was exercised
    assert any(w["terminal_nb_tx_1hour"] > 1 for w in want.values())  # and bursts at a terminal


def same_deployment(first: WorkerProcess, **overrides: str) -> dict[str, str]:
    shared = {k: v for k, v in first.env.items() if k.endswith("_TOPIC") or k == "APP_ID"}
    return {**shared, **ALIGNED, **overrides}


def test_two_workers_on_four_partitions_give_the_reference_features(
    worker_factory: WorkerFactory, kafka_bootstrap: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    txs, known_s = simulated_run(seed=11)
    want = expected(txs, known_s)
    first = worker_factory(partitions=4, DATA_DIR=str(tmp_path / "a"), WORKER_ID="a", **ALIGNED)
    first.wait_ready()  # creates the topics; then the whole run is published before anything is read
    publish(kafka_bootstrap, first, txs, known_s)
    second = worker_factory(partitions=4, **same_deployment(first, DATA_DIR=str(tmp_path / "b"), WORKER_ID="b"))
    second.wait_ready()
    records = consume(kafka_bootstrap, first.topics["PREDICTIONS_TOPIC"], every_tx_id(len(txs)), timeout_s=300)
    assert_features_equal_reference(records, want)
    for worker in (first, second):
        assert metric(worker, "fraud_transactions_total") > 0, f"worker {worker.env['WORKER_ID']} scored nothing"
        assert metric(worker, "fraud_alignment_forced_releases_total") == 0
        assert worker.process is not None and worker.process.poll() is None


def test_sigkill_mid_stream_then_restart_gives_the_reference_features_and_every_prediction(
    worker_factory: WorkerFactory, kafka_bootstrap: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    txs, known_s = simulated_run(seed=12)
    want = expected(txs, known_s)
    data_dir = str(tmp_path / "worker")
    worker = worker_factory(partitions=4, DATA_DIR=data_dir, **ALIGNED)
    worker.wait_ready()
    publish(kafka_bootstrap, worker, txs, known_s)
    consume(kafka_bootstrap, worker.topics["PREDICTIONS_TOPIC"], every_tx_id(len(txs) // 3), timeout_s=300)
    worker.kill()

    restarted = worker_factory(partitions=4, **same_deployment(worker, DATA_DIR=data_dir))
    restarted.wait_ready()
    records = consume(kafka_bootstrap, worker.topics["PREDICTIONS_TOPIC"], every_tx_id(len(txs)), timeout_s=300)
    assert len({r.key for r in records}) == len(txs)
    assert_features_equal_reference(records, want)
    # The crash left work done but not committed: it was read again and recognised, not counted twice.
    assert metric(restarted, "fraud_duplicate_transactions_total") > 0
    assert metric(restarted, "fraud_alignment_forced_releases_total") == 0
