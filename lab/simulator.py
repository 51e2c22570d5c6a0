"""The transaction simulator of the Fraud Detection Handbook (benchmark section 1), vectorised with numpy.

Customers and terminals sit on a 100 x 100 square; a customer uses the terminals closer than ``radius``. Each day
a customer makes Poisson(mean_nb_tx_per_day) transactions at Normal(noon, 20000 s) seconds of the day with
Normal(mean_amount, mean_amount / 2) amounts. Three fraud scenarios then mark transactions:

1. amount as drawn (before scenario 3 multiplies it) over ``fraud_amount_over`` (220);
2. on a terminal compromised that day (each day 2 terminals, for 28 days from that day);
3. chosen among the transactions of the day's compromised customers (each day 3 customers, for 14 days): one
   third, rounded down, of the three customers' transactions in the window taken together (as the handbook's
   code pools them), with the amount multiplied by 5 (again for each further draw that picks it).

A transaction is fraud when any scenario marks it; ``fraud_scenario`` is then the *lowest* scenario number that
applies (the handbook's code keeps the last one; the choice only moves a few dozen frauds between scenarios).
Because scenario 1 looks at the drawn amount, a final amount over 220 is always fraud (scenario 1, or a
multiplied, hence scenario-3, transaction that may show as 2 or 1 when those apply too).

Pure: numpy and the standard library only, so it runs in tests, scripts and the evaluator alike. Deterministic
for a seed: one ``numpy.random.default_rng(seed)`` draws everything in a fixed order.

>>> small = SimulatorConfig(n_customers=50, n_terminals=100, n_days=3, seed=1)
>>> txs = simulate(small)
>>> len(txs), txs[0].tx_id, txs[0].customer_id[:2], txs[0].terminal_id[:2]
(170, 'tx-0000000001', 'c-', 't-')
>>> txs == simulate(small), all(a.timestamp <= b.timestamp for a, b in zip(txs, txs[1:]))
(True, True)
>>> [len(day) for day in iter_days(small)]
[62, 58, 50]
"""

from __future__ import annotations

import gc
import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

DAY_S = 86400
SCENARIO_AMOUNT = 1  # scenario numbers; bit (n - 1) of _Table.scenario_mask
SCENARIO_TERMINAL = 2
SCENARIO_CUSTOMER = 3


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """Sizes, start and seed of a run; the defaults are those of the handbook's published data set."""

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

    def __post_init__(self) -> None:
        if min(self.n_customers, self.n_terminals, self.n_days, self.compromised_terminal_days,
               self.compromised_customer_days) < 0:  # fmt: skip
            raise ValueError("sizes and durations must be >= 0")
        if not 0 <= self.compromised_terminals_per_day <= self.n_terminals:
            raise ValueError("compromised_terminals_per_day must be between 0 and n_terminals")
        if not 0 <= self.compromised_customers_per_day <= self.n_customers:
            raise ValueError("compromised_customers_per_day must be between 0 and n_customers")


@dataclass(frozen=True, slots=True)
class SimulatedTransaction:
    """One transaction with its ground truth (the wire object leaves the truth out: see :func:`to_wire`)."""

    tx_id: str  # "tx-0000000001", ...: position in time order, 1-based, unique within a run
    timestamp: datetime  # UTC, whole seconds
    customer_id: str  # "c-00042"
    terminal_id: str  # "t-00017"
    amount: float  # 2 decimals, >= 0
    is_fraud: bool
    fraud_scenario: int  # 0 none; else the lowest of 1, 2, 3 that applies


@dataclass(frozen=True, slots=True)
class Profiles:
    """Customer and terminal profiles; ``available_*`` is a CSR list of each customer's terminals in reach."""

    customer_xy: np.ndarray  # (n_customers, 2)
    mean_amount: np.ndarray
    std_amount: np.ndarray
    mean_nb_tx_per_day: np.ndarray
    terminal_xy: np.ndarray  # (n_terminals, 2)
    available_offsets: np.ndarray  # (n_customers + 1,): customer c uses available_terminals[offsets[c]:offsets[c+1]]
    available_terminals: np.ndarray

    def available(self, customer: int) -> np.ndarray:
        """Indices of the terminals within the radius of ``customer``."""
        return self.available_terminals[self.available_offsets[customer] : self.available_offsets[customer + 1]]


