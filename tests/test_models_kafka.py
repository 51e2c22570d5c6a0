"""One shared model on a real broker: versions, rollback, signed snapshots, the shadow challenger, implicit
negatives, restarts, and every label learned once across a SIGKILL of the trainer's owner."""

from __future__ import annotations

import asyncio
import pickle
import re
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.kafka.clients import Connection, Record, at_least, consume, produce
from app.kafka.topics import topic_retention_ms
from app.learning.model import FraudModel
from app.learning.snapshots import load_model_snapshot, model_snapshot, sign
from app.serialization import dumps, loads
from app.settings import DEVELOPMENT_SIGNING_KEY
from tests.cases import transaction
from tests.conftest import REPO_ROOT, WorkerProcess
from tests.watch import metric as _metric
from tests.watch import wait as _wait

pytestmark = pytest.mark.kafka

WorkerFactory = Callable[..., WorkerProcess]


def _models(worker: WorkerProcess) -> dict[str, Any]:
    result: dict[str, Any] = loads(worker.http_get("/models"))
    return result


def _labels_seen(worker: WorkerProcess) -> int:
    view = _models(worker)
    header = next((v for v in view["versions"] if v["version"] == view["champion"]), {})
    return int(header.get("labels_seen", -1))


def _publish(bootstrap: str, worker: WorkerProcess, txs: list[dict[str, object]], frauds: set[str] | None = None,
             labels: bool = True) -> None:  # fmt: skip
    produce(bootstrap, worker.topics["TRANSACTIONS_TOPIC"], [(str(t["customer_id"]).encode(), dumps(t)) for t in txs])
    if labels:
        produce(bootstrap, worker.topics["LABELS_TOPIC"], [
            (str(t["tx_id"]).encode(), dumps({"tx_id": t["tx_id"], "is_fraud": str(t["tx_id"]) in (frauds or set()),
                                              "timestamp": "2018-04-08T00:00:00Z"})) for t in txs])  # fmt: skip


def _by_tx_id(records: list[Record]) -> dict[str, dict[str, Any]]:
    return {loads(r.value or b"")["tx_id"]: loads(r.value or b"") for r in records}


