"""Every Prometheus object of the app, in the default registry that ``/metrics`` serves.

Labels stay low-cardinality: outcomes and error codes, never a card, customer, terminal or transaction id.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

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
LABELS = Counter("fraud_labels", "Labels by what happened to them.", ["outcome"])
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
    "Rolling quality on labelled transactions of the newest champion and challenger versions (from their snapshots).",
    ["role", "metric"],
)
LABELS_WATERMARK_LAG = Gauge(
    "fraud_trainer_labels_watermark_lag_seconds",
    "How far the labels read lag behind the predictions read, in event time: implicit negatives wait for them.",
)
TRAINER_ACTIVE = Gauge("fraud_trainer_active", "1 while this worker holds the trainer lease and trains.")
LABELS_LEARNED = Gauge("fraud_model_labels_learned", "Labels the current model has learned from.")
PENDING_LEARNING = Gauge(
    "fraud_learning_entries", "Predictions and labels the trainer holds waiting for their other half (its worker only)."
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


def exposition() -> tuple[bytes, str]:
    """The text format of every metric of the process, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
