"""The report of ``scripts/scale.py`` (``scripts/bench/scale_report.py``): its ratios of each size to the first and
its tables, on crafted results. Pure: the benchmark itself is not run."""

from __future__ import annotations

from typing import Any

import pytest
from bench import scale_report  # scripts/ is on sys.path (tests/conftest.py)

MIB = 2**20


def _size(scale: float, tx: int, rss_mib: float, tps: float, restart_s: float, p99: float | None) -> dict[str, Any]:
    held = None
    if p99 is not None:
        held = {"latency_ms": {"p99": p99}, "publisher_kept_rate": True, "received": 10, "published": 10,
                "publish_tps": 200.0}  # fmt: skip
    return {
        "scale": scale, "customers": int(2000 * scale), "terminals": int(4000 * scale), "days": 40,
        "transactions": tx,
        "rss": {"steady_bytes": int(rss_mib * MIB), "peak_bytes": int(rss_mib * 1.1 * MIB)},
        "throughput": {"throughput_tps": tps},
        "restart": {"ready_s": restart_s},
        "replacement_same_id": {"ready_s": 2 * restart_s},
        "replacement_new_id": None,  # not measured: its ratio is None, not an error
        "held_before_kill": held,
        "held": held,
        "data_dir": {"total_bytes": 0, "files": {"terminal-aggregates.pkl": 0}},  # zero: no ratio over it
        "topics": {"predictions": {"log_bytes": 13 * tx, "bytes_per_tx": 13.0, "offsets_per_tx": 1.01}},
        "topics_total": {"log_bytes": 20 * tx, "bytes_per_tx": 20.0, "offsets_per_tx": 5.0},
    }  # fmt: skip


def test_ratios_are_each_size_over_the_first() -> None:
    small = _size(1, 1000, 400, 3000, 4.0, 50.0)
    big = _size(10, 10_000, 1200, 2000, 8.0, 75.0)
    (row,) = scale_report.ratios([small, big])
    assert (row["scale"], row["over_scale"]) == (10, 1)
    assert row["transactions"] == pytest.approx(10.0)
    assert row["rss_steady"] == pytest.approx(3.0, rel=1e-6)
    assert row["throughput"] == pytest.approx(2000 / 3000)
    assert row["restart_ready"] == pytest.approx(2.0)
    assert row["replacement_same_id_ready"] == pytest.approx(2.0)
    assert row["held_p99_replacement"] == pytest.approx(1.5)
    assert row["topics_on_disk"] == pytest.approx(10.0)
    assert row["replacement_new_id_ready"] is None  # missing on both sides
    assert row["data_dir"] is None  # zero on the first size


def test_a_missing_figure_gives_no_ratio() -> None:
    small = _size(1, 1000, 400, 3000, 4.0, None)
    big = _size(10, 10_000, 1200, 2000, 8.0, 75.0)
    (row,) = scale_report.ratios([small, big])
    assert row["held_p99_first_worker"] is None and row["held_p99_replacement"] is None
    assert scale_report.ratios([small]) == [] and scale_report.ratios([]) == []


def test_the_summary_has_a_row_per_size_and_per_ratio() -> None:
    sizes = [_size(1, 1000, 400, 3000, 4.0, 50.0), _size(10, 10_000, 1200, 2000, 8.0, 75.0)]
    report = {"sizes": sizes, "ratios": scale_report.ratios(sizes), "held_rate_tps": 200.0}
    text = "\n".join(scale_report.summary(report))
    assert "| 1x | 2,000 / 4,000 / 40 | 1,000 | 400 / 440 | 3,000 | 4.0 | 8.0 | n/a | 50.0 / 50.0 |" in text
    assert "| 10x / 1x |  | 10.00 | 3.00 / 3.00 | 0.67 | 2.00 | 2.00 | n/a | 1.50 / 1.50 |" in text
    assert "| predictions | 0.0 / 13 / 1.010 | 0.1 / 13 / 1.010 |" in text


def test_publications_are_told_apart_by_the_gap_between_their_records() -> None:
    # two publications 10 s apart: the state's chunks, the changelog and the audit of each within a few ms
    buckets = [
        (100.000, "audit", 500, 10), (100.002, "labels", 90, 10), (100.004, "state", 4000, 3),
        (110.000, "labels", 9, 1), (110.003, "state", 3000, 2),
    ]  # fmt: skip
    pubs = scale_report.publications(buckets)
    assert [(p["total"], p["state"], p["labels"], p["audit"]) for p in pubs] == [
        (4590, 4000, 90, 500),
        (3009, 3000, 9, 0),
    ]
    summary = scale_report.published_summary(buckets, interval_s=10)
    assert summary["publications"] == 2
    assert summary["per_publication"]["state"] == {"median": 3500, "max": 4000, "n": 2}
    assert summary["per_interval"]["total"]["max"] == 4590
    assert summary["bytes_per_label_learned"] == pytest.approx((4590 + 3009) / 10)  # 10 pairs on the audit topic
    assert summary["bytes"]["total"] == 7599


def test_intervals_without_a_publication_count_as_zero() -> None:
    buckets = [(0.0, "state", 100, 1), (35.0, "state", 100, 1)]
    assert [i["total"] for i in scale_report.per_interval(buckets, 10)] == [100, 0, 0, 100]
    # the spread is over the intervals with a publication: an idle trainer publishes nothing
    assert scale_report.published_summary(buckets, 10)["per_interval"]["total"] == {"median": 100, "max": 100, "n": 2}
    assert scale_report.published_summary([], 10)["per_publication"]["total"]["median"] is None


def test_the_trainer_table_has_its_ratios() -> None:
    sizes = [_size(1, 1000, 400, 3000, 4.0, 50.0), _size(10, 10_000, 1200, 2000, 8.0, 75.0)]
    for s, rss_mib, state in ((sizes[0], 200, 40_000), (sizes[1], 220, 44_000)):
        s["trainer"] = {
            "rss": {"steady_bytes": rss_mib * MIB, "peak_bytes": 2 * rss_mib * MIB},
            "published": scale_report.published_summary([(0.0, "state", state, 1), (10.0, "state", state, 1)], 10),
            "restore": {"active_s": 2.0, "learned_s": 2.5, "published_s": 11.0},
            "takeover": {"active_s": 12.0, "learned_s": 13.0, "published_s": 20.0},
        }
    (row,) = scale_report.ratios(sizes)
    assert row["trainer_rss_steady"] == pytest.approx(1.1)
    assert row["state_per_publication_median"] == pytest.approx(1.1)
    assert row["trainer_takeover_learned"] == pytest.approx(1.0)
    text = "\n".join(scale_report.summary({"sizes": sizes, "ratios": [row], "held_rate_tps": 200.0}))
    assert "| 10x | 220 / 440 | 2 | 43.0 / 43.0 / 43.0 |" in text
    assert "| 10x / 1x | 1.10 / 1.10 |" in text
    assert "12.0 / 13.0 / 20.0 |" in text
