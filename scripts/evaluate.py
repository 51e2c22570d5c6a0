#!/usr/bin/env python3
"""Detection quality on the handbook's protocol (benchmark section 3), beside the published figures.

    python scripts/evaluate.py --seeds 0 1 2 --out-dir results/quality            # default sizes, offline replay
    python scripts/evaluate.py --seeds 0 --feature-sets protocol --publish-interval-s 600 --customers 2000 ...
    python scripts/evaluate.py --seeds 0 --predictions preds.jsonl --customers 200 --terminals 400 --days 140
    python scripts/evaluate.py --seeds 0 --from-topic predictions --bootstrap-servers 127.0.0.1:9092 ...

For each seed it simulates the data set, takes the project's predictions (from a file, from the predictions
topic, or by replaying the run through the worker's own scoring and learning code without Kafka), trains the
published batch baselines on the training week of the same data, and computes AUC ROC, AP and CP@100 on the
test period, the same metrics per day over the whole run, recall per fraud scenario and the alert rate and
precision at the decision threshold. Headline figures are the mean and spread over the seeds.

The replay runs once per ``--feature-sets`` entry: ``product`` (the model on every declared feature, as deployed)
and ``protocol`` (the same model named with ``features=protocol``: the handbook's 15 features alone, comparable
with the published table). It scores with the champion's snapshots, refreshed on the trainer's publication
cadence (``--publish-interval-s`` of stream time, default MODEL_PUBLISH_INTERVAL_S, or ``--publish-every-labels``
labels learned, default MODEL_PUBLISH_EVERY_LABELS; ``app/learning/offline.py``); ``--live-champion`` scores with
the learning model itself instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from progress_bars import add_progress_argument, bar, counted  # noqa: E402
from simulate import add_simulator_arguments, config_from, wire_events  # noqa: E402

from app.learning.offline import replay_offline  # noqa: E402
from app.learning.quality import average_precision, card_precision_top_k, decision_summary, roc_auc  # noqa: E402
from app.records import Prediction  # noqa: E402
from app.serialization import dumps, loads  # noqa: E402
from app.settings import load  # noqa: E402
from lab.batch_features import baseline_features  # noqa: E402
from lab.protocol import Protocol, protocol_test_mask  # noqa: E402
from lab.simulator import SimulatedTransaction, SimulatorConfig, simulate  # noqa: E402

PUBLISHED = {  # benchmark section 4: baselines trained on the one training week
    "logistic regression": (0.871, 0.606, 0.291),
    "decision tree, depth 2": (0.763, 0.496, 0.241),
    "decision tree, unlimited": (0.788, 0.309, 0.243),
    "random forest": (0.867, 0.658, 0.287),
    "XGBoost": (0.862, 0.639, 0.273),
    "random scores": (0.5, 0.007, 0.017),
}
METRICS = ("auc_roc", "average_precision", "card_precision_top_100")


@dataclass(frozen=True)
class RunData:
    tx_id: np.ndarray
    day: np.ndarray
    card: np.ndarray
    fraud: np.ndarray
    scenario: np.ndarray
    features: np.ndarray


def run_data(config: SimulatorConfig, txs: list[SimulatedTransaction]) -> RunData:
    start = np.datetime64(config.start_date.isoformat(), "s")
    stamps = np.array([np.datetime64(tx.timestamp.replace(tzinfo=None), "s") for tx in txs])
    time_s = (stamps - start).astype(np.int64)
    terminal = np.array([int(tx.terminal_id[2:]) for tx in txs])
    customer = np.array([int(tx.customer_id[2:]) for tx in txs])
    fraud = np.array([tx.is_fraud for tx in txs])
    weekday = np.array([tx.timestamp.weekday() for tx in txs])
    hour = np.array([tx.timestamp.hour for tx in txs])
    amount = np.array([tx.amount for tx in txs])
    return RunData(
        tx_id=np.array([tx.tx_id for tx in txs]),
        day=time_s // 86400,
        card=np.array([tx.customer_id for tx in txs]),
        fraud=fraud,
        scenario=np.array([tx.fraud_scenario for tx in txs]),
        features=baseline_features(time_s, weekday, hour, customer, terminal, amount, fraud),
    )


def metrics_of(data: RunData, mask: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    y, s = data.fraud[mask], scores[mask]
    return {
        "auc_roc": roc_auc(y, s),
        "average_precision": average_precision(y, s),
        "card_precision_top_100": card_precision_top_k(data.day[mask], data.card[mask], y, s, k=100),
    }


def baseline_scores(data: RunData, protocol: Protocol, seed: int) -> dict[str, np.ndarray]:
    """Scores of the published batch baselines, trained on the training week (scikit-learn defaults)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    train = protocol.train_mask(data.day)
    scaler = StandardScaler().fit(data.features[train])
    x_train, x_all = scaler.transform(data.features[train]), scaler.transform(data.features)
    models: dict[str, Any] = {
        "logistic regression": LogisticRegression(random_state=seed),
        "decision tree, depth 2": DecisionTreeClassifier(max_depth=2, random_state=seed),
        "decision tree, unlimited": DecisionTreeClassifier(random_state=seed),
        "random forest": RandomForestClassifier(random_state=seed, n_jobs=2),
    }
    try:
        from xgboost import XGBClassifier

        models["XGBoost"] = XGBClassifier(random_state=seed, n_jobs=2)
    except ImportError:
        pass
    scores = {}
    for name, model in models.items():
        model.fit(x_train, data.fraud[train])
        scores[name] = model.predict_proba(x_all)[:, 1]
    scores["random scores"] = np.random.default_rng(seed).uniform(size=len(data.fraud))
    return scores


