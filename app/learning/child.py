"""A worker's trainer child: ``python -m app trainer`` started, watched, restarted and stopped by the worker.

The trainer never runs on the worker's event loop (it took the decision path's core: a p99 3.9 times the
exactly-once floor at 1,000 tx/s). With ``TRAINER_ENABLED=true`` the worker runs :meth:`TrainerChild.run`: it starts
the child with the worker's environment plus ``TRAINER_WEB_PORT`` (a free localhost port unless set) and
``TRAINER_PARENT_PID`` (the child dies with the worker: ``PR_SET_PDEATHSIG``, see :mod:`app.__main__`), asks its
``/status`` once a second (``fraud_trainer_process_up``, the health events' ``trainer``; a live child that misses
polls counts as up for ``STALE_STATUS_S``) and restarts it with backoff
when it exits. :meth:`TrainerChild.stop` sends SIGTERM, then SIGKILL after ``stop_timeout_s``. The worker's
``/metrics`` appends :meth:`TrainerChild.families`, fetched from the child's ``/metrics`` with a short timeout
(the last ones fetched, up to a minute old, when it does not answer in time).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from prometheus_client.metrics_core import Metric

from app import metrics
from app.serialization import loads
from app.settings import Settings

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 1.0
FETCH_TIMEOUT_S = 1.0  # a paused or stuck child costs a scrape of the worker at most this
STALE_FAMILIES_S = 60.0  # how long a busy child's last metric families stand in for the ones it did not give
STALE_STATUS_S = 10.0  # how long a child that misses its polls (busy, not gone) still counts as up
STOP_TIMEOUT_S = 10.0  # SIGTERM to SIGKILL
INITIAL_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
STEADY_S = 60.0  # a child that ran this long before it exited restarts without waiting


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def child_env(settings: Settings, environ: Mapping[str, str], port: int, parent_pid: int) -> dict[str, str]:
    """The worker's environment plus what the child needs to be found and to die with its parent.

    >>> from app.settings import Settings
    >>> env = child_env(Settings(), {"APP_ID": "a"}, 7001, 42)
    >>> env["APP_ID"], env["TRAINER_WEB_PORT"], env["TRAINER_WEB_BIND"], env["TRAINER_PARENT_PID"]
    ('a', '7001', '127.0.0.1', '42')
    """
    return {
        **environ,
        "TRAINER_WEB_PORT": str(port),
        "TRAINER_WEB_BIND": settings.trainer_web_bind or "127.0.0.1",
        "TRAINER_PARENT_PID": str(parent_pid),
    }


class TrainerChild:
    """The worker's trainer process; its last ``/status`` answer stands for it in the health events and the page."""

    def __init__(
        self,
        settings: Settings,
        command: Sequence[str] = (sys.executable, "-m", "app", "trainer"),
        *,
        stop_timeout_s: float = STOP_TIMEOUT_S,
        poll_interval_s: float = POLL_INTERVAL_S,
    ) -> None:
        self.settings = settings
        self.command = list(command)
        self.stop_timeout_s = stop_timeout_s
        self.poll_interval_s = poll_interval_s
        self.process: asyncio.subprocess.Process | None = None
        self.port: int | None = None
        self.status: dict[str, Any] | None = None  # the last /status answer, None while it does not answer
        self.starts = 0
        self._stopping = False
        self._session: aiohttp.ClientSession | None = None
        self._last_families: tuple[int, float, list[Metric]] | None = None  # pid, when, the families
        self._status_seen: tuple[int, float] | None = None  # pid, when its /status last answered

    @property
    def pid(self) -> int | None:
        process = self.process
        return process.pid if process is not None and process.returncode is None else None

    @property
    def up(self) -> bool:
        return self.status is not None

    @property
    def active(self) -> bool:
        """The child answers and holds the trainer lease."""
        return self.status is not None and self.status.get("role") == "active"

    def summary(self) -> dict[str, Any]:
        """What the health events and the operator page say of the child."""
        status = self.status or {}
        return {
            "enabled": self.settings.trainer_enabled,
            "up": self.up,
            "pid": self.pid,
            "port": self.port,
            "starts": self.starts,
            "role": status.get("role"),
            "pending": status.get("pending"),
            "champion_version": status.get("champion_version"),
        }

    def dead_letters(self) -> dict[tuple[str, ...], float]:
        """The labels' dead letters by code, as the child last said (``metrics.counts`` keys)."""
        found = (self.status or {}).get("dead_letters") or {}
        return {("labels", str(code)): float(count) for code, count in found.items()}

    # ---- the process -------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Start the child and start it again, after a backoff, each time it exits, until :meth:`stop`."""
        backoff_s = INITIAL_BACKOFF_S
        try:
            while not self._stopping:
                started = time.monotonic()
                try:
                    process = await self._spawn()
                except OSError as exc:  # no interpreter, no free port, too many processes: try again later
                    log.error("trainer process not started: %r; trying again in %.1f s", exc, backoff_s)
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(MAX_BACKOFF_S, backoff_s * 2)
                    continue
                poll = asyncio.ensure_future(self._poll())
                try:
                    code = await process.wait()
                finally:
                    poll.cancel()
                    await asyncio.gather(poll, return_exceptions=True)
                    self._set_status(None)
                if self._stopping:
                    return
                ran_s = time.monotonic() - started
                if ran_s >= STEADY_S:
                    backoff_s = INITIAL_BACKOFF_S
                log.warning("trainer process %d exited with %s after %.1f s: starting another in %.1f s",
                            process.pid, code, ran_s, backoff_s)  # fmt: skip
                await asyncio.sleep(backoff_s)
                backoff_s = min(MAX_BACKOFF_S, backoff_s * 2)
        finally:
            process_left = self.process
            if process_left is not None and process_left.returncode is None:  # cancelled without stop(): no orphan
                process_left.kill()
                await process_left.wait()
            if self._session is not None:
                await self._session.close()
                self._session = None

    async def _spawn(self) -> asyncio.subprocess.Process:
        self.port = self.settings.trainer_web_port or free_port()
        env = child_env(self.settings, os.environ, self.port, os.getpid())
        self.process = await asyncio.create_subprocess_exec(*self.command, env=env)
        self.starts += 1
        log.info("trainer process %d started (web port %d)", self.process.pid, self.port)
        return self.process

    async def stop(self) -> None:
        """SIGTERM (the trainer aborts or commits its open transaction), then SIGKILL after ``stop_timeout_s``."""
        self._stopping = True
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self.stop_timeout_s)
        except TimeoutError:
            log.warning("trainer process %d did not stop in %.0f s: SIGKILL", process.pid, self.stop_timeout_s)
            process.kill()
            await process.wait()
        log.info("trainer process %d stopped (exit %s)", process.pid, process.returncode)

    # ---- its pages ---------------------------------------------------------------------------------------------

    def _set_status(self, status: dict[str, Any] | None) -> None:
        self.status = status
        metrics.TRAINER_PROCESS_UP.set(1 if status is not None else 0)

    async def _get(self, path: str) -> bytes | None:
        if self.port is None or self.pid is None:
            return None
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S))
        try:
            async with self._session.get(f"http://127.0.0.1:{self.port}{path}") as response:
                if response.status != 200:
                    return None
                return await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None

    async def _poll(self) -> None:
        """Ask ``/status`` once per interval. A live child that misses polls (busy reading its inputs to the end on
        a loaded host) keeps its last answer up to ``STALE_STATUS_S``: one slow answer is not a trainer down."""
        while True:
            pid = self.pid
            raw = await self._get("/status")
            status = None
            if raw is not None:
                try:
                    status = loads(raw)
                except ValueError:
                    status = None
            now = time.monotonic()
            if isinstance(status, dict):
                self._status_seen = (pid, now) if pid is not None else None
                self._set_status(status)
            else:
                seen = self._status_seen
                if seen is None or seen[0] != pid or pid is None or now - seen[1] > STALE_STATUS_S:
                    self._set_status(None)
            await asyncio.sleep(self.poll_interval_s)

    async def families(self) -> list[Metric]:
        """The child's metric families for the worker's ``/metrics``. A child too busy to answer within the fetch's
        timeout gives the families it last gave, up to ``STALE_FAMILIES_S`` old and from the same process: a scrape
        that dropped its counters would read to Prometheus as their reset. None once it is gone."""
        pid = self.pid
        if pid is None:
            self._last_families = None
            return []
        raw = await self._get("/metrics")
        now = time.monotonic()
        if raw is not None:
            families = metrics.parse_exposition(raw.decode())
            self._last_families = (pid, now, families)
            return families
        last = self._last_families
        if last is not None and last[0] == pid and now - last[1] <= STALE_FAMILIES_S:
            return last[2]
        return []
