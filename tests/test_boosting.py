"""The gbdt family: its window, its retrains, its compiled trees against LightGBM's own predict, batch scoring for
every family, and what a published version and the trainer's state carry."""

from __future__ import annotations

import math
import pickle
import random

import numpy as np
import pytest

from app.learning.boosting import CompiledTrees, LabelWindow, train_booster
from app.learning.label_store import LabelStore
from app.learning.model import FraudModel, model_bytes
from app.learning.snapshots import load_model_snapshot, model_snapshot
from app.learning.training import Training, training_for
from app.settings import load
from tests.test_model import SMALL, draw, trained

GBDT = "gbdt:trees=20,every=500,minleaf=5"


def booster_and_data(seed: int, rows: int = 4000, features: int = 8) -> tuple[object, np.ndarray]:
    """A booster on an interaction a single split cannot draw, and held-out rows (a few exactly at thresholds)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features))
    y = (x[:, 0] + x[:, 1] * x[:, 2] + rng.normal(scale=0.5, size=rows)) > 1.5
    booster = train_booster(x, y.astype(float), {"num_leaves": 15, "max_depth": 5, "min_data_in_leaf": 5}, 40)
    held_out = rng.normal(size=(500, features))
    held_out[:20, 0] = x[:20, 0]  # values the training saw: thresholds lie between them, ties go left
    return booster, held_out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compiled_trees_score_what_lightgbm_predicts(seed: int) -> None:
    booster, x = booster_and_data(seed)
    trees = CompiledTrees(booster, [f"f{i}" for i in range(x.shape[1])])
    raw = booster.predict(x, raw_score=True)  # type: ignore[attr-defined]
    assert np.array_equal(trees.raw(x), raw)  # the same sum, bit for bit
    assert trees.probabilities(x) == booster.predict(x).tolist()  # type: ignore[attr-defined]
    for i in (0, 7, 499):  # alone, through the one-row walk
        assert trees.raw(x[i : i + 1])[0] == raw[i]
    for rows in (2, 3, 9):  # small batches: the sum over the trees is still sequential
        assert np.array_equal(trees.raw(x[10 : 10 + rows]), raw[10 : 10 + rows])
    assert trees.depth <= 5 and trees.trees == 40
    shifted = CompiledTrees(booster, trees.names, offset=-1.25)
    assert np.array_equal(shifted.raw(x), trees.raw(x) - 1.25)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_one_row_walk_scores_what_lightgbm_predicts_and_reasons_as_a_batch(seed: int) -> None:
    """The one-row path (its own layout of the nodes: the splits and their leaf siblings compared, the rest pointing
    to themselves) against LightGBM's predict, and its reasons against the batch's, for every held-out row."""
    booster, x = booster_and_data(seed)
    trees = CompiledTrees(booster, [f"f{i}" for i in range(x.shape[1])])
    assert [trees.score_row(row, 0)[0] for row in x] == booster.predict(x).tolist()  # type: ignore[attr-defined]
    one = trees._one_row()
    assert one.evaluated < len(trees.feature)  # the pairs of leaves are not compared
    for k in (1, 3, x.shape[1]):  # k = every feature: no pick left out but those credited nothing or less
        assert [trees.score_row(row, k) for row in x] == trees.score(x, k)
    shifted = CompiledTrees(booster, trees.names, offset=-1.25)
    assert [shifted.score_row(row, 3) for row in x[:50]] == shifted.score(x[:50], 3)


def test_equal_credits_name_the_first_feature_first_alone_and_in_a_batch() -> None:
    """Three trees of one split each raising the value by 1 to the right (each credits its feature 1): ties come in
    the features' order; a feature its path credits nothing or less is no reason."""
    rise = [_split(f, 0.0, {"leaf_value": -0.5 if f == 2 else 0.0}, {"leaf_value": 1.0}) for f in (1, 0, 2)]
    trees = CompiledTrees(_Dumped(rise), ["a", "b", "c"])
    x = np.array([[1.0, 1.0, 1.0], [1.0, -1.0, 1.0], [-1.0, -1.0, -1.0], [-1.0, 1.0, -1.0]])
    expected = {
        3: [["a", "b", "c"], ["a", "c"], [], ["b"]],
        2: [["a", "b"], ["a", "c"], [], ["b"]],
        1: [["a"], ["a"], [], ["b"]],
    }
    for k, reasons in expected.items():
        assert [r for _, r in trees.score(x, k)] == reasons
        assert [trees.score_row(row, k)[1] for row in x] == reasons
    assert [trees.score_row(row, 0)[1] for row in x] == [[]] * 4


