"""The trainer's core, pure: each label meets the features its transaction was scored with, and is learned once.

The predictions topic is the feature log: each prediction carries the features as scored and the probability the
serving version gave. A pair (features, label) is learned by the champion line and, in shadow, by the challenger;
both lines score each transaction with their own current model just before the pair is learned (still prequential:
predict, then learn), so both models' rolling quality is measured on the same transactions by the models themselves
(:mod:`app.learning.promotion` compares them), and no prediction is ever changed by it. The probability the
prediction was served with (by whatever version served it) has its own window: ``quality["served"]``, what the
business saw.

The feature log is read three times, each reader with its own positions in the published state, so the state does
not grow with volume times delay:

- the **head** reads predictions as they come (their event time is the trainer's clock) and the labels. It keeps the
  features of the most recent ``early_window`` predictions: a label whose prediction is there, or a label that came
  before its prediction, is learned at once (a new pattern's first frauds teach the model in seconds), and a
  "learned" marker in the label store tells the tails to skip it. Any other label waits in the label store
  (:mod:`app.learning.label_store`, tx_id -> class, a store with a changelog, not memory).
- the **tail** reads each prediction again once its event time is ``horizon_s`` behind the clock: a label waiting
  for it is learned as its class; none is learned as legitimate (an implicit negative: real chargeback feeds report
  frauds only).
- the **grace tail** reads it ``grace_s`` later still: a fraud label that came after the tail passed it is learned
  then (a late fraud, counted); a legitimate one confirms what the tail learned.

The horizon follows both inputs, not the predictions alone: the tail reads a prediction only once the labels input
has been read past its horizon too (:func:`labels_watermark`). Read after a restart, the predictions run ahead of
the labels; judged by the predictions' clock alone, a fraud whose label was already on Kafka but not read yet was
learned as legitimate first.

The models, counts, quality windows and every reader's positions are one small picklable object: the trainer
publishes it with the label store's changes in the same Kafka transaction, so a new owner resumes exactly where the
snapshot was taken. The head's window of recent features is not published: a new owner fills it again from the feature
log (the predictions its head read that its tail has not). Nor are a gbdt line's window rows: the state carries the
window's counters, and its rows go to the label store, each ring slot a record, only the slots written since the last
publication (:meth:`Training.state_parts`); :meth:`Training.from_parts` puts them back from the store.
"""

from __future__ import annotations

import io
import logging
import math
import pickle
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from river.drift import ADWIN

from app.features.spec import FEATURE_SET_VERSION, UNVERSIONED_FEATURE_SET, FeatureSetMismatch, pack, unpack
from app.learning.boosting import LabelWindow, window_from_state
from app.learning.label_store import FRAUD, LEARNED_FRAUD, LEARNED_LEGIT, LEGIT, WAITING, LabelStore
from app.learning.model import FraudModel
from app.learning.promotion import Comparison, PromotionPolicy, bootstrap_interval
from app.learning.quality import average_precision, roc_auc
from app.settings import Settings

__all__ = ["FeatureLog", "FeatureSetMismatch", "RollingQuality", "Training", "labels_watermark", "pack", "unpack"]

log = logging.getLogger(__name__)


