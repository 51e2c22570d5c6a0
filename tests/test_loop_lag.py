"""The event loop's instruments (app/monitoring/loop_lag.py): the lag probe sees a step that holds the loop, the
slow-step log names its task and its stack, the collector's pauses come by generation."""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import pytest

from app import metrics
from app.monitoring.loop_lag import GcPauses, LagProbe, SlowSteps, describe


def _hold_loop(seconds: float) -> None:
    time.sleep(seconds)  # a synchronous step: nothing else on the loop runs meanwhile


async def _holding_task() -> None:
    await asyncio.sleep(0.02)
    _hold_loop(0.3)  # the watchdog thread samples it from 25 ms on: a wide margin on a loaded machine


def test_the_probe_records_a_step_holding_the_loop_as_lag() -> None:
    observed: list[float] = []

    async def main() -> None:
        probe = asyncio.ensure_future(LagProbe(0.005, observed.append).run())
        await asyncio.sleep(0.02)
        _hold_loop(0.1)  # the probe's next wake-up was due within 5 ms: it comes at least 95 ms late
        await asyncio.sleep(0.02)
        probe.cancel()
        await asyncio.gather(probe, return_exceptions=True)

    asyncio.run(main())
    assert observed
    assert min(observed) >= 0.0
    assert max(observed) >= 0.09  # a lower bound: the hold cannot end sooner, however slow the machine


def test_slow_steps_are_logged_with_their_task_and_stack(caplog: pytest.LogCaptureFixture) -> None:
    watch = SlowSteps(0.05, sample_s=0.002)

    async def main() -> None:
        watch.install()
        try:
            await asyncio.ensure_future(_holding_task())
            await asyncio.sleep(0)  # quick steps are not logged
        finally:
            watch.uninstall()

    with caplog.at_level(logging.WARNING, logger="app.monitoring.loop_lag"):
        asyncio.run(main())
    assert len(watch.slow) == 1, watch.slow
    what, took, cpu_s, stack = watch.slow[0]
    assert "_holding_task" in what
    assert took >= 0.3
    assert cpu_s < took  # it slept: its thread did not compute all that time
    assert stack.startswith("_hold_loop (test_loop_lag.py:")  # the innermost frame first
    assert "_holding_task" in stack
    assert "event loop held" in caplog.text
    original = asyncio.events.Handle._run
    assert getattr(original, "__qualname__", "") == "Handle._run"  # uninstalled: the loop's own method again


def test_describe_names_a_task_by_its_coroutine() -> None:
    async def main() -> str:
        task = asyncio.ensure_future(asyncio.sleep(1))
        await asyncio.sleep(0)
        try:
            return describe(task.cancel)  # any bound method of the task names it
        finally:
            task.cancel()

    assert describe(print) == "print"
    assert asyncio.run(main()).startswith("task sleep")


def test_gc_pauses_are_observed_by_generation() -> None:
    seen: list[tuple[int, float]] = []
    pauses = GcPauses(lambda generation, seconds: seen.append((generation, seconds)))
    pauses.install()
    try:
        gc.collect(2)
    finally:
        pauses.uninstall()
    assert pauses not in gc.callbacks
    assert (2, seen[-1][1]) == seen[-1] and seen[-1][1] >= 0.0


def test_the_gc_pause_metric_keeps_three_generations() -> None:
    before = metrics.GC_PAUSES[2]._sum.get()  # noqa: SLF001
    metrics.observe_gc_pause(2, 0.25)
    metrics.observe_gc_pause(7, 0.0)  # out of range: counted as the oldest, never a new label
    assert metrics.GC_PAUSES[2]._sum.get() == pytest.approx(before + 0.25)  # noqa: SLF001
    assert {s.labels["generation"] for s in next(iter(metrics.GC_PAUSE.collect())).samples} == {"0", "1", "2"}
