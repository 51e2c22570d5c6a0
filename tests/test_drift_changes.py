"""The simulator's injected changes (lab/changes.py): each changes what it says from where it says, nothing before."""

from __future__ import annotations

from datetime import timedelta

import pytest

from lab.changes import (
    RENUMBER_OFFSET,
    SCENARIO_CARD_TESTING,
    amounts_in_cents,
    card_testing,
    inject,
    start_index,
    terminal_ids_renumbered,
)
from lab.simulator import SimulatedTransaction, SimulatorConfig, simulate


@pytest.fixture(scope="module")
def txs() -> list[SimulatedTransaction]:
    return simulate(SimulatorConfig(n_customers=200, n_terminals=400, n_days=20, seed=5))


def test_cents_from_one_producer_only_from_the_start(txs: list[SimulatedTransaction]) -> None:
    at = len(txs) // 2
    changed = amounts_in_cents(txs, at, producers=4, producer=1)
    assert changed[:at] == txs[:at] and len(changed) == len(txs)
    moved = [(a, b) for a, b in zip(txs[at:], changed[at:], strict=True) if a != b]
    assert moved and all(int(a.customer_id[2:]) % 4 == 1 for a, _ in moved)
    assert all(b.amount == pytest.approx(a.amount * 100, abs=0.01) for a, b in moved)
    assert all((a.tx_id, a.is_fraud, a.terminal_id) == (b.tx_id, b.is_fraud, b.terminal_id) for a, b in moved)
    others = [a for a in txs[at:] if int(a.customer_id[2:]) % 4 != 1]
    assert others and all(tx in changed for tx in others[:50])


def test_an_event_time_start_is_the_first_transaction_at_or_after_it(txs: list[SimulatedTransaction]) -> None:
    when = txs[0].timestamp + timedelta(days=10, seconds=1)
    at = start_index(txs, when)
    assert txs[at - 1].timestamp < when <= txs[at].timestamp
    assert amounts_in_cents(txs, when)[at - 1] == txs[at - 1] and amounts_in_cents(txs, when)[at] != txs[at]


def test_renumbered_terminals_are_all_new_ids_after_the_start(txs: list[SimulatedTransaction]) -> None:
    at = len(txs) // 3
    changed = terminal_ids_renumbered(txs, at)
    before = {tx.terminal_id for tx in changed[:at]}
    after = {tx.terminal_id for tx in changed[at:]}
    assert changed[:at] == txs[:at] and not before & after
    assert all(int(b.terminal_id[2:]) == int(a.terminal_id[2:]) + RENUMBER_OFFSET
               for a, b in zip(txs[at:], changed[at:], strict=True))  # fmt: skip
    assert [(t.tx_id, t.amount, t.customer_id) for t in changed] == [(t.tx_id, t.amount, t.customer_id) for t in txs]


def test_card_testing_adds_bursts_of_tiny_amounts_at_new_terminals_then_large_ones(
    txs: list[SimulatedTransaction],
) -> None:
    at = len(txs) // 2
    changed = card_testing(txs, at, cards_per_day=20, seed=3)
    added = [tx for tx in changed if tx.tx_id.startswith("tx-ct-")]
    assert [tx for tx in changed if not tx.tx_id.startswith("tx-ct-")] == txs  # the traffic itself is unchanged
    assert changed[:at] == txs[:at] and all(tx.timestamp >= txs[at].timestamp for tx in added)
    assert all(a.timestamp <= b.timestamp for a, b in zip(changed, changed[1:], strict=False))  # in time order
    assert len({tx.tx_id for tx in changed}) == len(changed)
    days = (txs[-1].timestamp - txs[at].timestamp).total_seconds() / 86400
    attacks: dict[str, list[SimulatedTransaction]] = {}
    for tx in added:
        attacks.setdefault(tx.tx_id[:12], []).append(tx)
    assert 0.5 * 20 * days <= len(attacks) <= 1.5 * 20 * days
    assert all(tx.is_fraud and tx.fraud_scenario == SCENARIO_CARD_TESTING for tx in added)
    used_before: dict[str, set[str]] = {}
    for tx in txs[:at]:
        used_before.setdefault(tx.customer_id, set()).add(tx.terminal_id)
    whole = [a for a in attacks.values() if (txs[-1].timestamp - min(tx.timestamp for tx in a)).days >= 1]
    assert whole  # (an attack begun in the last hours is cut at the stream's end)
    for attack in whole:
        attack.sort(key=lambda tx: tx.tx_id)
        amounts = [tx.amount for tx in attack]
        small = [a for a in amounts if a <= 2.0]
        assert len(small) >= 5 and amounts[: len(small)] == small  # the probes first
        assert all(a >= 300 for a in amounts[len(small) :]) and len(amounts) > len(small)  # then the cash-out
        terminals = [tx.terminal_id for tx in attack]
        card = attack[0].customer_id
        assert all(tx.customer_id == card for tx in attack)
        assert len(set(terminals)) == len(terminals)  # each at a terminal new to the card
        assert not set(terminals) & used_before.get(card, set())


def test_inject_by_name_and_an_unknown_name(txs: list[SimulatedTransaction]) -> None:
    assert inject("cents", txs, 10) == amounts_in_cents(txs, 10)
    assert inject("terminal_ids", txs, 10) == terminal_ids_renumbered(txs, 10)
    assert inject("card_testing", txs, 10, cards_per_day=5, seed=1) == card_testing(txs, 10, cards_per_day=5, seed=1)
    with pytest.raises(ValueError, match="unknown change"):
        inject("emoji", txs, 10)
    assert start_index(txs, len(txs) + 5) == len(txs) and card_testing(txs, len(txs)) == txs
