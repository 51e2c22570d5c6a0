#!/usr/bin/env python3
"""End-to-end throughput and latency of the worker on a real broker, against raw aiokafka passthroughs, and the
Faust ceiling on the same broker, in one run.

    python scripts/benchmark.py --out results/benchmark.json     # defaults: 50,000 tx; 200 and 1000 tx/s for 60 s
    python scripts/benchmark.py --baseline-ref HEAD~1             # and the previous commit's worker, same run
    python scripts/benchmark.py --rules 50                        # the workers with 50 analysts' rules in force
    # the gbdt line's trees against the default model (worker-default, the baseline), each timed once it scores
    # with a published version of 2,000 labels or more
    python scripts/benchmark.py --labels --labels-warmup-only --warmup 3000 --wait-model-s 120 \
        --wait-model-labels 2000 --worker-variant default --worker-env MODEL_NAME=gbdt:every=1000

The three systems (``passthrough``: the raw client; ``passthrough-eos``: the raw client committing each
partition's batch in a Kafka transaction, exactly once and nothing else; ``worker``) run as their own process
on the same broker in the same run and are fed the same simulated transactions (one continuous stream in event
time, cut into phases); outputs are read with ``isolation_level="read_committed"`` (the plain passthrough writes
outside transactions, which read_committed reads as they come):
- maximum sustained throughput: N transactions published as fast as possible, time until the last committed
  output is read;
- latency from publish to committed output read (p50, p95, p99, p99.9) at fixed offered rates, held by the
  publisher, which reports whether it kept each rate;
- messages per transaction of the maximum-throughput phase: on every topic the system writes (for the worker:
  predictions, dead letters, health, its ``<APP_ID>-*`` topics), the offsets it took (end minus start; Kafka
  transaction commit markers take offsets too) and the records a read_committed reader sees, divided by the
  transactions published; for the worker also the Kafka transactions it committed (its
  ``fraud_decision_batch_records_count``);
- peak memory (VmHWM); for the worker the bytes of its DATA_DIR and of its topics on the broker's disk, and
  the CPU split from py-spy samples taken during the throughput phase;
- the Faust ceiling (``scripts/faust_ceiling.py``): how fast raw aiokafka and Faust agents of several shapes
  move small messages on the same broker, first to last output.

A compact summary in markdown (systems, Faust ceiling, messages per transaction) closes the printed output.

The code is in ``scripts/bench/``: traffic (the load and its timing), written (what a system wrote to the broker),
process (the process under test), systems (one system's run), report; this file is its command line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import faust_ceiling  # noqa: E402
import kafka_local  # noqa: E402
from bench import report as bench_report  # noqa: E402
from bench.systems import SYSTEMS, run_system  # noqa: E402
from bench.traffic import Label, traffic  # noqa: E402
from local_processes import free_port  # noqa: E402
from progress_bars import add_progress_argument, bar  # noqa: E402

from app.serialization import dumps  # noqa: E402


async def publish_rules(bootstrap: str, n: int) -> None:
    """``n`` active rules of scripts/bench_rules.py's mix on the default ``rules`` topic, which the workers of the
    run read (a baseline from before the rules reads none)."""
    import random
    import time

    from bench_rules import rules

    from app.kafka.clients import Connection
    from app.kafka.rule_topics import publish_rule
    from app.kafka.topics import create_topics, topic_specs
    from app.rules.events import rule_event
    from app.serialization import isoformat_utc
    from app.settings import load

    settings = load({"KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    names = (settings.rules_topic, settings.rule_lists_topic)
    await create_topics(Connection.of(settings), [s for s in topic_specs(settings) if s.name in names],
                        replication_factor=1)  # fmt: skip
    for rule in rules(n, random.Random(1)):
        event = rule_event(rule, "added", by="benchmark", reason="", timestamp=isoformat_utc(time.time()))
        await publish_rule(settings, event)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transactions", type=int, default=50_000, help="for the maximum-throughput phase")
    parser.add_argument("--rates", type=float, nargs="*", default=[200, 1000], help="offered rates held, tx/s")
    parser.add_argument("--rate-seconds", type=float, default=60, help="how long each rate is held")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--timeout-s", type=float, default=300, help="wait for outputs after the last publish")
    parser.add_argument("--faust-ceiling", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the Faust ceiling (scripts/faust_ceiling.py) on the same broker")  # fmt: skip
    parser.add_argument("--ceiling-messages", type=int, default=60_000)
    parser.add_argument("--ceiling-variants", nargs="+", default=list(faust_ceiling.DEFAULT_VARIANTS))
    parser.add_argument("--ceiling-partitions", type=int, default=4)
    parser.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
                        help="a broker to use; without one, a local broker is started and stopped")  # fmt: skip
    parser.add_argument("--baseline-ref", help="also run the worker of this git commit (from a temporary worktree, "
                        "on the same venv) just before the current one, in the same run: worker@<ref>")  # fmt: skip
    parser.add_argument("--worker-env", nargs="*", default=[], metavar="KEY=VALUE",
                        help="this checkout's worker only, not the baseline's: OUTPUT_COMPRESSION=zstd")  # fmt: skip
    parser.add_argument("--worker-variant", nargs="+", action="append", default=[], metavar="NAME [KEY=VALUE]",
                        help="also run this checkout's worker as worker-NAME with these settings (not --worker-env's), "
                        "in the same run, as a baseline of the worker: --worker-variant default --worker-env "
                        "MODEL_NAME=gbdt compares the gbdt line with the default model; repeatable")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=500, help="transactions of the untimed warm-up phase")
    parser.add_argument("--wait-model-s", type=float, default=0.0,
                        help="after the warm-up, wait up to this long until each worker scores with a published "
                        "version, not its prior (its fraud_model_info): a gbdt line scores the prior until its "
                        "trainer's first retrain is published, so with --labels and an `every` the warm-up's "
                        "labels reach; 0: do not wait")  # fmt: skip
    parser.add_argument("--wait-model-labels", type=int, default=0,
                        help="with --wait-model-s: a version that learned at least this many labels (above a gbdt "
                        "line's `every`: its first retrain's trees are in it)")  # fmt: skip
    parser.add_argument("--labels", action="store_true",
                        help="the workers' phases also publish one label per transaction (a day later in event time, "
                        "200 transactions behind it): their trainers learn while the decisions are timed")  # fmt: skip
    parser.add_argument("--labels-warmup-only", action="store_true",
                        help="with --labels: the warm-up's labels only, so the trainers learn (and a gbdt line "
                        "retrains) before the timed phases, not during them: the decisions timed alone")  # fmt: skip
    parser.add_argument("--profile-every-worker", action="store_true",
                        help="py-spy samples of every worker's maximum-throughput phase, not only this checkout's "
                        "worker's (each system's cpu_split in the JSON; py-spy costs each the same)")  # fmt: skip
    parser.add_argument("--rules", type=int, default=0,
                        help="publish this many analysts' rules (scripts/bench_rules.py's mix) on the broker's "
                             "default rules topic before the systems run: every worker of the run decides with "
                             "them (a baseline from before the rules, none); compare with a run without")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every system this many times, the workers' order reversed every other round "
                        "(worker@<ref> then worker, then worker then worker@<ref>, ...): a system's place in the run "
                        "moved its p99 more than the code did in single runs; the summary gives each round's ratios "
                        "to the floor of the same round and their medians")  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "benchmark.json")
    add_progress_argument(parser)
    args = parser.parse_args(argv)
    unknown = [v for v in args.ceiling_variants if not faust_ceiling.known_variant(v)]
    if unknown:
        parser.error(f"unknown --ceiling-variants {unknown}")
    phase_sizes = [("warmup", args.warmup), ("max", args.transactions)]
    phase_sizes += [(f"r{rate:g}", int(rate * args.rate_seconds)) for rate in args.rates]
    labels: dict[str, list[Label]] | None = {} if args.labels else None
    phases = traffic(phase_sizes, labels=labels)
    if labels is not None and args.labels_warmup_only:
        labels = {"warmup": labels["warmup"]}
    work = REPO_ROOT / ".kafka" / "bench"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    own_broker = not args.bootstrap_servers
    bootstrap = args.bootstrap_servers or kafka_local.start(
        port=free_port(), controller_port=free_port(), data_dir=work / "kafka", wipe=True
    )
    if args.rules:
        asyncio.run(publish_rules(bootstrap, args.rules))
    names: list[tuple[str, Path]] = [(name, REPO_ROOT) for name in SYSTEMS]
    baseline_tree = work / "baseline"
    if args.baseline_ref:
        subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(baseline_tree),
                        args.baseline_ref], check=True, capture_output=True)  # fmt: skip
        names.insert(len(names) - 1, (f"worker@{args.baseline_ref}", baseline_tree))
    args.variant_env = {}
    for label, *settings in args.worker_variant:
        names.insert(len(names) - 1, (f"worker-{label}", REPO_ROOT))
        args.variant_env[f"worker-{label}"] = settings
    try:
        # One bar over the outputs of every phase of every system (the Faust ceiling afterwards has none).
        outputs = args.rounds * len(names) * sum(n for _, n in phase_sizes)
        rounds: list[list[dict[str, object]]] = []
        with bar(outputs, "benchmark outputs", enabled=not args.no_progress) as progress:
            for i in range(args.rounds):
                systems = []
                for name, cwd in bench_report.run_order(names, i):
                    progress.set_description(f"benchmark {name}" + (f" (round {i + 1})" if args.rounds > 1 else ""))
                    tag = f"-r{i + 1}" if args.rounds > 1 else ""
                    systems.append(run_system(name, bootstrap, args, work, phases, progress, cwd=cwd, labels=labels,
                                              tag=tag))  # fmt: skip
                    systems[-1]["round"] = i + 1
                rounds.append(systems)
        ceiling = None
        if args.faust_ceiling:
            ceiling = faust_ceiling.run_ceiling(bootstrap, args.ceiling_messages, args.ceiling_variants,
                                                args.ceiling_partitions, work, args.timeout_s)  # fmt: skip
    finally:
        if own_broker:
            kafka_local.stop(work / "kafka")
        if args.baseline_ref:
            subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(baseline_tree)],
                           check=False, capture_output=True)  # fmt: skip
    report = bench_report.build_rounds(rounds, ceiling, argv if argv is not None else sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(dumps(report))
    print("\n".join(bench_report.figures(report)))
    print(f"wrote {args.out}")
    print()
    print(f"{report['date']}, {report['machine']}: {report['command']}")
    print()
    print("\n".join(bench_report.summary(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
