"""Features in, prediction out: score, decision and reasons, with no I/O."""

from __future__ import annotations

import time

from app.model import FraudModel
from app.records import Prediction, Transaction
from app.serialization import isoformat_utc


def score_transaction(
    tx: Transaction, x: dict[str, float], model: FraudModel, *, threshold: float, received_at_s: float
) -> Prediction:
    """Score before learning: the model sees ``tx`` only through its features, never its label.

    ``received_at_s`` is the wall-clock time (``time.time()``) at which the transaction was read from its
    topic, possibly by another worker, so ``latency_ms`` covers validation, both feature halves, the
    repartition hop and the event-time alignment up to the hand-off to the producer.
    """
    probability, reasons = model.score_one(x)
    return Prediction(
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
        latency_ms=max(0.0, (time.time() - received_at_s) * 1000.0),
        scored_at=isoformat_utc(time.time()),
    )
