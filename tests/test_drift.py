"""Drift without labels (app/monitoring/drift.py): a known shift is found and named, a stationary stream stays quiet."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest

from app.monitoring.drift import PSI_WARN, SCORE, Bins, DriftMonitor, add_counts, psi

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
    monitor.observe_many(stream(3, 200))
    assert monitor.report() is not None and monitor.fitted
    monitor.reset_reference()
    assert not monitor.fitted and monitor.report() is None


def test_the_buffer_is_bounded_when_the_monitor_falls_behind() -> None:
    monitor = DriftMonitor(NAMES, sample_every=1, max_buffer=100)
    monitor.observe_many(stream(4, 1000))
    assert len(monitor._buffer) == 100
    assert SCORE not in NAMES
