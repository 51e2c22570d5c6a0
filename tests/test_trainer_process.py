"""The trainer's own process without a broker: its pages, the worker's supervision of a child (started, polled,
restarted, stopped, SIGKILLed after the bound), the merged ``/metrics`` and a child that dies with its parent."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from app import metrics
from app.learning.child import TrainerChild, free_port
from app.learning.process import build_trainer
from app.serialization import loads
from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

# A stand-in for `python -m app trainer`: serves /status and /metrics on TRAINER_WEB_PORT; with IGNORE_TERM it
# ignores SIGTERM (a stuck trainer), so the bound's SIGKILL must end it.
FAKE_CHILD = textwrap.dedent(
    """
    import http.server, json, os, signal
    if os.environ.get("IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    class Pages(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/status":
                body = json.dumps({"role": "active", "pid": os.getpid(), "pending": 3,
                                   "parent": os.environ["TRAINER_PARENT_PID"],
                                   "dead_letters": {"invalid_json": 2}}).encode()
            else:
                body = (b"# HELP fraud_trainer_active 1 while it trains.\\n# TYPE fraud_trainer_active gauge\\n"
                        b"fraud_trainer_active 1.0\\n# HELP fraud_dead_letters_total Dead letters.\\n"
                        b"# TYPE fraud_dead_letters_total counter\\n"
                        b'fraud_dead_letters_total{input="labels",error="invalid_json"} 2.0\\n')
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    http.server.HTTPServer(("127.0.0.1", int(os.environ["TRAINER_WEB_PORT"])), Pages).serve_forever()
    """
)


async def _until(condition, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _running(child: TrainerChild) -> AsyncIterator[int]:
    """The child under ``child.run()`` until it is active (``as`` its pid); stopped, its task ended, after the body."""
    task = asyncio.ensure_future(child.run())
    await _until(lambda: child.active)
    assert child.pid is not None
    yield child.pid
    await child.stop()
    await asyncio.wait_for(task, 5)


@contextlib.contextmanager
def _stopped(pid: int) -> Iterator[None]:
    """The process SIGSTOPped for the body (a child busy or paused under load), resumed even when an assertion fails."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _child(tmp_path: Path) -> TrainerChild:
    script = tmp_path / "fake_trainer.py"
    script.write_text(FAKE_CHILD)
    return TrainerChild(Settings(worker_id="w1"), [sys.executable, str(script)], stop_timeout_s=1.0,
                        poll_interval_s=0.1)  # fmt: skip


def test_the_worker_starts_polls_restarts_and_stops_its_trainer_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IGNORE_TERM", raising=False)
    child = _child(tmp_path)

    async def scenario() -> None:
        task = asyncio.ensure_future(child.run())
        await _until(lambda: child.active)
        assert child.status is not None and child.status["parent"] == str(os.getpid())
        first = child.pid
        assert first is not None and child.status["pid"] == first
        assert metrics.TRAINER_PROCESS_UP._value.get() == 1  # type: ignore[attr-defined]
        assert child.summary()["pending"] == 3 and child.dead_letters() == {("labels", "invalid_json"): 2.0}
        families = await child.families()
        assert {f.name for f in families} == {"fraud_trainer_active", "fraud_dead_letters"}

        os.kill(first, signal.SIGKILL)  # a dead child is started again, after a short backoff
        await _until(lambda: child.active and child.pid not in (None, first))
        assert child.starts == 2

        await child.stop()
        await asyncio.wait_for(task, 5)
        assert child.pid is None and not child.up
        assert metrics.TRAINER_PROCESS_UP._value.get() == 0  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_a_child_too_busy_to_answer_gives_its_last_families_for_a_bounded_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scrape while the child does not answer within the fetch's timeout (paused here, busy under load) keeps its
    counters (dropping them reads as a reset), up to ``STALE_FAMILIES_S``; after that, and once it is gone, none."""
    monkeypatch.delenv("IGNORE_TERM", raising=False)
    child = _child(tmp_path)

    async def scenario() -> None:
        async with _running(child) as pid:
            fresh = await child.families()
            assert {f.name for f in fresh} == {"fraud_trainer_active", "fraud_dead_letters"}
            with _stopped(pid):
                assert await child._get("/metrics") is None  # it does not answer
                assert [f.name for f in await child.families()] == [f.name for f in fresh]
                monkeypatch.setattr("app.learning.child.STALE_FAMILIES_S", 0.0)
                assert await child.families() == []  # too old to stand in
        assert await child.families() == []

    asyncio.run(scenario())


def test_a_paused_child_still_counts_as_up_for_a_bounded_time_then_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One missed ``/status`` poll (a child busy under load) must not read as the trainer down; a child that stays
    silent past ``STALE_STATUS_S`` does."""
    monkeypatch.delenv("IGNORE_TERM", raising=False)
    child = _child(tmp_path)

    async def scenario() -> None:
        async with _running(child) as pid:
            with _stopped(pid):
                assert await child._get("/status") is None  # it does not answer, so the polls miss too
                await asyncio.sleep(3 * child.poll_interval_s)
                assert child.up and child.active
                assert metrics.TRAINER_PROCESS_UP._value.get() == 1  # type: ignore[attr-defined]
                monkeypatch.setattr("app.learning.child.STALE_STATUS_S", 0.0)
                await _until(lambda: not child.up)
                assert metrics.TRAINER_PROCESS_UP._value.get() == 0  # type: ignore[attr-defined]
            await _until(lambda: child.up)  # it answers again

    asyncio.run(scenario())


def test_a_child_that_ignores_sigterm_is_sigkilled_after_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IGNORE_TERM", "1")
    child = _child(tmp_path)

    async def scenario() -> float:
        task = asyncio.ensure_future(child.run())
        await _until(lambda: child.up)
        process = child.process
        started = time.monotonic()
        await child.stop()
        await asyncio.wait_for(task, 5)
        assert process is not None and process.returncode == -signal.SIGKILL
        return time.monotonic() - started

    assert 0.9 <= asyncio.run(scenario()) < 5


def test_the_worker_exposition_appends_the_childs_families_one_per_name() -> None:
    """A duplicate ``# TYPE`` line makes Prometheus refuse the whole scrape: a name in both comes out once."""
    child = CollectorRegistry()
    Counter("fraud_dead_letters", "Dead letters.", ["input", "error"], registry=child).labels("labels", "x").inc(4)
    from prometheus_client import generate_latest

    parsed = metrics.parse_exposition(generate_latest(child).decode())
    metrics.DEAD_LETTERS.labels("transactions", "invalid_json")  # the worker's own family of the same name
    body, _ = metrics.exposition(parsed)
    text = body.decode()
    types = [line for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types)), "a family twice"
    assert text.count("# TYPE fraud_dead_letters_total counter") == 1
    assert 'fraud_dead_letters_total{error="x",input="labels"} 4.0' in text
    assert 'input="transactions"' in text
    assert "fraud_trainer_active" not in metrics.exposition()[0].decode()  # the worker's own registry holds none
    assert metrics.parse_exposition("not { an exposition") == []


