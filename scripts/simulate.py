#!/usr/bin/env python3
"""Publish simulated card traffic: the handbook's simulator, with labels delayed in event time.

    python scripts/simulate.py --customers 500 --terminals 1000 --days 30 --rate-tps 200
    python scripts/simulate.py --no-kafka --out-dir runs/small --customers 50 --terminals 100 --days 10

A label due ``--label-delay-days`` after its transaction is published among the transactions of that later
time whatever the replay speed, so a fast replay teaches the model exactly what a live stream would. Labels due
after the last transaction go out at the end. Transactions are keyed by customer_id (a card's history stays in
one partition), labels by tx_id.

``--limit`` keeps the first N transactions (files and Kafka alike, with all their labels); ``--duration-s``
stops publishing after that long, leaving the rest, labels still pending included, unsent. ``--out-dir`` writes
transactions.jsonl and labels.jsonl in publishing order and truth.jsonl (every transaction with is_fraud and
fraud_scenario); with ``--no-kafka`` nothing is published.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from aiokafka import AIOKafkaProducer  # noqa: E402
from progress_bars import EVERY, add_progress_argument, bar  # noqa: E402

from app.serialization import dumps  # noqa: E402  (orjson, the project's one JSON dialect)
from lab.simulator import SimulatedTransaction, SimulatorConfig, label_of, replay, simulate, to_wire  # noqa: E402

Event = tuple[str, bytes, bytes]  # (kind, key, value) with kind "transaction" or "label"
MAX_IN_FLIGHT = 5000  # sends awaited oldest-first beyond this, so the producer's buffer stays bounded
RATE_KEPT_SHARE = 0.95  # the offered rate counts as kept when at least this share of it was achieved


@dataclass
class PublishReport:
    transactions: int = 0
    labels: int = 0
    seconds: float = 0.0
    offered_tps: float = 0.0
    kept_rate: bool = True

    @property
    def achieved_tps(self) -> float:
        return self.transactions / self.seconds if self.seconds > 0 else 0.0


def with_progress(events: Iterable[Event], total: int, enabled: bool) -> Iterator[Event]:
    """``events`` unchanged, with a bar of the transactions published (labels ride along), every EVERY."""
    progress = bar(total, "publishing", enabled=enabled)
    if progress.disable:
        yield from events
        return
    n = 0
    try:
        for event in events:
            if event[0] == "transaction":
                n += 1
                if n == EVERY:
                    progress.update(n)
                    n = 0
            yield event
    finally:
        progress.update(n)
        progress.close()


def wire_events(
    config: SimulatorConfig,
    label_delay_s: float,
    with_labels: bool = True,
    transactions: list[SimulatedTransaction] | None = None,
) -> Iterator[Event]:
    """The run as (kind, key, value) messages in event-time order, labels among later transactions.

    ``transactions`` (already simulated, possibly cut) saves simulating ``config`` again.
    """
    txs = transactions if transactions is not None else simulate(config)
    for kind, tx, at in replay(txs, label_delay_s):
        if kind == "transaction":
            yield kind, tx.customer_id.encode(), dumps(to_wire(tx))
        elif with_labels:
            yield kind, tx.tx_id.encode(), dumps(label_of(tx, at))


async def publish(
    bootstrap: str,
    events: Iterable[Event],
    transactions_topic: str,
    labels_topic: str,
    rate_tps: float = 0.0,
    duration_s: float | None = None,
    limit: int | None = None,
) -> PublishReport:
    """Publish until the events, the duration or the limit run out; ``rate_tps`` > 0 holds that rate.

    The rate counts transactions (labels ride along between them). Transaction n is due at start + n / rate:
    absolute deadlines, so a slow moment is caught up afterwards instead of drifting, and the sleep is skipped
    when less than a millisecond ahead (sleeping per message would cap the rate). ``kept_rate`` is False when
    the achieved rate fell under 95 % of the offered one. Sends are pipelined (linger 5 ms, 256 KiB batches)
    and all acknowledged before returning; a failed send raises.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    report = PublishReport(offered_tps=rate_tps)
    started = time.perf_counter()
    in_flight: collections.deque[asyncio.Future[object]] = collections.deque()
    try:
        for kind, key, value in events:
            if kind == "transaction":
                if limit is not None and report.transactions >= limit:
                    break
                now = time.perf_counter() - started
                if duration_s is not None and now >= duration_s:
                    break
                if rate_tps > 0:
                    ahead = report.transactions / rate_tps - now
                    if ahead >= 0.001:
                        await asyncio.sleep(ahead)
                report.transactions += 1
                topic = transactions_topic
            else:
                report.labels += 1
                topic = labels_topic
            in_flight.append(await producer.send(topic, key=key, value=value))
            while len(in_flight) > MAX_IN_FLIGHT:
                await in_flight.popleft()
        await asyncio.gather(*in_flight)
    finally:
        await producer.stop()
    report.seconds = time.perf_counter() - started
    if rate_tps > 0:
        report.kept_rate = report.achieved_tps >= RATE_KEPT_SHARE * rate_tps
    return report


