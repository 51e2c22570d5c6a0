#!/usr/bin/env python3
"""Pure cost per transaction of the terminal half on a ~38-entry terminal, an earlier commit's code beside this one's.

    python scripts/bench_terminal.py                      # before = 424b3f0 (entry tuples, JSON values)
    python scripts/bench_terminal.py --before main --terminals 5000 --transactions 100000

What a worker does per transaction when the terminal is not cached (at 10 times the simulator's population nearly
every one): read the stored value, ``terminal_x``, add the entry, write the value again. The code of ``--before`` is
read with ``git show`` (app/features/engine.py and app/state/terminals.py) and imported beside this checkout's, so
both run in one process on the same transactions, rounds alternating; the figures are the best round of each (a
shared machine slows some rounds). Every transaction's features must be equal in both. No Kafka, no store.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.features import engine  # noqa: E402
from app.state import terminals  # noqa: E402

DAY_S = 86400.0
DELAY_DAYS, LATENESS_S = 7.0, DAY_S


def module_at(rev: str, path: str, name: str, replacing: dict[str, types.ModuleType]) -> types.ModuleType:
    """``path`` as it was at ``rev``, imported as ``name`` (its imports of ``replacing``'s keys get those)."""
    source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True)
    module = types.ModuleType(name)
    saved = {k: sys.modules[k] for k in replacing}
    sys.modules.update(replacing)
    try:
        exec(compile(source.stdout, f"{rev}:{path}", "exec"), module.__dict__)  # noqa: S102 - this repository's code
    finally:
        sys.modules.update(saved)
    return module


def implementations(rev: str) -> dict[str, dict[str, Callable[..., Any]]]:
    old_engine = module_at(rev, "app/features/engine.py", "before_engine", {})
    old_terminals = module_at(rev, "app/state/terminals.py", "before_terminals", {"app.features.engine": old_engine})

    def old_add(state: Any, t: float, tx_id: str) -> Any:  # as TerminalAggregates.add did: a list, then a tuple
        entries = list(state)
        old_engine.add_terminal_entry(entries, t, tx_id, DELAY_DAYS, LATENESS_S)
        return tuple(entries)

    def new_add(state: Any, t: float, tx_id: str) -> Any:
        return engine.terminal_with_entry(state, t, tx_id, DELAY_DAYS, LATENESS_S)

    return {
        f"before ({rev})": {"decode": old_terminals.decode_state, "x": old_engine.terminal_x, "add": old_add,
                            "encode": old_terminals.encode_state},
        "after": {"decode": terminals.decode_state, "x": engine.terminal_x, "add": new_add,
                  "encode": terminals.encode_state},
    }  # fmt: skip


def workload(
    n_terminals: int, n_tx: int, n_frauds: int, seed: int
) -> tuple[list[list[tuple[float, str, int]]], list[Any], dict]:
    """Terminals of ~38 entries (one transaction a day on average, the horizon 7 + 30 + 1 days), the transactions
    (terminal index, t, tx_id), and fraud labels for ~1 % of the ids (known 7 days after their transaction), with
    labels of other terminals' frauds up to ``n_frauds`` (a worker holds every fraud of the last 38 days)."""
    rng = random.Random(seed)
    clock = [0.0] * n_terminals
    start: list[list[tuple[float, str, int]]] = [[] for _ in range(n_terminals)]
    frauds: dict[str, float] = {}
    serial = 0

    def next_tx(k: int) -> tuple[float, str]:
        nonlocal serial
        serial += 1
        clock[k] += rng.expovariate(1 / DAY_S)
        tx_id = f"tx-{serial:010d}"
        if rng.random() < 0.01:
            frauds[tx_id] = clock[k] + 7 * DAY_S
        return clock[k], tx_id

    for k in range(n_terminals):
        for seq in range(38):
            t, tx_id = next_tx(k)
            start[k].append((t, tx_id, seq))
    txs = []
    for _ in range(n_tx):
        k = rng.randrange(n_terminals)
        t, tx_id = next_tx(k)
        txs.append((k, t, tx_id))
    for i in range(n_frauds - len(frauds)):
        frauds[f"tx-{i:09d}x"] = 0.0
    return start, txs, frauds


