#!/usr/bin/env python3
"""The worker's state at a real issuer's scale: memory, disk, restart and replacement times, throughput and p99 of
one worker fed a simulated issuer of 1x, 10x, ... the size of the small one, each size on a broker of its own.

    python scripts/scale.py --scales 1 10 --out results/scale.json     # 38 minutes on 2 loaded shared cores
    python scripts/scale.py --scales 0.1 --days 10 --held-s 10         # a quick look
    python scripts/scale.py --scales 1 10 --days 20 --held-s 10 --worker-env MODEL_PUBLISH_INTERVAL_S=10
                                                        # the trainer's figures (BENCHMARKS.md), 30 minutes

1x is 2,000 customers and 4,000 terminals over 40 days (~154,000 transactions, with their labels 7 days later in
event time: ``scripts/simulate.py``); 10x is 20,000 and 40,000 (~1.5 M). For each size, on a fresh broker
(``scripts/kafka_local.py``, its own ports and data dir) and topics:

- throughput: the worker (ready first) is sent every transaction and label as fast as possible; seconds from the
  first publish until its ``/metrics`` count of transactions decided in committed Kafka transactions reaches
  them all (polled every ``--poll-s``): tx/s to the last committed prediction;
- RSS: of the worker and its trainer process (its child) together, and the trainer's apart, sampled every 0.5 s
  from its start; steady is the median over 5 s once both are idle again (the trainer done with its backlog) and a
  terminal checkpoint was written, peak the largest sample or the process's VmHWM;
- the trainer's publications: every committed record on ``<APP_ID>-trainer-state``, ``-trainer-labels`` (the label
  store's changelog) and ``-learning-audit``, followed from the first offset during the whole run (what was
  published, not what compaction left): bytes (key and value) per publication (records within 1 s of each other:
  one Kafka transaction) and per ``MODEL_PUBLISH_INTERVAL_S`` of wall time, median and max, and per label learned;
- the trainer's restore: after the first p99 phase, ``PROBES`` transactions are decided, the worker's trainer
  process is SIGKILLed (the worker starts another on the same DATA_DIR) and their labels published: seconds to
  the new one holding the lease with its state restored, to its ``labels_seen`` counting them, to their pairs on
  the audit topic;
- the trainer's takeover: a standby ``python -m app trainer`` (another WORKER_ID and DATA_DIR, as docker-compose's
  trainer service; ``--standby-env`` adds settings) joins the lease's group, the worker whose child holds the
  lease is SIGKILLed (the child dies with it), the same three times for the standby; then the worker starts
  again;
- disk: the worker's DATA_DIR by file, and per topic the segment files (``*.log``) of its partition folders in
  the broker's log dir, divided by the transactions (bytes per transaction), with offsets (end offsets summed
  over partitions) per transaction; on disk, so the compacted changelog counts what the cleaner left;
- restart: SIGKILL, then the same worker on the same DATA_DIR: seconds from its start to ``/ready`` 200;
- replacement on an empty disk: SIGKILL, then the same worker id on a new DATA_DIR; then SIGKILL again and a new
  worker id on a new DATA_DIR (its decision partitions wait for the killed static member's session timeout);
- p99: the transactions that follow in event time, at ``--held-rate`` for ``--held-s``, on the first worker before
  its SIGKILL and again on the last replacement once idle; latency from the publish to the committed prediction
  read back with read_committed (``scripts/bench/traffic.py``).

Each size's broker data (about 3.3 GiB at 10x) is deleted after it unless ``--keep``; the worker's log and data
dirs stay in ``.kafka/scale/x<size>/``.

``--no-trainer`` runs the worker without the trainer (``TRAINER_ENABLED=false``): the decision path's state alone,
as a deployment with the trainer elsewhere runs it; the model then scores with its prior.

Ratios of each size to the first close the table: the machine is shared, read them rather than the absolutes.
The code is in ``scripts/bench/scaling.py`` (one size) and ``scripts/bench/scale_report.py`` (the tables).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from bench import scale_report  # noqa: E402
from bench.scaling import run_size  # noqa: E402

from app.serialization import dumps  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 10], help="sizes, 1 = 2,000 customers")
    parser.add_argument("--days", type=int, default=40, help="days of traffic published as fast as possible")
    parser.add_argument("--label-delay-days", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--held-rate", type=float, default=200, help="tx/s of the p99 phase")
    parser.add_argument("--held-s", type=float, default=30, help="seconds of the p99 phase (0: none)")
    parser.add_argument("--timeout-s", type=float, default=1800, help="for the last decision after the last publish")
    parser.add_argument("--idle-timeout-s", type=float, default=600, help="for the worker to be idle after that")
    parser.add_argument("--ready-timeout-s", type=float, default=600, help="for /ready after each start")
    parser.add_argument("--poll-s", type=float, default=0.5, help="how often the decided count is read")
    parser.add_argument(
        "--pause-s",
        type=float,
        default=0.0,
        help="after the steady RSS, hold the idle first worker this long (to inspect it from outside)",
    )
    parser.add_argument("--keep", action="store_true", help="keep each size's broker data (.kafka/scale/)")
    parser.add_argument("--worker-env", nargs="*", default=[], metavar="KEY=VALUE",
                        help="settings for the worker, e.g. STATE_CUSTOMER_CACHE=1000")  # fmt: skip
    parser.add_argument("--standby-env", nargs="*", default=[], metavar="KEY=VALUE",
                        help="settings for the standby trainer of the takeover, over the worker's")  # fmt: skip
    parser.add_argument(
        "--no-trainer",
        action="store_true",
        help="TRAINER_ENABLED=false: the decision path's state alone (the trainer's is the learning issue's)",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "scale.json")
    args = parser.parse_args(argv)
    work = REPO_ROOT / ".kafka" / "scale"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = datetime.now(UTC)
    report = {
        "date": started.isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}",
        "command": " ".join(["python", "scripts/scale.py", *(argv if argv is not None else sys.argv[1:])]),
        "held_rate_tps": args.held_rate,
        "held_s": args.held_s,
    }
    sizes: list[dict[str, Any]] = []
    failed: list[str] = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for scale in sorted(args.scales):
        try:
            sizes.append(run_size(scale, args, work))
        except Exception as exc:  # a size that fails (a timeout, the machine's disk) leaves the others' figures
            traceback.print_exc()
            failed.append(f"{scale:g}x: {exc!r}")
        # written after each size: a run cut off keeps what it measured
        report.update(
            ended=datetime.now(UTC).isoformat(timespec="seconds"),
            sizes=sizes,
            failed=failed,
            ratios=scale_report.ratios(sizes),
        )
        args.out.write_bytes(dumps(report))
    print(f"{report['date']} to {report['ended']}, {report['machine']}: {report['command']}")
    loads = ", ".join(
        f"{s['scale']:g}x {s['load_average_at_start'][0]:.1f} to {s['load_average_at_end'][0]:.1f}" for s in sizes
    )
    print(f"load average (1 min) at each size's start and end: {loads}")
    print()
    print("\n".join(scale_report.summary(report)))
    for failure in failed:
        print(f"failed: {failure}")
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
