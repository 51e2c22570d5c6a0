"""Each input partition's customer windows, and how they travel on the changelog: one small record per entry.

A partition's state is a dict of customers, each a list of entries sorted by event time
(:data:`app.features.engine.CustomerState`). The decision path writes the entries a batch added or pruned to the
compacted changelog, keyed ``customer_id \x1f tx_id``, in the batch's transaction, with the partition's position
under :data:`POSITION_KEY`; a restore reads them back as bytes and parses a customer on first use. Pure: no Kafka.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.features.engine import CustomerState
from app.serialization import dumps, loads

POSITION_KEY = b"\x00position"  # a changelog record: the partition's stream time and next input offset
ENTRY_KEY_SEPARATOR = "\x1f"  # changelog keys are ``customer_id \x1f tx_id``: one small record per entry


@dataclass
class PartitionState:
    """One input partition's customers (``bytes`` until first read after a restore) and its stream time."""

    customers: dict[str, CustomerState | dict[str, bytes]] = field(default_factory=dict)
    stream_time_s: float = float("-inf")
    swept_at_s: float = field(default_factory=time.monotonic)

    def customer(self, customer_id: str) -> CustomerState:
        value = self.customers.get(customer_id)
        if value is None:
            return []
        if isinstance(value, dict):  # parsed lazily: a restore only keeps each entry's bytes
            value = self.customers[customer_id] = restored_state(value)
        return value


def entry_key(customer_id: str, tx_id: str) -> bytes:
    return f"{customer_id}{ENTRY_KEY_SEPARATOR}{tx_id}".encode()


def entry_value(entry: Sequence[Any]) -> bytes:
    """``[t, amount, terminal_id, seq]`` of a customer state entry ``[t, amount, terminal_id, tx_id, seq]``."""
    return dumps([entry[0], entry[1], entry[2], entry[4]])


def restored_state(by_tx_id: dict[str, bytes]) -> CustomerState:
    """A customer's state from its changelog entries, in event-time order (ties in arrival order).

    >>> state = [(5.0, 1.0, "k1", "t2", 1), (5.0, 2.0, "k2", "t1", 0), (1.0, 3.0, "k1", "t0", 2)]
    >>> restored_state({e[3]: entry_value(e) for e in state})
    [(1.0, 3.0, 'k1', 't0', 2), (5.0, 2.0, 'k2', 't1', 0), (5.0, 1.0, 'k1', 't2', 1)]
    """
    state: CustomerState = []
    for tx_id, raw in by_tx_id.items():
        t, amount, terminal_id, seq = loads(raw)
        state.append((t, amount, terminal_id, tx_id, seq))
    state.sort(key=lambda e: (e[0], e[4]))  # type: ignore[arg-type,return-value]
    return state


def pruned(before: CustomerState, after: CustomerState) -> CustomerState:
    """The entries of ``before`` that adding one transaction pruned (the oldest: pruning is from the front; a
    transaction older than the horizon is scored but not kept).

    >>> a, b, c = (1.0, 1.0, "k", "a", 0), (2.0, 1.0, "k", "b", 1), (9.0, 1.0, "k", "c", 2)
    >>> pruned([a, b], [b, c]), pruned([a, b], [b])
    ([(1.0, 1.0, 'k', 'a', 0)], [(1.0, 1.0, 'k', 'a', 0)])
    """
    k = len(before) + 1 - len(after)
    if k <= 0:
        return []
    kept = {e[3] for e in after[: k + 1]}  # a kept entry of before[:k] sits at most one place later in after
    return [e for e in before[:k] if e[3] not in kept]


def after_entry(state: CustomerState, tx_id: str) -> tuple[Any, ...] | None:
    """The entry just added for ``tx_id`` (searched from the newest end: in-order arrivals are last); None when
    the transaction was older than the state's horizon and not kept."""
    for entry in reversed(state):
        if entry[3] == tx_id:
            return entry
    return None
