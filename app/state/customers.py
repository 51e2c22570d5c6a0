"""Each input partition's customer windows: one small changelog record per entry, one packed value per customer in
the local store.

A customer's state is its entries sorted by event time, by column (:data:`app.features.engine.CustomerState`). The
decision path writes the entries a batch added or pruned to the compacted changelog, keyed ``customer_id \x1f
tx_id``, in the batch's transaction, with the partition's position under :data:`POSITION_KEY`: the changelog is the
source of truth. The local store (:mod:`app.state.store`) holds each customer as ONE value under its id, the packed
window (:meth:`~app.features.engine.CustomerWindow.to_bytes`), and the position record, written only after the Kafka
transaction committed, with the changelog offset it covers; a restore applies the changelog's per-entry records to
the packed values (:class:`ChangelogReplay`). A customer is read from the store (one ``get``, one decode) when a
batch needs it, through a small LRU cache of windows, so memory follows the settings, not the number of customers.
Pure: no Kafka.
"""

from __future__ import annotations

import itertools
import time
from array import array
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.features.engine import EMPTY_WINDOW, CustomerState, CustomerWindow
from app.serialization import dumps, loads
from app.state.store import StorePartition, keep_recent

POSITION_KEY = b"\x00position"  # a changelog record: the partition's stream time, next input offset, customers
ENTRY_KEY_SEPARATOR = "\x1f"  # changelog keys are ``customer_id \x1f tx_id``: one small record per entry
# The customer store's format (every partition is created with it and checked on opening): one packed value per
# customer. A store of the earlier layout (one key per entry, under the shared FORMAT_MARKER) is rebuilt.
CUSTOMER_FORMAT_MARKER = b"fraud-stream-customers/2"


@dataclass
class PartitionState:
    """One input partition's committed customers (in ``store``), its stream time and where its input stands.

    ``cache_size`` windows stay in memory (least recently used go first); the store is the truth, and both change
    only in :meth:`apply`, after the batch's Kafka transaction committed."""

    store: StorePartition
    cache_size: int = 10_000
    stream_time_s: float = float("-inf")
    next_offset: int | None = None  # the next input offset the state covers; None before the first batch
    customer_count: int = 0  # customers with at least one entry (carried in the position record)
    swept_at_s: float = field(default_factory=time.monotonic)
    sweep_from: bytes = b""  # the key the next idle-expiry slice starts at (b"": from the start)
    cache: OrderedDict[str, CustomerState] = field(default_factory=OrderedDict)

    def customer(self, customer_id: str) -> CustomerState:
        """The committed state, kept in the cache (the decision path: the customer will likely come again)."""
        cache = self.cache
        value = cache.get(customer_id)
        if value is not None:
            cache.move_to_end(customer_id)
            return value
        value = self.peek(customer_id)
        if value:
            self._keep(customer_id, value)
        return value

    def peek(self, customer_id: str) -> CustomerState:
        """The committed state, without changing what the cache keeps (serving reads): one ``get``, one decode."""
        value = self.cache.get(customer_id)
        if value is not None:
            return value
        raw = self.store.get(customer_key(customer_id))
        return EMPTY_WINDOW if raw is None else CustomerWindow.from_bytes(raw)

    def customer_ids(self) -> list[str]:
        """Every customer in the store: a full scan, for tests and diagnostics only."""
        return [key.decode() for key, _ in self.store.iter_from(b"") if key != POSITION_KEY]

    def apply(
        self,
        position: bytes | None,
        offset: int | None,
        changed: Mapping[str, CustomerState],
        removed: Sequence[str],
    ) -> None:
        """Write a committed batch to the store in one transaction with ``offset`` (the changelog offset right
        after its records): the packed window of each ``changed`` customer (deleted when empty), the deletion of
        each ``removed`` one and the ``position`` record; then the cache. Without an ``offset`` the stored one
        stays: a replay from an older offset gives the same values, so it only costs time."""
        transaction = self.store.begin()
        cache = self.cache
        for customer_id, value in changed.items():
            if value:
                if cache.get(customer_id) is value:
                    continue  # the committed window itself (a repeated tx_id): the store holds it already
                transaction.put(customer_key(customer_id), value.to_bytes())
            else:
                transaction.delete(customer_key(customer_id))
        for customer_id in removed:
            transaction.delete(customer_key(customer_id))
        if position is not None:
            transaction.put(POSITION_KEY, position)
        committed = self.store.committed_offset
        transaction.commit(offset if offset is not None else (committed or 0))
        for customer_id, value in changed.items():
            if value:
                self._keep(customer_id, value)
            else:
                cache.pop(customer_id, None)
        for customer_id in removed:
            cache.pop(customer_id, None)

    def load_position(self) -> None:
        """Stream time, next input offset and customer count from the store's position entry (after a restore)."""
        raw = self.store.get(POSITION_KEY)
        position = loads(raw) if raw is not None else {}
        self.stream_time_s = float(position.get("stream_time_s", float("-inf")))
        next_offset = position.get("next_offset")
        self.next_offset = None if next_offset is None else int(next_offset)
        count = position.get("customers")
        self.customer_count = len(self.customer_ids()) if count is None else int(count)  # older records: count

    def _keep(self, customer_id: str, value: CustomerState) -> None:
        keep_recent(self.cache, customer_id, value, self.cache_size)


