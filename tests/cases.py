"""Input cases shared by unit and broker tests: valid transactions and each kind of bad input."""

from __future__ import annotations

import json

from app.serialization import dumps


def transaction(i: int, **fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "tx_id": f"tx-{i}",
        "timestamp": f"2018-04-01T{10 + i % 10:02d}:00:00Z",
        "customer_id": f"c-{i % 7}",
        "terminal_id": f"t-{i % 11}",
        "amount": 10.0 + i,
    }
    base.update(fields)
    return base


def without(field: str) -> bytes:
    tx = transaction(0)
    del tx[field]
    return dumps(tx)


# (name, raw value, expected error code)
BAD_TRANSACTIONS: list[tuple[str, bytes, str]] = [
    ("not_json", b"this is not json {", "invalid_json"),
    ("truncated_json", b'{"tx_id": "a", "amount": 1', "invalid_json"),
    ("json_array", b"[1, 2, 3]", "not_an_object"),
    ("json_string", b'"a string"', "not_an_object"),
    ("json_number", b"42", "not_an_object"),
    ("json_null", b"null", "not_an_object"),
    ("empty", b"", "empty_message"),
    ("missing_tx_id", without("tx_id"), "missing_field"),
    ("missing_timestamp", without("timestamp"), "missing_field"),
    ("missing_customer_id", without("customer_id"), "missing_field"),
    ("missing_terminal_id", without("terminal_id"), "missing_field"),
    ("missing_amount", without("amount"), "missing_field"),
    ("amount_string", dumps(transaction(0, amount="12.5")), "invalid_type"),
    ("amount_bool", dumps(transaction(0, amount=True)), "invalid_type"),
    ("tx_id_number", dumps(transaction(0, tx_id=123)), "invalid_type"),
    ("customer_id_list", dumps(transaction(0, customer_id=["c"])), "invalid_type"),
    ("timestamp_number", dumps(transaction(0, timestamp=1522576800)), "invalid_type"),
    ("amount_negative", dumps(transaction(0, amount=-0.01)), "invalid_amount"),
    ("amount_nan", json.dumps(transaction(0, amount=float("nan"))).encode(), "invalid_amount"),
    ("amount_infinity", json.dumps(transaction(0, amount=float("inf"))).encode(), "invalid_amount"),
    ("amount_minus_infinity", json.dumps(transaction(0, amount=float("-inf"))).encode(), "invalid_amount"),
    ("amount_over_limit", dumps(transaction(0, amount=10_000_000.01)), "invalid_amount"),
    ("timestamp_unparsable", dumps(transaction(0, timestamp="yesterday at noon")), "invalid_timestamp"),
    ("timestamp_no_offset", dumps(transaction(0, timestamp="2018-04-01T10:00:00")), "invalid_timestamp"),
    ("tx_id_empty", dumps(transaction(0, tx_id="")), "invalid_id"),
    ("tx_id_10kB", dumps(transaction(0, tx_id="x" * 10_000)), "invalid_id"),
    ("message_900kB", dumps(transaction(0, note="y" * 900_000)), "message_too_large"),
]