def test_the_derived_tables_are_not_pickled_and_are_rebuilt_the_same() -> None:
    booster, x = booster_and_data(4)
    trees = CompiledTrees(booster, [f"f{i}" for i in range(x.shape[1])])
    scored = [trees.score_row(row, 3) for row in x[:30]] + trees.score(x, 3)
    assert {"_one", "_names"} <= set(trees.__dict__)
    again = pickle.loads(pickle.dumps(trees))
    assert not {"_one", "_names", "_picker"} & set(again.__dict__) and again._leaves is None
    assert [again.score_row(row, 3) for row in x[:30]] + again.score(x, 3) == scored


def test_reasons_name_the_features_the_paths_raise_and_survive_pickling() -> None:
    booster, x = booster_and_data(3)
    trees = CompiledTrees(booster, [f"f{i}" for i in range(x.shape[1])])
    scored = trees.score(x, 3)
    risky = [reasons for p, reasons in scored if p > 0.9]
    assert risky and all(reasons and reasons[0] in ("f0", "f1", "f2") for reasons in risky)
    assert all(len(reasons) <= 3 for _, reasons in scored)
    again = pickle.loads(pickle.dumps(trees))
    assert again._leaves is None  # rebuilt where asked, never carried
    assert again.score(x, 3) == scored
    assert [trees.score(x[i : i + 1], 3)[0] for i in range(20)] == scored[:20]


def test_the_window_keeps_frauds_longer_than_negatives_and_knows_by_how_much() -> None:
    window = LabelWindow(negatives=100, frauds=50)
    rng = random.Random(0)
    for i in range(2000):
        y = i % 20 == 0  # 100 frauds, 1,900 negatives
        window.add({"amount": float(i), "noise": rng.random()}, y)
    x, y = window.arrays()
    assert len(window) == 150 and x.shape == (150, 2) and y.sum() == 50
    assert x[y == 0, 0].min() == 1895.0  # the last 100 negatives (five frauds among the last 100 labels)
    assert x[y == 1, 0].min() == 1000.0  # the last 50 frauds: ten times further back
    assert window.span(False) == 2000 - 1895 and window.span(True) == 2000 - 1000
    assert window.span_ratio() == pytest.approx(1000 / 105)


def test_the_model_retrains_every_n_labels_and_scores_the_prior_before() -> None:
    model, rng = FraudModel(GBDT, prior_fraud_rate=0.02), random.Random(1)
    for _ in range(499):
        model.learn_one(*draw(rng))
    assert model.learner.trees is None and model.learner.retrains == 0  # type: ignore[union-attr]
    assert model.predict_proba_one({"amount": 390.0, "noise": 0.0, "is_night": 0.0}) == pytest.approx(0.02)
    model.learn_one(*draw(rng))
    assert model.learner.retrains == 1 and model.learner.trees is not None  # type: ignore[union-attr]
    for _ in range(999):
        model.learn_one(*draw(rng))
    assert model.learner.retrains == 2  # type: ignore[union-attr]
    assert model.predict_proba_one({"amount": 390.0, "noise": 0.0, "is_night": 0.0}) > 0.8
    assert model.predict_proba_one({"amount": 30.0, "noise": 0.0, "is_night": 0.0}) < 0.1


