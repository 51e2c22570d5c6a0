#!/usr/bin/env python3
"""What the decision path's state holds in memory at 1x and 10x populations, by structure, and the RSS it adds; no
Kafka. A pure stand-in for ``scripts/scale.py``'s RSS, minutes instead of most of an hour.

    python scripts/state_memory.py                                       # 1x and 10x, the settings' defaults
    python scripts/state_memory.py --config old STATE_CUSTOMER_CACHE=10000 STATE_CUSTOMER_PACKED_MB=0 \\
        --config new                                                     # two configurations, sizes alternating
    python scripts/state_memory.py --sizing --config new --config old STATE_CUSTOMER_CACHE=10000  # customer tiers alone
    python scripts/state_memory.py --days 20 --rounds 3 --config before CODE=../main --config after  # two commits

A configuration's ``CODE=DIR`` runs the child of another checkout (``DIR/scripts/state_memory.py``, its ``app``) on
the same input: two commits compared in one run, rounds alternating (``--rounds``). ``DROP_ON_COMMIT=1`` drops each
batch's ``on_commit`` once it ran, as the worker's loop does (without: a cycle per batch left to the collector).
The child sets the collector as the worker does at its start (:mod:`app.collector`: the objects so far frozen,
``GC_GEN0_THRESHOLD``, ``GC_FULL_INTERVAL_S``), so figures from before that are not comparable with later ones.

Each size is ``scripts/scale.py``'s world (2,000 x scale customers, 4,000 x scale terminals, ``--days`` days, the
simulator's seed 0, 4 input partitions by customer), simulated once in this process and written to a file; each
(configuration, size) then runs in a child process of its own, which reads that file a chunk at a time (so the
child's memory is the worker state's, not the input's) and drives a :class:`~app.decisions.scorer.Scorer` over a
RocksDB customer store and :class:`~app.state.terminals.TerminalAggregates` over a RocksDB terminal store as
``scripts/bench_state.py`` does (batches of 500 per partition, each batch's ``on_commit`` run, the terminals flushed
every 10 batches, the scored transactions read back as the feed does, the fraud labels ``--label-delay-days`` after
their transactions). At the end, after a full garbage collection: the child's RSS (and VmHWM) against its RSS before
the first transaction, glibc's bytes in use and kept free and the RSS once a ``malloc_trim`` gave the free pages back
(:mod:`app.allocator`), the sizes of the structures that grow with the population (parsed and packed customers and
terminals, RocksDB's memtables and block cache, fraud marks) and the CPU time per transaction (the process's,
RocksDB's threads included) over the last ``--tail-share`` of the transactions. Sizes run one after the other on a
shared machine: compare the ratios of one run.

``--tracemalloc``: the child traces Python's allocations from its start (``tracemalloc``, one frame: slower, so its
CPU figures are not comparable with an untraced run's) and prints, at the end, the traced bytes by file:line (the
top ``--top``), the traced bytes in blocks of 512 bytes or less (pymalloc's) and larger, and pymalloc's own totals
(``sys._debugmallocstats``: its arenas, the bytes in allocated blocks, in free blocks and in free pools), so that
two sizes compare by allocation site (``--out``: every site of every run, as JSON).
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections import deque
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PARTITIONS = 4
BATCH = 500
CHUNK = BATCH * PARTITIONS  # transactions a batch round takes, one pickled chunk of the input file
DAY_S = 86400.0
MIB = 2**20


def write_input(scale: float, days: int, path: Path) -> int:
    """The simulated transactions as chunks of (partition, value, event time, tx id, is fraud); returns the count."""
    from app.serialization import dumps
    from lab.simulator import SimulatorConfig, simulate, to_wire

    simulated = simulate(SimulatorConfig(n_customers=int(2000 * scale), n_terminals=int(4000 * scale), n_days=days,
                                         seed=0))  # fmt: skip
    with path.open("wb") as f:
        for i in range(0, len(simulated), CHUNK):
            chunk = [(zlib.crc32(t.customer_id.encode()) % PARTITIONS, dumps(to_wire(t)), t.timestamp.timestamp(),
                      t.tx_id, t.is_fraud) for t in simulated[i : i + CHUNK]]  # fmt: skip
            pickle.dump(chunk, f, protocol=pickle.HIGHEST_PROTOCOL)
    return len(simulated)


def status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def deep_window_bytes(window: Any, seen: set[int]) -> int:
    """A window's own bytes: the object, its columns as held (arrays, tuples, texts, bytes: its slots, not the
    tuples a property would make) and the strings of its tuples no other window counted yet."""
    size = sys.getsizeof(window)
    for name in [n for cls in type(window).__mro__ for n in getattr(cls, "__slots__", ())]:
        column = getattr(window, name, None)
        if column is None or isinstance(column, int):
            continue
        size += sys.getsizeof(column)
        if isinstance(column, tuple):
            for s in column:
                if id(s) not in seen:
                    seen.add(id(s))
                    size += sys.getsizeof(s)
    return size


def ordered_dict_bytes(d: dict[Any, Any]) -> int:
    """The mapping and its keys (values apart)."""
    return sys.getsizeof(d) + sum(sys.getsizeof(k) for k in d)


def pymalloc_stats() -> dict[str, int]:
    """pymalloc's totals from ``sys._debugmallocstats()`` (which writes to the C stderr: read back from a file)."""
    import os

    with tempfile.TemporaryFile(mode="w+b") as f:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(f.fileno(), 2)
            sys._debugmallocstats()  # type: ignore[attr-defined]
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read().decode(errors="replace")
    wanted = {"# arenas allocated current": "arenas_current", "# arenas highwater mark": "arenas_highwater",
              "# bytes in allocated blocks": "allocated_bytes", "# bytes in available blocks": "available_bytes",
              "unused pools": "unused_pools_bytes", "Total": "total_bytes"}  # fmt: skip
    stats: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition("=")
        for marker, key in wanted.items():
            if marker in name and key not in stats:  # "Total": the first one, the arenas' (the arena map's follows)
                stats[key] = int(value.strip().replace(",", ""))
    return stats


