"""The command line of ``python -m app``: the worker (the default) and the operator's commands.

Adding a command group: write a module with ``register(commands)`` that calls ``commands.add_parser(...)``
(nested groups add their own subparsers, see :mod:`app.ops.dead_letters`) and sets ``run``, an
``async def run(args, settings) -> int`` exit code, as the parser's default; then list the module in
:data:`COMMAND_MODULES`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from app.ops import dead_letters, drift, lag, models, rules, tailing
from app.ops.broker import BrokerUnavailable, UnknownTopic
from app.ops.dead_letters import ReplayRefused
from app.settings import load

COMMAND_MODULES = (tailing, dead_letters, lag, models, rules, drift)

WORKER = "worker"
TRAINER = "trainer"
EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 0, 1, 2, 130


def is_worker(argv: Sequence[str]) -> bool:
    """``python -m app`` alone, ``python -m app worker ...`` or options only (Faust worker options, as before).

    >>> is_worker([]), is_worker(["worker", "--web-port", "1"]), is_worker(["--web-port", "1"]), is_worker(["lag"])
    (True, True, True, False)
    >>> is_worker(["--help"])
    False
    """
    if not argv or argv[0] == WORKER:
        return True
    return argv[0].startswith("-") and argv[0] not in ("-h", "--help")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m app",
        description="The fraud detector. Without a command it runs the worker. Settings come from the "
        "environment (app/settings.py: KAFKA_BOOTSTRAP_SERVERS, APP_ID, the topic names, ...).",
        epilog="'python -m app COMMAND --help' for each command's options. Exit codes: 0 ok, 1 refused "
        "(e.g. a replay with invalid messages, an unknown topic), 2 broker unreachable or bad usage, 130 interrupted.",
    )
    commands = top.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        WORKER,
        help="run the worker (the default): create the topics, then the Faust worker; "
        "'python -m app worker --help' lists Faust's worker options",
        add_help=False,
    )
    commands.add_parser(
        TRAINER,
        help="run the trainer process alone (learning only; TRAINER_WEB_PORT serves /metrics, /ready, /status); "
        "a worker with TRAINER_ENABLED=true starts one as its child",
        add_help=False,
    )
    for module in COMMAND_MODULES:
        module.register(commands)
    return top


def with_default_action(argv: Sequence[str]) -> list[str]:
    """``dlq`` alone (or with options only) means ``dlq list``.

    >>> with_default_action(["dlq", "--which", "labels"]), with_default_action(["dlq", "--help"])
    (['dlq', 'list', '--which', 'labels'], ['dlq', '--help'])
    """
    argv = list(argv)
    if argv and argv[0] == "dlq" and (len(argv) == 1 or argv[1] not in ("list", "replay", "-h", "--help")):
        argv.insert(1, "list")
    return argv


def run(argv: Sequence[str]) -> int:
    """Run one operator command; returns its exit code (errors are one line on stderr)."""
    top = parser()
    args = top.parse_args(with_default_action(argv))
    # The client logs each failed connection attempt; the command reports the outcome itself, in one line.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    if getattr(args, "run", None) is None:
        top.print_help()
        return EXIT_REFUSED
    try:
        return int(asyncio.run(args.run(args, load())))
    except BrokerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except (UnknownTopic, ReplayRefused, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `... | head`: the reader has gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
