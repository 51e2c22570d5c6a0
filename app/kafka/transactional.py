"""Consume, process and produce in Kafka transactions: a batch's outputs and its input offsets commit together.

Why not Faust's own ``processing_guarantee="exactly_once"``: on our broker (Kafka 4.1, aiokafka 0.14) it left
thousands of committed duplicates after SIGKILLs, and a Faust agent moves at most a few thousand events a
second on this machine (``../shared/tools/faust-ceiling``), while aiokafka with one transaction per fetched
batch kept exactly once at tens of thousands of messages a second. So the hot loops are this class, hosted by
the Faust app as a service (same lifecycle, web server, metrics and settings).

How it keeps exactly once:
- one transactional producer per assigned input partition, ``transactional_id = <group>-<partition>``: the
  next owner of a partition (another worker after a rebalance, or this worker restarted after a SIGKILL)
  fences the previous owner and aborts its open transaction when it starts, so a zombie can never commit;
- every batch of one partition is one transaction: its outputs (predictions, dead letters, changelog records)
  and the next input offset commit together or not at all;
- the handler applies its state changes to memory only after the commit succeeded; when a commit fails or its
  outcome is unknown, the partition is rebuilt from the committed truth (its changelog and committed offset);
- a rebalance waits for the batch in flight, so offsets of revoked partitions are never committed late.

The broker being away is one state change in the log (connection lost / reconnected, by
:class:`app.kafka.supervision.Supervisor`), not a line per message; :attr:`TransactionalLoop.connected` feeds
``/ready``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

from app.kafka.clients import Connection, group_member, transactional_producer
from app.kafka.pacing import CatchUpPacer
from app.kafka.partitioner import default_partitioner
from app.kafka.supervision import Supervisor
from app.kafka.tuning import RETRY_BACKOFF_MS

log = logging.getLogger(__name__)


def partition_lag(stable: int | None, next_offset: int | None, position: int | None, pending: bool) -> int:
    """Records of one partition not committed yet: its last stable offset (as the fetches last saw it) minus the
    next offset to process. With nothing fetched waiting, the fetch position counts instead: it is past the
    transaction markers, which take offsets but are never processed. Unknown offsets count 0.

    >>> partition_lag(120, 100, 110, pending=True)
    20
    >>> partition_lag(101, 100, 101, pending=False)  # a commit marker at offset 100
    0
    >>> partition_lag(None, 100, 100, pending=False)  # no fetch answered yet
    0
    """
    if stable is None or stable < 0:
        return 0
    done = next_offset if next_offset is not None else position
    if not pending and position is not None:
        done = max(done or 0, position)
    return 0 if done is None else max(0, stable - done)


@dataclass(slots=True)
class Output:
    """One message to produce inside the batch's transaction (``partition`` None: by the key's murmur2)."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None


@dataclass(slots=True)
class Batch:
    """What a handler made of one partition's records: messages to commit, and what to do once committed.

    ``track`` names one ``(topic, partition)`` of the outputs; before ``on_commit`` runs, ``produced_to`` is set
    to the offset right after the last record the transaction wrote there (from the produced records' metadata),
    so a handler can store state together with the changelog offset it covers.
    """

    outputs: list[Output] = field(default_factory=list)
    on_commit: Callable[[], None] | None = None
    track: tuple[str, int] | None = None
    produced_to: int | None = None


