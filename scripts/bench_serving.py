#!/usr/bin/env python3
"""Latency of synchronous scoring (issue 10) over REST and gRPC at held request rates, with the server's own figures.

    .venv/bin/python scripts/bench_serving.py --bootstrap 127.0.0.1:39092 --rates 200 1000 --duration-s 20

Starts one worker (``python -m app``, 4 partitions, its own topics) on the broker (``--bootstrap``; without it a
local broker is started with ``scripts/kafka_local.py`` and stopped after), publishes ``--history`` simulated
transactions and waits until they are decided, then for each rate and API holds that rate of requests for
``--duration-s`` from an open-loop Python load generator in this process (aiohttp and grpc.aio clients; a
request is sent at its scheduled time whether or not earlier ones have answered) and reports:

- client-side latency p50/p95/p99/max, measured from each request's scheduled send time (a generator that falls
  behind shows as latency, not as a lower rate), and the rate achieved;
- the server's own ``fraud_sync_predict_latency_seconds{api}`` over the same phase (the difference of two
  scrapes of ``/metrics``; percentiles interpolated within the histogram's buckets);
- a baseline in the same run, at the same rate: REST ``GET /health`` and the gRPC health ``Check``, the floor of
  each transport with this client, server and machine.

Requests score transactions that follow the history in event time for customers and terminals it holds, each a
new ``tx_id``; nothing is published, and no stream traffic runs beside (the decision path is idle).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import aiohttp  # noqa: E402
import grpc  # noqa: E402
import kafka_local  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from local_processes import free_port, stop_process, wait_http_ok  # noqa: E402

from app.kafka.clients import produce  # noqa: E402
from app.learning.quality import percentiles  # noqa: E402
from app.serialization import dumps  # noqa: E402
from app.serving.protos import fraud_serving_pb2 as pb  # noqa: E402
from app.serving.protos import fraud_serving_pb2_grpc as pb_grpc  # noqa: E402
from lab.simulator import SimulatorConfig, simulate, to_wire  # noqa: E402

HISTOGRAM = "fraud_sync_predict_latency_seconds"


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def metric_value(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def buckets(text: str, api: str) -> dict[float, float]:
    """Cumulative counts by upper bound of the histogram's ``api`` series."""
    out: dict[float, float] = {}
    pattern = rf'^{HISTOGRAM}_bucket{{api="{api}",le="([^"]+)"}} ([0-9.e+-]+)$'
    for le, count in re.findall(pattern, text, re.MULTILINE):
        out[float("inf") if le == "+Inf" else float(le)] = float(count)
    return out


