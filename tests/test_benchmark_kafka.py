"""A small run of the throughput and latency benchmark on the real broker: its report is complete."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.serialization import loads
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.kafka


def test_benchmark_command_small(kafka_bootstrap: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "--bootstrap-servers", kafka_bootstrap, "--transactions", "1500",
         "--rates", "100", "--rate-seconds", "3", "--partitions", "2", "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = loads(out.read_bytes())
    assert [s["system"] for s in report["systems"]] == ["passthrough", "worker"]
    for system in report["systems"]:
        m = system["max_throughput"]
        assert m["received"] == m["published"] == 1500 and m["throughput_tps"] > 0
        (rate,) = system["rates"]
        assert rate["offered_tps"] == 100 and rate["received"] == rate["published"] == 300
        lat = rate["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["p99.9"]
        assert system["peak_rss_bytes"] > 0
    worker = report["systems"][1]
    assert worker["state_bytes"] > 0
    assert worker["cpu_split"] and abs(sum(worker["cpu_split"].values()) - 1.0) < 0.01
    assert report["ratios"]["throughput_worker_over_passthrough"] > 0
    assert len(report["ratios"]["p99_latency_worker_over_passthrough"]) == 1
