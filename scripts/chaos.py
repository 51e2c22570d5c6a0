#!/usr/bin/env python3
"""Fault injection on a real broker: publish simulated transactions while workers are killed, the broker is
restarted and the group is scaled, then count what came out - lost, duplicated, and how long each fault
stopped the flow.

    # the full run (about 7 minutes of publishing)
    python scripts/chaos.py --transactions 1000000 --rate-tps 2500 --kills 10 --broker-restart --scale

    # a small run: 8,000 transactions at 200 tx/s, 2 SIGKILLs, scale 1 -> 2 -> 1, 1 % malformed messages
    python scripts/chaos.py --transactions 8000 --rate-tps 200 --kills 2 --scale --bad-share 0.01 \\
        --out results/chaos.json

    # no fault at all: a baseline of the same accounting
    python scripts/chaos.py --transactions 5000 --rate-tps 250

    # print the fault schedule and exit
    python scripts/chaos.py --transactions 1000000 --rate-tps 2500 --kills 10 --broker-restart --scale --plan

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
  come out exactly once as a dead letter;
- a reader: ``predictions`` and ``transactions-dlq`` with ``isolation_level="read_committed"``, from the
  beginning, one line per output read in ``<work>/outputs.tsv`` (kind, id, wall time read, partition, offset).
  A prediction's id is its key (its value's ``tx_id`` when there is no key); a dead letter's id is the
  ``tx_id`` inside its ``raw`` bytes when they are a JSON object with one, else its key. It stops
  ``--settle-s`` seconds after every published id has an outcome (what comes in that time counts: late
  duplicates), or ``--drain-timeout-s`` after publishing ended.

Faults, spread evenly over the publishing time (fault i of E at (i + 1) / (E + 1) of it; kills evenly, the
scale-up at a quarter, the broker restart at half, the scale-down at three quarters):

- ``--kills K``: SIGKILL of a running worker (round robin when two run), restarted at once with the same
  WORKER_ID, DATA_DIR and WEB_PORT;
- ``--broker-restart``: the broker stopped (``kafka_local.stop``: SIGTERM), started again after
  ``--broker-down-s`` on the same ports and data dir, nothing wiped;
- ``--scale``: a second worker started, later stopped with SIGTERM.

A worker that exits when it was not told to is restarted (a supervisor would) and listed in the report's
``unexpected_exits``.

The report (printed, and written as JSON to ``--out``, default ``<work>/report.json``): published (lines of the
record), predicted and dead-lettered (distinct ids), lost (published, no outcome), duplicated (ids with more
than one outcome) and extra_copies, misrouted (a valid transaction dead-lettered or a malformed one predicted),
unexpected (outputs for ids never acknowledged), the publisher's own count and the input topic's content
(to show the publisher did not duplicate or drop), end-to-end latency, the longest gap between two outputs
read, and per fault its kind, time and recovery_s: seconds from the fault until the first output read after it
for a message first sent after it (null when none came).

Exit code: 0 when nothing was lost or duplicated, 1 when something was (or misrouted, or output for an unknown
id), 2 when the measurement itself is void (the record disagrees with the publisher's count or the input
topic, or the reader died) or the run could not be set up. Times in the report are seconds since publishing
started.

What a worker must do for this to measure it: read its settings from the environment (KAFKA_BOOTSTRAP_SERVERS,
APP_ID, WORKER_ID, TOPIC_PARTITIONS, DATA_DIR, WEB_PORT, WEB_BIND, TRANSACTIONS_TOPIC, LABELS_TOPIC,
PREDICTIONS_TOPIC, HEALTH_TOPIC, TRANSACTIONS_DLQ_TOPIC, LABELS_DLQ_TOPIC, LOG_LEVEL; the run's topics are
``chaos-<run id>-transactions``, ``-predictions``, ``-transactions-dlq``, ... created beforehand from
``topics/manifest.json`` with ``--partitions`` partitions); answer ``GET http://127.0.0.1:$WEB_PORT/ready``
with 200 once it consumes; publish one prediction keyed by tx_id per valid transaction and one dead letter
(input key, ``raw`` = base64 of the input bytes) per malformed one, visible to a read_committed consumer; stop
on SIGTERM; survive a SIGKILL of itself or of its peer, and the broker going away for a while.

Work dir: worker logs (``worker-N.log``), ``publisher.log``, ``reader.log``, the two ``.tsv`` records and the
broker's logs stay; broker data and worker data dirs are deleted at the end unless ``--keep-data``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import contextlib
import itertools
import logging
import multiprocessing
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import kafka_local  # noqa: E402
from local_processes import free_port, http_status  # noqa: E402

log = logging.getLogger("chaos")

PREDICTION = "p"
DEAD_LETTER = "d"
GOOD = "g"
BAD = "b"

# --- pure accounting: no broker, no process; tests/test_chaos_kafka.py checks it on crafted inputs ---------


@dataclass(frozen=True, slots=True)
class Published:
    """One acknowledged send, as the publisher recorded it."""

    id: str
    bad: bool  # malformed on purpose: its outcome must be a dead letter
    sent_at: float  # wall time of the first send attempt
    acked_at: float = 0.0
    partition: int = -1
    offset: int = -1


@dataclass(frozen=True, slots=True)
class Output:
    """One message read from predictions (kind "p") or the dead-letter topic (kind "d")."""

    kind: str
    id: str
    read_at: float
    partition: int = -1
    offset: int = -1


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str  # "sigkill", "broker_restart", "scale_up", "scale_down"
    planned_at_s: float  # seconds after publishing started


def tally(published: Iterable[Published], outputs: Iterable[Output], sample: int = 20) -> dict[str, Any]:
    """Delivery counts from the publisher's record and the outputs read.

    ``lost``: published ids without any output; ``duplicated``: published ids with more than one output (of
    either kind), ``extra_copies`` the outputs beyond the first; ``misrouted``: valid transactions that were
    dead-lettered or malformed ones predicted; ``unexpected``: ids output but never recorded as published.

    >>> p = [Published("a", False, 1.0), Published("b", False, 1.0), Published("x", True, 1.0)]
    >>> o = [Output("p", "a", 2.0), Output("p", "a", 3.0), Output("d", "x", 2.0)]
    >>> t = tally(p, o)
    >>> t["lost"], t["duplicated"], t["extra_copies"], t["predicted"], t["dead_lettered"]
    (1, 1, 1, 1, 1)
    """
    bad_of: dict[str, bool] = {}
    record_duplicates = 0
    for p in published:
        if p.id in bad_of:
            record_duplicates += 1
        bad_of[p.id] = p.bad
    predictions: Counter[str] = Counter()
    letters: Counter[str] = Counter()
    unexpected: Counter[str] = Counter()
    for o in outputs:
        if o.id not in bad_of:
            unexpected[o.id] += 1
        elif o.kind == PREDICTION:
            predictions[o.id] += 1
        else:
            letters[o.id] += 1
    lost = [i for i in bad_of if predictions[i] + letters[i] == 0]
    duplicated = {i: predictions[i] + letters[i] for i in bad_of if predictions[i] + letters[i] > 1}
    misrouted = [i for i, bad in bad_of.items() if (letters[i] if not bad else predictions[i])]
    return {
        "published": len(bad_of),
        "published_valid": sum(1 for bad in bad_of.values() if not bad),
        "published_malformed": sum(1 for bad in bad_of.values() if bad),
        "record_duplicates": record_duplicates,
        "predicted": len(predictions),
        "dead_lettered": len(letters),
        "lost": len(lost),
        "duplicated": len(duplicated),
        "extra_copies": sum(n - 1 for n in duplicated.values()),
        "misrouted": len(misrouted),
        "unexpected": len(unexpected),
        "lost_sample": sorted(lost)[:sample],
        "duplicated_sample": dict(sorted(duplicated.items())[:sample]),
        "misrouted_sample": sorted(misrouted)[:sample],
        "unexpected_sample": sorted(unexpected)[:sample],
    }


def recovery_s(
    fault_at: float,
    sent_at: Mapping[str, float],
    outputs_by_time: Sequence[Output],
    times: Sequence[float] | None = None,
) -> float | None:
    """Seconds from ``fault_at`` to the first output read after it for a message first sent after it.

    ``outputs_by_time`` must be sorted by ``read_at`` (``times``: their read times, to bisect without a copy).
    None when no such output came.

    >>> outs = [Output("p", "old", 11.0), Output("p", "new", 12.5), Output("p", "newer", 13.0)]
    >>> recovery_s(10.0, {"old": 9.0, "new": 10.5, "newer": 12.0}, outs)
    2.5
    >>> recovery_s(20.0, {"old": 9.0, "new": 10.5, "newer": 12.0}, outs) is None
    True
    """
    times = times if times is not None else [o.read_at for o in outputs_by_time]
    for o in itertools.islice(outputs_by_time, bisect.bisect_left(times, fault_at), None):
        sent = sent_at.get(o.id)
        if sent is not None and sent >= fault_at:
            return o.read_at - fault_at
    return None


def longest_gap(read_times: Iterable[float]) -> tuple[float, float | None]:
    """The longest time between two consecutive outputs, and when it began; (0.0, None) for fewer than two.

    >>> longest_gap([5.0, 1.0, 2.0, 2.5])
    (2.5, 2.5)
    """
    times = sorted(read_times)
    best, at = 0.0, None
    for a, b in itertools.pairwise(times):
        if b - a > best:
            best, at = b - a, a
    return best, at


def input_check(recorded: Iterable[str], in_topic: Iterable[str], sample: int = 20) -> dict[str, Any]:
    """The record against the input topic's content: the publisher must have written each id exactly once.

    >>> c = input_check(["a", "b", "c"], ["a", "b", "b", "d"])
    >>> c["messages"], c["duplicated"], c["not_in_record"], c["recorded_not_in_topic"], c["consistent"]
    (4, 1, 1, 1, False)
    """
    record = Counter(recorded)
    topic = Counter(in_topic)
    duplicated = sorted(i for i, n in topic.items() if n > 1)
    extra = sorted(i for i in topic if i not in record)
    missing = sorted(i for i in record if i not in topic)
    return {
        "messages": sum(topic.values()),
        "distinct": len(topic),
        "duplicated": len(duplicated),
        "not_in_record": len(extra),
        "recorded_not_in_topic": len(missing),
        "consistent": not duplicated and not extra and not missing and sum(record.values()) == len(record),
        "duplicated_sample": duplicated[:sample],
        "not_in_record_sample": extra[:sample],
        "recorded_not_in_topic_sample": missing[:sample],
    }


def percentiles(values: Sequence[float], qs: Iterable[float] = (50, 95, 99, 100)) -> dict[str, float | None]:
    """Nearest-rank percentiles; "max" for 100.

    >>> percentiles([3.0, 1.0, 2.0, 4.0], (50, 100))
    {'p50': 2.0, 'max': 4.0}
    """
    ordered = sorted(values)
    out: dict[str, float | None] = {}
    for q in qs:
        name = "max" if q == 100 else f"p{q:g}"
        if not ordered:
            out[name] = None
            continue
        rank = max(1, -(-len(ordered) * q // 100))
        out[name] = ordered[min(int(rank), len(ordered)) - 1]
    return out


def fault_schedule(publish_s: float, kills: int, broker_restart: bool, scale: bool) -> list[Fault]:
    """Faults evenly over the publishing time: the i-th of E at (i + 1) / (E + 1) of it.

    Kills are spread over the run, the scale-up comes near a quarter, the broker restart near half and the
    scale-down near three quarters (ties keep that order).

    >>> [(f.kind, round(f.planned_at_s)) for f in fault_schedule(120.0, 2, True, True)]
    [('scale_up', 20), ('sigkill', 40), ('broker_restart', 60), ('scale_down', 80), ('sigkill', 100)]
    """
    wanted: list[tuple[float, int, str]] = [((i + 0.5) / kills, 3, "sigkill") for i in range(kills)]
    if scale:
        wanted += [(0.25, 0, "scale_up"), (0.75, 2, "scale_down")]
    if broker_restart:
        wanted.append((0.5, 1, "broker_restart"))
    wanted.sort()
    n = len(wanted)
    return [Fault(kind, publish_s * (i + 1) / (n + 1)) for i, (_, _, kind) in enumerate(wanted)]


def output_id(kind: str, key: bytes | None, value: bytes | None) -> str:
    """The id an output is about: a prediction's key (else its value's tx_id); a dead letter's original tx_id
    (from the base64 ``raw`` bytes, when they are a JSON object with a string tx_id), else its key.

    >>> letter = orjson.dumps({"error": "invalid_json", "raw": base64.b64encode(b"{oops").decode()})
    >>> output_id("d", b"bad-1", letter), output_id("p", b"tx-1", b"{}"), output_id("p", None, b'{"tx_id":"tx-2"}')
    ('bad-1', 'tx-1', 'tx-2')
    """
    if kind == PREDICTION:
        if key:
            return key.decode(errors="replace")
        return str(_json_field(value, "tx_id") or "?")
    raw = _json_field(value, "raw")
    if isinstance(raw, str):
        try:
            tx_id = _json_field(base64.b64decode(raw), "tx_id")
        except ValueError:
            tx_id = None
        if isinstance(tx_id, str) and tx_id:
            return tx_id
    return key.decode(errors="replace") if key else "?"


def input_id(key: bytes | None, value: bytes | None) -> str:
    """The id of a message on the input topic: its value's tx_id when it has one, else its key."""
    tx_id = _json_field(value, "tx_id")
    if isinstance(tx_id, str) and tx_id:
        return tx_id
    return key.decode(errors="replace") if key else "?"


