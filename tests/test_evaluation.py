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
         "--days", "140", "--publish-interval-s", "3600", "--out-dir", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = loads((out / "quality.json").read_bytes())
    assert report["seeds"] == [0, 1]
    assert report["scoring"]["publish_interval_stream_s"] == 3600.0
    assert report["scoring"]["scored_by"] == "the champion's published snapshots"
    models = report["summary"]
    rows = {"project (online, product features)", "project (online, protocol features)"}
    assert rows | {"logistic regression", "random forest", "random scores"} <= set(models)
    for metrics in models.values():
        for name in ("auc_roc", "average_precision", "card_precision_top_100"):
            assert 0.0 <= metrics[name]["mean"] <= 1.0 and metrics[name]["std"] >= 0.0
    # The online model ranks frauds well above chance on the same test days: random scores cannot pass this.
    chance = models["random scores"]
    for row in rows:
        project = models[row]
        assert project["auc_roc"]["mean"] >= max(0.7, chance["auc_roc"]["mean"] + 0.15), (row, project, chance)
        assert project["average_precision"]["mean"] >= chance["average_precision"]["mean"] + 0.15, (row, project)
    for run in report["runs"]:
        assert set(run["feature_sets"]) == {"product", "protocol"}
        assert run["predictions"] == run["transactions"] > 0
        assert run["test_transactions"] > 0
        days = [d["day"] for d in run["daily"]]
        assert days == sorted(set(days)) and 0 < len(days) <= 140  # days where every card was known drop out
        assert set(run["recall_by_scenario"]) == {"1", "2", "3"}
        assert 0.0 <= run["threshold"]["alert_rate"] <= 1.0
    assert (out / "quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| logistic regression |" in result.stdout and "0.871 / 0.606 / 0.291" in result.stdout
    merged = subprocess.run(
        [sys.executable, "scripts/evaluate.py", "--merge", str(out / "quality.json"), str(out / "quality.json")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert merged.returncode == 0 and "| project (online, protocol features) |" in merged.stdout, merged.stderr


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
    # Scored by the learning champion itself (published=False): what is read back from the file is the point here, and
    # a snapshot taken on the default 30 s (stream time) cadence made the replay six times slower.
    replayed = replay_offline(wire_events(config, 7 * 86400), Settings(), published=False)
    predictions = [p for p in replayed if isinstance(p, Prediction)]
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


def test_the_adaptation_curve_from_two_runs_scores() -> None:
    """scripts/adaptation.py's per-day curve, on scores made up to say what it must find: the new pattern caught
    from 2 days after its first labels, the other scenarios ranked as well with it as without it."""
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from datetime import UTC, datetime, timedelta

    from adaptation import adaptation

    from lab.changes import SCENARIO_CARD_TESTING, card_testing
    from lab.protocol import Protocol
    from lab.simulator import SimulatorConfig, simulate

    config = SimulatorConfig(n_customers=60, n_terminals=120, n_days=30, seed=2)
    base = simulate(config)
    start = datetime(2018, 4, 1, tzinfo=UTC)
    changed = card_testing(base, start + timedelta(days=10), cards_per_day=2, seed=1)
    new = [tx for tx in changed if tx.fraud_scenario == SCENARIO_CARD_TESTING]
    first_label_s = (new[0].timestamp - start).total_seconds() + 7 * 86400
    caught_from_s = (first_label_s // 86400 + 2) * 86400  # whole days from 2 days after the first labels' day
    truth = {tx.tx_id: (1.0 if tx.is_fraud else 0.0, tx.is_fraud) for tx in base}
    scores = dict(truth)
    for tx in new:
        caught = (tx.timestamp - start).total_seconds() >= caught_from_s
        scores[tx.tx_id] = (0.9 if caught else 0.1, caught)
    result = adaptation(base, changed, truth, scores, start, 7.0, Protocol())
    assert result["first_label_day"] == pytest.approx(first_label_s / 86400)
    assert result["new_transactions"] == len(new) > 0
    reached = result["recall_reached_0.8_days_after_first_labels"]
    assert reached == pytest.approx(caught_from_s / 86400 + 1 - result["first_label_day"], abs=0.01)
    assert 1 < reached <= 3
    assert result["new_recall_from_day_7_after_labels"] == 1.0
    rows = result["daily"]
    assert [r["day"] for r in rows] == list(range(int(result["first_new_day"]), 30))
    assert all(r["other_ap_change"] == 0.0 for r in rows if r["other_frauds"])
    assert result["untested_cards_ap_after_first_labels"] == {"with": 1.0, "without": 1.0}
    assert result["other_ap_after_first_labels"] == {"with": 1.0, "without": 1.0}
