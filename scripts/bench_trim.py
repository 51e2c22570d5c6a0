#!/usr/bin/env python3
"""What a ``malloc_trim(0)`` in another thread costs a thread that allocates (MEMORY_TRIM_INTERVAL_S).

A heap of ~350 MB of 0.6-4 KB blocks (glibc's, not pymalloc's), two thirds freed at random places; then the main
thread allocates 1 KB blocks in a loop for a second, timing each gap between iterations, once alone and once while
another thread trims. The longest gap beside the trim's duration says whether the allocating thread waited for it.

    .venv/bin/python scripts/bench_trim.py --rounds 3
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import allocator  # noqa: E402


def _gaps_ms(duration_s: float) -> tuple[float, float]:
    gaps: list[float] = []
    end = time.perf_counter() + duration_s
    last = time.perf_counter()
    while True:
        _blocks = [bytes(1000) for _ in range(20)]
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
        if now > end:
            break
    gaps.sort()
    return gaps[-1] * 1000, gaps[int(len(gaps) * 0.999)] * 1000


def _timed_trim(took: list[float]) -> None:
    started = time.perf_counter()
    allocator.trim()
    took.append((time.perf_counter() - started) * 1000)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    print("| round | alone: longest gap, p99.9 (ms) | beside a trim: longest gap, p99.9 (ms) | the trim (ms) |")
    print("|---|---|---|---|")
    for i in range(1, a.rounds + 1):
        rng = random.Random(i)
        blocks = [bytes(rng.randint(600, 4000)) for _ in range(150_000)]
        kept = blocks[::3]
        del blocks
        alone = _gaps_ms(1.0)
        took: list[float] = []

        thread = threading.Thread(target=_timed_trim, args=(took,))
        thread.start()
        beside = _gaps_ms(1.0)
        thread.join()
        del kept
        print(f"| {i} | {alone[0]:.1f}, {alone[1]:.2f} | {beside[0]:.1f}, {beside[1]:.2f} | {took[0]:.1f} |")


if __name__ == "__main__":
    main()
