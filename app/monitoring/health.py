"""Health of a worker over a sliding window: pure bookkeeping and the rules that name a status.

The decision path feeds :class:`HealthWindow` with every outcome; the monitor asks it for a report every interval.
Percentiles are exact over the window (sorted samples, linear interpolation as numpy's default), not
estimated from histogram buckets.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from app.monitoring.drift import PSI_ALARM, DriftReport
from app.settings import Thresholds

STATUSES = ("healthy", "degraded", "stale", "unhealthy")


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, linearly interpolated; 0.0 when empty.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.5
    >>> percentile([5.0], 99)
    5.0
    """
    if not sorted_values:
        return 0.0
    rank = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (rank - lo)


@dataclass(frozen=True, slots=True)
class WindowStats:
    transactions: int
    dead_letters: int
    throughput_tps: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    error_rate: float


class HealthWindow:
    """Outcomes of the last ``window_s`` seconds of wall time (monotonic clock)."""

    def __init__(self, window_s: float, started_at_s: float) -> None:
        self.window_s = window_s
        self.started_at_s = started_at_s
        self.last_transaction_at_s: float | None = None
        self._scored: deque[tuple[float, float]] = deque()
        self._dead: deque[float] = deque()

    def record_scored(self, now_s: float, latency_ms: float) -> None:
        self._scored.append((now_s, latency_ms))
        self.last_transaction_at_s = now_s

    def record_many(self, now_s: float, scored: int, dead_letters: int, latency_ms: float) -> None:
        """A committed batch: ``scored`` decisions with the batch's latency, and its dead letters."""
        self._scored.extend([(now_s, latency_ms)] * scored)
        self._dead.extend([now_s] * dead_letters)
        if scored or dead_letters:
            self.last_transaction_at_s = now_s

    def record_dead_letter(self, now_s: float) -> None:
        self._dead.append(now_s)
        self.last_transaction_at_s = now_s

    def _expire(self, now_s: float) -> None:
        horizon = now_s - self.window_s
        while self._scored and self._scored[0][0] <= horizon:
            self._scored.popleft()
        while self._dead and self._dead[0] <= horizon:
            self._dead.popleft()

    def last_transaction_age_s(self, now_s: float) -> float:
        """Seconds since the last input; counted from the worker's start when none came yet."""
        since = self.last_transaction_at_s if self.last_transaction_at_s is not None else self.started_at_s
        return max(0.0, now_s - since)

    def stats(self, now_s: float) -> WindowStats:
        self._expire(now_s)
        latencies = sorted(latency for _, latency in self._scored)
        scored, dead = len(latencies), len(self._dead)
        total = scored + dead
        span_s = min(self.window_s, max(now_s - self.started_at_s, 1e-9))
        return WindowStats(
            transactions=total,
            dead_letters=dead,
            throughput_tps=total / span_s,
            latency_p50_ms=percentile(latencies, 50),
            latency_p95_ms=percentile(latencies, 95),
            latency_p99_ms=percentile(latencies, 99),
            error_rate=dead / total if total else 0.0,
        )


def evaluate(stats: WindowStats, last_transaction_age_s: float, thresholds: Thresholds) -> tuple[str, list[str]]:
    """Status and the rules that fired; the worst status wins (unhealthy, stale, degraded, healthy).

    >>> s = WindowStats(100, 20, 10.0, 5.0, 8.0, 9.0, 0.2)
    >>> evaluate(s, 1.0, Thresholds())
    ('unhealthy', ['error rate 20.00% is over 10.00%'])
    """
    issues: list[str] = []
    status = "healthy"
    t = thresholds
    if stats.error_rate > t.unhealthy_error_rate:
        issues.append(f"error rate {stats.error_rate:.2%} is over {t.unhealthy_error_rate:.2%}")
        status = "unhealthy"
    elif stats.error_rate > t.degraded_error_rate:
        issues.append(f"error rate {stats.error_rate:.2%} is over {t.degraded_error_rate:.2%}")
        status = "degraded"
    if stats.latency_p99_ms > t.unhealthy_p99_ms:
        issues.append(f"p99 latency {stats.latency_p99_ms:.1f} ms is over {t.unhealthy_p99_ms:g} ms")
        status = "unhealthy"
    elif stats.latency_p99_ms > t.degraded_p99_ms:
        issues.append(f"p99 latency {stats.latency_p99_ms:.1f} ms is over {t.degraded_p99_ms:g} ms")
        if status == "healthy":
            status = "degraded"
    if last_transaction_age_s > t.stale_after_s:
        issues.append(f"no transaction for {last_transaction_age_s:.0f} s (limit {t.stale_after_s:g} s)")
        if status != "unhealthy":
            status = "stale"
    return status, issues


