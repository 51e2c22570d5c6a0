"""The store in dicts, for unit tests: the same contract as RocksDB, kept in the store object (a partition closed
and opened again finds its data; a new store object starts empty)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sortedcontainers import SortedDict

from app.state.store import (
    FORMAT_MARKER,
    OpenedAs,
    Store,
    StoreCorrupt,
    StoreLocked,
    StorePartition,
    decode_position,
    encode_position,
    prefix_upper_bound,
)


@dataclass
class _Data:
    values: SortedDict = field(default_factory=SortedDict)  # in key order, like RocksDB: slices cost their size
    format_marker: bytes = FORMAT_MARKER
    position: bytes | None = None  # encode_position(offset, committed_at_s)


class MemoryPartition(StorePartition):
    def __init__(self, partition: int, opened_as: OpenedAs, data: _Data) -> None:
        super().__init__(partition, opened_as)
        self._data: _Data | None = data

    @property
    def _live(self) -> _Data:
        if self._data is None:
            raise StoreLocked(f"partition {self.partition} is closed")
        return self._data

    def get(self, key: bytes) -> bytes | None:
        return self._live.values.get(key)

    def get_many(self, keys: Iterable[bytes]) -> dict[bytes, bytes]:
        values = self._live.values
        return {key: values[key] for key in keys if key in values}

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        values = self._live.values
        upper = prefix_upper_bound(prefix)
        for key in list(values.irange(prefix, upper, inclusive=(True, False))):
            yield key, values[key]

    def iter_from(self, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        values = self._live.values
        for key in values.irange(start):
            if key in values:  # deleted since the slice started
                yield key, values[key]

    @property
    def committed_offset(self) -> int | None:
        position = self._live.position
        return None if position is None else decode_position(position)[0]

    @property
    def committed_at_s(self) -> float | None:
        position = self._live.position
        return None if position is None else decode_position(position)[1]

    def apply(self, updates: Mapping[bytes, bytes | None], offset: int, committed_at_s: float) -> None:
        data = self._live
        for key, value in updates.items():
            if value is None:
                data.values.pop(key, None)
            else:
                data.values[key] = value
        data.position = encode_position(offset, committed_at_s)

    def close(self) -> None:
        self._data = None


class MemoryStore(Store):
    def __init__(self, name: str, directory: Path | str = "memory") -> None:
        super().__init__(name, Path(directory))
        self._kept: dict[int, _Data] = {}

    def _open(self, partition: int) -> StorePartition:
        data = self._kept.get(partition)
        if data is None:
            data = self._kept[partition] = _Data()
            return MemoryPartition(partition, OpenedAs.CREATED, data)
        if data.format_marker != FORMAT_MARKER:
            raise StoreCorrupt(f"partition {partition}: format marker {data.format_marker!r}, not {FORMAT_MARKER!r}")
        return MemoryPartition(partition, OpenedAs.EXISTING, data)

    def _wipe(self, partition: int) -> None:
        self._kept.pop(partition, None)

    def set_format_marker(self, partition: int, marker: bytes) -> None:
        """Tests: make a kept partition look written by another format."""
        self._kept[partition].format_marker = marker