def position_value(stream_time_s: float, next_offset: int | None, customers: int) -> bytes:
    return dumps({"stream_time_s": stream_time_s, "next_offset": next_offset, "customers": customers})


def customer_key(customer_id: str) -> bytes:
    """A customer's key in the local store (its packed window)."""
    return customer_id.encode()


def idle_slice(
    store: StorePartition, start: bytes, max_customers: int, horizon_s: float
) -> tuple[dict[str, list[bytes]], bytes]:
    """Read up to ``max_customers`` customers from key ``start`` on; those whose newest entry is older than
    ``horizon_s``, with their changelog keys (to delete), and the key the next slice starts at (``b""``: this one
    reached the end).

    The sweep reads the store a slice at a time, so it costs the same however many customers it holds; a customer
    costs reading its newest time from the packed value, an idle one a decode for its tx ids."""
    idle: dict[str, list[bytes]] = {}
    seen = 0
    for key, value in store.iter_from(start):
        if key == POSITION_KEY:
            continue
        if seen >= max_customers:
            return idle, key
        seen += 1
        if CustomerWindow.newest_time_s_of(value) < horizon_s:
            customer_id = key.decode()
            idle[customer_id] = [entry_key(customer_id, tx_id) for tx_id in CustomerWindow.from_bytes(value).ids]
    return idle, b""


class ChangelogReplay:
    """The changelog's per-entry records applied to a partition's packed customers, a slice at a time.

    :meth:`add` collects a slice's records by customer (the last record of a key wins, as in the compacted
    changelog); :meth:`commit` reads every touched customer once (one ``get_many``), adds and removes its entries
    by tx id, keeps them sorted like :func:`restored_state`, writes each back (or deletes it when empty) with the
    position record, in one transaction with the changelog offset the slice reaches."""

    def __init__(self, part: StorePartition) -> None:
        self.part = part
        self.records = 0  # added since the last commit
        self._entries: dict[bytes, dict[str, bytes | None]] = {}  # customer key -> tx_id -> value (None: deleted)
        self._position: list[bytes | None] = []  # the slice's last position record, if it had one

    def add(self, key: bytes, value: bytes | None) -> None:
        self.records += 1
        if key == POSITION_KEY:
            self._position[:] = [value]
            return
        customer, separator, tx_id = key.partition(b"\x1f")
        if separator:  # the changelog holds entries and the position only
            self._entries.setdefault(customer, {})[tx_id.decode()] = value

    def commit(self, offset: int) -> None:
        transaction = self.part.begin()
        touched = self._entries
        stored = self.part.get_many(touched)
        for key, changes in touched.items():
            window = changed_window(stored.get(key), changes)
            if window:
                transaction.put(key, window.to_bytes())
            else:
                transaction.delete(key)
        for position in self._position:
            if position is None:
                transaction.delete(POSITION_KEY)
            else:
                transaction.put(POSITION_KEY, position)
        transaction.commit(offset)
        self.records, self._entries, self._position = 0, {}, []


