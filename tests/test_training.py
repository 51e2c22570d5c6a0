"""The trainer's pure core: the head's early window, the tails at the horizon and after the grace, the label store,
rolling quality; signed snapshots; the registry's folding of promotion events."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from aiokafka import TopicPartition

from app.features.halves import FEATURE_NAMES
from app.features.spec import FEATURE_SET_VERSION
from app.learning.label_store import FRAUD, LEARNED_FRAUD, LEARNED_LEGIT, LabelStore
from app.learning.model import FraudModel
from app.learning.promotion import PromotionPolicy, _weighted_ap
from app.learning.quality import average_precision
from app.learning.registry import PromotionRefused, Registry, promote_event, rollback_event
from app.learning.registry_topics import warm_start
from app.learning.snapshots import SnapshotRefused, load_model_snapshot, model_snapshot, sign, verify
from app.learning.trainer import _Tail
from app.learning.training import FeatureLog, RollingQuality, Training, labels_watermark
from app.serialization import dumps, loads
from app.settings import REPO_ROOT, Settings
from app.state.memory_store import MemoryStore


def _training(**kwargs: float) -> Training:
    return Training(FraudModel("logreg"), FraudModel("hoeffding"), horizon_s=kwargs.get("horizon_s", 100.0),
                    grace_s=kwargs.get("grace_s", 50.0), ttl_s=kwargs.get("ttl_s", 1000.0), quality_window=100,
                    early_window=int(kwargs.get("early_window", 1000)))  # fmt: skip


def _x(amount: float) -> dict[str, float]:
    return {name: 0.0 for name in FEATURE_NAMES} | {"amount": amount}


def _scored(t: Training, log: FeatureLog, tx_id: str, event_time_s: float, amount: float = 10.0) -> None:
    """The head reads a prediction, and it goes into the feature log the tails read."""
    t.on_prediction(tx_id, _x(amount), event_time_s, 0.1)
    log.append(tx_id, _x(amount), event_time_s, 0.1)


def test_a_label_in_the_window_or_before_its_prediction_is_learned_at_once_and_the_tail_skips_it() -> None:
    t, log = _training(), FeatureLog()
    _scored(t, log, "a", 0.0)
    t.on_label("a", True, 5.0)  # its prediction is in the head's window: learned now
    t.on_label("b", False, 5.0)  # before its prediction
    _scored(t, log, "b", 1.0, amount=900)  # learned when the head reads it
    assert t.labels_seen == 2 and t.challenger is not None and t.challenger.labels_learned == 2
    assert t.counts["learned"] == 2 and not t.recent
    assert t.labels.get("a") == (LEARNED_FRAUD, 5.0) and t.labels.get("b") == (LEARNED_LEGIT, 5.0)
    t.on_label("a", True, 6.0)  # sent again: its pair is learned already
    assert t.counts["duplicate_label"] == 1 and t.labels_seen == 2
    _scored(t, log, "later", 120.0)
    assert log.advance(t) == 2 and t.labels_seen == 2  # the tail reads a and b and skips both
    assert t.labels.get("a") == (LEARNED_FRAUD, 5.0) and t.labels.get("b") is None  # a fraud's marker: to the grace
    t.on_label("a", True, 121.0)  # sent again after the tail: still not learned twice
    _scored(t, log, "much-later", 2000.0)
    log.advance(t)
    assert t.labels.get("a") is None and t.counts["late_fraud"] == 0 and t.counts["duplicate_label"] == 2
    assert t.labels_seen == 3 and t.labels_kept == 0  # "later" passed its horizon: an implicit negative


def test_the_tail_learns_each_waiting_label_as_its_class_and_the_rest_as_legitimate_at_the_horizon() -> None:
    t, log = _training(horizon_s=100.0, grace_s=50.0, early_window=2), FeatureLog()
    for i in range(5):
        _scored(t, log, f"n{i}", float(i))
    assert list(t.recent) == ["n3", "n4"]  # the window holds the two most recent
    t.on_label("n0", True, 10.0)  # out of the window: waits for the tail
    t.on_label("n1", False, 10.0)
    assert t.labels_seen == 0 and t.pending() == 2 + 2
    _scored(t, log, "now", 99.0)
    assert log.advance(t) == 0  # nothing past the horizon yet
    _scored(t, log, "later", 102.5)
    assert log.advance(t) == 3  # n0, n1, n2 are older than 102.5 - 100
    assert (t.counts["learned"], t.counts["implicit_negative"], t.labels_seen) == (2, 1, 3)
    assert t.labels.get("n1") is None and t.labels.get("n0") == (LEARNED_FRAUD, 10.0)


def test_a_late_fraud_is_learned_by_the_grace_tail_once_and_a_late_legitimate_label_confirms() -> None:
    t, log = _training(horizon_s=100.0, grace_s=50.0), FeatureLog()
    for i in range(3):
        _scored(t, log, f"n{i}", float(i))
    _scored(t, log, "later", 102.5)
    assert log.advance(t) == 3 and t.counts["implicit_negative"] == 3
    t.on_label("n1", True, 103.0)  # a chargeback after the horizon: not in the window any more, waits for the grace
    t.on_label("n1", True, 103.0)  # sent again: replaces the waiting one
    t.on_label("n2", False, 103.0)
    assert t.labels_seen == 3
    _scored(t, log, "much-later", 160.0)
    log.advance(t)  # 160 - 150: n0..n2 pass horizon + grace
    assert t.counts["late_fraud"] == 1 and t.labels_seen == 4
    assert t.counts["confirmed_negative"] == 1 and t.labels_kept == 0
    t.on_label("n0", True, 161.0)  # too late: waits as a label whose prediction never comes, then expires
    assert t.labels.get("n0") == (FRAUD, 161.0) and t.labels_seen == 4


def test_labels_waiting_past_the_ttl_after_the_grace_tail_expire_in_slices() -> None:
    t, log = _training(horizon_s=100.0, grace_s=50.0, ttl_s=10.0), FeatureLog()
    for i in range(5):
        t.on_label(f"orphan{i}", True, float(i))  # predictions that never come
    t.on_label("young", True, 200.0)
    _scored(t, log, "now", 165.0)  # the grace tail's time is 15, expiry before 5
    t.labels.commit(None)  # the sweep reads committed entries
    assert t.sweep_labels(limit=2) == 2 and t.sweep_from == b"orphan2"
    assert t.sweep_labels(limit=2) == 2 and t.sweep_labels(limit=2) == 1 and t.sweep_from == b""
    assert t.counts["expired"] == 5 and t.labels_kept == 1 and t.labels.get("young") == (FRAUD, 200.0)


def test_no_implicit_negative_while_the_labels_input_lags_behind_the_predictions() -> None:
    """The predictions read after a restart run days ahead of the labels; a fraud whose label is on Kafka but not read
    yet must be learned as fraud once, never first as legitimate."""
    t, log = _training(horizon_s=100.0, grace_s=50.0, early_window=1), FeatureLog()
    for i in range(10):
        _scored(t, log, f"p{i}", float(i))
    _scored(t, log, "ahead", 500.0)  # the predictions' clock is far past every horizon
    labels = "labels/0"
    # The labels partition has records left (position 3 < stable end 40) and was read through time 5.
    t.on_label("p0", False, 5.0, labels)
    through = labels_watermark([(3, 40, t.label_times_s[labels])])
    assert through == 5.0
    assert log.advance(t, labels_through_s=through) == 0 and t.counts["implicit_negative"] == 0
    t.on_label("p7", True, 60.0, labels)  # the fraud label, read late: it was before the horizon (7 + 100)
    through = labels_watermark([(40, 40, t.label_times_s[labels])])  # read to the end now
    assert log.advance(t, labels_through_s=through) == 10  # p0..p9: p0 and p7 as labelled, the rest legitimate
    assert t.counts["implicit_negative"] == 8 and t.counts["learned"] == 2 and t.labels_seen == 10
    assert t.counts["late_fraud"] == 0


def test_the_labels_watermark_is_its_slowest_partition_and_unknown_before_a_fetch() -> None:
    assert labels_watermark([(5, 5, 10.0), (2, 9, 30.0), (0, 4, 20.0)]) == 20.0
    assert labels_watermark([(5, 5, 10.0), (9, 9, 30.0)]) == float("inf")  # both read to their end
    assert labels_watermark([(0, None, float("-inf"))]) == float("-inf")
    t, log = _training(horizon_s=1.0), FeatureLog()
    _scored(t, log, "a", 0.0)
    _scored(t, log, "b", 50.0)
    assert log.advance(t, labels_through_s=float("-inf")) == 0  # labels not fetched yet: nothing judged
    assert log.advance(t) == 1  # no labels input to wait for (a replay in time order)


def test_the_audit_records_each_pair_learned_with_its_class_and_how_and_is_never_published_state() -> None:
    t, log = _training(horizon_s=100.0, grace_s=50.0), FeatureLog()
    assert t.audit is None  # offline (warm start, evaluation): nothing kept
    t.audit = []
    _scored(t, log, "a", 0.0)
    t.on_label("a", True, 5.0)
    _scored(t, log, "b", 1.0)
    _scored(t, log, "later", 150.0)
    log.advance(t)
    t.on_label("b", True, 151.0)  # a chargeback after the horizon
    _scored(t, log, "much-later", 400.0)
    log.advance(t)
    assert t.audit == [("a", True, "explicit"), ("b", False, "implicit"), ("later", False, "implicit"),
                       ("b", True, "late")]  # fmt: skip
    restored = Training.from_parts(t.state_parts())
    assert restored.audit is None and restored.labels_seen == 4


def test_the_state_holds_no_waiting_features_and_resumes_over_its_label_store() -> None:
    t, log = _training(horizon_s=100.0, grace_s=50.0, early_window=5), FeatureLog()
    for i in range(300):
        _scored(t, log, f"a{i}", float(i) / 10, amount=10 + i)
    for i in range(0, 300, 7):
        t.on_label(f"a{i}", i % 2 == 0, 30.0)  # all but the last five out of the window: they wait in the store
    t.positions, t.tail_positions, t.grace_positions = {"p/0": 300, "l/0": 43}, {"p/0": 0}, {"p/0": 0}
    small = sum(map(len, t.state_parts()))
    for i in range(300, 3000):
        t.on_prediction(f"a{i}", _x(10), 29.9, 0.1)  # many more predictions read: the state does not grow
    assert sum(map(len, t.state_parts())) < small * 1.1
    t.labels.commit(7)  # the changelog holds the store's changes up to offset 7
    restored = Training.from_parts(t.state_parts(), labels=t.labels)
    assert (restored.positions, restored.tail_positions) == (t.positions, t.tail_positions)
    assert not restored.recent and restored.labels_kept == t.labels_kept == 43 and restored.pending() == 43
    assert restored.labels_seen == t.labels_seen == 0
    restored.on_prediction("later", _x(10), 150.0, 0.1)
    assert log.advance(restored) == 300  # the tail reads the feature log from its position: nothing lost
    assert restored.labels_seen == 300 and restored.labels_kept == 22  # the frauds' markers wait for the grace tail
    assert restored.counts["learned"] == 43 and restored.counts["implicit_negative"] == 257


def test_a_horizon_of_120_days_holds_no_more_in_memory_than_the_window() -> None:
    day_s = 86400.0
    t = _training(horizon_s=120 * day_s, grace_s=7 * day_s, early_window=100)
    for i in range(5000):  # 50 days of predictions at 100 a day, none past its horizon
        t.on_prediction(f"a{i}", _x(10), i * day_s / 100, 0.1)
        if i % 10 == 0:
            t.on_label(f"a{i - 500}", False, i * day_s / 100)  # labels 5 days late: out of the window, to the store
    assert len(t.recent) == 100 and t.labels_kept == 500 and t.labels_seen == 0  # in the store, not in memory
    assert sum(map(len, t.state_parts())) < 100_000  # no features in the state, however long the horizon


def test_a_state_of_the_format_before_the_tails_is_converted_its_waiting_labels_kept() -> None:
    old = _training()
    old.__dict__["waiting"] = {"x1": ("x", b"", 1.0, 0.1, -1.0), "y1": ("y", True, 2.0), "y2": ("y", False, 3.0)}
    state = dict(old.__getstate__())
    state["waiting"], state["by_time"], state["negatives"] = {}, deque(), deque()
    old.__getstate__ = lambda: state  # type: ignore[method-assign]
    parts = [pickle.dumps(old), pickle.dumps(list(old.__dict__["waiting"].items()))]
    labels = LabelStore.in_memory()
    converted = Training.from_parts(parts, labels=labels)
    assert converted.converted and "waiting" not in converted.__dict__ and converted.labels is labels
    assert labels.get("y1") == (FRAUD, 2.0) and labels.get("y2") == (0, 3.0) and labels.get("x1") is None
    assert converted.labels_kept == 2 and not Training.from_parts(converted.state_parts()).converted


def test_a_new_line_keeps_its_own_entries_and_the_sweep_removes_a_former_lines() -> None:
    old = _training()
    old.on_label("a", True, 1.0)
    old.on_prediction("a", _x(10), 0.0, 0.1)  # learned: a marker of the old line
    old.labels.commit(1)
    new = _training()
    new.labels, new.labels_line = old.labels, "n1"
    new.labels.line = "n1"
    new.on_label("a", True, 2.0)  # the new line reads the labels again: not a duplicate of the old line's pair
    new.on_prediction("a", _x(10), 0.0, 0.1)
    assert new.labels_seen == 1 and new.counts["duplicate_label"] == 0
    new.labels.commit(2)
    assert new.sweep_labels() == 0 and new.labels.get("a") == (LEARNED_FRAUD, 2.0)
    assert new.labels.changes() == {b"a": None}  # the old line's marker goes


def test_the_label_store_on_a_memory_store_commits_its_changes_with_the_changelog_offset() -> None:
    store = MemoryStore("trainer-labels")
    labels = LabelStore(store.open_partition(0))
    labels.put("a", FRAUD, 1.0)
    labels.put("b", LEARNED_LEGIT, 2.0)
    assert labels.get("a") == (FRAUD, 1.0) and store.open_partition(0).get(b"a") is None  # not before the commit
    labels.commit(2)
    labels.delete("a")
    assert labels.get("a") is None and labels.changes() == {b"a": None}
    assert labels.scan(b"", 10) == ([(b"b", LEARNED_LEGIT, 2.0)], b"")  # as changed since the commit
    labels.commit(3)
    store.close_partition(0)
    again = store.open_partition(0)
    assert again.committed_offset == 3 and again.get(b"b") is not None and again.get(b"a") is None


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


def _policy(**kwargs: float) -> PromotionPolicy:
    figures: dict[str, Any] = {"margin": 0.02, "min_labels": 100, "min_frauds": 5, "confidence": 0.0,
                               "cooldown_labels": 100} | kwargs  # fmt: skip
    return PromotionPolicy(**figures)


def _feed(t: Training, n: int, champion: Any, challenger: Any, served: Any = None) -> None:
    """``n`` labelled transactions into the windows as :meth:`Training._learn` feeds them (one fraud in four)."""
    for i in range(n):
        y = i % 4 == 0
        t.quality["served"].add((served or champion)(i, y), y)
        t.quality["champion"].add(champion(i, y), y)
        t.quality["challenger"].add(challenger(i, y), y)
        t.labels_since_comparison += 1
        t.labels_since_swap += 1


def _half(i: int, y: bool) -> float:
    return 0.9 if i % 8 == 0 else 0.1  # finds half the frauds


def _all(i: int, y: bool) -> float:
    return 0.9 if y else 0.1  # finds them all


def test_the_challenger_wins_only_by_the_margin_over_enough_labels_and_frauds() -> None:
    t = _training()
    _feed(t, 40, _half, _all)
    assert t.compare(_policy()) is None  # 40 labels: no comparison due
    _feed(t, 60, _half, _all)
    won = t.compare(_policy())
    assert won is not None and won.wins and won.labelled == 100 and won.frauds == 25
    assert won.challenger_ap == 1.0 and won.champion_ap is not None and won.champion_ap < 0.8
    reason = won.reason(0.02)
    assert "challenger AP 1.000" in reason and "100 labelled transactions (25 frauds)" in reason
    assert t.compare(_policy()) is None  # the count starts again
    _feed(t, 100, _half, _all)
    assert not t.compare(_policy(margin=0.9)).wins  # type: ignore[union-attr]
    _feed(t, 100, _half, _all)
    refused = t.compare(_policy(min_frauds=30))
    assert refused is not None and not refused.wins and "fewer than 30" in refused.why
    _feed(t, 100, _half, _all)
    assert not t.compare(_policy(margin=-1)).wins  # type: ignore[union-attr]
    assert t.comparisons == 4 and t.last_comparison is not None and t.last_comparison["number"] == 4


def test_a_learned_pair_scores_both_lines_with_their_own_models_and_keeps_the_served_probability_apart() -> None:
    t = Training(FraudModel("logreg"), FraudModel("logreg"), horizon_s=100.0, grace_s=50.0, ttl_s=1000.0,
                 quality_window=100)  # fmt: skip
    for i in range(60):
        t.on_prediction(f"a{i}", _x(900.0 if i % 5 == 0 else 20.0 + i), float(i), 0.5)  # served: a constant
        t.on_label(f"a{i}", i % 5 == 0, float(i))
    champion, challenger, served = (t.quality[role].summary() for role in ("champion", "challenger", "served"))
    assert champion == challenger  # the same model on the same transactions: the same figures
    assert list(t.quality["champion"].scores) == list(t.quality["challenger"].scores)
    assert served["labelled"] == 60 and served["ap"] == pytest.approx(12 / 60)  # all tied: the fraud rate
    assert champion["ap"] is not None and champion["ap"] > 0.9  # the models' own scores, not the served ones
    t.labels_since_comparison = 10_000
    same = t.compare(_policy(min_frauds=1))
    assert same is not None and same.champion_ap == same.challenger_ap and not same.wins


def test_a_swap_keeps_each_lines_figures_and_no_comparison_comes_before_the_cooldown() -> None:
    t = _training()
    _feed(t, 100, _half, _all)
    before = {role: t.quality[role].summary() for role in ("champion", "challenger", "served")}
    champion, challenger = t.champion, t.challenger
    assert t.compare(_policy()).wins  # type: ignore[union-attr]
    t.swap_roles()
    assert t.champion is challenger and t.challenger is champion
    after = {role: t.quality[role].summary() for role in ("champion", "challenger", "served")}
    assert after["champion"] == before["challenger"] and after["challenger"] == before["champion"]
    assert after["served"] == before["served"]
    # Now the former champion (finds half) is the challenger; say it found all since: no comparison until the
    # cool-down has passed, however many labels since the last comparison.
    _feed(t, 99, _half, _all)
    assert t.compare(_policy(cooldown_labels=100)) is None
    _feed(t, 1, _half, _all)
    assert t.compare(_policy(cooldown_labels=100)) is not None


def test_the_bootstrap_refuses_a_difference_within_noise_and_accepts_a_clear_one() -> None:
    rng = np.random.default_rng(7)
    n = 2000
    y = rng.random(n) < 0.05
    base = y * 1.0 + rng.normal(0, 1.0, n)
    t = _training()
    t.quality_window = n
    for role in ("champion", "challenger", "served"):
        t.quality[role] = RollingQuality(n, 0.5)
    noisy = base + rng.normal(0, 0.3, n)  # the same signal, other noise: its AP differs by chance
    for i in range(n):
        for role, s in (("champion", base[i]), ("challenger", noisy[i]), ("served", base[i])):
            t.quality[role].add(float(s), bool(y[i]))
    t.labels_since_comparison = n
    policy = _policy(margin=-0.0, min_frauds=30, confidence=0.95)
    plain = t.compare(_policy(margin=0.0, min_frauds=30))
    assert plain is not None and plain.challenger_ap is not None and plain.champion_ap is not None
    if plain.challenger_ap <= plain.champion_ap:  # make the noisy line the one that looks better
        t.quality["champion"], t.quality["challenger"] = t.quality["challenger"], t.quality["champion"]
    t.labels_since_comparison = n
    assert t.compare(_policy(margin=0.0, min_frauds=30)).wins  # type: ignore[union-attr]  # without the bootstrap
    t.labels_since_comparison = n
    noise = t.compare(policy)
    assert noise is not None and not noise.wins and noise.interval is not None
    assert noise.interval[0] <= 0 <= noise.interval[1] and "within noise" in noise.why
    t.labels_since_comparison = n
    assert t.compare(policy).interval == noise.interval  # type: ignore[union-attr]  # seeded: the same figures
    clear = y * 3.0 + rng.normal(0, 1.0, n)
    t.set_challenger(FraudModel("logreg"))
    for i in range(n):
        t.quality["challenger"].add(float(clear[i]), bool(y[i]))
    t.labels_since_comparison = n
    won = t.compare(policy)
    assert won is not None and won.wins and won.interval is not None and won.interval[0] > 0


def test_the_bootstrap_resample_ap_is_the_ap_of_the_resample() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(300) < 0.1
    s = np.round(rng.random(300), 2)  # ties too
    drawn = rng.integers(0, 300, size=300)
    counts = np.bincount(drawn, minlength=300).astype(float)[None, :]
    assert _weighted_ap(y.astype(float), s, counts)[0] == pytest.approx(average_precision(y[drawn], s[drawn]))


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


class _Predictions:
    """A consumer of one predictions partition, as the trainer's tail uses it (getmany, pause, resume, position)."""

    def __init__(self, records: list[Any], fetch: int) -> None:
        self.records, self.fetch, self.at, self.paused = records, fetch, 0, False

    def assign(self, partitions: list[Any]) -> None:
        pass

    def seek(self, tp: Any, offset: int) -> None:
        self.at = offset

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        if self.paused:
            return {}
        batch = self.records[self.at : self.at + min(self.fetch, max_records)]
        self.at += len(batch)
        return {_TP: batch} if batch else {}

    def pause(self, tp: Any) -> None:
        self.paused = True

    def resume(self, tp: Any) -> None:
        self.paused = False

    async def position(self, tp: Any) -> int:
        return self.at


