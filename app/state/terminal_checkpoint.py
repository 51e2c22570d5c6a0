"""The terminal aggregates as a checkpoint on Kafka, so a worker on an empty disk decides in seconds.

Without it a new worker (a replacement pod, a lost disk, a scale-out) would read the whole terminal log, 40 days
of every transaction, before deciding anything. One worker (the one holding input partition 0) writes, every
``TERMINAL_CHECKPOINT_INTERVAL_S``, its whole flushed terminal store to the compacted topic
``<APP_ID>-terminal-checkpoints``: ``chunk/<i>`` records (orjson, zstd-compressed; a terminal as its JSON list of
``[t, tx_id, seq]`` entries, whatever the local store's own format) and a ``head`` naming their count, digests and
the log positions they cover, all in ONE Kafka transaction under a fixed transactional id.
So readers (``read_committed``) see whole checkpoints only, and two workers that both believe they are the writer
(during a rebalance) fence each other instead of mixing their chunks. A worker whose store has no positions reads
the newest checkpoint, writes it to its store and reads the logs' tail from the positions in its head. A head whose
chunks are missing or do not match their digests (or that was made with other windows) is refused: the worker
reads the logs from their start, slower but right.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cramjam
from aiokafka import TopicPartition

from app.features.engine import TerminalWindow
from app.kafka.clients import Connection, committed_reader, transactional_producer
from app.kafka.reading import read_latest
from app.serialization import dumps, loads
from app.state.terminals import TerminalAggregates

log = logging.getLogger(__name__)

FORMAT = 1
HEAD_KEY = b"head"
CHUNK_RAW_BYTES = 250_000  # JSON per chunk before compression (a few ms of work between two yields to the loop)
FRAUDS_PER_CHUNK = 20_000


def chunk_key(i: int) -> bytes:
    return f"chunk/{i}".encode()


@dataclass
class Checkpoint:
    """A decoded checkpoint: the terminals chunk by chunk, the fraud marks, where the logs stood."""

    chunks: list[dict[str, Any]]
    frauds_known_s: dict[str, float]
    stream_time_s: float
    positions: dict[str, int]
    written_at_s: float


def encode(
    aggregates: TerminalAggregates, positions: dict[str, int], windows: dict[str, float]
) -> Iterator[bytes | dict[str, Any]]:
    """The compressed chunks, one at a time (the caller yields to the event loop between them), then the head
    (a dict: its digests need every chunk). Reads the flushed store: call right after a flush."""
    digests: list[str] = []
    frauds = list(aggregates.frauds_known_s.items())
    for start in range(0, len(frauds), FRAUDS_PER_CHUNK):
        chunk = _compress(dumps({"frauds": dict(frauds[start : start + FRAUDS_PER_CHUNK])}))
        digests.append(hashlib.sha256(chunk).hexdigest())
        yield chunk
    terminals: dict[str, Any] = {}
    size = 0
    for terminal_id, state in aggregates.committed_items():
        terminals[terminal_id] = list(state)  # [[t, tx_id, seq], ...] in JSON: the format of every version
        size += 40 + 40 * len(state)  # about the JSON bytes of a terminal: cheaper than measuring
        if size >= CHUNK_RAW_BYTES:
            chunk = _compress(dumps({"terminals": terminals}))
            digests.append(hashlib.sha256(chunk).hexdigest())
            yield chunk
            terminals, size = {}, 0
    if terminals:
        chunk = _compress(dumps({"terminals": terminals}))
        digests.append(hashlib.sha256(chunk).hexdigest())
        yield chunk
    yield {
        "format": FORMAT,
        "chunks": len(digests),
        "sha256": digests,
        "positions": positions,
        "stream_time_s": aggregates.stream_time_s if aggregates.stream_time_s != float("-inf") else None,
        "windows": windows,
        "written_at_s": time.time(),
    }


def decode(latest: dict[bytes, bytes | None], windows: dict[str, float]) -> Checkpoint | None:
    """The checkpoint the newest head names, from the topic's newest value per key; ``None`` (with a log line
    saying why) when there is none or it cannot be trusted.

    >>> decode({}, {}) is None
    True
    """
    raw_head = latest.get(HEAD_KEY)
    if raw_head is None:
        return None
    head = loads(raw_head)
    if head.get("format") != FORMAT:
        log.warning("terminal checkpoint of format %r refused (this worker reads %d)", head.get("format"), FORMAT)
        return None
    if head.get("windows") != windows:
        log.warning("terminal checkpoint made with windows %s, this worker's are %s: refused", head.get("windows"),
                    windows)  # fmt: skip
        return None
    terminal_chunks: list[dict[str, Any]] = []
    frauds: dict[str, float] = {}
    for i, digest in enumerate(head["sha256"]):
        chunk = latest.get(chunk_key(i))
        if chunk is None or hashlib.sha256(chunk).hexdigest() != digest:
            log.warning("terminal checkpoint chunk %d missing or not the head's: refused", i)
            return None
        body = loads(bytes(cramjam.zstd.decompress(chunk)))
        if "frauds" in body:
            frauds.update(body["frauds"])
        if "terminals" in body:
            terminal_chunks.append({k: TerminalWindow.of(v) for k, v in body["terminals"].items()})
    stream_time_s = head["stream_time_s"]
    return Checkpoint(
        chunks=terminal_chunks,
        frauds_known_s={k: float(v) for k, v in frauds.items()},
        stream_time_s=float("-inf") if stream_time_s is None else float(stream_time_s),
        positions={str(k): int(v) for k, v in head["positions"].items()},
        written_at_s=float(head["written_at_s"]),
    )


def _compress(raw: bytes) -> bytes:
    return bytes(cramjam.zstd.compress(raw, level=3))


async def read(connection: Connection, topic: str, windows: dict[str, float]) -> Checkpoint | None:
    """The newest trustworthy checkpoint on ``topic``, or ``None``."""
    consumer = committed_reader(connection, fetch_max_bytes=32 * 2**20, max_partition_fetch_bytes=32 * 2**20)
    await consumer.start()
    try:
        return decode(await read_latest(consumer, TopicPartition(topic, 0), timeout_ms=500), windows)
    finally:
        await consumer.stop()


async def write(
    connection: Connection,
    topic: str,
    transactional_id: str,
    aggregates: TerminalAggregates,
    positions: dict[str, int],
    windows: dict[str, float],
    *,
    transaction_timeout_ms: int,
    previous_chunks: int = 0,
) -> int:
    """Write a checkpoint of the (just flushed) aggregates in one transaction; returns its chunk count. Chunks
    past the count, left by a larger earlier checkpoint of this process, are deleted in the same transaction."""
    producer = transactional_producer(connection, transactional_id, transaction_timeout_ms=transaction_timeout_ms,
                                      linger_ms=20)  # fmt: skip
    await producer.start()  # fences another writer of the same id and aborts its open transaction
    try:
        count = 0
        async with producer.transaction():
            sends = []
            for item in encode(aggregates, positions, windows):
                if isinstance(item, dict):
                    count = int(item["chunks"])
                    for i in range(count, previous_chunks):
                        sends.append(await producer.send(topic, key=chunk_key(i), value=None))
                    sends.append(await producer.send(topic, key=HEAD_KEY, value=dumps(item)))
                else:
                    sends.append(await producer.send(topic, key=chunk_key(count), value=item))
                    count += 1
                await asyncio.sleep(0)  # the decisions run between chunks
            await asyncio.gather(*sends)
        return count
    finally:
        await producer.stop()
