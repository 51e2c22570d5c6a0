"""Each input partition's customer windows, and how they travel on the changelog: one small record per entry.

A customer's state is its entries sorted by event time, by column (:data:`app.features.engine.CustomerState`). The
decision path writes the entries a batch added or pruned to the compacted changelog, keyed ``customer_id \x1f
tx_id``, in the batch's transaction, with the partition's position under :data:`POSITION_KEY`. The local store
(:mod:`app.state.store`) holds the same keys and values: a copy of the changelog, written only after the Kafka
transaction committed, with the changelog offset it covers. A customer is read from the store when a batch needs
it, through a small LRU cache of parsed states and, behind it, one of packed states bounded in bytes
(:class:`PartitionState`), so memory follows the settings, not the number of customers.
Pure: no Kafka.
"""

from __future__ import annotations

import itertools
import operator
import struct
import time
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.features.engine import EMPTY_WINDOW, CustomerState, CustomerWindow, Indices
from app.serialization import dumps, loads
from app.state.store import StorePartition
from app.state.two_tier import TwoTierCache

POSITION_KEY = b"\x00position"  # a changelog record: the partition's stream time, next input offset, customers
ENTRY_KEY_SEPARATOR = "\x1f"  # changelog keys are ``customer_id \x1f tx_id``: one small record per entry


@dataclass
class PartitionState:
    """One input partition's committed customers (in ``store``), its stream time and where its input stands.

    Two caches in front of the store (``caches``, a :class:`~app.state.two_tier.TwoTierCache`), both of committed
    states only: ``cache_size`` parsed customers (least recently used go first), and behind them, up to
    ``packed_cache_bytes``, the customers the first dropped, packed (:func:`pack_window`: ~45 bytes an entry instead
    of ~100 parsed, unpacked in a few C calls where a store read costs a prefix iteration and a JSON parse). A
    customer is in one of them at most. The store is the truth; all three change only in :meth:`apply`, after the
    batch's Kafka transaction committed."""

    store: StorePartition
    cache_size: int = 10_000
    packed_cache_bytes: int = 0
    stream_time_s: float = float("-inf")
    next_offset: int | None = None  # the next input offset the state covers; None before the first batch
    customer_count: int = 0  # customers with at least one entry (carried in the position record)
    swept_at_s: float = field(default_factory=time.monotonic)
    sweep_from: bytes = b""  # the key the next idle-expiry slice starts at (b"": from the start)
    caches: TwoTierCache[CustomerState] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.caches = TwoTierCache(self.cache_size, self.packed_cache_bytes, pack_window, unpack_window)

    def customer(self, customer_id: str) -> CustomerState:
        """The committed state, kept in the cache (the decision path: the customer will likely come again)."""
        value = self.caches.get(customer_id)
        if value is not None:
            return value
        value = self.read(customer_id)
        if value:
            self.caches.keep(customer_id, value)
        return value

    def peek(self, customer_id: str) -> CustomerState:
        """The committed state, without changing what the caches keep (serving reads)."""
        value = self.caches.peek(customer_id)
        return self.read(customer_id) if value is None else value

    def read(self, customer_id: str) -> CustomerState:
        """The committed state from the store (a miss of both caches)."""
        prefix = customer_prefix(customer_id)
        return restored_items(prefix, list(self.store.iter_prefix(prefix)))

    def customer_ids(self) -> list[str]:
        """Every customer in the store: a full scan, for tests and diagnostics only."""
        ids = {key.split(b"\x1f", 1)[0].decode() for key, _ in self.store.iter_from(b"") if key != POSITION_KEY}
        return sorted(ids)

    def apply(
        self,
        updates: Mapping[bytes, bytes | None],
        offset: int | None,
        changed: Mapping[str, CustomerState],
        removed: Sequence[str],
    ) -> None:
        """Write a committed batch's changelog records to the store in one transaction with ``offset`` (the
        changelog offset right after them), then the caches. Without an ``offset`` the stored one stays: a replay
        from an older offset rewrites the same keys in the same order, so it only costs time."""
        transaction = self.store.begin()
        for key, raw in updates.items():
            if raw is None:
                transaction.delete(key)
            else:
                transaction.put(key, raw)
        committed = self.store.committed_offset
        transaction.commit(offset if offset is not None else (committed or 0))
        caches = self.caches
        for customer_id, value in changed.items():
            if value:
                caches.keep(customer_id, value)
            else:
                caches.forget(customer_id)
        for customer_id in removed:
            caches.forget(customer_id)

    def load_position(self) -> None:
        """Stream time, next input offset and customer count from the store's position entry (after a restore)."""
        raw = self.store.get(POSITION_KEY)
        position = loads(raw) if raw is not None else {}
        self.stream_time_s = float(position.get("stream_time_s", float("-inf")))
        next_offset = position.get("next_offset")
        self.next_offset = None if next_offset is None else int(next_offset)
        count = position.get("customers")
        self.customer_count = len(self.customer_ids()) if count is None else int(count)  # older records: count