def test_in_the_background_learn_one_never_waits_and_the_trees_are_the_same_as_inline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The trainer's setting: a retrain on a thread (learn_one returns while it runs; the old trees score), its
    trees taken at the first label after it is done: the same trees as the inline retrain on the same window; a
    checkpoint taken while it runs says it is still due."""
    import threading

    from app.learning import boosting

    gate = threading.Event()
    real_train = boosting.train_booster

    def held_train(*args: object, **kwargs: object) -> object:
        assert gate.wait(30)
        return real_train(*args, **kwargs)  # type: ignore[arg-type]

    inline, background = FraudModel(GBDT, prior_fraud_rate=0.02), FraudModel(GBDT, prior_fraud_rate=0.02)
    background.train_in_background()
    rng_a, rng_b = random.Random(1), random.Random(1)
    for _ in range(499):
        inline.learn_one(*draw(rng_a))
        background.learn_one(*draw(rng_b))
    monkeypatch.setattr("app.learning.model.train_booster", held_train)
    inline_last = draw(rng_a)
    background.learn_one(*draw(rng_b))  # the 500th: the retrain starts and waits on the gate; learn_one returned
    learner = background.learner
    assert learner._pending is not None and not learner._pending.done()  # type: ignore[union-attr]
    assert learner.trees is None and learner.retrains == 0  # type: ignore[union-attr]
    assert background.predict_proba_one({"amount": 390.0, "noise": 0.0, "is_night": 0.0}) == pytest.approx(0.02)
    restored = pickle.loads(model_bytes(background))  # a checkpoint meanwhile: the retrain is still due
    assert restored.learner._pending is None and restored.learner.labels_at_training == 0  # type: ignore[union-attr]
    gate.set()
    background.wait_for_retrain(30)
    monkeypatch.setattr("app.learning.model.train_booster", real_train)
    inline.learn_one(*inline_last)
    background.learn_one(*draw(rng_b))  # the next label takes the finished trees
    assert learner.retrains == 1 and learner.trees is not None  # type: ignore[union-attr]
    probe = [{"amount": a, "noise": 0.0, "is_night": n} for a in (30.0, 250.0, 390.0) for n in (0.0, 1.0)]
    assert [inline.predict_proba_one(x) for x in probe] == [background.predict_proba_one(x) for x in probe]
    restored.learn_one(*draw(random.Random(5)))  # the restored copy retrains at its next label (inline by default)
    assert restored.learner.retrains == 1  # type: ignore[union-attr]


def test_the_longer_fraud_span_is_taken_out_of_the_probability() -> None:
    """Frauds held over 10 times the negatives' span: the logit is lowered by log(10), so the probability keeps
    the odds of the labels as they came."""
    model, rng = FraudModel("gbdt:trees=20,every=3000,minleaf=5,negs=100,frauds=5000,neg=1"), random.Random(2)
    for _ in range(3000):
        model.learn_one(*draw(rng))
    window, trees = model.learner.window, model.learner.trees  # type: ignore[union-attr]
    assert window is not None and trees is not None and window.span_ratio() > 5.0
    assert trees.offset == pytest.approx(-math.log(window.span_ratio()))
    sampled = trained("gbdt:trees=20,every=3000,minleaf=5,neg=0.5")  # and the odds of the negatives sampled out
    assert sampled.learner.trees.offset == pytest.approx(  # type: ignore[union-attr]
        math.log(0.5) - math.log(sampled.learner.window.span_ratio())  # type: ignore[union-attr]
    )


@pytest.mark.parametrize("name", SMALL)
def test_score_many_is_score_one_for_every_family(name: str) -> None:
    model, rng = trained(name, labels=1500), random.Random(8)
    xs = [draw(rng)[0] for _ in range(60)]
    assert model.score_many(xs) == [model.score_one(x) for x in xs]
    assert model.score_many(xs[:1], k=1) == [model.score_one(xs[0], k=1)]
    assert model.score_many([]) == []


def test_a_published_version_carries_the_compiled_trees_not_the_window() -> None:
    model = trained(GBDT, labels=3000)
    raw = model_snapshot({"version": "v9"}, model, b"key")
    _, published = load_model_snapshot(raw, b"key")
    assert published.learner.window is None  # type: ignore[union-attr]
    assert model.learner.window is not None and len(model.learner.window) > 0  # type: ignore[union-attr]
    assert len(raw) < len(model_bytes(model)) / 2
    rng = random.Random(4)
    xs = [draw(rng)[0] for _ in range(100)]
    assert published.score_many(xs) == model.score_many(xs)
    published.learn_one(xs[0], True)  # a warm start learns again: a new window, the same trees until a retrain
    assert len(published.learner.window) == 1  # type: ignore[union-attr, arg-type]
    assert published.score_many(xs) == model.score_many(xs)


def test_the_trainer_state_keeps_the_window_so_learning_goes_on_after_a_restart() -> None:
    model = trained(GBDT, labels=1200)
    training = training_for(load({}), model)
    parts = training.state_parts()  # the window's rows go to the label store, its counters in the state
    restored = Training.from_parts(parts, labels=training.labels).champion
    rng = random.Random(6)
    for _ in range(800):  # retrains at 1,500 and 2,000 on both: the same windows, the same trees
        x, y = draw(rng)
        model.learn_one(x, y)
        restored.learn_one(x, y)
    assert restored.learner.retrains == model.learner.retrains == 4  # type: ignore[union-attr]
    xs = [draw(rng)[0] for _ in range(50)]
    assert restored.score_many(xs) == model.score_many(xs)


def _records(window: LabelWindow) -> dict[tuple[bool, int], bytes]:
    return {(y, slot): record for y, slot, record in window.changed()}


def _filled(window: LabelWindow, n: int, start: int = 0) -> LabelWindow:
    for i in range(start, start + n):
        window.add({"amount": float(i), "noise": float(-i)}, i % 4 == 0)
    return window


def _same(a: LabelWindow, b: LabelWindow) -> bool:
    xa, ya = a.arrays()
    xb, yb = b.arrays()
    return (
        np.array_equal(xa, xb)
        and np.array_equal(ya, yb)
        and a.span_ratio() == b.span_ratio()
        and a.digest() == b.digest()
        and (a.count, a.clock, a.names) == (b.count, b.clock, b.names)
    )


def test_a_window_without_its_rows_restored_from_its_records_is_the_window() -> None:
    window = _filled(LabelWindow(negatives=30, frauds=10), 25)
    records = _records(window)
    assert len(records) == 25 and not window.changed()  # each slot once; then nothing more to write
    meta = pickle.loads(pickle.dumps(window.without_rows()))
    assert not meta.rows and meta.count == window.count and meta.id == window.id
    assert len(pickle.dumps(window.without_rows())) < 1000 < len(pickle.dumps(window))
    assert meta.restore((y, slot, r) for (y, slot), r in records.items())
    assert _same(meta, window)
    _filled(window, 5, start=25)
    _filled(meta, 5, start=25)  # the restored window goes on in step
    assert _same(meta, window) and _records(meta) == _records(window)


def test_the_ring_overwrites_its_slots_and_only_the_slots_written_since_are_records_again() -> None:
    window = _filled(LabelWindow(negatives=30, frauds=10), 200)  # 150 negatives, 50 frauds: both rings wrapped
    store = _records(window)
    assert len(store) == 40  # one record per slot, however often the ring wrote it
    _filled(window, 8, start=200)  # 6 negatives, 2 frauds: the slots after the last ones
    changed = _records(window)
    assert sorted(changed) == [(False, s) for s in range(0, 6)] + [(True, s) for s in range(0, 2)]
    store.update(changed)  # what a compacted changelog keeps: the newest record per slot
    restored = pickle.loads(pickle.dumps(window.without_rows()))
    assert restored.restore((y, slot, r) for (y, slot), r in store.items())
    assert _same(restored, window) and restored.span(True) > restored.span(False)  # spans too (the oldest held)


def test_a_window_missing_a_held_row_starts_empty_rather_than_learn_zeros() -> None:
    window = _filled(LabelWindow(negatives=30, frauds=10), 25)
    records = _records(window)
    meta = window.without_rows()
    del records[(False, 3)]
    assert not meta.restore((y, slot, r) for (y, slot), r in records.items())
    assert len(meta) == 0 and meta.clock == 0 and meta.id != window.id


def _rebuilt(changelog: dict[bytes, bytes | None]) -> LabelStore:
    """The label store a new owner rebuilds from the compacted changelog (tombstones leave nothing)."""
    store = LabelStore.in_memory()
    for key, value in changelog.items():
        if value is not None:
            store.partition.apply({key: value}, 0, 0.0)
    return store


def test_the_trainer_state_carries_no_window_rows_and_each_publication_only_the_rows_added() -> None:
    """The trainer's cycle: state_parts (rows staged), the changelog gets the label store's changes, the store
    commits; a new owner restores from the state and the store: the same window, the same next retrain."""
    name = "gbdt:trees=10,every=400,minleaf=5,negs=500,frauds=500,neg=1"
    model = trained(name, labels=1500)
    training = training_for(load({}), model)
    window = model.label_window
    assert window is not None and len(window) == 1000  # both rings full
    parts = training.state_parts()
    changelog = dict(training.labels.changes())  # the first publication: every held slot once
    assert len(changelog) == 1000
    training.labels.commit(len(changelog))
    window_bytes = sum(len(r) for r in changelog.values())
    state_bytes = sum(map(len, parts))
    assert state_bytes < len(pickle.dumps(training)) - window_bytes  # the rows are not in it (a plain pickle's are)
    rng = random.Random(9)
    for _ in range(100):
        model.learn_one(*draw(rng))
    parts = training.state_parts()
    delta = training.labels.changes()
    assert len(delta) == 100 and sum(map(len, parts)) < state_bytes * 1.1  # the rows added, the same small state
    changelog.update(delta)
    training.labels.commit(len(changelog))

    # A new owner: the label store rebuilt from its (compacted) changelog, the state from the state topic.
    restored = Training.from_parts(parts, labels=_rebuilt(changelog))
    assert _same(restored.champion.label_window, window)  # type: ignore[arg-type]
    for _ in range(500):  # a retrain at 2,000 on both
        x, y = draw(rng)
        model.learn_one(x, y)
        restored.champion.learn_one(x, y)
    assert restored.champion.learner.retrains == model.learner.retrains == 5  # type: ignore[union-attr]
    xs = [draw(rng)[0] for _ in range(50)]
    assert restored.champion.score_many(xs) == model.score_many(xs)


def test_a_replaced_window_is_deleted_from_the_store_and_the_expiry_sweep_passes_the_rows_by() -> None:
    training = training_for(load({}), trained(GBDT, labels=300))
    training.set_challenger(trained(GBDT, labels=200, seed=1))
    training.on_label("tx-1", True, 1.0)  # a label waiting in the same store
    training.state_parts()
    training.labels.commit(1)
    old = training.challenger.label_window  # type: ignore[union-attr]
    assert old is not None and len(list(training.labels.window_rows(old.id))) == len(old)
    training.set_challenger(trained(GBDT, labels=100, seed=2))
    training.state_parts()
    assert not list(training.labels.window_rows(old.id))  # deleted in the next publication
    new = training.challenger.label_window  # type: ignore[union-attr]
    assert new is not None and len(list(training.labels.window_rows(new.id))) == len(new) > 0
    training.labels.commit(2)
    entries, after = training.labels.scan(b"", 10_000)
    assert [e[0] for e in entries] == [b"tx-1"] and after == b""  # the labels only: the sweep stops at the rows


def test_a_state_pickled_with_its_window_rows_keeps_them_and_writes_them_once() -> None:
    """A state published before the rows were records: read as it is, every held row staged at the next
    publication."""
    model = trained(GBDT, labels=300)
    training = training_for(load({}), model)
    for attribute in ("id", "dirty"):  # a window of the release before: neither
        del model.label_window.__dict__[attribute]  # type: ignore[union-attr]
    legacy = [pickle.dumps(training)]  # the plain pickle: the rows inside
    restored = Training.from_parts(legacy, labels=LabelStore.in_memory())
    window = restored.champion.label_window
    assert window is not None and _same(window, model.label_window)  # type: ignore[arg-type]
    restored.state_parts()
    assert len(restored.labels.changes()) == len(window) > 0
    restored.state_parts()
    assert len(restored.labels.changes()) == len(window)  # once: still the same staged slots


class _Dumped:
    """A booster's dump without LightGBM: the trees given, as ``dump_model`` returns them."""

    def __init__(self, trees: list[dict[str, object]]) -> None:
        self.trees = trees

    def dump_model(self) -> dict[str, object]:
        return {"tree_info": [{"tree_structure": tree} for tree in self.trees]}


