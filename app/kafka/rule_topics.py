"""The rules' Kafka side: publish rule and list events, and read both compacted topics into the current state.

``python -m app rules ...`` (:mod:`app.ops.rules`) publishes through :func:`publish_rule` and
:func:`publish_list`; :func:`read_rules` folds ``RULE_LISTS_TOPIC`` then ``RULES_TOPIC`` from their start to their
end (:mod:`app.rules.events`), which is what a worker does before it decides anything, and what it will keep doing
between batches as :mod:`app.learning.follower` does for model versions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from app.kafka.clients import Connection, committed_reader, plain_producer
from app.kafka.reading import read_to_end
from app.rules.events import Record, fold_lists, fold_rules, history
from app.rules.ruleset import RuleSet
from app.serialization import dumps
from app.settings import Settings

LIST_EVENT_MAX_BYTES = 8 * 2**20


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
