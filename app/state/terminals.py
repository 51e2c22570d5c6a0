"""Every terminal's recent transactions and the known frauds, as one worker holds them: on a store, pure, no Kafka.

Every worker holds all terminals (a terminal's transactions come from customers on every partition), fed off
the decision path by :mod:`app.state.terminal_feed` from the compact terminal log the scorers write and from the
fraud labels. Scorers read it; their own transactions are added at once after their batch commits, so what a
partition scored is never missed, and what other partitions scored arrives with the feed's lag
(``fraud_terminal_feed_lag_seconds``): the 1-hour count may miss another partition's last moments, the
delayed windows (which end ``delay_days`` back) miss nothing while the lag stays under the delay.

The terminals live in a :class:`~app.state.store.StorePartition` (RocksDB in production), one value per terminal,
with the feed's log positions written in the same batch (:meth:`TerminalAggregates.flush`); a small LRU cache of
parsed terminals (``STATE_TERMINAL_CACHE``), behind it one of terminals as stored, bounded in bytes
(``STATE_TERMINAL_PACKED_MB``, off by default), and the changes not flushed yet are all that stays in memory, besides
the fraud marks (one float per fraud of the last ``TERMINAL_TTL_S``: frauds are rare). A terminal is held as a
:class:`~app.features.engine.TerminalWindow` (by column) and stored as its raw columns (:func:`encode_state`).
"""

from __future__ import annotations

import bisect
import itertools
import struct
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from app.features.engine import EMPTY_TERMINAL, TerminalWindow, newest_event_time_s, terminal_with_entry, terminal_x
from app.serialization import dumps, loads
from app.state.store import StorePartition
from app.state.two_tier import TwoTierCache

TERMINAL_PREFIX = b"k"  # b"k" + terminal_id -> the terminal's entries (encode_state)
FRAUD_PREFIX = b"f"  # b"f" + tx_id -> known_s
META_KEY = b"\x00meta"  # the feed's positions, stream time and terminal count, written with the data they cover
ADDED_HERE_MAX = 200_000  # scored transactions waiting for the feed to read them back (seconds of traffic)
ADDED_HERE_FORGET = ADDED_HERE_MAX // 10  # forgotten at once when the feed lags past ADDED_HERE_MAX

# A terminal's entries as held in memory (the cache, the changes not flushed): the engine's window by column, which the
# garbage collector walks in a few steps, never entry by entry (see the note above app.features.engine.TerminalState).
Terminal = TerminalWindow

# The stored value: a header (format byte 1, the entry count n as a uint32, the window's next_seq as an int64), the n
# times as doubles, the n seqs as int64, all little-endian, then the n tx ids as a JSON list (ids may be any string).
# Values of the earlier format, a JSON list of [t, tx_id, seq] entries, begin with b"[" and are still read.
_HEAD = struct.Struct("<BIq")
_TIME = struct.Struct("<d")
_BINARY = 1
_SWAP = sys.byteorder != "little"  # the columns are stored little-endian whatever the machine


def encode_state(state: TerminalWindow | Sequence[Sequence[Any]]) -> bytes:
    """A terminal's stored value: its columns raw, the ids as JSON (see above); one short copy per column.

    >>> raw = encode_state([(1.5, "t1", 0)])  # format 1, 1 entry, next seq 1; the time, the seq; the ids
    >>> raw[:13].hex(" "), raw[13:21].hex(" "), raw[21:29].hex(" "), raw[29:]
    ('01 01 00 00 00 01 00 00 00 00 00 00 00', '00 00 00 00 00 00 f8 3f', '00 00 00 00 00 00 00 00', b'["t1"]')
    """
    window = TerminalWindow.of(state)
    times, seqs = window.times, window.seqs
    if _SWAP:
        times, seqs = array("d", times), array("q", seqs)
        times.byteswap()
        seqs.byteswap()
    head = _HEAD.pack(_BINARY, len(window.ids), window.next_seq)
    return b"".join((head, times.tobytes(), seqs.tobytes(), dumps(window.ids)))


