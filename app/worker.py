"""The Faust app: topics, tables, agents, timers and web views. Wiring only; the logic is in pure modules.

Run it with ``python -m app`` (which creates the contract's topics first).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import faust
from aiohttp import web
from aiokafka.consumer.fetcher import Fetcher
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import EventT, StreamT
from faust.web import Request, Response, View

from app import metrics
from app.alignment import EventTimeAligner, StreamTimeAnnouncer
from app.feature_engine import mark_fraud, newest_event_time_s, terminal_features
from app.features import customer_side_features
from app.health import STATUSES, HealthWindow, health_event
from app.learning import expired, join, label_entry, scored_entry
from app.model import FraudModel, load_model, save_model
from app.records import DeadLetter, InvalidMessage, parse_label, parse_transaction
from app.repartition import (
    fraud_label_message,
    fraud_message,
    heartbeat_message,
    terminal_partition,
    tick_message,
    transaction_message,
    transaction_of,
)
from app.scoring import score_transaction
from app.serialization import b64, dumps, isoformat_utc, loads
from app.settings import load

log = logging.getLogger(__name__)

settings = load()

# aiokafka stops fetching from a broker while any partition's fetched records wait to be consumed, for up to
# 100 ms; with one broker that put 100 ms on every hop through the terminal topic. Our own topics are consumed
# as fast as they come, so a short pause is enough.
Fetcher.__init__.__kwdefaults__["prefetch_backoff"] = settings.fetch_pause_ms / 1000.0

faust_app = faust.App(
    settings.app_id,
    broker=f"kafka://{settings.bootstrap_servers}",
    store=settings.store,
    datadir=settings.data_dir,
    web_bind=settings.web_bind,
    web_port=settings.web_port,
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.replication_factor,
    consumer_auto_offset_reset="earliest",
    # The terminal agent holds transactions unacknowledged while it aligns event time; waiting for them to be
    # acknowledged would stall a rebalance. Their offsets are not committed, so the next owner reads them.
    stream_wait_empty=False,
    producer_max_request_size=16 * 1024 * 1024,
    producer_linger=settings.producer_linger_ms / 1000.0,
    autodiscover=False,
)
faust_app.monitor = PrometheusMonitor(metrics=FaustMetrics.create(metrics.FAUST_REGISTRY, "faust"))

transactions_topic = faust_app.topic(settings.transactions_topic, key_serializer="raw", value_serializer="raw")
labels_topic = faust_app.topic(settings.labels_topic, key_serializer="raw", value_serializer="raw")
predictions_topic = faust_app.topic(settings.predictions_topic, key_serializer="raw", value_serializer="raw")
health_topic = faust_app.topic(settings.health_topic, key_serializer="raw", value_serializer="raw")
transactions_dlq_topic = faust_app.topic(settings.transactions_dlq_topic, key_serializer="raw", value_serializer="raw")
labels_dlq_topic = faust_app.topic(settings.labels_dlq_topic, key_serializer="raw", value_serializer="raw")
learning_topic = faust_app.topic(
    f"{settings.app_id}-learning",
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.partitions,
    internal=True,
)

# Keyed by terminal: the repartition step between the customer half and the terminal half of the features.
terminal_topic = faust_app.topic(
    f"{settings.app_id}-transactions-by-terminal",
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.partitions,
    internal=True,
)

customer_transactions_30day = faust_app.Table("customer-transactions-30day", partitions=settings.partitions)
terminal_transactions_37day = faust_app.Table("terminal-transactions-37day", partitions=settings.partitions)
# Fraud labels broadcast to every terminal partition, waiting for their transaction (expire like terminals).
fraud_labels_by_tx_id = faust_app.Table("fraud-labels-by-tx-id", partitions=settings.partitions)
learning_entries_by_tx_id = faust_app.Table("learning-entries-by-tx-id", partitions=settings.partitions)

MODEL_PATH = Path(settings.data_dir) / "model.pkl"
model = load_model(MODEL_PATH) or FraudModel(settings.model_name, prior_fraud_rate=settings.prior_fraud_rate)
metrics.LABELS_LEARNED.set(model.labels_learned)
metrics.MODEL_INFO.labels(model.version).set(1)
window = HealthWindow(settings.health_window_s, time.monotonic())
# Stream time per partition (newest event time seen): what expires idle keys, never the wall clock.
customer_watermarks_s: dict[int, float] = defaultdict(lambda: float("-inf"))
terminal_watermarks_s: dict[int, float] = defaultdict(lambda: float("-inf"))
learning_watermarks_s: dict[int, float] = defaultdict(lambda: float("-inf"))
# Event-time alignment of the terminal partitions (see app.alignment): per customer partition, the last offset
# handled and when; what was last announced to each terminal partition; per terminal partition, what is held.
Held = tuple[EventT, dict[str, Any], float]
started_s = time.monotonic()
customer_activity: dict[int, tuple[int, float]] = {}
announcer = StreamTimeAnnouncer()
aligners: dict[int, EventTimeAligner[Held]] = {}
ticks_pending: set[int] = set()


async def send_dead_letter(topic: faust.TopicT, input_name: str, event: EventT, error: InvalidMessage) -> None:
    """The original bytes, key and position with the reason, so nothing sent to us is ever lost."""
    message = event.message
    letter = DeadLetter(
        error=error.code,
        reason=error.reason,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        raw=b64(message.value if isinstance(message.value, bytes) else b""),
        received_at=isoformat_utc(time.time()),
    )
    await topic.send(key=message.key, value=dumps(letter))
    metrics.DEAD_LETTERS.labels(input_name, error.code).inc()


async def reject_transaction(event: EventT, error: InvalidMessage) -> None:
    await send_dead_letter(transactions_dlq_topic, "transactions", event, error)
    metrics.TRANSACTIONS_DEAD_LETTERED.inc()
    window.record_dead_letter(time.monotonic())


@faust_app.task
async def quiet_client_debug_logs() -> None:
    """aiokafka emits a debug record per message sent, and the worker's logging setup lets it through to
    the handlers (4-8 % of the CPU in profiles); its debug output is not wanted in production."""
    logging.getLogger("aiokafka").setLevel(max(logging.INFO, logging.getLogger().getEffectiveLevel()))


@faust_app.agent(transactions_topic)
async def window_customers(stream: StreamT[Any]) -> None:
    """Validate, add the customer half of the features, and hand the transaction to its terminal's partition.

    Every transaction leaves here as one dead letter or one message on the terminal topic, which ends as one
    prediction. A transaction seen again (by ``tx_id``) keeps the features of its first arrival.
    """
    async for event in stream.events():
        received_at_s = time.time()
        partition = event.message.partition
        customer_activity[partition] = (event.message.offset, time.monotonic())
        try:
            tx = parse_transaction(event.value, settings.max_message_bytes, settings.max_amount)
            stored = customer_transactions_30day.get(tx.customer_id)
            state = stored["entries"] if stored else []
            x, new_state = customer_side_features(tx, state, settings.lateness_s)
        except InvalidMessage as exc:
            await reject_transaction(event, exc)
            continue
        except Exception as exc:  # a feature bug must not stop the stream or lose the message
            message = event.message
            log.exception("customer features failed at %s[%s]@%s", message.topic, partition, message.offset)
            await reject_transaction(event, InvalidMessage("scoring_error", repr(exc)))
            continue
        if new_state is state:
            metrics.DUPLICATE_TRANSACTIONS.labels("customer").inc()
        else:
            customer_transactions_30day[tx.customer_id] = {"partition": partition, "entries": new_state}
        if tx.event_time_s < customer_watermarks_s[partition] - settings.lateness_s:
            metrics.LATE_TRANSACTIONS.inc()
        customer_watermarks_s[partition] = max(customer_watermarks_s[partition], tx.event_time_s)
        watermark = customer_watermarks_s[partition]
        # Read everything there is: terminal partitions need not wait for this partition after this one.
        idle = settings.align_idle_s <= 0 and is_caught_up(event.message.tp, event.message.offset)
        message = transaction_message(
            tx, x, source=partition, watermark_s=watermark, received_at_s=received_at_s, idle=idle
        )
        q = terminal_partition(tx.terminal_id, settings.partitions)
        await terminal_topic.send(key=tx.terminal_id.encode(), value=dumps(message), partition=q)
        announcer.heard(source=partition, target=q, watermark_s=watermark, idle=idle)
        if idle:
            await announce_stream_time(partition, watermark, idle=True)


def is_caught_up(tp: Any, offset: int) -> bool:
    """Nothing left to read on ``tp`` after ``offset``, as far as the last fetch knows."""
    highwater = faust_app.consumer.highwater(tp)
    return highwater is not None and offset >= highwater - 1


async def announce_stream_time(partition: int, watermark_s: float, idle: bool) -> None:
    """Heartbeats to the terminal partitions that do not know yet how far ``partition`` got or that it idles."""
    for q in announcer.due(source=partition, watermark_s=watermark_s, idle=idle, targets=range(settings.partitions)):
        announced = None if watermark_s == float("-inf") else watermark_s
        message = heartbeat_message(source=partition, watermark_s=announced, idle=idle)
        await terminal_topic.send(key=None, value=dumps(message), partition=q)
        announcer.heard(source=partition, target=q, watermark_s=watermark_s, idle=idle)


@faust_app.timer(interval=settings.align_heartbeat_s)
async def keep_terminal_partitions_moving() -> None:
    """Announce how far each of our customer partitions has got, and wake terminal partitions holding too long.

    A customer partition is idle when it has read everything on it and nothing came for ``align_idle_s``:
    terminal partitions then stop waiting for it. A partition with a backlog is never idle, so a replay or a
    catch-up is always aligned. Releases happen in the terminal agent when a message arrives; a tick makes one
    arrive when a held transaction is due.
    """
    now_s = time.monotonic()
    for tp in faust_app.consumer.assignment():
        if tp.topic != settings.transactions_topic:
            continue
        offset, active_s = customer_activity.get(tp.partition, (-1, started_s))
        idle = is_caught_up(tp, offset) and now_s - active_s >= settings.align_idle_s
        await announce_stream_time(tp.partition, customer_watermarks_s[tp.partition], idle)
    for q, aligner in aligners.items():
        if q not in ticks_pending and len(aligner) and aligner.oldest_wait_s(now_s) >= settings.align_max_wait_s:
            ticks_pending.add(q)
            await terminal_topic.send(key=None, value=dumps(tick_message()), partition=q)


@faust_app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def forget_alignment(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
    """Held transactions are not acknowledged, so after a rebalance their owner reads them again."""
    aligners.clear()
    announcer.clear()
    ticks_pending.clear()
    metrics.ALIGNMENT_HELD.set(0)


def aligner_for(partition: int) -> EventTimeAligner[Held]:
    if partition not in aligners:
        sources = faust_app.consumer.topic_partitions(settings.transactions_topic) or settings.partitions
        aligners[partition] = EventTimeAligner(sources, settings.align_max_wait_s)
    return aligners[partition]


@faust_app.agent(terminal_topic)
async def score_transactions(stream: StreamT[Any]) -> None:
    """Join the terminal half of the features in event-time order, score, publish one prediction.

    Transactions wait (unacknowledged, so a crash replays them) until every customer partition is past
    their event time; fraud labels and heartbeats are handled on arrival.
    """
    manual = stream.noack()  # type: ignore[attr-defined]
    async for event in manual.events():
        partition = event.message.partition
        message = loads(event.value)
        aligner = aligner_for(partition)
        if message["kind"] == "transaction":
            aligner.add(
                (event, message, time.monotonic()),
                float(message["event_time_s"]),
                message["tx_id"],
                source=int(message["source"]),
                source_watermark_s=float(message["watermark_s"]),
                now_s=time.monotonic(),
                source_idle=bool(message.get("idle", False)),
            )
        else:
            if message["kind"] == "heartbeat":
                watermark = message["watermark_s"]
                aligner.observe(
                    int(message["source"]),
                    float("-inf") if watermark is None else float(watermark),
                    idle=bool(message["idle"]),
                )
            elif message["kind"] == "fraud":
                record_fraud(event.key.decode(), message)
            elif message["kind"] == "fraud_label":
                keep_fraud_label(event.key.decode(), message, partition)
            elif message["kind"] == "tick":
                ticks_pending.discard(partition)
            await manual.ack(event)
        for (held_event, held_message, held_since_s), forced in aligner.release(time.monotonic()):
            metrics.ALIGNMENT_WAIT.observe(time.monotonic() - held_since_s)
            if forced:
                metrics.ALIGNMENT_FORCED.inc()
            await score_with_terminal_features(held_event, held_message, partition)
            await manual.ack(held_event)
        metrics.ALIGNMENT_HELD.set(sum(len(a) for a in aligners.values()))


def record_fraud(terminal_id: str, message: dict[str, Any]) -> None:
    """A fraud label joined to its transaction (the label came after the transaction was scored)."""
    stored = terminal_transactions_37day.get(terminal_id)
    if stored:
        entries = mark_fraud(stored["entries"], message["tx_id"], float(message["known_s"]))
        terminal_transactions_37day[terminal_id] = {**stored, "entries": entries}


def keep_fraud_label(tx_id: str, message: dict[str, Any], partition: int) -> None:
    """A fraud label, before its transaction is known here: applied when (if) it is scored on this partition."""
    known_s = float(message["known_s"])
    stored = fraud_labels_by_tx_id.get(tx_id)
    if stored is None or known_s < stored["known_s"]:
        fraud_labels_by_tx_id[tx_id] = {"known_s": known_s, "partition": partition}


async def score_with_terminal_features(event: EventT, message: dict[str, Any], partition: int) -> None:
    try:
        tx = transaction_of(message)
        stored = terminal_transactions_37day.get(tx.terminal_id)
        state = stored["entries"] if stored else []
        terminal_x, new_state = terminal_features(
            state, tx.event_time_s, tx.tx_id, settings.terminal_delay_days, settings.lateness_s
        )
        x = {**message["x"], **terminal_x}
        prediction = score_transaction(
            tx, x, model, threshold=settings.decision_threshold, received_at_s=float(message["received_at_s"])
        )
    except Exception as exc:  # a scoring bug must not stop the stream or lose the transaction
        log.exception("scoring failed at %s[%s]@%s", event.message.topic, partition, event.message.offset)
        await reject_transaction(event, InvalidMessage("scoring_error", repr(exc)))
        return
    if new_state is state:
        metrics.DUPLICATE_TRANSACTIONS.labels("terminal").inc()
    else:
        label = fraud_labels_by_tx_id.get(tx.tx_id)
        if label is not None:
            new_state = mark_fraud(new_state, tx.tx_id, float(label["known_s"]))
        terminal_transactions_37day[tx.terminal_id] = {"partition": partition, "entries": new_state}
    terminal_watermarks_s[partition] = max(terminal_watermarks_s[partition], tx.event_time_s)
    key = tx.tx_id.encode()
    await predictions_topic.send(key=key, value=dumps(prediction))
    await learning_topic.send(key=key, value=dumps(scored_entry(x, tx.event_time_s, tx.terminal_id)))
    metrics.TRANSACTIONS_SCORED.inc()
    metrics.SCORING_LATENCY.observe(prediction.latency_ms / 1000.0)
    metrics.SCORES.observe(prediction.fraud_probability)
    if prediction.is_fraud:
        metrics.PREDICTED_FRAUD.inc()
    window.record_scored(time.monotonic(), prediction.latency_ms)


@faust_app.agent(labels_topic)
async def route_labels(stream: StreamT[Any]) -> None:
    """Validate labels and re-key them onto the learning topic, next to the features they complete."""
    async for event in stream.events():
        try:
            label = parse_label(event.value, settings.max_message_bytes)
        except InvalidMessage as exc:
            await send_dead_letter(labels_dlq_topic, "labels", event, exc)
            metrics.LABELS.labels("dead_letter").inc()
            continue
        known_s = label.timestamp.timestamp()
        await learning_topic.send(key=label.tx_id.encode(), value=dumps(label_entry(label.is_fraud, known_s)))
        if label.is_fraud:
            # Every terminal partition hears of a fraud at once, without waiting for the join with its scored
            # transaction: in a replay or a catch-up that join lags behind scoring, and the terminal's risk would
            # then depend on the lag. The partition that scores the transaction keeps it.
            fraud = dumps(fraud_label_message(label.tx_id, known_s))
            for q in range(settings.partitions):
                await terminal_topic.send(key=label.tx_id.encode(), value=fraud, partition=q)
        metrics.LABELS_RECEIVED.inc()


@faust_app.agent(learning_topic)
async def learn_from_labels(stream: StreamT[Any]) -> None:
    """Pair each label with the features its transaction was scored with, learn once, and send a fraud on to
    its terminal, where it raises the terminal's risk from the label's time on."""
    async for event in stream.events():
        tx_id = event.key.decode()
        incoming = loads(event.value)
        partition = event.message.partition
        learning_watermarks_s[partition] = max(learning_watermarks_s[partition], float(incoming["t"]))
        pair, keep = join(learning_entries_by_tx_id.get(tx_id), incoming)
        if pair is not None:
            model.learn_one(pair.x, pair.y)
            metrics.LABELS_JOINED.inc()
            metrics.LABELS_LEARNED.set(model.labels_learned)
            if pair.y and pair.terminal_id:
                fraud = fraud_message(tx_id, pair.known_s)
                q = terminal_partition(pair.terminal_id, settings.partitions)
                await terminal_topic.send(key=pair.terminal_id.encode(), value=dumps(fraud), partition=q)
        if keep is None:
            learning_entries_by_tx_id.pop(tx_id, None)
        else:
            learning_entries_by_tx_id[tx_id] = {**keep, "partition": partition}


def expire(table: faust.types.TableT, is_expired: Callable[[dict[str, Any]], bool]) -> int:
    """Delete the entries ``is_expired`` picks, each with a tombstone on its own changelog partition.

    Faust only lets a table change inside stream iteration, where the event names the changelog partition; a
    timer has no event, so every value records its partition and the timer sends the tombstone itself. Keys
    restored from the changelog carry their partition too, so they expire like the others.
    """
    stale = [(key, value["partition"]) for key, value in table.items() if is_expired(value)]
    for key, partition in stale:
        table.data.pop(key, None)
        table.send_changelog(partition, key, None)
    return len(stale)


def idle_past(watermarks_s: dict[int, float], ttl_s: float) -> Callable[[dict[str, Any]], bool]:
    """A state whose newest entry is older than ``ttl_s`` behind its partition's stream time."""
    return lambda value: newest_event_time_s(value["entries"]) < watermarks_s[value["partition"]] - ttl_s


