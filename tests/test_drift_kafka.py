"""Drift without labels on the real broker: one producer switching to cents degrades the worker's health, naming the
amount; the same traffic without the switch raises nothing; ``python -m app drift`` prints it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from app.kafka.clients import consume, produce
from app.serialization import dumps, loads
from lab.changes import amounts_in_cents
from lab.simulator import SimulatorConfig, simulate, to_wire
from tests.conftest import REPO_ROOT, WorkerProcess

pytestmark = pytest.mark.kafka

# 150 customers over 50 days (about 250 transactions a day): the windows fill for 30 days (37 for the terminals'
# delayed ones), so the reference starts after about 38 days; the change comes 4 days later.
SKIP_ROWS, REFERENCE_ROWS, WINDOW_ROWS = 9500, 1000, 1000
CHANGE_AT = 10_700
DRIFT_ENV = {"TRAINER_ENABLED": "false", "DRIFT_SAMPLE_EVERY": "1", "DRIFT_SKIP_ROWS": str(SKIP_ROWS),
             "DRIFT_REFERENCE_ROWS": str(REFERENCE_ROWS), "DRIFT_WINDOW_ROWS": str(WINDOW_ROWS),
             "HEALTH_INTERVAL_S": "1"}  # fmt: skip


def _health(bootstrap: str, worker: WorkerProcess, until: Callable[[list[dict[str, Any]]], bool]) -> list[Any]:
    records = consume(bootstrap, worker.topics["HEALTH_TOPIC"], lambda rs: until([loads(r.value or b"") for r in rs]),
                      timeout_s=240)  # fmt: skip
    return [loads(r.value or b"") for r in records]


def _judged_after_change(events: list[dict[str, Any]]) -> bool:
    """A window made only of transactions after the change was judged (the last one of the stream, at least)."""
    return any((e.get("drift") or {}).get("rows", 0) >= WINDOW_ROWS // 2 and e.get("transactions", 0) == 0
               for e in events[-3:]) and len(events) > 5  # fmt: skip


def test_amounts_in_cents_degrade_the_health_naming_the_amount_and_the_same_traffic_raises_nothing(
    kafka_bootstrap: str, worker_factory: Callable[..., WorkerProcess]
) -> None:
    txs = simulate(SimulatorConfig(n_customers=150, n_terminals=300, n_days=50, seed=11))
    assert len(txs) > CHANGE_AT + 2 * WINDOW_ROWS
    changed = worker_factory(**DRIFT_ENV)
    # The factory's workers form one deployment (the test's topics); the steady one is a deployment of its own.
    own = {name: f"{topic}-steady" for name, topic in changed.topics.items()}
    steady = worker_factory(**DRIFT_ENV, **own, APP_ID=changed.env["APP_ID"] + "-steady")
    steady.topics = own
    for worker in (changed, steady):
        worker.wait_ready()
    # The producer starts sending cents at CHANGE_AT (the simulator's option, lab/changes.py).
    for worker, traffic in ((changed, amounts_in_cents(txs, CHANGE_AT)), (steady, txs)):
        messages = [(tx.customer_id.encode(), dumps(to_wire(tx))) for tx in traffic]
        produce(kafka_bootstrap, worker.topics["TRANSACTIONS_TOPIC"], messages)

    for worker in (changed, steady):  # every transaction decided, none dead-lettered (cents are valid amounts)
        dead = consume(kafka_bootstrap, worker.topics["TRANSACTIONS_DLQ_TOPIC"], lambda rs: False, timeout_s=2)
        assert not dead, [loads(r.value or b"")["reason"] for r in dead[:3]]
    drifted = _health(kafka_bootstrap, changed, lambda es: any((e.get("drift") or {}).get("status") == "drift"
                                                               for e in es))  # fmt: skip
    event = next(e for e in drifted if (e.get("drift") or {}).get("status") == "drift")
    assert event["status"] == "degraded", event
    (issue,) = [i for i in event["issues"] if i.startswith("drift: ")]
    # what moved is named: the amount and the windows over it, nothing else
    drifted_features = [w["feature"] for w in event["drift"]["worst"] if w["psi"] >= 0.25]
    assert drifted_features and all("amount" in name for name in drifted_features), event["drift"]
    assert drifted_features[0] in issue
    # before the change, the same worker's windows were not drift
    assert all((e.get("drift") or {}).get("status") != "drift" for e in drifted[: drifted.index(event) - 2])

    events = _health(kafka_bootstrap, steady, _judged_after_change)
    judged = [e["drift"] for e in events if e.get("drift")]
    assert judged, "the steady worker never judged a window"
    assert all(d["status"] != "drift" for d in judged), [d for d in judged if d["status"] == "drift"][:2]
    assert all(e["status"] == "healthy" or not any(i.startswith("drift") for i in e["issues"]) for e in events)

    shown = subprocess.run([sys.executable, "-m", "app", "drift"], cwd=REPO_ROOT, capture_output=True, text=True,
                           env={**os.environ, **changed.env}, timeout=60)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    marked = [line.split()[0] for line in shown.stdout.splitlines() if line.endswith("DRIFT")]
    assert "worker-0" in shown.stdout and marked and all("amount" in name for name in marked), shown.stdout
