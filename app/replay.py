"""The worker's logic without Kafka: one process, events in the order given, state in dicts.

Same parsing, features, scoring and label join as the agents, so a replay of a whole simulated run takes
minutes instead of a broker run of hours; the evaluator uses it for the multi-seed quality figures and the
benchmarks use it for the pure cost per transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from app.feature_engine import CustomerState
from app.learning import Entry, join, label_entry, scored_entry
from app.model import FraudModel
from app.records import InvalidMessage, Prediction, parse_label, parse_transaction
from app.scoring import score_transaction
from app.settings import Settings


def replay_offline(
    events: Iterable[tuple[str, bytes, bytes]], settings: Settings, model: FraudModel | None = None
) -> Iterator[Prediction | InvalidMessage]:
    """Yield a prediction (or the validation error) for every transaction; labels teach the model on the way.

    ``events`` are ``(kind, key, value)`` with kind ``"transaction"`` or ``"label"``, as the simulator
    publishes them.
    """
    model = model if model is not None else FraudModel(settings.model_name, prior_fraud_rate=settings.prior_fraud_rate)
    histories: dict[str, CustomerState] = {}
    entries: dict[str, Entry] = {}

    def learn(tx_id: str, incoming: Entry) -> None:
        pair, keep = join(entries.get(tx_id), incoming)
        if pair is not None:
            model.learn_one(*pair)
        if keep is None:
            entries.pop(tx_id, None)
        else:
            entries[tx_id] = keep

    for kind, _key, value in events:
        received_s = time.perf_counter()
        if kind == "transaction":
            try:
                tx = parse_transaction(value, settings.max_message_bytes, settings.max_amount)
            except InvalidMessage as exc:
                yield exc
                continue
            prediction, x, history = score_transaction(
                tx,
                histories.get(tx.customer_id, []),
                model,
                threshold=settings.decision_threshold,
                lateness_s=settings.lateness_s,
                received_s=received_s,
            )
            histories[tx.customer_id] = history
            learn(tx.tx_id, scored_entry(x, tx.event_time_s))
            yield prediction
        else:
            try:
                label = parse_label(value, settings.max_message_bytes)
            except InvalidMessage:
                continue
            learn(label.tx_id, label_entry(label.is_fraud, label.timestamp.timestamp()))
