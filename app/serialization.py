"""The one place JSON is read and written (orjson), so every topic speaks the same dialect."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError


def dumps(obj: Any) -> bytes:
    """Serialize to compact UTF-8 JSON; dataclasses and numpy scalars are handled by orjson.

    >>> dumps({"a": 1, "b": [True, None]})
    b'{"a":1,"b":[true,null]}'
    """
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises :data:`JSONDecodeError` on anything that is not strict JSON."""
    return orjson.loads(data)


def isoformat_utc(epoch_s: float) -> str:
    """ISO-8601 in UTC with a ``Z`` suffix and millisecond precision.

    >>> isoformat_utc(0.25)
    '1970-01-01T00:00:00.250Z'
    """
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def b64(data: bytes) -> str:
    """Base64 text of raw bytes, for carrying undecodable input inside JSON."""
    return base64.b64encode(data).decode("ascii")
