"""The report of ``scripts/scale.py``: ratios of each size to the first, the printed tables. Pure: no Kafka."""

from __future__ import annotations

from typing import Any

MIB = 2**20
# (name in the report, the figure's path in one size's result, None: not a figure of that size)
RATIO_FIGURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("transactions", ("transactions",)),
    ("rss_steady", ("rss", "steady_bytes")),
    ("rss_peak", ("rss", "peak_bytes")),
    ("throughput", ("throughput", "throughput_tps")),
    ("restart_ready", ("restart", "ready_s")),
    ("replacement_same_id_ready", ("replacement_same_id", "ready_s")),
    ("replacement_new_id_ready", ("replacement_new_id", "ready_s")),
    ("held_p99_first_worker", ("held_before_kill", "latency_ms", "p99")),
    ("held_p99_replacement", ("held", "latency_ms", "p99")),
    ("data_dir", ("data_dir", "total_bytes")),
    ("topics_on_disk", ("topics_total", "log_bytes")),
    ("trainer_rss_steady", ("trainer", "rss", "steady_bytes")),
    ("trainer_rss_peak", ("trainer", "rss", "peak_bytes")),
    ("state_per_publication_median", ("trainer", "published", "per_publication", "state", "median")),
    ("state_per_publication_max", ("trainer", "published", "per_publication", "state", "max")),
    ("published_per_interval_median", ("trainer", "published", "per_interval", "total", "median")),
    ("published_per_interval_max", ("trainer", "published", "per_interval", "total", "max")),
    ("state_last_publication", ("trainer", "published", "last_publication", "state")),
    ("published_per_label", ("trainer", "published", "bytes_per_label_learned")),
    ("trainer_restore_learned", ("trainer", "restore", "learned_s")),
    ("trainer_takeover_learned", ("trainer", "takeover", "learned_s")),
)
# The trainer's topics whose records scripts/scale.py follows (by the label it gives them), and the short names
TRAINER_TOPICS = {
    "<APP_ID>-trainer-state": "state",
    "<APP_ID>-trainer-labels": "labels",
    "<APP_ID>-learning-audit": "audit",
}
PUBLICATION_GAP_S = 1.0  # a trainer's publication is one Kafka transaction: its records are written within this


def figure(result: dict[str, Any], path: tuple[str, ...]) -> float | None:
    """The number at ``path`` in one size's result; None when a step is missing or was not measured.

    >>> figure({"rss": {"peak_bytes": 5}}, ("rss", "peak_bytes")), figure({"rss": None}, ("rss", "peak_bytes"))
    (5, None)
    """
    value: Any = result
    for key in path:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return value if isinstance(value, int | float) else None


