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
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import EventT, StreamT
from faust.web import Request, Response, View

from app import metrics
from app.features import newest_event_time_s
from app.health import STATUSES, HealthWindow, health_event
from app.learning import expired, join, label_entry, scored_entry
from app.model import FraudModel, load_model, save_model
from app.records import DeadLetter, InvalidMessage, parse_label, parse_transaction
from app.scoring import score_transaction
from app.serialization import b64, dumps, isoformat_utc, loads
from app.settings import load

log = logging.getLogger(__name__)

settings = load()

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

customer_transactions_30day = faust_app.Table("customer-transactions-30day", partitions=settings.partitions)
learning_entries_by_tx_id = faust_app.Table("learning-entries-by-tx-id", partitions=settings.partitions)

MODEL_PATH = Path(settings.data_dir) / "model.pkl"
model = load_model(MODEL_PATH) or FraudModel(settings.model_name, prior_fraud_rate=settings.prior_fraud_rate)
metrics.LABELS_LEARNED.set(model.labels_learned)
metrics.MODEL_INFO.labels(model.version).set(1)
window = HealthWindow(settings.health_window_s, time.monotonic())
# Stream time per partition (newest event time seen): what expires idle keys, never the wall clock.
scoring_watermarks_s: dict[int, float] = defaultdict(lambda: float("-inf"))
learning_watermarks_s: dict[int, float] = defaultdict(lambda: float("-inf"))


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
async def score_transactions(stream: StreamT[Any]) -> None:
    """Every transaction ends as one prediction or one dead letter."""
    async for event in stream.events():
        received_s = time.perf_counter()
        try:
            tx = parse_transaction(event.value, settings.max_message_bytes, settings.max_amount)
            stored = customer_transactions_30day.get(tx.customer_id)
            state = stored["entries"] if stored else []
            prediction, x, state = score_transaction(
                tx,
                state,
                model,
                threshold=settings.decision_threshold,
                lateness_s=settings.lateness_s,
                received_s=received_s,
            )
        except InvalidMessage as exc:
            await reject_transaction(event, exc)
            continue
        except Exception as exc:  # a scoring bug must not stop the stream or lose the message
            message = event.message
            log.exception("scoring failed at %s[%s]@%s", message.topic, message.partition, message.offset)
            await reject_transaction(event, InvalidMessage("scoring_error", repr(exc)))
            continue
        partition = event.message.partition
        customer_transactions_30day[tx.customer_id] = {"partition": partition, "entries": state}
        if tx.event_time_s < scoring_watermarks_s[partition] - settings.lateness_s:
            metrics.LATE_TRANSACTIONS.inc()
        scoring_watermarks_s[partition] = max(scoring_watermarks_s[partition], tx.event_time_s)
        key = tx.tx_id.encode()
        await predictions_topic.send(key=key, value=dumps(prediction))
        await learning_topic.send(key=key, value=dumps(scored_entry(x, tx.event_time_s)))
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
        entry = label_entry(label.is_fraud, label.timestamp.timestamp())
        await learning_topic.send(key=label.tx_id.encode(), value=dumps(entry))
        metrics.LABELS_RECEIVED.inc()


@faust_app.agent(learning_topic)
async def learn_from_labels(stream: StreamT[Any]) -> None:
    """Pair each label with the features its transaction was scored with, then learn once."""
    async for event in stream.events():
        tx_id = event.key.decode()
        incoming = loads(event.value)
        partition = event.message.partition
        learning_watermarks_s[partition] = max(learning_watermarks_s[partition], float(incoming["t"]))
        pair, keep = join(learning_entries_by_tx_id.get(tx_id), incoming)
        if pair is not None:
            model.learn_one(*pair)
            metrics.LABELS_JOINED.inc()
            metrics.LABELS_LEARNED.set(model.labels_learned)
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
    removed = expire(
        customer_transactions_30day,
        lambda value: (
            newest_event_time_s(value["entries"]) < scoring_watermarks_s[value["partition"]] - settings.customer_ttl_s
        ),
    )
    metrics.CUSTOMERS_EXPIRED.inc(removed)
    metrics.CUSTOMER_STATES.set(len(customer_transactions_30day))


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
