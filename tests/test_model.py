"""The model families chosen by name: parsing, learning a pattern, sampling of legitimate labels, checkpoints."""

from __future__ import annotations

import pickle
import random

import pytest

from app.learning.model import COMMON, DEFAULT_MODEL, FAMILIES, FraudModel, _poisson1, parse_name
from app.settings import Settings, load

# Small configurations of every family, quick enough to learn a pattern from a few thousand labels.
SMALL = [
    "logreg",
    "logreg:opt=adam,lr=0.01,neg=0.3",
    "logreg:opt=adagrad,lr=0.1,l2=0.0001",
    "logreg:opt=adagrad,lr=0.1,bins=8,warm=300,log=1",
    "hoeffding:grace=50",
    "arf:trees=3,grace=20,neg=0.5",
    "bagged-ht:trees=3,grace=50,leaf=nb",
    "leaflr:trees=2,grace=50,neg=0.5",
    "gbdt:trees=20,every=500,minleaf=5,neg=0.5",
]


def draw(rng: random.Random) -> tuple[dict[str, float], bool]:
    """A rule the simulator also uses (amount over 220 is fraud), with a noise feature beside it."""
    x = {"amount": rng.uniform(0.0, 400.0), "noise": rng.gauss(0.0, 1.0), "is_night": float(rng.random() < 0.3)}
    return x, x["amount"] > 220.0


def trained(name: str, labels: int = 3000, seed: int = 0) -> FraudModel:
    model, rng = FraudModel(name), random.Random(seed)
    for _ in range(labels):
        model.learn_one(*draw(rng))
    return model


def test_names_parse_to_the_family_defaults_with_overrides() -> None:
    family, params = parse_name("arf:trees=4,neg=0.25,leaf=nb")
    assert family == "arf"
    assert params == {**FAMILIES["arf"], **COMMON, "trees": 4, "neg": 0.25, "leaf": "nb"}
    assert isinstance(params["trees"], int) and isinstance(params["neg"], float)
    assert parse_name("logreg") == ("logreg", FAMILIES["logreg"] | COMMON)


@pytest.mark.parametrize(
    "name",
    ["svm", "logreg:trees=3", "logreg:lr", "logreg:lr=fast", "logreg:opt=rmsprop", "arf:neg=0", "hoeffding:neg=1.5"],
)
def test_unknown_or_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        FraudModel(name)


def test_the_default_setting_names_the_default_model() -> None:
    assert Settings().model_name == DEFAULT_MODEL
    assert FraudModel(load({}).model_name).name == DEFAULT_MODEL
    assert load({"MODEL_NAME": "hoeffding:grace=50"}).model_name == "hoeffding:grace=50"


@pytest.mark.parametrize("name", SMALL)
def test_a_cold_model_scores_the_prior(name: str) -> None:
    model = FraudModel(name, prior_fraud_rate=0.02)
    assert model.predict_proba_one({"amount": 10.0, "noise": 0.0, "is_night": 0.0}) == pytest.approx(0.02)


@pytest.mark.parametrize("name", SMALL)
def test_every_family_learns_the_amount_rule(name: str) -> None:
    model = trained(name)
    rng = random.Random(99)
    held_out = [draw(rng) for _ in range(400)]
    frauds = [model.predict_proba_one(x) for x, y in held_out if y]
    legitimate = [model.predict_proba_one(x) for x, y in held_out if not y]
    # Ranking, as the benchmark measures it: most fraud scores above most legitimate ones.
    above = sum(f > g for f in frauds for g in legitimate) / (len(frauds) * len(legitimate))
    assert above > 0.9
    assert model.labels_learned == 3000
    assert "amount" in model.reasons({"amount": 390.0, "noise": 0.0, "is_night": 0.0})


@pytest.mark.parametrize("name", SMALL)
def test_score_one_is_the_probability_and_the_reasons(name: str) -> None:
    model, rng = trained(name, labels=1500), random.Random(5)
    for _ in range(50):
        x, _ = draw(rng)
        probability, reasons = model.score_one(x, k=2)
        assert probability == model.predict_proba_one(x)
        assert reasons == model.reasons(x, k=2)
        assert 0.0 <= probability <= 1.0 and len(reasons) <= 2


