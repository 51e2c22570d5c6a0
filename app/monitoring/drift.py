"""Drift without labels, pure: how far the scores, the alert rate and each feature moved from a reference window.

Labels come days late; the inputs and the scores are here now. The calendar features (hour, weekend, night) are
left out by the caller: they follow the clock, and a reference taken at night is not a drift at noon. A worker
samples one transaction in ``sample_every`` on its decision path (:meth:`DriftMonitor.observe`: a counter and, for
a sampled one, an append to a bounded buffer), and the monitor's interval, off the hot loop, folds the buffer into
counts on fixed bins (:meth:`DriftMonitor.report`). The bins are the reference sample's quantiles (the first
``reference_rows`` sampled after the monitor starts, after ``skip_rows``, or after its reference is reset on an
operator's promotion or rollback), so counts of windows and of workers add up. Each window is compared with the
reference by the population stability index (:func:`psi`: below 0.1 no real change, above 0.25 a shift worth acting
on, the industry's reading), the alert rate by a two-proportion z-test, and the score's stream by River's ADWIN (a
change in its mean, found without bins: a warning alone, a drift with the score's PSI at the warning level).

The reference outlives a restart: once fitted, its bins and counts are written to ``reference_path`` (the worker's
``DATA_DIR``) with the model version whose scores made it (:meth:`DriftMonitor.reference_state`), and read back at
start (:meth:`DriftMonitor.load_reference`); a reset deletes the file.

False alarms: for a stationary input, ``n_ref * n_cur / (n_ref + n_cur) * PSI`` is about chi-squared with
``bins - 1`` degrees of freedom; with 5,000 rows on each side and 10 bins a PSI of 0.1 is a chi-squared of 250
where 9 degrees of freedom reach 28 once in a million. The window size, not the threshold, is what keeps a
stationary stream quiet; ``tests/test_drift.py`` measures the rate.
"""

from __future__ import annotations

import logging
import math
import os
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from river.drift import ADWIN

from app.learning.binning import quantile_edges
from app.serialization import dumps, loads

log = logging.getLogger(__name__)

SCORE = "fraud_probability"  # the score's own bins, beside the features'
REFERENCE_FORMAT = 1  # of the file :meth:`DriftMonitor.reference_state` writes
PSI_WARN = 0.1
PSI_ALARM = 0.25


def psi(expected: Sequence[float], actual: Sequence[float], floor: float = 1e-4) -> float:
    """The population stability index of ``actual`` counts against ``expected`` counts over the same bins: the sum
    of ``(a - e) * ln(a / e)`` over the bins' proportions, each floored at ``floor`` (an empty bin is not infinite).

    >>> psi([50, 50], [50, 50])
    0.0
    >>> round(psi([50, 50], [90, 10]), 3)
    0.879
    >>> psi([], [])
    0.0
    """
    total_e, total_a = sum(expected), sum(actual)
    if not total_e or not total_a:
        return 0.0
    value = 0.0
    for e, a in zip(expected, actual, strict=True):
        pe, pa = max(e / total_e, floor), max(a / total_a, floor)
        value += (pa - pe) * math.log(pa / pe)
    return value


def alert_rate_z(ref_alerts: int, ref_rows: int, alerts: int, rows: int) -> float:
    """The two-proportion z statistic of a window's alert rate against the reference's (positive: more alerts).

    >>> round(alert_rate_z(50, 5000, 100, 5000), 1), alert_rate_z(0, 0, 3, 10)
    (4.1, 0.0)
    """
    if not ref_rows or not rows:
        return 0.0
    pooled = (ref_alerts + alerts) / (ref_rows + rows)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / ref_rows + 1 / rows))
    if spread == 0.0:
        return 0.0
    return (alerts / rows - ref_alerts / ref_rows) / spread


@dataclass(frozen=True)
class Bins:
    """Fixed bin edges per name: a value ``v`` is in bin ``bisect_left(edges, v)`` (``v <= edges[0]`` is bin 0)."""

    edges: Mapping[str, tuple[float, ...]]

    @classmethod
    def fit(cls, columns: Mapping[str, Sequence[float]], bins: int = 10) -> Bins:
        return cls({name: tuple(quantile_edges(values, bins)) for name, values in columns.items()})

    def count(self, columns: Mapping[str, Sequence[float]]) -> dict[str, list[int]]:
        """Counts per bin of each name's values (names without edges are skipped)."""
        out: dict[str, list[int]] = {}
        for name, cut in self.edges.items():
            counts = [0] * (len(cut) + 1)
            for value in columns.get(name, ()):
                counts[bisect_left(cut, value)] += 1
            out[name] = counts
        return out


