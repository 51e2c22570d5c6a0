#!/usr/bin/env python3
"""Drift without labels (app/monitoring/drift.py), pure: its cost per transaction and its false alarms.

    python scripts/bench_drift.py                       # cost on the feature set's names, 2 h stationary, a cents shift
    python scripts/bench_drift.py --hours 0.5 --rounds 3

- Cost: a transaction's feature dict of every name of the feature set (app/features/spec.py), fed through
  ``observe`` (the decision path's part) and ``report`` every 4,000 transactions (the monitor's, off the hot loop,
  but on the same core), against the same loop without the monitor; best of ``--rounds``, per transaction.
- False alarms: ``--hours`` of a stationary synthetic stream at 500 tx/s (the test's four features: a log-normal
  amount, a count, a beta risk, a flag; a beta score), a report every 8 s of it: reports other than ``ok``.
- Detection: the same stream whose amounts turn to cents halfway: the delay, in transactions and in seconds at
  500 tx/s, until a report says ``drift`` with ``amount`` worst.
No Kafka; the detection on the worker's own simulated traffic is measured once the monitor is wired in.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.features.spec import FEATURE_NAMES  # noqa: E402
from app.monitoring.drift import DriftMonitor  # noqa: E402
from tests.test_drift import NAMES, run, stream  # noqa: E402

RATE_TPS = 500
REPORT_EVERY = 4000


def cost(transactions: int, rounds: int) -> tuple[float, float]:
    """(µs per transaction with the monitor, µs without it), best rounds."""
    rng = random.Random(1)
    rows = [({name: rng.random() * 100 for name in FEATURE_NAMES}, rng.random() * 0.1) for _ in range(20_000)]
    best_with, best_without = float("inf"), float("inf")
    for _ in range(rounds):
        monitor = DriftMonitor(FEATURE_NAMES)
        started = time.perf_counter()
        for i in range(transactions):
            x, score = rows[i % len(rows)]
            monitor.observe(x, score)
            if i % REPORT_EVERY == 0:
                monitor.report()
        best_with = min(best_with, (time.perf_counter() - started) / transactions * 1e6)
        started = time.perf_counter()
        for i in range(transactions):
            x, score = rows[i % len(rows)]
            if i % REPORT_EVERY == 0:
                pass
        best_without = min(best_without, (time.perf_counter() - started) / transactions * 1e6)
    return best_with, best_without


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=400_000, help="for the cost")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hours", type=float, default=2.0, help="of stationary traffic at 500 tx/s")
    args = parser.parse_args()

    with_monitor, without = cost(args.transactions, args.rounds)
    print(f"cost: {with_monitor:.3f} µs per transaction with the monitor, {without:.3f} without: "
          f"{with_monitor - without:.3f} µs for {len(FEATURE_NAMES)} features, one in 8 sampled")  # fmt: skip

    n = int(args.hours * 3600 * RATE_TPS)
    started = time.perf_counter()
    statuses = run(DriftMonitor(NAMES), stream(7, n), REPORT_EVERY)
    alarms = [s for s in statuses if s[1] != "ok"]
    print(f"stationary: {args.hours:g} h at {RATE_TPS} tx/s ({n:,} transactions), {len(statuses)} reports, "
          f"{len(alarms)} not ok {alarms[:5]} ({time.perf_counter() - started:.0f} s to run)")  # fmt: skip

    def cents(x: dict[str, float], score: float) -> tuple[dict[str, float], float]:
        return {**x, "amount": x["amount"] * 100}, score

    half = 200_000
    shifted = run(DriftMonitor(NAMES), stream(3, 2 * half, cents, after=half), REPORT_EVERY)
    found = next((i for i, status, worst in shifted if i > half and status == "drift" and worst == "amount"), None)
    if found is None:
        print("cents: not found")
        return 1
    print(f"cents from transaction {half:,}: drift with amount worst at {found:,}, {found - half:,} transactions "
          f"later ({(found - half) / RATE_TPS:.0f} s at {RATE_TPS} tx/s)")  # fmt: skip
    return 0 if not alarms else 1


if __name__ == "__main__":
    sys.exit(main())
