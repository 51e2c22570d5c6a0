#!/usr/bin/env python3
"""How long ``python -m app rules backtest`` takes over a month of the default simulator's history.

    .venv/bin/python scripts/bench_backtest.py                  # 30 days, ~290,000 transactions; target < 60 s
    .venv/bin/python scripts/bench_backtest.py --days 3 --bootstrap 127.0.0.1:9092

The history is made as the deployment makes it: the default simulator (5,000 customers, 10,000 terminals), every
transaction scored by the worker's own logic without Kafka (``app.learning.offline.replay_offline``: both feature
halves, the model learning from the delayed labels), the predictions and labels (7 days later) published to their
own topics on a broker (``--bootstrap``, else a local one started and stopped by ``scripts/kafka_local.py``). The
predictions are cached in ``--work-dir`` so a second run only publishes and times. Timed: the whole command, as
an analyst runs it (a subprocess), reading every prediction of the range and the labels after it, with two
rules live and three candidates.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import kafka_local  # noqa: E402
from local_processes import free_port  # noqa: E402
from progress_bars import add_progress_argument, bar, counted  # noqa: E402

from app.kafka.clients import produce  # noqa: E402
from app.records import Prediction  # noqa: E402
from app.serialization import dumps  # noqa: E402
from app.settings import Settings  # noqa: E402
from lab.simulator import SimulatorConfig, label_of, replay, simulate, to_wire  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
LABEL_DELAY_S = 7 * 86400.0
CANDIDATES = [
    {"id": "burst", "expression": "customer_nb_tx_1hour >= 3 and amount > 2 * customer_avg_amount_30day",
     "action": "review", "description": "a burst of spending above the customer's habit"},
    {"id": "risky-terminal", "expression": "terminal_risk_7day_delay > 0.5 and terminal_nb_tx_7day_delay >= 3",
     "action": "block"},
    {"id": "night-new", "expression": "is_night == 1 and terminal_new_for_customer_30day == 1", "action": "score",
     "score": 0.2},
]  # fmt: skip
LIVE = [("big", "amount > 1000", "block"), ("velocity", "customer_nb_tx_1day > 12", "review")]


def history(work: Path, days: int, progress: bool) -> tuple[Path, Path]:
    """predictions.jsonl and labels.jsonl of ``days`` simulated days (made once, then reused)."""
    predictions, labels = work / f"predictions-{days}d.jsonl", work / f"labels-{days}d.jsonl"
    if predictions.exists() and labels.exists():
        return predictions, labels
    from app.learning.offline import replay_offline

    txs = simulate(SimulatorConfig(n_days=days))
    events = []
    label_lines = []
    for kind, tx, at in replay(txs, LABEL_DELAY_S):
        if kind == "transaction":
            events.append(("transaction", tx.customer_id.encode(), dumps(to_wire(tx))))
        else:
            label = dumps(label_of(tx, at))
            events.append(("label", tx.tx_id.encode(), label))
            label_lines.append(label)
    started = time.monotonic()
    with (work / "predictions.tmp").open("wb") as out:
        progress_bar = bar(len(txs), "scoring", enabled=progress)
        for item in counted(replay_offline(events, Settings()), progress_bar):
            if isinstance(item, Prediction):
                out.write(dumps(item) + b"\n")
        progress_bar.close()
    (work / "predictions.tmp").rename(predictions)
    labels.write_bytes(b"\n".join(label_lines) + b"\n")
    print(f"scored {len(txs)} transactions in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return predictions, labels


def run_watched(command: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``command`` and sample its resident memory every 0.1 s: (its result, the peak in MiB)."""
    import psutil

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=out, stderr=err, text=True)
        watched, peak = psutil.Process(process.pid), 0
        while process.poll() is None:
            try:
                peak = max(peak, watched.memory_info().rss)
            except psutil.Error:
                break
            time.sleep(0.1)
        process.wait()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(command, process.returncode, out.read(), err.read()), peak / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / ".cache" / "bench_backtest")
    add_progress_argument(parser)
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    predictions, labels = history(args.work_dir, args.days, not args.no_progress)
    broker_dir = Path(tempfile.mkdtemp(prefix="bench-backtest-"))
    bootstrap = args.bootstrap or kafka_local.start(port=free_port(), controller_port=free_port(),
                                                    data_dir=broker_dir / "kafka", wipe=True)  # fmt: skip
    suffix = str(int(time.time()))
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "APP_ID": f"bench-backtest-{suffix}",
           "PREDICTIONS_TOPIC": f"bench-predictions-{suffix}", "LABELS_TOPIC": f"bench-labels-{suffix}",
           "RULES_TOPIC": f"bench-rules-{suffix}", "RULE_LISTS_TOPIC": f"bench-rule-lists-{suffix}"}  # fmt: skip
    try:
        subprocess.run([sys.executable, "-c", "import asyncio; from app.kafka.topics import ensure_topics; "
                        "from app.settings import load; asyncio.run(ensure_topics(load()))"], env=env, check=True,
                       cwd=REPO_ROOT)  # fmt: skip
        lines = predictions.read_bytes().splitlines()
        started = time.monotonic()
        produce(bootstrap, env["PREDICTIONS_TOPIC"], ((None, line) for line in lines))
        produce(bootstrap, env["LABELS_TOPIC"], ((None, line) for line in labels.read_bytes().splitlines()))
        print(f"published {len(lines)} predictions and their labels in {time.monotonic() - started:.0f} s")
        for rule_id, expression, action in LIVE:
            subprocess.run([sys.executable, "-m", "app", "rules", "add", "--id", rule_id, "--expression", expression,
                            "--action", action], env=env, check=True, cwd=REPO_ROOT)  # fmt: skip
        rule_file = args.work_dir / "candidates.json"
        rule_file.write_text(json.dumps(CANDIDATES))
        first = json.loads(lines[0])["timestamp"][:10]
        command = [sys.executable, "-m", "app", "rules", "backtest", "--rule", str(rule_file), "--from", first,
                   "--to", "2100-01-01"]  # fmt: skip
        started = time.monotonic()
        result, peak_mib = run_watched(command, env)
        elapsed_s = time.monotonic() - started
        print(result.stdout)
        print(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "")
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            return result.returncode
        print(f"backtest of {args.days} days ({len(lines)} predictions): {elapsed_s:.1f} s, the command's whole run; "
              f"peak RSS {peak_mib:.0f} MiB")  # fmt: skip
    finally:
        if not args.bootstrap:
            kafka_local.stop(data_dir=broker_dir / "kafka")
        shutil.rmtree(broker_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
