"""The rule language: one expression parsed by a lark LALR grammar, checked, and compiled into Python closures.

An expression reads what the decision path knows about one transaction (:data:`NAMES`): every feature of the
prediction (:data:`app.features.spec.FEATURE_NAMES`, numbers), the model's ``fraud_probability``, the transaction's
``customer_id``, ``terminal_id`` and ``tx_id`` (strings), and named lists (``customer_id in blocked_customers``).
Operators, loosest first: ``or``; ``and``; ``not``; comparisons ``< <= > >= == !=`` and ``in`` / ``not in`` (a
named list or ``["a", "b"]``), never chained; ``+ -``; ``* /``; unary ``-``. Functions: ``abs(x)``, ``min(a, b,
...)``, ``max(a, b, ...)``. Literals: numbers, ``"strings"`` or ``'strings'`` (no escapes), ``true``, ``false``.

Types are checked before anything runs: a rule is a boolean; ``and``/``or``/``not`` take booleans, arithmetic
numbers, ``in`` a string; ``==``/``!=`` compare two values of one type. A 0/1 feature (``is_night``) is a number:
``is_night == 1``. Any refusal raises :class:`RuleSyntaxError` with the line, column and reason; nothing is ever
``eval``-ed. A division by zero at run time raises :class:`ZeroDivisionError` from the compiled test (the caller
counts the rule as errored, not matched).

>>> test = compile_expression("customer_nb_tx_1hour > 5 and not terminal_id in blocked_terminals",
...                           lists=("blocked_terminals",))
>>> x = {"customer_nb_tx_1hour": 6.0}
>>> test(x, {"terminal_id": "t-1"}, {"blocked_terminals": frozenset({"t-2"})})
True
>>> compile_expression("amount > 100 and", lists=())
Traceback (most recent call last):
...
app.rules.language.RuleSyntaxError: line 1, column 17: the expression ends too early
>>> compile_expression("amout > 100", lists=())
Traceback (most recent call last):
...
app.rules.language.RuleSyntaxError: line 1, column 1: unknown name 'amout' (did you mean 'amount'?)
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from app.features.spec import FEATURE_NAMES

MAX_TEXT_CHARS = 2000
MAX_NODES = 200  # operators, names and literals together
MAX_DEPTH = 24  # nesting of the parsed tree (parentheses, not, unary minus, calls)
MAX_LITERAL_LIST = 1000  # items of an inline ["a", "b"]

NUMBER, BOOL, STRING = "number", "boolean", "string"
FEATURES, FIELDS = "x", "t"  # where a name is read: the features dict, or the transaction's fields

#: name -> (where it is read, its type). Features come from the prediction's ``features``; the others from the
#: transaction's fields, with ``fraud_probability`` the model's own score (before any ``score`` rule).
NAMES: dict[str, tuple[str, str]] = {
    **{name: (FEATURES, NUMBER) for name in FEATURE_NAMES},
    "fraud_probability": (FIELDS, NUMBER),
    "customer_id": (FIELDS, STRING),
    "terminal_id": (FIELDS, STRING),
    "tx_id": (FIELDS, STRING),
}
FUNCTIONS = ("abs", "min", "max")

#: A compiled test: (features, transaction fields with ``fraud_probability``, named lists) -> value.
Test = Callable[[Mapping[str, float], Mapping[str, Any], Mapping[str, Collection[str]]], Any]

GRAMMAR = r"""
?start: disjunction
?disjunction: conjunction ("or" conjunction)*
?conjunction: negation ("and" negation)*
?negation: NOT negation -> not_
         | comparison
?comparison: sum
           | sum COMPARE sum -> compare
           | sum "in" collection -> in_
           | sum NOT "in" collection -> not_in
?collection: NAME -> list_name
           | "[" [literal ("," literal)*] "]" -> list_literal
?sum: product (ADD product)*
?product: unary (MUL unary)*
?unary: MINUS unary -> minus
      | atom
?atom: literal
     | NAME -> name
     | NAME "(" disjunction ("," disjunction)* ")" -> call
     | "(" disjunction ")"