def _json_field(data: bytes | None, name: str) -> Any:
    if not data:
        return None
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return obj.get(name) if isinstance(obj, dict) else None


def read_published(path: Path) -> list[Published]:
    """The publisher's record; a torn last line (a crash mid-write) is skipped."""
    out = []
    for line in _lines(path):
        parts = line.split("\t")
        if len(parts) != 6:
            continue
        out.append(Published(parts[0], parts[1] == BAD, float(parts[2]), float(parts[3]), int(parts[4]),
                             int(parts[5])))  # fmt: skip
    return out


def read_outputs(path: Path) -> list[Output]:
    out = []
    for line in _lines(path):
        parts = line.split("\t")
        if len(parts) != 5:
            continue
        out.append(Output(parts[0], parts[1], float(parts[2]), int(parts[3]), int(parts[4])))
    return out


def _lines(path: Path) -> Iterator[str]:
    if not path.exists():
        return
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.endswith("\n"):
                yield line[:-1]


# --- traffic ---------------------------------------------------------------------------------------------------

SEGMENT_DAYS = 30


def simulated_transactions(seed: int) -> Iterator[Any]:
    """An endless stream of simulated transactions in time order: 30-day runs of the handbook's simulator, each
    starting where the last ended (fresh profiles, seed + k)."""
    from lab.simulator import SimulatorConfig, iter_days

    start = date(2018, 4, 1)
    for k in itertools.count():
        config = SimulatorConfig(n_customers=2500, n_terminals=5000, n_days=SEGMENT_DAYS, seed=seed + k,
                                 start_date=start + timedelta(days=SEGMENT_DAYS * k))  # fmt: skip
        for day in iter_days(config):
            yield from day