def health_event(
    *,
    timestamp: str,
    worker: str,
    window_s: float,
    stats: WindowStats,
    last_transaction_age_s: float,
    model_version: str,
    labels_learned: int,
    thresholds: Thresholds,
    terminal_feed_lag_s: float = 0.0,
    model_issues: list[str] | None = None,
    models: dict[str, object] | None = None,
    drift: DriftReport | None = None,
) -> dict[str, object]:
    """The ``health`` topic's record for one interval; a refused model snapshot or a drift (:mod:`app.monitoring.drift`)
    degrades a healthy worker."""
    status, issues = evaluate(stats, last_transaction_age_s, thresholds)
    if model_issues:
        issues = [*issues, *model_issues]
        status = "degraded" if status == "healthy" else status
    if drift is not None and drift.status == "drift":
        issues = [*issues, drift_issue(drift)]
        status = "degraded" if status == "healthy" else status
    event: dict[str, object] = {
        "timestamp": timestamp,
        "worker": worker,
        "status": status,
        "issues": issues,
        "window_s": window_s,
        "transactions": stats.transactions,
        "throughput_tps": round(stats.throughput_tps, 3),
        "latency_ms": {
            "p50": round(stats.latency_p50_ms, 3),
            "p95": round(stats.latency_p95_ms, 3),
            "p99": round(stats.latency_p99_ms, 3),
        },
        "error_rate": round(stats.error_rate, 6),
        "dead_letters": stats.dead_letters,
        "last_transaction_age_s": round(last_transaction_age_s, 3),
        "model_version": model_version,
        "labels_learned": labels_learned,
        "terminal_feed_lag_s": round(terminal_feed_lag_s, 3),
        "models": models or {},
    }
    if drift is not None:
        event["drift"] = drift_summary(drift)
    return event


def drift_summary(drift: DriftReport, worst: int = 5) -> dict[str, object]:
    """The health event's ``drift``: the window against the reference, the worst features first."""
    return {
        "status": drift.status,
        "rows": drift.rows,
        "reference_rows": drift.reference_rows,
        "score_psi": round(drift.score_psi, 4),
        "alert_rate": round(drift.alert_rate, 6),
        "reference_alert_rate": round(drift.reference_alert_rate, 6),
        "alert_rate_z": round(drift.alert_rate_z, 2),
        "score_change": drift.score_change,
        "worst": [{"feature": name, "psi": round(value, 4)} for name, value in drift.worst(worst)],
        "score_bins": {
            "edges": [round(e, 6) for e in drift.score_edges],
            "reference": [round(s, 4) for s in drift.score_reference],
            "current": [round(s, 4) for s in drift.score_current],
        },
    }


def drift_issue(drift: DriftReport) -> str:
    """One line naming what moved.

    >>> r = DriftReport(5000, 5000, (("amount", 3.2), ("is_night", 0.01)), 0.02, 0.01, 0.01, 0.0, False, "drift")
    >>> drift_issue(r)
    'drift: amount PSI 3.20 over 5,000 samples against 5,000 of the reference'
    """
    parts = [f"{name} PSI {value:.2f}" for name, value in drift.features if value >= PSI_ALARM]
    if drift.score_psi >= PSI_ALARM:
        parts.append(f"score PSI {drift.score_psi:.2f}")
    if drift.alert_rate_z >= 4.0 and drift.alert_rate >= 2 * drift.reference_alert_rate:
        parts.append(f"alert rate {drift.alert_rate:.2%} against {drift.reference_alert_rate:.2%}")
    if drift.score_change:
        parts.append("the score's mean changed (ADWIN)")
    return f"drift: {', '.join(parts)} over {drift.rows:,} samples against {drift.reference_rows:,} of the reference"
