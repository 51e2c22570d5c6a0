#!/usr/bin/env python3
"""Cost of the state store (app/state/) at 1x and 10x keys: put, commit, get, get-many, prefix scan, RSS and disk,
RocksDB beside the dict store, with the 10x/1x ratios.

    python scripts/bench_store.py                      # 200k and 2M keys, the settings' defaults
    python scripts/bench_store.py --stores rocksdb --block-cache-mb 8 --write-buffer-mb 4 --write-buffer-count 2
    python scripts/bench_store.py --keys 100000 --no-wal --out results/store.json

Each (store, size) runs in a fresh child process, so its RSS starts from the same interpreter. Keys are shaped as
the customer windows' changelog keys (``customer \\x1f tx``, 10 entries per customer) with ~128-byte values,
written in transactions of ``--batch`` puts (one commit each, as one batch of the decision path would). Reads are
of random existing keys (the dict store's prefix scan reads every key: a test store, so it does 20 scans only).
No Kafka. The figures are this machine's (2 shared cores): compare the stores and sizes of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ENTRIES_PER_CUSTOMER = 10


def _key(n: int) -> bytes:
    return b"C%09d\x1fT%012d" % (n // ENTRIES_PER_CUSTOMER, n)


def _value(n: int) -> bytes:
    return b'{"t":%d.0,"amount":%d.37,"terminal":"T%07d","label":null}' % (1_700_000_000 + n, n % 9000, n % 5000) + (
        b" " * 40
    )


def measure(kind: str, keys: int, batch: int, config_args: dict[str, int], directory: str) -> dict[str, float]:
    import psutil

    from app.state.memory_store import MemoryStore
    from app.state.rocksdb_store import RocksDBConfig, RocksDBStore
    from app.state.store import Store

    process = psutil.Process()
    rss_start = process.memory_info().rss
    store: Store = (
        MemoryStore("bench") if kind == "memory" else RocksDBStore("bench", directory, RocksDBConfig(**config_args))
    )
    part = store.open_partition(0)
    put_s = commit_s = 0.0
    rss_peak = rss_start
    for start in range(0, keys, batch):
        tx = part.begin()
        t0 = time.perf_counter()
        for n in range(start, min(keys, start + batch)):
            tx.put(_key(n), _value(n))
        t1 = time.perf_counter()
        tx.commit(start + batch)
        t2 = time.perf_counter()
        put_s += t1 - t0
        commit_s += t2 - t1
        if (start // batch) % 50 == 0:
            rss_peak = max(rss_peak, process.memory_info().rss)
    rss_written = process.memory_info().rss
    rng = random.Random(16)
    gets = 20_000
    picks = [_key(rng.randrange(keys)) for _ in range(gets)]
    t0 = time.perf_counter()
    for key in picks:
        assert part.get(key) is not None
    get_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, gets, batch):
        assert len(part.get_many(picks[i : i + batch])) == len(set(picks[i : i + batch]))
    get_many_s = time.perf_counter() - t0
    # The dict store scans every key per prefix (it is a test store): a few scans show that.
    customers = [rng.randrange(keys // ENTRIES_PER_CUSTOMER) for _ in range(5000 if kind == "rocksdb" else 20)]
    t0 = time.perf_counter()
    for customer in customers:
        assert sum(1 for _ in part.iter_prefix(b"C%09d\x1f" % customer)) == ENTRIES_PER_CUSTOMER
    prefix_s = time.perf_counter() - t0
    rss_end = process.memory_info().rss
    store.close()
    disk = sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())
    data_mb = sum(len(_key(n)) + len(_value(n)) for n in range(0, keys, 97)) * 97 / 2**20
    return {
        "keys": keys,
        "data_mb": data_mb,
        "put_us": put_s / keys * 1e6,
        "commit_ms": commit_s / (keys / batch) * 1e3,
        "get_us": get_s / gets * 1e6,
        "get_many_us_per_key": get_many_s / gets * 1e6,
        "prefix_scan_us": prefix_s / len(customers) * 1e6,
        "rss_growth_mb": (rss_end - rss_start) / 2**20,
        "rss_peak_growth_mb": (max(rss_peak, rss_written, rss_end) - rss_start) / 2**20,
        "disk_mb": disk / 2**20,
    }


def main() -> None:
    from app.settings import Settings

    d = Settings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--batch", type=int, default=d.batch_max_records)
    parser.add_argument("--stores", default="rocksdb,memory")
    parser.add_argument("--block-cache-mb", type=int, default=d.state_block_cache_mb)
    parser.add_argument("--write-buffer-mb", type=int, default=d.state_write_buffer_mb)
    parser.add_argument("--write-buffer-count", type=int, default=d.state_write_buffer_count)
    parser.add_argument("--no-wal", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    config_args = {"block_cache_mb": args.block_cache_mb, "write_buffer_mb": args.write_buffer_mb,
                   "write_buffer_count": args.write_buffer_count, "wal": not args.no_wal}  # fmt: skip
    if args.child:
        kind, keys, directory = args.child.split(",", 2)
        json.dump(measure(kind, int(keys), args.batch, config_args, directory), sys.stdout)
        return
    results: dict[str, list[dict[str, float]]] = {}
    for kind in args.stores.split(","):
        for keys in (args.keys, args.keys * args.scale):
            directory = tempfile.mkdtemp(prefix="bench-store-")
            try:
                child = [a for a in sys.argv[1:] if a != "--out" and not a.endswith(".json")]
                out = subprocess.run([sys.executable, __file__, *child, "--child", f"{kind},{keys},{directory}"],
                                     check=True, capture_output=True, text=True).stdout  # fmt: skip
            finally:
                shutil.rmtree(directory, ignore_errors=True)
            results.setdefault(kind, []).append(json.loads(out))
            print(f"{kind:8} {keys:>9,} keys: " + ", ".join(f"{k} {v:.2f}" for k, v in results[kind][-1].items()
                                                            if k != "keys"), flush=True)  # fmt: skip
    print(f"\nconfig: {config_args}, batch {args.batch}")
    columns = ["put_us", "commit_ms", "get_us", "get_many_us_per_key", "prefix_scan_us", "rss_growth_mb",
               "rss_peak_growth_mb", "disk_mb"]  # fmt: skip
    print("| store | keys | data MB | " + " | ".join(columns) + " |")
    print("|---|---:|---:|" + "---:|" * len(columns))
    for kind, rows in results.items():
        for row in rows:
            cells = " | ".join(f"{row[c]:.2f}" for c in columns)
            print(f"| {kind} | {row['keys']:,.0f} | {row['data_mb']:.0f} | {cells} |")
        small, large = rows
        ratios = " | ".join(f"{large[c] / small[c]:.2f}x" if small[c] else "-" for c in columns)
        print(f"| {kind} | {args.scale}x / 1x | {large['data_mb'] / small['data_mb']:.1f}x | {ratios} |")
    if args.out:
        args.out.write_text(json.dumps({"config": config_args, "batch": args.batch, "results": results}, indent=1))


if __name__ == "__main__":
    main()