def is_bad(i: int, n: int, n_bad: int) -> bool:
    """Whether message i of n is one of the n_bad malformed ones, spread evenly.

    >>> [i for i in range(10) if is_bad(i, 10, 3)]
    [3, 6, 9]
    """
    return n_bad > 0 and (i + 1) * n_bad // n > i * n_bad // n


def malformed(bad_id: str, variant: int) -> bytes:
    """A message the worker must dead-letter; the JSON ones carry ``bad_id`` as their tx_id."""
    base = {"tx_id": bad_id, "timestamp": "2018-04-01T12:00:00Z", "customer_id": "c-bad", "terminal_id": "t-bad",
            "amount": 10.0}  # fmt: skip
    variant %= 6
    if variant == 0:
        return b""  # empty_message
    if variant == 1:
        return b'{"tx_id": "' + bad_id.encode() + b'", not json'  # invalid_json
    if variant == 2:
        return orjson.dumps([bad_id])  # not_an_object
    if variant == 3:
        return orjson.dumps({k: v for k, v in base.items() if k != "terminal_id"})  # missing_field
    if variant == 4:
        return orjson.dumps({**base, "amount": -5.0})  # invalid_amount
    return orjson.dumps({**base, "timestamp": "2018-04-01 12:00:00"})  # invalid_timestamp: no offset


def messages(n: int, run_id: str, seed: int, bad_share: float) -> Iterator[tuple[str, bool, bytes, bytes]]:
    """(id, malformed, key, value) for the run's n messages; valid ones keyed by customer_id."""
    from lab.simulator import to_wire

    n_bad = min(n, round(n * bad_share))
    txs = simulated_transactions(seed)
    n_bad_so_far = 0
    for i in range(n):
        if is_bad(i, n, n_bad):
            bad_id = f"bad-{run_id}-{i:09d}"
            yield bad_id, True, bad_id.encode(), malformed(bad_id, n_bad_so_far)
            n_bad_so_far += 1
            continue
        tx = next(txs)
        wire = to_wire(tx)
        wire["tx_id"] = f"tx-{run_id}-{i:09d}"
        yield wire["tx_id"], False, tx.customer_id.encode(), orjson.dumps(wire)


# --- publisher and reader processes ---------------------------------------------------------------------------


def _process_logging(path: Path) -> None:
    logging.basicConfig(filename=str(path), level=logging.INFO,
                        format="%(asctime)s %(processName)s %(levelname)s %(name)s: %(message)s")  # fmt: skip


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(orjson.dumps(obj, option=orjson.OPT_INDENT_2))
    tmp.replace(path)


def _read_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None


def publisher_main(cfg: dict[str, Any]) -> None:
    """Process entry: publish the run's messages and record each acknowledged send."""
    _process_logging(Path(cfg["work"]) / "publisher.log")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the orchestrator decides when to stop
    asyncio.run(_publish(cfg))


