#!/usr/bin/env python3
"""Drift on the worker's own traffic, timed: one real worker, simulated traffic at 500 tx/s, a change injected at a
known wall time (lab/changes.py), and the wall time until its health event turns ``degraded`` with drift.

    python scripts/drift_run.py --change cents                  # starts its own broker, stops it at the end
    python scripts/drift_run.py --change card_testing --cards-per-day 20 --bootstrap 127.0.0.1:9092
    python scripts/drift_run.py --change none --after-s 600     # the stationary control: the same run, no change

The run: a model trained on another simulated run of the same population (``models train --promote``: a warm
start, pinned by nothing else since the worker's trainer is off, so the scores come from one model throughout);
``--warmup-days`` of traffic published as fast as the worker takes it (its windows fill: 30 days, 37 for the
terminals' delayed ones; ``DRIFT_SKIP_ROWS`` leaves their samples out of the reference); then ``--rate-tps``:
the reference (``DRIFT_REFERENCE_ROWS`` samples), ``--pre-s`` seconds of the same traffic, the change, and at most
``--after-s`` seconds more. The drift settings are the defaults unless ``--env NAME=VALUE`` says otherwise. One
JSON line per run goes to ``--out``: the change's wall time, the first ``degraded`` drift event after it (its delay,
the features named, the issue), every drift or warn status before it (false alarms), the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import kafka_local  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from local_processes import free_port, scrape, stop_process, wait_http_ok  # noqa: E402

from app.serialization import dumps, loads  # noqa: E402
from app.settings import Settings  # noqa: E402
from lab.changes import CHANGES, inject  # noqa: E402
from lab.simulator import SimulatedTransaction, SimulatorConfig, simulate, to_wire  # noqa: E402

TOPIC_NAMES = ("TRANSACTIONS", "LABELS", "PREDICTIONS", "HEALTH", "TRANSACTIONS_DLQ", "LABELS_DLQ", "MODELS",
               "MODEL_EVENTS", "RULES", "RULE_LISTS")  # fmt: skip


def worker_env(bootstrap: str, run: str, home: Path, extra: dict[str, str]) -> dict[str, str]:
    topics = {f"{name}_TOPIC": f"{run}-{name.lower().replace('_', '-')}" for name in TOPIC_NAMES}
    return {**os.environ, **topics, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "APP_ID": run, "WORKER_ID": "drift-worker",
            "DATA_DIR": str(home / "worker"), "WEB_PORT": str(free_port()), "GRPC_PORT": str(free_port()),
            "WEB_BIND": "127.0.0.1", "TRAINER_ENABLED": "false", "LOG_LEVEL": "info", **extra}  # fmt: skip


def train_model(env: dict[str, str], args: argparse.Namespace, home: Path) -> str:
    """A warm start on another run of the same population (another seed), registered and promoted."""
    folder = home / "train"
    subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "simulate.py"), "--no-kafka", "--out-dir",
                    str(folder), "--customers", str(args.customers), "--terminals", str(args.terminals), "--days",
                    str(args.model_days), "--seed", str(args.seed + 1000), "--no-progress"],
                   check=True, capture_output=True, cwd=REPO_ROOT)  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "app", "models", "train", "--from-dir", str(folder), "--promote",
                           "--reason", "drift run"], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return done.stdout.strip().splitlines()[0]


def scored(web_port: str) -> int:
    try:
        samples = scrape(f"http://127.0.0.1:{web_port}/metrics", timeout_s=5)
    except OSError:
        return -1
    return int(sum(v for k, v in samples.items() if k.startswith("fraud_transactions_total{")))


async def run(args: argparse.Namespace, bootstrap: str, home: Path) -> dict[str, Any]:
    settings = Settings()
    extra = dict(item.split("=", 1) for item in args.env)
    sample_every = int(extra.get("DRIFT_SAMPLE_EVERY", settings.drift_sample_every))
    reference_rows = int(extra.get("DRIFT_REFERENCE_ROWS", settings.drift_reference_rows))
    run_name = f"drift-{args.change.replace('_', '-')}-{int(time.time())}"

    per_day = args.customers * 1.97  # the simulator's transactions per customer and day, measured
    warm = int(args.warmup_days * per_day)
    reference = reference_rows * sample_every
    change_at = warm + reference + int(args.pre_s * args.rate_tps)
    total = change_at + int(args.after_s * args.rate_tps)
    days = int(total / per_day * 1.05) + 2
    txs = simulate(SimulatorConfig(n_customers=args.customers, n_terminals=args.terminals, n_days=days,
                                   seed=args.seed))  # fmt: skip
    if len(txs) < total:
        raise RuntimeError(f"{len(txs)} transactions simulated, {total} needed")
    txs = txs[:total]
    if args.change != "none":
        txs = inject(
            args.change, txs, change_at, producers=args.producers, cards_per_day=args.cards_per_day, seed=args.seed
        )
    added = len(txs) - total
    options = {"cents": {"producers": args.producers}, "card_testing": {"cards_per_day": args.cards_per_day}}

    extra.setdefault("DRIFT_SKIP_ROWS", str(warm // sample_every))
    env = worker_env(bootstrap, run_name, home, extra)
    model = train_model(env, args, home)
    log_path = home / "worker.log"
    with log_path.open("wb") as log_file:
        worker = subprocess.Popen([sys.executable, "-m", "app"], cwd=REPO_ROOT, env=env, stdout=log_file,
                                  stderr=subprocess.STDOUT)  # fmt: skip
    events: list[tuple[float, dict[str, Any]]] = []
    try:
        wait_http_ok(f"http://127.0.0.1:{env['WEB_PORT']}/ready", worker, timeout_s=180)
        consumer = AIOKafkaConsumer(env["HEALTH_TOPIC"], bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    group_id=None)  # fmt: skip
        await consumer.start()
        stop = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    now = time.time()
                    events.extend((now, loads(r.value or b"")) for r in records)

        watcher = asyncio.create_task(watch())
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
        await producer.start()
        topic = env["TRANSACTIONS_TOPIC"]

        def message(tx: SimulatedTransaction) -> tuple[bytes, bytes]:
            return tx.customer_id.encode(), dumps(to_wire(tx))

        warm_started = time.time()
        for tx in txs[:warm]:  # as fast as the producer goes; the worker catches up below
            key, value = message(tx)
            await producer.send(topic, key=key, value=value)
        await producer.flush()
        while scored(env["WEB_PORT"]) < warm:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}: see {log_path}")
            await asyncio.sleep(1)
        warm_s = time.time() - warm_started
        rated = txs[warm:]
        first_changed = change_at - warm  # the change's first transaction in ``rated`` (cents, ids: at that index)
        started = time.perf_counter()
        change_wall: float | None = None
        detected: tuple[float, dict[str, Any]] | None = None
        load_at_change: tuple[float, float, float] | None = None
        deadline_after_change = args.after_s
        for i, tx in enumerate(rated):
            due = started + i / args.rate_tps
            delay = due - time.perf_counter()
            if delay > 0.001:
                await asyncio.sleep(delay)
            if i == first_changed:
                change_wall, load_at_change = time.time(), os.getloadavg()
            key, value = message(tx)
            await producer.send(topic, key=key, value=value)
            if change_wall is not None and i % 500 == 0:
                detected = detected or _first_drift(events, change_wall)
                if (detected and args.change != "none" and time.time() > detected[0] + args.linger_s) or (
                    time.time() - change_wall > deadline_after_change
                ):
                    break
        await producer.flush()
        await producer.stop()
        if change_wall is not None and detected is None and args.change != "none":
            wait_until = change_wall + deadline_after_change
            while time.time() < wait_until and detected is None:
                await asyncio.sleep(1)
                detected = _first_drift(events, change_wall)
        end_wall = time.time()
        stop.set()
        await watcher
        await consumer.stop()
    finally:
        stop_process(worker)
    assert change_wall is not None
    before = [e for at, e in events if at < change_wall]
    after = [e for at, e in events if at >= change_wall]
    judged_before = [e["drift"] for e in before if e.get("drift")]
    result: dict[str, Any] = {
        "change": args.change,
        "run": run_name,
        "model": model,
        "rate_tps": args.rate_tps,
        "customers": args.customers,
        "warmup_transactions": warm,
        "warmup_s": round(warm_s, 1),
        "reference_transactions": reference,
        "change_at_transaction": change_at,
        "added_transactions": added,
        "options": options.get(args.change, {}),
        "drift_env": {k: v for k, v in env.items() if k.startswith("DRIFT_") or k == "HEALTH_INTERVAL_S"},
        "judged_before_change": len(judged_before),
        "false_alarms_before_change": [d["status"] for d in judged_before if d["status"] != "ok"],
        "load_at_change": [round(v, 2) for v in load_at_change or ()],
        "seconds_after_change_observed": round(end_wall - change_wall, 1),
        "judged_after_change": sum(1 for e in after if e.get("drift")),
        "statuses_after_change": _counts([(e.get("drift") or {}).get("status", "none") for e in after]),
    }
    named = next(((at, e) for at, e in events if at >= change_wall and e.get("status") != "healthy"
                  and any(w["psi"] >= 0.25 for w in (e.get("drift") or {}).get("worst", []))), None)  # fmt: skip
    result["change_wall"] = time.strftime("%H:%M:%S", time.gmtime(change_wall))
    if named is not None:  # the first event naming a feature (the first drift may be the score's or alert rate's)
        result["named_after_s"] = round(named[0] - change_wall, 1)
        result["first_named"] = [w["feature"] for w in named[1]["drift"]["worst"] if w["psi"] >= 0.25]
    if detected is not None:
        at, event = detected
        result.update({
            "detected_after_s": round(at - change_wall, 1),
            "health_status": event["status"],
            "named": [w["feature"] for w in event["drift"]["worst"] if w["psi"] >= 0.25],
            "worst": event["drift"]["worst"][:3],
            "score_psi": event["drift"]["score_psi"],
            "alert_rate": [event["drift"]["reference_alert_rate"], event["drift"]["alert_rate"]],
            "issue": next((i for i in event["issues"] if i.startswith("drift")), None),
        })  # fmt: skip
    else:
        result["detected_after_s"] = None
    return result


def _first_drift(events: list[tuple[float, dict[str, Any]]], since: float) -> tuple[float, dict[str, Any]] | None:
    """The first health event since ``since`` in drift and not healthy (``degraded``, or worse for another reason)."""
    return next(((at, e) for at, e in events if at >= since and e.get("status") != "healthy"
                 and (e.get("drift") or {}).get("status") == "drift"), None)  # fmt: skip


def _counts(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--change", choices=[*CHANGES, "none"], required=True)
    parser.add_argument("--bootstrap", default=None, help="a running broker (else one is started and stopped)")
    parser.add_argument("--rate-tps", type=float, default=500.0)
    parser.add_argument("--warmup-days", type=float, default=40.0)
    parser.add_argument("--pre-s", type=float, default=120.0, help="stationary seconds after the reference filled")
    parser.add_argument("--after-s", type=float, default=600.0, help="the longest wait after the change")
    parser.add_argument("--linger-s", type=float, default=20.0, help="traffic kept on after the detection")
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--terminals", type=int, default=2000)
    parser.add_argument("--model-days", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--producers", type=int, default=1, help="cents: one producer of this many")
    parser.add_argument("--cards-per-day", type=float, default=20.0, help="card testing: attacked cards a day")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the worker (DRIFT_*, ...)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "drift_run.jsonl")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="drift-run-"))
    data_dir = home / "kafka"
    bootstrap = args.bootstrap
    if bootstrap is None:
        bootstrap = kafka_local.start(port=free_port(), controller_port=free_port(), data_dir=data_dir, wipe=True)
    try:
        result = asyncio.run(run(args, bootstrap, home))
    finally:
        if args.bootstrap is None:
            kafka_local.stop(data_dir)
    result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["load_at_end"] = [round(v, 2) for v in os.getloadavg()]
    line = dumps(result).decode()
    print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as out:
        out.write(line + "\n")
    return 0 if (args.change == "none") == (result["detected_after_s"] is None) else 1


if __name__ == "__main__":
    sys.exit(main())
