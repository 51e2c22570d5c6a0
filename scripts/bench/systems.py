"""One system's run on the broker: started as its own process, warmed up, then the maximum-throughput phase
(with what it wrote and, for the worker, its py-spy samples and metrics) and the held rates."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from local_processes import free_port, scrape, stop_process, wait_http_ok
from tqdm import tqdm

from bench.process import cost_split, dir_bytes, peak_rss_bytes, schedstat_s, start_profiler, wait_idle
from bench.traffic import Label, Message, create_topics, drive
from bench.written import disk_bytes, end_offsets, messages_per_transaction, written_topics

REPO_ROOT = Path(__file__).resolve().parents[2]
# The raw client, the raw client in Kafka transactions shaped like the decision loop (exactly once alone), the worker.
SYSTEMS = ("passthrough", "passthrough-eos", "worker")


def run_system(
    name: str,
    bootstrap: str,
    args: argparse.Namespace,
    work: Path,
    phases: dict[str, list[Message]],
    progress: tqdm | None = None,
    cwd: Path = REPO_ROOT,
    labels: dict[str, list[Label]] | None = None,
    tag: str = "",
) -> dict[str, Any]:
    """Run system ``name``; a ``worker@<ref>`` runs the worker of the checkout in ``cwd`` (the baseline commit).
    With ``labels`` (per phase, one per transaction), a worker's phases publish them too: its trainer learns beside
    the decisions being timed. ``tag`` tells repeated runs of one system apart (their logs and data directories)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in name)  # worker@<ref>: no "@" in topic names
    run = f"{safe}-{uuid.uuid4().hex[:8]}"  # topics, groups and state of this run only
    source, sink = f"bench-{run}-transactions", f"bench-{run}-predictions"
    asyncio.run(create_topics(bootstrap, [source, sink], args.partitions))
    log = (work / f"{name}{tag}.log").open("wb")
    data_dir = work / f"{name}{tag}-data"
    app_id: str | None = None
    metrics_url = None
    if name.startswith("passthrough"):
        command = [sys.executable, "scripts/passthrough.py", "--bootstrap-servers", bootstrap, "--source", source,
                   "--sink", sink, "--group", f"bench-{run}"]  # fmt: skip
        if name == "passthrough-eos":
            command.append("--transactional")
        env = dict(os.environ)
        named = [sink]
    else:
        app_id = f"bench-{run}-app"  # its own prefix: no topic of the benchmark's starts with it
        topics = {"TRANSACTIONS_TOPIC": source, "PREDICTIONS_TOPIC": sink, "LABELS_TOPIC": f"bench-{run}-labels",
                  "HEALTH_TOPIC": f"bench-{run}-health", "TRANSACTIONS_DLQ_TOPIC": f"bench-{run}-transactions-dlq",
                  "LABELS_DLQ_TOPIC": f"bench-{run}-labels-dlq",
                  # Its own registry: on the default "models" topic a worker of the run served the versions another
                  # worker's trainer had published before it (another line's, with --worker-variant), until its own
                  # trainer published one.
                  "MODELS_TOPIC": f"bench-{run}-models", "MODEL_EVENTS_TOPIC": f"bench-{run}-model-events"}  # fmt: skip
        web_port = free_port()
        metrics_url = f"http://127.0.0.1:{web_port}/metrics"
        command = [sys.executable, "-m", "app"]
        env = {**os.environ, **topics, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "APP_ID": app_id, "WORKER_ID": run,
               "TOPIC_PARTITIONS": str(args.partitions), "DATA_DIR": str(data_dir), "WEB_PORT": str(web_port),
               "GRPC_PORT": str(free_port()), "WEB_BIND": "127.0.0.1", "LOG_LEVEL": "warn"}  # fmt: skip
        if name == "worker":  # this checkout's worker only, never the baseline's
            env.update(dict(item.split("=", 1) for item in getattr(args, "worker_env", None) or []))
        variant = (getattr(args, "variant_env", None) or {}).get(name)  # --worker-variant: this checkout's too
        if variant is not None:
            env.update(dict(item.split("=", 1) for item in variant))
        named = [sink, topics["TRANSACTIONS_DLQ_TOPIC"], topics["HEALTH_TOPIC"], topics["LABELS_DLQ_TOPIC"]]
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    result: dict[str, Any] = {"system": name, "run": run, "app_id": app_id}

    def labelled(phase: str) -> tuple[str, list[Label]] | None:
        if labels is None or app_id is None or phase not in labels:
            return None
        return env["LABELS_TOPIC"], labels[phase]

    try:
        if metrics_url is not None:
            wait_http_ok(metrics_url.replace("/metrics", "/ready"), process, 120)
        # warm-up: the consumer group joins and the first fetches happen outside the measurements
        asyncio.run(drive(bootstrap, source, sink, phases["warmup"], 0, 120, progress, labelled("warmup")))
        if metrics_url is not None and getattr(args, "wait_model_s", 0.0) > 0:
            result["model_before"] = wait_for_version(metrics_url, process, args.wait_model_s,
                                                      getattr(args, "wait_model_labels", 0))  # fmt: skip
        wait_idle(process.pid)
        written = asyncio.run(written_topics(bootstrap, app_id, named))
        offsets_before = asyncio.run(end_offsets(bootstrap, written))
        samples_before = scrape(metrics_url) if metrics_url else {}
        profile = work / f"{name}{tag}-profile.txt"
        profiled = name == "worker" or (name.startswith("worker") and getattr(args, "profile_every_worker", False))
        spy = start_profiler(process.pid, profile) if profiled else None
        m = result["max_throughput"] = asyncio.run(
            drive(bootstrap, source, sink, phases["max"], 0, args.timeout_s, progress, labelled("max"))
        )
        m["busy_s_after_last_output"] = wait_idle(process.pid)  # the learning backlog, for the worker
        m["sustained_tps_until_idle"] = m["published"] / (m["seconds"] + max(m["busy_s_after_last_output"] - 1.0, 0))
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
            result["cpu_split"] = cost_split(profile) if profile.exists() else {}
        written = asyncio.run(written_topics(bootstrap, app_id, named))  # any topic created during the phase
        per_tx = messages_per_transaction(bootstrap, written, offsets_before, m["published"])
        if metrics_url:
            samples = scrape(metrics_url)
            batches = samples.get("fraud_decision_batch_records_count", 0) - samples_before.get(
                "fraud_decision_batch_records_count", 0
            )
            per_tx["kafka_transactions"] = int(batches)
            per_tx["tx_per_kafka_transaction"] = m["published"] / batches if batches else None
            per_tx["markers_or_aborted_per_kafka_transaction"] = (
                per_tx["total"]["markers_or_aborted"] / batches if batches else None
            )
            per_tx["scored"] = int(samples.get('fraud_transactions_total{outcome="scored"}', 0)
                                   - samples_before.get('fraud_transactions_total{outcome="scored"}', 0))  # fmt: skip
        result["messages_per_transaction"] = per_tx
        result["rates"] = []
        for rate in args.rates:
            before = scrape(metrics_url) if metrics_url else {}
            ran_before, waited_before = schedstat_s(process.pid)
            started_at = time.time()
            held = asyncio.run(
                drive(bootstrap, source, sink, phases[f"r{rate:g}"], rate, args.timeout_s, progress,
                      labelled(f"r{rate:g}"))
            )  # fmt: skip
            ran, waited = schedstat_s(process.pid)
            # The phase's wall-clock span (Unix seconds), to pick its lines out of the worker's log
            # (scripts/loop_steps.py --phase: the slow steps of LOOP_SLOW_STEP_MS during this rate).
            held["wall_start_s"], held["wall_end_s"] = round(started_at, 3), round(time.time(), 3)
            held["cpu_ran_s"], held["cpu_waited_s"] = round(ran - ran_before, 3), round(waited - waited_before, 3)
            if metrics_url:  # the event loop's lag, the collector's pauses and the batches during this rate
                after = scrape(metrics_url)
                held["loop_lag"] = histogram_delta(before, after, "fraud_event_loop_lag_seconds")
                held["gc_pauses"] = {g: histogram_delta(before, after, "fraud_gc_pause_seconds", f'generation="{g}"')
                                     for g in ("0", "1", "2")}  # fmt: skip
                # What the collections freed (prometheus_client's gc.get_stats() counters): the cyclic garbage made
                held["gc_counts"] = gc_counts(before, after)
                # Each partition's batch, processed and committed: the part of a decision's latency the loop's
                # commits take (beside what the loop's stalls add).
                held["batch_seconds"] = histogram_delta(before, after, "fraud_decision_batch_seconds")
            result["rates"].append(held)
        if labels is not None and metrics_url:  # what the trainer learned by the end (its worker's /metrics)
            end = scrape(metrics_url)
            result["labels_learned"] = {outcome: int(end.get(f'fraud_labels_total{{outcome="{outcome}"}}', 0))
                                        for outcome in ("received", "learned", "implicit_negative")}  # fmt: skip
        if metrics_url is not None:
            result["model_after"] = model_version(scrape(metrics_url))
        result["peak_rss_bytes"] = peak_rss_bytes(process.pid)
        if app_id is not None:
            result["topic_disk_bytes"] = asyncio.run(disk_bytes(bootstrap, written))
    finally:
        stop_process(process)
        log.close()
    if name.startswith("worker"):
        result["state_bytes"] = dir_bytes(data_dir)  # what the worker leaves in DATA_DIR after its shutdown
    return result


