"""What ``dlq replay`` would publish, decided before anything is sent (pure): each candidate is validated
against the input topic's contract, keyed as the contract says, and refused with the worker's own code when
still invalid.

Candidates come from lines of a file (the JSON lines ``dlq list --json`` prints, with ``value`` edited, or bare
corrected transactions/labels) or from dead letters read off the topic (their original bytes, unchanged).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from app.ops.render import decode_key, raw_bytes
from app.records import InvalidMessage, parse_label, parse_transaction
from app.serialization import JSONDecodeError, dumps, loads
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class Candidate:
    """One message to re-publish: its bytes, the input it goes to, and where it came from (for messages)."""

    origin: str  # "transactions-dlq 0:12" or "file line 3"
    input_kind: str  # "transactions" or "labels"
    value: bytes
    error: str = ""  # the dead letter's code, when it came from one
    dlq_partition: int | None = None
    dlq_offset: int | None = None


@dataclass(frozen=True, slots=True)
class Publish:
    origin: str
    topic: str
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class Refusal:
    origin: str
    reason: str


def input_topics(settings: Settings) -> dict[str, str]:
    """Each dead-letter topic's input topic, by kind."""
    return {"transactions": settings.transactions_topic, "labels": settings.labels_topic}


def dlq_topics(settings: Settings) -> dict[str, str]:
    return {"transactions": settings.transactions_dlq_topic, "labels": settings.labels_dlq_topic}


def export_record(
    kind: str, dlq_topic: str, partition: int, offset: int, key: bytes | None, letter: Mapping[str, Any]
) -> dict[str, Any]:
    """A dead letter as one editable JSON line: ``value`` holds the original message as text (null when it is
    not UTF-8; then ``raw`` is replayed unless ``value`` is filled in).

    >>> export_record("transactions", "transactions-dlq", 0, 3, b"c1", {"error": "invalid_amount", "reason": "r",
    ...     "topic": "transactions", "partition": 1, "offset": 9, "raw": "eyJhIjoxfQ==", "received_at": "t"})["value"]
    '{"a":1}'
    """
    try:
        value: str | None = raw_bytes(str(letter.get("raw", ""))).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        value = None
    return {
        "kind": kind,
        "dlq": dlq_topic,
        "partition": partition,
        "offset": offset,
        "error": letter.get("error"),
        "reason": letter.get("reason"),
        "source": {"topic": letter.get("topic"), "partition": letter.get("partition"), "offset": letter.get("offset")},
        "received_at": letter.get("received_at"),
        "key": None if key is None else decode_key(key),
        "value": value,
        "raw": letter.get("raw"),
    }


def candidate_from_letter(
    kind: str, dlq_topic: str, partition: int, offset: int, letter: Mapping[str, Any]
) -> Candidate:
    """A dead letter's original bytes, unchanged (for errors fixed elsewhere, such as ``scoring_error``)."""
    return Candidate(f"{dlq_topic} {partition}:{offset}", kind, raw_bytes(str(letter.get("raw", ""))),
                     str(letter.get("error", "")), partition, offset)  # fmt: skip


