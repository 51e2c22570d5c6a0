"""``dlq list`` and ``dlq replay``: read the dead-letter topics, and re-publish fixed messages to the input."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from app.ops.broker import Start, consumer, producer, tail
from app.ops.render import dead_letter_line
from app.ops.replay_plan import (
    Candidate,
    Refusal,
    candidate_from_letter,
    candidates_from_lines,
    describe,
    dlq_topics,
    export_record,
    parse_offsets,
    plan,
    selected,
)
from app.ops.tailing import add_connection_options, add_tail_options, colour_enabled, emit, start_of
from app.serialization import JSONDecodeError, dumps, loads
from app.settings import Settings

KINDS = ("transactions", "labels")


class ReplayRefused(Exception):
    """Nothing was published: the selection is empty or some messages are still invalid."""


def chosen_kinds(which: str) -> list[str]:
    return list(KINDS) if which == "both" else [which]


async def run_list(args: argparse.Namespace, settings: Settings) -> int:
    colour = colour_enabled(args)
    start, follow = start_of(args)
    by_topic = {dlq_topics(settings)[kind]: kind for kind in chosen_kinds(args.which)}
    codes = set(args.code or ())
    printed = 0
    if args.limit is not None and args.limit <= 0:
        return 0
    async with consumer(settings, args.timeout_s) as client:
        async for record in tail(client, list(by_topic), start, follow):
            try:
                letter = loads(record.value or b"")
            except JSONDecodeError:
                letter = None
            if not isinstance(letter, dict):
                emit(f"{record.topic} {record.partition}:{record.offset} (not a dead letter: {record.value!r:.200})")
                continue
            if codes and letter.get("error") not in codes:
                continue
            if args.json:
                kind = by_topic[record.topic]
                emit(
                    dumps(
                        export_record(kind, record.topic, record.partition, record.offset, record.key, letter)
                    ).decode()
                )
            else:
                emit(dead_letter_line(record.topic, record.partition, record.offset, record.key, letter, colour,
                                      args.max_raw_chars))  # fmt: skip
            printed += 1
            if args.limit is not None and printed >= args.limit:
                break
    return 0


async def letters_on_topic(settings: Settings, kind: str, timeout_s: float) -> list[Candidate]:
    """Every dead letter on ``kind``'s dead-letter topic now, as candidates with their original bytes."""
    topic = dlq_topics(settings)[kind]
    found = []
    async with consumer(settings, timeout_s) as client:
        async for record in tail(client, [topic], Start(from_beginning=True), follow=False):
            try:
                letter = loads(record.value or b"")
                found.append(candidate_from_letter(kind, topic, record.partition, record.offset, letter))
            except (JSONDecodeError, ValueError, AttributeError):
                print(f"skipped {topic} {record.partition}:{record.offset}: not a dead letter", file=sys.stderr)
    return found


async def run_replay(args: argparse.Namespace, settings: Settings) -> int:
    codes = set(args.code or ())
    offsets = parse_offsets(args.offset or ())
    refused: list[Refusal] = []
    if args.file is not None:
        text = sys.stdin.read() if str(args.file) == "-" else Path(args.file).read_text(encoding="utf-8")
        candidates, refused = candidates_from_lines(text.splitlines(), args.which)
    else:
        if not codes and not offsets:
            raise ReplayRefused("choose what to replay: --file, or --code / --offset of dead letters on the topic")
        candidates = await letters_on_topic(settings, args.which, args.timeout_s)
    candidates = [c for c in candidates if selected(c, codes, offsets)]
    go, invalid = plan(candidates, settings)
    refused += invalid
    for refusal in refused:
        print(f"refused {refusal.origin}: {refusal.reason}", file=sys.stderr)
    if refused and not args.skip_invalid:
        raise ReplayRefused(f"{len(refused)} message(s) still invalid; nothing published (fix them, or --skip-invalid)")
    if not go:
        raise ReplayRefused("nothing selected to replay")
    if args.dry_run:
        for publish in go:
            emit(f"would publish {describe(publish)}")
        emit(f"dry run: {len(go)} message(s) would be published, {len(refused)} refused")
        return 0
    async with producer(settings, args.timeout_s) as client:
        for publish in go:
            sent = await client.send_and_wait(publish.topic, publish.value, key=publish.key)
            emit(f"published {describe(publish)} at {sent.partition}:{sent.offset}")
    emit(f"replayed {len(go)} message(s), {len(refused)} refused")
    return 0


