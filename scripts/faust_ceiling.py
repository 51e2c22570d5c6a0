#!/usr/bin/env python3
"""Faust ceiling: how fast a Faust agent moves small messages on this machine, by shape, against raw aiokafka.

    python scripts/faust_ceiling.py --messages 60000 --variants raw raweos plain take table two_hop
    python scripts/faust_ceiling.py --bootstrap-servers 127.0.0.1:9092 --messages 60000 --variants take take_eos

N small JSON transactions are produced once to an input topic of 4 partitions; then each variant runs alone, in
its own process and consumer group, from the beginning of that topic to its own output topic (4 partitions).
The figure is messages/s from its first to its last output record (startup excluded): the output is read back
with ``read_committed`` once the variant has written everything, and the span is taken from the records'
timestamps, which the producer stamps when each record is sent.

Variants:
- ``raw``: aiokafka ``getmany`` -> ``send`` per record (the client's own limit);
- ``raweos``: the same in Kafka transactions, one per ``getmany`` batch, input offsets sent to the transaction;
- ``plain``: a Faust agent, event -> ``send``;
- ``take``: a Faust agent over ``take_events(1000, within=0.005)``, a ``send`` per event of the batch;
- ``table``: a Faust agent writing a RocksDB table (with its changelog) and sending, per event;
- ``take_table``: ``take`` with one table write per key and batch (Faust refuses table writes in such batches);
- ``two_hop``: two Faust agents joined by an internal topic;
- ``<faust variant>_eos`` (e.g. ``take_eos``): that agent with Faust's ``processing_guarantee="exactly_once"``.

Credit: copied, with the measurement made exact and every name made unique per run, from the reproducers of the
decision-path issue in the team's shared tools (``faust-ceiling``: ``run.py``, ``app.py``, ``raw.py``,
``raw_eos.py``), so the ceiling rows of ``scripts/benchmark.py`` are reproducible from this repository alone.
The orchestrating process runs a variant by starting this file again with ``CEILING_VARIANT`` set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from local_processes import free_port, stop_process

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent

RAW_VARIANTS = ("raw", "raweos")
FAUST_VARIANTS = ("plain", "take", "table", "take_table", "two_hop")
DEFAULT_VARIANTS = ("raw", "raweos", "plain", "take", "table", "two_hop")


def known_variant(name: str) -> bool:
    return name in RAW_VARIANTS or name in FAUST_VARIANTS or name.removesuffix("_eos") in FAUST_VARIANTS


# ---- the variants (run in their own process) ---------------------------------------------------------------


async def _raw(boot: str, source: str, sink: str, group: str, max_records: int) -> None:
    """raw.py: aiokafka consume -> produce, one ``send`` per record."""
    consumer = AIOKafkaConsumer(source, bootstrap_servers=boot, group_id=group, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=boot, linger_ms=2)
    await consumer.start()
    await producer.start()
    while True:
        batches = await consumer.getmany(timeout_ms=100, max_records=max_records)
        for messages in batches.values():
            for m in messages:
                await producer.send(sink, key=m.key, value=m.value)


async def _raw_eos(boot: str, source: str, sink: str, group: str, max_records: int) -> None:
    """raw_eos.py: consume-transform-produce in Kafka transactions, one per ``getmany`` batch, the input offsets
    sent to the transaction; a fixed transactional id per run, so a restart fences a killed instance."""
    consumer = AIOKafkaConsumer(source, bootstrap_servers=boot, group_id=group, auto_offset_reset="earliest",
                                enable_auto_commit=False, isolation_level="read_committed")  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=boot, transactional_id=f"{group}-tx", linger_ms=2)
    await consumer.start()
    await producer.start()
    while True:
        batches = await consumer.getmany(timeout_ms=100, max_records=max_records)
        if not batches:
            continue
        async with producer.transaction():
            offsets = {}
            for tp, messages in batches.items():
                for m in messages:
                    await producer.send(sink, key=m.key, value=m.value)
                offsets[tp] = messages[-1].offset + 1
            await producer.send_offsets_to_transaction(offsets, group)


def _faust_app(variant: str, env: dict[str, str]) -> Any:
    """app.py: the Faust app of one variant (``<variant>_eos`` with ``processing_guarantee="exactly_once"``)."""
    import faust

    shape = variant.removesuffix("_eos")
    guarantee = "exactly_once" if variant.endswith("_eos") else "at_least_once"
    app = faust.App(
        env["CEILING_APP_ID"],
        broker=f"kafka://{env['CEILING_BOOTSTRAP']}",
        store="rocksdb://",
        datadir=env["CEILING_DATA_DIR"],
        web_port=int(env["CEILING_WEB_PORT"]),
        topic_partitions=int(env["CEILING_PARTITIONS"]),
        consumer_auto_offset_reset="earliest",
        autodiscover=False,
        producer_linger=0.002,
        processing_guarantee=guarantee,
    )
    src = app.topic(env["CEILING_SOURCE"], key_serializer="raw", value_serializer="raw")
    out = app.topic(env["CEILING_SINK"], key_serializer="raw", value_serializer="raw")
    table: Any = app.Table("state", partitions=int(env["CEILING_PARTITIONS"])) if "table" in shape else None

    if shape == "plain":

        @app.agent(src)
        async def plain(stream: Any) -> None:
            async for event in stream.events():
                await out.send(key=event.key, value=event.value)

    elif shape == "take":

        @app.agent(src)
        async def take(stream: Any) -> None:
            async for batch in stream.take_events(1000, within=0.005):
                for event in batch:
                    await out.send(key=event.key, value=event.value)

    elif shape == "table":

        @app.agent(src)
        async def table_per_event(stream: Any) -> None:
            async for event in stream.events():
                k = event.key.decode()
                table[k] = (table.get(k) or 0) + 1
                await out.send(key=event.key, value=event.value)

    elif shape == "take_table":

        @app.agent(src)
        async def take_table(stream: Any) -> None:
            async for batch in stream.take_events(1000, within=0.005):
                counts: dict[str, int] = {}
                for event in batch:
                    k = event.key.decode()
                    counts[k] = counts.get(k, 0) + 1
                    await out.send(key=event.key, value=event.value)
                for k, c in counts.items():
                    table[k] = (table.get(k) or 0) + c

    elif shape == "two_hop":
        mid = app.topic(env["CEILING_MID"], key_serializer="raw", value_serializer="raw",
                        partitions=int(env["CEILING_PARTITIONS"]), internal=True)  # fmt: skip

        @app.agent(src)
        async def first_hop(stream: Any) -> None:
            async for event in stream.events():
                await mid.send(key=event.key, value=event.value)

        @app.agent(mid)
        async def second_hop(stream: Any) -> None:
            async for event in stream.events():
                await out.send(key=event.key, value=event.value)

    else:
        raise SystemExit(f"unknown variant {variant!r}")
    return app


def variant_main(env: dict[str, str]) -> None:
    variant = env["CEILING_VARIANT"]
    boot, source, sink = env["CEILING_BOOTSTRAP"], env["CEILING_SOURCE"], env["CEILING_SINK"]
    group = env["CEILING_APP_ID"]
    max_records = int(env.get("CEILING_MAX_RECORDS", "1000"))
    if variant == "raw":
        asyncio.run(_raw(boot, source, sink, group, max_records))
    elif variant == "raweos":
        asyncio.run(_raw_eos(boot, source, sink, group, max_records))
    else:
        app = _faust_app(variant, env)
        sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
        app.main()


# ---- the orchestration -------------------------------------------------------------------------------------


async def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    if str(REPO_ROOT) not in sys.path:  # run on its own, only the scripts folder is on the path
        sys.path.insert(0, str(REPO_ROOT))
    from app.kafka.clients import Connection
    from app.kafka.topics import TopicSpec
    from app.kafka.topics import create_topics as create_kafka_topics

    await create_kafka_topics(Connection(bootstrap), [TopicSpec(name, partitions) for name in names])


async def produce(bootstrap: str, topic: str, n: int, seed: int = 0) -> float:
    """N small JSON transactions keyed by customer (run.py's shape); returns the seconds it took."""
    rng = random.Random(seed)
    started = time.perf_counter()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        for i in range(n):
            customer = f"c{rng.randrange(5000)}"
            value = {"tx_id": f"t{i}", "timestamp": "2018-04-01T10:00:00Z", "customer_id": customer,
                     "terminal_id": f"k{rng.randrange(10000)}", "amount": 12.5}  # fmt: skip
            await producer.send(topic, key=customer.encode(), value=json.dumps(value).encode())
        await producer.flush()
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def _end_offsets_total(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> int:
    return sum((await consumer.end_offsets(tps)).values())


async def read_committed_span(bootstrap: str, topic: str, partitions: int) -> tuple[int, int | None, int | None]:
    """Records of ``topic`` as a ``read_committed`` reader sees them: (count, first and last timestamp in ms)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest")  # fmt: skip
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)  # the last stable offsets, for read_committed
        count, first, last = 0, None, None
        while any(position < ends[tp] for tp, position in [(tp, await consumer.position(tp)) for tp in tps]):
            for records in (await consumer.getmany(timeout_ms=200, max_records=10_000)).values():
                count += len(records)
                for r in records:
                    first = r.timestamp if first is None else min(first, r.timestamp)
                    last = r.timestamp if last is None else max(last, r.timestamp)
        return count, first, last
    finally:
        await consumer.stop()


async def _wait_output(bootstrap: str, sink: str, partitions: int, n: int, process: subprocess.Popen[bytes],
                       log_path: Path, timeout_s: float) -> dict[str, Any]:  # fmt: skip
    """Poll the sink's end offsets (cheap, does not slow the variant) until they cover ``n`` records and stand
    still; then count what a read_committed reader sees (commit markers take offsets too). A crashed Faust agent
    (its process lives on) ends the wait at once."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    tps = [TopicPartition(sink, p) for p in range(partitions)]
    started = time.monotonic()
    previous = -1
    count, first, last = 0, None, None
    try:
        while time.monotonic() - started < timeout_s:
            if process.poll() is not None:
                return {"error": f"exited with {process.returncode}", "received": count}
            crashed = [line for line in log_path.read_text(errors="replace").splitlines() if "Crashed reason=" in line]
            if crashed:
                reason = crashed[0].split("Crashed reason=", 1)[1].strip()
                return {"error": f"agent crashed: {reason}", "received": count}
            total = await _end_offsets_total(consumer, tps)
            if total >= n and total == previous:
                count, first, last = await read_committed_span(bootstrap, sink, partitions)
                if count >= n:
                    return {"received": count, "first_ms": first, "last_ms": last}
            previous = total
            await asyncio.sleep(0.25)
        return {"error": "timeout", "received": count}
    finally:
        await consumer.stop()


def run_variant(bootstrap: str, variant: str, source: str, n: int, run: str, partitions: int, work: Path,
                timeout_s: float) -> dict[str, Any]:  # fmt: skip
    """Start the variant in its own process, time its first to last output record, stop it."""
    sink, mid = f"ceil-{run}-out-{variant}", f"ceil-{run}-mid-{variant}"
    asyncio.run(create_topics(bootstrap, [sink], partitions))
    data_dir = work / f"ceiling-{variant}-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    env = {**os.environ, "CEILING_VARIANT": variant, "CEILING_BOOTSTRAP": bootstrap, "CEILING_SOURCE": source,
           "CEILING_SINK": sink, "CEILING_MID": mid, "CEILING_APP_ID": f"ceil-{run}-{variant}",
           "CEILING_DATA_DIR": str(data_dir), "CEILING_WEB_PORT": str(free_port()),
           "CEILING_PARTITIONS": str(partitions)}  # fmt: skip
    log_path = work / f"ceiling-{variant}.log"
    with log_path.open("wb") as log:
        launched_ms = time.time() * 1000.0
        process = subprocess.Popen([sys.executable, str(Path(__file__).resolve())], cwd=REPO_ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            seen = asyncio.run(_wait_output(bootstrap, sink, partitions, n, process, log_path, timeout_s))
        finally:
            stop_process(process, timeout_s=20)
    shutil.rmtree(data_dir, ignore_errors=True)
    row: dict[str, Any] = {"variant": variant, "messages": n, "received": seen["received"]}
    if "error" in seen:
        tail = log_path.read_text(errors="replace").splitlines()[-20:]
        return {**row, "error": seen["error"], "msgs_per_s": None, "log_tail": tail}
    span_s = (seen["last_ms"] - seen["first_ms"]) / 1000.0
    return {**row, "msgs_per_s": (seen["received"] - 1) / span_s if span_s > 0 else None,
            "first_to_last_s": span_s, "startup_s": (seen["first_ms"] - launched_ms) / 1000.0}  # fmt: skip


def run_ceiling(bootstrap: str, n: int, variants: list[str], partitions: int, work: Path,
                timeout_s: float = 300.0) -> dict[str, Any]:  # fmt: skip
    """Produce ``n`` messages once, then run every variant alone over them; the rows, in ``variants`` order."""
    unknown = [v for v in variants if not known_variant(v)]
    if unknown:
        raise ValueError(f"unknown ceiling variants {unknown}")
    work.mkdir(parents=True, exist_ok=True)
    run = uuid.uuid4().hex[:8]
    source = f"ceil-{run}-in"
    asyncio.run(create_topics(bootstrap, [source], partitions))
    produce_s = asyncio.run(produce(bootstrap, source, n))
    rows = [run_variant(bootstrap, v, source, n, run, partitions, work, timeout_s) for v in variants]
    return {"messages": n, "partitions": partitions, "produce_s": produce_s, "rows": rows}


def markdown(ceiling: dict[str, Any]) -> list[str]:
    lines = [f"Faust ceiling: {ceiling['messages']:,} small JSON messages on {ceiling['partitions']} partitions, "
             "first to last output", "",
             "| variant | messages/s | first to last (s) | startup (s) |", "|---|---|---|---|"]  # fmt: skip
    for r in ceiling["rows"]:
        if r.get("msgs_per_s") is None:
            lines.append(f"| {r['variant']} | {r.get('error', 'n/a')} ({r['received']}/{r['messages']}) | | |")
        else:
            lines.append(f"| {r['variant']} | {r['msgs_per_s']:,.0f} | {r['first_to_last_s']:.2f} | "
                         f"{r['startup_s']:.1f} |")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
                        help="a broker to use; without one, a local broker is started and stopped")  # fmt: skip
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--timeout-s", type=float, default=300)
    args = parser.parse_args(argv)
    import kafka_local

    work = REPO_ROOT / ".kafka" / "ceiling"
    own_broker = not args.bootstrap_servers
    bootstrap = args.bootstrap_servers or kafka_local.start(
        port=free_port(), controller_port=free_port(), data_dir=work / "kafka", wipe=True
    )
    try:
        ceiling = run_ceiling(bootstrap, args.messages, args.variants, args.partitions, work, args.timeout_s)
    finally:
        if own_broker:
            kafka_local.stop(work / "kafka")
    for row in ceiling["rows"]:
        print(json.dumps(row))
    print("\n".join(markdown(ceiling)))
    return 0 if all(r.get("msgs_per_s") for r in ceiling["rows"]) else 1


if __name__ == "__main__":
    if os.environ.get("CEILING_VARIANT"):
        variant_main(dict(os.environ))
    else:
        sys.exit(main())
