#!/usr/bin/env python3
"""Fault injection on a real broker: publish simulated transactions (and, with ``--labels``, their labels) while
workers are killed, the trainer's owner is killed or paused, the broker is restarted and the group is scaled, then
count what came out - lost, duplicated, how long each fault stopped the flow - and what the trainer learned of
each labelled transaction.

    # the full run (about 8 minutes of publishing)
    python scripts/chaos.py --transactions 1000000 --rate-tps 2000 --kills 10 --pauses 1 --broker-restart --scale

    # a small run: 8,000 transactions at 200 tx/s, 2 SIGKILLs, scale 1 -> 2 -> 1, 1 % malformed messages
    python scripts/chaos.py --transactions 8000 --rate-tps 200 --kills 2 --scale --bad-share 0.01 \\
        --out results/chaos.json

    # no fault at all: a baseline of the same accounting
    python scripts/chaos.py --transactions 5000 --rate-tps 250

    # labels 7 days (event time) after their transactions; SIGKILLs of any worker and of the trainer's owner, the
    # trainer's owner paused past its session timeout; every labelled transaction must be learned once, as its class
    python scripts/chaos.py --transactions 20000 --rate-tps 500 --labels --kills 3 --trainer-kills 2 --pauses 1 \\
        --pause-trainer --scale

    # print the fault schedule and exit
    python scripts/chaos.py --transactions 1000000 --rate-tps 2000 --kills 10 --pauses 1 --broker-restart --scale --plan

The code is in ``scripts/faultrun/``: scenarios (traffic, fault schedule), cluster (workers, topics), faults,
publisher, reader, measurement (the accounting), report; this file is its command line.

What runs, each as its own process:

- a broker: ``scripts/kafka_local.py`` on free ports with its data under the work dir (default
  ``.kafka/chaos-<run id>/kafka/data``), or the broker of ``--bootstrap-servers`` (then no broker restart);
- workers: ``python -m app`` (``--worker-cmd``) with one APP_ID and one set of topics for the run, each with
  its own WORKER_ID (``worker-0``, ``worker-1``), DATA_DIR (``<work>/worker-N``) and WEB_PORT; the run waits
  for ``GET /ready`` = 200 from the first before publishing;
- a publisher: N messages at ``--rate-tps`` (simulated by ``lab.simulator``, tx_ids unique to the run), with
  ``acks=all`` and ``enable_idempotence=True``. It appends one line per acknowledged send to
  ``<work>/published.tsv`` (id, kind, first send time, ack time, partition, offset): the independent record of
  what was published. A send that fails or times out (broker down) is sent again until acknowledged; only
  acknowledgements are recorded. With ``--bad-share`` a share of the N messages is malformed (empty, not JSON,
  a list, a missing field, a negative amount, a timestamp without offset), keyed ``bad-<run>-<n>``: each must
  come out exactly once as a dead letter. With ``--labels`` it also publishes one label per valid transaction
  (none for a malformed one) on the run's labels topic, keyed by tx_id, ``{"tx_id", "is_fraud", "timestamp"}``
  as ``app.records.parse_label`` reads them, with the simulator's truth and the time the label became known:
  ``--label-delay-days`` (default 7, as the simulator delays them) of event time after its transaction. Labels
  are merged into the publication in event-time order (as ``lab.simulator.replay`` does: a label comes among
  the transactions of its later time), riding along between the paced transactions; those due after the last
  transaction follow it, in due order, paced at ``--rate-tps`` too (so the publishing time, and the faults spread
  over it, include them). Each is recorded with kind ``lf`` (fraud) or ``ll`` (legitimate); the delivery
  accounting below counts transactions only;
- a reader: ``predictions`` and ``transactions-dlq`` with ``isolation_level="read_committed"``, from the
  beginning, one line per output read in ``<work>/outputs.tsv`` (kind, id, wall time read, partition, offset).
  A prediction's id is its key (its value's ``tx_id`` when there is no key); a dead letter's id is the
  ``tx_id`` inside its ``raw`` bytes when they are a JSON object with one, else its key. It stops
  ``--settle-s`` seconds after every published id has an outcome (what comes in that time counts: late
  duplicates), or ``--drain-timeout-s`` after publishing ended.

Faults, spread evenly over the publishing time (fault i of E at (i + 1) / (E + 1) of it; kills evenly, the
scale-up at a quarter, the broker restart at half, the scale-down at three quarters, pauses between the scale-up
and the broker restart with ``--scale``, evenly without):

- ``--kills K``: SIGKILL of a running worker (round robin when two run), restarted at once with the same
  WORKER_ID, DATA_DIR and WEB_PORT;
- ``--trainer-kills K``: the same, of the trainer's owner: the running worker whose ``/metrics`` shows
  ``fraud_trainer_active 1`` (the one holding ``<APP_ID>-trainer-lease``), looked for every half second for up
  to ``--ready-timeout-s`` (the lease may be moving; none found: nothing killed, the record says so). Spread over
  the run like the kills. The trainer runs in the worker's child process (``python -m app trainer``), which dies
  with it. Its record adds trainer_again_after_s and trainer_again_on: when, and on which worker, a worker showed
  ``fraud_trainer_active 1`` again;
- ``--trainer-process-kills K``: SIGKILL of the trainer process alone (the owner's child, found with psutil); its
  worker starts another. Same record as a trainer kill, with trainer_pid;
- ``--pauses P``: SIGSTOP of a running worker (round robin) for its session timeout (SESSION_TIMEOUT_MS of its
  environment, else the default) plus ``--pause-margin-s``, then SIGCONT: the group gives its partitions to the
  other worker, and the resumed one is a zombie that must be fenced (anything it published twice is a duplicate).
  Its record notes the partitions the group gave it before and at the end of the pause, which worker trained at
  its end (trainer_at_resume), when it held partitions again (rejoined_after_s) and its log's "fenced" lines.
  With ``--pause-trainer`` the pauses stop the trainer process of the trainer's owner instead (pausing the worker
  no longer pauses its trainer): the lease goes to another worker's trainer, and the resumed one is a zombie
  trainer that must publish nothing (a version it published twice would show as pairs learned twice); the record
  says paused trainer_process, trainer_pid, trainer_at_resume, answers_after_s and the "trainer fenced" lines;
- ``--broker-restart``: the broker stopped (``kafka_local.stop``: SIGTERM), started again after
  ``--broker-down-s`` on the same ports and data dir, nothing wiped;
- ``--scale``: a second worker started, later stopped with SIGTERM.

A worker that exits when it was not told to is restarted (a supervisor would) and listed in the report's
``unexpected_exits``.

The report (printed, and written as JSON to ``--out``, default ``<work>/report.json``): published (lines of the
record), predicted and dead-lettered (distinct ids), lost (published, no outcome), duplicated (ids with more than
one outcome) and extra_copies, misrouted (a valid transaction dead-lettered or a malformed one predicted),
unexpected (outputs for ids never acknowledged), the publisher's own count and the input topic's content (to show
the publisher did not duplicate or drop), end-to-end latency, the longest gap between two outputs read, the faults
applied by kind (fault_counts), and per fault its kind, time and recovery_s: seconds from the fault until the first
output read after it for a message first sent after it (null when none came; after_last_transaction when no
transaction was sent after it: nothing to measure); ready_after_s (a restarted or added
worker's first ``/ready`` 200 after the fault), ready_again_after_s (after a broker restart, each worker's, counted
from the broker's return; when the run hit the worker again before that, hit_again_before_ready and how long it had
waited), for the stopped worker, decided_before_stop (transactions it committed since its first start, from its
``/metrics`` read before each SIGKILL and the SIGTERM) and, for a paused one, owned_before, owned_at_resume,
rejoined_after_s and fenced_lines.

With ``--labels``, the workers get MODEL_PUBLISH_INTERVAL_S = ``--model-publish-interval-s`` (default 2;
``--worker-env`` overrides it): every pair the trainer learns is written to ``<APP_ID>-learning-audit`` in the
Kafka transaction of the model version it went into, so a short interval makes the audit follow closely. Once
the decisions settled, the run waits for the trainer: it reads ``<APP_ID>-learning-audit`` with
``read_committed`` from its start into ``<work>/audit.tsv`` (tx_id, learned_as, how, version, read time,
partition, offset) until every labelled transaction that was decided (predicted) has a record, then
``--learn-settle-s`` more (a pair learned twice comes in a later version); or until nothing new came for
``--learn-idle-s`` (the trainer learns nothing more), or ``--learn-timeout-s``; the workers stay supervised
meanwhile. Then the report's ``learning`` section, per labelled, decided transaction, each in exactly one of:
learned_as_fraud (a fraud label, one record, as fraud), learned_as_legitimate (a legitimate label, one record,
as legitimate: explicitly, or as an implicit negative when its label came after the horizon),
frauds_learned_as_legitimate (a fraud label and any ``legitimate`` record: the implicit negative followed by a
late fraud counts here, not as learned twice), wrong_class (a legitimate label and any ``fraud`` record),
learned_twice (more than one record otherwise), never_learned (no record); with learned_once, labelled_decided,
labelled_not_decided (labels of transactions lost or dead-lettered: the delivery counts show those),
audit_records, learned_how (records by explicit / implicit / late), audit_unexpected (records of ids never
labelled), the labels topic's content against the record (labels_topic), the wait (audit_read), the
trainer's counters at the end from its worker's ``/metrics`` (trainer_at_end) and its availability
(trainer_availability: every running worker's ``fraud_trainer_active`` asked about once a second from the start
of publishing to the end of the wait; the share of the time some worker trained, the longest stretch without one,
the moves from one worker to another, the seconds each trained); the failures' records are in ``samples``.

Exit code: 0 when nothing was lost or duplicated (and, with labels, every labelled, decided transaction was
learned once, as its class), 1 when something was (or misrouted, or output for an unknown id, or any of
frauds_learned_as_legitimate, wrong_class, learned_twice, never_learned, audit_unexpected), 2 when the
measurement itself is void (the record disagrees with the publisher's count, the input topic or the labels
topic, or the reader died) or the run could not be set up. Times in the report are seconds since publishing
started.

What a worker must do for this to measure it: read its settings from the environment (KAFKA_BOOTSTRAP_SERVERS,
APP_ID, WORKER_ID, TOPIC_PARTITIONS, DATA_DIR, WEB_PORT, WEB_BIND, TRANSACTIONS_TOPIC, LABELS_TOPIC,
PREDICTIONS_TOPIC, HEALTH_TOPIC, TRANSACTIONS_DLQ_TOPIC, LABELS_DLQ_TOPIC, LOG_LEVEL; the run's topics are
``chaos-<run id>-transactions``, ``-predictions``, ``-transactions-dlq``, ... created beforehand from
``topics/manifest.json`` with ``--partitions`` partitions); answer ``GET http://127.0.0.1:$WEB_PORT/ready``
with 200 once it consumes; publish one prediction keyed by tx_id per valid transaction and one dead letter
(input key, ``raw`` = base64 of the input bytes) per malformed one, visible to a read_committed consumer; stop
on SIGTERM; survive a SIGKILL of itself or of its peer, and the broker going away for a while. With
``--labels``: one of them trains (``fraud_trainer_active 1`` on its ``/metrics``), reading LABELS_TOPIC, and
writes each pair it learns to ``<APP_ID>-learning-audit`` as ``{"tx_id", "learned_as", "how", "version"}``.

Work dir: worker logs (``worker-N.log``), ``publisher.log``, ``reader.log``, the ``.tsv`` records and the
broker's logs stay; broker data and worker data dirs are deleted at the end unless ``--keep-data``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import orjson

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from faultrun.cluster import SetupError  # noqa: E402
from faultrun.report import exit_code, summary  # noqa: E402
from faultrun.run import ChaosRun, publishing_s  # noqa: E402
from faultrun.scenarios import fault_schedule  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("traffic")
    g.add_argument(
        "--transactions",
        type=int,
        default=10_000,
        metavar="N",
        help="messages to publish, malformed ones included (default 10000)",
    )
    g.add_argument(
        "--rate-tps",
        type=float,
        default=500.0,
        help="publishing rate in messages per second; 0 = as fast as possible (default 500)",
    )
    g.add_argument(
        "--bad-share",
        type=float,
        default=0.0,
        help="share of the N messages that are malformed and must be dead-lettered (default 0)",
    )
    g.add_argument("--seed", type=int, default=0, help="simulator seed (default 0)")
    g.add_argument(
        "--labels",
        action="store_true",
        help="also publish one label per valid transaction, --label-delay-days of event time after it, and check "
        "what the trainer learned of each (from its learning audit) at the end",
    )
    g.add_argument(
        "--label-delay-days",
        type=float,
        default=7.0,
        help="event time from a transaction to its label, as the simulator delays them (default 7)",
    )
    g = p.add_argument_group("faults (spread evenly over the publishing time)")
    g.add_argument(
        "--kills",
        type=int,
        default=0,
        metavar="K",
        help="SIGKILLs of a running worker, each followed by an immediate restart (default 0)",
    )
    g.add_argument(
        "--trainer-kills",
        type=int,
        default=0,
        metavar="K",
        help="SIGKILLs of the trainer's owner (the worker whose /metrics shows fraud_trainer_active 1; its trainer "
        "process dies with it), each followed by an immediate restart (default 0)",
    )
    g.add_argument(
        "--trainer-process-kills",
        type=int,
        default=0,
        metavar="K",
        help="SIGKILLs of the trainer process alone (the child of the trainer's owner; the worker starts another) "
        "(default 0)",
    )
    g.add_argument(
        "--pauses",
        type=int,
        default=0,
        metavar="P",
        help="SIGSTOPs of a running worker past its session timeout, each followed by a SIGCONT (default 0)",
    )
    g.add_argument(
        "--pause-trainer",
        action="store_true",
        help="the pauses stop the trainer process of the trainer's owner (instead of the running workers in turn)",
    )
    g.add_argument(
        "--pause-margin-s",
        type=float,
        default=5.0,
        help="a pause lasts the worker's session timeout plus this (default 5)",
    )
    g.add_argument(
        "--broker-restart",
        action="store_true",
        help="stop the broker once and start it again on the same port and data (needs its own broker)",
    )
    g.add_argument(
        "--broker-down-s", type=float, default=5.0, help="seconds between the broker's stop and its start (default 5)"
    )
    g.add_argument(
        "--scale",
        action="store_true",
        help="start a second worker at about a quarter, SIGTERM it at about three quarters",
    )
    g.add_argument(
        "--fault-after-ready",
        action="store_true",
        help="hold each fault until every running worker is ready (at most --ready-timeout-s), so each recovery is "
        "measured whole on a slow machine, and hold the publishing with it, so the faults keep their places in the "
        "stream; the waits are in the fault's record (waited_for_ready_s, publishing_held_s)",
    )
    g = p.add_argument_group("workers")
    g.add_argument("--partitions", type=int, default=4, help="TOPIC_PARTITIONS of the run's topics (default 4)")
    g.add_argument(
        "--worker-cmd", default=None, help="command of a worker, split like a shell (default: this Python's -m app)"
    )
    g.add_argument(
        "--worker-cwd",
        default=None,
        help="working directory of the workers (default the repository): another checkout's app/ runs from there",
    )
    g.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for every worker, repeatable (e.g. ALIGN_MAX_WAIT_S=10)",
    )
    g.add_argument("--worker-log-level", default="info", help="LOG_LEVEL of the workers (default info)")
    g.add_argument(
        "--model-publish-interval-s",
        type=float,
        default=2.0,
        help="with --labels, MODEL_PUBLISH_INTERVAL_S of the workers (their trainer's audit comes with each "
        "version; --worker-env overrides it) (default 2)",
    )
    g.add_argument(
        "--ready-timeout-s",
        type=float,
        default=180.0,
        help="how long the first worker may take to answer GET /ready with 200 (default 180)",
    )
    g = p.add_argument_group("broker, reading, output")
    g.add_argument(
        "--bootstrap-servers", default=None, help="use this broker instead of starting one (not with --broker-restart)"
    )
    g.add_argument("--broker-port", type=int, default=0, help="port of the broker this run starts (default: free)")
    g.add_argument(
        "--drain-timeout-s",
        type=float,
        default=180.0,
        help="after publishing ended, how long to wait for every outcome (default 180)",
    )
    g.add_argument(
        "--settle-s",
        type=float,
        default=5.0,
        help="keep reading this long once every id has an outcome, for late duplicates (default 5)",
    )
    g.add_argument(
        "--learn-settle-s",
        type=float,
        default=6.0,
        help="with --labels: keep reading the learning audit this long once every labelled, decided transaction "
        "has a record, for pairs learned twice (default 6)",
    )
    g.add_argument(
        "--learn-idle-s",
        type=float,
        default=60.0,
        help="with --labels: stop waiting for the trainer when the audit gained nothing for this long (default 60)",
    )
    g.add_argument(
        "--learn-timeout-s",
        type=float,
        default=300.0,
        help="with --labels: wait at most this long for the trainer after the decisions settled (default 300)",
    )
    g.add_argument("--progress-s", type=float, default=10.0, help="seconds between progress lines (default 10)")
    g.add_argument("--work-dir", default=None, help="default .kafka/chaos-<run id> under the repository")
    g.add_argument("--run-id", default=None, help="names the topics, APP_ID and tx_ids (default: random)")
    g.add_argument("--keep-data", action="store_true", help="keep the broker's and workers' data at the end")
    g.add_argument("--out", type=Path, default=None, help="report JSON (default <work dir>/report.json)")
    g.add_argument("--plan", action="store_true", help="print the fault schedule and exit")
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if args.broker_restart and args.bootstrap_servers:
        p.error("--broker-restart needs a broker this run starts and stops: drop --bootstrap-servers")
    if (args.transactions <= 0 or args.rate_tps < 0 or not 0 <= args.bad_share <= 1 or args.kills < 0
            or args.pauses < 0 or args.pause_margin_s < 0 or args.trainer_kills < 0 or args.trainer_process_kills < 0
            or args.label_delay_days < 0):  # fmt: skip
        p.error("--transactions > 0, --rate-tps >= 0, 0 <= --bad-share <= 1, --kills >= 0, --trainer-kills >= 0, "
                "--pauses >= 0, --pause-margin-s >= 0, --label-delay-days >= 0")  # fmt: skip
    if (args.kills or args.trainer_kills or args.trainer_process_kills or args.pauses or args.broker_restart
            or args.scale) and args.rate_tps <= 0:  # fmt: skip
        p.error("faults are spread over the publishing time: give --rate-tps > 0")
    if args.pause_trainer and not args.pauses:
        p.error("--pause-trainer says which worker the pauses stop: give --pauses P")
    for item in args.worker_env:
        if "=" not in item:
            p.error(f"--worker-env wants NAME=VALUE, not {item!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="chaos: %(message)s")
    if args.plan:
        publish_s = publishing_s(args)
        labels = " and their labels" if args.labels else ""
        print(f"publishing {args.transactions} messages{labels} for ~{publish_s:.0f} s")
        for fault in fault_schedule(publish_s, args.kills, args.broker_restart, args.scale, args.pauses,
                                    args.trainer_kills, args.trainer_process_kills):  # fmt: skip
            print(f"  t+{fault.planned_at_s:7.1f} s  {fault.kind}")
        return 0
    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C, so the broker and the workers are stopped on the way out
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    run = ChaosRun(args)
    try:
        report = run.execute()
    except (SetupError, RuntimeError, OSError) as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2
    finally:
        run.cleanup()
    out = args.out or run.work / "report.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(summary(report))
    print(f"wrote {out}")
    return exit_code(report)


if __name__ == "__main__":
    sys.exit(main())