def traced_sites(top: int) -> dict[str, Any]:
    """The traced bytes by file:line (every site), the total in small (<= 512 B: pymalloc's) and larger blocks."""
    import tracemalloc

    snapshot = tracemalloc.take_snapshot()
    small = large = 0
    for trace in snapshot.traces:
        if trace.size <= 512:
            small += trace.size
        else:
            large += trace.size
    sites = {}
    for stat in snapshot.statistics("lineno"):
        frame = stat.traceback[0]
        sites[f"{frame.filename.rsplit('site-packages/', 1)[-1].rsplit('/wt-rss/', 1)[-1]}:{frame.lineno}"] = (
            stat.size, stat.count)  # fmt: skip
    del snapshot
    tracemalloc.stop()  # pymalloc's statistics print nothing while tracemalloc's hooks wrap it
    gc.collect()
    return {"traced_small_mib": small / MIB, "traced_large_mib": large / MIB, "sites": sites, "top": top}


def child(args: argparse.Namespace) -> None:
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(1)
    from aiokafka import TopicPartition

    from app.decisions.scorer import Scorer
    from app.learning.model import FraudModel
    from app.monitoring.health import HealthWindow
    from app.settings import load
    from app.state.rocksdb_store import RocksDBConfig, RocksDBStore
    from app.state.terminals import TerminalAggregates

    env = dict(kv.split("=", 1) for kv in args.env)
    # DROP_ON_COMMIT=1: the batch's on_commit dropped once run, as the worker's loop does (app/kafka/transactional.py),
    # so its batch -> closure -> batch cycle is not left to the collector (without it: a cycle per batch, as the
    # worker had before BENCHMARKS.md "The event loop's stalls").
    drop_on_commit = env.pop("DROP_ON_COMMIT", "0") == "1"
    settings = load(env)
    from app import allocator, collector

    allocator.configure(settings.memory_arena_max)  # as the worker does, before RocksDB's threads
    directory = Path(tempfile.mkdtemp(prefix="state-memory-"))
    config = RocksDBConfig.from_settings(settings)
    terminal_store = RocksDBStore("terminals", directory, config)
    customer_store = RocksDBStore("customers", directory, config)
    aggregates = TerminalAggregates(settings.terminal_delay_days, settings.lateness_s, settings.terminal_ttl_s,
                                    terminal_store.open_partition(0), cache_size=settings.state_terminal_cache,
                                    packed_cache_bytes=int(settings.state_terminal_packed_mb * MIB))  # fmt: skip
    health = HealthWindow(60.0, time.monotonic())
    scorer = Scorer(settings, FraudModel(settings.model_name), aggregates, health,
                    store=customer_store, changelog_topic="changelog", terminal_topic="terminal-log")  # fmt: skip
    tps = [TopicPartition("transactions", p) for p in range(PARTITIONS)]
    for p in range(PARTITIONS):
        scorer.open_state(p)
    gc.collect()
    # The collector as the worker sets it at its start (app/components.py): what lives so far frozen, and the
    # thresholds of GC_GEN0_THRESHOLD / GC_FULL_INTERVAL_S, and with a full interval (the default) its full
    # collections' check after every chunk (the worker's event loop checks every second, ~1,000 transactions).
    gc.freeze()
    collector.configure(settings.gc_gen0_threshold, settings.gc_full_interval_s)
    full = collector.FullCollections(settings.gc_full_interval_s, lambda: True) if settings.gc_full_interval_s else None
    rss_start = status_mib("VmRSS")
    offsets = [0] * PARTITIONS
    frauds: deque[tuple[float, str]] = deque()
    delay_s = args.label_delay_days * DAY_S
    batches = done = 0
    tail_from = int(args.count * (1 - args.tail_share))
    tail_cpu_s = 0.0
    tail_n = 0
    unread: list[str] = []  # tx ids scored since the last flush (read back then, as bench_state.py does)
    with Path(args.input).open("rb") as f:
        while True:
            try:
                chunk = pickle.load(f)
            except EOFError:
                break
            t0 = time.process_time()
            now_s = chunk[0][2]
            while frauds and frauds[0][0] <= now_s:
                known_s, tx_id = frauds.popleft()
                aggregates.add_fraud(tx_id, known_s)
            by_partition: list[list[Any]] = [[] for _ in range(PARTITIONS)]
            for p, value, t, tx_id, is_fraud in chunk:
                by_partition[p].append(SimpleNamespace(topic="transactions", partition=p, offset=offsets[p], key=b"",
                                                       value=value))  # fmt: skip
                offsets[p] += 1
                if is_fraud:
                    frauds.append((t + delay_s, tx_id))
            flushed = False
            for p, records in enumerate(by_partition):
                if records:
                    batch = scorer.process(tps[p], records)
                    batch.produced_to = offsets[p]  # type: ignore[attr-defined]
                    batch.on_commit()  # type: ignore[misc]
                    if drop_on_commit:
                        batch.on_commit = None
                    batches += 1
                    if batches % 10 == 0:
                        aggregates.flush({})
                        flushed = True
            unread.extend(tx_id for _, _, _, tx_id, _ in chunk)
            if flushed:  # the feed reads the scored transactions back from the terminal log, every one since the last
                for tx_id in unread:
                    aggregates.read_back(tx_id)
                unread.clear()
                health.stats(time.monotonic())  # the worker's health timer does, which expires the window
            why = full.due() if full is not None else None
            if why is not None:
                full.collect(why)
            if done >= tail_from:
                tail_cpu_s += time.process_time() - t0
                tail_n += len(chunk)
            done += len(chunk)
    aggregates.flush({})
    gc.collect()
    rss_end = status_mib("VmRSS")
    traced = traced_sites(args.top) if args.tracemalloc else None
    pymalloc = pymalloc_stats()
    trimmed = allocator.trim()  # what glibc kept free inside its heap, and the RSS once it went back
    heap = trimmed.heap if trimmed else None
    seen: set[int] = set()
    parsed = packed = parsed_n = packed_n = 0
    for state in scorer.partitions.values():
        caches = state.caches
        parsed += sum(deep_window_bytes(w, seen) for w in caches.parsed.values()) + ordered_dict_bytes(caches.parsed)
        packed += caches.packed_bytes + sum(sys.getsizeof(v) - len(v) for v in caches.packed.values())
        packed += ordered_dict_bytes(caches.packed)
        parsed_n += len(caches.parsed)
        packed_n += len(caches.packed)
    tcaches = aggregates.caches
    t_parsed = sum(deep_window_bytes(w, seen) for w in tcaches.parsed.values()) + ordered_dict_bytes(tcaches.parsed)
    t_packed = tcaches.packed_bytes + ordered_dict_bytes(tcaches.packed)
    t_packed += sum(sys.getsizeof(v) - len(v) for v in tcaches.packed.values())
    marks = ordered_dict_bytes(aggregates.frauds_known_s) + ordered_dict_bytes(aggregates.added_here)
    memtables = block_cache = 0
    for store in (customer_store, terminal_store):
        for partition in store.partitions.values():
            db = partition.db  # type: ignore[attr-defined]
            memtables += int(db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0)
            block_cache = int(db.property_int_value("rocksdb.block-cache-usage") or 0)  # one cache for all
    print(json.dumps({
        "transactions": done, "rss_start_mib": rss_start, "rss_end_mib": rss_end, "hwm_mib": status_mib("VmHWM"),
        "customers_parsed": parsed_n, "customers_parsed_mib": parsed / MIB,
        "customers_packed": packed_n, "customers_packed_mib": packed / MIB,
        "terminals_parsed": len(tcaches.parsed), "terminals_parsed_mib": t_parsed / MIB,
        "terminals_packed": len(tcaches.packed), "terminals_packed_mib": t_packed / MIB,
        "marks_mib": marks / MIB, "memtables_mib": memtables / MIB, "block_cache_mib": block_cache / MIB,
        "tail_cpu_us": tail_cpu_s / max(1, tail_n) * 1e6,
        "full_collections": full.runs if full is not None else None,
        "full_collections_grown": full.runs_grown if full is not None else None,
        "malloc_in_use_mib": heap.in_use_bytes / MIB if heap else None,
        "malloc_free_mib": heap.free_bytes / MIB if heap else None,
        "malloc_mmapped_mib": heap.mmapped_bytes / MIB if heap else None,
        "rss_trimmed_mib": trimmed.rss_after_bytes / MIB if trimmed else None,
        "pymalloc_allocated_mib": pymalloc.get("allocated_bytes", 0) / MIB,
        "pymalloc_arenas_mib": pymalloc.get("total_bytes", 0) / MIB,
        "pymalloc": pymalloc, **(traced or {}),
    }))  # fmt: skip


