"""Every Prometheus object of the app, in the default registry that ``/metrics`` serves.

Labels stay low-cardinality: outcomes and error codes, never a card, customer, terminal or transaction id.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TRANSACTIONS = Counter(
    "fraud_transactions", "Input transactions by final outcome (scored or dead_letter).", ["outcome"]
)
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
MODEL_INFO = Gauge("fraud_model_info", "The model that scores, by version (value is always 1).", ["version"])
LABELS_LEARNED = Gauge("fraud_model_labels_learned", "Labels the current model has learned from.")
PENDING_LEARNING = Gauge(
    "fraud_learning_entries", "Entries in the table joining scored features and labels, on this worker."
)
HEALTH_STATUS = Gauge("fraud_health_status", "1 for the worker's current health status, 0 for the others.", ["status"])
