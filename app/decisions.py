"""The decision path: one hop from a transaction to its prediction, batched, in Kafka transactions.

For each batch of one ``transactions`` partition (:class:`app.transactional.TransactionalLoop`): validate,
compute the customer windows from this partition's state, read the terminal half from the worker's
:class:`TerminalAggregates`, score, and emit in one transaction the predictions, the dead letters, one compact
terminal-log record per transaction, the customer states that changed (once per key per batch, to a compacted
changelog) and the input offsets. Memory follows only after the commit, so a failed or fenced batch leaves the
committed state, which is also what a restart restores.

Every input ends as one prediction or one dead letter; a ``tx_id`` seen again while its customer still holds it
(30 days plus the lateness) is dead-lettered as ``duplicate_transaction``, so the predictions topic carries
each ``tx_id`` once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from app import metrics
from app.feature_engine import CustomerState, newest_event_time_s
from app.features import customer_side_features
from app.health import HealthWindow
from app.model import FraudModel
from app.records import DeadLetter, InvalidMessage, parse_transaction
from app.scoring import score_transaction
from app.serialization import b64, dumps, isoformat_utc, loads
from app.settings import Settings
from app.terminal_aggregates import TerminalAggregates
from app.transactional import Batch, Output

log = logging.getLogger(__name__)

STREAM_TIME_KEY = b"\x00stream-time"  # a changelog record holding the partition's stream time


@dataclass
class PartitionState:
    """One input partition's customers (``bytes`` until first read after a restore) and its stream time."""

    customers: dict[str, CustomerState | bytes] = field(default_factory=dict)
    stream_time_s: float = float("-inf")
    swept_at_s: float = field(default_factory=time.monotonic)

    def customer(self, customer_id: str) -> CustomerState:
        value = self.customers.get(customer_id)
        if value is None:
            return []
        if isinstance(value, bytes):  # parsed lazily: a restore only keeps the bytes
            value = self.customers[customer_id] = loads(value)
        return value  # type: ignore[return-value]


def dead_letter(record: Any, error: InvalidMessage) -> bytes:
    """The original bytes, key and position with the reason, so nothing sent to us is ever lost."""
    value = record.value if isinstance(record.value, bytes) else b""
    letter = DeadLetter(error.code, error.reason, record.topic, record.partition, record.offset, b64(value),
                        isoformat_utc(time.time()))  # fmt: skip
    return dumps(letter)