def sizing(args: argparse.Namespace, configs: list[tuple[str, list[str]]]) -> None:
    """The customer tiers alone at each size, no scorer and no store: every transaction's customer window (31 days:
    the longest window and the lateness) kept in a real :class:`~app.state.two_tier.TwoTierCache` per partition as
    ``PartitionState.apply`` keeps it, with each configuration's STATE_CUSTOMER_CACHE and STATE_CUSTOMER_PACKED_MB;
    where each transaction found its customer (parsed, packed, the store, or new) over the last ``--tail-share``,
    and the tiers' sizes at the end. Minutes where the whole path at 10x takes hours on a loaded machine."""
    from app.features.engine import CustomerWindow
    from app.serialization import loads
    from app.settings import load
    from app.state.customers import pack_window, unpack_window
    from app.state.two_tier import TwoTierCache

    horizon_s = 31 * DAY_S
    for scale in args.scales:
        path = Path(args.input_dir) / f"x{scale:g}.pickle" if args.input_dir else None
        if path is None or not path.exists():
            path = Path(tempfile.mkdtemp(prefix="state-memory-in-")) / f"x{scale:g}.pickle"
            write_input(scale, args.days, path)
        for name, env in configs:
            settings = load(dict(kv.split("=", 1) for kv in env))
            tiers = [TwoTierCache(settings.state_customer_cache, int(settings.state_customer_packed_mb * MIB),
                                  pack_window, unpack_window) for _ in range(PARTITIONS)]  # fmt: skip
            entries: dict[str, list[tuple[Any, ...]]] = {}
            found = dict.fromkeys(("parsed", "packed", "store", "new"), 0)
            done = 0
            with path.open("rb") as f:
                chunks = []
                while True:
                    try:
                        chunks.append(pickle.load(f))
                    except EOFError:
                        break
            total = sum(len(c) for c in chunks)
            tail_from = int(total * (1 - args.tail_share))
            for chunk in chunks:
                for p, value, t, tx_id, _ in chunk:
                    tx = loads(value)
                    customer = tx["customer_id"]
                    window = entries.setdefault(customer, [])
                    cache = tiers[p]
                    if done >= tail_from:
                        where = "new" if not window else "parsed" if customer in cache.parsed else (
                            "packed" if customer in cache.packed else "store")  # fmt: skip
                        found[where] += 1
                    window.append((t, float(tx["amount"]), sys.intern(tx["terminal_id"]), tx_id, done))
                    while window[0][0] < t - horizon_s:
                        window.pop(0)
                    cache.keep(customer, CustomerWindow.of(window))
                    done += 1
            seen: set[int] = set()
            parsed = sum(deep_window_bytes(w, seen) + sys.getsizeof(k) for c in tiers for k, w in c.parsed.items())
            packed = sum(sys.getsizeof(v) + sys.getsizeof(k) for c in tiers for k, v in c.packed.items())
            sample = [v for c in tiers for v in c.packed.values()][:2000]
            t0 = time.thread_time()  # CPU time: on a loaded machine the wall clock counts the waits for a core
            for raw in sample:
                unpack_window(raw)
            unpack_us = (time.thread_time() - t0) / max(1, len(sample)) * 1e6
            tail = sum(found.values())
            result = {
                "transactions": done, "customers": len(entries),
                "entries_mean": statistics.mean(len(w) for w in entries.values()),
                "parsed": sum(len(c.parsed) for c in tiers), "parsed_mib": parsed / MIB,
                "packed": sum(len(c.packed) for c in tiers), "packed_mib": packed / MIB,
                "unpack_us": unpack_us, **{f"found_{k}": v / tail for k, v in found.items()},
            }  # fmt: skip
            print(f"sizing {name} {scale:g}x {json.dumps(result)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 10])
    parser.add_argument("--days", type=int, default=40)
    parser.add_argument("--label-delay-days", type=float, default=7.0)
    parser.add_argument("--tail-share", type=float, default=0.25, help="the share of transactions CPU is timed on")
    parser.add_argument("--config", nargs="+", action="append", metavar="NAME [KEY=VALUE ...]",
                        help="a named configuration (settings over the defaults); default: 'defaults'")  # fmt: skip
    parser.add_argument("--sizing", action="store_true", help="the customer tiers alone (see sizing())")
    parser.add_argument("--input-dir", help="with --sizing: x<scale>.pickle files written before, if there")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--tracemalloc", action="store_true", help="the traced bytes by allocation site (see above)")
    parser.add_argument("--top", type=int, default=25, help="with --tracemalloc: the sites printed")
    parser.add_argument("--rounds", type=int, default=1,
                        help="each (configuration, size) this many times, the order alternating by round: the CPU per "
                             "transaction is the rounds' median")  # fmt: skip
    parser.add_argument("--py-spy", type=Path, metavar="DIR",
                        help="each child sampled by py-spy (the dev extras): DIR/<config>-<scale>x-r<round>.txt, "
                             "collapsed stacks (flamegraph.pl, speedscope); its CPU figures are slower")  # fmt: skip
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--env", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    configs = [(c[0], c[1:]) for c in args.config] if args.config else [("defaults", [])]
    if args.sizing:
        sizing(args, configs)
        return
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="state-memory-in-") as tmp:
        for scale in args.scales:
            path = Path(tmp) / f"x{scale:g}.pickle"
            count = write_input(scale, args.days, path)
            print(f"{scale:g}x: {count:,} transactions", flush=True)
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in configs}
            for round_ in range(args.rounds):
                for name, env in configs if round_ % 2 == 0 else configs[::-1]:  # the order alternates by round
                    code = [kv.split("=", 1)[1] for kv in env if kv.startswith("CODE=")]
                    script = str(Path(code[-1]) / "scripts" / "state_memory.py") if code else __file__
                    cmd = [sys.executable, script, "--child", "--input", str(path), "--count", str(count),
                           "--label-delay-days", str(args.label_delay_days), "--tail-share", str(args.tail_share),
                           *(["--tracemalloc", "--top", str(args.top)] if args.tracemalloc else []),
                           "--env", *[kv for kv in env if not kv.startswith("CODE=")]]  # fmt: skip
                    if args.py_spy:
                        args.py_spy.mkdir(parents=True, exist_ok=True)
                        sampled = args.py_spy / f"{name}-{scale:g}x-r{round_}.txt"
                        cmd = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "--rate",
                               "200", "--nonblocking", "--output", str(sampled), "--", *cmd]  # fmt: skip
                    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                    result = json.loads(
                        [line for line in out.splitlines() if line.startswith("{")][-1]
                    )  # py-spy's after
                    runs[name].append(result)
                    shown = {k: v for k, v in result.items() if k != "sites"}
                    print(f"{name} {scale:g}x round {round_} {json.dumps(shown)}", flush=True)
            for name, done in runs.items():  # the first round's figures, the CPU per transaction's median of all
                cpu = [r["tail_cpu_us"] for r in done]
                results[f"{name} {scale:g}x"] = done[0] | {
                    "tail_cpu_us": statistics.median(cpu),
                    "tail_cpu_us_rounds": cpu,
                }
            path.unlink()
    report(results, configs, args.scales)
    if args.tracemalloc:
        report_sites(results, configs, args.scales, args.top)
    if args.out:
        arguments = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
        args.out.write_text(json.dumps({"args": arguments, "results": results}, indent=1))


