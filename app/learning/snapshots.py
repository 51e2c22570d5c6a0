"""Signed model snapshots: what travels on the ``models`` topic, checked before anything is deserialised.

A snapshot is a pickle, and unpickling runs code: so every snapshot carries an HMAC-SHA256 over its header and
payload, made with ``MODEL_SIGNING_KEY``, and a reader refuses one that is unsigned, altered or signed with another
key *before* it touches the payload. The header names the feature set the model was trained on
(:data:`app.features.spec.FEATURE_SET_VERSION`); a model of another one (or of none: older snapshots) is refused
too, as it would be fed features in another layout. Layout::

    b"FRM1" | 32-byte HMAC | 4-byte header length (big endian) | header (JSON) | payload (pickle)

>>> key = b"k"
>>> raw = sign({"version": "v1"}, b"payload", key)
>>> verify(raw, key)
({'version': 'v1'}, b'payload')
>>> verify(raw[:-1] + b"!", key)
Traceback (most recent call last):
...
app.learning.snapshots.SnapshotRefused: bad_signature: the HMAC does not match (altered, or signed with another key)
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import struct
from typing import Any

from app.features.spec import FEATURE_SET_VERSION, UNVERSIONED_FEATURE_SET, FeatureSetMismatch
from app.learning.model import FraudModel
from app.serialization import dumps, loads

MAGIC = b"FRM1"
_LENGTH = struct.Struct(">I")
_PREFIX = len(MAGIC) + 32 + _LENGTH.size


class SnapshotRefused(Exception):
    """A snapshot that must not be loaded; ``code`` is ``unsigned``, ``bad_signature``, ``malformed`` or
    ``feature_set`` (a bounded set: it labels ``fraud_model_snapshots_refused_total``)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def _mac(key: bytes, signed: bytes) -> bytes:
    return hmac.new(key, signed, hashlib.sha256).digest()


def sign(header: dict[str, Any], payload: bytes, key: bytes) -> bytes:
    """The signed envelope of ``header`` (JSON-serialisable) and ``payload``."""
    head = dumps(header)
    signed = MAGIC + _LENGTH.pack(len(head)) + head + payload
    return MAGIC + _mac(key, signed) + _LENGTH.pack(len(head)) + head + payload


def verify(raw: bytes | None, key: bytes) -> tuple[dict[str, Any], bytes]:
    """The header and payload of a snapshot whose signature holds; :class:`SnapshotRefused` otherwise."""
    if raw is None or len(raw) < _PREFIX or not raw.startswith(MAGIC):
        raise SnapshotRefused("unsigned", "not a signed snapshot (no FRM1 envelope)")
    mac = raw[len(MAGIC) : len(MAGIC) + 32]
    rest = raw[len(MAGIC) + 32 :]
    if not hmac.compare_digest(mac, _mac(key, MAGIC + rest)):
        raise SnapshotRefused("bad_signature", "the HMAC does not match (altered, or signed with another key)")
    (length,) = _LENGTH.unpack_from(rest)
    head, payload = rest[_LENGTH.size : _LENGTH.size + length], rest[_LENGTH.size + length :]
    try:
        header = loads(head)
    except Exception:
        raise SnapshotRefused("malformed", "the signed header is not JSON") from None
    if not isinstance(header, dict):
        raise SnapshotRefused("malformed", "the signed header is not an object")
    return header, payload


def check_feature_set(header: dict[str, Any], expected: str = FEATURE_SET_VERSION) -> None:
    """:class:`SnapshotRefused` (``feature_set``) unless the header names the feature set this process computes.

    >>> try:
    ...     check_feature_set({"version": "v1", "feature_set": "fs-00000000"}, expected="fs-12345678")
    ... except SnapshotRefused as exc:
    ...     print(exc.code, "|", exc.reason)
    feature_set | model snapshot v1 was made for feature set fs-00000000; this process computes fs-12345678
    """
    found = header.get("feature_set", UNVERSIONED_FEATURE_SET)
    if found != expected:
        what = f"model snapshot {header.get('version', '?')}"
        raise SnapshotRefused("feature_set", str(FeatureSetMismatch(what, found, expected)))


def model_snapshot(header: dict[str, Any], model: FraudModel, key: bytes) -> bytes:
    """A signed snapshot of ``model`` for scoring (its version id goes in the header; the header names the feature
    set this process computes unless it names one).

    Scorers never learn, so the snapshot carries :meth:`FraudModel.for_scoring`: without a binned model's warm-up
    sample (about 12 MB) nor a gbdt's window of labels (its compiled trees only); the trainer's own state keeps
    them."""
    model = model.for_scoring()
    header = {**header, "feature_set": header.get("feature_set", FEATURE_SET_VERSION)}
    return sign(header, pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL), key)


def load_model_snapshot(raw: bytes | None, key: bytes) -> tuple[dict[str, Any], FraudModel]:
    """Verify and check the feature set, then (only then) unpickle; the model comes back carrying the header's
    version id."""
    header, payload = verify(raw, key)
    check_feature_set(header)
    model = pickle.loads(payload)  # noqa: S301 - signed by a holder of MODEL_SIGNING_KEY, checked above
    if not isinstance(model, FraudModel):
        raise SnapshotRefused("malformed", f"payload is a {type(model).__name__}, not a FraudModel")
    model.version_id = str(header["version"])
    return header, model
