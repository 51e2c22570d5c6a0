"""The reconnect supervisor without a broker: backoff doubles up to its cap, and the log has one line per state
change (connected, lost with the reason, reconnected), not one per retry."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.kafka.supervision import Supervisor


class FlakyLoop:
    """A session that fails ``failures_before[i]`` times before connecting in its i-th outage; after the last, it
    connects and returns (the loop stopping)."""

    def __init__(self, supervisor: Supervisor, failures_before: list[int]) -> None:
        self.supervisor = supervisor
        self.plan = list(failures_before)
        self.sessions = 0

    async def session(self) -> None:
        self.sessions += 1
        if self.plan[0] > 0:
            self.plan[0] -= 1
            raise ConnectionError(f"broker down ({self.sessions})")
        self.plan.pop(0)
        self.supervisor.mark_connected()
        if self.plan:  # connected a while, then the broker goes away again
            raise ConnectionError("broker went away")


def run(failures_before: list[int], max_backoff_s: float = 8.0) -> tuple[FlakyLoop, list[float]]:
    sleeps: list[float] = []

    async def sleep(delay: float) -> None:
        sleeps.append(delay)

    supervisor = Supervisor("test loop", initial_backoff_s=1.0, max_backoff_s=max_backoff_s, sleep=sleep)
    loop = FlakyLoop(supervisor, failures_before)
    asyncio.run(supervisor.run(loop.session))
    return loop, sleeps


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "app.kafka.supervision" and r.levelno >= logging.INFO]


def test_backoff_doubles_per_failure_in_a_row_up_to_the_cap(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    loop, sleeps = run([6])
    assert loop.sessions == 7
    assert sleeps == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert lines(caplog) == [
        "test loop: cannot connect (ConnectionError: broker down (1)); retrying until the broker answers",
        "test loop: connected",
    ]


def test_one_line_per_state_change_and_the_backoff_starts_over_once_connected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # connects at once, loses the broker, 4 failed sessions, reconnects, loses it again, 2 failed, reconnects
    loop, sleeps = run([0, 4, 2], max_backoff_s=5.0)
    assert loop.sessions == 1 + 5 + 3
    assert sleeps == [1.0, 2.0, 4.0, 5.0, 5.0, 1.0, 2.0, 4.0]
    assert lines(caplog) == [
        "test loop: connected",
        "test loop: connection lost (ConnectionError: broker went away); retrying until the broker answers",
        "test loop: reconnected",
        "test loop: connection lost (ConnectionError: broker went away); retrying until the broker answers",
        "test loop: reconnected",
    ]


def test_a_cancelled_loop_is_not_retried() -> None:
    supervisor = Supervisor("test loop")

    async def main() -> None:
        async def session() -> None:
            supervisor.mark_connected()
            await asyncio.sleep(3600)

        task = asyncio.ensure_future(supervisor.run(session))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert supervisor.connected and supervisor.failures == 0