def ratios(sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each size after the first against the first: its figure divided by the first size's (None where either
    is missing or the first is zero). Read these, not the absolutes, on a shared machine."""
    if not sizes:
        return []
    base = sizes[0]
    out = []
    for size in sizes[1:]:
        row: dict[str, Any] = {"scale": size["scale"], "over_scale": base["scale"]}
        for name, path in RATIO_FIGURES:
            a, b = figure(size, path), figure(base, path)
            row[name] = a / b if a is not None and b else None
        out.append(row)
    return out


def bytes_per_transaction(log_bytes: int, transactions: int) -> float:
    """Bytes on the broker's disk (the topic's segment files) per transaction published.

    >>> bytes_per_transaction(1_300_000, 1000)
    1300.0
    """
    return log_bytes / transactions if transactions else 0.0


def spread(values: list[float]) -> dict[str, float | int | None]:
    """Median, max and count of ``values`` (None for an empty list).

    >>> spread([3, 1, 2]), spread([])
    ({'median': 2, 'max': 3, 'n': 3}, {'median': None, 'max': None, 'n': 0})
    """
    if not values:
        return {"median": None, "max": None, "n": 0}
    ordered = sorted(values)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return {"median": median, "max": ordered[-1], "n": len(ordered)}


def publications(buckets: list[tuple[float, str, int, int]], gap_s: float = PUBLICATION_GAP_S) -> list[dict[str, int]]:
    """The trainer's publications from its topics' records, ``(timestamp_s, topic, bytes, records)`` (one per topic
    and millisecond): records closer than ``gap_s`` to the one before go together (a publication is one Kafka
    transaction, written at once). Each publication: bytes and records per topic, with ``total``.

    >>> pubs = publications([(0.0, "state", 100, 2), (0.01, "audit", 50, 5), (10.0, "state", 90, 2)])
    >>> [(p["state"], p["audit"], p["total"], p["audit_records"]) for p in pubs]
    [(100, 50, 150, 5), (90, 0, 90, 0)]
    """
    out: list[dict[str, int]] = []
    last = -float("inf")
    for t, topic, size, records in sorted(buckets):
        if t - last > gap_s:
            out.append({"at_s": int(t), "total": 0, **{name: 0 for name in TRAINER_TOPICS.values()},
                        **{f"{name}_records": 0 for name in TRAINER_TOPICS.values()}})  # fmt: skip
        last = t
        out[-1][topic] = out[-1].get(topic, 0) + size
        out[-1][f"{topic}_records"] = out[-1].get(f"{topic}_records", 0) + records
        out[-1]["total"] += size
    return out


def per_interval(buckets: list[tuple[float, str, int, int]], interval_s: float) -> list[dict[str, int]]:
    """Bytes per topic and ``total`` in each ``interval_s`` of wall time from the first record to the last (the
    intervals with nothing published count, as zeros).

    >>> [i["total"] for i in per_interval([(0.0, "state", 100, 1), (0.5, "audit", 10, 1), (25.0, "state", 7, 1)], 10)]
    [110, 0, 7]
    """
    if not buckets:
        return []
    first = min(t for t, *_ in buckets)
    last = max(t for t, *_ in buckets)
    out = [
        {"total": 0, **{name: 0 for name in TRAINER_TOPICS.values()}}
        for _ in range(int((last - first) // interval_s) + 1)
    ]
    for t, topic, size, _ in buckets:
        row = out[int((t - first) // interval_s)]
        row[topic] = row.get(topic, 0) + size
        row["total"] += size
    return out


def published_summary(buckets: list[tuple[float, str, int, int]], interval_s: float) -> dict[str, Any]:
    """Median and max bytes per publication and per publication interval (those with a publication: an idle
    trainer publishes nothing), by topic and in total; the last publication (the state once idle); bytes per label
    learned (an audit record is one pair learned)."""
    pubs = publications(buckets)
    intervals = [i for i in per_interval(buckets, interval_s) if i["total"]]
    names = ["total", *TRAINER_TOPICS.values()]
    total = sum(p["total"] for p in pubs)
    learned = sum(p["audit_records"] for p in pubs)
    return {
        "interval_s": interval_s,
        "publications": len(pubs),
        "intervals": len(intervals),
        "bytes": {name: sum(p[name] for p in pubs) for name in names},
        "records": {name: sum(p[f"{name}_records"] for p in pubs) for name in TRAINER_TOPICS.values()},
        "per_publication": {name: spread([p[name] for p in pubs]) for name in names},
        "per_interval": {name: spread([i[name] for i in intervals]) for name in names},
        "bytes_per_label_learned": total / learned if learned else None,
        "last_publication": pubs[-1] if pubs else None,
        "publications_trace": pubs[:: max(1, len(pubs) // 200)],
    }


def _num(value: float | None, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{suffix}"


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / MIB:,.0f}"


def _held_p99(held: dict[str, Any] | None) -> str:
    if not held:
        return "n/a"
    text = _num(held["latency_ms"]["p99"], 1)
    if not held["publisher_kept_rate"]:
        text += f" (publisher held {held['publish_tps']:,.0f} tx/s)"
    if held["received"] < held["published"]:
        text += f" ({held['received']:,}/{held['published']:,} received)"
    return text


def summary(report: dict[str, Any]) -> list[str]:
    """The markdown tables: one row per size (and one per ratio), bytes per transaction by topic, the data dir."""
    sizes = report["sizes"]
    rate = report["held_rate_tps"]
    head = [
        "size",
        "customers / terminals / days",
        "transactions",
        "RSS steady / peak (MiB)",
        "throughput (tx/s)",
        "restart after SIGKILL, same disk (s)",
        "empty disk, same id (s)",
        "empty disk, new id (s)",
        f"p99 at {rate:g} tx/s, first worker / replacement (ms)",
        "DATA_DIR (MiB)",
        "topics on disk (MiB)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in sizes:
        p99_text = " / ".join(_held_p99(s.get(key)) for key in ("held_before_kill", "held"))
        cells = [
            f"{s['scale']:g}x",
            f"{s['customers']:,} / {s['terminals']:,} / {s['days']}",
            f"{s['transactions']:,}",
            f"{_mib(figure(s, ('rss', 'steady_bytes')))} / {_mib(figure(s, ('rss', 'peak_bytes')))}",
            _num(figure(s, ("throughput", "throughput_tps"))),
            _num(figure(s, ("restart", "ready_s")), 1),
            _num(figure(s, ("replacement_same_id", "ready_s")), 1),
            _num(figure(s, ("replacement_new_id", "ready_s")), 1),
            p99_text,
            _mib(figure(s, ("data_dir", "total_bytes"))),
            _mib(figure(s, ("topics_total", "log_bytes"))),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for r in report["ratios"]:
        cells = [
            f"{r['scale']:g}x / {r['over_scale']:g}x",
            "",
            _num(r["transactions"], 2),
            f"{_num(r['rss_steady'], 2)} / {_num(r['rss_peak'], 2)}",
            _num(r["throughput"], 2),
            _num(r["restart_ready"], 2),
            _num(r["replacement_same_id_ready"], 2),
            _num(r["replacement_new_id_ready"], 2),
            f"{_num(r['held_p99_first_worker'], 2)} / {_num(r['held_p99_replacement'], 2)}",
            _num(r["data_dir"], 2),
            _num(r["topics_on_disk"], 2),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *topic_table(sizes), "", *data_dir_table(sizes)]
    if any(s.get("trainer") for s in sizes):
        lines += ["", *trainer_table(sizes, report["ratios"])]
    return lines


def _kib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 1024:,.1f}"


def _spread_kib(spread_: dict[str, Any] | None) -> str:
    if not spread_:
        return "n/a"
    return f"{_kib(spread_.get('median'))} / {_kib(spread_.get('max'))}"


def _times(probe: dict[str, Any] | None) -> str:
    if not probe:
        return "n/a"
    return " / ".join(_num(probe.get(k), 1) for k in ("active_s", "learned_s", "published_s"))


def trainer_table(sizes: list[dict[str, Any]], ratio_rows: list[dict[str, Any]]) -> list[str]:
    """The trainer process apart: its RSS, what it published per publication and per interval (KiB, median / max),
    its restore after a SIGKILL and a standby's takeover after its owner's (seconds to active / a label learned /
    that label in the audit topic)."""
    head = [
        "size",
        "trainer RSS steady / peak (MiB)",
        "publications",
        "state per publication / the last (KiB)",
        "all three topics per publication (KiB)",
        "per interval (KiB)",
        "bytes per label learned",
        "restore: active / learned / published (s)",
        "takeover: active / learned / published (s)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in sizes:
        t = s.get("trainer") or {}
        pub = t.get("published") or {}
        cells = [
            f"{s['scale']:g}x",
            " / ".join(_mib(figure(s, ("trainer", "rss", key))) for key in ("steady_bytes", "peak_bytes")),
            _num(pub.get("publications")),
            _spread_kib((pub.get("per_publication") or {}).get("state"))
            + f" / {_kib(figure(s, ('trainer', 'published', 'last_publication', 'state')))}",
            _spread_kib((pub.get("per_publication") or {}).get("total")),
            _spread_kib((pub.get("per_interval") or {}).get("total")),
            _num(pub.get("bytes_per_label_learned"), 1),
            _times(t.get("restore")),
            _times(t.get("takeover")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for r in ratio_rows:
        cells = [
            f"{r['scale']:g}x / {r['over_scale']:g}x",
            f"{_num(r.get('trainer_rss_steady'), 2)} / {_num(r.get('trainer_rss_peak'), 2)}",
            "",
            f"{_num(r.get('state_per_publication_median'), 2)} / {_num(r.get('state_per_publication_max'), 2)}"
            f" / {_num(r.get('state_last_publication'), 2)}",
            "",
            f"{_num(r.get('published_per_interval_median'), 2)} / {_num(r.get('published_per_interval_max'), 2)}",
            _num(r.get("published_per_label"), 2),
            f"learned {_num(r.get('trainer_restore_learned'), 2)}",
            f"learned {_num(r.get('trainer_takeover_learned'), 2)}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def topic_table(sizes: list[dict[str, Any]]) -> list[str]:
    """Per topic and size: MiB of segment files on the broker's disk, bytes and offsets per transaction."""
    topics: list[str] = []
    for s in sizes:
        topics += [t for t in s["topics"] if t not in topics]
    head = ["topic", *[f"{s['scale']:g}x: MiB / bytes per tx / offsets per tx" for s in sizes]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for topic in [*topics, "total"]:
        cells = [topic if topic != "total" else "**total**"]
        for s in sizes:
            t = s["topics_total"] if topic == "total" else s["topics"].get(topic)
            if t is None:
                cells.append("")
                continue
            cells.append(f"{t['log_bytes'] / MIB:,.1f} / {t['bytes_per_tx']:,.0f} / {t['offsets_per_tx']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def data_dir_table(sizes: list[dict[str, Any]]) -> list[str]:
    """The worker's DATA_DIR per store (``state/<store>``, all its partitions) or file, per size (before the
    SIGKILL)."""
    grouped = [_by_store(s["data_dir"]["files"]) for s in sizes]
    names: list[str] = []
    for g in grouped:
        names += [n for n in g if n not in names]
    head = ["DATA_DIR store or file", *[f"{s['scale']:g}x (MiB)" for s in sizes]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        cells = [name, *[_num(g.get(name, 0) / MIB, 2) for g in grouped]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _by_store(files: dict[str, int]) -> dict[str, int]:
    """Bytes per ``state/<store>`` (RocksDB's files of every partition together), other files as they are.

    >>> _by_store({"state/customers/0/1.sst": 5, "state/customers/1/2.sst": 6, "model.pkl": 1})
    {'state/customers': 11, 'model.pkl': 1}
    """
    out: dict[str, int] = {}
    for name, size in files.items():
        parts = name.split("/")
        key = "/".join(parts[:2]) if len(parts) > 2 and parts[0] == "state" else name
        out[key] = out.get(key, 0) + size
    return out
