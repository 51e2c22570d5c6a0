"""The records on the wire and the validation that turns raw bytes into them.

A message that fails validation raises :class:`InvalidMessage` with a short code and a sentence; the worker
turns it into a dead letter. Parsing is strict JSON (orjson); only when that fails is the lenient stdlib
parser tried, so that ``NaN`` or ``Infinity`` amounts are reported as ``invalid_amount`` rather than as
``invalid_json``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.serialization import JSONDecodeError, b64, dumps, isoformat_utc, loads

ID_MAX_CHARS = 128


class InvalidMessage(ValueError):
    """Input that cannot be scored; ``code`` is stable for dashboards, ``reason`` is for people."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Transaction:
    tx_id: str
    timestamp: datetime
    customer_id: str
    terminal_id: str
    amount: float

    @property
    def event_time_s(self) -> float:
        return self.timestamp.timestamp()


@dataclass(frozen=True, slots=True)
class Label:
    tx_id: str
    is_fraud: bool
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class Prediction:
    tx_id: str
    customer_id: str
    terminal_id: str
    timestamp: str
    fraud_probability: float
    is_fraud: bool
    threshold: float
    model_version: str
    feature_set: str  # the feature set the features were computed by (app.features.spec.FEATURE_SET_VERSION)
    reasons: list[str]
    features: dict[str, float]
    latency_ms: float
    scored_at: str
    decision: str  # allow | review | block: the model and the analysts' rules (app.rules.ruleset.decide)
    rules: list[str]  # the active rules that matched, the deciding one first among its action
    shadow_rules: list[str]  # the shadow rules that matched: recorded, never deciding
    rule_set_version: int  # the rule set decided with: the rules topic's offset past its newest event (0: none)
    # the named lists decided with: the rule-lists topic's offset past its newest event (0: none); with
    # rule_set_version, the pair names exactly the rules and lists a transaction was decided with
    lists_version: int = 0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    error: str
    reason: str
    topic: str
    partition: int
    offset: int
    raw: str
    received_at: str


def _decode_object(raw: bytes | None, max_bytes: int) -> dict[str, Any]:
    if raw is None or len(raw) == 0:
        raise InvalidMessage("empty_message", "the message has no value")
    if len(raw) > max_bytes:
        raise InvalidMessage("message_too_large", f"the message is {len(raw)} bytes, over the limit of {max_bytes}")
    try:
        obj = loads(raw)
    except JSONDecodeError as exc:
        obj = _lenient_loads(raw)
        if obj is None:
            raise InvalidMessage("invalid_json", f"the message is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidMessage("not_an_object", f"the message is JSON {type(obj).__name__}, not an object")
    return obj


def _lenient_loads(raw: bytes) -> Any:
    """Parse JSON with the stdlib, which also accepts NaN and Infinity; None when that fails too."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # nested deeper than any parser allows
        return None


def _require(obj: dict[str, Any], name: str) -> Any:
    if name not in obj or obj[name] is None:
        raise InvalidMessage("missing_field", f"required field '{name}' is missing")
    return obj[name]


def _identifier(obj: dict[str, Any], name: str) -> str:
    value = _require(obj, name)
    if not isinstance(value, str):
        raise InvalidMessage("invalid_type", f"'{name}' must be a string, got {type(value).__name__}")
    if not 1 <= len(value) <= ID_MAX_CHARS:
        raise InvalidMessage("invalid_id", f"'{name}' must have 1 to {ID_MAX_CHARS} characters, got {len(value)}")
    return value


def _timestamp(obj: dict[str, Any], name: str = "timestamp") -> datetime:
    value = _require(obj, name)
    if not isinstance(value, str):
        raise InvalidMessage("invalid_type", f"'{name}' must be an ISO-8601 string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidMessage("invalid_timestamp", f"'{name}' is not an ISO-8601 timestamp: {value[:64]!r}") from None
    if parsed.tzinfo is None:
        raise InvalidMessage("invalid_timestamp", f"'{name}' has no UTC offset or 'Z': {value[:64]!r}")
    return parsed


def parse_transaction(raw: bytes | None, max_bytes: int, max_amount: float) -> Transaction:
    """Validate one input message against the ``transactions`` contract.

    >>> parse_transaction(b'{"tx_id":"t1","timestamp":"2018-04-01T10:00:00Z","customer_id":"c1",'
    ...                   b'"terminal_id":"k1","amount":12.5}', 65536, 1e7).amount
    12.5
    >>> parse_transaction(b'[1]', 65536, 1e7)
    Traceback (most recent call last):
    ...
    app.records.InvalidMessage: not_an_object: the message is JSON list, not an object
    """
    obj = _decode_object(raw, max_bytes)
    tx_id = _identifier(obj, "tx_id")
    timestamp = _timestamp(obj)
    customer_id = _identifier(obj, "customer_id")
    terminal_id = _identifier(obj, "terminal_id")
    amount = _require(obj, "amount")
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise InvalidMessage("invalid_type", f"'amount' must be a number, got {type(amount).__name__}")
    amount = float(amount)
    if not math.isfinite(amount):
        raise InvalidMessage("invalid_amount", f"'amount' must be finite, got {amount}")
    if not 0.0 <= amount <= max_amount:
        raise InvalidMessage("invalid_amount", f"'amount' must be between 0 and {max_amount:g}, got {amount:g}")
    return Transaction(tx_id, timestamp, customer_id, terminal_id, amount)


def parse_label(raw: bytes | None, max_bytes: int) -> Label:
    """Validate one message against the ``labels`` contract."""
    obj = _decode_object(raw, max_bytes)
    tx_id = _identifier(obj, "tx_id")
    is_fraud = _require(obj, "is_fraud")
    if not isinstance(is_fraud, bool):
        raise InvalidMessage("invalid_type", f"'is_fraud' must be a boolean, got {type(is_fraud).__name__}")
    return Label(tx_id, is_fraud, _timestamp(obj))


def dead_letter(record: Any, error: InvalidMessage) -> bytes:
    """The original bytes, key and position with the reason, so nothing sent to us is ever lost."""
    value = record.value if isinstance(record.value, bytes) else b""
    letter = DeadLetter(error.code, error.reason, record.topic, record.partition, record.offset, b64(value),
                        isoformat_utc(time.time()))  # fmt: skip
    return dumps(letter)
