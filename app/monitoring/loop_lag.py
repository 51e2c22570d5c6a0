"""The event loop's own health: how late it runs what is due, what held it, and the garbage collector's pauses.

Every decision, fetch, commit, timer and page of a worker runs on one asyncio loop: a synchronous step that holds it
(a store read, a long computation, a full collection) delays every decision in flight at once, which shows as the
decision path's p99 and nowhere else. Three instruments, all cheap enough to stay on except the third:

- :class:`LagProbe`: a task that sleeps a fixed interval and records how late it woke
  (``fraud_event_loop_lag_seconds``);
- :class:`GcPauses`: the collector's pauses by generation (``fraud_gc_pause_seconds{generation}``), from
  :data:`gc.callbacks`;
- :class:`SlowSteps` (``LOOP_SLOW_STEP_MS``, off by default): every step of the loop (one callback, one task step)
  that holds it that long is logged with its task's coroutine, its CPU time (far below the wall time: the process
  was not running, not computing) and a sample of the stack it was running, taken by a watchdog thread while the
  step still ran. It wraps every callback of the loop (four clock reads each, two of them the thread's CPU time)
  and its thread wakes every few milliseconds: a diagnosis tool, not a default.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class LagProbe:
    """Sleeps ``interval_s`` again and again and hands ``observe`` how late each wake-up came (seconds, >= 0): the
    longest a ready callback waited for the loop, sampled every interval."""

    def __init__(self, interval_s: float, observe: Callable[[float], None]) -> None:
        self.interval_s = interval_s
        self.observe = observe

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        interval_s = self.interval_s
        while True:
            due = loop.time() + interval_s
            await asyncio.sleep(interval_s)
            self.observe(max(0.0, loop.time() - due))


class GcPauses:
    """A :data:`gc.callbacks` entry timing each collection: ``observe(generation, seconds)``; a collection of
    ``log_over_s`` or longer (0: none) is also logged with its generation and what it collected."""

    def __init__(self, observe: Callable[[int, float], None], log_over_s: float = 0.0) -> None:
        self.observe = observe
        self.log_over_s = log_over_s
        self._started = 0.0
        self._cpu_started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            if self.log_over_s:
                self._cpu_started = time.thread_time()
            return
        took = time.perf_counter() - self._started
        generation = int(info.get("generation", 0))
        self.observe(generation, took)
        if self.log_over_s and took >= self.log_over_s:  # its CPU time: the collection's own cost, not the host's
            cpu_ms = (time.thread_time() - self._cpu_started) * 1000
            log.warning("garbage collection of generation %d held the process %.1f ms (%.1f ms of CPU; %d collected, "
                        "%d uncollectable)", generation, took * 1000, cpu_ms, info.get("collected", 0),
                        info.get("uncollectable", 0))  # fmt: skip

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def uninstall(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)


def describe(callback: Any) -> str:
    """What a loop callback is, for a log line: a task step names its task's coroutine and where it is suspended
    now (after the step), anything else its qualified name.

    >>> describe(print)
    'print'
    """
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Future) and hasattr(owner, "get_coro"):
        coro = owner.get_coro()
        name = getattr(coro, "__qualname__", repr(coro))
        frame = None
        while coro is not None:  # the innermost coroutine awaited: where the task waits now
            frame = getattr(coro, "cr_frame", None) or frame
            coro = getattr(coro, "cr_await", None)
        if frame is not None:
            return f"task {name} (now at {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name})"
        return f"task {name}"
    return getattr(callback, "__qualname__", None) or repr(callback)


class SlowSteps:
    """Logs each step of the event loop that holds it ``threshold_s`` or longer: the callback, how long, and the
    stack a watchdog thread saw it running at (sampled every ``sample_s`` while a step runs over the threshold).

    Installed by wrapping :meth:`asyncio.Handle._run` (the pure-Python loop of CPython's asyncio; no uvloop here), so
    one worker process has at most one; :meth:`uninstall` puts the original back."""

    def __init__(self, threshold_s: float, sample_s: float = 0.005, stack_depth: int = 6) -> None:
        self.threshold_s = threshold_s
        self.sample_s = sample_s
        self.stack_depth = stack_depth
        self.slow: list[
            tuple[str, float, float, str]
        ] = []  # (what, seconds, CPU seconds, stack) of the last steps logged, bounded
        self._step_started: float | None = None
        self._sample: str = ""
        self._loop_thread = 0
        self._original: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def install(self) -> None:
        if self._original is not None:
            return
        self._loop_thread = threading.get_ident()
        original = self._original = asyncio.events.Handle._run
        watch = self

        def _run(handle: asyncio.Handle) -> None:
            started = watch._step_started = time.perf_counter()
            cpu_started = time.thread_time()
            watch._sample = ""
            try:
                original(handle)
            finally:
                watch._step_started = None
                took = time.perf_counter() - started
                if took >= watch.threshold_s:
                    watch._report(handle, took, time.thread_time() - cpu_started)

        asyncio.events.Handle._run = _run  # type: ignore[method-assign,assignment]
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="loop-slow-steps", daemon=True)
        self._thread.start()

    def uninstall(self) -> None:
        if self._original is None:
            return
        asyncio.events.Handle._run = self._original  # type: ignore[method-assign]
        self._original = None
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(self.sample_s):
            started = self._step_started
            if started is None or time.perf_counter() - started < self.threshold_s / 2:
                continue
            frame = sys._current_frames().get(self._loop_thread)  # noqa: SLF001
            if frame is not None and self._step_started == started:
                summary = traceback.extract_stack(frame)[-self.stack_depth :]
                self._sample = " <- ".join(f"{s.name} ({s.filename.rsplit('/', 2)[-1]}:{s.lineno})"
                                           for s in reversed(summary))  # fmt: skip

    def _report(self, handle: asyncio.Handle, took: float, cpu_s: float) -> None:
        """One line per slow step. Its CPU time tells what held the loop: a step that computed (CPU near the wall
        time), or one whose thread did not run (CPU far below it: the cores were busy elsewhere, or another thread
        of the process held the GIL)."""
        what = describe(getattr(handle, "_callback", None))
        stack = self._sample or "not sampled"
        self.slow.append((what, took, cpu_s, stack))
        del self.slow[:-100]
        log.warning("event loop held %.1f ms (%.1f ms of CPU) by %s; stack seen: %s", took * 1000, cpu_s * 1000, what,
                    stack)  # fmt: skip
