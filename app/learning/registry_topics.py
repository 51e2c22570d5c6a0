"""The model registry's Kafka side: read it, publish events and versions, and the warm start.

The registry is the ``models`` and ``model-events`` topics. ``python -m app models ...`` (:mod:`app.ops.models`)
and the worker's ``POST /models/promote|rollback`` publish promotions through :func:`publish_event`; every worker
follows within seconds.
"""

from __future__ import annotations

import asyncio
import copy
import heapq
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from app.features.spec import FEATURE_SET_VERSION
from app.kafka.clients import Connection, committed_reader, plain_producer
from app.kafka.reading import read_to_end
from app.learning.model import FraudModel
from app.learning.offline import replay_offline
from app.learning.quality import average_precision, card_precision_top_k, decision_summary, roc_auc
from app.learning.registry import Registry
from app.learning.snapshots import SnapshotRefused, check_feature_set, model_snapshot, verify
from app.records import Prediction
from app.serialization import dumps, loads
from app.settings import Settings, signing_key


async def read_registry(settings: Settings, timeout_s: float = 30.0) -> tuple[Registry, list[tuple[str, str]]]:
    """Both topics read to their end: the registry every worker folds, and the refused snapshots (key, code): as a
    worker refuses them, another feature set's included."""
    consumer = committed_reader(Connection.of(settings), fetch_max_bytes=64 * 2**20,
                                max_partition_fetch_bytes=32 * 2**20)  # fmt: skip
    await asyncio.wait_for(consumer.start(), timeout_s)
    registry, refused = Registry(), []
    key = signing_key(settings)
    try:
        tps = [TopicPartition(settings.models_topic, 0), TopicPartition(settings.model_events_topic, 0)]
        consumer.assign(tps)
        for tp in tps:
            await consumer.seek_to_beginning(tp)
        # snapshots first, then the events that name them
        async for batch in read_to_end(consumer, tps, in_order=True, timeout_ms=1000, timeout_s=timeout_s):
            for tp, records in batch.items():
                for record in records:
                    if tp.topic == settings.models_topic:
                        try:
                            header, _ = verify(record.value, key)
                            check_feature_set(header)
                        except SnapshotRefused as exc:
                            refused.append(((record.key or b"?").decode(errors="replace"), exc.code))
                            continue
                        registry.add_header(header)
                    else:
                        registry.apply(loads(record.value))
    finally:
        await consumer.stop()
    return registry, refused


async def publish_event(settings: Settings, event: dict[str, Any]) -> None:
    client = plain_producer(Connection.of(settings), enable_idempotence=True)
    await client.start()
    try:
        key = str(event["version"]).encode()
        await client.send_and_wait(settings.model_events_topic, key=key, value=dumps(event))
    finally:
        await client.stop()


async def publish_version(settings: Settings, header: dict[str, Any], model: FraudModel) -> None:
    """A warm start's snapshot and its ``published`` event; the header names the feature set it was trained on
    (this process's: the warm start computes its features with this code)."""
    header = {**header, "feature_set": FEATURE_SET_VERSION}
    client = plain_producer(Connection.of(settings), max_request_size=16 * 2**20)
    await client.start()
    try:
        raw = model_snapshot(header, model, signing_key(settings))
        event = {"action": "published", "version": header["version"], "role": header["role"], "by": header["by"],
                 "reason": "warm start", "timestamp": header["created_at"]}  # fmt: skip
        await client.send_and_wait(settings.models_topic, key=str(header["version"]).encode(), value=raw)
        await client.send_and_wait(settings.model_events_topic, key=str(header["version"]).encode(),
                                   value=dumps(event))  # fmt: skip
    finally:
        await client.stop()


# ---- warm start ------------------------------------------------------------------------------------------------


def _events(run_dir: Path) -> Iterator[tuple[float, str, bytes, bytes]]:
    """Transactions and labels of a ``scripts/simulate.py --out-dir`` run, merged by event time (a label at the
    time it became known)."""

    def read(name: str, kind: str, key_field: str) -> Iterator[tuple[float, str, bytes, bytes]]:
        with (run_dir / name).open("rb") as f:
            for line in f:
                if line.strip():
                    obj = loads(line)
                    t = datetime.fromisoformat(obj["timestamp"].replace("Z", "+00:00")).timestamp()
                    yield t, kind, str(obj[key_field]).encode(), line.rstrip(b"\n")

    yield from heapq.merge(read("transactions.jsonl", "transaction", "customer_id"),
                           read("labels.jsonl", "label", "tx_id"), key=lambda e: e[0])  # fmt: skip


def _learn_nothing(x: dict[str, float], y: bool) -> None:
    """A frozen copy's ``learn_one``: a module-level function, so the copy still pickles (the replay snapshots it)."""


def warm_start(settings: Settings, run_dir: Path, holdout_days: float) -> tuple[FraudModel, dict[str, Any]]:
    """Train on everything before the last ``holdout_days`` (labels as they became known), then score the held-out
    days with a frozen copy; the metrics are those of the frozen copy on the held-out transactions."""
    events = list(_events(run_dir))
    truth = {}
    with (run_dir / "truth.jsonl").open("rb") as f:
        for line in f:
            if line.strip():
                obj = loads(line)
                truth[obj["tx_id"]] = bool(obj["is_fraud"])
    cutoff = max(t for t, kind, _, _ in events if kind == "transaction") - holdout_days * 86400
    model = FraudModel(settings.model_name, prior_fraud_rate=settings.prior_fraud_rate)
    for _ in replay_offline(((k, key, v) for t, k, key, v in events if t < cutoff), settings, model):
        pass
    frozen = copy.deepcopy(model)
    frozen.learn_one = _learn_nothing  # type: ignore[method-assign]  # scoring only on the held-out days
    days, cards, y_true, y_score = [], [], [], []
    for item in replay_offline(((k, key, v) for _, k, key, v in events), settings, frozen):
        if isinstance(item, Prediction):
            t = datetime.fromisoformat(item.timestamp.replace("Z", "+00:00")).timestamp()
            if t >= cutoff and item.tx_id in truth:
                days.append(int(t // 86400))
                cards.append(item.customer_id)
                y_true.append(truth[item.tx_id])
                y_score.append(item.fraud_probability)
    summary = decision_summary(y_true, [s >= settings.decision_threshold for s in y_score])
    precision, recall = summary.precision, summary.recall
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    both = 0 < sum(y_true) < len(y_true)
    metrics = {
        "labelled": len(y_true),
        "frauds": int(sum(y_true)),
        "auc": roc_auc(y_true, y_score) if both else None,
        "ap": average_precision(y_true, y_score) if both else None,
        "cp_at_100": card_precision_top_k(days, cards, y_true, y_score, 100) if y_true else None,
        "precision": None if precision != precision else precision,
        "recall": None if recall != recall else recall,
        "f1": f1 if f1 == f1 else None,
        "threshold": settings.decision_threshold,
        "holdout_days": holdout_days,
    }
    return model, metrics


# ---- the command line ------------------------------------------------------------------------------------------
