"""The benchmark's report: the JSON document, the printed figures and the markdown summary the lead pastes."""

from __future__ import annotations

import os
import platform
import statistics
from datetime import UTC, datetime
from typing import Any

import faust_ceiling


def build(systems: list[dict[str, Any]], ceiling: dict[str, Any] | None, argv: list[str]) -> dict[str, Any]:
    """The JSON report: the systems, the worker's ratios to the passthroughs (and to the baseline commit's worker,
    when one ran), the Faust ceiling."""
    base, eos, *baselines, worker = systems
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}",
        "command": " ".join(["python", "scripts/benchmark.py", *argv]),
        "systems": systems,
        "ratios": {
            "throughput_worker_over_passthrough": worker["max_throughput"]["throughput_tps"]
            / base["max_throughput"]["throughput_tps"],
            "p99_latency_worker_over_passthrough": [
                w["latency_ms"]["p99"] / b["latency_ms"]["p99"]
                for w, b in zip(worker["rates"], base["rates"], strict=True)
            ],
            "p99_latency_worker_over_passthrough_eos": [
                w["latency_ms"]["p99"] / b["latency_ms"]["p99"]
                for w, b in zip(worker["rates"], eos["rates"], strict=True)
            ],
        },
        "ceiling": ceiling,
    }
    for baseline in baselines:  # ``worker@<ref>``: the same run, the previous commit's worker
        report["ratios"]["throughput_worker_over_baseline"] = (
            worker["max_throughput"]["throughput_tps"] / baseline["max_throughput"]["throughput_tps"]
        )
        report["ratios"]["p99_latency_worker_over_baseline"] = [
            w["latency_ms"]["p99"] / b["latency_ms"]["p99"]
            for w, b in zip(worker["rates"], baseline["rates"], strict=True)
        ]
        report["ratios"]["baseline"] = baseline["system"]
    return report


def run_order(names: list[tuple[str, Any]], round_index: int) -> list[tuple[str, Any]]:
    """The systems of round ``round_index`` (from 0) in the order they run: the passthroughs, then the workers,
    whose order is reversed every other round, so that each worker runs first as often as second.

    >>> [n for n, _ in run_order([("passthrough", 0), ("passthrough-eos", 0), ("worker@a", 0), ("worker", 0)], 1)]
    ['passthrough', 'passthrough-eos', 'worker', 'worker@a']
    """
    fixed = [n for n in names if not n[0].startswith("worker")]
    workers = [n for n in names if n[0].startswith("worker")]
    return fixed + (workers[::-1] if round_index % 2 else workers)