def _split(feature: int, threshold: float, left: dict[str, object], right: dict[str, object]) -> dict[str, object]:
    return {"split_index": 0, "decision_type": "<=", "split_feature": feature, "threshold": threshold,
            "internal_value": 0.0, "left_child": left, "right_child": right}  # fmt: skip


def test_trees_of_one_leaf_anywhere_score_their_leaf_alone_and_in_batches() -> None:
    """A tree that is a single leaf (LightGBM's when no split gains) after deeper ones, the last node of all: the
    batch walk's first levels must not read past it."""
    deep = _split(0, 0.5, _split(1, 0.0, {"leaf_value": 1.0}, {"leaf_value": 2.0}), {"leaf_value": 4.0})
    trees = CompiledTrees(_Dumped([deep, {"leaf_value": 0.25}]), ["a", "b"])
    x = np.array([[0.0, -1.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.0]])
    expected = [1.25, 2.25, 4.25, 1.25]  # x <= threshold goes left, ties included
    assert trees.raw(x).tolist() == expected
    assert [trees.raw(x[i : i + 1])[0] for i in range(4)] == expected
    assert [trees.score_row(x[i], 0)[0] for i in range(4)] == [p for p, _ in trees.score(x, 0)]


BLEND = "blend:trees=20,every=500,minleaf=5,warm=300"


