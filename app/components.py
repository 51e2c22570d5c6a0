"""The composition root: every component of a worker, built from :class:`Settings` in one function, no Faust.

:func:`build` makes the terminal feed, the model follower, the rules follower, the decision loop and its scorer,
the trainer child (the trainer runs in a process of its own, :mod:`app.learning.child`), the synchronous serving and
the health window, and wires them together; :class:`Components` starts and stops their loops. :mod:`app.worker`
hands the built components to a Faust app (web server, pages, the health timer); tests build them without it.
Nothing here runs at import: no module-level singletons, no import for its side effects.

>>> from app.settings import Settings
>>> components = build(Settings(worker_id="w1"))
>>> components.scorer.model is components.serving.scorer.model, components.is_ready()
(True, False)
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from app import collector, metrics
from app.decisions.scorer import Scorer
from app.features.spec import FEATURES
from app.kafka.rule_topics import RulesFollower
from app.kafka.security import client_security_options
from app.kafka.topics import changelog_topic, terminal_checkpoint_topic, terminal_topic
from app.kafka.transactional import TransactionalLoop
from app.learning.child import TrainerChild
from app.learning.follower import ModelFollower
from app.learning.model import FraudModel
from app.logs import quiet_kafka_client
from app.monitoring.drift import DriftMonitor
from app.monitoring.health import HealthWindow
from app.monitoring.loop_lag import GcPauses, LagProbe, SlowSteps
from app.rules.ruleset import LiveRules
from app.serving.grpc_api import GrpcServer
from app.serving.routing import PartitionOwners, client_id_with_url
from app.serving.service import Serving
from app.settings import Settings, signing_key
from app.state.memory_store import MemoryStore
from app.state.rocksdb_store import RocksDBConfig, RocksDBStore
from app.state.store import Store
from app.state.terminal_feed import TerminalFeed
from app.state.terminals import TerminalAggregates

log = logging.getLogger(__name__)

CUSTOMER_STORE = "customers"  # the stores' folders under the state directory
# The features the drift monitor compares: all but the calendar's, which follow the clock (app/monitoring/drift.py).
DRIFT_FEATURES = tuple(f.name for f in FEATURES if f.kind not in ("hour_of_day", "weekend", "night"))
TERMINAL_STORE = "terminals"
DRIFT_REFERENCE_FILE = "drift-reference.json"  # in DATA_DIR: the drift monitor's reference, kept across restarts


@dataclass
class Components:
    """One worker's parts, wired: the loops run from :meth:`start` to :meth:`stop`."""

    settings: Settings
    window: HealthWindow
    aggregates: TerminalAggregates
    feed: TerminalFeed
    scorer: Scorer
    decisions: TransactionalLoop
    follower: ModelFollower
    trainer: TrainerChild  # the trainer process this worker starts (TRAINER_ENABLED), never on this event loop
    serving: Serving
    rules: RulesFollower
    drift: DriftMonitor | None = None  # the scores' and features' drift against a reference (DRIFT_*, kept in DATA_DIR)
    _loops: list[asyncio.Future[None]] = field(default_factory=list)
    _grpc: GrpcServer | None = None
    _gc_pauses: GcPauses | None = None
    _slow_steps: SlowSteps | None = None
    _gc_threshold: tuple[int, int, int] | None = None  # the collector's thresholds before start, back at stop

    def is_ready(self) -> bool:
        """Consuming: the terminal feed caught up, the model version and the rule set loaded, partitions assigned
        and restored."""
        return (self.feed.caught_up.is_set() and self.follower.caught_up.is_set() and self.rules.caught_up.is_set()
                and self.decisions.ready)  # fmt: skip

    def serve(self, champion: FraudModel) -> None:
        """Swap the scorer's model (between batches: one assignment on the event loop) and say so in /metrics."""
        metrics.MODEL_INFO.clear()
        metrics.MODEL_INFO.labels(champion.version).set(1)
        metrics.LABELS_LEARNED.set(champion.labels_learned)
        drift = self.drift
        if drift is not None and champion is not self.scorer.model:
            if not self.follower.registry.follow and champion.version != drift.model_version:
                # An operator pinned, promoted or rolled back: scores come from another line now, compare with it.
                # (A restarted worker's kept reference, made by this very version, stays.)
                drift.reset_reference(champion.version)
            elif not drift.fitted:
                drift.model_version = champion.version  # the version whose scores the reference is filling with
        self.scorer.model = champion

    def serve_rules(self, rules: LiveRules) -> None:
        """Swap the scorer's rule set and lists (between batches: one assignment on the event loop); every rule
        not disabled shows in /metrics from now on, at 0 until it matches (rate() needs the series first)."""
        for rule in rules.rule_set.rules:
            if rule.state != "disabled":
                metrics.RULE_MATCHES.labels(rule.id, rule.state)
                metrics.RULE_ERRORS.labels(rule.id)
        self.scorer.rules = rules

    async def start(self) -> None:
        """Start the terminal feed, the model and rules followers, the decision loop (once all three caught up), the
        trainer's process and gRPC."""
        quiet_kafka_client()
        # Modules, classes, functions and the loaded model live as long as the process: out of the collector's
        # reach, a full collection walks only what the loops create (it walked ~150,000 objects: 70-200 ms
        # pauses of every decision in flight, the p99 of the decision path).
        gc.collect()
        gc.freeze()
        # GC_GEN0_THRESHOLD is an operator's choice (the default, 0, keeps Python's 700, for memory at scale: at
        # 50,000 the 10x worker held 742 MiB against 470). The full collections, with the default GC_FULL_INTERVAL_S:
        # between batches when Python's allocator's blocks grew, or on a timer, not Python's rule (app/collector.py).
        s = self.settings
        self._gc_threshold = collector.configure(s.gc_gen0_threshold, s.gc_full_interval_s)
        if s.gc_full_interval_s > 0:
            full = collector.FullCollections(s.gc_full_interval_s, lambda: not self.decisions.busy())
            self._loops.append(asyncio.ensure_future(full.run()))
        self._watch_loop()
        if not self.settings.model_signing_key:
            log.warning("MODEL_SIGNING_KEY is not set: model snapshots are signed with the development key")
        self._loops += [
            asyncio.ensure_future(self.feed.run()),
            asyncio.ensure_future(self.follower.run()),
            asyncio.ensure_future(self.rules.run()),
            asyncio.ensure_future(self._decide()),
        ]
        if self.settings.trainer_enabled:
            self._loops.append(asyncio.ensure_future(self.trainer.run()))
        if self.settings.grpc_port:
            grpc_server = GrpcServer(self.serving, self.settings.web_bind, self.settings.grpc_port, self.is_ready)
            try:
                await grpc_server.start()
            except RuntimeError as exc:  # the port is taken: the decision path goes on, REST still answers
                log.error("gRPC server not started on port %s: %s", self.settings.grpc_port, exc)
            else:
                self._grpc = grpc_server

    def _watch_loop(self) -> None:
        """The event loop's lag probe, the collector's pauses and (LOOP_SLOW_STEP_MS) the slow steps' log."""
        slow_step_s = self.settings.loop_slow_step_ms / 1000.0
        self._gc_pauses = GcPauses(metrics.observe_gc_pause, log_over_s=slow_step_s)
        self._gc_pauses.install()
        if self.settings.loop_lag_interval_s > 0:
            probe = LagProbe(self.settings.loop_lag_interval_s, metrics.EVENT_LOOP_LAG.observe)
            self._loops.append(asyncio.ensure_future(probe.run()))
        if slow_step_s > 0:
            self._slow_steps = SlowSteps(slow_step_s)
            self._slow_steps.install()

    async def _decide(self) -> None:
        await self.feed.caught_up.wait()  # the delayed terminal windows need everything committed before now
        await self.follower.caught_up.wait()  # a restarted worker scores with the version it scored with before
        await self.rules.caught_up.wait()  # and decides nothing before it has the rule set every worker has
        await self.decisions.run()

    async def stop(self) -> None:
        """Commit the batches in flight and stop the trainer's process (both bounded, so SIGTERM always ends), then
        stop every loop."""
        if self._grpc is not None:
            await self._grpc.stop()
        await self.serving.close()
        await asyncio.gather(self._stop_decisions(), self.trainer.stop())
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        if self._slow_steps is not None:
            self._slow_steps.uninstall()
        if self._gc_pauses is not None:
            self._gc_pauses.uninstall()
        if self._gc_threshold is not None:
            gc.set_threshold(*self._gc_threshold)
        self.scorer.close()
        self.feed.close()

    async def _stop_decisions(self) -> None:
        try:
            await asyncio.wait_for(self.decisions.stop(), self.settings.transaction_timeout_ms / 1000 + 15)
        except TimeoutError:
            log.warning("decisions did not stop in time; its open transactions are aborted by the next owner")


