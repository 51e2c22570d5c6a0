"""Event-time alignment of one terminal partition's input, which merges every customer partition.

A terminal's windows hold transactions of every customer, and customers live on different partitions that
run at different speeds (another worker, a backlog, a replay). Handled in arrival order, the terminal's
1-hour count would depend on which partition happened to be ahead. So each customer partition announces its
stream time (the newest event time it has handed over) with every transaction it forwards and in heartbeats,
and a transaction is handled only once every live customer partition has gone past its time: then every
transaction of the terminal with an earlier time has arrived, whatever the speeds. Ties in time are broken by
``tx_id``, so the order is the same on every run.

Two escape hatches keep latency bounded: a customer partition that has read everything on it says it is idle
and is not waited for (live traffic: its next transaction is not written yet), and nothing is held longer than
``max_wait_s`` (counted in a metric: such a transaction may miss a concurrent one from a partition that was
behind). A partition with a backlog - a replay, a catch-up after downtime - is never idle, so those are
always aligned.

>>> aligner = EventTimeAligner(sources=2, max_wait_s=5.0)
>>> aligner.add("b", 20.0, "tx2", source=0, source_watermark_s=20.0, now_s=0.0)
>>> aligner.add("a", 10.0, "tx1", source=1, source_watermark_s=10.0, now_s=0.0)
>>> aligner.release(now_s=0.0)  # partition 1 is at 10: nothing later than 10 is safe yet, and 10 itself neither
[]
>>> aligner.observe(source=1, watermark_s=30.0, idle=False)
>>> [item for item, _ in aligner.release(now_s=0.1)]  # both past 10; partition 0 is not past 20
['a']
>>> aligner.release(now_s=5.0)  # held for max_wait_s: out anyway, marked forced
[('b', True)]
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")


@dataclass(order=True)
class _Held(Generic[Item]):
    t: float
    tie: str
    since_s: float = field(compare=False)
    item: Item = field(compare=False)
    released: bool = field(default=False, compare=False)


class EventTimeAligner(Generic[Item]):
    """Holds items until every live source has passed their event time; releases them in (time, tie) order."""

    def __init__(self, sources: int, max_wait_s: float) -> None:
        self.sources = sources
        self.max_wait_s = max_wait_s
        self._watermarks_s: dict[int, float] = {}
        self._idle: set[int] = set()
        self._held: list[_Held[Item]] = []
        self._arrivals: deque[_Held[Item]] = deque()  # the same items in arrival order: the oldest wait first

    def observe(self, source: int, watermark_s: float, idle: bool) -> None:
        """A source's stream time (it never goes back) and whether it has been idle."""
        self._watermarks_s[source] = max(self._watermarks_s.get(source, float("-inf")), watermark_s)
        if idle:
            self._idle.add(source)
        else:
            self._idle.discard(source)

    def add(
        self,
        item: Item,
        t: float,
        tie: str,
        *,
        source: int,
        source_watermark_s: float,
        now_s: float,
        source_idle: bool = False,
    ) -> None:
        """Hold ``item``; ``source_idle`` says its source had nothing more to read when it sent it."""
        self.observe(source, source_watermark_s, idle=source_idle)
        held = _Held(t, tie, now_s, item)
        heapq.heappush(self._held, held)
        self._arrivals.append(held)

    @property
    def frontier_s(self) -> float:
        """Every live source is past this time; unknown sources count as not started."""
        live = [s for s in range(max(self.sources, len(self._watermarks_s))) if s not in self._idle]
        return min((self._watermarks_s.get(s, float("-inf")) for s in live), default=float("inf"))

    def release(self, now_s: float) -> list[tuple[Item, bool]]:
        """Items now safe, in order, each with whether it was forced out by ``max_wait_s``.

        An item held too long is forced out together with everything ordered before it, so the order holds.
        """
        out: list[tuple[Item, bool]] = []
        frontier = self.frontier_s
        while self._arrivals and self._arrivals[0].released:
            self._arrivals.popleft()
        forced_up_to = self._arrivals[0] if self._arrivals and self.oldest_wait_s(now_s) >= self.max_wait_s else None
        while self._held:
            head = self._held[0]
            if head.t < frontier:
                forced = False
            elif forced_up_to is not None and head <= forced_up_to:
                forced = True
            else:
                break
            heapq.heappop(self._held).released = True
            out.append((head.item, forced))
        return out

    def oldest_wait_s(self, now_s: float) -> float:
        while self._arrivals and self._arrivals[0].released:
            self._arrivals.popleft()
        return now_s - self._arrivals[0].since_s if self._arrivals else 0.0

    def __len__(self) -> int:
        return len(self._held)


class StreamTimeAnnouncer:
    """What each terminal partition last heard about each customer partition, so heartbeats go only where they
    change something: to a terminal partition that thinks the customer partition is live and behind, or that
    does not know yet that it went idle.

    >>> announcer = StreamTimeAnnouncer()
    >>> announcer.heard(source=0, target=1, watermark_s=10.0, idle=False)
    >>> announcer.due(source=0, watermark_s=10.0, idle=False, targets=range(3))  # 1 knows; 0 and 2 never heard
    [0, 2]
    >>> announcer.heard(source=0, target=0, watermark_s=5.0, idle=True)
    >>> announcer.due(source=0, watermark_s=20.0, idle=True, targets=range(3))  # 0 knows it is idle
    [1, 2]
    """

    def __init__(self) -> None:
        self._heard: dict[tuple[int, int], tuple[float, bool]] = {}

    def heard(self, *, source: int, target: int, watermark_s: float, idle: bool) -> None:
        self._heard[(source, target)] = (watermark_s, idle)

    def due(self, *, source: int, watermark_s: float, idle: bool, targets: Iterable[int]) -> list[int]:
        out = []
        for target in targets:
            known = self._heard.get((source, target))
            if known is None or known[1] != idle or (not idle and watermark_s > known[0]):
                out.append(target)
        return out

    def clear(self) -> None:
        self._heard.clear()