def model_version(samples: dict[str, float]) -> str | None:
    """The version a worker scores with, from its /metrics (``fraud_model_info{version="..."} 1``).

    >>> model_version({'fraud_model_info{version="gbdt@prior"}': 0.0, 'fraud_model_info{version="v3"}': 1.0})
    'v3'
    """
    prefix = 'fraud_model_info{version="'
    return next((key[len(prefix) : -2] for key, value in samples.items() if key.startswith(prefix) and value), None)


def wait_for_version(metrics_url: str, process: subprocess.Popen[bytes], timeout_s: float, labels: int = 0) -> str:
    """Poll the worker's /metrics until it scores with a published version (not ``<name>@prior``) that learned at
    least ``labels`` labels (``fraud_model_labels_learned``: a gbdt version scores the prior until a retrain, so
    ask for more than its ``every``); the version's name."""
    deadline = time.monotonic() + timeout_s
    version, learned = None, 0.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited ({process.returncode}) before its first published version")
        samples = scrape(metrics_url)
        version, learned = model_version(samples), samples.get("fraud_model_labels_learned", 0.0)
        if version is not None and not version.endswith("@prior") and learned >= labels:
            return version
        time.sleep(1.0)
    raise RuntimeError(f"no published version of {labels} labels within {timeout_s:.0f} s ({version}, {learned:.0f})")


