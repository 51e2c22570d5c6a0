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


class _Producer:
    """What :func:`by_partition` asks a producer: the partitions of a topic."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self.partitions = partitions

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions[topic]))


def test_outputs_go_by_topic_and_partition_in_their_order_where_the_default_partitioner_puts_them() -> None:
    import asyncio

    from app.kafka.transactional import Output, by_partition

    outputs = [Output("predictions", f"{i:012d}".encode(), b"p%d" % i) for i in range(40)]
    outputs += [Output("changelog", b"c\x1f%d" % i, None if i % 3 else b"v", 2) for i in range(10)]
    outputs += [Output("terminal-log", b"k%d" % i, b"t", i % 2) for i in range(10)]
    outputs.insert(5, Output("changelog", b"position", b"x", 2))
    placed = asyncio.run(by_partition(_Producer({"predictions": 4}), outputs))
    reference = DefaultPartitioner()
    seen = []
    for topic, partition, records in placed:
        assert partition is not None
        for o in records:
            assert o.topic == topic
            if o.partition is None:
                assert partition == reference(o.key, [0, 1, 2, 3], [0, 1, 2, 3])
            else:
                assert partition == o.partition
        seen.extend(records)
    assert sorted(map(id, seen)) == sorted(map(id, outputs))  # every output once
    for _, _, records in placed:  # each partition's records in the order they were given
        assert records == [o for o in outputs if o in records]
    assert len({(topic, partition) for topic, partition, _ in placed}) == len(placed)


def test_a_topic_with_a_record_without_key_nor_partition_is_left_to_the_producer_whole() -> None:
    import asyncio

    from app.kafka.transactional import Output, by_partition

    outputs = [
        Output("dlq", b"a", b"1"),
        Output("dlq", None, b"2"),
        Output("dlq", b"b", b"3"),
        Output("x", b"k", b"v", 0),
    ]
    placed = asyncio.run(by_partition(_Producer({}), outputs))
    assert placed == [("dlq", None, outputs[:3]), ("x", 0, outputs[3:])]
