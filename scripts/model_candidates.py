#!/usr/bin/env python3
"""Online model candidates on the handbook's protocol, each learning labels exactly as the worker's replay does.

    python scripts/model_candidates.py --seeds 0 --models logreg "logreg:opt=adam,lr=0.01"   # screen on one seed
    python scripts/model_candidates.py --seeds 0 1 2 --models logreg "arf:trees=5,neg=0.1"    # the same, 3 seeds
    python scripts/model_candidates.py --seeds 0 1 2 --table                                  # table of all results
    python scripts/model_candidates.py --seeds 0 --cost --models "logreg:opt=adagrad,lr=0.1" "logreg:bins=8"

Why a tape: the features of a run do not depend on the model (terminal risk comes from fraud labels, never from
scores), so the worker's own offline replay (``app/learning/offline.py``: parsing, both feature halves, scoring, the
trainer's label join) runs once per seed with a recorder in place of the model. The recorder keeps every scored
feature vector and, in order, every label the join hands to ``learn_one`` (with how many transactions had been scored
by then).
Each candidate then replays that tape: it learns the same labels at the same points of the stream as
``scripts/evaluate.py``'s replay would make it learn, and scores the test-period transactions at their place
in the stream, before their own label. The run is cut after the test period (nothing later can move its
figures), so a tape is about 75 % of the run.

The batch baselines (``scripts/evaluate.py``'s, scikit-learn defaults on the training week) are computed on the
same data when the tape is made. Tapes and per-seed results are cached in ``--cache-dir``; results of a model are
replaced when it runs again, and several runs (other models, other seeds) may share the directory. Cost per score
and per label is the wall time of ``score_one`` over the test transactions and of ``learn_one`` over every label
delivered (sampled out or not), in this process: mean and median. ``--cost`` measures cost alone, the candidates
side by side in one process (the machine is shared and noisy: a ratio to the first model is what to read): each
learns the tape's first ``--cost-labels`` labels in the same loop, then each scores the same 20,000 test
transactions, in turns, 5 times.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
import time
from datetime import UTC, datetime
from datetime import time as dt_time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from evaluate import baseline_scores, metrics_of, run_data  # noqa: E402
from progress_bars import add_progress_argument, bar, counted  # noqa: E402
from simulate import add_simulator_arguments, config_from, wire_events  # noqa: E402

from app.features.halves import FEATURE_NAMES  # noqa: E402
from app.features.spec import pack  # noqa: E402
from app.learning.model import FraudModel  # noqa: E402
from app.learning.offline import replay_offline  # noqa: E402
from app.learning.quality import average_precision, card_precision_top_k, roc_auc  # noqa: E402
from app.settings import Settings, load  # noqa: E402
from lab.protocol import Protocol, protocol_test_mask  # noqa: E402
from lab.simulator import simulate  # noqa: E402

METRICS = ("auc_roc", "average_precision", "card_precision_top_100")


class Recorder(FraudModel):
    """Stands in for the model in the replay: keeps what it is asked to score and to learn, in order."""

    def __init__(self, rows: int) -> None:
        super().__init__()
        self.x = np.zeros((rows, len(FEATURE_NAMES)))
        self.scored = 0
        # The packed features of a scored transaction -> its row. The trainer's core learns from its own packed copy
        # (and an implicit negative's features may be learned again as a late fraud), so rows are found by value;
        # two transactions with the same features share a row, which teaches the same.
        self.index_of: dict[bytes, int] = {}
        self.learned: list[tuple[int, int, bool]] = []  # (transactions scored by then, row, label)

    def score_one(self, x: dict[str, float], k: int = 3) -> tuple[float, list[str]]:
        self.x[self.scored] = [x[name] for name in FEATURE_NAMES]
        self.index_of[pack(x)] = self.scored
        self.scored += 1
        return 0.0, []

    def learn_one(self, x: dict[str, float], y: bool) -> None:
        self.learned.append((self.scored, self.index_of[pack(x)], y))


def make_tape(args: argparse.Namespace, protocol: Protocol, path: Path) -> None:
    started = time.perf_counter()
    config = config_from(args)
    txs = simulate(config)
    end_day = protocol.test_start_day + protocol.test_days
    start_s = datetime.combine(config.start_date, dt_time(), tzinfo=UTC).timestamp()
    txs = [tx for tx in txs if (tx.timestamp.timestamp() - start_s) // 86400 < end_day]
    data = run_data(config, txs)
    test = protocol_test_mask(data.day, data.card, data.fraud, protocol)
    baselines = {name: metrics_of(data, test, s) for name, s in baseline_scores(data, protocol, config.seed).items()}
    recorder = Recorder(len(txs))
    events = wire_events(config, args.label_delay_days * 86400, transactions=txs)
    with bar(len(txs), f"seed {args.seed} tape", enabled=not args.no_progress) as progress:
        for _ in counted(replay_offline(events, load(), recorder), progress):  # the settings evaluate.py uses
            pass
    if recorder.scored != len(txs):
        raise RuntimeError(f"replay scored {recorder.scored} of {len(txs)} transactions")
    learned = np.array(recorder.learned, dtype=np.int64).reshape(-1, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path, x=recorder.x, learned=learned, day=data.day, card=data.card, fraud=data.fraud, test=test,
        baselines=json.dumps(baselines),
    )  # fmt: skip
    print(f"seed {args.seed}: tape of {len(txs)} transactions, {len(learned)} labels in "
          f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip


def run_candidate(
    name: str, tape: Any, prior_fraud_rate: float, threshold: float, progress_enabled: bool = True
) -> dict[str, Any]:
    """Learn the tape's labels in order, scoring each test transaction at its place; metrics, alerts at the decision
    threshold on the test set, and costs."""
    model = FraudModel(name, prior_fraud_rate=prior_fraud_rate)
    x_rows, learned, test = tape["x"], tape["learned"], tape["test"]
    test_rows = np.flatnonzero(test)
    last = int(test_rows[-1])
    scores = np.zeros(len(test))
    names = FEATURE_NAMES
    clock = time.perf_counter_ns
    score_ns = np.zeros(len(test_rows), dtype=np.int64)
    learn_ns = np.zeros(len(learned), dtype=np.int64)
    n_learned = 0
    k = 0
    started = time.perf_counter()

    def score_until(position: int) -> None:
        nonlocal k
        while k < len(test_rows) and test_rows[k] < position:
            row = int(test_rows[k])
            x = dict(zip(names, x_rows[row].tolist(), strict=True))
            t0 = clock()
            scores[row] = model.score_one(x)[0]
            score_ns[k] = clock() - t0
            k += 1

    with bar(len(learned), name, unit="label", enabled=progress_enabled) as progress:
        for position, row, y in counted(learned.tolist(), progress):  # the clock times the model calls only
            if position > last:
                break
            score_until(position)
            x = dict(zip(names, x_rows[row].tolist(), strict=True))
            t0 = clock()
            model.learn_one(x, bool(y))
            learn_ns[n_learned] = clock() - t0
            n_learned += 1
        score_until(last + 1)
    y = tape["fraud"][test]
    alerts = scores[test] >= threshold
    result: dict[str, Any] = {
        "alert_rate": float(alerts.mean()),
        "precision": float((alerts & y).sum() / max(1, alerts.sum())),
        "recall": float((alerts & y).sum() / max(1, y.sum())),
        "auc_roc": roc_auc(y, scores[test]),
        "average_precision": average_precision(y, scores[test]),
        "card_precision_top_100": card_precision_top_k(tape["day"][test], tape["card"][test], y, scores[test], k=100),
    }
    result.update(
        **cost("score", score_ns),
        **cost("learn", learn_ns[:n_learned]),
        labels=n_learned,
        labels_learned_fully=n_learned - model.labels_skipped,
        seconds=time.perf_counter() - started,
    )
    return result


def compare_costs(names: list[str], tape: Any, labels: int) -> str:
    """Cost of ``score_one`` and ``learn_one`` of every model in one process; ratios to the first."""
    clock = time.perf_counter_ns
    x_rows, learned = tape["x"], tape["learned"][:labels]
    models = {name: FraudModel(name) for name in names}
    learn_ns = {name: np.zeros(len(learned), dtype=np.int64) for name in names}
    for i, (_, row, y) in enumerate(learned.tolist()):
        x = dict(zip(FEATURE_NAMES, x_rows[row].tolist(), strict=True))
        for name, model in models.items():
            t0 = clock()
            model.learn_one(x, bool(y))
            learn_ns[name][i] = clock() - t0
    test_rows = np.flatnonzero(tape["test"])[:20000]
    xs = [dict(zip(FEATURE_NAMES, x_rows[row].tolist(), strict=True)) for row in test_rows]
    score_ns: dict[str, list[int]] = {name: [] for name in names}
    for _ in range(5):
        for name, model in models.items():
            for x in xs:
                t0 = clock()
                model.score_one(x)
                score_ns[name].append(clock() - t0)
    later = len(learned) // 3  # the learning cost once the bins (warm-up) and the trees have grown
    base_score, base_learn = np.median(score_ns[names[0]]), np.median(learn_ns[names[0]][later:])
    lines = [
        f"{len(learned)} labels learned, then {len(xs)} test transactions scored 5 times; learn p50 over labels "
        f"{later}-{len(learned)}; ratios to {names[0]}",
        "",
        "| model | µs per score p50 | p90 | ratio (p50) | µs per label p50 | ratio (p50) |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        s, lp = np.median(score_ns[name]), np.median(learn_ns[name][later:])
        lines.append(
            f"| {name} | {s / 1000:.1f} | {np.percentile(score_ns[name], 90) / 1000:.1f} | {s / base_score:.2f} | "
            f"{lp / 1000:.1f} | {lp / base_learn:.2f} |"
        )
    return "\n".join(lines)


def cost(what: str, ns: np.ndarray) -> dict[str, float]:
    """Mean and median µs per call. Calls over 50 ms are left out of the mean: on this shared machine another
    session may pause the process (SIGSTOP) to measure latency, and one pause would swamp a million calls."""
    kept = ns[ns <= 50_000_000]
    return {
        f"{what}_us": float(kept.mean()) / 1000 if len(kept) else float("nan"),
        f"{what}_p50_us": float(np.median(ns)) / 1000 if len(ns) else float("nan"),
        f"{what}_over_50ms": int(len(ns) - len(kept)),
    }


def table(out_dir: Path, size: str) -> str:
    paths = sorted(out_dir.glob(f"results-{size}-*.json"))
    runs = {int(p.stem.rsplit("-", 1)[1]): json.loads(p.read_text()) for p in paths}
    if not runs:
        return f"no results for {size} in {out_dir}"
    names: list[str] = []
    for run in runs.values():
        names += [n for n in run["models"] if n not in names]
    lines = [
        f"seeds {', '.join(map(str, sorted(runs)))}: mean (min-max over the seeds that ran it)",
        "",
        "| model | seeds | AUC ROC | AP | CP@100 | µs per score (mean / p50) | µs per label (mean / p50) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        rows = [run["models"][name] for run in runs.values() if name in run["models"]]
        cells = []
        for metric in METRICS:
            values = np.array([r[metric] for r in rows], dtype=float)
            cells.append(f"{values.mean():.3f} ({values.min():.3f}-{values.max():.3f})")
        for what in ("score", "learn"):
            means = [r[f"{what}_us"] for r in rows if f"{what}_us" in r]
            medians = [r[f"{what}_p50_us"] for r in rows if f"{what}_p50_us" in r]
            cells.append(f"{np.mean(means):.1f} / {np.mean(medians):.1f}" if means and medians else "")
        lines.append(f"| {name} | {len(rows)} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_simulator_arguments(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--models", nargs="*", default=[], help="model names (see app/learning/model.py)")
    parser.add_argument("--train-start-day", type=int, default=115)
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "results" / "candidates")
    parser.add_argument("--table", action="store_true", help="print the table of every cached result")
    parser.add_argument("--cost", action="store_true", help="only cost: the models side by side in this process")
    parser.add_argument("--cost-labels", type=int, default=300_000, help="with --cost: labels learned first")
    add_progress_argument(parser)
    args = parser.parse_args(argv)
    for name in args.models:
        FraudModel(name)  # an unknown name fails before any simulation
    protocol = Protocol(train_start_day=args.train_start_day, delay_days=int(args.label_delay_days))
    prior, threshold = Settings().prior_fraud_rate, Settings().decision_threshold
    size = f"{args.customers}-{args.terminals}-{args.days}"
    for seed in args.seeds:
        args.seed = seed
        tape_path = args.cache_dir / f"tape-{size}-{seed}.npz"
        if args.models and not tape_path.exists():
            make_tape(args, protocol, tape_path)
        if not args.models:
            continue
        tape = np.load(tape_path)
        if args.cost:
            print(f"seed {seed}: " + compare_costs(args.models, tape, args.cost_labels), flush=True)
            continue
        results_path = args.cache_dir / f"results-{size}-{seed}.json"
        for name in args.models:
            r = run_candidate(name, tape, prior, threshold, progress_enabled=not args.no_progress)
            with (args.cache_dir / "results.lock").open("w") as lock:  # runs of other models may share the file
                fcntl.flock(lock, fcntl.LOCK_EX)
                results = json.loads(results_path.read_text()) if results_path.exists() else {"models": {}}
                if not results["models"]:
                    results["models"].update(json.loads(str(tape["baselines"])))
                results["models"][name] = r
                results_path.write_text(json.dumps(results, indent=1))
            print(f"seed {seed} {name}: AUC {r['auc_roc']:.3f} AP {r['average_precision']:.3f} "
                  f"CP@100 {r['card_precision_top_100']:.3f}; {r['score_us']:.1f} / {r['score_p50_us']:.1f} µs "
                  f"per score, {r['learn_us']:.1f} / {r['learn_p50_us']:.1f} µs per label, mean / p50; at the "
                  f"threshold alert rate {r['alert_rate']:.4f}, precision {r['precision']:.3f}, recall "
                  f"{r['recall']:.3f} ({r['seconds']:.0f} s)", flush=True)  # fmt: skip
    if args.table:
        print(table(args.cache_dir, size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
