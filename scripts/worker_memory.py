#!/usr/bin/env python3
"""Where a running worker's memory is, from outside and (``--inside``) from inside, without a restart or a setting.

    python scripts/worker_memory.py PID                      # the resident set by kind of mapping (/proc/PID/smaps)
    python scripts/worker_memory.py PID --inside --out m.json   # and what the process itself says (gdb, root)

The resident set by kind: ``[heap]`` (glibc's main arena: the allocator's blocks over 512 bytes, Python's large
objects, RocksDB's and the clients' C allocations), anonymous 1 MiB mappings and larger ones merged from them
(pymalloc's arenas: Python's objects of 512 bytes or less), 8-64 MiB anonymous mappings (thread stacks and glibc's
mmapped blocks and thread arenas), the shared libraries (``.so``), the rest.

``--inside`` runs a report in the process through ``gdb -p`` (``PyGILState_Ensure`` then ``PyRun_SimpleString``):
it stops the process for a few seconds (a second or two per 100,000 Python objects), so use it on an idle worker
(``scripts/scale.py --pause-s``), never on one being timed. The report: pymalloc's totals
(``sys._debugmallocstats``), glibc's per arena (``malloc_stats``), RocksDB's memory properties per store and
partition, the sizes of the worker's caches and queues (two-tier caches, terminal aggregates, health and drift
windows, the Kafka clients' fetchers and accumulators), and every object reachable from the garbage collector's
objects (the ones frozen at start with ``--frozen``, which leaves every object frozen after) by the type of the
tracked object that holds it: ``sys.getsizeof`` of the untracked
objects (strings, bytes, numbers, untracked tuples) under the tracked one, and of the tracked ones by type.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MIB = 2**20


def smaps_by_kind(pid: int) -> dict[str, dict[str, int]]:
    """Mappings, their size and resident bytes, by kind (see the module's docstring)."""
    kinds: dict[str, dict[str, int]] = {}
    current: dict[str, int] | None = None
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \d+\s*(.*)$", line)
            if m:
                size = int(m.group(2), 16) - int(m.group(1), 16)
                name, perms = m.group(4).strip(), m.group(3)
                if name.startswith("["):
                    kind = name
                elif name:
                    kind = "shared libraries" if ".so" in name else "other files"
                elif perms.startswith("---"):
                    kind = "guard pages"
                elif size < MIB:
                    kind = "anonymous < 1 MiB"
                elif size < 8 * MIB:
                    kind = "anonymous 1-8 MiB (pymalloc arenas)"
                elif size < 64 * MIB:
                    kind = "anonymous 8-64 MiB (thread stacks, mmapped blocks)"
                else:
                    kind = "anonymous >= 64 MiB"
                current = kinds.setdefault(kind, {"mappings": 0, "size": 0, "rss": 0})
                current["mappings"] += 1
                current["size"] += size
            elif line.startswith("Rss:") and current is not None:
                current["rss"] += int(line.split()[1]) * 1024
    return kinds


INSIDE = r"""
def _worker_memory_report(path, with_frozen):
    import collections, ctypes, gc, json, os, sys, tempfile, time

    def stderr_of(call):
        fd, name = tempfile.mkstemp()
        saved = os.dup(2)
        os.dup2(fd, 2)
        try:
            call()
        finally:
            os.dup2(saved, 2); os.close(saved); os.close(fd)
        with open(name) as f:
            text = f.read()
        os.unlink(name)
        return text

    started = time.time()
    out = {}
    text = stderr_of(sys._debugmallocstats)
    at = text.find("# arenas allocated total")
    out["pymalloc"] = text[at:at + 1100]
    out["glibc"] = stderr_of(ctypes.CDLL("libc.so.6").malloc_stats)
    out["frozen"] = gc.get_freeze_count()
    if with_frozen:  # the frozen objects are listed only by unfreezing them; the freeze after takes every object
        gc.unfreeze()
    roots = gc.get_objects()
    if with_frozen:
        gc.freeze()

    def type_name(o):
        t = type(o)
        return str(getattr(t, "__module__", "?")) + "." + str(getattr(t, "__qualname__", "?"))

    rocks, caches = [], []
    props = ("estimate-table-readers-mem", "cur-size-all-mem-tables", "block-cache-usage", "block-cache-pinned-usage",
             "estimate-num-keys", "total-sst-files-size")
    sized = ("HealthWindow", "DriftMonitor", "TransactionalLoop", "TerminalFeed", "Fetcher", "MessageAccumulator")
    for o in roots:
        name = type(o).__name__
        try:
            if name == "RocksDBPartition" and getattr(o, "_db", None) is not None:
                rocks.append({"path": o._db.path(), **{p: o._db.property_value("rocksdb." + p) for p in props}})
            elif name == "TwoTierCache":
                caches.append({"type": name, "parsed": len(o.parsed), "packed": len(o.packed),
                               "packed_bytes": sum(len(v) for v in o.packed.values())})
            elif name == "TerminalAggregates" or name in sized:
                caches.append({"type": name, **{k: len(v) for k, v in vars(o).items()
                                                if isinstance(v, (dict, list, set, collections.deque))}})
        except Exception as exc:
            caches.append({"type": name, "error": repr(exc)[:200]})
    out["rocksdb"], out["caches"] = rocks, caches

    seen = set(map(id, roots))
    held, held_n, tracked = collections.Counter(), collections.Counter(), collections.Counter()
    for o in roots:
        owner = type_name(o)
        try:
            tracked[owner] += sys.getsizeof(o)
        except Exception:
            pass
        stack = list(gc.get_referents(o))
        while stack:
            r = stack.pop()
            if id(r) in seen or gc.is_tracked(r):
                continue
            seen.add(id(r))
            key = owner + " > " + type(r).__name__
            try:
                held[key] += sys.getsizeof(r)
            except Exception:
                pass
            held_n[key] += 1
            if isinstance(r, (tuple, frozenset)):
                stack.extend(gc.get_referents(r))
    out["untracked_bytes"] = sum(held.values())
    out["tracked_bytes"] = sum(tracked.values())
    out["untracked_by_holder"] = [(k, v, held_n[k]) for k, v in held.most_common(60)]
    out["tracked_by_type"] = tracked.most_common(60)
    out["seconds"] = time.time() - started
    with open(path, "w") as f:
        json.dump(out, f, indent=1, default=str)

_worker_memory_report(__WORKER_MEMORY_OUT__, __WITH_FROZEN__)
del _worker_memory_report
"""


def inside(pid: int, with_frozen: bool = False, timeout_s: float = 120.0) -> dict[str, Any]:
    """Run the report in ``pid`` through gdb; its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        script = Path(tmp) / "report.py"
        script.write_text(
            INSIDE.replace("__WORKER_MEMORY_OUT__", repr(str(out))).replace("__WITH_FROZEN__", repr(with_frozen))
        )
        os.chmod(tmp, 0o755)
        call = f'exec(open("{script}").read())'.replace('"', '\\"')
        gdb = subprocess.run(
            ["gdb", "-p", str(pid), "-batch", "-nx", "-ex", "call (int)PyGILState_Ensure()",
             "-ex", f'call (int)PyRun_SimpleString("{call}")', "-ex", "call (void)PyGILState_Release($1)",
             "-ex", "detach"],
            check=True, capture_output=True, text=True, timeout=timeout_s,
        )  # fmt: skip
        if not out.exists():
            raise RuntimeError(
                f"the report did not run (the worker's log may have its traceback): {gdb.stdout[-2000:]!r}"
            )
        return dict(json.loads(out.read_text()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pid", type=int)
    parser.add_argument("--inside", action="store_true", help="also the report from inside (gdb; stops it seconds)")
    parser.add_argument(
        "--frozen",
        action="store_true",
        help="with --inside, also the objects frozen at start (gc.freeze); it leaves every object frozen after "
        "(never collected again): on a worker about to be stopped only",
    )
    parser.add_argument("--out", type=Path, help="everything as JSON")
    args = parser.parse_args()
    result: dict[str, Any] = {"pid": args.pid, "at": time.time(), "smaps": smaps_by_kind(args.pid)}
    print(f"{'mappings by kind':55} {'resident MiB':>12}")
    for kind, entry in sorted(result["smaps"].items(), key=lambda kv: -kv[1]["rss"]):
        if entry["rss"]:
            print(f"{kind:55} {entry['rss'] / MIB:12.1f}")
    if args.inside:
        report = result["inside"] = inside(args.pid, with_frozen=args.frozen)
        print(report["pymalloc"].split("\n\nar")[0])
        print(report["glibc"])
        for store in report["rocksdb"]:
            print(store)
        for cache in report["caches"]:
            print(cache)
        print(f"reachable from the collector's objects: tracked {report['tracked_bytes'] / MIB:.1f} MiB, "
              f"untracked under them {report['untracked_bytes'] / MIB:.1f} MiB")  # fmt: skip
        for holder, size, count in report["untracked_by_holder"][:25]:
            print(f"  {size / MIB:8.2f} MiB {count:9,} {holder}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
