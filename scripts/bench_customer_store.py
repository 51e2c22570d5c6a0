#!/usr/bin/env python3
"""A customer cache miss and a commit on a real RocksDB partition, in the two layouts of the customer store, in one
run: the per-entry layout (``customer \\x1f tx`` -> ``[t, amount, terminal, seq]``, a copy of the changelog: the
miss is a prefix iteration and :func:`app.state.customers.restored_state`) and the packed one (``customer`` ->
:meth:`CustomerWindow.to_bytes`: the miss is one ``get`` and :meth:`CustomerWindow.from_bytes`).

    python scripts/bench_customer_store.py                     # 10,000 customers of 60 entries, 200 batches
    python scripts/bench_customer_store.py --customers 2000 --batches 50 --out results/customer_store.json
    python scripts/bench_customer_store.py --no-miss --replay-customers 5000 --replay-slices 10000 50000

Both stores are loaded with the same customers (ids, times, amounts and terminals shaped like the simulator's),
then take the same steady-state batches: each transaction adds an entry to a random customer and prunes its
oldest, the per-entry store writing the entry and the deletion (what the changelog carries), the packed one the
customer's new packed value once per batch. The commit side is timed with the process's CPU time after waiting for
RocksDB's flushes and compactions (its background threads are the process's), so the bigger writes of the packed
layout are counted. Misses read random customers after a warm-up pass (the blocks in the block cache), the two
layouts alternating in rounds, timed in this thread's CPU time, the median round kept (the machine is shared:
compare within a run). No Kafka. The miss's parts are timed apart too: the read alone and the parse alone.

Then a rebuild from a changelog of ``--replay-customers`` customers (by default 5,000, one partition at 10x the
simulator, two transactions a day over 40 days: about 480,000 records with the prunings and positions): a put per
record in the per-entry layout, each touched customer read and written once per slice in the packed one.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.features.engine import CustomerWindow  # noqa: E402
from app.state.customers import (  # noqa: E402
    POSITION_KEY,
    ChangelogReplay,
    customer_key,
    entry_key,
    entry_value,
    position_value,
    restored_state,
)
from app.state.rocksdb_store import RocksDBConfig, RocksDBPartition, RocksDBStore  # noqa: E402

DAY_S = 86400.0


def customer_entries(rng: random.Random, customer: int, entries: int, start_s: float) -> list[tuple[Any, ...]]:
    """A customer's window: ``entries`` transactions over 30 days at a few terminals, sorted by time."""
    terminals = [f"t-{rng.randrange(10_000):05d}" for _ in range(8)]
    times = sorted(start_s + rng.random() * 30 * DAY_S for _ in range(entries))
    return [(t, round(rng.uniform(1, 300), 2), rng.choice(terminals), f"tx-{customer:05d}{i:05d}", i)
            for i, t in enumerate(times)]  # fmt: skip


def settle(part: RocksDBPartition) -> None:
    """Flush the memtables and wait until RocksDB has no flush or compaction pending or running."""
    db = part.db
    db.flush()
    names = ("rocksdb.num-running-compactions", "rocksdb.num-running-flushes", "rocksdb.compaction-pending")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(db.property_int_value(n) for n in names):
        time.sleep(0.01)


