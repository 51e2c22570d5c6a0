"""Event-time alignment: whatever the interleaving of in-order sources, items come out in (time, tie) order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.alignment import EventTimeAligner, StreamTimeAnnouncer


@st.composite
def interleavings(draw: st.DrawFn) -> tuple[int, list[tuple[int, float, str]]]:
    """Several sources, each in event-time order (ties included); one arbitrary interleaving of them."""
    n_sources = draw(st.integers(1, 4))
    queues = []
    for s in range(n_sources):
        times = sorted(draw(st.lists(st.integers(0, 30), max_size=15)))
        queues.append([(s, float(t), f"{s}-{i:02d}") for i, t in enumerate(times)])
    merged = []
    while any(queues):
        source = draw(st.sampled_from([q for q in queues if q]))
        merged.append(source.pop(0))
    return n_sources, merged


@settings(max_examples=300, deadline=None)
@given(interleavings())
def test_in_order_sources_come_out_in_global_order_whatever_the_interleaving(
    case: tuple[int, list[tuple[int, float, str]]],
) -> None:
    n_sources, arrivals = case
    aligner: EventTimeAligner[str] = EventTimeAligner(n_sources, max_wait_s=3600.0)
    released: list[tuple[str, bool]] = []
    for source, t, tie in arrivals:
        aligner.add(tie, t, tie, source=source, source_watermark_s=t, now_s=0.0)
        released.extend(aligner.release(now_s=0.0))
    for source in range(n_sources):  # the end of the stream: every source has read everything
        aligner.observe(source, float("inf"), idle=True)
    released.extend(aligner.release(now_s=0.0))
    by_tie = {tie: t for _, t, tie in arrivals}
    assert [tie for tie, _ in released] == sorted(by_tie, key=lambda tie: (by_tie[tie], tie))
    assert not any(forced for _, forced in released) and len(aligner) == 0


def test_a_source_that_never_speaks_holds_everything_until_the_maximum_wait() -> None:
    aligner: EventTimeAligner[str] = EventTimeAligner(2, max_wait_s=5.0)
    aligner.add("b", 20.0, "b", source=0, source_watermark_s=25.0, now_s=0.0)
    aligner.add("a", 10.0, "a", source=0, source_watermark_s=25.0, now_s=1.0)
    assert aligner.release(now_s=4.9) == []  # source 1 has said nothing: it may still send something earlier
    assert aligner.oldest_wait_s(now_s=4.9) == 4.9
    # "b" waited 5 s: it goes, and "a" before it, so the order holds even when forced
    assert aligner.release(now_s=5.0) == [("a", True), ("b", True)]


def test_an_idle_source_is_not_waited_for_and_a_live_one_again_is() -> None:
    aligner: EventTimeAligner[str] = EventTimeAligner(2, max_wait_s=60.0)
    aligner.observe(1, float("-inf"), idle=True)
    aligner.add("a", 10.0, "a", source=0, source_watermark_s=11.0, now_s=0.0)
    assert aligner.release(now_s=0.0) == [("a", False)]
    aligner.observe(1, 12.0, idle=False)
    aligner.add("b", 13.0, "b", source=0, source_watermark_s=14.0, now_s=0.0)
    assert aligner.release(now_s=0.0) == []  # source 1 is live again and only at 12
    assert aligner.frontier_s == 12.0


def test_heartbeats_go_only_where_they_change_something() -> None:
    announcer = StreamTimeAnnouncer()
    assert announcer.due(source=0, watermark_s=5.0, idle=False, targets=range(2)) == [0, 1]
    for target in (0, 1):
        announcer.heard(source=0, target=target, watermark_s=5.0, idle=False)
    assert announcer.due(source=0, watermark_s=5.0, idle=False, targets=range(2)) == []
    assert announcer.due(source=0, watermark_s=6.0, idle=False, targets=range(2)) == [0, 1]
    announcer.heard(source=0, target=0, watermark_s=6.0, idle=True)
    assert announcer.due(source=0, watermark_s=9.0, idle=True, targets=range(2)) == [1]  # idle: time moot
