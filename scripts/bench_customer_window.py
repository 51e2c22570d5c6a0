#!/usr/bin/env python3
"""One customer's decision on its window, repeated: at 1x (``hot``: the window parsed) or at 10x (``cold``: unpacked
from the packed tier, decided, another window packed), with ``pruned`` and ``after_entry`` as the scorer calls them.

    python scripts/bench_customer_window.py hot 20000            # prints µs a decision (noisy on a shared machine)
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python scripts/bench_customer_window.py cold 1000
    PYTHONPATH=../main python scripts/bench_customer_window.py cold 1000     # another checkout's app

Under ``callgrind``, the instructions of N decisions less those of 0 (the set-up) over N are a decision's instruction
count: deterministic, so two commits compare on a loaded machine. A 60-entry window (about 30 days), its terminals
drawn from ``--terminals`` (the simulator's customers reach ~31 at 1x, ~300 at 10x), 2,000 known frauds, none
of them in the window. No Kafka, no store.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

if not any(Path(p, "app").is_dir() for p in sys.path if p):  # PYTHONPATH picks the checkout; else this one
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.features.engine import CustomerWindow, customer_features  # noqa: E402
from app.state.customers import after_entry, pack_window, pruned, unpack_window  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("hot", "cold"))
    parser.add_argument("decisions", type=int)
    parser.add_argument("--terminals", type=int, default=31, help="the terminals the customer's entries use")
    args = parser.parse_args()
    rng = random.Random(0)
    pool = [f"t-{rng.randrange(40000):05d}" for _ in range(args.terminals)]
    t = 0.0
    entries = []
    for i in range(60):
        t += rng.uniform(0, 43200)
        entries.append((t, round(rng.uniform(1, 200), 2), rng.choice(pool), f"tx-{i:010d}", i))
    window = CustomerWindow.of(entries)
    frauds = {f"tx-{rng.randrange(10**9):010d}": 0.0 for _ in range(2000)}
    raw = pack_window(window) or b""
    started = time.process_time()
    for _ in range(args.decisions):
        before = window if args.mode == "hot" else unpack_window(raw)
        _, after = customer_features(before, t + 600, 50.0, pool[3], "tx-new", 86400.0, frauds)
        if args.mode == "cold":
            pack_window(window)  # the customer the parsed tier evicts
        after_entry(after, "tx-new")
        pruned(before, after)
    if args.decisions:
        print(f"{(time.process_time() - started) / args.decisions * 1e6:.2f} µs a decision ({args.mode})")


if __name__ == "__main__":
    main()
