#!/usr/bin/env python3
"""Pure cost of the feature engine and of scoring per transaction, state bytes per customer and per terminal, and
whether the state stops growing over a whole run.

    python scripts/bench_features.py                          # default simulator sizes, 183 days
    python scripts/bench_features.py --customers 1000 --terminals 2000 --days 120 --out results/features.json
    MODEL_NAME="arf:trees=5,neg=0.1" python scripts/bench_features.py --customers 1000 --terminals 2000 --days 60

``MODEL_NAME`` picks the model scored with (``app/learning/model.py``; the default otherwise). No Kafka. The run is
replayed in event time through the worker's two feature halves (the terminal half as the runtime calls it:
``terminal_x`` then ``terminal_with_entry``) and scoring (``score_transaction``: the model's ``score_one``
and the ``Prediction``), with labels arriving 7 days after their transaction (a fraud recorded in
``frauds_known_s`` then; every label, outside the timings, teaches the model, so it is scored with learned
weights) and idle keys swept once a simulated day in stream time with the worker's TTLs, as the worker's timers
do. Every cost is beside a baseline measured in the same run on the same messages (orjson parsing of the wire
message), so a noisy machine shows in both. State bytes are the JSON of the table value the worker stores
(``{"partition": p, "entries": [...]}``).
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.decisions.assess import score_transaction  # noqa: E402
from app.features.engine import (  # noqa: E402
    DAY_S,
    EMPTY_TERMINAL,
    newest_event_time_s,
    record_fraud,
    terminal_with_entry,
    terminal_x,
)
from app.features.halves import customer_side_features  # noqa: E402
from app.learning.model import FraudModel  # noqa: E402
from app.learning.quality import percentiles  # noqa: E402
from app.records import parse_transaction  # noqa: E402
from app.serialization import dumps, loads  # noqa: E402
from app.settings import load  # noqa: E402
from lab.simulator import SimulatorConfig, simulate, to_wire  # noqa: E402

State = dict[str, Any]  # windows by key


def state_bytes(states: State) -> list[int]:
    return [len(dumps({"partition": 0, "entries": list(entries)})) for entries in states.values()]


def sweep(states: State, watermark_s: float, ttl_s: float) -> int:
    idle = [key for key, entries in states.items() if newest_event_time_s(entries) < watermark_s - ttl_s]
    for key in idle:
        del states[key]
    return len(idle)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10000)
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label-delay-days", type=float, default=7.0)
    parser.add_argument("--out", type=Path, default=None, help="JSON with the per-day series of keys and bytes")
    args = parser.parse_args()
    settings = load()  # MODEL_NAME picks the model measured
    txs = simulate(SimulatorConfig(args.customers, args.terminals, args.days, seed=args.seed))
    names = (
        "orjson parse (baseline)",
        "customer half",
        "terminal half (+ fraud labels due)",
        "both halves",
        "scoring (model.score_one + Prediction)",
        "both halves + scoring",
    )
    timings: dict[str, list[float]] = {name: [] for name in names}
    customers: State = {}
    terminals: State = {}
    frauds_known_s: dict[str, float] = {}
    model = FraudModel(settings.model_name, prior_fraud_rate=settings.prior_fraud_rate)
    pending: list[tuple[float, int, bool, dict[str, float], str]] = []  # (label due, i, is fraud, x, tx_id)
    daily: list[dict[str, float]] = []
    next_sweep_s = txs[0].timestamp.timestamp() + DAY_S
    clock = time.perf_counter_ns
    for i, source in enumerate(txs):
        message = dumps(to_wire(source))
        tx = parse_transaction(message, 65536, 1e7)
        t = tx.event_time_s
        while t >= next_sweep_s:  # once a simulated day, in stream time: what the worker's sweeps do
            expired = sweep(customers, next_sweep_s, settings.customer_ttl_s)
            expired += sweep(terminals, next_sweep_s, settings.terminal_ttl_s)
            c_bytes, t_bytes = state_bytes(customers), state_bytes(terminals)
            daily.append({
                "day": len(daily) + 1, "customers": len(customers), "terminals": len(terminals),
                "customer_bytes": sum(c_bytes), "terminal_bytes": sum(t_bytes), "expired": expired,
            })  # fmt: skip
            next_sweep_s += DAY_S
        arrived: list[tuple[str, float]] = []  # fraud labels that arrived since the previous transaction
        while pending and pending[0][0] <= t:  # labels that arrived by now teach the model (not timed)
            due_s, _, is_fraud, x_learn, tx_id = heapq.heappop(pending)
            model.learn_one(x_learn, is_fraud)
            if is_fraud:
                arrived.append((tx_id, due_s))
        received_at_s = time.time()
        t0 = clock()
        loads(message)
        t1 = clock()
        customer = customers.get(tx.customer_id, [])
        customer_x, customers[tx.customer_id] = customer_side_features(
            tx, customer, settings.lateness_s, frauds_known_s
        )
        t2 = clock()
        for tx_id, known_s in arrived:  # as the runtime does the moment a fraud label arrives
            record_fraud(frauds_known_s, tx_id, known_s)
        terminal = terminals.get(tx.terminal_id, EMPTY_TERMINAL)
        x = terminal_x(terminal, t, frauds_known_s, settings.terminal_delay_days)
        terminals[tx.terminal_id] = terminal_with_entry(
            terminal, t, tx.tx_id, settings.terminal_delay_days, settings.lateness_s
        )
        t3 = clock()
        x = {**customer_x, **x}
        t4 = clock()
        score_transaction(tx, x, model, threshold=settings.decision_threshold, received_at_s=received_at_s)
        t5 = clock()
        heapq.heappush(pending, (t + args.label_delay_days * DAY_S, i, source.is_fraud, x, tx.tx_id))
        timings[names[0]].append((t1 - t0) / 1000)
        timings[names[1]].append((t2 - t1) / 1000)
        timings[names[2]].append((t3 - t2) / 1000)
        timings[names[3]].append((t3 - t1) / 1000)
        timings[names[4]].append((t5 - t4) / 1000)
        timings[names[5]].append((t5 - t1) / 1000)
    base = percentiles(timings[names[0]], (50,))["p50"]
    print(f"{len(txs)} transactions, {args.customers} customers, {args.terminals} terminals, {args.days} days")
    print("| code | p50 µs | p99 µs | mean µs | p50 / baseline p50 |")
    print("|---|---|---|---|---|")
    for name, values in timings.items():
        p = percentiles(values, (50, 99))
        mean = sum(values) / len(values)
        print(f"| {name} | {p['p50']:.1f} | {p['p99']:.1f} | {mean:.1f} | {p['p50'] / base:.1f} |")
    for label, states in (("customer", customers), ("terminal", terminals)):
        sizes = state_bytes(states)
        p = percentiles(sizes, (50, 99))
        entries = sum(len(e) for e in states.values()) / max(1, len(states))
        print(f"state per {label} at the end (JSON bytes): mean {sum(sizes) / len(sizes):.0f}, p50 {p['p50']:.0f}, "
              f"p99 {p['p99']:.0f}; {entries:.1f} entries per key")  # fmt: skip
    print("| day | customers | terminals | customer MB | terminal MB | expired that day |")
    print("|---|---|---|---|---|---|")
    for row in daily:
        if row["day"] in (1, 7, 15, 30, 31, 38, 45, 60, 90, 120, 150) or row is daily[-1]:
            print(f"| {row['day']} | {row['customers']} | {row['terminals']} | {row['customer_bytes'] / 1e6:.2f} | "
                  f"{row['terminal_bytes'] / 1e6:.2f} | {row['expired']} |")  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        summary = {name: percentiles(values, (50, 99)) for name, values in timings.items()}
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "timings_us": summary,
                                        "daily": daily}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
