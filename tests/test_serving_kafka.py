"""Synchronous scoring and feature lookup on real workers: REST and gRPC answer what the stream publishes, with the
dead letters' codes, documented by ``topics/openapi.json``, and a customer held by another worker is answered by it."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from app.kafka.clients import Record, at_least, consume, produce
from app.serialization import dumps, loads
from app.serving.protos import fraud_serving_pb2 as pb
from app.serving.protos import fraud_serving_pb2_grpc as pb_grpc
from app.serving.routing import partition_for_key
from tests.cases import BAD_TRANSACTIONS
from tests.conftest import REPO_ROOT, WorkerProcess
from tests.contract import assert_valid
from tests.openapi import assert_request_valid, assert_response_valid

pytestmark = pytest.mark.kafka

WorkerFactory = Callable[..., WorkerProcess]
PREDICT = "/predict"
CUSTOMER = "/features/customers/{customer_id}"
TERMINAL = "/features/terminals/{terminal_id}"
SAME_AS_STREAM = ("tx_id", "customer_id", "terminal_id", "timestamp", "fraud_probability", "is_fraud", "threshold",
                  "model_version", "reasons", "features", "decision", "rules", "shadow_rules",
                  "rule_set_version")  # fmt: skip


def rest(worker: WorkerProcess, method: str, path: str, body: bytes | None = None) -> tuple[int, Any, Any]:
    """Status, parsed JSON body and headers of one request (errors included)."""
    request = urllib.request.Request(worker.web_url + path, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), loads(response.read()), response.headers
    except urllib.error.HTTPError as exc:
        return int(exc.code), loads(exc.read()), exc.headers


def predict_rest(worker: WorkerProcess, tx: dict[str, Any] | bytes) -> tuple[int, Any, Any]:
    raw = tx if isinstance(tx, bytes) else dumps(tx)
    if not isinstance(tx, bytes):
        assert_request_valid(PREDICT, "post", tx)
    status, body, headers = rest(worker, "POST", PREDICT, raw)
    assert_response_valid(PREDICT, "post", status, body, headers)
    return status, body, headers


def customer_rest(worker: WorkerProcess, customer_id: str) -> tuple[int, Any, Any]:
    status, body, headers = rest(worker, "GET", f"/features/customers/{quote(customer_id, safe='')}")
    assert_response_valid(CUSTOMER, "get", status, body, headers)
    return status, body, headers


def terminal_rest(worker: WorkerProcess, terminal_id: str) -> tuple[int, Any, Any]:
    status, body, headers = rest(worker, "GET", f"/features/terminals/{quote(terminal_id, safe='')}")
    assert_response_valid(TERMINAL, "get", status, body, headers)
    return status, body, headers


def stub(worker: WorkerProcess) -> pb_grpc.FraudServingStub:
    return pb_grpc.FraudServingStub(grpc.insecure_channel(worker.grpc_target))


def as_dict(prediction: pb.Prediction) -> dict[str, Any]:
    return {
        "tx_id": prediction.tx_id,
        "customer_id": prediction.customer_id,
        "terminal_id": prediction.terminal_id,
        "timestamp": prediction.timestamp,
        "fraud_probability": prediction.fraud_probability,
        "is_fraud": prediction.is_fraud,
        "threshold": prediction.threshold,
        "model_version": prediction.model_version,
        "reasons": list(prediction.reasons),
        "features": dict(prediction.features),
        "latency_ms": prediction.latency_ms,
        "scored_at": prediction.scored_at,
        "decision": prediction.decision,
        "rules": list(prediction.rules),
        "shadow_rules": list(prediction.shadow_rules),
        "rule_set_version": prediction.rule_set_version,
    }


def tx(tx_id: str, customer_id: str, terminal_id: str, minute: int, amount: float) -> dict[str, Any]:
    return {"tx_id": tx_id, "timestamp": f"2018-04-02T{10 + minute // 60:02d}:{minute % 60:02d}:00Z",
            "customer_id": customer_id, "terminal_id": terminal_id, "amount": amount}  # fmt: skip


def publish(kafka_bootstrap: str, worker: WorkerProcess, txs: list[dict[str, Any]]) -> None:
    produce(kafka_bootstrap, worker.topics["TRANSACTIONS_TOPIC"], [(t["customer_id"].encode(), dumps(t)) for t in txs])


def predictions(kafka_bootstrap: str, worker: WorkerProcess, n: int) -> dict[str, dict[str, Any]]:
    """The topic's predictions by ``tx_id``, once it holds ``n``; exactly ``n``, each ``tx_id`` once: a synchronous
    answer published by mistake, or a repeated one, fails here instead of vanishing in the dict."""
    topic = worker.topics["PREDICTIONS_TOPIC"]
    records: list[Record] = consume(kafka_bootstrap, topic, at_least(n))
    assert len(records) >= n, f"{len(records)} predictions of {n}:\n{worker.log_tail()}"
    records = consume(kafka_bootstrap, topic, at_least(n + 1), timeout_s=3.0)  # and nothing after them
    ids = [loads(r.value or b"")["tx_id"] for r in records]
    assert len(ids) == n and len(set(ids)) == n, f"expected {n} predictions, each tx_id once: {sorted(ids)}"
    return {p["tx_id"]: p for p in (loads(r.value or b"") for r in records)}


def wait_customer(worker: WorkerProcess, customer_id: str, count: int, timeout_s: float = 30.0) -> dict[str, Any]:
    """The customer's lookup once its state holds ``count`` transactions (memory follows the commit)."""
    deadline = time.monotonic() + timeout_s
    body: Any = None
    while time.monotonic() < deadline:
        status, body, _ = customer_rest(worker, customer_id)
        if status == 200 and body["features"]["customer_nb_tx_30day"] == count:
            return dict(body)
        time.sleep(0.1)
    pytest.fail(f"customer {customer_id} never held {count} transactions: {body}")