async def _publish(cfg: dict[str, Any]) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    work = Path(cfg["work"])
    rate = float(cfg["rate_tps"])
    topic = cfg["topic"]

    def new_producer() -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=cfg["bootstrap"], acks="all", enable_idempotence=True, linger_ms=5,
            # A batch that cannot reach a leader expires after this; idempotence keeps in-flight batches
            # retrying. Long enough to ride out the broker restart without a resend of anything.
            request_timeout_ms=int(cfg["request_timeout_ms"]), retry_backoff_ms=200,
            client_id=f"chaos-publisher-{cfg['run_id']}",
        )  # fmt: skip

    producer = new_producer()
    while True:
        try:
            await producer.start()
            break
        except KafkaError as exc:
            log.warning("producer start failed (%r), again in 1 s", exc)
            await producer.stop()
            producer = new_producer()
            await asyncio.sleep(1)

    record = (work / "published.tsv").open("w", encoding="utf-8", buffering=1 << 16)
    state = {"sent": 0, "acked": 0, "retries": 0, "resends": 0, "behind_s": 0.0}
    in_flight = 0
    resend_tasks: set[asyncio.Task[None]] = set()
    t0 = time.time()
    _write_json(work / "publisher.started.json", {"t0": t0})

    async def send(item: tuple[str, bool, bytes, bytes], first_sent_at: float | None) -> None:
        nonlocal producer, in_flight
        msg_id, bad, key, value = item
        failures = 0
        while True:
            sent_at = first_sent_at if first_sent_at is not None else time.time()
            try:
                future = await producer.send(topic, value=value, key=key)
            except KafkaError as exc:  # accumulator full past request_timeout_ms, or a producer gone bad
                state["retries"] += 1
                failures += 1
                log.warning("send of %s failed (%r); retrying", msg_id, exc)
                if failures >= 5:  # an idempotent producer in a fatal state rejects everything: replace it
                    log.warning("replacing the producer after %d failed sends", failures)
                    old, producer = producer, new_producer()
                    with contextlib.suppress(Exception):
                        await old.stop()
                    with contextlib.suppress(KafkaError):
                        await producer.start()
                    failures = 0
                await asyncio.sleep(0.5)
                continue
            in_flight += 1
            future.add_done_callback(lambda f, item=item, sent_at=sent_at: acked(f, item, sent_at))
            return

    def acked(future: asyncio.Future[Any], item: tuple[str, bool, bytes, bytes], sent_at: float) -> None:
        nonlocal in_flight
        in_flight -= 1
        exc = None if future.cancelled() else future.exception()
        if future.cancelled() or exc is not None:
            state["resends"] += 1
            log.warning("delivery of %s failed (%r); sending it again", item[0], exc)
            task = asyncio.get_running_loop().create_task(send(item, sent_at))
            resend_tasks.add(task)
            task.add_done_callback(resend_tasks.discard)
            return
        meta = future.result()
        state["acked"] += 1
        kind = BAD if item[1] else GOOD
        record.write(f"{item[0]}\t{kind}\t{sent_at:.6f}\t{time.time():.6f}\t{meta.partition}\t{meta.offset}\n")

    async def report() -> None:
        while True:
            record.flush()
            _write_json(work / "publisher.status.json", state)
            await asyncio.sleep(0.5)

    reporter = asyncio.create_task(report())
    try:
        for i, item in enumerate(messages(int(cfg["n"]), cfg["run_id"], int(cfg["seed"]), float(cfg["bad_share"]))):
            if rate > 0:
                due = t0 + i / rate
                wait = due - time.time()
                if wait > 0.001:
                    await asyncio.sleep(wait)
                state["behind_s"] = max(0.0, -wait)
            await send(item, None)
            state["sent"] = i + 1
        sent_done = time.time()
        while in_flight or resend_tasks:
            with contextlib.suppress(KafkaError):
                await producer.flush()
            await asyncio.sleep(0.05)
    finally:
        reporter.cancel()
        record.flush()
        record.close()
        _write_json(work / "publisher.status.json", state)
        with contextlib.suppress(Exception):
            await producer.stop()
    _write_json(work / "publisher.done.json", {**state, "count": state["acked"], "t0": t0,
                                              "sent_done": sent_done, "acked_done": time.time()})  # fmt: skip


def reader_main(cfg: dict[str, Any]) -> None:
    """Process entry: read the outputs until every published id has one (or the drain times out)."""
    _process_logging(Path(cfg["work"]) / "reader.log")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_read(cfg))


async def _read(cfg: dict[str, Any]) -> None:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError

    work = Path(cfg["work"])
    kinds = {cfg["predictions_topic"]: PREDICTION, cfg["dlq_topic"]: DEAD_LETTER}
    consumer = AIOKafkaConsumer(
        *kinds, bootstrap_servers=cfg["bootstrap"], group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", isolation_level="read_committed", fetch_max_wait_ms=100,
        client_id=f"chaos-reader-{cfg['run_id']}",
    )  # fmt: skip
    await consumer.start()
    out = (work / "outputs.tsv").open("w", encoding="utf-8", buffering=1 << 16)
    record_path = work / "published.tsv"
    done_path = work / "publisher.done.json"
    stop_path = work / "reader.stop"
    published: set[str] = set()
    seen: Counter[str] = Counter()
    with_outcome = outputs = 0
    tail = b""
    offset = 0
    done: dict[str, Any] | None = None
    done_seen_at = complete_at = None
    last_status = 0.0
    _write_json(work / "reader.started.json", {"at": time.time()})
    try:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=200, max_records=20000)
            except KafkaError as exc:  # the broker restarting: keep going
                log.warning("getmany: %r", exc)
                await asyncio.sleep(0.5)
                batches = {}
            now = time.time()
            for tp, records in batches.items():
                kind = kinds[tp.topic]
                for r in records:
                    msg_id = output_id(kind, r.key, r.value)
                    out.write(f"{kind}\t{msg_id}\t{now:.6f}\t{r.partition}\t{r.offset}\n")
                    outputs += 1
                    seen[msg_id] += 1
                    if seen[msg_id] == 1 and msg_id in published:
                        with_outcome += 1
            # what was published so far: complete lines of the record
            if done is None:
                done = _read_json(done_path)  # read before the record, so the record is complete after it
                if done is not None:
                    done_seen_at = now
            if record_path.exists():
                with record_path.open("rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
                offset += len(chunk)
                lines = (tail + chunk).split(b"\n")
                tail = lines.pop()
                for line in lines:
                    msg_id = line.split(b"\t", 1)[0].decode()
                    if msg_id not in published:
                        published.add(msg_id)
                        if seen[msg_id]:
                            with_outcome += 1
            complete = done is not None and len(published) >= done["count"] and with_outcome == len(published)
            if complete:
                complete_at = complete_at or now
                if now - complete_at >= cfg["settle_s"]:
                    break
            else:
                complete_at = None
            if done_seen_at is not None and now - done_seen_at > cfg["drain_timeout_s"]:
                log.warning("drain timeout: %d of %d published ids have an outcome", with_outcome, len(published))
                break
            if stop_path.exists():
                break
            if now - last_status >= 0.5:
                out.flush()
                _write_json(work / "reader.status.json", {"outputs": outputs, "published_seen": len(published),
                                                          "with_outcome": with_outcome})  # fmt: skip
                last_status = now
    finally:
        out.flush()
        out.close()
        with contextlib.suppress(Exception):
            await consumer.stop()
    _write_json(work / "reader.done.json", {"outputs": outputs, "published_seen": len(published),
                                            "with_outcome": with_outcome, "complete": complete_at is not None,
                                            "complete_at": complete_at, "at": time.time()})  # fmt: skip


# --- the orchestrator -------------------------------------------------------------------------------------------


@dataclass
class Worker:
    """One ``python -m app`` worker; its name, data dir and web port stay the same across restarts."""

    name: str
    env: dict[str, str]
    command: list[str]
    log_path: Path
    cwd: Path = REPO_ROOT
    process: subprocess.Popen[bytes] | None = None
    wanted: bool = False  # should be running: an exit that nobody asked for is unexpected
    started_at: float = 0.0
    ready_at: float | None = None
    last_probe: float = 0.0
    restarts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['WEB_PORT']}/ready"

    def start(self) -> None:
        with self.log_path.open("ab") as log_file:
            log_file.write(f"\n=== chaos: start {self.name} at {datetime.now(UTC).isoformat()} ===\n".encode())
            log_file.flush()
            self.process = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=log_file,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
        self.wanted = True
        self.started_at = time.time()
        self.ready_at = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def probe_ready(self, min_interval_s: float = 0.25) -> bool:
        """Poll GET /ready (at most every min_interval_s); remembers the first 200 since the last start."""
        if self.ready_at is not None:
            return True
        now = time.time()
        if now - self.last_probe < min_interval_s or not self.alive():
            return False
        self.last_probe = now
        ok = http_status(self.url, timeout_s=0.5) == 200
        if ok:
            self.ready_at = time.time()
        return ok

    def kill(self) -> float:
        """SIGKILL: no shutdown hook, no flush, no commit. Returns when it was sent."""
        assert self.process is not None
        at = time.time()
        self.process.kill()
        self.process.wait(timeout=30)
        return at

    def terminate(self) -> float:
        assert self.process is not None
        self.wanted = False
        at = time.time()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return at

    def stop(self, timeout_s: float = 30.0) -> None:
        self.wanted = False
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


