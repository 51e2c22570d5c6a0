"""Every Prometheus object of the app, in the default registry that ``/metrics`` serves.

Labels stay low-cardinality: outcomes and error codes, never a card, customer, terminal or transaction id.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric

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
MODEL_INFO = Gauge("fraud_model_info", "The model that scores, by version (value is always 1).", ["version"])
LABELS_LEARNED = Gauge("fraud_model_labels_learned", "Labels the current model has learned from.")
PENDING_LEARNING = Gauge(
    "fraud_learning_entries", "Entries in the table joining scored features and labels, on this worker."
)
LATE_TRANSACTIONS = Counter(
    "fraud_late_transactions",
    "Transactions older than the lateness behind their partition's stream time: scored, but windows may miss "
    "entries already pruned.",
)
CUSTOMERS_EXPIRED = Counter("fraud_customers_expired", "Customer states removed after idling past the TTL.")
CUSTOMER_STATES = Gauge("fraud_customer_states", "Customer states held on this worker, after the last sweep.")
TERMINALS_EXPIRED = Counter("fraud_terminals_expired", "Terminal states removed after idling past the TTL.")
TERMINAL_STATES = Gauge("fraud_terminal_states", "Terminal states held on this worker, after the last sweep.")
DUPLICATE_TRANSACTIONS = Counter(
    "fraud_duplicate_transactions",
    "Transactions seen again by tx_id (replays after a crash, producer retries): scored with the features of "
    "their first arrival, not counted twice in any window.",
    ["stage"],
)
ALIGNMENT_WAIT = Histogram(
    "fraud_alignment_wait_seconds",
    "Time a transaction waited for every customer partition to pass its event time before terminal features.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
ALIGNMENT_FORCED = Counter(
    "fraud_alignment_forced_releases",
    "Transactions released after the maximum alignment wait, before every customer partition had passed them.",
)
ALIGNMENT_HELD = Gauge("fraud_alignment_held_transactions", "Transactions waiting for event-time alignment.")
HEALTH_STATUS = Gauge("fraud_health_status", "1 for the worker's current health status, 0 for the others.", ["status"])


#: Faust's own sensor writes here; :class:`UnitNamedCollector` re-exports it under Prometheus' unit names.
FAUST_REGISTRY = CollectorRegistry(auto_describe=True)


class UnitNamedCollector:
    """Re-exports another registry's metrics with milliseconds converted to seconds.

    Faust's sensor records ``events_runtime_ms``; Prometheus' base unit is the second and
    ``promtool check metrics`` rejects anything else, so what operators scrape must pass that lint.
    """

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        for family in self.source.collect():
            if "_ms" in family.name:
                family = _milliseconds_to_seconds(family)
            yield family


def _milliseconds_to_seconds(family: Metric) -> Metric:
    old, new = family.name, family.name.replace("_ms", "_seconds")
    samples = []
    for sample in family.samples:
        labels, value = dict(sample.labels), sample.value
        if sample.name.endswith("_bucket") and labels.get("le") not in (None, "+Inf"):
            labels["le"] = repr(float(labels["le"]) / 1000.0)
        elif not sample.name.endswith(("_bucket", "_count", "_created")):
            value = value / 1000.0
        samples.append(sample._replace(name=sample.name.replace(old, new, 1), labels=labels, value=value))
    family.name, family.samples = new, samples
    return family


REGISTRY.register(UnitNamedCollector(FAUST_REGISTRY))  # type: ignore[arg-type]


def exposition() -> tuple[bytes, str]:
    """The text format of every metric of the process, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
