"""The operator page: ``/`` (HTML and a small script from ``app/serving/static``) and ``GET /status.json`` it polls.

Grafana is not installable on our machines, so this page is what a person looks at on a worker. The document is
built by :func:`app.serving.operator_status.status_document` from the worker's own objects, read at request time (the
model through ``scorer.model``: a swapped model shows at once). It is computed at most once per
``STATUS_MAX_AGE_S`` whatever the number of open pages, because the health window's percentiles sort every
latency of the window on the event loop the decision path runs on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

from aiohttp import web
from faust.web import Request, Response, View

# app.monitoring.monitor and this module import each other through app.worker: its function is read at call time.
from app import metrics
from app.monitoring import monitor
from app.serialization import dumps
from app.serving.operator_status import status_document
from app.worker import faust_app, is_ready, scorer, settings

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATUS_MAX_AGE_S = 1.0
_PAGE_HTML = (STATIC_DIR / "operator.html").read_bytes()
_PAGE_JS = (STATIC_DIR / "operator.js").read_bytes()
_NO_STORE = {"Cache-Control": "no-store"}


class _StatusCache:
    """The last document's bytes and when they were built (monotonic seconds)."""

    built_at_s = float("-inf")
    body = b""


def status_body(now_s: float) -> bytes:
    """``/status.json``'s body: rebuilt when older than ``STATUS_MAX_AGE_S``."""
    if now_s - _StatusCache.built_at_s < STATUS_MAX_AGE_S:
        return _StatusCache.body
    health = monitor.current_health(now_s)  # the monitor's own event: the page and the health topic never disagree
    document = status_document(
        health=health,
        ready=is_ready(),
        decision_threshold=settings.decision_threshold,
        dead_letters=metrics.counts(metrics.DEAD_LETTERS),
        outcomes=metrics.counts(metrics.TRANSACTIONS),
        predicted_fraud=sum(metrics.counts(metrics.PREDICTED_FRAUD).values()),
        high_scores=scorer.high_scores,
    )
    _StatusCache.body, _StatusCache.built_at_s = dumps(document), now_s
    return _StatusCache.body


def _static(body: bytes, content_type: str) -> Response:
    return cast(Response, web.Response(body=body, content_type=content_type, charset="utf-8", headers=_NO_STORE))


@faust_app.page("/")
async def operator_page(self: View, request: Request) -> Response:
    return _static(_PAGE_HTML, "text/html")


@faust_app.page("/operator.js")
async def operator_script(self: View, request: Request) -> Response:
    return _static(_PAGE_JS, "text/javascript")


@faust_app.page("/status.json")
async def status_json(self: View, request: Request) -> Response:
    return _static(status_body(time.monotonic()), "application/json")