class SetupError(RuntimeError):
    """The run could not be set up (broker, worker readiness, helper processes)."""


@dataclass
class ChaosRun:
    args: argparse.Namespace
    run_id: str = ""
    work: Path = Path()
    bootstrap: str = ""
    own_broker: bool = False
    broker_port: int = 0
    controller_port: int = 0
    topics: dict[str, str] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    t0: float = 0.0
    faults: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    unexpected_exits: list[dict[str, Any]] = field(default_factory=list)
    stopping: list[tuple[Worker, float, dict[str, Any]]] = field(default_factory=list)
    publisher: Any = None
    reader: Any = None
    last_progress: float = 0.0

    def __post_init__(self) -> None:
        self.run_id = self.args.run_id or uuid.uuid4().hex[:8]
        default = REPO_ROOT / ".kafka" / f"chaos-{self.run_id}"
        self.work = Path(self.args.work_dir).resolve() if self.args.work_dir else default
        prefix = f"chaos-{self.run_id}"
        self.topics = {
            "TRANSACTIONS_TOPIC": f"{prefix}-transactions",
            "LABELS_TOPIC": f"{prefix}-labels",
            "PREDICTIONS_TOPIC": f"{prefix}-predictions",
            "HEALTH_TOPIC": f"{prefix}-health",
            "TRANSACTIONS_DLQ_TOPIC": f"{prefix}-transactions-dlq",
            "LABELS_DLQ_TOPIC": f"{prefix}-labels-dlq",
        }

    @property
    def broker_data(self) -> Path:
        return self.work / "kafka" / "data"

    def rel(self, at: float | None) -> float | None:
        return None if at is None else round(at - self.t0, 3)

    def event(self, what: str, at: float | None = None, **details: Any) -> None:
        at = time.time() if at is None else at
        entry = {"at_s": self.rel(at) if self.t0 else None, "what": what, **details}
        self.timeline.append(entry)
        stamp = f"t+{at - self.t0:7.1f}s" if self.t0 else "setup    "
        extra = " ".join(f"{k}={v}" for k, v in details.items())
        print(f"[{stamp}] {what} {extra}".rstrip(), flush=True)

    # --- setup ---

    def start_broker(self) -> None:
        if self.args.bootstrap_servers:
            self.bootstrap = self.args.bootstrap_servers
            return
        self.own_broker = True
        self.broker_port = self.args.broker_port or free_port()
        self.controller_port = free_port()
        while self.controller_port == self.broker_port:
            self.controller_port = free_port()
        self.bootstrap = kafka_local.start(port=self.broker_port, controller_port=self.controller_port,
                                           data_dir=self.broker_data, wipe=True)  # fmt: skip
        self.event("broker started", bootstrap=self.bootstrap, data_dir=str(self.broker_data))

    def create_topics(self) -> None:
        asyncio.run(_create_topics(self.bootstrap, self.topics, self.args.partitions))

    def new_worker(self) -> Worker:
        index = len(self.workers)
        env = {
            **os.environ,
            **self.topics,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "APP_ID": f"chaos-{self.run_id}",
            "WORKER_ID": f"worker-{index}",
            "TOPIC_PARTITIONS": str(self.args.partitions),
            "DATA_DIR": str(self.work / f"worker-{index}"),
            "WEB_PORT": str(free_port()),
            "GRPC_PORT": str(free_port()),
            "WEB_BIND": "127.0.0.1",
            "LOG_LEVEL": self.args.worker_log_level,
        }
        for item in self.args.worker_env:
            name, _, value = item.partition("=")
            env[name] = value
        command = shlex.split(self.args.worker_cmd) if self.args.worker_cmd else [sys.executable, "-m", "app"]
        cwd = Path(self.args.worker_cwd).resolve() if self.args.worker_cwd else REPO_ROOT
        worker = Worker(f"worker-{index}", env, command, self.work / f"worker-{index}.log", cwd)
        self.workers.append(worker)
        return worker

    def wait_ready(self, worker: Worker, timeout_s: float) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if not worker.alive():
                raise SetupError(f"{worker.name} exited with {worker.process and worker.process.returncode} "
                                 f"before it was ready; see {worker.log_path}")  # fmt: skip
            if worker.probe_ready():
                return
            time.sleep(0.1)
        raise SetupError(f"{worker.name} not ready after {timeout_s:g} s; see {worker.log_path}")

    def spawn(self, target: Any, cfg: dict[str, Any], marker: str, timeout_s: float) -> Any:
        ctx = multiprocessing.get_context("spawn")
        process = ctx.Process(target=target, args=(cfg,), name=marker.split(".")[0], daemon=True)
        process.start()
        deadline = time.time() + timeout_s
        while not (self.work / marker).exists():
            if not process.is_alive():
                raise SetupError(f"{process.name} exited with {process.exitcode}; see {self.work}/{process.name}.log")
            if time.time() > deadline:
                raise SetupError(f"{process.name} did not start within {timeout_s:g} s")
            time.sleep(0.05)
        return process

    # --- while running ---

    def supervise(self) -> None:
        """Restart workers that died on their own, note readiness, finish scale-downs, print progress."""
        now = time.time()
        for worker in self.workers:
            if worker.wanted and not worker.alive():
                code = worker.process.returncode if worker.process else None
                self.unexpected_exits.append({"worker": worker.name, "at_s": self.rel(now), "returncode": code})
                self.event("worker exited unexpectedly, restarting", worker=worker.name, returncode=code)
                worker.restarts += 1
                worker.start()
            if worker.wanted and worker.ready_at is None and worker.probe_ready():
                self.event("ready", worker=worker.name, after_s=round(worker.ready_at - worker.started_at, 2))
                for fault in self.faults:
                    if fault.get("target") == worker.name and fault.get("_awaiting_ready"):
                        fault["ready_after_s"] = round(worker.ready_at - fault["_at"], 3)
                        del fault["_awaiting_ready"]
        for entry in list(self.stopping):
            worker, deadline, fault = entry
            if not worker.alive():
                fault["exited_after_s"] = round(time.time() - fault["_at"], 3)
                fault["returncode"] = worker.process.returncode if worker.process else None
                self.event("stopped", worker=worker.name, returncode=fault["returncode"])
                self.stopping.remove(entry)
            elif now > deadline:
                assert worker.process is not None
                worker.process.kill()
                fault["sigkilled_after_timeout"] = True
                self.event("did not stop after SIGTERM: SIGKILL", worker=worker.name)
        if now - self.last_progress >= self.args.progress_s:
            self.last_progress = now
            self.print_progress()

    def print_progress(self) -> None:
        pub = _read_json(self.work / "publisher.status.json") or {}
        rd = _read_json(self.work / "reader.status.json") or {}
        states = ", ".join(f"{w.name} {'ready' if w.ready_at else 'starting'}" for w in self.workers if w.wanted)
        behind = pub.get("behind_s", 0.0)
        lag = f" (publisher {behind:.1f} s behind)" if behind > 1 else ""
        print(f"[t+{time.time() - self.t0:7.1f}s] published {pub.get('acked', 0)}/{self.args.transactions}"
              f"{lag}, retries {pub.get('retries', 0) + pub.get('resends', 0)}; outputs {rd.get('outputs', 0)}, "
              f"with outcome {rd.get('with_outcome', 0)}/{rd.get('published_seen', 0)}; {states}",
              flush=True)  # fmt: skip

    def sleep_until(self, at: float) -> None:
        while time.time() < at:
            self.supervise()
            time.sleep(min(0.1, max(0.0, at - time.time())))

    def running(self) -> list[Worker]:
        return [w for w in self.workers if w.wanted]

    def hit_before_ready(self, worker: Worker) -> None:
        """An earlier fault's restart of ``worker`` that was never ready: no readiness time for that fault."""
        for fault in self.faults:
            if fault.get("target") == worker.name and fault.pop("_awaiting_ready", False):
                fault["ready_after_s"] = None
                fault["hit_again_before_ready"] = True

    def apply(self, fault: Fault, kills_so_far: int) -> None:
        record: dict[str, Any] = {"kind": fault.kind, "planned_at_s": round(fault.planned_at_s, 3)}
        if fault.kind == "sigkill":
            running = self.running()
            target = running[kills_so_far % len(running)]
            self.hit_before_ready(target)
            at = target.kill()
            target.restarts += 1
            target.start()
            record.update(target=target.name, _at=at, restarted_after_s=round(target.started_at - at, 3),
                          _awaiting_ready=True)  # fmt: skip
            self.event("SIGKILL and restart", worker=target.name)
        elif fault.kind == "scale_up":
            worker = self.new_worker()
            worker.start()
            at = worker.started_at
            record.update(target=worker.name, _at=at, _awaiting_ready=True)
            self.event("scale up: started", worker=worker.name)
        elif fault.kind == "scale_down":
            target = self.running()[-1]
            self.hit_before_ready(target)
            at = target.terminate()
            record.update(target=target.name, _at=at)
            self.stopping.append((target, at + 60.0, record))
            self.event("scale down: SIGTERM", worker=target.name)
        elif fault.kind == "broker_restart":
            at = time.time()
            record["_at"] = at
            self.event("broker stop")
            running = self.running()
            log_sizes = {w.name: _size(w.log_path) for w in running}
            kafka_local.stop(self.broker_data)
            record["stopped_after_s"] = round(time.time() - at, 3)
            # What operators see while the broker is away: /ready answers, and how much the workers log.
            statuses: set[int] = set()
            until = time.time() + self.args.broker_down_s
            while time.time() < until:
                statuses.update(http_status(w.url, timeout_s=1.0) for w in running)
                self.sleep_until(min(until, time.time() + 0.5))
            record["ready_while_down"] = sorted(statuses)
            record["log_lines_while_down"] = sum(_count_problem_lines(w.log_path, log_sizes[w.name]) for w in running)
            kafka_local.start(port=self.broker_port, controller_port=self.controller_port, data_dir=self.broker_data)
            record["back_after_s"] = round(time.time() - at, 3)
            self.event("broker answering again", after_s=record["back_after_s"])
        else:
            raise ValueError(fault.kind)
        record["at_s"] = self.rel(record["_at"])
        self.faults.append(record)

    # --- the whole run ---

    def execute(self) -> dict[str, Any]:
        a = self.args
        self.work.mkdir(parents=True, exist_ok=True)
        for stale in ("published.tsv", "outputs.tsv", "publisher.started.json", "publisher.done.json",
                      "publisher.status.json", "reader.started.json", "reader.done.json", "reader.status.json",
                      "reader.stop"):  # fmt: skip
            (self.work / stale).unlink(missing_ok=True)
        publish_s = a.transactions / a.rate_tps if a.rate_tps > 0 else 0.0
        schedule = fault_schedule(publish_s, a.kills, a.broker_restart, a.scale)
        print(f"chaos run {self.run_id}: {a.transactions} messages at {a.rate_tps:g} tx/s (~{publish_s:.0f} s), "
              f"{len(schedule)} faults; work dir {self.work}", flush=True)  # fmt: skip
        self.start_broker()
        self.create_topics()
        first = self.new_worker()
        first.start()
        self.event("worker started", worker=first.name, web_port=first.env["WEB_PORT"])
        self.wait_ready(first, a.ready_timeout_s)
        self.event("ready", worker=first.name, after_s=round((first.ready_at or 0) - first.started_at, 2))

        common = {"work": str(self.work), "bootstrap": self.bootstrap, "run_id": self.run_id}
        self.reader = self.spawn(reader_main, {**common, "predictions_topic": self.topics["PREDICTIONS_TOPIC"],
                                               "dlq_topic": self.topics["TRANSACTIONS_DLQ_TOPIC"],
                                               "settle_s": a.settle_s, "drain_timeout_s": a.drain_timeout_s},
                                 "reader.started.json", 60)  # fmt: skip
        request_timeout_ms = int(max(60.0, 3 * a.broker_down_s + 90.0) * 1000)
        self.publisher = self.spawn(publisher_main, {**common, "topic": self.topics["TRANSACTIONS_TOPIC"],
                                                     "n": a.transactions, "rate_tps": a.rate_tps, "seed": a.seed,
                                                     "bad_share": a.bad_share,
                                                     "request_timeout_ms": request_timeout_ms},
                                    "publisher.started.json", 120)  # fmt: skip
        self.t0 = float(_read_json(self.work / "publisher.started.json")["t0"])
        self.last_progress = self.t0
        self.event("publishing started")

        kills = 0
        for fault in schedule:
            self.sleep_until(self.t0 + fault.planned_at_s)
            if not self.publisher.is_alive():
                self.event("publishing ended before this fault", fault=fault.kind)
            self.apply(fault, kills)
            kills += fault.kind == "sigkill"

        while self.publisher.is_alive():
            self.sleep_until(time.time() + 0.2)
        if self.publisher.exitcode != 0:
            raise SetupError(f"the publisher exited with {self.publisher.exitcode}; see {self.work}/publisher.log")
        done = _read_json(self.work / "publisher.done.json") or {}
        self.event("publishing ended", acked=done.get("count"), retries=done.get("retries"),
                   resends=done.get("resends"), acked_by_s=round(done.get("acked_done", 0) - self.t0, 1))  # fmt: skip

        hard_deadline = time.time() + a.drain_timeout_s + a.settle_s + 120
        while self.reader.is_alive():
            if time.time() > hard_deadline:
                (self.work / "reader.stop").touch()
                self.reader.join(30)
                break
            self.sleep_until(time.time() + 0.2)
        reader_done = _read_json(self.work / "reader.done.json") or {}
        reader_done["exitcode"] = self.reader.exitcode  # a reader that died read only part of the outputs
        self.event("reading ended", complete=reader_done.get("complete"), outputs=reader_done.get("outputs"))
        for worker in self.workers:
            worker.stop()
        topic_ids = asyncio.run(_scan_input(self.bootstrap, self.topics["TRANSACTIONS_TOPIC"], 300.0))
        return self.report(done, reader_done, topic_ids)

    def report(self, done: dict[str, Any], reader_done: dict[str, Any], topic_ids: list[str]) -> dict[str, Any]:
        a = self.args
        published = read_published(self.work / "published.tsv")
        outputs = sorted(read_outputs(self.work / "outputs.tsv"), key=lambda o: o.read_at)
        times = [o.read_at for o in outputs]
        counts = tally(published, outputs)
        sent_at = {p.id: p.sent_at for p in published}
        for fault in self.faults:
            r = recovery_s(fault["_at"], sent_at, outputs, times)
            fault["recovery_s"] = None if r is None else round(r, 3)
            if fault.pop("_awaiting_ready", False):
                fault["ready_after_s"] = None
        faults = [{k: v for k, v in f.items() if not k.startswith("_")} for f in self.faults]
        gap, gap_at = longest_gap(times)
        first_read: dict[str, float] = {}
        for o in outputs:
            first_read.setdefault(o.id, o.read_at)
        latencies = [first_read[p.id] - p.sent_at for p in published if p.id in first_read]
        check = input_check((p.id for p in published), topic_ids)
        publisher_count = done.get("count")
        last_outcome = max(first_read.values(), default=None)
        report: dict[str, Any] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(["python", "scripts/chaos.py", *(a.argv or [])]),
            "run_id": self.run_id,
            "work_dir": str(self.work),
            "bootstrap": self.bootstrap,
            "own_broker": self.own_broker,
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items() if k != "argv"},
            **{k: v for k, v in counts.items() if not k.endswith("_sample")},
            "publisher_count": publisher_count,
            "record_matches_publisher": publisher_count == counts["published"] and not counts["record_duplicates"],
            "publisher_retries": done.get("retries"),
            "publisher_resends": done.get("resends"),
            "publish_s": round(done.get("acked_done", self.t0) - self.t0, 3),
            "publish_tps": round(counts["published"] / max(done.get("acked_done", self.t0) - self.t0, 1e-9), 1),
            "input_topic": {k: v for k, v in check.items() if not k.endswith("_sample")},
            "complete": bool(reader_done.get("complete")),
            "outputs_read": len(outputs),
            "last_outcome_after_publishing_s": None if last_outcome is None or not done.get("acked_done")
            else round(last_outcome - done["acked_done"], 3),
            "latency_s": {k: None if v is None else round(v, 3) for k, v in percentiles(latencies).items()},
            "longest_output_gap_s": round(gap, 3),
            "longest_output_gap_at_s": self.rel(gap_at),
            "faults": faults,
            "unexpected_exits": self.unexpected_exits,
            "timeline": self.timeline,
            "samples": {k: v for k, v in {**counts, **{f"input_{k}": v for k, v in check.items()}}.items()
                        if k.endswith("_sample")},
        }  # fmt: skip
        report["reader_ok"] = reader_done.get("exitcode") == 0 and "outputs" in reader_done
        report["measurement_valid"] = bool(
            report["record_matches_publisher"] and check["consistent"] and report["reader_ok"]
        )
        report["ok"] = (report["measurement_valid"] and counts["lost"] == 0 and counts["duplicated"] == 0
                        and counts["misrouted"] == 0 and counts["unexpected"] == 0)  # fmt: skip
        return report

    def cleanup(self) -> None:
        if self.work.exists():
            (self.work / "reader.stop").touch()  # a reader still running ends its loop
        for process in (self.publisher, self.reader):
            if process is not None and process.is_alive():
                process.join(5)
                if process.is_alive():
                    process.terminate()
                    process.join(10)
        for worker in self.workers:
            with contextlib.suppress(Exception):
                worker.stop()
        if self.own_broker:
            with contextlib.suppress(Exception):
                kafka_local.stop(self.broker_data)
        if not self.args.keep_data:
            shutil.rmtree(self.broker_data, ignore_errors=True)
            for worker in self.workers:
                shutil.rmtree(worker.env["DATA_DIR"], ignore_errors=True)


