"""Creates the contract's topics from ``topics/manifest.json`` before the worker subscribes.

Relying on the broker's auto-creation would give one partition and default limits (too small for the
dead-letter topics, which carry the original bytes in base64). :func:`create_topics` is the one place topics are
created: the worker's start, the operator's commands, and the scripts' and tests' own topics.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from app.kafka.clients import Connection, admin_client
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
    "MODELS_TOPIC": "models_topic",
    "MODEL_EVENTS_TOPIC": "model_events_topic",
    "RULES_TOPIC": "rules_topic",
    "RULE_LISTS_TOPIC": "rule_lists_topic",
}


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    schema: str = ""


def manifest() -> list[dict[str, Any]]:
    topics: list[dict[str, Any]] = loads((TOPICS_DIR / "manifest.json").read_bytes())["topics"]
    return topics


def manifest_specs(names: Mapping[str, str], partitions: int) -> list[TopicSpec]:
    """The manifest's topics whose ``env`` key (``TRANSACTIONS_TOPIC``...) ``names`` maps to a name, with
    ``partitions`` where the manifest leaves the count open."""
    return [
        TopicSpec(names[entry["env"]], entry["partitions"] or partitions, dict(entry["config"]), entry["schema"])
        for entry in manifest()
        if entry["env"] in names
    ]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The manifest's topics under the names and partition count that ``settings`` give; ``predictions`` keeps at
    least what the trainer's tails need (:func:`predictions_retention_ms`)."""
    names = {env: getattr(settings, attribute) for env, attribute in _TOPIC_SETTING.items()}
    specs = manifest_specs(names, settings.partitions)
    for spec in specs:
        if spec.name == settings.predictions_topic:
            kept = int(spec.config.get("retention.ms", -1))
            if kept != -1:
                spec.config["retention.ms"] = str(max(kept, predictions_retention_ms(settings)))
    return specs


def predictions_retention_ms(settings: Settings) -> int:
    """What ``predictions`` must keep: the trainer's tails read each prediction ``LABEL_HORIZON_S`` and again
    ``LATE_LABEL_GRACE_S`` after it (app/learning/training.py), plus a day for a trainer that runs behind.

    >>> predictions_retention_ms(Settings()) // 86_400_000, predictions_retention_ms(
    ...     Settings(label_horizon_s=120 * 86400.0)) // 86_400_000
    (16, 128)
    """
    return int((settings.label_horizon_s + settings.late_label_grace_s + 86400.0) * 1000)


async def topic_retention_ms(connection: Connection, topic: str) -> int | None:
    """The ``retention.ms`` a topic has on the broker (-1: kept forever); None when the broker does not say."""
    admin = admin_client(connection)
    await admin.start()
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": None})
        responses = await admin.describe_configs([resource])
        for response in responses:
            for resource in response.to_object().get("resources", []):
                for entry in resource.get("config_entries", []):
                    if entry.get("config_names") == "retention.ms" and entry.get("config_value") is not None:
                        return int(entry["config_value"])
    finally:
        await admin.close()
    return None


class RetentionTooShort(ValueError):
    """A topic deletes records before a reader that needs them reads them: a configuration error."""


async def check_predictions_retention(settings: Settings) -> int | None:
    """The ``predictions`` topic's ``retention.ms`` (-1: forever), or :class:`RetentionTooShort` when it is shorter
    than the trainer needs (:func:`predictions_retention_ms`): the features of a transaction whose label comes late
    would be gone when its tails read it, and it could not be learned."""
    kept = await topic_retention_ms(Connection.of(settings), settings.predictions_topic)
    needed = predictions_retention_ms(settings)
    if kept is not None and 0 <= kept < needed:
        raise RetentionTooShort(
            f"the {settings.predictions_topic} topic keeps records {kept / 86_400_000:g} days (retention.ms {kept}), "
            f"the trainer needs {needed / 86_400_000:g} (LABEL_HORIZON_S + LATE_LABEL_GRACE_S + a day): a label "
            f"coming later would find its features deleted; raise it (kafka-configs.sh --alter --entity-type topics "
            f"--entity-name {settings.predictions_topic} --add-config retention.ms={needed}) or lower LABEL_HORIZON_S"
        )
    return kept


def changelog_topic(settings: Settings) -> str:
    """Customer states, one record per customer and batch (compacted), partitioned like ``transactions``."""
    return f"{settings.app_id}-customer-state-changelog"


def terminal_topic(settings: Settings) -> str:
    """One ``[t, tx_id]`` record per scored transaction, keyed by terminal: what every worker's terminal
    aggregates are fed from."""
    return f"{settings.app_id}-terminal-transactions"


