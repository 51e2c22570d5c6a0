"""``scripts/loop_steps.py``: a worker's slow-step and collection lines grouped by what held the loop. Pure: a log
made here, no worker run."""

from __future__ import annotations

import doctest
import json
from datetime import datetime
from pathlib import Path

import loop_steps  # scripts/ is on sys.path (tests/conftest.py)
import pytest


def _stamp(second: float) -> str:
    at = datetime(2026, 12, 7, 18, 0, 0).timestamp() + second
    return datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]


def _log(tmp_path: Path) -> Path:
    lines = [
        f"[{_stamp(1.0)}] [9] [WARNING] garbage collection of generation 2 held the process 90.0 ms (80.0 ms of CPU; "
        "3 collected, 0 uncollectable)",
        f"[{_stamp(1.001)}] [9] [WARNING] event loop held 95.0 ms (85.0 ms of CPU) by task TransactionalLoop._work "
        "(now at x.py:1 wait_for); stack seen: _process (scorer.py:333) <- process (scorer.py:229)",
        f"[{_stamp(2.0)}] [9] [WARNING] event loop held 40.0 ms (0.5 ms of CPU) by task Sender._do_txn_commit "
        "(now at util.py:45 wait_for); stack seen: not sampled",
        f"[{_stamp(3.0)}] [9] [WARNING] event loop held 30.0 ms (25.0 ms of CPU) by task TerminalFeed.run (now at "
        "t.py:1 _wait); stack seen: flush (terminal_feed.py:231) <- run",
        f"[{_stamp(4.0)}] [9] [WARNING] event loop held 16.0 ms (15.0 ms of CPU) by task TerminalFeed.run (now at "
        "t.py:1 _wait); stack seen: not sampled",
        f"[{_stamp(5.0)}] [9] [WARNING] health degraded: p99 latency 266.2 ms is over 100 ms",
        f"[{_stamp(70.0)}] [9] [WARNING] event loop held 50.0 ms (45.0 ms of CPU) by task X.y; stack seen: f (a.py:1)",
    ]
    path = tmp_path / "worker.log"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_doctests_hold() -> None:
    assert doctest.testmod(loop_steps).failed == 0


def test_steps_are_grouped_by_what_held_the_loop_in_a_span(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    start = datetime(2026, 12, 7, 18, 0, 0).timestamp()
    code = loop_steps.main([str(_log(tmp_path)), "--since", str(start), "--until", str(start + 60), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    kinds = {row["kind"]: row for row in out["table"]}
    # the collection and the step it held are one entry, counted as the collection's, at the step's length
    assert kinds["collector, generation 2"]["count"] == 1
    assert kinds["collector, generation 2"]["max_ms"] == 95.0
    assert kinds["not running: Sender._do_txn_commit"]["count"] == 1
    assert kinds["computing: TerminalFeed.run <- flush (terminal_feed.py:231)"]["ms_per_min"] == 30.0
    assert "computing: TerminalFeed.run" not in kinds  # 16 ms: under the 20 ms counted by default
    assert "computing: X.y <- f (a.py:1)" not in kinds  # after the span
    assert out["table"][0]["kind"] == "collector, generation 2"  # the most held first


def test_a_phase_span_comes_from_the_benchmark_report() -> None:
    report = {"systems": [
        {"system": "worker", "rates": [{"offered_tps": 200.0, "wall_start_s": 1.0, "wall_end_s": 2.0},
                                       {"offered_tps": 1000.0, "wall_start_s": 3.0, "wall_end_s": 4.0}]},
        {"system": "worker", "rates": [{"offered_tps": 1000.0, "wall_start_s": 13.0, "wall_end_s": 14.0}]},
    ]}  # fmt: skip
    assert loop_steps.phase_span(report, "worker", 1000) == (3.0, 4.0)
    assert loop_steps.phase_span(report, "worker", 1000, round_index=1) == (13.0, 14.0)
    with pytest.raises(SystemExit):
        loop_steps.phase_span(report, "worker", 500)