LIST_HELP = """\
Print dead letters, one line each: when it was dead-lettered, the dead-letter topic and partition:offset,
the error code and reason, the source topic and partition:offset, the key, and the original bytes decoded
from the base64 'raw' field (shown as 'text ...' when UTF-8, control characters escaped; 'bytes b'...''
Python-escaped when not). By default the last 10 of each partition of both dead-letter topics, then exit.
--json prints each as an editable JSON line, the input of 'dlq replay --file'."""

REPLAY_HELP = """\
Re-publish fixed messages to their input topic (TRANSACTIONS_TOPIC or LABELS_TOPIC) with an idempotent
producer (acks=all), keyed as the contract says (transactions by customer_id, labels by tx_id), so the worker
decides them like any new message. Dead letters stay where they are.

Where the messages come from:
  --file F    JSON lines (or - for stdin): the lines 'dlq list --json' prints, with 'value' corrected (a
              line whose 'value' is null sends its original 'raw' bytes), or bare corrected transactions
              (labels with --which labels); blank lines and lines starting with # are skipped.
  otherwise   the dead letters now on the --which dead-letter topic, their original bytes unchanged (for
              errors fixed elsewhere, such as scoring_error); --code or --offset must select them.
--code and --offset narrow either source. Every message is validated as the worker would first; if any is
still invalid, each is reported with its code and nothing is published (exit 1), unless --skip-invalid.
--dry-run prints what would be published and publishes nothing. Only the worker knows which tx_ids it decided
already: a replayed tx_id it still holds is dead-lettered again as duplicate_transaction.

The edit step:
  python -m app dlq list --from-beginning --code invalid_amount --json > fix.jsonl
  $EDITOR fix.jsonl                       # correct each line's "value"
  python -m app dlq replay --file fix.jsonl --dry-run
  python -m app dlq replay --file fix.jsonl"""


def register(commands: Any) -> None:
    """Add ``dlq`` (with ``list`` and ``replay``) to the command line's subcommands."""
    dlq = commands.add_parser(
        "dlq",
        help="list dead letters, or replay fixed ones",
        description="Dead letters of TRANSACTIONS_DLQ_TOPIC and LABELS_DLQ_TOPIC. 'dlq' alone is 'dlq list'.",
    )
    actions = dlq.add_subparsers(dest="dlq_command", metavar="{list,replay}")
    raw_text = argparse.RawDescriptionHelpFormatter
    listing = actions.add_parser("list", help="print dead letters with reason and original bytes",
                                 description=LIST_HELP, formatter_class=raw_text)  # fmt: skip
    listing.add_argument("--which", choices=("transactions", "labels", "both"), default="both",
                         help="which dead-letter topic (default both)")  # fmt: skip
    listing.add_argument("--code", action="append", metavar="CODE", help="only this error code (repeatable)")
    listing.add_argument("--max-raw-chars", type=int, default=300, metavar="N",
                         help="cut the decoded original after N characters (0: whole; default 300)")  # fmt: skip
    add_tail_options(listing)
    listing.set_defaults(run=run_list)

    replay = actions.add_parser("replay", help="re-publish fixed messages to the input topic",
                                description=REPLAY_HELP, formatter_class=raw_text)  # fmt: skip
    replay.add_argument("--file", default=None, metavar="F", help="JSON lines to replay (- for stdin)")
    replay.add_argument("--which", choices=KINDS, default="transactions",
                        help="the input (and dead-letter topic) of bare lines and of topic reads (default "
                        "transactions)")  # fmt: skip
    replay.add_argument("--code", action="append", metavar="CODE", help="only this error code (repeatable)")
    replay.add_argument("--offset", action="append", metavar="P:O",
                        help="only the dead letter at this partition:offset of its topic (repeatable)")  # fmt: skip
    replay.add_argument("--dry-run", action="store_true", help="print what would be published; publish nothing")
    replay.add_argument("--skip-invalid", action="store_true", help="publish the valid ones even if some are not")
    add_connection_options(replay)
    replay.set_defaults(run=run_replay)