def write_files(
    txs: list[SimulatedTransaction], label_delay_s: float, out_dir: Path, with_labels: bool = True
) -> tuple[int, int]:
    """transactions.jsonl and labels.jsonl in publishing order, truth.jsonl with every transaction's truth.

    Returns (transactions, labels) written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    n_tx = n_labels = 0
    with (out_dir / "transactions.jsonl").open("wb") as tx_file, (out_dir / "labels.jsonl").open("wb") as labels:
        for kind, tx, at in replay(txs, label_delay_s):
            if kind == "transaction":
                tx_file.write(dumps(to_wire(tx)) + b"\n")
                n_tx += 1
            elif with_labels:
                labels.write(dumps(label_of(tx, at)) + b"\n")
                n_labels += 1
    with (out_dir / "truth.jsonl").open("wb") as truth:
        for tx in txs:
            truth.write(dumps({**to_wire(tx), "is_fraud": tx.is_fraud, "fraud_scenario": tx.fraud_scenario}) + b"\n")
    return n_tx, n_labels


def config_from(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        n_customers=args.customers,
        n_terminals=args.terminals,
        n_days=args.days,
        start_date=date.fromisoformat(args.start_date),
        seed=args.seed,
    )


def add_simulator_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10000)
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--start-date", default="2018-04-01")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label-delay-days", type=float, default=7.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_simulator_arguments(parser)
    parser.add_argument("--rate-tps", type=float, default=0.0, help="transactions per second; 0 = as fast as possible")
    parser.add_argument("--duration-s", type=float, default=None, help="stop publishing after this many seconds")
    parser.add_argument("--limit", type=int, default=None, help="at most this many transactions")
    parser.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--transactions-topic", default=os.environ.get("TRANSACTIONS_TOPIC", "transactions"))
    parser.add_argument("--labels-topic", default=os.environ.get("LABELS_TOPIC", "labels"))
    parser.add_argument("--no-labels", action="store_true", help="publish (and write) no labels")
    parser.add_argument("--out-dir", type=Path, default=None, help="write transactions, labels and truth files")
    parser.add_argument("--no-kafka", action="store_true", help="do not publish (use with --out-dir)")
    add_progress_argument(parser)
    args = parser.parse_args(argv)
    if args.no_kafka and args.out_dir is None:
        parser.error("--no-kafka without --out-dir would do nothing")
    if args.label_delay_days < 0 or (args.rate_tps < 0) or (args.limit is not None and args.limit < 0):
        parser.error("--label-delay-days, --rate-tps and --limit must be >= 0")
    config = config_from(args)
    delay_s = args.label_delay_days * 86400

    started = time.perf_counter()
    txs = simulate(config)
    if args.limit is not None:
        txs = txs[: args.limit]
    print(f"simulated {len(txs)} transactions in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if args.out_dir is not None:
        started = time.perf_counter()
        n_tx, n_labels = write_files(txs, delay_s, args.out_dir, with_labels=not args.no_labels)
        seconds = time.perf_counter() - started
        frauds = sum(tx.is_fraud for tx in txs)
        print(f"wrote {n_tx} transactions, {n_labels} labels, {frauds} frauds to {args.out_dir} in {seconds:.1f} s "
              f"({n_tx / seconds if seconds else 0:.0f} tx/s)")  # fmt: skip
    if args.no_kafka:
        return 0

    expected = len(txs)
    if args.rate_tps > 0 and args.duration_s is not None:
        expected = min(expected, int(args.rate_tps * args.duration_s))
    events = wire_events(config, delay_s, with_labels=not args.no_labels, transactions=txs)
    report = asyncio.run(
        publish(
            args.bootstrap_servers,
            with_progress(events, expected, enabled=not args.no_progress),
            args.transactions_topic,
            args.labels_topic,
            rate_tps=args.rate_tps,
            duration_s=args.duration_s,
        )
    )
    frauds = sum(tx.is_fraud for tx in txs[: report.transactions])  # transactions go out in list order
    print(f"published {report.transactions} transactions, {report.labels} labels, {frauds} frauds "
          f"in {report.seconds:.1f} s ({report.achieved_tps:.0f} tx/s)")  # fmt: skip
    if not report.kept_rate:
        print(f"could not keep the offered rate: achieved {report.achieved_tps:.0f} tx/s of {args.rate_tps:g} offered "
              f"({100 * report.achieved_tps / args.rate_tps:.0f} %)", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
