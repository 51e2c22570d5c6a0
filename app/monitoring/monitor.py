"""The monitor: a health event every ``HEALTH_INTERVAL_S`` on the health topic, from the worker's components."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from app import metrics
from app.components import Components
from app.kafka.clients import Connection, plain_producer
from app.monitoring.health import STATUSES, health_event
from app.serialization import dumps, isoformat_utc

log = logging.getLogger(__name__)
DRIFT_SLICE_ROWS = 200  # sampled rows folded into the drift windows between two yields to the event loop (~4 ms)

Send = Callable[[bytes, bytes], Awaitable[object]]


class HealthPublisher:
    """The health topic's producer, started at the first event: a worker that starts while the broker is away
    keeps running (its loops wait for the broker) instead of exiting; events are skipped until it answers, with
    one log line when it stops answering and one when it answers again."""

    def __init__(self, connection: Connection, topic: str) -> None:
        self.connection = connection
        self.topic = topic
        self._producer: AIOKafkaProducer | None = None
        self._failing = False

    async def send(self, key: bytes, value: bytes) -> None:
        try:
            if self._producer is None:
                producer = plain_producer(self.connection)
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            await self._producer.send(self.topic, value, key=key)
        except KafkaError as exc:
            if not self._failing:
                log.warning("health events not published: %r (skipped until the broker answers)", exc)
            self._failing = True
            return
        if self._failing:
            log.info("health events published again")
        self._failing = False

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


def current_health(components: Components, now_s: float) -> dict[str, object]:
    """The worker's health event now: what the health topic carries and what the operator page shows."""
    settings, scorer = components.settings, components.scorer
    return health_event(
        timestamp=isoformat_utc(time.time()),
        worker=settings.worker_id,
        window_s=settings.health_window_s,
        stats=components.window.stats(now_s),
        last_transaction_age_s=components.window.last_transaction_age_s(now_s),
        model_version=scorer.model.version,
        labels_learned=scorer.model.labels_learned,
        thresholds=settings.thresholds,
        terminal_feed_lag_s=components.feed.lag_s,
        model_issues=[*components.follower.issues(), *components.rules.issues()],  # both degrade a healthy worker
        models=models_summary(components),
        drift=components.drift.report() if components.drift is not None else None,
    )


async def publish_health(components: Components, send: Send) -> None:
    """One event per interval, keyed by worker id; a broker that does not answer is an issue of its own."""
    drift = components.drift
    if drift is not None:  # the interval's sampled rows folded in slices: the decisions go on between them
        rows = drift.pending_rows  # the rows there now (report() takes the rest)
        while (rows > 0 and drift.pending_rows) or drift.fitting:  # and the reference's fit, a few columns a step
            rows -= drift.fold(DRIFT_SLICE_ROWS)
            await asyncio.sleep(0)
    event = current_health(components, time.monotonic())
    for status in STATUSES:
        metrics.HEALTH_STATUS.labels(status).set(1 if status == event["status"] else 0)
    if components.drift is not None and components.drift.last_judged is not None:
        metrics.observe_drift(components.drift.last_judged)
    if not components.decisions.connected:
        return  # nothing to publish to; /ready says so, and the loop logged the state change once
    await send(components.settings.worker_id.encode(), dumps(event))
    if event["status"] != "healthy":
        log.warning("health %s: %s", event["status"], "; ".join(event["issues"]))  # type: ignore[arg-type]


def models_summary(components: Components) -> dict[str, object]:
    """Champion and challenger with their rolling quality (from their newest snapshots; ``served``: the served
    probabilities' quality, from the champion's), and the trainer's role (the
    worker's trainer process, from its last ``/status``: ``trainer`` true while it answers and holds the lease)."""
    registry = components.follower.registry
    summary: dict[str, object] = {
        "trainer": components.trainer.active,
        "trainer_process": components.trainer.summary(),
        "follow": registry.follow,
    }
    for role, version in (("champion", registry.champion), ("challenger", registry.challenger)):
        if version is not None:
            header = registry.headers.get(version, {})
            summary[role] = {"version": version, "labels_seen": header.get("labels_seen"), **header.get("metrics", {})}
            for name, value in (header.get("metrics") or {}).items():
                if isinstance(value, int | float):
                    metrics.MODEL_QUALITY.labels(role, name).set(value)
            if role == "champion" and header.get("comparison"):  # the two lines' last comparison, as it was made
                summary["comparison"] = header["comparison"]
            served = header.get("served_metrics") if role == "champion" else None
            if served:  # the served probabilities' figures, by whichever version served them: their own role
                summary["served"] = served
                for name, value in served.items():
                    if isinstance(value, int | float):
                        metrics.MODEL_QUALITY.labels("served", name).set(value)
    changes = [e for e in registry.events if e.get("action") in ("promoted", "rolled_back")]
    if changes:  # what made the champion the champion: by whom or what, and why
        last = changes[-1]
        summary["last_change"] = {k: last.get(k) for k in ("action", "version", "by", "reason", "timestamp")}
    return summary