def test_rest_and_grpc_predictions_equal_the_streams_for_the_same_state(
    worker_factory: WorkerFactory, kafka_bootstrap: str
) -> None:
    worker = worker_factory(partitions=2)
    worker.wait_ready()
    for rule in (("burst", "amount > 400 and customer_nb_tx_1hour >= 5", "review", "active"),
                 ("watch", "terminal_id == 'term-a'", "block", "shadow")):  # fmt: skip
        added = subprocess.run([sys.executable, "-m", "app", "rules", "add", "--id", rule[0], "--expression", rule[1],
                                "--action", rule[2], "--state", rule[3]], cwd=REPO_ROOT, env=worker.env,
                               capture_output=True, text=True, timeout=120)  # fmt: skip
        assert added.returncode == 0, added.stderr
    history = [tx(f"h-{i}", "cust-a", "term-a" if i % 2 else "term-b", 7 * i, 20.0 + 13 * i) for i in range(6)]
    publish(kafka_bootstrap, worker, history)
    assert {p["rule_set_version"] for p in predictions(kafka_bootstrap, worker, len(history)).values()} == {2}
    before = wait_customer(worker, "cust-a", len(history))
    assert before["event_time"] == "2018-04-02T10:35:00.000Z" and before["id"] == "cust-a"

    probe = tx("probe", "cust-a", "term-a", 50, 480.0)
    status, by_rest, headers = predict_rest(worker, probe)
    assert status == 200, by_rest
    assert headers["X-Fraud-Worker"] == "worker-0"
    assert_valid("predictions.schema.json", by_rest)
    assert by_rest["features"]["customer_nb_tx_1hour"] == len(history) + 1  # history seen, probe included
    by_grpc = as_dict(stub(worker).Predict(pb.PredictRequest(transaction_json=dumps(probe)), timeout=10))
    streamed = list(stub(worker).PredictStream(iter([pb.PredictRequest(transaction_json=dumps(probe))]), timeout=10))
    assert [r.WhichOneof("result") for r in streamed] == ["prediction"]
    # Nothing changed: the customer, its terminal and a second answer are as before.
    assert wait_customer(worker, "cust-a", len(history)) == before
    assert predict_rest(worker, probe)[1]["features"] == by_rest["features"]

    publish(kafka_bootstrap, worker, [probe])
    by_stream = predictions(kafka_bootstrap, worker, len(history) + 1)["probe"]
    assert (by_stream["decision"], by_stream["rules"], by_stream["shadow_rules"]) == ("review", ["burst"], ["watch"])
    for answer in (by_rest, by_grpc, as_dict(streamed[0].prediction)):  # the same rules applied by all three
        assert {k: answer[k] for k in SAME_AS_STREAM} == {k: by_stream[k] for k in SAME_AS_STREAM}

    status, terminal, _ = terminal_rest(worker, "term-a")
    assert status == 200 and terminal["event_time"] == "2018-04-02T10:50:00.000Z"
    assert terminal["features"]["terminal_nb_tx_1hour"] == 4  # h-1, h-3, h-5 and the probe
    by_grpc_terminal = stub(worker).GetFeatures(pb.FeaturesRequest(terminal_id="term-a"), timeout=10)
    assert dict(by_grpc_terminal.features) == terminal["features"]
    after = wait_customer(worker, "cust-a", len(history) + 1)
    by_grpc_customer = stub(worker).GetFeatures(pb.FeaturesRequest(customer_id="cust-a"), timeout=10)
    assert (by_grpc_customer.event_time, dict(by_grpc_customer.features)) == (after["event_time"], after["features"])
    info = stub(worker).GetModelInfo(pb.ModelInfoRequest(), timeout=10)
    assert info.version == by_stream["model_version"]


