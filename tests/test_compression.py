"""OUTPUT_COMPRESSION: read and checked with the settings, applied by the producer presets only; the transactional
preset's record batches."""

from __future__ import annotations

import asyncio

import pytest

from app.kafka.clients import TRANSACTION_BATCH_BYTES, Connection, plain_producer, transactional_producer
from app.settings import load


def test_the_setting_defaults_to_none_and_refuses_an_unknown_codec_by_name() -> None:
    # none by default: zstd in 512 KiB batches cuts predictions to a ninth and costs no throughput, but its p99 at
    # 200 tx/s was not shown to be no worse (BENCHMARKS.md, "Bytes per transaction")
    assert load({}).output_compression == "none"
    assert load({"OUTPUT_COMPRESSION": "None"}).output_compression == "none"
    with pytest.raises(ValueError, match="OUTPUT_COMPRESSION"):
        load({"OUTPUT_COMPRESSION": "brotli"})


@pytest.mark.parametrize(("setting", "codec"), [("none", None), ("lz4", "lz4"), ("zstd", "zstd")])
def test_every_producer_preset_compresses_with_the_connection_s_codec(setting: str, codec: str | None) -> None:
    connection = Connection.of(load({"OUTPUT_COMPRESSION": setting}))
    assert "compression_type" not in connection.options()  # consumers and admin clients get no producer option

    async def codecs() -> list[str | None]:
        producers = [transactional_producer(connection, "t", transaction_timeout_ms=30_000),
                     plain_producer(connection)]  # fmt: skip
        return [p._compression_type for p in producers]  # never started: nothing to close

    assert asyncio.run(codecs()) == [codec, codec]


def test_a_transactional_producer_batches_a_transaction_s_predictions_of_a_partition_together() -> None:
    # 500 decisions over 4 partitions, about 1,400 bytes a prediction: aiokafka's default (16 KiB) would cut them
    # into about ten batches, each a produce round trip of its own and a small compression
    prediction = b'{"features":{' + b",".join(b'"feature_%d":%d.125' % (i, i) for i in range(70)) + b"}}"
    assert 1_300 < len(prediction) < 1_500

    async def appended() -> int:
        producer = transactional_producer(Connection.of(load({})), "t", transaction_timeout_ms=30_000)
        batch = producer.create_batch()  # never started: nothing to close
        return sum(batch.append(key=b"k", value=prediction, timestamp=None) is not None for _ in range(125))

    assert asyncio.run(appended()) == 125
    assert TRANSACTION_BATCH_BYTES >= 125 * 1_500
