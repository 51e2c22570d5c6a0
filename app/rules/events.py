"""Rule and list changes as events, and the folds that turn the two compacted topics into the current state (pure).

The ``rules`` topic (one partition, compacted, keyed by rule id) holds one event per change: the whole rule after
the change, what changed (``added``, ``updated``, ``disabled``, ``enabled``, ``shadowed``), who, why and when.
Compaction keeps the newest event per rule, which is all the fold needs; the history older than the topic's
``min.compaction.lag.ms`` (30 days) may be gone. The rule set's version is the offset past the newest event folded:
it only grows, two writers never get the same one, and compaction keeps offsets.

The ``rule-lists`` topic (one partition, compacted, keyed by list name) holds each named list whole, its newest
value being the list; its version is likewise the offset past the newest event.

>>> from app.serialization import dumps
>>> rule = Rule("velocity", "customer_nb_tx_1hour > 5", "review")
>>> event = rule_event(rule, "added", by="cli:ana", reason="card testing", timestamp="2026-01-01T00:00:00.000Z")
>>> rules, refused = fold_rules([(0, b"velocity", dumps(event))])
>>> rules.version, [r.id for r in rules.rules], refused
(1, ['velocity'], [])
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import Any

from app.rules.ruleset import DEFAULT_LISTS, Rule, RuleRefused, RuleSet, rule_of
from app.serialization import JSONDecodeError, loads

CHANGES = ("added", "updated", "disabled", "enabled", "shadowed")
LIST_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
MAX_LIST_ITEMS = 50_000  # of up to 128 characters: a list event stays under the topic's 8 MiB
EVENT_FORMAT = 1

# (offset, key, value): one record of a compacted topic, value None for a tombstone
Record = tuple[int, bytes | None, bytes | None]


def rule_event(rule: Rule, change: str, *, by: str, reason: str, timestamp: str) -> dict[str, Any]:
    if change not in CHANGES:
        raise ValueError(f"change must be one of {', '.join(CHANGES)}, not {change!r}")
    return {"format": EVENT_FORMAT, "change": change, "rule": rule.to_dict(), "by": by, "reason": reason,
            "timestamp": timestamp}  # fmt: skip


def list_event(name: str, items: Iterable[str], *, by: str, reason: str, timestamp: str) -> dict[str, Any]:
    """A named list's whole new content; :class:`ValueError` for a bad name or too many items."""
    if not LIST_NAME.match(name):
        raise ValueError(f"list name {name!r}: 1 to 64 lower-case letters, digits or '_', not starting with a digit")
    values = sorted({str(i) for i in items})
    if any(not 1 <= len(v) <= 128 for v in values):
        raise ValueError(f"list {name!r}: every item has 1 to 128 characters (an id)")
    if len(values) > MAX_LIST_ITEMS:
        raise ValueError(f"list {name!r} has {len(values)} items, over the limit of {MAX_LIST_ITEMS}")
    return {"format": EVENT_FORMAT, "name": name, "items": values, "by": by, "reason": reason, "timestamp": timestamp}


def decode(value: bytes) -> dict[str, Any]:
    try:
        event = loads(value)
    except JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise ValueError("not a JSON object")
    return event


class RuleLog:
    """Both topics folded incrementally: a follower applies the records it reads as the topics grow, then takes
    :meth:`current`, recompiled only when something changed (a worker swaps it in between batches)."""

    def __init__(self) -> None:
        self._rules: dict[str, bytes] = {}  # rule id -> its newest event
        self.lists: dict[str, frozenset[str]] = {name: frozenset() for name in DEFAULT_LISTS}
        self.rules_version = 0
        self.lists_version = 0
        self._current: tuple[RuleSet, list[tuple[str, str]]] | None = None

    def apply_lists(self, records: Iterable[Record]) -> None:
        for offset, key, value in records:
            self.lists_version = max(self.lists_version, offset + 1)
            self._current = None
            if value is None:
                name = (key or b"").decode(errors="replace")
                if name in DEFAULT_LISTS:
                    self.lists[name] = frozenset()
                else:
                    self.lists.pop(name, None)
                continue
            try:
                event = decode(value)
                self.lists[str(event["name"])] = frozenset(str(i) for i in event["items"])
            except (ValueError, KeyError, TypeError):
                continue  # not a list event: skipped

    def apply_rules(self, records: Iterable[Record]) -> None:
        for offset, key, value in records:
            self.rules_version = max(self.rules_version, offset + 1)
            self._current = None
            rule_id = (key or b"").decode(errors="replace")
            if value is None:
                self._rules.pop(rule_id, None)
            else:
                self._rules[rule_id] = value

    def current(self) -> tuple[RuleSet, list[tuple[str, str]]]:
        """The rule set (version: the offset past the newest rule event) and the rules refused (id, reason):
        events that do not decode, and rules that no longer compile here (a feature this deployment's feature set
        does not have, a list deleted)."""
        if self._current is not None:
            return self._current
        names = tuple(self.lists)
        rules: list[Rule] = []
        refused: list[tuple[str, str]] = []
        for rule_id, value in self._rules.items():
            try:
                rule = rule_of(decode(value).get("rule"), names)  # type: ignore[arg-type]
            except (RuleRefused, ValueError) as exc:
                refused.append((rule_id, str(exc)))
                continue
            if rule.id != rule_id:
                refused.append((rule_id, f"the event's rule is {rule.id!r}, not its key"))
                continue
            rules.append(rule)
        rule_set = RuleSet.of(rules, self.rules_version, names)
        self._current = (rule_set, [*refused, *rule_set.refused])
        return self._current


def fold_lists(records: Iterable[Record]) -> tuple[dict[str, frozenset[str]], int]:
    """The named lists (the default ones empty unless set) and their version, from the ``rule-lists`` topic."""
    log = RuleLog()
    log.apply_lists(records)
    return log.lists, log.lists_version


def fold_rules(
    records: Iterable[Record], lists: Collection[str] = DEFAULT_LISTS
) -> tuple[RuleSet, list[tuple[str, str]]]:
    """The current rule set (newest event per rule id) and the rules refused (id, reason), compiled against the
    list names ``lists``."""
    log = RuleLog()
    log.lists = {name: frozenset() for name in (*DEFAULT_LISTS, *lists)}
    log.apply_rules(records)
    return log.current()


def history(records: Iterable[Record]) -> list[dict[str, Any]]:
    """Every rule event still on the topic, in order, with its offset (``python -m app rules history``)."""
    out = []
    for offset, key, value in records:
        if value is None:
            out.append({"offset": offset, "rule_id": (key or b"").decode(errors="replace"), "change": "deleted"})
            continue
        try:
            event = decode(value)
        except ValueError:
            continue
        rule = event.get("rule") or {}
        out.append({"offset": offset, "rule_id": rule.get("id", ""), **event})
    return out