def add_counts(into: dict[str, list[int]], more: Mapping[str, Sequence[int]]) -> None:
    """Counts of another window or worker added to ``into`` (same bins): what makes them mergeable."""
    for name, counts in more.items():
        mine = into.setdefault(name, [0] * len(counts))
        for i, n in enumerate(counts):
            mine[i] += n


@dataclass(frozen=True)
class DriftReport:
    """One window against the reference. ``features``: (name, PSI), worst first; ``status``: ``ok``, ``warn``
    (a PSI at or over :data:`PSI_WARN`, or ADWIN found a change in the score's mean) or ``drift`` (a PSI at or over
    :data:`PSI_ALARM`, an alert rate significantly up and at least doubled, or ADWIN's change with the score's PSI
    at or over :data:`PSI_WARN`)."""

    rows: int
    reference_rows: int
    features: tuple[tuple[str, float], ...]
    score_psi: float
    alert_rate: float
    reference_alert_rate: float
    alert_rate_z: float
    score_change: bool
    status: str
    # The score's bins: upper edges, and the share of the reference and of the window in each (the page's chart).
    score_edges: tuple[float, ...] = ()
    score_reference: tuple[float, ...] = ()
    score_current: tuple[float, ...] = ()

    def worst(self, n: int = 3) -> tuple[tuple[str, float], ...]:
        return self.features[:n]


