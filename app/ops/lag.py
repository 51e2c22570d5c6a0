"""``lag``: how far the worker's consumer groups are behind, per partition.

The decisions loop keeps its input position in its changelog and commits the group's offsets once a second
for monitoring only, so its lag here may run up to a second (one commit) behind the truth. The trainer reads
without a consumer group: its positions are those of its head (the reader of new predictions and labels) in its last
published state (``<APP_ID>-trainer-state``), so its lag includes what it read since (up to
``MODEL_PUBLISH_INTERVAL_S``); its tails, which read the predictions a horizon late, are in the same record.
"""

from __future__ import annotations

import argparse
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from app.ops.broker import admin, consumer, partitions
from app.ops.render import LagRow, lag_table
from app.ops.tailing import add_connection_options, emit
from app.serialization import dumps, loads
from app.settings import Settings


def worker_groups(settings: Settings) -> dict[str, list[str]]:
    """The worker's consumer groups and the topics each reads (see ``app/worker.py``).

    >>> worker_groups(Settings())
    {'fraud-detector-decisions': ['transactions'], 'fraud-detector-trainer': ['predictions', 'labels']}
    """
    return {
        f"{settings.app_id}-decisions": [settings.transactions_topic],
        f"{settings.app_id}-trainer": [settings.predictions_topic, settings.labels_topic],
    }


async def trainer_positions(reader: Any, settings: Settings) -> dict[str, int]:
    """``topic/partition`` -> next offset of the trainer's last published state (empty before the first)."""
    tp = TopicPartition(f"{settings.app_id}-trainer-state", 0)
    try:
        end = (await reader.end_offsets([tp]))[tp]
    except Exception:  # noqa: BLE001 - no trainer state topic yet
        return {}
    reader.assign([tp])
    reader.seek(tp, max(0, end - 4))  # the head is the last record of each state's transaction
    positions: dict[str, int] = {}
    for record in (await reader.getmany(tp, timeout_ms=2000)).get(tp, []):
        if record.key == b"head":
            positions = {str(k): int(v) for k, v in loads(record.value).get("positions", {}).items()}
    return positions


async def group_state(client: AIOKafkaAdminClient, group: str) -> str | None:
    """``Stable, 1 member`` and the like; None when the broker's answer cannot be read."""
    try:
        responses = await client.describe_consumer_groups([group])
        for response in responses:
            for entry in response.to_object().get("groups", []):
                if entry.get("group") == group:
                    members = len(entry.get("members") or [])
                    return f"{entry.get('state') or '?'}, {members} member{'' if members == 1 else 's'}"
    except Exception:  # noqa: BLE001 - the state is a courtesy; the offsets are what the command is for
        return None
    return None


async def lag_rows(
    settings: Settings, groups: dict[str, list[str]], timeout_s: float
) -> tuple[list[LagRow], dict[str, str]]:
    rows: list[LagRow] = []
    states: dict[str, str] = {}
    async with admin(settings, timeout_s) as admin_client, consumer(settings, timeout_s) as reader:
        for group, topics in groups.items():
            tps = await partitions(reader, topics)
            if group.endswith("-trainer"):
                positions = await trainer_positions(reader, settings)
                committed = {tp: OffsetAndMetadata(positions[f"{tp.topic}/{tp.partition}"], "")
                             for tp in tps if f"{tp.topic}/{tp.partition}" in positions}  # fmt: skip
            else:
                committed = await admin_client.list_consumer_group_offsets(group)
            begin = await reader.beginning_offsets(tps)
            end = await reader.end_offsets(tps)
            for tp in tps:
                mark = committed.get(tp)
                offset = mark.offset if mark is not None and mark.offset >= 0 else None
                rows.append(LagRow(group, tp.topic, tp.partition, offset, begin[tp], end[tp]))
            state = await group_state(admin_client, group) if not group.endswith("-trainer") else "last state"
            if state:
                states[group] = state
    return rows, states


async def run_lag(args: argparse.Namespace, settings: Settings) -> int:
    groups = worker_groups(settings)
    if args.group != "all":
        groups = {name: topics for name, topics in groups.items() if name.endswith(f"-{args.group}")}
    rows, states = await lag_rows(settings, groups, args.timeout_s)
    if args.json:
        for row in rows:
            emit(dumps({"group": row.group, "topic": row.topic, "partition": row.partition,
                        "committed": row.committed, "log_end": row.log_end, "lag": row.lag}).decode())  # fmt: skip
    else:
        for line in lag_table(rows, states):
            emit(line)
    return 0


def register(commands: Any) -> None:
    """Add ``lag`` to the command line's subcommands."""
    lag = commands.add_parser(
        "lag",
        help="consumer lag per partition of the worker's groups",
        description="A table of the worker's consumer groups, <APP_ID>-decisions (reads TRANSACTIONS_TOPIC) and "
        "<APP_ID>-trainer (reads PREDICTIONS_TOPIC and LABELS_TOPIC without a group: its positions are those of "
        "its last published state): per partition the committed offset, the log end (last stable offset) and "
        "the lag between them, and per group the total with the group's state. "
        "A partition the group never committed shows '-' and its lag from the oldest kept message. The decisions "
        "loop resumes from its changelog and commits the group's offsets once a second for this view only, so "
        "its lag may trail by a second; transaction markers take an offset each, so a caught-up reader of a "
        "transactional topic may show a lag of 1.",
    )
    lag.add_argument("--group", choices=("all", "decisions", "trainer"), default="all")
    lag.add_argument("--json", action="store_true", help="one JSON line per partition instead of the table")
    add_connection_options(lag)
    lag.set_defaults(run=run_lag)
