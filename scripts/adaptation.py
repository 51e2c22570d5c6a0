#!/usr/bin/env python3
"""A fraud pattern added halfway, per day: how fast the deployed model learns it, and what the others lose by it.

    python scripts/adaptation.py --seeds 0 --customers 2000 --terminals 4000 --days 140 --cards-per-day 5 \\
        --publish-interval-s 600 --out results/adaptation.json

Per seed the simulated run is replayed twice through the production learning path (``app/learning/offline.py``:
the trainer's join, scoring by the champion's snapshots on the publication cadence): once as simulated, once with
card testing (``lab/changes.py``: bursts of tiny amounts at terminals new to the card, then large ones) from
``--change-day`` on. Per day from the change: the new pattern's recall at the decision threshold (all its
transactions, and its probes alone, the tiny amounts), and the other scenarios' AP over the simulator's own
transactions of the day, with the pattern and without it (the same transactions, so the difference is what
the pattern cost them), and the same on the cards the pattern never tested (a tested card's own later transactions
carry the attack in their windows: that part of the cost is not forgetting). Also the handbook protocol's test
week, the same way. The first labels of the pattern come ``--label-delay-days`` after its first transaction.
Issue 21's targets: recall 0.8 within 7 days of event time after the first labels; the others' AP down by no more
than 0.01.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from simulate import add_simulator_arguments, config_from, wire_events  # noqa: E402

from app.learning.offline import replay_offline  # noqa: E402
from app.learning.quality import average_precision  # noqa: E402
from app.records import Prediction  # noqa: E402
from app.serialization import dumps  # noqa: E402
from app.settings import Settings, load  # noqa: E402
from lab.changes import SCENARIO_CARD_TESTING, card_testing  # noqa: E402
from lab.protocol import Protocol, protocol_test_mask  # noqa: E402
from lab.simulator import SimulatedTransaction, simulate  # noqa: E402

PROBE_MAX_AMOUNT = 5.0  # card testing's probes are 0.5 to 2.0; its cash-outs 300 to 1,500
TARGET_RECALL, TARGET_DAYS, TARGET_AP_DROP = 0.8, 7.0, 0.01


def replayed(txs: list[SimulatedTransaction], config: Any, settings: Settings, delay_s: float) -> dict[str, tuple]:  # type: ignore[type-arg]
    """tx_id -> (fraud_probability, is_fraud at the threshold) through the offline production path."""
    out = {}
    for p in replay_offline(wire_events(config, delay_s, transactions=txs), settings):
        if isinstance(p, Prediction):
            out[p.tx_id] = (p.fraud_probability, p.is_fraud)
    return out


def _ap(y: np.ndarray, s: np.ndarray) -> float:
    return float(average_precision(y, s)) if y.any() else float("nan")


def adaptation(
    base: list[SimulatedTransaction],
    changed: list[SimulatedTransaction],
    base_scores: dict[str, tuple],  # type: ignore[type-arg]
    changed_scores: dict[str, tuple],  # type: ignore[type-arg]
    start: datetime,
    delay_days: float,
    protocol: Protocol,
) -> dict[str, Any]:
    """The per-day curve and its summary, from the two runs' scores (pure: no replay here)."""
    day = np.array([(tx.timestamp - start).total_seconds() // 86400 for tx in changed], dtype=int)
    new = np.array([tx.fraud_scenario == SCENARIO_CARD_TESTING for tx in changed])
    probe = new & np.array([tx.amount < PROBE_MAX_AMOUNT for tx in changed])
    fraud = np.array([tx.is_fraud for tx in changed])
    decided = np.array([changed_scores[tx.tx_id][1] for tx in changed])
    with_new = np.array([changed_scores[tx.tx_id][0] for tx in changed])
    without = np.array([base_scores[tx.tx_id][0] if not n else np.nan for tx, n in zip(changed, new, strict=True)])
    tested = {tx.customer_id for tx, n in zip(changed, new, strict=True) if n}
    untested = np.array([tx.customer_id not in tested for tx in changed])  # cards the pattern never touched
    first_s = min((tx.timestamp - start).total_seconds() for tx, n in zip(changed, new, strict=True) if n)
    first_label_day = first_s / 86400 + delay_days
    rows = []
    for d in range(int(first_s // 86400), int(day.max()) + 1):
        today, old = day == d, (day == d) & ~new
        row = {
            "day": d,
            "days_after_first_labels": round(d + 1 - first_label_day, 2),  # at the day's end
            "new_transactions": int((today & new).sum()),
            "new_recall": float(decided[today & new].mean()) if (today & new).any() else float("nan"),
            "probe_recall": float(decided[today & probe].mean()) if (today & probe).any() else float("nan"),
            "other_frauds": int(fraud[old].sum()),
            "other_ap_with": _ap(fraud[old], with_new[old]),
            "other_ap_without": _ap(fraud[old], without[old]),
        }
        row["other_ap_change"] = row["other_ap_with"] - row["other_ap_without"]
        clean = old & untested
        row["untested_ap_change"] = _ap(fraud[clean], with_new[clean]) - _ap(fraud[clean], without[clean])
        rows.append(row)
    reached = next((r for r in rows if r["days_after_first_labels"] > 0 and r["new_recall"] >= TARGET_RECALL), None)
    after = (day >= int(first_label_day)) & ~new  # whole days from the one the first labels come in
    base_day = np.array([(tx.timestamp - start).total_seconds() // 86400 for tx in base], dtype=int)
    base_fraud = np.array([tx.is_fraud for tx in base])
    test = protocol_test_mask(base_day, np.array([tx.customer_id for tx in base]), base_fraud, protocol)
    test_ids = {tx.tx_id for tx, keep in zip(base, test, strict=True) if keep}
    in_test = np.array([tx.tx_id in test_ids for tx in changed])
    late = (day >= int(first_label_day) + int(TARGET_DAYS)) & new
    return {
        "first_new_day": first_s / 86400,
        "first_label_day": first_label_day,
        "new_transactions": int(new.sum()),
        "recall_reached_0.8_days_after_first_labels": reached["days_after_first_labels"] if reached else None,
        "new_recall_from_day_7_after_labels": float(decided[late].mean()) if late.any() else float("nan"),
        "probe_recall_from_day_7_after_labels": float(decided[late & probe].mean()) if (late & probe).any() else None,
        "other_ap_after_first_labels": {
            "with": _ap(fraud[after], with_new[after]),
            "without": _ap(fraud[after], without[after]),
        },
        "untested_cards_ap_after_first_labels": {
            "with": _ap(fraud[after & untested], with_new[after & untested]),
            "without": _ap(fraud[after & untested], without[after & untested]),
        },
        "other_ap_test_week": {
            "with": _ap(fraud[in_test], with_new[in_test]),
            "without": _ap(fraud[in_test], without[in_test]),
        },
        "daily": rows,
    }


def _write_scores(
    path: Path,
    seed: int,
    changed: list[SimulatedTransaction],
    base_scores: dict[str, tuple],  # type: ignore[type-arg]
    changed_scores: dict[str, tuple],  # type: ignore[type-arg]
    start: datetime,
) -> None:
    """Each transaction of the changed run: its time, card, terminal, amount, truth and both runs' scores."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path.with_name(f"{path.stem}-seed{seed}.npz"),
        t_s=np.array([(tx.timestamp - start).total_seconds() for tx in changed]),
        customer=np.array([tx.customer_id for tx in changed]),
        terminal=np.array([tx.terminal_id for tx in changed]),
        amount=np.array([tx.amount for tx in changed]),
        fraud=np.array([tx.is_fraud for tx in changed]),
        scenario=np.array([tx.fraud_scenario for tx in changed]),
        with_new=np.array([changed_scores[tx.tx_id][0] for tx in changed]),
        decided=np.array([changed_scores[tx.tx_id][1] for tx in changed]),
        without=np.array([base_scores[tx.tx_id][0] if tx.tx_id in base_scores else np.nan for tx in changed]),
    )


def _figure(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def table(result: dict[str, Any]) -> str:
    lines = [
        "| day | days after first labels | new pattern's transactions | its recall | its probes' recall "
        "| other scenarios' AP with it | without it | change | change on cards it never tested |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["daily"]:
        lines.append(f"| {r['day']} | {r['days_after_first_labels']:.1f} | {r['new_transactions']} | "
                     f"{_figure(r['new_recall'])} | {_figure(r['probe_recall'])} | {_figure(r['other_ap_with'])} | "
                     f"{_figure(r['other_ap_without'])} | {r['other_ap_change']:+.3f} | "
                     f"{r['untested_ap_change']:+.3f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_simulator_arguments(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--change-day", type=int, default=None, help="default: halfway through --days")
    parser.add_argument("--cards-per-day", type=float, default=5.0, help="cards tested a simulated day")
    parser.add_argument("--model-name", default=None, help="default: MODEL_NAME")
    parser.add_argument("--publish-interval-s", type=float, default=None,
                        help="stream seconds between snapshots (default MODEL_PUBLISH_INTERVAL_S)")  # fmt: skip
    parser.add_argument("--train-start-day", type=int, default=115)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "adaptation.json")
    parser.add_argument("--scores-out", type=Path, default=None,
                        help="also write each transaction's scores here (.npz per seed, for diagnosis)")  # fmt: skip
    args = parser.parse_args(argv)
    settings = load()
    settings = dataclasses.replace(
        settings,
        model_name=args.model_name or settings.model_name,
        model_publish_interval_s=settings.model_publish_interval_s
        if args.publish_interval_s is None
        else args.publish_interval_s,
    )
    change_day = args.days // 2 if args.change_day is None else args.change_day
    protocol = Protocol(train_start_day=args.train_start_day, delay_days=int(args.label_delay_days))
    delay_s = args.label_delay_days * 86400
    results = []
    for seed in args.seeds:
        args.seed = seed
        config = config_from(args)
        started = time.perf_counter()
        base = simulate(config)
        start = datetime.combine(config.start_date, datetime.min.time(), tzinfo=base[0].timestamp.tzinfo)
        changed = card_testing(base, start + timedelta(days=change_day), cards_per_day=args.cards_per_day, seed=seed)
        print(f"seed {seed}: {len(base)} transactions, {len(changed) - len(base)} of card testing from day "
              f"{change_day}; replaying both runs ...", flush=True)  # fmt: skip
        base_scores = replayed(base, config, settings, delay_s)
        changed_scores = replayed(changed, config, settings, delay_s)
        result = {"seed": seed, **adaptation(base, changed, base_scores, changed_scores, start,
                                             args.label_delay_days, protocol)}  # fmt: skip
        result["seconds"] = time.perf_counter() - started
        if args.scores_out is not None:
            _write_scores(args.scores_out, seed, changed, base_scores, changed_scores, start)
        results.append(result)
        print(table(result), flush=True)
        summary = {k: v for k, v in result.items() if k != "daily"}
        print(f"seed {seed}: {summary}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"model_name": settings.model_name, "publish_interval_stream_s": settings.model_publish_interval_s,
              "change_day": change_day, "cards_per_day": args.cards_per_day, "runs": results}  # fmt: skip
    args.out.write_bytes(dumps(report))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