def test_a_blend_scores_the_weighted_average_of_its_parts_logits() -> None:
    """The same labels to a blend, the default linear model and a gbdt alone: the blend's score is the fixed average
    of the two models' logits (its gbdt the same trees as the plain one: the same sampler), the linear one's alone
    before the first retrain."""
    blend = FraudModel(BLEND + ",w=0.25", prior_fraud_rate=0.02)
    linear = FraudModel("logreg:opt=adagrad,lr=0.1,bins=8,warm=300", prior_fraud_rate=0.02)
    boosted = FraudModel("gbdt:trees=20,every=500,minleaf=5", prior_fraud_rate=0.02)
    rng, probe = random.Random(3), random.Random(4)
    xs = [draw(probe)[0] for _ in range(40)]

    def logit(p: float) -> float:
        return math.log(p / (1.0 - p))

    for labels in range(1, 1201):
        x, y = draw(rng)
        for model in (blend, linear, boosted):
            model.learn_one(x, y)
        if labels in (499, 1200):
            for x_ in xs:
                p_linear, p_boosted = linear.predict_proba_one(x_), boosted.predict_proba_one(x_)
                expected = (
                    p_linear
                    if labels == 499
                    else 1 / (1 + math.exp(-(0.75 * logit(p_linear) + 0.25 * logit(p_boosted))))
                )
                assert blend.predict_proba_one(x_) == pytest.approx(expected, rel=1e-9)
    assert blend.learner.boosted.retrains == 2  # type: ignore[union-attr]
    assert blend.score_many(xs) == [blend.score_one(x) for x in xs]
    high = blend.score_one({"amount": 390.0, "noise": 0.0, "is_night": 0.0}, k=2)
    assert high[0] > 0.8 and high[1][0] == "amount" and len(high[1]) <= 2


