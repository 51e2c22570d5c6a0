"""Catch-up pacing: while several partitions work through a backlog, none runs ahead of the others in event
time by more than ``max_skew_s``. Pure; the decision loop feeds it what it fetched.

Why: the terminal windows read what every partition has scored so far. Live, partitions are a few
milliseconds apart and nothing is held. After a restart or a rebalance every partition has a backlog, and one
partition racing days ahead of another (in a replay, seconds of wall time are days of event time) would score
before the other's older transactions reached the terminal aggregates. A partition with no backlog is never
waited for, so a quiet or stalled partition never holds the others.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Any


class CatchUpPacer:
    """Per partition, fetched records waiting with their event time; :meth:`take` releases what may go now.

    >>> pacer = CatchUpPacer(max_skew_s=10.0)
    >>> pacer.add("a", [(0.0, "a0"), (5.0, "a1"), (50.0, "a2")])
    >>> pacer.add("b", [(20.0, "b0")])
    >>> pacer.take(backlog=set())  # a's head is at 0 s: nothing more than 10 s later goes yet
    {'a': ['a0', 'a1']}
    >>> pacer.take(backlog=set())  # a0 and a1 are taken, not committed: they still hold b back
    {}
    >>> pacer.done("a", 2)
    >>> pacer.take(backlog=set())
    {'b': ['b0']}
    >>> pacer.done("b", 1)
    >>> pacer.take(backlog=set())  # b has nothing more and no backlog: a is not held
    {'a': ['a2']}
    """

    def __init__(self, max_skew_s: float) -> None:
        self.max_skew_s = max_skew_s
        self.waiting: dict[Hashable, deque[tuple[float, Any]]] = {}
        # Taken and not committed yet, per partition: their entries are not in the terminal aggregates, so they
        # hold the others back as if still waiting (a partition's queue can hold days of a replay's event time).
        self.in_flight: dict[Hashable, deque[float]] = {}
        self.last_s: dict[Hashable, float] = {}

    def add(self, partition: Hashable, timed: list[tuple[float, Any]]) -> None:
        self.waiting.setdefault(partition, deque()).extend(timed)

    def done(self, partition: Hashable, count: int) -> None:
        """The oldest ``count`` records taken for ``partition`` are committed (or given up)."""
        times = self.in_flight.get(partition)
        for _ in range(min(count, len(times) if times else 0)):
            times.popleft()  # type: ignore[union-attr]

    def start_at(self, partition: Hashable, last_s: float | None) -> None:
        """A partition restored with its state's stream time: until its records are fetched, that time stands in for
        its next one when it has a backlog (after a restart no record of it has been taken yet).

        >>> pacer = CatchUpPacer(max_skew_s=10.0)
        >>> pacer.start_at("b", 0.0)
        >>> pacer.add("a", [(5.0, "a0"), (50.0, "a1")])
        >>> pacer.take(backlog={"b"})  # b has more to read, from 0 s on: a may not run 10 s past it
        {'a': ['a0']}
        """
        if last_s is not None and last_s > float("-inf"):
            self.last_s[partition] = last_s

    def drop(self, partition: Hashable) -> None:
        self.waiting.pop(partition, None)
        self.in_flight.pop(partition, None)
        self.last_s.pop(partition, None)

    def clear(self) -> None:
        self.waiting.clear()
        self.in_flight.clear()
        self.last_s.clear()

    def held(self) -> set[Hashable]:
        return {p for p, q in self.waiting.items() if q}

    def take(self, backlog: set[Hashable], limit: int | None = None) -> dict[Hashable, list[Any]]:
        """What each partition may process now. ``backlog``: partitions known to have more to read than what
        is waiting here; their last event time stands in for their next one."""
        heads = {p: q[0][0] for p, q in self.waiting.items() if q}
        for p, times in self.in_flight.items():
            if times:
                heads[p] = min(heads.get(p, times[0]), times[0])
        for p in backlog:
            if p not in heads and p in self.last_s:
                heads[p] = self.last_s[p]
        if self.max_skew_s <= 0 or len(heads) < 2:
            ceiling = float("inf")
        else:
            ceiling = min(heads.values()) + self.max_skew_s
        out: dict[Hashable, list[Any]] = {}
        for p, q in self.waiting.items():
            taken: list[Any] = []
            flying = self.in_flight.setdefault(p, deque())
            while q and q[0][0] <= ceiling and (limit is None or len(taken) < limit):
                t, record = q.popleft()
                taken.append(record)
                flying.append(t)
                self.last_s[p] = max(self.last_s.get(p, t), t)
            if taken:
                out[p] = taken
        return out
