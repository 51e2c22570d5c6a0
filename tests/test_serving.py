"""Synchronous scoring without a broker: the stream's answer, no state change, the model read per request, the
dead letters' codes, routing answers; the OpenAPI document, the owner lookup's parsing and the generated code."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from app.decisions.scorer import Scorer
from app.learning.model import FraudModel
from app.monitoring.health import HealthWindow
from app.serialization import dumps, loads
from app.serving.routing import client_id_with_url, owners_from_members
from app.serving.service import Serving
from app.settings import TOPICS_DIR, load
from app.state.memory_store import MemoryStore
from app.state.terminals import TerminalAggregates
from tests.cases import BAD_TRANSACTIONS, transaction
from tests.openapi import document

REPO_ROOT = Path(__file__).resolve().parent.parent
SAME_AS_STREAM = ("tx_id", "fraud_probability", "is_fraud", "threshold", "model_version", "reasons", "features")


class Owners:
    """Stands in for :class:`app.serving.routing.PartitionOwners`: a fixed answer, and what was asked."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.asked: list[int] = []

    async def owner_url(self, partition: int) -> str | None:
        self.asked.append(partition)
        return self.url

    def forget(self) -> None:
        pass

    async def close(self) -> None:
        pass


def setup(partitions: int = 1, ready: bool = True, owner: str | None = None) -> tuple[Serving, Scorer, Owners]:
    settings = load({"TOPIC_PARTITIONS": str(partitions), "WORKER_ID": "w-test",
                     "WEB_ADVERTISED_URL": "http://self:1"})  # fmt: skip
    aggregates = TerminalAggregates(7.0, 86400.0, 38 * 86400.0)
    scorer = Scorer(settings, FraudModel(), aggregates, HealthWindow(60.0, time.monotonic()),
                    store=MemoryStore("customers"), changelog_topic="changelog",
                     terminal_topic="terminal-log")  # fmt: skip
    scorer.open_state(0)
    decisions = SimpleNamespace(ready_partitions={TopicPartition(settings.transactions_topic, 0)}, consumer=None)
    owners = Owners(owner)
    serving = Serving(settings, scorer, aggregates, decisions, owners, lambda: ready)  # type: ignore[arg-type]
    return serving, scorer, owners