def project_predictions(
    config: SimulatorConfig, label_delay_s: float, source: argparse.Namespace, transactions: int | None = None
) -> dict[str, tuple[float, bool]]:
    """tx_id -> (fraud_probability, is_fraud) from a file, the topic, or an offline replay."""
    if source.predictions:
        rows = (loads(line) for line in Path(source.predictions).read_bytes().splitlines() if line.strip())
        return {r["tx_id"]: (r["fraud_probability"], r["is_fraud"]) for r in rows}
    if source.from_topic:
        from app.kafka.clients import consume

        expected = source.expected or 1
        records = consume(source.bootstrap_servers, source.from_topic, lambda rs: len(rs) >= expected, source.timeout_s)
        rows = (loads(r.value or b"") for r in records)
        return {r["tx_id"]: (r["fraud_probability"], r["is_fraud"]) for r in rows}
    settings = load()
    feature_set = getattr(source, "feature_set", None) or "product"
    settings = dataclasses.replace(
        settings,
        model_name=model_for(getattr(source, "model_name", None) or settings.model_name, feature_set),
        model_publish_interval_s=_or(getattr(source, "publish_interval_s", None), settings.model_publish_interval_s),
        model_publish_every_labels=_or(getattr(source, "publish_every_labels", None),
                                       settings.model_publish_every_labels),
    )  # fmt: skip
    published = not getattr(source, "live_champion", False)
    out = {}
    label = f"seed {config.seed} replay, {feature_set} features"
    progress = bar(transactions, label, enabled=not getattr(source, "no_progress", False))
    with progress:
        events = wire_events(config, label_delay_s)
        for p in counted(replay_offline(events, settings, published=published), progress):
            if isinstance(p, Prediction):
                out[p.tx_id] = (p.fraud_probability, p.is_fraud)
    return out


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def daily_metrics(data: RunData, scores: np.ndarray, covered: np.ndarray, delay_days: int) -> list[dict[str, Any]]:
    """AUC, AP and CP@100 of each day, leaving out cards whose fraud was known by then (day - delay - 1)."""
    first_fraud: dict[str, int] = {}
    for card, day in zip(data.card[data.fraud], data.day[data.fraud], strict=True):
        first_fraud[card] = min(first_fraud.get(card, day), day)
    first = np.array([first_fraud.get(card, 1 << 30) for card in data.card])
    out = []
    for day in np.unique(data.day):
        mask = covered & (data.day == day) & (first > day - delay_days - 1)
        if mask.sum() == 0:
            continue
        row: dict[str, Any] = {"day": int(day), "transactions": int(mask.sum()), "frauds": int(data.fraud[mask].sum())}
        row.update(metrics_of(data, mask, scores))
        out.append(row)
    return out


def model_for(settings_name: str, feature_set: str) -> str:
    """The model's name restricted to a feature set (``features=...``; the product's is the name as given)."""
    if feature_set == "product":
        return settings_name
    return f"{settings_name}{',' if ':' in settings_name else ':'}features={feature_set}"


def project_row(feature_set: str | None) -> str:
    return "project (online, prequential)" if feature_set is None else f"project (online, {feature_set} features)"


