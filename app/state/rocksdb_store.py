"""The store on RocksDB (rocksdict): one database per partition, memory bounded by settings, not by the data.

Memory: every store and partition built from one :class:`RocksDBConfig` shares one block cache
(``STATE_BLOCK_CACHE_MB``; index and filter blocks are charged to it too, or they would grow with the data) and one
write-buffer budget (``STATE_WRITE_BUFFER_MB`` x ``STATE_WRITE_BUFFER_COUNT``, a RocksDB WriteBufferManager that
flushes memtables when the worker's total passes it, however many partitions it holds).

Durability: a commit is one WriteBatch holding the data and the changelog offset, in two column families
(``default`` and ``meta``). The write-ahead log is on by default and never synced per commit: a SIGKILL loses no
commit (the log's tail is in the page cache); a machine crash may lose the unsynced tail, and RocksDB's
point-in-time recovery cuts it at a batch boundary, so the stored offset is lower and the replay longer, never
the state wrong. With ``STATE_WAL=false`` a crash loses every commit since the last memtable flush, again whole
batches only (flushes are atomic across both column families): cheaper writes, longer replays.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from rocksdict import (
    AccessType,
    BlockBasedOptions,
    Cache,
    ColumnFamily,
    DBCompressionType,
    DBRecoveryMode,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteBufferManager,
    WriteOptions,
)

from app.settings import Settings, state_directory
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

logger = logging.getLogger(__name__)

META_CF = "meta"  # the format marker and the committed position, apart from the callers' keys
FORMAT_KEY = b"format"
POSITION_KEY = b"position"
MB = 1 << 20


@dataclass
class RocksDBConfig:
    """Options shared by every store of a worker: the cache and the write-buffer budget are built once here."""

    block_cache_mb: int = 8
    write_buffer_mb: int = 8
    write_buffer_count: int = 2
    wal: bool = True
    cache: Cache = field(init=False, repr=False)
    write_buffer_manager: WriteBufferManager = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.block_cache_mb < 1 or self.write_buffer_mb < 1 or self.write_buffer_count < 2:
            raise ValueError("STATE_BLOCK_CACHE_MB and STATE_WRITE_BUFFER_MB must be >= 1, "
                             "STATE_WRITE_BUFFER_COUNT >= 2 (one memtable fills while another flushes)")  # fmt: skip
        self.cache = Cache(self.block_cache_mb * MB)
        self.write_buffer_manager = WriteBufferManager(self.write_buffer_budget_mb * MB, False)

    @property
    def write_buffer_budget_mb(self) -> int:
        return self.write_buffer_mb * self.write_buffer_count

    @classmethod
    def from_settings(cls, settings: Settings) -> RocksDBConfig:
        return cls(
            block_cache_mb=settings.state_block_cache_mb,
            write_buffer_mb=settings.state_write_buffer_mb,
            write_buffer_count=settings.state_write_buffer_count,
            wal=settings.state_wal,
        )

    def options(self) -> Options:
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.create_missing_column_families(True)
        opts.set_atomic_flush(True)  # without the WAL, a flush must persist data and offset together
        opts.set_wal_recovery_mode(DBRecoveryMode.point_in_time())
        opts.set_write_buffer_size(self.write_buffer_mb * MB)
        opts.set_max_write_buffer_number(self.write_buffer_count)
        opts.set_write_buffer_manager(self.write_buffer_manager)
        opts.set_max_total_wal_size(4 * self.write_buffer_budget_mb * MB)
        opts.set_compression_type(DBCompressionType.lz4())
        opts.set_max_background_jobs(2)
        opts.set_keep_log_file_num(2)
        opts.set_max_log_file_size(MB)
        table = BlockBasedOptions()
        table.set_block_cache(self.cache)
        table.set_bloom_filter(10, False)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        opts.set_block_based_table_factory(table)
        return opts


class RocksDBPartition(StorePartition):
    def __init__(self, partition: int, opened_as: OpenedAs, db: Rdict) -> None:
        super().__init__(partition, opened_as)
        self._db: Rdict | None = db
        self._meta_handle: ColumnFamily | None = db.get_column_family_handle(META_CF)
        position = db.get_column_family(META_CF).get(POSITION_KEY)
        self._position = None if position is None else decode_position(cast(bytes, position))

    @property
    def db(self) -> Rdict:
        if self._db is None:
            raise StoreLocked(f"partition {self.partition} is closed")
        return self._db

    def get(self, key: bytes) -> bytes | None:
        return cast(bytes | None, self.db.get(key))

    def get_many(self, keys: Iterable[bytes]) -> dict[bytes, bytes]:
        keys = list(keys)
        if not keys:
            return {}
        values = cast(list[bytes | None], self.db.get(cast(list[str | int | float | bytes | bool], keys)))
        return {key: value for key, value in zip(keys, values, strict=True) if value is not None}

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        read_opt = ReadOptions()
        upper = prefix_upper_bound(prefix)
        if upper is not None:
            # Bounds keep RocksDB from reading past the prefix. A lower bound alone yields nothing in rocksdict
            # 0.3.29, so with no upper bound (a prefix of 0xff bytes only) neither is set: every key from there
            # on starts with the prefix.
            read_opt.set_iterate_lower_bound(prefix)
            read_opt.set_iterate_upper_bound(upper)
        # The generator keeps ``read_opt`` alive while the iterator runs (its bounds are read from it); ``yield
        # from`` hands rocksdict's (bytes, bytes) tuples on without a cast per item.
        yield from self.db.items(from_key=prefix, read_opt=read_opt)  # type: ignore[misc]

    def iter_from(self, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self.db.items(from_key=start):
            yield cast(bytes, key), cast(bytes, value)

    @property
    def committed_offset(self) -> int | None:
        return None if self._position is None else self._position[0]

    @property
    def committed_at_s(self) -> float | None:
        return None if self._position is None else self._position[1]

    def apply(self, updates: Mapping[bytes, bytes | None], offset: int, committed_at_s: float) -> None:
        db = self.db
        batch = WriteBatch(raw_mode=True)
        for key, value in updates.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(POSITION_KEY, encode_position(offset, committed_at_s), self._meta_handle)
        db.write(batch)
        self._position = (offset, committed_at_s)

    def close(self) -> None:
        if self._db is None:
            return
        # Every handle on the database goes before close(), or its lock stays held.
        db, self._db, self._meta_handle = self._db, None, None
        db.close()


class RocksDBStore(Store):
    def __init__(self, name: str, directory: Path | str, config: RocksDBConfig) -> None:
        super().__init__(name, Path(directory))
        self.config = config
        self._options = config.options()
        self._write_options = WriteOptions()
        # A property in rocksdict 0.3.29; its stub says a method.
        self._write_options.disable_wal = not config.wal  # type: ignore[method-assign,assignment]

    @classmethod
    def from_settings(cls, name: str, settings: Settings, config: RocksDBConfig) -> RocksDBStore:
        return cls(name, state_directory(settings), config)

    def _open(self, partition: int) -> StorePartition:
        path = self.partition_path(partition)
        existed = (path / "CURRENT").exists()
        if not existed and path.exists():
            shutil.rmtree(path)  # a creation cut short: nothing was ever committed there
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = Rdict(str(path), self._options, {META_CF: self._options}, AccessType.read_write())
        except Exception as exc:  # rocksdict raises plain Exception with RocksDB's status text
            if "lock" in str(exc).lower():
                raise StoreLocked(f"{path}: {exc}") from exc
            raise StoreCorrupt(f"{path}: cannot be opened: {exc}") from exc
        db.set_write_options(self._write_options)
        if not existed:
            batch = WriteBatch(raw_mode=True)
            batch.put(FORMAT_KEY, FORMAT_MARKER, db.get_column_family_handle(META_CF))
            durable = WriteOptions()
            durable.sync = True  # the marker is on disk before anything is committed, with or without the WAL
            db.write(batch, durable)
            return RocksDBPartition(partition, OpenedAs.CREATED, db)
        marker = db.get_column_family(META_CF).get(FORMAT_KEY)
        if marker != FORMAT_MARKER:
            db.close()
            raise StoreCorrupt(f"{path}: format marker {marker!r}, not {FORMAT_MARKER!r}")
        return RocksDBPartition(partition, OpenedAs.EXISTING, db)

    def _wipe(self, partition: int) -> None:
        path = self.partition_path(partition)
        if path.exists():
            shutil.rmtree(path)
            logger.info("state store %s partition %d wiped (%s)", self.name, partition, path)