class Scorer:
    """The :class:`app.transactional.BatchHandler` of the ``transactions`` topic."""

    def __init__(
        self,
        settings: Settings,
        model: FraudModel,
        aggregates: TerminalAggregates,
        window: HealthWindow,
        *,
        changelog_topic: str,
        terminal_topic: str,
        client_options: dict[str, Any] | None = None,
        now_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.model = model
        self.aggregates = aggregates
        self.window = window
        self.changelog_topic = changelog_topic
        self.terminal_topic = terminal_topic
        self.client_options = client_options or {}
        self.now_s = now_s
        self.partitions: dict[int, PartitionState] = {}

    # ---- state ---------------------------------------------------------------------------------------------

    def drop(self, tp: TopicPartition) -> None:
        self.partitions.pop(tp.partition, None)

    async def restore(self, tp: TopicPartition) -> None:
        """Read the partition's changelog to its end with ``read_committed``: the state of the last commit."""
        state = PartitionState()
        changelog = TopicPartition(self.changelog_topic, tp.partition)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_max_bytes=32 * 1024 * 1024,
            max_partition_fetch_bytes=32 * 1024 * 1024,
            **self.client_options,
        )
        await consumer.start()
        started = time.monotonic()
        count = 0
        try:
            consumer.assign([changelog])
            await consumer.seek_to_beginning(changelog)
            end = (await consumer.end_offsets([changelog]))[changelog]
            while await consumer.position(changelog) < end:
                for records in (await consumer.getmany(changelog, timeout_ms=500, max_records=10000)).values():
                    for record in records:
                        count += 1
                        if record.key == STREAM_TIME_KEY:
                            state.stream_time_s = float(record.value)
                        elif record.value is None:
                            state.customers.pop(record.key.decode(), None)
                        else:
                            state.customers[record.key.decode()] = record.value
        finally:
            await consumer.stop()
        self.partitions[tp.partition] = state
        log.info("partition %s restored: %d customers from %d changelog records in %.2f s",
                 tp.partition, len(state.customers), count, time.monotonic() - started)  # fmt: skip

    # ---- one batch -----------------------------------------------------------------------------------------

    def process(self, tp: TopicPartition, records: Sequence[Any]) -> Batch:
        settings = self.settings
        state = self.partitions[tp.partition]
        received_at_s = time.time()
        changed: dict[str, CustomerState] = {}
        scored: list[tuple[str, float, str]] = []  # (terminal, t, tx_id), applied to the aggregates on commit
        pending: dict[str, list[tuple[float, str]]] = {}
        outputs: list[Output] = []
        stream_time_s = state.stream_time_s
        late = dead = 0
        probabilities: list[float] = []
        for record in records:
            try:
                tx = parse_transaction(record.value, settings.max_message_bytes, settings.max_amount)
                customer = changed.get(tx.customer_id)
                if customer is None:
                    customer = state.customer(tx.customer_id)
                x, after = customer_side_features(tx, customer, settings.lateness_s)
                if after is customer:
                    raise InvalidMessage("duplicate_transaction", f"tx_id {tx.tx_id!r} was decided already")
                t = tx.event_time_s
                x.update(self.aggregates.features(tx.terminal_id, t, tx.tx_id, pending.get(tx.terminal_id, ())))
                prediction = score_transaction(
                    tx, x, self.model, threshold=settings.decision_threshold, received_at_s=received_at_s
                )
            except InvalidMessage as exc:
                outputs.append(Output(settings.transactions_dlq_topic, record.key, dead_letter(record, exc)))
                metrics.DEAD_LETTERS.labels("transactions", exc.code).inc()
                dead += 1
                continue
            except Exception as exc:  # a bug while scoring must not stop the stream or lose the message
                log.exception("scoring failed at %s[%s]@%s", record.topic, record.partition, record.offset)
                error = InvalidMessage("scoring_error", repr(exc)[:500])
                outputs.append(Output(settings.transactions_dlq_topic, record.key, dead_letter(record, error)))
                metrics.DEAD_LETTERS.labels("transactions", error.code).inc()
                dead += 1
                continue
            changed[tx.customer_id] = after
            pending.setdefault(tx.terminal_id, []).append((t, tx.tx_id))
            scored.append((tx.terminal_id, t, tx.tx_id))
            if t < stream_time_s - settings.lateness_s:
                late += 1
            stream_time_s = max(stream_time_s, t)
            key = tx.tx_id.encode()
            outputs.append(Output(settings.predictions_topic, key, dumps(prediction)))
            outputs.append(Output(self.terminal_topic, tx.terminal_id.encode(), dumps([t, tx.tx_id])))
            probabilities.append(prediction.fraud_probability)
        partition = tp.partition
        for customer_id, entries in changed.items():
            outputs.append(Output(self.changelog_topic, customer_id.encode(), dumps(entries), partition))
        expired = self._expired(state, stream_time_s)
        for customer_id in expired:
            outputs.append(Output(self.changelog_topic, customer_id.encode(), None, partition))
        if stream_time_s != state.stream_time_s:
            outputs.append(Output(self.changelog_topic, STREAM_TIME_KEY, repr(stream_time_s).encode(), partition))

        def on_commit() -> None:
            state.customers.update(changed)
            for customer_id in expired:
                state.customers.pop(customer_id, None)
            state.stream_time_s = stream_time_s
            for terminal_id, t, tx_id in scored:
                self.aggregates.add(terminal_id, t, tx_id)
            now = self.now_s()
            latency_ms = (time.time() - received_at_s) * 1000.0
            self.window.record_many(now, len(scored), dead, latency_ms)
            metrics.TRANSACTIONS_SCORED.inc(len(scored))
            metrics.TRANSACTIONS_DEAD_LETTERED.inc(dead)
            metrics.LATE_TRANSACTIONS.inc(late)
            metrics.CUSTOMERS_EXPIRED.inc(len(expired))
            for probability in probabilities:
                metrics.SCORES.observe(probability)
                metrics.SCORING_LATENCY.observe(latency_ms / 1000.0)
            metrics.PREDICTED_FRAUD.inc(sum(1 for p in probabilities if p >= settings.decision_threshold))

        return Batch(outputs, on_commit)

    def _expired(self, state: PartitionState, stream_time_s: float) -> list[str]:
        """Customers idle past the TTL in stream time, once per sweep interval (restored ones included)."""
        now = self.now_s()
        if now - state.swept_at_s < self.settings.features_sweep_interval_s:
            return []
        state.swept_at_s = now
        horizon = stream_time_s - self.settings.customer_ttl_s
        idle = []
        for customer_id in list(state.customers):
            if newest_event_time_s(state.customer(customer_id)) < horizon:
                idle.append(customer_id)
        metrics.CUSTOMER_STATES.set(sum(len(p.customers) for p in self.partitions.values()) - len(idle))
        return idle
