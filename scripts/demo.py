#!/usr/bin/env python3
"""The demo: a local Kafka, the worker (which starts the trainer as its child process, ``python -m app trainer``), a
Prometheus scraping it with the alert rules (when the Debian package is installed), simulated traffic for a while,
then a summary with what the trainer process learned. Nothing is left running.

python scripts/demo.py --duration-s 60 --rate-tps 1000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import kafka_local  # noqa: E402
import prometheus_local  # noqa: E402
from local_processes import free_port, stop_process, wait_http_ok  # noqa: E402
from simulate import Event, add_simulator_arguments, config_from, publish, wire_events  # noqa: E402

from app.kafka.clients import consume  # noqa: E402
from app.learning.quality import average_precision, decision_summary, percentiles, roc_auc  # noqa: E402
from app.serialization import dumps, loads  # noqa: E402
from lab.simulator import simulate  # noqa: E402

BAD_MESSAGES = [b"not json at all", b'{"tx_id": "broken"}', b'{"tx_id":"x","timestamp":"2018-04-01T00:00:00Z",'
                b'"customer_id":"c","terminal_id":"t","amount":-5}']  # fmt: skip


def with_bad_input(events: Iterator[Event], every: int) -> Iterator[Event]:
    """Slip a malformed message in every ``every`` transactions, to show dead letters at work."""
    seen = 0
    for event in events:
        yield event
        if event[0] == "transaction":
            seen += 1
            if seen % every == 0:
                yield "transaction", b"bad", BAD_MESSAGES[(seen // every) % len(BAD_MESSAGES)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_simulator_arguments(parser)
    parser.set_defaults(customers=500, terminals=1000, days=90)
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--rate-tps", type=float, default=1000.0)
    parser.add_argument("--bad-every", type=int, default=1000, help="one malformed message per N transactions")
    args = parser.parse_args(argv)

    home = REPO_ROOT / ".kafka" / "demo"
    shutil.rmtree(home, ignore_errors=True)
    data_dir = home / "kafka"
    port, web_port, trainer_port = free_port(), free_port(), free_port()
    print(f"starting Apache Kafka on 127.0.0.1:{port} ...", flush=True)
    bootstrap = kafka_local.start(port=port, controller_port=free_port(), data_dir=data_dir, wipe=True)
    worker = None
    prometheus = None
    try:
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "APP_ID": "fraud-demo",
            "WORKER_ID": "demo-worker",
            "DATA_DIR": str(home / "worker"),
            "WEB_PORT": str(web_port),
            "GRPC_PORT": str(free_port()),
            "WEB_BIND": "127.0.0.1",
            "TRAINER_WEB_PORT": str(trainer_port),  # the trainer process's /metrics, /ready, /status
            # The demo runs weeks of simulated traffic in minutes: a new model version every 5 s, not every 30 s.
            "MODEL_PUBLISH_INTERVAL_S": os.environ.get("MODEL_PUBLISH_INTERVAL_S", "5"),
            # Drift: every transaction sampled; the reference after the first 35 simulated days (about 52,000
            # transactions: the 30-day windows and the terminals' delayed ones filled), windows of 2,000.
            "DRIFT_SAMPLE_EVERY": "1",
            "DRIFT_SKIP_ROWS": "52000",
            "DRIFT_REFERENCE_ROWS": "2000",
            "DRIFT_WINDOW_ROWS": "2000",
            # A heavier line trained off the decision path (gradient-boosted trees, retrained in the trainer process
            # every 5,000 labels) as the challenger, compared with the champion every 5,000 labels: the rule promotes
            # it only if its AP is better beyond the bootstrap interval (the summary says which it did).
            "CHALLENGER_MODEL": os.environ.get("CHALLENGER_MODEL", "gbdt:every=5000"),
            "AUTO_PROMOTE_MIN_LABELS": os.environ.get("AUTO_PROMOTE_MIN_LABELS", "5000"),
        }
        log_path = home / "worker.log"
        with log_path.open("wb") as log:
            worker = subprocess.Popen([sys.executable, "-m", "app"], cwd=REPO_ROOT, env=env, stdout=log,
                                      stderr=subprocess.STDOUT)  # fmt: skip
        print(f"starting the worker (log {log_path.relative_to(REPO_ROOT)}, http://127.0.0.1:{web_port}/metrics)")
        print(f"operator page: http://127.0.0.1:{web_port}/ (live while the demo runs)")
        prometheus = prometheus_local.start([f"127.0.0.1:{web_port}"], home / "prometheus")
        if prometheus is None:
            print("Prometheus UI: not started (no prometheus binary: scripts/install_system_packages.sh installs it)")
        else:
            print(f"Prometheus UI: {prometheus[1]}/ (scraping the worker; alert rules loaded)", flush=True)
        wait_http_ok(f"http://127.0.0.1:{web_port}/ready", worker, timeout_s=120)
        trainer_url = f"http://127.0.0.1:{trainer_port}"
        wait_http_ok(f"{trainer_url}/ready", worker, timeout_s=120)
        status = trainer_status(trainer_url)
        print(f"trainer process: pid {status.get('pid')} (the worker's is {worker.pid}), {status.get('role')}, "
              f"{trainer_url}/status; it learns off the worker's event loop", flush=True)  # fmt: skip

        config = config_from(args)
        print(f"publishing simulated traffic at {args.rate_tps:g} tx/s for {args.duration_s:g} s ...", flush=True)
        events = Resumable(with_bad_input(wire_events(config, args.label_delay_days * 86400), args.bad_every))
        half_s = args.duration_s / 2
        first = asyncio.run(publish(bootstrap, events, "transactions", "labels", rate_tps=args.rate_tps,
                                    duration_s=half_s))  # fmt: skip
        # Halfway, an analyst's velocity rule goes live on the running worker (no redeploy).
        rule_file = home / "velocity-rule.json"
        rule_file.write_bytes(dumps(VELOCITY_RULE))
        added = subprocess.run([sys.executable, "-m", "app", "rules", "add", "--file", str(rule_file), "--reason",
                                "demo: bursts on one card"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                               timeout=60)  # fmt: skip
        print(
            f"halfway: rule {VELOCITY_RULE['id']!r} added ({VELOCITY_RULE['expression']}, "
            f"{VELOCITY_RULE['action']}): {(added.stdout or added.stderr).strip().splitlines()[-1:]}",
            flush=True,
        )
        second = asyncio.run(publish(bootstrap, events, "transactions", "labels", rate_tps=args.rate_tps,
                                     duration_s=half_s))  # fmt: skip
        sent = first.transactions + second.transactions
        report = second
        report.transactions, report.labels = sent, first.labels + second.labels
        report.seconds = first.seconds + second.seconds
        print(f"published {sent} messages to transactions and {report.labels} labels; waiting for the worker ...")

        def done(records: list[object]) -> bool:
            return len(records) >= sent

        predictions = [loads(r.value or b"") for r in consume(bootstrap, "predictions", lambda rs: False, 0.1)]
        deadline = time.monotonic() + 120
        letters: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            predictions = [loads(r.value or b"") for r in consume(bootstrap, "predictions", done, 10)]
            letters = [loads(r.value or b"") for r in consume(bootstrap, "transactions-dlq", lambda rs: False, 1)]
            if len(predictions) + len(letters) >= sent:
                break
        health = [loads(r.value or b"") for r in consume(bootstrap, "health", lambda rs: False, 1)]
        summarize(config, predictions, letters, health, sent, report.achieved_tps)
        time.sleep(min(float(env["MODEL_PUBLISH_INTERVAL_S"]), 10.0))  # its next version, with what it read last
        status = trainer_status(trainer_url)
        print(
            f"  trainer process          pid {status.get('pid')} {status.get('role')}, labels learned "
            f"{status.get('labels_seen')}, waiting {status.get('pending')}, version {status.get('champion_version')}"
        )
        if prometheus is not None:
            try:
                print(f"  prometheus               {prometheus_local.status_line(prometheus[1])}")
            except OSError as exc:  # the summary above stands without it
                print(f"  prometheus               API not answering: {exc}")
        models_summary(bootstrap, predictions, f"http://127.0.0.1:{web_port}")
        rules_summary(predictions, rule_file, env)
        drift = subprocess.run([sys.executable, "-m", "app", "drift"], cwd=REPO_ROOT, env=env, capture_output=True,
                               text=True, timeout=60)  # fmt: skip
        print("drift without labels (python -m app drift):")
        print("\n".join(f"  {line}" for line in (drift.stdout or drift.stderr).splitlines()))
        return 0
    finally:
        if prometheus is not None:
            stop_process(prometheus[0])
        if worker is not None:
            stop_process(worker)
        kafka_local.stop(data_dir)
        print("stopped Prometheus, the worker and Kafka" if prometheus is not None else "stopped the worker and Kafka")


VELOCITY_RULE = {"id": "velocity-1h", "expression": "customer_nb_tx_1hour >= 3", "action": "review",
                 "description": "three or more transactions of one card within an hour"}  # fmt: skip


class Resumable:
    """An iterator a loop can stop and another resume, the item the first one stopped on included (``publish``
    takes the next event before it checks the time)."""

    def __init__(self, events: Iterator[Event]) -> None:
        self.events = events
        self.held: Event | None = None

    def __iter__(self) -> Iterator[Event]:
        while True:
            if self.held is None:
                item = next(self.events, None)
                if item is None:
                    return
                self.held = item
            yield self.held
            self.held = None


def rules_summary(predictions: list[dict[str, object]], rule_file: Path, env: dict[str, str]) -> None:
    """The velocity rule's hits since it went live, and its backtest on the first half (before it existed)."""
    rule_id = VELOCITY_RULE["id"]
    decided_with = [p for p in predictions if p.get("rule_set_version") not in (None, 0)]
    hits = [p for p in decided_with if rule_id in (p.get("rules") or [])]
    print(f"rule {rule_id!r}: {len(hits)} hits in the {len(decided_with)} predictions decided after it went live "
          f"({Counter(str(p.get('decision')) for p in hits)})")  # fmt: skip
    before = sorted(str(p["timestamp"]) for p in predictions if p.get("rule_set_version") in (None, 0))
    if not before or not decided_with:
        return
    since = min(str(p["timestamp"]) for p in decided_with)
    backtest = subprocess.run([sys.executable, "-m", "app", "rules", "backtest", "--rule", str(rule_file), "--without",
                               rule_id, "--from", before[0], "--to", since, "--no-progress"], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    print(f"backtest of {rule_id!r} on the first half ({before[0]} to {since}, python -m app rules backtest):")
    print("\n".join(f"  {line}" for line in (backtest.stdout or backtest.stderr).splitlines()[:30]))


def models_summary(bootstrap: str, predictions: list[dict[str, object]], url: str) -> None:
    """The challenger line against the champion (the rule's comparisons and any promotion, from ``model-events``),
    and the decision latency of the predictions each line served: before and after a promotion."""
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=5) as response:
            view = loads(response.read())
    except OSError as exc:
        print(f"models: /models not answering ({exc})")
        return
    line_of = {str(v["version"]): str(v.get("model_name")) for v in view["versions"]}
    events = [loads(r.value or b"") for r in consume(bootstrap, "model-events", lambda rs: False, 1)]
    promotions = [e for e in events if e.get("action") == "promoted" and e.get("by") == "auto"]
    challengers = [v for v in view["versions"] if v.get("role") == "challenger"]
    last = challengers[0] if challengers else {}
    comparison = last.get("comparison") or {}
    print(f"challenger line {last.get('model_name', '(none published)')}: {len(challengers)} versions, "
          f"{comparison.get('number', 0)} comparisons with the champion (last: challenger AP "
          f"{comparison.get('challenger_ap')}, champion AP {comparison.get('champion_ap')})")  # fmt: skip
    for e in promotions:
        print(f"  promoted {e['version']} ({line_of.get(str(e['version']))}) by the rule: {e.get('reason')}")
    if not promotions:
        print("  not promoted: the rule promotes only an AP better beyond its bootstrap interval")
    served: dict[str, list[float]] = {}
    for p in predictions:
        line = line_of.get(str(p.get("model_version")), "the prior (no version yet)")
        served.setdefault(line, []).append(float(p.get("latency_ms") or 0.0))  # type: ignore[arg-type]
    for line, latencies in served.items():
        q = percentiles(latencies, (50, 99))
        print(f"  decisions served by {line}: {len(latencies)}, latency p50 {q['p50']:.1f} ms, p99 {q['p99']:.1f} ms")


