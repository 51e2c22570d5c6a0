"""Joining delayed labels to the features a transaction was scored with.

Both halves travel on one internal topic keyed by ``tx_id`` (so they meet on one partition whatever
partitioner the label's producer used) and wait for each other in a table. Whichever arrives second
completes the pair; the pair is learned once and its entry deleted.
"""

from __future__ import annotations

from typing import Any

Entry = dict[str, Any]


def scored_entry(x: dict[str, float], event_time_s: float) -> Entry:
    return {"kind": "scored", "x": x, "t": event_time_s}


def label_entry(is_fraud: bool, event_time_s: float) -> Entry:
    return {"kind": "label", "y": is_fraud, "t": event_time_s}


def join(stored: Entry | None, incoming: Entry) -> tuple[tuple[dict[str, float], bool] | None, Entry | None]:
    """What to learn now (``(x, y)`` or None) and what to keep in the table (None deletes).

    >>> join(None, label_entry(True, 10.0))
    (None, {'kind': 'label', 'y': True, 't': 10.0})
    >>> join(label_entry(True, 10.0), scored_entry({"amount": 1.0}, 5.0))
    (({'amount': 1.0}, True), None)
    """
    if stored is None or stored["kind"] == incoming["kind"]:
        # First half, or a repeat of the same half (a re-sent label replaces the older one).
        return None, incoming
    scored, label = (stored, incoming) if stored["kind"] == "scored" else (incoming, stored)
    return (scored["x"], bool(label["y"])), None


def expired(entry: Entry, watermark_s: float, ttl_s: float) -> bool:
    """An entry whose event time is older than the TTL behind the stream's newest event time."""
    return float(entry["t"]) < watermark_s - ttl_s