def state_store(name: str, settings: Settings, rocksdb: RocksDBConfig | None) -> Store:
    """A local store under the state directory: RocksDB with the worker's one :class:`RocksDBConfig` (so one block
    cache and one write-buffer budget for all its stores), or memory (``STATE_BACKEND=memory``, tests)."""
    if settings.state_backend == "rocksdb" and rocksdb is not None:
        return RocksDBStore.from_settings(name, settings, rocksdb)
    if settings.state_backend == "memory":
        return MemoryStore(name)
    raise ValueError(f"STATE_BACKEND must be rocksdb or memory, not {settings.state_backend!r}")


def build(settings: Settings) -> Components:
    """Every component of one worker, from its settings; nothing connects until :meth:`Components.start`."""
    kafka_options = client_security_options(settings)  # TLS and SASL of every client below
    # Until the follower loads the promoted version (none yet in a new deployment): the configured model's prior.
    model = FraudModel(settings.model_name, prior_fraud_rate=settings.prior_fraud_rate)
    metrics.MODEL_INFO.labels(model.version).set(1)
    window = HealthWindow(settings.health_window_s, time.monotonic())
    rocksdb = RocksDBConfig.from_settings(settings) if settings.state_backend == "rocksdb" else None
    aggregates = TerminalAggregates(
        settings.terminal_delay_days, settings.lateness_s, settings.terminal_ttl_s,
        cache_size=settings.state_terminal_cache,
        packed_cache_bytes=int(settings.state_terminal_packed_mb * 2**20),
    )  # fmt: skip
    scorer: Scorer
    feed = TerminalFeed(
        aggregates,
        state_store(TERMINAL_STORE, settings, rocksdb),
        bootstrap_servers=settings.bootstrap_servers,
        terminal_topic=terminal_topic(settings),
        labels_topic=settings.labels_topic,
        checkpoint_topic=terminal_checkpoint_topic(settings),
        checkpoint_transactional_id=f"{settings.app_id}-terminal-checkpoint",
        checkpoint_interval_s=settings.terminal_checkpoint_interval_s,
        sweep_interval_s=settings.features_sweep_interval_s,
        max_message_bytes=settings.max_message_bytes,
        transaction_timeout_ms=settings.transaction_timeout_ms,
        is_checkpoint_writer=lambda: 0 in scorer.partitions,  # one writer: the holder of input partition 0
        client_options=kafka_options,
    )
    drift = None
    if settings.drift_sample_every > 0:
        drift = DriftMonitor(DRIFT_FEATURES, sample_every=settings.drift_sample_every,
                             reference_rows=settings.drift_reference_rows, window_rows=settings.drift_window_rows,
                             alert_threshold=settings.decision_threshold, skip_rows=settings.drift_skip_rows,
                             reference_path=Path(settings.data_dir) / DRIFT_REFERENCE_FILE,
                             model_version=model.version)  # fmt: skip
        if drift.read_kept_reference():
            log.info("drift reference of model %s read back from %s", drift.model_version, drift.reference_path)
    scorer = Scorer(
        settings,
        model,
        aggregates,
        window,
        store=state_store(CUSTOMER_STORE, settings, rocksdb),
        changelog_topic=changelog_topic(settings),
        terminal_topic=terminal_topic(settings),
        client_options=kafka_options,
        terminals_ready=feed.reach_committed_end,
        drift=drift,
    )
    # Other workers find this one in the group's description by the URL in its client id (app/serving/routing.py).
    decisions_name = f"{settings.app_id}-decisions-{settings.worker_id}"
    decisions = TransactionalLoop(
        name="decisions",
        bootstrap_servers=settings.bootstrap_servers,
        topics=[settings.transactions_topic],
        group_id=f"{settings.app_id}-decisions",
        instance_id=decisions_name,
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
        compression=settings.output_compression,
        consumer_options={"client_id": client_id_with_url(decisions_name, settings.web_advertised_url)},
    )
    components: Components
    follower = ModelFollower(
        bootstrap_servers=settings.bootstrap_servers,
        models_topic=settings.models_topic,
        events_topic=settings.model_events_topic,
        key=signing_key(settings),
        on_champion=lambda champion: components.serve(champion),
        client_options=kafka_options,
    )
    rules = RulesFollower(
        bootstrap_servers=settings.bootstrap_servers,
        rules_topic=settings.rules_topic,
        lists_topic=settings.rule_lists_topic,
        on_rules=lambda live: components.serve_rules(live),
        client_options=kafka_options,
    )
    trainer = TrainerChild(settings)
    owners = PartitionOwners(
        settings.bootstrap_servers,
        f"{settings.app_id}-decisions",
        settings.transactions_topic,
        client_options=kafka_options,
    )
    serving = Serving(settings, scorer, aggregates, decisions, owners, lambda: components.is_ready())
    components = Components(settings, window, aggregates, feed, scorer, decisions, follower, trainer, serving, rules,
                            drift)  # fmt: skip
    return components
