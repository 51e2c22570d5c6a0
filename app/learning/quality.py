"""Detection-quality metrics, pure numpy: the one implementation the demo, the evaluator and tests use.

Definitions follow scikit-learn (``roc_auc_score``, ``average_precision_score``) and the handbook's Card
Precision top-k (benchmark section 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata


def roc_auc(y_true: Sequence[bool] | np.ndarray, y_score: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied scores averaged); NaN with one class only.

    >>> roc_auc([False, False, True, True], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(y_score, dtype=float)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def average_precision(y_true: Sequence[bool] | np.ndarray, y_score: Sequence[float] | np.ndarray) -> float:
    """Average precision: sum over score thresholds of (recall step) x precision; NaN without positives.

    >>> average_precision([False, False, True, True], [0.1, 0.4, 0.35, 0.8])
    0.8333333333333333
    """
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(y_score, dtype=float)
    positives = int(y.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(y)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def card_precision_top_k(
    days: Sequence[int] | np.ndarray,
    cards: Sequence[str] | np.ndarray,
    y_true: Sequence[bool] | np.ndarray,
    y_score: Sequence[float] | np.ndarray,
    k: int = 100,
    exclude_caught: bool = True,
) -> float:
    """Mean over days of the share of compromised cards among the k cards with the highest maximum score.

    A card is compromised on a day when any of its transactions that day is fraud. With ``exclude_caught``
    (the handbook's code), a card caught in an earlier day's top k is left out of later days. Cards already
    known to be compromised are left out by the caller (see :func:`protocol_test_mask`).

    >>> card_precision_top_k([1, 1, 1, 2, 2], ["a", "b", "b", "a", "c"], [1, 0, 0, 1, 0], [.9, .8, .1, .9, .7], k=1)
    0.5
    """
    per_day: dict[int, dict[str, tuple[float, bool]]] = {}
    for day, card, y, score in zip(days, cards, y_true, y_score, strict=True):
        cards_of_day = per_day.setdefault(int(day), {})
        best, fraud = cards_of_day.get(card, (float("-inf"), False))
        cards_of_day[card] = (max(best, float(score)), fraud or bool(y))
    if not per_day:
        return float("nan")
    caught: set[str] = set()
    shares = []
    for day in sorted(per_day):
        candidates = [(score, fraud, card) for card, (score, fraud) in per_day[day].items() if card not in caught]
        ranked = sorted(candidates, key=lambda item: -item[0])[:k]
        shares.append(sum(fraud for _, fraud, _ in ranked) / k)
        if exclude_caught:
            caught.update(card for _, fraud, card in ranked if fraud)
    return float(np.mean(shares))


@dataclass(frozen=True, slots=True)
class DecisionSummary:
    transactions: int
    frauds: int
    caught: int
    missed: int
    false_alarms: int

    @property
    def alerts(self) -> int:
        return self.caught + self.false_alarms

    @property
    def precision(self) -> float:
        return self.caught / self.alerts if self.alerts else float("nan")

    @property
    def recall(self) -> float:
        return self.caught / self.frauds if self.frauds else float("nan")

    @property
    def alert_rate(self) -> float:
        return self.alerts / self.transactions if self.transactions else float("nan")


def decision_summary(y_true: Sequence[bool], y_pred: Sequence[bool]) -> DecisionSummary:
    """Frauds caught and missed and false alarms at the decision threshold.

    >>> decision_summary([True, True, False, False], [True, False, True, False])
    DecisionSummary(transactions=4, frauds=2, caught=1, missed=1, false_alarms=1)
    """
    y = np.asarray(y_true, dtype=bool)
    p = np.asarray(y_pred, dtype=bool)
    return DecisionSummary(
        transactions=len(y),
        frauds=int(y.sum()),
        caught=int((y & p).sum()),
        missed=int((y & ~p).sum()),
        false_alarms=int((~y & p).sum()),
    )


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 95, 99, 99.9)) -> dict[str, float]:
    """Exact percentiles (numpy's linear interpolation), keyed ``p50``, ``p99.9`` and so on; NaN when empty."""
    array = np.asarray(values, dtype=float)
    return {f"p{q:g}": float(np.percentile(array, q)) if len(array) else float("nan") for q in qs}