def evaluate_seed(config: SimulatorConfig, args: argparse.Namespace, protocol: Protocol) -> dict[str, Any]:
    started = time.perf_counter()
    txs = simulate(config)
    data = run_data(config, txs)
    test = protocol_test_mask(data.day, data.card, data.fraud, protocol)
    result: dict[str, Any] = {
        "seed": config.seed,
        "transactions": len(txs),
        "frauds": int(data.fraud.sum()),
        "test_transactions": int(test.sum()),
        "test_frauds": int(data.fraud[test].sum()),
        "models": {},
        "feature_sets": {},
    }
    replayed = not (args.predictions or args.from_topic)
    for feature_set in args.feature_sets if replayed else [None]:
        source = argparse.Namespace(**{**vars(args), "feature_set": feature_set})
        predicted = project_predictions(config, args.label_delay_days * 86400, source, len(txs))
        covered = np.array([tx in predicted for tx in data.tx_id])
        scores = np.array([predicted.get(tx, (0.0, False))[0] for tx in data.tx_id])
        decisions = np.array([predicted.get(tx, (0.0, False))[1] for tx in data.tx_id])
        result["models"][project_row(feature_set)] = metrics_of(data, test & covered, scores)
        summary = decision_summary(data.fraud[covered], decisions[covered])
        run = {
            "predictions": int(covered.sum()),
            "threshold": {
                "alert_rate": summary.alert_rate,
                "precision": summary.precision,
                "recall": summary.recall,
                "caught": summary.caught,
                "missed": summary.missed,
                "false_alarms": summary.false_alarms,
            },
            "recall_by_scenario": {
                str(s): float(decisions[covered & (data.scenario == s)].mean())
                if (covered & (data.scenario == s)).any()
                else float("nan")
                for s in (1, 2, 3)
            },  # fmt: skip
            "daily": daily_metrics(data, scores, covered, protocol.delay_days),
            "pr_curve_test": _pr_curve(data.fraud[test & covered], scores[test & covered]),
        }
        result["feature_sets"][feature_set or "given"] = run
        if feature_set in (None, "product") or "predictions" not in result:  # the deployed model's, at the top
            result.update(run)
    if not args.no_baselines:
        for name, baseline in baseline_scores(data, protocol, config.seed).items():
            result["models"][name] = metrics_of(data, test, baseline)
    result["seconds"] = time.perf_counter() - started
    return result


def _pr_curve(y: np.ndarray, s: np.ndarray, points: int = 200) -> dict[str, list[float]]:
    order = np.argsort(-s, kind="mergesort")
    tp = np.cumsum(y[order])
    precision = tp / np.arange(1, len(y) + 1)
    recall = tp / max(int(y.sum()), 1)
    pick = np.unique(np.linspace(0, len(y) - 1, min(points, len(y))).astype(int)) if len(y) else np.array([], int)
    return {"precision": precision[pick].tolist(), "recall": recall[pick].tolist()}


