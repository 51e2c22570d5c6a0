"""The operator page's status document: what ``GET /status.json`` answers, built from values passed in.

Pure (no Faust, no Kafka): :mod:`app.serving.operator_page` reads the worker's objects (the health window, the metrics,
the scorer's model and its high scores) and hands them here, so the document's shape is unit-tested alone.
The health part is :func:`app.monitoring.health.health_event`, the monitor's own record, so the page and the ``health``
topic never disagree on a status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from app.records import Prediction

HIGH_SCORES_SHOWN = 20


def dead_letter_rows(counts: Mapping[tuple[str, ...], float]) -> list[dict[str, Any]]:
    """Dead letters by input and code since the worker started, the most frequent first.

    >>> for row in dead_letter_rows({("transactions", "invalid_json"): 2.0, ("labels", "invalid_type"): 5.0}):
    ...     print(row)
    {'input': 'labels', 'error': 'invalid_type', 'count': 5}
    {'input': 'transactions', 'error': 'invalid_json', 'count': 2}
    """
    rows = sorted((-int(count), key[0], key[1]) for key, count in counts.items() if count > 0)
    return [{"input": source, "error": code, "count": -negative} for negative, source, code in rows]


def latest_high_scores(high_scores: Iterable[Prediction], shown: int = HIGH_SCORES_SHOWN) -> list[Prediction]:
    """The newest ``shown`` of the kept high scores (kept oldest first, as committed)."""
    newest_first = list(high_scores)
    newest_first.reverse()
    return newest_first[:shown]


def status_document(
    *,
    health: Mapping[str, Any],
    ready: bool,
    decision_threshold: float,
    dead_letters: Mapping[tuple[str, ...], float],
    outcomes: Mapping[tuple[str, ...], float],
    predicted_fraud: float,
    high_scores: Iterable[Prediction],
    shown: int = HIGH_SCORES_SHOWN,
) -> dict[str, Any]:
    """The health event of this instant plus totals since start and the latest high-score decisions.

    ``outcomes`` are the ``fraud_transactions`` totals by outcome; predictions stay dataclasses (orjson writes them
    as the ``predictions`` topic's records, reasons and features included).
    """
    return {
        **health,
        "ready": ready,
        "decision_threshold": decision_threshold,
        "totals": {
            "scored": int(outcomes.get(("scored",), 0.0)),
            "dead_letter": int(outcomes.get(("dead_letter",), 0.0)),
            "predicted_fraud": int(predicted_fraud),
        },
        "dead_letters_by_code": dead_letter_rows(dead_letters),
        "high_scores": latest_high_scores(high_scores, shown),
    }