class RollingQuality:
    """AUC ROC, AP, precision and recall of a model's scores over its last ``window`` labelled transactions, and a
    detector on its error stream.

    The error of a label is ``|y - p|``; River's ADWIN watches its mean (no bins, no threshold to tune: its own
    confidence ``error_delta``, and the window it keeps adapts to the stream's variance). A change it finds with the
    mean going *up* is the model getting worse (a new pattern it misses, a feature gone strange); ``error_drift``
    stays 1 for ``window`` labels after it, so the gauge and its alert see it (a change down is the model improving:
    counted, no alarm). ``tests/test_drift_labels.py`` measures the false alarms on a stationary stream.
    """

    def __init__(self, window: int, threshold: float, error_delta: float = 0.002) -> None:
        self.threshold = threshold
        self.scores: deque[float] = deque(maxlen=window)
        self.labels: deque[bool] = deque(maxlen=window)
        self.error_delta = error_delta
        self._reset_errors()

    def _reset_errors(self) -> None:
        self.errors = ADWIN(delta=self.error_delta)
        self.added = 0  # labels added since the window began
        self.error_rises = 0  # changes of the error's mean found going up
        self.error_falls = 0
        self.error_rise_at: int | None = None  # ``added`` at the last rise
        self.error_before = 0.0  # the error's mean before the last rise, and after it
        self.error_after = 0.0

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A window pickled before the error detector gets a fresh one."""
        self.__dict__.update(state)
        if "errors" not in state:
            self.error_delta = 0.002
            self._reset_errors()

    def add(self, score: float, y: bool) -> None:
        self.scores.append(score)
        self.labels.append(y)
        self.added += 1
        before = self.errors.estimation
        self.errors.update(abs(float(y) - score))
        if self.errors.drift_detected:
            if self.errors.estimation > before:
                self.error_rises += 1
                self.error_rise_at, self.error_before, self.error_after = self.added, before, self.errors.estimation
            else:
                self.error_falls += 1

    @property
    def error_drift(self) -> bool:
        """The error's mean rose within the last ``window`` labels."""
        window = self.labels.maxlen or 0
        return self.error_rise_at is not None and self.added - self.error_rise_at < window

    def error_summary(self) -> dict[str, float | int]:
        """The error detector's figures (cheap: the trainer's ``/status`` gives them every second)."""
        return {
            "error": round(self.errors.estimation, 6),
            "error_drift": int(self.error_drift),
            "error_rises": self.error_rises,
            "error_falls": self.error_falls,
        }

    def last(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The labels and scores of the last ``n`` transactions in the window, oldest first."""
        start = len(self.labels) - n
        y = np.fromiter((self.labels[i] for i in range(start, len(self.labels))), dtype=bool, count=n)
        s = np.fromiter((self.scores[i] for i in range(start, len(self.scores))), dtype=float, count=n)
        return y, s

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
            **self.error_summary(),
        }


# How a pair was learned, by outcome: its label came (explicit), its horizon passed without one (implicit), or a
# fraud label came after it had been learned as legitimate at the horizon (late).
AUDIT_HOW = {"learned": "explicit", "implicit_negative": "implicit", "late_fraud": "late"}
# The outcome counts a version's header carries (cumulative over the line's history, as labels_seen is).
LEARNED_OUTCOMES = tuple(AUDIT_HOW)
QUALITY_ROLES = ("champion", "challenger", "served")
# Not published: the head's window (filled again from the feature log), the label store (its changelog), the audit.
_NOT_PUBLISHED = ("labels", "recent", "audit", "converted", "window_ids")


class _StatePickler(pickle.Pickler):
    """Pickles a gbdt window as :meth:`LabelWindow.without_rows`: its rows are records of the label store."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is LabelWindow:
            return window_from_state, (obj.without_rows().__dict__,)
        return NotImplemented


@dataclass
class Training:
    """Both models, their rolling quality, the readers' positions, the head's window and the label store."""

    champion: FraudModel
    challenger: FraudModel | None
    horizon_s: float
    grace_s: float
    ttl_s: float
    quality_window: int = 5000
    threshold: float = 0.5
    early_window: int = 100_000  # recent predictions' features the head keeps for labels that come early
    labels: LabelStore = field(default_factory=LabelStore.in_memory)
    # tx_id -> (packed features, served probability): the head's most recent predictions, oldest first
    recent: OrderedDict[str, tuple[bytes, float]] = field(default_factory=OrderedDict)
    positions: dict[str, int] = field(default_factory=dict)  # the head's: "topic/partition" -> next offset covered
    tail_positions: dict[str, int] = field(default_factory=dict)  # the tail's, in the predictions
    grace_positions: dict[str, int] = field(default_factory=dict)  # the grace tail's, in the predictions
    stream_time_s: float = float("-inf")  # newest event time of a scored transaction the head read
    # "topic/partition" of the labels input -> the newest label time read there (the labels' own clock)
    label_times_s: dict[str, float] = field(default_factory=dict)
    labels_kept: int = 0  # entries in the label store (labels waiting and learned markers)
    labels_line: str = ""  # the key prefix of this line's entries in the label store (a new line: a new prefix)
    sweep_from: bytes = b""  # the key the next expiry slice of the label store starts at
    counts: Counter[str] = field(default_factory=Counter)
    sequence: int = 0  # versions published so far (the next is v<sequence + 1>)
    champion_version: str | None = None
    challenger_version: str | None = None
    learned_since_publish: int = 0
    adopted: set[str] = field(default_factory=set)  # warm starts the champion line was reset to
    labels_since_comparison: int = 0
    comparisons: int = 0  # comparisons of the two lines made (each logged, the last one's figures kept)
    last_comparison: dict[str, Any] | None = None
    promotions: int = 0  # automatic promotions (swaps) so far
    labels_since_swap: int = 0  # labels learned since the last swap: the cool-down counts them
    # The feature set the models learned (app.features.spec): a state of another one is refused on restore, and
    # predictions of another one are counted, not learned.
    feature_set: str = FEATURE_SET_VERSION
    # (tx_id, class learned, how) of every pair learned since the trainer last published, for its audit topic; None
    # (the default, and offline): not kept. Never part of the published state: a new owner re-learns, and re-records,
    # what came after it.
    audit: list[tuple[str, bool, str]] | None = None
    # Restored from a state of the format before the tails (its waiting halves dropped): the tails start at the head.
    converted: bool = False

    def __post_init__(self) -> None:
        # Each line's own score just before it learned the pair, and the served probability (what the business saw).
        self.quality = {role: RollingQuality(self.quality_window, self.threshold) for role in QUALITY_ROLES}
        # The gbdt windows whose rows the label store holds as of the last staging; None: not known (a new session):
        # the next staging deletes any other window's rows.
        self.window_ids: set[str] | None = None

    # ---- the head ----------------------------------------------------------------------------------------------

    def on_prediction(
        self,
        tx_id: str,
        features: dict[str, float],
        event_time_s: float,
        probability: float,
        feature_set: str | None = FEATURE_SET_VERSION,
        *,
        again: bool = False,
    ) -> None:
        """The head reads a scored transaction's features; one scored with another feature set (``feature_set``: the
        prediction's; None, from a release before versions, reads as :data:`UNVERSIONED_FEATURE_SET`) is counted
        and not learned, so features laid out by another declaration are never learned as this one's.

        ``again``: read again to fill the window after a restart (the head had read it before): nothing counted."""
        if (feature_set or UNVERSIONED_FEATURE_SET) != self.feature_set:
            if not again:
                self.counts["other_feature_set"] += 1
            return
        if event_time_s > self.stream_time_s:
            self.stream_time_s = event_time_s
        stored = self.labels.get(tx_id)
        if stored is not None:
            kind, known_s = stored
            if kind in WAITING:  # its label came first: learned now
                self._learn(tx_id, features, kind == FRAUD, probability, "learned")
                self.labels.put(tx_id, LEARNED_FRAUD if kind == FRAUD else LEARNED_LEGIT, known_s)
            return  # a marker: learned already
        recent = self.recent
        if tx_id in recent:
            if not again:
                self.counts["duplicate_prediction"] += 1
            return
        recent[tx_id] = (pack(features), probability)
        if len(recent) > self.early_window:
            recent.popitem(last=False)

    def on_label(self, tx_id: str, is_fraud: bool, known_s: float, source: str = "") -> None:
        """A label known at ``known_s``, read from ``source`` (the labels input's "topic/partition"), whose clock it
        moves on: learned now if its prediction is in the head's window, else kept for the tails."""
        self.counts["received"] += 1
        if known_s > self.label_times_s.get(source, -math.inf):
            self.label_times_s[source] = known_s
        stored = self.labels.get(tx_id)
        if stored is not None and stored[0] not in WAITING:
            self.counts["duplicate_label"] += 1  # its pair was learned already
            return
        half = self.recent.pop(tx_id, None)
        if half is not None:
            self._learn(tx_id, unpack(half[0]), is_fraud, half[1], "learned")
            kind = LEARNED_FRAUD if is_fraud else LEARNED_LEGIT
        else:
            kind = FRAUD if is_fraud else LEGIT  # waits for its prediction or the tail (a re-sent label replaces it)
        if stored is None:
            self.labels_kept += 1
        self.labels.put(tx_id, kind, known_s)

    # ---- the tails ---------------------------------------------------------------------------------------------

    def horizon_at(self, labels_through_s: float = math.inf) -> float:
        """The event time before which the tail reads a prediction: the horizon, judged at the earlier of the head's
        clock and ``labels_through_s``, the time the labels input is known to have been read through
        (:func:`labels_watermark`; infinite when labels need not be waited for, as in a replay that reads both inputs
        in time order). The grace tail reads ``grace_s`` behind it."""
        return min(self.stream_time_s, labels_through_s) - self.horizon_s

    def at_horizon(
        self,
        tx_id: str,
        features: dict[str, float],
        probability: float,
        feature_set: str | None = FEATURE_SET_VERSION,
    ) -> None:
        """The tail reads a prediction whose horizon passed: its waiting label is learned as its class, a learned
        marker skips it, and without either it is learned as legitimate (an implicit negative)."""
        if (feature_set or UNVERSIONED_FEATURE_SET) != self.feature_set:
            return  # counted by the head
        self.recent.pop(tx_id, None)  # a label from now on is late: for the grace tail
        stored = self.labels.get(tx_id)
        if stored is None:
            self._learn(tx_id, features, False, probability, "implicit_negative")
            return
        kind, known_s = stored
        if kind == LEGIT:
            self._learn(tx_id, features, False, probability, "learned")
            self._forget(tx_id)
        elif kind == FRAUD:
            self._learn(tx_id, features, True, probability, "learned")
            self.labels.put(tx_id, LEARNED_FRAUD, known_s)  # the grace tail forgets it; a re-sent label is not learned
        elif kind == LEARNED_LEGIT:
            self._forget(tx_id)
        # LEARNED_FRAUD: kept until the grace tail, so the fraud label sent again is not learned as a late fraud

    def after_grace(
        self,
        tx_id: str,
        features: dict[str, float],
        probability: float,
        feature_set: str | None = FEATURE_SET_VERSION,
    ) -> None:
        """The grace tail reads a prediction ``grace_s`` after its horizon: a fraud label stored after the tail passed
        it is learned now (a late fraud), a legitimate one confirms the tail's implicit negative; either is forgotten,
        as is a learned marker."""
        if (feature_set or UNVERSIONED_FEATURE_SET) != self.feature_set:
            return
        stored = self.labels.get(tx_id)
        if stored is None:
            return
        if stored[0] == FRAUD:
            self._learn(tx_id, features, True, probability, "late_fraud")
        elif stored[0] == LEGIT:
            self.counts["confirmed_negative"] += 1  # learned as legitimate at the horizon already
        self._forget(tx_id)

    def _forget(self, tx_id: str) -> None:
        self.labels.delete(tx_id)
        self.labels_kept -= 1

    def sweep_labels(self, limit: int = 10_000, labels_through_s: float = math.inf) -> int:
        """Labels waiting ``ttl_s`` past the grace tail's time (``labels_through_s`` as in :meth:`horizon_at`) are
        dropped (their prediction never came, or came before the trainer's line started), and a former line's
        entries, up to ``limit`` entries looked at per call, from where the last call stopped; returns how many
        labels expired."""
        before_s = self.horizon_at(labels_through_s) - self.grace_s - self.ttl_s
        if not math.isfinite(before_s):
            return 0
        entries, self.sweep_from = self.labels.scan(self.sweep_from, limit)
        dropped = 0
        for key, kind, known_s in entries:
            tx_id = self.labels.tx_id_of(key)
            if tx_id is None:
                self.labels.delete_key(key)  # a former line's: never read again
            elif known_s < before_s:
                self._forget(tx_id)
                if kind in WAITING:
                    dropped += 1
        self.counts["expired"] += dropped
        return dropped

    # ---- learning ----------------------------------------------------------------------------------------------

    def _learn(self, tx_id: str, features: dict[str, float], y: bool, served: float, outcome: str) -> None:
        if self.audit is not None:
            self.audit.append((tx_id, y, AUDIT_HOW[outcome]))
        quality = self.quality
        quality["served"].add(served, y)
        quality["champion"].add(self.champion.predict_proba_one(features), y)
        self.champion.learn_one(features, y)
        if self.challenger is not None:
            quality["challenger"].add(self.challenger.predict_proba_one(features), y)
            self.challenger.learn_one(features, y)
        self.counts[outcome] += 1
        self.learned_since_publish += 1
        self.labels_since_comparison += 1
        self.labels_since_swap += 1

    @property
    def labels_seen(self) -> int:
        """Labels learned by the champion line (explicit, implicit negatives and late frauds), each once."""
        return self.champion.labels_learned

    def compare(self, policy: PromotionPolicy) -> Comparison | None:
        """The two lines over the same transactions, every ``policy.min_labels`` labels once the cool-down after the
        last promotion has passed (None: no comparison due); the comparison says whether the challenger wins: its
        AP above the champion's by the margin (and above it), at least ``policy.min_frauds`` frauds in the window,
        and, with ``policy.confidence``, a paired bootstrap interval of the difference above zero."""
        if self.challenger is None or self.labels_since_comparison < policy.min_labels:
            return None
        if self.promotions and self.labels_since_swap < policy.cooldown_labels:
            return None  # the windows still hold scores from before the swap
        self.labels_since_comparison = 0
        self.comparisons += 1
        champion, challenger = self.quality["champion"], self.quality["challenger"]
        n = min(len(champion.labels), len(challenger.labels))  # both were fed together since the challenger began
        y, champion_s = champion.last(n)
        _, challenger_s = challenger.last(n)
        frauds = int(y.sum())
        both = 0 < frauds < n
        champion_ap = float(average_precision(y, champion_s)) if both else None
        challenger_ap = float(average_precision(y, challenger_s)) if both else None
        interval: tuple[float, float] | None = None
        if policy.margin < 0:
            wins, why = False, "auto-promotion off (negative margin)"
        elif champion_ap is None or challenger_ap is None:
            wins, why = False, "the window lacks a class"
        elif frauds < policy.min_frauds:
            wins, why = False, f"{frauds} frauds in the window, fewer than {policy.min_frauds}"
        elif not (challenger_ap > champion_ap and challenger_ap - champion_ap >= policy.margin):
            wins, why = False, f"challenger AP not above champion AP by {policy.margin}"
        elif policy.confidence > 0:
            interval = bootstrap_interval(y, champion_s, challenger_s, policy.confidence)
            wins = interval[0] > 0
            why = "the difference is above zero at that confidence" if wins else "the difference is within noise"
        else:
            wins, why = True, "above the margin"
        comparison = Comparison(champion_ap, challenger_ap, n, frauds, interval, policy.confidence, wins, why)
        self.last_comparison = {"number": self.comparisons, **comparison.as_dict()}
        return comparison

    def adopt_champion(self, model: FraudModel, version: str) -> None:
        """A warm start becomes the champion line: its window starts empty (the former model's scores are not its)."""
        self.champion, self.champion_version = model, version
        self.quality["champion"] = RollingQuality(self.quality_window, self.threshold)

    def set_challenger(self, model: FraudModel | None) -> None:
        """A new challenger line: its window starts empty (the comparison pairs the windows' newest entries)."""
        self.challenger = model
        self.challenger_version = None
        self.quality["challenger"] = RollingQuality(self.quality_window, self.threshold)
        self.last_comparison = None

    def swap_roles(self) -> None:
        """The challenger becomes the champion line (and the former champion keeps learning as the challenger). Each
        window goes with its line (its figures stay those of that model); the served one stays. The next comparison
        waits for the cool-down (:meth:`compare`)."""
        assert self.challenger is not None
        self.champion, self.challenger = self.challenger, self.champion
        self.champion_version, self.challenger_version = self.challenger_version, self.champion_version
        self.quality["champion"], self.quality["challenger"] = self.quality["challenger"], self.quality["champion"]
        self.promotions += 1
        self.labels_since_swap = 0

    # ---- the published state -----------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the head's window, the label store and the audit: its size does not grow with what
        waits."""
        return {name: value for name, value in self.__dict__.items() if name not in _NOT_PUBLISHED}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A state of this format, or of the one before the tails (its waiting halves are left out: see
        :meth:`from_parts`)."""
        old = "waiting" in state
        for name in ("waiting", "by_time", "negatives"):
            state.pop(name, None)
        self.__dict__.update(state)
        defaults: dict[str, Any] = {"early_window": 100_000, "tail_positions": {}, "grace_positions": {},
                                    "label_times_s": {}, "labels_kept": 0, "sweep_from": b"",
                                    "labels_line": "", "comparisons": 0, "last_comparison": None,
                                    "promotions": 0, "labels_since_swap": 0}  # fmt: skip
        for name, value in defaults.items():
            self.__dict__.setdefault(name, value)
        for role in QUALITY_ROLES:  # a state from before the served window
            self.quality.setdefault(role, RollingQuality(self.quality_window, self.threshold))
        self.labels = LabelStore.in_memory()
        self.recent = OrderedDict()
        self.audit = None
        self.converted = old
        self.window_ids = None

    def windows(self) -> list[LabelWindow]:
        """The gbdt lines' windows of labels (none for the other families)."""
        return [w for m in (self.champion, self.challenger) if m is not None and (w := m.label_window) is not None]

    def stage_windows(self) -> int:
        """Put the window slots written since the last call in the label store's changes (and, when the windows
        changed - a line replaced, a challenger changed, a new session - delete any other window's rows): publish
        them with the state. Returns the slots staged."""
        windows = self.windows()
        live = {w.id for w in windows}
        if live != self.window_ids:
            deleted = self.labels.delete_windows_except(live)
            if deleted:
                log.info("trainer label store: %d rows of former gbdt windows deleted", deleted)
            self.window_ids = live
        return sum(self.labels.put_window_rows(w.id, w.changed()) for w in windows)

    def state_parts(self) -> list[bytes]:
        """The state as pickles (one: the models and figures; a list, for the format the trainer signs). The gbdt
        windows go without their rows: those written since the last call are staged in the label store's changes
        (:meth:`stage_windows`), to be published in the same transaction."""
        self.stage_windows()
        buffer = io.BytesIO()
        _StatePickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(self)
        return [buffer.getvalue()]

    @classmethod
    def from_parts(
        cls, parts: Sequence[bytes], feature_set: str = FEATURE_SET_VERSION, labels: LabelStore | None = None
    ) -> Training:
        """The state :meth:`state_parts` gave, over ``labels`` (the label store as its changelog left it);
        :class:`FeatureSetMismatch` when it was made for another feature set than ``feature_set`` (its models would
        be read in the wrong layout).

        A state of the format before the tails (every waiting prediction's features in it, in slices after the
        first part) is read once and converted: models, counts, versions and the head's positions are kept, the
        labels that waited for their prediction go to the label store, and the predictions that waited for their
        label are dropped (the tails start where the head stands: those pairs are not learned)."""
        training: Training = pickle.loads(parts[0])  # noqa: S301 - the caller verified the signature
        found = training.__dict__.get("feature_set", UNVERSIONED_FEATURE_SET)  # absent from older states
        if found != feature_set:
            raise FeatureSetMismatch("the trainer state", found, feature_set)
        training.feature_set = found
        if labels is not None:
            training.labels = labels
            labels.line = training.labels_line
        for window in training.windows():
            if not window.names or window.rows:  # empty, or pickled with its rows (a state from before)
                continue
            window_id, held = window.id, len(window)
            if not window.restore(training.labels.window_rows(window_id)):
                log.error("trainer state: the label store lacks rows of the gbdt window %s (%d held): the window "
                          "starts empty and fills again", window_id, held)  # fmt: skip
        if training.converted:
            dropped = 0
            for part in parts[1:]:
                for tx_id, half in pickle.loads(part):  # noqa: S301
                    if half[0] == "y":
                        if training.labels.get(tx_id) is None:
                            training.labels_kept += 1
                        training.labels.put(tx_id, FRAUD if half[1] else LEGIT, float(half[2]))
                    else:
                        dropped += 1
            log.warning("trainer state of the format before the tails: converted (%d labels kept for the tails, %d "
                        "waiting predictions dropped: not learned)", training.labels_kept, dropped)  # fmt: skip
        return training

    def next_version(self) -> str:
        self.sequence += 1
        return f"v{self.sequence}"

    def pending(self) -> int:
        """Predictions in the head's window and entries in the label store."""
        return len(self.recent) + self.labels_kept


class FeatureLog:
    """The predictions topic in memory, read by the tail and the grace tail as the trainer reads it on Kafka (in
    order, each stopping at the first prediction not due): the offline replay's and the tests' stand-in. It holds
    ``horizon_s + grace_s`` of predictions, which a replay can afford and the trainer does not keep."""

    def __init__(self) -> None:
        self.tail: deque[tuple[str, dict[str, float], float, float, str | None]] = deque()
        self.grace: deque[tuple[str, dict[str, float], float, float, str | None]] = deque()

    def append(self, tx_id: str, features: dict[str, float], event_time_s: float, probability: float,
               feature_set: str | None = FEATURE_SET_VERSION) -> None:  # fmt: skip
        self.tail.append((tx_id, features, event_time_s, probability, feature_set))

    def advance(self, training: Training, labels_through_s: float = math.inf) -> int:
        """Let both tails read what is due; returns the predictions the tail read."""
        horizon = training.horizon_at(labels_through_s)
        read = 0
        tail, grace = self.tail, self.grace
        while tail and tail[0][2] < horizon:
            tx_id, features, _, probability, feature_set = entry = tail.popleft()
            training.at_horizon(tx_id, features, probability, feature_set)
            grace.append(entry)
            read += 1
        horizon -= training.grace_s
        while grace and grace[0][2] < horizon:
            tx_id, features, _, probability, feature_set = grace.popleft()
            training.after_grace(tx_id, features, probability, feature_set)
        return read


def labels_watermark(progress: Iterable[tuple[int, int | None, float]]) -> float:
    """The time the labels input is known to have been read through, from each of its partitions' ``(position,
    stable end, newest label time read)``: a partition read to its stable end (its last stable offset, asked after
    the predictions were read) holds nothing more to wait for; one with records left is through its newest label
    time read (labels come roughly in time order; one that comes out of order is a late label, learned as such).
    Infinite with no partition behind; the newest label time read when a partition's end is not known (the broker
    did not say).

    >>> labels_watermark([(10, 10, 50.0), (4, 9, 70.0)]), labels_watermark([(10, 10, 50.0)]), labels_watermark([])
    (70.0, inf, inf)
    >>> labels_watermark([(0, None, -math.inf)])  # end not known, nothing read: nothing can be judged
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
        early_window=settings.early_label_window,
    )
