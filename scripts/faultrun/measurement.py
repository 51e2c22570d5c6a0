"""The accounting a fault run's verdict rests on: what was published, what came out, lost, duplicated, recovery;
and, with labels, what the trainer learned of each labelled transaction (from its learning audit).

Pure: no broker, no process. tests/test_chaos_kafka.py checks it on crafted inputs.
"""

from __future__ import annotations

import base64
import bisect
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from app.learning.quality import percentiles

PREDICTION = "p"
DEAD_LETTER = "d"
GOOD = "g"
BAD = "b"
LABEL_FRAUD = "lf"  # a label {"is_fraud": true} on the labels topic, under its transaction's tx_id
LABEL_LEGIT = "ll"  # a label {"is_fraud": false}


@dataclass(frozen=True, slots=True)
class Published:
    """One acknowledged send, as the publisher recorded it."""

    id: str
    bad: bool  # malformed on purpose: its outcome must be a dead letter
    sent_at: float  # wall time of the first send attempt
    acked_at: float = 0.0
    partition: int = -1
    offset: int = -1
    label: bool | None = None  # a label (on the labels topic): the is_fraud it says; None: a transactions message

    @property
    def kind(self) -> str:
        if self.label is not None:
            return LABEL_FRAUD if self.label else LABEL_LEGIT
        return BAD if self.bad else GOOD


@dataclass(frozen=True, slots=True)
class Output:
    """One message read from predictions (kind "p") or the dead-letter topic (kind "d")."""

    kind: str
    id: str
    read_at: float
    partition: int = -1
    offset: int = -1


def tally(published: Iterable[Published], outputs: Iterable[Output], sample: int = 20) -> dict[str, Any]:
    """Delivery counts from the publisher's record and the outputs read.

    ``lost``: published ids without any output; ``duplicated``: published ids with more than one output (of
    either kind), ``extra_copies`` the outputs beyond the first; ``misrouted``: valid transactions that were
    dead-lettered or malformed ones predicted; ``unexpected``: ids output but never recorded as published. Labels in
    the record are not messages of the transactions topic: they count in none of these.

    >>> p = [Published("a", False, 1.0), Published("b", False, 1.0), Published("x", True, 1.0)]
    >>> o = [Output("p", "a", 2.0), Output("p", "a", 3.0), Output("d", "x", 2.0)]
    >>> t = tally(p, o)
    >>> t["lost"], t["duplicated"], t["extra_copies"], t["predicted"], t["dead_lettered"]
    (1, 1, 1, 1, 1)
    """
    bad_of: dict[str, bool] = {}
    record_duplicates = 0
    for p in published:
        if p.label is not None:
            continue
        if p.id in bad_of:
            record_duplicates += 1
        bad_of[p.id] = p.bad
    predictions: Counter[str] = Counter()
    letters: Counter[str] = Counter()
    unexpected: Counter[str] = Counter()
    for o in outputs:
        if o.id not in bad_of:
            unexpected[o.id] += 1
        elif o.kind == PREDICTION:
            predictions[o.id] += 1
        else:
            letters[o.id] += 1
    lost = [i for i in bad_of if predictions[i] + letters[i] == 0]
    duplicated = {i: predictions[i] + letters[i] for i in bad_of if predictions[i] + letters[i] > 1}
    misrouted = [i for i, bad in bad_of.items() if (letters[i] if not bad else predictions[i])]
    return {
        "published": len(bad_of),
        "published_valid": sum(1 for bad in bad_of.values() if not bad),
        "published_malformed": sum(1 for bad in bad_of.values() if bad),
        "record_duplicates": record_duplicates,
        "predicted": len(predictions),
        "dead_lettered": len(letters),
        "lost": len(lost),
        "duplicated": len(duplicated),
        "extra_copies": sum(n - 1 for n in duplicated.values()),
        "misrouted": len(misrouted),
        "unexpected": len(unexpected),
        "lost_sample": sorted(lost)[:sample],
        "duplicated_sample": dict(sorted(duplicated.items())[:sample]),
        "misrouted_sample": sorted(misrouted)[:sample],
        "unexpected_sample": sorted(unexpected)[:sample],
    }


@dataclass(frozen=True, slots=True)
class Learned:
    """One record of the trainer's learning audit (``<APP_ID>-learning-audit``), read committed."""

    tx_id: str
    learned_as: str  # "fraud" | "legitimate"
    how: str  # "explicit" | "implicit" | "late"
    version: str = ""
    read_at: float = 0.0
    partition: int = -1
    offset: int = -1


