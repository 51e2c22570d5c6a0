"""Rules, a versioned rule set, and the one pure function that decides a transaction: :func:`decide`.

Precedence (the same in the decision path and the backtest; :func:`resolve` is it):

1. every rule that is not ``disabled`` is evaluated on the transaction, each seeing the model's own
   ``fraud_probability``; a ``shadow`` rule's match is reported in ``shadow_matched`` and changes nothing else;
2. an ``active`` ``allow`` rule that matches decides ``allow`` (a known-good customer or terminal): nothing else
   is looked at;
3. else an active ``block`` rule decides ``block``;
4. else the model blocks when its probability, plus the amounts of the active ``score`` rules that matched (clipped
   to [0, 1]), reaches the fixed ``threshold`` (what ``is_fraud`` means);
5. else an active ``review`` rule decides ``review``;
6. else the expected-loss threshold, when set, reviews when ``probability * amount > review_cost``;
7. else ``allow``.

So a rule only ever makes a decision more severe, except an allow rule; a review rule never turns the model's block
into a review. Among the rules of one action, the higher ``priority`` (then the id) comes first in ``matched``;
the first is the one named in ``decided_by``. A rule whose evaluation fails (a division by zero, a feature missing
from an older prediction) counts as not matched and is named in ``errored``.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any, NamedTuple

from app.rules.language import FEATURES, Guard, RuleSyntaxError, Test, compile_expression, compile_rule

ALLOW, REVIEW, BLOCK, SCORE = "allow", "review", "block", "score"
ACTIONS = (ALLOW, BLOCK, REVIEW, SCORE)  # in precedence order
ACTIVE, SHADOW, DISABLED = "active", "shadow", "disabled"
STATES = (ACTIVE, SHADOW, DISABLED)
DECISIONS = (ALLOW, REVIEW, BLOCK)
BY_THRESHOLD, BY_EXPECTED_LOSS, BY_MODEL = "threshold", "expected_loss", "model"

#: Lists every deployment knows (empty until set); more come from the lists topic.
DEFAULT_LISTS = ("blocked_customers", "blocked_terminals", "allowed_customers", "allowed_terminals")
RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_RULES = 200  # rules not disabled in one set: bounds the cost per transaction and the metrics' label values
MAX_DESCRIPTION_CHARS = 500
_PRECEDENCE = {action: i for i, action in enumerate(ACTIONS)}


class RuleRefused(ValueError):
    """A rule that cannot be added: ``field`` names what is wrong; for the expression also its line and column."""

    def __init__(self, rule_id: str, field_name: str, reason: str, line: int | None = None,
                 column: int | None = None) -> None:  # fmt: skip
        where = f"{field_name} line {line}, column {column}" if line is not None else field_name
        super().__init__(f"rule {rule_id!r}: {where}: {reason}")
        self.rule_id = rule_id
        self.field = field_name
        self.reason = reason
        self.line = line
        self.column = column


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    expression: str
    action: str  # allow | review | block | score
    description: str = ""
    score: float = 0.0  # what a matching ``score`` rule adds to the probability (may be negative)
    priority: int = 0  # higher first among the rules of one action
    state: str = ACTIVE  # active | shadow | disabled

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rule_of(obj: Mapping[str, Any], lists: Collection[str] = DEFAULT_LISTS) -> Rule:
    """A rule from its JSON object, checked field by field and its expression compiled against ``lists``;
    :class:`RuleRefused` says which field is wrong and why (and where in the expression).

    >>> rule_of({"id": "velocity", "expression": "customer_nb_tx_1hour > 5", "action": "review"}).priority
    0
    >>> rule_of({"id": "v", "expression": "customer_nb_tx_1hour >", "action": "review"})
    Traceback (most recent call last):
    ...
    app.rules.ruleset.RuleRefused: rule 'v': expression line 1, column 23: the expression ends too early
    """
    if not isinstance(obj, Mapping):
        raise RuleRefused("?", "rule", f"must be a JSON object, not {type(obj).__name__}")
    rule_id = obj.get("id")
    if not isinstance(rule_id, str) or not RULE_ID.match(rule_id):
        raise RuleRefused(
            str(rule_id), "id", "1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    unknown = sorted(set(obj) - {"id", "expression", "action", "description", "score", "priority", "state"})
    if unknown:
        raise RuleRefused(rule_id, unknown[0], "unknown field (fields: id, expression, action, description, score, "
                          "priority, state)")  # fmt: skip
    action = obj.get("action")
    if action not in ACTIONS:
        raise RuleRefused(rule_id, "action", f"must be one of {', '.join(ACTIONS)}, not {action!r}")
    state = obj.get("state", ACTIVE)
    if state not in STATES:
        raise RuleRefused(rule_id, "state", f"must be one of {', '.join(STATES)}, not {state!r}")
    description = obj.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
        raise RuleRefused(rule_id, "description", f"must be text of at most {MAX_DESCRIPTION_CHARS} characters")
    priority = obj.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or not -1_000_000 <= priority <= 1_000_000:
        raise RuleRefused(rule_id, "priority", f"must be a whole number within +-1000000, not {priority!r}")
    score = obj.get("score", 0.0)
    if isinstance(score, bool) or not isinstance(score, int | float) or not -1.0 <= score <= 1.0:
        raise RuleRefused(rule_id, "score", f"must be a number between -1 and 1, not {score!r}")
    if action == SCORE and score == 0:
        raise RuleRefused(rule_id, "score", "a 'score' rule needs a non-zero score (added to the probability)")
    if action != SCORE and score != 0:
        raise RuleRefused(rule_id, "score", f"only a 'score' rule has a score, this one does {action}")
    expression = obj.get("expression")
    if not isinstance(expression, str):
        raise RuleRefused(rule_id, "expression", "must be text")
    try:
        compile_expression(expression, lists)
    except RuleSyntaxError as exc:
        raise RuleRefused(rule_id, "expression", exc.reason, exc.line, exc.column) from None
    return Rule(rule_id, expression, action, description, float(score), priority, state)


class Matches(NamedTuple):
    """What the rules of a set said about one transaction, before the precedence is applied (a named tuple: it
    is made per transaction)."""

    matched: tuple[str, ...]  # active rules, in precedence order
    shadow_matched: tuple[str, ...]
    errored: tuple[str, ...]
    action: str | None  # the first matched active rule's allow/block/review, None when none matched
    score: float  # the sum of the matched active score rules' amounts


class Decision(NamedTuple):
    """One transaction's decision (a named tuple: it is made per transaction)."""

    decision: str  # allow | review | block
    matched: tuple[str, ...]  # active rules that matched, in precedence order
    shadow_matched: tuple[str, ...]  # shadow rules that matched: recorded, never deciding
    probability_after_score: float
    decided_by: str  # the deciding rule's id, or "threshold", "expected_loss", "model" (allowed by the model)
    rule_set_version: int
    errored: tuple[str, ...] = ()


