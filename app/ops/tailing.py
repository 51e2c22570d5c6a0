"""``health`` and ``predictions``: tail a topic the worker writes, one line a message, like ``tail`` (``-f``).

Shared options: where to start (the last N per partition, the beginning, or only new messages), whether to
follow, how many to print, colour, and the broker wait.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from app.ops.broker import Start, consumer, tail
from app.ops.render import health_line, prediction_line
from app.serialization import JSONDecodeError, dumps, loads
from app.settings import Settings

DEFAULT_TIMEOUT_S = 10.0


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout-s", type=float, default=DEFAULT_TIMEOUT_S,
        help="give up with exit code 2 when the broker does not answer within this many seconds (default 10)",
    )  # fmt: skip


def add_tail_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--last", type=int, default=10, metavar="N",
                       help="start with the last N messages of each partition (default 10)")  # fmt: skip
    where.add_argument("--from-beginning", action="store_true", help="start at the oldest message kept")
    where.add_argument("--new", action="store_true", help="only messages published from now on (implies --follow)")
    parser.add_argument("-f", "--follow", action="store_true",
                        help="keep waiting for new messages (Ctrl-C ends); without it, stop at the end")  # fmt: skip
    parser.add_argument("-n", "--limit", type=int, default=None, metavar="N", help="stop after printing N messages")
    parser.add_argument("--json", action="store_true", help="print each message as its JSON line instead")
    colour = parser.add_mutually_exclusive_group()
    colour.add_argument("--no-color", dest="color", action="store_const", const="never", default="auto",
                        help="never colour (the default colours only when stdout is a terminal)")  # fmt: skip
    colour.add_argument("--color", dest="color", choices=("auto", "always", "never"), default="auto")
    add_connection_options(parser)


def start_of(args: argparse.Namespace) -> tuple[Start, bool]:
    """Where to start and whether to follow, from the tail options."""
    if args.new:
        return Start(last=0), True
    return Start(from_beginning=args.from_beginning, last=max(0, args.last)), args.follow


def colour_enabled(args: argparse.Namespace) -> bool:
    return args.color == "always" or (args.color == "auto" and sys.stdout.isatty())


def emit(line: str) -> None:
    print(line, flush=True)


async def print_tail(
    settings: Settings,
    args: argparse.Namespace,
    topics: list[str],
    line: Callable[[Any, bytes | None, Any], str | None],
) -> int:
    """Print ``line(record, key, value)`` for each message of ``topics`` (None skips it); exit code 0."""
    start, follow = start_of(args)
    printed = 0
    if args.limit is not None and args.limit <= 0:
        return 0
    async with consumer(settings, args.timeout_s) as client:
        async for record in tail(client, topics, start, follow):
            try:
                value = loads(record.value or b"")
            except JSONDecodeError:
                value = None
            text = line(record, record.key, value)
            if text is None:
                continue
            emit(text)
            printed += 1
            if args.limit is not None and printed >= args.limit:
                break
    return 0


def not_json(record: Any) -> str:
    return f"{record.topic} {record.partition}:{record.offset} (not JSON: {record.value!r:.200})"


async def run_health(args: argparse.Namespace, settings: Settings) -> int:
    colour = colour_enabled(args)

    def line(record: Any, key: bytes | None, event: Any) -> str | None:
        if not isinstance(event, dict):
            return not_json(record)
        if args.status and event.get("status") not in args.status:
            return None
        return dumps(event).decode() if args.json else health_line(event, colour)

    return await print_tail(settings, args, [settings.health_topic], line)


async def run_predictions(args: argparse.Namespace, settings: Settings) -> int:
    colour = colour_enabled(args)

    def line(record: Any, key: bytes | None, prediction: Any) -> str | None:
        if not isinstance(prediction, dict):
            return not_json(record)
        probability = prediction.get("fraud_probability")
        if args.min_probability is not None and not (
            isinstance(probability, int | float) and probability >= args.min_probability
        ):
            return None
        if args.fraud_only and not prediction.get("is_fraud"):
            return None
        if args.model_version and prediction.get("model_version") != args.model_version:
            return None
        return dumps(prediction).decode() if args.json else prediction_line(prediction, colour)

    return await print_tail(settings, args, [settings.predictions_topic], line)


def register(commands: Any) -> None:
    """Add ``health`` and ``predictions`` to the command line's subcommands."""
    health = commands.add_parser(
        "health",
        help="tail the health topic, one line per event",
        description="Print the worker health events of HEALTH_TOPIC, one line each: time, worker, status, key "
        "figures (throughput, latency p50/p99, error rate, dead letters, model version, labels learned, terminal "
        "feed lag) and the issues. Coloured by status on a terminal: green healthy, yellow degraded, red "
        "unhealthy, magenta stale. By default the last 10 events, then exit; -f keeps following.",
    )
    health.add_argument("--status", action="append", choices=("healthy", "degraded", "unhealthy", "stale"),
                        help="only events with this status (repeatable)")  # fmt: skip
    add_tail_options(health)
    health.set_defaults(run=run_health)

    predictions = commands.add_parser(
        "predictions",
        help="tail decisions (read committed)",
        description="Print the decisions of PREDICTIONS_TOPIC, committed ones only (read_committed), one line "
        "each: scored time, tx_id, fraud probability, FRAUD or ok, model version and reasons. By default the "
        "last 10 of each partition, then exit; --follow keeps following, --new shows only new ones.",
    )
    predictions.add_argument("--min-probability", type=float, default=None, metavar="P",
                             help="only decisions with fraud_probability >= P")  # fmt: skip
    predictions.add_argument("--fraud-only", action="store_true", help="only decisions with is_fraud true")
    predictions.add_argument("--model-version", default=None, help="only decisions of this model version")
    add_tail_options(predictions)
    predictions.set_defaults(run=run_predictions)