_TP = TopicPartition("predictions", 0)


def test_the_tail_reads_in_order_holds_what_is_not_due_paused_and_never_passes_the_reader_ahead() -> None:
    def record(offset: int, t: float) -> Any:
        value = dumps({"tx_id": f"p{offset}", "features": {}, "fraud_probability": 0.1, "feature_set": "fs",
                       "timestamp": datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")})  # fmt: skip
        return SimpleNamespace(offset=offset, value=value)

    times = [1.0, 2.0, 9.0, 3.0, 4.0, 5.0]  # the third is out of order: the ones behind it wait for it
    consumer = _Predictions([record(i, t) for i, t in enumerate(times)], fetch=4)
    tail = _Tail("tail", consumer, [_TP])  # type: ignore[arg-type]
    handled: list[str] = []
    asyncio.run(tail.start({"predictions/0": 0}, lambda tp: None))
    ahead = {"predictions/0": 6}
    assert asyncio.run(tail.step(5.0, ahead, lambda p: handled.append(p[0]))) == 2
    assert handled == ["p0", "p1"] and consumer.paused and [o for o, _ in tail.held[_TP]] == [2, 3]
    assert asyncio.run(tail.positions()) == {"predictions/0": 2}  # the first not handled
    assert asyncio.run(tail.step(5.0, ahead, handled.append)) == 0  # still not due: held, nothing more fetched
    assert asyncio.run(tail.step(9.5, {"predictions/0": 5}, lambda p: handled.append(p[0]))) == 3
    assert handled == ["p0", "p1", "p2", "p3", "p4"] and asyncio.run(tail.positions()) == {"predictions/0": 5}
    assert [o for o, _ in tail.held[_TP]] == [5]  # it read on, and holds p5: the reader ahead is there
