"""The decision path: one hop from a transaction to its prediction, batched, in Kafka transactions.

For each batch of one ``transactions`` partition (:class:`app.kafka.transactional.TransactionalLoop`): validate,
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
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from aiokafka import TopicPartition

from app import metrics
from app.decisions.assess import assess
from app.features.engine import CustomerState, newest_event_time_s
from app.kafka.clients import Connection, committed_reader
from app.kafka.reading import read_to_end
from app.kafka.transactional import Batch, Output
from app.learning.model import FraudModel
from app.monitoring.health import HealthWindow
from app.records import InvalidMessage, Prediction, dead_letter, parse_transaction
from app.serialization import dumps, loads
from app.settings import Settings
from app.state.customers import (
    ENTRY_KEY_SEPARATOR,
    POSITION_KEY,
    PartitionState,
    after_entry,
    entry_key,
    entry_value,
    pruned,
)
from app.state.terminals import TerminalAggregates

log = logging.getLogger(__name__)

HIGH_SCORES_KEPT = 50  # the latest predictions at or over the threshold, for the operator page


class Scorer:
    """The :class:`app.kafka.transactional.BatchHandler` of the ``transactions`` topic."""

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
        # Committed predictions at or over the threshold, oldest first: the operator page shows the newest. Bounded
        # and filled only with what is flagged, so it costs the decision path nothing per ordinary transaction.
        self.high_scores: deque[Prediction] = deque(maxlen=HIGH_SCORES_KEPT)

    # ---- state ---------------------------------------------------------------------------------------------

    def drop(self, tp: TopicPartition) -> None:
        self.partitions.pop(tp.partition, None)

    async def restore(self, tp: TopicPartition) -> int | None:
        """Read the partition's changelog to its end with ``read_committed``: the state of the last commit, and
        the input offset it covers (None before the first batch).

        The offset is kept in the changelog, in each batch's transaction, because the consumer group's offset of
        a committed transaction can lag behind its changelog records: the broker writes the commit markers to
        each partition one after the other, and aiokafka cannot ask for stable offsets (KIP-447). The read waits
        until no transaction is pending on the changelog partition (a fenced owner's last one completing)."""
        state = PartitionState()
        changelog = TopicPartition(self.changelog_topic, tp.partition)
        consumer = committed_reader(
            Connection(self.settings.bootstrap_servers, self.client_options),
            fetch_max_bytes=32 * 1024 * 1024,
            max_partition_fetch_bytes=32 * 1024 * 1024,
            fetch_max_wait_ms=50,
        )
        await consumer.start()
        started = time.monotonic()
        count = 0
        entries: dict[str, dict[str, bytes]] = {}
        next_offset: int | None = None
        try:
            consumer.assign([changelog])
            consumer.seek(changelog, (await consumer.beginning_offsets([changelog]))[changelog])
            deadline = time.monotonic() + 30.0
            while True:
                end = (await consumer.end_offsets([changelog]))[changelog]
                ends = {changelog: end}
                async for batch in read_to_end(consumer, [changelog], ends=ends, timeout_ms=500, max_records=10000):
                    for records in batch.values():
                        count += len(records)
                        next_offset = self._apply_changelog(records, state, entries, next_offset)
                if consumer.highwater(changelog) in (None, end) or time.monotonic() > deadline:
                    break  # nothing pending past what was read (or waited long enough)
                # Refreshes the high watermark; what it returns (a pending transaction that committed meanwhile) is
                # part of the state like the rest: dropping it lost committed entries.
                for records in (await consumer.getmany(changelog, timeout_ms=100)).values():
                    count += len(records)
                    next_offset = self._apply_changelog(records, state, entries, next_offset)
        finally:
            await consumer.stop()
        for customer_id, by_tx_id in entries.items():
            if by_tx_id:
                state.customers[customer_id] = by_tx_id
        self.partitions[tp.partition] = state
        metrics.CUSTOMER_STATES.set(sum(len(p.customers) for p in self.partitions.values()))
        log.info("partition %s restored: %d customers from %d changelog records in %.2f s",
                 tp.partition, len(state.customers), count, time.monotonic() - started)  # fmt: skip
        return next_offset

    @staticmethod
    def _apply_changelog(
        records: Sequence[Any], state: PartitionState, entries: dict[str, dict[str, bytes]], next_offset: int | None
    ) -> int | None:
        for record in records:
            if record.key == POSITION_KEY:
                position = loads(record.value)
                state.stream_time_s = float(position["stream_time_s"])
                next_offset = int(position["next_offset"])
                continue
            customer_id, _, tx_id = record.key.decode().partition(ENTRY_KEY_SEPARATOR)
            if record.value is None:
                entries.get(customer_id, {}).pop(tx_id, None)
            else:
                entries.setdefault(customer_id, {})[tx_id] = record.value
        return next_offset

    # ---- one batch -----------------------------------------------------------------------------------------

    def process(self, tp: TopicPartition, records: Sequence[Any]) -> Batch:
        settings = self.settings
        partition = tp.partition
        state = self.partitions[partition]
        received_at_s = time.time()
        changed: dict[str, CustomerState] = {}
        entry_outputs: list[Output] = []
        scored: list[tuple[str, float, str]] = []  # (terminal, t, tx_id), applied to the aggregates on commit
        pending: dict[str, list[tuple[float, str]]] = {}
        outputs: list[Output] = []
        stream_time_s = state.stream_time_s
        late = 0
        dead_codes: list[str] = []  # counted once the batch commits, like everything else
        probabilities: list[float] = []
        flagged: list[Prediction] = []  # at or over the threshold
        for record in records:
            try:
                tx = parse_transaction(record.value, settings.max_message_bytes, settings.max_amount)
                customer = changed.get(tx.customer_id)
                if customer is None:
                    customer = state.customer(tx.customer_id)
                prediction, after = assess(
                    tx,
                    customer,
                    self.aggregates,
                    self.model,
                    lateness_s=settings.lateness_s,
                    threshold=settings.decision_threshold,
                    received_at_s=received_at_s,
                    pending=pending.get(tx.terminal_id, ()),
                )
                t = tx.event_time_s
            except InvalidMessage as exc:
                outputs.append(Output(settings.transactions_dlq_topic, record.key, dead_letter(record, exc)))
                dead_codes.append(exc.code)
                continue
            except Exception as exc:  # a bug while scoring must not stop the stream or lose the message
                log.exception("scoring failed at %s[%s]@%s", record.topic, record.partition, record.offset)
                error = InvalidMessage("scoring_error", repr(exc)[:500])
                outputs.append(Output(settings.transactions_dlq_topic, record.key, dead_letter(record, error)))
                dead_codes.append(error.code)
                continue
            changed[tx.customer_id] = after
            added = after_entry(after, tx.tx_id)
            if added is not None:
                changelog_key = entry_key(tx.customer_id, tx.tx_id)
                entry_outputs.append(Output(self.changelog_topic, changelog_key, entry_value(added), partition))
            for old in pruned(customer, after):
                entry_outputs.append(
                    Output(self.changelog_topic, entry_key(tx.customer_id, str(old[3])), None, partition)
                )
            pending.setdefault(tx.terminal_id, []).append((t, tx.tx_id))
            scored.append((tx.terminal_id, t, tx.tx_id))
            if t < stream_time_s - settings.lateness_s:
                late += 1
            stream_time_s = max(stream_time_s, t)
            key = tx.tx_id.encode()
            outputs.append(Output(settings.predictions_topic, key, dumps(prediction)))
            # On the input's partition number, not the terminal's: every worker reads all of them, and a commit
            # then writes one terminal-log partition instead of up to all (fewer partitions and markers per commit).
            outputs.append(Output(self.terminal_topic, tx.terminal_id.encode(), dumps([t, tx.tx_id]), partition))
            probabilities.append(prediction.fraud_probability)
            if prediction.is_fraud:
                flagged.append(prediction)
        outputs.extend(entry_outputs)
        expired = [c for c in self._expired(state, stream_time_s) if c not in changed]
        for customer_id in expired:
            for old in state.customer(customer_id):
                outputs.append(Output(self.changelog_topic, entry_key(customer_id, str(old[3])), None, partition))
        position = {"stream_time_s": stream_time_s, "next_offset": records[-1].offset + 1}
        outputs.append(Output(self.changelog_topic, POSITION_KEY, dumps(position), partition))

        def on_commit() -> None:
            state.customers.update(changed)
            for customer_id in expired:
                state.customers.pop(customer_id, None)
            state.stream_time_s = stream_time_s
            for terminal_id, t, tx_id in scored:
                self.aggregates.add(terminal_id, t, tx_id)
            now = self.now_s()
            latency_ms = (time.time() - received_at_s) * 1000.0
            self.window.record_many(now, len(scored), len(dead_codes), latency_ms)
            metrics.TRANSACTIONS_SCORED.inc(len(scored))
            metrics.TRANSACTIONS_DEAD_LETTERED.inc(len(dead_codes))
            for code in dead_codes:
                metrics.DEAD_LETTERS.labels("transactions", code).inc()
            metrics.LATE_TRANSACTIONS.inc(late)
            metrics.CUSTOMERS_EXPIRED.inc(len(expired))
            metrics.CUSTOMER_STATES.set(sum(len(p.customers) for p in self.partitions.values()))
            for probability in probabilities:
                metrics.SCORES.observe(probability)
                metrics.SCORING_LATENCY.observe(latency_ms / 1000.0)
            metrics.PREDICTED_FRAUD.inc(len(flagged))
            self.high_scores.extend(flagged)

        return Batch(outputs, on_commit)

    def event_time(self, record: Any) -> float:
        """Event time for catch-up pacing; ``-inf`` for what will be dead-lettered (it goes at once)."""
        try:
            return datetime.fromisoformat(loads(record.value)["timestamp"]).timestamp()
        except Exception:
            return float("-inf")

    def idle(self, tp: TopicPartition) -> Batch | None:
        """Expire idle customers even when no transaction comes to this partition."""
        state = self.partitions.get(tp.partition)
        if state is None:
            return None
        expired = self._expired(state, state.stream_time_s)
        if not expired:
            return None
        outputs = [
            Output(self.changelog_topic, entry_key(customer_id, str(old[3])), None, tp.partition)
            for customer_id in expired
            for old in state.customer(customer_id)
        ]

        def on_commit() -> None:
            for customer_id in expired:
                state.customers.pop(customer_id, None)
            metrics.CUSTOMERS_EXPIRED.inc(len(expired))
            metrics.CUSTOMER_STATES.set(sum(len(p.customers) for p in self.partitions.values()))

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
        return idle
