"""The operator's commands without a broker: formatting, decoding, the replay plan, the command line's shape."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import subprocess
import sys

import pytest

from app.ops.cli import is_worker, with_default_action
from app.ops.render import (
    RESET,
    STATUS_COLOURS,
    LagRow,
    dead_letter_line,
    decode_raw,
    health_line,
    lag_table,
    prediction_line,
)
from app.ops.replay_plan import Candidate, candidates_from_lines, export_record, plan, selected
from app.serialization import dumps, loads
from app.settings import Settings
from tests.cases import BAD_TRANSACTIONS, transaction
from tests.conftest import REPO_ROOT, free_port

COMMANDS = ["health", "predictions", "dlq", "dlq list", "dlq replay", "lag"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def event(status: str) -> dict[str, object]:
    return {"timestamp": "2026-01-01T00:00:00.000Z", "worker": "w-1", "status": status, "issues": ["x is over y"],
            "throughput_tps": 12.0, "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0}, "error_rate": 0.5,
            "dead_letters": 4, "model_version": "m-7", "labels_learned": 9, "terminal_feed_lag_s": 0.5}  # fmt: skip


@pytest.mark.parametrize(
    ("status", "colour"),
    [("healthy", "\x1b[32m"), ("degraded", "\x1b[33m"), ("unhealthy", "\x1b[31m"), ("stale", "\x1b[35m"),
     ("something-new", "\x1b[35m")],
)  # fmt: skip
def test_a_health_line_is_coloured_by_its_status_only_when_asked(status: str, colour: str) -> None:
    plain = health_line(event(status), colour=False)
    assert "\x1b[" not in plain
    for part in ("w-1", status, "12.0 tx/s", "p99 3.0 ms", "errors 50.00%", "dead 4", "model m-7", "x is over y"):
        assert part in plain
    assert health_line(event(status), colour=True) == f"{colour}{plain}{RESET}"
    assert STATUS_COLOURS.get(status, "\x1b[35m") == colour


def test_a_health_event_missing_fields_still_prints_a_line() -> None:
    assert health_line({"status": "healthy"}).startswith("? ? healthy")


def test_a_prediction_line_names_the_decision_and_colours_frauds_only() -> None:
    fraud = {"tx_id": "t-1", "fraud_probability": 0.97, "is_fraud": True, "model_version": "m", "reasons": ["amount"]}
    fine = {**fraud, "tx_id": "t-2", "fraud_probability": 0.01, "is_fraud": False, "reasons": []}
    assert "t-1 p=0.9700 FRAUD model m reasons amount" in prediction_line(fraud)
    assert "t-2 p=0.0100 ok model m reasons -" in prediction_line(fine)
    assert prediction_line(fraud, colour=True).startswith("\x1b[31m")
    assert "\x1b[" not in prediction_line(fine, colour=True)


@pytest.mark.parametrize(("name", "raw", "code"), BAD_TRANSACTIONS)
def test_every_bad_input_decodes_back_to_its_original_bytes(name: str, raw: bytes, code: str) -> None:
    kind, text = decode_raw(b64(raw))
    try:
        original = raw.decode("utf-8")
    except UnicodeDecodeError:
        assert kind == "bytes" and eval(text) == raw  # noqa: S307 - the repr of bytes, made here
        return
    if not raw:
        assert (kind, text) == ("empty", "")
    elif original.isprintable():
        assert (kind, text) == ("text", original)
    else:
        assert kind == "text" and text.isprintable() and len(text) > len(original)


def test_binary_and_control_characters_are_shown_escaped() -> None:
    assert decode_raw(b64(b"\xff\xfe{")) == ("bytes", "b'\\xff\\xfe{'")
    assert decode_raw(b64(b"a\tb\x00c")) == ("text", "a\\tb\\x00c")
    assert decode_raw("not base64!") == ("base64?", "not base64!")


def test_a_dead_letter_line_carries_code_reason_source_key_and_decoded_bytes() -> None:
    letter = {"error": "invalid_json", "reason": "not JSON", "topic": "tx", "partition": 2, "offset": 40,
              "raw": b64(b"x" * 500), "received_at": "2026-01-01T00:00:00.000Z"}  # fmt: skip
    line = dead_letter_line("tx-dlq", 1, 5, b"k\xff", letter, max_raw_chars=10)
    assert line == ('2026-01-01T00:00:00.000Z tx-dlq 1:5 invalid_json "not JSON" from tx 2:40 '
                    "key b'k\\xff' text xxxxxxxxxx...(490 more)")  # fmt: skip
    assert "x" * 500 in dead_letter_line("tx-dlq", 1, 5, None, letter, max_raw_chars=0)


def test_lag_counts_from_the_log_start_when_nothing_was_committed_or_the_commit_was_deleted() -> None:
    assert LagRow("g", "t", 0, None, 10, 15).lag == 5
    assert LagRow("g", "t", 0, 3, 10, 15).lag == 5  # committed offset older than what the log keeps
    assert LagRow("g", "t", 0, 15, 0, 15).lag == 0
    lines = lag_table([LagRow("a", "t", 0, 1, 0, 3), LagRow("b", "u", 0, 2, 0, 2)], {})
    assert lines[-2:] == ["a: total lag 2", "b: total lag 0"]
    assert lag_table([LagRow("a", "t", 0, None, 0, 3), LagRow("a", "t", 1, None, 0, 1)])[-1] == (
        "a: total lag 4; 2 partitions without a committed offset (lag counted from the log start)"
    )


def test_an_exported_dead_letter_edited_and_replayed_is_keyed_by_its_customer() -> None:
    bad = dumps(transaction(3, amount=-5.0))
    letter = {"error": "invalid_amount", "reason": "r", "topic": "transactions", "partition": 0, "offset": 7,
              "raw": b64(bad), "received_at": "t"}  # fmt: skip
    record = export_record("transactions", "transactions-dlq", 1, 9, b"bad-key", letter)
    assert loads(record["value"]) == transaction(3, amount=-5.0)

    still_bad, refused = plan(candidates_from_lines([dumps(record).decode()], "transactions")[0], Settings())
    assert still_bad == [] and refused[0].reason.startswith("invalid_amount:") and refused[0].origin == "file line 1"

    record["value"] = dumps(transaction(3, amount=5.0)).decode()
    go, refused = plan(candidates_from_lines([dumps(record).decode()], "transactions")[0], Settings())
    assert refused == []
    assert [(p.topic, p.key, loads(p.value)) for p in go] == [("transactions", b"c-3", transaction(3, amount=5.0))]


def test_a_line_without_value_text_replays_its_original_bytes_and_labels_go_to_labels() -> None:
    label = dumps({"tx_id": "tx-1", "is_fraud": True, "timestamp": "2018-04-02T00:00:00Z"})
    line = dumps({"kind": "labels", "value": None, "raw": b64(label), "error": "scoring_error"}).decode()
    go, refused = plan(candidates_from_lines([line], "transactions")[0], Settings(labels_topic="lab"))
    assert refused == [] and [(p.topic, p.key, p.value) for p in go] == [("lab", b"tx-1", label)]


def test_selection_by_code_and_offset() -> None:
    c = Candidate("x", "transactions", b"", "scoring_error", 1, 9)
    assert selected(c, set(), set())
    assert selected(c, {"scoring_error"}, {(1, 9)})
    assert not selected(c, {"invalid_json"}, set())
    assert not selected(c, set(), {(0, 9)})


def test_the_worker_stays_the_default_and_dlq_alone_lists() -> None:
    assert is_worker([]) and is_worker(["worker"]) and is_worker(["--web-port", "7000"])
    assert not any(is_worker([c]) for c in ("health", "predictions", "dlq", "lag", "-h", "--help"))
    assert with_default_action(["dlq"]) == ["dlq", "list"]
    assert with_default_action(["dlq", "replay", "--dry-run"]) == ["dlq", "replay", "--dry-run"]


def run_app(*args: str, env: dict[str, str] | None = None, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout_s)  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command: str) -> None:
    result = run_app(*command.split(), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m app {command}")
    assert "--timeout-s" in result.stdout or command == "dlq"


def test_the_top_level_help_lists_every_command_and_does_not_start_the_worker() -> None:
    result = run_app("--help")
    assert result.returncode == 0, result.stderr
    for command in ("worker", "health", "predictions", "dlq", "lag"):
        assert f"    {command}" in result.stdout


def test_worker_help_is_fausts_worker_help() -> None:
    result = run_app("worker", "--help", env={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"})
    assert result.returncode == 0, result.stderr
    assert "Usage: python -m app worker [OPTIONS]" in result.stdout and "--web-port" in result.stdout


@pytest.mark.parametrize("command", ["health", "predictions", "dlq", "lag", "dlq replay --code scoring_error"])
def test_an_unreachable_broker_is_one_line_and_exit_code_2(command: str) -> None:
    result = run_app(*command.split(), "--timeout-s", "3", env={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"})
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: Kafka broker 127.0.0.1:") and "unreachable within 3 s" in result.stderr


def test_the_commands_never_import_the_worker_or_faust() -> None:
    code = "import sys; import app.__main__, app.ops.cli; print(sorted(m for m in sys.modules if m in CHECKED))"
    checked = "CHECKED = {'app.worker', 'faust', 'mode', 'river'}; "
    result = subprocess.run([sys.executable, "-c", checked + code], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_worker_started_during_an_outage_waits_for_the_broker_with_one_line_each_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``python -m app`` creates the topics first; a broker that does not answer yet is waited for, not an exit."""
    from aiokafka.errors import KafkaConnectionError

    from app.__main__ import wait_for_topics

    calls: list[int] = []

    async def ensure(settings: Settings) -> None:
        calls.append(1)
        if len(calls) <= 4:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")

    caplog.set_level(logging.INFO, logger="app")
    asyncio.run(wait_for_topics(Settings(bootstrap_servers="127.0.0.1:1"), ensure, max_backoff_s=0.01))
    assert len(calls) == 5
    lines = [r.getMessage() for r in caplog.records if r.name == "app"]
    assert len(lines) == 2 and "does not answer" in lines[0] and "answers after" in lines[1], lines


