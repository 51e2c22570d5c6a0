from __future__ import annotations

import pytest

from app.learning.join import expired, join, label_entry, scored_entry
from app.learning.model import FraudModel


def test_join_in_either_order_learns_once() -> None:
    x = {"amount": 3.0}
    pair, keep = join(None, scored_entry(x, 100.0))
    assert pair is None and keep == scored_entry(x, 100.0)
    pair, keep = join(keep, label_entry(True, 200.0))
    assert pair is not None and (pair.x, pair.y) == (x, True) and keep is None

    pair, keep = join(None, label_entry(False, 200.0))
    assert pair is None
    pair, keep = join(keep, scored_entry(x, 100.0))
    assert pair is not None and (pair.x, pair.y) == (x, False) and keep is None


def test_repeated_label_replaces_the_waiting_one() -> None:
    _, keep = join(None, label_entry(False, 1.0))
    pair, keep = join(keep, label_entry(True, 2.0))
    assert pair is None and keep == label_entry(True, 2.0)


def test_expiry_is_in_event_time() -> None:
    assert expired(scored_entry({}, 100.0), watermark_s=201.0, ttl_s=100.0)
    assert not expired(scored_entry({}, 100.0), watermark_s=200.0, ttl_s=100.0)


def test_model_score_rises_for_a_pattern_labelled_fraud() -> None:
    model = FraudModel()
    fraud = {"amount": 900.0, "hour_of_day": 3.0, "is_night": 1.0}
    normal = {"amount": 40.0, "hour_of_day": 14.0, "is_night": 0.0}
    before = model.predict_proba_one(fraud)
    for _ in range(200):
        model.learn_one(fraud, True)
        model.learn_one(normal, False)
    assert model.predict_proba_one(fraud) > before + 0.3
    assert model.predict_proba_one(normal) < 0.5
    assert model.labels_learned == 400
    assert "amount" in model.reasons(fraud)


def test_score_one_equals_predict_proba_one_and_reasons() -> None:
    import random

    model, rng = FraudModel(), random.Random(1)
    for _ in range(500):
        x = {"amount": rng.uniform(0, 500), "hour_of_day": float(rng.randint(0, 23)), "z": rng.gauss(0, 1)}
        model.learn_one(x, x["amount"] > 400)
    for _ in range(100):
        x = {"amount": rng.uniform(0, 500), "hour_of_day": float(rng.randint(0, 23)), "z": rng.gauss(0, 1)}
        probability, reasons = model.score_one(x)
        assert probability == model.predict_proba_one(x)
        assert reasons == model.reasons(x)


def test_score_one_on_every_feature_equals_the_pipeline_and_the_full_sort_of_contributions() -> None:
    import random

    from app.features.halves import FEATURE_NAMES

    model, rng = FraudModel(), random.Random(7)

    def draw() -> dict[str, float]:
        return {name: rng.choice([0.0, 1.0, rng.uniform(-50, 500), rng.expovariate(0.01)]) for name in FEATURE_NAMES}

    for _ in range(300):
        x = draw()
        model.learn_one(x, rng.random() < 0.2)
    weights = model.classifier.weights.values()
    assert min(weights) < 0 < max(weights)  # reasons must skip the features that lower the score
    for _ in range(300):
        x = draw()
        probability, reasons = model.score_one(x)
        assert probability == pytest.approx(model.pipeline.predict_proba_one(x)[True], rel=1e-12, abs=1e-12)
        scaled = model.scaler.transform_one(x)
        every = sorted(((model.classifier.weights.get(n, 0.0) * v, n) for n, v in scaled.items()), reverse=True)
        assert reasons == [n for c, n in every[:3] if c > 0.0]
    at_means = {name: model.scaler.means[name] for name in FEATURE_NAMES}  # every scaled value 0: no reason
    assert model.score_one(at_means)[1] == []
    raising = max(FEATURE_NAMES, key=lambda n: model.classifier.weights[n])
    assert model.score_one({**at_means, raising: at_means[raising] + 1.0})[1] == [raising]