?literal: NUMBER -> number
        | STRING -> string
        | TRUE -> true
        | FALSE -> false

NOT: "not"
TRUE: "true"
FALSE: "false"
COMPARE: "<=" | ">=" | "==" | "!=" | "<" | ">"
ADD: "+" | "-"
MINUS: "-"
MUL: "*" | "/"
NAME: /[A-Za-z_][A-Za-z0-9_]*/
NUMBER: /(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?/
STRING: /"[^"\\\n]*"/ | /'[^'\\\n]*'/
COMMENT: /#[^\n]*/

%import common.WS
%ignore WS
%ignore COMMENT
"""

_PARSER = Lark(GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False)
_TERMINAL_TEXT = {"RPAR": "')'", "LPAR": "'('", "RSQB": "']'", "LSQB": "'['", "COMMA": "','", "NAME": "a name",
                  "NUMBER": "a number", "STRING": "a string", "COMPARE": "a comparison", "ADD": "'+' or '-'",
                  "MUL": "'*' or '/'", "MINUS": "'-'", "NOT": "'not'", "TRUE": "'true'", "FALSE": "'false'",
                  "IN": "'in'", "AND": "'and'", "OR": "'or'", "$END": "the end"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Leaf:
    """``name op constant``: where the name is read, the name, the operator's text and the constant."""

    where: str
    name: str
    op: str
    constant: Any


#: A necessary condition of a rule, ``name op constant`` with an ordering op on a number: a rule set evaluates a
#: rule only when its guard holds, found for all rules of one name at once by bisection (:mod:`app.rules.ruleset`).
Guard = Leaf
ORDERING = ("<", "<=", ">", ">=")


class RuleSyntaxError(ValueError):
    """A rule refused: ``line`` and ``column`` (1-based) in its expression and the ``reason``."""

    def __init__(self, reason: str, line: int, column: int) -> None:
        super().__init__(f"line {line}, column {column}: {reason}")
        self.reason = reason
        self.line = line
        self.column = column


@dataclass(frozen=True, slots=True)
class _Node:
    """A checked sub-expression: its type, and either a constant or a compiled test."""

    type: str
    test: Test | None = None
    constant: Any = None
    name: str | None = None  # a bare name (the comparisons read it directly)
    leaf: Leaf | None = None  # name OP constant
    guard: Guard | None = None  # a leaf every match passes (the node itself, or one operand of its 'and')

    @property
    def is_constant(self) -> bool:
        return self.test is None


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of character ``index``."""
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _expected(expected: Collection[str]) -> str:
    names = sorted({_TERMINAL_TEXT.get(e, e.lower()) for e in expected})
    return ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")


def parse(text: str) -> Tree[Token]:
    """The expression's parse tree; :class:`RuleSyntaxError` for text over the size limit or a syntax error."""
    if len(text) > MAX_TEXT_CHARS:
        raise RuleSyntaxError(f"the expression has {len(text)} characters, over the limit of {MAX_TEXT_CHARS}",
                              *_position(text, MAX_TEXT_CHARS))  # fmt: skip
    if not text.strip():
        raise RuleSyntaxError("the expression is empty", 1, 1)
    try:
        return _PARSER.parse(text)
    except UnexpectedEOF:
        raise RuleSyntaxError("the expression ends too early", *_position(text, len(text.rstrip()))) from None
    except UnexpectedCharacters as exc:
        char = text[exc.pos_in_stream] if exc.pos_in_stream is not None else "?"
        raise RuleSyntaxError(f"unexpected character {char!r}", exc.line, exc.column) from None
    except UnexpectedToken as exc:
        if exc.token.type == "$END":
            raise RuleSyntaxError("the expression ends too early",
                                  *_position(text, len(text.rstrip()))) from None  # fmt: skip
        reason = f"unexpected {str(exc.token)!r}, expected {_expected(exc.expected)}"
        raise RuleSyntaxError(reason, exc.line, exc.column) from None
    except UnexpectedInput as exc:  # any other refusal of the parser
        raise RuleSyntaxError(str(exc).splitlines()[0], exc.line, exc.column) from None


