from __future__ import annotations

import pytest

from app.learning.model import FraudModel
from app.learning.offline import replay_offline
from app.learning.training import pack
from app.records import Prediction
from app.serialization import dumps
from app.settings import Settings
from tests.cases import transaction

DAY_S = 86400.0


class Recording(FraudModel):
    """The replay's champion, noting what it is taught: (tx_id of the scored features, label), in order."""

    def __init__(self) -> None:
        super().__init__()
        self.scored: dict[bytes, str] = {}
        self.taught: list[tuple[str, bool]] = []

    def score_one(self, x: dict[str, float], k: int = 3) -> tuple[float, list[str]]:
        self.scored[pack(x)] = f"tx-{int(x['amount'])}"  # the amount tells the transactions apart here
        return super().score_one(x, k)

    def learn_one(self, x: dict[str, float], y: bool) -> None:
        self.taught.append((self.scored[pack(x)], y))
        super().learn_one(x, y)


def _tx(i: int, day: float) -> tuple[str, bytes, bytes]:
    ts = f"2018-04-{1 + int(day):02d}T{int(day % 1 * 24):02d}:00:00Z"
    return "transaction", b"c", dumps(transaction(i, timestamp=ts, amount=float(i)))


def _label(i: int, day: float, is_fraud: bool) -> tuple[str, bytes, bytes]:
    ts = f"2018-04-{1 + int(day):02d}T{int(day % 1 * 24):02d}:00:00Z"
    return "label", b"", dumps({"tx_id": f"tx-{i}", "is_fraud": is_fraud, "timestamp": ts})


def _replay(events: list[tuple[str, bytes, bytes]], **settings: float) -> Recording:
    model = Recording()
    # The champion itself scores (not its published snapshots): the recording notes what it scored.
    predictions = list(replay_offline(events, Settings(**settings), model, published=False))  # type: ignore[arg-type]
    assert [p.tx_id for p in predictions if isinstance(p, Prediction)] == sorted(model.scored.values())
    return model


def test_the_replay_learns_a_pair_once_whichever_half_comes_first() -> None:
    model = _replay([_tx(1, 0.0), _label(1, 0.5, True), _label(2, 0.6, False), _tx(2, 0.7), _tx(3, 0.8)])
    assert model.taught == [("tx-1", True), ("tx-2", False)]
    assert model.labels_learned == 2


def test_a_resent_label_replaces_the_waiting_one() -> None:
    model = _replay([_label(1, 0.1, False), _label(1, 0.2, True), _tx(1, 0.5)])
    assert model.taught == [("tx-1", True)]


def test_the_replay_learns_implicit_negatives_at_the_horizon_and_late_frauds_within_the_grace() -> None:
    """Production's join, not a pair-as-soon-as-both-halves-meet: a transaction without a label LABEL_HORIZON_S after
    it is learned as legitimate once the stream passes the horizon (the tail); a fraud label that comes after that is
    learned when the stream passes the grace too (the grace tail), a later one is not."""
    events = [_tx(1, 0.0), _tx(2, 0.25), _tx(3, 0.5), _label(3, 1.0, False), _tx(4, 2.3), _label(1, 2.4, True)]
    events += [_tx(5, 5.0), _label(2, 5.1, True)]
    model = _replay(events, label_horizon_s=2 * DAY_S, late_label_grace_s=2 * DAY_S)
    assert model.taught == [
        ("tx-3", False),  # its label came while its prediction was in the head's window
        ("tx-1", False),  # day 2.3 passes days 0 and 0.25 + the horizon: implicit negatives, in scoring order
        ("tx-2", False),
        ("tx-4", False),  # day 5 passes its horizon (the tail reads before the grace tail)
        ("tx-1", True),  # ... and day 0 + horizon + grace: the late fraud
    ]  # tx-2's fraud label came after its grace: never learned


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
