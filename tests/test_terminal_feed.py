"""The terminal snapshot without a broker: written in slices while the aggregates keep changing, it restores
the same aggregates once the logs are read again from the positions it names."""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path

from aiokafka import TopicPartition

from app.state import terminal_feed
from app.state.terminal_feed import TerminalFeed
from app.state.terminals import TerminalAggregates

DAY_S = 86400.0


def feed(path: Path) -> TerminalFeed:
    aggregates = TerminalAggregates(delay_days=7.0, lateness_s=DAY_S, ttl_s=38 * DAY_S)
    return TerminalFeed(aggregates, bootstrap_servers="unused:9092", terminal_topic="terminal-log",
                        labels_topic="labels", snapshot_path=path, snapshot_interval_s=30.0, sweep_interval_s=60.0,
                        max_message_bytes=65536)  # fmt: skip


def test_a_sliced_snapshot_taken_under_changes_restores_the_same_aggregates(tmp_path: Path) -> None:
    path = tmp_path / "terminal-aggregates.pkl"
    live = feed(path)
    n_terminals = 3 * terminal_feed.SNAPSHOT_TERMINALS_PER_SLICE + 7  # several slices
    before = [(f"k{i % n_terminals}", 1000.0 * i, f"tx{i}") for i in range(2 * n_terminals)]
    for terminal, t, tx_id in before:
        live.aggregates.add(terminal, t, tx_id)
    live.aggregates.add_fraud("tx3", known_s=5000.0)
    live.positions = {TopicPartition("terminal-log", 0): len(before), TopicPartition("labels", 0): 1}
    # What the log holds after the positions the snapshot names: it arrives while the snapshot is being sliced.
    after = [(f"k{i % n_terminals}", 1000.0 * i, f"tx{i}") for i in range(2 * n_terminals, 3 * n_terminals)]
    after.append(("a-new-terminal", 10.0**7, "tx-new"))

    async def write_while_changing() -> None:
        async def change() -> None:
            for terminal, t, tx_id in after:
                live.aggregates.add(terminal, t, tx_id)
                await asyncio.sleep(0)
            live.aggregates.add_fraud("tx5", known_s=6000.0)

        changing = asyncio.ensure_future(change())
        await live.write_snapshot()
        await changing

    asyncio.run(write_while_changing())
    with path.open("rb") as f:
        header = pickle.load(f)  # noqa: S301
    assert header["slices"] == 4

    restored = feed(path)
    restored._load_snapshot()
    assert restored.positions == {TopicPartition("terminal-log", 0): len(before), TopicPartition("labels", 0): 1}
    assert restored.aggregates.states != live.aggregates.states  # the snapshot did not see all of ``after``
    for terminal, t, tx_id in after:  # read again from the positions: repeats change nothing
        restored.aggregates.add(terminal, t, tx_id)
    restored.aggregates.add_fraud("tx5", known_s=6000.0)
    assert restored.aggregates.states == live.aggregates.states
    assert restored.aggregates.frauds_known_s == live.aggregates.frauds_known_s
    assert restored.aggregates.stream_time_s == live.aggregates.stream_time_s


def test_an_unreadable_snapshot_means_reading_the_logs_from_their_start(tmp_path: Path) -> None:
    path = tmp_path / "terminal-aggregates.pkl"
    path.write_bytes(pickle.dumps({"aggregates": {}, "positions": {("terminal-log", 0): 5}}))  # an older format
    restored = feed(path)
    restored._load_snapshot()
    assert restored.positions == {}
    assert restored.aggregates.states == {}
