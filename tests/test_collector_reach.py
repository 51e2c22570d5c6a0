"""The windows a worker holds stay out of the garbage collector's walks.

A full collection walks every tracked container and touches everything they hold. The customer and terminal
windows are the bulk of a worker's memory (at 10 times the simulator's population, ~1 M entries): held as lists
they made the full collections of 120-240 ms about every second, 13 % of the worker's time. Customer and terminal
windows hold their entries by column (arrays of C numbers and tuples of strings): the collector stops tracking those
tuples, and walks a customer's window in six steps (three arrays, the bytes of its terminal indices, the tuple of its
terminals' names, the text of its tx ids), a terminal's in four (three columns and an int)."""

from __future__ import annotations

import gc
from array import array

from app.features.engine import (
    EMPTY_TERMINAL,
    EMPTY_WINDOW,
    CustomerWindow,
    TerminalWindow,
    customer_features,
    terminal_features,
)
from app.state.customers import PartitionState, entry_key, entry_value
from app.state.memory_store import MemoryStore
from app.state.terminals import TerminalAggregates

DAY_S = 86400.0


def collect_twice() -> None:
    """The first collection stops tracking the entries, the second the tuple holding them (in the worker, the young
    collections every few hundred allocations do it)."""
    gc.collect()
    gc.collect()


def walks_no_entry(window: CustomerWindow | TerminalWindow, collect: bool = True) -> bool:
    """A collection visits the window's columns and stops there: untracked tuples, arrays of C numbers (which
    hold no object but their type), bytes and a string; and a terminal's ``next_seq``, an int. ``collect=False``: the
    caller collected twice since the window was last changed (a full collection walks the whole test process: a
    fraction of a second)."""
    if collect:
        collect_twice()
    columns = [c for c in gc.get_referents(window) if not isinstance(c, type)]
    arrays = [c for c in columns if isinstance(c, array)]
    customer = isinstance(window, CustomerWindow)
    return (
        len(columns) == (6 if customer else 4)
        and len(arrays) == (3 if customer else 2)
        and all(isinstance(c, array) or not gc.is_tracked(c) for c in columns)
        and all(all(isinstance(r, type) for r in gc.get_referents(c)) for c in arrays)
    )


def test_the_customer_windows_the_engine_returns_hold_no_tracked_entry() -> None:
    state = EMPTY_WINDOW
    for i in range(50):
        _, state = customer_features(state, i * 3600.0, float(i), f"k{i % 7}", f"tx{i}")
    assert len(state) == 50 and state[-1] == (49 * 3600.0, 49.0, "k0", "tx49", 49)
    assert walks_no_entry(state)


def test_a_customer_read_back_from_the_store_holds_no_tracked_entry() -> None:
    partition = PartitionState(MemoryStore("customers").open_partition(0))
    entries = [(i * 60.0, 1.0 + i, "k1", f"tx{i}", i) for i in range(20)]
    partition.apply({entry_key("c1", e[3]): entry_value(e) for e in entries}, 21, {}, [])
    state = partition.customer("c1")
    assert list(state) == entries and "c1" in partition.caches.parsed
    assert walks_no_entry(state)


def test_the_terminal_windows_the_engine_returns_hold_no_tracked_entry() -> None:
    state = EMPTY_TERMINAL
    for i in range(50):
        _, state = terminal_features(state, i * 3600.0, f"tx{i}", {})
    assert len(state) == 50 and state[-1] == (49 * 3600.0, "tx49", 49)
    assert walks_no_entry(state)


def test_the_terminals_cached_waiting_for_the_flush_and_read_back_hold_no_tracked_entry() -> None:
    aggregates = TerminalAggregates(7.0, DAY_S, 38 * DAY_S, MemoryStore("terminals").open_partition(0))
    for i in range(300):
        aggregates.add(f"k{i % 10}", i * 600.0, f"tx{i}")
    held = [*aggregates.caches.parsed.values(), *aggregates.dirty.values()]
    assert len(held) == 20 and all(len(state) == 30 for state in held)
    collect_twice()  # once for the 20 windows, unchanged meanwhile
    assert all(walks_no_entry(state, collect=False) for state in held)
    aggregates.flush({})
    aggregates.caches.parsed.clear()
    state = aggregates.state("k3")
    assert len(state) == 30 and "k3" in aggregates.caches.parsed
    assert walks_no_entry(state)
