"""The publisher process: sends the run's messages at the set rate, idempotent with ``acks=all``, and records
every acknowledged send in ``published.tsv`` (the independent record of what was published).

The rate paces the messages of the transactions topic; labels (with ``label_delay_s``) ride along between them in
event-time order, and those due after the last transaction are paced at the same rate after it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path
from typing import Any

from faultrun.files import process_logging, write_json
from faultrun.measurement import BAD, GOOD, LABEL_FRAUD, LABEL_LEGIT
from faultrun.scenarios import messages

log = logging.getLogger(__name__)


def publisher_main(cfg: dict[str, Any]) -> None:
    """Process entry: publish the run's messages and record each acknowledged send."""
    process_logging(Path(cfg["work"]) / "publisher.log")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the orchestrator decides when to stop
    asyncio.run(_publish(cfg))


async def _publish(cfg: dict[str, Any]) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    work = Path(cfg["work"])
    rate = float(cfg["rate_tps"])
    topics = {kind: cfg["labels_topic"] if kind in (LABEL_FRAUD, LABEL_LEGIT) else cfg["topic"]
              for kind in (BAD, GOOD, LABEL_FRAUD, LABEL_LEGIT)}  # fmt: skip
    n = int(cfg["n"])
    label_delay_s = cfg.get("label_delay_s")

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
    # acked: messages of the transactions topic; labels_acked: labels
    state = {"sent": 0, "acked": 0, "labels_sent": 0, "labels_acked": 0, "retries": 0, "resends": 0, "behind_s": 0.0,
             "held_s": 0.0}  # fmt: skip
    in_flight = 0
    resend_tasks: set[asyncio.Task[None]] = set()
    t0 = time.time()
    write_json(work / "publisher.started.json", {"t0": t0})

    async def send(item: tuple[str, str, bytes, bytes], first_sent_at: float | None) -> None:
        nonlocal producer, in_flight
        msg_id, kind, key, value = item
        failures = 0
        while True:
            sent_at = first_sent_at if first_sent_at is not None else time.time()
            try:
                future = await producer.send(topics[kind], value=value, key=key)
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

    def acked(future: asyncio.Future[Any], item: tuple[str, str, bytes, bytes], sent_at: float) -> None:
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
        state["labels_acked" if item[1] in (LABEL_FRAUD, LABEL_LEGIT) else "acked"] += 1
        record.write(f"{item[0]}\t{item[1]}\t{sent_at:.6f}\t{time.time():.6f}\t{meta.partition}\t{meta.offset}\n")

    async def report() -> None:
        while True:
            record.flush()
            write_json(work / "publisher.status.json", state)
            await asyncio.sleep(0.5)

    reporter = asyncio.create_task(report())
    try:
        slot = 0  # transactions-topic messages so far, then labels after the last of them: the paced sends
        hold = work / "publisher.hold"  # the run holds publishing while it waits for its workers before a fault
        for item in messages(n, cfg["run_id"], int(cfg["seed"]), float(cfg["bad_share"]), label_delay_s):
            if hold.exists():
                held_from = time.time()
                while hold.exists():
                    await asyncio.sleep(0.02)
                state["held_s"] += time.time() - held_from  # the schedule moves on by the time held
            is_label = item[1] in (LABEL_FRAUD, LABEL_LEGIT)
            if rate > 0 and (not is_label or state["sent"] == n):
                due = t0 + state["held_s"] + slot / rate
                wait = due - time.time()
                if wait > 0.001:
                    await asyncio.sleep(wait)
                state["behind_s"] = max(0.0, -wait)
            if not is_label or state["sent"] == n:
                slot += 1
            await send(item, None)
            state["labels_sent" if is_label else "sent"] += 1
        sent_done = time.time()
        while in_flight or resend_tasks:
            with contextlib.suppress(KafkaError):
                await producer.flush()
            await asyncio.sleep(0.05)
    finally:
        reporter.cancel()
        record.flush()
        record.close()
        write_json(work / "publisher.status.json", state)
        with contextlib.suppress(Exception):
            await producer.stop()
    write_json(work / "publisher.done.json", {**state, "count": state["acked"], "labels": state["labels_acked"],
                                              "t0": t0, "sent_done": sent_done,
                                              "acked_done": time.time()})  # fmt: skip
