"""The trainer's core, pure: each label meets the features its transaction was scored with, and is learned once.

The predictions topic is the feature log: each prediction carries the features as scored and the probability the
serving version gave. A pair (features, label) is learned by the champion line and, in shadow, by the challenger;
the challenger also scores each transaction when its prediction arrives - before its label exists - so both
models' rolling quality is measured on the same transactions, and no prediction is ever changed by it.

Real chargeback feeds report frauds only: a scored transaction whose label has not come ``horizon_s`` of event
time after it is learned as legitimate (an implicit negative). Its features are kept ``grace_s`` longer, so a fraud
label that arrives late is still learned (and counted). An explicit ``is_fraud: false`` label is learned as usual.

The horizon follows both inputs, not the predictions alone: an implicit negative is learned only once the labels
input has been read past the transaction's horizon too (:func:`labels_watermark`). Read after a restart, the
predictions run ahead of the labels; judged by the predictions' clock alone, a fraud whose label was already on
Kafka but not read yet was learned as legitimate first.

Everything here, models included, is one picklable object: the trainer publishes it with the input positions in
the same Kafka transaction, so a new owner resumes exactly where the snapshot was taken.
"""

from __future__ import annotations

import math
import pickle
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.features.spec import FEATURE_SET_VERSION, UNVERSIONED_FEATURE_SET, FeatureSetMismatch, pack, unpack
from app.learning.model import FraudModel
from app.learning.quality import average_precision, roc_auc
from app.settings import Settings

__all__ = ["FeatureSetMismatch", "RollingQuality", "Training", "labels_watermark", "pack", "unpack"]


class RollingQuality:
    """AUC ROC, AP, precision and recall of a model's scores over its last ``window`` labelled transactions."""

    def __init__(self, window: int, threshold: float) -> None:
        self.threshold = threshold
        self.scores: deque[float] = deque(maxlen=window)
        self.labels: deque[bool] = deque(maxlen=window)

    def add(self, score: float, y: bool) -> None:
        self.scores.append(score)
        self.labels.append(y)

    def summary(self) -> dict[str, float | int | None]:
        """None for a figure the window cannot give yet (AUC and AP need both classes)."""
        y = np.fromiter(self.labels, dtype=bool, count=len(self.labels))
        s = np.fromiter(self.scores, dtype=float, count=len(self.scores))
        both = 0 < int(y.sum()) < len(y)
        alerts = s >= self.threshold
        tp = int((alerts & y).sum())
        return {
            "labelled": len(y),
            "frauds": int(y.sum()),
            "auc": float(roc_auc(y, s)) if both else None,
            "ap": float(average_precision(y, s)) if both else None,
            "precision": tp / int(alerts.sum()) if alerts.any() else None,
            "recall": tp / int(y.sum()) if y.any() else None,
        }


# How a pair was learned, by outcome: its label came (explicit), its horizon passed without one (implicit), or a
# fraud label came after it had been learned as legitimate at the horizon (late).
AUDIT_HOW = {"learned": "explicit", "implicit_negative": "implicit", "late_fraud": "late"}
# The outcome counts a version's header carries (cumulative over the line's history, as labels_seen is).
LEARNED_OUTCOMES = tuple(AUDIT_HOW)


