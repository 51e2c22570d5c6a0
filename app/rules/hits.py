"""Each rule's matches over the last window (pure): what the operator page shows beside the rule set.

The scorer adds a batch's matches when it commits (only batches where a rule matched), so the cost is per batch,
not per transaction; the window keeps one entry per such batch and drops those older than ``window_s``.

>>> hits = RuleHits(60.0)
>>> hits.add(0.0, {"velocity": 2}); hits.add(30.0, {"velocity": 1, "big": 4})
>>> hits.counts(50.0)
{'velocity': 3, 'big': 4}
>>> hits.counts(70.0)
{'velocity': 1, 'big': 4}
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping


class RuleHits:
    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._batches: deque[tuple[float, Mapping[str, int]]] = deque()

    def add(self, now_s: float, hits: Mapping[str, int]) -> None:
        self._batches.append((now_s, hits))
        self._drop(now_s)

    def counts(self, now_s: float) -> dict[str, int]:
        """Matches per rule id over ``(now_s - window_s, now_s]``."""
        self._drop(now_s)
        total: Counter[str] = Counter()
        for _, hits in self._batches:
            total.update(hits)
        return dict(total)

    def _drop(self, now_s: float) -> None:
        horizon = now_s - self.window_s
        while self._batches and self._batches[0][0] <= horizon:
            self._batches.popleft()
