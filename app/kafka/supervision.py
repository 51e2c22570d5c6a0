"""Keeps a Kafka loop running through broker outages: retries with capped exponential backoff, logs state changes.

A loop's session (a coroutine: connect, then work until something fails) runs under a :class:`Supervisor`. When
it raises, the supervisor waits ``initial_backoff_s``, doubling on every failure in a row up to ``max_backoff_s``,
and runs a new session. The log says what changed, one line each time: connected, connection lost (with the
reason), reconnected; never one line per retry. The session tells the supervisor when its client answers
(:meth:`Supervisor.mark_connected`), which also resets the backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

INITIAL_BACKOFF_S = 1.0
MAX_BACKOFF_S = 5.0


def describe(reason: object) -> str:
    """An exception as ``Type: message`` (some Kafka errors have no message), anything else as its text.

    >>> describe(ConnectionError("refused")), describe(TimeoutError()), describe("no metadata")
    ('ConnectionError: refused', 'TimeoutError', 'no metadata')
    """
    if isinstance(reason, BaseException):
        text = str(reason)
        return f"{type(reason).__name__}: {text}" if text else type(reason).__name__
    return str(reason)


class Supervisor:
    """The connection state of one loop (``name`` starts its log lines) and the retries of its sessions."""

    def __init__(
        self,
        name: str,
        *,
        initial_backoff_s: float = INITIAL_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self.connected = False
        self._ever_connected = False
        self._lost = False  # the loss is logged; cleared when connected again
        self.failures = 0  # sessions failed in a row since the last connection

    def mark_connected(self) -> None:
        """The session's client answered: one line if that is news, and the backoff starts over."""
        if not self.connected:
            log.info("%s: %s", self.name, "reconnected" if self._ever_connected else "connected")
        self.connected = self._ever_connected = True
        self._lost = False
        self.failures = 0

    def mark_lost(self, reason: object, *, quiet: bool = False) -> None:
        """The broker stopped answering (``quiet``: while stopping, nothing to report): one line if that is news."""
        if not self._lost and not quiet:
            what = "connection lost" if self._ever_connected else "cannot connect"
            log.warning("%s: %s (%s); retrying until the broker answers", self.name, what, describe(reason))
        self.connected = False
        self._lost = True

    def backoff_s(self) -> float:
        """The wait before the next session: ``initial_backoff_s`` doubled per failure in a row, capped."""
        return min(self.max_backoff_s, self.initial_backoff_s * 2 ** max(0, self.failures - 1))

    async def run(self, session: Callable[[], Awaitable[None]]) -> None:
        """Run ``session()`` until it returns (the loop is stopping) or the task is cancelled; after each failure
        a new session, after the backoff."""
        while True:
            try:
                await session()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker went away while (re)starting, or a client bug: retry
                self.failures += 1
                self.mark_lost(exc)
                delay = self.backoff_s()
                log.debug("%s: session failed (%s); next one in %.1f s", self.name, describe(exc), delay)
                await self._sleep(delay)