class BatchHandler(Protocol):
    async def restore(self, tp: TopicPartition) -> int | None:
        """Rebuild the partition's state from the committed truth (changelog read with read_committed); returns
        the next input offset that state covers, when it knows (the group's committed offset may lag)."""

    def drop(self, tp: TopicPartition) -> None:
        """Forget the partition's state (revoked, or about to be restored)."""

    def process(self, tp: TopicPartition, records: Sequence[Any]) -> Batch:
        """Turn consumed records into outputs; must not change state before ``on_commit``."""

    def idle(self, tp: TopicPartition) -> Batch | None:
        """Work due while no records come (expiry), committed in a transaction of its own; None for none."""

    def event_time(self, record: Any) -> float:
        """The record's event time, for catch-up pacing (``-inf`` when it has none: it goes at once)."""

    def stream_time(self, tp: TopicPartition) -> float | None:
        """The newest event time the restored partition's state covers (None when it has none): pacing holds the
        other partitions to it until this one's own records are fetched."""


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: TransactionalLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.loop._revoke(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.loop._assign(assigned)


class TransactionalLoop:
    """A consumer group over ``topics`` whose batches are handled by ``handler`` in per-partition transactions."""

    def __init__(
        self,
        *,
        name: str,
        bootstrap_servers: str,
        topics: Sequence[str],
        group_id: str,
        instance_id: str | None,
        handler: BatchHandler,
        max_records: int = 500,
        linger_ms: float = 2.0,
        session_timeout_ms: int = 10_000,
        transaction_timeout_ms: int = 30_000,
        on_batch: Callable[[int, float], None] | None = None,
        on_lag: Callable[[int], None] | None = None,
        max_skew_s: float = 0.0,
        offsets_in_state: bool = False,
        consumer_options: dict[str, Any] | None = None,
        client_options: dict[str, Any] | None = None,
        compression: str = "none",
    ) -> None:
        self.name = name
        self.bootstrap_servers = bootstrap_servers
        self.topics = list(topics)
        self.group_id = group_id
        self.instance_id = instance_id
        self.handler = handler
        self.max_records = max_records
        self.linger_ms = linger_ms
        self.session_timeout_ms = session_timeout_ms
        self.transaction_timeout_ms = transaction_timeout_ms
        self.on_batch = on_batch
        self.on_lag = on_lag
        self.pacer = CatchUpPacer(max_skew_s)
        self.offsets_in_state = offsets_in_state
        self.consumer_options = consumer_options or {}
        self._to_commit: dict[TopicPartition, int] = {}
        self._fetched_to: dict[TopicPartition, int] = {}
        self._processed_to: dict[TopicPartition, int | None] = {}  # next input offset to process, per partition
        self.client_options = client_options or {}
        self.connection = Connection(bootstrap_servers, self.client_options, compression)
        self.consumer: AIOKafkaConsumer | None = None
        self.producers: dict[TopicPartition, AIOKafkaProducer] = {}
        self.ready_partitions: set[TopicPartition] = set()
        self.assigned: set[TopicPartition] = set()
        self.supervisor = Supervisor(name)
        self.generation = 0
        self._lock = asyncio.Lock()
        self._broken: set[TopicPartition] = set()
        # One worker task per partition commits that partition's batches, so a slow commit on one partition does
        # not hold the others; the fetch loop only queues records (and pauses a partition whose queue is full).
        self._queues: dict[TopicPartition, deque[Any]] = {}
        self._wake: dict[TopicPartition, asyncio.Event] = {}
        self._inflight: dict[TopicPartition, asyncio.Lock] = {}
        self._workers: dict[TopicPartition, asyncio.Task[None]] = {}
        self._stopping = False

    # ---- lifecycle -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until cancelled; reconnects and rebuilds partitions after failures, logging state changes."""
        watch = asyncio.ensure_future(self._watch())
        try:
            await self.supervisor.run(self._session)
        finally:
            watch.cancel()

    async def _session(self) -> None:
        """Consume until stopping; a failure (the broker went away while (re)starting, or a client bug) closes the
        consumer and its partitions, and the supervisor starts a new session after its backoff."""
        if self._stopping:
            return
        try:
            await self._start_consumer()
            await self._consume()
        except Exception:
            await self._close_consumer()
            raise

    async def _watch(self) -> None:
        """Ask the broker for metadata every second, beside the loop (which may be waiting on a commit): an empty
        fetch or a slow commit does not tell whether the broker is there."""
        while not self._stopping:
            consumer = self.consumer
            if consumer is not None:
                try:  # metadata of our topics only: the whole cluster's can take a long decode on the loop
                    updated = await asyncio.wait_for(consumer._client.force_metadata_update(), 2.0)  # noqa: SLF001
                    if not updated:
                        raise KafkaError("no broker answered a metadata request")
                except Exception as exc:
                    self._set_connected(False, exc)
                else:
                    self._set_connected(True)
                    await self._commit_group_offsets(consumer)
                    if self.on_lag is not None:
                        self.on_lag(await self.consumer_lag(consumer))
            await asyncio.sleep(1.0)

    async def consumer_lag(self, consumer: AIOKafkaConsumer) -> int:
        """Records of the ready partitions not committed yet (:func:`partition_lag`), from offsets the loop already
        holds: no request to the broker. Asked once a second, never per message."""
        held = self.pacer.held()
        total = 0
        for tp in list(self.ready_partitions):
            inflight = self._inflight.get(tp)
            pending = bool(self._queues.get(tp)) or tp in held or (inflight is not None and inflight.locked())
            try:  # the position is known after the partition's seek: answers at once
                position: int | None = await asyncio.wait_for(consumer.position(tp), 0.5)
                stable = consumer.last_stable_offset(tp)
            except Exception:  # revoked meanwhile (this must never end the watch that calls it)
                continue
            total += partition_lag(stable, self._processed_to.get(tp), position, pending)
        return total

    async def _commit_group_offsets(self, consumer: AIOKafkaConsumer) -> None:
        """Offsets of batches that wrote nothing (and, with the offsets in the handler's state, of every batch:
        then only for lag monitoring: a restore continues from the state's position), committed once a second.

        No partition lock is held across the request: a commit waits for a rebalance, and a rebalance waits for
        the partitions' batches. A transaction of the same partition drops the offset waiting here first."""
        offsets = {tp: o for tp, o in self._to_commit.items() if tp in self.ready_partitions}
        for tp in offsets:
            del self._to_commit[tp]
        if not offsets:
            return
        try:
            await asyncio.wait_for(consumer.commit(offsets), 5.0)
        except Exception:  # a rebalance under way: the next owner reads from the last commit
            log.debug("%s: group offset commit skipped", self.name, exc_info=True)

    async def stop(self) -> None:
        """Close every partition (batches in flight first, bounded) and the consumer. Does not wait long for a
        rebalance or a rebuild under way: the next owner's start fences and aborts whatever is left open."""
        self._stopping = True
        try:
            await asyncio.wait_for(self._lock.acquire(), 5.0)
        except TimeoutError:
            log.warning("%s: a rebalance or rebuild is under way; stopping without waiting for it", self.name)
            await self._close_consumer()
            return
        try:
            await self._close_consumer()
        finally:
            self._lock.release()

    @property
    def ready(self) -> bool:
        """Connected, assigned, and every assigned partition restored."""
        return self.connected and bool(self.assigned) and self.assigned <= self.ready_partitions

    @property
    def connected(self) -> bool:
        """The broker answered the last metadata request or commit."""
        return self.supervisor.connected

    def busy(self) -> bool:
        """A batch in flight (being processed or committed) or records queued on some partition: a full
        collection now would hold decisions (:class:`app.collector.FullCollections` waits for a moment without)."""
        return any(lock.locked() for lock in self._inflight.values()) or any(self._queues.values())

    def _set_connected(self, connected: bool, reason: object = None) -> None:
        if connected:
            self.supervisor.mark_connected()
        else:
            self.supervisor.mark_lost(reason, quiet=self._stopping)

    async def _start_consumer(self) -> None:
        if self.consumer is not None:
            return
        consumer = group_member(
            self.connection,
            self.group_id,
            session_timeout_ms=self.session_timeout_ms,
            group_instance_id=self.instance_id,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_poll_interval_ms=300_000,
            **self.consumer_options,
        )
        await consumer.start()
        consumer.subscribe(self.topics, listener=_Listener(self))
        self.consumer = consumer

    async def _close_consumer(self) -> None:
        consumer, self.consumer = self.consumer, None
        await asyncio.gather(*(self._stop_worker(tp, wait_s=10.0) for tp in list(self._workers)))
        await asyncio.gather(*(self._close_producer(tp) for tp in list(self.producers)))
        self.ready_partitions.clear()
        self.assigned.clear()
        if consumer is not None:
            try:
                await asyncio.wait_for(consumer.stop(), 10)
            except Exception:  # stopping a consumer whose broker is gone
                log.debug("%s: consumer stop failed", self.name, exc_info=True)

    # ---- rebalances ----------------------------------------------------------------------------------------

    async def _revoke(self, revoked: set[TopicPartition]) -> None:
        if self._stopping:
            return  # stop() holds the lock and closes every partition itself (the consumer's stop calls us)
        async with self._lock:
            self.generation += 1
            self.pacer.clear()
            for tp in revoked:
                self.ready_partitions.discard(tp)  # no new batch starts on it
            # The batches in flight commit (or abort) first, all partitions together, bounded.
            await asyncio.gather(*(self._stop_worker(tp, wait_s=10.0) for tp in revoked))
            for tp in revoked:
                await self._close_producer(tp)
                self.handler.drop(tp)
                self.ready_partitions.discard(tp)
                self.assigned.discard(tp)

    async def _assign(self, assigned: set[TopicPartition]) -> None:
        async with self._lock:
            self.generation += 1
            self.pacer.clear()
            self.assigned = set(assigned)
            self.ready_partitions.clear()
            results = await asyncio.gather(*(self._open_partition(tp) for tp in self.assigned), return_exceptions=True)
            for tp, result in zip(self.assigned, results, strict=True):
                if isinstance(result, BaseException):  # rebuilt by the consume loop once the broker answers
                    log.warning("%s: %s not ready yet: %r", self.name, tp, result)
                    self._broken.add(tp)
                self._start_worker(tp)

    async def _open_partition(self, tp: TopicPartition) -> None:
        """Fence the previous owner, restore the committed state, and continue from the committed offset."""
        assert self.consumer is not None
        await self._close_producer(tp)
        producer = transactional_producer(
            self.connection,
            f"{self.group_id}-{tp.topic}-{tp.partition}",
            transaction_timeout_ms=self.transaction_timeout_ms,
            linger_ms=self.linger_ms,
            retry_backoff_ms=RETRY_BACKOFF_MS,
        )
        await producer.start()  # InitProducerId: fences the old owner, aborts its open transaction
        self.producers[tp] = producer
        self.handler.drop(tp)
        restored = await self.handler.restore(tp)
        # The state's own position is the truth when it has one; the group's offset (committed later, outside the
        # transactions) is only the fallback of a handler that keeps none.
        committed = restored if restored is not None else await self.consumer.committed(tp)
        if committed is None:
            await self.consumer.seek_to_beginning(tp)
        else:
            self.consumer.seek(tp, committed)
        self._processed_to[tp] = committed
        self.pacer.drop(tp)
        self.pacer.start_at(tp, self.handler.stream_time(tp))
        self._broken.discard(tp)
        self.ready_partitions.add(tp)

    async def _close_producer(self, tp: TopicPartition) -> None:
        producer = self.producers.pop(tp, None)
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), 5)
            except Exception:
                log.debug("%s: producer %s stop failed", self.name, tp, exc_info=True)

    # ---- the loop ------------------------------------------------------------------------------------------

    async def _consume(self) -> None:
        assert self.consumer is not None
        consumer = self.consumer
        while not self._stopping:
            if self._broken:
                await self._repair()
            generation = self.generation
            try:
                batches = await consumer.getmany(timeout_ms=200, max_records=self.max_records)
            except KafkaError as exc:
                self._set_connected(False, exc)
                await asyncio.sleep(0.5)
                continue
            async with self._lock:
                if generation != self.generation:
                    # A rebalance ran while this fetch was in flight; its records may come from before or after
                    # the partitions were reopened at their committed offsets. Neither kind is processed, but the
                    # consumer has moved past them: each ready partition goes back to the next offset to process
                    # (dropping them without the rewind lost the first records of a fresh assignment).
                    await self._rewind(consumer, batches)
                    continue
                for tp, records in self._pace(consumer, batches).items():
                    self._queues.setdefault(tp, deque()).extend(records)
                    self._wake[tp].set()
                self._hold(consumer)

    async def _rewind(self, consumer: Any, dropped: dict[TopicPartition, list[Any]]) -> None:
        for tp, records in dropped.items():
            if not records or tp not in self.ready_partitions or self._queues.get(tp):
                continue  # not ours any more, reopened later by the repair, or already fed by a newer fetch
            offset = self._processed_to.get(tp)
            if offset is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)

    def _start_worker(self, tp: TopicPartition) -> None:
        self._queues.setdefault(tp, deque())
        self._wake.setdefault(tp, asyncio.Event())
        self._inflight.setdefault(tp, asyncio.Lock())
        if tp not in self._workers or self._workers[tp].done():
            self._workers[tp] = asyncio.ensure_future(self._work(tp))

    async def _stop_worker(self, tp: TopicPartition, wait_s: float | None = None) -> None:
        task = self._workers.pop(tp, None)  # the task ends at its next step when it is no longer the one listed
        lock = self._inflight.get(tp)
        if task is not None and lock is not None:
            try:  # its batch in flight ends first (a stuck one is abandoned: the next owner's start aborts it)
                await asyncio.wait_for(lock.acquire(), wait_s or self.transaction_timeout_ms / 1000.0)
            except TimeoutError:
                log.warning("%s: %s: the batch in flight did not end; abandoned", self.name, tp)
            else:
                lock.release()
            task.cancel()
            # Bounded: on Python 3.11 ``asyncio.wait_for`` can swallow a cancellation that meets the inner wait's
            # own completion, and a stop then waited for a task that went on (45 s stops under load).
            await asyncio.wait({task}, timeout=1.0)
        self._queues.pop(tp, None)

    async def _work(self, tp: TopicPartition) -> None:
        """Commit ``tp``'s queued records batch after batch; when nothing comes, the handler's idle work."""
        queue, wake, inflight = self._queues[tp], self._wake[tp], self._inflight[tp]
        me = asyncio.current_task()
        while self._workers.get(tp) is me:  # a stopped worker ends even if its cancellation got lost
            try:
                async with asyncio.timeout(1.0):  # unlike wait_for, never swallows a cancellation
                    await wake.wait()
            except TimeoutError:
                pass
            wake.clear()
            async with inflight:
                if self._workers.get(tp) is not me:
                    return
                if tp not in self.ready_partitions or tp in self._broken:
                    queue.clear()
                    self.pacer.drop(tp)
                    continue
                if queue:
                    records = [queue.popleft() for _ in range(min(len(queue), self.max_records))]
                    try:
                        await self._commit_partition(tp, records)
                    finally:
                        self.pacer.done(tp, len(records))  # committed, or given up and read again
                    if queue:
                        wake.set()
                else:
                    batch = self.handler.idle(tp)
                    if batch is not None:
                        await self._commit_partition(tp, (), batch)

    def _hold(self, consumer: AIOKafkaConsumer) -> None:
        """Pause fetching for partitions that pacing holds back or whose queue is full; resume the others."""
        held = self.pacer.held()
        for tp in self.ready_partitions:
            if tp in held or len(self._queues.get(tp, ())) >= 2 * self.max_records:
                consumer.pause(tp)
            else:
                consumer.resume(tp)

    def _pace(self, consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[Any]]) -> dict[Any, list[Any]]:
        """What to process now: everything, unless partitions catching up drift apart in event time; a partition
        holding records is paused (no more fetches) until they go."""
        pacing = self.pacer.max_skew_s > 0
        for tp, records in batches.items():
            if tp in self.ready_partitions and tp not in self._broken and records:
                event_time = self.handler.event_time if pacing else _no_time
                self.pacer.add(tp, [(event_time(r), r) for r in records])
                self._fetched_to[tp] = records[-1].offset + 1
        backlog = set()
        if pacing:
            for tp in self.ready_partitions:
                stable = consumer.last_stable_offset(tp)
                fetched = self._fetched_to.get(tp, self._processed_to.get(tp))
                # No fetch answered yet after a restore: assume a backlog (the others wait for its first records or
                # its first empty answer, held to its restored stream time, not to nothing).
                if stable is None or (fetched is not None and stable > fetched):
                    backlog.add(tp)
        return self.pacer.take(backlog)

    async def _commit_partition(self, tp: TopicPartition, records: Sequence[Any], batch: Batch | None = None) -> None:
        """One transaction: the outputs of ``records`` (or a ready ``batch`` when idle) and the next offset."""
        producer = self.producers[tp]
        started = time.perf_counter()
        try:
            try:
                if batch is None:
                    batch = self.handler.process(tp, records)
                if not batch.outputs and records and not self.offsets_in_state:
                    # Nothing to write: no transaction, the offset is committed with the group's next commit.
                    self._to_commit[tp] = records[-1].offset + 1
                    self._processed_to[tp] = records[-1].offset + 1
                    if batch.on_commit is not None:
                        batch.on_commit()
                    return
                self._to_commit.pop(tp, None)  # this transaction commits a later offset of the same partition
                # Bounded: a commit that never ends (the broker came back without its transaction state) must not
                # hold the partition forever; the rebuild fences this producer and aborts what it left open.
                await asyncio.wait_for(
                    self._transaction(producer, tp, records, batch), self.transaction_timeout_ms / 1000
                )
            except ProducerFenced:
                log.warning("%s: %s was taken over by another worker (fenced)", self.name, tp)
                self._mark_broken(tp)
                return
            except Exception as exc:  # unknown outcome: rebuild the partition from what was committed
                self._set_connected(False, exc)
                self._mark_broken(tp)
                return
            self._set_connected(True)
            if records:
                self._processed_to[tp] = records[-1].offset + 1
            if records and self.offsets_in_state:
                self._to_commit[tp] = records[-1].offset + 1
            if batch.on_commit is not None:
                try:
                    batch.on_commit()
                except Exception:  # committed in Kafka, not applied locally (a full disk): rebuild from the changelog
                    log.exception("%s: %s: applying a committed batch failed; rebuilding the partition", self.name, tp)
                    self._mark_broken(tp)
                    return
            if self.on_batch is not None and records:
                self.on_batch(len(records), time.perf_counter() - started)
        finally:
            if batch is not None:
                # A handler's on_commit is usually a closure over its batch (it reads produced_to): a cycle, which
                # only the collector frees, with every output, state and feature the batch holds (about 9 objects
                # a transaction at 1,000 tx/s: frequent full collections, up to 900 ms, holding the event loop).
                # Dropped here, the batch goes by reference counting as soon as this frame ends.
                batch.on_commit = None

    async def _transaction(self, producer: AIOKafkaProducer, tp: TopicPartition, records: Sequence[Any],
                           batch: Batch) -> None:  # fmt: skip
        """The batch's outputs and the input offset in one Kafka transaction. The outputs go a record batch per
        partition (:func:`by_partition`), built here and handed to the producer whole: one future, one metadata wait
        and one partition check per record batch instead of per record (a send cost about as much as deciding the
        transaction's features)."""
        await producer.begin_transaction()
        pending: list[tuple[asyncio.Future[Any], int]] = []  # each send's future and how many records it holds
        try:
            for topic, partition, outputs in await by_partition(producer, batch.outputs):
                if partition is None:  # records without a key nor a partition: the producer places each
                    for o in outputs:
                        pending.append((await producer.send(topic, key=o.key, value=o.value), 1))
                    continue
                builder, count = producer.create_batch(), 0
                for o in outputs:
                    if builder.append(key=o.key, value=o.value, timestamp=None) is None:  # full: send it, go on
                        pending.append((await producer.send_batch(builder, topic, partition=partition), count))
                        builder, count = producer.create_batch(), 0
                        builder.append(key=o.key, value=o.value, timestamp=None)  # an empty batch takes any record
                    count += 1
                pending.append((await producer.send_batch(builder, topic, partition=partition), count))
            if records and not self.offsets_in_state:
                await producer.send_offsets_to_transaction({tp: records[-1].offset + 1}, self.group_id)
            await producer.commit_transaction()
        except BaseException:
            # The batch is given up (fenced, broker gone): its sends fail with it. Read their errors, or asyncio
            # logs "Future exception was never retrieved" with a traceback for every one of them.
            for future, _ in pending:
                future.add_done_callback(_retrieve)
            raise
        track = batch.track
        for future, count in pending:  # delivered with the commit; surfaces an error, if any
            metadata = await future  # a record batch's: the offset of its first record
            if track is not None and metadata.partition == track[1] and metadata.topic == track[0]:
                batch.produced_to = max(batch.produced_to or 0, metadata.offset + count)

    def _mark_broken(self, tp: TopicPartition) -> None:
        self._broken.add(tp)
        self.pacer.drop(tp)
        if tp in self._queues:
            self._queues[tp].clear()
        if self.consumer is not None and tp in self.consumer.assignment():
            self.consumer.resume(tp)
        self.ready_partitions.discard(tp)
        self.handler.drop(tp)

    async def _repair(self) -> None:
        """Reopen broken partitions (new producer, committed state and offset) once the broker answers."""
        async with self._lock:
            for tp in sorted(self._broken):
                if tp not in self.assigned:
                    self._broken.discard(tp)
                    continue
                try:
                    await self._open_partition(tp)
                except ProducerFenced:
                    log.warning("%s: %s is owned elsewhere now", self.name, tp)
                    self._broken.discard(tp)
                except Exception as exc:
                    self._set_connected(False, exc)
                    await self._close_producer(tp)
        if self._broken:
            await asyncio.sleep(1.0)


async def by_partition(producer: Any, outputs: Sequence[Output]) -> list[tuple[str, int | None, list[Output]]]:
    """``outputs`` by topic and partition, each partition's in their order: a record without a partition goes
    where the producer's default partitioner would put it (by its key, :mod:`app.kafka.partitioner`). A topic with
    a record that has neither key nor partition keeps all its records together under partition ``None``, in
    order: the producer places those one by one (at random), and their order against the others stays."""
    by_topic: dict[str, list[Output]] = {}
    for o in outputs:
        by_topic.setdefault(o.topic, []).append(o)
    placed: list[tuple[str, int | None, list[Output]]] = []
    for topic, records in by_topic.items():
        if any(o.partition is None and o.key is None for o in records):
            placed.append((topic, None, records))
            continue
        every: list[int] | None = None
        parts: dict[int, list[Output]] = {}
        for o in records:
            partition = o.partition
            if partition is None:
                if every is None:
                    every = sorted(await producer.partitions_for(topic))
                partition = default_partitioner(o.key, every, every)
            parts.setdefault(partition, []).append(o)
        placed.extend((topic, partition, part) for partition, part in parts.items())
    return placed


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _no_time(record: Any) -> float:
    return float("-inf")