def gc_counts(before: dict[str, float], after: dict[str, float]) -> dict[str, dict[str, int]]:
    """Each generation's collections and the objects they freed between two scrapes (the default registry's
    ``python_gc_*`` counters: :func:`gc.get_stats`), e.g. whether the worker makes cyclic garbage.

    >>> before = {'python_gc_collections_total{generation="2"}': 3.0}
    >>> after = {'python_gc_collections_total{generation="2"}': 5.0,
    ...          'python_gc_objects_collected_total{generation="2"}': 40.0}
    >>> gc_counts(before, after)["2"]
    {'collections': 2, 'collected': 40}
    """
    counts = {}
    for g in ("0", "1", "2"):
        label = f'{{generation="{g}"}}'
        counts[g] = {
            what: int(after.get(f"python_gc_{name}_total{label}", 0) - before.get(f"python_gc_{name}_total{label}", 0))
            for what, name in (("collections", "collections"), ("collected", "objects_collected"))
        }
    return counts


def histogram_delta(before: dict[str, float], after: dict[str, float], name: str, labels: str = "") -> dict[str, Any]:
    """A histogram's observations between two scrapes: count, sum and the count over each bucket's bound (empty when
    the process does not export it).

    >>> before = {'h_bucket{le="0.1"}': 1.0, 'h_bucket{le="+Inf"}': 2.0, "h_count": 2.0, "h_sum": 0.5}
    >>> after = {'h_bucket{le="0.1"}': 5.0, 'h_bucket{le="+Inf"}': 7.0, "h_count": 7.0, "h_sum": 0.9}
    >>> histogram_delta(before, after, "h")
    {'count': 5, 'sum': 0.4, 'over': {'0.1': 1}}
    """
    prefix = f'{name}_bucket{{{labels + "," if labels else ""}le="'
    selector = f"{{{labels}}}" if labels else ""
    count_key = f"{name}_count{selector}"
    if count_key not in after:
        return {}
    count = int(after[count_key] - before.get(count_key, 0.0))
    total = after.get(f"{name}_sum{selector}", 0.0) - before.get(f"{name}_sum{selector}", 0.0)
    over = {}
    for key, value in after.items():
        if key.startswith(prefix) and not key.endswith('"+Inf"}'):
            bound = key[len(prefix) : -2]
            over[bound] = count - int(value - before.get(key, 0.0))
    return {"count": count, "sum": round(total, 6), "over": over}