# What happened to a labelled, decided transaction in the trainer, each in exactly one of these (the first that
# applies, in this order); the first four are failures.
LEARNING_OUTCOMES = (
    "frauds_learned_as_legitimate",  # a fraud label, and an audit record "legitimate" (an implicit negative, say)
    "wrong_class",  # a legitimate label learned as fraud
    "learned_twice",  # more than one audit record (of the label's class)
    "never_learned",  # no audit record at all
    "learned_as_fraud",  # a fraud label learned once, as fraud
    "learned_as_legitimate",  # a legitimate label learned once, as legitimate
)
LEARNING_FAILURES = LEARNING_OUTCOMES[:4]


def learning_tally(
    published: Iterable[Published], outputs: Iterable[Output], audit: Iterable[Learned], sample: int = 20
) -> dict[str, Any]:
    """What the trainer learned of each labelled transaction that was decided (predicted), from its audit.

    Each such transaction is in exactly one of :data:`LEARNING_OUTCOMES`. A fraud with any ``legitimate`` record is
    a fraud learned as legitimate even when a late ``fraud`` record follows (the implicit negative, then the late
    fraud: not "learned twice"); a legitimate label with any ``fraud`` record is ``wrong_class``; more than one
    record otherwise is ``learned_twice``. ``labelled_not_decided``: labels of transactions without a prediction
    (lost or dead-lettered: the delivery accounting counts those); ``audit_unexpected``: audited ids without a
    published label (a failure too: nothing but the run's labels can teach its trainer); ``audit_records``: every
    record read; ``learned_how``: the records by ``how``; the samples show each failure's records.

    >>> p = [Published("a", False, 1.0), Published("a", False, 2.0, label=True),
    ...      Published("b", False, 1.0), Published("b", False, 2.0, label=False),
    ...      Published("c", False, 1.0), Published("c", False, 2.0, label=True)]
    >>> o = [Output("p", "a", 1.5), Output("p", "b", 1.5), Output("p", "c", 1.5)]
    >>> t = learning_tally(p, o, [Learned("a", "fraud", "explicit"), Learned("b", "legitimate", "explicit"),
    ...                           Learned("c", "legitimate", "implicit"), Learned("c", "fraud", "late")])
    >>> t["learned_as_fraud"], t["learned_as_legitimate"], t["frauds_learned_as_legitimate"], t["learned_twice"]
    (1, 1, 1, 0)
    """
    labels: dict[str, bool] = {}
    label_duplicates = 0
    for p in published:
        if p.label is not None:
            label_duplicates += p.id in labels
            labels[p.id] = p.label
    predicted = {o.id for o in outputs if o.kind == PREDICTION}
    records: dict[str, list[Learned]] = {}
    how: Counter[str] = Counter()
    n_records = 0
    for a in audit:
        records.setdefault(a.tx_id, []).append(a)
        how[a.how] += 1
        n_records += 1
    outcome: dict[str, list[str]] = {name: [] for name in LEARNING_OUTCOMES}
    for tx_id, is_fraud in labels.items():
        if tx_id not in predicted:
            continue
        learned = records.get(tx_id, [])
        classes = {a.learned_as for a in learned}
        if is_fraud and "legitimate" in classes:
            name = "frauds_learned_as_legitimate"
        elif not is_fraud and "fraud" in classes:
            name = "wrong_class"
        elif len(learned) > 1:
            name = "learned_twice"
        elif not learned:
            name = "never_learned"
        else:
            name = "learned_as_fraud" if is_fraud else "learned_as_legitimate"
        outcome[name].append(tx_id)
    unexpected = sorted(tx_id for tx_id in records if tx_id not in labels)

    def shown(ids: list[str]) -> dict[str, list[list[str]]]:
        return {i: [[a.learned_as, a.how, a.version] for a in records.get(i, [])] for i in sorted(ids)[:sample]}

    result: dict[str, Any] = {
        "labels_published": len(labels),
        "label_record_duplicates": label_duplicates,
        "fraud_labels": sum(labels.values()),
        "labelled_decided": sum(len(ids) for ids in outcome.values()),
        "labelled_not_decided": sum(1 for tx_id in labels if tx_id not in predicted),
        **{name: len(ids) for name, ids in outcome.items()},
        "learned_once": len(outcome["learned_as_fraud"]) + len(outcome["learned_as_legitimate"]),
        "audit_records": n_records,
        "audit_unexpected": len(unexpected),
        "learned_how": dict(sorted(how.items())),
    }
    for name in LEARNING_FAILURES:
        result[f"{name}_sample"] = shown(outcome[name])
    result["audit_unexpected_sample"] = shown(unexpected)
    return result


