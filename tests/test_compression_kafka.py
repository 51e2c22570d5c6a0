"""OUTPUT_COMPRESSION on a real broker: the worker's predictions are stored compressed, and both the project's
consumer and an independent librdkafka client (kcat) read back the same bytes."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords

from app.kafka.clients import at_least, consume, produce
from app.serialization import dumps
from tests.cases import transaction
from tests.conftest import WorkerProcess

pytestmark = pytest.mark.kafka

CODECS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}  # a record batch's attributes & 0x7
READ_COMMITTED = 1


async def _batch_codecs(bootstrap: str, topic: str) -> list[int]:
    """The codec of every data batch of ``topic`` as the broker stores and serves it (a raw fetch from offset 0;
    commit markers left out)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()
        codecs = []
        for partition in sorted(cluster.partitions_for_topic(topic) or ()):
            leader = cluster.leader_for_partition(TopicPartition(topic, partition))
            request = FetchRequest(100, 1, 8 * 2**20, READ_COMMITTED, [(topic, [(partition, 0, 8 * 2**20)])])
            response = await consumer._client.send(leader, request)
            for _topic, partitions in response.topics:
                for _partition, error_code, _highwater, *data in partitions:
                    assert error_code == 0, f"fetch of {topic}-{partition}: error {error_code}"
                    records = MemoryRecords(data[-1])
                    while (batch := records.next_batch()) is not None:
                        if not batch.is_control_batch:
                            codecs.append(batch.compression_type)
        return codecs
    finally:
        await consumer.stop()


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_compressed_predictions_read_back_the_same_by_the_consumer_and_by_kcat(
    codec: str | None, worker_factory: Callable[..., WorkerProcess], kafka_bootstrap: str
) -> None:
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    assert kcat, "kcat is not installed: run scripts/install_system_packages.sh (Debian package kcat)"
    expected_codec = codec
    worker = worker_factory(partitions=1, OUTPUT_COMPRESSION=codec)
    worker.wait_ready()
    topic = worker.topics["PREDICTIONS_TOPIC"]
    produce(kafka_bootstrap, worker.topics["TRANSACTIONS_TOPIC"],
            [(str(tx["customer_id"]).encode(), dumps(tx)) for tx in map(transaction, range(20))])  # fmt: skip
    ours = {(r.partition, r.offset): (r.key, r.value) for r in consume(kafka_bootstrap, topic, at_least(20))}
    assert len(ours) == 20

    codecs = asyncio.run(_batch_codecs(kafka_bootstrap, topic))
    assert codecs and set(codecs) == {CODECS[expected_codec]}, f"stored batches' codecs: {codecs}"

    out = subprocess.run(
        [kcat, "-C", "-b", kafka_bootstrap, "-t", topic, "-X", "isolation.level=read_committed", "-o", "beginning",
         "-e", "-q", "-J"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    theirs = {}
    for line in out.stdout.decode().splitlines():
        message = json.loads(line)
        theirs[(message["partition"], message["offset"])] = (message["key"].encode(), message["payload"].encode())
    assert theirs == ours
