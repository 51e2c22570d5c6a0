"""glibc's malloc, told to give memory back: fewer arenas, and the free pages inside the heap returned periodically.

A worker's memory that no structure holds was, in the scale runs (BENCHMARKS.md, "State at scale (issue 16),
twelfth part"), glibc's main arena keeping what Python and the clients freed: at 1x about 223 MB taken from the
system for 83 MB in use. glibc returns only the top of its heap on ``free`` (and its dynamic threshold raises that
limit up to 64 MB after big buffers are freed); the free pages inside it go back only through ``malloc_trim``. So:

- :func:`configure` at the start of the process, before any thread: ``mallopt(M_ARENA_MAX, n)`` (``MEMORY_ARENA_MAX``;
  the threads of RocksDB and the clients share ``n`` arenas instead of up to 8 per core, each keeping its own free
  memory). glibc's own ``MALLOC_ARENA_MAX`` environment variable does the same but only if set before the
  process starts; this is a setting like the others. And ``mallopt(M_MMAP_THRESHOLD, b)``
  (``MEMORY_MMAP_THRESHOLD_KB``): blocks of ``b`` bytes or more are mapped apart and unmapped when freed. glibc's
  own threshold starts at 128 KiB but rises to the size of every mapped block freed (up to 32 MiB), so after the
  first large buffers (Kafka fetches, checkpoint chunks, JSON) every later one is carved from the heap, where what
  is freed stays with the process; a fixed threshold keeps them out of it (and the heap's top trimmed at 128 KiB
  instead of twice the raised threshold).
- :func:`trim` every ``MEMORY_TRIM_INTERVAL_S`` (:mod:`app.worker`'s timer, off the event loop):
  ``malloc_trim(0)`` hands the free pages of every arena back to the kernel (``madvise``), the allocator's
  in-use and free bytes (``mallinfo2``) before and after go to the metrics.

Not glibc (musl, macOS): both do nothing, one warning. Pure: no faust, no Kafka.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # malloc.h
M_ARENA_MAX = -8
NOTABLE_BYTES = 8 << 20  # a trim that gives back this much is logged at INFO, a smaller one at DEBUG


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )  # fmt: skip
    ]


@dataclass(frozen=True, slots=True)
class Heap:
    """The allocator's bytes (``mallinfo2``, every arena): in use by the program, free but kept from the system
    (the part a trim can give back, whole pages of it), and in blocks mmapped apart (returned on free)."""

    in_use_bytes: int
    free_bytes: int
    mmapped_bytes: int


@dataclass(frozen=True, slots=True)
class Trimmed:
    """One ``malloc_trim(0)``: the heap before it (its free bytes stay counted free after: the pages under them
    are what went back), the process's resident bytes before and after, and how long it took."""

    heap: Heap
    rss_before_bytes: int
    rss_after_bytes: int
    released: bool  # malloc_trim's answer: some memory went back
    seconds: float


def rss_bytes() -> int:
    """This process's resident set (``/proc/self/statm``); 0 where there is none."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


_libc: Any = None


def _glibc() -> Any:
    """The C library if it is glibc (it has ``malloc_trim`` and ``mallinfo2``, glibc 2.33+), else None."""
    global _libc
    if _libc is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            libc.mallopt.restype = ctypes.c_int
            libc.malloc_trim.argtypes = [ctypes.c_size_t]
            libc.malloc_trim.restype = ctypes.c_int
            libc.mallinfo2.argtypes = []
            libc.mallinfo2.restype = _Mallinfo2
            _libc = libc
        except (OSError, AttributeError) as exc:
            log.warning("not glibc (%r): MEMORY_ARENA_MAX and MEMORY_TRIM_INTERVAL_S do nothing", exc)
            _libc = False
    return _libc or None


def configure(arena_max: int, mmap_threshold_bytes: int = 0) -> bool:
    """``mallopt(M_ARENA_MAX, arena_max)`` if ``arena_max`` > 0 (0: glibc's default, 8 arenas a core) and
    ``mallopt(M_MMAP_THRESHOLD, mmap_threshold_bytes)`` if that is > 0 (0: glibc's dynamic threshold); call it before
    the process starts threads (arenas made before stay). True if glibc took every one asked (False if none was)."""
    libc = _glibc()
    if libc is None or (arena_max <= 0 and mmap_threshold_bytes <= 0):
        return False
    ok = True
    if arena_max > 0 and libc.mallopt(M_ARENA_MAX, arena_max) != 1:
        log.warning("mallopt(M_ARENA_MAX, %d) refused", arena_max)
        ok = False
    if mmap_threshold_bytes > 0 and libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold_bytes) != 1:
        log.warning("mallopt(M_MMAP_THRESHOLD, %d) refused (glibc takes at most 32 MiB)", mmap_threshold_bytes)
        ok = False
    return ok


def heap() -> Heap | None:
    """The allocator's bytes now; None where it is not glibc."""
    libc = _glibc()
    if libc is None:
        return None
    info = libc.mallinfo2()
    return Heap(in_use_bytes=info.uordblks, free_bytes=info.fordblks, mmapped_bytes=info.hblkhd)


def trim() -> Trimmed | None:
    """``malloc_trim(0)``: the free pages of every arena back to the system. It takes each arena's lock in turn
    (a thread allocating meanwhile waits) and ctypes lets go of the GIL: run it in a thread, not on the event
    loop. None where it is not glibc."""
    libc = _glibc()
    before = heap()
    if libc is None or before is None:
        return None
    rss_before = rss_bytes()
    started = time.perf_counter()
    released = bool(libc.malloc_trim(0))
    seconds = time.perf_counter() - started
    return Trimmed(before, rss_before, rss_bytes(), released, seconds)


def trim_and_count() -> Trimmed | None:
    """:func:`trim`, its figures in the metrics (``fraud_allocator_bytes``, ``fraud_allocator_released_bytes``)
    and a debug line."""
    from app import metrics  # prometheus only where the metrics are set

    trimmed = trim()
    if trimmed is None:
        return None
    metrics.ALLOCATOR_BYTES.labels("in_use").set(trimmed.heap.in_use_bytes)
    metrics.ALLOCATOR_BYTES.labels("free").set(trimmed.heap.free_bytes)
    metrics.ALLOCATOR_BYTES.labels("mmapped").set(trimmed.heap.mmapped_bytes)
    released = max(0, trimmed.rss_before_bytes - trimmed.rss_after_bytes)
    metrics.ALLOCATOR_RELEASED.inc(released)
    log.log(logging.INFO if released >= NOTABLE_BYTES else logging.DEBUG,
            "malloc_trim: %.1f MiB in use, %.1f MiB free; RSS %.1f -> %.1f MiB in %.1f ms",
            trimmed.heap.in_use_bytes / 2**20, trimmed.heap.free_bytes / 2**20, trimmed.rss_before_bytes / 2**20,
            trimmed.rss_after_bytes / 2**20, trimmed.seconds * 1000)  # fmt: skip
    return trimmed
