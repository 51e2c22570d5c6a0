"""The one place JSON is read and written (orjson), so every topic speaks the same dialect."""

from __future__ import annotations

import base64
import math
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

    The decision path stamps every prediction: the text of the second is kept from the call before (one datetime
    a second instead of one a call), the milliseconds rounded as ``datetime.fromtimestamp`` rounds them (the
    fraction to microseconds half to even, then truncated), so the text is the datetime's own.

    >>> isoformat_utc(0.25), isoformat_utc(1.9999996), isoformat_utc(-0.25)
    ('1970-01-01T00:00:00.250Z', '1970-01-01T00:00:02.000Z', '1969-12-31T23:59:59.750Z')
    """
    global _second_text
    frac, whole = math.modf(epoch_s)
    if frac < 0.0 or not math.isfinite(epoch_s):
        return _isoformat_datetime(epoch_s)
    us = round(frac * 1e6)
    if us >= 1_000_000:
        whole += 1.0
        us -= 1_000_000
    second = int(whole)
    if _second_text[0] != second:
        _second_text = (second, datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")[:-6])
    return f"{_second_text[1]}.{us // 1000:03d}Z"


_second_text: tuple[int | None, str] = (None, "")


def _isoformat_datetime(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def b64(data: bytes) -> str:
    """Base64 text of raw bytes, for carrying undecodable input inside JSON."""
    return base64.b64encode(data).decode("ascii")
