"""Every worker follows the promoted model version: it reads ``models`` and ``model-events`` and swaps the scorer.

Both topics have one partition and are read from the start (``read_committed``, no consumer group:
:mod:`app.kafka.following`), so every worker folds the same events into the same champion
(:class:`app.learning.registry.Registry`), and a restarted worker scores with the version it scored with before. A
snapshot is verified when it arrives; one that is unsigned, altered, signed with another key or made for another
feature set (:mod:`app.features.spec`) is refused before deserialisation: logged, counted, shown in health, and the
version in use keeps scoring.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from app import metrics
from app.kafka.following import CompactedFollower
from app.learning.model import FraudModel
from app.learning.registry import Registry
from app.learning.snapshots import SnapshotRefused, check_feature_set, load_model_snapshot, verify
from app.serialization import loads

log = logging.getLogger(__name__)

REFUSAL_SHOWN_S = 600.0  # a refused snapshot stays an issue in the health events this long
SNAPSHOTS_KEPT = 200  # versions whose bytes a worker keeps in memory (a snapshot of the default model: ~5 KB)


class ModelFollower(CompactedFollower):
    """Both topics followed from their start (:class:`app.kafka.following.CompactedFollower`), the snapshots before
    the events that name them; ``on_champion`` gets the champion's model each time it changes."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        models_topic: str,
        events_topic: str,
        key: bytes,
        on_champion: Callable[[FraudModel], None],
        client_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            "model follower",
            bootstrap_servers=bootstrap_servers,
            topics=(models_topic, events_topic),
            client_options=client_options,
            consumer_options={"fetch_max_bytes": 64 * 2**20, "max_partition_fetch_bytes": 32 * 2**20},
        )
        self.models_topic = models_topic
        self.events_topic = events_topic
        self.key = key
        self.on_champion = on_champion
        self.registry = Registry()
        self.snapshots: dict[str, bytes] = {}  # verified snapshots by version
        self.refused: list[tuple[float, str, str, str]] = []  # (monotonic time, record key, code, reason)
        self.newest_sequence = 0  # of every signed snapshot, refused ones too: a new line does not reuse their ids
        self.serving: str | None = None
        self._missing_logged: str | None = None

    def _take(self, topic: str, record: Any) -> None:
        if topic == self.models_topic:
            self._snapshot(record.key, record.value)
        else:
            self._event(record.value)

    def _on_caught_up(self) -> None:
        log.info("model follower caught up: champion %s, %d versions", self.registry.champion,
                 len(self.registry.headers))  # fmt: skip

    def _snapshot(self, key: bytes | None, value: bytes | None) -> None:
        name = key.decode(errors="replace") if key else "?"
        if value is None:  # a tombstone: the version was deleted
            self.snapshots.pop(name, None)
            return
        try:
            header, _ = verify(value, self.key)
            self.newest_sequence = max(self.newest_sequence, _sequence(header))
            check_feature_set(header)
        except SnapshotRefused as exc:
            self.refused.append((time.monotonic(), name, exc.code, exc.reason))
            metrics.MODEL_SNAPSHOTS_REFUSED.labels(exc.code).inc()
            log.error("model snapshot %s refused (%s): not loaded; version %s keeps scoring", name, exc, self.serving)
            return
        self.registry.add_header(header)
        self.snapshots[str(header["version"])] = value
        if len(self.snapshots) > SNAPSHOTS_KEPT:
            self._forget_old_snapshots()

    def _forget_old_snapshots(self) -> None:
        """Keep the newest ``SNAPSHOTS_KEPT`` versions' bytes, the ones serving and the recent champions (a rollback
        target); older ones stay listed (their headers) and can be read back from the topic by the command line."""
        keep = {self.registry.champion, self.registry.challenger, self.serving, *self.registry.history[-10:]}
        for version in list(self.snapshots)[: len(self.snapshots) - SNAPSHOTS_KEPT]:
            if version not in keep:
                del self.snapshots[version]

    def _event(self, value: bytes | None) -> None:
        try:
            event = loads(value or b"")
        except Exception:
            log.warning("model event not JSON, ignored: %r", (value or b"")[:200])
            return
        if isinstance(event, dict):
            self.registry.apply(event)
            if event.get("action") in ("promoted", "rolled_back"):
                log.info("model %s %s by %s: %s", event.get("version"), event.get("action"), event.get("by"),
                         event.get("reason", ""))  # fmt: skip

    def _serve(self) -> None:
        """Load the champion if it changed and its snapshot is here (it may come a moment after its event)."""
        champion = self.registry.champion
        if champion is None or champion == self.serving:
            return
        raw = self.snapshots.get(champion)
        if raw is None:  # refused, or its snapshot not read yet (the two topics are fetched apart)
            if self._missing_logged != champion and any(key == champion for _, key, _, _ in self.refused):
                self._missing_logged = champion
                log.error("champion %s was refused; %s keeps scoring", champion, self.serving)
            return
        try:
            _, model = load_model_snapshot(raw, self.key)
        except Exception as exc:  # verified on arrival; a payload that does not load is refused now
            self.snapshots.pop(champion, None)
            self.refused.append((time.monotonic(), champion, "malformed", repr(exc)))
            metrics.MODEL_SNAPSHOTS_REFUSED.labels("malformed").inc()
            log.error("model snapshot %s does not load (%r); %s keeps scoring", champion, exc, self.serving)
            return
        previous, self.serving = self.serving, champion
        self.on_champion(model)
        log.info("scoring with model %s (was %s)", champion, previous)

    def issues(self, now_s: float | None = None) -> list[str]:
        """Refusals of the last ten minutes, for the health events: the reason's code and, for another feature set,
        both versions."""
        now_s = time.monotonic() if now_s is None else now_s
        recent = [(key, code, why) for at, key, code, why in self.refused if now_s - at < REFUSAL_SHOWN_S]
        return [f"model snapshot {key} refused: {code}" + (f" ({why})" if code == "feature_set" else "")
                for key, code, why in recent[-5:]]  # fmt: skip

    def models_view(self) -> dict[str, Any]:
        """What ``GET /models`` answers."""
        r = self.registry
        return {
            "serving": self.serving,
            "champion": r.champion,
            "challenger": r.challenger,
            "follow": r.follow,
            "latest": r.latest_champion,
            "versions": r.versions(),
            "events": r.events[-20:],
            "refused": [{"key": key, "code": code} for _, key, code, _ in self.refused[-20:]],
        }


def _sequence(header: dict[str, Any]) -> int:
    try:
        return int(header.get("sequence", 0))
    except (TypeError, ValueError):
        return 0
