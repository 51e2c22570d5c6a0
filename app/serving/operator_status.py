"""The operator page's status document: what ``GET /status.json`` answers, built from values passed in.

Pure (no Faust, no Kafka): :mod:`app.serving.operator_page` reads the worker's objects (the health window, the metrics,
the scorer's model, its rule set and its high scores) and hands them here, so the document's shape is unit-tested alone.
The health part is :func:`app.monitoring.health.health_event`, the monitor's own record, so the page and the ``health``
topic never disagree on a status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from app.records import Prediction
from app.rules.ruleset import DISABLED, RuleSet

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


def rule_rows(rule_set: RuleSet, window_hits: Mapping[str, int], total_hits: Mapping[tuple[str, ...], float]
              ) -> dict[str, Any]:  # fmt: skip
    """The rule set in force: every rule not disabled with its matches over the window and since the worker
    started, in precedence order (allow, block, review, score; higher priority first).

    >>> from app.rules.ruleset import Rule
    >>> rs = RuleSet.of([Rule("big", "amount > 9000", "block"), Rule("old", "amount > 1", "review", state="disabled"),
    ...                  Rule("try", "amount > 500", "review", state="shadow")], version=4)
    >>> doc = rule_rows(rs, {"big": 2}, {("big", "active"): 7.0})
    >>> doc["version"], [(r["id"], r["state"], r["hits_window"], r["hits_total"]) for r in doc["rules"]]
    (4, [('big', 'active', 2, 7), ('try', 'shadow', 0, 0)])
    """
    rows = [
        {**rule.to_dict(), "hits_window": int(window_hits.get(rule.id, 0)),
         "hits_total": int(total_hits.get((rule.id, rule.state), 0.0))}
        for rule in rule_set.rules
        if rule.state != DISABLED
    ]  # fmt: skip
    return {"version": rule_set.version, "digest": rule_set.digest, "rules": rows}


def status_document(
    *,
    health: Mapping[str, Any],
    ready: bool,
    decision_threshold: float,
    dead_letters: Mapping[tuple[str, ...], float],
    outcomes: Mapping[tuple[str, ...], float],
    predicted_fraud: float,
    high_scores: Iterable[Prediction],
    rules: Mapping[str, Any] | None = None,
    shown: int = HIGH_SCORES_SHOWN,
) -> dict[str, Any]:
    """The health event of this instant plus totals since start and the latest high-score decisions.

    ``outcomes`` are the ``fraud_transactions`` totals by outcome; ``rules``: :func:`rule_rows`; predictions stay
    dataclasses (orjson writes them as the ``predictions`` topic's records, reasons and features included).
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
        "rules": rules if rules is not None else rule_rows(RuleSet(), {}, {}),
    }
