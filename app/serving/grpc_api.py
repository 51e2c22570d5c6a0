"""The gRPC face of :mod:`app.serving.service` (``proto/fraud_serving.proto``), with the standard health and reflection
services, on the worker's own event loop (``grpc.aio``, started and stopped with the decision path).

Same answers as REST: a :class:`app.serving.service.Reply`'s status becomes the gRPC code (400 INVALID_ARGUMENT with
details ``"<code>: <reason>"`` and trailing metadata ``fraud-error``, 404 NOT_FOUND, 503 UNAVAILABLE, 500
INTERNAL). The health service says SERVING while the worker is ready (checked when asked, and every second).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from app import metrics
from app.serving.protos import fraud_serving_pb2 as pb
from app.serving.protos import fraud_serving_pb2_grpc as pb_grpc
from app.serving.service import Reply, Serving

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FraudServing"].full_name
STATUS_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}


def status_code(reply: Reply) -> grpc.StatusCode:
    return STATUS_CODES.get(reply.status, grpc.StatusCode.UNKNOWN)


def prediction_message(body: dict[str, Any]) -> pb.Prediction:
    return pb.Prediction(
        tx_id=body["tx_id"],
        customer_id=body["customer_id"],
        terminal_id=body["terminal_id"],
        timestamp=body["timestamp"],
        fraud_probability=body["fraud_probability"],
        is_fraud=body["is_fraud"],
        threshold=body["threshold"],
        model_version=body["model_version"],
        feature_set=body["feature_set"],
        reasons=body["reasons"],
        features=body["features"],
        latency_ms=body["latency_ms"],
        scored_at=body["scored_at"],
        decision=body["decision"],
        rules=body["rules"],
        shadow_rules=body["shadow_rules"],
        rule_set_version=body["rule_set_version"],
        lists_version=body["lists_version"],
    )


class FraudServing(pb_grpc.FraudServingServicer):  # type: ignore[misc]
    def __init__(self, serving: Serving) -> None:
        self.serving = serving

    async def _fail(self, context: grpc.aio.ServicerContext, reply: Reply) -> None:
        code = str(reply.body.get("error", ""))
        context.set_trailing_metadata((("fraud-error", code),))
        await context.abort(status_code(reply), f"{code}: {reply.body.get('reason', '')}")

    async def _predict(self, request: pb.PredictRequest) -> Reply:
        started = time.perf_counter()
        reply = await self.serving.predict(request.transaction_json)
        metrics.SYNC_PREDICT_LATENCY.labels("grpc").observe(time.perf_counter() - started)
        metrics.SYNC_REQUESTS.labels("grpc", "predict", str(reply.status)).inc()
        return reply

    async def Predict(self, request: pb.PredictRequest, context: grpc.aio.ServicerContext) -> pb.Prediction:  # noqa: N802
        reply = await self._predict(request)
        await context.send_initial_metadata((("fraud-worker", reply.worker),))
        if reply.status != 200:
            await self._fail(context, reply)
        return prediction_message(reply.body)

    async def PredictStream(  # noqa: N802
        self, request_iterator: AsyncIterator[pb.PredictRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.PredictReply]:
        async for request in request_iterator:
            reply = await self._predict(request)
            if reply.status == 200:
                yield pb.PredictReply(prediction=prediction_message(reply.body))
            else:
                error = pb.Error(code=str(reply.body.get("error", "")), reason=str(reply.body.get("reason", "")),
                                 status=status_code(reply).value[0])  # fmt: skip
                yield pb.PredictReply(error=error)

    async def GetFeatures(self, request: pb.FeaturesRequest, context: grpc.aio.ServicerContext) -> pb.Features:  # noqa: N802
        which = request.WhichOneof("entity")
        if which == "customer_id":
            reply = await self.serving.customer_features(request.customer_id)
        elif which == "terminal_id":
            reply = self.serving.terminal_features(request.terminal_id)
        else:
            reply = Reply(400, {"error": "missing_field", "reason": "set customer_id or terminal_id"})
        metrics.SYNC_REQUESTS.labels("grpc", "features", str(reply.status)).inc()
        await context.send_initial_metadata((("fraud-worker", reply.worker),))
        if reply.status != 200:
            await self._fail(context, reply)
        body = reply.body
        return pb.Features(entity=body["entity"], id=body["id"], event_time=body["event_time"],
                           features=body["features"])  # fmt: skip

    async def GetModelInfo(self, request: pb.ModelInfoRequest, context: grpc.aio.ServicerContext) -> pb.ModelInfo:  # noqa: N802
        body = self.serving.model_info().body
        metrics.SYNC_REQUESTS.labels("grpc", "model", "200").inc()
        return pb.ModelInfo(name=body["name"], version=body["version"], labels_learned=body["labels_learned"],
                            threshold=body["threshold"])  # fmt: skip


class GrpcServer:
    """The server and the health status it keeps in step with readiness."""

    def __init__(self, serving: Serving, bind: str, port: int, is_ready: Callable[[], bool]) -> None:
        self.serving = serving
        self.address = f"{bind}:{port}"
        self.is_ready = is_ready
        self.server: grpc.aio.Server | None = None
        self.health = health.aio.HealthServicer()
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # No SO_REUSEPORT (gRPC's default): a second worker on the same port must fail to bind, not share it.
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        pb_grpc.add_FraudServingServicer_to_server(FraudServing(self.serving), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server,
        )
        server.add_insecure_port(self.address)  # raises when the port is taken
        await server.start()
        self.server = server
        await self._set_health()
        self._watch = asyncio.ensure_future(self._follow_readiness())
        log.info("gRPC serving on %s", self.address)

    async def _set_health(self) -> None:
        response = health_pb2.HealthCheckResponse
        status = response.SERVING if self.is_ready() else response.NOT_SERVING
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    async def _follow_readiness(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self._set_health()

    async def stop(self, grace_s: float = 2.0) -> None:
        if self._watch is not None:
            self._watch.cancel()
        server, self.server = self.server, None
        if server is not None:
            await server.stop(grace_s)