def run(impl: dict[str, Callable[..., Any]], stored: list[bytes], txs: list[Any], frauds: dict) -> tuple[float, list]:
    """decode, terminal_x, add, encode per transaction: seconds, and the features."""
    decode, terminal_x, add, encode = impl["decode"], impl["x"], impl["add"], impl["encode"]
    stored = list(stored)
    out = []
    started = time.perf_counter()
    for k, t, tx_id in txs:
        state = decode(stored[k])
        out.append(terminal_x(state, t, frauds, DELAY_DAYS))
        stored[k] = encode(add(state, t, tx_id))
    return time.perf_counter() - started, out


def steps(impl: dict[str, Callable[..., Any]], stored: list[bytes], txs: list[Any], frauds: dict) -> dict[str, float]:
    """Each step alone over the same transactions (the inputs it sees in :func:`run`): seconds per step."""
    decode, terminal_x, add, encode = impl["decode"], impl["x"], impl["add"], impl["encode"]
    raws, states, afters = [], [], []
    stored = list(stored)
    for k, t, tx_id in txs:
        raws.append(stored[k])
        states.append(decode(stored[k]))
        afters.append(add(states[-1], t, tx_id))
        stored[k] = encode(afters[-1])
    timed: dict[str, float] = {}
    started = time.perf_counter()
    for raw in raws:
        decode(raw)
    timed["decode"] = time.perf_counter() - started
    started = time.perf_counter()
    for state, (_, t, _) in zip(states, txs, strict=True):
        terminal_x(state, t, frauds, DELAY_DAYS)
    timed["terminal_x"] = time.perf_counter() - started
    started = time.perf_counter()
    for state, (_, t, tx_id) in zip(states, txs, strict=True):
        add(state, t, tx_id)
    timed["add"] = time.perf_counter() - started
    started = time.perf_counter()
    for after in afters:
        encode(after)
    timed["encode"] = time.perf_counter() - started
    timed["stored bytes"] = sum(map(len, stored)) / len(stored) * len(txs)  # per transaction, once divided below
    return timed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="424b3f0", help="the commit to compare with (git rev)")
    parser.add_argument("--terminals", type=int, default=2000)
    parser.add_argument("--transactions", type=int, default=50_000)
    parser.add_argument("--frauds", type=int, default=10_000, help="fraud labels held (all terminals)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    impls = implementations(args.before)
    start, txs, frauds = workload(args.terminals, args.transactions, args.frauds, args.seed)
    stored = {name: [impl["encode"](tuple(entries)) for entries in start] for name, impl in impls.items()}
    best: dict[str, dict[str, float]] = {name: {} for name in impls}
    features: dict[str, list] = {}
    for _ in range(args.rounds):
        for name, impl in impls.items():
            seconds, features[name] = run(impl, stored[name], txs, frauds)
            timed = {"all four": seconds, **steps(impl, stored[name], txs, frauds)}
            best[name] = {step: min(v, best[name].get(step, v)) for step, v in timed.items()}
    first, *rest = features.values()
    if any(other != first for other in rest):
        raise SystemExit("the features differ between the implementations")
    entries = sum(len(e) for e in start) / len(start)
    print(f"{len(txs)} transactions over {len(start)} terminals of {entries:.0f} entries, {len(frauds)} fraud labels "
          f"held, best of {args.rounds} rounds (features equal in both)")  # fmt: skip
    names = list(impls)
    print(f"| per transaction | {' | '.join(names)} | ratio (before / after) |")
    print("|---|" + "---|" * len(names) + "---|")
    for step in best[names[0]]:
        unit, scale = ("bytes", 1.0) if step == "stored bytes" else ("µs", 1e6)
        values = [best[name][step] / len(txs) * scale for name in names]
        print(f"| {step} ({unit}) | {' | '.join(f'{v:.2f}' for v in values)} | {values[0] / values[-1]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
