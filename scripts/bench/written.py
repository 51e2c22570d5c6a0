"""What a system wrote to the broker during a phase: offsets taken and records a read_committed reader sees per
topic and per transaction, and the bytes of its topics on the broker's disk."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Int16, Int32, Int64, Schema, String


async def end_offsets(bootstrap: str, topics: list[str]) -> dict[TopicPartition, int]:
    """The high watermark of every partition of ``topics`` (what exists of them)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()  # consumer.topics() keeps no partitions
        tps = [TopicPartition(t, p) for t in topics for p in sorted(cluster.partitions_for_topic(t) or ())]
        return dict(await consumer.end_offsets(tps)) if tps else {}
    finally:
        await consumer.stop()


async def written_topics(bootstrap: str, app_id: str | None, named: list[str]) -> list[str]:
    """``named`` (those that exist) and every topic whose name starts with ``app_id``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    prefixed = sorted(t for t in existing if app_id and t.startswith(app_id))
    return [t for t in named if t in existing] + [t for t in prefixed if t not in named]


async def committed_records(
    bootstrap: str, ranges: dict[TopicPartition, tuple[int, int]], timeout_s: float = 120.0
) -> dict[str, dict[str, int]]:
    """Records (and key + value bytes) that a read_committed reader sees in each ``[start, end)`` offset range,
    by topic. Commit markers and aborted records take offsets but are never returned."""
    counts: dict[str, dict[str, int]] = {tp.topic: {"records": 0, "bytes": 0} for tp in ranges}
    todo = {tp: r for tp, r in ranges.items() if r[1] > r[0]}
    if not todo:
        return counts
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed")  # fmt: skip
    await consumer.start()
    try:
        consumer.assign(list(todo))
        for tp, (start, _) in todo.items():
            consumer.seek(tp, start)
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=200, max_records=10_000)).items():
                end = ranges[tp][1]
                for r in records:
                    if r.offset < end:
                        counts[tp.topic]["records"] += 1
                        counts[tp.topic]["bytes"] += len(r.key or b"") + len(r.value or b"")
            for tp in list(todo):
                if await consumer.position(tp) >= todo[tp][1]:
                    consumer.pause(tp)
                    del todo[tp]
        if todo:
            raise TimeoutError(f"read_committed did not reach the end offsets of {sorted(map(str, todo))}")
        return counts
    finally:
        await consumer.stop()


class DescribeLogDirsResponse_v1(Response):
    API_KEY = 35
    API_VERSION = 1
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("results", Array(("error_code", Int16), ("log_dir", String("utf-8")),
                          ("topics", Array(("name", String("utf-8")),
                                           ("partitions", Array(("partition_index", Int32), ("partition_size", Int64),
                                                                ("offset_lag", Int64), ("is_future_key", Boolean))))))),
    )  # fmt: skip


class DescribeLogDirsRequest_v1(RequestStruct):
    API_KEY = 35
    API_VERSION = 1
    RESPONSE_TYPE = DescribeLogDirsResponse_v1
    SCHEMA = Schema(("topics", Array(("topic", String("utf-8")), ("partitions", Array(Int32)))))


class DescribeLogDirsRequest(Request[DescribeLogDirsRequest_v1]):
    """DescribeLogDirs (aiokafka's admin client has no call for it): bytes on disk per partition."""

    API_KEY = 35

    def __init__(self, topics: list[tuple[str, list[int]]]) -> None:
        self.topics = topics

    def build(self, request_struct_class: type[DescribeLogDirsRequest_v1]) -> DescribeLogDirsRequest_v1:
        return request_struct_class(self.topics)


async def disk_bytes(bootstrap: str, topics: list[str]) -> dict[str, int] | None:
    """Bytes of ``topics`` in the brokers' log directories (all replicas); None when the broker will not say."""
    try:
        offsets = await end_offsets(bootstrap, topics)
        by_topic: dict[str, list[int]] = {}
        for tp in offsets:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            sizes = dict.fromkeys(by_topic, 0)
            for broker in admin._client.cluster.brokers():
                response = await admin._send_request_to_node(
                    broker.nodeId, DescribeLogDirsRequest(sorted(by_topic.items()))
                )
                for _error, _log_dir, log_topics in response.results:
                    for name, partitions in log_topics:
                        sizes[name] = sizes.get(name, 0) + sum(p[1] for p in partitions)
            return sizes
        finally:
            await admin.close()
    except Exception as exc:  # an older or restricted broker: the figure is optional
        print(f"(topic bytes on disk unavailable: {exc!r})", file=sys.stderr)
        return None


def messages_per_transaction(
    bootstrap: str, topics: list[str], before: dict[TopicPartition, int], published: int
) -> dict[str, Any]:
    """Offsets and read_committed records that a phase of ``published`` transactions left on ``topics``, by
    topic and in total, per transaction."""
    after = asyncio.run(end_offsets(bootstrap, topics))
    ranges = {tp: (before.get(tp, 0), end) for tp, end in after.items()}
    read = asyncio.run(committed_records(bootstrap, ranges))
    rows: list[dict[str, Any]] = []
    for topic in topics:
        offsets = sum(end - start for tp, (start, end) in ranges.items() if tp.topic == topic)
        records = read.get(topic, {}).get("records", 0)
        rows.append({"topic": topic, "offsets": offsets, "records": records,
                     "bytes": read.get(topic, {}).get("bytes", 0), "markers_or_aborted": offsets - records,
                     "offsets_per_tx": offsets / published, "records_per_tx": records / published})  # fmt: skip
    offsets = sum(r["offsets"] for r in rows)
    records = sum(r["records"] for r in rows)
    return {"published": published, "topics": rows,
            "total": {"offsets": offsets, "records": records, "bytes": sum(r["bytes"] for r in rows),
                      "markers_or_aborted": offsets - records, "offsets_per_tx": offsets / published,
                      "records_per_tx": records / published}}  # fmt: skip
