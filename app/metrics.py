"""Every Prometheus object of the app: the worker's in the default registry, the trainer's in :data:`TRAINER_REGISTRY`.

The trainer runs in its own process (:mod:`app.learning.process`), which serves only :data:`TRAINER_REGISTRY`; the
worker's ``/metrics`` serves the default registry followed by its trainer child's families, merged by
:func:`exposition` (one family per name: ``fraud_dead_letters`` has samples from both). Labels stay
low-cardinality: outcomes and error codes, never a card, customer, terminal or transaction id; the one label an
operator makes is a rule id, bounded by the rule set's cap (:data:`app.rules.ruleset.MAX_RULES`).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from app.monitoring.drift import SCORE, DriftReport

# The trainer process's metrics (fraud_trainer_*, fraud_learning_*, fraud_labels_*, the labels' dead letters, its
# process: fraud_trainer_process_*): a worker never sets them, it appends its trainer child's exposition instead.
TRAINER_REGISTRY = CollectorRegistry(auto_describe=True)

TRANSACTIONS = Counter(
    "fraud_transactions", "Input transactions by final outcome (scored or dead_letter).", ["outcome"]
)
TRANSACTIONS_SCORED = TRANSACTIONS.labels("scored")  # bound once: these are on the per-message path
TRANSACTIONS_DEAD_LETTERED = TRANSACTIONS.labels("dead_letter")
DEAD_LETTERS = Counter(
    "fraud_dead_letters", "Messages sent to a dead-letter topic, by input and error code.", ["input", "error"]
)
SCORING_LATENCY = Histogram(
    "fraud_scoring_latency_seconds",
    "Time from receipt of a transaction to publishing its prediction.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
SCORES = Histogram(
    "fraud_score",
    "Distribution of fraud probabilities.",
    buckets=(0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99),
)
PREDICTED_FRAUD = Counter("fraud_predicted_fraud", "Predictions at or over the decision threshold.")
DECISIONS = Counter(
    "fraud_decisions",
    "Predictions by decision (allow, review, block): the analysts' rules and the model.",
    ["decision"],
)
for _decision in ("allow", "review", "block"):
    DECISIONS.labels(_decision)
RULE_MATCHES = Counter(
    "fraud_rule_matches",
    "Predictions an analyst's rule matched, by rule id and state (active: deciding, shadow: recorded only). Rule ids "
    "are made by operators and bounded: at most 200 rules are not disabled in a set (app/rules/ruleset.py "
    "MAX_RULES); a rule deleted or renamed keeps its series until the worker restarts.",
    ["rule", "state"],
)
RULE_ERRORS = Counter(
    "fraud_rule_errors",
    "Transactions on which an analyst's rule (active or shadow) could not be evaluated (a division by zero, a "
    "feature missing): the rule does not match them. Bounded like fraud_rule_matches: at most 200 rules are not "
    "disabled in a set (app/rules/ruleset.py MAX_RULES).",
    ["rule"],
)
LABELS = Counter("fraud_labels", "Labels by what happened to them.", ["outcome"], registry=TRAINER_REGISTRY)
LABELS_RECEIVED = LABELS.labels("received")
LABELS_JOINED = LABELS.labels("learned")
# Every outcome shows from the start, at 0 (a series that appears only at its first label breaks rate() and alerts)
for _outcome in ("implicit_negative", "late_fraud", "confirmed_negative", "expired", "duplicate_prediction",
                 "other_feature_set", "dead_letter"):  # fmt: skip
    LABELS.labels(_outcome)
MODEL_INFO = Gauge("fraud_model_info", "The model that scores, by version (value is always 1).", ["version"])
MODEL_SNAPSHOTS_REFUSED = Counter(
    "fraud_model_snapshots_refused", "Model snapshots refused before deserialisation, by reason.", ["reason"]
)
MODEL_QUALITY = Gauge(
    "fraud_model_rolling_quality",
    "Rolling quality on labelled transactions of the newest champion and challenger versions, each scored by its own "
    "model just before it learned the label, and of the served probabilities (role served), from their snapshots.",
    ["role", "metric"],
)
PROMOTION_COMPARISONS = Counter(
    "fraud_model_promotion_comparisons_total",
    "Comparisons of the challenger line with the champion line by the trainer, by outcome (promoted, kept).",
    ["outcome"],
)
LABELS_WATERMARK_LAG = Gauge(
    "fraud_trainer_labels_watermark_lag_seconds",
    "How far the labels read lag behind the predictions read, in event time: implicit negatives wait for them.",
    registry=TRAINER_REGISTRY,
)
TRAINER_ACTIVE = Gauge(
    "fraud_trainer_active", "1 while the trainer process holds the trainer lease and trains.", registry=TRAINER_REGISTRY
)
LABEL_DEAD_LETTERS = Counter(
    "fraud_dead_letters",
    "Messages sent to a dead-letter topic, by input and error code.",
    ["input", "error"],
    registry=TRAINER_REGISTRY,
)  # the labels' (input "labels"): the same family as the worker's DEAD_LETTERS once the expositions are merged
ProcessCollector(namespace="fraud_trainer", registry=TRAINER_REGISTRY)  # its RSS and CPU: fraud_trainer_process_*
TRAINER_PROCESS_UP = Gauge(
    "fraud_trainer_process_up",
    "1 while this worker's trainer child answers on its web port (0 when it is down, paused or not started).",
)
LABELS_LEARNED = Gauge("fraud_model_labels_learned", "Labels the current model has learned from.")
PENDING_LEARNING = Gauge(
    "fraud_learning_entries",
    "Predictions and labels the trainer holds waiting for their other half (the active trainer only).",
    registry=TRAINER_REGISTRY,
)
LATE_TRANSACTIONS = Counter(
    "fraud_late_transactions",
    "Transactions older than the lateness behind their partition's stream time: scored, but windows may miss "
    "entries already pruned.",
)
CUSTOMERS_EXPIRED = Counter("fraud_customers_expired", "Customer states removed after idling past the TTL.")
CUSTOMER_STATES = Gauge("fraud_customer_states", "Customer states held by this worker's decision partitions.")
CHANGELOG_REPLAYED = Counter(
    "fraud_changelog_records_replayed", "Changelog records read into the local store by partition restores."
)
TERMINALS_EXPIRED = Counter("fraud_terminals_expired", "Terminal states removed after idling past the TTL.")
TERMINAL_CHECKPOINTS = Counter(
    "fraud_terminal_checkpoints", "Terminal checkpoints this worker wrote to Kafka (for workers on an empty disk)."
)
TERMINAL_START = Gauge(
    "fraud_terminal_start",
    "How this process's terminal aggregates started (1 on the source taken): its own store, the Kafka checkpoint, "
    "or the logs from their start.",
    ["source"],
)
TERMINAL_STATES = Gauge("fraud_terminal_states", "Terminal states in this worker's aggregates (all terminals).")
ALLOCATOR_BYTES = Gauge(
    "fraud_allocator_bytes",
    "glibc malloc's bytes at the last trim (MEMORY_TRIM_INTERVAL_S), every arena: in_use, free (kept from the "
    "system; the trim gives back the whole pages of it) and mmapped (big blocks, returned when freed).",
    ["kind"],
)
ALLOCATOR_RELEASED = Counter(
    "fraud_allocator_released_bytes", "Resident bytes the periodic malloc_trim gave back (RSS before less after)."
)
TERMINAL_FEED_LAG = Gauge(
    "fraud_terminal_feed_lag_seconds",
    "Feature freshness: wall time from a scorer's commit of a terminal-log record to this worker reading it. The "
    "1-hour terminal count misses other partitions' transactions younger than this.",
)
CONSUMER_LAG = Gauge(
    "fraud_consumer_lag_records",
    "Input records of this worker's partitions not committed yet, by transactional loop (decisions): the last "
    "stable offset the fetches saw minus the next offset to process, updated once a second.",
    ["loop"],
)
BATCHES = Histogram(
    "fraud_decision_batch_seconds",
    "Time to process and commit one partition's batch of transactions in one Kafka transaction.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BATCH_RECORDS = Histogram(
    "fraud_decision_batch_records", "Transactions per committed batch.", buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500)
)
EVENT_LOOP_LAG = Histogram(
    "fraud_event_loop_lag_seconds",
    "How late the worker's event loop woke a probe sleeping a fixed interval (LOOP_LAG_INTERVAL_S): how long a ready "
    "decision, fetch or commit waited for a synchronous step or a collection holding the loop.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
GC_PAUSE = Histogram(
    "fraud_gc_pause_seconds",
    "Garbage collections of the worker process by generation (0, 1, 2) and how long each held it.",
    ["generation"],
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
GC_PAUSES = tuple(GC_PAUSE.labels(str(generation)) for generation in range(3))  # bound once: called per collection


def observe_gc_pause(generation: int, seconds: float) -> None:
    GC_PAUSES[min(max(generation, 0), 2)].observe(seconds)


SYNC_PREDICT_LATENCY = Histogram(
    "fraud_sync_predict_latency_seconds",
    "Server time of one synchronous score (POST /predict, gRPC Predict and each PredictStream item), by API; a "
    "forwarded request counts at both workers.",
    ["api"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
SYNC_REQUESTS = Counter(
    "fraud_sync_requests", "Synchronous requests by API, endpoint and HTTP-like status.", ["api", "endpoint", "status"]
)
SYNC_FORWARDED = Counter(
    "fraud_sync_forwarded", "Synchronous requests forwarded to the worker that holds the customer's partition."
)
HEALTH_STATUS = Gauge("fraud_health_status", "1 for the worker's current health status, 0 for the others.", ["status"])
# Drift without labels (app/monitoring/drift.py), set on the health interval; ``feature`` is a name of the feature set
# (app/features/spec.py, a fixed set) or fraud_probability, the score.
DRIFT_PSI = Gauge("fraud_drift_psi", "Population stability index of the current window against the reference.",
                  ["feature"])  # fmt: skip
DRIFT_ALERT_RATE = Gauge("fraud_drift_alert_rate", "Share of sampled transactions at or over the threshold.",
                         ["window"])  # fmt: skip
DRIFT_DETECTED = Gauge("fraud_drift_detected", "1 while the drift monitor's status is drift (see the health event).")


def observe_drift(report: DriftReport) -> None:
    """The drift monitor's last report into the gauges above."""
    for feature, value in report.features:
        DRIFT_PSI.labels(feature).set(value)
    DRIFT_PSI.labels(SCORE).set(report.score_psi)
    DRIFT_ALERT_RATE.labels("current").set(report.alert_rate)
    DRIFT_ALERT_RATE.labels("reference").set(report.reference_alert_rate)
    DRIFT_DETECTED.set(1 if report.status == "drift" else 0)


