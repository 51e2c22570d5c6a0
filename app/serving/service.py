"""Synchronous scoring and feature lookup, for REST (:mod:`app.serving.web`) and gRPC (:mod:`.grpc_api`) alike.

Each answer is a :class:`Reply`: an HTTP status and a JSON-able body, which gRPC maps to its codes (400
INVALID_ARGUMENT, 404 NOT_FOUND, 503 UNAVAILABLE). A prediction is what the stream would publish for the same
transaction and state (:func:`app.decisions.assess.assess`, the model and the rule set the scorer holds at that
moment: REST and gRPC apply the same rules as the stream), and nothing changes: the customer's new state is
dropped. A customer whose partition another worker holds is answered by that worker (the request is forwarded over
HTTP to its advertised URL, one hop); when the owner cannot be found or reached, the answer is 503 with the reason,
never features computed from an empty state.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
from aiokafka import TopicPartition

from app import metrics
from app.decisions.assess import assess
from app.decisions.scorer import Scorer
from app.features.engine import CustomerState, customer_windows_at, terminal_windows_at
from app.records import ID_MAX_CHARS, InvalidMessage, parse_transaction
from app.serialization import isoformat_utc, loads
from app.serving.routing import PartitionOwners, partition_for_key
from app.settings import Settings
from app.state.customers import PartitionState
from app.state.terminals import TerminalAggregates

log = logging.getLogger(__name__)

FORWARDED_HEADER = "X-Fraud-Forwarded-By"  # set on a forwarded request: the owner answers, never forwards again
WORKER_HEADER = "X-Fraud-Worker"  # on every answer: the worker whose state answered
FORWARD_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Reply:
    """``status``: 200, 400 (a dead-letter code), 404, 500 or 503; ``worker``: whose state answered."""

    status: int
    body: dict[str, Any]
    worker: str = ""


def error(status: int, code: str, reason: str, worker: str = "") -> Reply:
    return Reply(status, {"error": code, "reason": reason}, worker)


class DecisionGroup(Protocol):
    """What serving reads of the decisions loop (:class:`app.kafka.transactional.TransactionalLoop`)."""

    ready_partitions: set[TopicPartition]

    @property
    def consumer(self) -> Any: ...


class Serving:
    def __init__(
        self,
        settings: Settings,
        scorer: Scorer,
        aggregates: TerminalAggregates,
        decisions: DecisionGroup,
        owners: PartitionOwners,
        is_ready: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.scorer = scorer
        self.aggregates = aggregates
        self.decisions = decisions
        self.owners = owners
        self.is_ready = is_ready
        self.worker = settings.worker_id
        self._session: aiohttp.ClientSession | None = None

    # ---- answers -------------------------------------------------------------------------------------------

    async def predict(self, raw: bytes | None, *, forwarded: bool = False) -> Reply:
        """Score one transaction (the contract's JSON bytes) as the stream would, changing nothing."""
        if not self.is_ready():
            return self._not_ready()
        try:
            tx = parse_transaction(raw, self.settings.max_message_bytes, self.settings.max_amount)
        except InvalidMessage as exc:
            return error(400, exc.code, exc.reason, self.worker)
        partition = self.partition_of(tx.customer_id)
        state = self._local(partition)
        if state is None:
            return await self._forward(partition, "POST", "/predict", raw or b"", forwarded)
        try:
            prediction, _ = assess(
                tx,
                peek_customer(state, tx.customer_id),
                self.aggregates,
                self.scorer.model,  # read now: a promoted model replaces the scorer's
                lateness_s=self.settings.lateness_s,
                threshold=self.settings.decision_threshold,
                received_at_s=time.time(),
                rules=self.scorer.rules,  # likewise the rule set and lists in force
                review_cost=self.scorer.review_cost,
            )
        except InvalidMessage as exc:  # duplicate_transaction
            return error(400, exc.code, exc.reason, self.worker)
        except Exception as exc:  # the stream would dead-letter it as scoring_error
            log.exception("synchronous scoring failed")
            return error(500, "scoring_error", repr(exc)[:500], self.worker)
        return Reply(200, dataclasses.asdict(prediction), self.worker)

    async def customer_features(self, customer_id: str, *, forwarded: bool = False) -> Reply:
        """The customer's windows at its newest event time, from the worker that holds it."""
        if not self.is_ready():
            return self._not_ready()
        bad = invalid_id("customer_id", customer_id, self.worker)
        if bad is not None:
            return bad
        partition = self.partition_of(customer_id)
        state = self._local(partition)
        if state is None:
            path = f"/features/customers/{quote(customer_id, safe='')}"
            return await self._forward(partition, "GET", path, b"", forwarded)
        customer = peek_customer(state, customer_id)
        if not customer:
            return error(404, "unknown_customer", f"no state for customer {customer_id!r}", self.worker)
        t, x = customer_windows_at(customer)
        body = {"entity": "customer", "id": customer_id, "event_time": isoformat_utc(t), "features": x}
        return Reply(200, body, self.worker)

    def terminal_features(self, terminal_id: str) -> Reply:
        """The terminal's windows at its newest event time (every worker holds every terminal)."""
        if not self.is_ready():
            return self._not_ready()
        bad = invalid_id("terminal_id", terminal_id, self.worker)
        if bad is not None:
            return bad
        terminal = self.aggregates.peek(terminal_id)
        if not terminal:
            return error(404, "unknown_terminal", f"no state for terminal {terminal_id!r}", self.worker)
        t, x = terminal_windows_at(terminal, self.aggregates.frauds_known_s, self.aggregates.delay_days)
        body = {"entity": "terminal", "id": terminal_id, "event_time": isoformat_utc(t), "features": x}
        return Reply(200, body, self.worker)

    def model_info(self) -> Reply:
        model = self.scorer.model
        body = {
            "name": model.name,
            "version": model.version,
            "labels_learned": model.labels_learned,
            "threshold": self.settings.decision_threshold,
        }
        return Reply(200, body, self.worker)

    # ---- routing -------------------------------------------------------------------------------------------

    def partition_of(self, customer_id: str) -> int:
        """The ``transactions`` partition of a customer's key (the topic's real partition count when known)."""
        consumer = self.decisions.consumer
        known = consumer.partitions_for_topic(self.settings.transactions_topic) if consumer is not None else None
        return partition_for_key(customer_id.encode(), len(known) if known else self.settings.partitions)

    def _local(self, partition: int) -> PartitionState | None:
        """This worker's committed state of ``partition``; None when it does not hold it (or not restored yet)."""
        if TopicPartition(self.settings.transactions_topic, partition) not in self.decisions.ready_partitions:
            return None
        return self.scorer.partitions.get(partition)

    def _not_ready(self) -> Reply:
        return error(503, "not_ready", "the worker is starting or lost the broker (see /ready)", self.worker)

    async def _forward(self, partition: int, method: str, path: str, body: bytes, forwarded: bool) -> Reply:
        """Ask the owner of ``partition``; a stale owner (rebalanced away) makes us ask the group again, once."""
        if forwarded:
            return error(503, "not_owner", f"partition {partition} is not held here (a rebalance under way?)",
                         self.worker)  # fmt: skip
        for attempt in range(2):
            try:
                url = await self.owners.owner_url(partition)
            except Exception as exc:
                log.warning("owner lookup of partition %s failed: %r", partition, exc)
                return error(503, "owner_unknown", f"the owner of partition {partition} could not be looked up: "
                             f"{exc!r}", self.worker)  # fmt: skip
            if url is None or url == self.settings.web_advertised_url:  # nobody, or us while restoring
                return error(503, "owner_unknown", f"no worker holds partition {partition} now", self.worker)
            reply = await self._request(url, method, path, body)
            if reply.status == 503 and reply.body.get("error") == "not_owner" and attempt == 0:
                self.owners.forget()
                continue
            metrics.SYNC_FORWARDED.inc()
            return reply
        return reply

    async def _request(self, url: str, method: str, path: str, body: bytes) -> Reply:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S))
        headers = {FORWARDED_HEADER: self.worker, "Content-Type": "application/json"}
        try:
            async with self._session.request(method, url + path, data=body, headers=headers) as response:
                payload = loads(await response.read())
                return Reply(response.status, payload, response.headers.get(WORKER_HEADER, ""))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("forwarding to %s failed: %r", url, exc)
            return error(503, "owner_unreachable", f"the owner at {url} did not answer: {exc!r}", self.worker)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        await self.owners.close()


def peek_customer(state: PartitionState, customer_id: str) -> CustomerState:
    """A customer's committed state, read without changing what the partition's cache keeps."""
    return state.peek(customer_id)


def invalid_id(name: str, value: str, worker: str) -> Reply | None:
    """The contract's id rule (1 to 128 characters) as a 400 ``invalid_id``, like a dead letter's."""
    if 1 <= len(value) <= ID_MAX_CHARS:
        return None
    return error(400, "invalid_id", f"'{name}' must have 1 to {ID_MAX_CHARS} characters, got {len(value)}", worker)
