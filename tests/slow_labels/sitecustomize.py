"""Test-only: the trainer's labels input held back until a file appears (``HOLD_LABELS_UNTIL``), so its predictions
input runs ahead of its labels on purpose. Loaded by a worker started with this folder on ``PYTHONPATH``; does
nothing without the variable (pytest imports it too, for its doctests)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any


def _hold_labels(release: Path) -> None:
    from aiokafka import AIOKafkaConsumer

    assign = AIOKafkaConsumer.assign
    labels, predictions = os.environ["LABELS_TOPIC"], os.environ["PREDICTIONS_TOPIC"]

    def assign_holding_labels(self: AIOKafkaConsumer, partitions: Any) -> None:
        assign(self, partitions)
        topics = {tp.topic for tp in partitions}
        if not {labels, predictions} <= topics:  # not the trainer's reader
            return
        held = [tp for tp in partitions if tp.topic == labels]
        self.pause(*held)
        loop = asyncio.get_running_loop()

        def check() -> None:
            if release.exists():
                self.resume(*held)
            else:
                loop.call_later(0.2, check)

        check()

    AIOKafkaConsumer.assign = assign_holding_labels  # type: ignore[method-assign]


if os.environ.get("HOLD_LABELS_UNTIL"):
    _hold_labels(Path(os.environ["HOLD_LABELS_UNTIL"]))
