#!/usr/bin/env python3
"""Pure cost of the model families: scoring per transaction at the decision path's batch sizes, the cost of a gbdt
retrain, and the bytes of a published version and of the trainer's copy, each beside the default binned logistic
model measured in the same run (the machine is shared: read the ratios).

    python scripts/bench_models.py                                       # 300 customers, 600 terminals, 70 days
    python scripts/bench_models.py --models gbdt gbdt:trees=60 --out results/models.json
    python scripts/bench_models.py --block 100 --features-cache /tmp/features.pkl   # hot; the replay kept
    git show main:app/learning/boosting.py > /tmp/boosting_main.py
    python scripts/bench_models.py --block 100 --compare-code /tmp/boosting_main.py   # main's scoring beside this

No Kafka. The features are the product's, as the worker computes them: a simulated run replayed through the offline
path (:func:`app.learning.offline.replay_offline`, the default model). Each model learns the first 80 % of the
transactions in time order with their labels (``learn_one``: a gbdt retrains on its own cadence, each retrain
timed), then scores the last 20 %: ``score_many`` on consecutive slices of each batch size, and ``score_one`` one by
one, the path before batches. A cost per transaction is a call's CPU time (the calling thread's; ``--wall-clock``:
elapsed) over its batch size; percentiles are over calls.

The calls go in rounds: each round takes every batch size and, within it, every model in turn, ``--block`` calls
each (1: call by call; 100: a model measured hot, its arrays warm in the cache), the batch sizes' order rotated
from round to round; ``score_one`` alternates call by call with batch 1 on the same transaction; one untimed round
first (the warm-up). So every figure samples the whole run: on this shared machine the same call costs up to twice
as much for seconds at a time, and a batch size timed in a phase of its own, as before, measured that moment, not
the code (batch 1, timed first, read twice ``score_one``, timed last, for the same calls on the same path).

``--compare-code FILE``: a copy of an older ``app/learning/boosting.py``; each gbdt model is also scored, as
``<name>@old``, with that file's ``CompiledTrees`` on the same trees (the node arrays copied), in the same rounds:
an A/B of the scoring code in one run.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from simulate import wire_events  # noqa: E402

from app.features.spec import FEATURE_SET_VERSION  # noqa: E402
from app.learning.boosting import CompiledTrees, LabelWindow, train_booster  # noqa: E402
from app.learning.model import DEFAULT_MODEL, FraudModel, _Boosted, model_bytes  # noqa: E402
from app.learning.offline import replay_offline  # noqa: E402
from app.learning.snapshots import model_snapshot  # noqa: E402
from app.records import Prediction  # noqa: E402
from app.settings import load  # noqa: E402
from lab.simulator import SimulatorConfig, simulate  # noqa: E402

BATCHES = (1, 10, 100, 500)


def labelled_features(config: SimulatorConfig) -> list[tuple[dict[str, float], bool]]:
    """The run's features as the worker computes them, in time order, with each transaction's class."""
    txs = simulate(config)
    fraud = {tx.tx_id: tx.is_fraud for tx in txs}
    settings = load({"MODEL_NAME": DEFAULT_MODEL})
    events = wire_events(config, 7 * 86400.0, transactions=txs)
    return [(p.features, fraud[p.tx_id]) for p in replay_offline(events, settings) if isinstance(p, Prediction)]


def cached_features(config: SimulatorConfig, cache: Path | None) -> list[tuple[dict[str, float], bool]]:
    """:func:`labelled_features`, kept in ``cache`` (keyed by the run's configuration and the feature set) when
    given."""
    key = f"{config!r} {FEATURE_SET_VERSION}"
    if cache is not None and cache.exists():
        with cache.open("rb") as f:
            saved = pickle.load(f)  # noqa: S301 - a file this script wrote
        if saved["config"] == key:
            return list(saved["pairs"])
        print(f"{cache} holds another run's features: replaying", flush=True)
    pairs = labelled_features(config)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(pickle.dumps({"config": key, "pairs": pairs}, protocol=pickle.HIGHEST_PROTOCOL))
    return pairs


def trained(name: str, pairs: list[tuple[dict[str, float], bool]]) -> tuple[FraudModel, list[float], float]:
    """The model after learning ``pairs``, the wall time of each gbdt retrain, and the whole learning time."""
    model = FraudModel(name)
    retrain_s: list[float] = []
    started = time.perf_counter()
    for x, y in pairs:
        before = getattr(model.learner, "retrains", 0)
        model.learn_one(x, y)
        if getattr(model.learner, "retrains", 0) > before:
            retrain_s.append(float(model.learner.train_s))  # type: ignore[union-attr]
    return model, retrain_s, time.perf_counter() - started


def full_window_retrain_s(model: FraudModel, pairs: list[tuple[dict[str, float], bool]]) -> tuple[int, float] | None:
    """For a gbdt model: the rows of a full window (the run's rows of each class repeated up to the ring's size) and
    the wall time of one retrain on it (LightGBM and the compilation): the steady cost, which a short run's partly
    filled window understates."""
    learner = model.learner
    if not isinstance(learner, _Boosted):
        return None
    negatives, frauds = learner.window_sizes
    window = LabelWindow(negatives, frauds)
    legit = [x for x, y in pairs if not y]
    fraud = [x for x, y in pairs if y]
    for i in range(negatives):
        window.add(legit[i % len(legit)], False)
    for i in range(frauds):
        window.add(fraud[i % len(fraud)], True)
    started = time.perf_counter()
    x, y = window.arrays()
    CompiledTrees(train_booster(x, y, learner.lightgbm, learner.rounds), window.names)
    return len(y), time.perf_counter() - started


def with_trees_of(model: FraudModel, code: Path) -> FraudModel | None:
    """``model`` (a gbdt) scoring with the ``CompiledTrees`` of ``code`` (another version of the module) on the same
    node arrays; None for a model without trees."""
    learner = model.learner
    if not isinstance(learner, _Boosted) or learner.trees is None:
        return None
    spec = importlib.util.spec_from_file_location(f"boosting_{code.stem}", code)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {code}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trees = module.CompiledTrees.__new__(module.CompiledTrees)
    trees.__dict__.update(learner.trees.__getstate__())
    other = copy.copy(model)
    other.learner = copy.copy(learner)
    other.learner.trees = trees
    return other


def per_tx_us(samples: list[float]) -> dict[str, float]:
    values = np.array(samples) * 1e6
    return {f"p{q}": round(float(np.percentile(values, q)), 2) for q in (50, 90, 99)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--terminals", type=int, default=600)
    parser.add_argument("--days", type=int, default=70)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=["gbdt"], help="beside the default model, always measured")
    parser.add_argument("--calls", type=int, default=400, help="timed calls per model and batch size")
    parser.add_argument("--block", type=int, default=1, help="consecutive calls of a model before the next one's "
                        "turn: 1 alternates call by call; 100 measures each model hot, its arrays warm in the cache "
                        "(the models and the batch sizes still taking turns block by block)")  # fmt: skip
    parser.add_argument("--compare-code", type=Path, default=None, help="a copy of an older app/learning/boosting.py: "
                        "the gbdt models also scored with its CompiledTrees, as <name>@old")  # fmt: skip
    parser.add_argument("--wall-clock", action="store_true", help="time calls by the wall clock, not CPU time")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--features-cache",
        type=Path,
        default=None,
        help="a pickle of the run's features: written after the replay, read instead of it when there (the replay "
        "takes minutes on a loaded machine; the same options give the same features)",
    )
    args = parser.parse_args(argv)

    config = SimulatorConfig(n_customers=args.customers, n_terminals=args.terminals, n_days=args.days, seed=args.seed)
    started = time.perf_counter()
    pairs = cached_features(config, args.features_cache)
    cut = int(len(pairs) * 0.8)
    held_out = [x for x, _ in pairs[cut:]]
    frauds = sum(y for _, y in pairs)
    print(f"{len(pairs)} transactions ({frauds} frauds) replayed in {time.perf_counter() - started:.0f} s; learning "
          f"{cut}, scoring {len(held_out)}", flush=True)  # fmt: skip

    names = [DEFAULT_MODEL, *[m for m in args.models if m != DEFAULT_MODEL]]
    results: dict[str, dict[str, Any]] = {}
    models: dict[str, FraudModel] = {}
    for name in names:
        model, retrain_s, learn_s = trained(name, pairs[:cut])
        models[name] = model
        snapshot = model_snapshot({"version": "bench"}, model, b"bench")
        full = full_window_retrain_s(model, pairs[:cut])
        results[name] = {
            "learn_s": round(learn_s, 1),
            "retrains": len(retrain_s),
            "retrain_s": {"mean": round(float(np.mean(retrain_s)), 3), "max": round(max(retrain_s), 3)}
            if retrain_s
            else None,
            "full_window": {"rows": full[0], "retrain_s": round(full[1], 2)} if full else None,
            "version_bytes": len(snapshot),
            "trainer_copy_bytes": len(model_bytes(model)),
            "score_many_us_per_tx": {},
        }
        print(f"{name}: learnt in {learn_s:.1f} s, {len(retrain_s)} retrains, version {len(snapshot):,} bytes",
              flush=True)  # fmt: skip

    if args.compare_code is not None:
        for name in list(names[1:]):
            old = with_trees_of(models[name], args.compare_code)
            if old is not None:
                names.append(f"{name}@old")
                models[f"{name}@old"] = old
                results[f"{name}@old"] = results[name] | {"score_many_us_per_tx": {}}

    # The calling thread's CPU time, not the wall clock: on a machine loaded many times over its cores a call longer
    # than a scheduler slice waits for the CPU several times, and the wall clock counts those waits as its cost.
    clock = time.thread_time if not args.wall_clock else time.perf_counter
    # 0: score_one, one call per transaction, alternating call by call with batch 1 (the same transactions)
    groups = ((1, 0), *((b,) for b in BATCHES if b != 1))
    samples: dict[tuple[str, int], list[float]] = {(name, b): [] for name in names for group in groups for b in group}
    block = max(1, args.block)
    for turn, first in enumerate(range(-block, args.calls, block)):  # the first round untimed: the warm-up
        for group in groups[turn % len(groups) :] + groups[: turn % len(groups)]:
            size = max(group)
            for name in names:
                model = models[name]
                for call in range(first, min(first + block, args.calls)):
                    at = (call % args.calls * size) % max(1, len(held_out) - size)
                    for batch in group:
                        # Fresh dicts, as the live path scores features it has just computed (warm in the cache).
                        xs = [dict(x) for x in held_out[at : at + size]]
                        if batch:
                            t0 = clock()
                            model.score_many(xs)
                            elapsed = (clock() - t0) / size
                        else:
                            t0 = clock()
                            model.score_one(xs[0])
                            elapsed = clock() - t0
                        if first >= 0:
                            samples[name, batch].append(elapsed)
    for name in names:
        for batch in BATCHES:
            results[name]["score_many_us_per_tx"][str(batch)] = per_tx_us(samples[name, batch])
        results[name]["score_one_us"] = per_tx_us(samples[name, 0])

    base = results[DEFAULT_MODEL]
    print("\n| model | batch | p50 µs/tx | p90 | p99 | p50 / default's |")
    print("|---|---|---|---|---|---|")
    for name in names:
        rows = [("score_one", results[name]["score_one_us"], base["score_one_us"])]
        rows += [(str(b), results[name]["score_many_us_per_tx"][str(b)], base["score_many_us_per_tx"][str(b)])
                 for b in BATCHES]  # fmt: skip
        for label, figures, baseline in rows:
            ratio = figures["p50"] / baseline["p50"]
            print(f"| `{name}` | {label} | {figures['p50']} | {figures['p90']} | {figures['p99']} | {ratio:.2f} |")
    print("\n| model | retrains in the run | mean / max s per retrain | a full window: rows, s per retrain | version "
          "bytes | trainer's copy bytes |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name in names:
        r = results[name]
        cost = f"{r['retrain_s']['mean']} / {r['retrain_s']['max']}" if r["retrain_s"] else "-"
        full_cost = f"{r['full_window']['rows']:,}, {r['full_window']['retrain_s']}" if r["full_window"] else "-"
        print(f"| `{name}` | {r['retrains']} | {cost} | {full_cost} | {r['version_bytes']:,} | "
              f"{r['trainer_copy_bytes']:,} |")  # fmt: skip
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"config": vars(args) | {"out": str(args.out)}, "results": results}, indent=2, default=str)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
