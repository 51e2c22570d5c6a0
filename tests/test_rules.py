"""The rule language, the decision precedence and the rules topic's fold (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.features.spec import FEATURE_NAMES
from app.rules.errors import RuleErrors
from app.rules.events import RuleLog, fold_lists, fold_rules, history, list_event, rule_event
from app.rules.language import MAX_DEPTH, MAX_NODES, MAX_TEXT_CHARS, RuleSyntaxError, compile_expression
from app.rules.ruleset import (
    ALLOW,
    BLOCK,
    DISABLED,
    MAX_RULES,
    REVIEW,
    SCORE,
    SHADOW,
    Rule,
    RuleRefused,
    RuleSet,
    decide,
    rule_of,
)
from app.serialization import dumps

LISTS = ("blocked_customers", "allowed_terminals")


def features(**values: float) -> dict[str, float]:
    x = dict.fromkeys(FEATURE_NAMES, 0.0)
    x.update(values)
    return x


def fields(**values: Any) -> dict[str, Any]:
    return {"customer_id": "c-1", "terminal_id": "t-1", "tx_id": "tx-1", "fraud_probability": 0.1, **values}


def holds(expression: str, x: dict[str, float] | None = None, t: dict[str, Any] | None = None,
          lists: dict[str, frozenset[str]] | None = None) -> bool:  # fmt: skip
    return bool(compile_expression(expression, LISTS)(x or features(), t or fields(), lists or {}))


def refusal(expression: str) -> RuleSyntaxError:
    with pytest.raises(RuleSyntaxError) as caught:
        compile_expression(expression, LISTS)
    return caught.value


# ---- the grammar ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("true or false and false", True),  # and binds tighter than or
        ("(true or false) and false", False),
        ("not false and false", False),  # not binds tighter than and
        ("not (false and false)", True),
        ("not amount > 5", True),  # not applies to the comparison
        ("false or not true or true", True),
        ("1 + 2 * 3 == 7", True),  # * before +
        ("(1 + 2) * 3 == 9", True),
        ("10 - 4 - 3 == 3", True),  # left to right
        ("8 / 4 / 2 == 1", True),
        ("-2 * -3 == 6", True),
        ("- - 1 == 1", True),
        ("abs(-3) == 3 and min(4, 2, 9) == 2 and max(1, 7) == 7", True),
        ("1.5e1 == 15 and .5 == 0.5", True),
        ("'a' == \"a\" and 'a' != 'b'", True),
        ("true == true and false != true", True),
        ("amount > 1 # a comment to the end of the line", False),
    ],
)
def test_precedence_and_arithmetic(expression: str, expected: bool) -> None:
    assert holds(expression) is expected


def test_names_read_features_the_probability_and_the_fields() -> None:
    x = features(amount=250.0, customer_nb_tx_1hour=6.0, customer_avg_amount_30day=50.0, is_night=1.0)
    t = fields(fraud_probability=0.42, terminal_id="t-9")
    assert holds("customer_nb_tx_1hour > 5 and amount > 4 * customer_avg_amount_30day", x, t)
    assert holds("fraud_probability * amount > 100 and is_night == 1", x, t)
    assert not holds("fraud_probability * amount > 110", x, t)
    assert holds("terminal_id == 't-9' and tx_id != 'tx-2'", x, t)
    assert holds("amount >= 250 and amount <= 250 and not amount < 250", x, t)


@pytest.mark.parametrize(
    "expression",
    ["100 - amount == 90", "amount - 100 == -90", "amount / 2 == 5", "20 / amount == 2", "2 * amount + 1 == 21",
     "1 - amount * 2 == -19", "amount * amount == 100", "-amount == -10", "amount + amount / amount == 11",
     "min(amount, 3) + max(amount, 3) == 13", "abs(amount - 30) == 20", "customer_nb_tx_1hour + 1 < amount"],
)  # fmt: skip
def test_arithmetic_on_features(expression: str) -> None:
    assert holds(expression, features(amount=10.0))
    assert not holds(f"not ({expression})", features(amount=10.0))


def test_lists_named_and_literal() -> None:
    lists = {"blocked_customers": frozenset({"c-1", "c-7"})}
    assert holds("customer_id in blocked_customers", lists=lists)
    assert not holds("customer_id not in blocked_customers", lists=lists)
    assert not holds("terminal_id in allowed_terminals", lists=lists)  # a known list not yet set: empty
    assert holds("terminal_id in ['t-1', 't-2'] and customer_id not in []", lists=lists)
    assert holds("not customer_id in ['x'] or false", lists=lists)


@pytest.mark.parametrize(
    ("expression", "line", "column", "reason"),
    [
        ("amount >", 1, 9, "the expression ends too early"),
        ("amount > 1 and", 1, 15, "the expression ends too early"),
        ("amount > 1 > 2", 1, 12, "unexpected '>'"),
        ("amount $ 1", 1, 8, "unexpected character '$'"),
        ("amount > 5 and\n  amout > 2", 2, 3, "unknown name 'amout' (did you mean 'amount'?)"),
        ("customer_nb_tx_2hour > 5", 1, 1, "unknown name 'customer_nb_tx_2hour'"),
        ("customer_id in vip_customers", 1, 16, "unknown list 'vip_customers'"),
        ("blocked_customers", 1, 1, "'blocked_customers' is a list"),
        ("median(amount) > 1", 1, 1, "unknown function 'median'"),
        ("amount > 'big'", 1, 8, "'>' compares a number with a string"),
        ("customer_id > 'c'", 1, 13, "'>' compares numbers, not strings"),
        ("amount and true", 1, 1, "each side of 'and' must be a boolean, not a number"),
        ("not amount", 1, 5, "the operand of 'not' must be a boolean"),
        ("amount + customer_id > 1", 1, 10, "each side of '+' must be a number, not a string"),
        ("amount in blocked_customers", 1, 1, "what 'in' looks for must be a string"),
        ("customer_id in ['a', 1]", 1, 22, "each item of a list must be a string"),
        ("amount", 1, 1, "a rule must be a condition"),
        ("amount / 0 > 1", 1, 8, "division by zero"),
        ("abs(1, 2) > 0", 1, 1, "abs() takes one number"),
        ("", 1, 1, "the expression is empty"),
    ],
)
def test_refusals_carry_line_column_and_reason(expression: str, line: int, column: int, reason: str) -> None:
    error = refusal(expression)
    assert (error.line, error.column) == (line, column), str(error)
    assert reason in error.reason
    assert str(error).startswith(f"line {line}, column {column}: ")


def test_bounds_on_text_nodes_and_depth() -> None:
    error = refusal("amount > 1 or " * 200 + "true")
    assert "characters, over the limit" in error.reason and error.column == MAX_TEXT_CHARS + 1
    many = " or ".join(["amount > 1"] * (MAX_NODES // 3 + 1))
    assert len(many) < MAX_TEXT_CHARS
    assert f"over {MAX_NODES}" in refusal(many).reason
    compile_expression(" or ".join(["amount > 1"] * (MAX_NODES // 3 - 1)), LISTS)  # just under: fine
    assert f"deeper than {MAX_DEPTH}" in refusal("-" * (MAX_DEPTH + 5) + "amount > 1").reason
    assert f"deeper than {MAX_DEPTH}" in refusal("not " * (MAX_DEPTH + 5) + "true").reason
    assert holds("(" * 60 + "amount == 0" + ")" * 60)  # parentheses add no depth


def test_division_by_zero_at_run_time_errors_the_rule_instead_of_matching() -> None:
    rs = RuleSet.of([Rule("ratio", "amount / customer_avg_amount_30day > 3", BLOCK), Rule("any", "amount > 0", REVIEW),
                     Rule("s-ratio", "amount / customer_avg_amount_30day > 3", SCORE, score=0.6),
                     Rule("s-any", "amount > 0", SCORE, score=0.1),
                     Rule("w-ratio", "amount / customer_avg_amount_30day > 3", BLOCK, state=SHADOW)])  # fmt: skip
    d = decide(rs, features(amount=10.0), fields(amount=10.0), 0.1, 0.5, {})
    assert (d.decision, d.matched, d.errored) == (REVIEW, ("any", "s-any"), ("ratio", "s-ratio", "w-ratio"))
    assert d.probability_after_score == pytest.approx(0.2) and d.shadow_matched == ()
    d = decide(rs, features(amount=10.0, customer_avg_amount_30day=2.0), fields(amount=10.0), 0.1, 0.5, {})
    assert (d.decision, d.matched, d.errored) == (BLOCK, ("ratio", "any", "s-any", "s-ratio"), ())
    assert d.shadow_matched == ("w-ratio",) and d.probability_after_score == pytest.approx(0.8)


# ---- rules and decide -----------------------------------------------------------------------------------------


def test_rule_of_refuses_each_bad_field_by_name() -> None:
    good = {"id": "velocity", "expression": "customer_nb_tx_1hour > 5", "action": "review"}
    assert rule_of(good) == Rule("velocity", "customer_nb_tx_1hour > 5", REVIEW)
    for bad, field in [
        ({**good, "id": "has space"}, "id"),
        ({**good, "action": "deny"}, "action"),
        ({**good, "state": "on"}, "state"),
        ({**good, "priority": 1.5}, "priority"),
        ({**good, "score": 0.2}, "score"),  # only score rules have one
        ({**good, "action": "score"}, "score"),  # and they need one
        ({**good, "action": "score", "score": 3}, "score"),
        ({**good, "colour": "red"}, "colour"),
        ({**good, "expression": "customer_nb_tx_1hour >> 5"}, "expression"),
    ]:
        with pytest.raises(RuleRefused) as caught:
            rule_of(bad)
        assert caught.value.field == field, caught.value
    with pytest.raises(RuleRefused) as caught:
        rule_of({**good, "expression": "customer_nb_tx_1hour > 5 and\n terminal_id in vips"})
    assert (caught.value.line, caught.value.column) == (2, 17)
    assert str(caught.value) == "rule 'velocity': expression line 2, column 17: unknown list 'vips' (lists: " \
        "allowed_customers, allowed_terminals, blocked_customers, blocked_terminals)"  # fmt: skip


RULES = [
    Rule("vip", "customer_id in allowed_customers", ALLOW),
    Rule("big", "amount > 1000", BLOCK, priority=1),
    Rule("bigger", "amount > 5000", BLOCK, priority=5),
    Rule("velocity", "customer_nb_tx_1hour > 5", REVIEW),
    Rule("night", "is_night == 1", SCORE, score=0.3),
    Rule("trusted", "terminal_id == 't-1'", SCORE, score=-0.2),
    Rule("watch", "amount > 100", BLOCK, state=SHADOW),
    Rule("old", "amount > 0", BLOCK, state=DISABLED),
]


def decision_of(x: dict[str, float], t: dict[str, Any], p: float = 0.1, lists: Any = None, **kw: Any) -> Any:
    rs = RuleSet.of(RULES, version=3)
    return decide(rs, x, t, p, 0.5, lists or {}, **kw)


def test_precedence_allow_then_block_then_review_then_score_and_threshold() -> None:
    vip = {"allowed_customers": frozenset({"c-1"})}
    d = decision_of(features(amount=9000.0, customer_nb_tx_1hour=9.0), fields(amount=9000.0), 0.99, vip)
    assert (d.decision, d.decided_by) == (ALLOW, "vip")
    assert d.matched == ("vip", "bigger", "big", "velocity", "trusted")  # by action, then priority; score last
    assert d.rule_set_version == 3
    d = decision_of(features(amount=9000.0, customer_nb_tx_1hour=9.0), fields(amount=9000.0))
    assert (d.decision, d.decided_by) == (BLOCK, "bigger")
    d = decision_of(features(amount=50.0, customer_nb_tx_1hour=9.0), fields(amount=50.0, terminal_id="t-2"))
    assert (d.decision, d.decided_by, d.matched) == (REVIEW, "velocity", ("velocity",))
    # no deciding rule: the model's threshold, on the probability the score rules moved
    d = decision_of(features(amount=50.0, is_night=1.0), fields(amount=50.0, terminal_id="t-2"), 0.25)
    assert (d.decision, d.decided_by, round(d.probability_after_score, 6)) == (BLOCK, "threshold", 0.55)
    d = decision_of(features(amount=50.0, is_night=1.0), fields(amount=50.0), 0.25)  # night +0.3, trusted -0.2
    assert (d.decision, d.decided_by, round(d.probability_after_score, 6)) == (ALLOW, "model", 0.35)
    assert d.matched == ("night", "trusted")
    d = decision_of(features(amount=50.0), fields(amount=50.0), 0.1)  # trusted takes 0.2 off 0.1: clipped at 0
    assert d.probability_after_score == 0.0


def test_a_review_rule_never_softens_the_models_block() -> None:
    x, t = features(amount=50.0, customer_nb_tx_1hour=9.0), fields(amount=50.0, terminal_id="t-2")
    d = decision_of(x, t, 0.7)
    assert (d.decision, d.decided_by, d.matched) == (BLOCK, "threshold", ("velocity",))
    d = decision_of(x, t, 0.2, review_cost=1.0)  # the review rule decides before the expected loss would
    assert (d.decision, d.decided_by) == (REVIEW, "velocity")


def test_shadow_rules_are_recorded_and_never_decide() -> None:
    with_shadow = decision_of(features(amount=500.0), fields(amount=500.0, terminal_id="t-2"))
    assert with_shadow.shadow_matched == ("watch",) and with_shadow.matched == ()
    assert (with_shadow.decision, with_shadow.decided_by) == (ALLOW, "model")
    without = decide(RuleSet.of([r for r in RULES if r.id != "watch"]), features(amount=500.0),
                     fields(amount=500.0, terminal_id="t-2"), 0.1, 0.5, {})  # fmt: skip
    assert without.decision == with_shadow.decision and without.probability_after_score == 0.1
    assert "old" not in with_shadow.matched + with_shadow.shadow_matched  # disabled: not even evaluated


def test_expected_loss_threshold_reviews_large_amounts_at_a_low_probability() -> None:
    t = fields(terminal_id="t-2")
    small = decision_of(features(amount=20.0), {**t, "amount": 20.0}, 0.2, review_cost=25.0)
    large = decision_of(features(amount=900.0), {**t, "amount": 900.0}, 0.2, review_cost=25.0)
    assert (small.decision, large.decision, large.decided_by) == (ALLOW, REVIEW, "expected_loss")
    assert decision_of(features(amount=900.0), {**t, "amount": 900.0}, 0.2).decision == ALLOW  # off by default
    assert decision_of(features(amount=900.0), {**t, "amount": 900.0}, 0.6, review_cost=25.0).decision == BLOCK


def test_a_rule_set_is_bounded_and_a_rule_that_no_longer_compiles_is_left_out() -> None:
    with pytest.raises(ValueError, match="over the limit"):
        RuleSet.of([Rule(f"r{i}", "amount > 1", REVIEW) for i in range(MAX_RULES + 1)])
    rs = RuleSet.of([Rule("gone", "customer_nb_tx_2hour > 1", REVIEW), Rule("ok", "amount > 1", REVIEW)])
    assert [r.id for r in rs.rules] == ["ok"] and rs.refused[0][0] == "gone"


# ---- the topics' folds ----------------------------------------------------------------------------------------

STAMP = {"by": "cli:ana", "reason": "test", "timestamp": "2026-01-01T00:00:00.000Z"}


def test_fold_keeps_the_newest_event_per_rule_and_versions_by_offset() -> None:
    velocity = Rule("velocity", "customer_nb_tx_1hour > 5", REVIEW)
    records = [
        (0, b"velocity", dumps(rule_event(velocity, "added", **STAMP))),
        (1, b"big", dumps(rule_event(Rule("big", "amount > 1000", BLOCK), "added", **STAMP))),
        (
            2,
            b"velocity",
            dumps(rule_event(Rule("velocity", "customer_nb_tx_1hour > 5", REVIEW, state=SHADOW), "shadowed", **STAMP)),
        ),  # fmt: skip
        (3, b"junk", b"not json"),
        (5, b"typo", dumps(rule_event(Rule("typo", "amout > 1", BLOCK), "added", **STAMP))),  # written by hand
    ]
    rule_set, refused = fold_rules(records)
    assert rule_set.version == 6
    assert {r.id: r.state for r in rule_set.rules} == {"velocity": SHADOW, "big": "active"}
    assert [rule_id for rule_id, _ in refused] == ["junk", "typo"]
    assert "unknown name 'amout'" in dict(refused)["typo"]
    again, _ = fold_rules([*records[:2], (2, b"velocity", None)])  # a tombstone removes the rule
    assert [r.id for r in again.rules] == ["big"]
    assert [e["change"] for e in history(records)] == ["added", "added", "shadowed", "added"]


def test_lists_fold_and_bounds() -> None:
    lists, version = fold_lists(
        [
            (0, b"blocked_customers", dumps(list_event("blocked_customers", ["c-1", "c-2"], **STAMP))),  # fmt: skip
            (1, b"vip_customers", dumps(list_event("vip_customers", ["c-9"], **STAMP))),
        ]
    )
    assert version == 2 and lists["blocked_customers"] == {"c-1", "c-2"} and lists["allowed_terminals"] == set()
    rule_set, refused = fold_rules(
        [(0, b"vip", dumps(rule_event(Rule("vip", "customer_id in vip_customers", ALLOW), "added", **STAMP)))],
        tuple(lists),
    )
    assert [r.id for r in rule_set.rules] == ["vip"] and refused == []
    with pytest.raises(ValueError, match="list name"):
        list_event("Bad Name", [], **STAMP)
    with pytest.raises(ValueError, match="1 to 128 characters"):
        list_event("ok", ["x" * 129], **STAMP)


def test_the_rules_package_is_pure() -> None:
    """``app.rules`` loads neither Kafka nor Faust: the scorer calls it per transaction, a test counts with it."""
    import subprocess
    import sys
    from pathlib import Path

    loaded = "('aiokafka', 'faust', 'mode', 'app.kafka', 'app.worker')"
    code = ("import sys\nimport app.rules.language, app.rules.ruleset, app.rules.events, app.rules.backtest\n"
            f"print(sorted(m for m in {loaded} if m in sys.modules))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"


def test_the_log_folds_incrementally_as_a_follower_reads() -> None:
    log = RuleLog()
    log.apply_rules([(0, b"vip", dumps(rule_event(Rule("vip", "customer_id in vips", ALLOW), "added", **STAMP)))])
    first, refused = log.current()
    assert first.rules == () and refused[0][0] == "vip"  # the list does not exist yet
    log.apply_lists([(0, b"vips", dumps(list_event("vips", ["c-1"], **STAMP)))])
    second, refused = log.current()
    assert [r.id for r in second.rules] == ["vip"] and refused == [] and log.current()[0] is second  # cached
    d = decide(second, features(), fields(), 0.9, 0.5, log.lists)
    assert (d.decision, d.rule_set_version) == (ALLOW, 1)
    log.apply_lists([(1, b"blocked_customers", None)])  # a default list's tombstone empties it, never removes it
    assert log.lists["blocked_customers"] == frozenset() and log.lists_version == 2


def test_guarded_evaluation_equals_each_rule_evaluated_alone() -> None:
    """The rule set skips rules whose guard fails (a bisection per name and operator); it must match exactly the
    rules that match when each is evaluated alone, in the same order, NaN and edge values included."""
    import math
    import random

    rng = random.Random(3)
    shapes = ["amount > {c}", "amount >= {c} and is_night == 1", "{c} < amount", "amount < {c}",
              "customer_nb_tx_1hour <= {k} and amount > {c}", "fraud_probability >= 0.{k}", "amount <= {c}",
              "not amount > {c}", "amount > {c} or customer_nb_tx_1hour > {k}", "customer_id in blocked_customers",
              "amount > {c} and amount / customer_avg_amount_30day > 2"]  # fmt: skip
    for _ in range(30):
        rules = []
        for i in range(rng.randint(1, 40)):
            expression = rng.choice(shapes).format(c=rng.choice([10, 50, 100, 100, 250]), k=rng.randint(1, 9))
            action = rng.choice([ALLOW, BLOCK, REVIEW, SCORE])
            state = rng.choice(["active", "active", SHADOW])
            rules.append(Rule(f"r{i}", expression, action, score=0.1 if action == SCORE else 0.0,
                              priority=rng.randint(0, 3), state=state))  # fmt: skip
        rule_set = RuleSet.of(rules)
        alone = [(r, compile_expression(r.expression, rule_set.lists)) for r in rule_set.rules]
        for _ in range(40):
            amount = rng.choice([0.0, 10.0, 50.0, 99.99, 100.0, 100.01, 250.0, 1e9, math.nan, -1.0])
            x = features(amount=amount, is_night=float(rng.random() < 0.5), customer_nb_tx_1hour=rng.randint(0, 9),
                         customer_avg_amount_30day=rng.choice([0.0, 10.0]))  # fmt: skip
            t = fields(fraud_probability=rng.random(), customer_id=rng.choice(["c-1", "c-2"]))
            lists = {"blocked_customers": frozenset({"c-1"})}
            expected, errored = [], []
            for rule, test in alone:
                try:
                    if test(x, t, lists):
                        expected.append(rule)
                except ZeroDivisionError:
                    errored.append(rule.id)
            m = rule_set.evaluate(x, t, lists)
            active = [r.id for r in expected if r.state == "active"]
            scores = [r for r in active if rule_set.get(r).action == SCORE]  # type: ignore[union-attr]
            assert m.matched == tuple([r for r in active if r not in scores] + scores)
            assert m.shadow_matched == tuple(r.id for r in expected if r.state == SHADOW)
            assert sorted(m.errored) == sorted(errored)


def test_the_readme_rules_compile_and_its_refusals_read_as_shown() -> None:
    """The examples an analyst copies from the README's Rules section are valid rules, and the refusals it shows
    are the ones the code gives."""
    import json
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## Rules\n") : readme.index("## How it works")]
    examples = section[section.index("```json\n") + 8 :]
    examples = examples[: examples.index("```")]
    decoder, position, rules = json.JSONDecoder(), 0, []
    while examples[position:].strip():
        obj, end = decoder.raw_decode(examples, position + len(examples[position:]) - len(examples[position:].lstrip()))
        rules.append(rule_of(obj))
        position = end
    assert len(rules) == 8
    RuleSet.of(rules)  # together too
    for line in section.splitlines():
        if line.startswith("error: rule "):
            rule_id = line.split("'")[1]
            expression = section.split(f"--id {rule_id} ")[1].split("--expression '")[1].split("'")[0]
            with pytest.raises(RuleRefused) as caught:
                rule_of({"id": rule_id, "expression": expression, "action": "block"})
            assert line == f"error: {caught.value}"


# ---- precedence against Python's own, on random expressions ------------------------------------------------------

VALUES = {"amount": 3.0, "customer_nb_tx_1hour": 2.0, "is_night": 0.0, "customer_avg_amount_30day": 0.5}
numbers = st.recursive(
    st.sampled_from(["0", "1", "2", "3", "0.5", *VALUES]),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/"]), inner).map(" ".join),
        inner.map(lambda a: f"- {a}"),
        inner.map(lambda a: f"({a})"),
        inner.map(lambda a: f"abs({a})"),
        st.tuples(inner, inner).map(lambda ab: f"max({ab[0]}, {ab[1]})"),
    ),
    max_leaves=6,
)
conditions = st.recursive(
    st.one_of(
        st.tuples(numbers, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), numbers).map(" ".join),
        st.sampled_from(["true", "false"]),
    ),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(" ".join),
        inner.map(lambda a: f"not {a}"),
        inner.map(lambda a: f"({a})"),
    ),
    max_leaves=5,
)


@settings(max_examples=400, deadline=None)
@given(conditions)
def test_random_expressions_read_as_python_reads_them(expression: str) -> None:
    """Our operators, precedence and associativity are Python's (the same words and symbols): any expression of
    them evaluates as Python evaluates it, through the constant folder and the closures alike."""
    python = expression.replace("true", "True").replace("false", "False")
    try:
        expected: object = bool(eval(python, {"abs": abs, "max": max}, dict(VALUES)))  # noqa: S307 - the reference
    except ZeroDivisionError:
        expected = ZeroDivisionError
    try:
        test = compile_expression(expression, LISTS)
    except RuleSyntaxError as exc:
        assert exc.reason == "division by zero", (expression, exc)  # folded constants: refused before any run
        return
    try:
        got: object = test(features(**VALUES), fields(), {})
    except ZeroDivisionError:
        got = ZeroDivisionError
    assert got == expected, expression


# ---- rules that fail at run time ------------------------------------------------------------------------------


def test_a_failing_rule_is_counted_every_time_and_logged_once_per_rule_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    counted: list[tuple[str, int]] = []
    errors = RuleErrors(60.0, count=lambda rule_id, n: counted.append((rule_id, n)), clock=lambda: now[0])
    rs = RuleSet.of([Rule("ratio", "amount / customer_avg_amount_30day > 3", BLOCK)])
    with caplog.at_level("WARNING", logger="app.rules.errors"):
        assert errors.record(("ratio",), "tx-1", rs)
        for i in range(2, 50):  # the same rule within the interval: counted, not logged
            assert not errors.record(("ratio",), f"tx-{i}", rs)
        assert errors.record(("other",), "tx-50")  # another rule has its own interval
        now[0] += 59.0
        assert not errors.record(("ratio",), "tx-51", rs)
        now[0] += 1.0
        assert errors.record(("ratio",), "tx-52", rs)  # the next interval: one line for what came since
    assert counted == [("ratio", 1)] * 49 + [("other", 1)] + [("ratio", 1)] * 2
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0].startswith("rule ratio could not be evaluated on tx tx-1 (1 failures")
    assert "does not match" in lines[0] and "amount / customer_avg_amount_30day > 3" in lines[0]
    assert lines[1].startswith("rule other could not be evaluated on tx tx-50 (1 failures")
    assert lines[1].endswith("expression: ?")
    assert lines[2].startswith("rule ratio could not be evaluated on tx tx-52 (50 failures")


def test_what_a_failing_rule_keeps_is_bounded_by_the_rule_cap() -> None:
    now = [0.0]
    errors = RuleErrors(60.0, clock=lambda: now[0])
    for i in range(3 * MAX_RULES):
        now[0] += 1.0  # rules failing one after the other, each logged once
        errors.record((f"r{i}",), "tx")
    assert len(errors._logged_at) <= MAX_RULES and len(errors._since) == len(errors._logged_at)


def test_the_decision_path_counts_a_failing_rule_in_metrics_and_decides_without_it() -> None:
    from app import metrics
    from app.decisions import assess
    from app.learning.model import FraudModel
    from app.records import parse_transaction
    from app.rules.ruleset import LiveRules
    from tests.cases import transaction

    rule_id = "ratio-of-a-new-customer"
    rs = RuleSet.of([Rule(rule_id, "amount / customer_avg_amount_30day > 3", BLOCK)], version=3)
    before = metrics.counts(metrics.RULE_ERRORS).get((rule_id,), 0.0)
    tx = parse_transaction(dumps(transaction(1)), 100_000, 1e9)
    x = features(amount=tx.amount)  # a customer without history: a mean of 0
    for _ in range(3):
        prediction = assess.score_transaction(tx, dict(x), FraudModel(), threshold=1.0, received_at_s=0.0,
                                              rules=LiveRules(rs))  # fmt: skip
        assert (prediction.decision, prediction.rules) == ("allow", [])  # not matched: the rule does not block
    assert metrics.counts(metrics.RULE_ERRORS)[(rule_id,)] == before + 3
