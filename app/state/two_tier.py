"""A cache of parsed states in front of one of packed states bounded in bytes: memory set by two settings.

The customer windows (:mod:`app.state.customers`) and the terminal windows (:mod:`app.state.terminals`) are both
read from a store far more often than they change, and a store read costs a prefix iteration or a get and a parse.
Both keep the most recent states parsed (an LRU bounded by count), and the states that LRU drops packed (an LRU
bounded by the packed bytes: a few times smaller than parsed, decoded in a few C calls), so a parsed miss costs a
decode instead of a store read while memory stays what the two bounds allow. This class is that cache once, generic
over the codec (``encode``/``decode``); the owners keep the store, what is dirty and when to write.
Pure: no Kafka, no store.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class TwoTierCache(Generic[V]):
    """Up to ``size`` parsed values (least recently used go first) and, behind them, up to ``packed_budget_bytes``
    of the values the parsed tier dropped, as ``encode`` made them (least recently packed go first; 0: no packed
    tier). A key is in one tier at most. ``encode`` may return ``None`` for a value it cannot pack: that value is
    dropped instead. The cache holds what its owner gives it (:meth:`keep`) and writes nothing anywhere: the owner
    keeps its store and its unwritten changes, and calls :meth:`keep` with each key's newest value."""

    def __init__(
        self, size: int, packed_budget_bytes: int, encode: Callable[[V], bytes | None], decode: Callable[[bytes], V]
    ) -> None:
        self.size = size
        self.packed_budget_bytes = packed_budget_bytes
        self.encode = encode
        self.decode = decode
        self.parsed: OrderedDict[str, V] = OrderedDict()
        self.packed: OrderedDict[str, bytes] = OrderedDict()
        self.packed_bytes = 0  # the sum of the packed values' lengths

    def __contains__(self, key: object) -> bool:
        return key in self.parsed or key in self.packed

    def __len__(self) -> int:
        return len(self.parsed) + len(self.packed)

    def get(self, key: str) -> V | None:
        """The key's value, made the most recent parsed one (a packed value is decoded and moves to the parsed
        tier); ``None`` on a miss of both tiers (the owner reads its store, then :meth:`keep`)."""
        parsed = self.parsed
        value = parsed.get(key)
        if value is not None:
            parsed.move_to_end(key)
            return value
        raw = self.packed.pop(key, None)
        if raw is None:
            return None
        self.packed_bytes -= len(raw)
        value = self.decode(raw)
        if value:
            self.keep(key, value)
        return value

    def peek(self, key: str) -> V | None:
        """The key's value without changing what either tier keeps or in which order (serving reads)."""
        value = self.parsed.get(key)
        if value is not None:
            return value
        raw = self.packed.get(key)
        return None if raw is None else self.decode(raw)

    def keep(self, key: str, value: V) -> None:
        """``value`` as the key's newest parsed value; the least recent past ``size`` move to the packed tier (the
        least recent of which go past its budget)."""
        old = self.packed.pop(key, None)
        if old is not None:
            self.packed_bytes -= len(old)
        parsed = self.parsed
        parsed[key] = value
        parsed.move_to_end(key)
        while len(parsed) > self.size:
            dropped_key, dropped = parsed.popitem(last=False)
            if self.packed_budget_bytes > 0:
                self._pack(dropped_key, dropped)

    def forget(self, key: str) -> None:
        """The key out of both tiers (removed, or emptied)."""
        self.parsed.pop(key, None)
        raw = self.packed.pop(key, None)
        if raw is not None:
            self.packed_bytes -= len(raw)

    def clear(self) -> None:
        self.parsed.clear()
        self.packed.clear()
        self.packed_bytes = 0

    def _pack(self, key: str, value: V) -> None:
        raw = self.encode(value)
        if raw is None:
            return
        packed = self.packed
        packed[key] = raw
        self.packed_bytes += len(raw)
        while self.packed_bytes > self.packed_budget_bytes and packed:
            self.packed_bytes -= len(packed.popitem(last=False)[1])
