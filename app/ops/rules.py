"""``python -m app rules list|add|disable|enable|shadow|history|backtest|lists|set-list``: the analysts' rules.

Rules and named lists live on two compacted topics (``RULES_TOPIC``, ``RULE_LISTS_TOPIC``); every change is an event
with who, why and when (:mod:`app.rules.events`). ``add`` checks a rule completely before publishing anything: a
rule that does not parse, names an unknown feature or list, or has the wrong types is refused with its line,
column and reason (exit 1). ``backtest`` reads ``predictions`` and ``labels`` (read_committed, no consumer group)
and counts what candidate rules would have done beside the live set (:mod:`app.rules.backtest`); it never writes.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from app.ops.broker import BrokerUnavailable, consumer, partitions
from app.rules.backtest import Backtest, lines, scored_of
from app.rules.events import list_event, rule_event
from app.rules.ruleset import ACTIVE, DISABLED, SHADOW, Rule, RuleRefused, rule_of, with_state
from app.serialization import JSONDecodeError, dumps, isoformat_utc, loads
from app.settings import Settings

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_BACKTEST_REVIEW_COST = 10.0  # when REVIEW_COST is unset: the backtest always reports both thresholds
#: Where the reading starts before ``--from``: a record's timestamp (when it was written) may precede its
#: transaction's event time by this much (a clock ahead, a transaction stamped in the future).
START_SLACK_S = 86400.0
STATE_OF = {"disable": DISABLED, "enable": ACTIVE, "shadow": SHADOW}
CHANGE_OF = {"disable": "disabled", "enable": "enabled", "shadow": "shadowed"}


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no user name in a container is not an error
        return "cli"


async def _state(settings: Settings, timeout_s: float) -> Any:
    from app.kafka.rule_topics import read_rules

    try:
        return await read_rules(settings, timeout_s)
    except (KafkaError, TimeoutError, OSError) as exc:
        raise BrokerUnavailable(f"Kafka broker {settings.bootstrap_servers} unreachable or too slow ({exc!r})") from exc


async def _ensure_rule_topics(settings: Settings) -> None:
    from app.kafka.clients import Connection
    from app.kafka.topics import create_topics, topic_specs

    names = (settings.rules_topic, settings.rule_lists_topic)
    specs = [spec for spec in topic_specs(settings) if spec.name in names]
    await create_topics(Connection.of(settings), specs, replication_factor=settings.replication_factor)


def _rule_line(rule: Rule) -> str:
    score = f" {rule.score:+g}" if rule.action == "score" else ""
    text = f"{rule.id:<24} {rule.action + score:<12} {rule.state:<9} {rule.priority:>5}  {rule.expression}"
    return text + (f"  # {rule.description}" if rule.description else "")


def _rule_from_args(args: argparse.Namespace, lists: Sequence[str]) -> Rule:
    if args.file is not None:
        try:
            obj = loads(Path(args.file).read_bytes())
        except JSONDecodeError as exc:
            raise ValueError(f"{args.file}: not JSON ({exc})") from None
    else:
        if not (args.id and args.expression and args.rule_action):
            raise ValueError("give --file, or --id, --expression and --action")
        obj = {"id": args.id, "expression": args.expression, "action": args.rule_action,
               "description": args.description or "", "priority": args.priority, "state": args.state}  # fmt: skip
        if args.score is not None:
            obj["score"] = args.score
    return rule_of(obj, lists)


def _candidates(paths: Sequence[str], lists: Sequence[str]) -> list[Rule]:
    """The rules of ``--rule`` files (a JSON object, or an array of them), checked as ``add`` checks them."""
    rules: list[Rule] = []
    for path in paths:
        try:
            obj = loads(Path(path).read_bytes())
        except JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON ({exc})") from None
        for item in obj if isinstance(obj, list) else [obj]:
            try:
                rules.append(rule_of(item, lists))
            except RuleRefused as exc:
                raise ValueError(f"{path}: {exc}") from None
    return rules


def parse_time(text: str) -> float:
    """ISO-8601 (a date alone is its midnight); without a UTC offset it is UTC.

    >>> parse_time("2018-04-01"), parse_time("2018-04-01T01:00:00Z"), parse_time("2018-04-01T03:00:00+02:00")
    (1522540800.0, 1522544400.0, 1522544400.0)
    """
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO-8601 time: {text!r}") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


async def _seek_near(client: AIOKafkaConsumer, tps: list[TopicPartition], start_ms: int) -> dict[TopicPartition, int]:
    """Each partition's first offset with a record timestamp at or after ``start_ms`` (its end when none)."""
    found = await client.offsets_for_times({tp: max(0, start_ms) for tp in tps})
    ends = await client.end_offsets(tps)
    starts = {tp: (found[tp].offset if found.get(tp) is not None else ends[tp]) for tp in tps}
    for tp, offset in starts.items():
        client.seek(tp, offset)
    return starts