def _where(item: Tree[Token] | Token) -> tuple[int, int]:
    if isinstance(item, Token):
        return item.line or 1, item.column or 1
    return getattr(item.meta, "line", 1), getattr(item.meta, "column", 1)


def _check_size(tree: Tree[Token]) -> None:
    """Bounds on nodes and depth, walked without recursion (the compiler recurses only once they hold)."""
    nodes = 0
    stack: list[tuple[Tree[Token] | Token, int]] = [(tree, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, Tree):
            continue  # a token is part of its node (a name, a literal, an operator)
        nodes += 1
        if nodes > MAX_NODES:
            raise RuleSyntaxError(f"the expression has over {MAX_NODES} operators, names and literals",
                                  *_where(item))  # fmt: skip
        if depth > MAX_DEPTH:
            raise RuleSyntaxError(f"the expression nests deeper than {MAX_DEPTH} levels", *_where(item))
        stack.extend((child, depth + 1) for child in item.children if child is not None)


def compile_expression(text: str, lists: Collection[str]) -> Test:
    """A boolean test of one transaction, compiled from ``text``; ``lists`` are the named lists it may use.

    :class:`RuleSyntaxError` when the text does not parse, names an unknown feature, field, function or list, has
    the wrong types, or passes the size bounds."""
    return compile_rule(text, lists)[0]


def compile_rule(text: str, lists: Collection[str]) -> tuple[Test, Guard | None]:
    """:func:`compile_expression`, with the expression's guard when it has one: a comparison of a name with a
    number that every match passes (``amount > 500`` in ``amount > 500 and is_night == 1``).

    >>> compile_rule("is_night == 1 and 500 < amount", ())[1]
    Leaf(where='x', name='amount', op='>', constant=500.0)
    """
    tree = parse(text)
    _check_size(tree)
    node = _Compiler(frozenset(lists)).node(tree)
    if node.type != BOOL:
        raise RuleSyntaxError(f"a rule must be a condition (true or false), this is a {node.type}", *_where(tree))
    if node.is_constant:
        value = bool(node.constant)
        return (lambda x, t, lists: value), None
    assert node.test is not None
    return node.test, node.guard


def names_in(text: str) -> tuple[str, ...]:
    """The feature and field names an expression reads, sorted (for the rule listing)."""
    return tuple(sorted({str(tok) for tok in parse(text).scan_values(lambda v: isinstance(v, Token))
                         if tok.type == "NAME" and str(tok) in NAMES}))  # fmt: skip


# ---- the compiler: one closure per operator, specialised where rules spend their time --------------------------

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}  # fmt: skip
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
}  # fmt: skip


def _read(name: str) -> Test:
    where, _ = NAMES[name]
    if where == FEATURES:
        return lambda x, t, lists: x[name]
    return lambda x, t, lists: t[name]


# One closure per case, the operator and the place a name is read written inline: a rule evaluates them per
# transaction, and an ``operator`` call or a test of where to read would cost more than the comparison itself.
# ``lambda n, c: lambda x, t, lists: ...`` makes the closure of one case.

#: ``name OP c``, the name read from the features or the transaction's fields (the commonest shape of a leaf).
_NAME_CONSTANT: dict[tuple[str, str], Callable[[str, Any], Test]] = {
    (FEATURES, ">"): lambda n, c: lambda x, t, lists: x[n] > c,
    (FEATURES, ">="): lambda n, c: lambda x, t, lists: x[n] >= c,
    (FEATURES, "<"): lambda n, c: lambda x, t, lists: x[n] < c,
    (FEATURES, "<="): lambda n, c: lambda x, t, lists: x[n] <= c,
    (FEATURES, "=="): lambda n, c: lambda x, t, lists: x[n] == c,
    (FEATURES, "!="): lambda n, c: lambda x, t, lists: x[n] != c,
    (FIELDS, ">"): lambda n, c: lambda x, t, lists: t[n] > c,
    (FIELDS, ">="): lambda n, c: lambda x, t, lists: t[n] >= c,
    (FIELDS, "<"): lambda n, c: lambda x, t, lists: t[n] < c,
    (FIELDS, "<="): lambda n, c: lambda x, t, lists: t[n] <= c,
    (FIELDS, "=="): lambda n, c: lambda x, t, lists: t[n] == c,
    (FIELDS, "!="): lambda n, c: lambda x, t, lists: t[n] != c,
}

