"""``python -m app``: create the topics, then run the Faust worker (its CLI: ``python -m app --help``).

``python -m app models ...`` manages model versions (:mod:`app.model_commands`) without starting a worker.
"""

from __future__ import annotations

import asyncio
import sys


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "models":
        from app.model_commands import main as models_main

        sys.exit(models_main(sys.argv[2:]))
    from app.provisioning import ensure_topics
    from app.worker import faust_app, settings

    asyncio.run(ensure_topics(settings))
    sys.argv = [sys.argv[0], "worker", "--loglevel", settings.log_level, *sys.argv[1:]]
    faust_app.main()


if __name__ == "__main__":
    main()
