"""``python -m app``: create the topics, then run the Faust worker (its CLI: ``python -m app --help``)."""

from __future__ import annotations

import asyncio
import sys

from app.provisioning import ensure_topics
from app.worker import faust_app, settings


def main() -> None:
    asyncio.run(ensure_topics(settings))
    sys.argv = [sys.argv[0], "worker", "--loglevel", settings.log_level, *sys.argv[1:]]
    faust_app.main()


if __name__ == "__main__":
    main()
