"""Which worker owns a customer: the partition of its key, and the owner of that partition in the decisions group.

Transactions are keyed by ``customer_id`` with the Java client's partitioner (murmur2), so a customer's state
lives with one partition of ``transactions``, held by whichever worker the ``<APP_ID>-decisions`` group gave it
to. The worker does not use Faust tables (``table_route`` does not apply): each worker puts its advertised web
URL into its decisions consumer's ``client_id``, and the owner of a partition is read from the group's
description (the coordinator's view: authoritative, follows rebalances), cached for a moment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.partitioner import murmur2

from app.kafka.clients import Connection, admin_client

log = logging.getLogger(__name__)

URL_MARK = ";web="  # client_id = "<name>;web=<advertised URL>"


def client_id_with_url(name: str, url: str) -> str:
    """The decisions consumer's ``client_id``: its name and the URL other workers forward requests to.

    >>> client_id_with_url("fraud-decisions-w1", "http://10.0.0.5:6066")
    'fraud-decisions-w1;web=http://10.0.0.5:6066'
    """
    return f"{name}{URL_MARK}{url}"


def url_of_client_id(client_id: str) -> str | None:
    """The advertised URL in a ``client_id`` (None for a client that advertises none).

    >>> url_of_client_id("fraud-decisions-w1;web=http://10.0.0.5:6066"), url_of_client_id("kcat")
    ('http://10.0.0.5:6066', None)
    """
    _, mark, url = client_id.partition(URL_MARK)
    return url if mark and url else None


def partition_for_key(key: bytes, partitions: int) -> int:
    """The Java client's default partitioner (murmur2), which the producers use for ``customer_id``.

    >>> [partition_for_key(k, 4) for k in (b"c-0", b"c-1", b"c-2")]
    [2, 3, 2]
    """
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def owners_from_members(members: Sequence[Sequence[Any]], topic: str) -> dict[int, str]:
    """Partition of ``topic`` -> advertised URL, from the members of a DescribeGroups answer.

    Every version of the answer ends a member with ``client_id, client_host, member_metadata, member_assignment``.
    """
    owners: dict[int, str] = {}
    for member in members:
        url = url_of_client_id(str(member[-4]))
        raw = member[-1]
        if url is None or not raw:
            continue
        assignment = ConsumerProtocolMemberAssignment.decode(bytes(raw))
        for tp in assignment.partitions():
            if tp.topic == topic:
                owners[tp.partition] = url
    return owners


class PartitionOwners:
    """The owner's URL of each partition of ``topic`` in ``group_id``, asked of the broker at most once per
    ``refresh_s`` and trusted for ``ttl_s``; a miss asks again (once per ``refresh_s``)."""

    def __init__(
        self,
        bootstrap_servers: str,
        group_id: str,
        topic: str,
        *,
        ttl_s: float = 2.0,
        refresh_s: float = 0.25,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.group_id = group_id
        self.topic = topic
        self.ttl_s = ttl_s
        self.refresh_s = refresh_s
        self.client_options = client_options or {}
        self._admin: AIOKafkaAdminClient | None = None
        self._owners: dict[int, str] = {}
        self._read_at_s = float("-inf")
        self._lock = asyncio.Lock()

    async def owner_url(self, partition: int) -> str | None:
        """The URL of the worker that holds ``partition`` now; None when the group gives it to nobody."""
        if time.monotonic() - self._read_at_s > self.ttl_s or partition not in self._owners:
            await self.refresh()
        return self._owners.get(partition)

    def forget(self) -> None:
        """The next lookup asks the broker (an owner answered that it no longer holds the partition)."""
        self._read_at_s = float("-inf")

    async def refresh(self) -> None:
        async with self._lock:  # one request at a time; callers that waited use its answer
            if time.monotonic() - self._read_at_s < self.refresh_s:
                return
            if self._admin is None:
                admin = admin_client(Connection(self.bootstrap_servers, self.client_options))
                await admin.start()
                self._admin = admin
            (response,) = await asyncio.wait_for(self._admin.describe_consumer_groups([self.group_id]), 5.0)
            owners: dict[int, str] = {}
            for group in response.groups:
                if group[1] == self.group_id and group[0] == 0:  # error_code 0
                    owners = owners_from_members(group[5], self.topic)
            self._owners = owners
            self._read_at_s = time.monotonic()

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            await admin.close()
