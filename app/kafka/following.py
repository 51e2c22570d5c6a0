"""Follow compacted one-partition topics from their start in every worker: the loop the model and rules followers share.

Every worker reads the same topics whole (``read_committed``, no consumer group, partition 0 of each, in the order
given), so all fold the same events into the same state. On the first connection it reads them to their end, hands
the state over (:meth:`CompactedFollower._serve`) and sets ``caught_up``, which the decision loop waits for; then it
keeps reading and hands each change over. After a failure the :class:`app.kafka.supervision.Supervisor` reconnects
and reading goes on from the offset past the last record taken, so nothing is folded twice. Subclasses say what a
record means (:meth:`CompactedFollower._take`) and what to hand over (:meth:`CompactedFollower._serve`):
:class:`app.learning.follower.ModelFollower`, :class:`app.kafka.rule_topics.RulesFollower`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from app.kafka.clients import Connection, committed_reader
from app.kafka.reading import read_to_end
from app.kafka.supervision import Supervisor

log = logging.getLogger(__name__)


class CompactedFollower:
    def __init__(
        self,
        name: str,
        *,
        bootstrap_servers: str,
        topics: Sequence[str],
        client_options: dict[str, Any] | None = None,
        consumer_options: dict[str, Any] | None = None,
        poll_ms: int = 500,
        max_records: int = 1000,
    ) -> None:
        """``topics``: read in this order within each fetch (what the others' events name first); ``poll_ms``: how
        long a fetch waits for a new record; ``consumer_options``: fetch sizes and the like (``committed_reader``)."""
        self.name = name
        self.bootstrap_servers = bootstrap_servers
        self.client_options = client_options or {}
        self.consumer_options = consumer_options or {}
        self.poll_ms = poll_ms
        self.max_records = max_records
        self._tps = [TopicPartition(topic, 0) for topic in topics]
        self._read_to: dict[str, int] = {}  # topic -> next offset, kept across reconnects
        self.caught_up = asyncio.Event()
        self.supervisor = Supervisor(name)

    # what a subclass says
    def _take(self, topic: str, record: Any) -> None:
        """Fold one record of ``topic`` (offset, key, value; value None for a tombstone)."""
        raise NotImplementedError

    def _serve(self) -> None:
        """Hand the state over if it changed: after the first read to the end, then after every fetch."""
        raise NotImplementedError

    def _on_caught_up(self) -> None:
        """Called once, when the topics were first read to their end and served (a log line)."""

    # the loop
    async def run(self) -> None:
        """Follow the topics until cancelled; reconnects after failures (:class:`Supervisor`)."""
        await self.supervisor.run(self._session)

    async def _session(self) -> None:
        consumer = committed_reader(Connection(self.bootstrap_servers, self.client_options), **self.consumer_options)
        try:
            await consumer.start()
            self.supervisor.mark_connected()
            await self._follow(consumer)
        finally:
            try:
                await asyncio.wait_for(consumer.stop(), 5)
            except Exception:
                log.debug("%s: consumer stop failed", self.name, exc_info=True)

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        tps = self._tps
        consumer.assign(tps)
        starts = {tp: self._read_to.get(tp.topic, 0) for tp in tps}
        if not self.caught_up.is_set():  # the first connection: read to the end, then serve, then decide with it
            async for batch in read_to_end(consumer, tps, starts=starts, timeout_ms=500, max_records=self.max_records):
                self._apply(tps, batch)
            self._serve()
            self.caught_up.set()
            self._on_caught_up()
        else:
            for tp, offset in starts.items():
                consumer.seek(tp, offset)
        while True:
            self._apply(tps, await consumer.getmany(*tps, timeout_ms=self.poll_ms, max_records=self.max_records))
            self._serve()

    def _apply(self, tps: Sequence[TopicPartition], batch: dict[TopicPartition, list[Any]]) -> None:
        for tp in tps:  # in the topics' order: what the others' events name first
            for record in batch.get(tp, []):
                self._take(tp.topic, record)
                self._read_to[tp.topic] = record.offset + 1
