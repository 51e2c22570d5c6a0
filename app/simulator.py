"""The transaction simulator of the Fraud Detection Handbook (benchmark section 1), vectorised with numpy.

Customers and terminals sit on a 100 x 100 square; a customer uses the terminals within ``radius``. Each day a
customer makes Poisson(mean_nb_tx_per_day) transactions at Normal(noon, 20000 s) seconds with
Normal(mean_amount, mean_amount / 2) amounts. Three fraud scenarios mark transactions; as in the handbook's
code they are applied in order 1, 2, 3 and a later scenario overwrites the number of an earlier one.

Pure: numpy and the standard library only. Deterministic for a seed.

>>> txs = simulate(SimulatorConfig(n_customers=50, n_terminals=100, n_days=3, seed=1))
>>> len(txs) > 100, txs[0].tx_id, txs[0].timestamp <= txs[-1].timestamp
(True, 'tx-0000000000', True)
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

DAY_S = 86400


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    n_customers: int = 5000
    n_terminals: int = 10000
    n_days: int = 183
    start_date: date = date(2018, 4, 1)
    radius: float = 5.0
    seed: int = 0
    fraud_amount_over: float = 220.0
    compromised_terminals_per_day: int = 2
    compromised_terminal_days: int = 28
    compromised_customers_per_day: int = 3
    compromised_customer_days: int = 14
    compromised_amount_factor: float = 5.0


@dataclass(frozen=True, slots=True)
class SimulatedTransaction:
    tx_id: str
    timestamp: datetime
    customer_id: str
    terminal_id: str
    amount: float
    is_fraud: bool
    fraud_scenario: int  # 0 none; 1, 2 or 3: the last scenario that marked it


@dataclass(frozen=True, slots=True)
class Profiles:
    customer_xy: np.ndarray  # (n_customers, 2)
    mean_amount: np.ndarray
    std_amount: np.ndarray
    mean_nb_tx_per_day: np.ndarray
    terminal_xy: np.ndarray  # (n_terminals, 2)
    available_offsets: np.ndarray  # CSR: customer c uses available_terminals[offsets[c]:offsets[c + 1]]
    available_terminals: np.ndarray


def profiles(config: SimulatorConfig, rng: np.random.Generator | None = None) -> Profiles:
    """Customer and terminal profiles, and every customer's terminals within the radius."""
    rng = rng if rng is not None else np.random.default_rng(config.seed)
    customer_xy = rng.uniform(0, 100, size=(config.n_customers, 2))
    mean_amount = rng.uniform(5, 100, size=config.n_customers)
    mean_nb = rng.uniform(0, 4, size=config.n_customers)
    terminal_xy = rng.uniform(0, 100, size=(config.n_terminals, 2))
    offsets = [0]
    chunks = []
    for lo in range(0, config.n_customers, 512):
        block = customer_xy[lo : lo + 512]
        distance = np.sqrt(((block[:, None, :] - terminal_xy[None, :, :]) ** 2).sum(axis=2))
        for row in distance < config.radius:
            near = np.flatnonzero(row)
            chunks.append(near)
            offsets.append(offsets[-1] + len(near))
    available = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    return Profiles(customer_xy, mean_amount, mean_amount / 2, mean_nb, terminal_xy, np.array(offsets), available)


@dataclass(frozen=True, slots=True)
class _Table:
    """Column arrays of every transaction, sorted by time."""

    time_s: np.ndarray  # seconds since the start date
    customer: np.ndarray
    terminal: np.ndarray
    amount: np.ndarray
    scenario: np.ndarray
    compromised: np.ndarray  # (n_terminals, n_days): terminal compromised that day (scenario 2)


