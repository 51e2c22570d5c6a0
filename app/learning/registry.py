"""Which model version scores: the versions published and the promotion events, folded into one state.

Pure: every worker folds the same ``model-events`` log (one partition, in order) and the same ``models`` headers, so
every worker arrives at the same champion. Events (JSON on ``MODEL_EVENTS_TOPIC``):

- ``published``: the trainer published ``version`` (``role`` champion, challenger or warm-start);
- ``promoted``: ``version`` becomes the champion; ``follow`` true means later ``published`` champion versions are
  promoted as they come (the online model keeps learning), false pins this version;
- ``rolled_back``: back to ``version`` (the champion before the current one), pinned.

Each promotion and rollback names who or what caused it (``by``) and why (``reason``).

>>> r = Registry()
>>> r.apply({"action": "published", "version": "v1", "role": "champion"})
>>> r.apply({"action": "published", "version": "v2", "role": "champion"})
>>> r.champion, r.follow
('v2', True)
>>> r.apply(rollback_event(r, by="cli:alice", reason="bad release", timestamp="t"))
>>> r.champion, r.follow
('v1', False)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class PromotionRefused(ValueError):
    """A promotion or rollback that cannot be made (unknown version, nothing to roll back to)."""


@dataclass
class Registry:
    champion: str | None = None
    follow: bool = True  # promote each published champion version as it comes
    challenger: str | None = None
    latest_champion: str | None = None  # the trainer's newest champion-role version
    history: list[str] = field(default_factory=list)  # champions in the order they served
    headers: dict[str, dict[str, Any]] = field(default_factory=dict)  # version -> snapshot header
    events: list[dict[str, Any]] = field(default_factory=list)

    def add_header(self, header: dict[str, Any]) -> None:
        self.headers[str(header["version"])] = header

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event (unknown actions are kept in the log and otherwise ignored)."""
        self.events.append(event)
        action, version = event.get("action"), event.get("version")
        if not isinstance(version, str):
            return
        if action == "published":
            role = event.get("role")
            if role == "challenger":
                self.challenger = version
            elif role == "champion":
                self.latest_champion = version
                if self.follow:
                    self._serve(version)
        elif action == "promoted":
            self.follow = bool(event.get("follow", False))
            if self.challenger == version:
                self.challenger = None
            self._serve(version)
        elif action == "rolled_back":
            self.follow = False
            self._serve(version)

    def _serve(self, version: str) -> None:
        if version != self.champion:
            self.champion = version
            self.history.append(version)

    def versions(self) -> list[dict[str, Any]]:
        """Every known version with its header, newest first, and its status."""
        rows = []
        for version, header in self.headers.items():
            status = "champion" if version == self.champion else "challenger" if version == self.challenger else ""
            rows.append({**header, "status": status})
        rows.sort(key=lambda h: int(h.get("sequence", 0)), reverse=True)
        return rows


def promote_event(
    registry: Registry, version: str, *, by: str, reason: str, timestamp: str, follow: bool = False
) -> dict[str, Any]:
    """``version`` (or ``latest``: the trainer's newest, following later ones) as the champion."""
    if version == "latest":
        if registry.latest_champion is None:
            raise PromotionRefused("the trainer has published no champion version yet")
        version, follow = registry.latest_champion, True
    if version not in registry.headers:
        raise PromotionRefused(f"unknown model version {version!r}")
    return {"action": "promoted", "version": version, "previous": registry.champion, "follow": follow,
            "by": by, "reason": reason, "timestamp": timestamp}  # fmt: skip


def rollback_event(registry: Registry, *, by: str, reason: str, timestamp: str) -> dict[str, Any]:
    """Back to the champion that served before the current one, pinned."""
    earlier = [v for v in registry.history[:-1] if v != registry.champion]
    if not earlier:
        raise PromotionRefused("no earlier champion to roll back to")
    return {"action": "rolled_back", "version": earlier[-1], "previous": registry.champion, "follow": False,
            "by": by, "reason": reason, "timestamp": timestamp}  # fmt: skip
