"""The trainer's pure core: the join, implicit negatives, late frauds, rolling quality; signed snapshots; the
registry's folding of promotion events."""

from __future__ import annotations

import pickle
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from app.features.halves import FEATURE_NAMES
from app.features.spec import FEATURE_SET_VERSION
from app.learning.model import FraudModel
from app.learning.registry import PromotionRefused, Registry, promote_event, rollback_event
from app.learning.registry_topics import warm_start
from app.learning.snapshots import SnapshotRefused, load_model_snapshot, model_snapshot, sign, verify
from app.learning.training import RollingQuality, Training, labels_watermark
from app.serialization import loads
from app.settings import REPO_ROOT, Settings


def _training(**kwargs: float) -> Training:
    return Training(FraudModel("logreg"), FraudModel("hoeffding"), horizon_s=kwargs.get("horizon_s", 100.0),
                    grace_s=kwargs.get("grace_s", 50.0), ttl_s=1000.0, quality_window=100)  # fmt: skip


def _x(amount: float) -> dict[str, float]:
    return {name: 0.0 for name in FEATURE_NAMES} | {"amount": amount}


def test_a_pair_is_learned_once_whichever_half_comes_first() -> None:
    t = _training()
    t.on_prediction("a", _x(10), 0.0, 0.1)
    t.on_label("a", False, 5.0)
    t.on_label("b", True, 5.0)  # before its prediction
    t.on_prediction("b", _x(900), 1.0, 0.2)
    assert t.labels_seen == 2 and t.challenger is not None and t.challenger.labels_learned == 2
    assert t.counts["learned"] == 2 and t.pending() == 0
    t.on_prediction("a", _x(10), 0.0, 0.1)  # the same prediction again (a re-read): waits, is not learned twice
    assert t.labels_seen == 2


def test_implicit_negatives_after_the_horizon_and_a_late_fraud_within_the_grace() -> None:
    t = _training(horizon_s=100.0, grace_s=50.0)
    for i in range(5):
        t.on_prediction(f"n{i}", _x(10), float(i), 0.1)
    t.on_prediction("now", _x(10), 99.0, 0.1)
    assert t.advance() == 0  # nothing past the horizon yet
    t.on_prediction("later", _x(10), 102.5, 0.1)
    assert t.advance() == 3  # n0, n1, n2 are older than 102.5 - 100
    assert t.counts["implicit_negative"] == 3 and t.labels_seen == 3
    t.on_label("n1", True, 103.0)  # a chargeback after the horizon: learned, once
    t.on_label("n1", True, 103.0)
    assert t.counts["late_fraud"] == 1 and t.labels_seen == 4
    t.on_label("n2", False, 103.0)  # a confirmed negative is not learned twice
    assert t.counts["confirmed_negative"] == 1 and t.labels_seen == 4
    t.on_prediction("much-later", _x(10), 200.0, 0.1)
    t.advance()  # n0 passes horizon + grace: forgotten
    assert "n0" not in t.waiting
    t.on_label("n0", True, 201.0)  # too late: waits as a label whose prediction never comes, then expires
    assert t.labels_seen == 4 + 3  # n3, n4 and "now" became implicit negatives meanwhile


def test_no_implicit_negative_while_the_labels_input_lags_behind_the_predictions() -> None:
    """The predictions read after a restart run days ahead of the labels; a fraud whose label is on Kafka but not read
    yet must be learned as fraud once, never first as legitimate."""
    t = _training(horizon_s=100.0, grace_s=50.0)
    for i in range(10):
        t.on_prediction(f"p{i}", _x(10), float(i), 0.1)
    t.on_prediction("ahead", _x(10), 500.0, 0.1)  # the predictions' clock is far past every horizon
    labels = "labels/0"
    # The labels partition has records left (position 3 < stable end 40) and was read through time 5.
    t.on_label("p0", False, 5.0, labels)
    through = labels_watermark([(3, 40, t.label_times_s[labels])])
    assert through == 5.0
    assert t.advance(labels_through_s=through) == 0 and t.counts["implicit_negative"] == 0
    t.on_label("p7", True, 60.0, labels)  # the fraud label, read late: it was before the horizon (7 + 100)
    through = labels_watermark([(40, 40, t.label_times_s[labels])])  # read to the end now
    assert t.advance(labels_through_s=through) == 8  # p1..p9 but p7: implicit negatives now
    assert t.counts["late_fraud"] == 0 and t.counts["learned"] == 2 and t.labels_seen == 10
    assert "p7" not in t.waiting