@dataclass
class DriftMonitor:
    """Samples the decision path and compares windows of the samples with a reference (see the module)."""

    names: Sequence[str]
    sample_every: int = 8
    reference_rows: int = 5000
    window_rows: int = 5000
    alert_threshold: float = 0.5
    bins: int = 10
    max_buffer: int = 50_000  # sampled rows waiting for the monitor; the oldest go first if it falls behind
    # Samples left out before the reference starts: a new deployment's windows fill for their length (30 days of
    # counts growing from zero), and a reference taken then would call the filled windows a drift.
    skip_rows: int = 0
    # Where the fitted reference is kept across restarts (None: not kept), and the model version that scored it.
    reference_path: Path | None = None
    model_version: str = ""
    # Columns of the reference's fit (each: its quantiles and counts over ``reference_rows`` values) done by one
    # :meth:`fold` step: the whole fit (~40 columns) held the event loop 97-208 ms in one step (60 ms of CPU).
    fit_columns: int = 4
    _seen: int = 0
    _skipped: int = 0
    _buffer: deque[tuple[Mapping[str, float], float]] = field(default_factory=deque)
    _reference: dict[str, list[float]] = field(default_factory=dict)  # the reference sample, until fitted
    _unfitted: list[str] = field(default_factory=list)  # the full reference's columns not fitted yet (in slices)
    _fit_edges: dict[str, tuple[float, ...]] = field(default_factory=dict)
    _fit_counts: dict[str, list[int]] = field(default_factory=dict)
    _bins: Bins | None = None
    _ref_counts: dict[str, list[int]] = field(default_factory=dict)
    _ref_alerts: int = 0
    _window: dict[str, list[int]] = field(default_factory=dict)
    _window_rows: int = 0
    _window_alerts: int = 0
    _adwin: ADWIN = field(default_factory=ADWIN)
    _score_change: bool = False
    last: DriftReport | None = None  # the newest full window's report
    last_judged: DriftReport | None = None  # what :meth:`report` returned last (the current window's, when judged)

    def __post_init__(self) -> None:
        self._buffer = deque(maxlen=self.max_buffer)

    def observe(self, x: Mapping[str, float], score: float) -> None:
        """The decision path's part: one transaction in ``sample_every`` kept for the monitor (``x`` is not
        copied: the caller does not change it afterwards)."""
        self._seen += 1
        if self._seen % self.sample_every == 0:
            if self._skipped < self.skip_rows:
                self._skipped += 1
                return
            self._buffer.append((x, score))

    def observe_many(self, rows: Iterable[tuple[Mapping[str, float], float]]) -> None:
        for x, score in rows:
            self.observe(x, score)

    @property
    def fitted(self) -> bool:
        return self._bins is not None

    @property
    def fitting(self) -> bool:
        """The reference is full and its fit is under way in :meth:`fold`'s steps (the rows wait meanwhile)."""
        return bool(self._unfitted)

    def reset_reference(self, model_version: str | None = None) -> None:
        """Start a new reference from the next samples (a new model version scores on another scale); the kept one
        is deleted."""
        self._clear()
        if model_version is not None:
            self.model_version = model_version
        if self.reference_path is not None:
            self.reference_path.unlink(missing_ok=True)

    def _clear(self) -> None:
        self._reference, self._bins, self._ref_counts, self._ref_alerts = {}, None, {}, 0
        self._unfitted, self._fit_edges, self._fit_counts = [], {}, {}
        self._window, self._window_rows, self._window_alerts = {}, 0, 0
        self._adwin, self._score_change, self.last, self.last_judged = ADWIN(), False, None, None

    def reference_state(self) -> dict[str, Any] | None:
        """The fitted reference as JSON-able data (None while it fills): its bins, counts, alerts, the names and
        the threshold it was counted with, and the model version whose scores made it."""
        if self._bins is None:
            return None
        return {"format": REFERENCE_FORMAT, "model_version": self.model_version, "names": sorted(self.names),
                "alert_threshold": self.alert_threshold, "bins": self.bins, "alerts": self._ref_alerts,
                "edges": {name: list(cut) for name, cut in self._bins.edges.items()},
                "counts": self._ref_counts}  # fmt: skip

    def load_reference(self, state: Mapping[str, Any]) -> bool:
        """Take a kept reference (:meth:`reference_state`) if it was made for the same names, threshold and bins;
        the samples before a reference are not skipped again. False (and nothing changed) otherwise."""
        fits = (state.get("format") == REFERENCE_FORMAT and state.get("names") == sorted(self.names)
                and state.get("alert_threshold") == self.alert_threshold and state.get("bins") == self.bins
                and set(state.get("edges", {})) == {*self.names, SCORE})  # fmt: skip
        if not fits:
            return False
        self._clear()
        self._bins = Bins({name: tuple(cut) for name, cut in state["edges"].items()})
        self._ref_counts = {name: list(counts) for name, counts in state["counts"].items()}
        self._ref_alerts = int(state["alerts"])
        self.model_version = str(state.get("model_version", ""))
        self._skipped = self.skip_rows
        return True

    def keep_reference(self) -> None:
        """Write the fitted reference to ``reference_path`` (whole or not at all: a new file moved over the old)."""
        state = self.reference_state()
        if self.reference_path is None or state is None:
            return
        try:
            self.reference_path.parent.mkdir(parents=True, exist_ok=True)
            part = self.reference_path.with_suffix(".part")
            part.write_bytes(dumps(state))
            os.replace(part, self.reference_path)
        except OSError as exc:  # the monitor goes on; a restart takes a new reference
            log.warning("drift reference not kept in %s: %s", self.reference_path, exc)

    def read_kept_reference(self) -> bool:
        """The reference kept in ``reference_path`` by an earlier run, if there is one that fits."""
        if self.reference_path is None or not self.reference_path.exists():
            return False
        try:
            state = loads(self.reference_path.read_bytes())
        except (OSError, ValueError) as exc:
            log.warning("drift reference in %s not read: %s", self.reference_path, exc)
            return False
        taken = isinstance(state, dict) and self.load_reference(state)
        if not taken:
            log.info("drift reference in %s is for other features or settings: a new one is taken", self.reference_path)
        return taken

    def report(self) -> DriftReport | None:
        """Fold the sampled rows in (off the decision path); the newest full window's report, or the current
        window's once it holds half of ``window_rows`` (a fifth was too few rows for ~40 features' PSI: the
        stationary control of tests/test_drift_kafka.py raised drift on a 205-row window); None while the reference
        fills."""
        rows, self._buffer = list(self._buffer), deque(maxlen=self.max_buffer)
        self._fold(rows)
        if self._bins is None:
            return None
        self.last_judged = self._judge() if self._window_rows >= self.window_rows // 2 else self.last
        return self.last_judged

    @property
    def pending_rows(self) -> int:
        """Sampled rows not folded in yet."""
        return len(self._buffer)

    def fold(self, max_rows: int) -> int:
        """Fold in the oldest ``max_rows`` sampled rows (what :meth:`report` does with all of them): a caller on an
        event loop folds a health interval's rows in slices, the decisions running between them (at 1,000 tx/s and
        one row in 8, the 1,250 rows of a 10 s interval took 21-29 ms in one piece). While the full reference is
        being fitted (:attr:`fitting`), a step fits ``fit_columns`` of its columns instead and folds no row. Returns
        the rows folded."""
        if self._unfitted:
            self._fit_step(self.fit_columns)
            return 0
        buffer = self._buffer
        rows = [buffer.popleft() for _ in range(min(max_rows, len(buffer)))]
        left = len(buffer)
        self._fold(rows, whole=False)
        return len(rows) - (len(buffer) - left)  # the rows after the reference filled wait for its fit

    def _fold(self, rows: list[tuple[Mapping[str, float], float]], whole: bool = True) -> None:
        at = 0
        if self._bins is None:
            at = self._fill_reference(rows, whole)
            if self._bins is None:
                self._buffer.extendleft(reversed(rows[at:]))  # after a full reference: folded once it is fitted
                return
        assert self._bins is not None
        while at < len(rows):
            take = rows[at : at + self.window_rows - self._window_rows]
            at += len(take)
            columns = self._columns(take)
            add_counts(self._window, self._bins.count(columns))
            self._window_rows += len(take)
            self._window_alerts += sum(1 for _, s in take if s >= self.alert_threshold)
            for _, s in take:
                self._adwin.update(s)
                self._score_change = self._score_change or self._adwin.drift_detected
            if self._window_rows >= self.window_rows:
                self.last = self._judge()
                self._window, self._window_rows, self._window_alerts, self._score_change = {}, 0, 0, False

    def _fill_reference(self, rows: list[tuple[Mapping[str, float], float]], whole: bool = True) -> int:
        """Rows into the reference sample until it is full; returns how many rows it took. A full reference is
        fitted at once (``whole``), or ``fit_columns`` columns at a time by :meth:`fold`'s next steps."""
        need = max(self.reference_rows - len(self._reference.get(SCORE, ())), 0)
        taken = rows[:need]
        if taken:
            for name, values in self._columns(taken).items():
                self._reference.setdefault(name, []).extend(values)
            self._ref_alerts += sum(1 for _, s in taken if s >= self.alert_threshold)
        if len(self._reference.get(SCORE, ())) >= self.reference_rows and not self._unfitted:
            self._unfitted = list(self._reference)  # the columns' order: the bins' and the reports' (ties)
            self._fit_edges, self._fit_counts = {}, {}
        if whole and self._unfitted:
            self._fit_step(len(self._unfitted))
        return len(taken)

    def _fit_step(self, columns: int) -> None:
        """Fit the next ``columns`` columns of the full reference (what :meth:`Bins.fit` and :meth:`Bins.count`
        do, a column at a time); after the last, the bins are in force and the reference is kept."""
        for name in self._unfitted[:columns]:
            values = self._reference[name]
            cut = tuple(quantile_edges(values, self.bins))
            counts = [0] * (len(cut) + 1)
            for value in values:
                counts[bisect_left(cut, value)] += 1
            self._fit_edges[name], self._fit_counts[name] = cut, counts
        del self._unfitted[:columns]
        if self._unfitted:
            return
        self._bins = Bins(self._fit_edges)
        self._ref_counts = self._fit_counts
        self._reference, self._fit_edges, self._fit_counts = {}, {}, {}
        self.keep_reference()

    def _columns(self, rows: Sequence[tuple[Mapping[str, float], float]]) -> dict[str, list[float]]:
        columns: dict[str, list[float]] = {name: [x.get(name, 0.0) for x, _ in rows] for name in self.names}
        columns[SCORE] = [s for _, s in rows]
        return columns

    def _judge(self) -> DriftReport:
        ref_rows = sum(self._ref_counts[SCORE])
        scores = {name: psi(self._ref_counts[name], counts) for name, counts in self._window.items()}
        score_psi = scores.pop(SCORE, 0.0)
        features = tuple(sorted(scores.items(), key=lambda item: -item[1]))
        z = alert_rate_z(self._ref_alerts, ref_rows, self._window_alerts, self._window_rows)
        rate = self._window_alerts / self._window_rows if self._window_rows else 0.0
        ref_rate = self._ref_alerts / ref_rows if ref_rows else 0.0
        worst = max([score_psi, *(v for _, v in features)], default=0.0)
        alert_jump = z >= 4.0 and rate >= 2 * ref_rate
        # ADWIN alone finds slow swings of the score's mean that real traffic has (frauds come in campaigns: the
        # stationary control on the worker raised 2 in 10 minutes); with the score's bins moved too it is drift.
        if worst >= PSI_ALARM or alert_jump or (self._score_change and score_psi >= PSI_WARN):
            status = "drift"
        elif worst >= PSI_WARN or self._score_change:
            status = "warn"
        else:
            status = "ok"
        assert self._bins is not None
        current = self._window.get(SCORE, [0] * len(self._ref_counts[SCORE]))
        return DriftReport(self._window_rows, ref_rows, features, score_psi, rate, ref_rate, z, self._score_change,
                           status, self._bins.edges[SCORE], _shares(self._ref_counts[SCORE]),
                           _shares(current))  # fmt: skip


def _shares(counts: Sequence[int]) -> tuple[float, ...]:
    total = sum(counts)
    return tuple(n / total if total else 0.0 for n in counts)