async def _create_topics(bootstrap: str, topics: dict[str, str], partitions: int) -> None:
    """The contract's topics (configs from topics/manifest.json) under the run's names, before anyone publishes:
    a topic auto-created by the publisher would get one partition."""
    from app.kafka.clients import Connection
    from app.kafka.topics import create_topics, manifest_specs

    await create_topics(Connection(bootstrap), manifest_specs(topics, partitions))


async def _scan_input(bootstrap: str, topic: str, timeout_s: float) -> list[str]:
    """The id of every message on the input topic, to check the publisher wrote each once."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20)  # fmt: skip
    await consumer.start()
    ids: list[str] = []
    try:
        # subscribed first, so the consumer's metadata knows the topic's partitions; then assigned by hand
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.unsubscribe()
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        deadline = time.time() + timeout_s
        remaining = {tp for tp in tps if end[tp] > 0}
        while remaining and time.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500, max_records=50000)).values():
                ids.extend(input_id(r.key, r.value) for r in records)
            remaining = {tp for tp in remaining if await consumer.position(tp) < end[tp]}
    finally:
        await consumer.stop()
    return ids


def summary(report: dict[str, Any]) -> str:
    lines = [
        f"published {report['published']} ({report['published_valid']} valid, {report['published_malformed']} "
        f"malformed; publisher counted {report['publisher_count']}, input topic holds "
        f"{report['input_topic']['messages']}, consistent: {report['input_topic']['consistent']}) "
        f"in {report['publish_s']:.1f} s ({report['publish_tps']:.0f} tx/s)",
        f"predicted {report['predicted']}, dead-lettered {report['dead_lettered']}, "
        f"LOST {report['lost']}, DUPLICATED {report['duplicated']} ({report['extra_copies']} extra copies), "
        f"misrouted {report['misrouted']}, unexpected {report['unexpected']}; complete: {report['complete']}",
        f"latency s {report['latency_s']}; longest output gap {report['longest_output_gap_s']:.1f} s "
        f"at t+{report['longest_output_gap_at_s'] or 0:.1f} s",
    ]
    for f in report["faults"]:
        details = ", ".join(f"{k} {v}" for k, v in f.items() if k not in ("kind", "at_s", "recovery_s"))
        rec = "never" if f["recovery_s"] is None else f"{f['recovery_s']:.1f} s"
        lines.append(f"  {f['kind']:<15} at t+{f['at_s']:6.1f} s: recovery {rec} ({details})")
    if report["unexpected_exits"]:
        lines.append(f"unexpected worker exits: {report['unexpected_exits']}")
    samples = report["samples"]
    for name in ("lost_sample", "duplicated_sample", "misrouted_sample", "unexpected_sample"):
        if samples.get(name):
            lines.append(f"{name}: {samples[name]}")
    verdict = "OK" if report["ok"] else "FAILED" if report["measurement_valid"] else "MEASUREMENT VOID"
    lines.append(f"{verdict}: lost {report['lost']}, duplicated {report['duplicated']}")
    return "\n".join(lines)


def exit_code(report: dict[str, Any]) -> int:
    """0: nothing lost or duplicated; 1: a delivery failure; 2: the record cannot be trusted.

    >>> exit_code({"measurement_valid": True, "lost": 0, "duplicated": 0, "misrouted": 0, "unexpected": 0})
    0
    >>> exit_code({"measurement_valid": True, "lost": 0, "duplicated": 3, "misrouted": 0, "unexpected": 0})
    1
    """
    if not report["measurement_valid"]:
        return 2
    failures = report["lost"] + report["duplicated"] + report["misrouted"] + report["unexpected"]
    return 1 if failures else 0


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
    g = p.add_argument_group("faults (spread evenly over the publishing time)")
    g.add_argument(
        "--kills",
        type=int,
        default=0,
        metavar="K",
        help="SIGKILLs of a running worker, each followed by an immediate restart (default 0)",
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
    if args.transactions <= 0 or args.rate_tps < 0 or not 0 <= args.bad_share <= 1 or args.kills < 0:
        p.error("--transactions > 0, --rate-tps >= 0, 0 <= --bad-share <= 1, --kills >= 0")
    if (args.kills or args.broker_restart or args.scale) and args.rate_tps <= 0:
        p.error("faults are spread over the publishing time: give --rate-tps > 0")
    for item in args.worker_env:
        if "=" not in item:
            p.error(f"--worker-env wants NAME=VALUE, not {item!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="chaos: %(message)s")
    if args.plan:
        publish_s = args.transactions / args.rate_tps if args.rate_tps > 0 else 0.0
        print(f"publishing {args.transactions} messages for ~{publish_s:.0f} s")
        for fault in fault_schedule(publish_s, args.kills, args.broker_restart, args.scale):
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


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _count_problem_lines(path: Path, since: int) -> int:
    """WARNING and ERROR lines a worker wrote to its log after byte ``since``."""
    try:
        with path.open("rb") as f:
            f.seek(since)
            return sum(1 for line in f if b"[ERROR]" in line or b"[WARNING]" in line)
    except OSError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