def candidates_from_lines(lines: Iterable[str], bare_kind: str) -> tuple[list[Candidate], list[Refusal]]:
    """Candidates from a file's lines: ``dlq list --json`` records (their ``value``, else ``raw``) or bare
    transaction/label objects (sent to ``bare_kind``). Blank lines and lines starting with ``#`` are skipped.

    >>> found, refused = candidates_from_lines(['{"kind": "labels", "value": "{}", "error": "missing_field"}',
    ...                                         '', '{"tx_id": "t1"}', 'oops'], "transactions")
    >>> [(c.origin, c.input_kind, c.value) for c in found]
    [('file line 1', 'labels', b'{}'), ('file line 3', 'transactions', b'{"tx_id":"t1"}')]
    >>> refused
    [Refusal(origin='file line 4', reason='the line is not JSON')]
    """
    found: list[Candidate] = []
    refused: list[Refusal] = []
    for number, line in enumerate(lines, start=1):
        origin = f"file line {number}"
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            obj = loads(line)
        except JSONDecodeError:
            refused.append(Refusal(origin, "the line is not JSON"))
            continue
        if not isinstance(obj, dict):
            refused.append(Refusal(origin, "the line is not a JSON object"))
            continue
        if "kind" not in obj:  # a bare corrected message
            found.append(Candidate(origin, bare_kind, dumps(obj)))
            continue
        kind = obj["kind"]
        if kind not in ("transactions", "labels"):
            refused.append(Refusal(origin, f"'kind' must be transactions or labels, got {kind!r}"))
            continue
        value = obj.get("value")
        if isinstance(value, str):
            data = value.encode("utf-8")
        else:
            try:
                data = raw_bytes(str(obj.get("raw", "")))
            except ValueError as exc:
                refused.append(Refusal(origin, f"no 'value' text and {exc}"))
                continue
        partition, offset = obj.get("partition"), obj.get("offset")
        found.append(Candidate(origin, kind, data, str(obj.get("error") or ""),
                               partition if isinstance(partition, int) else None,
                               offset if isinstance(offset, int) else None))  # fmt: skip
    return found, refused


def parse_offsets(specs: Iterable[str]) -> set[tuple[int, int]]:
    """``P:O`` pairs (dead-letter partition and offset); ``ValueError`` names a malformed one.

    >>> sorted(parse_offsets(["0:12", "1:3"]))
    [(0, 12), (1, 3)]
    """
    pairs = set()
    for spec in specs:
        partition, sep, offset = spec.partition(":")
        if not sep or not partition.isdigit() or not offset.isdigit():
            raise ValueError(f"--offset wants PARTITION:OFFSET of the dead-letter topic, got {spec!r}")
        pairs.add((int(partition), int(offset)))
    return pairs


def selected(candidate: Candidate, codes: set[str], offsets: set[tuple[int, int]]) -> bool:
    """Whether the selectors keep ``candidate`` (no selector keeps all)."""
    if codes and candidate.error not in codes:
        return False
    if offsets and (candidate.dlq_partition, candidate.dlq_offset) not in offsets:
        return False
    return True


def plan(candidates: Iterable[Candidate], settings: Settings) -> tuple[list[Publish], list[Refusal]]:
    """Validate each candidate as the worker would; a valid one is keyed like the contract says (transactions by
    ``customer_id``, labels by ``tx_id``), an invalid one is refused with the dead-letter code it would get.

    >>> from app.settings import Settings
    >>> ok = b'{"tx_id":"t1","timestamp":"2018-04-01T10:00:00Z","customer_id":"c1","terminal_id":"k","amount":5}'
    >>> bad = b'{"tx_id":"t2","timestamp":"2018-04-01T10:00:00Z","customer_id":"c1","terminal_id":"k","amount":-5}'
    >>> go, no = plan([Candidate("a", "transactions", ok), Candidate("b", "transactions", bad)], Settings())
    >>> [(p.topic, p.key) for p in go], [r.reason for r in no]
    ([('transactions', b'c1')], ["invalid_amount: 'amount' must be between 0 and 1e+07, got -5"])
    """
    topics = input_topics(settings)
    go: list[Publish] = []
    refused: list[Refusal] = []
    for c in candidates:
        try:
            if c.input_kind == "labels":
                key = parse_label(c.value, settings.max_message_bytes).tx_id
            else:
                key = parse_transaction(c.value, settings.max_message_bytes, settings.max_amount).customer_id
        except InvalidMessage as exc:
            refused.append(Refusal(c.origin, f"{exc.code}: {exc.reason}"))
            continue
        go.append(Publish(c.origin, topics[c.input_kind], key.encode("utf-8"), c.value))
    return go, refused


def describe(publish: Publish) -> str:
    """One line of what is (or would be) published.

    >>> describe(Publish("file line 1", "transactions", b"c1", b'{"a":1}'))
    'file line 1 -> transactions key c1 {"a":1}'
    """
    return (
        f"{publish.origin} -> {publish.topic} key {decode_key(publish.key)} {publish.value.decode('utf-8', 'replace')}"
    )
