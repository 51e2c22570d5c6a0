"""``topics/openapi.json`` as validators of the requests sent to and the answers given by the REST API."""

from __future__ import annotations

from functools import cache
from typing import Any

from jsonschema import FormatChecker
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from app.serialization import loads
from app.settings import TOPICS_DIR

DOC_URI = "urn:fraud:openapi"


@cache
def document() -> dict[str, Any]:
    doc: dict[str, Any] = loads((TOPICS_DIR / "openapi.json").read_bytes())
    validate(doc)  # the document itself is valid OpenAPI 3.1
    return doc


def _validator(schema: dict[str, Any]) -> OAS31Validator:
    registry: Registry = Registry().with_resource(DOC_URI, Resource.from_contents(document(), DRAFT202012))
    return OAS31Validator(schema, registry=registry, format_checker=FormatChecker())


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """Local ``#/components/...`` references rewritten against the document's URI."""
    ref = schema.get("$ref")
    return {"$ref": DOC_URI + ref} if isinstance(ref, str) and ref.startswith("#") else schema


def _operation(path: str, method: str) -> dict[str, Any]:
    paths = document()["paths"]
    assert path in paths, f"{path} is not in the OpenAPI document"
    assert method in paths[path], f"{method.upper()} {path} is not in the OpenAPI document"
    operation: dict[str, Any] = paths[path][method]
    return operation


def assert_request_valid(path: str, method: str, body: Any) -> None:
    schema = _operation(path, method)["requestBody"]["content"]["application/json"]["schema"]
    errors = [e.message for e in _validator(_resolve(schema)).iter_errors(body)]
    assert not errors, f"request to {method.upper()} {path}: {errors} in {body!r}"[:2000]


def assert_response_valid(path: str, method: str, status: int, body: Any, headers: Any = None) -> None:
    responses = _operation(path, method)["responses"]
    assert str(status) in responses, f"{method.upper()} {path} answered {status}, not documented: {body!r}"[:2000]
    response = responses[str(status)]
    schema = response["content"]["application/json"]["schema"]
    errors = [e.message for e in _validator(_resolve(schema)).iter_errors(body)]
    assert not errors, f"{method.upper()} {path} {status}: {errors} in {body!r}"[:2000]
    if headers is not None:
        for name in response.get("headers", {}):
            assert headers.get(name), f"{method.upper()} {path} {status}: header {name} missing"