@faust_app.timer(interval=settings.features_sweep_interval_s)
async def expire_learning_entries() -> None:
    """Drop features whose label never came (and labels whose transaction never came) after the TTL."""
    removed = expire(
        learning_entries_by_tx_id,
        lambda entry: expired(entry, learning_watermarks_s[entry["partition"]], settings.features_ttl_s),
    )
    metrics.LABELS.labels("expired").inc(removed)
    metrics.PENDING_LEARNING.set(len(learning_entries_by_tx_id))


@faust_app.timer(interval=settings.features_sweep_interval_s)
async def expire_idle_customers() -> None:
    """Remove customers idle for longer than the longest window, in their partition's stream time."""
    removed = expire(customer_transactions_30day, idle_past(customer_watermarks_s, settings.customer_ttl_s))
    metrics.CUSTOMERS_EXPIRED.inc(removed)
    metrics.CUSTOMER_STATES.set(len(customer_transactions_30day))


@faust_app.timer(interval=settings.features_sweep_interval_s)
async def expire_idle_terminals() -> None:
    """Remove terminals idle for longer than their longest (delayed) window, in their partition's stream time."""
    removed = expire(terminal_transactions_37day, idle_past(terminal_watermarks_s, settings.terminal_ttl_s))
    metrics.TERMINALS_EXPIRED.inc(removed)
    metrics.TERMINAL_STATES.set(len(terminal_transactions_37day))
    expire(
        fraud_labels_by_tx_id,
        lambda value: value["known_s"] < terminal_watermarks_s[value["partition"]] - settings.terminal_ttl_s,
    )