def run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    names = [f"c-{c:05d}" for c in range(args.customers)]
    windows = {name: customer_entries(rng, c, args.entries, 1.5e9) for c, name in enumerate(names)}
    config = RocksDBConfig()  # the worker's defaults: one 64 MB block cache, 3 x 16 MB write buffers
    entries_store = RocksDBStore("per-entry", directory, config)
    packed_store = RocksDBStore("packed", directory, RocksDBConfig())
    by_entry = entries_store.open_partition(0)
    packed = packed_store.open_partition(0)
    assert isinstance(by_entry, RocksDBPartition) and isinstance(packed, RocksDBPartition)

    # ---- load: the same customers in both layouts -----------------------------------------------------------
    for i in range(0, len(names), 500):
        t1, t2 = by_entry.begin(), packed.begin()
        for name in names[i : i + 500]:
            for e in windows[name]:
                t1.put(entry_key(name, e[3]), entry_value(e))
            t2.put(customer_key(name), CustomerWindow.of(windows[name]).to_bytes())
        t1.commit(i + 1)
        t2.commit(i + 1)
    settle(by_entry)
    settle(packed)

    # ---- the commit side: steady-state batches ----------------------------------------------------------------
    states = {name: CustomerWindow.of(es) for name, es in windows.items()}
    next_seq = {name: args.entries for name in names}
    batches = []
    for _ in range(args.batches):
        changes = []  # (customer, added entry, pruned entry)
        for _ in range(args.batch):
            name = rng.choice(names)
            window = states[name]
            seq = next_seq[name]
            next_seq[name] = seq + 1
            added = (window.times[-1] + 600.0, round(rng.uniform(1, 300), 2), window.terminals[0],
                     f"tx-{name[2:]}{seq:05d}", seq)  # fmt: skip
            pruned = window[0]
            states[name] = CustomerWindow.of([*list(window)[1:], added])
            changes.append((name, added, pruned, states[name]))
        batches.append(changes)

    def entry_batches() -> tuple[float, int]:
        encode = 0.0
        written = 0
        for b, changes in enumerate(batches):
            t0 = time.thread_time()
            updates: dict[bytes, bytes | None] = {}
            for name, added, pruned, _ in changes:
                updates[entry_key(name, added[3])] = entry_value(added)
                updates[entry_key(name, pruned[3])] = None
            encode += time.thread_time() - t0
            transaction = by_entry.begin()
            for key, value in updates.items():
                written += len(key) + len(value or b"")
                if value is None:
                    transaction.delete(key)
                else:
                    transaction.put(key, value)
            transaction.commit(10_000 + b)
        return encode, written

    def packed_batches() -> tuple[float, int]:
        encode = 0.0
        written = 0
        for b, changes in enumerate(batches):
            for _, added, _, _ in changes:
                entry_value(added)  # the changelog's record: made in both layouts, the store's here is the window
            t1 = time.thread_time()
            values = {name: window for name, _, _, window in changes}  # each changed customer once per batch
            updates = {customer_key(name): window.to_bytes() for name, window in values.items()}
            encode += time.thread_time() - t1
            transaction = packed.begin()
            for key, value in updates.items():
                written += len(key) + len(value)
                transaction.put(key, value)
            transaction.commit(10_000 + b)
        return encode, written

    def committed(fn: Callable[[], tuple[float, int]], part: RocksDBPartition) -> dict[str, float]:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        encode, written = fn()
        wall_commit = time.perf_counter() - wall0
        settle(part)
        cpu = time.process_time() - cpu0
        tx = len(batches) * args.batch
        return {
            "encode_us_per_tx": encode / tx * 1e6,
            "commit_wall_us_per_tx": wall_commit / tx * 1e6,
            "cpu_us_per_tx_with_flush_and_compaction": cpu / tx * 1e6,
            "bytes_written_per_tx": written / tx,
        }

    commit = {"per_entry": committed(entry_batches, by_entry), "packed": committed(packed_batches, packed)}
    current = {name: list(w) for name, w in states.items()}

    # ---- the encoding alone: one changed customer -------------------------------------------------------------
    sample = [states[name] for name in rng.sample(names, min(2000, len(names)))]
    entry_encodes, packed_encodes = [], []
    for _ in range(args.rounds):
        t0 = time.thread_time()
        for w in sample:
            entry_value(w[-1])
            entry_value(w[0])
        entry_encodes.append((time.thread_time() - t0) / len(sample))
        t0 = time.thread_time()
        for w in sample:
            w.to_bytes()
        packed_encodes.append((time.thread_time() - t0) / len(sample))
    entry_encode, packed_encode = statistics.median(entry_encodes), statistics.median(packed_encodes)

    # ---- the miss ------------------------------------------------------------------------------------------------
    def miss_per_entry(name: str) -> CustomerWindow:
        prefix = f"{name}\x1f".encode()
        n = len(prefix)
        return restored_state({key[n:].decode(): raw for key, raw in by_entry.iter_prefix(prefix)})

    def miss_packed(name: str) -> CustomerWindow:
        raw = packed.get(customer_key(name))
        assert raw is not None
        return CustomerWindow.from_bytes(raw)

    def read_per_entry(name: str) -> object:
        prefix = f"{name}\x1f".encode()
        n = len(prefix)
        return {key[n:].decode(): raw for key, raw in by_entry.iter_prefix(prefix)}

    def read_packed(name: str) -> object:
        return packed.get(customer_key(name))

    probe = rng.sample(names, 50)
    for name in probe:
        assert miss_per_entry(name) == miss_packed(name) == current[name], name
    raw_entries = {name: read_per_entry(name) for name in probe}
    raw_packed = {name: read_packed(name) for name in probe}

    def parse_per_entry(name: str) -> object:
        return restored_state(raw_entries[name])  # type: ignore[arg-type]

    def parse_packed(name: str) -> object:
        return CustomerWindow.from_bytes(raw_packed[name])  # type: ignore[arg-type]

    for name in names:  # warm: both layouts' blocks in their block caches (the worker's steady state)
        miss_per_entry(name)
        miss_packed(name)
    timings: dict[str, list[float]] = {}
    cases = {
        "miss_per_entry": (miss_per_entry, names),
        "miss_packed": (miss_packed, names),
        "read_per_entry": (read_per_entry, names),
        "read_packed": (read_packed, names),
        "parse_per_entry": (parse_per_entry, probe),
        "parse_packed": (parse_packed, probe),
    }
    for _ in range(args.rounds):
        for label, (fn, pool) in cases.items():
            picks = [rng.choice(pool) for _ in range(args.misses)]
            t0 = time.thread_time()  # this thread's CPU: the machine is shared, wall time waits for other work
            for name in picks:
                fn(name)
            timings.setdefault(label, []).append((time.thread_time() - t0) / len(picks) * 1e6)
    us = {label: statistics.median(values) for label, values in timings.items()}
    entries_store.close()
    packed_store.close()
    disk = {name: sum(p.stat().st_size for p in (directory / name).rglob("*") if p.is_file()) / 2**20
            for name in ("per-entry", "packed")}  # fmt: skip
    per_entry_commit, packed_commit = commit["per_entry"], commit["packed"]
    return {
        "customers": args.customers,
        "entries": args.entries,
        "packed_value_bytes": statistics.mean(len(w.to_bytes()) for w in sample),
        "miss_us": us,
        "miss_ratio_per_entry_over_packed": us["miss_per_entry"] / us["miss_packed"],
        "read_ratio": us["read_per_entry"] / us["read_packed"],
        "parse_ratio": us["parse_per_entry"] / us["parse_packed"],
        "encode_us_per_changed_customer": {"per_entry_two_records": entry_encode * 1e6, "packed": packed_encode * 1e6},
        "encode_ratio_packed_over_per_entry": packed_encode / entry_encode,
        "commit": commit,
        "commit_cpu_ratio_packed_over_per_entry": packed_commit["cpu_us_per_tx_with_flush_and_compaction"]
        / per_entry_commit["cpu_us_per_tx_with_flush_and_compaction"],
        "disk_mb": disk,
    }


