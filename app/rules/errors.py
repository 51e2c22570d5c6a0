"""Rules whose evaluation failed in the decision path: counted per rule, logged once per rule per interval (pure).

A rule that raises on a transaction (a division by zero, ``x / customer_avg_amount_30day`` for a new customer; a
feature a request lacks) does not match it (:func:`app.rules.ruleset.decide` names it in ``errored``); the decision
goes on without it. :class:`RuleErrors` makes that visible without flooding the log: every failure is counted
(``count``: the worker's ``fraud_rule_errors_total{rule}``), and each rule gets one warning at its first failure and
then at most one per ``interval_s``, with how many failures it stands for. The rule ids it keeps are bounded like
the metric's labels: by the rule cap of a set (:data:`app.rules.ruleset.MAX_RULES`), rules no longer failing being
forgotten after an interval.

>>> now = [0.0]
>>> counted = []
>>> errors = RuleErrors(60.0, count=lambda rule_id, n: counted.append((rule_id, n)), clock=lambda: now[0])
>>> errors.record(("ratio",), "tx-1"), errors.record(("ratio",), "tx-2")  # logs once, counts both
(True, False)
>>> now[0] = 61.0
>>> errors.record(("ratio",), "tx-3")  # the next interval: one line for the failures since
True
>>> counted
[('ratio', 1), ('ratio', 1), ('ratio', 1)]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection

from app.rules.ruleset import MAX_RULES, RuleSet

log = logging.getLogger(__name__)

ERROR_LOG_INTERVAL_S = 60.0


class RuleErrors:
    def __init__(
        self,
        interval_s: float = ERROR_LOG_INTERVAL_S,
        *,
        count: Callable[[str, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.count = count
        self.clock = clock
        self._logged_at: dict[str, float] = {}  # rule id -> when its last warning was logged
        self._since: dict[str, int] = {}  # rule id -> failures since that warning

    def record(self, rule_ids: Collection[str], tx_id: str, rule_set: RuleSet | None = None) -> bool:
        """Count one transaction's failed rules; True when a warning was logged. ``rule_set``: the set decided
        with, to show the rule's expression."""
        now = self.clock()
        logged = False
        for rule_id in rule_ids:
            if self.count is not None:
                self.count(rule_id, 1)
            failures = self._since.get(rule_id, 0) + 1
            at = self._logged_at.get(rule_id)
            if at is not None and now - at < self.interval_s:
                self._since[rule_id] = failures
                continue
            if len(self._logged_at) >= MAX_RULES:
                self._forget(now)
            rule = rule_set.get(rule_id) if rule_set is not None else None
            log.warning("rule %s could not be evaluated on tx %s (%d failures since its last warning, next one in "
                        "%.0f s at the earliest): it does not match where it fails; expression: %s", rule_id, tx_id,
                        failures, self.interval_s, rule.expression if rule else "?")  # fmt: skip
            self._logged_at[rule_id] = now
            self._since[rule_id] = 0
            logged = True
        return logged

    def _forget(self, now: float) -> None:
        """Drop the rules whose last warning is an interval old (their next failure logs at once anyway)."""
        for rule_id, at in list(self._logged_at.items()):
            if now - at >= self.interval_s:
                del self._logged_at[rule_id]
                self._since.pop(rule_id, None)
