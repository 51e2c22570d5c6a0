"""The rules follower's folding and hand-off, and the decision loop's wait for it (no broker: records made here)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from app.components import build
from app.kafka.rule_topics import RulesFollower
from app.rules.events import list_event, rule_event
from app.rules.ruleset import LiveRules, Rule
from app.serialization import dumps
from app.settings import Settings

RULES, LISTS = "rules", "rule-lists"


def rule_record(offset: int, rule: Rule, change: str = "added") -> Any:
    event = rule_event(rule, change, by="test", reason="", timestamp="2026-01-01T00:00:00.000Z")
    return SimpleNamespace(offset=offset, key=rule.id.encode(), value=dumps(event))


def list_record(offset: int, name: str, items: list[str]) -> Any:
    event = list_event(name, items, by="test", reason="", timestamp="2026-01-01T00:00:00.000Z")
    return SimpleNamespace(offset=offset, key=name.encode(), value=dumps(event))


def follower() -> tuple[RulesFollower, list[LiveRules]]:
    handed: list[LiveRules] = []
    return RulesFollower(bootstrap_servers="unused:9092", rules_topic=RULES, lists_topic=LISTS,
                         on_rules=handed.append), handed  # fmt: skip


TPS = [TopicPartition(LISTS, 0), TopicPartition(RULES, 0)]


def test_each_change_is_handed_over_once_whole_with_its_version_and_lists_read_in_the_same_fetch() -> None:
    f, handed = follower()
    vip = Rule("vip", "terminal_id in partners", "allow")
    f._apply(TPS, {TPS[1]: [rule_record(0, Rule("big", "amount > 900", "block")), rule_record(1, vip)],
                   TPS[0]: [list_record(0, "partners", ["t-1"])]})  # fmt: skip
    f._serve()
    assert len(handed) == 1
    live = handed[0]
    assert live.rule_set.version == 2 and live.lists_version == 1 and f.refused == []
    assert [r.id for r in live.rule_set.rules] == ["vip", "big"]  # allow first: the precedence
    assert live.lists["partners"] == frozenset({"t-1"})
    f._serve()
    assert len(handed) == 1  # nothing new: nothing handed

    f._apply(TPS, {TPS[1]: [rule_record(2, Rule("big", "amount > 900", "block", state="shadow"), "shadowed")]})
    f._serve()
    assert handed[-1].rule_set.version == 3 and handed[-1].rule_set.get("big").state == "shadow"  # type: ignore[union-attr]
    f._apply(TPS, {TPS[0]: [list_record(1, "partners", ["t-1", "t-2"])]})
    f._serve()
    assert (handed[-1].rule_set.version, handed[-1].lists_version) == (3, 2)  # a list alone: the lists' version
    assert handed[-1].lists["partners"] == frozenset({"t-1", "t-2"})
    assert f.rules_view()["version"] == 3


def test_a_list_change_alone_changes_the_versions_predictions_carry() -> None:
    from app.decisions.assess import score_transaction
    from app.learning.model import FraudModel
    from app.records import parse_transaction
    from tests.cases import transaction

    f, handed = follower()
    tx = parse_transaction(dumps(transaction(1, terminal_id="t-2")), 100_000, 1e9)

    def carried() -> tuple[str, int, int]:
        p = score_transaction(tx, {"amount": tx.amount}, FraudModel(), threshold=1.0, received_at_s=0.0,
                              rules=handed[-1])  # fmt: skip
        return p.decision, p.rule_set_version, p.lists_version

    f._apply(TPS, {TPS[1]: [rule_record(0, Rule("bad-terminal", "terminal_id in watch", "block"))],
                   TPS[0]: [list_record(0, "watch", ["t-1"])]})  # fmt: skip
    f._serve()
    assert carried() == ("allow", 1, 1)
    f._apply(TPS, {TPS[0]: [list_record(1, "watch", ["t-1", "t-2"])]})  # the list alone
    f._serve()
    assert carried() == ("block", 1, 2)  # another decision, and the versions it carries say why


def test_a_rule_that_does_not_compile_here_is_left_out_and_named_and_the_others_decide() -> None:
    f, handed = follower()
    f._apply(TPS, {TPS[0]: [list_record(0, "partners", ["t-1"])],
                   TPS[1]: [rule_record(0, Rule("vip", "terminal_id in partners", "allow")),
                            rule_record(1, Rule("big", "amount > 900", "block"))]})  # fmt: skip
    f._serve()
    f._apply(TPS, {TPS[0]: [SimpleNamespace(offset=1, key=b"partners", value=None)]})  # the list deleted
    f._serve()
    assert [r.id for r in handed[-1].rule_set.rules] == ["big"]
    assert [rule_id for rule_id, _ in f.refused] == ["vip"] and "unknown list" in f.refused[0][1]
    assert len(f.issues()) == 1 and f.issues()[0].startswith("rule vip not applied: ")


def test_the_decision_loop_starts_only_once_the_rule_set_is_read() -> None:
    async def run() -> None:
        components = build(Settings(worker_id="w1"))
        started = asyncio.Event()

        async def decisions_run() -> None:
            started.set()

        components.decisions.run = decisions_run  # type: ignore[method-assign]
        components.feed.caught_up.set()
        components.follower.caught_up.set()
        task = asyncio.ensure_future(components._decide())
        await asyncio.sleep(0.1)
        assert not started.is_set() and not components.is_ready()  # the feed and the model, not the rules yet
        components.rules.caught_up.set()
        await asyncio.wait_for(task, 5)
        assert started.is_set()
        components.scorer.close()
        components.feed.close()

    asyncio.run(run())


def test_the_follower_hands_the_rules_to_the_scorer_and_shows_every_rule_in_the_metrics_at_zero() -> None:
    from app import metrics

    components = build(Settings(worker_id="w1"))
    try:
        f = components.rules
        f._apply(TPS, {TPS[1]: [rule_record(0, Rule("never-yet", "amount > 1e9", "review", state="shadow"))]})
        f._serve()
        assert components.scorer.rules.rule_set.version == 1
        assert metrics.counts(metrics.RULE_MATCHES)[("never-yet", "shadow")] == 0.0
        assert metrics.counts(metrics.RULE_ERRORS)[("never-yet",)] == 0.0
    finally:
        components.scorer.close()
        components.feed.close()