async def _read_labels(client: AIOKafkaConsumer, settings: Settings, start_ms: int) -> tuple[dict[str, bool], int]:
    from app.kafka.reading import read_to_end

    tps = await partitions(client, [settings.labels_topic])
    client.assign(tps)
    await _seek_near(client, tps, start_ms)
    labels: dict[str, bool] = {}
    read = 0
    async for batch in read_to_end(client, tps, timeout_ms=500, max_records=10_000):
        for records in batch.values():
            for record in records:
                read += 1
                try:
                    obj = loads(record.value or b"")
                    is_fraud = obj["is_fraud"]
                    if isinstance(is_fraud, bool):
                        labels[str(obj["tx_id"])] = is_fraud  # keyed by tx_id: a later label replaces it
                except (JSONDecodeError, KeyError, TypeError):
                    continue
    return labels, read


async def _read_predictions(client: AIOKafkaConsumer, settings: Settings, start_ms: int, counting: Backtest,
                            progress: bool) -> tuple[int, int]:  # fmt: skip
    """Feed every prediction from near ``start_ms`` to the end to ``counting``; returns (read, undecodable)."""
    from tqdm import tqdm

    from app.kafka.reading import read_to_end

    tps = await partitions(client, [settings.predictions_topic])
    client.assign(tps)
    starts = await _seek_near(client, tps, start_ms)
    ends = await client.end_offsets(tps)
    total = sum(ends[tp] - starts[tp] for tp in tps)
    bar = tqdm(total=total, desc="backtest", unit="pred", unit_scale=True, mininterval=0.5,
               disable=None if progress else True)  # fmt: skip  # None: off when stderr is not a terminal
    read = bad = 0
    try:
        async for batch in read_to_end(client, tps, ends=ends, timeout_ms=500, max_records=10_000):
            n = 0
            for records in batch.values():
                for record in records:
                    n += 1
                    try:
                        counting.add(scored_of(loads(record.value or b"")))
                    except (JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                        bad += 1
            read += n
            bar.update(n)  # records, not offsets (commit markers take offsets): the bar may end short of 100 %
    finally:
        bar.close()
    return read, bad


async def _backtest(args: argparse.Namespace, settings: Settings) -> int:
    start_s, end_s = parse_time(args.from_time), parse_time(args.to_time)
    if end_s <= start_s:
        raise ValueError("--to must be after --from")
    state = await _state(settings, args.timeout_s)
    lists = state.lists
    candidates = _candidates(args.rule, tuple(lists))
    review_cost = args.review_cost
    if review_cost is None:
        review_cost = settings.review_cost if settings.review_cost > 0 else DEFAULT_BACKTEST_REVIEW_COST
    unknown = sorted(set(args.without) - {r.id for r in state.rule_set.rules})
    if unknown:
        raise ValueError(f"--without: no live rule {', '.join(map(repr, unknown))}")
    live = state.rule_set.without_rules(set(args.without))
    counting = Backtest({}, live, candidates, lists, start_s=start_s, end_s=end_s,
                        review_cost=review_cost, threshold=args.threshold)  # fmt: skip
    started = time.monotonic()
    start_ms = int((start_s - START_SLACK_S) * 1000)
    async with consumer(settings, args.timeout_s) as client:
        labels, labels_read = await _read_labels(client, settings, start_ms)
        counting.labels = labels
        read, bad = await _read_predictions(client, settings, start_ms, counting, not args.no_progress)
    elapsed_s = time.monotonic() - started
    report = counting.report
    if args.json:
        extra = {"live_version": state.rule_set.version, "without": args.without, "predictions_read": read,
                 "undecodable": bad, "labels_read": labels_read, "seconds": round(elapsed_s, 3)}  # fmt: skip
        print(dumps({**report.to_dict(), **extra}).decode())
    else:
        without = f" without {', '.join(args.without)}" if args.without else ""
        print(f"live rule set version {state.rule_set.version} ({len(state.rule_set.rules)} rules){without}; "
              f"candidates: {', '.join(r.id for r in candidates)}")  # fmt: skip
        for line in lines(report):
            print(line)
    print(f"read {read} predictions ({bad} undecodable) and {labels_read} labels in {elapsed_s:.1f} s",
          file=sys.stderr)  # fmt: skip
    return 0


async def run_rules(args: argparse.Namespace, settings: Settings) -> int:
    from app.kafka.rule_topics import publish_list, publish_rule

    if args.action == "backtest":
        return await _backtest(args, settings)
    state = await _state(settings, args.timeout_s)
    now = isoformat_utc(time.time())
    if args.action == "list":
        shown = [r for r in state.rule_set.rules if args.all or r.state != DISABLED]
        if args.json:
            print(dumps({"version": state.rule_set.version, "digest": state.rule_set.digest,
                         "rules": [r.to_dict() for r in shown], "refused": state.refused}).decode())  # fmt: skip
            return 0
        print(f"rule set version {state.rule_set.version} ({state.rule_set.digest}): "
              f"{len(shown)} rules{'' if args.all else ' (not disabled; --all for every one)'}")  # fmt: skip
        print(f"{'id':<24} {'action':<12} {'state':<9} {'prio':>5}  expression")
        for rule in shown:
            print(_rule_line(rule))
        for rule_id, reason in state.refused:
            print(f"refused {rule_id}: {reason}")
        return 0
    if args.action == "history":
        for event in state.history:
            if args.id and event.get("rule_id") != args.id:
                continue
            rule = event.get("rule") or {}
            print(f"{event['offset']:>6} {event.get('timestamp', ''):<24} {event.get('change', ''):<9} "
                  f"{event.get('rule_id', ''):<24} {rule.get('state', ''):<9} {event.get('by', '')}: "
                  f"{event.get('reason', '')}  [{rule.get('action', '')}] {rule.get('expression', '')}")  # fmt: skip
        return 0
    if args.action == "lists":
        print(f"lists version {state.lists_version}")
        for name, items in sorted(state.lists.items()):
            some = ", ".join(sorted(items)[:5]) + (", ..." if len(items) > 5 else "")
            print(f"{name:<24} {len(items):>7} items  {some}")
        return 0
    if args.action == "set-list":
        if args.file is not None:
            items = [line.strip() for line in Path(args.file).read_text().splitlines() if line.strip()]
        else:
            items = [i.strip() for i in (args.items or "").split(",") if i.strip()]
        event = list_event(args.name, items, by=_who(), reason=args.reason, timestamp=now)
        await _ensure_rule_topics(settings)
        version = await publish_list(settings, event)
        print(f"list {args.name}: {len(event['items'])} items (lists version {version})")
        return 0
    if args.action == "add":
        rule = _rule_from_args(args, tuple(state.lists))  # refused here (exit 1) before anything is published
        change = "updated" if state.rule_set.get(rule.id) is not None else "added"
        await _ensure_rule_topics(settings)
        version = await publish_rule(settings, rule_event(rule, change, by=_who(), reason=args.reason, timestamp=now))
        print(f"{change} rule {rule.id} ({rule.action}, {rule.state}); rule set version {version}")
        return 0
    current = state.rule_set.get(args.id)
    if current is None:
        raise ValueError(f"no rule {args.id!r} (python -m app rules list --all)")
    target = STATE_OF[args.action]
    if current.state == target:
        print(f"rule {args.id} is already {target}; nothing published")
        return 0
    event = rule_event(
        with_state(current, target), CHANGE_OF[args.action], by=_who(), reason=args.reason, timestamp=now
    )
    version = await publish_rule(settings, event)
    print(f"rule {args.id}: {current.state} -> {target}; rule set version {version}")
    return 0


def register(commands: Any) -> None:
    """Add ``rules`` and its actions to the command line's subcommands."""
    rules = commands.add_parser(
        "rules",
        help="analysts' rules: list, add, disable, enable, shadow, history, backtest; named lists",
        description="Rules and named lists live on RULES_TOPIC and RULE_LISTS_TOPIC (compacted); the README's "
        "Rules section has the grammar. A refused rule exits 1 and publishes nothing.",
    )
    rules.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S, help="give up on the broker after this")
    actions = rules.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the current rule set: id, action, state, priority, expression")
    listing.add_argument("--all", action="store_true", help="disabled rules too")
    listing.add_argument("--json", action="store_true")
    add = actions.add_parser("add", help="add a rule, or replace the rule of that id (checked before publishing)")
    add.add_argument("--file", help="a JSON object: id, expression, action, description, score, priority, state")
    add.add_argument("--id")
    add.add_argument("--expression")
    add.add_argument("--action", dest="rule_action", choices=("allow", "review", "block", "score"))
    add.add_argument("--description", default="")
    add.add_argument("--score", type=float, help="score rules: what a match adds to the probability (-1 to 1)")
    add.add_argument("--priority", type=int, default=0)
    add.add_argument("--state", default=ACTIVE, choices=(ACTIVE, SHADOW, DISABLED))
    add.add_argument("--reason", default="", help="why (kept in the rule's history)")
    for name, text in (("disable", "stop evaluating a rule"), ("enable", "make a rule active (deciding)"),
                       ("shadow", "evaluate and record a rule without letting it decide")):  # fmt: skip
        action = actions.add_parser(name, help=text)
        action.add_argument("id")
        action.add_argument("--reason", default="")
    past = actions.add_parser("history", help="every change still on the rules topic (30 days at least), in order")
    past.add_argument("id", nargs="?", help="one rule's changes only")
    backtest = actions.add_parser(
        "backtest", help="what candidate rules would have done to past predictions, beside the live rule set"
    )
    backtest.add_argument("--rule", action="append", required=True, metavar="FILE",
                          help="a JSON rule or array of rules (repeatable); evaluated as active")  # fmt: skip
    backtest.add_argument("--from", dest="from_time", required=True, metavar="T1", help="event time, ISO-8601")
    backtest.add_argument("--to", dest="to_time", required=True, metavar="T2", help="event time (excluded)")
    backtest.add_argument("--without", action="append", default=[], metavar="ID",
                          help="a live rule left out of the live set compared with (repeatable): what a rule "
                               "already live adds")  # fmt: skip
    backtest.add_argument("--threshold", type=float, default=None,
                          help="the fixed threshold (default: each prediction's own)")  # fmt: skip
    backtest.add_argument("--review-cost", type=float, default=None,
                          help=f"the expected-loss threshold (default: REVIEW_COST, else "
                               f"{DEFAULT_BACKTEST_REVIEW_COST:g})")  # fmt: skip
    backtest.add_argument("--json", action="store_true", help="the report as one JSON object")
    backtest.add_argument("--no-progress", action="store_true", help="no progress bar (none off a terminal anyway)")
    actions.add_parser("lists", help="the named lists and their sizes")
    set_list = actions.add_parser("set-list", help="replace a named list's content (created if new)")
    set_list.add_argument("name")
    items = set_list.add_mutually_exclusive_group(required=True)
    items.add_argument("--items", help="comma-separated ids")
    items.add_argument("--file", help="one id a line")
    set_list.add_argument("--reason", default="")
    rules.set_defaults(run=run_rules)
