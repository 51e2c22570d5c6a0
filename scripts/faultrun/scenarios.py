"""A fault run's scenario: the messages published (simulated transactions and malformed ones) and when the
faults hit."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str  # "sigkill", "pause", "broker_restart", "scale_up", "scale_down"
    planned_at_s: float  # seconds after publishing started


def fault_schedule(publish_s: float, kills: int, broker_restart: bool, scale: bool, pauses: int = 0) -> list[Fault]:
    """Faults evenly over the publishing time: the i-th of E at (i + 1) / (E + 1) of it.

    Kills are spread over the run, the scale-up comes near a quarter, the broker restart near half and the
    scale-down near three quarters (ties keep that order). Pauses (a worker stopped past its session timeout, then
    resumed: a zombie) want a second worker to take its partitions: with ``scale`` they fall between the scale-up
    and the broker restart, while two workers run and the broker has not moved; without, spread over the run.

    >>> [(f.kind, round(f.planned_at_s)) for f in fault_schedule(120.0, 2, True, True)]
    [('scale_up', 20), ('sigkill', 40), ('broker_restart', 60), ('scale_down', 80), ('sigkill', 100)]
    >>> [(f.kind, round(f.planned_at_s)) for f in fault_schedule(120.0, 0, True, True, pauses=1)]
    [('scale_up', 24), ('pause', 48), ('broker_restart', 72), ('scale_down', 96)]
    """
    wanted: list[tuple[float, int, str]] = [((i + 0.5) / kills, 3, "sigkill") for i in range(kills)]
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


def messages(n: int, run_id: str, seed: int, bad_share: float) -> Iterator[tuple[str, bool, bytes, bytes]]:
    """(id, malformed, key, value) for the run's n messages; valid ones keyed by customer_id."""
    from lab.simulator import to_wire

    n_bad = min(n, round(n * bad_share))
    txs = simulated_transactions(seed)
    n_bad_so_far = 0
    for i in range(n):
        if is_bad(i, n, n_bad):
            bad_id = f"bad-{run_id}-{i:09d}"
            yield bad_id, True, bad_id.encode(), malformed(bad_id, n_bad_so_far)
            n_bad_so_far += 1
            continue
        tx = next(txs)
        wire = to_wire(tx)
        wire["tx_id"] = f"tx-{run_id}-{i:09d}"
        yield wire["tx_id"], False, tx.customer_id.encode(), orjson.dumps(wire)
