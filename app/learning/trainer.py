"""The trainer: one per deployment, off the decision path, learning every label once.

It runs in a trainer process (:mod:`app.learning.process`: a worker's child, or one run alone), never on a worker's
event loop. Every trainer process competes for the one partition of ``<APP_ID>-trainer-lease`` (group
``<APP_ID>-trainer``); the one that holds it trains, and when it dies the group hands the lease to another within
the session timeout.

Exactly once: the trainer reads ``labels`` and reads ``predictions`` (the feature log) three times - the head as they
come, the tail a horizon late, the grace tail a grace later (:mod:`app.learning.training`) - each a read_committed
consumer without a group, from the positions of its last state. It publishes, in ONE Kafka transaction with
``transactional_id <APP_ID>-trainer`` (a new owner fences the old one), the new model versions, their events, the
audit of the pairs learned, the dead letters of invalid labels, the label store's changes (on the compacted
``<APP_ID>-trainer-labels``, its changelog: labels waiting, learned markers, and the gbdt windows' ring slots written
since the last publication) and its state (models without their windows' rows, counts, every reader's positions:
:class:`app.learning.training.Training`, signed) on the compacted ``<APP_ID>-trainer-state``. What it publishes per
interval follows what changed, not what waits. A new owner rebuilds the label store from its changelog (its local
store, when it has one, replays only the tail) and resumes from that state, the windows' rows read back from the
store: what the old one learned after it is learned again from the same records, and nothing is learned twice in
the published line. The state is split into
chunks under 1 MiB (Kafka's default message limit), all in the same transaction, so readers see one state or the
previous one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from aiokafka.errors import ProducerFenced

from app import metrics
from app.kafka.clients import Connection, committed_reader, group_member, transactional_producer
from app.kafka.reading import read_latest, read_to_end
from app.kafka.supervision import Supervisor
from app.kafka.topics import (
    learning_audit_topic,
    predictions_retention_ms,
    topic_retention_ms,
    trainer_labels_topic,
    trainer_lease_topic,
    trainer_state_topic,
)
from app.learning.follower import ModelFollower
from app.learning.label_store import LabelStore
from app.learning.model import FraudModel
from app.learning.promotion import PromotionPolicy
from app.learning.snapshots import SnapshotRefused, load_model_snapshot, model_snapshot, sign, verify
from app.learning.training import LEARNED_OUTCOMES, FeatureSetMismatch, Training, labels_watermark, training_for
from app.records import InvalidMessage, dead_letter, parse_label
from app.serialization import dumps, isoformat_utc, loads
from app.settings import Settings
from app.state.memory_store import MemoryStore
from app.state.recovery import open_for_recovery
from app.state.rocksdb_store import RocksDBConfig, RocksDBStore
from app.state.store import Store

log = logging.getLogger(__name__)

CHUNK_BYTES = 900_000
# Records learned between two yields to the event loop: about 8 ms of learning at ~120 µs a label. The trainer shared
# the loop with the decision path (a batch of 1,000 labels learned at once held decisions for over 100 ms); in its
# own process the slices keep its lease's heartbeats and its /status answering.
LEARN_SLICE = 64
# Predictions each tail reads per round of the loop, at most: the head and the publishing keep their turn while a
# tail catches up (after a restart, or labels read up to days of event time at once).
TAIL_ROUND = 2000
STATE_HEAD = b"head"
STATE_FORMAT = 2  # the state without waiting features (1: with them, read once and converted)
LABEL_STORE = "trainer-labels"  # the label store's folder under the state directory
# The label changelog keeps a tombstone this long after compaction cleaned it (Kafka's default delete.retention.ms),
# less an hour for clock skew: a local store idle longer is rebuilt, it may miss deletions.
CHANGELOG_TOMBSTONES_KEPT_S = 86400.0 - 3600.0
REPLAY_COMMIT_RECORDS = 10_000  # a restore commits the store every this many changelog records


def _chunk_key(i: int) -> bytes:
    return f"chunk/{i}".encode()


Parsed = tuple[str, dict[str, float], float, float, str | None]  # tx_id, features, event time, served, feature set


def parse_prediction(value: bytes) -> Parsed:
    """What the trainer reads of a prediction (the feature log's record)."""
    p = loads(value)
    t = datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")).timestamp()
    return p["tx_id"], p["features"], t, float(p["fraud_probability"]), p.get("feature_set")


class _Tail:
    """A late reader of the feature log (the tail at the horizon, the grace tail after it): its own consumer,
    assigned the predictions' partitions. It reads each partition in order and stops at the first prediction not
    due yet: that one and the rest of its fetch are held here and the partition paused, so what it holds is bounded
    by one fetch. Its position is the first prediction not handled."""

    def __init__(self, name: str, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        self.name = name
        self.consumer = consumer
        self.partitions = partitions
        self.held: dict[TopicPartition, deque[tuple[int, Parsed | None]]] = {}

    async def start(self, positions: dict[str, int], missing: Callable[[TopicPartition], int | None]) -> None:
        """Seek to ``positions``; a partition without one starts at ``missing(tp)`` (None: its beginning)."""
        self.consumer.assign(self.partitions)
        for tp in self.partitions:
            offset = positions.get(_key(tp))
            if offset is None:
                offset = missing(tp)
            if offset is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)

    async def step(self, before_s: float, behind: dict[str, int], handle: Callable[[Parsed], None]) -> int:
        """Handle the predictions due - event time before ``before_s``, offset before the partition's in ``behind``
        (the reader it must never pass) - in each partition's order, up to :data:`TAIL_ROUND`; returns how many."""

        def due(tp: TopicPartition, offset: int, t: float) -> bool:
            return t < before_s and offset < behind[_key(tp)]

        handled = 0
        for tp in list(self.held):
            queue = self.held[tp]
            while queue and handled < TAIL_ROUND:
                offset, parsed = queue[0]
                if parsed is not None and not due(tp, offset, parsed[2]):
                    break
                queue.popleft()
                if parsed is not None:
                    handle(parsed)
                handled += 1
                if handled % LEARN_SLICE == 0:
                    await asyncio.sleep(0)  # the decisions run between slices of learning
            if not queue:
                del self.held[tp]
                self.consumer.resume(tp)
        if handled >= TAIL_ROUND:
            return handled
        batches = await self.consumer.getmany(timeout_ms=0, max_records=TAIL_ROUND - handled)
        for tp, records in batches.items():
            kept = self.held.get(tp)
            for record in records:
                value: Parsed | None
                try:
                    value = parse_prediction(record.value)
                except Exception as exc:  # predictions are ours; one that does not parse is a bug, not input
                    log.error("prediction at %s@%d not usable for learning: %r", tp, record.offset, exc)
                    value = None
                if kept is None and (value is None or due(tp, record.offset, value[2])):
                    if value is not None:
                        handle(value)
                    handled += 1
                    if handled % LEARN_SLICE == 0:
                        await asyncio.sleep(0)
                    continue
                if kept is None:
                    kept = self.held[tp] = deque()
                    self.consumer.pause(tp)
                kept.append((record.offset, value))
        return handled

    async def positions(self) -> dict[str, int]:
        """``topic/partition`` -> the first prediction not handled."""
        return {_key(tp): self.held[tp][0][0] if self.held.get(tp) else await self.consumer.position(tp)
                for tp in self.partitions}  # fmt: skip


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _interval(interval: tuple[float, float] | None) -> str:
    return f"[{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval is not None else "not computed"


def _key(tp: TopicPartition) -> str:
    return f"{tp.topic}/{tp.partition}"


def label_store(settings: Settings) -> Store:
    """The label store under the state directory: RocksDB (its own cache and write buffers, as configured for the
    worker's stores), or memory (``STATE_BACKEND=memory``, tests)."""
    if settings.state_backend == "memory":
        return MemoryStore(LABEL_STORE)
    return RocksDBStore.from_settings(LABEL_STORE, settings, RocksDBConfig.from_settings(settings))


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
        self.trainer.leased = bool(assigned)
        if assigned:
            self.trainer._acquire()
        else:
            await self.trainer._release()


class Trainer:
    def __init__(
        self,
        settings: Settings,
        follower: ModelFollower,
        key: bytes,
        client_options: dict[str, Any],
        labels_store: Store | None = None,
    ) -> None:
        """``labels_store``: where the label store's partition lives (default: :func:`label_store`, built at the first
        training session)."""
        self.settings = settings
        self.labels_store = labels_store
        self.follower = follower
        self.key = key
        self.client_options = client_options
        self.connection = Connection(settings.bootstrap_servers, client_options, settings.output_compression)
        self.training: Training | None = None
        self._task: asyncio.Task[None] | None = None
        self.leased = False  # the group's last assignment gave this member the lease
        # Called once, the first time this process trains (its state restored): the trainer process lowers its CPU
        # priority there (app.learning.process.lower_priority).
        self.on_active: Callable[[], None] | None = None
        self._counted: Counter[str] = Counter()
        self.policy = PromotionPolicy.from_settings(settings)
        self.lease = Supervisor("trainer lease")
        # The label store's partition is opened by one of: a training session, a standby's catch-up.
        self._labels_lock = asyncio.Lock()
        self._warm_task: asyncio.Task[None] | None = None
        self._warmed_at = -math.inf
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
                self._keep_warm()
        finally:
            self.leased = False
            if self._warm_task is not None:
                self._warm_task.cancel()
                await asyncio.gather(self._warm_task, return_exceptions=True)
            await self._release()
            try:
                await asyncio.wait_for(consumer.stop(), 5)
            except Exception:
                log.debug("trainer lease: consumer stop failed", exc_info=True)

    def _keep_warm(self) -> None:
        """A standby (no lease) catches its label store up with the changelog every ``TRAINER_STANDBY_REFRESH_S``, so
        a takeover replays only the changelog's last seconds instead of every label waiting (at 10 times the default
        population that replay was most of a 23 s takeover)."""
        every_s = self.settings.trainer_standby_refresh_s
        if every_s <= 0 or self.active or (self._warm_task is not None and not self._warm_task.done()):
            return
        if time.monotonic() - self._warmed_at >= every_s:
            self._warm_task = asyncio.ensure_future(self._warm_labels())

    async def _warm_labels(self) -> None:
        try:
            async with self._labels_lock:
                if self.active:
                    return  # the lease came: the session restores the store itself
                store = self.labels_store = self.labels_store or label_store(self.settings)
                try:
                    await self._restore_labels(store, standby=True)
                finally:
                    store.close_partition(0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the takeover then replays more; the next catch-up tries again
            log.warning("trainer standby: the label store's catch-up failed: %r", exc)
        finally:
            self._warmed_at = time.monotonic()

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
        resumes from the last published state. Fenced while the group's last assignment still gives this member the
        lease (it was handed back to a paused trainer as it resumed, before its old session met the fence), no one
        else trains: a new session resumes from the last published state."""
        while True:
            await self.training_supervisor.run(self._train_unless_fenced)
            if not self.leased:
                return
            log.info("trainer fenced while the group gives it the lease: a new session resumes from the last state")
            await asyncio.sleep(1.0)

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
        head = committed_reader(
            self.connection,
            fetch_max_bytes=16 * 2**20,
            # Fewer, larger fetches of the feature log and the labels: every fetch response is decoded on the event
            # loop the decisions run on, and learning can wait half a second.
            fetch_min_bytes=256 * 1024,
            fetch_max_wait_ms=500,
        )
        # The tails: what one holds back is at most one fetch (a partition's records up to the first not due).
        tail_readers = [committed_reader(self.connection, auto_offset_reset="earliest", fetch_max_bytes=4 * 2**20,
                                         max_partition_fetch_bytes=2**20, fetch_max_wait_ms=200)
                        for _ in range(2)]  # fmt: skip
        store = self.labels_store = self.labels_store or label_store(s)
        await producer.start()  # fences a previous trainer and aborts its open transaction
        consumers = [head, *tail_readers]
        for consumer in consumers:
            await consumer.start()
        try:
            await self._check_retention()
            async with self._labels_lock:  # a standby's catch-up in flight ends first
                labels = await self._restore_labels(store)
            training = await self._restore(head, labels)
            training.audit = []  # every pair learned from here on goes to the audit topic with its version
            self.training = training
            metrics.TRAINER_ACTIVE.set(1)
            self.training_supervisor.mark_connected()
            on_active, self.on_active = self.on_active, None
            if on_active is not None:
                on_active()
            predictions = [TopicPartition(s.predictions_topic, p)
                           for p in sorted(await producer.partitions_for(s.predictions_topic))]  # fmt: skip
            label_partitions = [TopicPartition(s.labels_topic, p)
                                for p in sorted(await producer.partitions_for(s.labels_topic))]  # fmt: skip
            inputs = predictions + label_partitions
            head.assign(inputs)
            for tp in inputs:
                if training.positions.get(_key(tp)) is None:
                    await head.seek_to_beginning(tp)
                    training.positions[_key(tp)] = await head.position(tp)
            tail = _Tail("tail", tail_readers[0], predictions)
            grace = _Tail("grace tail", tail_readers[1], predictions)

            # A state converted from the format before the tails: they start where the head stands.
            def at_head(tp: TopicPartition) -> int | None:
                return training.positions.get(_key(tp)) if training.converted else None

            await tail.start(training.tail_positions, at_head)
            await grace.start(training.grace_positions, at_head)
            training.tail_positions, training.grace_positions = await tail.positions(), await grace.positions()
            await self._fill_window(head, training, predictions)
            for tp in inputs:
                head.seek(tp, training.positions[_key(tp)])
            label_inputs = [(tp, _key(tp)) for tp in label_partitions]
            log.info("trainer resumes: %d labels learned, %d labels kept, %d in the window, version %s",
                     training.labels_seen, training.labels_kept, len(training.recent),
                     training.champion_version)  # fmt: skip
            dead: list[tuple[bytes | None, bytes]] = []
            published_at = time.monotonic()
            published_positions = self._all_positions(training)
            busy = False
            while True:
                batches = await head.getmany(timeout_ms=0 if busy else 200, max_records=1000)
                for tp, records in batches.items():
                    for i in range(0, len(records), LEARN_SLICE):
                        self._handle(training, tp, records[i : i + LEARN_SLICE], dead)
                        await asyncio.sleep(0)  # the decisions run between slices of learning
                for tp in inputs:  # past commit markers and aborted records too: everything before it was handled
                    training.positions[_key(tp)] = await head.position(tp)
                ends = await _stable_ends(head, label_partitions)
                through = labels_watermark(
                    (training.positions[key], ends[tp], training.label_times_s.get(key, -math.inf))
                    for tp, key in label_inputs
                )
                metrics.LABELS_WATERMARK_LAG.set(max(0.0, training.stream_time_s - through)
                                                 if math.isfinite(training.stream_time_s) else 0.0)  # fmt: skip
                horizon = training.horizon_at(through)
                # The tail never passes the head (a prediction is in the window or the store before the tail reads
                # it), nor the grace tail the tail.
                read = await tail.step(horizon, training.positions,
                                       lambda p: training.at_horizon(p[0], p[1], p[3], p[4]))  # fmt: skip
                training.tail_positions = await tail.positions()
                graced = await grace.step(horizon - training.grace_s, training.tail_positions,
                                          lambda p: training.after_grace(p[0], p[1], p[3], p[4]))  # fmt: skip
                training.grace_positions = await grace.positions()
                busy = read >= TAIL_ROUND or graced >= TAIL_ROUND
                self._adopt_warm_start(training)
                now = time.monotonic()
                positions = self._all_positions(training)
                due = now - published_at >= s.model_publish_interval_s and (
                    training.learned_since_publish
                    or training.champion_version is None
                    or dead
                    or training.labels.changes()
                    or positions != published_positions  # read on (lag shows it), nothing to learn yet
                )
                if (
                    due
                    or training.learned_since_publish >= s.model_publish_every_labels
                    or (dead and now - published_at >= 1.0)
                ):
                    training.sweep_labels(labels_through_s=through)
                    await self._publish(producer, training, dead)
                    dead = []
                    published_at = now
                    published_positions = positions
                await asyncio.sleep(0)  # the decision loop runs between slices
        finally:
            self.training = None
            metrics.TRAINER_ACTIVE.set(0)
            store.close_partition(0)  # changes not committed are dropped: the next session replays the changelog
            await asyncio.gather(*(c.stop() for c in consumers), producer.stop(), return_exceptions=True)

    async def _check_retention(self) -> None:
        """The tails read predictions up to horizon + grace late: a topic that deletes them sooner loses their pairs
        (the labels waiting for them expire, their implicit negatives are never learned). Said at every start."""
        s = self.settings
        needed = predictions_retention_ms(s)
        try:
            kept = await topic_retention_ms(self.connection, s.predictions_topic)
        except Exception:  # noqa: BLE001 - the check is advice; training goes on without it
            log.debug("retention of %s not known", s.predictions_topic, exc_info=True)
            return
        if kept is not None and kept != -1 and kept < needed:
            log.error("PREDICTIONS_TOPIC %s keeps %.1f days of predictions, but the trainer's tails read them up to "
                      "%.1f days late (LABEL_HORIZON_S + LATE_LABEL_GRACE_S + 1 day): the predictions deleted before "
                      "then are never learned. Raise its retention.ms to %d or more.", s.predictions_topic,
                      kept / 86_400_000, needed / 86_400_000, needed)  # fmt: skip

    @staticmethod
    def _all_positions(training: Training) -> tuple[dict[str, int], ...]:
        return dict(training.positions), dict(training.tail_positions), dict(training.grace_positions)

    async def _fill_window(self, head: AIOKafkaConsumer, training: Training, predictions: list[TopicPartition]) -> None:
        """Fill the head's window again with the predictions its head read and its tail did not (up to the window's
        size, shared by the partitions), so a label that comes soon after a restart is learned at once as before
        it; one whose label waits in the store is learned now."""
        per_partition = training.early_window // max(1, len(predictions))
        starts, ends = {}, {}
        for tp in predictions:
            end = training.positions[_key(tp)]
            start = max(training.tail_positions[_key(tp)], end - per_partition)
            if start < end:
                starts[tp], ends[tp] = start, end
        if not starts:
            return
        filled = 0
        async for batch in read_to_end(head, list(starts), starts=starts, ends=ends, timeout_ms=500, max_records=5000):
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        continue  # fetched along: the head reads it when it gets there
                    try:
                        tx_id, features, t, served, feature_set = parse_prediction(record.value)
                    except Exception:  # noqa: BLE001 - logged when the tail reads it
                        continue
                    training.on_prediction(tx_id, features, t, served, feature_set, again=True)
                    filled += 1
            await asyncio.sleep(0)
        log.info("trainer window filled again: %d predictions read", filled)

    async def _restore_labels(self, store: Store, standby: bool = False) -> LabelStore:
        """The label store as its changelog has it: the local partition resumes from its stored offset or is
        rebuilt (:func:`app.state.recovery.open_for_recovery`), then reads the changelog's tail. The producer was
        started before: no transaction of a previous owner is pending on the changelog. A ``standby`` reads only
        what was committed (its end is the last stable offset) and stops there: the session after its takeover
        reads the rest."""
        changelog = TopicPartition(trainer_labels_topic(self.settings), 0)
        consumer = committed_reader(self.connection, fetch_max_bytes=32 * 2**20, max_partition_fetch_bytes=32 * 2**20,
                                    fetch_max_wait_ms=50)  # fmt: skip
        started = time.monotonic()
        await consumer.start()
        try:
            consumer.assign([changelog])
            low = (await consumer.beginning_offsets([changelog]))[changelog]
            end = (await consumer.end_offsets([changelog]))[changelog]
            part, plan = open_for_recovery(store, 0, low, end, tombstone_retention_s=CHANGELOG_TOMBSTONES_KEPT_S)
            consumer.seek(changelog, plan.replay_from)
            replayed = 0
            transaction = part.begin()
            async for batch in read_to_end(consumer, [changelog], ends={changelog: end}, timeout_ms=500,
                                           max_records=10_000):  # fmt: skip
                for record in batch.get(changelog, []):
                    replayed += 1
                    if record.value is None:
                        transaction.delete(record.key)
                    else:
                        transaction.put(record.key, record.value)
                if transaction.pending_count >= REPLAY_COMMIT_RECORDS:
                    transaction.commit(await consumer.position(changelog))  # every record before it is applied
                    transaction = part.begin()
            transaction.commit(max(await consumer.position(changelog), part.committed_offset or 0))
        except BaseException:
            store.close_partition(0)
            raise
        finally:
            await consumer.stop()
        log.log(logging.DEBUG if standby else logging.INFO,
                "trainer label store%s: %s from changelog offset %d, %d records replayed in %.2f s",
                " (standby)" if standby else "", plan.action.value, plan.replay_from, replayed,
                time.monotonic() - started)  # fmt: skip
        return LabelStore(part)

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
            model.train_in_background()
            training.adopt_champion(model, champion)
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

    async def _restore(self, consumer: AIOKafkaConsumer, labels: LabelStore) -> Training:
        """The last published state over ``labels``; a fresh one (from the newest warm start of ``MODEL_NAME``, if
        any) without it, or when it holds another ``MODEL_NAME`` or was made for another feature set."""
        s = self.settings
        latest = await read_latest(consumer, TopicPartition(trainer_state_topic(s), 0))
        try:
            training = self._from_chunks(latest, labels)
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
        if training.labels is not labels:  # a new line: its own keys (the old line's are swept)
            training.labels = labels
            training.labels_line = labels.line = secrets.token_hex(4)
            training.labels_kept = 0
        training.early_window = s.early_label_window
        wanted = s.challenger_model or None
        current = training.challenger.name if training.challenger is not None else None
        if wanted != current:
            training.set_challenger(FraudModel(wanted, s.prior_fraud_rate) if wanted else None)
        for model in (training.champion, training.challenger):
            if model is not None:
                model.train_in_background()  # a gbdt retrain must not hold the loop (and the lease's heartbeats)
        return training

    def _from_chunks(self, latest: dict[bytes, bytes | None], labels: LabelStore) -> Training | None:
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
        return Training.from_parts(parts, labels=labels)

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
            "metrics": training.quality[role].summary(),  # this model's own scores, just before each label
            "comparison": training.last_comparison,  # the last comparison of the two lines (None: none yet)
            "promotions": training.promotions,
        }
        if role == "champion":  # the served probabilities' figures: what the business saw, by whichever version
            header["served_metrics"] = training.quality["served"].summary()
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
        comparison = training.compare(self.policy) if training.challenger_version else None
        if comparison is not None:
            log.info("comparison %d of the lines over %d labelled transactions (%d frauds): champion %s AP %s, "
                     "challenger %s AP %s, interval %s: %s (%s)", training.comparisons, comparison.labelled,
                     comparison.frauds, training.champion_version, _figure(comparison.champion_ap),
                     training.challenger_version, _figure(comparison.challenger_ap),
                     _interval(comparison.interval),
                     "promoted" if comparison.wins else "kept", comparison.why)  # fmt: skip
            metrics.PROMOTION_COMPARISONS.labels("promoted" if comparison.wins else "kept").inc()
        if comparison is not None and comparison.wins and training.challenger_version:
            event: dict[str, object] = {"action": "promoted", "version": training.challenger_version,
                     "follow": True, "by": "auto", "previous": training.champion_version, "timestamp": now,
                     "reason": comparison.reason(s.auto_promote_margin),
                     "comparison": training.last_comparison}  # fmt: skip
            messages.append((s.model_events_topic, training.challenger_version.encode(), dumps(event)))
            training.swap_roles()
        training.learned_since_publish = 0
        parts = training.state_parts()
        blob = sign({"kind": "trainer-state", "format": STATE_FORMAT, "sequence": training.sequence,
                     "parts": [len(p) for p in parts]}, b"".join(parts), self.key)  # fmt: skip
        chunks = [blob[i : i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)]
        head = dumps(
            {
                "chunks": len(chunks),
                "sha256": hashlib.sha256(blob).hexdigest(),
                "sequence": training.sequence,
                "positions": training.positions,  # the head's: the operator's lag command reads them here
                "tail_positions": training.tail_positions,
                "grace_positions": training.grace_positions,
                "labels_kept": training.labels_kept,
            }
        )
        state_topic = trainer_state_topic(s)
        changelog = trainer_labels_topic(s)
        changes = training.labels.changes()
        async with producer.transaction():
            sends = [await producer.send(topic, key=key, value=value) for topic, key, value in messages]
            sends += [await producer.send(s.labels_dlq_topic, key=key, value=value) for key, value in dead]
            changed = [await producer.send(changelog, key=k, value=v, partition=0) for k, v in changes.items()]
            sends += [await producer.send(state_topic, key=_chunk_key(i), value=c) for i, c in enumerate(chunks)]
            sends.append(await producer.send(state_topic, key=STATE_HEAD, value=head))
            await asyncio.gather(*sends, *changed)
        # Committed: the local store follows its changelog, with the offset after the last change written.
        training.labels.commit(changed[-1].result().offset + 1 if changed else None)
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


async def _stable_ends(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> dict[TopicPartition, int | None]:
    """The offsets the labels partitions are read to when nothing committed is left in them (a read_committed
    reader's end offsets: the last stable offsets), asked of the broker after the predictions were read: a fetch's
    last stable offset can be older than the predictions fetched beside it (a partition whose fetch failed while the
    broker came back, say), and a label committed since would be taken as read. None when the broker does not
    answer: nothing is judged then."""
    try:
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    except Exception:  # noqa: BLE001 - judged again next round
        log.debug("labels end offsets not known", exc_info=True)
        return dict.fromkeys(partitions)
    return {tp: ends.get(tp) for tp in partitions}
