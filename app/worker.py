"""The Faust app: lifecycle, web server, timers and CLI; the Kafka-heavy loops run inside it as one service.

Run it with ``python -m app`` (which creates the topics first). Roles, each in its own module:
- :mod:`app.decisions.scorer` scores ``transactions`` (the decision path, one batched transactional hop);
- :mod:`app.state.terminal_feed` keeps the terminal aggregates every scorer reads (off the path);
- :mod:`app.learning.trainer` (one worker of the deployment, by lease) joins labels to the features as scored and publishes
  signed model versions; :mod:`app.learning.follower` (every worker) loads the promoted version into the scorer;
- :mod:`app.monitoring.monitor` publishes health events; :mod:`app.serving.web` serves the pages.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from pathlib import Path

import faust
from faust.app.base import BootStrategy
from mode import Service

from app import metrics
from app.decisions.scorer import Scorer
from app.kafka.security import client_security_options, faust_credentials
from app.kafka.topics import changelog_topic, terminal_topic
from app.kafka.transactional import TransactionalLoop
from app.kafka.tuning import apply_tuning
from app.learning.follower import ModelFollower
from app.learning.model import FraudModel
from app.learning.trainer import Trainer
from app.logs import quiet_kafka_client
from app.monitoring.health import HealthWindow
from app.serving.grpc_api import GrpcServer
from app.serving.routing import PartitionOwners, client_id_with_url
from app.serving.service import Serving
from app.settings import load, signing_key
from app.state.terminal_feed import TerminalFeed
from app.state.terminals import TerminalAggregates

log = logging.getLogger(__name__)

settings = load()

apply_tuning(fetch_pause_ms=settings.fetch_pause_ms)


class DecisionPathBoot(BootStrategy):
    """Faust's own consumer (and its group, tables and conductor) stays off: no agent reads a topic here, and a
    Faust consumer group would hold a restarted worker back for its session timeout (60 s) after a SIGKILL."""

    enable_kafka_consumer = False


class FraudApp(faust.App):
    BootStrategy = DecisionPathBoot


faust_app = FraudApp(
    settings.app_id,
    broker=f"kafka://{settings.bootstrap_servers}",
    broker_credentials=faust_credentials(settings),
    store="memory://",
    datadir=settings.data_dir,
    web_bind=settings.web_bind,
    web_port=settings.web_port,
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.replication_factor,
    producer_linger=settings.producer_linger_ms / 1000.0,
    autodiscover=False,
)
health_topic = faust_app.topic(settings.health_topic, key_serializer="raw", value_serializer="raw")

# Until the follower loads the promoted version (none yet in a new deployment): the configured model's prior.
model = FraudModel(settings.model_name, prior_fraud_rate=settings.prior_fraud_rate)
metrics.MODEL_INFO.labels(model.version).set(1)
window = HealthWindow(settings.health_window_s, time.monotonic())
aggregates = TerminalAggregates(settings.terminal_delay_days, settings.lateness_s, settings.terminal_ttl_s)
kafka_options = client_security_options(settings)  # TLS and SASL of every client below
feed = TerminalFeed(
    aggregates,
    bootstrap_servers=settings.bootstrap_servers,
    terminal_topic=terminal_topic(settings),
    labels_topic=settings.labels_topic,
    snapshot_path=Path(settings.data_dir) / "terminal-aggregates.pkl",
    snapshot_interval_s=settings.terminal_snapshot_interval_s,
    sweep_interval_s=settings.features_sweep_interval_s,
    max_message_bytes=settings.max_message_bytes,
    client_options=kafka_options,
)
scorer = Scorer(
    settings,
    model,
    aggregates,
    window,
    changelog_topic=changelog_topic(settings),
    terminal_topic=terminal_topic(settings),
    client_options=kafka_options,
)
# Other workers find this one in the group's description by the URL in its client id (app/serving/routing.py).
decisions_name = f"{settings.app_id}-decisions-{settings.worker_id}"
decisions_client_id = client_id_with_url(decisions_name, settings.web_advertised_url)
decisions = TransactionalLoop(
    name="decisions",
    bootstrap_servers=settings.bootstrap_servers,
    topics=[settings.transactions_topic],
    group_id=f"{settings.app_id}-decisions",
    instance_id=f"{settings.app_id}-decisions-{settings.worker_id}",
    handler=scorer,
    max_records=settings.batch_max_records,
    linger_ms=settings.producer_linger_ms,
    session_timeout_ms=settings.session_timeout_ms,
    transaction_timeout_ms=settings.transaction_timeout_ms,
    on_batch=metrics.observe_batch,
    on_lag=metrics.CONSUMER_LAG.labels("decisions").set,
    max_skew_s=settings.catchup_max_skew_s,
    offsets_in_state=True,  # the changelog carries each batch's next offset: two round trips fewer per commit
    client_options=kafka_options,
    consumer_options={"client_id": decisions_client_id},
)


def serve(champion: FraudModel) -> None:
    """Swap the scorer's model (between batches: one assignment on the event loop) and say so in /metrics."""
    metrics.MODEL_INFO.clear()
    metrics.MODEL_INFO.labels(champion.version).set(1)
    metrics.LABELS_LEARNED.set(champion.labels_learned)
    scorer.model = champion


