"""A fault run's scenario: the messages published (simulated transactions and malformed ones) and when the
faults hit."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from faultrun.measurement import BAD, GOOD, LABEL_FRAUD, LABEL_LEGIT

if TYPE_CHECKING:
    from lab.simulator import SimulatedTransaction


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str  # "sigkill", "trainer_sigkill", "trainer_process_sigkill", "pause", "broker_restart", "scale_up", ...
    planned_at_s: float  # seconds after publishing started


def fault_schedule(
    publish_s: float,
    kills: int,
    broker_restart: bool,
    scale: bool,
    pauses: int = 0,
    trainer_kills: int = 0,
    trainer_process_kills: int = 0,
) -> list[Fault]:
    """Faults evenly over the publishing time: the i-th of E at (i + 1) / (E + 1) of it.

    Kills (of any worker, of the trainer's owner, and of the trainer process alone) are spread over the run, the
    scale-up comes near a quarter, the broker restart near half and the scale-down near three quarters (ties keep that
    order; a trainer kill tied with the broker restart comes before it, not into the catch-up after the broker's
    return). Pauses (a worker stopped past its session timeout, then resumed: a zombie) want a second worker to take its
    partitions: with ``scale`` they fall between the scale-up and the broker restart, while two workers run and the
    broker has not moved; without, spread over the run.

    >>> [(f.kind, round(f.planned_at_s)) for f in fault_schedule(120.0, 2, True, True)]
    [('scale_up', 20), ('sigkill', 40), ('broker_restart', 60), ('scale_down', 80), ('sigkill', 100)]
    >>> [(f.kind, round(f.planned_at_s)) for f in fault_schedule(120.0, 0, True, True, pauses=1)]
    [('scale_up', 24), ('pause', 48), ('broker_restart', 72), ('scale_down', 96)]
    >>> [(f.kind, round(f.planned_at_s)) for f in fault_schedule(90.0, 1, False, False, trainer_kills=2)]
    [('trainer_sigkill', 22), ('sigkill', 45), ('trainer_sigkill', 68)]
    >>> [f.kind for f in fault_schedule(70.0, 2, True, True, trainer_kills=1)]
    ['scale_up', 'sigkill', 'trainer_sigkill', 'broker_restart', 'scale_down', 'sigkill']
    >>> [f.kind for f in fault_schedule(90.0, 0, False, False, trainer_kills=1, trainer_process_kills=2)]
    ['trainer_process_sigkill', 'trainer_sigkill', 'trainer_process_sigkill']
    """
    wanted: list[tuple[float, float, str]] = [((i + 0.5) / kills, 3, "sigkill") for i in range(kills)]
    wanted += [((i + 0.5) / trainer_kills, 0.5, "trainer_sigkill") for i in range(trainer_kills)]
    n_process = trainer_process_kills
    wanted += [((i + 0.5) / n_process, 0.6, "trainer_process_sigkill") for i in range(n_process)]
    if scale:
        wanted += [(0.25, 0, "scale_up"), (0.75, 2, "scale_down")]
        wanted += [(0.25 + 0.25 * (i + 1) / (pauses + 1), 4, "pause") for i in range(pauses)]
    else:
        wanted += [((i + 1) / (pauses + 1), 4, "pause") for i in range(pauses)]
    if broker_restart:
        wanted.append((0.5, 1, "broker_restart"))
    wanted.sort()
    n = len(wanted)
    return [Fault(kind, publish_s * (i + 1) / (n + 1)) for i, (_, _, kind) in enumerate(wanted)]


SEGMENT_DAYS = 30


def simulated_transactions(seed: int) -> Iterator[Any]:
    """An endless stream of simulated transactions in time order: 30-day runs of the handbook's simulator, each
    starting where the last ended (fresh profiles, seed + k)."""
    from lab.simulator import SimulatorConfig, iter_days

    start = date(2018, 4, 1)
    for k in itertools.count():
        config = SimulatorConfig(n_customers=2500, n_terminals=5000, n_days=SEGMENT_DAYS, seed=seed + k,
                                 start_date=start + timedelta(days=SEGMENT_DAYS * k))  # fmt: skip
        for day in iter_days(config):
            yield from day


def is_bad(i: int, n: int, n_bad: int) -> bool:
    """Whether message i of n is one of the n_bad malformed ones, spread evenly.

    >>> [i for i in range(10) if is_bad(i, 10, 3)]
    [3, 6, 9]
    """
    return n_bad > 0 and (i + 1) * n_bad // n > i * n_bad // n


def malformed(bad_id: str, variant: int) -> bytes:
    """A message the worker must dead-letter; the JSON ones carry ``bad_id`` as their tx_id."""
    base = {"tx_id": bad_id, "timestamp": "2018-04-01T12:00:00Z", "customer_id": "c-bad", "terminal_id": "t-bad",
            "amount": 10.0}  # fmt: skip
    variant %= 6
    if variant == 0:
        return b""  # empty_message
    if variant == 1:
        return b'{"tx_id": "' + bad_id.encode() + b'", not json'  # invalid_json
    if variant == 2:
        return orjson.dumps([bad_id])  # not_an_object
    if variant == 3:
        return orjson.dumps({k: v for k, v in base.items() if k != "terminal_id"})  # missing_field
    if variant == 4:
        return orjson.dumps({**base, "amount": -5.0})  # invalid_amount
    return orjson.dumps({**base, "timestamp": "2018-04-01 12:00:00"})  # invalid_timestamp: no offset


def messages(
    n: int, run_id: str, seed: int, bad_share: float, label_delay_s: float | None = None
) -> Iterator[tuple[str, str, bytes, bytes]]:
    """(id, kind, key, value) for the run's n messages on the transactions topic and, with ``label_delay_s``, one
    label per valid transaction: kind ``GOOD`` (valid, keyed by customer_id), ``BAD`` (malformed, keyed by its id)
    or ``LABEL_FRAUD`` / ``LABEL_LEGIT`` (keyed and identified by its transaction's tx_id, for the labels topic).

    A label is due ``label_delay_s`` of event time after its transaction and comes among the transactions of that
    later time, as ``lab.simulator.replay`` merges them (labels due before a transaction's time first; at equal
    times the transaction first); the labels due after the last transaction come after it, in due order. Malformed
    messages get no label.

    >>> [(i[-3:], k) for i, k, _, _ in messages(4, "r", 0, 0.25, label_delay_s=0.0)]
    [('000', 'g'), ('000', 'll'), ('001', 'g'), ('001', 'll'), ('002', 'g'), ('003', 'b'), ('002', 'll')]
    """
    from lab.simulator import label_of, to_wire

    n_bad = min(n, round(n * bad_share))
    txs = simulated_transactions(seed)
    pending: list[tuple[datetime, int, SimulatedTransaction]] = []  # labels not due yet, by due time
    delay = timedelta(seconds=label_delay_s or 0.0)
    n_bad_so_far = 0

    def label(due: datetime, tx: SimulatedTransaction) -> tuple[str, str, bytes, bytes]:
        return tx.tx_id, LABEL_FRAUD if tx.is_fraud else LABEL_LEGIT, tx.tx_id.encode(), orjson.dumps(label_of(tx, due))

    for i in range(n):
        if is_bad(i, n, n_bad):
            bad_id = f"bad-{run_id}-{i:09d}"
            yield bad_id, BAD, bad_id.encode(), malformed(bad_id, n_bad_so_far)
            n_bad_so_far += 1
            continue
        tx = replace(next(txs), tx_id=f"tx-{run_id}-{i:09d}")
        if label_delay_s is not None:
            while pending and pending[0][0] < tx.timestamp:
                due, _, labelled = heapq.heappop(pending)
                yield label(due, labelled)
            heapq.heappush(pending, (tx.timestamp + delay, i, tx))
        yield tx.tx_id, GOOD, tx.customer_id.encode(), orjson.dumps(to_wire(tx))
    while pending:
        due, _, labelled = heapq.heappop(pending)
        yield label(due, labelled)


def trailing_labels(n: int, seed: int, bad_share: float, label_delay_s: float) -> int:
    """How many labels of :func:`messages` come after its last transaction (due at or after its time): the
    publisher paces them as it paces transactions, so they count in the publishing time.

    >>> trailing_labels(4, 0, 0.25, label_delay_s=0.0), trailing_labels(4, 0, 0.25, label_delay_s=86400.0)
    (1, 3)
    """
    n_valid = n - min(n, round(n * bad_share))
    times = [tx.timestamp for tx in itertools.islice(simulated_transactions(seed), n_valid)]
    if not times:
        return 0
    last = times[-1]
    delay = timedelta(seconds=label_delay_s)
    return sum(1 for t in times if t + delay >= last)