# A packed window: the entry count n, the bytes of the terminal text and the size of a terminal index (uint32 each),
# then the n times, the n amounts (doubles), the n seqs (int64), the n terminal indices, in this machine's byte order
# (it never leaves the process), then the window's terminal text and id text, UTF-8: the window's own columns,
# copied (no object made per entry).
_PACK_HEAD = struct.Struct("=III")


def pack_window(window: CustomerState) -> bytes | None:
    """A customer's window in ~45 bytes an entry (the packed cache); ``None`` for what is not a window.

    >>> w = CustomerWindow.of([(1.0, 9.5, "k1", "t0", 0), (2.0, 3.0, "k\\x00", "t\\x00", 4), (3.0, 1.0, "k1", "t2", 5)])
    >>> unpack_window(pack_window(w)) == w, pack_window([(1.0, 9.5, "k1", "t0", 0)])
    (True, None)
    """
    if not isinstance(window, CustomerWindow):
        return None
    terminals = window.terminal_text.encode()
    tix = window.tix
    head = _PACK_HEAD.pack(len(window.times), len(terminals), 1 if isinstance(tix, bytes) else tix.itemsize)
    return b"".join((head, window.times.tobytes(), window.amounts.tobytes(), window.seqs.tobytes(), tix, terminals,
                     window.id_text.encode()))  # fmt: skip


def unpack_window(raw: bytes) -> CustomerState:
    n, terminal_bytes, itemsize = _PACK_HEAD.unpack_from(raw)
    if not n:
        return EMPTY_WINDOW
    view = memoryview(raw)
    at = _PACK_HEAD.size
    times: array[float] = array("d")
    times.frombytes(view[at : at + 8 * n])
    amounts: array[float] = array("d")
    amounts.frombytes(view[at + 8 * n : at + 16 * n])
    seqs: array[int] = array("q")
    seqs.frombytes(view[at + 16 * n : at + 24 * n])
    at += 24 * n
    tix: Indices
    if itemsize == 1:
        tix = raw[at : at + n]
    else:
        tix = array("I")
        tix.frombytes(view[at : at + itemsize * n])
    at += itemsize * n
    terminals = str(raw[at : at + terminal_bytes], "utf-8")
    return CustomerWindow.made(times, amounts, seqs, terminals, tix, str(raw[at + terminal_bytes :], "utf-8"))


def position_value(stream_time_s: float, next_offset: int | None, customers: int) -> bytes:
    return dumps({"stream_time_s": stream_time_s, "next_offset": next_offset, "customers": customers})


def customer_prefix(customer_id: str) -> bytes:
    return f"{customer_id}{ENTRY_KEY_SEPARATOR}".encode()


