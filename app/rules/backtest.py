"""The backtest's counting: candidate rules beside the live rule set, over past predictions and their labels (pure).

:class:`Backtest` takes the predictions as scored (features, ``fraud_probability``, the transaction's fields) and
the labels by ``tx_id``; it decides every transaction of the event-time range ``[start_s, end_s)`` with the live
set, with the candidate set (the live set with the candidate rules added, a candidate replacing the live rule of
its id, every candidate taken as ``active``) and, per candidate, with the live set plus that rule alone, under both
thresholds: the fixed one (each prediction's own, or the one given) and the expected-loss one (``review`` when the
probability times the amount passes ``review_cost``). It reads nothing and changes nothing: the Kafka side is
:mod:`app.ops.rules`.

Counted: an *alert* is a ``review`` or ``block`` decision; a *fraud caught* is an alerted (or, per rule, matched)
transaction labelled fraud; a *false alarm* one labelled legitimate; a transaction without a label counts in
``unlabelled`` and in neither. Precision is caught / (caught + false alarms), recall caught / frauds of the range.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.rules.ruleset import ACTIVE, ALLOW, DECISIONS, DISABLED, Matches, Rule, RuleSet, resolve

FIXED, EXPECTED_LOSS = "fixed", "expected_loss"
MODES = (FIXED, EXPECTED_LOSS)
LIVE, CANDIDATE = "live", "candidate"
CHANGED_EXAMPLES = 10


@dataclass(frozen=True, slots=True)
class Scored:
    """One prediction as the backtest reads it."""

    tx_id: str
    event_time_s: float
    x: Mapping[str, float]
    fields: Mapping[str, Any]  # customer_id, terminal_id, tx_id, amount, fraud_probability
    probability: float
    threshold: float
    amount: float


def scored_of(prediction: Mapping[str, Any]) -> Scored:
    """A ``predictions`` record (its JSON object); :class:`KeyError`/:class:`ValueError` when it is not one."""
    x = prediction["features"]
    timestamp = datetime.fromisoformat(str(prediction["timestamp"]).replace("Z", "+00:00")).timestamp()
    amount = float(x.get("amount", 0.0))
    probability = float(prediction["fraud_probability"])
    fields = {"customer_id": prediction["customer_id"], "terminal_id": prediction["terminal_id"],
              "tx_id": prediction["tx_id"], "amount": amount, "fraud_probability": probability}  # fmt: skip
    return Scored(str(prediction["tx_id"]), timestamp, x, fields, probability, float(prediction["threshold"]), amount)


@dataclass
class Figures:
    """Alerts (a set) or matches (a rule) against the labels."""

    hits: int = 0  # alerts of a set, matches of a rule
    frauds: int = 0  # hits labelled fraud
    false_alarms: int = 0  # hits labelled legitimate
    unlabelled: int = 0  # hits without a label
    fraud_amount: float = 0.0  # amount of the hits labelled fraud
    errors: int = 0  # a rule's evaluations that failed (a division by zero, a feature the prediction lacks)

    def add(self, label: bool | None, amount: float) -> None:
        self.hits += 1
        if label is None:
            self.unlabelled += 1
        elif label:
            self.frauds += 1
            self.fraud_amount += amount
        else:
            self.false_alarms += 1

    @property
    def precision(self) -> float | None:
        judged = self.frauds + self.false_alarms
        return self.frauds / judged if judged else None

    def recall(self, frauds: int) -> float | None:
        return self.frauds / frauds if frauds else None


@dataclass
class SetFigures:
    alerts: Figures = field(default_factory=Figures)
    decisions: Counter[str] = field(default_factory=Counter)


@dataclass
class Change:
    """How one set's decisions differ from the live set's, under one threshold."""

    changed: int = 0
    by_pair: Counter[tuple[str, str]] = field(default_factory=Counter)  # (live decision, new decision) -> count
    examples: list[str] = field(default_factory=list)  # the first tx ids changed
    alert_delta: int = 0  # alerts of this set minus the live set's

    def add(self, tx_id: str, before: str, after: str) -> None:
        self.changed += 1
        self.by_pair[(before, after)] += 1
        if len(self.examples) < CHANGED_EXAMPLES:
            self.examples.append(tx_id)
        self.alert_delta += (after != ALLOW) - (before != ALLOW)


@dataclass
class Report:
    start_s: float
    end_s: float
    review_cost: float
    threshold: float | None  # None: each prediction's own
    transactions: int = 0
    labelled: int = 0
    frauds: int = 0
    fraud_amount: float = 0.0
    duplicates: int = 0
    candidates: tuple[str, ...] = ()
    rules: dict[str, Rule] = field(default_factory=dict)  # every rule of the candidate set, not disabled
    rule_figures: dict[str, Figures] = field(default_factory=dict)
    sets: dict[tuple[str, str], SetFigures] = field(default_factory=dict)  # (set, mode)
    changes: dict[tuple[str, str], Change] = field(default_factory=dict)  # (candidate or rule id, mode)

    def alert_rate(self, figures: SetFigures) -> float | None:
        return figures.alerts.hits / self.transactions if self.transactions else None

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``--json``)."""

        def figures(f: Figures) -> dict[str, Any]:
            return {"hits": f.hits, "frauds": f.frauds, "false_alarms": f.false_alarms, "unlabelled": f.unlabelled,
                    "fraud_amount": round(f.fraud_amount, 2), "precision": f.precision,
                    "recall": f.recall(self.frauds), "errors": f.errors}  # fmt: skip

        def change(c: Change) -> dict[str, Any]:
            return {"changed": c.changed, "alert_delta": c.alert_delta,
                    "alert_rate_change": c.alert_delta / self.transactions if self.transactions else None,
                    "by_pair": {f"{a}->{b}": n for (a, b), n in sorted(c.by_pair.items())},
                    "examples": c.examples}  # fmt: skip

        return {
            "from": self.start_s,
            "to": self.end_s,
            "threshold": self.threshold,
            "review_cost": self.review_cost,
            "transactions": self.transactions,
            "labelled": self.labelled,
            "frauds": self.frauds,
            "fraud_amount": round(self.fraud_amount, 2),
            "duplicates": self.duplicates,
            "candidates": list(self.candidates),
            "rules": {
                rule_id: {
                    "action": self.rules[rule_id].action,
                    "state": self.rules[rule_id].state,
                    "candidate": rule_id in self.candidates,
                    **figures(f),
                    **{
                        f"changed_{mode}": change(self.changes[(rule_id, mode)])
                        for mode in MODES
                        if (rule_id, mode) in self.changes
                    },
                }  # fmt: skip
                for rule_id, f in self.rule_figures.items()
            },
            "sets": {
                f"{name}/{mode}": {
                    **figures(s.alerts),
                    "alert_rate": self.alert_rate(s),
                    "decisions": {d: s.decisions[d] for d in DECISIONS},
                }  # fmt: skip
                for (name, mode), s in self.sets.items()
            },
            "changes": {mode: change(self.changes[(CANDIDATE, mode)]) for mode in MODES},
        }