class _Matcher:
    """Which rules of a list match one transaction, in the list's order; the rules with a guard are grouped by the
    guard's name and operator, and a group's rules whose guard fails are skipped with one bisection over their
    constants (``amount > 500``, ``amount > 2000``, ``amount > 9000``: one lookup of ``amount``, and only the
    rules below it are evaluated). Raises what a rule raises; :func:`_one_by_one` then takes over."""

    __slots__ = ("all", "groups", "order", "plain")

    def __init__(self, rules: Sequence[tuple[str, Test, Guard | None]]) -> None:
        self.all = tuple((rule_id, test) for rule_id, test, _ in rules)
        self.order = {rule_id: i for i, (rule_id, _, _) in enumerate(rules)}
        by_guard: dict[tuple[str, str, str], list[tuple[float, str, Test]]] = {}
        for rule_id, test, guard in rules:
            if guard is not None:
                by_guard.setdefault((guard.where, guard.name, guard.op), []).append((guard.constant, rule_id, test))
        grouped = {key: sorted(entries, key=lambda e: e[0]) for key, entries in by_guard.items() if len(entries) > 1}
        self.plain = tuple((rule_id, test) for rule_id, test, guard in rules
                           if guard is None or (guard.where, guard.name, guard.op) not in grouped)  # fmt: skip
        self.groups = tuple(
            (where == FEATURES, name, op, [c for c, _, _ in entries], tuple((r, t) for _, r, t in entries))
            for (where, name, op), entries in grouped.items()
        )

    def __call__(self, x: Mapping[str, float], t: Mapping[str, Any], lists: Mapping[str, Collection[str]]) -> list[str]:
        matched = [rule_id for rule_id, test in self.plain if test(x, t, lists)]
        if self.groups:
            for in_x, name, op, constants, entries in self.groups:
                v = x[name] if in_x else t[name]
                if op == ">":  # the rules with constant < v
                    candidates = entries[: bisect_left(constants, v)]
                elif op == ">=":
                    candidates = entries[: bisect_right(constants, v)]
                elif op == "<":  # the rules with constant > v
                    candidates = entries[bisect_right(constants, v) :]
                else:
                    candidates = entries[bisect_left(constants, v) :]
                for rule_id, test in candidates:
                    if test(x, t, lists):
                        matched.append(rule_id)
            if len(matched) > 1:
                matched.sort(key=self.order.__getitem__)
        return matched