def idle_slice(
    store: StorePartition, start: bytes, max_customers: int, horizon_s: float
) -> tuple[dict[str, list[bytes]], bytes]:
    """Read up to ``max_customers`` customers from key ``start`` on; those whose newest entry is older than
    ``horizon_s``, with their keys, and the key the next slice starts at (``b""``: this one reached the end).

    The sweep reads the store a slice at a time, so it costs the same however many customers it holds."""
    idle: dict[str, list[bytes]] = {}
    current: bytes | None = None
    keys: list[bytes] = []
    newest = float("-inf")
    seen = 0
    for key, value in store.iter_from(start):
        if key == POSITION_KEY:
            continue
        customer = key.split(b"\x1f", 1)[0]
        if customer != current:
            if current is not None:
                if newest < horizon_s:
                    idle[current.decode()] = keys
                seen += 1
                if seen >= max_customers:
                    return idle, key
            current, keys, newest = customer, [], float("-inf")
        keys.append(key)
        newest = max(newest, float(loads(value)[0]))
    if current is not None and newest < horizon_s:
        idle[current.decode()] = keys
    return idle, b""


def entry_key(customer_id: str, tx_id: str) -> bytes:
    return f"{customer_id}{ENTRY_KEY_SEPARATOR}{tx_id}".encode()


def entry_value(entry: Sequence[Any]) -> bytes:
    """``[t, amount, terminal_id, seq]`` of a customer state entry ``[t, amount, terminal_id, tx_id, seq]``."""
    return dumps([entry[0], entry[1], entry[2], entry[4]])


def restored_state(by_tx_id: dict[str, bytes]) -> CustomerState:
    """A customer's state from its changelog entries, in event-time order (ties in arrival order).

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


def restored_items(prefix: bytes, items: Sequence[tuple[bytes, bytes]]) -> CustomerState:
    """:func:`restored_state` from a customer's store items (``prefix`` + tx id -> entry value), by column at C
    level: one parse, one transpose, one sort of indices, no tuple per entry (a cache miss's cost).

    >>> state = [(5.0, 1.0, "k1", "t2", 1), (5.0, 2.0, "k2", "t1", 0), (1.0, 3.0, "k1", "t0", 2)]
    >>> items = sorted((entry_key("c", e[3]), entry_value(e)) for e in state)
    >>> restored_items(customer_prefix("c"), items) == restored_state({e[3]: entry_value(e) for e in state})
    True
    """
    if not items:
        return EMPTY_WINDOW
    keys, values = zip(*items, strict=True)
    n = len(prefix)
    ids: tuple[str, ...] = tuple([key[n:].decode() for key in keys])
    times, amounts, terminals, seqs = zip(*loads(b"[" + b",".join(values) + b"]"), strict=True)
    order = sorted(range(len(times)), key=list(zip(times, seqs, strict=True)).__getitem__)  # by (t, seq), stable
    if len(order) > 1 and order != list(range(len(order))):
        pick = operator.itemgetter(*order)
        times, amounts, terminals, ids, seqs = pick(times), pick(amounts), pick(terminals), pick(ids), pick(seqs)
    return CustomerWindow(array("d", times), array("d", amounts), terminals, ids, array("q", seqs))


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
    if isinstance(before, CustomerWindow) and isinstance(after, CustomerWindow):  # by the ids: no entry passed over
        kept = set(after.ids_between(0, min(k + 1, len(after))))
        ids = before.ids_between(0, k)
        if kept.isdisjoint(ids):
            return before.entries(0, k, ids)
        return [e for e in before.entries(0, k, ids) if e[3] not in kept]
    kept = {e[3] for e in itertools.islice(after, k + 1)}  # a kept entry of before[:k] sits at most one later
    return [e for e in itertools.islice(before, k) if e[3] not in kept]


def after_entry(state: CustomerState, tx_id: str) -> tuple[Any, ...] | None:
    """The entry just added for ``tx_id`` (searched from the newest end: in-order arrivals are last); None when
    the transaction was older than the state's horizon and not kept."""
    if isinstance(state, CustomerWindow):  # one search of the id text
        i = state.index(tx_id)
        return None if i < 0 else (state.times[i], state.amounts[i], state.terminal_at(i), tx_id, state.seqs[i])
    for entry in reversed(state):
        if entry[3] == tx_id:
            return tuple(entry)
    return None
