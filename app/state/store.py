"""Local state behind one small interface: a named store of partitions, each read directly and written through a
transaction whose writes and changelog offset land together in one atomic batch.

The shape is quix-streams' Store -> StorePartition -> PartitionTransaction. Keys and values are bytes (callers
serialise with :mod:`app.serialization`). A partition's *committed offset* is the next changelog offset its data
does not cover yet: a restart replays the changelog from there (:mod:`app.state.recovery` decides whether it may).
Two implementations: :mod:`app.state.memory_store` (dicts, for unit tests) and :mod:`app.state.rocksdb_store`.
"""

from __future__ import annotations

import enum
import struct
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

# Written into every partition when it is created and checked on every open: a partition without it, or with
# another one, was written by something else (or an older layout) and is rebuilt from the changelog.
FORMAT_MARKER = b"fraud-stream-state/1"

V = TypeVar("V")
_POSITION = struct.Struct(">qd")  # committed offset, wall time of the commit (seconds since the epoch)


class StoreError(Exception):
    """A partition that cannot be used as it is."""


class StoreCorrupt(StoreError):
    """Opening failed, or the format marker is missing or different: rebuild the partition from the changelog."""


class StoreLocked(StoreError):
    """Another process (or another handle in this one) holds the partition: not corruption, never wipe it."""


class OpenedAs(enum.Enum):
    CREATED = "created"  # there was no partition: it was created empty
    EXISTING = "existing"  # an existing partition opened and its format marker matched


def encode_position(offset: int, committed_at_s: float) -> bytes:
    """The metadata value a commit writes with its data.

    >>> decode_position(encode_position(42, 1.5))
    (42, 1.5)
    """
    return _POSITION.pack(offset, committed_at_s)


def decode_position(value: bytes) -> tuple[int, float]:
    offset, committed_at_s = _POSITION.unpack(value)
    return offset, committed_at_s


def keep_recent(cache: OrderedDict[str, V], key: str, value: V, size: int) -> None:
    """Put ``key`` in an LRU ``cache`` as its newest entry, dropping the oldest past ``size`` (the parsed-state caches
    of the customer and terminal stores).

    >>> cache = OrderedDict(a=1, b=2)
    >>> keep_recent(cache, "a", 3, size=2); keep_recent(cache, "c", 4, size=2); list(cache.items())
    [('a', 3), ('c', 4)]
    """
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)


def prefix_upper_bound(prefix: bytes) -> bytes | None:
    """The smallest key above every key that starts with ``prefix``; ``None`` when there is none.

    >>> prefix_upper_bound(b"ab"), prefix_upper_bound(b"a\\xff"), prefix_upper_bound(b"\\xff"), prefix_upper_bound(b"")
    (b'ac', b'b', None, None)
    """
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


class StorePartition(ABC):
    """One partition's committed state. Reads see committed data only; writes go through :meth:`begin`."""

    def __init__(self, partition: int, opened_as: OpenedAs) -> None:
        self.partition = partition
        self.opened_as = opened_as

    @abstractmethod
    def get(self, key: bytes) -> bytes | None: ...

    @abstractmethod
    def get_many(self, keys: Iterable[bytes]) -> dict[bytes, bytes]:
        """The values of those ``keys`` that are present (absent keys are left out)."""

    @abstractmethod
    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, value)`` whose key starts with ``prefix``, in key order."""

    @abstractmethod
    def iter_from(self, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, value)`` whose key is ``start`` or above, in key order (read a slice, then stop)."""

    @property
    @abstractmethod
    def committed_offset(self) -> int | None:
        """The next changelog offset the data does not cover; ``None``: nothing was ever committed."""

    @property
    @abstractmethod
    def committed_at_s(self) -> float | None:
        """Wall time of the last commit (a store idle longer than the changelog keeps tombstones is rebuilt)."""

    @abstractmethod
    def apply(self, updates: Mapping[bytes, bytes | None], offset: int, committed_at_s: float) -> None:
        """Write ``updates`` (``None``: delete) and the position in ONE atomic batch. Called by a transaction."""

    @abstractmethod
    def close(self) -> None: ...

    def begin(self) -> PartitionTransaction:
        return PartitionTransaction(self)