def decode_state(raw: bytes) -> Terminal:
    """A stored terminal, as the engine's window (values of the earlier JSON format too).

    Why both formats instead of a new format marker (app.state.store.FORMAT_MARKER, which the customer store
    shares): values of both formats may sit side by side in a terminal store at no cost (a
    terminal is rewritten in the new format at its next change), and a new marker would rebuild every terminal
    store from the checkpoint and the log at the upgrade. A version before this one cannot read the new values:
    going back needs the terminal store's directory removed (it is rebuilt from the Kafka checkpoint, whose format
    is unchanged).

    >>> decode_state(encode_state([(1.5, "t1", 0), (2.0, "t2", 1)]))
    TerminalWindow([(1.5, 't1', 0), (2.0, 't2', 1)])
    >>> decode_state(b'[[1.5,"t1",0]]')  # the earlier format
    TerminalWindow([(1.5, 't1', 0)])
    """
    if raw[:1] == b"[":
        return TerminalWindow.of(loads(raw))
    version, n, next_seq = _HEAD.unpack_from(raw)
    if version != _BINARY:
        raise ValueError(f"terminal value of format {version}, this worker reads {_BINARY}")
    view = memoryview(raw)
    times_at = _HEAD.size
    seqs_at = times_at + 8 * n
    ids_at = seqs_at + 8 * n
    times: array[float] = array("d")
    times.frombytes(view[times_at:seqs_at])
    seqs: array[int] = array("q")
    seqs.frombytes(view[seqs_at:ids_at])
    if _SWAP:
        times.byteswap()
        seqs.byteswap()
    ids = tuple(loads(raw[ids_at:]))
    if len(ids) != n:
        raise ValueError(f"terminal value of {n} entries holds {len(ids)} ids")
    return TerminalWindow(times, ids, seqs, next_seq)


def with_pending(state: TerminalWindow, extra: Sequence[tuple[float, str]]) -> TerminalWindow:
    """A merged copy of ``state`` with the batch's ``extra`` ``(t, tx_id)`` entries (no seq: -1), each after the
    entries of equal time, by column: the window's own entries are not made into tuples (that cost ~4 decodes).

    >>> w = TerminalWindow.of([(1.0, "a", 0), (2.0, "b", 1)])
    >>> extra = [(2.0, "p"), (0.5, "q"), (2.0, "r")]
    >>> with_pending(w, extra) == TerminalWindow.of(sorted([*w, *extra], key=lambda e: e[0]))
    True
    """
    times, seqs, ids = array("d", state.times), array("q", state.seqs), list(state.ids)
    for t, tx_id in sorted(extra, key=lambda e: e[0]):  # stable: equal times keep the batch's order
        at = bisect.bisect_right(times, t)
        times.insert(at, t)
        seqs.insert(at, -1)
        ids.insert(at, tx_id)
    return TerminalWindow(times, tuple(ids), seqs)


def newest_stored_s(raw: bytes) -> float:
    """The newest event time of a stored terminal, read without decoding it (the sweep reads every terminal).

    >>> newest_stored_s(encode_state([(1.5, "t1", 0), (2.0, "t2", 1)])), newest_stored_s(b'[[1.5,"t1",0]]')
    (2.0, 1.5)
    """
    if raw[:1] == b"[":
        return float(loads(raw)[-1][0])
    _, n, _ = _HEAD.unpack_from(raw)
    return _TIME.unpack_from(raw, _HEAD.size + 8 * (n - 1))[0] if n else float("-inf")