def test_sampling_learns_every_fraud_and_a_share_of_legitimate_labels() -> None:
    model, rng = FraudModel("logreg:neg=0.25"), random.Random(3)
    labels = [draw(rng) for _ in range(8000)]
    for x, y in labels:
        model.learn_one(x, y)
    legitimate = sum(not y for _, y in labels)
    assert model.labels_learned == len(labels)
    assert model.labels_skipped == pytest.approx(0.75 * legitimate, rel=0.05)  # frauds are never skipped
    again = FraudModel("logreg:neg=0.25")
    for x, y in labels:
        again.learn_one(x, y)
    probe = {"amount": 230.0, "noise": 0.1, "is_night": 1.0}
    assert again.predict_proba_one(probe) == model.predict_proba_one(probe)  # same labels, same model


def test_sampled_probability_is_corrected_to_the_odds_of_all_labels() -> None:
    model = trained("hoeffding:grace=50,neg=0.2,leaf=nb")
    share = model.negative_share
    for amount in (50.0, 215.0, 230.0, 390.0):
        x = {"amount": amount, "noise": 0.0, "is_night": 0.0}
        raw = model.learner.proba(x)
        assert model.predict_proba_one(x) == pytest.approx(raw * share / (raw * share + 1.0 - raw))
    # Without correction the sampled model would alert far more at the same threshold.
    assert model.predict_proba_one({"amount": 100.0, "noise": 0.0, "is_night": 0.0}) < 0.5


def test_tree_reasons_are_the_features_tested_on_the_path_nearest_the_leaf_first() -> None:
    model = trained("hoeffding:grace=50", labels=6000)
    root = model.learner.model._root
    assert root.feature == "amount"  # the one informative feature is split first
    for x in ({"amount": 390.0, "noise": 1.5, "is_night": 1.0}, {"amount": 30.0, "noise": -1.0, "is_night": 0.0}):
        path = [node.feature for node in root.walk(x) if hasattr(node, "feature")]
        reasons = model.reasons(x, k=5)
        assert set(reasons) == set(path) and len(reasons) == len(set(path))
        assert reasons[0] == path[-1]
        assert model.reasons(x, k=1) == reasons[:1]


@pytest.mark.parametrize("name", SMALL)
def test_a_checkpoint_scores_and_learns_like_the_model(name: str) -> None:
    model = trained(name, labels=1000)
    copy = pickle.loads(pickle.dumps(model))
    rng = random.Random(11)
    for _ in range(200):
        x, y = draw(rng)
        assert copy.score_one(x) == model.score_one(x)
        model.learn_one(x, y)
        copy.learn_one(x, y)
    assert copy.labels_learned == model.labels_learned and copy.labels_skipped == model.labels_skipped


def test_a_checkpoint_from_before_the_families_loads_as_logreg() -> None:
    model = trained("logreg", labels=500)
    old = FraudModel.__new__(FraudModel)
    old.__dict__.update(  # what the single-family model pickled: its own attributes, no learner
        name="logreg", scaler=model.scaler, classifier=model.classifier, pipeline=model.pipeline, labels_learned=500
    )
    restored = pickle.loads(pickle.dumps(old))
    x = {"amount": 300.0, "noise": 0.0, "is_night": 1.0}
    assert restored.score_one(x) == model.score_one(x)
    assert restored.labels_learned == 500 and restored.version == "logreg@prior"
    restored.learn_one(x, True)
    assert restored.labels_learned == 501


