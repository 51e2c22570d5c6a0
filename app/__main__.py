"""``python -m app``: the worker (credentials checked, topics created, then the Faust worker), or an operator command.

``python -m app`` and ``python -m app worker [Faust worker options]`` run the worker; ``python -m app trainer`` runs
the trainer process alone (:mod:`app.learning.process`; a worker with ``TRAINER_ENABLED=true`` starts one as its
child); ``python -m app --help`` lists the operator's commands (:mod:`app.ops.cli`, ``models`` among them), which
never import the worker.

A configuration error (an invalid setting, credentials the broker refuses, a broker certificate we do not trust)
ends the worker (or the trainer process) with one log line and exit status 78 (``EX_CONFIG``): restarting cannot
fix it, and a supervisor shows the status and the line. A broker that does not answer is an outage: the clients retry.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn

from aiokafka.errors import KafkaConnectionError, NodeNotReadyError, RequestTimedOutError

from app import allocator
from app.ops.cli import TRAINER, WORKER, is_worker, run
from app.settings import Settings, load

log = logging.getLogger("app")

EXIT_CONFIG = getattr(os, "EX_CONFIG", 78)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_PID_ENV = "TRAINER_PARENT_PID"  # set by the worker that starts a trainer child (app/learning/child.py)


def _config_error(message: str) -> NoReturn:
    logging.basicConfig(format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
    log.error("configuration error, not starting: %s", message)
    sys.exit(EXIT_CONFIG)


async def wait_for_topics(
    settings: Settings, ensure: Callable[[Settings], Awaitable[object]], max_backoff_s: float = 5.0
) -> None:
    """Create the topics once the broker answers: a worker started during an outage waits for it (one log line
    when it starts waiting, one when the broker answers), as its loops would, instead of exiting."""
    backoff_s, waiting_since = 0.25, 0.0
    while True:
        try:
            await ensure(settings)
        except (KafkaConnectionError, NodeNotReadyError, RequestTimedOutError, OSError, TimeoutError) as exc:
            if not waiting_since:
                waiting_since = time.monotonic()
                log.warning("Kafka at %s does not answer (%r): waiting for it", settings.bootstrap_servers, exc)
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, max_backoff_s)
            continue
        if waiting_since:
            log.info("Kafka answers after %.1f s: topics checked", time.monotonic() - waiting_since)
        return


def die_with_parent(parent_pid: int) -> None:
    """A worker's child is SIGKILLed by the kernel when the worker dies, however it dies (``PR_SET_PDEATHSIG``;
    Linux only), and ends now if the worker died before the request took effect (it then has another parent)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    except (OSError, AttributeError) as exc:  # not Linux: the trainer's own check of its parent remains
        logging.getLogger("app").warning("the trainer will not die with its worker by signal: %r", exc)
    if os.getppid() != parent_pid:
        sys.exit(f"trainer child: the worker {parent_pid} that started it is gone")


def _log_before_faust() -> logging.Handler:
    handler = logging.StreamHandler()  # Faust configures logging later; these lines come before it
    handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def run_trainer(args: list[str]) -> None:
    """``python -m app trainer``: check the credentials, create the topics, then run only learning."""
    if args:
        sys.stderr.write("usage: python -m app trainer\n\nRuns the trainer process (settings from the environment: "
                         "TRAINER_WEB_PORT serves /metrics, /ready and /status).\n")  # fmt: skip
        sys.exit(0 if args[0] in ("-h", "--help") else 2)
    parent = os.environ.get(PARENT_PID_ENV)
    parent_pid = int(parent) if parent else None
    if parent_pid is not None:
        die_with_parent(parent_pid)
    from app.kafka.security import KafkaSecurityError, check_credentials

    try:
        settings = load()
    except ValueError as exc:
        _config_error(str(exc))
    allocator.configure(settings.memory_arena_max, settings.memory_mmap_threshold_kb * 1024)
    try:
        asyncio.run(check_credentials(settings))
    except KafkaSecurityError as exc:
        _config_error(str(exc))
    from app.kafka.topics import ensure_topics
    from app.learning.process import main as trainer_main

    logging.basicConfig(
        format="[%(asctime)s] [%(process)d] [%(levelname)s] [trainer] %(name)s: %(message)s",
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
    )
    asyncio.run(wait_for_topics(settings, ensure_topics))
    from app.kafka.topics import RetentionTooShort, check_predictions_retention

    try:
        asyncio.run(check_predictions_retention(settings))
    except RetentionTooShort as exc:
        _config_error(str(exc))
    sys.exit(trainer_main(settings, parent_pid))


def run_worker(faust_args: list[str]) -> None:
    """Check the credentials, create the topics, then hand the command line to Faust's ``worker``."""
    from app.kafka.security import KafkaSecurityError, check_credentials  # faust: only for the worker

    try:
        settings = load()
    except ValueError as exc:
        _config_error(str(exc))
    # before the first thread (the clients', RocksDB's)
    allocator.configure(settings.memory_arena_max, settings.memory_mmap_threshold_kb * 1024)
    if "--help" not in faust_args:  # help needs no broker (Faust's -h is --web-host)
        try:
            asyncio.run(check_credentials(settings))
        except KafkaSecurityError as exc:
            _config_error(str(exc))
    from app.kafka.topics import ensure_topics
    from app.worker import main as worker_main  # faust: only for the worker

    if "--help" not in faust_args:
        handler = _log_before_faust()
        try:
            asyncio.run(wait_for_topics(settings, ensure_topics))
        finally:
            log.removeHandler(handler)
            log.setLevel(logging.NOTSET)
    worker_main(settings, ["worker", "--loglevel", settings.log_level, *faust_args])


def main() -> None:
    argv = sys.argv[1:]
    if argv and argv[0] == TRAINER:
        run_trainer(argv[1:])
    elif is_worker(argv):
        run_worker(argv[1:] if argv and argv[0] == WORKER else argv)
    else:
        sys.exit(run(argv))


if __name__ == "__main__":
    main()
