"""The backtest's counting over records (pure): figures checked against a count made by hand."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.features.spec import FEATURE_NAMES
from app.rules.backtest import CANDIDATE, EXPECTED_LOSS, FIXED, LIVE, Backtest, Scored, lines, scored_of
from app.rules.ruleset import BLOCK, REVIEW, SHADOW, Rule, RuleSet

T0 = datetime(2018, 4, 1, tzinfo=UTC).timestamp()


def scored(tx_id: str, amount: float, p: float, at_s: float = 3600.0, **x: float) -> Scored:
    features = dict.fromkeys(FEATURE_NAMES, 0.0)
    features.update(amount=amount, **x)
    fields = {"customer_id": "c", "terminal_id": "t", "tx_id": tx_id, "amount": amount, "fraud_probability": p}
    return Scored(tx_id, T0 + at_s, features, fields, p, 0.5, amount)


RECORDS = [
    scored("tx1", 600.0, 0.10),
    scored("tx2", 700.0, 0.60),
    scored("tx3", 20.0, 0.20, customer_nb_tx_1hour=9.0),
    scored("tx4", 800.0, 0.05),
    scored("tx5", 10.0, 0.90),
    scored("tx6", 30.0, 0.10),
    scored("tx7", 900.0, 0.10, at_s=2 * 86400.0),  # after the range
    scored("tx1", 600.0, 0.10),  # the same prediction again
]
LABELS = {"tx1": True, "tx2": False, "tx3": True, "tx5": True, "tx6": False, "tx7": True}  # tx4: no label
LIVE_SET = RuleSet.of([Rule("velocity", "customer_nb_tx_1hour > 5", REVIEW),
                       Rule("watch", "amount > 650", BLOCK, state=SHADOW)], version=4)  # fmt: skip
BIG = Rule("big", "amount > 500", BLOCK, state=SHADOW)  # a candidate is evaluated as active whatever its state


def run() -> dict:  # type: ignore[type-arg]
    report = Backtest(LABELS, LIVE_SET, [BIG], {}, start_s=T0, end_s=T0 + 86400.0, review_cost=50.0).run(RECORDS)
    return report.to_dict()


def test_totals_and_per_rule_figures() -> None:
    r = run()
    assert (r["transactions"], r["labelled"], r["frauds"], r["fraud_amount"], r["duplicates"]) == (6, 5, 3, 630.0, 1)
    big = r["rules"]["big"]
    assert big["candidate"] and big["state"] == "active"
    assert (big["hits"], big["frauds"], big["false_alarms"], big["unlabelled"], big["fraud_amount"]) == (
        3, 1, 1, 1, 600.0)  # fmt: skip
    assert big["precision"] == 0.5 and big["recall"] == pytest.approx(1 / 3)
    velocity = r["rules"]["velocity"]
    assert (velocity["hits"], velocity["frauds"], velocity["false_alarms"], velocity["candidate"]) == (1, 1, 0, False)
    watch = r["rules"]["watch"]  # a live shadow rule: counted, never deciding
    assert (watch["hits"], watch["false_alarms"], watch["unlabelled"]) == (2, 1, 1)


def test_sets_under_both_thresholds_and_the_changes() -> None:
    r = run()
    sets = r["sets"]
    live_fixed = sets[f"{LIVE}/{FIXED}"]
    assert (live_fixed["hits"], live_fixed["frauds"], live_fixed["false_alarms"], live_fixed["fraud_amount"]) == (
        3, 2, 1, 30.0)  # fmt: skip  # tx2 (threshold), tx3 (velocity), tx5 (threshold)
    assert live_fixed["decisions"] == {"allow": 3, "review": 1, "block": 2}
    assert live_fixed["alert_rate"] == 0.5 and live_fixed["recall"] == pytest.approx(2 / 3)
    candidate_fixed = sets[f"{CANDIDATE}/{FIXED}"]
    assert (candidate_fixed["hits"], candidate_fixed["frauds"], candidate_fixed["unlabelled"]) == (5, 3, 1)
    assert candidate_fixed["decisions"] == {"allow": 1, "review": 1, "block": 4}
    live_loss = sets[f"{LIVE}/{EXPECTED_LOSS}"]  # tx1: 0.1 x 600 = 60 > 50: reviewed; tx4: 0.05 x 800 = 40: not
    assert live_loss["decisions"] == {"allow": 2, "review": 2, "block": 2} and live_loss["frauds"] == 3
    fixed, loss = r["changes"][FIXED], r["changes"][EXPECTED_LOSS]
    assert (fixed["changed"], fixed["alert_delta"], fixed["by_pair"]) == (2, 2, {"allow->block": 2})
    assert fixed["examples"] == ["tx1", "tx4"] and fixed["alert_rate_change"] == pytest.approx(2 / 6)
    assert (loss["changed"], loss["alert_delta"], loss["by_pair"]) == (2, 1, {"allow->block": 1, "review->block": 1})
    assert r["rules"]["big"]["changed_fixed"]["changed"] == 2  # the candidate alone in the live set
    assert "changed_fixed" not in r["rules"]["velocity"]


def test_a_fixed_threshold_overrides_each_predictions_own_and_the_text_report() -> None:
    report = Backtest(LABELS, LIVE_SET, [BIG], {}, start_s=T0, end_s=T0 + 86400.0, review_cost=50.0,
                      threshold=0.95).run(RECORDS)  # fmt: skip
    assert report.sets[(LIVE, FIXED)].decisions["block"] == 0  # tx2 at 0.6 and tx5 at 0.9 pass now
    text = "\n".join(lines(report))
    assert "*big" in text and "candidate vs live (fixed): 3 decisions changed (allow->block 3)" in text  # tx1, tx2, tx4


def test_a_rule_that_fails_is_counted_apart() -> None:
    ratio = Rule("ratio", "amount / customer_avg_amount_30day > 3", BLOCK)  # the average is 0 in these records
    report = Backtest(LABELS, LIVE_SET, [ratio], {}, start_s=T0, end_s=T0 + 86400.0, review_cost=50.0).run(RECORDS)
    assert report.rule_figures["ratio"].errors == 6 and report.rule_figures["ratio"].hits == 0
    assert "rule ratio failed on 6 transactions" in "\n".join(lines(report))


def test_scored_of_reads_a_prediction_record() -> None:
    prediction = {"tx_id": "tx9", "customer_id": "c-1", "terminal_id": "t-1", "timestamp": "2018-04-01T01:00:00Z",
                  "fraud_probability": 0.25, "is_fraud": False, "threshold": 0.5, "model_version": "m",
                  "feature_set": "fs-00000000", "reasons": [], "features": {"amount": 12.5}, "latency_ms": 1.0,
                  "scored_at": "2026-01-01T00:00:00Z"}  # fmt: skip
    s = scored_of(prediction)
    assert (s.tx_id, s.event_time_s, s.amount, s.threshold) == ("tx9", T0 + 3600.0, 12.5, 0.5)
    assert s.fields["customer_id"] == "c-1" and s.fields["fraud_probability"] == 0.25
