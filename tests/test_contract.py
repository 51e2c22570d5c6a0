"""The schemas in topics/ are valid and agree with what the pure code produces and accepts."""

from __future__ import annotations

import pytest
from jsonschema import ValidationError

from app.kafka.topics import manifest
from app.monitoring.health import WindowStats, health_event
from app.serialization import loads
from app.settings import TOPICS_DIR, Thresholds
from tests.cases import transaction
from tests.contract import assert_valid, validator


def test_every_manifest_topic_has_a_valid_schema_file() -> None:
    entries = manifest()
    assert {e["name"] for e in entries} == {
        "transactions",
        "labels",
        "predictions",
        "health",
        "transactions-dlq",
        "labels-dlq",
        "models",
        "model-events",
        "rules",
        "rule-lists",
    }
    for entry in entries:
        assert (TOPICS_DIR / entry["schema"]).is_file()
        validator(entry["schema"])


def test_transaction_schema_accepts_the_examples_and_rejects_bad_amounts() -> None:
    assert_valid("transactions.schema.json", transaction(1))
    assert_valid("transactions.schema.json", transaction(1, timestamp="2018-04-01T12:00:00.123+02:00", extra=1))
    with pytest.raises(AssertionError):
        assert_valid("transactions.schema.json", transaction(1, amount=-1))
    assert not validator("transactions.schema.json").is_valid(transaction(1, tx_id=""))


def test_health_event_matches_schema() -> None:
    event = health_event(
        timestamp="2026-01-01T00:00:00.000Z",
        worker="w",
        window_s=60.0,
        stats=WindowStats(10, 1, 1.0, 1.0, 2.0, 3.0, 0.1),
        last_transaction_age_s=0.5,
        model_version="logreg-v1",
        labels_learned=0,
        thresholds=Thresholds(),
    )
    assert_valid("health.schema.json", event)
    broken = dict(event, status="fine")
    with pytest.raises(ValidationError):
        validator("health.schema.json").validate(broken)


def test_dead_letter_codes_in_schema_cover_every_code_the_parser_raises() -> None:
    codes = set(loads((TOPICS_DIR / "dead-letter.schema.json").read_bytes())["properties"]["error"]["enum"])
    from tests.cases import BAD_TRANSACTIONS

    assert {code for _, _, code in BAD_TRANSACTIONS} <= codes