def bucket_percentiles(before: dict[float, float], after: dict[float, float], qs: tuple[float, ...]) -> dict[str, Any]:
    """Percentiles of the observations between two scrapes, linear within a bucket (Prometheus'
    ``histogram_quantile``); the count too."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    out: dict[str, Any] = {"count": int(total)}
    for q in qs:
        if not total:
            out[f"p{q:g}"] = float("nan")
            continue
        rank = q / 100 * total
        lower_bound, lower_count = 0.0, 0.0
        for bound, count in zip(bounds, counts, strict=True):
            if count >= rank:
                if bound == float("inf"):
                    out[f"p{q:g}"] = lower_bound
                else:
                    share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
                    out[f"p{q:g}"] = lower_bound + (bound - lower_bound) * share
                break
            lower_bound, lower_count = bound, count
    return out


async def hold_rate(rate: float, duration_s: float, call: Callable[[int], Awaitable[str]]) -> dict[str, Any]:
    """Open loop: request ``i`` starts at ``start + i / rate``; latency from that scheduled time to its answer.
    ``call`` returns ``"ok"`` or why it failed (a status), counted by reason."""
    n = int(rate * duration_s)
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    start = time.perf_counter() + 0.05

    async def one(i: int, at: float) -> None:
        try:
            outcome = await call(i)
        except (aiohttp.ClientError, TimeoutError) as exc:  # counted, the rate goes on
            outcome = type(exc).__name__
        if outcome == "ok":
            latencies.append(time.perf_counter() - at)
        else:
            failures[outcome] += 1

    tasks = []
    for i in range(n):
        at = start + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i, at)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    figures = {f"{k}_ms": v * 1000 for k, v in percentiles(latencies, (50, 95, 99, 100)).items()}
    return {"requests": n, "failed": dict(failures), "achieved_rps": n / elapsed, **figures}


def history_and_requests(n_history: int, n_requests: int, seed: int) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Simulated traffic: the first ``n_history`` to publish, then the requests (the next transactions in event time,
    of customers the history holds)."""
    txs = simulate(SimulatorConfig(n_customers=1000, n_terminals=2000, n_days=max(6, n_history // 1500 + 4),
                                   seed=seed))  # fmt: skip
    history = [to_wire(t) for t in txs[:n_history]]
    seen = {t["customer_id"] for t in history}
    later = [to_wire(t) for t in txs[n_history:] if t.customer_id in seen]
    if not later:
        raise RuntimeError("the simulation ended with the history: lower --history")
    requests = []
    for i in range(n_requests):
        tx = dict(later[i % len(later)])
        tx["tx_id"] = f"sync-{i}"
        requests.append(dumps(tx))
    return history, requests


async def run_phases(args: argparse.Namespace, web_url: str, grpc_target: str, requests: list[bytes]) -> list[dict]:
    results = []
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        channel = grpc.aio.insecure_channel(grpc_target)
        scoring = pb_grpc.FraudServingStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        async def rest_predict(i: int) -> str:
            async with session.post(web_url + "/predict", data=requests[i % len(requests)]) as response:
                body = await response.read()
                return "ok" if response.status == 200 else f"{response.status} {body[:40]!r}"

        async def rest_floor(i: int) -> str:
            async with session.get(web_url + "/health") as response:
                await response.read()
                return "ok" if response.status == 200 else str(response.status)

        async def grpc_predict(i: int) -> str:
            try:
                await scoring.Predict(pb.PredictRequest(transaction_json=requests[i % len(requests)]), timeout=30)
            except grpc.RpcError as exc:
                return f"{exc.code().name} {str(exc.details())[:40]}"
            return "ok"

        async def grpc_floor(i: int) -> str:
            try:
                answer = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
            except grpc.RpcError as exc:
                return exc.code().name
            return "ok" if answer.status == health_pb2.HealthCheckResponse.SERVING else "NOT_SERVING"

        await hold_rate(100, 2, rest_predict)  # warm-up: connections, caches
        await hold_rate(100, 2, grpc_predict)
        for rate in args.rates:
            for api, call, floor in (("rest", rest_predict, rest_floor), ("grpc", grpc_predict, grpc_floor)):
                before = scrape(web_url + "/metrics")
                measured = await hold_rate(rate, args.duration_s, call)
                after = scrape(web_url + "/metrics")
                server = bucket_percentiles(buckets(before, api), buckets(after, api), (50, 95, 99))
                baseline = await hold_rate(rate, args.duration_s, floor)
                results.append({"rate_rps": rate, "api": api, "client": measured, "server": server,
                                "baseline": baseline})  # fmt: skip
                print(f"{api} at {rate} req/s: client {measured}, server {server}, baseline {baseline}", flush=True)
        await channel.close()
    return results


def table(results: list[dict[str, Any]]) -> list[str]:
    def ms(v: float) -> str:
        return f"{v:.2f}" if v == v else "-"

    lines = [
        "| API | held rate (req/s) | achieved | client p50 / p95 / p99 / max (ms) | server p50 / p95 / p99 (ms) | "
        "baseline client p50 / p99 (ms) | p99 / baseline p99 | failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c, s, b = r["client"], r["server"], r["baseline"]
        ratio = c["p99_ms"] / b["p99_ms"] if b["p99_ms"] else float("nan")
        failed = sum(c["failed"].values())
        lines.append(
            f"| {r['api']} | {r['rate_rps']:g} | {c['achieved_rps']:.0f} | {ms(c['p50_ms'])} / {ms(c['p95_ms'])} / "
            f"{ms(c['p99_ms'])} / {ms(c['p100_ms'])} | {ms(s['p50'] * 1000)} / {ms(s['p95'] * 1000)} / "
            f"{ms(s['p99'] * 1000)} | {ms(b['p50_ms'])} / {ms(b['p99_ms'])} | {ratio:.1f} | {failed} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
                        help="broker (default: $KAFKA_BOOTSTRAP_SERVERS; none: start a local one)")  # fmt: skip
    parser.add_argument("--rates", type=float, nargs="+", default=[200.0, 1000.0], help="held request rates")
    parser.add_argument("--duration-s", type=float, default=20.0, help="seconds per rate and API")
    parser.add_argument("--history", type=int, default=20_000, help="transactions published before measuring")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    broker_dir = work / "kafka"
    bootstrap = args.bootstrap
    if not bootstrap:
        bootstrap = kafka_local.start(port=free_port(), controller_port=free_port(), data_dir=broker_dir, wipe=True)
    run = uuid.uuid4().hex[:8]
    names = ("TRANSACTIONS", "LABELS", "PREDICTIONS", "HEALTH", "TRANSACTIONS_DLQ", "LABELS_DLQ")
    topics = {f"{name}_TOPIC": f"bench-serving-{run}-{name.lower()}" for name in names}
    web_port, grpc_port = free_port(), free_port()
    env = {**os.environ, **topics, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "APP_ID": f"bench-serving-{run}",
           "WORKER_ID": "bench", "TOPIC_PARTITIONS": "4", "DATA_DIR": str(work / "worker"), "WEB_PORT": str(web_port),
           "GRPC_PORT": str(grpc_port), "WEB_BIND": "127.0.0.1", "LOG_LEVEL": "warn"}  # fmt: skip
    web_url = f"http://127.0.0.1:{web_port}"
    log_path = work / "worker.log"
    history, requests = history_and_requests(args.history, 50_000, args.seed)
    with log_path.open("wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "app"], cwd=REPO_ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_http_ok(web_url + "/ready", worker, 120)
        produce(bootstrap, topics["TRANSACTIONS_TOPIC"], [(t["customer_id"].encode(), dumps(t)) for t in history])
        deadline = time.monotonic() + 300
        while metric_value(scrape(web_url + "/metrics"), 'fraud_transactions_total{outcome="scored"}') < len(history):
            if time.monotonic() > deadline:
                raise RuntimeError(f"history not decided in time; see {log_path}")
            time.sleep(0.5)
        print(f"history of {len(history)} transactions decided; measuring", flush=True)
        random.seed(args.seed)
        results = asyncio.run(run_phases(args, web_url, f"127.0.0.1:{grpc_port}", requests))
    finally:
        stop_process(worker)
        if not args.bootstrap:
            kafka_local.stop(data_dir=broker_dir)
    print()
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"history {len(history)} transactions, {args.duration_s:g} s per rate and API")  # fmt: skip
    print("\n".join(table(results)))
    for r in results:
        for phase in ("client", "baseline"):
            if r[phase]["failed"]:
                print(f"failed, {r['api']} {phase} at {r['rate_rps']:g} req/s: {r[phase]['failed']}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