def changelog_of(rng: random.Random, customers: int, days: int, per_day: float) -> list[tuple[bytes, bytes | None]]:
    """A partition's changelog as the decision path writes it: per transaction (in event-time order) its entry,
    the deletions of the entries it pruned (older than 31 days), and a position record per 500 transactions."""
    txs = sorted((rng.random() * days * DAY_S, c) for c in range(customers) for _ in range(int(per_day * days)))
    held: dict[int, list[tuple[float, bytes]]] = {c: [] for c in range(customers)}
    records: list[tuple[bytes, bytes | None]] = []
    for i, (t, c) in enumerate(txs):
        name = f"c-{c:05d}"
        window = held[c]
        while window and window[0][0] <= t - 31 * DAY_S:
            records.append((window.pop(0)[1], None))
        key = entry_key(name, f"tx-{i:010d}")
        window.append((t, key))
        records.append((key, entry_value((t, round(rng.uniform(1, 300), 2), f"t-{c % 997:05d}", "", i))))
        if i % 500 == 499:
            records.append((POSITION_KEY, position_value(t, i + 1, customers)))
    return records


def replay(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    """A rebuild of one partition from its changelog: main's per-entry replay (a put or delete per record, a commit
    per 10,000) beside :class:`ChangelogReplay` (slices of ``--replay-slices`` records), the process's CPU time to
    the last commit with RocksDB's flushes and compactions settled, and the RSS growth seen before each commit (the
variants run one after the other in this process: run one per process for its RSS)."""
    import psutil

    records = changelog_of(random.Random(args.seed), args.replay_customers, args.replay_days, args.replay_per_day)
    result: dict[str, Any] = {"customers": args.replay_customers, "records": len(records)}

    process = psutil.Process()
    rss = [0]

    def sample_rss() -> None:
        rss[0] = max(rss[0], process.memory_info().rss)

    def timed(name: str, fill: Callable[[RocksDBPartition], None]) -> RocksDBPartition:
        store = RocksDBStore(name, directory, RocksDBConfig())
        part = store.open_partition(0)
        assert isinstance(part, RocksDBPartition)
        rss[0] = rss_start = process.memory_info().rss
        cpu0, wall0 = time.process_time(), time.perf_counter()
        fill(part)
        settle(part)
        result[name] = {"cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0,
                        "rss_growth_mb": (rss[0] - rss_start) / 2**20}  # fmt: skip
        return part

    def per_entry(part: RocksDBPartition) -> None:
        transaction = part.begin()
        for offset, (key, value) in enumerate(records):
            if value is None:
                transaction.delete(key)
            else:
                transaction.put(key, value)
            if transaction.pending_count >= 10_000:
                sample_rss()
                transaction.commit(offset + 1)
                transaction = part.begin()
        transaction.commit(len(records))

    def packed(slice_records: int) -> Callable[[RocksDBPartition], None]:
        def fill(part: RocksDBPartition) -> None:
            slices = ChangelogReplay(part)
            for offset, (key, value) in enumerate(records):
                slices.add(key, value)
                if slices.records >= slice_records:
                    sample_rss()
                    slices.commit(offset + 1)
            slices.commit(len(records))

        return fill

    by_entry = timed("per_entry", per_entry)
    for slice_records in args.replay_slices:
        part = timed(f"packed_{slice_records}", packed(slice_records))
        for c in random.Random(1).sample(range(args.replay_customers), 20):
            name = f"c-{c:05d}"
            prefix = f"{name}\x1f".encode()
            want = restored_state({k[len(prefix) :].decode(): v for k, v in by_entry.iter_prefix(prefix)})
            assert CustomerWindow.from_bytes(part.get(customer_key(name)) or b"") == want, name
        result[f"cpu_ratio_packed_{slice_records}_over_per_entry"] = (
            result[f"packed_{slice_records}"]["cpu_s"] / result["per_entry"]["cpu_s"]
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--entries", type=int, default=60)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--misses", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--replay-customers", type=int, default=5000, help="0: no replay")
    parser.add_argument("--replay-days", type=int, default=40)
    parser.add_argument("--replay-per-day", type=float, default=2.0)
    parser.add_argument("--replay-slices", type=int, nargs="+", default=[10_000])
    parser.add_argument("--no-miss", action="store_true", help="the replay only")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="bench-customer-store-"))
    try:
        result = {} if args.no_miss else run(args, directory)
        if args.replay_customers:
            result["replay"] = replay(args, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