def _generate(config: SimulatorConfig) -> _Table:
    rng = np.random.default_rng(config.seed)
    p = profiles(config, rng)
    counts = rng.poisson(np.repeat(p.mean_nb_tx_per_day[:, None], config.n_days, axis=1))
    n_available = np.diff(p.available_offsets)
    counts[n_available == 0, :] = 0  # a customer with no terminal in reach makes no transaction
    customer = np.repeat(np.repeat(np.arange(config.n_customers), config.n_days), counts.ravel())
    day = np.repeat(np.tile(np.arange(config.n_days), config.n_customers), counts.ravel())
    second = np.floor(rng.normal(DAY_S / 2, 20000, size=len(customer)))
    amount = rng.normal(p.mean_amount[customer], p.std_amount[customer])
    negative = amount < 0
    amount[negative] = rng.uniform(0, 2 * p.mean_amount[customer[negative]])
    amount = np.round(amount, 2)
    pick = np.floor(rng.uniform(0, 1, size=len(customer)) * n_available[customer]).astype(np.int64)
    terminal = p.available_terminals[p.available_offsets[customer] + np.minimum(pick, n_available[customer] - 1)]
    keep = (second > 0) & (second < DAY_S)
    customer, day, second, amount, terminal = customer[keep], day[keep], second[keep], amount[keep], terminal[keep]
    time_s = day * DAY_S + second.astype(np.int64)
    order = np.lexsort((terminal, customer, time_s))
    customer, day, time_s, amount, terminal = customer[order], day[order], time_s[order], amount[order], terminal[order]

    scenario = np.zeros(len(time_s), dtype=np.int8)
    scenario[amount > config.fraud_amount_over] = 1
    compromised = np.zeros((config.n_terminals, config.n_days), dtype=bool)
    for d in range(config.n_days):
        for t in rng.choice(config.n_terminals, size=config.compromised_terminals_per_day, replace=False):
            compromised[t, d : d + config.compromised_terminal_days] = True
    scenario[compromised[terminal, day]] = 2
    by_customer = np.argsort(customer, kind="stable")
    starts = np.searchsorted(customer[by_customer], np.arange(config.n_customers + 1))
    for d in range(config.n_days):
        for c in rng.choice(config.n_customers, size=config.compromised_customers_per_day, replace=False):
            rows = by_customer[starts[c] : starts[c + 1]]
            rows = rows[(day[rows] >= d) & (day[rows] < d + config.compromised_customer_days)]
            chosen = rng.choice(rows, size=len(rows) // 3, replace=False)
            amount[chosen] = np.round(amount[chosen] * config.compromised_amount_factor, 2)
            scenario[chosen] = 3
    return _Table(time_s, customer, terminal, amount, scenario, compromised)


def _records(config: SimulatorConfig, table: _Table, lo: int, hi: int) -> list[SimulatedTransaction]:
    start = datetime(config.start_date.year, config.start_date.month, config.start_date.day, tzinfo=UTC)
    return [
        SimulatedTransaction(
            tx_id=f"tx-{i:010d}",
            timestamp=start + timedelta(seconds=int(table.time_s[i])),
            customer_id=f"c-{int(table.customer[i]):05d}",
            terminal_id=f"t-{int(table.terminal[i]):05d}",
            amount=float(table.amount[i]),
            is_fraud=bool(table.scenario[i] > 0),
            fraud_scenario=int(table.scenario[i]),
        )
        for i in range(lo, hi)
    ]


def simulate(config: SimulatorConfig) -> list[SimulatedTransaction]:
    """Every transaction of the run, in time order (ties in customer, then terminal order)."""
    table = _generate(config)
    return _records(config, table, 0, len(table.time_s))


def iter_days(config: SimulatorConfig) -> Iterator[list[SimulatedTransaction]]:
    """The run one day at a time, so a long replay holds only the column arrays and one day of records."""
    table = _generate(config)
    bounds = np.searchsorted(table.time_s, np.arange(config.n_days + 1) * DAY_S)
    for d in range(config.n_days):
        yield _records(config, table, int(bounds[d]), int(bounds[d + 1]))


def _iso(timestamp: datetime) -> str:
    return timestamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def to_wire(tx: SimulatedTransaction) -> dict[str, Any]:
    """The ``transactions`` contract's JSON object (no label in it)."""
    return {
        "tx_id": tx.tx_id,
        "timestamp": _iso(tx.timestamp),
        "customer_id": tx.customer_id,
        "terminal_id": tx.terminal_id,
        "amount": tx.amount,
    }


def label_of(tx: SimulatedTransaction, known_at: datetime) -> dict[str, Any]:
    """The ``labels`` contract's JSON object for ``tx``, known at ``known_at``."""
    return {"tx_id": tx.tx_id, "is_fraud": tx.is_fraud, "timestamp": _iso(known_at)}


def replay(
    transactions: Iterator[SimulatedTransaction] | list[SimulatedTransaction], label_delay_s: float
) -> Iterator[tuple[str, SimulatedTransaction, datetime]]:
    """Transactions and their labels merged in event time.

    A label due ``label_delay_s`` after its transaction comes among the transactions of that later time,
    whatever the replay speed; at equal times transactions come first. Labels due after the last transaction
    follow at the end, in due order.

    >>> t0 = datetime(2018, 4, 1, tzinfo=UTC)
    >>> txs = [SimulatedTransaction(f"tx-{i}", t0 + timedelta(days=i), "c", "t", 1.0, False, 0) for i in range(3)]
    >>> " ".join(f"{kind[0]}{tx.tx_id[-1]}" for kind, tx, _ in replay(txs, label_delay_s=86400))
    't0 t1 l0 t2 l1 l2'
    """
    delay = timedelta(seconds=label_delay_s)
    pending: list[tuple[datetime, int, SimulatedTransaction]] = []
    sequence = 0
    for tx in transactions:
        while pending and pending[0][0] < tx.timestamp:
            due, _, labelled = heapq.heappop(pending)
            yield "label", labelled, due
        yield "transaction", tx, tx.timestamp
        heapq.heappush(pending, (tx.timestamp + delay, sequence, tx))
        sequence += 1
    while pending:
        due, _, labelled = heapq.heappop(pending)
        yield "label", labelled, due
