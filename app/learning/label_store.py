"""The labels the trainer's tails wait for, keyed by ``tx_id`` on a store partition (:mod:`app.state.store`): memory
follows the store's settings, not the number of labels waiting.

An entry is ``(kind, known_s)``: a label waiting for the tail (:data:`LEGIT`, :data:`FRAUD`), or a marker that the
transaction's pair was learned already (:data:`LEARNED_LEGIT`, :data:`LEARNED_FRAUD`), so the tails skip it and a
label sent again is not learned twice. Changes are kept in memory until the trainer's Kafka transaction commits them
to the changelog (:meth:`LabelStore.changes`); then :meth:`LabelStore.commit` writes them to the store with the
changelog offset, as the customer windows do (:mod:`app.state.customers`). Reads see the uncommitted changes first.
Each line of the champion keeps its entries under its own key prefix (:attr:`LabelStore.line`): a new line (another
model, another feature set) never takes an old line's markers for its own, and the expiry sweep removes them.

The store also holds the rows of the gbdt lines' label windows (:class:`app.learning.boosting.LabelWindow`), one
entry per ring slot under :data:`WINDOW_PREFIX` (``0xff`` starts no UTF-8 ``tx_id``, and sorts after every label, so
the expiry sweep stops before them): they travel on the same changelog, in the same transactions, and a standby's
catch-up of the store brings them too. Pure: no Kafka.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from app.state.memory_store import MemoryStore
from app.state.store import StorePartition

LEGIT, FRAUD, LEARNED_LEGIT, LEARNED_FRAUD = 0, 1, 2, 3
LINE_SEPARATOR = "\x1f"  # keys are ``line \x1f tx_id`` (just ``tx_id`` for the line without a name)
WAITING = (LEGIT, FRAUD)  # labels the tails still have to learn
_VALUE = struct.Struct(">Bd")  # kind, when the label became known (seconds since the epoch)
# ``WINDOW_PREFIX + window id + 0x1f + class byte + 4-byte slot``: a gbdt window's ring slot (see the module docstring)
WINDOW_PREFIX = b"\xffwindow\x1f"
_SLOT = struct.Struct(">BI")


def window_key(window_id: str, y: bool, slot: int) -> bytes:
    """The key of one ring slot of a gbdt window.

    >>> parse_window_key(window_key("ab12", True, 70_000))
    ('ab12', True, 70000)
    """
    return WINDOW_PREFIX + window_id.encode() + b"\x1f" + _SLOT.pack(int(y), slot)


def parse_window_key(key: bytes) -> tuple[str, bool, int]:
    """The window id, class and slot of a :func:`window_key`."""
    y, slot = _SLOT.unpack(key[-_SLOT.size :])
    return key[len(WINDOW_PREFIX) : -_SLOT.size - 1].decode(), bool(y), int(slot)


def encode(kind: int, known_s: float) -> bytes:
    """The store's and the changelog's value.

    >>> decode(encode(FRAUD, 12.5))
    (1, 12.5)
    """
    return _VALUE.pack(kind, known_s)


def decode(raw: bytes) -> tuple[int, float]:
    kind, known_s = _VALUE.unpack(raw)
    return int(kind), float(known_s)


class LabelStore:
    """``tx_id -> (kind, known_s)`` over one store partition, with the changes since the last commit in memory."""

    def __init__(self, partition: StorePartition, line: str = "") -> None:
        self.partition = partition
        self.line = line  # the champion line whose entries these are (Training.labels_line)
        self._pending: dict[bytes, bytes | None] = {}  # None: deleted since the last commit

    def _key(self, tx_id: str) -> bytes:
        return f"{self.line}{LINE_SEPARATOR}{tx_id}".encode() if self.line else tx_id.encode()

    def tx_id_of(self, key: bytes) -> str | None:
        """The transaction a key of this line stands for; None for another line's key.

        >>> LabelStore.in_memory().tx_id_of(b"tx-1"), LabelStore.in_memory().tx_id_of(b"old\x1ftx-1")
        ('tx-1', None)
        """
        text = key.decode()
        line, separator, tx_id = text.rpartition(LINE_SEPARATOR)
        if line == self.line and (separator or not self.line):
            return tx_id
        return None

    @classmethod
    def in_memory(cls) -> LabelStore:
        """On a :class:`~app.state.memory_store.MemoryStore` of its own (the offline replay, tests)."""
        return cls(MemoryStore("trainer-labels").open_partition(0))

    def get(self, tx_id: str) -> tuple[int, float] | None:
        key = self._key(tx_id)
        raw = self._pending[key] if key in self._pending else self.partition.get(key)
        return None if raw is None else decode(raw)

    def put(self, tx_id: str, kind: int, known_s: float) -> None:
        self._pending[self._key(tx_id)] = encode(kind, known_s)

    def delete(self, tx_id: str) -> None:
        self._pending[self._key(tx_id)] = None

    def delete_key(self, key: bytes) -> None:
        """Delete an entry by its key (another line's, found by :meth:`scan`)."""
        self._pending[key] = None

    def changes(self) -> dict[bytes, bytes | None]:
        """Every key changed since the last commit, with its new value (None: deleted): the changelog records."""
        return self._pending

    def commit(self, offset: int | None) -> None:
        """Write the changes to the store in one batch with ``offset``, the next changelog offset they do not cover
        (None: no changelog record was written, the stored offset stays): call once the changelog holds them."""
        transaction = self.partition.begin()
        for key, raw in self._pending.items():
            if raw is None:
                transaction.delete(key)
            else:
                transaction.put(key, raw)
        committed = self.partition.committed_offset
        transaction.commit(offset if offset is not None else (committed or 0))
        self._pending = {}

    # ---- the gbdt windows' rows ----------------------------------------------------------------------------------

    def put_window_rows(self, window_id: str, records: Iterable[tuple[bool, int, bytes]]) -> int:
        """Stage ``(class, slot, record)`` of window ``window_id`` (:meth:`LabelWindow.changed`); returns how many."""
        n = 0
        for y, slot, record in records:
            self._pending[window_key(window_id, y, slot)] = record
            n += 1
        return n

    def window_rows(self, window_id: str) -> Iterator[tuple[bool, int, bytes]]:
        """``(class, slot, record)`` of every slot of window ``window_id`` held (committed, as changed since)."""
        prefix = WINDOW_PREFIX + window_id.encode() + b"\x1f"
        for key, raw in self._merged(prefix):
            _, y, slot = parse_window_key(key)
            yield y, slot, raw

    def delete_windows_except(self, keep: Iterable[str]) -> int:
        """Delete the rows of every window but those named in ``keep`` (a line replaced, a challenger changed);
        returns how many entries were deleted."""
        kept = set(keep)
        keys = {key for key, _ in self.partition.iter_prefix(WINDOW_PREFIX)}  # keys only: no copy of the rows
        keys.update(key for key in self._pending if key.startswith(WINDOW_PREFIX))
        gone = [key for key in keys if self._pending.get(key, b"") is not None and parse_window_key(key)[0] not in kept]
        for key in gone:
            self._pending[key] = None
        return len(gone)

    def _merged(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Committed entries under ``prefix`` with the uncommitted changes over them, in key order."""
        pending = {k: v for k, v in self._pending.items() if k.startswith(prefix)}
        merged = {key: raw for key, raw in self.partition.iter_prefix(prefix) if key not in pending}
        merged.update((k, v) for k, v in pending.items() if v is not None)
        for key in sorted(merged):
            yield key, merged[key]

    def scan(self, start: bytes, limit: int) -> tuple[list[tuple[bytes, int, float]], bytes]:
        """Up to ``limit`` committed entries ``(key, kind, known_s)`` from key ``start`` on, of every line (as changed
        since, deleted ones left out), and the key the next slice starts at (``b""``: this one reached the end): the
        expiry sweep, a slice at a time."""
        found: list[tuple[bytes, int, float]] = []
        for key, raw in self._committed_from(start):
            if key.startswith(b"\xff"):  # the windows' rows, after every label: the labels' end
                return found, b""
            if len(found) >= limit:
                return found, key
            value = self._pending.get(key, raw) if key in self._pending else raw
            if value is not None:
                kind, known_s = decode(value)
                found.append((key, kind, known_s))
        return found, b""

    def _committed_from(self, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self.partition.iter_from(start)