def count_rule_matches(hits: dict[str, int], states: dict[str, str]) -> None:
    """One committed batch's matches per rule id; ``states``: each rule's state when the batch was decided."""
    for rule_id, n in hits.items():
        RULE_MATCHES.labels(rule_id, states.get(rule_id, "active")).inc(n)


def count_rule_error(rule_id: str, n: int) -> None:
    RULE_ERRORS.labels(rule_id).inc(n)


def observe_batch(records: int, seconds: float) -> None:
    BATCHES.observe(seconds)
    BATCH_RECORDS.observe(records)


def counts(counter: Counter) -> dict[tuple[str, ...], float]:
    """A counter's current totals by label values (read from the objects ``/metrics`` serves, not kept twice).

    >>> c = Counter("example_events", "Example.", ["kind"], registry=None)
    >>> c.labels("a").inc(2)
    >>> counts(c)
    {('a',): 2.0}
    """
    return {
        tuple(sample.labels.values()): sample.value  # in the counter's label order
        for metric in counter.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    }


class _Families:
    """What :func:`generate_latest` reads: ``collect()`` over families already merged."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def merged(*sources: Iterable[Metric]) -> list[Metric]:
    """Families of several registries (or parsed expositions), one per name: the samples of a name met again join
    the first family of that name (a duplicate ``# TYPE`` line makes Prometheus refuse the whole scrape).

    >>> a, b = CollectorRegistry(), CollectorRegistry()
    >>> Counter("x", "X.", ["input"], registry=a).labels("transactions").inc()
    >>> Counter("x", "X.", ["input"], registry=b).labels("labels").inc(2)
    >>> [(f.name, [(s.labels["input"], s.value) for s in f.samples if s.name == "x_total"]) for f in merged(
    ...     a.collect(), b.collect())]
    [('x', [('transactions', 1.0), ('labels', 2.0)])]
    """
    by_name: dict[str, Metric] = {}
    for source in sources:
        for family in source:
            first = by_name.get(family.name)
            if first is None:
                by_name[family.name] = family
            elif first.type == family.type:
                first.samples = [*first.samples, *family.samples]
    return list(by_name.values())


def parse_exposition(text: str) -> list[Metric]:
    """A Prometheus text exposition as families (what a trainer child's ``/metrics`` answered); empty if it does
    not parse (a partial answer is not appended). Without the counters' ``_created`` series: the text format writes
    them as gauges of their own, which would repeat the worker's ``# TYPE`` lines of a shared name.

    >>> text = "# TYPE a_total counter\\na_total 1.0\\n# TYPE a_created gauge\\na_created 5.0\\n"
    >>> [f.name for f in parse_exposition(text)]
    ['a']
    """
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError:
        return []
    return [f for f in families if not (f.type == "gauge" and f.name.endswith("_created"))]


def exposition(appended: Iterable[Metric] = ()) -> tuple[bytes, str]:
    """The text format of every metric of the process (then ``appended``: the trainer child's families), merged by
    name, and its content type."""
    appended = list(appended)
    if not appended:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    return generate_latest(_Families(merged(REGISTRY.collect(), appended))), CONTENT_TYPE_LATEST  # type: ignore[arg-type]


def trainer_exposition() -> tuple[bytes, str]:
    """What a trainer process's ``/metrics`` serves: :data:`TRAINER_REGISTRY` alone."""
    return generate_latest(TRAINER_REGISTRY), CONTENT_TYPE_LATEST
