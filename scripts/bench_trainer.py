#!/usr/bin/env python3
"""What the trainer costs: labels learned a second on one core, implicit negatives included, through its three
readers of the feature log, against the bare ``learn_one`` of the same pairs; and what it publishes per interval.

    python scripts/bench_trainer.py                              # default simulator sizes, 60 days, every label
    python scripts/bench_trainer.py --frauds-only --store rocksdb  # a chargeback feed: most pairs implicit negatives
    python scripts/bench_trainer.py --customers 1000 --terminals 2000 --days 30
    python scripts/bench_trainer.py --challenger gbdt --store memory  # bytes per interval with a gbdt line (issue 17)

No Kafka. The run is replayed once through the worker's logic (``app/learning/offline.py``) to get the predictions as
the decision path publishes them (features and served probability, as JSON); then the trainer's work is timed as it
does it: the head parses each prediction and each label (7 days after its transaction) in event order and joins them
(:class:`app.learning.training.Training`), the tail parses each prediction again at its horizon, the grace tail once
more after the grace, and the label store (memory or RocksDB) holds what waits. The baseline is
``FraudModel.learn_one`` on the same pairs, parsed in advance. Once a simulated day the state is pickled and the label
store committed, as the trainer publishes every ``MODEL_PUBLISH_INTERVAL_S``: their sizes are what one interval
publishes. With ``--challenger`` (a gbdt line), each interval also says what the state would have been with the
window's rows inside (a plain pickle of the state: what the trainer published before the rows became label-store
records) beside what it publishes now (the state, and the window's slots written in the interval).
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.learning.label_store import WINDOW_PREFIX, LabelStore  # noqa: E402
from app.learning.model import FraudModel  # noqa: E402
from app.learning.offline import replay_offline  # noqa: E402
from app.learning.trainer import parse_prediction  # noqa: E402
from app.learning.training import Training  # noqa: E402
from app.records import Prediction  # noqa: E402
from app.serialization import dumps, loads  # noqa: E402
from app.settings import load  # noqa: E402
from app.state.memory_store import MemoryStore  # noqa: E402
from app.state.rocksdb_store import RocksDBConfig, RocksDBStore  # noqa: E402
from lab.simulator import SimulatorConfig, label_of, simulate, to_wire  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frauds-only", action="store_true", help="publish fraud labels only (a chargeback feed)")
    parser.add_argument("--store", choices=("memory", "rocksdb"), default="rocksdb")
    parser.add_argument("--early-window", type=int, default=None, help="EARLY_LABEL_WINDOW (default: the setting)")
    parser.add_argument("--challenger", default="", help="CHALLENGER_MODEL (default: none), e.g. gbdt")
    args = parser.parse_args()
    settings = load()
    config = SimulatorConfig(n_customers=args.customers, n_terminals=args.terminals, n_days=args.days, seed=args.seed)
    txs = list(simulate(config))
    day_s = 86400.0
    events: list[tuple[float, int, str, bytes, bytes]] = []
    for i, tx in enumerate(txs):
        t = tx.timestamp.timestamp()
        events.append((t, i, "transaction", tx.customer_id.encode(), dumps(to_wire(tx))))
        if tx.is_fraud or not args.frauds_only:
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

    with tempfile.TemporaryDirectory() as directory:
        if args.store == "rocksdb":
            store = RocksDBStore("trainer-labels", Path(directory), RocksDBConfig.from_settings(settings))
        else:
            store = MemoryStore("trainer-labels")
        labels = LabelStore(store.open_partition(0))
        training = Training(FraudModel(settings.model_name), None, horizon_s=settings.label_horizon_s,
                            grace_s=settings.late_label_grace_s, ttl_s=settings.features_ttl_s, labels=labels,
                            early_window=args.early_window or settings.early_label_window)  # fmt: skip
        if args.challenger:
            training.set_challenger(FraudModel(args.challenger))
        windows: list[tuple[int, int, int, int, int, int]] = []  # learned, held, state with rows, state, records, bytes
        learned_before = 0
        tail: list[tuple[float, bytes]] = []  # the feature log the tails read: (event time, the prediction's JSON)
        at_tail = at_grace = 0
        busy_s = 0.0
        intervals: list[tuple[int, int, int, int]] = []  # state bytes, changelog records, changelog bytes, in window
        next_day = feed[0][0] + day_s
        offset = 0
        for start in range(0, len(feed), 1000):
            chunk = feed[start : start + 1000]
            begin = time.perf_counter()
            for t, kind, value in chunk:
                if kind == "transaction":
                    tx_id, features, ts, served, feature_set = parse_prediction(value)
                    training.on_prediction(tx_id, features, ts, served, feature_set)
                    tail.append((ts, value))
                else:
                    label = loads(value)
                    training.on_label(label["tx_id"], bool(label["is_fraud"]), t, "labels/0")
            horizon = training.horizon_at()
            while at_tail < len(tail) and tail[at_tail][0] < horizon:
                tx_id, features, _, served, feature_set = parse_prediction(tail[at_tail][1])
                training.at_horizon(tx_id, features, served, feature_set)
                at_tail += 1
            while at_grace < at_tail and tail[at_grace][0] < horizon - training.grace_s:
                tx_id, features, _, served, feature_set = parse_prediction(tail[at_grace][1])
                training.after_grace(tx_id, features, served, feature_set)
                at_grace += 1
            busy_s += time.perf_counter() - begin
            if chunk[-1][0] >= next_day:  # a publication: the state and the store's changes, then their commit
                next_day += day_s
                begin = time.perf_counter()
                training.sweep_labels()
                # Before: the state pickled whole, window rows inside (less the masks of slots written since, new).
                plain = len(pickle.dumps(training, protocol=pickle.HIGHEST_PROTOCOL)) - sum(
                    mask.nbytes for w in training.windows() for mask in w.dirty.values()
                ) if args.challenger else 0  # fmt: skip
                state = sum(map(len, training.state_parts()))
                changes = training.labels.changes()
                changed_bytes = sum(len(k) + len(v or b"") for k, v in changes.items())
                intervals.append((state, len(changes), changed_bytes, len(training.recent)))
                if args.challenger:
                    rows = [(k, v) for k, v in changes.items() if k.startswith(WINDOW_PREFIX)]
                    held = sum(len(w) for w in training.windows())
                    windows.append((training.labels_seen - learned_before, held, plain, state, len(rows),
                                    sum(len(k) + len(v or b"") for k, v in rows)))  # fmt: skip
                    learned_before = training.labels_seen
                offset += len(changes)
                training.labels.commit(offset)
                busy_s += time.perf_counter() - begin
        learned = training.labels_seen
        print(f"labels learned {learned}, counts {dict(training.counts)}, label store {training.labels_kept} entries")
        print(f"trainer: {learned / busy_s:,.0f} labels a second on one core ({busy_s:.1f} s in all: head, tails, "
              f"label store on {args.store}, daily publications)")  # fmt: skip
        store.close()
    # Baseline: learn_one alone on pairs parsed in advance, the same number of pairs.
    pairs = [(loads(p)["features"], bool(loads(p)["is_fraud"])) for p in predictions[:learned]]
    baseline = FraudModel(settings.model_name)
    begin = time.perf_counter()
    for x, y in pairs:
        baseline.learn_one(x, y)
    bare_s = time.perf_counter() - begin
    print(f"learn_one alone: {len(pairs) / bare_s:,.0f} pairs a second; trainer/learn_one {busy_s / bare_s:.2f}x")
    state, records, changed_bytes, window = max(intervals, key=lambda i: i[0] + i[2])
    print(f"published per simulated day at its largest: state {state / 2**10:.0f} KiB, label changelog {records} "
          f"records ({changed_bytes / 2**10:.0f} KiB); head window {window} predictions")  # fmt: skip
    if windows:
        print(f"with the challenger {args.challenger}, per simulated day (labels learned, window rows held: state "
              "before (rows inside) -> state now + window records written):")  # fmt: skip
        for day, (learned_in, held, plain, state, rows, row_bytes) in enumerate(windows, 1):
            print(f"  day {day:3d}: {learned_in:6d} labels, {held:6d} rows held: {plain / 2**10:8.0f} KiB -> "
                  f"{state / 2**10:5.0f} KiB + {rows:6d} rows ({row_bytes / 2**10:6.0f} KiB)")  # fmt: skip
        full = [w for w in windows if w[1] == max(h for _, h, *_ in windows)] or windows
        mid = sorted(full, key=lambda w: w[2])[len(full) // 2]
        print(
            f"median day with the window at its fullest ({mid[1]} rows): before {mid[2] / 2**10:.0f} KiB, now "
            f"{(mid[3] + mid[5]) / 2**10:.0f} KiB (state {mid[3] / 2**10:.0f} KiB, {mid[4]} window rows "
            f"{mid[5] / 2**10:.0f} KiB for {mid[0]} labels learned): {(mid[3] + mid[5]) / mid[2]:.3f} of before"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
