"""Learning, off the decision path: each label meets the features its transaction was scored with.

The predictions topic is the feature log (each prediction carries the features as scored); labels are keyed
by ``tx_id`` like predictions, so both halves of a pair are on the same partition number. This handler of a
:class:`app.transactional.TransactionalLoop` over ``predictions`` and ``labels`` keeps whichever half came
first (features packed as doubles in ``bytes``, which the garbage collector does not track), learns a pair
once, and dead-letters invalid labels in the same transaction as its offsets (every label ends as learned,
waiting, expired or one dead letter).

Known limit (issue 9 redesigns learning): the waiting halves live in this worker's memory, so a restart or a
rebalance forgets pairs not completed yet, and each worker teaches its own model.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aiokafka import TopicPartition

from app import metrics
from app.decisions import dead_letter
from app.features import FEATURE_NAMES
from app.model import FraudModel
from app.records import InvalidMessage, parse_label
from app.serialization import loads
from app.settings import Settings
from app.transactional import Batch, Output

log = logging.getLogger(__name__)

# tx_id -> ("x", features in FEATURE_NAMES order packed as doubles, event time) or ("y", is_fraud, when known)
Waiting = tuple[str, Any, float]
_FEATURES = struct.Struct(f"<{len(FEATURE_NAMES)}d")


class Learner:
    def __init__(self, settings: Settings, model: FraudModel) -> None:
        self.settings = settings
        self.model = model
        self.waiting: dict[int, dict[str, Waiting]] = {}
        self.stream_time_s: dict[int, float] = {}
        self.swept_at_s = time.monotonic()

    async def restore(self, tp: TopicPartition) -> int | None:
        self.waiting.setdefault(tp.partition, {})
        return None

    def drop(self, tp: TopicPartition) -> None:
        """Waiting halves are kept while either topic's partition of that number stays here."""

    def event_time(self, record: Any) -> float:
        return float("-inf")

    def idle(self, tp: TopicPartition) -> Batch | None:
        self._sweep()
        return None

    def process(self, tp: TopicPartition, records: Sequence[Any]) -> Batch:
        settings = self.settings
        outputs: list[Output] = []
        arrivals: list[tuple[str, Waiting]] = []
        dead_codes: list[str] = []
        if tp.topic == settings.predictions_topic:
            for record in records:
                prediction = loads(record.value)
                features = prediction["features"]
                x = _FEATURES.pack(*(float(features.get(name, 0.0)) for name in FEATURE_NAMES))
                arrivals.append((prediction["tx_id"], ("x", x, _event_time_s(prediction["timestamp"]))))
        else:
            for record in records:
                try:
                    label = parse_label(record.value, settings.max_message_bytes)
                except InvalidMessage as exc:
                    outputs.append(Output(settings.labels_dlq_topic, record.key, dead_letter(record, exc)))
                    dead_codes.append(exc.code)
                    continue
                arrivals.append((label.tx_id, ("y", label.is_fraud, label.timestamp.timestamp())))

        def on_commit() -> None:
            for code in dead_codes:
                metrics.DEAD_LETTERS.labels("labels", code).inc()
                metrics.LABELS.labels("dead_letter").inc()
            waiting = self.waiting.setdefault(tp.partition, {})
            for tx_id, half in arrivals:
                self._arrive(waiting, tp.partition, tx_id, half)
            metrics.LABELS_LEARNED.set(self.model.labels_learned)
            self._sweep()

        return Batch(outputs, on_commit)

    def _arrive(self, waiting: dict[str, Waiting], partition: int, tx_id: str, half: Waiting) -> None:
        if half[0] == "y":
            metrics.LABELS_RECEIVED.inc()
        else:
            self.stream_time_s[partition] = max(self.stream_time_s.get(partition, half[2]), half[2])
        other = waiting.get(tx_id)
        if other is None or other[0] == half[0]:
            waiting[tx_id] = half  # first half, or a repeat of the same half (a re-sent label replaces the older)
            return
        del waiting[tx_id]
        x, y = (half[1], other[1]) if half[0] == "x" else (other[1], half[1])
        self.model.learn_one(dict(zip(FEATURE_NAMES, _FEATURES.unpack(x), strict=True)), bool(y))
        metrics.LABELS_JOINED.inc()

    def _sweep(self) -> None:
        """Halves whose other half did not come within ``FEATURES_TTL_S`` of stream time are dropped."""
        now = time.monotonic()
        if now - self.swept_at_s < self.settings.features_sweep_interval_s:
            return
        self.swept_at_s = now
        removed = 0
        for partition, waiting in self.waiting.items():
            horizon = self.stream_time_s.get(partition, float("-inf")) - self.settings.features_ttl_s
            old = [tx_id for tx_id, half in waiting.items() if half[2] < horizon]
            for tx_id in old:
                del waiting[tx_id]
            removed += len(old)
        metrics.LABELS.labels("expired").inc(removed)
        metrics.PENDING_LEARNING.set(sum(len(w) for w in self.waiting.values()))


def _event_time_s(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