class TerminalAggregates:
    """Per terminal, its entries ``(t, tx_id, seq)`` over the longest delayed window (a
    :class:`~app.features.engine.TerminalWindow`); per fraud ``tx_id``, when known.

    >>> from app.state.memory_store import MemoryStore
    >>> aggregates = TerminalAggregates(7.0, 86400.0, 38 * 86400.0, MemoryStore("terminals").open_partition(0))
    >>> aggregates.add("k1", 0.0, "t1")
    True
    >>> aggregates.add_fraud("t1", known_s=86400.0)
    >>> aggregates.features("k1", 7.5 * 86400, "t2")["terminal_risk_1day_delay"]
    1.0
    """

    def __init__(
        self,
        delay_days: float,
        lateness_s: float,
        ttl_s: float,
        store: StorePartition | None = None,
        cache_size: int = 5000,
        packed_cache_bytes: int = 0,
    ) -> None:
        self.delay_days = delay_days
        self.lateness_s = lateness_s
        self.ttl_s = ttl_s
        self.store = store  # set by the feed when it opens the store (reads before that see no terminal)
        # ``cache_size`` parsed terminals and, behind them, up to ``packed_cache_bytes``: the terminals they dropped, as
        # their stored values (encode_state), so a parsed miss costs a decode instead of a store read. A terminal is in
        # one at most; both hold its newest state (flushed or not: the changes not flushed are also in ``dirty``, read
        # first).
        self.caches: TwoTierCache[Terminal] = TwoTierCache(cache_size, packed_cache_bytes, encode_state, decode_state)
        self.dirty: dict[str, Terminal] = {}  # changed since the last flush (an empty window: removed)
        self.dirty_frauds: dict[str, float | None] = {}
        self.frauds_known_s: dict[str, float] = {}
        self.stream_time_s = float("-inf")
        self.terminal_count = 0
        self.sweep_from = b""  # the key the next sweep slice starts at
        # tx ids this worker's scorers added (add_scored) that the feed has not read back from the log yet: the feed
        # skips them instead of adding each transaction a second time (a store read and a parse on a cache miss)
        self.added_here: dict[str, None] = {}

    # ---- reads -------------------------------------------------------------------------------------------

    def state(self, terminal_id: str) -> Terminal:
        """The terminal's entries (the unflushed change, else the cache, else the store, then cached)."""
        state = self.dirty.get(terminal_id)
        if state is not None:
            return state
        state = self.caches.get(terminal_id)
        if state is not None:
            return state
        raw = self.store.get(TERMINAL_PREFIX + terminal_id.encode()) if self.store is not None else None
        state = decode_state(raw) if raw is not None else EMPTY_TERMINAL
        if state:
            self.caches.keep(terminal_id, state)
        return state

    def peek(self, terminal_id: str) -> Terminal:
        """:meth:`state` without changing what the cache keeps (serving reads)."""
        state = self.dirty.get(terminal_id)
        if state is None:
            state = self.caches.peek(terminal_id)
        if state is None:
            raw = self.store.get(TERMINAL_PREFIX + terminal_id.encode()) if self.store is not None else None
            state = decode_state(raw) if raw is not None else EMPTY_TERMINAL
        return state

    def prefetch(self, terminal_ids: Iterable[str]) -> None:
        """Read the terminals a batch will touch in one store call (the feed's catch-up: mostly cache misses)."""
        missing = {k for k in terminal_ids if k not in self.dirty and k not in self.caches}
        if not missing or self.store is None:
            return
        found = self.store.get_many(TERMINAL_PREFIX + k.encode() for k in missing)
        n = len(TERMINAL_PREFIX)
        for key, raw in found.items():
            self.caches.keep(key[n:].decode(), decode_state(raw))

    def features(
        self, terminal_id: str, t: float, tx_id: str, pending: Iterable[tuple[float, str]] = ()
    ) -> dict[str, float]:
        """The terminal half of ``x`` for a transaction, seeing ``pending`` (same batch, not committed) too."""
        state = self.state(terminal_id)
        extra = [(te, tid) for te, tid in pending if tid != tx_id]
        if extra:  # a terminal twice in one batch (8 % of the transactions at 1x, 0.6 % at 10x)
            state = with_pending(state, extra)
        return terminal_x(state, t, self.frauds_known_s, self.delay_days)

    def all_states(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every terminal with entries, flushed or not, as lists: a full scan, for tests and diagnostics only."""
        n = len(TERMINAL_PREFIX)
        stored = self.store.iter_prefix(TERMINAL_PREFIX) if self.store is not None else iter(())
        states = {key[n:].decode(): list(decode_state(raw)) for key, raw in stored}
        for terminal_id, state in self.dirty.items():
            if state:
                states[terminal_id] = list(state)
            else:
                states.pop(terminal_id, None)
        return states

    # ---- writes (in memory until :meth:`flush`) ------------------------------------------------------------

    def add(self, terminal_id: str, t: float, tx_id: str) -> bool:
        """Record a scored transaction (idempotent by ``tx_id``); False when it was there already."""
        before = self.state(terminal_id)
        if t > self.stream_time_s:
            self.stream_time_s = t
        state = terminal_with_entry(before, t, tx_id, self.delay_days, self.lateness_s)
        if state is before:  # a repeat
            return False
        if not before and state:
            self.terminal_count += 1
        self.dirty[terminal_id] = state
        self.caches.keep(terminal_id, state)  # never empty: pruning keeps the newest entry
        return True

    def add_scored(self, terminal_id: str, t: float, tx_id: str) -> None:
        """A transaction this worker's scorer decided (its batch committed): added now, and marked so that the
        feed, reading it back from the terminal log, does not add it again."""
        if self.add(terminal_id, t, tx_id):
            added_here = self.added_here
            added_here[tx_id] = None
            if len(added_here) > ADDED_HERE_MAX:  # the feed stopped reading: forget the oldest (it adds them then)
                # a tenth at once: ``next(iter(d))`` after deleting d's first keys walks past every deleted slot
                # (until the dict is resized), so forgetting one at a time cost ~20-100 µs a transaction (issue 16)
                for old in list(itertools.islice(added_here, ADDED_HERE_FORGET)):
                    del added_here[old]

    def read_back(self, tx_id: str) -> bool:
        """True (and forgotten) when ``tx_id`` came from :meth:`add_scored`: the feed has nothing to add."""
        if tx_id in self.added_here:
            del self.added_here[tx_id]
            return True
        return False

    def add_fraud(self, tx_id: str, known_s: float) -> None:
        """A fraud label: counts for its transaction from ``known_s`` on (the earliest, if sent twice)."""
        known = self.frauds_known_s.get(tx_id)
        if known is None or known_s < known:
            self.frauds_known_s[tx_id] = known_s
            self.dirty_frauds[tx_id] = known_s

    @property
    def pending_changes(self) -> int:
        return len(self.dirty) + len(self.dirty_frauds)

    def write_some(self, limit: int) -> int:
        """Write up to ``limit`` changed terminals WITHOUT the positions; returns how many are left to write.

        The feed writes a large flush a slice at a time, the event loop running between slices, and the positions
        with the last slice (:meth:`flush`). Data ahead of the stored positions is safe: a restart reads the logs
        again from those and adds the same entries (idempotent by ``tx_id``); only ``terminal_count``, a gauge, may
        then miss the terminals such a slice created."""
        store = self._opened()
        transaction = store.begin()
        taken = list(itertools.islice(self.dirty.items(), limit))
        for terminal_id, state in taken:
            key = TERMINAL_PREFIX + terminal_id.encode()
            if state:
                transaction.put(key, encode_state(state))
            else:
                transaction.delete(key)
            del self.dirty[terminal_id]
        transaction.commit(store.committed_offset or 0)
        return len(self.dirty)

    def flush(self, positions: dict[str, int]) -> None:
        """Write every change since the last flush and ``positions`` (the logs' offsets they cover) in ONE batch.

        A crash before it loses the changes and keeps the older positions: the feed reads the logs again from
        those and adds the same entries (idempotent by ``tx_id``), so the state after a restart is the same."""
        store = self._opened()
        transaction = store.begin()
        for terminal_id, state in self.dirty.items():
            key = TERMINAL_PREFIX + terminal_id.encode()
            if state:
                transaction.put(key, encode_state(state))
            else:
                transaction.delete(key)
        for tx_id, known in self.dirty_frauds.items():
            key = FRAUD_PREFIX + tx_id.encode()
            if known is None:
                transaction.delete(key)
            else:
                transaction.put(key, dumps(known))
        meta = {"positions": positions, "stream_time_s": self.stream_time_s, "terminals": self.terminal_count}
        transaction.put(META_KEY, dumps(meta))
        transaction.commit((store.committed_offset or 0) + 1)  # a flush counter: the positions are in meta
        self.dirty = {}
        self.dirty_frauds = {}

    def load(self) -> dict[str, int] | None:
        """Stream time, terminal count and the fraud marks from the store; the positions the data covers (``None``
        when the store never had a flush: nothing to resume from)."""
        store = self._opened()
        raw = store.get(META_KEY)
        self.caches.clear()
        self.dirty = {}
        self.dirty_frauds = {}
        self.added_here = {}
        n = len(FRAUD_PREFIX)
        self.frauds_known_s = {key[n:].decode(): float(loads(v)) for key, v in store.iter_prefix(FRAUD_PREFIX)}
        if raw is None:
            self.stream_time_s = float("-inf")
            self.terminal_count = 0
            return None
        meta = loads(raw)
        self.stream_time_s = float(meta["stream_time_s"]) if meta["stream_time_s"] is not None else float("-inf")
        self.terminal_count = int(meta["terminals"])
        return {str(k): int(v) for k, v in meta["positions"].items()}

    def sweep(self, max_terminals: int = 10_000) -> int:
        """Remove terminals idle past the TTL (a slice of ``max_terminals`` of the store from where the last
        slice stopped, so a sweep costs the same however many terminals there are) and fraud marks older than it,
        in stream time; returns the terminals removed. Changes are written by the next :meth:`flush`."""
        horizon = self.stream_time_s - self.ttl_s
        removed = 0
        seen = 0
        next_from = b""
        n = len(TERMINAL_PREFIX)
        for key, raw in self._opened().iter_from(self.sweep_from or TERMINAL_PREFIX):
            if not key.startswith(TERMINAL_PREFIX):
                break
            if seen >= max_terminals:
                next_from = key
                break
            seen += 1
            terminal_id = key[n:].decode()
            state = self.dirty.get(terminal_id)
            newest = newest_event_time_s(state) if state is not None else newest_stored_s(raw)
            if (state is None or state) and newest < horizon:
                self.dirty[terminal_id] = EMPTY_TERMINAL
                self.caches.forget(terminal_id)
                self.terminal_count -= 1
                removed += 1
        self.sweep_from = next_from
        old = [tx_id for tx_id, known in self.frauds_known_s.items() if known < horizon - self.lateness_s]
        for tx_id in old:
            del self.frauds_known_s[tx_id]
            self.dirty_frauds[tx_id] = None
        return removed

    # ---- checkpoints (see :mod:`app.state.terminal_checkpoint`) ---------------------------------------------

    def committed_items(self) -> Iterator[tuple[str, Terminal]]:
        """Every flushed terminal (call right after :meth:`flush`, and do not flush while reading: the feed's
        own loop does both, so a checkpoint is the state at one flush)."""
        n = len(TERMINAL_PREFIX)
        for key, raw in self._opened().iter_prefix(TERMINAL_PREFIX):
            yield key[n:].decode(), decode_state(raw)

    def replace(
        self,
        chunks: Iterable[dict[str, Any]],
        frauds_known_s: dict[str, float],
        stream_time_s: float,
        positions: dict[str, int],
    ) -> None:
        """Take over a checkpoint: the store must be empty (a new disk, or wiped). Terminals are written a chunk at
        a time, the positions last (a crash before them leaves a store without positions: wiped and loaded again)."""
        store = self._opened()
        count = 0
        for chunk in chunks:
            transaction = store.begin()
            for terminal_id, state in chunk.items():
                transaction.put(TERMINAL_PREFIX + terminal_id.encode(), encode_state(state))
                count += 1
            transaction.commit((store.committed_offset or 0) + 1)
        self.caches.clear()
        self.dirty = {}
        self.added_here = {}
        self.dirty_frauds = dict(frauds_known_s)
        self.frauds_known_s = dict(frauds_known_s)
        self.stream_time_s = stream_time_s
        self.terminal_count = count
        self.flush(positions)

    def _opened(self) -> StorePartition:
        if self.store is None:
            raise RuntimeError("the terminal store is not open (the feed opens it when it starts)")
        return self.store
