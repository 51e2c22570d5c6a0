"""Auto-promotion on a real broker (issue 20): the better challenger is promoted once and stays, every prediction after
its version reached the worker is served by its line, and two lines of the same model are never promoted. The
better challenger is the binned logistic model, then the heavier line of issue 21 (``gbdt``, retrained in the
trainer's process)."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest

from app.kafka.clients import Record, consume, produce
from app.learning.snapshots import verify
from app.serialization import dumps, loads
from app.settings import DEVELOPMENT_SIGNING_KEY
from lab.simulator import SimulatorConfig, label_of, replay, simulate, to_wire
from tests.conftest import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.timing]

WorkerFactory = Callable[..., WorkerProcess]
WEAKER = "hoeffding:grace=200"
BETTER = "logreg:opt=adagrad,lr=0.1,bins=8"
# The heavier line of issue 21: trees retrained in the trainer's process every 1,000 labels, scored by compiled trees.
GBDT = "gbdt:every=1000"


def _publish_run(bootstrap: str, worker: WorkerProcess, n_customers: int, n_days: int) -> int:
    """The simulator's run, each transaction labelled 7 days later in event time, published in event order (the
    transactions and the labels due among them, a day at a time); returns the transactions published."""
    txs = simulate(SimulatorConfig(n_customers=n_customers, n_terminals=2 * n_customers, n_days=n_days, seed=0))
    batch: list[tuple[str, bytes, bytes]] = []

    def flush() -> None:
        for topic, kind in (("TRANSACTIONS_TOPIC", "tx"), ("LABELS_TOPIC", "label")):
            produce(bootstrap, worker.topics[topic], [(k, v) for t, k, v in batch if t == kind])
        batch.clear()

    day = None
    for kind, tx, at in replay(txs, label_delay_s=timedelta(days=7).total_seconds()):
        if kind == "transaction":
            batch.append(("tx", tx.customer_id.encode(), dumps(to_wire(tx))))
        else:
            batch.append(("label", tx.tx_id.encode(), dumps(label_of(tx, at))))
        if at.date() != day and len(batch) > 2000:
            flush()
            day = at.date()
    flush()
    return len(txs)


def _settled() -> Callable[[list[Record]], bool]:
    """Read until a second passes with nothing new (the trainer learned everything: it publishes nothing more)."""
    seen = {"n": -1, "quiet": 0}

    def until(records: list[Record]) -> bool:
        seen["quiet"] = seen["quiet"] + 1 if records and len(records) == seen["n"] else 0
        seen["n"] = len(records)
        return seen["quiet"] >= 2

    return until


def _headers(bootstrap: str, worker: WorkerProcess) -> dict[str, dict[str, Any]]:
    records = consume(bootstrap, worker.topics["MODELS_TOPIC"], _settled(), 60)
    return {(r.key or b"").decode(): verify(r.value, DEVELOPMENT_SIGNING_KEY)[0] for r in records}


def _events(bootstrap: str, worker: WorkerProcess) -> list[dict[str, Any]]:
    return [loads(r.value or b"") for r in consume(bootstrap, worker.topics["MODEL_EVENTS_TOPIC"], _settled(), 60)]


def _learned_all(worker: WorkerProcess, n: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            view = loads(worker.http_get("/models"))
            learned = max((int(v.get("labels_seen", 0)) for v in view["versions"]), default=0)
            if learned >= n:
                return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"not within {timeout_s} s: {n} labels learned\n{worker.log_tail()}")


Served = dict[int, list[dict[str, Any]]]  # partition -> its predictions in order


def _timeline(events: list[dict[str, Any]], headers: dict[str, dict[str, Any]], served: Served | None = None) -> str:
    """Each promotion with its reason, per version its line, role and AP, and the versions that served in turn (their
    predictions, over all partitions): written for BENCHMARKS.md."""
    lines = [f"{e['timestamp']} promoted {e['version']} (was {e.get('previous')}) by {e['by']}: {e.get('reason')}"
             for e in events if e["action"] == "promoted"]  # fmt: skip
    for version, h in sorted(headers.items(), key=lambda item: int(item[1].get("sequence", 0))):
        m, c = h.get("metrics") or {}, h.get("comparison") or {}
        ap = f"{m['ap']:.3f}" if m.get("ap") is not None else "-"
        lines.append(f"{version:>5} {h.get('created_at', '')} {h['role']:<10} {h['model_name']:<34} labels "
                     f"{h['labels_seen']:>6} AP {ap} window {m.get('labelled')} frauds {m.get('frauds')} "
                     f"comparison {c.get('number')}")  # fmt: skip
    if served:
        runs: list[list[Any]] = []  # (version, predictions) in the order they served, partition 0 then 1...
        for partition in sorted(served):
            for p in served[partition]:
                if runs and runs[-1][0] == p["model_version"] and runs[-1][2] == partition:
                    runs[-1][1] += 1
                else:
                    runs.append([p["model_version"], 1, partition])
        line_of = {version: h["model_name"].split(":")[0] for version, h in headers.items()}
        shown = [f"p{partition} {version} ({line_of.get(version, 'prior')}) x{n}" for version, n, partition in runs]
        lines.append("served, per partition in order: " + ", ".join(shown))
    return "\n".join(lines)


def _keep(timeline: str) -> None:
    """``PROMOTION_TIMELINE_OUT``: a file the timeline is appended to (BENCHMARKS.md's figures come from it)."""
    out = os.environ.get("PROMOTION_TIMELINE_OUT")
    if out:
        with open(out, "a") as f:
            f.write(timeline + "\n\n")


@pytest.mark.parametrize("better", [BETTER, GBDT])
def test_the_better_challenger_is_promoted_once_and_its_line_serves_from_then_on(
    worker_factory: WorkerFactory, kafka_bootstrap: str, better: str
) -> None:
    worker = worker_factory(partitions=2, MODEL_NAME=WEAKER, CHALLENGER_MODEL=better, AUTO_PROMOTE_MIN_LABELS="1000",
                            QUALITY_WINDOW_LABELS="2000", MODEL_PUBLISH_INTERVAL_S="2",
                            MODEL_PUBLISH_EVERY_LABELS="1000")  # fmt: skip
    worker.wait_ready()
    published = _publish_run(kafka_bootstrap, worker, n_customers=500, n_days=25)
    _learned_all(worker, published, timeout_s=240)
    time.sleep(3)  # the last publication's comparison
    events = _events(kafka_bootstrap, worker)
    headers = _headers(kafka_bootstrap, worker)
    predictions = consume(kafka_bootstrap, worker.topics["PREDICTIONS_TOPIC"], lambda rs: len(rs) >= published, 60)
    by_partition: dict[int, list[dict[str, Any]]] = {}
    for record in predictions:
        by_partition.setdefault(record.partition, []).append(loads(record.value or b""))
    timeline = _timeline(events, headers, by_partition)
    _keep(timeline)
    promotions = [e for e in events if e["action"] == "promoted"]
    assert len(promotions) == 1, timeline  # one, and none back
    promoted = promotions[0]
    assert promoted["by"] == "auto" and headers[promoted["version"]]["model_name"] == better
    assert "beats champion AP" in promoted["reason"] and "frauds" in promoted["reason"]
    assert "bootstrap interval" in promoted["reason"]  # the default AUTO_PROMOTE_CONFIDENCE 0.95
    comparisons = max(int((h.get("comparison") or {}).get("number") or 0) for h in headers.values())
    assert comparisons >= 5  # compared on after the promotion too: no promotion back
    if better == GBDT:  # retrained as labels came (each retrain a new version), off the worker's decision path
        assert len([h for h in headers.values() if h["model_name"] == GBDT]) >= 3, timeline

    # Every prediction after the promoted version reached the worker carries a version of the promoted line: per
    # partition (each is decided in order), from the first prediction a version of that line served (before the
    # promotion its versions were challengers, which never serve; the worker may meet the promoted version and the
    # line's next one together and serve the next one first).
    line_of = {version: h["model_name"] for version, h in headers.items()}
    after: Counter[str] = Counter()
    for rows in by_partition.values():
        first = next((i for i, p in enumerate(rows) if line_of.get(p["model_version"]) == better), None)
        for p in rows[first:] if first is not None else []:
            after[line_of.get(p["model_version"], p["model_version"])] += 1
    assert set(after) <= {better}, after

    # Traffic after the promotion (the run above may be decided before the niced trainer promotes): every one of its
    # predictions, one per transaction, is served by the promoted line.
    day = SimulatorConfig(n_customers=500, n_terminals=1000, n_days=1, start_date=date(2018, 4, 26), seed=1)
    tail = [to_wire(tx) | {"tx_id": f"after-{tx.tx_id}"} for tx in simulate(day)]
    produce(kafka_bootstrap, worker.topics["TRANSACTIONS_TOPIC"], [(t["customer_id"].encode(), dumps(t)) for t in tail])
    total = published + len(tail)
    every = consume(kafka_bootstrap, worker.topics["PREDICTIONS_TOPIC"], lambda rs: len(rs) >= total, 60)
    decided = [p for p in (loads(r.value or b"") for r in every) if p["tx_id"].startswith("after-")]
    assert len(decided) == len(tail) == len({p["tx_id"] for p in decided}) > 0  # each decided once
    lines = Counter(line_of.get(p["model_version"], p["model_version"]) for p in decided)
    assert lines == Counter({better: len(tail)}), lines


def test_two_lines_of_the_same_model_are_never_promoted(worker_factory: WorkerFactory, kafka_bootstrap: str) -> None:
    worker = worker_factory(partitions=2, MODEL_NAME=BETTER, CHALLENGER_MODEL=BETTER, AUTO_PROMOTE_MIN_LABELS="400",
                            AUTO_PROMOTE_CONFIDENCE="0", AUTO_PROMOTE_MIN_FRAUDS="5", QUALITY_WINDOW_LABELS="2000",
                            MODEL_PUBLISH_INTERVAL_S="2", MODEL_PUBLISH_EVERY_LABELS="400")  # fmt: skip
    worker.wait_ready()
    published = _publish_run(kafka_bootstrap, worker, n_customers=500, n_days=25)
    _learned_all(worker, published, timeout_s=240)
    time.sleep(3)
    events = _events(kafka_bootstrap, worker)
    headers = _headers(kafka_bootstrap, worker)
    _keep(_timeline(events, headers))
    comparisons = [h["comparison"] for h in headers.values() if h.get("comparison")]
    assert max(int(c["number"]) for c in comparisons) >= 20, _timeline(events, headers)
    assert all(c["champion_ap"] == c["challenger_ap"] for c in comparisons)  # the same model on the same transactions
    assert [e for e in events if e["action"] == "promoted"] == []
