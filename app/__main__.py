"""``python -m app``: check the Kafka credentials, create the topics, then run the Faust worker (its CLI:
``python -m app --help``).

A configuration error (an invalid setting, credentials the broker refuses, a broker certificate we do not trust)
ends the process with one log line and exit status 78 (``EX_CONFIG``): restarting cannot fix it, and a
supervisor shows the status and the line. A broker that does not answer is an outage: the clients retry.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import NoReturn

from app.kafka_security import KafkaSecurityError, check_credentials
from app.settings import load

log = logging.getLogger("app")

EXIT_CONFIG = getattr(os, "EX_CONFIG", 78)


def _config_error(message: str) -> NoReturn:
    logging.basicConfig(format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
    log.error("configuration error, not starting: %s", message)
    sys.exit(EXIT_CONFIG)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "models":  # model versions, without starting a worker
        from app.model_commands import main as models_main

        sys.exit(models_main(sys.argv[2:]))
    try:
        settings = load()
    except ValueError as exc:
        _config_error(str(exc))
    try:
        asyncio.run(check_credentials(settings))
    except KafkaSecurityError as exc:
        _config_error(str(exc))

    from app.provisioning import ensure_topics
    from app.worker import faust_app

    asyncio.run(ensure_topics(settings))
    sys.argv = [sys.argv[0], "worker", "--loglevel", settings.log_level, *sys.argv[1:]]
    faust_app.main()


if __name__ == "__main__":
    main()