def trainer_status(url: str) -> dict[str, object]:
    """The trainer process's ``/status`` (empty when it does not answer: the summary says so, it does not stop)."""
    try:
        with urllib.request.urlopen(f"{url}/status", timeout=5) as response:
            status = loads(response.read())
    except OSError:
        return {}
    return status if isinstance(status, dict) else {}


def summarize(config, predictions, letters, health, sent, achieved_tps) -> None:  # type: ignore[no-untyped-def]
    truth = {tx.tx_id: tx.is_fraud for tx in simulate(config)}
    scored = [p for p in predictions if p["tx_id"] in truth]
    y_true = [truth[p["tx_id"]] for p in scored]
    decisions = decision_summary(y_true, [p["is_fraud"] for p in scored])
    latency = percentiles([p["latency_ms"] for p in predictions], (50, 99))
    codes = Counter(str(letter["error"]) for letter in letters)
    print()
    print("summary")
    print(f"  messages published       {sent} ({achieved_tps:.0f}/s, bad ones included)")
    print(f"  predictions              {len(predictions)}")
    print(f"  dead letters             {len(letters)} {dict(codes) if codes else ''}")
    print(f"  unaccounted              {sent - len(predictions) - len(letters)}")
    print(f"  frauds                   {decisions.frauds}")
    print(f"  frauds caught            {decisions.caught}")
    print(f"  frauds missed            {decisions.missed}")
    print(f"  false alarms             {decisions.false_alarms}")
    print(f"  AUC ROC / AP             {roc_auc(y_true, [p['fraud_probability'] for p in scored]):.3f} / "
          f"{average_precision(y_true, [p['fraud_probability'] for p in scored]):.3f}")  # fmt: skip
    print(f"  worker latency p50/p99   {latency['p50']:.2f} / {latency['p99']:.2f} ms (receipt to scored)")
    if health:
        last = health[-1]
        lat = last["latency_ms"]
        print(f"  last health              {last['status']} {last['issues']}, labels learned {last['labels_learned']}")
        print(f"  health window p50/p99    {lat['p50']:.2f} / {lat['p99']:.2f} ms (receipt to committed), "
              f"{last['throughput_tps']:.0f} tx/s")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