follower = ModelFollower(
    bootstrap_servers=settings.bootstrap_servers,
    models_topic=settings.models_topic,
    events_topic=settings.model_events_topic,
    key=signing_key(settings),
    on_champion=serve,
    client_options=kafka_options,
)
trainer = Trainer(settings, follower, signing_key(settings), client_options=kafka_options)


@faust_app.service
class DecisionPath(Service):
    """The terminal feed, the model follower, the decision loop and the trainer, started and stopped with the app."""

    async def on_started(self) -> None:
        quiet_kafka_client()
        # Modules, classes, functions and the loaded model live as long as the process: out of the collector's
        # reach, a full collection walks only what the loops create (it walked ~150,000 objects: 70-200 ms
        # pauses of every decision in flight, the p99 of the decision path).
        gc.collect()
        gc.freeze()
        if not settings.model_signing_key:
            log.warning("MODEL_SIGNING_KEY is not set: model snapshots are signed with the development key")
        self._loops = [
            asyncio.ensure_future(feed.run()),
            asyncio.ensure_future(follower.run()),
            asyncio.ensure_future(self._decide()),
            asyncio.ensure_future(trainer.run()),
        ]
        self._grpc: GrpcServer | None = None
        if settings.grpc_port:
            grpc_server = GrpcServer(serving, settings.web_bind, settings.grpc_port, is_ready)
            try:
                await grpc_server.start()
            except RuntimeError as exc:  # the port is taken: the decision path goes on, REST still answers
                log.error("gRPC server not started on port %s: %s", settings.grpc_port, exc)
            else:
                self._grpc = grpc_server

    async def _decide(self) -> None:
        await feed.caught_up.wait()  # the delayed terminal windows need everything committed before now
        await follower.caught_up.wait()  # a restarted worker scores with the version it scored with before
        await decisions.run()

    async def on_stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop()
        await serving.close()
        try:  # the batches in flight commit first; bounded, so SIGTERM always ends
            await asyncio.wait_for(decisions.stop(), settings.transaction_timeout_ms / 1000 + 15)
        except TimeoutError:
            log.warning("decisions did not stop in time; its open transactions are aborted by the next owner")
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        feed.save_snapshot()


def is_ready() -> bool:
    """Consuming: the terminal feed caught up, partitions assigned and restored, the broker answering."""
    return feed.caught_up.is_set() and follower.caught_up.is_set() and decisions.ready


serving = Serving(
    settings,
    scorer,
    aggregates,
    decisions,
    PartitionOwners(
        settings.bootstrap_servers,
        f"{settings.app_id}-decisions",
        settings.transactions_topic,
        client_options=kafka_options,
    ),  # fmt: skip
    is_ready,
)

from app.monitoring import monitor  # noqa: E402,F401
from app.serving import web  # noqa: E402,F401 - timers and pages register themselves on faust_app
