"""The published JSON Schemas in ``topics/``, as validators for what the app writes."""

from __future__ import annotations

from functools import cache
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from app.serialization import loads
from app.settings import TOPICS_DIR


@cache
def validator(schema_file: str) -> Draft202012Validator:
    schema = loads((TOPICS_DIR / schema_file).read_bytes())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def assert_valid(schema_file: str, record: Any) -> None:
    errors = sorted(validator(schema_file).iter_errors(record), key=str)
    assert not errors, f"{schema_file}: {[e.message for e in errors]} in {record!r}"[:2000]