def test_a_blend_corrects_its_own_negative_sampling_and_publishes_without_the_window() -> None:
    full, sampled = trained(BLEND, labels=1500), trained(BLEND + ",neg=0.5", labels=1500)
    x = {"amount": 230.0, "noise": 0.0, "is_night": 0.0}
    assert 0.0 < sampled.predict_proba_one(x) < 1.0 and 0.0 < full.predict_proba_one(x) < 1.0
    lean = sampled.for_scoring()
    assert lean.learner.boosted.window is None and sampled.learner.boosted.window is not None  # type: ignore[union-attr]
    restored = pickle.loads(model_bytes(lean))
    assert restored.predict_proba_one(x) == sampled.predict_proba_one(x)
    # neg=0.5 learns the legitimate labels at twice the odds: the averaged logit comes down by log 0.5 (the gbdt's
    # own gneg sampling is in its trees' offset already).
    p_linear = sampled.learner.linear.proba(x)  # type: ignore[union-attr]
    p_boosted = sampled.learner.boosted.proba(x)  # type: ignore[union-attr]
    logit = 0.5 * math.log(p_linear / (1 - p_linear)) + 0.5 * math.log(p_boosted / (1 - p_boosted)) + math.log(0.5)
    assert sampled.predict_proba_one(x) == pytest.approx(1 / (1 + math.exp(-logit)), rel=1e-9)
    assert full.learner.log_share == 0.0  # type: ignore[union-attr]