#: ``feature OP expression``: the feature read inline (``amount > 3 * customer_max_amount_7day + 100``).
_FEATURE_TEST: dict[str, Callable[[str, Test], Test]] = {
    ">": lambda n, b: lambda x, t, lists: x[n] > b(x, t, lists),
    ">=": lambda n, b: lambda x, t, lists: x[n] >= b(x, t, lists),
    "<": lambda n, b: lambda x, t, lists: x[n] < b(x, t, lists),
    "<=": lambda n, b: lambda x, t, lists: x[n] <= b(x, t, lists),
    "==": lambda n, b: lambda x, t, lists: x[n] == b(x, t, lists),
    "!=": lambda n, b: lambda x, t, lists: x[n] != b(x, t, lists),
}

#: ``feature op c`` (False) or ``c op feature`` (True).
_FEATURE_CONSTANT: dict[tuple[str, bool], Callable[[str, float], Test]] = {
    ("+", False): lambda n, c: lambda x, t, lists: x[n] + c,
    ("+", True): lambda n, c: lambda x, t, lists: x[n] + c,
    ("*", False): lambda n, c: lambda x, t, lists: x[n] * c,
    ("*", True): lambda n, c: lambda x, t, lists: x[n] * c,
    ("-", False): lambda n, c: lambda x, t, lists: x[n] - c,
    ("-", True): lambda n, c: lambda x, t, lists: c - x[n],
    ("/", False): lambda n, c: lambda x, t, lists: x[n] / c,
    ("/", True): lambda n, c: lambda x, t, lists: c / x[n],
}

#: ``a op c`` (False) or ``c op a`` (True), ``a`` any numeric test: no closure for the constant.
_TEST_CONSTANT: dict[tuple[str, bool], Callable[[Test, float], Test]] = {
    ("+", False): lambda a, c: lambda x, t, lists: a(x, t, lists) + c,
    ("+", True): lambda a, c: lambda x, t, lists: a(x, t, lists) + c,
    ("*", False): lambda a, c: lambda x, t, lists: a(x, t, lists) * c,
    ("*", True): lambda a, c: lambda x, t, lists: a(x, t, lists) * c,
    ("-", False): lambda a, c: lambda x, t, lists: a(x, t, lists) - c,
    ("-", True): lambda a, c: lambda x, t, lists: c - a(x, t, lists),
    ("/", False): lambda a, c: lambda x, t, lists: a(x, t, lists) / c,
    ("/", True): lambda a, c: lambda x, t, lists: c / a(x, t, lists),
}


def _leaf(op: str, name: str, c: Any) -> _Node:
    leaf = Leaf(NAMES[name][0], name, op, c)
    guard = leaf if op in ORDERING and isinstance(c, float) and c == c else None  # a number, not NaN
    return _Node(BOOL, test=_NAME_CONSTANT[(leaf.where, op)](name, c), leaf=leaf, guard=guard)


def _two_leaves(first: Leaf, second: Leaf, conjunction: bool) -> Test:
    """``a OP c and b OP d`` (or ``or``) in one closure, the comparisons by :mod:`operator` (C calls are cheaper
    than two more closures): the second commonest shape of a rule."""
    wa, a, fa, ca = first.where, first.name, _COMPARE[first.op], first.constant
    wb, b, fb, cb = second.where, second.name, _COMPARE[second.op], second.constant
    if wa == FEATURES and wb == FEATURES:
        if conjunction:
            return lambda x, t, lists: fa(x[a], ca) and fb(x[b], cb)
        return lambda x, t, lists: fa(x[a], ca) or fb(x[b], cb)
    da, db = (wa == FEATURES), (wb == FEATURES)
    if conjunction:
        return lambda x, t, lists: fa((x if da else t)[a], ca) and fb((x if db else t)[b], cb)
    return lambda x, t, lists: fa((x if da else t)[a], ca) or fb((x if db else t)[b], cb)


