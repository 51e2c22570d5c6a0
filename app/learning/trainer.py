"""The trainer: one per deployment, off the decision path, learning every label once.

It runs in a trainer process (:mod:`app.learning.process`: a worker's child, or one run alone), never on a worker's
event loop. Every trainer process competes for the one partition of ``<APP_ID>-trainer-lease`` (group
``<APP_ID>-trainer``); the one that holds it trains, and when it dies the group hands the lease to another within
the session timeout.

Exactly once: the trainer reads ``predictions`` (the feature log) and ``labels`` without a consumer group, from
the positions of its last state; it publishes, in ONE Kafka transaction with ``transactional_id <APP_ID>-trainer``
(a new owner fences the old one), the new model versions, their events, the dead letters of invalid labels and its
whole state (models, waiting halves, input positions: :class:`app.learning.training.Training`, signed) on the compacted
``<APP_ID>-trainer-state``. A new owner resumes from that state: what the old one learned after it is learned again
from the same records, and nothing is learned twice in the published line. The state is split into chunks under
1 MiB (Kafka's default message limit), all in the same transaction, so readers see one state or the previous one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import Counter
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from aiokafka.errors import ProducerFenced

from app import metrics
from app.kafka.clients import Connection, committed_reader, group_member, transactional_producer
from app.kafka.reading import read_latest
from app.kafka.supervision import Supervisor
from app.kafka.topics import learning_audit_topic, trainer_lease_topic, trainer_state_topic
from app.learning.follower import ModelFollower
from app.learning.model import FraudModel
from app.learning.snapshots import SnapshotRefused, load_model_snapshot, model_snapshot, sign, verify
from app.learning.training import LEARNED_OUTCOMES, FeatureSetMismatch, Training, labels_watermark, training_for
from app.records import InvalidMessage, dead_letter, parse_label
from app.serialization import dumps, isoformat_utc, loads
from app.settings import Settings

log = logging.getLogger(__name__)

CHUNK_BYTES = 900_000
# Records learned between two yields to the event loop: about 8 ms of learning at ~120 µs a label. The trainer shared
# the loop with the decision path (a batch of 1,000 labels learned at once held decisions for over 100 ms); in its
# own process the slices keep its lease's heartbeats and its /status answering.
LEARN_SLICE = 64
STATE_HEAD = b"head"


def _chunk_key(i: int) -> bytes:
    return f"chunk/{i}".encode()


class _Lease(ConsumerRebalanceListener):  # type: ignore[misc]
    """The lease is decided at each assignment, not at the revocation before it: every change of the group's members
    (a worker started, restarted or resumed) revokes and reassigns the one partition, and a session stopped at the
    revocation and started again when the lease came straight back spent seconds restoring instead of training. Two
    owners cannot both publish meanwhile: a new owner's transactional producer fences the old one."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        pass  # see the class: the assignment that follows keeps or ends the session

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:
            self.trainer._acquire()
        else:
            await self.trainer._release()


