"""Pages on the Faust web server: ``/metrics`` (Prometheus: the worker's and its trainer process's), ``/ready``
(503 until consuming), ``/health``, the model registry: ``GET /models``, ``POST /models/promote``
(``{"version": ..., "reason": ...}``) and ``POST /models/rollback``, the analysts' rules: ``GET /rules`` (the set
in force here) and ``POST /rules`` (a rule, checked as ``python -m app rules add`` checks it, then published for
every worker), and the synchronous API of
:mod:`app.serving.service`: ``POST /predict``, ``GET /features/customers/{id}``, ``GET /features/terminals/{id}``,
``GET /model`` and ``GET /openapi.json`` (``topics/openapi.json``)."""

from __future__ import annotations

import time
from typing import cast

import faust
from aiohttp import web
from faust.web import Request, Response, View

from app import metrics
from app.components import Components
from app.learning.registry import PromotionRefused, promote_event, rollback_event
from app.learning.registry_topics import publish_event
from app.rules.events import rule_event
from app.rules.ruleset import RuleRefused, rule_of
from app.serialization import dumps, isoformat_utc, loads
from app.serving import operator_page
from app.serving.service import FORWARDED_HEADER, WORKER_HEADER, Reply
from app.settings import TOPICS_DIR

OPENAPI_PATH = TOPICS_DIR / "openapi.json"


def _json(reply: Reply) -> Response:
    headers = {"Content-Type": "application/json"}
    if reply.worker:
        headers[WORKER_HEADER] = reply.worker
    return cast(Response, web.Response(body=dumps(reply.body), status=reply.status, headers=headers))


def register(app: faust.App, components: Components) -> None:
    """Add every page of the worker (the operator page's too) to the app's web server."""
    settings, follower, serving = components.settings, components.follower, components.serving
    operator_page.register(app, components)

    @app.page("/metrics")
    async def prometheus_metrics(self: View, request: Request) -> Response:
        # The worker's registry, then its trainer child's (fetched from the child, a short timeout), merged by name
        body, content_type = metrics.exposition(await components.trainer.families())
        return cast(Response, web.Response(body=body, headers={"Content-Type": content_type}))

    @app.page("/ready")
    async def ready(self: View, request: Request) -> Response:
        ok = components.is_ready()
        return self.json({"ready": ok, "worker": settings.worker_id}, status=200 if ok else 503)

    @app.page("/health")
    async def alive(self: View, request: Request) -> Response:
        return self.json({"status": "alive", "worker": settings.worker_id})

    @app.page("/models")
    async def models(self: View, request: Request) -> Response:
        return self.json(follower.models_view())

    @app.page("/models/{action}")
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
                    event = promote_event(
                        follower.registry, version, by=by, reason=reason, timestamp=now, follow=follow
                    )
                elif action == "rollback":
                    event = rollback_event(follower.registry, by=by, reason=reason, timestamp=now)
                else:
                    return self.json({"error": "not_found", "reason": f"no action {action!r}"}, status=404)
            except PromotionRefused as exc:
                return self.json({"error": "refused", "reason": str(exc)}, status=409)
            await publish_event(settings, event)
            return self.json(event)

    @app.page("/rules")
    class Rules(View):
        """``GET``: the rule set this worker decides with; ``POST``: add or replace one rule (the body: the rule's
        fields and an optional ``reason``), refused with 400 and the field, line and column, nothing published."""

        async def get(self, request: Request) -> Response:
            return self.json(components.rules.rules_view())

        async def post(self, request: Request) -> Response:
            from app.kafka.rule_topics import publish_rule

            try:
                body = loads(await request.read())
                if not isinstance(body, dict):
                    raise ValueError("not an object")
            except Exception:
                return self.json({"error": "invalid_json", "reason": "the body is not a JSON object"}, status=400)
            if not components.rules.caught_up.is_set():  # the lists a rule may name are not read yet
                return self.json({"error": "not_ready", "reason": "the rules topics are not read yet"}, status=503)
            reason = str(body.pop("reason", ""))
            try:
                rule = rule_of(body, tuple(components.rules.live.lists))
            except RuleRefused as exc:
                refusal = {"error": "rule_refused", "reason": str(exc), "field": exc.field, "line": exc.line,
                           "column": exc.column}  # fmt: skip
                return self.json(refusal, status=400)
            change = "updated" if components.rules.live.rule_set.get(rule.id) is not None else "added"
            by = f"http:{getattr(request, 'remote', None) or 'unknown'}"
            event = rule_event(rule, change, by=by, reason=reason, timestamp=isoformat_utc(time.time()))
            version = await publish_rule(settings, event)
            return self.json({**event, "version": version})

    @app.page("/predict")
    class Predict(View):
        """Score one transaction synchronously; the owner of its customer answers (forwarded once when needed)."""

        async def post(self, request: Request) -> Response:
            started = time.perf_counter()
            raw = await cast(web.Request, request).read()
            reply = await serving.predict(raw, forwarded=FORWARDED_HEADER in request.headers)
            metrics.SYNC_PREDICT_LATENCY.labels("rest").observe(time.perf_counter() - started)
            metrics.SYNC_REQUESTS.labels("rest", "predict", str(reply.status)).inc()
            return _json(reply)

    @app.page("/features/customers/{customer_id}")
    class CustomerFeatures(View):
        async def get(self, request: Request, customer_id: str) -> Response:
            reply = await serving.customer_features(customer_id, forwarded=FORWARDED_HEADER in request.headers)
            metrics.SYNC_REQUESTS.labels("rest", "features", str(reply.status)).inc()
            return _json(reply)

    @app.page("/features/terminals/{terminal_id}")
    class TerminalFeatures(View):
        async def get(self, request: Request, terminal_id: str) -> Response:
            reply = serving.terminal_features(terminal_id)
            metrics.SYNC_REQUESTS.labels("rest", "features", str(reply.status)).inc()
            return _json(reply)

    @app.page("/model")
    async def model_info(self: View, request: Request) -> Response:
        metrics.SYNC_REQUESTS.labels("rest", "model", "200").inc()
        return _json(serving.model_info())

    @app.page("/openapi.json")
    async def openapi(self: View, request: Request) -> Response:
        body = OPENAPI_PATH.read_bytes()
        return cast(Response, web.Response(body=body, headers={"Content-Type": "application/json"}))