def _joined(tests: Sequence[Test], conjunction: bool) -> Test:
    """``a and b and ...`` (or ``or``), short-circuiting: two or three tests in one closure, more as nested ones."""
    if len(tests) > 3:
        return _joined([tests[0], tests[1], _joined(tests[2:], conjunction)], conjunction)
    if len(tests) == 2:
        a, b = tests
        if conjunction:
            return lambda x, t, lists: a(x, t, lists) and b(x, t, lists)
        return lambda x, t, lists: a(x, t, lists) or b(x, t, lists)
    a, b, c = tests
    if conjunction:
        return lambda x, t, lists: a(x, t, lists) and b(x, t, lists) and c(x, t, lists)
    return lambda x, t, lists: a(x, t, lists) or b(x, t, lists) or c(x, t, lists)


def _arithmetic(f: Callable[[Any, Any], Any], a: Test, b: Test) -> Test:
    return lambda x, t, lists: f(a(x, t, lists), b(x, t, lists))


_EMPTY: frozenset[str] = frozenset()


class _Compiler:
    def __init__(self, lists: frozenset[str]) -> None:
        self.lists = lists

    def node(self, tree: Tree[Token] | Token) -> _Node:
        if isinstance(tree, Token):  # a bare token only at the top (a lone number, name...)
            raise RuleSyntaxError(f"unexpected {str(tree)!r}", *_where(tree))
        handler = getattr(self, f"_{tree.data}", None)
        if handler is None:
            raise RuleSyntaxError(f"unsupported construct {tree.data!r}", *_where(tree))
        result: _Node = handler(tree)
        return result

    def _test(self, node: _Node) -> Test:
        if node.test is not None:
            return node.test
        value = node.constant
        return lambda x, t, lists: value

    def _expect(self, node: _Node, kind: str, where: Tree[Token] | Token, role: str) -> None:
        if node.type != kind:
            raise RuleSyntaxError(f"{role} must be a {kind}, not a {node.type}", *_where(where))

    # literals and names
    def _number(self, tree: Tree[Token]) -> _Node:
        return _Node(NUMBER, constant=float(str(tree.children[0])))

    def _string(self, tree: Tree[Token]) -> _Node:
        return _Node(STRING, constant=str(tree.children[0])[1:-1])

    def _true(self, tree: Tree[Token]) -> _Node:
        return _Node(BOOL, constant=True)

    def _false(self, tree: Tree[Token]) -> _Node:
        return _Node(BOOL, constant=False)

    def _name(self, tree: Tree[Token]) -> _Node:
        token = tree.children[0]
        name = str(token)
        if name not in NAMES:
            if name in self.lists:
                raise RuleSyntaxError(f"{name!r} is a list: write 'customer_id in {name}'", *_where(token))
            close = difflib.get_close_matches(name, NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RuleSyntaxError(f"unknown name {name!r}{hint}", *_where(token))
        return _Node(NAMES[name][1], test=_read(name), name=name)

    # boolean operators
    def _disjunction(self, tree: Tree[Token]) -> _Node:
        return self._junction(tree, "or")

    def _conjunction(self, tree: Tree[Token]) -> _Node:
        return self._junction(tree, "and")

    def _junction(self, tree: Tree[Token], word: str) -> _Node:
        nodes = []
        for child in tree.children:
            node = self.node(child)
            self._expect(node, BOOL, child, f"each side of '{word}'")
            nodes.append(node)
        if all(n.is_constant for n in nodes):
            values = [bool(n.constant) for n in nodes]
            return _Node(BOOL, constant=any(values) if word == "or" else all(values))
        # an 'and' matches only where each operand does: any operand's guard is its guard
        guard = next((n.guard for n in nodes if n.guard is not None), None) if word == "and" else None
        if len(nodes) == 2 and nodes[0].leaf is not None and nodes[1].leaf is not None:
            return _Node(BOOL, test=_two_leaves(nodes[0].leaf, nodes[1].leaf, word == "and"), guard=guard)
        tests = [self._test(n) for n in nodes]
        return _Node(BOOL, test=_joined(tests, word == "and"), guard=guard)

    def _not_(self, tree: Tree[Token]) -> _Node:
        node = self.node(tree.children[1])
        self._expect(node, BOOL, tree.children[1], "the operand of 'not'")
        if node.is_constant:
            return _Node(BOOL, constant=not node.constant)
        a = self._test(node)
        return _Node(BOOL, test=lambda x, t, lists: not a(x, t, lists))

    # comparisons
    def _compare(self, tree: Tree[Token]) -> _Node:
        left_tree, op_token, right_tree = tree.children
        op = str(op_token)
        left, right = self.node(left_tree), self.node(right_tree)
        if left.type != right.type:
            raise RuleSyntaxError(f"'{op}' compares a {left.type} with a {right.type}", *_where(op_token))
        if op not in ("==", "!=") and left.type != NUMBER:
            raise RuleSyntaxError(f"'{op}' compares numbers, not {left.type}s", *_where(op_token))
        if left.is_constant and right.is_constant:
            return _Node(BOOL, constant=_COMPARE[op](left.constant, right.constant))
        if left.name is not None and right.is_constant:
            return _leaf(op, left.name, right.constant)
        if right.name is not None and left.is_constant:
            return _leaf(_FLIPPED[op], right.name, left.constant)
        if left.name is not None and NAMES[left.name][0] == FEATURES:
            return _Node(BOOL, test=_FEATURE_TEST[op](left.name, self._test(right)))
        if right.name is not None and NAMES[right.name][0] == FEATURES:
            return _Node(BOOL, test=_FEATURE_TEST[_FLIPPED[op]](right.name, self._test(left)))
        a, b, f = self._test(left), self._test(right), _COMPARE[op]
        return _Node(BOOL, test=lambda x, t, lists: f(a(x, t, lists), b(x, t, lists)))

    def _in_(self, tree: Tree[Token]) -> _Node:
        return self._membership(tree.children[0], tree.children[-1], negated=False)  # type: ignore[arg-type]

    def _not_in(self, tree: Tree[Token]) -> _Node:
        return self._membership(tree.children[0], tree.children[-1], negated=True)  # type: ignore[arg-type]

    def _membership(self, item_tree: Tree[Token], collection: Tree[Token], negated: bool) -> _Node:
        item = self.node(item_tree)
        self._expect(item, STRING, item_tree, "what 'in' looks for")
        a = self._test(item)
        if collection.data == "list_name":
            token = collection.children[0]
            list_name = str(token)
            if list_name not in self.lists:
                known = ", ".join(sorted(self.lists)) or "none"
                raise RuleSyntaxError(f"unknown list {list_name!r} (lists: {known})", *_where(token))
            if item.name is not None and NAMES[item.name][0] == FIELDS:  # the common case: one closure
                name = item.name
                if negated:
                    return _Node(BOOL, test=lambda x, t, lists: t[name] not in lists.get(list_name, _EMPTY))
                return _Node(BOOL, test=lambda x, t, lists: t[name] in lists.get(list_name, _EMPTY))
            if negated:
                return _Node(BOOL, test=lambda x, t, lists: a(x, t, lists) not in lists.get(list_name, _EMPTY))
            return _Node(BOOL, test=lambda x, t, lists: a(x, t, lists) in lists.get(list_name, _EMPTY))
        items = [self.node(child) for child in collection.children if child is not None]
        if len(items) > MAX_LITERAL_LIST:
            raise RuleSyntaxError(f"a list literal holds at most {MAX_LITERAL_LIST} items", *_where(collection))
        for child, node in zip(collection.children, items, strict=True):
            self._expect(node, STRING, child, "each item of a list")
        values = frozenset(str(n.constant) for n in items)
        if negated:
            return _Node(BOOL, test=lambda x, t, lists: a(x, t, lists) not in values)
        return _Node(BOOL, test=lambda x, t, lists: a(x, t, lists) in values)

    # arithmetic
    def _sum(self, tree: Tree[Token]) -> _Node:
        return self._arithmetic(tree)

    def _product(self, tree: Tree[Token]) -> _Node:
        return self._arithmetic(tree)

    def _arithmetic(self, tree: Tree[Token]) -> _Node:
        """``a op b op c ...``, left to right."""
        children = tree.children
        result = self.node(children[0])
        self._expect(result, NUMBER, children[0], f"each side of '{children[1]}'")
        for i in range(1, len(children), 2):
            op_token, operand_tree = children[i], children[i + 1]
            op = str(op_token)
            operand = self.node(operand_tree)
            self._expect(operand, NUMBER, operand_tree, f"each side of '{op}'")
            f = _ARITHMETIC[op]
            if op == "/" and operand.is_constant and operand.constant == 0:
                raise RuleSyntaxError("division by zero", *_where(op_token))
            if result.is_constant and operand.is_constant:
                result = _Node(NUMBER, constant=f(result.constant, operand.constant))
                continue
            if operand.is_constant and result.name is not None and NAMES[result.name][0] == FEATURES:
                result = _Node(NUMBER, test=_FEATURE_CONSTANT[(op, False)](result.name, operand.constant))
            elif result.is_constant and operand.name is not None and NAMES[operand.name][0] == FEATURES:
                result = _Node(NUMBER, test=_FEATURE_CONSTANT[(op, True)](operand.name, result.constant))
            elif operand.is_constant:
                result = _Node(NUMBER, test=_TEST_CONSTANT[(op, False)](self._test(result), operand.constant))
            elif result.is_constant:
                result = _Node(NUMBER, test=_TEST_CONSTANT[(op, True)](self._test(operand), result.constant))
            else:
                result = _Node(NUMBER, test=_arithmetic(f, self._test(result), self._test(operand)))
        return result

    def _minus(self, tree: Tree[Token]) -> _Node:
        node = self.node(tree.children[1])
        self._expect(node, NUMBER, tree.children[1], "the operand of '-'")
        if node.is_constant:
            return _Node(NUMBER, constant=-node.constant)
        a = self._test(node)
        return _Node(NUMBER, test=lambda x, t, lists: -a(x, t, lists))

    def _call(self, tree: Tree[Token]) -> _Node:
        token, *argument_trees = tree.children
        function = str(token)
        if function not in FUNCTIONS:
            raise RuleSyntaxError(f"unknown function {function!r} (functions: {', '.join(FUNCTIONS)})",
                                  *_where(token))  # fmt: skip
        arguments = [self.node(child) for child in argument_trees]
        for child, node in zip(argument_trees, arguments, strict=True):
            self._expect(node, NUMBER, child, f"each argument of {function}()")
        if function == "abs" and len(arguments) != 1:
            raise RuleSyntaxError(f"abs() takes one number, got {len(arguments)}", *_where(token))
        if function in ("min", "max") and len(arguments) < 2:
            raise RuleSyntaxError(f"{function}() takes two numbers or more", *_where(token))
        f: Callable[..., float] = {"abs": abs, "min": min, "max": max}[function]  # type: ignore[assignment]
        if all(n.is_constant for n in arguments):
            return _Node(NUMBER, constant=f(*(n.constant for n in arguments)))
        tests = tuple(self._test(n) for n in arguments)
        if len(tests) == 1:
            (a,) = tests
            return _Node(NUMBER, test=lambda x, t, lists: f(a(x, t, lists)))
        return _Node(NUMBER, test=lambda x, t, lists: f(*[g(x, t, lists) for g in tests]))
