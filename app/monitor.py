"""The monitor: a health event every ``HEALTH_INTERVAL_S`` on the health topic, and model checkpoints."""

from __future__ import annotations

import logging
import time

from app import metrics
from app.checkpoints import write_in_thread
from app.health import STATUSES, health_event
from app.model import model_bytes
from app.serialization import dumps, isoformat_utc
from app.worker import MODEL_PATH, decisions, faust_app, feed, health_topic, model, settings, window

log = logging.getLogger(__name__)


@faust_app.timer(interval=settings.health_interval_s)
async def publish_health() -> None:
    """One event per interval, keyed by worker id; a broker that does not answer is an issue of its own."""
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
        terminal_feed_lag_s=feed.lag_s,
    )
    for status in STATUSES:
        metrics.HEALTH_STATUS.labels(status).set(1 if status == event["status"] else 0)
    if not decisions.connected:
        return  # nothing to publish to; /ready says so, and the loop logged the state change once
    await health_topic.send(key=settings.worker_id.encode(), value=dumps(event))
    if event["status"] != "healthy":
        log.warning("health %s: %s", event["status"], "; ".join(event["issues"]))  # type: ignore[arg-type]


@faust_app.timer(interval=settings.model_checkpoint_interval_s)
async def checkpoint_model() -> None:
    """Persist the model, so a restart keeps what it learned (the disk write off the event loop)."""
    await write_in_thread(MODEL_PATH, [model_bytes(model)])
