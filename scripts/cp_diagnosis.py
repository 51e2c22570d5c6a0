#!/usr/bin/env python3
"""Where CP@100 is lost, and a cheap screen of feature sets before a full-size evaluation (issue 21).

    python scripts/cp_diagnosis.py --seeds 0 1 2 --cache-dir /tmp/cp                 # the features as declared
    python scripts/cp_diagnosis.py --seeds 0 1 2 --cache-dir /tmp/cp --drop terminal_fraud_streak_30day_delay \\
        terminal_fraud_streak_age_s_30day_delay                                      # the feature set without two

For each seed: the product's features of every transaction, computed by the decision path's own pure code
(``customer_side_features``, ``terminal_features``, fraud labels recorded as they arrive 7 days after their
transaction), kept in ``--cache-dir`` (about 10 CPU-minutes a full-size seed, once); then the ``gbdt`` line
emulated in batch: before each test day, LightGBM with the line's default parameters on the labels known by then
(the last 30 days of legitimate ones drawn one in five, the last 10,000 frauds). Not the evaluator: no snapshot
cadence, one retrain a day. Its figures on the handbook's test set came near those of ``scripts/evaluate.py
--model-name gbdt`` on seeds 0-2 (CP@100 within 0.003, AP within 0.005, AUC within 0.010; BENCHMARKS.md), in 15 s a
seed instead of 15-25 CPU-minutes.

The breakdown, per seed over the test week, as ``card_precision_top_k`` counts (each day's 100 cards with the
highest maximum score, cards caught on an earlier day left out): the compromised cards of a day found and missed,
by fraud scenario, a compromised terminal's frauds split by its age that day (under 7 days none of its labels can
be known: no feature can see it), and the legitimate cards in the top 100 by what their best-scored transaction
looked like.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from app.features.engine import EMPTY_TERMINAL, EMPTY_WINDOW, record_fraud, terminal_features  # noqa: E402
from app.features.halves import customer_side_features  # noqa: E402
from app.features.spec import FEATURE_NAMES, FEATURE_SET_VERSION  # noqa: E402
from app.learning.quality import average_precision, card_precision_top_k, roc_auc  # noqa: E402
from app.records import Transaction  # noqa: E402
from lab.protocol import Protocol, protocol_test_mask  # noqa: E402
from lab.simulator import SCENARIO_TERMINAL, SimulatorConfig, replay, simulate  # noqa: E402

DAY_S = 86400.0
GBDT = {"objective": "binary", "num_threads": 1, "deterministic": True, "force_row_wise": True, "seed": 42,
        "verbose": -1, "num_leaves": 31, "max_depth": 6, "learning_rate": 0.1, "min_child_samples": 50}  # fmt: skip


def features_of_run(config: SimulatorConfig, label_delay_s: float, cache: Path | None) -> dict[str, Any]:
    """Every transaction's features as the decision path computes them, and its truth (cached by seed and set)."""
    path = cache / f"features-{FEATURE_SET_VERSION}-seed{config.seed}-{config.n_customers}.npz" if cache else None
    if path and path.exists():
        return dict(np.load(path))
    txs = simulate(config)
    x = np.zeros((len(txs), len(FEATURE_NAMES)), np.float32)
    customers: dict[str, Any] = {}
    terminals: dict[str, Any] = {}
    frauds: dict[str, float] = {}
    i = 0
    for kind, tx, at in replay(txs, label_delay_s):
        if kind == "label":
            if tx.is_fraud:
                record_fraud(frauds, tx.tx_id, at.timestamp())
            continue
        t = Transaction(tx.tx_id, tx.timestamp, tx.customer_id, tx.terminal_id, tx.amount)
        row, customers[t.customer_id] = customer_side_features(
            t, customers.get(t.customer_id, EMPTY_WINDOW), DAY_S, frauds
        )
        half, terminals[t.terminal_id] = terminal_features(
            terminals.get(t.terminal_id, EMPTY_TERMINAL), t.event_time_s, t.tx_id, frauds, 7.0, DAY_S
        )
        row.update(half)
        x[i] = [row[name] for name in FEATURE_NAMES]
        i += 1
    run = {
        "x": x,
        "names": np.array(FEATURE_NAMES),
        "ts": np.array([tx.timestamp.timestamp() for tx in txs]),
        "day": np.array([(tx.timestamp.date() - config.start_date).days for tx in txs]),
        "card": np.array([tx.customer_id for tx in txs]),
        "terminal": np.array([tx.terminal_id for tx in txs]),
        "fraud": np.array([tx.is_fraud for tx in txs]),
        "scenario": np.array([tx.fraud_scenario for tx in txs]),
    }
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **run)
    return run


