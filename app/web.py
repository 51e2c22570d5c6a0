"""Pages on the Faust web server: ``/metrics`` (Prometheus), ``/ready`` (503 until consuming), ``/health``, and the
model registry: ``GET /models``, ``POST /models/promote`` (``{"version": ..., "reason": ...}``) and
``POST /models/rollback``."""

from __future__ import annotations

import time
from typing import cast

from aiohttp import web
from faust.web import Request, Response, View

from app import metrics, operator_page  # noqa: F401 - the operator page (/, /status.json) registers itself
from app.model_commands import publish_event
from app.model_registry import PromotionRefused, promote_event, rollback_event
from app.serialization import isoformat_utc, loads
from app.worker import faust_app, follower, is_ready, settings


@faust_app.page("/metrics")
async def prometheus_metrics(self: View, request: Request) -> Response:
    body, content_type = metrics.exposition()
    return cast(Response, web.Response(body=body, headers={"Content-Type": content_type}))


@faust_app.page("/ready")
async def ready(self: View, request: Request) -> Response:
    ok = is_ready()
    return self.json({"ready": ok, "worker": settings.worker_id}, status=200 if ok else 503)


@faust_app.page("/health")
async def alive(self: View, request: Request) -> Response:
    return self.json({"status": "alive", "worker": settings.worker_id})


@faust_app.page("/models")
async def models(self: View, request: Request) -> Response:
    return self.json(follower.models_view())


@faust_app.page("/models/{action}")
class ChangeModel(View):
    """``POST /models/promote`` and ``POST /models/rollback``: publish the event every worker (this one too)
    follows; 409 with the reason when it cannot be made."""

    async def post(self, request: Request, action: str) -> Response:
        try:
            raw = await request.read()
            body = loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except Exception:
            return self.json({"error": "invalid_json", "reason": "the body is not a JSON object"}, status=400)
        by = f"http:{getattr(request, 'remote', None) or 'unknown'}"
        now = isoformat_utc(time.time())
        reason = str(body.get("reason", ""))
        try:
            if action == "promote":
                version, follow = str(body.get("version", "")), bool(body.get("follow", False))
                event = promote_event(follower.registry, version, by=by, reason=reason, timestamp=now, follow=follow)
            elif action == "rollback":
                event = rollback_event(follower.registry, by=by, reason=reason, timestamp=now)
            else:
                return self.json({"error": "not_found", "reason": f"no action {action!r}"}, status=404)
        except PromotionRefused as exc:
            return self.json({"error": "refused", "reason": str(exc)}, status=409)
        await publish_event(settings, event)
        return self.json(event)
