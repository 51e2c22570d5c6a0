from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from app.learning.quality import average_precision, card_precision_top_k, decision_summary, roc_auc
from app.serialization import loads
from lab.batch_features import BASELINE_FEATURES, baseline_features
from lab.protocol import Protocol, protocol_test_mask
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("seed", range(8))
def test_auc_and_ap_equal_scikit_learn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    y = rng.uniform(size=n) < rng.uniform(0.02, 0.5)
    y[0], y[1] = True, False
    scores = np.round(rng.uniform(size=n) + y * rng.uniform(0, 0.5), int(rng.integers(1, 3)))  # many ties
    assert roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores))
    assert average_precision(y, scores) == pytest.approx(average_precision_score(y, scores))


def test_hand_computed_cases() -> None:
    # positives score 0.35 and 0.8, negatives 0.1 and 0.4: 3 of 4 pairs ordered right
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    # ranking T F T F: precision 1 at recall 0.5, 2/3 at recall 1
    assert average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert roc_auc([1, 1], [0.2, 0.3]) != roc_auc([1, 1], [0.2, 0.3])  # NaN: one class only
    assert average_precision([1, 0, 1], [0.5, 0.5, 0.5]) == pytest.approx(2 / 3)  # one tie group


def test_card_precision_counts_cards_not_transactions_and_drops_caught_cards() -> None:
    days = [0, 0, 0, 0, 1, 1, 1]
    cards = ["a", "a", "b", "c", "a", "b", "c"]
    fraud = [1, 0, 0, 0, 1, 0, 1]
    score = [0.2, 0.9, 0.5, 0.1, 0.9, 0.8, 0.7]
    # day 0: top-2 cards by max score a (0.9, compromised) and b -> 1/2; day 1: a was caught, so b and c -> 1/2
    assert card_precision_top_k(days, cards, fraud, score, k=2) == 0.5
    # k=1: day 0 catches a (1/1); day 1 leaves a out and ranks b first (0/1) -> 0.5; keeping a would give 1.0
    assert card_precision_top_k(days, cards, fraud, score, k=1) == 0.5
    assert card_precision_top_k(days, cards, fraud, score, k=1, exclude_caught=False) == 1.0


def test_protocol_leaves_out_cards_known_by_each_test_day() -> None:
    p = Protocol(train_start_day=10, train_days=7, delay_days=7, test_days=7)
    assert p.test_start_day == 24
    days = np.array([9, 12, 17, 24, 24, 25, 25, 30, 31])
    cards = np.array(["old", "t", "d", "old", "t", "d", "x", "x", "y"])
    fraud = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    mask = protocol_test_mask(days, cards, fraud, p)
    # "old" defrauded before training is not known; "t" (training week) is; "d" (day 17 = train last + 1) is known
    # from test day 1 on; day 31 is after the test week.
    assert mask.tolist() == [False, False, False, True, False, False, True, True, False]


def test_decision_summary() -> None:
    s = decision_summary([1, 1, 1, 0, 0], [1, 0, 1, 1, 0])
    assert (s.frauds, s.caught, s.missed, s.false_alarms, s.alerts) == (3, 2, 1, 1, 3)
    assert s.precision == pytest.approx(2 / 3) and s.recall == pytest.approx(2 / 3) and s.alert_rate == 0.6


def test_batch_features_equal_brute_force() -> None:
    rng = np.random.default_rng(4)
    n = 600
    t = np.sort(rng.integers(0, 60 * 86400, size=n))
    t[5] = t[4]  # a duplicated timestamp
    customer, terminal = rng.integers(0, 5, size=n), rng.integers(0, 4, size=n)
    amount, fraud = np.round(rng.uniform(0, 100, size=n), 2), rng.uniform(size=n) < 0.1
    weekday, hour = rng.integers(0, 7, size=n), rng.integers(0, 24, size=n)
    x = baseline_features(t, weekday, hour, customer, terminal, amount, fraud)
    assert x.shape == (n, len(BASELINE_FEATURES))
    day = 86400
    for i in range(n):
        for j, w in enumerate((1, 7, 30)):
            same = (customer == customer[i]) & (t > t[i] - w * day) & (t <= t[i])
            assert x[i, 3 + 2 * j] == same.sum()
            assert x[i, 4 + 2 * j] == pytest.approx(amount[same].mean())
            end = t[i] - 7 * day
            term = (terminal == terminal[i]) & (t >= end - w * day) & (t < end)
            assert x[i, 9 + 2 * j] == term.sum()
            assert x[i, 10 + 2 * j] == pytest.approx(fraud[term].mean() if term.any() else 0.0)
        assert x[i, 1] == (weekday[i] >= 5) and x[i, 2] == (hour[i] <= 6)


def test_evaluate_command_end_to_end_small(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "quality"
    result = subprocess.run(
        [sys.executable, "scripts/evaluate.py", "--seeds", "0", "1", "--customers", "60", "--terminals", "120",
         "--days", "140", "--out-dir", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = loads((out / "quality.json").read_bytes())
    assert report["seeds"] == [0, 1]
    models = report["summary"]
    assert {"project (online, prequential)", "logistic regression", "random forest", "random scores"} <= set(models)
    for metrics in models.values():
        for name in ("auc_roc", "average_precision", "card_precision_top_100"):
            assert 0.0 <= metrics[name]["mean"] <= 1.0 and metrics[name]["std"] >= 0.0
    # The online model ranks frauds well above chance on the same test days: random scores cannot pass this.
    project, chance = models["project (online, prequential)"], models["random scores"]
    assert project["auc_roc"]["mean"] >= max(0.7, chance["auc_roc"]["mean"] + 0.15), (project, chance)
    assert project["average_precision"]["mean"] >= chance["average_precision"]["mean"] + 0.15, (project, chance)
    for run in report["runs"]:
        assert run["predictions"] == run["transactions"] > 0
        assert run["test_transactions"] > 0
        days = [d["day"] for d in run["daily"]]
        assert days == sorted(set(days)) and 0 < len(days) <= 140  # days where every card was known drop out
        assert set(run["recall_by_scenario"]) == {"1", "2", "3"}
        assert 0.0 <= run["threshold"]["alert_rate"] <= 1.0
    assert (out / "quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| logistic regression |" in result.stdout and "0.871 / 0.606 / 0.291" in result.stdout


def test_evaluate_reads_predictions_from_a_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Predictions written by anyone (here: the worker's logic replayed) are scored from a JSONL file."""
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from simulate import wire_events

    from app.learning.offline import replay_offline
    from app.records import Prediction
    from app.serialization import dumps
    from app.settings import Settings
    from lab.simulator import SimulatorConfig

    config = SimulatorConfig(n_customers=60, n_terminals=120, n_days=140, seed=0)
    predictions = [p for p in replay_offline(wire_events(config, 7 * 86400), Settings()) if isinstance(p, Prediction)]
    path = tmp_path / "predictions.jsonl"
    path.write_bytes(b"\n".join(dumps(p) for p in predictions[: len(predictions) // 2]) + b"\n")  # half of them
    out = tmp_path / "from-file"
    result = subprocess.run(
        [sys.executable, "scripts/evaluate.py", "--seeds", "0", "--customers", "60", "--terminals", "120",
         "--days", "140", "--no-baselines", "--predictions", str(path), "--out-dir", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = loads((out / "quality.json").read_bytes())["runs"]
    assert run["predictions"] == len(predictions) // 2 < run["transactions"]
    assert set(loads((out / "quality.json").read_bytes())["summary"]) == {"project (online, prequential)"}