def test_a_child_dies_with_its_parent_even_by_sigkill(tmp_path: Path) -> None:
    """``PR_SET_PDEATHSIG``: a SIGKILLed worker leaves no trainer behind."""
    pid_file = tmp_path / "child.pid"
    parent_code = textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c",
            "import os, time; from app.__main__ import die_with_parent; die_with_parent(os.getppid()); "
            "open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"])
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline and parent.poll() is None, "the child did not start"
            time.sleep(0.05)
        child_pid = int(pid_file.read_text())
        os.kill(child_pid, 0)  # alive
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(child_pid):
            assert time.monotonic() < deadline, f"the child {child_pid} outlived its SIGKILLed parent"
            time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"  # a zombie waits for init to reap it: dead
    except FileNotFoundError:
        return False


def test_a_child_whose_parent_is_already_gone_exits_at_once() -> None:
    code = "from app.__main__ import die_with_parent; die_with_parent(1)"  # pid 1 never started us
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "is gone" in result.stderr


def test_the_trainer_process_serves_its_pages_and_stops_on_request_without_a_broker() -> None:
    port = free_port()
    process = build_trainer(Settings(worker_id="t1", bootstrap_servers="127.0.0.1:1", trainer_web_port=port,
                                     trainer_web_bind="127.0.0.1"))  # fmt: skip

    def get(path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.ensure_future(process.run(stop))
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + 20
        while True:
            try:
                status, body = await loop.run_in_executor(None, get, "/status")
                break
            except OSError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        document = loads(body)
        assert status == 200 and document["role"] == "standby" and document["pid"] == os.getpid()
        assert document["pending"] is None and document["ready"] is False
        assert (await loop.run_in_executor(None, get, "/ready"))[0] == 503  # no broker: not even standing by
        status, body = await loop.run_in_executor(None, get, "/metrics")
        assert status == 200 and b"fraud_trainer_active 0.0" in body and b"fraud_trainer_process_" in body
        assert b"fraud_transactions" not in body  # the worker's metrics are not the trainer's
        stop.set()
        await asyncio.wait_for(task, 15)

    asyncio.run(scenario())