def recovery_s(
    fault_at: float,
    sent_at: Mapping[str, float],
    outputs_by_time: Sequence[Output],
    times: Sequence[float] | None = None,
) -> float | None:
    """Seconds from ``fault_at`` to the first output read after it for a message first sent after it.

    ``outputs_by_time`` must be sorted by ``read_at`` (``times``: their read times, to bisect without a copy).
    None when no such output came.

    >>> outs = [Output("p", "old", 11.0), Output("p", "new", 12.5), Output("p", "newer", 13.0)]
    >>> recovery_s(10.0, {"old": 9.0, "new": 10.5, "newer": 12.0}, outs)
    2.5
    >>> recovery_s(20.0, {"old": 9.0, "new": 10.5, "newer": 12.0}, outs) is None
    True
    """
    times = times if times is not None else [o.read_at for o in outputs_by_time]
    for o in itertools.islice(outputs_by_time, bisect.bisect_left(times, fault_at), None):
        sent = sent_at.get(o.id)
        if sent is not None and sent >= fault_at:
            return o.read_at - fault_at
    return None


def trainer_availability(probes: Sequence[tuple[float, str | None]]) -> dict[str, Any]:
    """How much of the time some worker trained, from ``(time, worker that trained or None)`` probes in time order,
    each holding until the next: ``active_share`` of the time between the first and the last probe, the longest
    stretch without a trainer (``longest_inactive_s``, from ``longest_inactive_from``), the trainer's moves from
    one worker to another (``moves``: a restart in place is not a move) and the time each worker trained.

    >>> t = trainer_availability([(0.0, "w0"), (2.0, None), (3.0, None), (5.0, "w1"), (6.0, "w0"), (10.0, "w0")])
    >>> t["active_share"], t["longest_inactive_s"], t["longest_inactive_from"], t["moves"], t["trained_s"]
    (0.7, 3.0, 2.0, 2, {'w0': 6.0, 'w1': 1.0})
    """
    trained: dict[str, float] = {}
    longest, longest_from = 0.0, None
    inactive_from: float | None = None
    moves = 0
    last_owner: str | None = None
    for (t, owner), (t_next, _) in itertools.pairwise(probes):
        if owner is None:
            inactive_from = t if inactive_from is None else inactive_from
            if t_next - inactive_from > longest:
                longest, longest_from = t_next - inactive_from, inactive_from
            continue
        inactive_from = None
        trained[owner] = trained.get(owner, 0.0) + t_next - t
        moves += last_owner is not None and owner != last_owner
        last_owner = owner
    span = probes[-1][0] - probes[0][0] if len(probes) > 1 else 0.0
    return {
        "probes": len(probes),
        "active_share": round(sum(trained.values()) / span, 3) if span > 0 else None,
        "longest_inactive_s": round(longest, 3),
        "longest_inactive_from": longest_from,
        "moves": moves,
        "trained_s": {k: round(v, 3) for k, v in sorted(trained.items())},
    }


def longest_gap(read_times: Iterable[float]) -> tuple[float, float | None]:
    """The longest time between two consecutive outputs, and when it began; (0.0, None) for fewer than two.

    >>> longest_gap([5.0, 1.0, 2.0, 2.5])
    (2.5, 2.5)
    """
    times = sorted(read_times)
    best, at = 0.0, None
    for a, b in itertools.pairwise(times):
        if b - a > best:
            best, at = b - a, a
    return best, at


def input_check(recorded: Iterable[str], in_topic: Iterable[str], sample: int = 20) -> dict[str, Any]:
    """The record against the input topic's content: the publisher must have written each id exactly once.

    >>> c = input_check(["a", "b", "c"], ["a", "b", "b", "d"])
    >>> c["messages"], c["duplicated"], c["not_in_record"], c["recorded_not_in_topic"], c["consistent"]
    (4, 1, 1, 1, False)
    """
    record = Counter(recorded)
    topic = Counter(in_topic)
    duplicated = sorted(i for i, n in topic.items() if n > 1)
    extra = sorted(i for i in topic if i not in record)
    missing = sorted(i for i in record if i not in topic)
    return {
        "messages": sum(topic.values()),
        "distinct": len(topic),
        "duplicated": len(duplicated),
        "not_in_record": len(extra),
        "recorded_not_in_topic": len(missing),
        "consistent": not duplicated and not extra and not missing and sum(record.values()) == len(record),
        "duplicated_sample": duplicated[:sample],
        "not_in_record_sample": extra[:sample],
        "recorded_not_in_topic_sample": missing[:sample],
    }


