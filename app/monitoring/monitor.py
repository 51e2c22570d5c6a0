"""The monitor: a health event every ``HEALTH_INTERVAL_S`` on the health topic."""

from __future__ import annotations

import logging
import time

from app import metrics
from app.monitoring.health import STATUSES, health_event
from app.serialization import dumps, isoformat_utc
from app.worker import decisions, faust_app, feed, follower, health_topic, scorer, settings, trainer, window

log = logging.getLogger(__name__)


def current_health(now_s: float) -> dict[str, object]:
    """The worker's health event now: what the health topic carries and what the operator page shows."""
    return health_event(
        timestamp=isoformat_utc(time.time()),
        worker=settings.worker_id,
        window_s=settings.health_window_s,
        stats=window.stats(now_s),
        last_transaction_age_s=window.last_transaction_age_s(now_s),
        model_version=scorer.model.version,
        labels_learned=scorer.model.labels_learned,
        thresholds=settings.thresholds,
        terminal_feed_lag_s=feed.lag_s,
        model_issues=follower.issues(),
        models=models_summary(),
    )


@faust_app.timer(interval=settings.health_interval_s)
async def publish_health() -> None:
    """One event per interval, keyed by worker id; a broker that does not answer is an issue of its own."""
    event = current_health(time.monotonic())
    for status in STATUSES:
        metrics.HEALTH_STATUS.labels(status).set(1 if status == event["status"] else 0)
    if not decisions.connected:
        return  # nothing to publish to; /ready says so, and the loop logged the state change once
    await health_topic.send(key=settings.worker_id.encode(), value=dumps(event))
    if event["status"] != "healthy":
        log.warning("health %s: %s", event["status"], "; ".join(event["issues"]))  # type: ignore[arg-type]


def models_summary() -> dict[str, object]:
    """Champion and challenger with their rolling quality (from their newest snapshots), and the trainer's role."""
    registry = follower.registry
    summary: dict[str, object] = {"trainer": trainer.active, "follow": registry.follow}
    for role, version in (("champion", registry.champion), ("challenger", registry.challenger)):
        if version is not None:
            header = registry.headers.get(version, {})
            summary[role] = {"version": version, "labels_seen": header.get("labels_seen"), **header.get("metrics", {})}
            for name, value in (header.get("metrics") or {}).items():
                if isinstance(value, int | float):
                    metrics.MODEL_QUALITY.labels(role, name).set(value)
    return summary
