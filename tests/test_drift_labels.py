"""Drift with labels (app/learning/training.py RollingQuality): a detector on the model's error stream, ``|y - p|``.

A model that starts missing a new pattern's frauds raises ``error_drift`` within a few thousand labels; a stationary
stream raises nothing (the false alarms measured: none in 600,000 labels here); a model getting better is no alarm.
"""

from __future__ import annotations

import pickle
import random
from collections.abc import Iterator

from app.learning.model import FraudModel
from app.learning.training import RollingQuality, Training


def labels(seed: int, n: int, fraud_rate: float, missed_after: int | None = None,
           missed: float = 0.5) -> Iterator[tuple[float, bool]]:  # fmt: skip
    """(score, is_fraud) of a model that ranks well: frauds high, the rest low; from ``missed_after`` on, a share
    ``missed`` of the frauds (a new pattern) scores like legitimate ones."""
    rng = random.Random(seed)
    for i in range(n):
        y = rng.random() < fraud_rate
        if y and missed_after is not None and i >= missed_after and rng.random() < missed:
            yield rng.betavariate(1, 30), True
        else:
            yield (rng.betavariate(6, 3) if y else rng.betavariate(1, 60)), y


def feed(quality: RollingQuality, rows: Iterator[tuple[float, bool]]) -> list[int]:
    """The label counts at which ``error_drift`` turned on."""
    on, was = [], False
    for score, y in rows:
        quality.add(score, y)
        if quality.error_drift and not was:
            on.append(quality.added)
        was = quality.error_drift
    return on


def test_a_stationary_error_stream_raises_nothing() -> None:
    """Three streams of 200,000 labels (a fraud rate of 0.8 %, the handbook's, and of 4 %): no rise found."""
    for seed, rate in ((1, 0.008), (2, 0.04), (3, 0.04)):
        quality = RollingQuality(5000, 0.5)
        assert feed(quality, labels(seed, 200_000, rate)) == [], (seed, rate)
        assert quality.error_rises == 0 and quality.summary()["error_drift"] == 0


def test_a_model_missing_half_the_frauds_raises_error_drift_within_a_few_thousand_labels() -> None:
    quality = RollingQuality(5000, 0.5)
    on = feed(quality, labels(4, 40_000, 0.04, missed_after=20_000))
    assert on and 20_000 < on[0] <= 20_000 + 5000, on
    assert quality.error_after > quality.error_before
    summary = quality.summary()
    assert summary["error_rises"] >= 1 and summary["error"] > 0
    assert quality.error_drift == (quality.added - (quality.error_rise_at or 0) < 5000)


def test_the_alarm_ends_a_window_after_the_rise_and_an_improvement_is_no_alarm() -> None:
    quality = RollingQuality(2000, 0.5)
    on = feed(quality, labels(5, 30_000, 0.04, missed_after=10_000))
    offs = []  # when it turned off: a window of 2,000 labels after the last rise
    quality2 = RollingQuality(2000, 0.5)
    was = False
    for score, y in labels(5, 30_000, 0.04, missed_after=10_000):
        quality2.add(score, y)
        if was and not quality2.error_drift:
            offs.append(quality2.added)
        was = quality2.error_drift
    assert on and offs and offs[0] > on[0]
    assert quality.error_drift == (quality.added - (quality.error_rise_at or 0) < 2000)
    better = RollingQuality(5000, 0.5)  # the other way round: the model learned the pattern
    rows = list(labels(6, 40_000, 0.04, missed_after=0))[:20_000] + list(labels(7, 20_000, 0.04))
    assert feed(better, iter(rows)) == [] and better.error_falls >= 1


def test_the_detector_goes_with_the_published_state_and_an_old_state_gets_one() -> None:
    quality = RollingQuality(5000, 0.5)
    feed(quality, labels(8, 30_000, 0.04, missed_after=15_000))
    copy = pickle.loads(pickle.dumps(quality))
    assert copy.summary() == quality.summary() and copy.errors.estimation == quality.errors.estimation
    old = quality.__dict__.copy()
    for name in ("errors", "added", "error_rises", "error_falls", "error_rise_at", "error_before", "error_after",
                 "error_delta"):  # fmt: skip
        old.pop(name)
    restored = RollingQuality.__new__(RollingQuality)
    restored.__setstate__(old)
    assert restored.error_summary() == {"error": 0.0, "error_drift": 0, "error_rises": 0, "error_falls": 0}
    restored.add(0.9, False)
    assert restored.added == 1


def test_both_lines_have_their_own_detector() -> None:
    t = Training(FraudModel("logreg"), FraudModel("logreg"), horizon_s=100.0, grace_s=50.0, ttl_s=1000.0)
    champion, challenger = t.quality["champion"], t.quality["challenger"]
    assert champion.errors is not challenger.errors
    for score, y in labels(9, 30_000, 0.04, missed_after=15_000):
        champion.add(score, y)
        challenger.add(0.9 if y else 0.01, y)  # the challenger catches the new pattern
    assert champion.summary()["error_rises"] >= 1 and challenger.summary()["error_rises"] == 0
    t.set_challenger(FraudModel("logreg"))  # a new line starts a new detector
    assert t.quality["challenger"].error_rises == 0