class Trainer:
    def __init__(self, settings: Settings, follower: ModelFollower, key: bytes, client_options: dict[str, Any]) -> None:
        self.settings = settings
        self.follower = follower
        self.key = key
        self.client_options = client_options
        self.connection = Connection(settings.bootstrap_servers, client_options, settings.output_compression)
        self.training: Training | None = None
        self._task: asyncio.Task[None] | None = None
        self._counted: Counter[str] = Counter()
        self.lease = Supervisor("trainer lease")
        self.training_supervisor = Supervisor("trainer")  # sessions resume from the last published state

    @property
    def active(self) -> bool:
        return self._task is not None and not self._task.done()

    # ---- the lease ---------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Compete for the lease until cancelled; rejoins after failures (:class:`app.kafka.supervision.Supervisor`)."""
        await self.lease.run(self._lease_session)

    async def _lease_session(self) -> None:
        s = self.settings
        consumer = group_member(
            self.connection,
            f"{s.app_id}-trainer",
            session_timeout_ms=s.session_timeout_ms,
            group_instance_id=f"{s.app_id}-trainer-{s.worker_id}",
            # The lease stays with the worker that holds it when another joins (a SIGKILLed owner coming back took
            # it back from its successor under the range assignor: two trainer restarts per fault); the range
            # assignor second, for members of an earlier release during a rolling upgrade.
            partition_assignment_strategy=(StickyPartitionAssignor, RangePartitionAssignor),
        )
        try:
            await consumer.start()
            consumer.subscribe([trainer_lease_topic(s)], listener=_Lease(self))
            self.lease.mark_connected()
            while True:
                await consumer.getmany(timeout_ms=1000)
        finally:
            await self._release()
            try:
                await asyncio.wait_for(consumer.stop(), 5)
            except Exception:
                log.debug("trainer lease: consumer stop failed", exc_info=True)

    def _acquire(self) -> None:
        if not self.active:
            log.info("trainer lease acquired: this worker trains the shared model")
            self._task = asyncio.ensure_future(self._train_until_released())

    async def _release(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            log.info("trainer lease released")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        metrics.TRAINER_ACTIVE.set(0)

    async def _train_until_released(self) -> None:
        """Train until the lease goes (cancelled) or another worker fences this one; after a failure, the supervisor
        resumes from the last published state."""
        await self.training_supervisor.run(self._train_unless_fenced)

    async def _train_unless_fenced(self) -> None:
        try:
            await self._train()
        except ProducerFenced:
            log.warning("trainer fenced: another worker trains now")

    # ---- training ----------------------------------------------------------------------------------------------

    async def _train(self) -> None:
        s = self.settings
        await self.follower.caught_up.wait()
        producer = transactional_producer(
            self.connection, f"{s.app_id}-trainer", transaction_timeout_ms=s.transaction_timeout_ms, linger_ms=5
        )
        consumer = committed_reader(
            self.connection,
            fetch_max_bytes=16 * 2**20,
            # Fewer, larger fetches of the feature log and the labels: every fetch response is decoded on the event
            # loop the decisions run on, and learning can wait half a second.
            fetch_min_bytes=256 * 1024,
            fetch_max_wait_ms=500,
        )
        await producer.start()  # fences a previous trainer and aborts its open transaction
        await consumer.start()
        try:
            training = await self._restore(consumer)
            training.audit = []  # every pair learned from here on goes to the audit topic with its version
            self.training = training
            metrics.TRAINER_ACTIVE.set(1)
            self.training_supervisor.mark_connected()
            inputs = []
            for topic in (s.predictions_topic, s.labels_topic):
                partitions = await producer.partitions_for(topic)  # waits for the topic's metadata
                inputs += [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(inputs)
            label_inputs = [(tp, f"{tp.topic}/{tp.partition}") for tp in inputs if tp.topic == s.labels_topic]
            for tp in inputs:
                offset = training.positions.get(f"{tp.topic}/{tp.partition}")
                if offset is None:
                    await consumer.seek_to_beginning(tp)
                    training.positions[f"{tp.topic}/{tp.partition}"] = await consumer.position(tp)
                else:
                    consumer.seek(tp, offset)
            log.info("trainer resumes: %d labels learned, %d waiting, version %s", training.labels_seen,
                     training.pending(), training.champion_version)  # fmt: skip
            dead: list[tuple[bytes | None, bytes]] = []
            published_at = time.monotonic()
            published_positions = dict(training.positions)
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=1000)
                for tp, records in batches.items():
                    for i in range(0, len(records), LEARN_SLICE):
                        self._handle(training, tp, records[i : i + LEARN_SLICE], dead)
                        await asyncio.sleep(0)  # the decisions run between slices of learning
                for tp in inputs:  # past commit markers and aborted records too: everything before it was handled
                    training.positions[f"{tp.topic}/{tp.partition}"] = await consumer.position(tp)
                through = labels_watermark(
                    (training.positions[key], _stable_end(consumer, tp), training.label_times_s.get(key, -math.inf))
                    for tp, key in label_inputs
                )
                metrics.LABELS_WATERMARK_LAG.set(max(0.0, training.stream_time_s - through)
                                                 if math.isfinite(training.stream_time_s) else 0.0)  # fmt: skip
                while training.advance(limit=LEARN_SLICE, labels_through_s=through) == LEARN_SLICE:
                    await asyncio.sleep(0)
                self._adopt_warm_start(training)
                now = time.monotonic()
                due = now - published_at >= s.model_publish_interval_s and (
                    training.learned_since_publish
                    or training.champion_version is None
                    or dead
                    or training.positions != published_positions  # read on (lag shows it), nothing to learn yet
                )
                if (
                    due
                    or training.learned_since_publish >= s.model_publish_every_labels
                    or (dead and now - published_at >= 1.0)
                ):
                    training.sweep_labels()
                    await self._publish(producer, training, dead)
                    dead = []
                    published_at = now
                    published_positions = dict(training.positions)
                await asyncio.sleep(0)  # the decision loop runs between slices
        finally:
            self.training = None
            metrics.TRAINER_ACTIVE.set(0)
            await asyncio.gather(consumer.stop(), producer.stop(), return_exceptions=True)

    def _adopt_warm_start(self, training: Training) -> None:
        """A promoted warm start becomes the champion line: the trainer continues from it (the labels after the
        trainer's position are learned on top of it). Other promotions and rollbacks pin what scores and leave the
        trainer's line alone, so no label is lost."""
        registry = self.follower.registry
        champion = registry.champion
        if champion is None or champion in training.adopted or champion not in self.follower.snapshots:
            return
        if registry.headers.get(champion, {}).get("role") != "warm-start":
            return
        _, model = load_model_snapshot(self.follower.snapshots[champion], self.key)
        if model.name != self.settings.model_name:
            log.warning("warm start %s is a %r, not MODEL_NAME %r: not adopted", champion, model.name,
                        self.settings.model_name)  # fmt: skip
        else:
            log.info("trainer continues from the promoted warm start %s (%d labels)", champion, model.labels_learned)
            training.champion, training.champion_version = model, champion
            training.learned_since_publish += 1  # publish the continued line soon
        training.adopted.add(champion)

    def _handle(self, training: Training, tp: TopicPartition, records: list[Any], dead: list[Any]) -> None:
        s = self.settings
        if tp.topic == s.predictions_topic:
            for record in records:
                try:
                    p = loads(record.value)
                    t = datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")).timestamp()
                    training.on_prediction(p["tx_id"], p["features"], t, float(p["fraud_probability"]),
                                           feature_set=p.get("feature_set"))  # fmt: skip
                except Exception as exc:  # predictions are ours; one that does not parse is a bug, not input
                    log.error("prediction at %s@%d not usable for learning: %r", tp, record.offset, exc)
        else:
            source = f"{tp.topic}/{tp.partition}"
            for record in records:
                try:
                    label = parse_label(record.value, s.max_message_bytes)
                except InvalidMessage as exc:
                    dead.append((record.key, dead_letter(record, exc)))
                    training.counts[f"dead_letter:{exc.code}"] += 1
                    continue
                training.on_label(label.tx_id, label.is_fraud, label.timestamp.timestamp(), source)

    async def _restore(self, consumer: AIOKafkaConsumer) -> Training:
        """The last published state; a fresh one (from the newest warm start of ``MODEL_NAME``, if any) without it, or
        when it holds another ``MODEL_NAME`` or was made for another feature set."""
        s = self.settings
        latest = await read_latest(consumer, TopicPartition(trainer_state_topic(s), 0))
        try:
            training = self._from_chunks(latest)
        except FeatureSetMismatch as exc:  # the features changed: the old line's models and halves do not fit
            log.warning("trainer state refused (%s): a new line starts (from the prior, or a warm start of this "
                        "feature set) instead of resuming", exc)  # fmt: skip
            training = self._fresh()
            training.sequence = max(training.sequence, int(loads(latest[STATE_HEAD] or b"{}").get("sequence", 0)))
        if training is not None and training.champion.name != s.model_name:
            log.warning("trainer state holds model %r but MODEL_NAME is %r: starting the configured model afresh",
                        training.champion.name, s.model_name)  # fmt: skip
            training = None
        if training is None:
            training = self._fresh()
        wanted = s.challenger_model or None
        current = training.challenger.name if training.challenger is not None else None
        if wanted != current:
            training.challenger = FraudModel(wanted, s.prior_fraud_rate) if wanted else None
            training.challenger_version = None
        return training

    def _from_chunks(self, latest: dict[bytes, bytes | None]) -> Training | None:
        head = latest.get(STATE_HEAD)
        if head is None:
            return None
        meta = loads(head)
        blob = b"".join(latest.get(_chunk_key(i)) or b"" for i in range(int(meta["chunks"])))
        if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
            raise RuntimeError("trainer state chunks do not match their head")
        try:
            header, payload = verify(blob, self.key)
        except SnapshotRefused as exc:
            log.error("trainer state refused (%s): starting afresh", exc)
            return None
        parts, at = [], 0
        for length in header["parts"]:
            parts.append(payload[at : at + length])
            at += length
        return Training.from_parts(parts)

    def _fresh(self) -> Training:
        s = self.settings
        champion = FraudModel(s.model_name, prior_fraud_rate=s.prior_fraud_rate)
        parent = None
        warm = [h for h in self.follower.registry.versions() if h.get("role") == "warm-start"
                and h.get("model_name") == s.model_name and h["version"] in self.follower.snapshots]  # fmt: skip
        if warm:
            parent = str(warm[0]["version"])
            _, champion = load_model_snapshot(self.follower.snapshots[parent], self.key)
            log.info("trainer starts from warm-start version %s (%d labels)", parent, champion.labels_learned)
        training = training_for(s, champion)
        training.champion_version = parent
        if parent is not None:
            training.adopted.add(parent)
        newest = max((int(h.get("sequence", 0)) for h in self.follower.registry.versions()), default=0)
        training.sequence = max(newest, self.follower.newest_sequence)  # versions of another feature set too
        return training

    # ---- publishing --------------------------------------------------------------------------------------------

    def _version(self, training: Training, model: FraudModel, role: str, parent: str | None) -> tuple[str, bytes]:
        version = training.next_version()
        header = {
            "version": version,
            "parent": parent,
            "created_at": isoformat_utc(time.time()),
            "model_name": model.name,
            "feature_set": training.feature_set,
            "role": role,
            "labels_seen": model.labels_learned,
            "learned": {outcome: training.counts[outcome] for outcome in LEARNED_OUTCOMES},  # by outcome, cumulative
            "sequence": training.sequence,
            "metrics": training.quality[role].summary(),
        }
        return version, model_snapshot(header, model, self.key)

    async def _publish(self, producer: AIOKafkaProducer, training: Training, dead: list[Any]) -> None:
        s = self.settings
        now = isoformat_utc(time.time())
        audit, training.audit = training.audit or [], []
        messages: list[tuple[str, bytes, bytes]] = []
        roles: list[tuple[str, FraudModel]] = [("champion", training.champion)]
        if training.challenger is not None:
            roles.append(("challenger", training.challenger))
        if training.learned_since_publish or training.champion_version is None:
            for role, model in roles:
                parent = training.champion_version if role == "champion" else training.challenger_version
                version, raw = self._version(training, model, role, parent)
                if role == "champion":
                    training.champion_version = version
                else:
                    training.challenger_version = version
                published: dict[str, object] = {"action": "published", "version": version, "role": role,
                                                "by": "trainer", "reason": f"{model.labels_learned} labels",
                                                "timestamp": now}  # fmt: skip
                messages.append((s.models_topic, version.encode(), raw))
                messages.append((s.model_events_topic, version.encode(), dumps(published)))
        audit_topic = learning_audit_topic(s)
        line = training.champion_version  # the champion line's version these pairs went into (before any swap)
        for tx_id, y, how in audit:
            record = {"tx_id": tx_id, "learned_as": "fraud" if y else "legitimate", "how": how, "version": line}
            messages.append((audit_topic, tx_id.encode(), dumps(record)))
        if training.challenger_version and training.challenger_wins(s.auto_promote_margin, s.auto_promote_min_labels):
            if s.auto_promote_margin >= 0:
                champion_ap = training.quality["champion"].summary()["ap"]
                challenger_ap = training.quality["challenger"].summary()["ap"]
                event: dict[str, object] = {"action": "promoted", "version": training.challenger_version,
                         "follow": True, "by": "auto", "previous": training.champion_version, "timestamp": now,
                         "reason": f"challenger AP {challenger_ap:.3f} beats champion AP {champion_ap:.3f} by "
                                   f"{s.auto_promote_margin} or more"}  # fmt: skip
                messages.append((s.model_events_topic, training.challenger_version.encode(), dumps(event)))
                training.swap_roles()
        training.learned_since_publish = 0
        parts = []
        for part in training.state_parts():
            parts.append(part)
            await asyncio.sleep(0)  # decisions run between slices; nothing else changes the training meanwhile
        blob = sign({"kind": "trainer-state", "sequence": training.sequence, "parts": [len(p) for p in parts]},
                    b"".join(parts), self.key)  # fmt: skip
        chunks = [blob[i : i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)]
        head = dumps(
            {
                "chunks": len(chunks),
                "sha256": hashlib.sha256(blob).hexdigest(),
                "sequence": training.sequence,
                "positions": training.positions,
            }
        )  # the operator's lag command reads the positions here
        state_topic = trainer_state_topic(s)
        async with producer.transaction():
            sends = [await producer.send(topic, key=key, value=value) for topic, key, value in messages]
            sends += [await producer.send(s.labels_dlq_topic, key=key, value=value) for key, value in dead]
            sends += [await producer.send(state_topic, key=_chunk_key(i), value=c) for i, c in enumerate(chunks)]
            sends.append(await producer.send(state_topic, key=STATE_HEAD, value=head))
            await asyncio.gather(*sends)
        self._count(training)

    def _count(self, training: Training) -> None:
        """Label outcomes into the metrics, once committed (the counts live in the published state)."""
        for outcome, n in training.counts.items():
            delta = n - self._counted.get(outcome, 0)
            if delta > 0:
                if outcome.startswith("dead_letter:"):
                    metrics.LABEL_DEAD_LETTERS.labels("labels", outcome.partition(":")[2]).inc(delta)
                    metrics.LABELS.labels("dead_letter").inc(delta)
                else:
                    metrics.LABELS.labels(outcome).inc(delta)
        self._counted = Counter(training.counts)
        metrics.PENDING_LEARNING.set(training.pending())


def _stable_end(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    """The offset a partition is read to when nothing committed is left in it, as the last fetch saw it (the last
    stable offset of a read_committed reader, else the high watermark); None before any fetch answered for it."""
    end = consumer.last_stable_offset(tp)
    if end is None or end < 0:
        end = consumer.highwater(tp)
    return end