def emulated_gbdt(run: dict[str, Any], x: np.ndarray, days: range, label_delay_s: float) -> np.ndarray:
    """Scores of each test day by LightGBM trained on the labels known at the day's start."""
    import lightgbm as lgb

    ts, y, day = run["ts"], run["fraud"], run["day"]
    day_start_s = ts.min() - ts.min() % DAY_S
    sampled = np.random.default_rng(0).random(len(y)) < 0.2
    scores = np.zeros(len(y))
    for d in days:
        start_s = day_start_s + d * DAY_S
        known = ts + label_delay_s <= start_s
        negatives = np.flatnonzero(known & ~y & sampled & (ts > start_s - label_delay_s - 30 * DAY_S))
        rows = np.concatenate([negatives, np.flatnonzero(known & y)[-10000:]])
        model = lgb.train(GBDT, lgb.Dataset(x[rows], y[rows].astype(float)), num_boost_round=100)
        today = day == d
        scores[today] = model.predict(x[today])
    return scores


def breakdown(run: dict[str, Any], test: np.ndarray, scores: np.ndarray, x: np.ndarray, names: list[str]) -> str:
    """The compromised cards found and missed by scenario, and the legitimate cards in the top 100, by kind."""
    day, card, y, scenario, terminal = run["day"], run["card"], run["fraud"], run["scenario"], run["terminal"]
    risk = x[:, names.index("terminal_risk_30day_delay")] if "terminal_risk_30day_delay" in names else None
    attacked_from: dict[str, int] = {}  # a compromised terminal's first fraud day
    for i in np.flatnonzero(scenario == SCENARIO_TERMINAL):
        attacked_from.setdefault(str(terminal[i]), int(day[i]))
    found: Counter[str] = Counter()
    missed: Counter[str] = Counter()
    legit: Counter[str] = Counter()
    caught: set[str] = set()
    for d in sorted(set(day[test].tolist())):
        rows = np.flatnonzero(test & (day == d))
        best: dict[str, int] = {}
        frauds: dict[str, list[int]] = {}
        for i in rows:
            c = str(card[i])
            if c in caught:
                continue
            if c not in best or scores[i] > scores[best[c]]:
                best[c] = i
            if y[i]:
                frauds.setdefault(c, []).append(i)
        top = sorted(best, key=lambda c: -scores[best[c]])[:100]

        def kind(c: str, d: int = d, frauds: dict[str, list[int]] = frauds) -> str:
            found_in = sorted({int(scenario[i]) for i in frauds[c]})
            if found_in == [SCENARIO_TERMINAL]:
                young = all(d - attacked_from[str(terminal[i])] < 7 for i in frauds[c])
                return "2, terminal attacked < 7 days" if young else "2, terminal attacked >= 7 days"
            return "+".join(map(str, found_in))

        for c in top:
            if c in frauds:
                found[kind(c)] += 1
                continue
            i = best[c]
            since = d - attacked_from.get(str(terminal[i]), -(10**6))
            if 28 <= since < 38:
                legit["at a terminal after its 28 attacked days"] += 1
            elif risk is not None and risk[i] > 0:
                legit["at a terminal with a known fraud (30 days)"] += 1
            else:
                legit["other"] += 1
        missed.update(kind(c) for c in frauds if c not in top)
        caught.update(c for c in top if c in frauds)
    return "\n".join(
        [f"  found {dict(found)}", f"  missed {dict(missed)}", f"  legitimate cards in the top 100 {dict(legit)}"]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10000)
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--cache-dir", type=Path, default=None, help="keep each seed's features here")
    parser.add_argument("--drop", nargs="*", default=[], help="features left out of the screen")
    args = parser.parse_args(argv)
    protocol = Protocol()
    delay_s = protocol.delay_days * DAY_S
    cps = []
    for seed in args.seeds:
        started = time.perf_counter()
        config = SimulatorConfig(n_customers=args.customers, n_terminals=args.terminals, n_days=args.days, seed=seed)
        run = features_of_run(config, delay_s, args.cache_dir)
        names = [str(n) for n in run["names"]]
        unknown = set(args.drop) - set(names)
        if unknown:
            parser.error(f"not declared: {sorted(unknown)}")
        kept = [i for i, n in enumerate(names) if n not in args.drop]
        x = run["x"][:, kept]
        test = protocol_test_mask(run["day"], run["card"], run["fraud"], protocol)
        days = range(protocol.test_start_day, protocol.test_start_day + protocol.test_days)
        scores = emulated_gbdt(run, x, days, delay_s)
        y, s = run["fraud"][test], scores[test]
        cp = card_precision_top_k(run["day"][test], run["card"][test], y, s, k=100)
        cps.append(cp)
        print(f"seed {seed}: {len(kept)} features, AUC {roc_auc(y, s):.3f}, AP {average_precision(y, s):.3f}, "
              f"CP@100 {cp:.3f} ({time.perf_counter() - started:.0f} s)")  # fmt: skip
        print(breakdown(run, test, scores, x, [names[i] for i in kept]), flush=True)
    print(f"CP@100 mean {np.mean(cps):.3f} over seeds {args.seeds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
