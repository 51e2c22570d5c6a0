"""One transaction in, one prediction out: features, score, decision and reasons, with no I/O."""

from __future__ import annotations

import time

from app.feature_engine import CustomerState
from app.features import compute_features
from app.model import FraudModel
from app.records import Prediction, Transaction
from app.serialization import isoformat_utc


def score_transaction(
    tx: Transaction,
    state: CustomerState,
    model: FraudModel,
    *,
    threshold: float,
    lateness_s: float,
    received_s: float,
) -> tuple[Prediction, dict[str, float], CustomerState]:
    """Score before learning: the model sees ``tx`` only through its features, never its label.

    ``received_s`` is the ``time.perf_counter()`` reading taken when the message arrived, so
    ``latency_ms`` covers parsing, state, features and model up to the hand-off to the producer.
    """
    x, state = compute_features(tx, state, lateness_s)
    probability, reasons = model.score_one(x)
    prediction = Prediction(
        tx_id=tx.tx_id,
        customer_id=tx.customer_id,
        terminal_id=tx.terminal_id,
        timestamp=tx.timestamp.isoformat().replace("+00:00", "Z"),
        fraud_probability=probability,
        is_fraud=probability >= threshold,
        threshold=threshold,
        model_version=model.version,
        reasons=reasons,
        features=x,
        latency_ms=(time.perf_counter() - received_s) * 1000.0,
        scored_at=isoformat_utc(time.time()),
    )
    return prediction, x, state