def canonical(systems: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A round's systems as :func:`build` takes them: passthrough, passthrough-eos, the baselines, this worker."""
    return sorted(systems, key=lambda s: (s["system"] == "worker", s["system"].startswith("worker"),
                                          s["system"] != "passthrough"))  # fmt: skip


def over_floor(systems: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Every worker's p99 over the exactly-once floor's (``passthrough-eos``) of the same round, per offered rate."""
    eos = next(s for s in systems if s["system"] == "passthrough-eos")
    return {s["system"]: [w["latency_ms"]["p99"] / f["latency_ms"]["p99"]
                          for w, f in zip(s["rates"], eos["rates"], strict=True)]
            for s in systems if s["system"].startswith("worker")}  # fmt: skip


def build_rounds(rounds: list[list[dict[str, Any]]], ceiling: dict[str, Any] | None, argv: list[str]) -> dict[str, Any]:
    """The report of one round (as :func:`build`), or of several: the first round's systems and ratios as one
    round's, each round's order, systems and ratios, and the medians over rounds of every worker's p99 over the
    floor and of this worker over the baseline."""
    report = build(canonical(rounds[0]), ceiling, argv)
    if len(rounds) == 1:
        return report
    report["rounds"] = [{"order": [s["system"] for s in systems], "systems": canonical(systems),
                         "ratios": build(canonical(systems), None, argv)["ratios"],
                         "p99_over_floor": over_floor(systems)} for systems in rounds]  # fmt: skip
    workers = report["rounds"][0]["p99_over_floor"].keys()
    report["median_p99_over_floor"] = {
        name: [statistics.median(column) for column in zip(*(r["p99_over_floor"][name] for r in report["rounds"]),
                                                          strict=True)]
        for name in workers
    }  # fmt: skip
    if "p99_latency_worker_over_baseline" in report["ratios"]:
        per_round = [r["ratios"]["p99_latency_worker_over_baseline"] for r in report["rounds"]]
        report["median_p99_worker_over_baseline"] = [statistics.median(c) for c in zip(*per_round, strict=True)]
        report["median_throughput_worker_over_baseline"] = statistics.median(
            r["ratios"]["throughput_worker_over_baseline"] for r in report["rounds"])  # fmt: skip
    return report


def figures(report: dict[str, Any]) -> list[str]:
    """The printed figures per system (of every round), before the summary."""
    lines = []
    every = [s for r in report["rounds"] for s in r["systems"]] if "rounds" in report else report["systems"]
    for system in every:
        m = system["max_throughput"]
        lines.append(
            f"{system['system']}"
            + (f" (round {system['round']})" if "rounds" in report else "")
            + f": max {m['throughput_tps']:.0f} tx/s to the last committed output "
            f"({m['received']}/{m['published']}), {m['sustained_tps_until_idle']:.0f} tx/s until idle"
        )
        for r in system["rates"]:
            lat = r["latency_ms"]
            kept = "" if r["publisher_kept_rate"] else f" (publisher held only {r['publish_tps']:.0f} tx/s)"
            lines.append(
                f"  at {r['offered_tps']:g} tx/s{kept}: p50 {lat['p50']:.1f} p95 {lat['p95']:.1f} "
                f"p99 {lat['p99']:.1f} p99.9 {lat['p99.9']:.1f} ms, {r['received']}/{r['published']}"
            )
        lines.append(f"  peak RSS {system['peak_rss_bytes'] / 2**20:.0f} MiB")
    lines.append(f"ratios {report['ratios']}")
    return lines


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _latencies(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    text = " / ".join(_ms(lat[p]) if lat[p] is not None else "n/a" for p in ("p50", "p95", "p99", "p99.9"))
    if not r["publisher_kept_rate"]:
        text += f" (publisher held only {r['publish_tps']:,.0f} tx/s)"
    if r["received"] < r["published"]:
        text += f" ({r['received']:,}/{r['published']:,} received)"
    return text


def _topic_label(topic: str, system: dict[str, Any]) -> str:
    app_id = system.get("app_id")
    if app_id and topic.startswith(app_id):
        return "<APP_ID>" + topic[len(app_id) :]
    return topic.removeprefix(f"bench-{system['run']}-")


def summary(report: dict[str, Any]) -> list[str]:
    systems = report["systems"]
    rates = [r["offered_tps"] for r in systems[0]["rates"]]
    head = ["system", "max tx/s", *[f"p50 / p95 / p99 / p99.9 at {rate:,.0f} tx/s (ms)" for rate in rates],
            "peak RSS (MiB)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in systems:
        m = s["max_throughput"]
        tps = f"{m['throughput_tps']:,.0f}"
        if m["received"] < m["published"]:
            tps += f" ({m['received']:,}/{m['published']:,} received)"
        cells = [s["system"], tps, *[_latencies(r) for r in s["rates"]], f"{s['peak_rss_bytes'] / 2**20:,.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    ratios = report["ratios"]
    lines.append("| worker / passthrough | " + " | ".join(
        [f"{ratios['throughput_worker_over_passthrough']:.3f}",
         *[f"p99 x {x:,.1f}" for x in ratios["p99_latency_worker_over_passthrough"]], ""]) + " |")  # fmt: skip
    if "p99_latency_worker_over_passthrough_eos" in ratios:
        lines.append("| worker / passthrough-eos | | " + " | ".join(
            [*[f"p99 x {x:,.1f}" for x in ratios["p99_latency_worker_over_passthrough_eos"]], ""]) + " |")  # fmt: skip
    if "p99_latency_worker_over_baseline" in ratios:
        over = [f"p99 x {x:,.2f}" for x in ratios["p99_latency_worker_over_baseline"]]
        throughput = f"{ratios['throughput_worker_over_baseline']:.3f}"
        lines.append(f"| worker / {ratios['baseline']} | {throughput} | " + " | ".join([*over, ""]) + " |")
    if "rounds" in report:
        lines += ["", *rounds_table(report)]
    worker = systems[-1]
    lines.append("")
    lines.append(f"Worker state: DATA_DIR {worker['state_bytes'] / 2**20:.2f} MiB on disk after shutdown"
                 + "".join(f"; {_topic_label(t, worker)} {b / 2**20:.2f} MiB on the broker's disk"
                           for t, b in sorted((worker.get("topic_disk_bytes") or {}).items())
                           if t.startswith(worker["app_id"])) + ".")  # fmt: skip
    for s in systems:
        if "labels_learned" in s:
            learned = s["labels_learned"]
            lines.append(
                f"Labels, {s['system']}: {learned['received']:,} received, {learned['learned']:,} learned "
                f"from their label, {learned['implicit_negative']:,} as implicit negatives by the end."
            )
    if worker.get("cpu_split"):
        lines.append("CPU split (py-spy, maximum-throughput phase): "
                     + ", ".join(f"{k} {v:.0%}" for k, v in worker["cpu_split"].items()) + ".")  # fmt: skip
    if report.get("ceiling"):
        lines += ["", *faust_ceiling.markdown(report["ceiling"])]
    for s in systems:
        per = s["messages_per_transaction"]
        lines += ["", f"Messages per transaction, {s['system']}: the {per['published']:,} transactions of the "
                  "maximum-throughput phase", "",
                  "| topic | offsets | offsets / tx | records (read_committed) | records / tx | markers or aborted |"
                  " MiB read |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for row in [*per["topics"], {"topic": "total", **per["total"]}]:
            label = row["topic"] if row["topic"] == "total" else _topic_label(row["topic"], s)
            lines.append(f"| {label} | {row['offsets']:,} | {row['offsets_per_tx']:.3f} | {row['records']:,} | "
                         f"{row['records_per_tx']:.3f} | {row['markers_or_aborted']:,} | "
                         f"{row['bytes'] / 2**20:.2f} |")  # fmt: skip
        if per.get("kafka_transactions"):
            markers = per["markers_or_aborted_per_kafka_transaction"]
            lines += ["", f"{per['kafka_transactions']:,} committed Kafka transactions of decisions "
                      f"(fraud_decision_batch_records_count): {per['tx_per_kafka_transaction']:.1f} transactions and "
                      f"{markers:.1f} markers (or aborted records) each."]  # fmt: skip
    lines += ["", "Offsets: end minus start over the phase (a Kafka transaction's commit takes one on every partition "
              "it wrote). Records: what a read_committed reader sees in that range; on the compacted changelog a "
              "lower bound if the log cleaner ran meanwhile."]  # fmt: skip
    return lines


def rounds_table(report: dict[str, Any]) -> list[str]:
    """Each round's order and every worker's p99 over that round's floor, then the medians over the rounds."""
    rates = [r["offered_tps"] for r in report["systems"][0]["rates"]]
    workers = list(report["median_p99_over_floor"])
    head = ["round", "order of the workers", "floor p99 (ms) at " + " / ".join(f"{r:,.0f}" for r in rates),
            *[f"{w}: p99 / floor" for w in workers]]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(report["rounds"], 1):
        eos = next(s for s in r["systems"] if s["system"] == "passthrough-eos")
        floor = " / ".join(_ms(x["latency_ms"]["p99"]) for x in eos["rates"])
        order = ", ".join(name for name in r["order"] if name.startswith("worker"))
        cells = [str(i), order, floor, *[" / ".join(f"{x:.2f}" for x in r["p99_over_floor"][w]) for w in workers]]
        lines.append("| " + " | ".join(cells) + " |")
    medians = [" / ".join(f"{x:.2f}" for x in report["median_p99_over_floor"][w]) for w in workers]
    lines.append("| median | | | " + " | ".join(medians) + " |")
    if "median_p99_worker_over_baseline" in report:
        lines += ["", "Median over rounds, worker over " + report["ratios"]["baseline"] + ": p99 "
                  + " / ".join(f"{x:.2f}" for x in report["median_p99_worker_over_baseline"])
                  + f", max throughput {report['median_throughput_worker_over_baseline']:.3f}."]  # fmt: skip
    return lines
