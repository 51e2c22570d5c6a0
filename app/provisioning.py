"""Creates the contract's topics from ``topics/manifest.json`` before the worker subscribes.

Relying on the broker's auto-creation would give one partition and default limits (too small for the
dead-letter topics, which carry the original bytes in base64).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from app.serialization import loads
from app.settings import TOPICS_DIR, Settings

log = logging.getLogger(__name__)

_TOPIC_SETTING = {
    "TRANSACTIONS_TOPIC": "transactions_topic",
    "LABELS_TOPIC": "labels_topic",
    "PREDICTIONS_TOPIC": "predictions_topic",
    "HEALTH_TOPIC": "health_topic",
    "TRANSACTIONS_DLQ_TOPIC": "transactions_dlq_topic",
    "LABELS_DLQ_TOPIC": "labels_dlq_topic",
}


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]
    schema: str


def manifest() -> list[dict[str, Any]]:
    topics: list[dict[str, Any]] = loads((TOPICS_DIR / "manifest.json").read_bytes())["topics"]
    return topics


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The manifest's topics under the names and partition count that ``settings`` give."""
    specs = []
    for entry in manifest():
        name = getattr(settings, _TOPIC_SETTING[entry["env"]])
        partitions = entry["partitions"] or settings.partitions
        specs.append(TopicSpec(name, partitions, dict(entry["config"]), entry["schema"]))
    return specs


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the missing topics; returns the names created. Existing topics are left as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, client_id=f"{settings.app_id}-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [s for s in topic_specs(settings) if s.name not in existing]
        created = []
        for spec in wanted:
            topic = NewTopic(spec.name, spec.partitions, settings.replication_factor, topic_configs=spec.config)
            try:
                await admin.create_topics([topic])
                created.append(spec.name)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("created topics %s", ", ".join(created))
        return created
    finally:
        await admin.close()