def report(results: dict[str, dict[str, Any]], configs: list[tuple[str, list[str]]], scales: list[float]) -> None:
    columns = [("rss_end_mib", "RSS end"), ("rss_trimmed_mib", "trimmed"), ("malloc_in_use_mib", "malloc in use"),
               ("malloc_free_mib", "free"), ("malloc_mmapped_mib", "mmapped"), ("hwm_mib", "VmHWM"),
               ("rss_start_mib", "RSS start"), ("pymalloc_arenas_mib", "pymalloc arenas"),
               ("pymalloc_allocated_mib", "pymalloc in blocks"),
               ("customers_parsed_mib", "customers parsed"), ("customers_packed_mib", "packed"),
               ("terminals_parsed_mib", "terminals parsed"), ("terminals_packed_mib", "packed"),
               ("memtables_mib", "memtables"), ("block_cache_mib", "block cache"), ("marks_mib", "marks"),
               ("tail_cpu_us", "CPU µs/tx")]  # fmt: skip
    print("\n| configuration, size | " + " | ".join(title for _, title in columns) + " | customers parsed / packed |")
    print("|---|" + "---|" * (len(columns) + 1))
    for name, env in configs:
        for scale in scales:
            r = results[f"{name} {scale:g}x"]
            cells = " | ".join("-" if r.get(key) is None else f"{r[key]:.1f}" for key, _ in columns)
            print(f"| {name} {scale:g}x | {cells} | {r['customers_parsed']:,} / {r['customers_packed']:,} |")
        if len(scales) >= 2:
            a, b = results[f"{name} {scales[0]:g}x"], results[f"{name} {scales[-1]:g}x"]
            print(f"{name} ({' '.join(env) or 'defaults'}): RSS end {scales[-1]:g}x / {scales[0]:g}x "
                  f"{b['rss_end_mib'] / a['rss_end_mib']:.2f}, the state's growth (end - start) "
                  f"{a['rss_end_mib'] - a['rss_start_mib']:.0f} -> {b['rss_end_mib'] - b['rss_start_mib']:.0f} MiB, "
                  f"CPU per tx {b['tail_cpu_us'] / max(a['tail_cpu_us'], 1e-9):.2f} "
                  f"(throughput {a['tail_cpu_us'] / max(b['tail_cpu_us'], 1e-9):.2f})")  # fmt: skip


