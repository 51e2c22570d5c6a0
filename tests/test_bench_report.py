"""The report of ``scripts/benchmark.py`` over several rounds (``scripts/bench/report.py``): the workers' order
alternates, each worker's p99 is divided by the floor of its own round, and the medians are over rounds. Pure: the
benchmark itself is not run."""

from __future__ import annotations

from typing import Any

import pytest
from bench import report  # scripts/ is on sys.path (tests/conftest.py)


def _system(name: str, p99s: list[float], tps: float, round_: int) -> dict[str, Any]:
    rates = [
        {"offered_tps": rate, "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": p99, "p99.9": p99}, "received": 10,
         "published": 10, "publish_tps": rate, "publisher_kept_rate": True}
        for rate, p99 in zip((200.0, 1000.0), p99s, strict=True)
    ]  # fmt: skip
    per_tx = {"published": 10, "topics": [], "total": {"offsets": 0, "offsets_per_tx": 0.0, "records": 0,
              "records_per_tx": 0.0, "markers_or_aborted": 0, "bytes": 0}}  # fmt: skip
    return {"system": name, "run": f"{name}-{round_}", "app_id": None, "round": round_, "rates": rates,
            "max_throughput": {"throughput_tps": tps, "received": 10, "published": 10,
                               "sustained_tps_until_idle": tps},
            "peak_rss_bytes": 2**20, "messages_per_transaction": per_tx, "state_bytes": 0}  # fmt: skip


def test_the_workers_order_alternates_and_the_passthroughs_stay_first() -> None:
    names = [("passthrough", None), ("passthrough-eos", None), ("worker@abc", None), ("worker", None)]
    orders = [[n for n, _ in report.run_order(names, i)] for i in range(4)]
    assert orders[0] == orders[2] == ["passthrough", "passthrough-eos", "worker@abc", "worker"]
    assert orders[1] == orders[3] == ["passthrough", "passthrough-eos", "worker", "worker@abc"]


def test_each_round_is_divided_by_its_own_floor_and_the_median_is_over_rounds() -> None:
    # Round 1: the baseline runs first and is slow; round 2: the worker first and slow; round 3 as round 1.
    rounds = [
        [_system("passthrough", [5, 5], 9000, 1), _system("passthrough-eos", [50, 50], 8000, 1),
         _system("worker@abc", [40, 150], 6000, 1), _system("worker", [30, 55], 7000, 1)],
        [_system("passthrough", [5, 5], 9000, 2), _system("passthrough-eos", [40, 100], 8000, 2),
         _system("worker", [30, 200], 5000, 2), _system("worker@abc", [20, 110], 6000, 2)],
        [_system("passthrough", [5, 5], 9000, 3), _system("passthrough-eos", [50, 50], 8000, 3),
         _system("worker@abc", [45, 100], 6000, 3), _system("worker", [35, 60], 6600, 3)],
    ]  # fmt: skip
    built = report.build_rounds(rounds, None, ["--rounds", "3"])
    assert [r["order"][2:] for r in built["rounds"]] == [["worker@abc", "worker"], ["worker", "worker@abc"],
                                                         ["worker@abc", "worker"]]  # fmt: skip
    assert built["rounds"][1]["p99_over_floor"]["worker"] == pytest.approx([0.75, 2.0])
    assert built["median_p99_over_floor"]["worker"] == pytest.approx([0.7, 1.2])  # medians of 0.6/0.75/0.7, 1.1/2/1.2
    assert built["median_p99_over_floor"]["worker@abc"] == pytest.approx([0.8, 2.0])  # of 0.8/0.5/0.9, 3/1.1/2
    # worker over the baseline, per round then the median: p99 at 1,000 tx/s 55/150, 200/110, 60/100
    assert built["median_p99_worker_over_baseline"][1] == pytest.approx(0.6)
    assert built["median_throughput_worker_over_baseline"] == pytest.approx(1.1)  # of 7/6, 5/6, 6.6/6
    # the single-round part of the report is the first round's, in the canonical order
    assert [s["system"] for s in built["systems"]] == ["passthrough", "passthrough-eos", "worker@abc", "worker"]
    text = "\n".join(report.summary(built))
    assert "| median | | | 0.70 / 1.20 | 0.80 / 2.00 |" in text or "| median | | | 0.80 / 2.00 | 0.70 / 1.20 |" in text
    assert "(round 2)" in "\n".join(report.figures(built))


def test_one_round_is_the_report_it_always_was() -> None:
    systems = [_system("passthrough", [5, 5], 9000, 1), _system("passthrough-eos", [50, 50], 8000, 1),
               _system("worker", [30, 55], 7000, 1)]  # fmt: skip
    built = report.build_rounds([systems], None, [])
    assert "rounds" not in built
    assert built["ratios"]["p99_latency_worker_over_passthrough_eos"] == pytest.approx([0.6, 1.1])


def test_a_worker_variant_is_a_baseline_of_the_worker_and_its_version_is_read_from_its_metrics() -> None:
    """``--worker-variant default`` runs as ``worker-default`` beside ``worker``: the workers' order alternates and
    the ratios are the worker's over it; the version a worker scores with is the one its ``fraud_model_info`` sets."""
    from bench.systems import model_version

    names = [("passthrough", 0), ("passthrough-eos", 0), ("worker-default", 0), ("worker", 0)]
    assert [n for n, _ in report.run_order(names, 1)][2:] == ["worker", "worker-default"]
    systems = [
        _system("passthrough", [10.0, 10.0], 1000.0, 1),
        _system("passthrough-eos", [20.0, 20.0], 800.0, 1),
        _system("worker", [60.0, 60.0], 150.0, 1),
        _system("worker-default", [40.0, 40.0], 100.0, 1),
    ]
    built = report.build(report.canonical(systems), None, [])
    assert built["ratios"]["baseline"] == "worker-default"
    assert built["ratios"]["throughput_worker_over_baseline"] == pytest.approx(1.5)
    metrics = {'fraud_model_info{version="gbdt:every=1500@prior"}': 0.0, 'fraud_model_info{version="v1"}': 1.0}
    assert model_version(metrics) == "v1" and model_version({}) is None
