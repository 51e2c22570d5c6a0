#!/usr/bin/env python3
"""The cost of the analysts' rules per transaction: :func:`app.rules.ruleset.decide` with N active rules.

    python scripts/bench_rules.py               # 50 rules, the issue's target: at most 5 us per transaction
    python scripts/bench_rules.py --rules 0 10 50 100
    python scripts/bench_rules.py --scorer      # the whole decision path's CPU per transaction, 0 and 50 rules

The rules are a mix an analyst writes (velocity, amount against the customer's mean, lists, probability bands,
arithmetic), none of them matching most transactions, so every one is evaluated; the features are those of real
transactions (a random draw in the ranges the simulator produces). Reported: microseconds per ``decide`` call
(best and median of the repeats) and, apart, the cost of the rules alone (minus ``decide`` with no rules).

``--scorer``: :meth:`app.decisions.scorer.Scorer.process` on batches of the simulator's transactions (parsing,
both feature halves, the model, ``decide``, the prediction's JSON; no broker), with no rule set and with the rules,
so the rules' share of the decision path's CPU is measured where it is paid.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.features.spec import FEATURE_NAMES  # noqa: E402
from app.rules.ruleset import BLOCK, REVIEW, SCORE, Rule, RuleSet, decide  # noqa: E402

TEMPLATES = (
    ("customer_nb_tx_1hour > {k}", REVIEW),
    ("amount > {a} and customer_avg_amount_30day < {b}", BLOCK),
    ("amount_zscore_30day > {z} and terminal_new_for_customer_30day == 1", REVIEW),
    ("customer_id in blocked_customers", BLOCK),
    ("terminal_id in blocked_terminals and amount > {b}", BLOCK),
    ("fraud_probability > 0.{k} and amount > {a}", REVIEW),
    ("amount > 3 * customer_max_amount_7day + {b}", REVIEW),
    ("terminal_risk_7day_delay > 0.{k}", SCORE),
    ("is_night == 1 and customer_nb_tx_1day > {k}", SCORE),
    ("not customer_nb_tx_30day > 2 and amount > {a}", REVIEW),
)


def rules(n: int, rng: random.Random) -> list[Rule]:
    out = []
    for i in range(n):
        template, action = TEMPLATES[i % len(TEMPLATES)]
        expression = template.format(k=rng.randint(6, 9), a=rng.randint(2000, 9000), b=rng.randint(100, 900),
                                     z=rng.randint(4, 9))  # fmt: skip
        out.append(Rule(f"r{i}", expression, action, score=0.1 if action == SCORE else 0.0, priority=i % 3))
    return out


def transactions(n: int, rng: random.Random) -> list[tuple[dict[str, float], dict[str, str | float], float]]:
    out = []
    for i in range(n):
        x = {name: rng.uniform(0, 1) for name in FEATURE_NAMES}  # counts, risks, flags: mostly small
        x["amount"] = rng.uniform(1, 300)
        for name in ("customer_avg_amount_30day", "customer_max_amount_7day"):
            x[name] = rng.uniform(20, 300)
        x["customer_nb_tx_30day"] = float(rng.randint(0, 120))
        x["is_night"] = float(rng.random() < 0.2)
        x["terminal_new_for_customer_30day"] = float(rng.random() < 0.1)
        fields = {"customer_id": f"c-{i % 5000}", "terminal_id": f"t-{i % 10000}", "tx_id": f"tx-{i}",
                  "amount": x["amount"]}  # fmt: skip
        out.append((x, fields, rng.random() * 0.3))
    return out


def per_call_us(rule_set: RuleSet, txs: list, lists: dict, repeats: int) -> tuple[float, float]:  # type: ignore[type-arg]
    """(best, median) microseconds per call over the repeats: the best is the machine undisturbed."""
    timings = []
    for _ in range(repeats):
        started = time.process_time()  # CPU time: other processes on a shared machine do not lengthen it
        for x, fields, p in txs:
            decide(rule_set, x, fields, p, 0.5, lists)
        timings.append((time.process_time() - started) / len(txs) * 1e6)
    return min(timings), statistics.median(timings)


def scorer_us(rule_counts: list[int], n_tx: int, repeats: int) -> dict[int, list[float]]:
    """CPU microseconds per transaction of ``Scorer.process`` in batches of 500, for each rule count: the counts
    alternate within each repeat (a busy machine disturbs them alike), after one run to warm up."""
    from types import SimpleNamespace

    from aiokafka import TopicPartition

    from app.decisions.scorer import Scorer
    from app.learning.model import FraudModel
    from app.monitoring.health import HealthWindow
    from app.rules.ruleset import LiveRules
    from app.serialization import dumps
    from app.settings import load
    from app.state.memory_store import MemoryStore
    from app.state.terminals import TerminalAggregates
    from lab.simulator import SimulatorConfig, simulate, to_wire

    settings = load({})
    simulated = simulate(SimulatorConfig(n_customers=500, n_terminals=1000, n_days=30, seed=3))
    txs = [dumps(to_wire(t)) for t in simulated[:n_tx]]
    records = [
        SimpleNamespace(topic="transactions", partition=0, offset=i, key=b"", value=v) for i, v in enumerate(txs)
    ]
    lists = {"blocked_customers": frozenset(f"c-{i:05d}" for i in range(0, 500, 97))}
    tp = TopicPartition("transactions", 0)

    def one(n_rules: int) -> float:
        handler = Scorer(settings, FraudModel(), TerminalAggregates(7.0, 86400.0, 38 * 86400.0),
                         HealthWindow(60.0, time.monotonic()), store=MemoryStore("customers"),
                         changelog_topic="changelog", terminal_topic="terminal-log")  # fmt: skip
        handler.open_state(0)
        handler.rules = LiveRules(RuleSet.of(rules(n_rules, random.Random(1)), 1), lists)
        started = time.process_time()
        for i in range(0, len(records), 500):
            handler.process(tp, records[i : i + 500]).on_commit()  # type: ignore[misc]
        elapsed = time.process_time() - started
        handler.close()
        return elapsed / len(records) * 1e6

    one(0)
    timings: dict[int, list[float]] = {n: [] for n in rule_counts}
    for _ in range(repeats):
        for n in rule_counts:
            timings[n].append(one(n))
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, nargs="+", default=[50])
    parser.add_argument("--transactions", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--scorer", action="store_true", help="the decision path's CPU per transaction instead")
    args = parser.parse_args()
    if args.scorer:
        print(f"python {sys.version.split()[0]}, Scorer.process, {args.transactions} transactions x {args.repeats} "
              "repeats; best (median) CPU us per transaction")  # fmt: skip
        timings = scorer_us([0, *args.rules], args.transactions, args.repeats)
        base, base_median = min(timings[0]), statistics.median(timings[0])
        print(f"   0 rules: {base:.1f} ({base_median:.1f})")
        for n in args.rules:
            best, median = min(timings[n]), statistics.median(timings[n])
            print(f"{n:>4} rules: {best:.1f} ({median:.1f}): {best / base - 1:+.1%} ({median / base_median - 1:+.1%})")
        return 0
    rng = random.Random(1)
    txs = transactions(args.transactions, rng)
    lists = {"blocked_customers": frozenset(f"c-{i}" for i in range(0, 5000, 97)),
             "blocked_terminals": frozenset(f"t-{i}" for i in range(0, 10000, 89))}  # fmt: skip
    base, base_median = per_call_us(RuleSet.of([], 1), txs, lists, args.repeats)
    print(f"python {sys.version.split()[0]}, {args.transactions} transactions x {args.repeats} repeats; "
          f"best (median) us per decide() call")  # fmt: skip
    print(f"   0 rules: {base:.2f} ({base_median:.2f})")
    for n in args.rules:
        rule_set = RuleSet.of(rules(n, rng), 1)
        decisions = [decide(rule_set, x, f, p, 0.5, lists).decision for x, f, p in txs]
        best, median = per_call_us(rule_set, txs, lists, args.repeats)
        share = sum(d != "allow" for d in decisions) / len(decisions)
        print(f"{n:>4} active rules: {best:.2f} ({median:.2f}); the rules alone {best - base:.2f} "
              f"({median - base_median:.2f}), {(best - base) / max(n, 1) * 1000:.0f} ns a rule; "
              f"{share:.1%} of the transactions not allowed")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
