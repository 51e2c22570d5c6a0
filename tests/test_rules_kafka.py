"""``python -m app rules ...`` as an analyst runs it, on a real broker: rules published and read back, a malformed
rule refused with nothing published, and the backtest's figures against a count made by hand from the topics."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.features.spec import FEATURE_NAMES
from app.kafka.clients import at_least, consume, produce
from app.serialization import dumps, loads
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.kafka


def run_app(env: dict[str, str], *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout_s)  # fmt: skip


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def env(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "APP_ID": unique_name("fraud"),
        "RULES_TOPIC": unique_name("rules"),
        "RULE_LISTS_TOPIC": unique_name("rule-lists"),
        "PREDICTIONS_TOPIC": unique_name("predictions"),
        "LABELS_TOPIC": unique_name("labels"),
        "TOPIC_PARTITIONS": "2",
    }


def listed(env: dict[str, str]) -> dict[str, Any]:
    return loads(ok(run_app(env, "rules", "list", "--all", "--json")))  # type: ignore[no-any-return]


def test_add_list_state_changes_history_and_a_refused_rule_publishing_nothing(
    env: dict[str, str], tmp_path: Path
) -> None:
    rule_file = tmp_path / "velocity.json"
    rule_file.write_text(json.dumps({"id": "velocity", "expression": "customer_nb_tx_1hour > 5", "action": "review",
                                     "description": "card testing", "priority": 2}))  # fmt: skip
    assert "added rule velocity" in ok(run_app(env, "rules", "add", "--file", str(rule_file), "--reason", "attack"))
    ok(run_app(env, "rules", "add", "--id", "big", "--expression", "amount > 5000", "--action", "block"))
    current = listed(env)
    assert [(r["id"], r["action"], r["state"], r["priority"]) for r in current["rules"]] == [
        ("big", "block", "active", 0), ("velocity", "review", "active", 2)]  # fmt: skip
    assert current["version"] == 2 and current["refused"] == []

    # malformed, unknown feature, unknown list: refused with the position, exit 1, the topic unchanged
    bad = tmp_path / "bad.json"
    refusals = [("customer_nb_tx_1hour >", "line 1, column 23: the expression ends too early"),
                ("customer_nb_tx_2hour > 5", "line 1, column 1: unknown name 'customer_nb_tx_2hour'"),
                ("amount > 1 and\n  terminal_id in vip_terminals", "line 2, column 18: unknown list")]  # fmt: skip
    for expression, where in refusals:
        bad.write_text(json.dumps({"id": "velocity", "expression": expression, "action": "block"}))
        refused = run_app(env, "rules", "add", "--file", str(bad))
        assert refused.returncode == 1, refused.stdout
        assert f"rule 'velocity': expression {where}" in refused.stderr
    assert listed(env) == current

    # a list makes the rule valid
    ok(run_app(env, "rules", "set-list", "vip_terminals", "--items", "t-1,t-2", "--reason", "partners"))
    assert "vip_terminals" in ok(run_app(env, "rules", "lists"))
    ok(run_app(env, "rules", "add", "--id", "vip", "--expression", "terminal_id in vip_terminals", "--action", "allow"))
    ok(run_app(env, "rules", "shadow", "velocity", "--reason", "too many alerts"))
    ok(run_app(env, "rules", "disable", "big"))
    states = {r["id"]: r["state"] for r in listed(env)["rules"]}
    assert states == {"vip": "active", "velocity": "shadow", "big": "disabled"}
    assert "big" not in ok(run_app(env, "rules", "list"))  # disabled ones only with --all
    ok(run_app(env, "rules", "enable", "big"))
    assert run_app(env, "rules", "disable", "nosuch").returncode == 1
    changes = [line.split()[2] for line in ok(run_app(env, "rules", "history")).splitlines()]
    assert changes == ["added", "added", "added", "shadowed", "disabled", "enabled"]
    velocity = ok(run_app(env, "rules", "history", "velocity")).splitlines()
    assert len(velocity) == 2 and "too many alerts" in velocity[1] and "cli:" in velocity[1]
    assert listed(env)["version"] == 6


# ---- the backtest against a hand count ---------------------------------------------------------------------------

DAY0 = datetime(2018, 4, 1, tzinfo=UTC)
CANDIDATE = {"id": "burst", "expression": "amount > 150 and customer_nb_tx_1hour >= 2", "action": "review"}
REVIEW_COST = 40.0


def predictions_and_labels(seed: int = 7) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(seed)
    predictions, labels = [], []
    for i in range(600):
        at = DAY0 + timedelta(seconds=rng.uniform(0, 3 * 86400))
        features = {name: 0.0 for name in FEATURE_NAMES}
        features.update(amount=round(rng.uniform(1, 400), 2), customer_nb_tx_1hour=float(rng.randint(0, 4)))
        tx_id = f"tx-{i}"
        predictions.append({"tx_id": tx_id, "customer_id": f"c-{rng.randint(0, 40)}", "terminal_id": f"t-{i % 9}",
                            "timestamp": at.isoformat().replace("+00:00", "Z"),
                            "fraud_probability": round(rng.random() ** 3, 4), "is_fraud": False, "threshold": 0.5,
                            "model_version": "m", "feature_set": "fs-00000000", "reasons": [], "features": features,
                            "latency_ms": 1.0, "scored_at": "2026-01-01T00:00:00Z"})  # fmt: skip
        if rng.random() < 0.9:  # a tenth never labelled
            labels.append({"tx_id": tx_id, "is_fraud": rng.random() < 0.2,
                           "timestamp": (at + timedelta(days=1)).isoformat().replace("+00:00", "Z")})  # fmt: skip
    predictions.append(dict(predictions[5]))  # one prediction twice (a replay): counted once
    return predictions, labels


def hand_count(predictions: list[dict[str, Any]], labels: dict[str, bool], blocked: set[str], start: datetime,
               end: datetime) -> dict[str, Any]:  # fmt: skip
    """The expected figures, written out directly (not with the app's code): live = one block rule on the blocked
    customers; candidate = live + the review rule ``burst``."""
    counts: dict[str, Any] = {"transactions": 0, "frauds": 0, "burst": [0, 0, 0, 0, 0.0]}
    sets = {key: [0, 0, 0, 0.0] for key in ("live/fixed", "candidate/fixed", "live/expected_loss",
                                             "candidate/expected_loss")}  # fmt: skip
    changed = {"fixed": 0, "expected_loss": 0}
    seen = set()
    for p in predictions:
        at = datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00"))
        if not start <= at < end or p["tx_id"] in seen:
            continue
        seen.add(p["tx_id"])
        counts["transactions"] += 1
        label = labels.get(p["tx_id"])
        amount, prob = p["features"]["amount"], p["fraud_probability"]
        counts["frauds"] += label is True
        burst = amount > 150 and p["features"]["customer_nb_tx_1hour"] >= 2
        if burst:
            b = counts["burst"]
            b[0] += 1
            b[1] += label is True
            b[2] += label is False
            b[3] += label is None
            b[4] += amount if label else 0.0
        for mode in ("fixed", "expected_loss"):
            model = "block" if prob >= 0.5 else "review" if mode == "expected_loss" and prob * amount > REVIEW_COST \
                else "allow"  # fmt: skip
            live = "block" if p["customer_id"] in blocked else model
            # a review rule never softens the model's block; it comes before the expected-loss review
            candidate = "block" if p["customer_id"] in blocked else model if model == "block" else \
                "review" if burst else model  # fmt: skip
            changed[mode] += live != candidate
            for name, decision in (("live", live), ("candidate", candidate)):
                if decision != "allow":
                    s = sets[f"{name}/{mode}"]
                    s[0] += 1
                    s[1] += label is True
                    s[2] += label is False
                    s[3] += amount if label else 0.0
    return {**counts, "sets": sets, "changed": changed}


def test_backtest_figures_equal_a_hand_count_from_the_topics(
    env: dict[str, str], kafka_bootstrap: str, tmp_path: Path
) -> None:
    predictions, labels = predictions_and_labels()
    # the topics first, created as the worker creates them (set-list creates the rule topics; these two by hand)
    ok(run_app(env, "rules", "set-list", "blocked_customers", "--items", "c-3,c-17"))
    ok(run_app(env, "rules", "add", "--id", "blocked", "--expression", "customer_id in blocked_customers",
               "--action", "block"))  # fmt: skip
    produce(kafka_bootstrap, env["PREDICTIONS_TOPIC"],
            [(p["tx_id"].encode(), dumps(p)) for p in predictions])  # fmt: skip
    produce(kafka_bootstrap, env["LABELS_TOPIC"], [(label["tx_id"].encode(), dumps(label)) for label in labels])

    # the hand count reads the topics back itself
    on_topic = [loads(r.value) for r in consume(kafka_bootstrap, env["PREDICTIONS_TOPIC"], at_least(len(predictions)))]
    labelled = {(x := loads(r.value))["tx_id"]: x["is_fraud"]
                for r in consume(kafka_bootstrap, env["LABELS_TOPIC"], at_least(len(labels)))}  # fmt: skip
    start, end = DAY0 + timedelta(days=1), DAY0 + timedelta(days=2)
    expected = hand_count(on_topic, labelled, {"c-3", "c-17"}, start, end)
    assert expected["transactions"] > 100 and expected["burst"][1] > 0 and expected["changed"]["fixed"] > 0

    rule_file = tmp_path / "burst.json"
    rule_file.write_text(json.dumps(CANDIDATE))
    result = run_app(env, "rules", "backtest", "--rule", str(rule_file), "--from", start.isoformat(), "--to",
                     end.isoformat(), "--review-cost", str(REVIEW_COST), "--json")  # fmt: skip
    report = loads(ok(result))
    assert report["transactions"] == expected["transactions"]
    assert report["frauds"] == expected["frauds"]
    assert report["duplicates"] == (1 if start <= datetime.fromisoformat(
        predictions[5]["timestamp"].replace("Z", "+00:00")) < end else 0)  # fmt: skip
    burst = report["rules"]["burst"]
    assert [burst["hits"], burst["frauds"], burst["false_alarms"], burst["unlabelled"]] == expected["burst"][:4]
    assert burst["fraud_amount"] == pytest.approx(expected["burst"][4], abs=0.01)
    assert burst["recall"] == pytest.approx(expected["burst"][1] / expected["frauds"])
    for key, (alerts, frauds, false_alarms, amount) in expected["sets"].items():
        got = report["sets"][key]
        assert [got["hits"], got["frauds"], got["false_alarms"]] == [alerts, frauds, false_alarms], key
        assert got["fraud_amount"] == pytest.approx(amount, abs=0.01), key
        assert got["alert_rate"] == pytest.approx(alerts / expected["transactions"]), key
    for mode, n in expected["changed"].items():
        assert report["changes"][mode]["changed"] == n, mode
    assert report["live_version"] == 1 and report["candidates"] == ["burst"]

    text = ok(run_app(env, "rules", "backtest", "--rule", str(rule_file), "--from", start.isoformat(), "--to",
                      end.isoformat(), "--review-cost", str(REVIEW_COST)))  # fmt: skip
    assert "*burst" in text and f"{expected['transactions']} transactions in the range" in text

    # The rule goes live: backtested beside a live set that holds it, it changes nothing; with --without it, the
    # same figures as before it was live (what the rule adds); --without a rule that is not live is refused.
    ok(run_app(env, "rules", "add", "--file", str(rule_file)))
    args = ["rules", "backtest", "--rule", str(rule_file), "--from", start.isoformat(), "--to", end.isoformat(),
            "--review-cost", str(REVIEW_COST), "--json"]  # fmt: skip
    assert all(loads(ok(run_app(env, *args)))["changes"][mode]["changed"] == 0 for mode in expected["changed"])
    without = loads(ok(run_app(env, *args, "--without", "burst")))
    assert {mode: without["changes"][mode]["changed"] for mode in expected["changed"]} == expected["changed"]
    assert without["without"] == ["burst"] and without["live_version"] == 2
    refused = run_app(env, *args, "--without", "nosuch")
    assert refused.returncode != 0 and "no live rule 'nosuch'" in refused.stderr