def test_the_labels_watermark_is_its_slowest_partition_and_unknown_before_a_fetch() -> None:
    assert labels_watermark([(5, 5, 10.0), (2, 9, 30.0), (0, 4, 20.0)]) == 20.0
    assert labels_watermark([(5, 5, 10.0), (9, 9, 30.0)]) == float("inf")  # both read to their end
    assert labels_watermark([(0, None, float("-inf"))]) == float("-inf")
    t = _training(horizon_s=1.0)
    t.on_prediction("a", _x(10), 0.0, 0.1)
    t.on_prediction("b", _x(10), 50.0, 0.1)
    assert t.advance(labels_through_s=float("-inf")) == 0  # labels not fetched yet: nothing judged
    assert t.advance() == 1  # no labels input to wait for (a replay in time order)


def test_the_audit_records_each_pair_learned_with_its_class_and_how_and_is_never_published_state() -> None:
    t = _training(horizon_s=100.0, grace_s=50.0)
    assert t.audit is None  # offline (warm start, evaluation): nothing kept
    t.audit = []
    t.on_prediction("a", _x(10), 0.0, 0.1)
    t.on_label("a", True, 5.0)
    t.on_prediction("b", _x(10), 1.0, 0.1)
    t.on_prediction("later", _x(10), 150.0, 0.1)
    t.advance()
    t.on_label("b", True, 151.0)  # a chargeback after the horizon
    assert t.audit == [("a", True, "explicit"), ("b", False, "implicit"), ("b", True, "late")]
    restored = Training.from_parts(list(t.state_parts()))
    assert restored.audit is None and restored.labels_seen == 3


def test_the_training_state_pickles_whole_and_resumes_identically() -> None:
    t = _training()
    for i in range(50):
        t.on_prediction(f"a{i}", _x(10 + i), float(i), 0.1)
        t.on_label(f"a{i}", i % 5 == 0, float(i))
    copy = pickle.loads(pickle.dumps(t))
    x = _x(300)
    assert copy.champion.predict_proba_one(x) == t.champion.predict_proba_one(x)
    assert copy.labels_seen == t.labels_seen == 50
    assert copy.quality["champion"].summary() == t.quality["champion"].summary()


def test_rolling_quality_figures() -> None:
    q = RollingQuality(window=4, threshold=0.5)
    assert q.summary()["auc"] is None
    for score, y in [(0.9, True), (0.2, False), (0.6, False), (0.1, False), (0.8, True)]:
        q.add(score, y)
    s = q.summary()  # the last four: (0.2, F), (0.6, F), (0.1, F), (0.8, T)
    assert s["labelled"] == 4 and s["frauds"] == 1 and s["auc"] == 1.0 and s["ap"] == 1.0
    assert s["precision"] == 0.5 and s["recall"] == 1.0


def test_the_challenger_wins_only_by_the_margin_over_enough_labels() -> None:
    t = _training()
    for i in range(40):
        y = i % 4 == 0
        t.quality["champion"].add(0.9 if i % 8 == 0 else 0.1, y)  # finds half the frauds
        t.quality["challenger"].add(0.9 if y else 0.1, y)  # finds them all
    t.labels_since_comparison = 40
    assert not t.challenger_wins(margin=0.02, min_labels=100)
    t.labels_since_comparison = 100
    assert t.challenger_wins(margin=0.02, min_labels=100)
    t.labels_since_comparison = 100
    assert not t.challenger_wins(margin=0.9, min_labels=100)


def test_a_snapshot_is_verified_before_it_is_unpickled() -> None:
    header = {"version": "v1", "role": "champion"}
    raw = model_snapshot(header, FraudModel("logreg"), b"key")
    loaded_header, model = load_model_snapshot(raw, b"key")
    assert loaded_header == header | {"feature_set": FEATURE_SET_VERSION} and model.version == "v1"
    with pytest.raises(SnapshotRefused, match="bad_signature"):
        load_model_snapshot(raw, b"another key")
    with pytest.raises(SnapshotRefused, match="bad_signature"):
        verify(raw[:-1] + bytes([raw[-1] ^ 1]), b"key")
    with pytest.raises(SnapshotRefused, match="unsigned"):
        verify(pickle.dumps(FraudModel("logreg")), b"key")
    with pytest.raises(SnapshotRefused, match="malformed"):
        load_model_snapshot(sign(loaded_header, pickle.dumps({"not": "a model"}), b"key"), b"key")