def terminal_checkpoint_topic(settings: Settings) -> str:
    """One partition, compacted: the newest checkpoint of the terminal aggregates (app/state/terminal_checkpoint.py),
    which a worker on an empty disk starts from instead of the whole terminal log."""
    return f"{settings.app_id}-terminal-checkpoints"


def trainer_lease_topic(settings: Settings) -> str:
    """One partition: the worker it is assigned to (in the group ``<APP_ID>-trainer``) runs the trainer."""
    return f"{settings.app_id}-trainer-lease"


def trainer_state_topic(settings: Settings) -> str:
    """The trainer's resume point (models, counts, its readers' positions), compacted, signed."""
    return f"{settings.app_id}-trainer-state"


def trainer_labels_topic(settings: Settings) -> str:
    """One partition, compacted: the changelog of the trainer's label store (labels waiting for the trainer's tails
    and the markers of pairs learned early, keyed by ``tx_id``; the gbdt windows' ring slots, keyed by window, class
    and slot, so it holds at most one record per slot), written in the trainer's transactions."""
    return f"{settings.app_id}-trainer-labels"


def learning_audit_topic(settings: Settings) -> str:
    """One record per pair the trainer learned (``tx_id``, class, how, the version it went into), written in the
    same transaction as that version: what trained a version, label by label. Kept
    ``LEARNING_AUDIT_RETENTION_S``."""
    return f"{settings.app_id}-learning-audit"


def internal_topic_specs(settings: Settings) -> list[TopicSpec]:
    """The worker's own topics. The changelog is compacted often (small segments), so a restore reads about
    one record per live customer; the terminal log keeps 40 days (the longest terminal window and lateness)."""
    changelog = {"cleanup.policy": "compact", "segment.bytes": str(16 * 2**20), "segment.ms": "60000",
                 "min.cleanable.dirty.ratio": "0.2", "max.message.bytes": str(8 * 2**20)}  # fmt: skip
    terminal_log = {"cleanup.policy": "delete", "retention.ms": str(40 * 86400 * 1000)}
    return [
        TopicSpec(changelog_topic(settings), settings.partitions, changelog, ""),
        TopicSpec(terminal_topic(settings), settings.partitions, terminal_log, ""),
        TopicSpec(
            terminal_checkpoint_topic(settings),
            1,
            {
                "cleanup.policy": "compact",
                "segment.ms": "600000",
                "min.cleanable.dirty.ratio": "0.2",
                "max.message.bytes": str(2 * 2**20),
            },
            "",
        ),  # fmt: skip
        TopicSpec(trainer_lease_topic(settings), 1, {}, ""),
        TopicSpec(
            learning_audit_topic(settings),
            settings.partitions,
            {"cleanup.policy": "delete", "retention.ms": str(int(settings.learning_audit_retention_s * 1000))},
            "",
        ),
        TopicSpec(
            trainer_state_topic(settings),
            1,
            {"cleanup.policy": "compact", "segment.ms": "600000", "max.message.bytes": str(2**20 + 1024)},
            "",
        ),  # fmt: skip
        TopicSpec(
            trainer_labels_topic(settings),
            1,
            {
                "cleanup.policy": "compact",
                "segment.bytes": str(64 * 2**20),
                "segment.ms": "600000",
                "min.cleanable.dirty.ratio": "0.2",
            },
            "",
        ),  # fmt: skip
    ]


async def create_topics(
    connection: Connection,
    specs: Sequence[TopicSpec],
    *,
    replication_factor: int = 1,
    client_id: str | None = None,
) -> list[str]:
    """Create the topics of ``specs`` that do not exist; returns the names created. Existing topics (also one
    another process creates meanwhile) are left as they are."""
    admin = admin_client(connection, **({"client_id": client_id} if client_id else {}))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        created = []
        for spec in specs:
            if spec.name in existing:
                continue
            topic = NewTopic(spec.name, spec.partitions, replication_factor, topic_configs=spec.config)
            try:
                await admin.create_topics([topic])
                created.append(spec.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        await admin.close()


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the missing topics (the contract's and the worker's own); returns the names created. Existing
    topics are left as they are."""
    created = await create_topics(
        Connection.of(settings),
        [*topic_specs(settings), *internal_topic_specs(settings)],
        replication_factor=settings.replication_factor,
        client_id=f"{settings.app_id}-admin",
    )
    if created:
        log.info("created topics %s", ", ".join(created))
    return created