class Backtest:
    """The counting, one record at a time (the command feeds it as it reads, so a month of predictions is never
    held in memory): :meth:`add` each prediction, then read :attr:`report` (or :meth:`run` over them all).
    ``labels`` must be complete first; ``threshold`` None: each prediction's own."""

    def __init__(
        self,
        labels: Mapping[str, bool],
        live: RuleSet,
        candidates: Collection[Rule],
        lists: Mapping[str, Collection[str]],
        *,
        start_s: float,
        end_s: float,
        review_cost: float,
        threshold: float | None = None,
    ) -> None:
        active = [Rule(r.id, r.expression, r.action, r.description, r.score, r.priority, ACTIVE) for r in candidates]
        self.labels, self.live, self.lists = labels, live, lists
        self.candidate_set = live.with_rules(active)
        self.alone = {r.id: live.with_rules([r]) for r in active}
        report = Report(start_s, end_s, review_cost, threshold, candidates=tuple(r.id for r in active))
        report.rules = {r.id: r for r in self.candidate_set.rules if r.state != DISABLED}
        report.rule_figures = {rule_id: Figures() for rule_id in report.rules}
        for name in (LIVE, CANDIDATE):
            for mode in MODES:
                report.sets[(name, mode)] = SetFigures()
        for key in (CANDIDATE, *self.alone):
            for mode in MODES:
                report.changes[(key, mode)] = Change()
        self.report = report
        self._seen: set[str] = set()

    def run(self, records: Iterable[Scored]) -> Report:
        """Count what the live set and the candidates would have decided on ``records`` in ``[start_s, end_s)``
        (event time; a ``tx_id`` seen again is counted once)."""
        for record in records:
            self.add(record)
        return self.report

    def in_range(self, event_time_s: float) -> bool:
        return self.report.start_s <= event_time_s < self.report.end_s

    def add(self, record: Scored) -> None:
        report = self.report
        if not self.in_range(record.event_time_s):
            return
        if record.tx_id in self._seen:
            report.duplicates += 1
            return
        self._seen.add(record.tx_id)
        report.transactions += 1
        label = self.labels.get(record.tx_id)
        if label is not None:
            report.labelled += 1
            if label:
                report.frauds += 1
                report.fraud_amount += record.amount
        x, fields, p, amount, lists = record.x, record.fields, record.probability, record.amount, self.lists
        t = record.threshold if report.threshold is None else report.threshold
        live_m = self.live.evaluate(x, fields, lists)
        candidate_m = self.candidate_set.evaluate(x, fields, lists)
        for rule_id in (*candidate_m.matched, *candidate_m.shadow_matched):
            report.rule_figures[rule_id].add(label, amount)
        for rule_id in candidate_m.errored:
            report.rule_figures[rule_id].errors += 1
        alone_m = {rule_id: s.evaluate(x, fields, lists) for rule_id, s in self.alone.items()}
        sets, changes = report.sets, report.changes
        for mode in MODES:
            cost = report.review_cost if mode == EXPECTED_LOSS else None
            before = _decide(live_m, p, amount, t, cost, sets[(LIVE, mode)], label)
            after = _decide(candidate_m, p, amount, t, cost, sets[(CANDIDATE, mode)], label)
            if after != before:
                changes[(CANDIDATE, mode)].add(record.tx_id, before, after)
            for rule_id, m in alone_m.items():
                decided = resolve(m, p, amount, t, cost).decision
                if decided != before:
                    changes[(rule_id, mode)].add(record.tx_id, before, decided)


