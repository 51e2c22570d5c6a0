"""The rules' Kafka side: publish rule and list events, read both compacted topics into the current state, and
follow them in every worker.

``python -m app rules ...`` (:mod:`app.ops.rules`) publishes through :func:`publish_rule` and
:func:`publish_list`; :func:`read_rules` folds ``RULE_LISTS_TOPIC`` then ``RULES_TOPIC`` from their start to their
end (:mod:`app.rules.events`). A worker's :class:`RulesFollower` does the same from its start (its decision loop
waits for ``caught_up``), then keeps reading and hands each new rule set and lists to the scorer between batches,
as :mod:`app.learning.follower` does for model versions (both on :mod:`app.kafka.following`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from app.kafka.clients import Connection, committed_reader, plain_producer
from app.kafka.following import CompactedFollower
from app.kafka.reading import read_to_end
from app.rules.events import Record, RuleLog, fold_lists, fold_rules, history
from app.rules.ruleset import LiveRules, RuleSet
from app.serialization import dumps
from app.settings import Settings

log = logging.getLogger(__name__)

LIST_EVENT_MAX_BYTES = 8 * 2**20
FOLLOW_POLL_MS = 200  # how long a fetch waits for a new event: a rule reaches the scorer well within a second


@dataclass(frozen=True, slots=True)
class RulesState:
    """What the two topics say now."""

    rule_set: RuleSet
    refused: list[tuple[str, str]]  # (rule id, reason): rules on the topic that do not compile here
    lists: dict[str, frozenset[str]]
    lists_version: int
    history: list[dict[str, Any]]  # every rule event still on the topic, in order


async def _records(consumer: AIOKafkaConsumer, topic: str, timeout_s: float) -> list[Record]:
    """Every record of a one-partition topic, from its start to its end now (an absent topic: none)."""
    partitions = await consumer._client.fetch_all_metadata()  # noqa: SLF001 - consumer.topics() keeps no partitions
    if not partitions.partitions_for_topic(topic):
        return []
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    out: list[Record] = []
    async for batch in read_to_end(consumer, [tp], timeout_ms=500, timeout_s=timeout_s):
        out.extend((r.offset, r.key, r.value) for r in batch.get(tp, []))
    return out


async def read_rules(settings: Settings, timeout_s: float = 30.0) -> RulesState:
    """The lists, then the rules compiled against them (read_committed, no consumer group)."""
    consumer = committed_reader(Connection.of(settings), client_id=f"{settings.app_id}-rules",
                                max_partition_fetch_bytes=16 * 2**20, fetch_max_bytes=32 * 2**20)  # fmt: skip
    await asyncio.wait_for(consumer.start(), timeout_s)
    try:
        list_records = await _records(consumer, settings.rule_lists_topic, timeout_s)
        rule_records = await _records(consumer, settings.rules_topic, timeout_s)
    finally:
        await consumer.stop()
    lists, lists_version = fold_lists(list_records)
    rule_set, refused = fold_rules(rule_records, tuple(lists))
    return RulesState(rule_set, refused, lists, lists_version, history(rule_records))


async def _publish(settings: Settings, topic: str, items: Iterable[tuple[bytes, dict[str, Any]]]) -> list[int]:
    """Send and wait for each event in turn (idempotent, all replicas); returns their offsets."""
    client = plain_producer(Connection.of(settings), acks="all", enable_idempotence=True,
                            max_request_size=LIST_EVENT_MAX_BYTES + 65536)  # fmt: skip
    await client.start()
    try:
        offsets = []
        for key, event in items:
            metadata = await client.send_and_wait(topic, key=key, value=dumps(event))
            offsets.append(metadata.offset)
        return offsets
    finally:
        await client.stop()


async def publish_rule(settings: Settings, event: dict[str, Any]) -> int:
    """Publish one rule event; returns the rule set version it makes (its offset + 1)."""
    (offset,) = await _publish(settings, settings.rules_topic, [(str(event["rule"]["id"]).encode(), event)])
    return offset + 1


async def publish_list(settings: Settings, event: dict[str, Any]) -> int:
    (offset,) = await _publish(settings, settings.rule_lists_topic, [(str(event["name"]).encode(), event)])
    return offset + 1


class RulesFollower(CompactedFollower):
    """Every worker follows both topics (:class:`app.kafka.following.CompactedFollower`: one partition each, from
    the start, ``read_committed``, no consumer group, the lists before the rules that name them), so all fold the
    same events into the same rule set; ``on_rules`` gets each new :class:`LiveRules` (the scorer takes it between
    batches: one assignment on the event loop). ``caught_up`` is set once both were read to their end at the first
    connection: a worker decides nothing before it has the rule set."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        rules_topic: str,
        lists_topic: str,
        on_rules: Callable[[LiveRules], None],
        client_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            "rules follower",
            bootstrap_servers=bootstrap_servers,
            topics=(lists_topic, rules_topic),
            client_options=client_options,
            consumer_options={
                "fetch_max_bytes": 32 * 2**20,
                "max_partition_fetch_bytes": 16 * 2**20,
                "fetch_max_wait_ms": FOLLOW_POLL_MS,
            },  # fmt: skip
            poll_ms=FOLLOW_POLL_MS,
            max_records=5000,
        )
        self.rules_topic = rules_topic
        self.lists_topic = lists_topic
        self.on_rules = on_rules
        self.log = RuleLog()
        self.refused: list[tuple[str, str]] = []  # (rule id, reason): rules on the topic that do not compile here
        self.serving: tuple[int, int] | None = None  # (rules version, lists version) handed to the scorer
        self.live = LiveRules()  # what was handed last

    def _take(self, topic: str, record: Any) -> None:
        folded = [(record.offset, record.key, record.value)]
        if topic == self.lists_topic:
            self.log.apply_lists(folded)
        else:
            self.log.apply_rules(folded)

    def _on_caught_up(self) -> None:
        rule_set = self.log.current()[0]
        log.info("rules follower caught up: rule set version %d (%s, %d rules), lists version %d",
                 rule_set.version, rule_set.digest, len(rule_set.rules), self.log.lists_version)  # fmt: skip

    def _serve(self) -> None:
        """Hand the rule set and lists to ``on_rules`` when either changed."""
        versions = (self.log.rules_version, self.log.lists_version)
        if versions == self.serving:
            return
        rule_set, refused = self.log.current()
        for rule_id, reason in refused:
            if (rule_id, reason) not in self.refused:
                log.error("rule %s on the rules topic not used: %s", rule_id, reason)
        self.refused = refused
        previous, self.serving = self.serving, versions
        self.live = LiveRules(rule_set, dict(self.log.lists), self.log.lists_version)
        self.on_rules(self.live)
        log.info("deciding with rule set version %d (%s: %d active, %d shadow), lists version %d (was %s)",
                 rule_set.version, rule_set.digest, sum(r.state == "active" for r in rule_set.rules),
                 sum(r.state == "shadow" for r in rule_set.rules), self.log.lists_version, previous)  # fmt: skip

    def issues(self) -> list[str]:
        """For the health events (they degrade a healthy worker): rules on the topic this worker does not apply,
        so it decides otherwise than the analysts meant (a list deleted, a feature this feature set lacks)."""
        return [f"rule {rule_id} not applied: {reason}" for rule_id, reason in self.refused[:5]]

    def rules_view(self) -> dict[str, Any]:
        """The rule set in force (handed to the scorer last), for ``GET /rules``."""
        rule_set = self.live.rule_set
        return {
            "version": rule_set.version,
            "digest": rule_set.digest,
            "lists_version": self.live.lists_version,
            "rules": [r.to_dict() for r in rule_set.rules],
            "refused": [{"id": rule_id, "reason": reason} for rule_id, reason in self.refused],
        }