def stream(scorer: Scorer, txs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One committed batch of the decision path; its predictions."""
    records = [SimpleNamespace(topic="transactions", partition=0, offset=i, key=b"c", value=dumps(t))
               for i, t in enumerate(txs)]  # fmt: skip
    batch = scorer.process(TopicPartition("transactions", 0), records)
    assert batch.on_commit is not None
    batch.on_commit()
    return [loads(o.value) for o in batch.outputs if o.topic == scorer.settings.predictions_topic]


def test_predict_is_the_streams_prediction_and_changes_nothing() -> None:
    serving, scorer, _ = setup()
    model = scorer.model
    for i in range(40):  # a model that has learned something, so reasons and probability mean something
        model.learn_one({"amount": 500.0 + i, "hour_of_day": 3.0}, True)
        model.learn_one({"amount": 20.0 + i, "hour_of_day": 12.0}, False)
    history = [transaction(i, customer_id="c", terminal_id=f"t-{i % 2}") for i in range(7)]
    stream(scorer, history)
    state = scorer.partitions[0]
    customer_before, stored_before = state.customer("c"), dict(state.store.iter_from(b""))
    terminals_before = {k: list(v) for k, v in scorer.aggregates.all_states().items()}
    probe = transaction(8, customer_id="c", terminal_id="t-0", amount=900.0)

    reply = asyncio.run(serving.predict(dumps(probe)))
    assert reply.status == 200 and reply.worker == "w-test"
    assert state.customer("c") == customer_before and dict(state.store.iter_from(b"")) == stored_before
    assert scorer.aggregates.all_states() == terminals_before
    assert reply.body["features"]["customer_nb_tx_30day"] == 8.0
    (streamed,) = stream(scorer, [probe])
    assert {k: reply.body[k] for k in SAME_AS_STREAM} == {k: streamed[k] for k in SAME_AS_STREAM}


def test_the_model_is_read_at_each_request() -> None:
    serving, scorer, _ = setup()
    first = asyncio.run(serving.predict(dumps(transaction(1))))
    scorer.model = FraudModel("hoeffding")  # what promoting another model does
    second = asyncio.run(serving.predict(dumps(transaction(1))))
    assert first.body["model_version"] != second.body["model_version"] == scorer.model.version
    assert serving.model_info().body["version"] == scorer.model.version


def test_bad_input_gives_the_dead_letter_code_as_400_and_a_repeat_is_a_duplicate() -> None:
    serving, scorer, _ = setup()
    for name, raw, code in BAD_TRANSACTIONS:
        reply = asyncio.run(serving.predict(raw))
        assert (reply.status, reply.body["error"]) == (400, code), name
    stream(scorer, [transaction(1)])
    reply = asyncio.run(serving.predict(dumps(transaction(1))))
    assert (reply.status, reply.body["error"]) == (400, "duplicate_transaction")


def test_lookups_answer_404_for_unknown_and_503_while_not_ready() -> None:
    serving, scorer, _ = setup()
    assert asyncio.run(serving.customer_features("c-1")).status == 404
    assert serving.terminal_features("t-1").status == 404
    stream(scorer, [transaction(1, customer_id="c-1", terminal_id="t-1")])
    customer = asyncio.run(serving.customer_features("c-1"))
    assert customer.status == 200 and customer.body["features"]["customer_nb_tx_1hour"] == 1.0
    terminal = serving.terminal_features("t-1")
    assert terminal.status == 200 and terminal.body["event_time"] == "2018-04-01T11:00:00.000Z"
    not_ready, _, _ = setup(ready=False)
    assert asyncio.run(not_ready.predict(dumps(transaction(1)))).body["error"] == "not_ready"
    assert not_ready.terminal_features("t-1").status == 503


def test_a_customer_held_elsewhere_is_never_answered_from_an_empty_state() -> None:
    serving, _, owners = setup(partitions=4, owner=None)
    customer = next(c for c in (f"c-{i}" for i in range(50)) if serving.partition_of(c) != 0)
    reply = asyncio.run(serving.predict(dumps(transaction(1, customer_id=customer))))
    assert (reply.status, reply.body["error"]) == (503, "owner_unknown")
    assert owners.asked == [serving.partition_of(customer)]
    reply = asyncio.run(serving.predict(dumps(transaction(1, customer_id=customer)), forwarded=True))
    assert (reply.status, reply.body["error"]) == (503, "not_owner")  # one hop only
    assert (asyncio.run(serving.customer_features(customer, forwarded=True))).body["error"] == "not_owner"
    unreachable, _, _ = setup(partitions=4, owner="http://127.0.0.1:9")  # discard port: nobody answers
    reply = asyncio.run(unreachable.predict(dumps(transaction(1, customer_id=customer))))
    asyncio.run(unreachable.close())
    assert (reply.status, reply.body["error"]) == (503, "owner_unreachable")


def test_owners_are_read_from_the_group_description() -> None:
    def member(client_id: str, partitions: dict[str, list[int]]) -> tuple[Any, ...]:
        assignment = ConsumerProtocolMemberAssignment(0, sorted(partitions.items()), b"").encode()
        return ("member-id", "instance-id", client_id, "/10.0.0.1", b"", assignment)

    members = [
        member(client_id_with_url("fraud-decisions-a", "http://a:6066"), {"transactions": [0, 2], "other": [1]}),
        member(client_id_with_url("fraud-decisions-b", "http://b:6066"), {"transactions": [1, 3]}),
        member("kcat", {"transactions": [4]}),  # advertises nothing: not a worker to forward to
    ]
    assert owners_from_members(members, "transactions") == {0: "http://a:6066", 2: "http://a:6066",
                                                            1: "http://b:6066", 3: "http://b:6066"}  # fmt: skip


def test_the_openapi_document_is_valid_and_its_schemas_are_the_topics() -> None:
    schemas = document()["components"]["schemas"]
    for name, schema_file in (("Transaction", "transactions.schema.json"), ("Prediction", "predictions.schema.json")):
        topic = loads((TOPICS_DIR / schema_file).read_bytes())
        assert schemas[name] == {k: v for k, v in topic.items() if not k.startswith("$")}, name
    codes = set(schemas["Error"]["properties"]["error"]["enum"])
    assert {code for _, _, code in BAD_TRANSACTIONS} | {"duplicate_transaction"} <= codes


def test_the_prediction_fields_are_the_proto_fields() -> None:
    from app.records import Prediction
    from app.serving.protos import fraud_serving_pb2 as pb

    assert [f.name for f in dataclasses.fields(Prediction)] == [f.name for f in pb.Prediction.DESCRIPTOR.fields]


def test_the_checked_in_grpc_modules_are_generated_from_the_proto(tmp_path: Path) -> None:
    from gen_protos import generate  # scripts/ is on the path (tests/conftest.py)

    for path in generate(tmp_path):
        checked_in = REPO_ROOT / "app" / "serving" / "protos" / path.name
        assert checked_in.read_bytes() == path.read_bytes(), f"{checked_in} is stale: run scripts/gen_protos.py"


def test_a_second_grpc_server_on_a_taken_port_fails_to_start_instead_of_sharing_it() -> None:
    from local_processes import free_port  # scripts/ is on the path (tests/conftest.py)

    from app.serving.grpc_api import GrpcServer

    serving, _, _ = setup()
    port = free_port()

    async def run() -> str:
        first = GrpcServer(serving, "127.0.0.1", port, lambda: True)
        await first.start()
        try:
            await GrpcServer(serving, "127.0.0.1", port, lambda: True).start()
        except RuntimeError:
            return "refused"
        finally:
            await first.stop(0)
        return "shared"  # gRPC's default SO_REUSEPORT would split requests between two workers

    assert asyncio.run(run()) == "refused"
