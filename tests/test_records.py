from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.records import InvalidMessage, parse_label, parse_transaction
from app.serialization import dumps
from tests.cases import BAD_TRANSACTIONS, transaction

MAX_BYTES = 65536
MAX_AMOUNT = 10_000_000.0


@pytest.mark.parametrize(("name", "raw", "code"), BAD_TRANSACTIONS, ids=[c[0] for c in BAD_TRANSACTIONS])
def test_bad_transaction_gets_its_code(name: str, raw: bytes, code: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_transaction(raw, MAX_BYTES, MAX_AMOUNT)
    assert info.value.code == code
    assert info.value.reason


def test_none_value_is_an_empty_message() -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_transaction(None, MAX_BYTES, MAX_AMOUNT)
    assert info.value.code == "empty_message"


def test_valid_transaction_parses_every_field_and_ignores_unknown_ones() -> None:
    tx = parse_transaction(dumps(transaction(3, channel="web", amount=0)), MAX_BYTES, MAX_AMOUNT)
    assert (tx.tx_id, tx.customer_id, tx.terminal_id, tx.amount) == ("tx-3", "c-3", "t-3", 0.0)
    assert tx.timestamp == datetime(2018, 4, 1, 13, tzinfo=UTC)


def test_offsets_are_kept_and_event_time_is_absolute() -> None:
    tx = parse_transaction(dumps(transaction(0, timestamp="2018-04-01T12:00:00+02:00")), MAX_BYTES, MAX_AMOUNT)
    assert tx.timestamp.utcoffset() == timedelta(hours=2)
    assert tx.event_time_s == datetime(2018, 4, 1, 10, tzinfo=UTC).timestamp()


def test_limits_are_inclusive() -> None:
    assert parse_transaction(dumps(transaction(0, amount=10_000_000)), MAX_BYTES, MAX_AMOUNT).amount == 1e7
    tx = parse_transaction(dumps(transaction(0, tx_id="x" * 128)), MAX_BYTES, MAX_AMOUNT)
    assert len(tx.tx_id) == 128
    with pytest.raises(InvalidMessage, match="invalid_id"):
        parse_transaction(dumps(transaction(0, tx_id="x" * 129)), MAX_BYTES, MAX_AMOUNT)


def test_label_parses_and_rejects_non_boolean() -> None:
    label = parse_label(b'{"tx_id":"tx-1","is_fraud":true,"timestamp":"2018-04-08T00:00:00Z"}', MAX_BYTES)
    assert label.is_fraud is True and label.tx_id == "tx-1"
    with pytest.raises(InvalidMessage) as info:
        parse_label(b'{"tx_id":"tx-1","is_fraud":1,"timestamp":"2018-04-08T00:00:00Z"}', MAX_BYTES)
    assert info.value.code == "invalid_type"