def test_leaf_indicators_follow_the_trees_and_the_bootstrap_weights_are_poisson_1() -> None:
    model = trained("leaflr:trees=2,grace=50", labels=4000)
    x = {"amount": 390.0, "noise": 0.0, "is_night": 0.0}
    z = model.learner._with_leaves(model.learner.scaler.transform_one(x), x)
    leaves = sorted(name for name in z if name.startswith("t"))
    assert [name.split(":")[0] for name in leaves] == ["t0", "t1"]
    assert any(len(name) > len("t0:") for name in leaves)  # the trees split (amount over 220 at least)
    assert all(model.learner.classifier.weights.get(name, 0.0) != 0.0 for name in leaves)
    rng = random.Random(1)
    draws = [_poisson1(rng) for _ in range(20000)]
    assert sum(draws) / len(draws) == pytest.approx(1.0, abs=0.03)
    assert draws.count(0) / len(draws) == pytest.approx(0.368, abs=0.02)


@pytest.mark.parametrize("name", ["hoeffding:grace=50", "bagged-ht:trees=4,grace=50"])
def test_the_fast_tree_walk_scores_what_river_scores(name: str) -> None:
    model = FraudModel(name)
    rng = random.Random(2)
    for _ in range(4000):  # two rules, so the trees grow past one split
        x, y = draw(rng)
        model.learn_one(x, y or (x["is_night"] == 1.0 and x["noise"] > 1.0))
    assert model.learner.fast
    for _ in range(300):
        x, _ = draw(rng)
        assert model.predict_proba_one(x) == pytest.approx(model.learner._river_proba(x), abs=1e-12)
    assert FraudModel(name.replace("grace=50", "grace=50,leaf=nb")).learner.fast is False


def test_bins_are_fixed_after_the_warm_up_and_reasons_name_features_never_bins() -> None:
    model = FraudModel("logreg:opt=adagrad,lr=0.1,bins=8,warm=500")
    rng = random.Random(4)
    for i in range(499):
        model.learn_one(*draw(rng))
        assert i == 498 or model.learner.bins is not None and not model.learner.bins.fitted
    model.learn_one(*draw(rng))
    bins = model.learner.bins
    assert bins is not None and bins.fitted and bins.edges["is_night"] == [0.0]  # a flag: at or below 0, above it
    assert not bins._seen and not bins._seen_fraud  # the warm-up sample is not carried in snapshots any more
    # The frauds' own quantiles add edges above 220, where a line through all amounts has few.
    assert sum(edge > 220.0 for edge in bins.edges["amount"]) >= 4
    edges = {name: list(cut) for name, cut in bins.edges.items()}
    for _ in range(2000):
        model.learn_one(*draw(rng))
    assert bins.edges == edges  # never moved: a bin's weight keeps its meaning
    weights = model.learner.classifier.weights
    assert any(name.startswith("amount#") for name in weights)
    x = {"amount": 390.0, "noise": 0.0, "is_night": 0.0}
    reasons = model.reasons(x, k=3)
    assert reasons[0] == "amount" and all("#" not in name for name in reasons)
    # The one-pass walk scores what the regression computes on the scaled features and the indicators.
    for _ in range(200):
        x, _ = draw(rng)
        inputs = model.learner._inputs(x)
        assert sum(name.startswith("amount#") for name in inputs) == 1
        river = model.learner.classifier.predict_proba_one(inputs)[True]
        assert model.predict_proba_one(x) == pytest.approx(river, rel=1e-12, abs=1e-12)


def test_binned_model_draws_a_threshold_a_straight_line_cannot() -> None:
    """Fraud only in a middle band of amounts: a linear score in amount ranks it badly, bins rank it well."""

    def band(rng: random.Random) -> tuple[dict[str, float], bool]:
        x = {"amount": rng.uniform(0.0, 400.0)}
        return x, 150.0 < x["amount"] < 250.0

    def ranking(name: str) -> float:
        model, rng = FraudModel(name), random.Random(8)
        for _ in range(4000):
            model.learn_one(*band(rng))
        held_out = [band(rng) for _ in range(400)]
        frauds = [model.predict_proba_one(x) for x, y in held_out if y]
        legitimate = [model.predict_proba_one(x) for x, y in held_out if not y]
        return sum(f > g for f in frauds for g in legitimate) / (len(frauds) * len(legitimate))

    assert ranking("logreg:opt=adagrad,lr=0.1") < 0.7
    assert ranking("logreg:opt=adagrad,lr=0.1,bins=8,warm=500") > 0.95
