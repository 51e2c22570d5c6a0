"""The windows a worker holds stay out of the garbage collector's walks.

A full collection walks every tracked container and touches everything they hold. The customer and terminal
windows are the bulk of a worker's memory (at 10 times the simulator's population, ~1 M entries): held as lists
they made the full collections of 120-240 ms about every second, 13 % of the worker's time. Held as tuples of
entries of numbers and strings, the collector stops tracking them."""

from __future__ import annotations

import gc

from app.features.engine import customer_features
from app.state.customers import PartitionState, entry_key, entry_value
from app.state.memory_store import MemoryStore
from app.state.terminals import TerminalAggregates

DAY_S = 86400.0


def untracked_after_collections(value: object) -> bool:
    """Two: the first stops tracking the entries, the second the tuple holding them (in the worker, the young
    collections every few hundred allocations do it)."""
    gc.collect()
    gc.collect()
    return not gc.is_tracked(value)


def test_the_customer_windows_the_engine_returns_are_not_tracked() -> None:
    state: object = []
    for i in range(50):
        _, state = customer_features(state, i * 3600.0, float(i), f"k{i % 7}", f"tx{i}")  # type: ignore[arg-type]
    assert len(state) == 50  # type: ignore[arg-type]
    assert untracked_after_collections(state)


def test_a_customer_read_back_from_the_store_is_not_tracked() -> None:
    partition = PartitionState(MemoryStore("customers").open_partition(0))
    entries = [(i * 60.0, 1.0 + i, "k1", f"tx{i}", i) for i in range(20)]
    partition.apply({entry_key("c1", e[3]): entry_value(e) for e in entries}, 21, {}, [])
    state = partition.customer("c1")
    assert list(state) == entries and "c1" in partition.cache
    assert untracked_after_collections(state)


def test_the_terminals_cached_and_waiting_for_the_flush_are_not_tracked() -> None:
    aggregates = TerminalAggregates(7.0, DAY_S, 38 * DAY_S, MemoryStore("terminals").open_partition(0))
    for i in range(300):
        aggregates.add(f"k{i % 10}", i * 600.0, f"tx{i}")
    held = [*aggregates.cache.values(), *aggregates.dirty.values()]
    assert len(held) == 20 and all(len(state) == 30 for state in held)
    gc.collect()
    gc.collect()
    assert not any(gc.is_tracked(state) for state in held)
    aggregates.flush({})
    aggregates.cache.clear()
    assert untracked_after_collections(aggregates.state("k3"))
