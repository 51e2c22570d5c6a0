"""Joining delayed labels to the features a transaction was scored with.

Both halves travel on one internal topic keyed by ``tx_id`` (so they meet on one partition whatever
partitioner the label's producer used) and wait for each other in a table. Whichever arrives second
completes the pair; the pair is learned once and its entry deleted.
"""

from __future__ import annotations

from typing import Any, NamedTuple

Entry = dict[str, Any]


class Pair(NamedTuple):
    """A label met its features: learn ``(x, y)``; a fraud also raises ``terminal_id``'s risk from ``known_s``."""

    x: dict[str, float]
    y: bool
    terminal_id: str
    known_s: float


def scored_entry(x: dict[str, float], event_time_s: float, terminal_id: str = "") -> Entry:
    """The features a transaction was scored with, and its terminal (whose risk a fraud label raises)."""
    return {"kind": "scored", "x": x, "t": event_time_s, "terminal_id": terminal_id}


def label_entry(is_fraud: bool, event_time_s: float) -> Entry:
    return {"kind": "label", "y": is_fraud, "t": event_time_s}


def join(stored: Entry | None, incoming: Entry) -> tuple[Pair | None, Entry | None]:
    """What to learn now (or None) and what to keep in the table (None deletes).

    >>> join(None, label_entry(True, 10.0))
    (None, {'kind': 'label', 'y': True, 't': 10.0})
    >>> join(label_entry(True, 10.0), scored_entry({"amount": 1.0}, 5.0, "k1"))
    (Pair(x={'amount': 1.0}, y=True, terminal_id='k1', known_s=10.0), None)
    """
    if stored is None or stored["kind"] == incoming["kind"]:
        # First half, or a repeat of the same half (a re-sent label replaces the older one).
        return None, incoming
    scored, label = (stored, incoming) if stored["kind"] == "scored" else (incoming, stored)
    return Pair(scored["x"], bool(label["y"]), str(scored.get("terminal_id", "")), float(label["t"])), None


def expired(entry: Entry, watermark_s: float, ttl_s: float) -> bool:
    """An entry whose event time is older than the TTL behind the stream's newest event time."""
    return float(entry["t"]) < watermark_s - ttl_s
