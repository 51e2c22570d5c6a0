"""Pages on the Faust web server: ``/metrics`` (Prometheus), ``/ready`` (503 until consuming), ``/health``."""

from __future__ import annotations

from typing import cast

from aiohttp import web
from faust.web import Request, Response, View

from app import metrics, operator_page  # noqa: F401 - the operator page (/, /status.json) registers itself
from app.worker import faust_app, is_ready, settings


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
