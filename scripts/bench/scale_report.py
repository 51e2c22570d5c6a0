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
)


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
