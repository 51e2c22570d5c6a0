"""``python -m app``: the worker (credentials checked, topics created, then the Faust worker), or an operator command.

``python -m app`` and ``python -m app worker [Faust worker options]`` run the worker; ``python -m app --help``
lists the operator's commands (:mod:`app.ops.cli`, ``models`` among them), which never import the worker.

A configuration error (an invalid setting, credentials the broker refuses, a broker certificate we do not trust)
ends the worker with one log line and exit status 78 (``EX_CONFIG``): restarting cannot fix it, and a supervisor
shows the status and the line. A broker that does not answer is an outage: the clients retry.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn

from aiokafka.errors import KafkaConnectionError, NodeNotReadyError, RequestTimedOutError

from app.ops.cli import WORKER, is_worker, run
from app.settings import Settings, load

log = logging.getLogger("app")

EXIT_CONFIG = getattr(os, "EX_CONFIG", 78)


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


def run_worker(faust_args: list[str]) -> None:
    """Check the credentials, create the topics, then hand the command line to Faust's ``worker``."""
    from app.kafka.security import KafkaSecurityError, check_credentials  # faust: only for the worker

    try:
        settings = load()
    except ValueError as exc:
        _config_error(str(exc))
    if "--help" not in faust_args:  # help needs no broker (Faust's -h is --web-host)
        try:
            asyncio.run(check_credentials(settings))
        except KafkaSecurityError as exc:
            _config_error(str(exc))
    from app.kafka.topics import ensure_topics
    from app.worker import main as worker_main  # faust: only for the worker

    if "--help" not in faust_args:
        handler = logging.StreamHandler()  # Faust configures logging later; these lines come before it
        handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        try:
            asyncio.run(wait_for_topics(settings, ensure_topics))
        finally:
            log.removeHandler(handler)
            log.setLevel(logging.NOTSET)
    worker_main(settings, ["worker", "--loglevel", settings.log_level, *faust_args])


def main() -> None:
    argv = sys.argv[1:]
    if is_worker(argv):
        run_worker(argv[1:] if argv and argv[0] == WORKER else argv)
    else:
        sys.exit(run(argv))


if __name__ == "__main__":
    main()