@faust_app.timer(interval=settings.model_checkpoint_interval_s)
async def checkpoint_model() -> None:
    """Persist the model, so a restart keeps what it learned (labels already joined are not replayed)."""
    save_model(model, MODEL_PATH)


@faust_app.on_before_shutdown.connect  # type: ignore[arg-type]
async def checkpoint_model_at_shutdown(app: faust.App, **kwargs: Any) -> None:
    save_model(model, MODEL_PATH)


@faust_app.timer(interval=settings.health_interval_s)
async def publish_health() -> None:
    """The monitor: one health event per interval, keyed by worker id."""
    now_s = time.monotonic()
    event = health_event(
        timestamp=isoformat_utc(time.time()),
        worker=settings.worker_id,
        window_s=settings.health_window_s,
        stats=window.stats(now_s),
        last_transaction_age_s=window.last_transaction_age_s(now_s),
        model_version=model.version,
        labels_learned=model.labels_learned,
        thresholds=settings.thresholds,
    )
    for status in STATUSES:
        metrics.HEALTH_STATUS.labels(status).set(1 if status == event["status"] else 0)
    await health_topic.send(key=settings.worker_id.encode(), value=dumps(event))
    if event["status"] != "healthy":
        log.warning("health %s: %s", event["status"], "; ".join(event["issues"]))  # type: ignore[arg-type]


def is_ready() -> bool:
    """Partitions assigned and table recovery done: the worker is consuming."""
    try:
        assigned = bool(faust_app.consumer.assignment())
    except Exception:
        return False
    recovered = faust_app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
    return assigned and recovered and not faust_app.rebalancing


@faust_app.page("/metrics")
async def prometheus_metrics(self: View, request: Request) -> Response:
    body, content_type = metrics.exposition()
    return cast(Response, web.Response(body=body, headers={"Content-Type": content_type}))


@faust_app.page("/ready")
async def ready(self: View, request: Request) -> Response:
    ok = is_ready()
    return self.json({"ready": ok, "worker": settings.worker_id}, status=200 if ok else 503)


@faust_app.page("/health")
async def alive(self: View, request: Request) -> Response:
    return self.json({"status": "alive", "worker": settings.worker_id})
