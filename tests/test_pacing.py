"""Catch-up pacing without a broker: a record is released only when every older record of the other partitions
(more than the skew older) is committed, not merely taken, whatever order the commits come in."""

from __future__ import annotations

import random

from app.kafka.pacing import CatchUpPacer


def test_no_partition_runs_ahead_of_another_ones_uncommitted_records() -> None:
    rng = random.Random(7)
    skew_s = 10.0
    pacer = CatchUpPacer(max_skew_s=skew_s)
    partitions = ["a", "b", "c"]
    backlog = {p: sorted(rng.uniform(0, 500) for _ in range(300)) for p in partitions}
    committed: dict[str, list[float]] = {p: [] for p in partitions}
    queued: dict[str, list[float]] = {p: [] for p in partitions}  # taken, not committed, in order
    released = 0
    for _ in range(20_000):
        # Fetch a few records of a random partition, take what may go, commit some queued ones in random order.
        p = rng.choice(partitions)
        if backlog[p]:
            n = rng.randint(1, 20)
            fetched, backlog[p] = backlog[p][:n], backlog[p][n:]
            pacer.add(p, [(t, t) for t in fetched])
        for q, records in pacer.take(backlog={x for x in partitions if backlog[x]}).items():
            for t in records:
                for other in partitions:
                    if other == q:
                        continue
                    older = [u for u in queued[other] if u < t - skew_s]
                    assert not older, f"{q} released {t} while {other} had {older[:3]} uncommitted"
                queued[q].append(t)
                released += 1
        q = rng.choice(partitions)
        if queued[q] and rng.random() < 0.5:
            k = rng.randint(1, len(queued[q]))
            committed[q] += queued[q][:k]
            queued[q] = queued[q][k:]
            pacer.done(q, k)
        if not any(backlog.values()) and not pacer.held() and not any(queued.values()):
            break
    assert released == 900  # everything went, nothing was held for ever
