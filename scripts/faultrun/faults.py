"""The faults a run applies: SIGKILL and restart of a worker (any, or the trainer's owner: its trainer child dies
with it), SIGKILL of the trainer process alone (its worker starts another), a worker paused past its session
timeout and resumed (a zombie; any), or the trainer process of the trainer's owner paused so (a zombie trainer), a
broker restart, a worker added and one stopped; and what each fault's record notes (readiness again, the trainer
again, exit time, partitions held, what the workers logged)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kafka_local
from local_processes import http_status

from faultrun.cluster import Worker
from faultrun.scenarios import Fault

if TYPE_CHECKING:
    from faultrun.run import ChaosRun


def apply_fault(run: ChaosRun, fault: Fault, kills_so_far: int) -> None:
    """Apply ``fault`` now and append its record to ``run.faults`` (keys with ``_`` are the run's own)."""
    record: dict[str, Any] = {"kind": fault.kind, "planned_at_s": round(fault.planned_at_s, 3)}
    if fault.kind == "sigkill":
        running = run.running()
        kill_and_restart(run, running[kills_so_far % len(running)], record)
    elif fault.kind == "trainer_sigkill":
        owner, record["trainer_found_after_s"] = find_trainer(run, run.args.ready_timeout_s)
        if owner is None:
            record.update(target=None, _at=time.time(), skipped="no running worker showed fraud_trainer_active 1")
            run.event("no trainer found: nothing killed")
        else:
            kill_and_restart(run, owner, record)
            record["_awaiting_trainer"] = True
    elif fault.kind == "trainer_process_sigkill":
        owner, record["trainer_found_after_s"] = find_trainer(run, run.args.ready_timeout_s)
        pid = owner.trainer_pid() if owner is not None else None
        if owner is None or pid is None:
            record.update(target=None, _at=time.time(), skipped="no trainer process found")
            run.event("no trainer process found: nothing killed")
        else:
            record.update(target=owner.name, trainer_pid=pid, _at=time.time(), _awaiting_trainer=True)
            os.kill(pid, signal.SIGKILL)
            run.event("SIGKILL of the trainer process alone", worker=owner.name, pid=pid)
    elif fault.kind == "scale_up":
        worker = run.new_worker()
        worker.start()
        at = worker.started_at
        record.update(target=worker.name, _at=at, _awaiting_ready=True)
        run.event("scale up: started", worker=worker.name)
    elif fault.kind == "scale_down":
        target = run.running()[-1]
        hit_before_ready(run, target)
        # what it committed under its name, before it is told to stop (since its first start: a SIGKILL of the
        # trainer's owner may have restarted it in between): a worker that never got partitions would show 0 here
        record["decided_before_stop"] = target.decided_in_all()
        record["decided_since_its_last_start"] = target.decided(timeout_s=1.0)
        at = target.terminate()
        record.update(target=target.name, _at=at)
        run.stopping.append((target, at + 60.0, record))
        run.event("scale down: SIGTERM", worker=target.name, decided=record["decided_before_stop"])
    elif fault.kind == "pause":
        running = run.running()
        target = running[sum(f["kind"] == "pause" for f in run.faults) % len(running)]
        if run.args.pause_trainer:
            owner, record["trainer_found_after_s"] = find_trainer(run, run.args.ready_timeout_s)
            record["trainer"] = owner is not None
            pid = owner.trainer_pid() if owner is not None else None
            if owner is None or pid is None:
                run.event("no trainer found: pausing a worker", worker=target.name)
            else:  # the trainer runs in its own process: pausing its worker would not pause it
                pause_trainer(run, owner, pid, record)
                record["at_s"] = run.rel(record["_at"])
                run.faults.append(record)
                return
        pause_worker(run, target, record)
    elif fault.kind == "broker_restart":
        restart_broker(run, record)
    else:
        raise ValueError(fault.kind)
    record["at_s"] = run.rel(record["_at"])
    run.faults.append(record)


def kill_and_restart(run: ChaosRun, target: Worker, record: dict[str, Any]) -> None:
    """SIGKILL ``target`` and start it again at once, same WORKER_ID, DATA_DIR and WEB_PORT."""
    hit_before_ready(run, target)
    at = target.kill()
    target.restarts += 1
    target.start()
    record.update(target=target.name, _at=at, restarted_after_s=round(target.started_at - at, 3),
                  _awaiting_ready=True)  # fmt: skip
    trainer = " (the trainer's owner)" if record["kind"] == "trainer_sigkill" else ""
    run.event(f"SIGKILL{trainer} and restart", worker=target.name)


def find_trainer(run: ChaosRun, timeout_s: float) -> tuple[Worker | None, float]:
    """The running worker whose ``/metrics`` shows ``fraud_trainer_active 1`` (the one holding the trainer lease),
    asked every half second until ``timeout_s`` (the lease may be moving); and the seconds the search took."""
    started = time.time()
    while True:
        owner = next((w for w in run.running() if w.trainer_active()), None)
        if owner is not None or time.time() - started >= timeout_s:
            return owner, round(time.time() - started, 3)
        run.sleep_until(time.time() + 0.5)


def probe_trainer(run: ChaosRun) -> None:
    """Which running worker trains now (the first whose ``/metrics`` shows ``fraud_trainer_active 1``), noted in
    ``run.trainer_probes`` (once publishing started) for the trainer's availability; and, for the trainer faults
    still waiting for it, the first one that trains again after them (``trainer_again_after_s``,
    ``trainer_again_on``)."""
    owner = next((w for w in run.running() if w.trainer_active()), None)
    now = time.time()
    if run.t0:
        run.trainer_probes.append((now, owner.name if owner is not None else None))
    if owner is None:
        return
    waiting = [f for f in run.faults if f.get("_awaiting_trainer")]
    for fault in waiting:
        fault["trainer_again_after_s"] = round(now - fault["_at"], 3)
        fault["trainer_again_on"] = owner.name
        del fault["_awaiting_trainer"]
    if waiting:
        run.event("trainer active again", worker=owner.name)


def pause_worker(run: ChaosRun, target: Worker, record: dict[str, Any]) -> None:
    """SIGSTOP ``target`` for its session timeout plus ``--pause-margin-s``, then SIGCONT. The group drops it and
    gives its partitions to the others; resumed, it is a zombie until it learns so, and must be fenced: whatever
    it publishes twice shows in the run's duplicates. Notes the partitions the group gave it before the pause and
    at its end (none: taken over), when it held partitions again (``rejoined_after_s``, from the resume; its
    ``/ready`` may answer 200 before it learns it was out) and how often its log says it was fenced."""
    from app.settings import load

    assert target.process is not None
    hit_before_ready(run, target)
    session_s = load(target.env).session_timeout_ms / 1000.0
    paused_s = session_s + run.args.pause_margin_s
    record.update(target=target.name, session_timeout_s=session_s, owned_before=owned(run, target))
    log_size = _size(target.log_path)
    at = time.time()
    target.process.send_signal(signal.SIGSTOP)
    target.paused = True
    record["_at"] = at
    run.event("SIGSTOP", worker=target.name, for_s=round(paused_s, 1), trainer=record.get("trainer", False))
    try:
        run.sleep_until(at + paused_s)
        record["owned_at_resume"] = owned(run, target)
        # who trains while the paused one is out (None: nobody, e.g. no other worker)
        record["trainer_at_resume"] = next((w.name for w in run.running() if w.trainer_active()), None)
    finally:
        target.process.send_signal(signal.SIGCONT)
        target.paused = False
    resumed = time.time()
    record["resumed_after_s"] = round(resumed - at, 3)
    run.event("SIGCONT", worker=target.name, owned_at_resume=record["owned_at_resume"],
              trainer_at_resume=record["trainer_at_resume"])  # fmt: skip
    record["rejoined_after_s"] = None
    while time.time() < resumed + run.args.ready_timeout_s and target.alive():
        if owned(run, target):
            record["rejoined_after_s"] = round(time.time() - resumed, 3)
            break
        run.sleep_until(time.time() + 0.5)
    record["fenced_lines"] = _count_lines(target.log_path, log_size, b"(fenced)")
    run.event("rejoined" if record["rejoined_after_s"] is not None else "not rejoined", worker=target.name,
              after_s=record["rejoined_after_s"], fenced_lines=record["fenced_lines"])  # fmt: skip


def pause_trainer(run: ChaosRun, owner: Worker, pid: int, record: dict[str, Any]) -> None:
    """SIGSTOP the trainer process ``pid`` (``owner``'s child, holding the lease) for its session timeout plus
    ``--pause-margin-s``, then SIGCONT. The lease's group drops it and another worker's trainer takes over (its
    producer fences this one); resumed, it is a zombie trainer that must publish nothing: a version or audit record
    it published would show as pairs learned twice. Notes who trained at the end of the pause (trainer_at_resume),
    when ``owner``'s ``/metrics`` showed its trainer process answering again (answers_after_s) and the trainer's
    "fenced" lines in the log (its output goes to its worker's)."""
    from app.settings import load

    session_s = load(owner.env).session_timeout_ms / 1000.0
    paused_s = session_s + run.args.pause_margin_s
    record.update(target=owner.name, paused="trainer_process", trainer_pid=pid, session_timeout_s=session_s)
    log_size = _size(owner.log_path)
    at = time.time()
    os.kill(pid, signal.SIGSTOP)
    record["_at"] = at
    run.event("SIGSTOP of the trainer process", worker=owner.name, pid=pid, for_s=round(paused_s, 1))
    try:
        run.sleep_until(at + paused_s)
        record["trainer_at_resume"] = next((w.name for w in run.running() if w.trainer_active()), None)
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed = time.time()
    record["resumed_after_s"] = round(resumed - at, 3)
    run.event("SIGCONT of the trainer process", worker=owner.name, trainer_at_resume=record["trainer_at_resume"])
    record["answers_after_s"] = None
    while time.time() < resumed + run.args.ready_timeout_s and owner.alive():
        samples = owner.metrics()
        if samples is not None and samples.get("fraud_trainer_process_up") == 1.0:
            record["answers_after_s"] = round(time.time() - resumed, 3)
            break
        run.sleep_until(time.time() + 0.5)
    record["trainer_pid_after"] = owner.trainer_pid()
    record["fenced_lines"] = _count_lines(owner.log_path, log_size, b"trainer fenced")
    run.event("trainer answers again" if record["answers_after_s"] is not None else "trainer does not answer",
              worker=owner.name, after_s=record["answers_after_s"], fenced_lines=record["fenced_lines"])  # fmt: skip


def owned(run: ChaosRun, worker: Worker) -> list[int] | None:
    """The partitions of the transactions topic the decisions group gives ``worker`` (the coordinator's view, by the
    web URL in its client id: ``app/serving/routing.py``); None when the broker does not answer."""
    from app.kafka.clients import Connection, admin_client
    from app.serving.routing import owners_from_members

    async def describe() -> list[int]:
        admin = admin_client(Connection(run.bootstrap))
        await admin.start()
        try:
            group = f"{worker.env['APP_ID']}-decisions"
            (response,) = await asyncio.wait_for(admin.describe_consumer_groups([group]), 5.0)
        finally:
            await admin.close()
        url = worker.url.removesuffix("/ready")
        owners: dict[int, str] = {}
        for g in response.groups:
            if g[0] == 0:
                owners.update(owners_from_members(g[5], run.topics["TRANSACTIONS_TOPIC"]))
        return sorted(p for p, owner in owners.items() if owner == url)

    try:
        return asyncio.run(describe())
    except Exception:  # the broker away: unknown, not "none"
        return None


def restart_broker(run: ChaosRun, record: dict[str, Any]) -> None:
    """Stop the broker, watch the workers while it is away, start it on the same ports and data; then each running
    worker's ``/ready`` is awaited again (``ready_again_after_s``: seconds after the broker answered again)."""
    at = time.time()
    record["_at"] = at
    run.event("broker stop")
    running = run.running()
    log_sizes = {w.name: _size(w.log_path) for w in running}
    kafka_local.stop(run.broker_data)
    record["stopped_after_s"] = round(time.time() - at, 3)
    # What operators see while the broker is away: /ready answers, and how much the workers log.
    statuses: set[int] = set()
    until = time.time() + run.args.broker_down_s
    while time.time() < until:
        statuses.update(http_status(w.url, timeout_s=1.0) for w in running)
        run.sleep_until(min(until, time.time() + 0.5))
    record["ready_while_down"] = sorted(statuses)
    record["log_lines_while_down"] = sum(_count_problem_lines(w.log_path, log_sizes[w.name]) for w in running)
    kafka_local.start(port=run.broker_port, controller_port=run.controller_port, data_dir=run.broker_data)
    back = time.time()
    record["back_after_s"] = round(back - at, 3)
    record["_back_at"] = back
    record["ready_again_after_s"] = {}
    record["_awaiting_ready_again"] = set()
    for worker in run.running():
        worker.await_ready(since=back)
        record["ready_again_after_s"][worker.name] = None
        record["_awaiting_ready_again"].add(worker.name)
    run.event("broker answering again", after_s=record["back_after_s"])


def note_ready(run: ChaosRun, worker: Worker) -> None:
    """``worker`` answered ``/ready`` 200: the readiness time of the faults that waited for it."""
    assert worker.ready_at is not None
    for fault in run.faults:
        if fault.get("target") == worker.name and fault.get("_awaiting_ready"):
            fault["ready_after_s"] = round(worker.ready_at - fault["_at"], 3)
            del fault["_awaiting_ready"]
        if worker.name in fault.get("_awaiting_ready_again", ()):
            fault["ready_again_after_s"][worker.name] = round(worker.ready_at - fault["_back_at"], 3)
            fault["_awaiting_ready_again"].discard(worker.name)


def hit_before_ready(run: ChaosRun, worker: Worker) -> None:
    """An earlier fault's wait for ``worker`` that never saw it ready: no readiness time for that fault, and how
    long it had waited when this run hit the worker again (a wait cut short says nothing about recovery)."""
    now = time.time()
    for fault in run.faults:
        if fault.get("target") == worker.name and fault.pop("_awaiting_ready", False):
            fault["ready_after_s"] = None
            fault["hit_again_before_ready"] = True
            fault["waited_before_hit_s"] = round(now - fault["_at"], 3)
        if worker.name in fault.get("_awaiting_ready_again", ()):
            fault["_awaiting_ready_again"].discard(worker.name)
            fault.setdefault("hit_again_before_ready", {})[worker.name] = round(now - fault["_back_at"], 3)


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


def _count_lines(path: Path, since: int, text: bytes) -> int:
    """Lines with ``text`` a worker wrote to its log after byte ``since``."""
    try:
        with path.open("rb") as f:
            f.seek(since)
            return sum(1 for line in f if text in line)
    except OSError:
        return 0
