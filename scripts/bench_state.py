#!/usr/bin/env python3
"""CPU time per transaction of the decision path on RocksDB at 1x and 10x populations, in one process, no Kafka.

    python scripts/bench_state.py                                   # 1x and 10x, the settings' defaults
    python scripts/bench_state.py --customer-cache 400 --rounds 8   # caches under the 1x population
    python scripts/bench_state.py --scales 10 --only-run 600        # one world busy for py-spy

Each scale is a world as ``scripts/scale.py`` builds it (2,000 x scale customers, 4,000 x scale terminals, the
simulator's seed 3, 4 input partitions by customer): a :class:`~app.decisions.scorer.Scorer` over a RocksDB
customer store and :class:`~app.state.terminals.TerminalAggregates` over a RocksDB terminal store (one
:class:`RocksDBConfig`, as a worker), fed the first ``--history-days`` days in batches of 500 per partition, each
batch's ``on_commit`` run as the loop would after the Kafka commit, the terminals flushed every 10 batches (the
feed's 1 s at ~5,000 tx/s), the scored transactions read back after each flush as the feed reads them from the
terminal log (``--no-read-back``: not) and the fraud labels applied ``--label-delay-days`` after their transactions
(``--no-labels``: none, as in the sixth part). Then the worlds take ``--round-tx`` more transactions each,
alternating, ``--rounds`` times: the process's CPU time per transaction (RocksDB's background threads included) and
this thread's, the median of the rounds reported. The machine is shared: compare the scales of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PARTITIONS = 4
BATCH = 500
DAY_S = 86400.0


class World:
    """One population's worker state, driven batch by batch."""

    def __init__(self, scale: int, args: argparse.Namespace, directory: Path) -> None:
        from aiokafka import TopicPartition

        from app.decisions.scorer import Scorer
        from app.learning.model import FraudModel
        from app.monitoring.health import HealthWindow
        from app.serialization import dumps
        from app.settings import load
        from app.state.rocksdb_store import RocksDBConfig, RocksDBStore
        from app.state.terminals import TerminalAggregates
        from lab.simulator import SimulatorConfig, simulate, to_wire

        env = {}
        if args.customer_cache is not None:
            env["STATE_CUSTOMER_CACHE"] = str(args.customer_cache)
        if args.packed_mb is not None:
            env["STATE_CUSTOMER_PACKED_MB"] = str(args.packed_mb)
        if args.terminal_cache is not None:
            env["STATE_TERMINAL_CACHE"] = str(args.terminal_cache)
        if args.terminal_packed_mb is not None:
            env["STATE_TERMINAL_PACKED_MB"] = str(args.terminal_packed_mb)
        settings = load(env)
        self.scale = scale
        simulated = simulate(SimulatorConfig(n_customers=2000 * scale, n_terminals=4000 * scale,
                                             n_days=args.history_days + args.measure_days, seed=3))  # fmt: skip
        start_s = simulated[0].timestamp.timestamp()
        self.history = sum(1 for t in simulated if t.timestamp.timestamp() < start_s + args.history_days * DAY_S)
        # (partition, value): orjson's bytes keep their 1 KiB buffer's allocation (~4 KiB a record in all), a copy
        # of exact size does not
        self.records = [(zlib.crc32(t.customer_id.encode()) % PARTITIONS, dumps(to_wire(t)).decode().encode())
                        for t in simulated]  # fmt: skip
        self.customer_ids = sorted({t.customer_id for t in simulated})
        # the fraud labels as the feed applies them (known label_delay_days after the transaction), in time order
        delay_s = args.label_delay_days * DAY_S
        self.frauds = [(t.timestamp.timestamp() + delay_s, t.tx_id) for t in simulated if t.is_fraud and args.labels]
        self.times_s = [t.timestamp.timestamp() for t in simulated]
        self.tx_ids = [t.tx_id for t in simulated]
        self.read_back = args.read_back
        self.unread = 0  # the first transaction the "feed" has not read back yet
        self.next_fraud = 0
        del simulated
        config = RocksDBConfig.from_settings(settings)
        self.terminal_store = RocksDBStore("terminals", directory / f"x{scale}", config)
        self.aggregates = TerminalAggregates(settings.terminal_delay_days, settings.lateness_s, settings.terminal_ttl_s,
                                             self.terminal_store.open_partition(0),
                                             cache_size=settings.state_terminal_cache,
                                             **packed_terminals(settings))  # fmt: skip
        self.scorer = Scorer(settings, FraudModel(settings.model_name), self.aggregates,
                             HealthWindow(60.0, time.monotonic()),
                             store=RocksDBStore("customers", directory / f"x{scale}", config),
                             changelog_topic="changelog", terminal_topic="terminal-log")  # fmt: skip
        self.tps = [TopicPartition("transactions", p) for p in range(PARTITIONS)]
        for p in range(PARTITIONS):
            self.scorer.open_state(p)
        self.position = 0
        self.offsets = [0] * PARTITIONS
        self.batches = 0

    def run(self, n: int) -> int:
        """Decide the next ``n`` transactions (fewer at the end of the simulation); returns how many."""
        end = min(len(self.records), self.position + n)
        for start in range(self.position, end, BATCH * PARTITIONS):
            now_s = self.times_s[start]
            while self.next_fraud < len(self.frauds) and self.frauds[self.next_fraud][0] <= now_s:
                known_s, tx_id = self.frauds[self.next_fraud]
                self.aggregates.add_fraud(tx_id, known_s)
                self.next_fraud += 1
            by_partition: list[list[Any]] = [[] for _ in range(PARTITIONS)]
            flushed = False
            for p, value in self.records[start : min(end, start + BATCH * PARTITIONS)]:
                offset = self.offsets[p]
                record = SimpleNamespace(topic="transactions", partition=p, offset=offset, key=b"", value=value)
                self.offsets[p] += 1
                by_partition[p].append(record)
            for p, records in enumerate(by_partition):
                if records:
                    batch = self.scorer.process(self.tps[p], records)
                    batch.produced_to = self.offsets[p]  # type: ignore[attr-defined]
                    batch.on_commit()  # type: ignore[misc]
                    self.batches += 1
                    if self.batches % 10 == 0:
                        self.aggregates.flush({})
                        flushed = True
            if flushed and self.read_back:  # the feed reads the scored transactions back from the terminal log
                read_back = self.aggregates.read_back
                for tx_id in self.tx_ids[self.unread : min(end, start + BATCH * PARTITIONS)]:
                    read_back(tx_id)
                self.unread = min(end, start + BATCH * PARTITIONS)
        done = end - self.position
        self.position = end
        return done

    def set_customer_cache(self, size: int) -> None:
        for state in self.scorer.partitions.values():
            state.cache_size = state.caches.size = size
            while len(state.caches.parsed) > size:
                state.caches.parsed.popitem(last=False)

    def miss_us(self, n: int) -> tuple[float, float]:
        """CPU µs of one customer read from the store (the cache bypassed): the store read alone, and with the parse."""
        from app.state.customers import customer_prefix

        ids = self.customer_ids[:: max(1, len(self.customer_ids) // n)][:n]
        parts = self.scorer.partitions
        where = [(parts[zlib.crc32(c.encode()) % PARTITIONS], c) for c in ids]
        t0 = time.thread_time()
        for state, c in where:
            for _ in state.store.iter_prefix(customer_prefix(c)):
                pass
        t1 = time.thread_time()
        for state, c in where:
            if hasattr(state, "read"):
                state.read(c)
            else:  # the code before PartitionState.read (a baseline checkout)
                from app.state.customers import restored_state

                n = len(customer_prefix(c))
                restored_state({k[n:].decode(): v for k, v in state.store.iter_prefix(customer_prefix(c))})
        t2 = time.thread_time()
        return (t1 - t0) / len(ids) * 1e6, (t2 - t1) / len(ids) * 1e6

    def terminals_packed(self, budget_mb: float) -> None:
        """The packed terminal cache switched for the next round (outside the timed part): off, emptied; on, filled
        with every stored terminal the parsed cache does not hold, up to ``budget_mb``, as it stands after a long
        run (the state is flushed first either way, so both rounds start alike)."""
        from app.state.terminals import TERMINAL_PREFIX

        a = self.aggregates
        a.flush({})
        a.caches.packed.clear()
        a.caches.packed_bytes = 0
        a.caches.packed_budget_bytes = int(budget_mb * 2**20)
        if not budget_mb or a.store is None:
            return
        n = len(TERMINAL_PREFIX)
        for key, raw in a.store.iter_prefix(TERMINAL_PREFIX):
            terminal_id = key[n:].decode()
            if terminal_id in a.caches.parsed:
                continue
            if a.caches.packed_bytes + len(raw) > a.caches.packed_budget_bytes:
                break
            a.caches.packed[terminal_id] = raw
            a.caches.packed_bytes += len(raw)

    def customers_cached(self) -> int:
        return sum(len(p.caches.parsed) for p in self.scorer.partitions.values())

    def terminals_held(self) -> str:
        """Terminals parsed in memory, and packed (MB) where the code has a packed cache."""
        a = self.aggregates
        caches = getattr(a, "caches", None)
        if caches is None:  # the code before the two-tier cache (a baseline checkout)
            packed = getattr(a, "packed", None)
            held = f"{len(a.cache):,}"
            return held if packed is None else f"{held} + {len(packed):,} packed ({a.packed_bytes / 2**20:.1f} MB)"
        return f"{len(caches.parsed):,} + {len(caches.packed):,} packed ({caches.packed_bytes / 2**20:.1f} MB)"


def packed_terminals(settings: Any) -> dict[str, int]:
    """``packed_cache_bytes`` for TerminalAggregates from STATE_TERMINAL_PACKED_MB; nothing for code without it (a
    baseline checkout runs this script too)."""
    mb = getattr(settings, "state_terminal_packed_mb", None)
    return {} if mb is None else {"packed_cache_bytes": int(mb * 2**20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--history-days", type=int, default=30)
    parser.add_argument("--measure-days", type=int, default=10, help="1x: ~3,850 transactions a day")
    parser.add_argument("--round-tx", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--customer-cache", type=int, help="STATE_CUSTOMER_CACHE (per partition)")
    parser.add_argument(
        "--cache-sizes", type=int, nargs="*", default=[], help="then the same rounds at each of these customer caches"
    )
    parser.add_argument("--packed-mb", type=float, help="STATE_CUSTOMER_PACKED_MB (per partition)")
    parser.add_argument("--terminal-cache", type=int, help="STATE_TERMINAL_CACHE")
    parser.add_argument("--terminal-packed-mb", type=float, help="STATE_TERMINAL_PACKED_MB (code without it: ignored)")
    parser.add_argument("--no-labels", dest="labels", action="store_false", help="no fraud labels (as the sixth part)")
    parser.add_argument("--label-delay-days", type=float, default=7.0)
    parser.add_argument("--no-read-back", dest="read_back", action="store_false",
                        help="the scored transactions never read back as the feed does (the sixth part's runs: the "
                             "marks of what this worker added pile up to ADDED_HERE_MAX)")  # fmt: skip
    parser.add_argument("--ab-terminal-packed-mb", type=float,
                        help="then rounds alternating the packed terminal cache off and on at this budget (MB), "
                             "each world on its own data: the cache's effect within one process")  # fmt: skip
    parser.add_argument("--only-run", type=float, help="seconds: keep the last scale busy (for py-spy), no rounds")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-state-") as tmp:
        worlds = []
        for scale in args.scales:
            started = time.monotonic()
            world = World(scale, args, Path(tmp))
            needed = args.rounds * args.round_tx * (1 + len(args.cache_sizes) + 2 * bool(args.ab_terminal_packed_mb))
            if not args.only_run and len(world.records) - world.history < needed:
                parser.error(f"{scale}x holds {len(world.records) - world.history:,} transactions after the history, "
                             f"the rounds need {needed:,}: raise --measure-days")  # fmt: skip
            cpu = time.process_time()
            world.run(world.history)
            print(f"{scale}x: {world.history:,} history transactions in {time.monotonic() - started:.0f} s "
                  f"({(time.process_time() - cpu) / world.history * 1e6:.0f} µs CPU each), "
                  f"{world.customers_cached():,} customers cached, terminals {world.terminals_held()}, "
                  f"{len(world.aggregates.frauds_known_s):,} fraud marks", flush=True)  # fmt: skip
            worlds.append(world)
        if args.only_run:
            world = worlds[-1]
            deadline = time.monotonic() + args.only_run
            print(f"{world.scale}x busy for {args.only_run:.0f} s", flush=True)
            while time.monotonic() < deadline and world.run(args.round_tx):
                pass
            return
        for world in worlds:
            read, miss = world.miss_us(2000)
            print(f"{world.scale}x: a customer from the store: {read:.1f} µs the read, {miss:.1f} µs read and parsed")
        results = {}
        for cache in [args.customer_cache, *args.cache_sizes]:
            if cache is not None:
                for world in worlds:
                    world.set_customer_cache(cache)
            results[str(cache or "default")] = phase(worlds, args, cache)
        if args.ab_terminal_packed_mb:
            results["terminal_packed_ab"] = ab_phase(worlds, args, args.ab_terminal_packed_mb)
        if args.out:
            args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "results": results}, indent=1))


def phase(worlds: list[World], args: argparse.Namespace, cache: int | None) -> dict[str, Any]:
    process_us: dict[int, list[float]] = {w.scale: [] for w in worlds}
    thread_us: dict[int, list[float]] = {w.scale: [] for w in worlds}
    for r in range(args.rounds):
        for world in worlds if r % 2 == 0 else reversed(worlds):
            p0, t0 = time.process_time(), time.thread_time()
            n = world.run(args.round_tx)
            if n:
                process_us[world.scale].append((time.process_time() - p0) / n * 1e6)
                thread_us[world.scale].append((time.thread_time() - t0) / n * 1e6)
    print(f"\ncustomer cache {cache or 'default'} per partition, terminal cache {args.terminal_cache or 'default'}")
    print(
        "| scale | rounds | process CPU µs/tx, median (all) | thread CPU µs/tx, median | customers cached | terminals |"
    )
    print("|---|---|---|---|---|---|")
    for world in worlds:
        p, t = process_us[world.scale], thread_us[world.scale]
        print(f"| {world.scale}x | {len(p)} | {statistics.median(p):.1f} ({', '.join(f'{v:.0f}' for v in p)}) | "
              f"{statistics.median(t):.1f} | {world.customers_cached():,} | {world.terminals_held()} |",
              flush=True)  # fmt: skip
    if len(worlds) == 2:
        a, b = (statistics.median(process_us[w.scale]) for w in worlds)
        print(f"ratio {worlds[1].scale}x / {worlds[0].scale}x (process CPU): {b / a:.2f}; throughput ratio "
              f"{a / b:.2f}", flush=True)  # fmt: skip
    return {"process_us": process_us, "thread_us": thread_us}


def ab_phase(worlds: list[World], args: argparse.Namespace, budget_mb: float) -> dict[str, Any]:
    """``--rounds`` rounds per world with the packed terminal cache off and as many with it on, interleaved
    (off, on, on, off, ...), the worlds alternating: process CPU µs per transaction."""
    process_us: dict[str, list[float]] = {}
    for r in range(2 * args.rounds):
        on = (r % 4) in (1, 2)
        for world in worlds if r % 2 == 0 else reversed(worlds):
            world.terminals_packed(budget_mb if on else 0.0)
            p0 = time.process_time()
            n = world.run(args.round_tx)
            if n:
                process_us.setdefault(f"{world.scale}x {'on' if on else 'off'}", []).append(
                    (time.process_time() - p0) / n * 1e6
                )
    print(f"\nthe packed terminal cache off and at {budget_mb:g} MB, alternating")
    print("| world, packed terminal cache | rounds | process CPU µs/tx, median (all) |")
    print("|---|---|---|")
    for key, values in sorted(process_us.items()):
        print(f"| {key} | {len(values)} | {statistics.median(values):.1f} ({', '.join(f'{v:.0f}' for v in values)}) |")
    for world in worlds:
        off, on = process_us.get(f"{world.scale}x off"), process_us.get(f"{world.scale}x on")
        if off and on:
            print(f"{world.scale}x: on / off {statistics.median(on) / statistics.median(off):.3f}", flush=True)
    return {"process_us": process_us}


if __name__ == "__main__":
    main()
