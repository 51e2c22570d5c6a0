#!/usr/bin/env python3
"""What the trainer costs: per label (its prediction read from the feature log, then the label), against the bare
``learn_one`` of the same pairs in the same run, and the size and pickling time of its published state.

    python scripts/bench_trainer.py                              # default simulator sizes, 60 days
    python scripts/bench_trainer.py --customers 1000 --terminals 2000 --days 30

No Kafka. The run is replayed once through the worker's logic (``app/learning/offline.py``) to get the predictions as
the decision path publishes them (features and served probability, as JSON); then the predictions and the labels (7 days
after their transaction) are fed to :class:`app.learning.training.Training` in event order, as the trainer reads them:
JSON parsing, the join, learning, the horizon. The baseline is ``FraudModel.learn_one`` on the same pairs, parsed
in advance. The state is pickled in its slices once a simulated day (what the trainer publishes every
``MODEL_PUBLISH_INTERVAL_S``, letting the event loop run between slices).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.learning.model import FraudModel  # noqa: E402
from app.learning.offline import replay_offline  # noqa: E402
from app.learning.quality import percentiles  # noqa: E402
from app.learning.training import Training  # noqa: E402
from app.records import Prediction  # noqa: E402
from app.serialization import dumps, loads  # noqa: E402
from app.settings import load  # noqa: E402
from lab.simulator import SimulatorConfig, label_of, simulate, to_wire  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = load()
    config = SimulatorConfig(n_customers=args.customers, n_terminals=args.terminals, n_days=args.days, seed=args.seed)
    txs = list(simulate(config))
    day_s = 86400.0
    events: list[tuple[float, int, str, bytes, bytes]] = []
    for i, tx in enumerate(txs):
        t = tx.timestamp.timestamp()
        events.append((t, i, "transaction", tx.customer_id.encode(), dumps(to_wire(tx))))
        label = label_of(tx, tx.timestamp + timedelta(days=7))
        events.append((t + 7 * day_s, i, "label", tx.tx_id.encode(), dumps(label)))
    events.sort()
    started = time.perf_counter()
    predictions = [dumps(p) for p in replay_offline(((k, key, v) for _, _, k, key, v in events), settings)
                   if isinstance(p, Prediction)]  # fmt: skip
    print(f"replayed {len(predictions)} transactions in {time.perf_counter() - started:.0f} s")
    # The trainer's input in event order: each prediction at its transaction's time, each label 7 days later.
    by_tx = {loads(p)["tx_id"]: p for p in predictions}
    feed = [(t, kind, by_tx[loads(v)["tx_id"]] if kind == "transaction" else v) for t, _, kind, _, v in events]

    training = Training(FraudModel(settings.model_name), None, horizon_s=settings.label_horizon_s,
                        grace_s=settings.late_label_grace_s, ttl_s=settings.features_ttl_s)  # fmt: skip
    per_label_us: list[float] = []
    pickles: list[tuple[int, float, int, float]] = []
    next_day = feed[0][0] + day_s
    chunk: list[tuple[float, str, bytes]] = []
    for t, kind, value in feed:
        chunk.append((t, kind, value))
        if len(chunk) < 1000:
            continue
        begin = time.perf_counter()
        labels = 0
        for _, k, v in chunk:
            if k == "transaction":
                p = loads(v)
                ts = datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")).timestamp()
                training.on_prediction(p["tx_id"], p["features"], ts, float(p["fraud_probability"]))
            else:
                label = loads(v)
                training.on_label(label["tx_id"], bool(label["is_fraud"]), t)
                labels += 1
        training.advance()
        if labels:
            per_label_us.append((time.perf_counter() - begin) / labels * 1e6)
        chunk.clear()
        if t >= next_day:
            next_day += day_s
            slices_ms, size = [], 0
            begin = time.perf_counter()
            for part in training.state_parts():
                slices_ms.append((time.perf_counter() - begin) * 1000)
                size += len(part)
                begin = time.perf_counter()
            pickles.append((training.pending(), sum(slices_ms), size, max(slices_ms)))
    # Baseline: learn_one alone on pairs parsed in advance, the same number of pairs.
    pairs = [(loads(p)["features"], bool(loads(p)["is_fraud"])) for p in predictions[: training.labels_seen]]
    baseline = FraudModel(settings.model_name)
    timings = []
    for i in range(0, len(pairs), 1000):
        begin = time.perf_counter()
        for x, y in pairs[i : i + 1000]:
            baseline.learn_one(x, y)
        timings.append((time.perf_counter() - begin) / len(pairs[i : i + 1000]) * 1e6)
    trainer, bare = percentiles(per_label_us, (50, 95)), percentiles(timings, (50, 95))
    print(f"labels learned {training.labels_seen}, counts {dict(training.counts)}")
    print(f"trainer per label: p50 {trainer['p50']:.1f} µs, p95 {trainer['p95']:.1f} µs "
          f"({1e6 / trainer['p50']:.0f} labels/s on one core)")  # fmt: skip
    print(f"learn_one alone:   p50 {bare['p50']:.1f} µs, p95 {bare['p95']:.1f} µs; trainer/learn_one "
          f"{trainer['p50'] / bare['p50']:.2f}x")  # fmt: skip
    peak = max(pickles)
    each = peak[2] / max(peak[0], 1)
    print(f"published state at its largest: {peak[0]} waiting, {peak[2] / 2**20:.1f} MiB ({each:.0f} bytes each), "
          f"pickled in {peak[1]:.0f} ms in slices of 200, the longest {peak[3]:.1f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