def profiles(config: SimulatorConfig, rng: np.random.Generator | None = None) -> Profiles:
    """Customer and terminal profiles: the first draws of the run's generator, so tests can check against them."""
    rng = rng if rng is not None else np.random.default_rng(config.seed)
    customer_xy = rng.uniform(0, 100, size=(config.n_customers, 2))
    mean_amount = rng.uniform(5, 100, size=config.n_customers)
    mean_nb = rng.uniform(0, 4, size=config.n_customers)
    terminal_xy = rng.uniform(0, 100, size=(config.n_terminals, 2))
    counts: list[np.ndarray] = []
    chunks: list[np.ndarray] = []
    for lo in range(0, config.n_customers, 512):  # blocks keep the distance matrix to 512 x n_terminals
        block = customer_xy[lo : lo + 512]
        dx = block[:, 0, None] - terminal_xy[None, :, 0]
        dy = block[:, 1, None] - terminal_xy[None, :, 1]
        rows, cols = np.nonzero(np.sqrt(dx * dx + dy * dy) < config.radius)  # row-major: grouped by customer
        counts.append(np.bincount(rows, minlength=len(block)))
        chunks.append(cols)
    offsets = np.zeros(config.n_customers + 1, dtype=np.int64)
    if counts:
        np.cumsum(np.concatenate(counts), out=offsets[1:])
    available = np.concatenate(chunks).astype(np.int64) if chunks else np.zeros(0, dtype=np.int64)
    return Profiles(customer_xy, mean_amount, mean_amount / 2, mean_nb, terminal_xy, offsets, available)


@dataclass(frozen=True, slots=True)
class _Table:
    """Column arrays of every transaction in time order (row i is tx_id i + 1), with what the scenarios did."""

    time_s: np.ndarray  # seconds since the start date
    customer: np.ndarray
    terminal: np.ndarray
    amount: np.ndarray  # final amount
    drawn_amount: np.ndarray  # amount before scenario 3
    multiplied: np.ndarray  # how many scenario-3 draws multiplied the amount
    scenario_mask: np.ndarray  # bit n - 1 set when scenario n applies
    scenario: np.ndarray  # lowest scenario that applies, 0 for none
    compromised: np.ndarray  # (n_terminals, n_days): terminal compromised that day (scenario 2)
    compromised_customers: np.ndarray  # (n_days, customers per day): the customers drawn each day (scenario 3)


