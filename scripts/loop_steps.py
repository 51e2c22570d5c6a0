"""What held a worker's event loop: its slow steps (``LOOP_SLOW_STEP_MS``) and long collections, from its log.

A worker started with ``LOOP_SLOW_STEP_MS=15`` logs every loop step that held the loop 15 ms or more, with the CPU
time its thread spent in it, and every collection of the garbage collector that long
(:mod:`app.monitoring.loop_lag`). This groups them, per minute of the span read, by what held the loop:

- ``collector, generation N``: a step with a collection of that generation in it (the collection's line comes just
  before the step's, both logged when they end), or a collection outside any logged step;
- ``computing: <task> <- <frame>``: a step whose thread ran at least half its wall time, or 20 ms or more (the
  loop's own work: on a quiet host it would hold the loop that long too);
- ``not running: <task>``: a step whose thread ran less than both (the process was waiting for a core, or another
  thread held the interpreter): the host's load, not the step's code.

Usage::

    python scripts/loop_steps.py .kafka/bench/worker.log
    python scripts/loop_steps.py .kafka/bench/worker-r2.log --bench results/benchmark.json --system worker --rate 1000
    python scripts/loop_steps.py worker.log --since 1796660000 --until 1796660030   # Unix seconds
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

_STAMP = r"^\[(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]"
_STEP = re.compile(_STAMP + r".*event loop held (?P<ms>[\d.]+) ms \((?P<cpu>[\d.]+) ms of CPU\) by (?P<what>.*?); "
                   r"stack seen: (?P<stack>.*)$")  # fmt: skip
_GC = re.compile(_STAMP + r".*garbage collection of generation (?P<gen>\d) held the process (?P<ms>[\d.]+) ms")
_TASK = re.compile(r"^task (\S+)")


@dataclass(frozen=True)
class Held:
    """One slow step or long collection: when it was logged (Unix seconds, the log's local time), how long it held
    the loop, its thread's CPU time (None for a collection), what and the innermost frame sampled."""

    at_s: float
    ms: float
    cpu_ms: float | None
    what: str
    frame: str = ""


def parse(lines: Iterable[str]) -> list[Held]:
    """The log's slow steps and long collections, in order.

    >>> rows = parse(["[2026-12-07 18:01:14,491] [1] [WARNING] garbage collection of generation 2 held the process "
    ...               "106.4 ms (0 collected, 0 uncollectable)",
    ...               "[2026-12-07 18:01:14,492] [1] [WARNING] event loop held 110.0 ms (104.0 ms of CPU) by task "
    ...               "TransactionalLoop._work (now at x.py:1 f); stack seen: _process (scorer.py:333) <- process"])
    >>> [(r.ms, r.cpu_ms, r.what, r.frame) for r in rows]
    [(106.4, None, 'gc2', ''), (110.0, 104.0, 'TransactionalLoop._work', '_process (scorer.py:333)')]
    """
    out: list[Held] = []
    for line in lines:
        if "held" not in line:
            continue
        if m := _STEP.search(line):
            task = _TASK.match(m["what"])
            what = task.group(1) if task else m["what"].split(" ")[0].split("(")[0]
            frame = "" if m["stack"].startswith("not sampled") else m["stack"].split(" <- ")[0].strip()
            out.append(Held(_seconds(m["at"]), float(m["ms"]), float(m["cpu"]), what, frame))
        elif m := _GC.search(line):
            out.append(Held(_seconds(m["at"]), float(m["ms"]), None, f"gc{m['gen']}"))
    return out


def _seconds(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def attribute(rows: list[Held], join_s: float = 0.002, computing_ms: float = 20.0) -> list[tuple[str, Held]]:
    """Each step or collection with what held the loop (see the module). A collection that ended during a step
    at least as long (its line logged between the step's start and end, ``join_s`` either side for the log's
    millisecond stamps) is that step's cause: the step is counted once, as the collection's.

    >>> a = Held(10.000, 90.0, None, "gc2"); b = Held(10.001, 95.0, 91.0, "TransactionalLoop._work", "f (x.py:1)")
    >>> c = Held(12.0, 30.0, 2.0, "Sender._do_txn_commit"); d = Held(13.0, 40.0, 35.0, "TerminalFeed.run", "g (y.py:2)")
    >>> for kind, held in attribute([a, b, c, d]):
    ...     print(kind, held.ms)
    collector, generation 2 95.0
    not running: Sender._do_txn_commit 30.0
    computing: TerminalFeed.run <- g (y.py:2) 40.0
    """
    out: list[tuple[str, Held]] = []
    pending: Held | None = None  # a collection not yet joined to a step
    for row in rows:
        if row.cpu_ms is None:
            if pending is not None:
                out.append((_gc_kind(pending), pending))
            pending = row
            continue
        inside = row.at_s - row.ms / 1000 - join_s <= pending.at_s <= row.at_s + join_s if pending else False
        if pending is not None and inside and row.ms >= pending.ms:
            out.append((_gc_kind(pending), row))
            pending = None
            continue
        if pending is not None:
            out.append((_gc_kind(pending), pending))
            pending = None
        if row.cpu_ms >= row.ms / 2 or row.cpu_ms >= computing_ms:
            out.append((f"computing: {row.what}" + (f" <- {row.frame}" if row.frame else ""), row))
        else:
            out.append((f"not running: {row.what}", row))
    if pending is not None:
        out.append((_gc_kind(pending), pending))
    return out


def _gc_kind(row: Held) -> str:
    return f"collector, generation {row.what[2:]}"


def summarise(attributed: list[tuple[str, Held]], minutes: float, over_ms: float = 0.0) -> list[dict[str, Any]]:
    """Per kind of step (held ``over_ms`` or longer): how many a minute, the milliseconds held a minute, the median
    and the longest; the most held first.

    >>> rows = [("a", Held(0, 20.0, 15.0, "x")), ("a", Held(1, 40.0, 30.0, "x")), ("b", Held(2, 100.0, 1.0, "y"))]
    >>> [(s["kind"], s["per_min"], s["ms_per_min"], s["max_ms"]) for s in summarise(rows, 0.5)]
    [('b', 2.0, 200.0, 100.0), ('a', 4.0, 120.0, 40.0)]
    """
    kinds: dict[str, list[float]] = {}
    for kind, row in attributed:
        if row.ms >= over_ms:
            kinds.setdefault(kind, []).append(row.ms)
    table = [{"kind": kind, "count": len(ms), "per_min": round(len(ms) / minutes, 1),
              "ms_per_min": round(sum(ms) / minutes, 1), "median_ms": round(statistics.median(ms), 1),
              "max_ms": round(max(ms), 1)} for kind, ms in kinds.items()]  # fmt: skip
    return sorted(table, key=lambda s: -s["ms_per_min"])


def phase_span(report: dict[str, Any], system: str, rate: float, round_index: int = 0) -> tuple[float, float]:
    """A rate phase's wall-clock span from scripts/benchmark.py's JSON (``wall_start_s``, ``wall_end_s``): the
    ``round_index``-th run of ``system`` (0: the first)."""
    runs = [s for s in report["systems"] if s.get("system") == system]
    held = runs[round_index]["rates"]
    for phase in held:
        if abs(float(phase.get("offered_tps", -1)) - rate) < 1e-6:
            return float(phase["wall_start_s"]), float(phase["wall_end_s"])
    raise SystemExit(f"no {rate:g} tx/s phase for {system} in round {round_index + 1}")


def markdown(table: list[dict[str, Any]]) -> str:
    lines = [
        "| what held the loop | steps | per minute | ms held per minute | median / max (ms) |",
        "|---|---|---|---|---|",
    ]
    for s in table:
        lines.append(f"| {s['kind']} | {s['count']} | {s['per_min']} | {s['ms_per_min']} | "
                     f"{s['median_ms']} / {s['max_ms']} |")  # fmt: skip
    classes: dict[str, list[float]] = {}
    for s in table:  # collector (each generation), computing, not running
        group = classes.setdefault(s["kind"].split(":")[0], [0, 0.0, 0.0])
        group[0] += s["count"]
        group[1] += s["per_min"]
        group[2] += s["ms_per_min"]
    for kind, (n, per_min_, ms_per_min_) in sorted(classes.items(), key=lambda item: -item[1][2]):
        lines.append(f"| *{kind}, all* | {int(n)} | {per_min_:.1f} | {ms_per_min_:.1f} | |")
    total_n = sum(s["count"] for s in table)
    per_min = sum(s["per_min"] for s in table)
    ms_per_min = sum(s["ms_per_min"] for s in table)
    lines.append(f"| **all** | {total_n} | {per_min:.1f} | {ms_per_min:.1f} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", type=Path, help="a worker's log (LOOP_SLOW_STEP_MS set)")
    parser.add_argument("--bench", type=Path, help="scripts/benchmark.py's JSON: take the span of one rate phase")
    parser.add_argument("--system", default="worker")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--round", type=int, default=1, help="the system's run in the benchmark (1: the first)")
    parser.add_argument("--since", type=float, help="Unix seconds")
    parser.add_argument("--until", type=float, help="Unix seconds")
    parser.add_argument("--over-ms", type=float, default=20.0, help="count only what held the loop this long")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    since, until = args.since, args.until
    if args.bench is not None:
        since, until = phase_span(json.loads(args.bench.read_text()), args.system, args.rate, args.round - 1)
    rows = parse(args.log.read_text(errors="replace").splitlines())
    rows = [r for r in rows if (since is None or r.at_s >= since) and (until is None or r.at_s <= until)]
    if not rows:
        print("nothing logged in that span", file=sys.stderr)
        return 1
    start = since if since is not None else rows[0].at_s
    end = until if until is not None else rows[-1].at_s
    minutes = max(end - start, 1.0) / 60
    table = summarise(attribute(rows), minutes, args.over_ms)
    if args.json:
        print(json.dumps({"minutes": round(minutes, 3), "over_ms": args.over_ms, "table": table}, indent=1))
    else:
        print(f"{minutes * 60:.0f} s of {args.log}, steps and collections of {args.over_ms:g} ms or more:")
        print(markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
