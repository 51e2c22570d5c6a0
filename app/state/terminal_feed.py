"""Off the decision path: keeps this worker's :class:`TerminalAggregates` up to date from Kafka.

Reads every partition of the terminal log (``<APP_ID>-terminal-transactions``, one small record per scored
transaction, written by the scorers in their transactions) and of the ``labels`` topic (frauds only matter
here), with ``read_committed`` and no consumer group: every worker needs every terminal. The aggregates live in a
local store (:mod:`app.state.terminals`); every ``flush_interval_s`` the changes are written in one batch with
the log positions they cover, so a restart on the same disk reads only the logs' tail. A store without positions
(a new disk) starts from the newest Kafka checkpoint (:mod:`app.state.terminal_checkpoint`), which the worker
holding input partition 0 writes every ``checkpoint_interval_s``; without one, from the logs' start. Scorers wait
for the first catch-up before deciding.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from app import metrics
from app.kafka.clients import Connection, committed_reader
from app.kafka.supervision import Supervisor
from app.records import InvalidMessage, parse_label
from app.serialization import loads
from app.state import terminal_checkpoint
from app.state.store import Store, StoreCorrupt
from app.state.terminals import TerminalAggregates

log = logging.getLogger(__name__)

TERMINAL_PARTITION = 0  # the terminal store has one partition: every worker holds every terminal
SLICE_TERMINALS = 200  # terminals written or swept between two yields to the event loop (about 2 ms)


class TerminalFeed:
    def __init__(
        self,
        aggregates: TerminalAggregates,
        store: Store,
        *,
        bootstrap_servers: str,
        terminal_topic: str,
        labels_topic: str,
        checkpoint_topic: str,
        checkpoint_transactional_id: str,
        checkpoint_interval_s: float,
        sweep_interval_s: float,
        max_message_bytes: int,
        transaction_timeout_ms: int = 60_000,
        flush_interval_s: float = 1.0,
        sweep_terminals: int = 10_000,
        is_checkpoint_writer: Callable[[], bool] = lambda: False,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.aggregates = aggregates
        self.store = store
        self.bootstrap_servers = bootstrap_servers
        self.terminal_topic = terminal_topic
        self.labels_topic = labels_topic
        self.checkpoint_topic = checkpoint_topic
        self.checkpoint_transactional_id = checkpoint_transactional_id
        self.checkpoint_interval_s = checkpoint_interval_s
        self.sweep_interval_s = sweep_interval_s
        self.max_message_bytes = max_message_bytes
        self.transaction_timeout_ms = transaction_timeout_ms
        self.flush_interval_s = flush_interval_s
        self.sweep_terminals = sweep_terminals
        self.is_checkpoint_writer = is_checkpoint_writer
        self.client_options = client_options or {}
        self.connection = Connection(bootstrap_servers, self.client_options)
        self.positions: dict[TopicPartition, int] = {}
        self.restored = False  # the store's positions are known (loaded, or taken from a checkpoint)
        self.restored_from = "none"  # "store", "checkpoint" or "logs": how this process started (logged)
        self.caught_up = asyncio.Event()
        self.lag_s = 0.0
        self.checkpoint_chunks = 0
        self._consumer: AIOKafkaConsumer | None = None
        self.supervisor = Supervisor("terminal feed")

    @property
    def windows(self) -> dict[str, float]:
        """What a checkpoint must have been made with to be taken over (pruning depends on them)."""
        a = self.aggregates
        return {"delay_days": a.delay_days, "lateness_s": a.lateness_s, "ttl_s": a.ttl_s}

    async def run(self) -> None:
        """Consume until cancelled, reconnecting after failures (one log line when the broker goes, one when the
        feed is back: :class:`app.kafka.supervision.Supervisor`)."""
        self.open_store()
        await self.supervisor.run(self._session)

    def open_store(self) -> None:
        """Open the local store and load what it holds; a corrupt store, or one without positions (a load cut
        short), is wiped: the checkpoint or the logs fill it again."""
        if self.aggregates.store is not None:
            return
        try:
            partition = self.store.open_partition(TERMINAL_PARTITION)
        except StoreCorrupt as exc:
            log.warning("terminal store unusable (%s): wiped, rebuilt from the checkpoint or the logs", exc)
            self.store.wipe_partition(TERMINAL_PARTITION)
            partition = self.store.open_partition(TERMINAL_PARTITION)
        self.aggregates.store = partition
        positions = self.aggregates.load()
        if positions is None:
            if next(partition.iter_from(b""), None) is not None:
                log.warning("terminal store without positions (a load cut short): wiped")
                self.store.wipe_partition(TERMINAL_PARTITION)
                self.aggregates.store = self.store.open_partition(TERMINAL_PARTITION)
                self.aggregates.load()
            return
        self.positions = _from_keys(positions)
        self.restored, self.restored_from = True, "store"
        metrics.TERMINAL_START.labels("store").set(1)
        log.info("terminal store opened: %d terminals, %d frauds known, logs read from the positions it covers",
                 self.aggregates.terminal_count, len(self.aggregates.frauds_known_s))  # fmt: skip

    def rebuild_empty(self) -> None:
        """Wipe the store and start from nothing: the logs are read from their start."""
        self.store.wipe_partition(TERMINAL_PARTITION)
        self.aggregates.store = self.store.open_partition(TERMINAL_PARTITION)
        self.aggregates.load()
        self.positions = {}
        self.restored, self.restored_from = True, "logs"
        metrics.TERMINAL_START.labels("logs").set(1)

    def close(self) -> None:
        """Write what is not flushed yet (at shutdown) and close the store."""
        if self.aggregates.store is not None and self.restored:
            self.aggregates.flush(_to_keys(self.positions))
        self.store.close()
        self.aggregates.store = None

    async def _session(self) -> None:
        if not self.restored:
            await self._restore_from_checkpoint()
        consumer = committed_reader(
            self.connection,
            auto_offset_reset="earliest",
            fetch_max_bytes=16 * 1024 * 1024,
            fetch_max_wait_ms=100,  # also how long a seek or an offset lookup may wait behind a fetch
        )
        try:
            await consumer.start()
            self._consumer = consumer
            await self._consume(consumer)
        finally:
            self._consumer = None
            try:
                await asyncio.wait_for(consumer.stop(), 10)
            except Exception:
                log.debug("terminal feed consumer stop failed", exc_info=True)

    async def _restore_from_checkpoint(self) -> None:
        started = time.monotonic()
        checkpoint = await terminal_checkpoint.read(self.connection, self.checkpoint_topic, self.windows)
        if checkpoint is None:
            log.info("no terminal checkpoint to start from: reading the logs from their start")
            self.restored, self.restored_from = True, "logs"
            metrics.TERMINAL_START.labels("logs").set(1)
            return
        chunks = checkpoint.chunks
        self.aggregates.replace(chunks, checkpoint.frauds_known_s, checkpoint.stream_time_s, checkpoint.positions)
        self.positions = _from_keys(checkpoint.positions)
        self.restored, self.restored_from = True, "checkpoint"
        metrics.TERMINAL_START.labels("checkpoint").set(1)
        log.info("terminal aggregates taken from the checkpoint of %.0f s ago in %.1f s: %d terminals; the logs' "
                 "tail follows", time.time() - checkpoint.written_at_s, time.monotonic() - started,
                 self.aggregates.terminal_count)  # fmt: skip

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        partitions: list[TopicPartition] = []
        for topic in (self.terminal_topic, self.labels_topic):
            found = await _partitions_of(consumer, topic)
            partitions.extend(TopicPartition(topic, p) for p in found)
        consumer.assign(partitions)
        beginnings = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        ahead = sorted(f"{tp.topic}/{tp.partition}" for tp in partitions if self.positions.get(tp, 0) > ends[tp])
        if ahead:  # the logs were deleted and created again: what the store holds is another deployment's past
            log.warning("terminal state covers offsets beyond the logs' end (%s): wiped, read from the logs' start",
                        ", ".join(ahead))  # fmt: skip
            self.rebuild_empty()
        for tp in partitions:
            consumer.seek(tp, max(self.positions.get(tp, 0), beginnings[tp]))
        target = ends if not self.caught_up.is_set() else {}
        last_flush = last_checkpoint = last_sweep = time.monotonic()
        aggregates = self.aggregates
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            self.supervisor.mark_connected()
            now_wall = time.time()
            for tp, records in batches.items():
                if tp.topic == self.terminal_topic:
                    self._apply_terminal_records(records, now_wall)
                else:
                    self._apply_labels(records)
                self.positions[tp] = records[-1].offset + 1
            if target and not self.caught_up.is_set():
                if await _reached(consumer, target):
                    self.flush()
                    self.caught_up.set()
                    log.info("terminal feed caught up (started from %s): %d terminals, %d frauds known",
                             self.restored_from, aggregates.terminal_count, len(aggregates.frauds_known_s))  # fmt: skip
            elif not target:
                self.caught_up.set()
            now = time.monotonic()
            if aggregates.pending_changes >= aggregates.caches.size or (
                aggregates.pending_changes and now - last_flush >= self.flush_interval_s
            ):
                last_flush = now
                await self.flush_in_slices()
            if now - last_sweep >= self.sweep_interval_s:
                last_sweep = now
                await self.flush_in_slices()  # the sweep reads the store: what it removes is written by the next flush
                for _ in range(0, self.sweep_terminals, SLICE_TERMINALS):
                    metrics.TERMINALS_EXPIRED.inc(aggregates.sweep(SLICE_TERMINALS))
                    await asyncio.sleep(0)
                    if not aggregates.sweep_from:
                        break  # the slice reached the end of the store
            metrics.TERMINAL_STATES.set(aggregates.terminal_count)
            if self.caught_up.is_set() and now - last_checkpoint >= self.checkpoint_interval_s:
                last_checkpoint = now
                if self.is_checkpoint_writer():
                    await self.write_checkpoint()

    def flush(self) -> None:
        self.aggregates.flush(_to_keys(self.positions))

    async def flush_in_slices(self) -> None:
        """:meth:`flush`, SLICE_TERMINALS changed terminals per write with the decisions running between them (at
        1,000 tx/s a whole flush held the event loop for about 8 ms), the positions with the last one."""
        while len(self.aggregates.dirty) > SLICE_TERMINALS:
            self.aggregates.write_some(SLICE_TERMINALS)
            await asyncio.sleep(0)
        self.flush()

    async def reach_committed_end(self, partition: int, timeout_s: float = 30.0) -> bool:
        """Wait until the feed has applied everything committed on the terminal log so far; False after
        ``timeout_s`` (logged: decisions then go on with the feed's lag).

        A partition's new owner calls it after fencing the previous owner (which aborts that owner's open
        transaction): until the abort's markers land, ``read_committed`` readers stop at that transaction, and the
        records committed after it on ``partition`` would be missed by a catch-up measured before. So it first
        waits (up to a few seconds) until nothing is pending on ``partition``, then for the end offsets of every
        terminal-log partition as they are now."""
        deadline = time.monotonic() + timeout_s
        if not self.caught_up.is_set():
            try:
                await asyncio.wait_for(self.caught_up.wait(), timeout_s)
            except TimeoutError:
                pass  # the loop below gives up at once, with the warning
        mine = TopicPartition(self.terminal_topic, partition)
        ends: dict[TopicPartition, int] | None = None
        settle_until = time.monotonic() + min(5.0, timeout_s)
        while time.monotonic() < deadline:
            consumer = self._consumer
            if consumer is None:
                await asyncio.sleep(0.1)
                continue
            try:
                if ends is None:
                    tps = [tp for tp in consumer.assignment() if tp.topic == self.terminal_topic]
                    found = await consumer.end_offsets(tps)
                    if consumer.highwater(mine) not in (None, found.get(mine)) and time.monotonic() < settle_until:
                        await asyncio.sleep(0.05)  # the fenced owner's abort markers are on their way
                        continue
                    ends = found
                if await _reached(consumer, ends):
                    return True
            except Exception:  # the feed reconnects: ask again on its new consumer
                log.debug("terminal feed end offsets failed", exc_info=True)
                ends = None
            await asyncio.sleep(0.02)
        log.warning("terminal feed did not reach the terminal log's committed end in %.0f s: partition %d decides "
                    "with the feed's lag", timeout_s, partition)  # fmt: skip
        return False

    async def write_checkpoint(self) -> None:
        """Flush, then publish the store as it is at this flush (nothing flushes until the checkpoint is sent: this
        loop is the only one that does). A failure is logged and the next interval tries again."""
        self.flush()
        started = time.monotonic()
        try:
            self.checkpoint_chunks = await terminal_checkpoint.write(
                self.connection,
                self.checkpoint_topic,
                self.checkpoint_transactional_id,
                self.aggregates,
                _to_keys(self.positions),
                self.windows,
                transaction_timeout_ms=self.transaction_timeout_ms,
                previous_chunks=self.checkpoint_chunks,
            )
        except Exception as exc:  # another worker fenced this one, the broker went: the next interval retries
            log.warning("terminal checkpoint not written: %r", exc)
            return
        metrics.TERMINAL_CHECKPOINTS.inc()
        log.info("terminal checkpoint written in %.2f s: %d terminals in %d chunks", time.monotonic() - started,
                 self.aggregates.terminal_count, self.checkpoint_chunks)  # fmt: skip

    def _apply_terminal_records(self, records: list[Any], now_wall_s: float) -> None:
        aggregates = self.aggregates
        read_back = aggregates.read_back
        entries = []
        for record in records:
            t, tx_id = loads(record.value)
            if not read_back(tx_id):  # this worker's own decisions were added when their batch committed
                entries.append((record.key.decode(), float(t), tx_id))
        aggregates.prefetch({terminal_id for terminal_id, _, _ in entries})
        for terminal_id, t, tx_id in entries:
            aggregates.add(terminal_id, t, tx_id)
        # Feature freshness: how long the newest record took from its scorer's commit to this worker.
        self.lag_s = max(0.0, now_wall_s - records[-1].timestamp / 1000.0)
        metrics.TERMINAL_FEED_LAG.set(self.lag_s)

    def _apply_labels(self, records: list[Any]) -> None:
        """The fraud labels' marks. Every worker reads every label and only frauds matter here (about 1 %): a value
        without the JSON literal ``true`` cannot hold ``"is_fraud": true``, so it is passed by without a parse."""
        for record in records:
            value = record.value
            if not isinstance(value, bytes) or b"true" not in value:
                continue  # a legitimate label, or one the learner dead-letters: nothing to mark either way
            try:
                label = parse_label(value, self.max_message_bytes)
            except InvalidMessage:
                continue  # dead-lettered by the learner, which owns the labels' outcome
            if label.is_fraud:
                self.aggregates.add_fraud(label.tx_id, label.timestamp.timestamp())


def _to_keys(positions: dict[TopicPartition, int]) -> dict[str, int]:
    return {f"{tp.topic}/{tp.partition}": offset for tp, offset in positions.items()}


def _from_keys(positions: dict[str, int]) -> dict[TopicPartition, int]:
    found = {}
    for key, offset in positions.items():
        topic, partition = key.rsplit("/", 1)
        found[TopicPartition(topic, int(partition))] = offset
    return found


async def _partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    for _ in range(100):
        found = consumer.partitions_for_topic(topic)
        if found:
            return sorted(found)
        await consumer._client.force_metadata_update()  # noqa: SLF001 - no public way to wait for a topic
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topic {topic} does not exist")


async def _reached(consumer: AIOKafkaConsumer, target: dict[TopicPartition, int]) -> bool:
    for tp, end in target.items():
        if await consumer.position(tp) < end:
            return False
    return True