def test_bad_input_gets_the_dead_letter_code_over_rest_and_grpc(
    worker_factory: WorkerFactory, kafka_bootstrap: str
) -> None:
    worker = worker_factory(partitions=1)
    status = None
    deadline = time.monotonic() + 60
    while status is None and time.monotonic() < deadline:
        try:
            status, body, headers = predict_rest(worker, tx("early", "c", "t", 0, 1.0))
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)
    assert (status, body["error"]) == (503, "not_ready"), body
    worker.wait_ready()
    grpc_stub = stub(worker)
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(worker.grpc_target))
    deadline = time.monotonic() + 10
    serving = health_pb2.HealthCheckResponse.SERVING
    for service in ("", "fraud.serving.v1.FraudServing"):  # SERVING follows readiness within a second
        while health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status != serving:
            assert time.monotonic() < deadline, f"gRPC health of {service!r} never said SERVING"
            time.sleep(0.2)

    for name, raw, code in BAD_TRANSACTIONS:
        status, body, _ = predict_rest(worker, raw)
        assert (status, body["error"]) == (400, code), name
        with pytest.raises(grpc.RpcError) as failed:
            grpc_stub.Predict(pb.PredictRequest(transaction_json=raw), timeout=10)
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert failed.value.details().startswith(f"{code}: "), name
        assert ("fraud-error", code) in failed.value.trailing_metadata(), name
    requests = [pb.PredictRequest(transaction_json=raw) for _, raw, _ in BAD_TRANSACTIONS]
    replies = list(grpc_stub.PredictStream(iter(requests), timeout=30))
    assert [r.error.code for r in replies] == [code for _, _, code in BAD_TRANSACTIONS]
    assert {r.error.status for r in replies} == {grpc.StatusCode.INVALID_ARGUMENT.value[0]}

    decided = tx("decided", "c-1", "t-1", 0, 5.0)
    publish(kafka_bootstrap, worker, [decided])
    predictions(kafka_bootstrap, worker, 1)
    wait_customer(worker, "c-1", 1)
    status, body, _ = predict_rest(worker, decided)
    assert (status, body["error"]) == (400, "duplicate_transaction")
    with pytest.raises(grpc.RpcError) as failed:
        grpc_stub.Predict(pb.PredictRequest(transaction_json=dumps(decided)), timeout=10)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failed.value.details().startswith("duplicate_transaction: ")

    for lookup, request in ((customer_rest, pb.FeaturesRequest(customer_id="nobody")),
                            (terminal_rest, pb.FeaturesRequest(terminal_id="nowhere"))):  # fmt: skip
        status, body, _ = lookup(worker, "nobody" if request.customer_id else "nowhere")
        assert status == 404, body
        with pytest.raises(grpc.RpcError) as failed:
            grpc_stub.GetFeatures(request, timeout=10)
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND
        status, body, _ = lookup(worker, "x" * 129)
        assert (status, body["error"]) == (400, "invalid_id")
    with pytest.raises(grpc.RpcError) as failed:
        grpc_stub.GetFeatures(pb.FeaturesRequest(terminal_id="x" * 129), timeout=10)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    reflection = reflection_pb2_grpc.ServerReflectionStub(grpc.insecure_channel(worker.grpc_target))
    answer = next(iter(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                       timeout=10)))  # fmt: skip
    services = {s.name for s in answer.list_services_response.service}
    assert {"fraud.serving.v1.FraudServing", "grpc.health.v1.Health"} <= services
    assert loads(worker.http_get("/openapi.json"))["paths"].keys() >= {PREDICT, CUSTOMER, TERMINAL}


