"""Off the decision path: keeps this worker's :class:`TerminalAggregates` up to date from Kafka.

Reads every partition of the terminal log (``<APP_ID>-terminal-transactions``, one small record per scored
transaction, written by the scorers in their transactions) and of the ``labels`` topic (frauds only matter
here), with ``read_committed`` and no consumer group: every worker needs every terminal. A local snapshot with
the positions it covers is written every ``TERMINAL_SNAPSHOT_INTERVAL_S``, so a restart reads only the tail
(without one, the logs from their start). Scorers wait for the first catch-up before deciding.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from app import metrics
from app.kafka.clients import Connection, committed_reader
from app.kafka.supervision import Supervisor
from app.records import InvalidMessage, parse_label
from app.serialization import loads
from app.state.checkpoints import write_atomically, write_in_thread
from app.state.terminals import TerminalAggregates

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 2  # a header pickle, then ``slices`` pickles of terminals
SNAPSHOT_TERMINALS_PER_SLICE = 1000


class TerminalFeed:
    def __init__(
        self,
        aggregates: TerminalAggregates,
        *,
        bootstrap_servers: str,
        terminal_topic: str,
        labels_topic: str,
        snapshot_path: Path,
        snapshot_interval_s: float,
        sweep_interval_s: float,
        max_message_bytes: int,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.aggregates = aggregates
        self.bootstrap_servers = bootstrap_servers
        self.terminal_topic = terminal_topic
        self.labels_topic = labels_topic
        self.snapshot_path = snapshot_path
        self.snapshot_interval_s = snapshot_interval_s
        self.sweep_interval_s = sweep_interval_s
        self.max_message_bytes = max_message_bytes
        self.client_options = client_options or {}
        self.positions: dict[TopicPartition, int] = {}
        self.caught_up = asyncio.Event()
        self.lag_s = 0.0
        self.supervisor = Supervisor("terminal feed")

    async def run(self) -> None:
        """Consume until cancelled, reconnecting after failures (one log line when the broker goes, one when the
        feed is back: :class:`app.kafka.supervision.Supervisor`)."""
        self._load_snapshot()
        await self.supervisor.run(self._session)

    async def _session(self) -> None:
        consumer = committed_reader(
            Connection(self.bootstrap_servers, self.client_options),
            auto_offset_reset="earliest",
            fetch_max_bytes=16 * 1024 * 1024,
            fetch_max_wait_ms=100,  # also how long a seek or an offset lookup may wait behind a fetch
        )
        try:
            await consumer.start()
            await self._consume(consumer)
        finally:
            try:
                await asyncio.wait_for(consumer.stop(), 10)
            except Exception:
                log.debug("terminal feed consumer stop failed", exc_info=True)

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        partitions: list[TopicPartition] = []
        for topic in (self.terminal_topic, self.labels_topic):
            found = await _partitions_of(consumer, topic)
            partitions.extend(TopicPartition(topic, p) for p in found)
        consumer.assign(partitions)
        beginnings = await consumer.beginning_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, max(self.positions.get(tp, 0), beginnings[tp]))
        target = await consumer.end_offsets(partitions) if not self.caught_up.is_set() else {}
        last_snapshot = last_sweep = time.monotonic()
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
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
                    self.caught_up.set()
                    log.info("terminal feed caught up: %d terminals, %d frauds known",
                             len(self.aggregates.states), len(self.aggregates.frauds_known_s))  # fmt: skip
            elif not target:
                self.caught_up.set()
            now = time.monotonic()
            if now - last_sweep >= self.sweep_interval_s:
                last_sweep = now
                metrics.TERMINALS_EXPIRED.inc(self.aggregates.sweep())
            metrics.TERMINAL_STATES.set(len(self.aggregates.states))
            if now - last_snapshot >= self.snapshot_interval_s:
                last_snapshot = now
                await self.write_snapshot()

    def _apply_terminal_records(self, records: list[Any], now_wall_s: float) -> None:
        aggregates = self.aggregates
        for record in records:
            t, tx_id = loads(record.value)
            aggregates.add(record.key.decode(), float(t), tx_id)
        # Feature freshness: how long the newest record took from its scorer's commit to this worker.
        self.lag_s = max(0.0, now_wall_s - records[-1].timestamp / 1000.0)
        metrics.TERMINAL_FEED_LAG.set(self.lag_s)

    def _apply_labels(self, records: list[Any]) -> None:
        for record in records:
            try:
                label = parse_label(record.value, self.max_message_bytes)
            except InvalidMessage:
                continue  # dead-lettered by the learner, which owns the labels' outcome
            if label.is_fraud:
                self.aggregates.add_fraud(label.tx_id, label.timestamp.timestamp())

    async def write_snapshot(self) -> None:
        """:meth:`save_snapshot` in slices with the event loop running between them, the disk write in a thread:
        the decisions in flight wait for one slice at most, never for the whole state or a disk flush."""
        chunks = []
        for chunk in self._snapshot_chunks():
            chunks.append(chunk)
            await asyncio.sleep(0)
        await write_in_thread(self.snapshot_path, chunks)

    def save_snapshot(self) -> None:
        """Atomic write of the aggregates and the positions they cover (at shutdown: all at once)."""
        write_atomically(self.snapshot_path, list(self._snapshot_chunks()))

    def _snapshot_chunks(self) -> Iterator[bytes]:
        """A header with the positions, then the terminals a slice at a time (consecutive pickles).

        The positions are taken first. A slice made later may hold entries newer than them; reading the logs
        again from those positions after a restart adds nothing twice (entries and fraud marks are idempotent
        by ``tx_id``), so the restored aggregates are the same."""
        aggregates = self.aggregates
        terminals = list(aggregates.states)
        starts = range(0, len(terminals), SNAPSHOT_TERMINALS_PER_SLICE)
        header = {
            "format": SNAPSHOT_FORMAT,
            "positions": {(tp.topic, tp.partition): o for tp, o in self.positions.items()},
            "frauds": aggregates.frauds_known_s,
            "stream_time_s": aggregates.stream_time_s,
            "slices": len(starts),
        }
        yield pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL)
        for start in starts:
            states = aggregates.states
            piece = {k: states[k] for k in terminals[start : start + SNAPSHOT_TERMINALS_PER_SLICE] if k in states}
            yield pickle.dumps(piece, protocol=pickle.HIGHEST_PROTOCOL)

    def _load_snapshot(self) -> None:
        if not self.snapshot_path.exists():
            return
        try:
            with self.snapshot_path.open("rb") as f:
                header = pickle.load(f)  # noqa: S301 - this worker's own file in its data folder
                if header.get("format") != SNAPSHOT_FORMAT:
                    raise ValueError(f"snapshot format {header.get('format')!r}, not {SNAPSHOT_FORMAT}")
                states: dict[str, Any] = {}
                for _ in range(header["slices"]):
                    states.update(pickle.load(f))  # noqa: S301
            self.aggregates.load(states, header["frauds"], header["stream_time_s"])
            self.positions = {TopicPartition(t, p): o for (t, p), o in header["positions"].items()}
            log.info("terminal aggregates loaded from %s: %d terminals", self.snapshot_path,
                     len(self.aggregates.states))  # fmt: skip
        except Exception:
            log.exception("unreadable terminal snapshot %s; reading the logs from their start", self.snapshot_path)
            self.positions = {}


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