def _decide(
    m: Matches, p: float, amount: float, threshold: float, cost: float | None, figures: SetFigures, label: bool | None
) -> str:
    decision = resolve(m, p, amount, threshold, cost).decision
    figures.decisions[decision] += 1
    if decision != ALLOW:
        figures.alerts.add(label, amount)
    return decision


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _changed(change: dict[str, Any] | None) -> str:
    return "-" if change is None else f"{change['changed']} ({change['alert_delta']:+d})"


def lines(report: Report) -> list[str]:
    """The report as the command prints it."""
    d = report.to_dict()
    out = [
        f"{report.transactions} transactions in the range ({report.labelled} labelled, {report.frauds} frauds, "
        f"fraud amount {report.fraud_amount:.2f}); threshold "
        f"{'as scored' if report.threshold is None else report.threshold}, review cost {report.review_cost:g}",
        "",
        f"{'rule':<24} {'action':<7} {'state':<9} {'matched':>8} {'frauds':>7} {'false':>7} {'no label':>8} "
        f"{'precision':>9} "
        f"{'recall':>7} {'fraud amount':>13} {'changed fixed':>16} {'changed e.loss':>16}",
    ]
    for rule_id, r in d["rules"].items():
        mark = "*" if r["candidate"] else " "
        fixed, loss = _changed(r.get(f"changed_{FIXED}")), _changed(r.get(f"changed_{EXPECTED_LOSS}"))
        out.append(
            f"{mark}{rule_id:<23} {r['action']:<7} {r['state']:<9} {r['hits']:>8} {r['frauds']:>7} "
            f"{r['false_alarms']:>7} {r['unlabelled']:>8} {_pct(r['precision']):>9} {_pct(r['recall']):>7} "
            f"{r['fraud_amount']:>13.2f} {fixed:>16} {loss:>16}"
        )
    out.append("(* a candidate, evaluated as active; 'changed': decisions it alone would change in the live set, "
               "with the change in alerts)")  # fmt: skip
    for rule_id, r in d["rules"].items():
        if r["errors"]:
            out.append(f"rule {rule_id} failed on {r['errors']} transactions (counted as not matched)")
    out.append("")
    out.append(
        f"{'set / threshold':<26} {'alerts':>8} {'rate':>7} {'frauds':>7} {'false':>7} {'no label':>8} "
        f"{'precision':>9} {'recall':>7} {'fraud amount':>13} {'allow':>8} {'review':>8} {'block':>8}"
    )
    for name, s in d["sets"].items():
        rate = _pct(s["alert_rate"])
        out.append(
            f"{name:<26} {s['hits']:>8} {rate:>7} {s['frauds']:>7} {s['false_alarms']:>7} {s['unlabelled']:>8} "
            f"{_pct(s['precision']):>9} {_pct(s['recall']):>7} {s['fraud_amount']:>13.2f} "
            f"{s['decisions']['allow']:>8} {s['decisions']['review']:>8} {s['decisions']['block']:>8}"
        )
    out.append("")
    for mode, c in d["changes"].items():
        rate = c["alert_rate_change"]
        pairs = ", ".join(f"{k} {v}" for k, v in c["by_pair"].items()) or "none"
        out.append(
            f"candidate vs live ({mode}): {c['changed']} decisions changed ({pairs}); alert rate "
            f"{'-' if rate is None else f'{rate:+.2%}'}; e.g. {', '.join(c['examples']) or '-'}"
        )
    return out