def test_a_customer_held_by_another_worker_is_answered_by_that_worker(
    worker_factory: WorkerFactory, kafka_bootstrap: str, tmp_path: Any
) -> None:
    first = worker_factory(partitions=2, WORKER_ID="a")
    first.wait_ready()
    shared = {k: v for k, v in first.env.items() if k.endswith("_TOPIC") or k == "APP_ID"}
    second = worker_factory(partitions=2, WORKER_ID="b", **shared)
    second.wait_ready()
    # One customer on each partition, a few transactions each.
    customers = {partition_for_key(f"cust-{i}".encode(), 2): f"cust-{i}" for i in range(20)}
    assert set(customers) == {0, 1}
    history = [tx(f"{c}-{j}", c, f"term-{j}", 3 * j, 10.0 + j) for c in customers.values() for j in range(3)]
    deadline = time.monotonic() + 60
    owners: dict[str, str] = {}
    while time.monotonic() < deadline and len(set(owners.values())) < 2:  # the group settles on one each
        owners = {}
        for worker in (first, second):
            for c in customers.values():
                status, _, headers = predict_rest(worker, tx("probe", c, "term-x", 30, 1.0))
                if status == 200 and headers["X-Fraud-Worker"] == worker.env["WORKER_ID"]:
                    owners[c] = worker.env["WORKER_ID"]
        time.sleep(0.5)
    assert sorted(owners.values()) == ["a", "b"], f"one partition each: {owners}"
    publish(kafka_bootstrap, first, history)
    predictions(kafka_bootstrap, first, len(history))
    by_id = {"a": first, "b": second}
    for customer, owner_id in owners.items():
        owner = by_id[owner_id]
        other = second if owner is first else first
        direct = wait_customer(owner, customer, 3)
        status, forwarded, headers = customer_rest(other, customer)
        assert status == 200 and headers["X-Fraud-Worker"] == owner_id
        assert forwarded == direct  # the owner's windows, not an empty state
        probe = tx(f"{customer}-probe", customer, "term-0", 20, 99.0)
        at_owner, via_other = predict_rest(owner, probe), predict_rest(other, probe)
        assert via_other[0] == 200 and via_other[2]["X-Fraud-Worker"] == owner_id
        assert via_other[1]["features"] == at_owner[1]["features"]
        assert via_other[1]["features"]["customer_nb_tx_30day"] == 4  # three seen, plus the probe
        grpc_answer = stub(other).Predict(pb.PredictRequest(transaction_json=dumps(probe)), timeout=10)
        assert dict(grpc_answer.features) == at_owner[1]["features"]
        grpc_features = stub(other).GetFeatures(pb.FeaturesRequest(customer_id=customer), timeout=10)
        assert dict(grpc_features.features) == direct["features"]