def _generate(config: SimulatorConfig) -> _Table:
    rng = np.random.default_rng(config.seed)
    p = profiles(config, rng)
    n_available = np.diff(p.available_offsets)
    counts = rng.poisson(np.repeat(p.mean_nb_tx_per_day[:, None], config.n_days, axis=1))
    counts[n_available == 0, :] = 0  # a customer with no terminal in reach makes no transaction
    customer = np.repeat(np.repeat(np.arange(config.n_customers), config.n_days), counts.ravel())
    day = np.repeat(np.tile(np.arange(config.n_days), config.n_customers), counts.ravel())
    second = np.floor(rng.normal(DAY_S / 2, 20000, size=len(customer)))
    amount = rng.normal(p.mean_amount[customer], p.std_amount[customer])
    negative = amount < 0
    amount[negative] = rng.uniform(0, 2 * p.mean_amount[customer[negative]])
    amount = np.round(amount, 2)
    pick = rng.integers(0, np.maximum(n_available[customer], 1))
    terminal = p.available_terminals[p.available_offsets[customer] + pick]
    keep = (second > 0) & (second < DAY_S)  # as the handbook: second 0 (a draw in [0, 1)) is dropped too
    customer, day, amount, terminal = customer[keep], day[keep], amount[keep], terminal[keep]
    time_s = day * DAY_S + second[keep].astype(np.int64)
    order = np.lexsort((terminal, customer, time_s))  # stable: remaining ties keep generation order
    customer, day, time_s, amount, terminal = customer[order], day[order], time_s[order], amount[order], terminal[order]

    mask = np.zeros(len(time_s), dtype=np.uint8)
    mask[amount > config.fraud_amount_over] |= 1 << (SCENARIO_AMOUNT - 1)
    compromised = np.zeros((config.n_terminals, config.n_days), dtype=bool)
    for d in range(config.n_days):
        drawn = rng.choice(config.n_terminals, size=config.compromised_terminals_per_day, replace=False)
        compromised[drawn, d : d + config.compromised_terminal_days] = True
    mask[compromised[terminal, day]] |= 1 << (SCENARIO_TERMINAL - 1)

    drawn_amount = amount.copy()
    multiplied = np.zeros(len(time_s), dtype=np.int8)
    by_customer = np.argsort(customer, kind="stable")  # per customer, in time order
    starts = np.searchsorted(customer[by_customer], np.arange(config.n_customers + 1))
    empty = np.zeros(0, dtype=np.int64)
    customers_drawn = np.zeros((config.n_days, config.compromised_customers_per_day), dtype=np.int64)
    for d in range(config.n_days):
        drawn = rng.choice(config.n_customers, size=config.compromised_customers_per_day, replace=False)
        customers_drawn[d] = drawn
        rows = np.concatenate([by_customer[starts[c] : starts[c + 1]] for c in np.sort(drawn)] + [empty])
        rows = rows[(day[rows] >= d) & (day[rows] < d + config.compromised_customer_days)]
        chosen = rng.choice(rows, size=len(rows) // 3, replace=False)
        amount[chosen] = np.round(amount[chosen] * config.compromised_amount_factor, 2)
        multiplied[chosen] += 1
        mask[chosen] |= 1 << (SCENARIO_CUSTOMER - 1)

    scenario = np.zeros(len(time_s), dtype=np.int8)
    for number in (SCENARIO_CUSTOMER, SCENARIO_TERMINAL, SCENARIO_AMOUNT):  # lowest last, so lowest wins
        scenario[(mask & (1 << (number - 1))) != 0] = number
    return _Table(time_s, customer, terminal, amount, drawn_amount, multiplied, mask, scenario, compromised,
                  customers_drawn)  # fmt: skip


def _records(config: SimulatorConfig, table: _Table, lo: int, hi: int) -> list[SimulatedTransaction]:
    """Rows lo..hi as records; names are formatted once per customer/terminal and timestamps once per day."""
    start = datetime(config.start_date.year, config.start_date.month, config.start_date.day, tzinfo=UTC)
    customer_ids = [f"c-{c:05d}" for c in range(config.n_customers)]
    terminal_ids = [f"t-{t:05d}" for t in range(config.n_terminals)]
    day_start = [start + timedelta(days=d) for d in range(config.n_days)]
    columns = (
        range(lo + 1, hi + 1),
        table.time_s[lo:hi].tolist(),
        table.customer[lo:hi].tolist(),
        table.terminal[lo:hi].tolist(),
        table.amount[lo:hi].tolist(),
        table.scenario[lo:hi].tolist(),
    )
    out: list[SimulatedTransaction] = []
    collecting = gc.isenabled()
    gc.disable()  # a million new objects would set off collections that find nothing: a quarter of the time
    try:
        for i, t, c, term, amount, s in zip(*columns, strict=True):
            day, second = divmod(t, DAY_S)
            out.append(SimulatedTransaction(f"tx-{i:010d}", day_start[day] + timedelta(seconds=second),
                                            customer_ids[c], terminal_ids[term], amount, s > 0, s))  # fmt: skip
    finally:
        if collecting:
            gc.enable()
    return out


def simulate(config: SimulatorConfig) -> list[SimulatedTransaction]:
    """Every transaction of the run, sorted by (timestamp, tx_id): ids are handed out in time order."""
    table = _generate(config)
    return _records(config, table, 0, len(table.time_s))


def iter_days(config: SimulatorConfig) -> Iterator[list[SimulatedTransaction]]:
    """The run one day at a time (an empty list for a day without any), holding only columns and one day of records.

    Scenario 3 needs 14 days of a customer's transactions, so the columns are generated whole first; only the
    Python records, the bulk of the memory, are made a day at a time. Same records and ids as :func:`simulate`.
    """
    table = _generate(config)
    bounds = np.searchsorted(table.time_s, np.arange(config.n_days + 1) * DAY_S)
    for d in range(config.n_days):
        yield _records(config, table, int(bounds[d]), int(bounds[d + 1]))


def _iso(timestamp: datetime) -> str:
    return timestamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_wire(tx: SimulatedTransaction) -> dict[str, Any]:
    """The ``transactions`` contract's JSON object: no label in it, the worker must not see the truth.

    >>> t = SimulatedTransaction("tx-0000000001", datetime(2018, 4, 1, 0, 7, 56, tzinfo=UTC), "c-00042", "t-00017",
    ...                          57.16, True, 2)
    >>> wire = to_wire(t)
    >>> wire["timestamp"], wire["amount"], sorted(wire)
    ('2018-04-01T00:07:56Z', 57.16, ['amount', 'customer_id', 'terminal_id', 'timestamp', 'tx_id'])
    >>> label_of(t, t.timestamp + timedelta(days=7))
    {'tx_id': 'tx-0000000001', 'is_fraud': True, 'timestamp': '2018-04-08T00:07:56Z'}
    """
    return {
        "tx_id": tx.tx_id,
        "timestamp": _iso(tx.timestamp),
        "customer_id": tx.customer_id,
        "terminal_id": tx.terminal_id,
        "amount": tx.amount,
    }


def label_of(tx: SimulatedTransaction, known_at: datetime) -> dict[str, Any]:
    """The ``labels`` contract's JSON object for ``tx``, stamped with when the label became known."""
    return {"tx_id": tx.tx_id, "is_fraud": tx.is_fraud, "timestamp": _iso(known_at)}


def replay(
    transactions: Iterable[SimulatedTransaction], label_delay_s: float
) -> Iterator[tuple[str, SimulatedTransaction, datetime]]:
    """Transactions and their labels merged in event time: ``(kind, tx, at)`` with ``at`` non-decreasing.

    A label due ``label_delay_s`` after its transaction comes among the transactions of that later time, so a
    replay at any speed teaches the model exactly what a live stream would. At equal times transactions come
    first (a label is never earlier than the transactions it could inform); equal-time labels keep transaction
    order. Labels due after the last transaction are yielded at the end, in due order, so every transaction gets
    its label. ``transactions`` must be in time order (a heap holds only the pending labels, so a lazy stream
    such as ``itertools.chain.from_iterable(iter_days(config))`` stays lazy).

    >>> t0 = datetime(2018, 4, 1, tzinfo=UTC)
    >>> txs = [SimulatedTransaction(f"tx-{i}", t0 + timedelta(days=i), "c", "t", 1.0, False, 0) for i in range(3)]
    >>> " ".join(f"{kind[0]}{tx.tx_id[-1]}" for kind, tx, _ in replay(txs, label_delay_s=86400))
    't0 t1 l0 t2 l1 l2'
    """
    if label_delay_s < 0:
        raise ValueError("label_delay_s must be >= 0: a label cannot come before its transaction")
    delay = timedelta(seconds=label_delay_s)
    pending: list[tuple[datetime, int, SimulatedTransaction]] = []
    sequence = 0
    last: datetime | None = None
    for tx in transactions:
        if last is not None and tx.timestamp < last:
            raise ValueError(f"transactions out of time order at {tx.tx_id}")
        last = tx.timestamp
        while pending and pending[0][0] < tx.timestamp:
            due, _, labelled = heapq.heappop(pending)
            yield "label", labelled, due
        yield "transaction", tx, tx.timestamp
        heapq.heappush(pending, (tx.timestamp + delay, sequence, tx))
        sequence += 1
    while pending:
        due, _, labelled = heapq.heappop(pending)
        yield "label", labelled, due
