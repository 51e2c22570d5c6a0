"""The trainer process (``python -m app trainer``): learning alone, on its own event loop and core.

:func:`build_trainer` makes its parts from :class:`Settings` (the composition root of this process, no module-level
singleton): a :class:`ModelFollower` (warm starts to adopt, the registry's champion) and the :class:`Trainer`, which
competes for ``<APP_ID>-trainer-lease`` as before: of several trainer processes one trains, the others stand by and
take over within the session timeout. :meth:`TrainerProcess.run` serves, on ``TRAINER_WEB_PORT``:

- ``/metrics``: :data:`app.metrics.TRAINER_REGISTRY` alone (a worker appends it to its own ``/metrics``);
- ``/ready``: 200 once it holds the lease and restored its state, or stands by with the lease's group joined;
- ``/status``: JSON: ``role`` (active or standby), ``pending``, ``champion_version``, ``pid``, the labels' dead
  letters by code, both lines' error detectors (``error_drift``), the gbdt lines' windows (``windows``: rows held,
  labels added, and with ``?digest=1`` a hash of what the next retrain learns from: a new owner's equals its
  predecessor's).

A worker with ``TRAINER_ENABLED=true`` starts one as its child (:mod:`app.learning.child`); a deployment can run it
alone instead. SIGTERM ends it cleanly: the training session is cancelled (an open transaction aborted), its
clients closed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from app import metrics
from app.kafka.security import client_security_options
from app.learning.follower import ModelFollower
from app.learning.trainer import Trainer
from app.learning.training import Training
from app.logs import quiet_kafka_client
from app.serialization import dumps
from app.settings import Settings, signing_key

log = logging.getLogger(__name__)

DEFAULT_WEB_PORT = 6068  # a trainer started alone with TRAINER_WEB_PORT unset (a worker's child gets a free port)
PARENT_CHECK_S = 1.0


@dataclass
class TrainerProcess:
    """The parts of one trainer process, wired; :meth:`run` serves them until ``stop`` is set."""

    settings: Settings
    follower: ModelFollower
    trainer: Trainer
    web_port: int
    web_bind: str

    def is_ready(self) -> bool:
        """Active and restored (its state read, learning), or standing by with the lease's group joined."""
        if self.trainer.active:
            return self.trainer.training is not None
        return self.trainer.lease.connected

    def status(self, digest: bool = False) -> dict[str, Any]:
        """``digest``: hash the gbdt windows' rows too (about 10 ms for a full default window: asked, not polled)."""
        training = self.trainer.training
        return {
            "role": "active" if self.trainer.active else "standby",
            "ready": self.is_ready(),
            "restored": training is not None,
            "pending": training.pending() if training is not None else None,
            "labels_seen": training.labels_seen if training is not None else None,
            "champion_version": training.champion_version if training is not None else self.follower.registry.champion,
            # the error detectors of both lines (app/learning/training.py RollingQuality): a rise is the model worsening
            "error_drift": {role: training.quality[role].error_summary() for role in ("champion", "challenger")}
            if training is not None
            else None,
            "windows": _windows(training, digest) if training is not None else None,
            "pid": os.getpid(),
            "worker": self.settings.worker_id,
            "dead_letters": {
                key[1]: value for key, value in metrics.counts(metrics.LABEL_DEAD_LETTERS).items() if value > 0
            },
        }

    def web_app(self) -> web.Application:
        async def metrics_page(request: web.Request) -> web.Response:
            body, content_type = metrics.trainer_exposition()
            return web.Response(body=body, headers={"Content-Type": content_type})

        async def ready_page(request: web.Request) -> web.Response:
            ok = self.is_ready()
            body = {"ready": ok, "role": "active" if self.trainer.active else "standby", "pid": os.getpid()}
            return _json(body, 200 if ok else 503)

        async def status_page(request: web.Request) -> web.Response:
            return _json(self.status(digest=request.query.get("digest") == "1"), 200)

        application = web.Application()
        application.router.add_get("/metrics", metrics_page)
        application.router.add_get("/ready", ready_page)
        application.router.add_get("/status", status_page)
        return application

    async def run(self, stop: asyncio.Event, parent_alive: Callable[[], bool] = lambda: True) -> None:
        """Serve the pages, follow the models and compete for the lease until ``stop`` is set (SIGTERM) or the parent
        is gone; then end the trainer's session (its open transaction aborted) and close every client."""
        quiet_kafka_client()
        gc.collect()
        gc.freeze()  # as in the worker: full collections walk only what the loops create
        if not self.settings.model_signing_key:
            log.warning("MODEL_SIGNING_KEY is not set: model snapshots are signed with the development key")
        runner = web.AppRunner(self.web_app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.web_bind, self.web_port).start()
        log.info("trainer process %d: /metrics, /ready and /status on %s:%d", os.getpid(), self.web_bind,
                 self.web_port)  # fmt: skip
        loops = [asyncio.ensure_future(self.follower.run()), asyncio.ensure_future(self.trainer.run())]
        try:
            while not stop.is_set():
                if not parent_alive():
                    log.warning("trainer process %d: the worker that started it is gone; stopping", os.getpid())
                    break
                if any(task.done() for task in loops):  # a loop ended on its own: an error, not a stop
                    break
                try:
                    await asyncio.wait_for(stop.wait(), PARENT_CHECK_S)
                except TimeoutError:
                    pass
        finally:
            started = time.monotonic()
            for task in reversed(loops):  # the trainer first: its session ends, then the follower it waits on
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            await runner.cleanup()
            log.info("trainer process %d stopped in %.1f s", os.getpid(), time.monotonic() - started)
        for task in loops:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]