def test_a_blend_s_gbdt_window_goes_to_the_label_store_and_comes_back_from_it() -> None:
    """A blend carries a gbdt and its window: the trainer stages that window's rows as records too (a state without
    them and a store without them would restore an empty window)."""
    model = trained(BLEND + ",gneg=1", labels=1500)
    training = training_for(load({}), model)
    window = model.label_window
    assert window is not None and window is model.learner.boosted.window and len(window) > 0  # type: ignore[union-attr]
    parts = training.state_parts()
    changelog = dict(training.labels.changes())
    assert len(changelog) == len(window)  # every held slot, once
    training.labels.commit(len(changelog))
    restored = Training.from_parts(parts, labels=_rebuilt(changelog))
    assert _same(restored.champion.label_window, window)  # type: ignore[arg-type]


def test_a_raw_score_too_negative_for_exp_scores_zero_alone_and_in_batches() -> None:
    """A raw score under -709 makes ``math.exp(-raw)`` raise OverflowError (a full-size replay met one): the
    probability is 0.0, the same through the one-row walk and the batch walk."""
    deep = _split(0, 0.5, {"leaf_value": -800.0}, {"leaf_value": 2.0})
    trees = CompiledTrees(_Dumped([deep]), ["a"])
    x = np.array([[0.0], [1.0]])
    assert [p for p, _ in trees.score(x, 0)] == [0.0, trees.probabilities(x)[1]]
    assert trees.probabilities(x)[1] == pytest.approx(1.0 / (1.0 + math.exp(-2.0)))
    assert [trees.score_row(row, 1)[0] for row in x] == trees.probabilities(x)
    shifted = CompiledTrees(_Dumped([deep]), ["a"], offset=-1000.0)
    assert shifted.probabilities(x) == [0.0, 0.0]