def latency_percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p95, p99 and max of ``values`` (app.learning.quality's percentiles: numpy's linear interpolation),
    rounded to the millisecond; None when there are none.

    >>> latency_percentiles([3.0, 1.0, 2.0, 4.0])
    {'p50': 2.5, 'p95': 3.85, 'p99': 3.97, 'max': 4.0}
    >>> latency_percentiles([])
    {'p50': None, 'p95': None, 'p99': None, 'max': None}
    """
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    p = percentiles(values, (50, 95, 99, 100))
    return {"p50": round(p["p50"], 3), "p95": round(p["p95"], 3), "p99": round(p["p99"], 3), "max": round(p["p100"], 3)}


def output_id(kind: str, key: bytes | None, value: bytes | None) -> str:
    """The id an output is about: a prediction's key (else its value's tx_id); a dead letter's original tx_id
    (from the base64 ``raw`` bytes, when they are a JSON object with a string tx_id), else its key.

    >>> letter = orjson.dumps({"error": "invalid_json", "raw": base64.b64encode(b"{oops").decode()})
    >>> output_id("d", b"bad-1", letter), output_id("p", b"tx-1", b"{}"), output_id("p", None, b'{"tx_id":"tx-2"}')
    ('bad-1', 'tx-1', 'tx-2')
    """
    if kind == PREDICTION:
        if key:
            return key.decode(errors="replace")
        return str(_json_field(value, "tx_id") or "?")
    raw = _json_field(value, "raw")
    if isinstance(raw, str):
        try:
            tx_id = _json_field(base64.b64decode(raw), "tx_id")
        except ValueError:
            tx_id = None
        if isinstance(tx_id, str) and tx_id:
            return tx_id
    return key.decode(errors="replace") if key else "?"


def input_id(key: bytes | None, value: bytes | None) -> str:
    """The id of a message on the input topic: its value's tx_id when it has one, else its key."""
    tx_id = _json_field(value, "tx_id")
    if isinstance(tx_id, str) and tx_id:
        return tx_id
    return key.decode(errors="replace") if key else "?"


def _json_field(data: bytes | None, name: str) -> Any:
    if not data:
        return None
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return obj.get(name) if isinstance(obj, dict) else None


def read_published(path: Path) -> list[Published]:
    """The publisher's record (transactions, malformed messages and labels); a torn last line (a crash mid-write)
    is skipped."""
    out = []
    for parts in _rows(path, 6):
        label = None if parts[1] not in (LABEL_FRAUD, LABEL_LEGIT) else parts[1] == LABEL_FRAUD
        out.append(Published(parts[0], parts[1] == BAD, float(parts[2]), float(parts[3]), int(parts[4]),
                             int(parts[5]), label))  # fmt: skip
    return out


def read_audit(path: Path) -> list[Learned]:
    """The learning audit as read (``audit.tsv``: tx_id, learned_as, how, version, read time, partition, offset)."""
    return [Learned(p[0], p[1], p[2], p[3], float(p[4]), int(p[5]), int(p[6])) for p in _rows(path, 7)]


def audit_entry(value: bytes | None) -> tuple[str, str, str, str]:
    """(tx_id, learned_as, how, version) of an audit record's JSON value; "?" for what it lacks.

    >>> audit_entry(b'{"tx_id": "t1", "learned_as": "fraud", "how": "explicit", "version": "v3"}')
    ('t1', 'fraud', 'explicit', 'v3')
    >>> audit_entry(b"nope")
    ('?', '?', '?', '?')
    """
    try:
        obj = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        obj = None
    obj = obj if isinstance(obj, dict) else {}

    def field(name: str) -> str:
        return str(obj.get(name) or "?").replace("\t", " ").replace("\n", " ")

    return field("tx_id"), field("learned_as"), field("how"), field("version")


def read_outputs(path: Path) -> list[Output]:
    return [Output(p[0], p[1], float(p[2]), int(p[3]), int(p[4])) for p in _rows(path, 5)]


def _rows(path: Path, fields: int) -> Iterator[list[str]]:
    """The record's lines split at tabs, those with ``fields`` fields (a torn last line has fewer)."""
    for line in _lines(path):
        parts = line.split("\t")
        if len(parts) == fields:
            yield parts


def _lines(path: Path) -> Iterator[str]:
    if not path.exists():
        return
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.endswith("\n"):
                yield line[:-1]