def report_sites(results: dict[str, dict[str, Any]], configs: list[tuple[str, list[str]]], scales: list[float],
                 top: int) -> None:  # fmt: skip
    """Per configuration, the ``top`` allocation sites by traced bytes at the last size, with the first size's."""
    for name, _ in configs:
        runs = [results[f"{name} {scale:g}x"] for scale in scales]
        first, last = runs[0], runs[-1]
        print(f"\n{name}: traced small (<= 512 B) / large blocks (MiB): "
              + ", ".join(f"{s:g}x {r['traced_small_mib']:.1f} / {r['traced_large_mib']:.1f}"
                          for s, r in zip(scales, runs, strict=True))
              + "; pymalloc arenas / in allocated blocks (MiB): "
              + ", ".join(f"{s:g}x {r['pymalloc_arenas_mib']:.1f} / {r['pymalloc_allocated_mib']:.1f}"
                          for s, r in zip(scales, runs, strict=True)))  # fmt: skip
        heads = " | ".join(f"{s:g}x MiB (blocks)" for s in scales)
        print(f"| site | {heads} | growth MiB |")
        print("|---|" + "---|" * (len(scales) + 1))
        ranked = sorted(last["sites"].items(), key=lambda kv: -kv[1][0])[:top]
        for site, _ in ranked:
            cells = []
            for r in runs:
                size, count = r["sites"].get(site, (0, 0))
                cells.append(f"{size / MIB:.1f} ({count:,})")
            growth = (last["sites"].get(site, (0, 0))[0] - first["sites"].get(site, (0, 0))[0]) / MIB
            print(f"| `{site}` | {' | '.join(cells)} | {growth:+.1f} |")


if __name__ == "__main__":
    main()