class TransactionFinished(StoreError):
    """A transaction used after its commit or abort."""


class PartitionTransaction:
    """Writes buffered in memory until :meth:`commit`; reads see the transaction's own writes first.

    Dropping a transaction without committing (a crash) leaves nothing of it in the partition.
    """

    def __init__(self, partition: StorePartition) -> None:
        self._partition = partition
        self._updates: dict[bytes, bytes | None] = {}  # None: deleted in this transaction
        self.finished = False

    def _check_open(self) -> None:
        if self.finished:
            raise TransactionFinished(f"the transaction of partition {self._partition.partition} is finished")

    def put(self, key: bytes, value: bytes) -> None:
        self._check_open()
        self._updates[key] = value

    def delete(self, key: bytes) -> None:
        self._check_open()
        self._updates[key] = None

    def get(self, key: bytes) -> bytes | None:
        self._check_open()
        if key in self._updates:
            return self._updates[key]
        return self._partition.get(key)

    def get_many(self, keys: Iterable[bytes]) -> dict[bytes, bytes]:
        self._check_open()
        keys = list(keys)
        found = self._partition.get_many([key for key in keys if key not in self._updates])
        for key in keys:
            if key in self._updates:
                value = self._updates[key]
                if value is not None:
                    found[key] = value
        return found

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Committed entries merged with this transaction's writes, in key order."""
        self._check_open()
        pending = sorted((k, v) for k, v in self._updates.items() if k.startswith(prefix))
        i = 0
        for key, value in self._partition.iter_prefix(prefix):
            while i < len(pending) and pending[i][0] < key:
                pending_key, pending_value = pending[i]
                if pending_value is not None:
                    yield pending_key, pending_value
                i += 1
            if i < len(pending) and pending[i][0] == key:
                pending_key, pending_value = pending[i]
                if pending_value is not None:
                    yield pending_key, pending_value
                i += 1
                continue
            yield key, value
        for pending_key, pending_value in pending[i:]:
            if pending_value is not None:
                yield pending_key, pending_value

    @property
    def pending_count(self) -> int:
        return len(self._updates)

    def commit(self, offset: int) -> None:
        """Write every buffered update and ``offset`` (the next changelog offset they cover) in one batch.

        The changelog must hold the records up to ``offset`` committed before this is called: a stored offset
        is a promise that replaying from it gives the right state.
        """
        self._check_open()
        committed = self._partition.committed_offset
        if offset < 0 or (committed is not None and offset < committed):
            raise ValueError(f"offset {offset} is below the committed offset {committed}")
        self._partition.apply(self._updates, offset, time.time())
        self._updates = {}
        self.finished = True

    def abort(self) -> None:
        """Discard every buffered update."""
        self._updates = {}
        self.finished = True


class Store(ABC):
    """A named store: one partition per changelog partition, each under ``directory / name / <partition>``."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.directory = Path(directory) / name
        self._partitions: dict[int, StorePartition] = {}

    @property
    def partitions(self) -> Mapping[int, StorePartition]:
        return self._partitions

    def partition_path(self, partition: int) -> Path:
        return self.directory / str(partition)

    def open_partition(self, partition: int) -> StorePartition:
        """Open (or create) a partition; raises :class:`StoreCorrupt` or :class:`StoreLocked`."""
        if partition in self._partitions:
            return self._partitions[partition]
        opened = self._open(partition)
        self._partitions[partition] = opened
        return opened

    def close_partition(self, partition: int) -> None:
        opened = self._partitions.pop(partition, None)
        if opened is not None:
            opened.close()

    def wipe_partition(self, partition: int) -> None:
        """Close the partition if open and delete its data: the next open creates it empty."""
        self.close_partition(partition)
        self._wipe(partition)

    def close(self) -> None:
        for partition in list(self._partitions):
            self.close_partition(partition)

    @abstractmethod
    def _open(self, partition: int) -> StorePartition: ...

    @abstractmethod
    def _wipe(self, partition: int) -> None: ...
