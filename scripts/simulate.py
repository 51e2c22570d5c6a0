#!/usr/bin/env python3
"""Publish simulated card traffic: the handbook's simulator, with labels delayed in event time.

    python scripts/simulate.py --customers 500 --terminals 1000 --days 30 --rate-tps 200
    python scripts/simulate.py --no-kafka --out-dir runs/small --customers 50 --terminals 100 --days 10

A label due ``--label-delay-days`` after its transaction is published among the transactions of that later
time whatever the replay speed, so a fast replay teaches the model exactly what a live stream would.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaProducer  # noqa: E402

from app.serialization import dumps  # noqa: E402
from app.simulator import SimulatorConfig, label_of, replay, simulate, to_wire  # noqa: E402

Event = tuple[str, bytes, bytes]  # (kind, key, value) with kind "transaction" or "label"


@dataclass
class PublishReport:
    transactions: int = 0
    labels: int = 0
    seconds: float = 0.0
    offered_tps: float = 0.0
    kept_rate: bool = True
    published_tx_ids: list[str] = field(default_factory=list)

    @property
    def achieved_tps(self) -> float:
        return self.transactions / self.seconds if self.seconds > 0 else 0.0


def wire_events(config: SimulatorConfig, label_delay_s: float, with_labels: bool = True) -> Iterator[Event]:
    """The run as (kind, key, value) messages in event-time order, labels among later transactions."""
    for kind, tx, at in replay(simulate(config), label_delay_s):
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

    The rate counts transactions (labels ride along) and follows absolute deadlines, so a slow moment is
    caught up rather than drifting. ``kept_rate`` is False when the achieved rate fell under 95 % of it.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    report = PublishReport(offered_tps=rate_tps)
    started = time.perf_counter()
    pending: list[asyncio.Future[object]] = []
    try:
        for kind, key, value in events:
            if kind == "transaction":
                if limit is not None and report.transactions >= limit:
                    break
                now = time.perf_counter() - started
                if duration_s is not None and now >= duration_s:
                    break
                if rate_tps > 0:
                    due = report.transactions / rate_tps
                    if due > now:
                        await asyncio.sleep(due - now)
                report.transactions += 1
                topic = transactions_topic
            else:
                report.labels += 1
                topic = labels_topic
            pending.append(await producer.send(topic, key=key, value=value))
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    report.seconds = time.perf_counter() - started
    if rate_tps > 0:
        report.kept_rate = report.achieved_tps >= 0.95 * rate_tps
    return report


def write_files(config: SimulatorConfig, label_delay_s: float, out_dir: Path) -> int:
    """transactions.jsonl and labels.jsonl in publishing order, and truth.jsonl with every label and scenario."""
    out_dir.mkdir(parents=True, exist_ok=True)
    txs = simulate(config)
    with (out_dir / "transactions.jsonl").open("wb") as tx_file, (out_dir / "labels.jsonl").open("wb") as labels:
        for kind, tx, at in replay(txs, label_delay_s):
            if kind == "transaction":
                tx_file.write(dumps(to_wire(tx)) + b"\n")
            else:
                labels.write(dumps(label_of(tx, at)) + b"\n")
    with (out_dir / "truth.jsonl").open("wb") as truth:
        for tx in txs:
            truth.write(dumps({**to_wire(tx), "is_fraud": tx.is_fraud, "fraud_scenario": tx.fraud_scenario}) + b"\n")
    return len(txs)


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
    parser.add_argument("--duration-s", type=float, default=None)
    parser.add_argument("--limit", type=int, default=None, help="at most this many transactions")
    parser.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--transactions-topic", default=os.environ.get("TRANSACTIONS_TOPIC", "transactions"))
    parser.add_argument("--labels-topic", default=os.environ.get("LABELS_TOPIC", "labels"))
    parser.add_argument("--no-labels", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=None, help="also write transactions, labels and truth files")
    parser.add_argument("--no-kafka", action="store_true", help="only write files")
    args = parser.parse_args(argv)
    config = config_from(args)
    delay_s = args.label_delay_days * 86400
    if args.out_dir:
        count = write_files(config, delay_s, args.out_dir)
        print(f"wrote {count} transactions to {args.out_dir}")
    if args.no_kafka:
        return 0
    report = asyncio.run(
        publish(
            args.bootstrap_servers,
            wire_events(config, delay_s, with_labels=not args.no_labels),
            args.transactions_topic,
            args.labels_topic,
            rate_tps=args.rate_tps,
            duration_s=args.duration_s,
            limit=args.limit,
        )
    )
    print(
        f"published {report.transactions} transactions and {report.labels} labels in {report.seconds:.1f} s "
        f"({report.achieved_tps:.0f} tx/s)"
    )
    if not report.kept_rate:
        print(f"could not keep the offered rate of {args.rate_tps:g} tx/s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
