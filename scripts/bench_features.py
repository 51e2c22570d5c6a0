#!/usr/bin/env python3
"""Pure cost of the feature code per transaction, and the bytes of state per customer and per terminal.

    python scripts/bench_features.py --customers 1000 --terminals 2000 --days 120

No Kafka. Every figure is beside a baseline measured in the same run on the same messages (orjson parsing
of the wire message), so a noisy machine shows in both.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.evaluation import percentiles  # noqa: E402
from app.feature_engine import customer_features, mark_fraud, terminal_features  # noqa: E402
from app.features import compute_features  # noqa: E402
from app.records import parse_transaction  # noqa: E402
from app.serialization import dumps, loads  # noqa: E402
from app.simulator import SimulatorConfig, simulate, to_wire  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--terminals", type=int, default=2000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    txs = simulate(SimulatorConfig(args.customers, args.terminals, args.days, seed=args.seed))
    raw = [dumps(to_wire(tx)) for tx in txs]
    parsed = [parse_transaction(r, 65536, 1e7) for r in raw]
    timings: dict[str, list[float]] = {
        "orjson parse (baseline)": [],
        "worker features (calendar + customer windows)": [],
        "engine, customer and terminal": [],
    }
    worker_states: dict[str, list[list[object]]] = {}
    customers: dict[str, list[list[object]]] = {}
    terminals: dict[str, list[list[object]]] = {}
    clock = time.perf_counter_ns
    for tx, message, source in zip(parsed, raw, txs, strict=True):
        t0 = clock()
        loads(message)
        t1 = clock()
        _, worker_states[tx.customer_id] = compute_features(tx, worker_states.get(tx.customer_id, []), 86400.0)
        t2 = clock()
        t = tx.event_time_s
        _, customers[tx.customer_id] = customer_features(
            customers.get(tx.customer_id, []), t, tx.amount, tx.terminal_id
        )
        _, terminals[tx.terminal_id] = terminal_features(terminals.get(tx.terminal_id, []), t, tx.tx_id)
        if source.is_fraud:  # the label is applied at once here: the cost is what matters, not its delay
            terminals[tx.terminal_id] = mark_fraud(terminals[tx.terminal_id], t, tx.tx_id)
        t3 = clock()
        timings["orjson parse (baseline)"].append((t1 - t0) / 1000)
        timings["worker features (calendar + customer windows)"].append((t2 - t1) / 1000)
        timings["engine, customer and terminal"].append((t3 - t2) / 1000)
    base = percentiles(timings["orjson parse (baseline)"], (50,))["p50"]
    print(f"{len(txs)} transactions, {args.customers} customers, {args.terminals} terminals, {args.days} days")
    print("| code | p50 µs | p99 µs | mean µs | p50 / baseline p50 |")
    print("|---|---|---|---|---|")
    for name, values in timings.items():
        p = percentiles(values, (50, 99))
        mean = sum(values) / len(values)
        print(f"| {name} | {p['p50']:.1f} | {p['p99']:.1f} | {mean:.1f} | {p['p50'] / base:.1f} |")
    c_bytes = [len(dumps(state)) for state in customers.values()]
    t_bytes = [len(dumps(state)) for state in terminals.values()]
    cp, tp = percentiles(c_bytes, (50, 99)), percentiles(t_bytes, (50, 99))
    print(f"engine state per customer (JSON bytes): mean {sum(c_bytes) / len(c_bytes):.0f}, p50 {cp['p50']:.0f}, "
          f"p99 {cp['p99']:.0f}")  # fmt: skip
    print(f"engine state per terminal (JSON bytes): mean {sum(t_bytes) / len(t_bytes):.0f}, p50 {tp['p50']:.0f}, "
          f"p99 {tp['p99']:.0f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