def _windows(training: Training, digest: bool) -> dict[str, dict[str, Any]]:
    """Each gbdt line's window by role: its id, rows held, labels added (and the rows' hash with ``digest``)."""
    found: dict[str, dict[str, Any]] = {}
    for role, model in (("champion", training.champion), ("challenger", training.challenger)):
        window = model.label_window if model is not None else None
        if window is not None:
            found[role] = {"id": window.id, "held": len(window), "added": window.clock}
            if digest:
                found[role]["digest"] = window.digest()
    return found


def _json(body: dict[str, Any], status: int) -> web.Response:
    return web.Response(body=dumps(body), status=status, headers={"Content-Type": "application/json"})


def build_trainer(settings: Settings) -> TrainerProcess:
    """Every part of one trainer process, from its settings; nothing connects until :meth:`TrainerProcess.run`."""
    kafka_options = client_security_options(settings)
    follower = ModelFollower(
        bootstrap_servers=settings.bootstrap_servers,
        models_topic=settings.models_topic,
        events_topic=settings.model_events_topic,
        key=signing_key(settings),
        on_champion=lambda champion: None,  # nothing scores here: the trainer reads the registry and warm starts
        client_options=kafka_options,
    )
    trainer = Trainer(settings, follower, signing_key(settings), client_options=kafka_options)
    return TrainerProcess(
        settings,
        follower,
        trainer,
        web_port=settings.trainer_web_port or DEFAULT_WEB_PORT,
        web_bind=settings.trainer_web_bind or settings.web_bind,
    )


def lower_priority(nice: int) -> None:
    """Learning waits where the decisions need the cores: the process's nice value up by ``nice``. Called once the
    trainer first trains (:attr:`app.learning.trainer.Trainer.on_active`), not at its start: a takeover's restore
    is what the 15 s target times, and at a low priority beside a busy worker it waited for the cores (30 s of a
    40 s takeover in the full labelled fault run). A nice value only goes up: a later takeover by the same process
    restores at the low priority. (A session of its own with its autogroup's nice value raised too was tried: the
    worker's throughput in ``scripts/benchmark.py`` fell by 14 % beside it: BENCHMARKS.md.)"""
    os.nice(nice)


def main(settings: Settings, parent_pid: int | None = None) -> int:
    """Run one trainer process until SIGTERM or SIGINT (or, for a worker's child, until the worker is gone)."""

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        process = build_trainer(settings)
        if settings.trainer_nice:
            process.trainer.on_active = lambda: lower_priority(settings.trainer_nice)
        await process.run(stop, parent_alive=lambda: parent_pid is None or os.getppid() == parent_pid)

    asyncio.run(serve())
    return 0