def changed_window(raw: bytes | None, changes: Mapping[str, bytes | None]) -> CustomerState:
    """A packed window (``None``: no customer yet) with changelog records applied: ``tx_id`` -> entry value, or
    ``None`` for a deleted entry; the entries sorted like :func:`restored_state`.

    A restore's usual case (the oldest entries deleted, newer ones added after the rest) works on the columns;
    anything else sorts the entries. The terminal ids are not interned: a window to pack again, not to keep.

    >>> e = [(1.0, 3.0, "k1", "t0", 2), (5.0, 2.0, "k2", "t1", 0), (5.0, 1.0, "k1", "t2", 1)]
    >>> w = changed_window(None, {"t2": entry_value(e[2]), "t0": entry_value(e[0])})
    >>> list(w) == [e[0], e[2]], changed_window(w.to_bytes(), {"t1": entry_value(e[1]), "t0": None})
    (True, CustomerWindow([(5.0, 2.0, 'k2', 't1', 0), (5.0, 1.0, 'k1', 't2', 1)]))
    """
    held = CustomerWindow.from_bytes(raw, intern=False) if raw is not None else EMPTY_WINDOW
    gone = [i for i, tx_id in enumerate(held.ids) if tx_id in changes]  # deleted, or written again
    added = [(tx_id, value) for tx_id, value in changes.items() if value is not None]
    if not added and not gone:
        return held  # deletions of entries it does not hold
    if added:
        values = loads(b"[" + b",".join(value for _, value in added) + b"]")  # one parse for the customer's adds
        new = sorted(((v[0], v[1], v[2], tx_id, v[3]) for (tx_id, _), v in zip(added, values, strict=True)),
                     key=_order)  # fmt: skip
    else:
        new = []
    if gone == list(range(len(gone))):  # the oldest entries went
        kept = held.since(len(gone)) if gone else held
        if not new:
            return kept
        if not kept or _order(new[0]) >= (kept.times[-1], kept.seqs[-1]):  # the new ones come after the rest
            times, amounts, terminals, ids, seqs = zip(*new, strict=True)
            return CustomerWindow(kept.times + array("d", times), kept.amounts + array("d", amounts),
                                  kept.terminals + terminals, kept.ids + ids, kept.seqs + array("q", seqs))  # fmt: skip
    gone_set = set(gone)
    entries = [e for i, e in enumerate(held) if i not in gone_set]
    entries.extend(new)
    entries.sort(key=_order)
    return CustomerWindow.of(entries)


def _order(entry: tuple[Any, ...]) -> tuple[Any, Any]:
    return entry[0], entry[4]


def entry_key(customer_id: str, tx_id: str) -> bytes:
    return f"{customer_id}{ENTRY_KEY_SEPARATOR}{tx_id}".encode()


def entry_value(entry: Sequence[Any]) -> bytes:
    """``[t, amount, terminal_id, seq]`` of a customer state entry ``[t, amount, terminal_id, tx_id, seq]``."""
    return dumps([entry[0], entry[1], entry[2], entry[4]])


def restored_state(by_tx_id: dict[str, bytes]) -> CustomerState:
    """A customer's state from its changelog entries, in event-time order (ties in arrival order): what a
    replay of them from no state gives (:func:`changed_window`), the reference of the tests.

    >>> state = [(5.0, 1.0, "k1", "t2", 1), (5.0, 2.0, "k2", "t1", 0), (1.0, 3.0, "k1", "t0", 2)]
    >>> restored_state({e[3]: entry_value(e) for e in state})
    CustomerWindow([(1.0, 3.0, 'k1', 't0', 2), (5.0, 2.0, 'k2', 't1', 0), (5.0, 1.0, 'k1', 't2', 1)])
    """
    if not by_tx_id:
        return EMPTY_WINDOW
    # One parse for all the entries (a customer holds dozens): a third of the cost of a cache miss, not most of it.
    values = loads(b"[" + b",".join(by_tx_id.values()) + b"]")
    state = [(v[0], v[1], v[2], tx_id, v[3]) for tx_id, v in zip(by_tx_id, values, strict=True)]
    state.sort(key=lambda e: (e[0], e[4]))
    return CustomerWindow.of(state)


def pruned(
    before: Sequence[tuple[Any, ...]] | CustomerState, after: Sequence[tuple[Any, ...]] | CustomerState
) -> list[tuple[Any, ...]]:
    """The entries of ``before`` that adding one transaction pruned (the oldest: pruning is from the front; a
    transaction older than the horizon is scored but not kept).

    >>> a, b, c = (1.0, 1.0, "k", "a", 0), (2.0, 1.0, "k", "b", 1), (9.0, 1.0, "k", "c", 2)
    >>> pruned([a, b], [b, c]), pruned([a, b], [b])
    ([(1.0, 1.0, 'k', 'a', 0)], [(1.0, 1.0, 'k', 'a', 0)])
    """
    k = len(before) + 1 - len(after)
    if k <= 0:
        return []
    kept = {e[3] for e in itertools.islice(after, k + 1)}  # a kept entry of before[:k] sits at most one later
    return [e for e in itertools.islice(before, k) if e[3] not in kept]


def after_entry(state: CustomerState, tx_id: str) -> tuple[Any, ...] | None:
    """The entry just added for ``tx_id`` (searched from the newest end: in-order arrivals are last); None when
    the transaction was older than the state's horizon and not kept."""
    for entry in reversed(state):
        if entry[3] == tx_id:
            return entry
    return None
