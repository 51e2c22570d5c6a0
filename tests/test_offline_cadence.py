"""The offline replay scores as a deployment does: with the champion's snapshots, refreshed on the trainer's
publication cadence (MODEL_PUBLISH_INTERVAL_S of stream time, or MODEL_PUBLISH_EVERY_LABELS labels), never with the
learning model itself (pure: no broker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.learning import offline
from app.learning.model import FraudModel
from app.records import Prediction
from app.serialization import dumps
from app.settings import Settings
from tests.cases import transaction

T0 = datetime(2018, 4, 1, tzinfo=UTC)
HOUR_S = 3600.0


def _stamp(hours: float) -> str:
    return (T0 + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def hourly(n: int) -> list[tuple[str, bytes, bytes]]:
    """A transaction an hour, each labelled a minute later (learned at once: the head's early window)."""
    events = []
    for i in range(n):
        events.append(("transaction", b"c", dumps(transaction(i, timestamp=_stamp(i), amount=10.0 + i % 7 * 50))))
        label = {"tx_id": f"tx-{i}", "is_fraud": i % 7 == 6, "timestamp": _stamp(i + 1 / 60)}
        events.append(("label", b"", dumps(label)))
    return events


def replay(
    monkeypatch: pytest.MonkeyPatch, events: list[tuple[str, bytes, bytes]], published: bool = True, **settings: float
) -> tuple[list[Prediction], list[tuple[int, FraudModel]]]:
    """The predictions, and each snapshot taken: (labels the champion had learned, the snapshot)."""
    copies: list[tuple[int, FraudModel]] = []
    real = offline.published_copy

    def spy(model: FraudModel) -> FraudModel:
        copies.append((model.labels_learned, real(model)))
        return copies[-1][1]

    monkeypatch.setattr(offline, "published_copy", spy)
    out = offline.replay_offline(events, Settings(**settings), published=published)  # type: ignore[arg-type]
    return [p for p in out if isinstance(p, Prediction)], copies


def test_snapshots_follow_the_publication_interval_in_stream_time(monkeypatch: pytest.MonkeyPatch) -> None:
    predictions, copies = replay(monkeypatch, hourly(48), model_publish_interval_s=6 * HOUR_S,
                                 model_publish_every_labels=10**9)  # fmt: skip
    # the cold model first, then one snapshot every 6 hours of stream time (the champion learned an hour's label)
    assert [learned for learned, _ in copies] == [0, 1, 7, 13, 19, 25, 31, 37, 43]
    # every transaction is scored by the latest snapshot taken before it, never by the learning champion
    served = iter(copies)
    current = next(served)[1]
    refreshed = {1, 7, 13, 19, 25, 31, 37, 43}  # after transaction i (the first labelled one, then every 6 hours)
    for i, p in enumerate(predictions):
        assert p.fraud_probability == current.predict_proba_one(p.features), i
        if i in refreshed:
            current = next(served)[1]
    assert next(served, None) is None
    assert predictions[0].fraud_probability == pytest.approx(0.01)  # the prior: nothing published yet


def test_snapshots_follow_the_labels_learned(monkeypatch: pytest.MonkeyPatch) -> None:
    _, copies = replay(monkeypatch, hourly(30), model_publish_interval_s=float("inf"), model_publish_every_labels=5)
    # the first publication comes with the first label (nothing published yet: it is due), then every 5 labels
    assert [learned for learned, _ in copies] == [0, 1, 6, 11, 16, 21, 26]


def test_the_live_champion_scores_when_asked_and_the_cadence_bounds_the_staleness(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = hourly(60)
    live, copies = replay(monkeypatch, events, published=False)
    assert copies == [] and len({p.fraud_probability for p in live}) > 10  # the learning model scores each
    stale, copies = replay(monkeypatch, events, model_publish_interval_s=1e12, model_publish_every_labels=10**9)
    assert [learned for learned, _ in copies] == [0, 1]  # the first publication is due at once, then none
    assert all(p.fraud_probability == copies[1][1].predict_proba_one(p.features) for p in stale[2:])
    fresh, copies = replay(monkeypatch, events, model_publish_interval_s=0.0)
    assert [learned for learned, _ in copies] == list(range(60))  # after every transaction: a label behind the live
    assert [p.fraud_probability for p in fresh] != [p.fraud_probability for p in live]
