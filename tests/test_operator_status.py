"""The operator page's status document, built from given values (no worker, no broker)."""

from __future__ import annotations

from app.monitoring.health import WindowStats, health_event
from app.records import Prediction
from app.serialization import dumps, loads
from app.serving.operator_status import status_document
from app.settings import Thresholds


def prediction(i: int, probability: float = 0.9) -> Prediction:
    return Prediction(
        tx_id=f"tx-{i}",
        customer_id="c-1",
        terminal_id="t-1",
        timestamp="2018-04-02T03:00:00Z",
        fraud_probability=probability,
        is_fraud=True,
        threshold=0.5,
        model_version="logreg-v3",
        feature_set="fs-00000000",
        reasons=["amount", "is_night"],
        features={"amount": 901.0, "is_night": 1.0},
        latency_ms=4.2,
        scored_at="2026-11-27T20:00:00.000Z",
        decision="block",
        rules=[],
        shadow_rules=[],
        rule_set_version=0,
    )


def health(error_rate: float = 0.25) -> dict[str, object]:
    stats = WindowStats(8, 2, 4.0, 3.0, 5.0, 9.0, error_rate)
    return health_event(timestamp="2026-11-27T20:00:01.000Z", worker="w-1", window_s=60.0, stats=stats,
                        last_transaction_age_s=1.0, model_version="logreg-v3", labels_learned=600,
                        thresholds=Thresholds(), terminal_feed_lag_s=0.25)  # fmt: skip


def document(**overrides: object) -> dict[str, object]:
    values: dict[str, object] = {
        "health": health(),
        "ready": True,
        "decision_threshold": 0.5,
        "dead_letters": {("transactions", "invalid_json"): 1.0, ("labels", "invalid_type"): 3.0},
        "outcomes": {("scored",): 6.0, ("dead_letter",): 2.0},
        "predicted_fraud": 2.0,
        "high_scores": [prediction(i) for i in range(3)],
    }
    values.update(overrides)
    return status_document(**values)  # type: ignore[arg-type]


def test_the_document_carries_the_monitors_health_status_and_issues_unchanged() -> None:
    doc = document()
    assert doc["status"] == "unhealthy" and doc["issues"] == ["error rate 25.00% is over 10.00%"]
    assert doc["throughput_tps"] == 4.0 and doc["latency_ms"] == {"p50": 3.0, "p95": 5.0, "p99": 9.0}
    assert doc["model_version"] == "logreg-v3" and doc["labels_learned"] == 600
    assert doc["terminal_feed_lag_s"] == 0.25 and doc["worker"] == "w-1"
    assert document(health=health(error_rate=0.0))["status"] == "healthy"


def test_totals_and_dead_letters_by_code_most_frequent_first_without_zero_rows() -> None:
    doc = document(dead_letters={("transactions", "invalid_json"): 1.0, ("transactions", "empty_message"): 0.0,
                                 ("labels", "invalid_type"): 3.0})  # fmt: skip
    assert doc["totals"] == {"scored": 6, "dead_letter": 2, "predicted_fraud": 2}
    assert doc["dead_letters_by_code"] == [
        {"input": "labels", "error": "invalid_type", "count": 3},
        {"input": "transactions", "error": "invalid_json", "count": 1},
    ]
    assert document(outcomes={})["totals"] == {"scored": 0, "dead_letter": 0, "predicted_fraud": 2}


def test_high_scores_newest_first_at_most_the_shown_number_with_reasons_and_features_in_json() -> None:
    doc = loads(dumps(document(high_scores=[prediction(i) for i in range(30)])))
    shown = doc["high_scores"]
    assert [p["tx_id"] for p in shown] == [f"tx-{i}" for i in range(29, 9, -1)]
    assert shown[0]["reasons"] == ["amount", "is_night"] and shown[0]["features"]["amount"] == 901.0
    assert shown[0]["fraud_probability"] == 0.9 and shown[0]["scored_at"] == "2026-11-27T20:00:00.000Z"
    assert loads(dumps(document(high_scores=[])))["high_scores"] == []
