"""The report of a fault run: counts, recovery per fault, latency, what the trainer learned of each labelled
transaction; its printed summary and the exit code."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faultrun.measurement import (
    LEARNING_FAILURES,
    input_check,
    latency_percentiles,
    learning_tally,
    longest_gap,
    read_audit,
    read_outputs,
    read_published,
    recovery_s,
    tally,
    trainer_availability,
)

if TYPE_CHECKING:
    from faultrun.run import ChaosRun


def build_report(
    run: ChaosRun,
    done: dict[str, Any],
    reader_done: dict[str, Any],
    topic_ids: list[str],
    label_ids: list[str] | None = None,
) -> dict[str, Any]:
    """The report of a finished run, from its records, the publisher's and the reader's last words, the input
    topic's ids and (with labels) the labels topic's ids and the learning audit read."""
    a = run.args
    published = read_published(run.work / "published.tsv")
    outputs = sorted(read_outputs(run.work / "outputs.tsv"), key=lambda o: o.read_at)
    times = [o.read_at for o in outputs]
    counts = tally(published, outputs)
    sent_at = {p.id: p.sent_at for p in published if p.label is None}
    last_sent = max(sent_at.values(), default=0.0)
    for fault in run.faults:
        r = recovery_s(fault["_at"], sent_at, outputs, times)
        fault["recovery_s"] = None if r is None else round(r, 3)
        if fault["_at"] > last_sent:  # no transaction sent after it (the last labels, or the publisher ran ahead)
            fault["after_last_transaction"] = True
        if fault.pop("_awaiting_ready", False):
            fault["ready_after_s"] = None
        if fault.pop("_awaiting_trainer", False):
            fault["trainer_again_after_s"] = None
    faults = [{k: v for k, v in f.items() if not k.startswith("_")} for f in run.faults]
    gap, gap_at = longest_gap(times)
    first_read: dict[str, float] = {}
    for o in outputs:
        first_read.setdefault(o.id, o.read_at)
    latencies = [first_read[p.id] - p.sent_at for p in published if p.id in first_read and p.label is None]
    check = input_check((p.id for p in published if p.label is None), topic_ids)
    publisher_count = done.get("count")
    last_outcome = max(first_read.values(), default=None)
    transactions_acked = max((p.acked_at for p in published if p.label is None), default=run.t0)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "scripts/chaos.py", *(a.argv or [])]),
        "run_id": run.run_id,
        "work_dir": str(run.work),
        "bootstrap": run.bootstrap,
        "own_broker": run.own_broker,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items() if k != "argv"},
        **{k: v for k, v in counts.items() if not k.endswith("_sample")},
        "publisher_count": publisher_count,
        "record_matches_publisher": publisher_count == counts["published"] and not counts["record_duplicates"],
        "publisher_retries": done.get("retries"),
        "publisher_resends": done.get("resends"),
        "publish_s": round(done.get("acked_done", run.t0) - run.t0, 3),  # labels included
        "publish_tps": round(counts["published"] / max(transactions_acked - run.t0, 1e-9), 1),  # transactions
        "input_topic": {k: v for k, v in check.items() if not k.endswith("_sample")},
        "complete": bool(reader_done.get("complete")),
        "outputs_read": len(outputs),
        "last_outcome_after_publishing_s": None if last_outcome is None or not done.get("acked_done")
        else round(last_outcome - done["acked_done"], 3),
        "latency_s": latency_percentiles(latencies),
        "longest_output_gap_s": round(gap, 3),
        "longest_output_gap_at_s": run.rel(gap_at),
        "faults": faults,
        "fault_counts": dict(Counter(f["kind"] for f in faults)),
        "unexpected_exits": run.unexpected_exits,
        "timeline": run.timeline,
        "samples": {k: v for k, v in {**counts, **{f"input_{k}": v for k, v in check.items()}}.items()
                    if k.endswith("_sample")},
    }  # fmt: skip
    report["reader_ok"] = reader_done.get("exitcode") == 0 and "outputs" in reader_done
    report["measurement_valid"] = bool(
        report["record_matches_publisher"] and check["consistent"] and report["reader_ok"]
    )
    if label_ids is not None:
        learning = learning_tally(published, outputs, read_audit(run.work / "audit.tsv"))
        labels_check = input_check((p.id for p in published if p.label is not None), label_ids)
        report["samples"].update({f"learning_{k}": learning.pop(k) for k in list(learning) if k.endswith("_sample")})
        report["samples"].update({f"labels_topic_{k}": v for k, v in labels_check.items() if k.endswith("_sample")})
        learning["publisher_labels"] = done.get("labels")
        learning["labels_topic"] = {k: v for k, v in labels_check.items() if not k.endswith("_sample")}
        learning["audit_read"] = run.learning_wait
        learning["trainer_at_end"] = run.trainer_end
        availability = trainer_availability(run.trainer_probes)
        availability["longest_inactive_from_s"] = run.rel(availability.pop("longest_inactive_from"))
        learning["trainer_availability"] = availability
        learning["label_delay_days"] = a.label_delay_days
        report["learning"] = learning
        report["measurement_valid"] = bool(
            report["measurement_valid"] and labels_check["consistent"] and not learning["label_record_duplicates"]
            and done.get("labels") == learning["labels_published"]
        )  # fmt: skip
    report["ok"] = (report["measurement_valid"] and counts["lost"] == 0 and counts["duplicated"] == 0
                    and counts["misrouted"] == 0 and counts["unexpected"] == 0
                    and not learning_failures(report))  # fmt: skip
    return report


def learning_failures(report: dict[str, Any]) -> int:
    """Labelled transactions the trainer got wrong (learned twice, never, a fraud as legitimate, a legitimate one as
    fraud) and audit records of ids never labelled; 0 without labels."""
    learning = report.get("learning")
    if not learning:
        return 0
    return sum(learning[name] for name in LEARNING_FAILURES) + learning["audit_unexpected"]


def summary(report: dict[str, Any]) -> str:
    lines = [
        f"published {report['published']} ({report['published_valid']} valid, {report['published_malformed']} "
        f"malformed; publisher counted {report['publisher_count']}, input topic holds "
        f"{report['input_topic']['messages']}, consistent: {report['input_topic']['consistent']}) "
        f"in {report['publish_s']:.1f} s ({report['publish_tps']:.0f} tx/s)",
        f"predicted {report['predicted']}, dead-lettered {report['dead_lettered']}, "
        f"LOST {report['lost']}, DUPLICATED {report['duplicated']} ({report['extra_copies']} extra copies), "
        f"misrouted {report['misrouted']}, unexpected {report['unexpected']}; complete: {report['complete']}",
        f"latency s {report['latency_s']}; longest output gap {report['longest_output_gap_s']:.1f} s "
        f"at t+{report['longest_output_gap_at_s'] or 0:.1f} s",
    ]
    if report["fault_counts"]:
        lines.append("faults: " + ", ".join(f"{kind} {n}" for kind, n in report["fault_counts"].items()))
    for f in report["faults"]:
        details = ", ".join(f"{k} {v}" for k, v in f.items() if k not in ("kind", "at_s", "recovery_s"))
        rec = "never" if f["recovery_s"] is None else f"{f['recovery_s']:.1f} s"
        rec = "none to measure" if f.get("after_last_transaction") and f["recovery_s"] is None else rec
        lines.append(f"  {f['kind']:<15} at t+{f['at_s']:6.1f} s: recovery {rec} ({details})")
    if report["unexpected_exits"]:
        lines.append(f"unexpected worker exits: {report['unexpected_exits']}")
    learning = report.get("learning")
    if learning:
        wait = learning["audit_read"]
        lines += [
            f"labels: published {learning['labels_published']} ({learning['fraud_labels']} frauds; publisher counted "
            f"{learning['publisher_labels']}, labels topic holds {learning['labels_topic']['messages']}, consistent: "
            f"{learning['labels_topic']['consistent']}), {learning['label_delay_days']:g} days after their "
            f"transactions; {learning['labelled_decided']} of them of decided transactions",
            f"learned as fraud {learning['learned_as_fraud']}, learned as legitimate "
            f"{learning['learned_as_legitimate']}, LEARNED TWICE {learning['learned_twice']}, NEVER LEARNED "
            f"{learning['never_learned']}, FRAUDS LEARNED AS LEGITIMATE {learning['frauds_learned_as_legitimate']}, "
            f"WRONG CLASS {learning['wrong_class']}; audit records {learning['audit_records']} "
            f"{learning['learned_how']}, for unlabelled ids {learning['audit_unexpected']}",
            f"audit read until {wait.get('ended')} after {wait.get('waited_s')} s; trainer at the end: "
            + trainer_line(learning["trainer_at_end"]),
            f"trainer active {availability_line(learning['trainer_availability'])}",
        ]
    samples = report["samples"]
    for name, shown in samples.items():
        if shown and not name.startswith("input_"):
            lines.append(f"{name}: {shown}")
    verdict = "OK" if report["ok"] else "FAILED" if report["measurement_valid"] else "MEASUREMENT VOID"
    verdict += f": lost {report['lost']}, duplicated {report['duplicated']}"
    if learning:
        verdict += ", " + ", ".join(f"{name.replace('_', ' ')} {learning[name]}" for name in LEARNING_FAILURES)
    lines.append(verdict)
    return "\n".join(lines)


def trainer_line(end: dict[str, Any]) -> str:
    """The trainer's own counters at the end (its worker's ``/metrics``), short.

    >>> trainer_line({"worker": "w1", 'fraud_labels_total{outcome="learned"}': 5.0, "fraud_learning_entries": 0.0})
    'on w1: learned 5, pending 0'
    """
    if not end.get("worker"):
        return "no worker trains"
    prefix = 'fraud_labels_total{outcome="'
    parts = [f"{key[len(prefix) : -2]} {value:g}" for key, value in end.items()
             if key.startswith(prefix) and value]  # fmt: skip
    parts.append(f"pending {end.get('fraud_learning_entries', 0):g}")
    lag = end.get("fraud_trainer_labels_watermark_lag_seconds")
    if lag:
        parts.append(f"labels watermark lag {lag:g} s")
    return f"on {end['worker']}: " + ", ".join(parts)


def availability_line(a: dict[str, Any]) -> str:
    """The trainer's availability, short.

    >>> print(availability_line({"active_share": 0.7, "longest_inactive_s": 3.0, "longest_inactive_from_s": 2.0,
    ...                          "moves": 2, "trained_s": {"w0": 6.0, "w1": 1.0}, "probes": 6}))
    70 % of the time (6 probes), longest without a trainer 3.0 s from t+2.0 s, 2 moves, trained s {'w0': 6.0, 'w1': 1.0}
    """
    share = "?" if a["active_share"] is None else f"{100 * a['active_share']:.0f} %"
    since = "" if a["longest_inactive_from_s"] is None else f" from t+{a['longest_inactive_from_s']:.1f} s"
    return (f"{share} of the time ({a['probes']} probes), longest without a trainer {a['longest_inactive_s']:.1f} s"
            f"{since}, {a['moves']} moves, trained s {a['trained_s']}")  # fmt: skip


def exit_code(report: dict[str, Any]) -> int:
    """0: nothing lost or duplicated (and, with labels, each labelled transaction learned once, as its class); 1: a
    delivery or learning failure; 2: the record cannot be trusted.

    >>> exit_code({"measurement_valid": True, "lost": 0, "duplicated": 0, "misrouted": 0, "unexpected": 0})
    0
    >>> exit_code({"measurement_valid": True, "lost": 0, "duplicated": 3, "misrouted": 0, "unexpected": 0})
    1
    """
    if not report["measurement_valid"]:
        return 2
    failures = report["lost"] + report["duplicated"] + report["misrouted"] + report["unexpected"]
    return 1 if failures or learning_failures(report) else 0
