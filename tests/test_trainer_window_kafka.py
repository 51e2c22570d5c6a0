"""A gbdt line's window of labels on a real broker: the trainer's published state carries no window rows (each
publication writes only the ring slots written since the last one, on the label changelog), and a trainer started
after its predecessor was SIGKILLed holds the same window (the same rows, added at the same clock)."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from app.kafka.clients import Record, consume, produce
from app.learning.label_store import WINDOW_PREFIX
from app.serialization import dumps, loads
from tests.cases import transaction
from tests.conftest import WorkerProcess
from tests.test_trainer_process_kafka import _get_json, _labels_seen  # the trainer's pages, as read there
from tests.watch import wait as _wait

pytestmark = pytest.mark.kafka

WorkerFactory = Callable[..., WorkerProcess]
NEGS, FRAUDS = 1500, 300
GBDT = f"gbdt:trees=5,every=300,minleaf=2,negs={NEGS},frauds={FRAUDS},neg=1"


def _trainer(worker: WorkerProcess, digest: bool = False) -> dict[str, Any]:
    """The trainer child's own /status (its port from the worker's operator document)."""
    child = loads(worker.http_get("/status.json"))["models"]["trainer_process"]
    return _get_json(f"http://127.0.0.1:{child['port']}/status" + ("?digest=1" if digest else ""))


def _publish(bootstrap: str, worker: WorkerProcess, start: int, n: int) -> None:
    txs = [transaction(i, tx_id=f"w-{i}", customer_id=f"c-{i % 23}", amount=10.0 + (i * 37) % 400)
           for i in range(start, start + n)]  # fmt: skip
    produce(bootstrap, worker.topics["TRANSACTIONS_TOPIC"], [(str(t["customer_id"]).encode(), dumps(t)) for t in txs])
    produce(bootstrap, worker.topics["LABELS_TOPIC"], [
        (str(t["tx_id"]).encode(), dumps({"tx_id": t["tx_id"], "is_fraud": i % 7 == 0,
                                          "timestamp": "2018-04-08T00:00:00Z"}))
        for i, t in zip(range(start, start + n), txs, strict=True)])  # fmt: skip


def _all(bootstrap: str, topic: str) -> list[Record]:
    return consume(bootstrap, topic, lambda records: False, timeout_s=4)


def _states(records: list[Record]) -> list[int]:
    """The bytes of each state published (its chunks, then its head), in order."""
    sizes, current = [], 0
    for record in records:
        current += len(record.value or b"")
        if record.key == b"head":
            sizes.append(current)
            current = 0
    return sizes


def test_the_state_carries_no_window_rows_and_a_new_trainer_after_a_sigkill_holds_the_same_window(
    worker_factory: WorkerFactory, kafka_bootstrap: str
) -> None:
    worker = worker_factory(partitions=1, MODEL_NAME="logreg", CHALLENGER_MODEL=GBDT, AUTO_PROMOTE_MARGIN="-1",
                            QUALITY_WINDOW_LABELS="200", MODEL_PUBLISH_INTERVAL_S="1")  # fmt: skip
    worker.wait_ready()
    app_id = worker.env["APP_ID"]
    _wait(lambda: _trainer(worker)["role"] == "active", 60, "the trainer child is active")
    for start in range(0, 2400, 400):  # in waves: several publications while the window fills and wraps
        _publish(kafka_bootstrap, worker, start, 400)
        _wait(lambda s=start: _labels_seen(worker) == s + 400, 90, f"{start + 400} labels learned and published")
    before = _trainer(worker, digest=True)
    window = before["windows"]["challenger"]
    assert window["added"] == 2400 and window["held"] == NEGS + FRAUDS  # both rings wrapped (343 frauds)

    changelog = _all(kafka_bootstrap, f"{app_id}-trainer-labels")
    rows = [r for r in changelog if (r.key or b"").startswith(WINDOW_PREFIX)]
    row_bytes = max(len(r.value or b"") for r in rows)
    window_bytes = window["held"] * row_bytes
    written = Counter(r.key for r in rows)
    # Each publication wrote the slots written since the last one: over the run, one record per label added at most
    # (not the whole window per interval), and the compacted changelog keeps one record per slot held.
    assert len(written) == window["held"] and len(rows) <= window["added"]
    states = _states(_all(kafka_bootstrap, f"{app_id}-trainer-state"))
    assert len(states) >= 6  # one or more per wave
    # Every state published is well under the window's rows (the last one, with the window full, as small as the
    # first): before, each carried the whole window.
    assert max(states) < window_bytes / 4, (states, window_bytes)
    assert states[-1] < states[0] * 1.5 + 20_000, states

    # SIGKILL the trainer: the worker starts another, which restores the window from the label store's changelog.
    first = before["pid"]
    os.kill(first, signal.SIGKILL)
    _wait(lambda: _trainer(worker)["pid"] != first and _trainer(worker)["restored"], 90,
          "a new trainer process restored its state")  # fmt: skip
    after = _trainer(worker, digest=True)
    assert after["windows"]["challenger"] == window  # the same id, rows held, labels added, and rows (digest)

    # And it learns on from there: the next labels go into the same window and out as records of their own.
    _publish(kafka_bootstrap, worker, 2400, 300)
    _wait(lambda: _labels_seen(worker) == 2700, 90, "300 more labels learned by the new trainer")
    grown = _trainer(worker)["windows"]["challenger"]
    assert grown["id"] == window["id"] and grown["added"] == 2700
