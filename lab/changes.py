"""Changes injected into simulated traffic from a given transaction or event time: what the drift monitor must find.

Each takes transactions in time order (:func:`lab.simulator.simulate`) and returns a new list; the ones before
``start`` (a position in the list, or an event time: the first transaction at or after it) are left as they were.

- :func:`amounts_in_cents`: one producer of ``producers`` (the customers whose number modulo ``producers`` is
  ``producer``) starts sending amounts in cents; the truth is unchanged (a format change, not fraud).
- :func:`card_testing`: a fraud pattern the handbook's simulator does not have: each attacked card makes a burst of
  tiny amounts at terminals it never used (checking that the stolen card works), then a few large ones; the added
  transactions are frauds of scenario :data:`SCENARIO_CARD_TESTING`, with their own ``tx-ct-...`` ids.
- :func:`terminal_ids_renumbered`: every terminal id moves to a new range (``t-00017`` to ``t-100017``): to the
  worker every terminal is one it never saw, so the terminal features look like new terminals everywhere.

Pure: numpy and the standard library, deterministic for a seed.

>>> from lab.simulator import SimulatorConfig, simulate
>>> txs = simulate(SimulatorConfig(n_customers=50, n_terminals=100, n_days=3, seed=1))
>>> cents = amounts_in_cents(txs, 100)
>>> cents[99] == txs[99], round(cents[100].amount / txs[100].amount), cents[100].is_fraud == txs[100].is_fraud
(True, 100, True)
>>> terminal_ids_renumbered(txs, 100)[100].terminal_id[:3], len(card_testing(txs, 100, cards_per_day=4)) > len(txs)
('t-1', True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np

from lab.simulator import DAY_S, SimulatedTransaction

SCENARIO_CARD_TESTING = 4  # beside the simulator's 1, 2 and 3
RENUMBER_OFFSET = 100_000  # t-00017 becomes t-100017: a range no terminal of the simulator has


def start_index(txs: Sequence[SimulatedTransaction], start: int | datetime) -> int:
    """The position of the first changed transaction: ``start`` itself, or the first at or after that event time.

    >>> from datetime import UTC
    >>> t0 = datetime(2018, 4, 1, tzinfo=UTC)
    >>> txs = [SimulatedTransaction(f"tx-{i}", t0 + timedelta(hours=i), "c-00001", "t-00001", 1.0, False, 0)
    ...        for i in range(5)]
    >>> start_index(txs, 2), start_index(txs, t0 + timedelta(minutes=90)), start_index(txs, t0 + timedelta(days=1))
    (2, 2, 5)
    """
    if isinstance(start, int):
        if start < 0:
            raise ValueError("start must be >= 0")
        return min(start, len(txs))
    lo, hi = 0, len(txs)
    while lo < hi:  # bisect on the timestamps (the list is in time order)
        mid = (lo + hi) // 2
        if txs[mid].timestamp < start:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _number(name: str) -> int:
    """The number of an id of the simulator (``c-00042``: 42)."""
    return int(name.rsplit("-", 1)[1])


def amounts_in_cents(
    txs: Sequence[SimulatedTransaction], start: int | datetime, producers: int = 1, producer: int = 0
) -> list[SimulatedTransaction]:
    """From ``start``, the transactions of one producer of ``producers`` carry their amount in cents (x 100).

    A producer is a share of the customers (their number modulo ``producers``): a bank's feed, a region's gateway.
    """
    if not 0 <= producer < producers:
        raise ValueError("producer must be in 0 .. producers - 1")
    at = start_index(txs, start)
    out = list(txs[:at])
    for tx in txs[at:]:
        if _number(tx.customer_id) % producers == producer:
            tx = replace(tx, amount=round(tx.amount * 100, 2))
        out.append(tx)
    return out


def terminal_ids_renumbered(
    txs: Sequence[SimulatedTransaction], start: int | datetime, offset: int = RENUMBER_OFFSET
) -> list[SimulatedTransaction]:
    """From ``start``, every terminal id is renumbered into a new range (``t-{number + offset}``): the same terminals,
    under ids the worker never saw."""
    at = start_index(txs, start)
    out = list(txs[:at])
    out.extend(replace(tx, terminal_id=f"t-{_number(tx.terminal_id) + offset:05d}") for tx in txs[at:])
    return out


def card_testing(
    txs: Sequence[SimulatedTransaction],
    start: int | datetime,
    cards_per_day: float = 100.0,
    probes: tuple[int, int] = (5, 15),
    probe_amount: tuple[float, float] = (0.5, 2.0),
    cashouts: tuple[int, int] = (1, 3),
    cashout_amount: tuple[float, float] = (300.0, 1500.0),
    seed: int = 0,
) -> list[SimulatedTransaction]:
    """From ``start`` to the last transaction, ``cards_per_day`` (event time, Poisson) cards are tested: each makes
    ``probes`` (uniform in the range) tiny amounts a few seconds to minutes apart, then ``cashouts`` large ones
    within the next hours, all at terminals the card did not use before (drawn from every terminal seen in ``txs``).

    The attacked cards are customers of ``txs``; the added transactions are frauds (scenario
    :data:`SCENARIO_CARD_TESTING`), merged in time order (at equal times the simulator's come first).
    """
    at = start_index(txs, start)
    if at >= len(txs):
        return list(txs)
    rng = np.random.default_rng(seed)
    customers = sorted({tx.customer_id for tx in txs})
    terminals = sorted({tx.terminal_id for tx in txs})
    used: dict[str, set[str]] = {}
    for tx in txs[:at]:
        used.setdefault(tx.customer_id, set()).add(tx.terminal_id)
    begin, end = txs[at].timestamp, txs[-1].timestamp
    span_s = (end - begin).total_seconds()
    attacks = rng.poisson(cards_per_day * span_s / DAY_S) if span_s > 0 else 0
    added: list[SimulatedTransaction] = []
    for n, offset_s in enumerate(sorted(rng.uniform(0, span_s, size=attacks).tolist())):
        card = customers[int(rng.integers(len(customers)))]
        seen = used.setdefault(card, set())
        when = begin + timedelta(seconds=int(offset_s))
        burst = [float(rng.uniform(*probe_amount)) for _ in range(int(rng.integers(probes[0], probes[1] + 1)))]
        gaps = [int(rng.integers(5, 180)) for _ in burst]
        large = [float(rng.uniform(*cashout_amount)) for _ in range(int(rng.integers(cashouts[0], cashouts[1] + 1)))]
        gaps += [int(rng.integers(600, 4 * 3600)) for _ in large]
        for i, (amount, gap) in enumerate(zip(burst + large, gaps, strict=True)):
            when += timedelta(seconds=gap)
            terminal = terminals[int(rng.integers(len(terminals)))]
            while terminal in seen and len(seen) < len(terminals):
                terminal = terminals[int(rng.integers(len(terminals)))]
            seen.add(terminal)
            added.append(SimulatedTransaction(f"tx-ct-{n:06d}-{i:02d}", when, card, terminal, round(amount, 2), True,
                                              SCENARIO_CARD_TESTING))  # fmt: skip
    added = [tx for tx in added if tx.timestamp <= end]  # nothing after the stream's last transaction
    added.sort(key=lambda tx: tx.timestamp)  # stable: each attack's own order kept at equal times
    merged: list[SimulatedTransaction] = list(txs[:at])
    rest, i = txs[at:], 0
    for tx in rest:
        while i < len(added) and added[i].timestamp < tx.timestamp:
            merged.append(added[i])
            i += 1
        merged.append(tx)
    merged.extend(added[i:])
    return merged


CHANGES = ("cents", "card_testing", "terminal_ids")


def inject(
    name: str, txs: Sequence[SimulatedTransaction], start: int | datetime, **options: float | int
) -> list[SimulatedTransaction]:
    """One of :data:`CHANGES` by name (the scripts' ``--change``), with its options."""
    if name == "cents":
        return amounts_in_cents(txs, start, int(options.get("producers", 1)), int(options.get("producer", 0)))
    if name == "card_testing":
        return card_testing(txs, start, cards_per_day=float(options.get("cards_per_day", 100.0)),
                            seed=int(options.get("seed", 0)))  # fmt: skip
    if name == "terminal_ids":
        return terminal_ids_renumbered(txs, start)
    raise ValueError(f"unknown change {name!r}: one of {', '.join(CHANGES)}")