_NONE = _Matcher(())
_Plan = tuple[_Matcher, _Matcher, _Matcher, Mapping[str, str], Mapping[str, float]]


@dataclass(frozen=True)
class RuleSet:
    """The rules of one version; ``version`` is the rules topic's offset past the last event it folds (0: none).

    Built by :meth:`of`, which compiles every rule that is not disabled (a rule that no longer compiles, say a
    feature the deployment's feature set dropped, is left out and listed in ``refused``)."""

    version: int = 0
    rules: tuple[Rule, ...] = ()
    lists: tuple[str, ...] = DEFAULT_LISTS  # the list names the rules were compiled against
    refused: tuple[tuple[str, str], ...] = ()  # (rule id, reason)
    # what evaluate() walks: (deciding rules, score rules, shadow rules, action by rule id), in precedence order
    _plan: _Plan = field(default=(_NONE, _NONE, _NONE, {}, {}), repr=False, compare=False)

    @classmethod
    def of(cls, rules: Iterable[Rule], version: int = 0, lists: Collection[str] = DEFAULT_LISTS) -> RuleSet:
        names = tuple(sorted({*DEFAULT_LISTS, *lists}))
        kept: list[Rule] = []
        compiled: list[tuple[Rule, Test, Guard | None]] = []
        refused: list[tuple[str, str]] = []
        for rule in sorted(rules, key=lambda r: (_PRECEDENCE[r.action], -r.priority, r.id)):
            if rule.state == DISABLED:
                kept.append(rule)
                continue
            try:
                test, guard = compile_rule(rule.expression, names)
            except RuleSyntaxError as exc:
                refused.append((rule.id, str(exc)))
                continue
            kept.append(rule)
            compiled.append((rule, test, guard))
        live = [(r, t, g) for r, t, g in compiled if r.state == ACTIVE]
        if len(compiled) > MAX_RULES:
            raise ValueError(f"{len(compiled)} rules are active or shadow, over the limit of {MAX_RULES}")
        return cls(
            version=version,
            rules=tuple(kept),
            lists=names,
            refused=tuple(refused),
            _plan=(
                _Matcher([(r.id, t, g) for r, t, g in live if r.action != SCORE]),
                _Matcher([(r.id, t, g) for r, t, g in live if r.action == SCORE]),
                _Matcher([(r.id, t, g) for r, t, g in compiled if r.state == SHADOW]),
                {r.id: r.action for r, _, _ in live},
                {r.id: r.score for r, _, _ in live if r.action == SCORE},
            ),
        )

    def get(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    @cached_property
    def states(self) -> dict[str, str]:
        """Each rule's state by id (the metrics' ``state`` label)."""
        return {r.id: r.state for r in self.rules}

    def with_rules(self, rules: Iterable[Rule]) -> RuleSet:
        """This set with ``rules`` added (replacing those of the same id): a backtest's candidate."""
        added = {r.id: r for r in rules}
        return RuleSet.of([*(r for r in self.rules if r.id not in added), *added.values()], self.version, self.lists)

    def without_rules(self, ids: Collection[str]) -> RuleSet:
        """This set without the rules of ``ids``: a backtest's baseline for a rule already live.

        >>> RuleSet.of([Rule("a", "amount > 1", "review")], version=7).without_rules({"a"}).rules
        ()
        """
        return RuleSet.of([r for r in self.rules if r.id not in ids], self.version, self.lists)

    @property
    def digest(self) -> str:
        """``rs-`` and 8 hex digits of the rules' content: two sets with one digest decide alike."""
        text = "\n".join(
            f"{r.id}\t{r.action}\t{r.state}\t{r.priority}\t{r.score!r}\t{r.expression}" for r in self.rules
        )
        return "rs-" + hashlib.sha256(text.encode()).hexdigest()[:8]

    def evaluate(
        self,
        x: Mapping[str, float],
        fields: Mapping[str, Any],
        lists: Mapping[str, Collection[str]],
    ) -> Matches:
        """Every rule that is not disabled on one transaction. ``fields`` holds ``customer_id``, ``terminal_id``,
        ``tx_id`` and the model's ``fraud_probability``."""
        matched, shadow, errored, action, score = _evaluate(self._plan, x, fields, lists)
        return Matches(tuple(matched), tuple(shadow), tuple(errored), action, score)


_ERRORS = (ArithmeticError, LookupError, TypeError)


def _evaluate(
    plan: _Plan, x: Mapping[str, float], fields: Mapping[str, Any], lists: Mapping[str, Collection[str]]
) -> tuple[list[str], Sequence[str], Sequence[str], str | None, float]:
    """(matched, shadow matched, errored, the first matched rule's action, the score added): written for speed,
    it runs per transaction."""
    deciding, scoring, shadowing, actions, amounts = plan
    errored: list[str] = []
    if deciding.all:
        try:
            matched = deciding(x, fields, lists)
        except _ERRORS:
            matched = _one_by_one(deciding.all, x, fields, lists, errored)
    else:
        matched = []
    action = actions[matched[0]] if matched else None
    score = 0.0
    if scoring.all:
        try:
            hits = scoring(x, fields, lists)
        except _ERRORS:
            hits = _one_by_one(scoring.all, x, fields, lists, errored)
        for rule_id in hits:
            score += amounts[rule_id]
        matched.extend(hits)
    shadow: Sequence[str] = ()
    if shadowing.all:
        try:
            shadow = shadowing(x, fields, lists)
        except _ERRORS:
            shadow = _one_by_one(shadowing.all, x, fields, lists, errored)
    return matched, shadow, errored, action, score


def _one_by_one(
    rules: tuple[tuple[str, Test], ...],
    x: Mapping[str, float],
    fields: Mapping[str, Any],
    lists: Mapping[str, Collection[str]],
    errored: list[str],
) -> list[str]:
    """The slow path, taken only when a rule raised: each rule alone, the failing ones named in ``errored``."""
    matched = []
    for rule_id, test in rules:
        try:
            if test(x, fields, lists):
                matched.append(rule_id)
        except (ArithmeticError, LookupError, TypeError):
            errored.append(rule_id)
    return matched


def resolve(
    matches: Matches,
    probability: float,
    amount: float,
    threshold: float,
    review_cost: float | None = None,
    version: int = 0,
) -> Decision:
    """The precedence of the module docstring, applied to what the rules said.

    >>> resolve(Matches(("velocity",), (), (), REVIEW, 0.0), 0.7, 10.0, 0.5).decided_by  # the model's block stands
    'threshold'

    >>> m = Matches(("vip",), (), (), ALLOW, 0.0)
    >>> resolve(m, 0.99, 10.0, 0.5).decision
    'allow'
    >>> resolve(Matches((), (), (), None, 0.3), 0.3, 10.0, 0.5).decided_by
    'threshold'
    >>> resolve(Matches((), (), (), None, 0.0), 0.1, 500.0, 0.5, review_cost=20.0).decision
    'review'
    """
    return _decision(*matches, probability, amount, threshold, review_cost, version)


def _decision(
    matched: Sequence[str],
    shadow: Sequence[str],
    errored: Sequence[str],
    action: str | None,
    score: float,
    probability: float,
    amount: float,
    threshold: float,
    review_cost: float | None,
    version: int,
) -> Decision:
    """Steps 2 to 7 of the module docstring on what the rules said (a :class:`Matches`' fields, in its order): the
    one copy of the precedence and of both thresholds, for :func:`decide` and :func:`resolve` alike."""
    p = probability + score if score else probability
    p = 0.0 if p < 0.0 else 1.0 if p > 1.0 else p
    first = matched[0] if matched else ""
    if action == ALLOW or action == BLOCK:
        decision, by = action, first
    elif p >= threshold:
        decision, by = BLOCK, BY_THRESHOLD
    elif action == REVIEW:
        decision, by = REVIEW, first
    elif review_cost is not None and p * amount > review_cost:
        decision, by = REVIEW, BY_EXPECTED_LOSS
    else:
        decision, by = ALLOW, BY_MODEL
    return Decision(decision, tuple(matched), tuple(shadow), p, by, version, tuple(errored))


def decide(
    rule_set: RuleSet,
    x: Mapping[str, float],
    tx_fields: Mapping[str, Any],
    probability: float,
    threshold: float,
    lists: Mapping[str, Collection[str]],
    review_cost: float | None = None,
) -> Decision:
    """One transaction's decision: the rules of ``rule_set`` on its features ``x`` and fields (``customer_id``,
    ``terminal_id``, ``tx_id``, ``amount``), then the precedence of the module docstring. Pure, no I/O: the
    scorer calls it per transaction with the rule set and lists current between its batches.

    >>> rs = RuleSet.of([Rule("big", "amount > 1000", BLOCK), Rule("vip", "customer_id in allowed_customers", ALLOW),
    ...                  Rule("night", "is_night == 1", SCORE, score=0.2), Rule("try", "amount > 500", REVIEW,
    ...                  state=SHADOW)], version=7)
    >>> fields = {"customer_id": "c1", "terminal_id": "t1", "tx_id": "x1", "amount": 2000.0}
    >>> d = decide(rs, {"amount": 2000.0, "is_night": 1.0}, fields, 0.1, 0.5, {})
    >>> d.decision, d.matched, d.shadow_matched, round(d.probability_after_score, 2), d.decided_by
    ('block', ('big', 'night'), ('try',), 0.3, 'big')
    >>> decide(rs, {"amount": 2000.0, "is_night": 0.0}, fields, 0.1, 0.5,
    ...        {"allowed_customers": frozenset({"c1"})}).decision
    'allow'
    """
    fields = {**tx_fields, "fraud_probability": probability}
    amount = float(tx_fields.get("amount", x.get("amount", 0.0)))
    return _decision(*_evaluate(rule_set._plan, x, fields, lists), probability, amount, threshold, review_cost,
                     rule_set.version)  # fmt: skip


def with_state(rule: Rule, state: str) -> Rule:
    return replace(rule, state=state)


class LiveRules(NamedTuple):
    """What a worker decides with between two batches: one value, so the follower swaps the rule set and the lists
    together in one assignment (:mod:`app.kafka.rule_topics`)."""

    rule_set: RuleSet = RuleSet()
    lists: Mapping[str, Collection[str]] = {}
    lists_version: int = 0


NO_RULES = LiveRules()