def _cli(worker: WorkerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", "models", *args], cwd=REPO_ROOT, env=worker.env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_two_workers_score_with_the_same_version_a_rollback_reaches_both_and_a_restart_keeps_it(
    worker_factory: WorkerFactory, kafka_bootstrap: str
) -> None:
    first = worker_factory(partitions=2)
    shared = {k: v for k, v in first.env.items() if k.endswith("_TOPIC") or k == "APP_ID"}
    second = worker_factory(partitions=2, **shared)
    first.wait_ready()
    second.wait_ready()
    batch1 = [transaction(i, tx_id=f"a-{i}", customer_id=f"c-{i % 13}") for i in range(60)]
    _publish(kafka_bootstrap, first, batch1, frauds={f"a-{i}" for i in range(0, 60, 5)})
    _wait(lambda: _labels_seen(first) == 60, 60, "the first 60 labels in the champion")
    v1 = _models(first)["champion"]
    batch2 = [transaction(i, tx_id=f"b-{i}", customer_id=f"c-{i % 13}") for i in range(60, 120)]
    _publish(kafka_bootstrap, first, batch2, frauds={f"b-{i}" for i in range(60, 120, 5)})
    _wait(lambda: _labels_seen(first) == 120, 60, "120 labels in the champion")
    v2 = _models(first)["champion"]
    assert v1 != v2
    _wait(lambda: _models(first)["serving"] == _models(second)["serving"] == v2, 30, "both workers serve v2")

    # Scored now, by both workers (customers on both partitions): every prediction carries v2.
    scored = 'fraud_transactions_total{outcome="scored"}'
    before = [_metric(w, scored) for w in (first, second)]
    probe = [transaction(i, tx_id=f"p-{i}", customer_id=f"c-{i % 13}") for i in range(200, 226)]
    _publish(kafka_bootstrap, first, probe, labels=False)
    predictions = _by_tx_id(consume(kafka_bootstrap, first.topics["PREDICTIONS_TOPIC"], at_least(146)))
    assert {predictions[f"p-{i}"]["model_version"] for i in range(200, 226)} == {v2}
    decided = [_metric(w, scored) - b for w, b in zip((first, second), before, strict=True)]
    assert min(decided) > 0 and sum(decided) == 26, decided  # each worker decided part of the probe

    # Rollback by the command line: both workers follow within seconds, pinned.
    result = _cli(first, "rollback", "--reason", "test")
    assert result.returncode == 0, result.stderr
    assert f"rolled_back {v1} (was {v2})" in result.stdout
    _wait(lambda: _models(first)["serving"] == _models(second)["serving"] == v1, 15, "both workers serve v1")
    assert _models(first)["follow"] is False
    listing = _cli(first, "list")
    assert listing.returncode == 0 and re.search(rf"^{v1}\s+champion", listing.stdout, re.M), listing.stdout
    rolled = [transaction(i, tx_id=f"r-{i}", customer_id=f"c-{i % 13}") for i in range(300, 326)]
    _publish(kafka_bootstrap, first, rolled, labels=False)
    predictions = _by_tx_id(consume(kafka_bootstrap, first.topics["PREDICTIONS_TOPIC"], at_least(172)))
    assert {predictions[f"r-{i}"]["model_version"] for i in range(300, 326)} == {v1}

    # A restarted worker scores with the same (pinned) version; promotion over HTTP goes back to v2.
    second.stop()
    second.start()
    second.wait_ready()
    assert _models(second)["serving"] == v1
    assert _metric(second, f'fraud_model_info{{version="{v1}"}}') == 1.0
    request = urllib.request.Request(first.web_url + "/models/promote", data=dumps({"version": v2}), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert loads(response.read())["by"].startswith("http:")
    _wait(lambda: _models(first)["serving"] == _models(second)["serving"] == v2, 15, "both workers serve v2 again")


class _Boom:
    """Unpickling this touches a file: proof that a refused snapshot was never deserialised."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_a_tampered_unsigned_or_foreign_snapshot_is_refused_before_deserialisation(
    worker_factory: WorkerFactory, kafka_bootstrap: str, tmp_path: Path
) -> None:
    worker = worker_factory(partitions=1)
    worker.wait_ready()
    _publish(kafka_bootstrap, worker, [transaction(i, tx_id=f"a-{i}") for i in range(20)], frauds={"a-0", "a-5"})
    _wait(lambda: _labels_seen(worker) == 20, 60, "20 labels learned")
    serving = _models(worker)["serving"]
    marker = tmp_path / "unpickled"
    bomb = pickle.dumps(_Boom(marker))
    header = {"version": "evil", "parent": None, "created_at": "2026-01-01T00:00:00Z", "model_name": "logreg",
              "role": "champion", "labels_seen": 0, "sequence": 999, "metrics": {}}  # fmt: skip
    genuine = model_snapshot(header, FraudModel("logreg"), DEVELOPMENT_SIGNING_KEY)
    tampered = genuine[:-10] + bytes(b ^ 0xFF for b in genuine[-10:])
    snapshots = [
        (b"evil", bomb),  # unsigned
        (b"evil", sign(header, bomb, b"another key")),  # signed with another key
        (b"evil", tampered),  # altered after signing
        (b"evil", sign(header | {"feature_set": "fs-00000000"}, bomb, DEVELOPMENT_SIGNING_KEY)),  # other features
    ]
    produce(kafka_bootstrap, worker.topics["MODELS_TOPIC"], snapshots)
    event = {"action": "promoted", "version": "evil", "follow": False, "by": "attacker", "timestamp": "x"}
    produce(kafka_bootstrap, worker.topics["MODEL_EVENTS_TOPIC"], [(b"evil", dumps(event))])
    _wait(lambda: _metric(worker, 'fraud_model_snapshots_refused_total{reason="bad_signature"}') == 2, 30,
          "two bad signatures counted")  # fmt: skip
    assert _metric(worker, 'fraud_model_snapshots_refused_total{reason="unsigned"}') == 1
    _wait(lambda: _metric(worker, 'fraud_model_snapshots_refused_total{reason="feature_set"}') == 1, 30,
          "the snapshot of another feature set counted")  # fmt: skip
    assert not marker.exists(), "a refused snapshot was deserialised"
    assert _models(worker)["serving"] == serving
    assert "refused" in worker.log_tail(200)

    def shown(rs: list[Record]) -> bool:  # the last refusal (another feature set) is in the health events
        return any("feature_set" in " ".join(loads(r.value or b"")["issues"]) for r in rs)

    health = consume(kafka_bootstrap, worker.topics["HEALTH_TOPIC"], shown)
    last = loads(health[-1].value or b"")
    assert last["status"] == "degraded" and any("evil refused" in issue for issue in last["issues"])
    assert any("refused: feature_set" in issue and "fs-00000000" in issue for issue in last["issues"]), last
    # Scoring goes on with the version in use.
    _publish(kafka_bootstrap, worker, [transaction(99, tx_id="after")], labels=False)
    after = _by_tx_id(consume(kafka_bootstrap, worker.topics["PREDICTIONS_TOPIC"], at_least(21)))["after"]
    assert after["model_version"] == serving


def test_the_shadow_challenger_never_changes_a_prediction(worker_factory: WorkerFactory, kafka_bootstrap: str) -> None:
    worker = worker_factory(partitions=2, CHALLENGER_MODEL="hoeffding:grace=10", AUTO_PROMOTE_MARGIN="-1")
    worker.wait_ready()
    frauds = {f"s-{i}" for i in range(0, 150, 4)}
    txs = [transaction(i, tx_id=f"s-{i}", amount=900.0 if f"s-{i}" in frauds else 20.0) for i in range(150)]
    _publish(kafka_bootstrap, worker, txs[:100], frauds=frauds)
    _wait(lambda: _labels_seen(worker) == 100, 60, "100 labels learned")
    _wait(lambda: not str(_models(worker)["serving"]).endswith("@prior"), 30, "a learned version serves")
    _publish(kafka_bootstrap, worker, txs[100:], frauds=frauds)
    _wait(lambda: _labels_seen(worker) == 150, 60, "150 labels learned")
    predictions = consume(kafka_bootstrap, worker.topics["PREDICTIONS_TOPIC"], at_least(150))
    snapshots = {(r.key or b"").decode(): r.value for r in consume(
        kafka_bootstrap, worker.topics["MODELS_TOPIC"], lambda rs: len(rs) >= 4)}  # fmt: skip
    models = {version: load_model_snapshot(raw, DEVELOPMENT_SIGNING_KEY) for version, raw in snapshots.items()}
    roles = {version: header["role"] for version, (header, _) in models.items()}
    assert "challenger" in roles.values() and "champion" in roles.values()
    checked = 0
    for record in predictions:
        p = loads(record.value or b"")
        version = p["model_version"]
        if version.endswith("@prior"):
            continue  # scored before the first version
        assert roles[version] == "champion", p
        # The served probability is exactly the champion version's score of the features as scored.
        assert models[version][1].predict_proba_one(p["features"]) == pytest.approx(p["fraud_probability"], abs=1e-12)
        checked += 1
    assert checked >= 50  # the second 50 at least were scored by a learned version, and each was checked
    health = consume(kafka_bootstrap, worker.topics["HEALTH_TOPIC"],
                     lambda rs: any("challenger" in loads(r.value or b"")["models"] for r in rs))  # fmt: skip
    shown = loads(health[-1].value or b"")["models"]
    assert shown["challenger"]["labelled"] > 0 and shown["champion"]["labelled"] > 0
    assert shown["served"]["labelled"] == shown["champion"]["labelled"]  # the served probabilities: their own figure
    exposed = worker.http_get("/metrics").decode()
    assert 'fraud_model_rolling_quality{metric="labelled",role="challenger"}' in exposed
    assert 'fraud_model_rolling_quality{metric="labelled",role="served"}' in exposed


def test_implicit_negatives_are_learned_after_the_horizon_and_a_late_fraud_still_counts(
    worker_factory: WorkerFactory, kafka_bootstrap: str
) -> None:
    worker = worker_factory(partitions=1, LABEL_HORIZON_S="3600", LATE_LABEL_GRACE_S="86400")
    worker.wait_ready()
    early = [transaction(i, tx_id=f"n-{i}", timestamp="2018-04-01T10:00:00Z") for i in range(10)]
    _publish(kafka_bootstrap, worker, early, labels=False)
    _wait(lambda: _metric(worker, "fraud_learning_entries") == 10, 60, "the ten read by the trainer")
    assert _metric(worker, 'fraud_labels_total{outcome="implicit_negative"}') == 0  # not before the horizon
    # Stream time moves two hours on: the tail reads the ten, past their horizon without a label.
    _publish(kafka_bootstrap, worker, [transaction(20, tx_id="later", timestamp="2018-04-01T12:00:00Z")], labels=False)
    _wait(lambda: _labels_seen(worker) == 10, 60, "ten implicit negatives in the champion")
    assert _metric(worker, 'fraud_labels_total{outcome="implicit_negative"}') == 10
    # A chargeback after the horizon waits in the label store; the grace tail learns it, once, when the stream passes
    # its horizon and grace (a day), and "later" passes its horizon meanwhile.
    produce(kafka_bootstrap, worker.topics["LABELS_TOPIC"],
            [(b"n-3", dumps({"tx_id": "n-3", "is_fraud": True, "timestamp": "2018-04-01T13:00:00Z"}))])  # fmt: skip
    _wait(lambda: _metric(worker, "fraud_learning_entries") == 2, 60, "the late label kept")  # and "later"
    assert _labels_seen(worker) == 10
    _publish(kafka_bootstrap, worker, [transaction(21, tx_id="next-day", timestamp="2018-04-02T12:00:00Z")],
             labels=False)  # fmt: skip
    _wait(lambda: _labels_seen(worker) == 12, 60, "the late fraud learned")
    time.sleep(2)  # a double would show in a later version
    assert _labels_seen(worker) == 12
    assert _metric(worker, 'fraud_labels_total{outcome="late_fraud"}') == 1
    assert _metric(worker, 'fraud_labels_total{outcome="implicit_negative"}') == 11


def test_a_fraud_label_on_kafka_before_the_horizon_is_learned_as_fraud_when_the_predictions_run_ahead(
    worker_factory: WorkerFactory, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The trainer's labels input is held back on purpose (tests/slow_labels) while its predictions input reads on
    past every horizon: no transaction whose label was on Kafka may be learned as an implicit negative."""
    release = tmp_path / "release-labels"
    held_back = {"PYTHONPATH": str(REPO_ROOT / "tests" / "slow_labels"), "HOLD_LABELS_UNTIL": str(release)}
    worker = worker_factory(partitions=1, LABEL_HORIZON_S="3600", LATE_LABEL_GRACE_S="86400", **held_back)
    worker.wait_ready()
    # The chargeback of h-3 is on Kafka half an hour after it, well before its horizon (one hour).
    produce(kafka_bootstrap, worker.topics["LABELS_TOPIC"],
            [(b"h-3", dumps({"tx_id": "h-3", "is_fraud": True, "timestamp": "2018-04-01T10:30:00Z"}))])  # fmt: skip
    early = [transaction(i, tx_id=f"h-{i}", timestamp="2018-04-01T10:00:00Z") for i in range(10)]
    later = transaction(20, tx_id="h-later", timestamp="2018-04-01T12:00:00Z")  # past the ten's horizon
    _publish(kafka_bootstrap, worker, [*early, later], labels=False)
    _wait(lambda: _metric(worker, "fraud_learning_entries") == 11, 60, "the eleven predictions read by the trainer")
    time.sleep(2)  # learning rounds with the labels still held back
    assert _metric(worker, 'fraud_labels_total{outcome="implicit_negative"}') == 0
    assert _metric(worker, "fraud_trainer_labels_watermark_lag_seconds") > 0
    release.touch()
    _wait(lambda: _labels_seen(worker) == 10, 60, "the fraud and nine implicit negatives learned")
    time.sleep(2)  # a double would show in a later version
    assert _labels_seen(worker) == 10
    assert _metric(worker, 'fraud_labels_total{outcome="learned"}') == 1
    assert _metric(worker, 'fraud_labels_total{outcome="implicit_negative"}') == 9
    assert _metric(worker, 'fraud_labels_total{outcome="late_fraud"}') == 0
    audit = [loads(r.value or b"") for r in consume(kafka_bootstrap, f"{worker.env['APP_ID']}-learning-audit",
                                                     lambda rs: len(rs) > 10, timeout_s=5)]  # fmt: skip
    assert sorted((a["tx_id"], a["learned_as"], a["how"]) for a in audit) == sorted(
        [("h-3", "fraud", "explicit")] + [(f"h-{i}", "legitimate", "implicit") for i in range(10) if i != 3]
    )


def test_labels_waiting_for_the_tail_move_with_the_trainer_to_another_disk_and_are_learned_as_their_class(
    worker_factory: WorkerFactory, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Labels whose prediction left the head's window wait in the label store; a trainer on an empty disk rebuilds
    it from its changelog, and the tail learns each with its class at the horizon."""
    worker = worker_factory(partitions=1, LABEL_HORIZON_S="3600", LATE_LABEL_GRACE_S="86400", EARLY_LABEL_WINDOW="1")
    worker.wait_ready()
    txs = [transaction(i, tx_id=f"m-{i}", timestamp="2018-04-01T10:00:00Z") for i in range(6)]
    _publish(kafka_bootstrap, worker, txs, labels=False)
    _wait(lambda: _metric(worker, "fraud_learning_entries") == 1, 60, "six predictions read, the last in the window")
    frauds = {"m-1", "m-3"}
    produce(kafka_bootstrap, worker.topics["LABELS_TOPIC"], [
        (f"m-{i}".encode(), dumps({"tx_id": f"m-{i}", "is_fraud": f"m-{i}" in frauds,
                                   "timestamp": "2018-04-01T10:30:00Z"})) for i in range(5)])  # fmt: skip
    _wait(lambda: _metric(worker, "fraud_learning_entries") == 1 + 5, 60, "five labels kept for the tail")
    assert _labels_seen(worker) == 0
    worker.stop()
    worker.env["DATA_DIR"] = str(tmp_path / "another-disk")
    worker.start()
    worker.wait_ready()
    assert "trainer label store: rebuild from changelog offset 0" in worker.log_tail(400)
    _publish(kafka_bootstrap, worker, [transaction(9, tx_id="m-later", timestamp="2018-04-01T12:00:00Z")],
             labels=False)  # fmt: skip
    _wait(lambda: _labels_seen(worker) == 6, 60, "the six learned at their horizon")
    audit = [loads(r.value or b"") for r in consume(kafka_bootstrap, f"{worker.env['APP_ID']}-learning-audit",
                                                     lambda rs: len(rs) >= 6, timeout_s=10)]  # fmt: skip
    assert sorted((a["tx_id"], a["learned_as"], a["how"]) for a in audit) == sorted(
        [(f"m-{i}", "fraud" if f"m-{i}" in frauds else "legitimate", "explicit") for i in range(5)]
        + [("m-5", "legitimate", "implicit")]
    )


def test_the_predictions_topic_keeps_what_the_tails_need_and_a_shorter_one_is_an_error_at_start(
    worker_factory: WorkerFactory, kafka_bootstrap: str
) -> None:
    day_ms = 86_400_000
    worker = worker_factory(partitions=1, LABEL_HORIZON_S=str(60 * 86400))
    worker.wait_ready()
    kept = asyncio.run(topic_retention_ms(Connection(kafka_bootstrap), worker.topics["PREDICTIONS_TOPIC"]))
    assert kept == (60 + 7 + 1) * day_ms  # created for a 60-day horizon, 7 days of grace and a day of margin
    worker.stop()
    worker.env["LABEL_HORIZON_S"] = str(120 * 86400)  # the existing topic is left as it is: too short now
    worker.start()
    worker.wait_ready()
    # the trainer process stops at start (exit 78, a configuration error) with the line that fixes it; the worker
    # decides on and starts it again with backoff
    _wait(lambda: "keeps records 68 days" in worker.log_tail(400), 60, "the error at the trainer's start")
    assert f"--add-config retention.ms={128 * day_ms}" in worker.log_tail(400)
    assert worker.http_status("/ready") == 200


def test_each_label_is_learned_once_with_two_workers_and_a_sigkill_of_the_trainers_owner(
    worker_factory: WorkerFactory, kafka_bootstrap: str
) -> None:
    first = worker_factory(partitions=4)
    shared = {k: v for k, v in first.env.items() if k.endswith("_TOPIC") or k == "APP_ID"}
    second = worker_factory(partitions=4, **shared)
    first.wait_ready()
    second.wait_ready()
    workers = [first, second]
    _wait(lambda: sum(_metric(w, "fraud_trainer_active") for w in workers) == 1, 30, "one trainer")
    owner = next(w for w in workers if _metric(w, "fraud_trainer_active") == 1)
    survivor = second if owner is first else first
    n = 0
    for round_ in range(6):
        txs = [transaction(i, tx_id=f"k-{i}", customer_id=f"c-{i % 29}") for i in range(n, n + 100)]
        _publish(kafka_bootstrap, first, txs, frauds={f"k-{i}" for i in range(n, n + 100, 7)})
        n += 100
        if round_ == 2:
            time.sleep(1.5)  # a snapshot or two published, labels in flight
            owner.kill()
            _wait(lambda: _metric(survivor, "fraud_trainer_active") == 1, 60, "the survivor takes the trainer over")
            owner.start()
    _wait(lambda: _labels_seen(survivor) >= n, 120, f"{n} labels learned")
    time.sleep(3)  # anything learned twice would show as more labels in a later version
    assert _labels_seen(survivor) == n
    owner.wait_ready()
    assert _labels_seen(owner) == n
    # Label by label, not a count where a loss and a double cancel out: the audit written with the versions.
    audit = [loads(r.value or b"") for r in consume(kafka_bootstrap, f"{first.env['APP_ID']}-learning-audit",
                                                     lambda rs: len(rs) > n, timeout_s=8)]  # fmt: skip
    learned = Counter(a["tx_id"] for a in audit)
    assert set(learned) == {f"k-{i}" for i in range(n)} and set(learned.values()) == {1}
    frauds = {f"k-{i}" for i in range(n) if (i % 100) % 7 == 0}
    assert {a["tx_id"] for a in audit if a["learned_as"] == "fraud"} == frauds
    assert {a["how"] for a in audit} == {"explicit"}


def test_a_warm_start_is_registered_served_and_continued_by_the_trainer(
    worker_factory: WorkerFactory, kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "simulate.py"), "--no-kafka", "--out-dir", str(run),
                    "--customers", "60", "--terminals", "120", "--days", "25", "--seed", "5"],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    # The worker starts once the train command has registered and promoted the warm start (the command makes the
    # topics): started beside it, it once became ready first and served v1.
    worker = worker_factory(partitions=1, start=False)
    result = _cli(worker, "train", "--from-dir", str(run), "--holdout-days", "5", "--promote")
    assert result.returncode == 0, result.stderr
    match = re.search(r"^registered (warm-\d+): (\d+) labels; held-out .*auc (\S+),", result.stdout, re.M)
    assert match, result.stdout
    warm, labels = match.group(1), int(match.group(2))
    assert labels > 500 and float(match.group(3)) > 0.6
    worker.start().wait_ready()
    assert _models(worker)["serving"] == warm  # a new deployment does not start from the prior
    _publish(kafka_bootstrap, worker, [transaction(i, tx_id=f"w-{i}") for i in range(10)], frauds={"w-0"})
    _wait(lambda: _labels_seen(worker) == labels + 10, 60, "the trainer continues the warm start")
    view = _models(worker)
    champion = next(v for v in view["versions"] if v["version"] == view["champion"])
    assert champion["parent"] == warm and champion["role"] == "champion"
