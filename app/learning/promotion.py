"""When the challenger replaces the champion: both lines' AP over the same window, and the rule that promotes, pure.

The trainer scores every labelled transaction with both lines' current models just before the pair is learned, so
the two windows hold the same transactions in the same order: the comparison is paired. A promotion needs the
challenger's AP above the champion's by the margin, enough frauds in the window for an AP to mean something, and
(optionally) a paired bootstrap of the AP difference whose interval lies above zero: a difference within noise does
not promote. After a promotion the windows start again (see :meth:`app.learning.training.Training.swap_roles`) and a
cool-down in labels holds the next comparison back, so the two lines are never compared on scores of before the swap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from app.settings import Settings

RESAMPLES = 400  # bootstrap resamples: the interval's ends move by about 0.005 AP between seeds at this count
RESAMPLE_CHUNK = 50  # resamples computed at once: memory bounded by RESAMPLE_CHUNK x window floats


@dataclass(frozen=True)
class PromotionPolicy:
    """The rule's settings (AUTO_PROMOTE_*): see app/settings.py."""

    margin: float = 0.02
    min_labels: int = 20_000  # labels between two comparisons
    min_frauds: int = 30
    confidence: float = 0.0  # of the bootstrap interval of the AP difference; 0: no bootstrap
    cooldown_labels: int = 5000  # labels after a promotion before the next comparison

    @classmethod
    def from_settings(cls, settings: Settings) -> PromotionPolicy:
        cooldown = settings.auto_promote_cooldown_labels
        return cls(
            margin=settings.auto_promote_margin,
            min_labels=settings.auto_promote_min_labels,
            min_frauds=settings.auto_promote_min_frauds,
            confidence=settings.auto_promote_confidence,
            cooldown_labels=settings.quality_window_labels if cooldown < 0 else cooldown,
        )


@dataclass(frozen=True)
class Comparison:
    """One comparison's figures: what a promotion's reason and ``models list`` show."""

    champion_ap: float | None
    challenger_ap: float | None
    labelled: int  # transactions in the paired window
    frauds: int
    interval: tuple[float, float] | None  # of challenger AP - champion AP, at ``confidence``; None: not computed
    confidence: float
    wins: bool
    why: str  # one line: why it promotes or does not

    def as_dict(self) -> dict[str, object]:
        figures = asdict(self)
        figures["interval"] = list(self.interval) if self.interval is not None else None
        return figures

    def reason(self, margin: float) -> str:
        """The promoted event's reason: the figures it was based on."""
        text = (f"challenger AP {self.challenger_ap:.3f} beats champion AP {self.champion_ap:.3f} by {margin} or "
                f"more over the same {self.labelled} labelled transactions ({self.frauds} frauds)")  # fmt: skip
        if self.interval is not None:
            text += (f"; {self.confidence:.0%} bootstrap interval of the difference "
                     f"[{self.interval[0]:+.3f}, {self.interval[1]:+.3f}]")  # fmt: skip
        return text


def _weighted_ap(y: np.ndarray, s: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AP of scores ``s`` for labels ``y`` under each row of ``weights`` (a resample's counts of each transaction),
    as :func:`app.learning.quality.average_precision` computes it on the resample itself; NaN for a row without a
    fraud."""
    order = np.argsort(-s, kind="mergesort")
    s, y, w = s[order], y[order], weights[:, order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(w * y, axis=1)[:, last_of_tie]
    seen = np.cumsum(w, axis=1)[:, last_of_tie]
    precision = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
    steps = np.diff(tp, axis=1, prepend=0.0)
    positives = tp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(positives > 0, (steps * precision).sum(axis=1) / positives, np.nan)


def bootstrap_interval(
    y: np.ndarray, champion: np.ndarray, challenger: np.ndarray, confidence: float, seed: int = 0,
    resamples: int = RESAMPLES,
) -> tuple[float, float]:  # fmt: skip
    """The paired bootstrap's ``confidence`` interval of challenger AP - champion AP: each resample draws the window's
    transactions with replacement, the same ones for both lines. Seeded (the same window gives the same interval);
    the cost is ``resamples`` x window, in chunks."""
    n = len(y)
    rng = np.random.default_rng(seed)
    y = y.astype(float)
    differences = []
    for start in range(0, resamples, RESAMPLE_CHUNK):
        rows = min(RESAMPLE_CHUNK, resamples - start)
        drawn = rng.integers(0, n, size=(rows, n))
        counts = np.bincount((drawn + n * np.arange(rows)[:, None]).ravel(), minlength=rows * n).reshape(rows, n)
        counts = counts.astype(float)
        differences.append(_weighted_ap(y, challenger, counts) - _weighted_ap(y, champion, counts))
    d = np.concatenate(differences)
    d = d[~np.isnan(d)]
    if not len(d):
        return (float("nan"), float("nan"))
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(d, [tail, 100 - tail])
    return float(low), float(high)
