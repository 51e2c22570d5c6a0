"""The decision path's batch handler without a broker: outcomes, dead letters, state only after the commit."""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from app.decisions.scorer import HIGH_SCORES_KEPT, Scorer
from app.learning.model import FraudModel
from app.monitoring.health import HealthWindow
from app.serialization import dumps, loads
from app.settings import load
from app.state.customers import POSITION_KEY, entry_key, entry_value, pruned, restored_state
from app.state.memory_store import MemoryStore
from app.state.terminals import TerminalAggregates
from tests.cases import transaction

TP = TopicPartition("transactions", 0)


class BrokenModel(FraudModel):
    """Raises while scoring one customer's transactions: a bug in scoring, not bad input."""

    def score_one(self, x: dict[str, float], k: int = 3) -> tuple[float, list[str]]:
        if x["amount"] == 13.0:
            raise ZeroDivisionError("bug")
        return super().score_one(x, k)


class AmountModel(FraudModel):
    """Flags amounts over 500, naming the amount: a known score without training."""

    def score_one(self, x: dict[str, float], k: int = 3) -> tuple[float, list[str]]:
        return (0.9, ["amount"]) if x["amount"] > 500 else (0.01, [])


class CountingModel(AmountModel):
    """Counts its batch calls (the scorer must score a batch in one)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def score_many(self, xs: Sequence[dict[str, float]], k: int = 3) -> list[tuple[float, list[str]]]:
        self.batches.append(len(xs))
        return super().score_many(xs, k)


def scorer(model: FraudModel | None = None, **env: str) -> Scorer:
    settings = load({"PREDICTIONS_TOPIC": "predictions", **env})
    aggregates = TerminalAggregates(7.0, 86400.0, 38 * 86400.0)
    handler = Scorer(settings, model or FraudModel(), aggregates, HealthWindow(60.0, time.monotonic()),
                     store=MemoryStore("customers"), changelog_topic="changelog",
                     terminal_topic="terminal-log")  # fmt: skip
    handler.open_state(0)
    return handler


def record(offset: int, value: bytes, key: bytes = b"c") -> Any:
    return SimpleNamespace(topic="transactions", partition=0, offset=offset, key=key, value=value)


def outcomes(batch: Any, handler: Scorer) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"predictions": [], "dead": []}
    for o in batch.outputs:
        if o.topic == handler.settings.predictions_topic:
            out["predictions"].append(loads(o.value))
        elif o.topic == handler.settings.transactions_dlq_topic:
            out["dead"].append(loads(o.value))
    return out


def test_a_scoring_bug_is_a_dead_letter_with_the_original_bytes_and_the_rest_of_the_batch_is_scored() -> None:
    handler = scorer(BrokenModel())
    raws = [dumps(transaction(i, amount=13.0 if i == 1 else 20.0)) for i in range(3)]
    result = outcomes(handler.process(TP, [record(i, raw) for i, raw in enumerate(raws)]), handler)
    assert [p["tx_id"] for p in result["predictions"]] == ["tx-0", "tx-2"]
    (letter,) = result["dead"]
    assert letter["error"] == "scoring_error" and "ZeroDivisionError" in letter["reason"]
    assert base64.b64decode(letter["raw"]) == raws[1] and letter["offset"] == 1


def test_a_batch_is_scored_in_one_call_with_the_figures_of_one_at_a_time() -> None:
    txs = [transaction(i, customer_id=f"c{i % 3}", amount=100.0 * i) for i in range(9)]
    raws = [dumps(t) for t in txs[:4]] + [b"not json"] + [dumps(t) for t in txs[4:]]
    counting = CountingModel()
    batched = outcomes(scorer(counting).process(TP, [record(i, raw) for i, raw in enumerate(raws)]), scorer())
    assert counting.batches == [9]  # the invalid one is dead-lettered before, the other nine scored at once
    alone = scorer(AmountModel())
    alone_out = outcomes(alone._process(TP, [record(i, raw) for i, raw in enumerate(raws)], batched=False), alone)
    for figures in (batched, alone_out):
        for p in figures["predictions"]:
            p.pop("latency_ms"), p.pop("scored_at")
    assert batched["predictions"] == alone_out["predictions"] and len(batched["predictions"]) == 9
    assert [(d["error"], d["offset"]) for d in batched["dead"]] == [("invalid_json", 4)]
    assert [(d["error"], d["offset"]) for d in alone_out["dead"]] == [("invalid_json", 4)]
    assert [p["reasons"] for p in batched["predictions"]][5:] == [[], ["amount"], ["amount"], ["amount"]]


def test_json_nested_deeper_than_any_parser_allows_is_invalid_json() -> None:
    handler = scorer()
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    (letter,) = outcomes(handler.process(TP, [record(0, deep)]), handler)["dead"]
    assert letter["error"] == "invalid_json"


def test_a_tx_id_decided_already_is_a_duplicate_dead_letter_not_a_second_prediction() -> None:
    handler = scorer()
    raw = dumps(transaction(1))
    first = handler.process(TP, [record(0, raw)])
    first.on_commit()  # type: ignore[misc]
    again = outcomes(handler.process(TP, [record(1, raw)]), handler)
    assert again["predictions"] == [] and [d["error"] for d in again["dead"]] == ["duplicate_transaction"]
    in_one_batch = outcomes(handler.process(TP, [record(2, dumps(transaction(2))), record(3, dumps(transaction(2)))]),
                            handler)  # fmt: skip
    assert len(in_one_batch["predictions"]) == 1 and len(in_one_batch["dead"]) == 1


def test_state_changes_only_when_the_batch_commits() -> None:
    handler = scorer()
    batch = handler.process(TP, [record(0, dumps(transaction(1, customer_id="c9")))])
    assert handler.partitions[0].customer_ids() == []  # an aborted transaction leaves the committed state
    assert not handler.aggregates.all_states()
    changelog = [o for o in batch.outputs if o.topic == "changelog"]
    assert [o.key for o in changelog if o.value is not None][0] == entry_key("c9", "tx-1")
    batch.on_commit()  # type: ignore[misc]
    assert len(handler.partitions[0].customer("c9")) == 1 and "t-1" in handler.aggregates.all_states()


def test_the_second_transaction_of_a_terminal_in_one_batch_sees_the_first() -> None:
    handler = scorer()
    txs = [
        transaction(i, customer_id=f"c{i}", terminal_id="t-shared", timestamp="2018-04-01T10:00:00Z") for i in range(3)
    ]
    result = outcomes(handler.process(TP, [record(i, dumps(t)) for i, t in enumerate(txs)]), handler)
    assert [p["features"]["terminal_nb_tx_1hour"] for p in result["predictions"]] == [1.0, 2.0, 3.0]


def test_restored_entries_give_back_the_state_and_pruning_names_what_left() -> None:
    state = [(1.0, 5.0, "k", "a", 0), (2.0, 6.0, "k", "b", 1), (2.0, 7.0, "j", "c", 2)]
    assert list(restored_state({e[3]: entry_value(e) for e in reversed(state)})) == state
    assert pruned(state, state[1:] + [(50.0, 1.0, "k", "d", 3)]) == state[:1]
    assert pruned(state, state + [(3.0, 1.0, "k", "d", 3)]) == []


def test_idle_customers_expire_without_traffic_in_stream_time() -> None:
    handler = scorer(CUSTOMER_TTL_S=str(2 * 86400), FEATURES_SWEEP_INTERVAL_S="0")
    old = handler.process(TP, [record(0, dumps(transaction(1, customer_id="old", timestamp="2018-04-01T10:00:00Z")))])
    old.on_commit()  # type: ignore[misc]
    new = handler.process(TP, [record(1, dumps(transaction(2, customer_id="new", timestamp="2018-04-02T10:00:00Z")))])
    new.on_commit()  # type: ignore[misc]
    assert handler.idle(TP) is None  # one day later: not idle yet
    handler.partitions[0].stream_time_s += 2 * 86400
    batch = handler.idle(TP)
    assert batch is not None and [(o.key, o.value) for o in batch.outputs][:-1] == [(entry_key("old", "tx-1"), None)]
    assert batch.outputs[-1].key == POSITION_KEY and loads(batch.outputs[-1].value)["customers"] == 1  # type: ignore[arg-type]
    batch.on_commit()  # type: ignore[misc]
    assert handler.partitions[0].customer_ids() == ["new"] and handler.partitions[0].customer_count == 1


def test_only_committed_predictions_over_the_threshold_are_kept_for_the_operator_page_newest_last() -> None:
    handler = scorer(AmountModel())
    amounts = [20.0, 900.0, 30.0, 700.0]
    batch = handler.process(TP, [record(i, dumps(transaction(i, amount=a))) for i, a in enumerate(amounts)])
    assert not handler.high_scores  # an aborted batch shows nothing
    batch.on_commit()  # type: ignore[misc]
    assert [(p.tx_id, p.reasons, p.features["amount"]) for p in handler.high_scores] == [
        ("tx-1", ["amount"], 900.0),
        ("tx-3", ["amount"], 700.0),
    ]
    many = [record(10 + i, dumps(transaction(10 + i, amount=600.0 + i))) for i in range(HIGH_SCORES_KEPT + 5)]
    handler.process(TP, many).on_commit()  # type: ignore[misc]
    assert len(handler.high_scores) == HIGH_SCORES_KEPT  # bounded: the oldest leave
    assert handler.high_scores[-1].tx_id == f"tx-{10 + HIGH_SCORES_KEPT + 4}"


def test_the_store_takes_the_changelog_offset_the_commit_reached_and_memory_keeps_only_the_cache() -> None:
    handler = scorer(STATE_CUSTOMER_CACHE="2")
    state = handler.partitions[0]
    for i in range(4):
        batch = handler.process(TP, [record(i, dumps(transaction(i, customer_id=f"c{i}")))])
        batch.produced_to = 10 * (i + 1)  # what the transactional loop reads from the produced records' metadata
        batch.on_commit()  # type: ignore[misc]
    assert state.store.committed_offset == 40 and state.customer_count == 4 and state.next_offset == 4
    assert list(state.caches.parsed) == ["c2", "c3"]  # the two most recent; the others are read from the store
    assert [len(state.customer(f"c{i}")) for i in range(4)] == [1, 1, 1, 1] and len(state.caches.parsed) == 2
    reopened = handler.open_state(0)  # what a restore finds in the store
    assert (reopened.next_offset, reopened.customer_count, reopened.stream_time_s) == (4, 4, state.stream_time_s)


def test_the_idle_sweep_reads_the_store_a_slice_at_a_time_and_goes_on_where_it_stopped() -> None:
    handler = scorer(CUSTOMER_TTL_S=str(2 * 86400), FEATURES_SWEEP_INTERVAL_S="0", STATE_SWEEP_CUSTOMERS="2")
    txs = [transaction(i, customer_id=f"c{i}", timestamp="2018-04-01T10:00:00Z") for i in range(5)]
    handler.process(TP, [record(i, dumps(t)) for i, t in enumerate(txs)]).on_commit()  # type: ignore[misc]
    handler.partitions[0].stream_time_s += 3 * 86400
    swept = []
    for _ in range(3):
        batch = handler.idle(TP)
        assert batch is not None
        swept.append(sorted(o.key.decode().split("\x1f")[0] for o in batch.outputs if o.value is None))  # type: ignore[union-attr]
        batch.on_commit()  # type: ignore[misc]
    assert swept == [["c0", "c1"], ["c2", "c3"], ["c4"]]
    assert handler.partitions[0].customer_ids() == [] and handler.partitions[0].customer_count == 0
    assert handler.idle(TP) is None


def test_each_batch_is_decided_by_the_rule_set_in_force_and_the_prediction_names_the_rules_and_version() -> None:
    from app import metrics
    from app.rules.ruleset import LiveRules, Rule, RuleSet
    from tests.contract import assert_valid

    handler = scorer(AmountModel(), REVIEW_COST="4")  # review when 0.01 * amount > 4 (a score of 0.9 blocks)
    amounts = [20.0, 900.0, 300.0, 30.0]
    first = handler.process(TP, [record(i, dumps(transaction(i, amount=a))) for i, a in enumerate(amounts)])
    assert [(p["decision"], p["rules"], p["rule_set_version"]) for p in outcomes(first, handler)["predictions"]] == [
        ("allow", [], 0), ("block", [], 0), ("allow", [], 0), ("allow", [], 0)]  # fmt: skip
    first.on_commit()  # type: ignore[misc]

    rule_set = RuleSet.of([
        Rule("mid", "amount > 250 and amount < 400", "review"),
        Rule("vip", "customer_id in allowed_customers", "allow"),
        Rule("tiny", "amount < 25", "review", state="shadow"),
        Rule("off", "amount > 0", "block", state="disabled"),
    ], version=7)  # fmt: skip
    handler.rules = LiveRules(rule_set, {"allowed_customers": frozenset({"c-vip"})}, 3)
    before = metrics.counts(metrics.RULE_MATCHES)
    txs = [transaction(10, amount=20.0), transaction(11, amount=900.0), transaction(12, amount=300.0),
           transaction(13, amount=900.0, customer_id="c-vip"), transaction(14, amount=450.0)]  # fmt: skip
    batch = handler.process(TP, [record(10 + i, dumps(tx)) for i, tx in enumerate(txs)])
    predictions = outcomes(batch, handler)["predictions"]
    for p in predictions:
        assert_valid("predictions.schema.json", p)
    assert [
        (p["decision"], p["is_fraud"], p["rules"], p["shadow_rules"], p["rule_set_version"]) for p in predictions
    ] == [
        ("allow", False, [], ["tiny"], 7),
        ("block", True, [], [], 7),  # the model's threshold
        ("review", False, ["mid"], [], 7),
        ("allow", True, ["vip"], [], 7),  # an allow rule over the model's block; is_fraud stays the model's
        ("review", False, [], [], 7),  # the expected loss: 0.01 * 450 > 4
    ]
    assert metrics.counts(metrics.RULE_MATCHES) == before  # nothing counted before the commit
    batch.on_commit()  # type: ignore[misc]
    after = metrics.counts(metrics.RULE_MATCHES)
    assert {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)} == {
        ("tiny", "shadow"): 1.0, ("mid", "active"): 1.0, ("vip", "active"): 1.0}  # fmt: skip
    assert handler.rule_hits.counts(handler.now_s()) == {"tiny": 1, "mid": 1, "vip": 1}
