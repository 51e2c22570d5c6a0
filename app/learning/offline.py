"""The worker's logic without Kafka: one process, events in the order given, state in dicts.

Same parsing, both feature halves, scoring, label join and fraud marks as the decision path and the trainer, in
the order an aligned worker handles them (events given in event-time order), so a replay of a whole simulated run takes
minutes instead of a broker run of hours; the evaluator uses it for the multi-seed quality figures and the
benchmarks use it for the pure cost per transaction. A fraud label counts toward terminal risk from the moment
it arrives (from its own ``timestamp`` on), whether or not its transaction was scored yet, as in the reference.

Learning goes through the trainer's own core, :class:`app.learning.training.Training`: the same join, the same
early window, implicit negatives at ``LABEL_HORIZON_S``, late frauds within ``LATE_LABEL_GRACE_S``, in the order
the trainer learns them when it keeps up (its clock moved by every prediction, the tails read right after); the
tails read an in-memory feature log (:class:`app.learning.training.FeatureLog`) instead of the predictions topic.

Scoring follows the trainer's publication cadence: transactions are scored by a snapshot of the champion (pickled
and read back, as a worker's follower loads a published version), taken again when ``MODEL_PUBLISH_INTERVAL_S`` of
*stream* time has passed since the last one and the champion learned something, or as soon as it learned
``MODEL_PUBLISH_EVERY_LABELS`` labels (the trainer's two conditions; its interval is wall time, which in a live
deployment runs at the stream's pace). So a model retrained in batches is evaluated as it is deployed, never
fresher. ``published=False`` scores with the live champion instead (what this replay did before).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterable, Iterator

from app.decisions.assess import score_transaction
from app.features.engine import (
    EMPTY_TERMINAL,
    EMPTY_WINDOW,
    CustomerState,
    TerminalState,
    record_fraud,
    terminal_features,
)
from app.features.halves import customer_side_features
from app.learning.model import FraudModel, model_bytes
from app.learning.training import FeatureLog, training_for
from app.records import InvalidMessage, Prediction, parse_label, parse_transaction
from app.settings import Settings

# How often (stream time) labels that never met a prediction are dropped after FEATURES_TTL_S. The trainer does it at
# every publish (MODEL_PUBLISH_INTERVAL_S of wall time); a label's fate changes only if its prediction comes between
# the TTL and the TTL plus this, and scanning the label store every 30 s of a simulated half year costs hours.
SWEEP_EVERY_S = 86400.0


def published_copy(model: FraudModel) -> FraudModel:
    """What a worker scores with after a publication: the model's snapshot bytes, read back (a frozen copy)."""
    copy: FraudModel = pickle.loads(model_bytes(model))  # noqa: S301 - our own bytes, just written
    return copy


def replay_offline(
    events: Iterable[tuple[str, bytes, bytes]],
    settings: Settings,
    model: FraudModel | None = None,
    *,
    published: bool = True,
) -> Iterator[Prediction | InvalidMessage]:
    """Yield a prediction (or the validation error) for every transaction; labels teach the model on the way.

    ``events`` are ``(kind, key, value)`` with kind ``"transaction"`` or ``"label"``, as the simulator
    publishes them. ``model`` is the champion line: it learns what the trainer's join hands it, and its published
    snapshots score (``published=False``: the champion itself scores every transaction).
    """
    model = model if model is not None else FraudModel(settings.model_name, prior_fraud_rate=settings.prior_fraud_rate)
    training = training_for(settings, model)
    feature_log = FeatureLog()
    customers: dict[str, CustomerState] = {}
    terminals: dict[str, TerminalState] = {}
    frauds_known_s: dict[str, float] = {}  # fraud tx_id -> when it became known, recorded as labels arrive
    next_sweep_s = float("-inf")
    serving = published_copy(model) if published else model  # the cold model until the first publication
    published_at_s = float("-inf")
    interval_s, every_labels = settings.model_publish_interval_s, settings.model_publish_every_labels

    for kind, _key, value in events:
        received_at_s = time.time()
        if kind == "transaction":
            try:
                tx = parse_transaction(value, settings.max_message_bytes, settings.max_amount)
            except InvalidMessage as exc:
                yield exc
                continue
            x, customers[tx.customer_id] = customer_side_features(
                tx, customers.get(tx.customer_id, EMPTY_WINDOW), settings.lateness_s, frauds_known_s
            )
            terminal_x, terminals[tx.terminal_id] = terminal_features(
                terminals.get(tx.terminal_id, EMPTY_TERMINAL),
                tx.event_time_s,
                tx.tx_id,
                frauds_known_s,
                settings.terminal_delay_days,
                settings.lateness_s,
            )
            x.update(terminal_x)
            prediction = score_transaction(
                tx,
                x,
                serving if published else training.champion,
                threshold=settings.decision_threshold,
                received_at_s=received_at_s,
            )
            # The prediction is the trainer's input (the feature log): its features, event time and served score.
            training.on_prediction(tx.tx_id, x, tx.event_time_s, prediction.fraud_probability)
            feature_log.append(tx.tx_id, x, tx.event_time_s, prediction.fraud_probability)
            feature_log.advance(training)
            if training.stream_time_s >= next_sweep_s:
                training.labels.commit(None)  # the store's changes: no changelog here
                training.sweep_labels(limit=2**62)  # the whole store
                next_sweep_s = training.stream_time_s + SWEEP_EVERY_S
            learned = training.learned_since_publish
            if (
                published
                and learned
                and (training.stream_time_s - published_at_s >= interval_s or learned >= every_labels)
            ):
                serving = published_copy(training.champion)
                training.learned_since_publish = 0  # as the trainer's publication resets it
                published_at_s = training.stream_time_s
            yield prediction
        else:
            try:
                label = parse_label(value, settings.max_message_bytes)
            except InvalidMessage:
                continue
            known_s = label.timestamp.timestamp()
            if label.is_fraud:
                record_fraud(frauds_known_s, label.tx_id, known_s)
            training.on_label(label.tx_id, label.is_fraud, known_s)
