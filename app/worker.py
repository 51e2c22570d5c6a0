"""The Faust app: lifecycle, web server, timers and CLI; the Kafka-heavy loops run inside it as one service.

Run it with ``python -m app`` (which creates the topics first). Roles, each in its own module:
- :mod:`app.decisions` scores ``transactions`` (the decision path, one batched transactional hop);
- :mod:`app.terminal_feed` keeps the terminal aggregates every scorer reads (off the path);
- :mod:`app.learner` joins labels to the features as scored and teaches the model (off the path);
- :mod:`app.monitor` publishes health events and checkpoints the model; :mod:`app.web` serves the pages.
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
from app.decisions import Scorer
from app.health import HealthWindow
from app.kafka_security import client_security_options, faust_credentials
from app.learner import Learner
from app.logs import quiet_kafka_client
from app.model import FraudModel, load_model, save_model
from app.provisioning import changelog_topic, terminal_topic
from app.settings import load
from app.terminal_aggregates import TerminalAggregates
from app.terminal_feed import TerminalFeed
from app.transactional import TransactionalLoop, set_fetch_pause

log = logging.getLogger(__name__)

settings = load()

set_fetch_pause(settings.fetch_pause_ms)


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

MODEL_PATH = Path(settings.data_dir) / "model.pkl"


def initial_model() -> FraudModel:
    """The checkpoint when it holds the configured model; a fresh one of that model when ``MODEL_NAME`` changed."""
    restored = load_model(MODEL_PATH)
    if restored is not None and restored.name != settings.model_name:
        log.warning("checkpoint %s holds model %r but MODEL_NAME is %r: starting the configured model afresh",
                    MODEL_PATH, restored.name, settings.model_name)  # fmt: skip
        restored = None
    return restored or FraudModel(settings.model_name, prior_fraud_rate=settings.prior_fraud_rate)


model = initial_model()
metrics.LABELS_LEARNED.set(model.labels_learned)
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
    max_skew_s=settings.catchup_max_skew_s,
    offsets_in_state=True,  # the changelog carries each batch's next offset: two round trips fewer per commit
    client_options=kafka_options,
)
learning = TransactionalLoop(
    name="learning",
    bootstrap_servers=settings.bootstrap_servers,
    topics=[settings.predictions_topic, settings.labels_topic],
    group_id=f"{settings.app_id}-learning",
    instance_id=f"{settings.app_id}-learning-{settings.worker_id}",
    handler=Learner(settings, model),
    max_records=100,  # learning runs between decision batches: short slices keep their latency low
    # Fewer, larger fetches of the feature log: it is not on the decision path, and every fetch response costs the
    # event loop the decisions run on.
    consumer_options={"fetch_min_bytes": 256 * 1024, "fetch_max_wait_ms": 500},
    linger_ms=settings.producer_linger_ms,
    session_timeout_ms=settings.session_timeout_ms,
    transaction_timeout_ms=settings.transaction_timeout_ms,
    client_options=kafka_options,
)


@faust_app.service
class DecisionPath(Service):
    """The terminal feed, the decision loop and the learning loop, started and stopped with the app."""

    async def on_started(self) -> None:
        quiet_kafka_client()
        # Modules, classes, functions and the loaded model live as long as the process: out of the collector's
        # reach, a full collection walks only what the loops create (it walked ~150,000 objects: 70-200 ms
        # pauses of every decision in flight, the p99 of the decision path).
        gc.collect()
        gc.freeze()
        self._loops = [
            asyncio.ensure_future(feed.run()),
            asyncio.ensure_future(self._decide()),
            asyncio.ensure_future(learning.run()),
        ]

    async def _decide(self) -> None:
        await feed.caught_up.wait()  # the delayed terminal windows need everything committed before now
        await decisions.run()

    async def on_stop(self) -> None:
        for loop in (decisions, learning):  # the batches in flight commit first; bounded, so SIGTERM always ends
            try:
                await asyncio.wait_for(loop.stop(), settings.transaction_timeout_ms / 1000 + 15)
            except TimeoutError:
                log.warning("%s did not stop in time; its open transactions are aborted by the next owner", loop.name)
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        feed.save_snapshot()
        save_model(model, MODEL_PATH)


def is_ready() -> bool:
    """Consuming: the terminal feed caught up, partitions assigned and restored, the broker answering."""
    return feed.caught_up.is_set() and decisions.ready


from app import monitor, web  # noqa: E402,F401 - timers and pages register themselves on faust_app