@dataclass
class Training:
    """Waiting halves, both models, their rolling quality and the input positions covered."""

    champion: FraudModel
    challenger: FraudModel | None
    horizon_s: float
    grace_s: float
    ttl_s: float
    quality_window: int = 5000
    threshold: float = 0.5
    # tx_id -> ("x", packed features, event time, served probability, shadow probability)
    #        | ("n", packed features, event time, served, shadow): learned as an implicit negative, kept for late frauds
    #        | ("y", is_fraud, when known): a label that came before its prediction
    waiting: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    by_time: deque[tuple[float, str]] = field(default_factory=deque)  # scored halves in arrival order
    negatives: deque[tuple[float, str]] = field(default_factory=deque)  # implicit negatives kept for late frauds
    positions: dict[str, int] = field(default_factory=dict)  # "topic/partition" -> next offset covered
    stream_time_s: float = float("-inf")  # newest event time of a scored transaction seen
    # "topic/partition" of the labels input -> the newest label time read there (the labels' own clock)
    label_times_s: dict[str, float] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    sequence: int = 0  # versions published so far (the next is v<sequence + 1>)
    champion_version: str | None = None
    challenger_version: str | None = None
    learned_since_publish: int = 0
    adopted: set[str] = field(default_factory=set)  # warm starts the champion line was reset to
    labels_since_comparison: int = 0
    # The feature set the waiting halves are packed in and the models learned (app.features.spec): a state of
    # another one is refused on restore, and predictions of another one are counted, not learned.
    feature_set: str = FEATURE_SET_VERSION
    # (tx_id, class learned, how) of every pair learned since the trainer last published, for its audit topic; None
    # (the default, and offline): not kept. Never part of the published state: a new owner re-learns, and re-records,
    # what came after it.
    audit: list[tuple[str, bool, str]] | None = None

    def __post_init__(self) -> None:
        self.quality = {"champion": RollingQuality(self.quality_window, self.threshold),
                        "challenger": RollingQuality(self.quality_window, self.threshold)}  # fmt: skip

    # ---- inputs ------------------------------------------------------------------------------------------------

    def on_prediction(
        self,
        tx_id: str,
        features: dict[str, float],
        event_time_s: float,
        probability: float,
        feature_set: str | None = FEATURE_SET_VERSION,
    ) -> None:
        """A scored transaction's features; one scored with another feature set (``feature_set``: the prediction's;
        None, from a release before versions, reads as :data:`UNVERSIONED_FEATURE_SET`) is counted and not learned,
        so features laid out by another declaration are never learned as this one's."""
        if (feature_set or UNVERSIONED_FEATURE_SET) != self.feature_set:
            self.counts["other_feature_set"] += 1
            return
        x = pack(features)
        shadow = self.challenger.predict_proba_one(features) if self.challenger is not None else -1.0
        self.stream_time_s = max(self.stream_time_s, event_time_s)
        other = self.waiting.get(tx_id)
        if other is not None and other[0] == "y":
            del self.waiting[tx_id]
            self._learn(tx_id, x, bool(other[1]), probability, shadow, "learned")
            return
        if other is not None:
            self.counts["duplicate_prediction"] += 1
            return
        self.waiting[tx_id] = ("x", x, event_time_s, probability, shadow)
        self.by_time.append((event_time_s, tx_id))

    def on_label(self, tx_id: str, is_fraud: bool, known_s: float, source: str = "") -> None:
        """A label known at ``known_s``, read from ``source`` (the labels input's "topic/partition"), whose clock it
        moves on."""
        self.counts["received"] += 1
        if known_s > self.label_times_s.get(source, -math.inf):
            self.label_times_s[source] = known_s
        other = self.waiting.get(tx_id)
        if other is None or other[0] == "y":
            self.waiting[tx_id] = ("y", is_fraud, known_s)  # before its prediction (a re-sent label replaces it)
            return
        if other[0] == "x":
            del self.waiting[tx_id]
            self._learn(tx_id, other[1], is_fraud, other[3], other[4], "learned")
        elif is_fraud:  # "n": learned as legitimate at the horizon, a chargeback came after all
            del self.waiting[tx_id]
            self._learn(tx_id, other[1], True, other[3], other[4], "late_fraud")
        else:
            del self.waiting[tx_id]
            self.counts["confirmed_negative"] += 1  # already learned as legitimate at the horizon

    def advance(self, limit: int | None = None, labels_through_s: float = math.inf) -> int:
        """Learn as legitimate what passed the horizon without a label (at most ``limit`` of them: call again while
        it returns ``limit``); drop what passed horizon + grace. Returns the implicit negatives learned.

        The horizon is judged at the earlier of the predictions' stream time and ``labels_through_s``, the time
        the labels input is known to have been read through (:func:`labels_watermark`; infinite when labels need
        not be waited for, as in a replay that reads both inputs in time order)."""
        learned = 0
        horizon = min(self.stream_time_s, labels_through_s) - self.horizon_s
        forget = horizon - self.grace_s
        by_time, negatives, waiting = self.by_time, self.negatives, self.waiting
        while by_time and by_time[0][0] < horizon and (limit is None or learned < limit):
            t, tx_id = by_time.popleft()
            half = waiting.get(tx_id)
            if half is not None and half[0] == "x":
                waiting[tx_id] = ("n", *half[1:])
                self._learn(tx_id, half[1], False, half[3], half[4], "implicit_negative")
                negatives.append((t, tx_id))
                learned += 1
        while negatives and negatives[0][0] < forget:
            _, tx_id = negatives.popleft()
            half = waiting.get(tx_id)
            if half is not None and half[0] == "n":
                del waiting[tx_id]
        return learned

    def sweep_labels(self) -> int:
        """Labels waiting for a prediction longer than the TTL (in stream time) are dropped; returns how many."""
        horizon = self.stream_time_s - self.ttl_s
        old = [tx_id for tx_id, half in self.waiting.items() if half[0] == "y" and half[2] < horizon]
        for tx_id in old:
            del self.waiting[tx_id]
        self.counts["expired"] += len(old)
        return len(old)

    # ---- learning ----------------------------------------------------------------------------------------------

    def _learn(self, tx_id: str, x: bytes, y: bool, served: float, shadow: float, outcome: str) -> None:
        if self.audit is not None:
            self.audit.append((tx_id, y, AUDIT_HOW[outcome]))
        features = unpack(x)
        self.champion.learn_one(features, y)
        self.quality["champion"].add(served, y)
        if self.challenger is not None:
            self.challenger.learn_one(features, y)
            if shadow >= 0.0:
                self.quality["challenger"].add(shadow, y)
        self.counts[outcome] += 1
        self.learned_since_publish += 1
        self.labels_since_comparison += 1

    @property
    def labels_seen(self) -> int:
        """Labels learned by the champion line (explicit, implicit negatives and late frauds), each once."""
        return self.champion.labels_learned

    def challenger_wins(self, margin: float, min_labels: int) -> bool:
        """The challenger's rolling AP beats the champion's by ``margin`` over at least ``min_labels`` labels."""
        if self.challenger is None or self.labels_since_comparison < min_labels:
            return False
        self.labels_since_comparison = 0
        champion = self.quality["champion"].summary()["ap"]
        challenger = self.quality["challenger"].summary()["ap"]
        return champion is not None and challenger is not None and challenger >= champion + margin

    def swap_roles(self) -> None:
        """The challenger becomes the champion line (and the former champion keeps learning as the challenger)."""
        assert self.challenger is not None
        self.champion, self.challenger = self.challenger, self.champion
        self.champion_version, self.challenger_version = self.challenger_version, self.champion_version
        self.quality["champion"], self.quality["challenger"] = self.quality["challenger"], self.quality["champion"]

    # ---- the published state, in slices ------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the waiting halves (see :meth:`state_parts`: they go in slices)."""
        state = dict(self.__dict__)
        for name in ("waiting", "by_time", "negatives"):
            state[name] = type(state[name])()
        state["audit"] = None
        return state

    def state_parts(self, slice_size: int = 200) -> Iterator[bytes]:
        """The state as pickles: the models and figures first, then the waiting halves ``slice_size`` at a time, so a
        caller can let its event loop run between slices (a week of waiting halves pickles in hundreds of ms)."""
        yield pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)
        items = list(self.waiting.items())
        for i in range(0, len(items), slice_size):
            yield pickle.dumps(items[i : i + slice_size], protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_parts(cls, parts: Sequence[bytes], feature_set: str = FEATURE_SET_VERSION) -> Training:
        """The state :meth:`state_parts` gave; :class:`FeatureSetMismatch` when it was made for another feature set
        than ``feature_set`` (its models and waiting halves would be read in the wrong layout)."""
        training: Training = pickle.loads(parts[0])  # noqa: S301 - the caller verified the signature
        found = training.__dict__.get("feature_set", UNVERSIONED_FEATURE_SET)  # absent from older states
        training.__dict__.setdefault("label_times_s", {})  # absent from states before the labels' clock
        training.audit = None
        if found != feature_set:
            raise FeatureSetMismatch("the trainer state", found, feature_set)
        training.feature_set = found
        for part in parts[1:]:
            training.waiting.update(pickle.loads(part))  # noqa: S301
        scored = sorted((half[2], tx_id) for tx_id, half in training.waiting.items() if half[0] == "x")
        negatives = sorted((half[2], tx_id) for tx_id, half in training.waiting.items() if half[0] == "n")
        training.by_time, training.negatives = deque(scored), deque(negatives)
        return training

    def next_version(self) -> str:
        self.sequence += 1
        return f"v{self.sequence}"

    def pending(self) -> int:
        return len(self.waiting)


def labels_watermark(progress: Iterable[tuple[int, int | None, float]]) -> float:
    """The time the labels input is known to have been read through, from each of its partitions' ``(position,
    stable end, newest label time read)``: a partition read to its stable end (the last fetch's last stable offset)
    holds nothing more to wait for; one with records left is through its newest label time read (labels come
    roughly in time order; one that comes out of order is a late label, learned as such). Infinite with no
    partition behind; the newest label time read when a partition's end is not known yet (no fetch answered).

    >>> labels_watermark([(10, 10, 50.0), (4, 9, 70.0)]), labels_watermark([(10, 10, 50.0)]), labels_watermark([])
    (70.0, inf, inf)
    >>> labels_watermark([(0, None, -math.inf)])  # not fetched yet: nothing can be judged
    -inf
    """
    through = math.inf
    for position, stable_end, newest_s in progress:
        if stable_end is None or position < stable_end:
            through = min(through, newest_s)
    return through


def training_for(settings: Settings, model: FraudModel) -> Training:
    """The trainer's core with ``model`` as its champion line and no challenger, configured as the trainer is."""
    return Training(
        model,
        None,
        horizon_s=settings.label_horizon_s,
        grace_s=settings.late_label_grace_s,
        ttl_s=settings.features_ttl_s,
        quality_window=settings.quality_window_labels,
        threshold=settings.decision_threshold,
    )
