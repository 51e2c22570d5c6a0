"""Per-feature quantile bins learnt from a warm-up sample, so a linear model can draw thresholds.

A logistic regression on scaled features scores ``amount`` as a straight line; the simulator's frauds sit behind
thresholds (an amount over 220, a terminal whose delayed risk is above zero, an amount five times the card's
usual). One indicator per bin of each feature lets the linear model weigh each range separately. The bins are fixed
from the first labelled transactions (quantiles of all of them, plus quantiles of the frauds among them, so the
ranges where frauds live are cut finely too) and never move after, so a weight keeps its meaning.

Pure: no River, no I/O; everything pickles.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Sequence


def quantile_edges(values: Sequence[float], bins: int) -> list[float]:
    """The ``bins - 1`` inner quantiles of ``values`` (nearest rank), without repeats.

    >>> quantile_edges([float(v) for v in range(100)], 4)
    [25.0, 50.0, 75.0]
    >>> quantile_edges([0.0] * 90 + [1.0] * 10, 4)  # a flag: one edge, at 0
    [0.0]
    """
    if not values or bins < 2:
        return []
    ordered = sorted(values)
    n = len(ordered)
    return sorted({ordered[min(n - 1, (i * n) // bins)] for i in range(1, bins)})


class QuantileBins:
    """Collects the first ``warm`` observations, then maps each value to its bin's indicator name.

    A value ``v`` falls in bin ``i`` = the number of edges below it (``v <= edges[0]`` is bin 0), so the mass at
    a single value (a count of 0, a risk of 0) gets a bin of its own. Names are ``feature#i``; :meth:`source` maps
    one back to its feature (reasons must name features, never bins).
    """

    def __init__(self, bins: int, warm: int, fraud_quantiles: bool = True) -> None:
        self.bins = bins
        self.warm = warm
        self.fraud_quantiles = fraud_quantiles
        self.fitted = False
        self.edges: dict[str, list[float]] = {}
        self.names: dict[str, tuple[str, ...]] = {}
        # The warm-up sample, 8 bytes a value (a snapshot taken during the warm-up carries it: 31 features times
        # 50,000 labels is about 12 MB; after the warm-up it is dropped).
        self._seen: dict[str, array[float]] = {}
        self._seen_fraud: dict[str, array[float]] = {}
        self._count = 0

    def without_sample(self) -> QuantileBins:
        """A copy for a model that only scores: the same edges (none during the warm-up), no warm-up sample."""
        copy = QuantileBins(self.bins, self.warm, self.fraud_quantiles)
        copy.fitted, copy.edges, copy.names, copy._count = self.fitted, self.edges, self.names, self._count
        return copy

    def observe(self, x: dict[str, float], y: bool) -> None:
        """Keep ``x`` for the quantiles until ``warm`` labels were seen; then fix the edges."""
        if self.fitted:
            return
        for name, value in x.items():
            self._seen.setdefault(name, array("d")).append(value)
            if y and self.fraud_quantiles:
                self._seen_fraud.setdefault(name, array("d")).append(value)
        self._count += 1
        if self._count >= self.warm:
            self._fit()

    def _fit(self) -> None:
        for name, values in self._seen.items():
            edges = set(quantile_edges(values, self.bins))
            edges.update(quantile_edges(self._seen_fraud.get(name, array("d")), self.bins))
            top = max(values)
            edges = {edge for edge in edges if edge < top}  # an edge at the largest value would bound an empty bin
            self.edges[name] = sorted(edges)
            self.names[name] = tuple(f"{name}#{i}" for i in range(len(edges) + 1))
        self._seen, self._seen_fraud = {}, {}  # the sample is not needed any more: keep snapshots small
        self.fitted = True

    def indicators(self, x: dict[str, float], z: dict[str, float]) -> dict[str, float]:
        """``z`` with one indicator set per binned feature of ``x`` (``z`` is changed and returned)."""
        edges, names = self.edges, self.names
        for name, value in x.items():
            cut = edges.get(name)
            if cut is not None:
                z[names[name][bisect_left(cut, value)]] = 1.0
        return z

    @staticmethod
    def source(indicator: str) -> str:
        """The feature an indicator (or a feature) name stands for.

        >>> QuantileBins.source("amount#3"), QuantileBins.source("amount")
        ('amount', 'amount')
        """
        return indicator.partition("#")[0]