def test_the_registry_follows_published_versions_until_pinned() -> None:
    r = Registry()
    for v in ("v1", "v2"):
        r.add_header({"version": v, "sequence": int(v[1:])})
        r.apply({"action": "published", "version": v, "role": "champion"})
    r.add_header({"version": "v3", "sequence": 3})
    r.apply({"action": "published", "version": "v3", "role": "challenger"})
    assert (r.champion, r.challenger, r.follow) == ("v2", "v3", True)
    r.apply(rollback_event(r, by="cli:a", reason="", timestamp="t"))
    assert (r.champion, r.follow) == ("v1", False)
    r.add_header({"version": "v4", "sequence": 4})
    r.apply({"action": "published", "version": "v4", "role": "champion"})
    assert r.champion == "v1" and r.latest_champion == "v4"  # pinned: new versions wait
    event = promote_event(r, "latest", by="cli:a", reason="", timestamp="t")
    assert event["version"] == "v4" and event["follow"] is True
    r.apply(event)
    assert (r.champion, r.follow) == ("v4", True)
    with pytest.raises(PromotionRefused):
        promote_event(r, "v99", by="cli:a", reason="", timestamp="t")
    with pytest.raises(PromotionRefused):
        rollback_event(Registry(), by="cli:a", reason="", timestamp="t")
    assert [v["version"] for v in r.versions()] == ["v4", "v3", "v2", "v1"]


def test_warm_start_trains_before_the_held_out_days_and_evaluates_a_frozen_copy(tmp_path: Path) -> None:
    run = tmp_path / "run"
    subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "simulate.py"), "--no-kafka", "--out-dir", str(run),
                    "--customers", "100", "--terminals", "200", "--days", "40", "--seed", "3"],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    model, metrics = warm_start(Settings(), run, holdout_days=7.0)

    def times(name: str) -> dict[str, float]:
        rows = [loads(line) for line in (run / name).read_bytes().splitlines() if line.strip()]
        return {r["tx_id"]: datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")).timestamp() for r in rows}

    scored, known = times("transactions.jsonl"), times("labels.jsonl")
    cutoff = max(scored.values()) - 7 * 86400
    assert model.labels_learned == sum(1 for tx, t in known.items() if t < cutoff and scored[tx] < cutoff)
    assert metrics["labelled"] == sum(1 for t in scored.values() if t >= cutoff)
    assert metrics["auc"] is not None and metrics["auc"] > 0.7, metrics
    assert {"ap", "cp_at_100", "precision", "recall", "f1"} <= metrics.keys()


def test_the_state_in_slices_restores_the_waiting_halves_and_their_order() -> None:
    t = _training(horizon_s=100.0, grace_s=50.0)
    for i in range(30):
        t.on_prediction(f"a{i}", _x(10 + i), float(i), 0.1)
    t.on_label("a3", True, 5.0)
    t.on_label("early", False, 5.0)
    t.on_prediction("later", _x(1), 110.0, 0.1)
    t.advance()  # a0..a9 (but a3) are implicit negatives now
    restored = Training.from_parts(list(t.state_parts(slice_size=7)))
    assert restored.waiting == t.waiting and restored.labels_seen == t.labels_seen
    assert list(restored.by_time) == [(float(i), f"a{i}") for i in range(10, 30)] + [(110.0, "later")]
    assert [tx for _, tx in restored.negatives] == [f"a{i}" for i in range(10) if i != 3]
    t.on_prediction("much-later", _x(1), 200.0, 0.1)
    restored.on_prediction("much-later", _x(1), 200.0, 0.1)
    assert t.advance() == restored.advance() and restored.waiting == t.waiting


def test_a_binned_model_in_its_warm_up_is_shipped_without_its_sample_and_scores_the_same() -> None:
    model = FraudModel("logreg:opt=adagrad,lr=0.1,bins=8,warm=1000")
    for i in range(300):
        model.learn_one(_x(10 + i % 50), i % 10 == 0)
    raw = model_snapshot({"version": "v1"}, model, b"key")
    assert len(raw) < len(pickle.dumps(model)) / 2  # the warm-up sample stays with the trainer
    _, shipped = load_model_snapshot(raw, b"key")
    x = _x(33)
    assert shipped.predict_proba_one(x) == model.predict_proba_one(x)
    model.learn_one(x, False)  # the trainer's model still has its sample