def aggregate(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and standard deviation over seeds of every model's metrics."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in results[0]["models"]:
        out[name] = {}
        for metric in METRICS:
            values = np.array([r["models"][name][metric] for r in results], dtype=float)
            out[name][metric] = {"mean": float(np.nanmean(values)), "std": float(np.nanstd(values))}
    return out


def table(summary: dict[str, dict[str, dict[str, float]]], seeds: int) -> str:
    lines = [
        "| model | AUC ROC | AP | CP@100 | published AUC / AP / CP@100 |",
        "|---|---|---|---|---|",
    ]
    for name, metrics in summary.items():
        cells = [f"{metrics[m]['mean']:.3f} ± {metrics[m]['std']:.3f}" for m in METRICS]
        published = PUBLISHED.get(name)
        ref = " / ".join(f"{v:.3f}" for v in published) if published else "none published"
        lines.append(f"| {name} | {' | '.join(cells)} | {ref} |")
    lines.append(f"\nmean ± standard deviation over {seeds} seed(s); test period as in the handbook's protocol")
    return "\n".join(lines)


def draw(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (daily_ax, pr_ax) = plt.subplots(1, 2, figsize=(13, 4.5))
    for r in results:
        days = [d["day"] for d in r["daily"]]
        daily_ax.plot(days, [d["average_precision"] for d in r["daily"]], label=f"AP, seed {r['seed']}", lw=1)
        daily_ax.plot(
            days, [d["card_precision_top_100"] for d in r["daily"]], "--", label=f"CP@100, seed {r['seed']}", lw=1
        )
        pr_ax.plot(r["pr_curve_test"]["recall"], r["pr_curve_test"]["precision"], label=f"seed {r['seed']}")
    daily_ax.set(title="Project, per day (prequential)", xlabel="day of the run", ylabel="score", ylim=(0, 1))
    daily_ax.legend(fontsize=7)
    pr_ax.set(
        title="Precision-recall on the test period", xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1)
    )
    pr_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_simulator_arguments(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-start-day", type=int, default=115, help="day of the run (115 = 2018-07-25)")
    parser.add_argument("--predictions", type=Path, default=None, help="JSONL of predictions (one seed only)")
    parser.add_argument("--from-topic", default=None, help="read predictions from this topic (one seed only)")
    parser.add_argument("--expected", type=int, default=None, help="with --from-topic: read until this many")
    parser.add_argument("--timeout-s", type=float, default=120.0)
    parser.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument(
        "--feature-sets",
        nargs="+",
        choices=("product", "protocol"),
        default=["product", "protocol"],
        help="replay once per set: the product's (every declared feature) and the protocol's 15",
    )
    parser.add_argument("--model-name", default=None, help="default: MODEL_NAME (the deployed model)")
    parser.add_argument(
        "--publish-interval-s",
        type=float,
        default=None,
        help="stream seconds between the champion's snapshots (default MODEL_PUBLISH_INTERVAL_S)",
    )
    parser.add_argument(
        "--publish-every-labels",
        type=int,
        default=None,
        help="labels learned that force a snapshot (default MODEL_PUBLISH_EVERY_LABELS)",
    )
    parser.add_argument("--live-champion", action="store_true",
                        help="score with the learning champion itself, not its published snapshots")  # fmt: skip
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "results" / "quality")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="only merge the quality.json of runs made apart (e.g. one seed each) into one table",
    )
    add_progress_argument(parser)
    args = parser.parse_args(argv)
    if args.merge:
        reports = [loads(path.read_bytes()) for path in args.merge]
        merged = [run for report in reports for run in report["runs"]]
        print(table(aggregate(merged), len(merged)))
        print(f"seeds {[run['seed'] for run in merged]}; scoring: {[report.get('scoring') for report in reports]}")
        return 0
    if (args.predictions or args.from_topic) and len(args.seeds) != 1:
        parser.error("--predictions and --from-topic describe one run: give exactly one --seeds value")
    protocol = Protocol(train_start_day=args.train_start_day, delay_days=int(args.label_delay_days))
    results = []
    for seed in args.seeds:
        args.seed = seed
        config = config_from(args)
        print(f"seed {seed}: simulating and scoring ...", flush=True)
        results.append(evaluate_seed(config, args, protocol))
        r = results[-1]
        print(f"seed {seed}: {r['transactions']} transactions, {r['frauds']} frauds, test set {r['test_transactions']}"
              f" with {r['test_frauds']} frauds ({r['seconds']:.0f} s)", flush=True)  # fmt: skip
    summary = aggregate(results)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    settings = load()
    scoring = {
        "model_name": args.model_name or settings.model_name,
        "scored_by": "the learning champion" if args.live_champion else "the champion's published snapshots",
        "publish_interval_stream_s": _or(args.publish_interval_s, settings.model_publish_interval_s),
        "publish_every_labels": _or(args.publish_every_labels, settings.model_publish_every_labels),
    }
    report = {"seeds": args.seeds, "protocol": dataclasses.asdict(protocol), "scoring": scoring, "summary": summary,
              "runs": results}  # fmt: skip
    (args.out_dir / "quality.json").write_bytes(dumps(report))
    draw(results, args.out_dir / "quality.png")
    print()
    print(table(summary, len(results)))
    print(f"scoring: {scoring}")
    for r in results:
        for feature_set, run in r["feature_sets"].items():
            t = run["threshold"]
            print(f"seed {r['seed']}, {feature_set} features, at the threshold: alert rate {t['alert_rate']:.4f}, "
                  f"precision {t['precision']:.3f}, recall {t['recall']:.3f}; recall by scenario "
                  f"{run['recall_by_scenario']}")  # fmt: skip
    print(f"\nwrote {args.out_dir / 'quality.json'} and {args.out_dir / 'quality.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
