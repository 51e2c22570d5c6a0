"""The decision path: one hop from a transaction to its prediction, batched, in Kafka transactions.

For each batch of one ``transactions`` partition (:class:`app.kafka.transactional.TransactionalLoop`): validate,
compute the customer windows from this partition's state, read the terminal half from the worker's
:class:`TerminalAggregates`, score, and emit in one transaction the predictions, the dead letters, one compact
terminal-log record per transaction, the customer entries that changed (to a compacted changelog) and the input
offsets. The local store (:mod:`app.state.customers`) and memory follow only after the commit, so a failed or
fenced batch leaves the committed state, which is also what a restart restores (the changelog's tail after the
offset the store covers, or all of it when the store is gone).

Each transaction is decided by the analysts' rules in force when its batch began (:attr:`Scorer.rules`, swapped
between batches by :class:`app.kafka.rule_topics.RulesFollower`) beside the model; the prediction names the rules
that matched and the rule set's version.

Every input ends as one prediction or one dead letter; a ``tx_id`` seen again while its customer still holds it
(30 days plus the lateness) is dead-lettered as ``duplicate_transaction``, so the predictions topic carries
each ``tx_id`` once.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import TopicPartition

from app import metrics
from app.decisions.assess import score_transaction, transaction_features
from app.features.engine import CustomerState
from app.kafka.clients import Connection, committed_reader
from app.kafka.reading import read_to_end
from app.kafka.transactional import Batch, Output
from app.learning.model import FraudModel
from app.monitoring.drift import DriftMonitor
from app.monitoring.health import HealthWindow
from app.records import InvalidMessage, Prediction, Transaction, dead_letter, parse_transaction
from app.rules.hits import RuleHits
from app.rules.ruleset import NO_RULES, LiveRules
from app.serialization import dumps, loads
from app.settings import Settings
from app.state.customers import (
    POSITION_KEY,
    PartitionState,
    after_entry,
    entry_key,
    entry_value,
    idle_slice,
    position_value,
    pruned,
)
from app.state.recovery import open_for_recovery
from app.state.store import Store, StorePartition
from app.state.terminals import TerminalAggregates

log = logging.getLogger(__name__)

HIGH_SCORES_KEPT = 50  # the latest predictions at or over the threshold, for the operator page
REPLAY_COMMIT_RECORDS = 10_000  # a restore commits the store every this many changelog records
# The changelog keeps a tombstone this long after compaction cleaned it (Kafka's default delete.retention.ms, the
# changelog does not set it), less an hour for clock skew: a store idle longer is rebuilt, it may miss deletions.
CHANGELOG_TOMBSTONES_KEPT_S = 86400.0 - 3600.0


class _BatchScoringFailed(Exception):
    """Scoring a batch at once raised: the batch is processed again one transaction at a time."""


@dataclass
class _Assessed:
    """A transaction whose features are computed: its customer's state before and after it, and (once scored) its
    prediction."""

    tx: Transaction
    customer: CustomerState
    after: CustomerState
    x: dict[str, float]
    prediction: Prediction | None


class Scorer:
    """The :class:`app.kafka.transactional.BatchHandler` of the ``transactions`` topic."""

    def __init__(
        self,
        settings: Settings,
        model: FraudModel,
        aggregates: TerminalAggregates,
        window: HealthWindow,
        *,
        store: Store,
        changelog_topic: str,
        terminal_topic: str,
        client_options: dict[str, Any] | None = None,
        now_s: Callable[[], float] = time.monotonic,
        terminals_ready: Callable[[int], Awaitable[object]] | None = None,
        drift: DriftMonitor | None = None,
    ) -> None:
        self.settings = settings
        self.model = model
        self.aggregates = aggregates
        self.window = window
        self.store = store  # the customer windows, one store partition per input partition
        self.changelog_topic = changelog_topic
        self.terminal_topic = terminal_topic
        self.client_options = client_options or {}
        self.now_s = now_s
        # After a partition's previous owner is fenced: the terminal feed has what that owner committed last.
        self.terminals_ready = terminals_ready
        self.drift = drift  # committed predictions' features and scores, sampled for the drift monitor
        self.partitions: dict[int, PartitionState] = {}
        # Committed predictions at or over the threshold, oldest first: the operator page shows the newest. Bounded
        # and filled only with what is flagged, so it costs the decision path nothing per ordinary transaction.
        self.high_scores: deque[Prediction] = deque(maxlen=HIGH_SCORES_KEPT)
        # The rule set and lists in force: replaced whole by the rules follower between batches (one assignment).
        self.rules: LiveRules = NO_RULES
        self.review_cost = settings.review_cost if settings.review_cost > 0 else None
        self.rule_hits = RuleHits(settings.health_window_s)  # committed matches per rule, for the operator page

    # ---- state ---------------------------------------------------------------------------------------------

    def open_state(self, partition: int) -> PartitionState:
        """The partition's state over its opened store partition (a restore replays the changelog into it)."""
        state = PartitionState(self.store.open_partition(partition), cache_size=self.settings.state_customer_cache,
                               packed_cache_bytes=int(self.settings.state_customer_packed_mb * 2**20))  # fmt: skip
        state.load_position()
        self.partitions[partition] = state
        return state

    def drop(self, tp: TopicPartition) -> None:
        if self.partitions.pop(tp.partition, None) is not None:
            self.store.close_partition(tp.partition)

    def close(self) -> None:
        self.partitions.clear()
        self.store.close()

    async def restore(self, tp: TopicPartition) -> int | None:
        """Bring the local store up to the changelog's committed end and return the input offset it covers (None
        before the first batch).

        The store keeps the changelog offset its data covers; :func:`app.state.recovery.open_for_recovery` decides
        whether it may resume from there (a restart on the same disk replays only the tail) or is rebuilt from the
        changelog's start (no store, a corrupt one, or a changelog that moved on without it). The tail is read with
        ``read_committed`` and written to the store as it comes, each slice committed with the offset it reaches.

        The input offset is kept in the changelog, in each batch's transaction, because the consumer group's
        offset of a committed transaction can lag behind its changelog records: the broker writes the commit
        markers to each partition one after the other, and aiokafka cannot ask for stable offsets (KIP-447). The
        read waits until no transaction is pending on the changelog partition (a fenced owner's last one
        completing)."""
        changelog = TopicPartition(self.changelog_topic, tp.partition)
        consumer = committed_reader(
            Connection(self.settings.bootstrap_servers, self.client_options),
            fetch_max_bytes=32 * 1024 * 1024,
            max_partition_fetch_bytes=32 * 1024 * 1024,
            fetch_max_wait_ms=50,
        )
        await consumer.start()
        started = time.monotonic()
        try:
            consumer.assign([changelog])
            low = (await consumer.beginning_offsets([changelog]))[changelog]
            end = (await consumer.end_offsets([changelog]))[changelog]
            part, plan = open_for_recovery(self.store, tp.partition, low, end,
                                           tombstone_retention_s=CHANGELOG_TOMBSTONES_KEPT_S)  # fmt: skip
            consumer.seek(changelog, plan.replay_from)
            replayed = await self._replay(consumer, changelog, part, end)
        except BaseException:
            self.store.close_partition(tp.partition)
            raise
        finally:
            await consumer.stop()
        state = self.open_state(tp.partition)
        if self.terminals_ready is not None:
            await self.terminals_ready(tp.partition)
        metrics.CHANGELOG_REPLAYED.inc(replayed)
        metrics.CUSTOMER_STATES.set(sum(p.customer_count for p in self.partitions.values()))
        log.info("partition %s restored (%s from changelog offset %d): %d changelog records replayed, %d customers, "
                 "in %.2f s", tp.partition, plan.action.value, plan.replay_from, replayed, state.customer_count,
                 time.monotonic() - started)  # fmt: skip
        return state.next_offset

    @staticmethod
    async def _replay(consumer: Any, changelog: TopicPartition, part: StorePartition, end: int) -> int:
        """Apply the changelog from the consumer's position to its end to ``part``; returns the records read."""
        count = 0
        transaction = part.begin()
        deadline = time.monotonic() + 30.0

        def apply(records: Sequence[Any]) -> None:
            for record in records:
                if record.value is None:
                    transaction.delete(record.key)
                else:
                    transaction.put(record.key, record.value)

        while True:
            ends = {changelog: end}
            async for batch in read_to_end(consumer, [changelog], ends=ends, timeout_ms=500, max_records=10000):
                for records in batch.values():
                    count += len(records)
                    apply(records)
                if transaction.pending_count >= REPLAY_COMMIT_RECORDS:
                    transaction.commit(await consumer.position(changelog))  # every record before it is applied
                    transaction = part.begin()
            if consumer.highwater(changelog) in (None, end) or time.monotonic() > deadline:
                break  # nothing pending past what was read (or waited long enough)
            # Refreshes the high watermark; what it returns (a pending transaction that committed meanwhile) is
            # part of the state like the rest: dropping it lost committed entries.
            for records in (await consumer.getmany(changelog, timeout_ms=100)).values():
                count += len(records)
                apply(records)
            end = (await consumer.end_offsets([changelog]))[changelog]
        transaction.commit(max(await consumer.position(changelog), part.committed_offset or 0))
        return count

    # ---- one batch -----------------------------------------------------------------------------------------

    def process(self, tp: TopicPartition, records: Sequence[Any]) -> Batch:
        """The batch's outputs, its transactions scored in one call of the model (:meth:`FraudModel.score_many`);
        if that fails, the batch again one transaction at a time, so only a transaction that fails alone is
        dead-lettered (``scoring_error``)."""
        try:
            return self._process(tp, records, batched=True)
        except _BatchScoringFailed:
            log.exception("scoring the batch of %s at once failed: scoring it one transaction at a time", tp)
            return self._process(tp, records, batched=False)

    def _process(self, tp: TopicPartition, records: Sequence[Any], *, batched: bool) -> Batch:
        settings = self.settings
        partition = tp.partition
        state = self.partitions[partition]
        received_at_s = time.time()
        changed: dict[str, CustomerState] = {}
        new_customers: set[str] = set()
        entry_outputs: list[Output] = []
        updates: dict[bytes, bytes | None] = {}  # the changelog records of this batch, for the store after commit
        scored: list[tuple[str, float, str]] = []  # (terminal, t, tx_id), applied to the aggregates on commit
        pending: dict[str, list[tuple[float, str]]] = {}
        outputs: list[Output] = []
        stream_time_s = state.stream_time_s
        late = 0
        dead_codes: list[str] = []  # counted once the batch commits, like everything else
        probabilities: list[float] = []
        observed: list[tuple[dict[str, float], float]] = []  # for the drift monitor, once committed
        flagged: list[Prediction] = []  # at or over the threshold
        rules = self.rules  # one rule set for the whole batch
        review_cost = self.review_cost
        hits: dict[str, int] = {}  # rule id -> matches in this batch (active and shadow)
        decisions: dict[str, int] = {}
        parsed: list[Any] = []  # each record's transaction, or the exception its parse raised (handled below)
        for record in records:
            try:
                parsed.append(parse_transaction(record.value, settings.max_message_bytes, settings.max_amount))
            except Exception as exc:
                parsed.append(exc)
        # The batch's terminals not in memory, in one store call (a multi-get) instead of one read per transaction:
        # with more terminals than STATE_TERMINAL_CACHE most are not.
        self.aggregates.prefetch({tx.terminal_id for tx in parsed if not isinstance(tx, Exception)})
        model = self.model  # one model for the whole batch (a promotion swaps it between batches)
        # The features of every transaction first, in order (each sees those before it: its customer's state, its
        # terminal's pending transactions); then the model scores them all in one call; then each is decided.
        steps: list[Output | _Assessed] = []
        for record, tx in zip(records, parsed, strict=True):
            try:
                if isinstance(tx, Exception):
                    raise tx
                customer = changed.get(tx.customer_id)
                if customer is None:
                    customer = state.customer(tx.customer_id)
                x, after = transaction_features(tx, customer, self.aggregates, lateness_s=settings.lateness_s,
                                                pending=pending.get(tx.terminal_id, ()))  # fmt: skip
                prediction = None
                if not batched:  # one at a time: a transaction whose scoring fails is dead-lettered alone
                    prediction = score_transaction(tx, x, model, threshold=settings.decision_threshold,
                                                   received_at_s=received_at_s, rules=rules,
                                                   review_cost=review_cost)  # fmt: skip
            except InvalidMessage as exc:
                steps.append(Output(settings.transactions_dlq_topic, record.key, dead_letter(record, exc)))
                dead_codes.append(exc.code)
                continue
            except Exception as exc:  # a bug while scoring must not stop the stream or lose the message
                log.exception("scoring failed at %s[%s]@%s", record.topic, record.partition, record.offset)
                error = InvalidMessage("scoring_error", repr(exc)[:500])
                steps.append(Output(settings.transactions_dlq_topic, record.key, dead_letter(record, error)))
                dead_codes.append(error.code)
                continue
            changed[tx.customer_id] = after
            pending.setdefault(tx.terminal_id, []).append((tx.event_time_s, tx.tx_id))
            steps.append(_Assessed(tx, customer, after, x, prediction))
        if batched:
            assessed = [step for step in steps if isinstance(step, _Assessed)]
            try:
                results = model.score_many([each.x for each in assessed])
                for each, result in zip(assessed, results, strict=True):
                    each.prediction = score_transaction(each.tx, each.x, model, threshold=settings.decision_threshold,
                                                        received_at_s=received_at_s, rules=rules,
                                                        review_cost=review_cost, scored=result)  # fmt: skip
            except Exception as exc:
                raise _BatchScoringFailed from exc
        for step in steps:
            if isinstance(step, Output):
                outputs.append(step)
                continue
            tx, customer, after, prediction = step.tx, step.customer, step.after, step.prediction
            assert prediction is not None  # scored above, one at a time or with the batch
            t = tx.event_time_s
            if not customer and after:
                new_customers.add(tx.customer_id)
            added = after_entry(after, tx.tx_id)
            if added is not None:
                changelog_key = entry_key(tx.customer_id, tx.tx_id)
                value = entry_value(added)
                entry_outputs.append(Output(self.changelog_topic, changelog_key, value, partition))
                updates[changelog_key] = value
            for old in pruned(customer, after):
                old_key = entry_key(tx.customer_id, str(old[3]))
                entry_outputs.append(Output(self.changelog_topic, old_key, None, partition))
                updates[old_key] = None
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
            observed.append((prediction.features, prediction.fraud_probability))
            if prediction.is_fraud:
                flagged.append(prediction)
            decisions[prediction.decision] = decisions.get(prediction.decision, 0) + 1
            if prediction.rules or prediction.shadow_rules:
                for rule_id in (*prediction.rules, *prediction.shadow_rules):
                    hits[rule_id] = hits.get(rule_id, 0) + 1
        outputs.extend(entry_outputs)
        idle = self._expired(state, stream_time_s)
        expired = [c for c in idle if c not in changed]
        for customer_id in expired:
            for old_key in idle[customer_id]:
                outputs.append(Output(self.changelog_topic, old_key, None, partition))
                updates[old_key] = None
        next_offset = records[-1].offset + 1
        customer_count = state.customer_count + len(new_customers) - len(expired)
        position = position_value(stream_time_s, next_offset, customer_count)
        outputs.append(Output(self.changelog_topic, POSITION_KEY, position, partition))
        updates[POSITION_KEY] = position
        batch = Batch(outputs, track=(self.changelog_topic, partition))

        def on_commit() -> None:
            state.apply(updates, batch.produced_to, changed, expired)
            state.stream_time_s = stream_time_s
            state.next_offset = next_offset
            state.customer_count = customer_count
            for terminal_id, t, tx_id in scored:
                self.aggregates.add_scored(terminal_id, t, tx_id)
            now = self.now_s()
            latency_ms = (time.time() - received_at_s) * 1000.0
            self.window.record_many(now, len(scored), len(dead_codes), latency_ms)
            metrics.TRANSACTIONS_SCORED.inc(len(scored))
            metrics.TRANSACTIONS_DEAD_LETTERED.inc(len(dead_codes))
            for code in dead_codes:
                metrics.DEAD_LETTERS.labels("transactions", code).inc()
            metrics.LATE_TRANSACTIONS.inc(late)
            metrics.CUSTOMERS_EXPIRED.inc(len(expired))
            metrics.CUSTOMER_STATES.set(sum(p.customer_count for p in self.partitions.values()))
            for probability in probabilities:
                metrics.SCORES.observe(probability)
                metrics.SCORING_LATENCY.observe(latency_ms / 1000.0)
            metrics.PREDICTED_FRAUD.inc(len(flagged))
            for decision, n in decisions.items():
                metrics.DECISIONS.labels(decision).inc(n)
            self.high_scores.extend(flagged)
            if self.drift is not None:
                self.drift.observe_many(observed)
            if hits:
                metrics.count_rule_matches(hits, rules.rule_set.states)
                self.rule_hits.add(now, hits)

        batch.on_commit = on_commit
        return batch

    def event_time(self, record: Any) -> float:
        """Event time for catch-up pacing; ``-inf`` for what will be dead-lettered (it goes at once)."""
        try:
            return datetime.fromisoformat(loads(record.value)["timestamp"]).timestamp()
        except Exception:
            return float("-inf")

    def stream_time(self, tp: TopicPartition) -> float | None:
        state = self.partitions.get(tp.partition)
        return state.stream_time_s if state is not None else None

    def idle(self, tp: TopicPartition) -> Batch | None:
        """Expire idle customers even when no transaction comes to this partition."""
        state = self.partitions.get(tp.partition)
        if state is None:
            return None
        idle = self._expired(state, state.stream_time_s)
        if not idle:
            return None
        expired = list(idle)
        updates: dict[bytes, bytes | None] = {key: None for keys in idle.values() for key in keys}
        customer_count = state.customer_count - len(expired)
        updates[POSITION_KEY] = position_value(state.stream_time_s, state.next_offset, customer_count)
        outputs = [Output(self.changelog_topic, key, value, tp.partition) for key, value in updates.items()]
        batch = Batch(outputs, track=(self.changelog_topic, tp.partition))

        def on_commit() -> None:
            state.apply(updates, batch.produced_to, {}, expired)
            state.customer_count = customer_count
            metrics.CUSTOMERS_EXPIRED.inc(len(expired))
            metrics.CUSTOMER_STATES.set(sum(p.customer_count for p in self.partitions.values()))

        batch.on_commit = on_commit
        return batch

    def _expired(self, state: PartitionState, stream_time_s: float) -> dict[str, list[bytes]]:
        """Customers idle past the TTL in stream time, with their store keys: once per sweep interval, one slice
        of ``STATE_SWEEP_CUSTOMERS`` customers read from the store (the next sweep goes on from there), so a sweep
        costs the same however many customers the partition holds."""
        now = self.now_s()
        if now - state.swept_at_s < self.settings.features_sweep_interval_s:
            return {}
        state.swept_at_s = now
        horizon = stream_time_s - self.settings.customer_ttl_s
        idle, state.sweep_from = idle_slice(state.store, state.sweep_from, self.settings.state_sweep_customers, horizon)
        return idle
