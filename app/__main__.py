"""``python -m app``: the worker (topics first, then the Faust worker), or an operator command.

``python -m app`` and ``python -m app worker [Faust worker options]`` run the worker; ``python -m app --help``
lists the operator's commands (:mod:`app.ops.cli`), which never import the worker.
"""

from __future__ import annotations

import sys

from app.ops.cli import WORKER, is_worker, run


def run_worker(faust_args: list[str]) -> None:
    """Create the topics, then hand the command line to Faust's ``worker`` (``--loglevel`` from settings)."""
    import asyncio

    from app.provisioning import ensure_topics
    from app.worker import faust_app, settings  # builds the app, model and loops: only for the worker

    if "--help" not in faust_args:  # help needs no broker (Faust's -h is --web-host)
        asyncio.run(ensure_topics(settings))
    sys.argv = [sys.argv[0], "worker", "--loglevel", settings.log_level, *faust_args]
    faust_app.main()


def main() -> None:
    argv = sys.argv[1:]
    if is_worker(argv):
        run_worker(argv[1:] if argv and argv[0] == WORKER else argv)
    else:
        sys.exit(run(argv))


if __name__ == "__main__":
    main()
