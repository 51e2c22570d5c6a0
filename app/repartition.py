"""Messages on the internal topic keyed by terminal, which joins the customer half to the terminal half.

Five kinds, all JSON objects: a transaction with its customer-side features and its customer partition's
stream time; a heartbeat carrying only that stream time (so a terminal partition can move on when a customer
partition has nothing to send it); a tick, which wakes a terminal partition up when a transaction has waited
too long; and fraud labels, both as they arrive (to every terminal partition, keyed by ``tx_id``) and once
joined to their transaction (keyed by terminal), whichever reaches the terminal's state first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiokafka.partitioner import murmur2

from app.records import Transaction

Message = dict[str, Any]


def terminal_partition(terminal_id: str, partitions: int) -> int:
    """Kafka's default partitioner (murmur2 of the key), chosen explicitly so the sender knows the partition.

    >>> terminal_partition("k1", 4) == terminal_partition("k1", 4) and 0 <= terminal_partition("k1", 4) < 4
    True
    """
    return (murmur2(terminal_id.encode()) & 0x7FFFFFFF) % partitions


def transaction_message(
    tx: Transaction,
    x: dict[str, float],
    *,
    source: int,
    watermark_s: float,
    received_at_s: float,
    idle: bool = False,
) -> Message:
    """>>> from datetime import datetime, timezone
    >>> tx = Transaction("t1", datetime(2018, 4, 2, tzinfo=timezone.utc), "c1", "k1", 4.0)
    >>> transaction_of(transaction_message(tx, {}, source=0, watermark_s=0.0, received_at_s=0.0)) == tx
    True
    """
    return {
        "kind": "transaction",
        "tx_id": tx.tx_id,
        "timestamp": tx.timestamp.isoformat(),
        "customer_id": tx.customer_id,
        "terminal_id": tx.terminal_id,
        "amount": tx.amount,
        "event_time_s": tx.event_time_s,
        "x": x,
        "source": source,
        "watermark_s": watermark_s,
        "idle": idle,
        "received_at_s": received_at_s,
    }


def transaction_of(message: Message) -> Transaction:
    return Transaction(
        message["tx_id"],
        datetime.fromisoformat(message["timestamp"]),
        message["customer_id"],
        message["terminal_id"],
        float(message["amount"]),
    )


def heartbeat_message(*, source: int, watermark_s: float | None, idle: bool) -> Message:
    """``watermark_s`` is None while the customer partition has handed over nothing yet."""
    return {"kind": "heartbeat", "source": source, "watermark_s": watermark_s, "idle": idle}


def tick_message() -> Message:
    """Wakes a terminal partition whose held transactions are due for release (the agent acts on arrivals)."""
    return {"kind": "tick"}


def fraud_label_message(tx_id: str, known_s: float) -> Message:
    """A fraud label sent to every terminal partition as it arrives, keyed by ``tx_id``."""
    return {"kind": "fraud_label", "tx_id": tx_id, "known_s": known_s}


def fraud_message(tx_id: str, known_s: float) -> Message:
    return {"kind": "fraud", "tx_id": tx_id, "known_s": known_s}
