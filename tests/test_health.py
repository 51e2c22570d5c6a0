from __future__ import annotations

import numpy as np
import pytest

from app.monitoring.health import HealthWindow, WindowStats, evaluate, health_event, percentile
from app.settings import Thresholds


def stats(error_rate: float = 0.0, p99: float = 1.0, transactions: int = 100) -> WindowStats:
    return WindowStats(transactions, int(transactions * error_rate), 10.0, 1.0, 1.0, p99, error_rate)


@pytest.mark.parametrize("q", [0, 1, 50, 95, 99, 99.9, 100])
def test_percentile_equals_numpy(q: float) -> None:
    values = sorted(np.random.default_rng(3).exponential(5.0, size=1001).tolist())
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


@pytest.mark.parametrize(
    ("error_rate", "p99", "age_s", "status"),
    [
        (0.0, 5.0, 1.0, "healthy"),
        (0.01, 100.0, 1.0, "healthy"),  # limits are "over", not "at"
        (0.011, 5.0, 1.0, "degraded"),
        (0.0, 100.1, 1.0, "degraded"),
        (0.101, 5.0, 1.0, "unhealthy"),
        (0.0, 1000.1, 1.0, "unhealthy"),
        (0.0, 0.0, 3600.1, "stale"),
        (0.05, 5.0, 3601.0, "stale"),
        (0.2, 5.0, 3601.0, "unhealthy"),
    ],
)
def test_rules(error_rate: float, p99: float, age_s: float, status: str) -> None:
    got, issues = evaluate(stats(error_rate, p99), age_s, Thresholds())
    assert got == status
    assert bool(issues) == (status != "healthy")


def test_window_forgets_old_outcomes_and_counts_dead_letters() -> None:
    window = HealthWindow(window_s=10.0, started_at_s=0.0)
    for i in range(100):
        window.record_scored(float(i) / 10, latency_ms=float(i))
    window.record_dead_letter(9.5)
    s = window.stats(now_s=9.99)
    assert s.transactions == 101 and s.dead_letters == 1
    assert s.error_rate == pytest.approx(1 / 101)
    later = window.stats(now_s=15.05)  # only outcomes after 5.05 s remain
    assert later.transactions == 50  # 49 scored (5.1 s .. 9.9 s) and the dead letter
    assert later.latency_p50_ms == pytest.approx(float(np.percentile(range(51, 100), 50)))
    assert window.last_transaction_age_s(20.0) == pytest.approx(10.5)


def test_age_counts_from_start_when_nothing_arrived() -> None:
    window = HealthWindow(window_s=10.0, started_at_s=100.0)
    assert window.last_transaction_age_s(160.0) == 60.0


def test_event_has_every_field() -> None:
    event = health_event(
        timestamp="2026-01-01T00:00:00.000Z",
        worker="w",
        window_s=60.0,
        stats=stats(0.2),
        last_transaction_age_s=3.0,
        model_version="logreg-v1",
        labels_learned=4,
        thresholds=Thresholds(),
    )
    assert event["status"] == "unhealthy" and event["issues"]
    assert set(event["latency_ms"]) == {"p50", "p95", "p99"}  # type: ignore[arg-type]


def test_drift_degrades_a_healthy_worker_and_names_what_moved() -> None:
    """A drift report in ``drift`` status degrades the event and names the feature; ``warn`` is reported only."""
    import jsonschema

    from app.monitoring.drift import DriftReport
    from app.serialization import loads
    from tests.conftest import REPO_ROOT

    def event(status: str, amount_psi: float) -> dict[str, object]:
        report = DriftReport(5000, 5000, (("amount", amount_psi), ("is_night", 0.01)), 0.02, 0.01, 0.01, 0.0, False,
                             status)  # fmt: skip
        return health_event(timestamp="2026-01-01T00:00:00.000Z", worker="w", window_s=60.0, stats=stats(),
                            last_transaction_age_s=1.0, model_version="v1", labels_learned=0,
                            thresholds=Thresholds(), drift=report)  # fmt: skip

    schema = loads((REPO_ROOT / "topics" / "health.schema.json").read_bytes())
    drifted, warned = event("drift", 3.2), event("warn", 0.15)
    for e in (drifted, warned):
        jsonschema.validate(e, schema)
    assert drifted["status"] == "degraded"
    assert drifted["issues"] == ["drift: amount PSI 3.20 over 5,000 samples against 5,000 of the reference"]
    assert drifted["drift"]["worst"][0] == {"feature": "amount", "psi": 3.2}  # type: ignore[index]
    assert warned["status"] == "healthy" and warned["issues"] == [] and warned["drift"]["status"] == "warn"  # type: ignore[index]
