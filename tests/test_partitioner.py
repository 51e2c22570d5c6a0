"""The producers' partitioner places every key where aiokafka's default partitioner does."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from app.kafka.partitioner import default_partitioner, murmur2


def test_murmur2_is_aiokafkas_for_every_length_and_byte() -> None:
    rng = random.Random(16)
    for length in range(0, 70):
        for _ in range(300):
            key = bytes(rng.randrange(256) for _ in range(length))
            assert murmur2(key) == aiokafka_murmur2(key), key
    for key in (b"\xff" * 9, b"\x80\x00\x7f", "tx-é".encode()):
        assert murmur2(key) == aiokafka_murmur2(key)


def test_partition_is_the_default_partitioners() -> None:
    reference = DefaultPartitioner()
    for partitions in (1, 3, 4, 12):
        every = list(range(partitions))
        for i in range(2000):
            key = f"{i:012d}".encode()
            assert default_partitioner(key, every, every) == reference(key, every, every)


def test_a_record_without_a_key_goes_to_an_available_partition() -> None:
    assert {default_partitioner(None, [0, 1, 2], [2]) for _ in range(50)} == {2}
    assert default_partitioner(None, [0, 1, 2], []) in {0, 1, 2}
