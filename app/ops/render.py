"""How the operator's commands print records: one line each, coloured by status on a terminal (pure)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

RESET = "\x1b[0m"
STATUS_COLOURS = {"healthy": "\x1b[32m", "degraded": "\x1b[33m", "unhealthy": "\x1b[31m"}
OTHER_COLOUR = "\x1b[35m"  # stale, or a status this version does not know
FRAUD_COLOUR = "\x1b[31m"
DEAD_LETTER_COLOUR = "\x1b[33m"


def paint(text: str, colour: str, enabled: bool) -> str:
    """``text`` in an ANSI colour when ``enabled`` (stdout is a terminal and colour was not turned off).

    >>> paint("ok", "\\x1b[32m", False)
    'ok'
    >>> paint("ok", "\\x1b[32m", True) == "\\x1b[32mok\\x1b[0m"
    True
    """
    return f"{colour}{text}{RESET}" if enabled else text


def status_colour(status: str) -> str:
    """Green healthy, yellow degraded, red unhealthy, magenta stale and anything else."""
    return STATUS_COLOURS.get(status, OTHER_COLOUR)


def _number(value: Any, digits: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "?"
    return f"{value:.{digits}f}"


def health_line(event: Mapping[str, Any], colour: bool = False) -> str:
    """One health event: time, worker, status, key figures and the issues.

    >>> health_line({"timestamp": "2026-01-01T00:00:00.000Z", "worker": "w1", "status": "degraded",
    ...              "issues": ["p99 latency 120.0 ms is over 100 ms"], "throughput_tps": 950.5,
    ...              "latency_ms": {"p50": 6.0, "p99": 120.0}, "error_rate": 0.001, "dead_letters": 3,
    ...              "transactions": 57030, "model_version": "logreg-1", "labels_learned": 12,
    ...              "terminal_feed_lag_s": 0.2})
    '2026-01-01T00:00:00.000Z w1 degraded  950.5 tx/s p50 6.0 ms p99 120.0 ms errors 0.10% dead 3 model logreg-1 \
learned 12 feed lag 0.2 s | p99 latency 120.0 ms is over 100 ms'
    """
    status = str(event.get("status", "?"))
    latency = event.get("latency_ms") or {}
    error_rate = event.get("error_rate")
    errors = f"{error_rate:.2%}" if isinstance(error_rate, int | float) else "?"
    figures = (
        f"{_number(event.get('throughput_tps'), 1)} tx/s p50 {_number(latency.get('p50'), 1)} ms "
        f"p99 {_number(latency.get('p99'), 1)} ms errors {errors} dead {event.get('dead_letters', '?')} "
        f"model {event.get('model_version', '?')} learned {event.get('labels_learned', '?')} "
        f"feed lag {_number(event.get('terminal_feed_lag_s'), 1)} s"
    )
    issues = event.get("issues") or []
    text = f"{event.get('timestamp', '?')} {event.get('worker', '?')} {status:<9} {figures}"
    if issues:
        text += " | " + "; ".join(str(issue) for issue in issues)
    return paint(text, status_colour(status), colour)


def prediction_line(prediction: Mapping[str, Any], colour: bool = False) -> str:
    """One decision: scored time, tx_id, probability, FRAUD/ok, model version and reasons; then, when the
    prediction has them (not one from before the rules), the decision, the rules that matched and the versions of the
    rule set and of the lists it was decided with.

    >>> prediction_line({"scored_at": "2026-01-01T00:00:01.000Z", "tx_id": "tx-9", "fraud_probability": 0.91234,
    ...                  "is_fraud": True, "model_version": "logreg-1", "reasons": ["amount", "is_night"]})
    '2026-01-01T00:00:01.000Z tx-9 p=0.9123 FRAUD model logreg-1 reasons amount, is_night'
    >>> line = prediction_line({"scored_at": "2026-01-01T00:00:01.000Z", "tx_id": "tx-9", "fraud_probability": 0.1,
    ...     "is_fraud": False, "model_version": "logreg-1", "reasons": [], "decision": "review",
    ...     "rules": ["velocity"], "shadow_rules": ["try"], "rule_set_version": 4, "lists_version": 2})
    >>> line.partition(" decision ")[2]
    'review rules velocity (shadow try) rules v4 lists v2'
    """
    fraud = bool(prediction.get("is_fraud"))
    reasons = ", ".join(str(r) for r in prediction.get("reasons") or []) or "-"
    text = (
        f"{prediction.get('scored_at', '?')} {prediction.get('tx_id', '?')} "
        f"p={_number(prediction.get('fraud_probability'), 4)} {'FRAUD' if fraud else 'ok'} "
        f"model {prediction.get('model_version', '?')} reasons {reasons}"
    )
    if "decision" in prediction:
        rules = ", ".join(str(r) for r in prediction.get("rules") or []) or "-"
        shadow = ", ".join(str(r) for r in prediction.get("shadow_rules") or [])
        text += f" decision {prediction['decision']} rules {rules}" + (f" (shadow {shadow})" if shadow else "")
        text += f" rules v{prediction.get('rule_set_version', '?')} lists v{prediction.get('lists_version', '?')}"
    return paint(text, FRAUD_COLOUR, colour and fraud)


def decode_raw(raw_b64: Any) -> tuple[str, str]:
    """A dead letter's ``raw`` field as (kind, text): ``text`` when the bytes are UTF-8 (control characters
    escaped), ``bytes`` (Python-escaped) when not, ``base64?`` when the field itself is not base64.

    >>> decode_raw("eyJhIjoxfQ==")
    ('text', '{"a":1}')
    >>> decode_raw("bm90IGpzb24KIGF0IGFsbA==")
    ('text', 'not json\\\\n at all')
    >>> decode_raw("/+4A")
    ('bytes', "b'\\\\xff\\\\xee\\\\x00'")
    >>> decode_raw("")
    ('empty', '')
    >>> decode_raw("%%%")
    ('base64?', '%%%')
    """
    if not isinstance(raw_b64, str):
        return "base64?", repr(raw_b64)
    try:
        data = base64.b64decode(raw_b64, validate=True)
    except (binascii.Error, ValueError):
        return "base64?", raw_b64
    if not data:
        return "empty", ""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes", repr(data)
    return "text", "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def raw_bytes(raw_b64: str) -> bytes:
    """The original bytes of a dead letter (raises ``ValueError`` when ``raw`` is not base64)."""
    try:
        return base64.b64decode(raw_b64, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"raw is not base64: {exc}") from exc


def shorten(text: str, max_chars: int) -> str:
    """``text`` cut to ``max_chars`` with a note of how much was left out; 0 keeps it whole.

    >>> shorten("abcdefgh", 4)
    'abcd...(4 more)'
    >>> shorten("abc", 0)
    'abc'
    """
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    return f"{text[:max_chars]}...({len(text) - max_chars} more)"


def dead_letter_line(
    dlq_topic: str, partition: int, offset: int, key: bytes | None, letter: Mapping[str, Any],
    colour: bool = False, max_raw_chars: int = 300,
) -> str:  # fmt: skip
    """One dead letter: where it sits, its code and reason, where it came from, its key and original bytes.

    >>> dead_letter_line("transactions-dlq", 1, 7, b"c1", {"received_at": "2026-01-01T00:00:00.000Z",
    ...     "error": "invalid_amount", "reason": "amount is negative", "topic": "transactions", "partition": 1,
    ...     "offset": 42, "raw": "eyJhbW91bnQiOi01fQ=="})
    '2026-01-01T00:00:00.000Z transactions-dlq 1:7 invalid_amount "amount is negative" from transactions 1:42 \
key c1 text {"amount":-5}'
    """
    kind, text = decode_raw(letter.get("raw"))
    key_text = "-" if key is None else decode_key(key)
    line = (
        f"{letter.get('received_at', '?')} {dlq_topic} {partition}:{offset} "
        f'{paint(str(letter.get("error", "?")), DEAD_LETTER_COLOUR, colour)} "{letter.get("reason", "")}" '
        f"from {letter.get('topic', '?')} {letter.get('partition', '?')}:{letter.get('offset', '?')} "
        f"key {key_text} {kind} {shorten(text, max_raw_chars)}"
    )
    return line.rstrip()


def decode_key(key: bytes) -> str:
    """A message key as text when it is UTF-8, else Python-escaped bytes.

    >>> decode_key(b"c1"), decode_key(b"\\xff")
    ('c1', "b'\\\\xff'")
    """
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return repr(key)


@dataclass(frozen=True, slots=True)
class LagRow:
    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group never committed an offset for this partition
    log_start: int
    log_end: int

    @property
    def lag(self) -> int:
        """Messages after the committed offset (from the log start when none was committed)."""
        position = self.log_start if self.committed is None else max(self.committed, self.log_start)
        return max(0, self.log_end - position)


def lag_table(rows: Sequence[LagRow], states: Mapping[str, str] | None = None) -> list[str]:
    """A fixed-width table, one row per partition, then one line per group: its total and state (when known).

    >>> for line in lag_table([LagRow("g", "t", 0, 5, 0, 9), LagRow("g", "t", 1, None, 2, 4)], {"g": "Stable"}):
    ...     print(line)
    GROUP  TOPIC  PARTITION  COMMITTED  LOG-END  LAG
    g      t      0          5          9        4
    g      t      1          -          4        2
    g: total lag 6 (Stable); 1 partition without a committed offset (lag counted from the log start)
    """
    header = ("GROUP", "TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG")
    table: list[tuple[str, ...]] = [header]
    for row in rows:
        committed = "-" if row.committed is None else str(row.committed)
        table.append((row.group, row.topic, str(row.partition), committed, str(row.log_end), str(row.lag)))
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in table]
    for group in dict.fromkeys(row.group for row in rows):
        state = (states or {}).get(group)
        mine = [row for row in rows if row.group == group]
        line = f"{group}: total lag {sum(row.lag for row in mine)}" + (f" ({state})" if state else "")
        uncommitted = sum(row.committed is None for row in mine)
        if uncommitted:
            line += (f"; {uncommitted} partition{'' if uncommitted == 1 else 's'} without a committed offset "
                     "(lag counted from the log start)")  # fmt: skip
        lines.append(line)
    return lines
