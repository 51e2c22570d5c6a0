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

import faust
from aiohttp import web
from faust.web import Request, Response, View

from app import metrics
from app.components import Components
from app.monitoring.monitor import current_health
from app.serialization import dumps
from app.serving.operator_status import rule_rows, status_document

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATUS_MAX_AGE_S = 1.0
_NO_STORE = {"Cache-Control": "no-store"}


class StatusCache:
    """``/status.json``'s body, rebuilt when older than ``STATUS_MAX_AGE_S`` (monotonic seconds)."""

    def __init__(self, components: Components) -> None:
        self.components = components
        self.built_at_s = float("-inf")
        self.body = b""

    def body_at(self, now_s: float) -> bytes:
        if now_s - self.built_at_s < STATUS_MAX_AGE_S:
            return self.body
        components = self.components
        health = current_health(components, now_s)  # the monitor's own event: the page and the topic never disagree
        document = status_document(
            health=health,
            ready=components.is_ready(),
            decision_threshold=components.settings.decision_threshold,
            # the labels' are the trainer process's, from its last /status
            dead_letters={**metrics.counts(metrics.DEAD_LETTERS), **components.trainer.dead_letters()},
            outcomes=metrics.counts(metrics.TRANSACTIONS),
            predicted_fraud=sum(metrics.counts(metrics.PREDICTED_FRAUD).values()),
            high_scores=components.scorer.high_scores,
            rules=rule_rows(
                components.scorer.rules.rule_set,
                components.scorer.rule_hits.counts(now_s),
                metrics.counts(metrics.RULE_MATCHES),
            ),  # fmt: skip
        )
        self.body, self.built_at_s = dumps(document), now_s
        return self.body


def _static(body: bytes, content_type: str) -> Response:
    return cast(Response, web.Response(body=body, content_type=content_type, charset="utf-8", headers=_NO_STORE))


def register(app: faust.App, components: Components) -> None:
    """Add ``/``, ``/operator.js`` and ``/status.json`` to the app's web server."""
    page_html = (STATIC_DIR / "operator.html").read_bytes()
    page_js = (STATIC_DIR / "operator.js").read_bytes()
    cache = StatusCache(components)

    @app.page("/")
    async def operator_page(self: View, request: Request) -> Response:
        return _static(page_html, "text/html")

    @app.page("/operator.js")
    async def operator_script(self: View, request: Request) -> Response:
        return _static(page_js, "text/javascript")

    @app.page("/status.json")
    async def status_json(self: View, request: Request) -> Response:
        return _static(cache.body_at(time.monotonic()), "application/json")
