"""Drift without labels (app/monitoring/drift.py): a known shift is found and named, a stationary stream stays quiet."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.monitoring.drift import PSI_WARN, SCORE, Bins, DriftMonitor, DriftReport, add_counts, psi

NAMES = ("amount", "customer_nb_tx_1day", "terminal_risk_7day", "is_night")
Row = tuple[dict[str, float], float]


def stream(seed: int, n: int, change: Callable[[dict[str, float], float], Row] | None = None,
           after: int = 0) -> Iterator[Row]:  # fmt: skip
    """``n`` transactions from one stationary source; from ``after`` on, ``change`` rewrites each one."""
    rng = random.Random(seed)
    for i in range(n):
        x = {"amount": rng.lognormvariate(3.5, 1.0), "customer_nb_tx_1day": float(rng.randint(0, 6)),
             "terminal_risk_7day": rng.betavariate(1, 30), "is_night": float(rng.random() < 0.2)}  # fmt: skip
        score = rng.betavariate(1, 40)
        if change is not None and i >= after:
            x, score = change(x, score)
        yield x, score


def run(monitor: DriftMonitor, rows: Iterator[Row], report_every: int = 4000) -> list[tuple[int, str, str]]:
    """Feed ``rows``, reporting every ``report_every`` (the monitor's interval): (transactions seen, status, worst)."""
    out = []
    for i, (x, score) in enumerate(rows, 1):
        monitor.observe(x, score)
        if i % report_every == 0:
            report = monitor.report()
            if report is not None:
                out.append((i, report.status, report.features[0][0]))
    return out


def test_psi_is_zero_for_equal_shapes_and_grows_with_the_shift() -> None:
    assert psi([10, 20, 30], [100, 200, 300]) == pytest.approx(0.0)
    assert 0 < psi([50, 50], [60, 40]) < psi([50, 50], [80, 20]) < psi([50, 50], [99, 1])


def test_counts_of_two_windows_add_up_to_the_counts_of_both() -> None:
    rows = list(stream(1, 3000))
    columns = {name: [x[name] for x, _ in rows] for name in NAMES}
    bins = Bins.fit(columns)
    both = bins.count(columns)
    halves: dict[str, list[int]] = {}
    add_counts(halves, bins.count({n: v[:1000] for n, v in columns.items()}))
    add_counts(halves, bins.count({n: v[1000:] for n, v in columns.items()}))
    assert halves == both and sum(both["amount"]) == 3000


def test_a_stationary_stream_raises_nothing() -> None:
    """400,000 transactions (13 minutes at 500 tx/s), one in 8 sampled, a report every 4,000 (8 s): no warn, no
    drift (``scripts/bench_drift.py`` runs two hours of it)."""
    monitor = DriftMonitor(NAMES)
    statuses = run(monitor, stream(7, 400_000))
    assert len(statuses) >= 85  # reports were made (the reference filled after 40,000 transactions)
    assert [s for s in statuses if s[1] != "ok"] == []
    assert monitor.last is not None and monitor.last.features[0][1] < PSI_WARN


def test_amounts_in_cents_are_named_within_a_window() -> None:
    """One producer starts sending cents: ``amount`` is the worst feature and the status ``drift`` within the first
    window after the change (5,000 samples: 40,000 transactions, 80 s at 500 tx/s)."""

    def cents(x: dict[str, float], score: float) -> Row:
        return {**x, "amount": x["amount"] * 100}, score

    monitor = DriftMonitor(NAMES)
    statuses = run(monitor, stream(3, 200_000, cents, after=100_000))
    before = [s for s in statuses if s[0] <= 100_000]
    after = [s for s in statuses if s[0] > 100_000]
    assert before and all(status == "ok" for _, status, _ in before)
    first_drift = next(i for i, status, worst in after if status == "drift" and worst == "amount")
    assert first_drift - 100_000 <= 40_000 + 4000


def test_a_doubled_alert_rate_is_drift_even_when_features_stay() -> None:
    """The score moves up (a new attack the model half sees): alert rate and score flagged, features unchanged."""

    def riskier(x: dict[str, float], score: float) -> Row:
        return x, min(1.0, score * 8)

    monitor = DriftMonitor(NAMES, alert_threshold=0.1)
    run(monitor, stream(5, 200_000, riskier, after=100_000))
    report = monitor.last
    assert report is not None and report.status == "drift"
    assert report.alert_rate >= 2 * report.reference_alert_rate and report.alert_rate_z >= 4
    assert report.score_psi >= 0.25 and report.features[0][1] < PSI_WARN


def test_nothing_is_judged_before_the_reference_is_full_and_a_reset_starts_again() -> None:
    monitor = DriftMonitor(NAMES, sample_every=1, reference_rows=1000, window_rows=500)
    monitor.observe_many(stream(2, 999))
    assert monitor.report() is None and not monitor.fitted
    monitor.observe_many(stream(3, 300))
    assert monitor.report() is not None and monitor.fitted
    monitor.reset_reference()
    assert not monitor.fitted and monitor.report() is None


def test_the_buffer_is_bounded_when_the_monitor_falls_behind() -> None:
    monitor = DriftMonitor(NAMES, sample_every=1, max_buffer=100)
    monitor.observe_many(stream(4, 1000))
    assert len(monitor._buffer) == 100
    assert SCORE not in NAMES


def test_the_fitted_reference_is_kept_and_read_back_by_a_new_monitor(tmp_path: Path) -> None:
    """A restart: the new monitor takes the kept reference (no skip, no new fill) and judges a window as the old
    one would; a reference of other features is not taken; a reset deletes the file."""
    path = tmp_path / "drift-reference.json"
    old = DriftMonitor(NAMES, sample_every=1, reference_rows=2000, window_rows=1000, skip_rows=500,
                       reference_path=path, model_version="v7")  # fmt: skip
    old.observe_many(stream(11, 2500))
    assert old.report() is None and old.fitted and path.exists()
    new = DriftMonitor(NAMES, sample_every=1, reference_rows=2000, window_rows=1000, skip_rows=500,
                       reference_path=path)  # fmt: skip
    assert new.read_kept_reference() and new.fitted and new.model_version == "v7"
    assert new.reference_state() == old.reference_state()
    window = list(stream(12, 1000))
    old.observe_many(window)
    new.observe_many(window)  # not skipped: the reference is there
    assert new.report() == old.report() is not None
    other = DriftMonitor((*NAMES, "terminal_nb_tx_1hour"), reference_path=path)
    assert not other.read_kept_reference() and not other.fitted
    new.reset_reference("v8")
    assert not path.exists() and new.model_version == "v8" and not new.fitted
    path.write_bytes(b"{not json")
    assert not DriftMonitor(NAMES, reference_path=path).read_kept_reference()


def test_a_restarted_worker_keeps_the_reference_of_its_version_and_a_promotion_drops_it(tmp_path: Path) -> None:
    from app.components import build
    from app.learning.model import FraudModel
    from app.settings import Settings

    settings = Settings(worker_id="w1", data_dir=str(tmp_path), state_backend="memory", drift_sample_every=1,
                        drift_reference_rows=500, drift_window_rows=500)  # fmt: skip
    first = build(settings)
    assert first.drift is not None
    first.follower.registry.follow = False  # an operator pinned the version
    pinned = FraudModel("logreg")
    pinned.version_id = "v7"
    first.serve(pinned)
    first.drift.observe_many(stream(13, 600))
    first.drift.report()
    assert first.drift.fitted and first.drift.model_version == pinned.version

    again = build(settings)  # the restart: the same DATA_DIR
    assert again.drift is not None and again.drift.fitted and again.drift.model_version == pinned.version
    again.follower.registry.follow = False
    same = FraudModel("logreg")
    same.version_id = "v7"
    again.serve(same)  # the follower hands it the pinned version, loaded again: the reference stays
    assert again.drift.fitted and (tmp_path / "drift-reference.json").exists()
    promoted = FraudModel("logreg")
    promoted.version_id = "v8"
    again.serve(promoted)  # another version pinned: a new reference, the kept one deleted
    assert not again.drift.fitted and not (tmp_path / "drift-reference.json").exists()
    assert again.drift.model_version == "v8"


def test_a_small_swing_of_the_score_mean_is_a_warning_not_a_drift() -> None:
    """ADWIN finds the score's mean moving by a fifth (a fraud campaign's swing in real traffic) while its bins
    barely move: reported as ``warn``, the worker stays healthy; with the score's bins moved too it is drift."""

    def swing(x: dict[str, float], score: float) -> Row:
        return x, score * 1.2

    monitor = DriftMonitor(NAMES)
    statuses = run(monitor, stream(21, 200_000, swing, after=100_000))
    assert any(status == "warn" for i, status, _ in statuses if i > 100_000)
    assert all(status != "drift" for _, status, _ in statuses)
    assert monitor.last is not None and monitor.last.score_psi < PSI_WARN


def test_folding_in_slices_reports_what_one_fold_reports() -> None:
    """The health timer folds the sampled rows in slices (app/monitoring/monitor.py), the decisions running between
    them: the reports are those of folding each interval's rows at once, the reference's fit and a drift included."""

    def cents(x: dict[str, float], score: float) -> Row:
        return {**x, "amount": x["amount"] * 100}, score

    whole, sliced = DriftMonitor(NAMES, window_rows=1000), DriftMonitor(NAMES, window_rows=1000)
    reports: tuple[list[DriftReport | None], list[DriftReport | None]] = ([], [])
    for i, (x, score) in enumerate(stream(3, 120_000, cents, after=80_000), 1):
        whole.observe(x, score)
        sliced.observe(x, score)
        if i % 3000 == 0:
            reports[0].append(whole.report())
            while sliced.pending_rows:
                sliced.fold(37)
            assert sliced.pending_rows == 0
            reports[1].append(sliced.report())
    assert reports[0] == reports[1]
    last = reports[0][-1]
    assert reports[0][0] is None and last is not None and last.status == "drift"


def test_the_reference_is_fitted_a_few_columns_a_step_when_folded_in_slices() -> None:
    """On the event loop the reference's fit (a quantile sort and a count per column) is spread over fold() steps,
    ``fit_columns`` columns each, folding no row meanwhile: the bins, counts and the next reports are the same as a
    fit in one piece."""
    whole = DriftMonitor(NAMES, reference_rows=500, window_rows=400)
    sliced = DriftMonitor(NAMES, reference_rows=500, window_rows=400, fit_columns=2)
    for x, score in stream(5, 9_000):
        whole.observe(x, score)
        sliced.observe(x, score)
    first = whole.report()
    steps, fit_steps = 0, 0
    while sliced.pending_rows:
        fitting = sliced.fitting
        folded = sliced.fold(300)
        steps += 1
        if fitting:
            fit_steps += 1
            assert folded == 0  # a fit step folds no row: they wait in the buffer
    columns = len(NAMES) + 1  # the score's own column beside the features'
    assert fit_steps == -(-columns // 2)
    assert not sliced.fitting and sliced.fitted
    assert sliced.reference_state() == whole.reference_state()
    assert sliced.report() == first
