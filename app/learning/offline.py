"""The worker's logic without Kafka: one process, events in the order given, state in dicts.

Same parsing, both feature halves, scoring, label join and fraud marks as the agents, in the order the
aligned worker handles them (events given in event-time order), so a replay of a whole simulated run takes
minutes instead of a broker run of hours; the evaluator uses it for the multi-seed quality figures and the
benchmarks use it for the pure cost per transaction. A fraud label counts toward terminal risk from the moment
it arrives (from its own ``timestamp`` on), whether or not its transaction was scored yet, as in the reference.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from app.decisions.assess import score_transaction
from app.features.engine import CustomerState, TerminalState, record_fraud, terminal_features
from app.features.halves import customer_side_features
from app.learning.join import Entry, join, label_entry, scored_entry
from app.learning.model import FraudModel
from app.records import InvalidMessage, Prediction, parse_label, parse_transaction
from app.settings import Settings


def replay_offline(
    events: Iterable[tuple[str, bytes, bytes]], settings: Settings, model: FraudModel | None = None
) -> Iterator[Prediction | InvalidMessage]:
    """Yield a prediction (or the validation error) for every transaction; labels teach the model on the way.

    ``events`` are ``(kind, key, value)`` with kind ``"transaction"`` or ``"label"``, as the simulator
    publishes them.
    """
    model = model if model is not None else FraudModel(settings.model_name, prior_fraud_rate=settings.prior_fraud_rate)
    customers: dict[str, CustomerState] = {}
    terminals: dict[str, TerminalState] = {}
    entries: dict[str, Entry] = {}
    frauds_known_s: dict[str, float] = {}  # fraud tx_id -> when it became known, recorded as labels arrive

    def learn(tx_id: str, incoming: Entry) -> None:
        pair, keep = join(entries.get(tx_id), incoming)
        if pair is not None:
            model.learn_one(pair.x, pair.y)
        if keep is None:
            entries.pop(tx_id, None)
        else:
            entries[tx_id] = keep

    for kind, _key, value in events:
        received_at_s = time.time()
        if kind == "transaction":
            try:
                tx = parse_transaction(value, settings.max_message_bytes, settings.max_amount)
            except InvalidMessage as exc:
                yield exc
                continue
            x, customers[tx.customer_id] = customer_side_features(
                tx, customers.get(tx.customer_id, []), settings.lateness_s
            )
            terminal_x, terminals[tx.terminal_id] = terminal_features(
                terminals.get(tx.terminal_id, []),
                tx.event_time_s,
                tx.tx_id,
                frauds_known_s,
                settings.terminal_delay_days,
                settings.lateness_s,
            )
            x.update(terminal_x)
            prediction = score_transaction(
                tx, x, model, threshold=settings.decision_threshold, received_at_s=received_at_s
            )
            learn(tx.tx_id, scored_entry(x, tx.event_time_s, tx.terminal_id))
            yield prediction
        else:
            try:
                label = parse_label(value, settings.max_message_bytes)
            except InvalidMessage:
                continue
            known_s = label.timestamp.timestamp()
            if label.is_fraud:
                record_fraud(frauds_known_s, label.tx_id, known_s)
            learn(label.tx_id, label_entry(label.is_fraud, known_s))
