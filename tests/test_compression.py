"""OUTPUT_COMPRESSION: read and checked with the settings, applied by the producer presets only."""

from __future__ import annotations

import asyncio

import pytest

from app.kafka.clients import Connection, plain_producer, transactional_producer
from app.settings import load


def test_the_setting_defaults_to_none_and_refuses_an_unknown_codec_by_name() -> None:
    # none by default: zstd cost the decision path about a quarter of its throughput (BENCHMARKS.md, "The house")
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
