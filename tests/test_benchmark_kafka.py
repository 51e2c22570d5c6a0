"""A small run of the throughput and latency benchmark on the real broker: its report is complete and sane."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.serialization import loads
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.kafka


def test_benchmark_command_small(kafka_bootstrap: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "--bootstrap-servers", kafka_bootstrap, "--transactions", "1500",
         "--rates", "100", "--rate-seconds", "3", "--partitions", "2", "--ceiling-messages", "2000",
         "--ceiling-variants", "raw", "take", "--labels", "--worker-env", "MODEL_PUBLISH_INTERVAL_S=1",
         "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = loads(out.read_bytes())
    assert [s["system"] for s in report["systems"]] == ["passthrough", "passthrough-eos", "worker"]
    for system in report["systems"]:
        m = system["max_throughput"]
        assert m["received"] == m["published"] == 1500 and m["throughput_tps"] > 0
        (rate,) = system["rates"]
        assert rate["offered_tps"] == 100 and rate["received"] == rate["published"] == 300
        assert isinstance(rate["publisher_kept_rate"], bool) and rate["publish_tps"] > 0
        lat = rate["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["p99.9"]
        assert system["peak_rss_bytes"] > 0
        per = system["messages_per_transaction"]
        assert per["published"] == 1500
        for row in [*per["topics"], per["total"]]:
            assert row["offsets"] >= row["records"] >= 0
            assert row["markers_or_aborted"] == row["offsets"] - row["records"]
            assert math.isclose(row["records_per_tx"], row["records"] / 1500)
            assert math.isclose(row["offsets_per_tx"], row["offsets"] / 1500)
    base, eos, worker = report["systems"]

    # the passthrough writes one record per transaction, outside Kafka transactions
    assert base["messages_per_transaction"]["total"]["records"] == base["messages_per_transaction"]["total"]["offsets"]
    assert base["messages_per_transaction"]["total"]["records_per_tx"] == 1.0
    # the transactional passthrough: the same records, each batch committed (a marker per partition and commit)
    assert eos["messages_per_transaction"]["total"]["records_per_tx"] == 1.0
    assert eos["messages_per_transaction"]["total"]["markers_or_aborted"] >= 1

    # the worker: at least a prediction and a terminal-log record per transaction, in committed Kafka transactions
    per = worker["messages_per_transaction"]
    app_id = worker["app_id"]
    rows = {row["topic"]: row for row in per["topics"]}
    assert f"{app_id}-customer-state-changelog" in rows and f"{app_id}-terminal-transactions" in rows
    assert rows[f"{app_id}-terminal-transactions"]["records"] == 1500
    predictions = [row for topic, row in rows.items() if topic.endswith("-predictions")]
    assert len(predictions) == 1 and predictions[0]["records"] == 1500
    assert per["total"]["records_per_tx"] >= 2 and per["total"]["offsets_per_tx"] >= per["total"]["records_per_tx"]
    assert per["scored"] == 1500
    assert per["kafka_transactions"] >= 1 and per["total"]["markers_or_aborted"] >= per["kafka_transactions"]
    assert per["tx_per_kafka_transaction"] == 1500 / per["kafka_transactions"]

    # --labels: one label per transaction of every phase on the worker's labels topic, its trainer's counts reported
    labels_topic = f"bench-{worker['run']}-labels"
    assert asyncio.run(_records(kafka_bootstrap, labels_topic)) == 500 + 1500 + 300
    assert set(worker["labels_learned"]) == {"received", "learned", "implicit_negative"}
    assert 0 < worker["labels_learned"]["received"] <= 2300  # its trainer read them (published every second)
    assert "labels_learned" not in base and "labels_learned" not in eos

    assert worker["state_bytes"] > 0
    assert worker["topic_disk_bytes"][f"{app_id}-customer-state-changelog"] > 0
    assert worker["cpu_split"] and abs(sum(worker["cpu_split"].values()) - 1.0) < 0.01
    assert report["ratios"]["throughput_worker_over_passthrough"] > 0
    assert len(report["ratios"]["p99_latency_worker_over_passthrough"]) == 1
    assert len(report["ratios"]["p99_latency_worker_over_passthrough_eos"]) == 1

    ceiling = report["ceiling"]
    assert ceiling["messages"] == 2000 and ceiling["partitions"] == 4
    assert [row["variant"] for row in ceiling["rows"]] == ["raw", "take"]
    for row in ceiling["rows"]:
        assert row["received"] == 2000 and row["msgs_per_s"] > 0 and row["first_to_last_s"] > 0

    # the printed summary is the markdown the lead pastes
    for heading in ("| system | max tx/s |", "| variant | messages/s |", "| topic | offsets |"):
        assert heading in result.stdout


async def _records(bootstrap: str, topic: str) -> int:
    """Records on ``topic`` (written outside transactions: end minus start offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()  # consumer.topics() keeps no partitions
        tps = [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
        ends, starts = await consumer.end_offsets(tps), await consumer.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        await consumer.stop()
