"""Analysts' rules in the live decision path, on a real broker: a rule added by ``python -m app rules add`` while
traffic flows changes the decisions of both workers of a two-worker deployment within 5 s, each prediction carries
the rule set version it was decided with, a shadow rule changes nothing but is recorded, a malformed rule leaves
the set in force, and a restarted worker decides nothing before it has the rule set."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.kafka.clients import consume, produce
from app.serialization import dumps, loads
from app.serving.routing import PartitionOwners, partition_for_key
from tests.conftest import REPO_ROOT, WorkerProcess
from tests.openapi import assert_request_valid, assert_response_valid
from tests.test_features_kafka import same_deployment
from tests.watch import wait

pytestmark = pytest.mark.kafka
log = logging.getLogger(__name__)

WorkerFactory = Callable[..., WorkerProcess]
START = datetime(2018, 4, 1, 10, tzinfo=UTC)
CUSTOMERS = 16  # spread over both partitions
PROPAGATION_LIMIT_S = 5.0


def tx(i: int, prefix: str = "tx") -> dict[str, object]:
    """Amounts 20..79: the untrained model allows them all, so any block or review is a rule's."""
    return {"tx_id": f"{prefix}-{i}", "timestamp": (START + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
            "customer_id": f"c-{i % CUSTOMERS}", "terminal_id": f"t-{i % 5}", "amount": 20.0 + i % 60}  # fmt: skip


def rules_cli(worker: WorkerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", "rules", *args], cwd=REPO_ROOT, env=worker.env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def added_version(result: subprocess.CompletedProcess[str]) -> int:
    assert result.returncode == 0, result.stderr
    return int(result.stdout.rsplit("rule set version ", 1)[1].split()[0])


class Traffic:
    """Transactions at a steady rate from a thread until stopped; ``tx-<i>`` in order."""

    def __init__(self, bootstrap: str, topic: str, rate_tps: float = 60.0) -> None:
        self.bootstrap, self.topic, self.rate_tps = bootstrap, topic, rate_tps
        self.stopped = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _messages(self) -> Iterator[tuple[bytes, bytes]]:
        i = 0
        while not self.stopped.is_set():
            t = tx(i)
            yield str(t["customer_id"]).encode(), dumps(t)
            i += 1
            self.sent = i

    def _run(self) -> None:
        produce(self.bootstrap, self.topic, self._messages(), rate_tps=self.rate_tps)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=30)


def predictions(bootstrap: str, worker: WorkerProcess, until: Callable[[dict[str, dict[str, Any]]], bool],
                timeout_s: float = 60.0) -> dict[str, dict[str, Any]]:  # fmt: skip
    records = consume(bootstrap, worker.topics["PREDICTIONS_TOPIC"],
                      lambda rs: until({loads(r.value or b"")["tx_id"]: {} for r in rs}), timeout_s)  # fmt: skip
    return {p["tx_id"]: p for p in (loads(r.value or b"") for r in records)}


def post_rule(worker: WorkerProcess, rule: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """``POST /rules``; the request and the answer checked against ``topics/openapi.json``."""
    assert_request_valid("/rules", "post", rule)
    request = urllib.request.Request(worker.web_url + "/rules", data=dumps(rule), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, body = int(response.status), loads(response.read())
    except urllib.error.HTTPError as exc:
        status, body = int(exc.code), loads(exc.read())
    assert_response_valid("/rules", "post", status, body)
    return status, body


def owners(worker: WorkerProcess) -> dict[int, str]:
    """Input partition -> the web URL of the worker that holds it."""

    async def ask() -> dict[int, str]:
        group = PartitionOwners(worker.env["KAFKA_BOOTSTRAP_SERVERS"], f"{worker.env['APP_ID']}-decisions",
                                worker.topics["TRANSACTIONS_TOPIC"])  # fmt: skip
        try:
            return {p: str(await group.owner_url(p)) for p in (0, 1)}
        finally:
            await group.close()

    return asyncio.run(ask())


def scored_s(prediction: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(prediction["scored_at"]).replace("Z", "+00:00")).timestamp()


def rule_event_time_s(bootstrap: str, worker: WorkerProcess, version: int) -> float:
    """When the rule event that makes ``version`` was published (its record's timestamp, the producer's clock)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def read() -> float:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
        await consumer.start()
        try:
            tp = TopicPartition(worker.topics["RULES_TOPIC"], 0)
            consumer.assign([tp])
            consumer.seek(tp, version - 1)
            batch = await consumer.getmany(tp, timeout_ms=5000)
            return float(batch[tp][0].timestamp) / 1000.0
        finally:
            await consumer.stop()

    return asyncio.run(read())


@pytest.mark.timing  # the 5 s from the add to both workers' first changed decision
def test_a_rule_added_in_traffic_changes_both_workers_decisions_within_5_s_and_predictions_say_their_version(
    worker_factory: WorkerFactory, kafka_bootstrap: str, tmp_path: Any
) -> None:
    first = worker_factory(partitions=2, WORKER_ID="a", DATA_DIR=str(tmp_path / "a"))
    second = worker_factory(partitions=2, **same_deployment(first, WORKER_ID="b", DATA_DIR=str(tmp_path / "b")))
    first.wait_ready()
    second.wait_ready()
    url_of = {first.web_url: "a", second.web_url: "b"}
    with Traffic(kafka_bootstrap, first.topics["TRANSACTIONS_TOPIC"]) as traffic:
        assert len(predictions(kafka_bootstrap, first, lambda ps: len(ps) >= 60, 60)) >= 60
        held = owners(first)
        assert {url_of.get(url) for url in held.values()} == {"a", "b"}, held  # one partition each

        # a shadow rule first, over HTTP: recorded in shadow_rules, deciding nothing
        shadow = {"id": "try-mid", "expression": "amount >= 50", "action": "block", "state": "shadow", "reason": "t"}
        status, body = post_rule(second, shadow)
        assert status == 200 and body["change"] == "added" and body["by"].startswith("http:"), body
        shadow_version = body["version"]
        # malformed rules: refused, nothing published, the version in force unchanged
        status, body = post_rule(second, {"id": "broken", "expression": "amount >", "action": "block"})
        assert (status, body["error"], body["field"], body["line"], body["column"]) == (
            400, "rule_refused", "expression", 1, 9)  # fmt: skip
        refused = rules_cli(first, "add", "--id", "broken", "--expression", "amount >", "--action", "block")
        assert refused.returncode == 1 and "rule 'broken': expression line 1, column 9" in refused.stderr
        unknown = rules_cli(first, "add", "--id", "typo", "--expression", "amout > 1", "--action", "block")
        assert unknown.returncode == 1 and "unknown name 'amout'" in unknown.stderr
        mark = traffic.sent
        after_refusals = predictions(kafka_bootstrap, first, lambda ps: f"tx-{mark + 60}" in ps)
        assert after_refusals[f"tx-{mark + 60}"]["rule_set_version"] == shadow_version  # the set in force kept

        # the active rule, timed from its publication to each worker's first changed decision
        command_s = time.time()  # and, logged, from the command's start (Python's start and its read of the topics)
        version = added_version(rules_cli(first, "add", "--id", "big", "--expression", "amount >= 40",
                                          "--action", "block", "--reason", "test"))  # fmt: skip
        assert version == shadow_version + 1  # the refused ones published nothing
        published_s = rule_event_time_s(kafka_bootstrap, first, version)
        mark = traffic.sent
        decided = predictions(kafka_bootstrap, first, lambda ps: f"tx-{mark + 120}" in ps)
        assert f"tx-{mark + 120}" in decided
    by_partition: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    for p in decided.values():
        by_partition[partition_for_key(p["customer_id"].encode(), 2)].append(p)

    for partition, ps in by_partition.items():
        ps.sort(key=lambda p: int(p["tx_id"].split("-")[1]))  # input order within the partition
        versions = [p["rule_set_version"] for p in ps]
        assert versions == sorted(versions), f"partition {partition}: a version went back"
        assert set(versions) <= {0, shadow_version, version}, set(versions)
        for p in ps:  # each prediction was decided by the rule set its version names
            amount = float(p["features"]["amount"])
            shadowed = ["try-mid"] if p["rule_set_version"] >= shadow_version and amount >= 50 else []
            assert p["shadow_rules"] == shadowed, p
            if p["rule_set_version"] == version and amount >= 40:
                assert (p["decision"], p["rules"]) == ("block", ["big"]), p
            else:
                assert (p["decision"], p["rules"]) == ("allow", []), p  # the shadow rule blocked nothing
            assert p["is_fraud"] is False  # the model's own, whatever the rules said
        assert shadow_version in versions and version in versions, f"partition {partition}: {set(versions)}"
        changed = [p for p in ps if p["decision"] == "block"]
        lag_s = scored_s(changed[0]) - published_s
        log.warning(
            "worker %s (partition %d): first changed decision %.2f s after the rule was published, %.2f s after "
            "the command started",
            url_of[held[partition]],
            partition,
            lag_s,
            scored_s(changed[0]) - command_s,
        )
        assert lag_s < PROPAGATION_LIMIT_S, f"worker {url_of[held[partition]]} changed after {lag_s:.2f} s"

    # both workers counted the rule's matches, show it on their page and answer it on GET /rules
    for worker in (first, second):
        in_force = loads(worker.http_get("/rules"))
        assert_response_valid("/rules", "get", 200, in_force)
        assert in_force["version"] == version and {r["id"] for r in in_force["rules"]} == {"big", "try-mid"}
        status = loads(worker.http_get("/status.json"))
        rows = {r["id"]: r for r in status["rules"]["rules"]}
        assert status["rules"]["version"] == version and set(rows) == {"big", "try-mid"}
        assert rows["big"]["hits_total"] > 0 and rows["try-mid"]["state"] == "shadow"
        metrics = worker.http_get("/metrics").decode()
        assert 'fraud_rule_matches_total{rule="big",state="active"}' in metrics


def test_a_restarted_worker_decides_nothing_before_it_has_the_rule_set(
    worker_factory: WorkerFactory, kafka_bootstrap: str
) -> None:
    worker = worker_factory(partitions=2)
    worker.wait_ready()
    first_version = added_version(rules_cli(worker, "add", "--id", "big", "--expression", "amount >= 40",
                                            "--action", "review"))  # fmt: skip
    produce(kafka_bootstrap, worker.topics["TRANSACTIONS_TOPIC"],
            [(str(t["customer_id"]).encode(), dumps(t)) for t in (tx(i) for i in range(40))])  # fmt: skip
    before = predictions(kafka_bootstrap, worker, lambda ps: len(ps) >= 40)
    assert {p["rule_set_version"] for p in before.values()} == {first_version}

    worker.stop()
    # while it is down: the rule set changes and transactions wait for it
    version = added_version(rules_cli(worker, "add", "--id", "big", "--expression", "amount >= 40",
                                      "--action", "block"))  # fmt: skip
    produce(kafka_bootstrap, worker.topics["TRANSACTIONS_TOPIC"],
            [(str(t["customer_id"]).encode(), dumps(t)) for t in (tx(i) for i in range(40, 100))])  # fmt: skip
    worker.start()
    decided = predictions(kafka_bootstrap, worker, lambda ps: len(ps) >= 100, 90)
    after = [decided[f"tx-{i}"] for i in range(40, 100)]
    assert {p["rule_set_version"] for p in after} == {version}  # the first one after the restart included
    assert {(p["decision"], tuple(p["rules"])) for p in after if p["features"]["amount"] >= 40} == {("block", ("big",))}

    # a list changed alone: the version pair predictions carry changes with it (rule_set_version does not)
    listed = rules_cli(worker, "set-list", "watch", "--items", "c-1")
    assert listed.returncode == 0, listed.stderr
    lists_version = int(listed.stdout.rsplit("lists version ", 1)[1].rstrip(")\n"))
    assert {p["lists_version"] for p in after} == {0} and lists_version == 1
    wait(lambda: loads(worker.http_get("/rules"))["lists_version"] == lists_version, 30, "the worker has the list")
    produce(kafka_bootstrap, worker.topics["TRANSACTIONS_TOPIC"],
            [(str(t["customer_id"]).encode(), dumps(t)) for t in (tx(i) for i in range(100, 140))])  # fmt: skip
    latest = predictions(kafka_bootstrap, worker, lambda ps: len(ps) >= 140, 60)
    assert {(latest[f"tx-{i}"]["rule_set_version"], latest[f"tx-{i}"]["lists_version"]) for i in range(100, 140)} == {
        (version, lists_version)}  # fmt: skip