def test_a_refusal_that_is_not_an_outage_is_not_waited_for() -> None:
    from app.__main__ import wait_for_topics

    async def ensure(settings: Settings) -> None:
        raise ValueError("invalid topic config")

    with pytest.raises(ValueError, match="invalid topic config"):
        asyncio.run(wait_for_topics(Settings(), ensure, max_backoff_s=0.01))


def test_models_list_shows_each_lines_window_the_last_comparison_and_the_last_promotions_reason() -> None:
    from app.learning.registry import Registry
    from app.ops.models import _lines

    registry = Registry()
    comparison = {"number": 7, "champion_ap": 0.11, "challenger_ap": 0.35, "labelled": 2000, "frauds": 36,
                  "interval": [0.10, 0.36], "confidence": 0.95, "wins": True, "why": "above zero"}  # fmt: skip
    registry.add_header({"version": "v9", "role": "champion", "model_name": "logreg", "sequence": 9,
                         "metrics": {"labelled": 2000, "frauds": 36, "ap": 0.35}, "comparison": comparison,
                         "served_metrics": {"labelled": 2000, "frauds": 36, "ap": 0.2}})  # fmt: skip
    registry.add_header({"version": "v10", "role": "challenger", "model_name": "hoeffding", "sequence": 10,
                         "metrics": {"labelled": 2000, "frauds": 36, "ap": 0.11}})  # fmt: skip
    registry.apply({"action": "promoted", "version": "v9", "previous": "v7", "by": "auto", "timestamp": "t",
                    "reason": "challenger AP 0.350 beats champion AP 0.110"})  # fmt: skip
    shown = "\n".join(_lines(registry))
    assert "champion line logreg (newest v9): window 2000 labels, 36 frauds, AP 0.350" in shown
    assert "challenger line hoeffding (newest v10): window 2000 labels, 36 frauds, AP 0.110" in shown
    assert "served probabilities: window 2000 labels, 36 frauds, AP 0.200" in shown
    assert "interval [+0.100, +0.360] at 95%" in shown
    assert "last promotion: v9 (was v7) by auto at t: challenger AP 0.350 beats champion AP 0.110" in shown
