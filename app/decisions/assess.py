"""Features in, prediction out: score, the rules' decision and reasons, with no I/O (but a failing rule's count).

:func:`assess` is the one place a transaction meets the state: the stream (:mod:`app.decisions.scorer`) and the
synchronous APIs (:mod:`app.serving.service`) both call it, so a ``/predict`` answer is what the stream would publish.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from app import metrics
from app.features.engine import CustomerState
from app.features.halves import customer_side_features
from app.features.spec import FEATURE_SET_VERSION
from app.learning.model import FraudModel
from app.records import InvalidMessage, Prediction, Transaction
from app.rules.errors import RuleErrors
from app.rules.ruleset import NO_RULES, LiveRules, decide
from app.serialization import isoformat_utc
from app.state.terminals import TerminalAggregates

#: Rules that fail at run time, counted in /metrics and logged once per rule a minute (one process, every path).
RULE_ERRORS = RuleErrors(count=metrics.count_rule_error)


def assess(
    tx: Transaction,
    customer: CustomerState,
    aggregates: TerminalAggregates,
    model: FraudModel,
    *,
    lateness_s: float,
    threshold: float,
    received_at_s: float,
    pending: Iterable[tuple[float, str]] = (),
    rules: LiveRules = NO_RULES,
    review_cost: float | None = None,
) -> tuple[Prediction, CustomerState]:
    """Features and score of ``tx`` against the current state, changing nothing: the prediction, and the
    customer's state with ``tx`` added (the stream stores it once its batch commits; a lookup drops it).

    ``pending``: the terminal's transactions of the same batch, not committed yet (the stream's only). ``rules``:
    the rule set and lists in force, ``review_cost`` the expected-loss threshold (None: off).
    A ``tx_id`` the customer's state still holds raises ``duplicate_transaction``.
    """
    x, after = transaction_features(tx, customer, aggregates, lateness_s=lateness_s, pending=pending)
    prediction = score_transaction(tx, x, model, threshold=threshold, received_at_s=received_at_s, rules=rules,
                                   review_cost=review_cost)  # fmt: skip
    return prediction, after


def transaction_features(
    tx: Transaction,
    customer: CustomerState,
    aggregates: TerminalAggregates,
    *,
    lateness_s: float,
    pending: Iterable[tuple[float, str]] = (),
) -> tuple[dict[str, float], CustomerState]:
    """The features of ``tx`` (both halves) and the customer's state with ``tx`` added, changing nothing: the first
    half of :func:`assess`, for a stream that scores its batch at once (:meth:`FraudModel.score_many`)."""
    x, after = customer_side_features(tx, customer, lateness_s, aggregates.frauds_known_s)
    if after is customer:
        raise InvalidMessage("duplicate_transaction", f"tx_id {tx.tx_id!r} was decided already")
    x.update(aggregates.features(tx.terminal_id, tx.event_time_s, tx.tx_id, pending))
    return x, after


def score_transaction(
    tx: Transaction,
    x: dict[str, float],
    model: FraudModel,
    *,
    threshold: float,
    received_at_s: float,
    rules: LiveRules = NO_RULES,
    review_cost: float | None = None,
    scored: tuple[float, list[str]] | None = None,
) -> Prediction:
    """Score before learning: the model sees ``tx`` only through its features, never its label. Then the rules
    decide (:func:`app.rules.ruleset.decide`); ``is_fraud`` stays the model's own (its probability against the
    threshold), ``decision`` is the rules' and the model's together.

    ``received_at_s`` is the wall-clock time (``time.time()``) at which the transaction was read from its
    topic, possibly by another worker, so ``latency_ms`` covers validation, both feature halves, the
    repartition hop and the event-time alignment up to the hand-off to the producer.

    ``scored``: the model's probability and reasons for ``x`` when the caller scored its batch at once (the
    stream); None scores ``x`` here.
    """
    probability, reasons = model.score_one(x) if scored is None else scored
    fields = {"customer_id": tx.customer_id, "terminal_id": tx.terminal_id, "tx_id": tx.tx_id, "amount": tx.amount}
    decided = decide(rules.rule_set, x, fields, probability, threshold, rules.lists, review_cost)
    if decided.errored:  # those rules did not match; counted, and logged once per rule per minute
        RULE_ERRORS.record(decided.errored, tx.tx_id, rules.rule_set)
    return Prediction(
        tx_id=tx.tx_id,
        customer_id=tx.customer_id,
        terminal_id=tx.terminal_id,
        timestamp=tx.timestamp.isoformat().replace("+00:00", "Z"),
        fraud_probability=probability,
        is_fraud=probability >= threshold,
        threshold=threshold,
        model_version=model.version,
        feature_set=FEATURE_SET_VERSION,
        reasons=reasons,
        features=x,
        latency_ms=max(0.0, (time.time() - received_at_s) * 1000.0),
        scored_at=isoformat_utc(time.time()),
        decision=decided.decision,
        rules=list(decided.matched),
        shadow_rules=list(decided.shadow_matched),
        rule_set_version=decided.rule_set_version,
        lists_version=rules.lists_version,
    )
