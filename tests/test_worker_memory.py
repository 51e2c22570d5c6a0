"""``scripts/worker_memory.py``'s reading of ``/proc/PID/smaps`` by kind, on this test's own process and on a
process that allocates 16 MiB (a bytearray: glibc maps it apart, CPython zeroes it). Linux only (it reads /proc);
the gdb report is not run here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import worker_memory  # scripts/ is on sys.path (tests/conftest.py)

MIB = 2**20


def test_the_resident_set_by_kind_adds_up_to_the_process_rss() -> None:
    kinds = worker_memory.smaps_by_kind(os.getpid())
    assert kinds["shared libraries"]["rss"] > 0
    total = sum(entry["rss"] for entry in kinds.values())
    rss = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    assert abs(total - rss) < 0.1 * rss  # the same pages, counted by mapping


def _anonymous_rss(pid: int) -> int:
    return sum(e["rss"] for kind, e in worker_memory.smaps_by_kind(pid).items() if kind.startswith("anonymous"))


def test_16_mib_allocated_are_added_to_the_anonymous_kinds() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys\n"
         "print('started', flush=True)\n"
         "sys.stdin.readline()\n"
         "m = bytearray(16 * 2**20)\n"
         "print('allocated', flush=True)\n"
         "sys.stdin.readline()\n"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == b"started"
        before = _anonymous_rss(child.pid)
        child.stdin.write(b"\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == b"allocated"
        assert _anonymous_rss(child.pid) - before >= 15 * MIB
    finally:
        child.kill()
        child.wait()
