"""``drift``: each worker's newest drift report from the health topic, as a table (app/monitoring/drift.py).

The workers publish their drift with every health event (``drift``: the sampled window against the reference, the
worst features first); this command reads the newest events and prints one block per worker, so an operator sees
what moved without Prometheus.
"""

from __future__ import annotations

import argparse
from typing import Any

from app.ops.broker import Start, consumer, tail
from app.ops.tailing import add_connection_options, emit
from app.serialization import JSONDecodeError, dumps, loads
from app.settings import Settings


def drift_table(events: dict[str, dict[str, Any]]) -> list[str]:
    """Lines for the newest health event of each worker (``worker -> event``), workers in name order.

    >>> event = {"timestamp": "2026-12-07T00:00:00Z", "status": "degraded", "drift": {"status": "drift",
    ...          "rows": 5000, "reference_rows": 5000, "score_psi": 0.02, "alert_rate": 0.01,
    ...          "reference_alert_rate": 0.01, "worst": [{"feature": "amount", "psi": 3.2}]}}
    >>> print("\\n".join(drift_table({"w1": event, "w2": {"timestamp": "t", "status": "healthy"}})))
    w1  2026-12-07T00:00:00Z  drift (health degraded): 5,000 samples against 5,000 of the reference
      score (fraud_probability)  PSI 0.020
      alert rate                 1.00% (reference 1.00%)
      amount                     PSI 3.200  DRIFT
    w2  t  no drift report yet (the reference fills first; DRIFT_SAMPLE_EVERY=0 turns it off)
    """
    lines: list[str] = []
    for worker in sorted(events):
        event = events[worker]
        drift = event.get("drift")
        if not isinstance(drift, dict):
            lines.append(f"{worker}  {event.get('timestamp')}  no drift report yet (the reference fills first; "
                         "DRIFT_SAMPLE_EVERY=0 turns it off)")  # fmt: skip
            continue
        lines.append(f"{worker}  {event.get('timestamp')}  {drift['status']} (health {event.get('status')}): "
                     f"{drift['rows']:,} samples against {drift['reference_rows']:,} of the reference")  # fmt: skip
        lines.append(f"  {'score (fraud_probability)':<26} PSI {drift['score_psi']:.3f}{_mark(drift['score_psi'])}")
        lines.append(f"  {'alert rate':<26} {drift['alert_rate']:.2%} (reference {drift['reference_alert_rate']:.2%})")
        for row in drift.get("worst", []):
            lines.append(f"  {row['feature']:<26} PSI {row['psi']:.3f}{_mark(row['psi'])}")
    return lines


def _mark(value: float) -> str:
    return "  DRIFT" if value >= 0.25 else "  warn" if value >= 0.1 else ""


async def run_drift(args: argparse.Namespace, settings: Settings) -> int:
    newest: dict[str, dict[str, Any]] = {}
    async with consumer(settings, args.timeout_s) as client:
        async for record in tail(client, [settings.health_topic], Start(last=max(1, args.last)), False):
            try:
                event = loads(record.value or b"")
            except JSONDecodeError:
                continue
            if isinstance(event, dict) and isinstance(event.get("worker"), str):
                if args.worker and event["worker"] not in args.worker:
                    continue
                known = newest.get(event["worker"])
                if known is None or str(event.get("timestamp")) >= str(known.get("timestamp")):
                    newest[event["worker"]] = event
    if args.json:
        for worker in sorted(newest):
            emit(dumps({"worker": worker, "timestamp": newest[worker].get("timestamp"),
                        "drift": newest[worker].get("drift")}).decode())  # fmt: skip
    elif not newest:
        emit(f"no health event on {settings.health_topic}: no worker has published yet")
    else:
        for line in drift_table(newest):
            emit(line)
    return 0


def register(commands: Any) -> None:
    """Add ``drift`` to the command line's subcommands."""
    drift = commands.add_parser(
        "drift",
        help="each worker's drift without labels (scores, alert rate, the worst features), from the health topic",
        description="Read the newest health events of HEALTH_TOPIC and print, per worker, its drift report: the "
        "sampled window against the reference (the first DRIFT_REFERENCE_ROWS samples after the worker started or "
        "after a promotion), the score's and the worst features' population stability index (0.1: warn, 0.25: "
        "drift) and the alert rate against the reference's. What to do: a feature drifted - check its producer; "
        "the scores or the alert rate - backtest a rule, roll back or promote the challenger.",
    )
    drift.add_argument("--worker", action="append", help="only this worker (repeatable)")
    drift.add_argument("--last", type=int, default=20, metavar="N",
                       help="health events read from the end of each partition (default 20)")  # fmt: skip
    drift.add_argument("--json", action="store_true", help="one JSON line per worker instead")
    add_connection_options(drift)
    drift.set_defaults(run=run_drift)
