"""glibc's malloc told to give memory back (:mod:`app.allocator`): the settings, applied when the worker starts, and
a trim that returns the free pages a fragmented heap keeps. No broker."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app import __main__ as entry
from app import allocator, metrics
from app.settings import Settings, load

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_the_settings_default_to_two_arenas_no_trim_a_256_kib_mmap_threshold_and_read_the_environment() -> None:
    assert (Settings().memory_arena_max, Settings().memory_trim_interval_s) == (2, 0.0)
    assert Settings().memory_mmap_threshold_kb == 256
    settings = load({"MEMORY_ARENA_MAX": "0", "MEMORY_TRIM_INTERVAL_S": "0", "MEMORY_MMAP_THRESHOLD_KB": "512"})
    assert (settings.memory_arena_max, settings.memory_trim_interval_s) == (0, 0.0)
    assert settings.memory_mmap_threshold_kb == 512


def test_this_machine_is_glibc_so_the_tests_below_test_something() -> None:
    assert platform.libc_ver()[0] == "glibc"
    assert allocator.heap() is not None


def test_the_worker_sets_the_arena_limit_from_its_settings_before_anything_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(allocator, "configure", lambda n, b: calls.append(("configure", n, b)))
    monkeypatch.setattr("app.worker.main", lambda settings, argv: calls.append(("worker", argv[-1])))
    monkeypatch.setenv("MEMORY_ARENA_MAX", "3")
    monkeypatch.setenv("MEMORY_MMAP_THRESHOLD_KB", "64")
    entry.run_worker(["--help"])  # --help: no broker asked
    assert calls == [("configure", 3, 64 * 1024), ("worker", "--help")]


def test_configure_leaves_glibc_alone_at_0_and_takes_a_limit_otherwise() -> None:
    code = "from app import allocator; print(allocator.configure(0), allocator.configure(2))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


# A 1 MiB block freed raises glibc's own threshold to 1 MiB: a 300 KiB block after it comes from the heap (and stays
# with the process when freed) unless the threshold is fixed, then it is mapped apart (mallinfo2's mmapped bytes).
AFTER_A_LARGE_FREE = """
import sys
from app import allocator
allocator.configure(2, int(sys.argv[1]))
big = bytearray(1 << 20)
del big
before = allocator.heap().mmapped_bytes
block = bytearray(300 * 1024)
print(allocator.heap().mmapped_bytes - before)
"""


@pytest.mark.parametrize(("threshold_bytes", "mapped_apart"), [(0, False), (256 * 1024, True)])
def test_a_fixed_mmap_threshold_maps_blocks_apart_after_a_large_free(threshold_bytes: int, mapped_apart: bool) -> None:
    out = subprocess.run([sys.executable, "-c", AFTER_A_LARGE_FREE, str(threshold_bytes)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (int(out.stdout) >= 300 * 1024) is mapped_apart


# A heap of 4 KB blocks of which one in 16 stays: the freed ones lie between live ones, below the heap's top, where
# glibc's free gives nothing back; malloc_trim hands their pages to the kernel.
FRAGMENTED = """
import json
from app import allocator, metrics
keep, junk = [], []
for i in range(20_000):
    (keep if i % 16 == 0 else junk).append(bytearray(4096))
del junk
trimmed = allocator.trim_and_count()
released = metrics.ALLOCATOR_RELEASED._value.get()
print(json.dumps({"before": trimmed.rss_before_bytes, "after": trimmed.rss_after_bytes, "released": released,
                  "free": metrics.ALLOCATOR_BYTES.labels("free")._value.get(), "kept": len(keep)}))
"""


def test_a_trim_gives_back_the_free_pages_between_live_blocks_and_counts_them() -> None:
    out = subprocess.run([sys.executable, "-c", FRAGMENTED], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    figures = __import__("json").loads(out.stdout)
    freed = 20_000 * 15 // 16 * 4096  # ~77 MB freed, all of it between kept blocks
    assert figures["free"] >= freed * 0.9
    assert figures["before"] - figures["after"] >= freed * 0.5, figures
    assert figures["released"] == figures["before"] - figures["after"]


def test_trim_and_count_sets_the_gauges_in_this_process() -> None:
    trimmed = allocator.trim_and_count()
    assert trimmed is not None
    assert metrics.ALLOCATOR_BYTES.labels("in_use")._value.get() == trimmed.heap.in_use_bytes > 0


@pytest.mark.parametrize(("interval", "timers"), [("30", ["publish_health", "trim_memory"]), ("0", ["publish_health"])])
def test_the_worker_app_trims_on_a_timer_unless_the_interval_is_0(interval: str, timers: list[str]) -> None:
    from types import SimpleNamespace
    from unittest import mock

    from app.worker import create_app

    with mock.patch("app.serving.web.register"):  # the pages need real components; the timers do not
        app = create_app(SimpleNamespace(settings=load({"MEMORY_TRIM_INTERVAL_S": interval})))  # type: ignore[arg-type]
    assert [task.__name__ for task in app._app_tasks] == timers
