"""``python -m app models list|promote|rollback|train``: model versions from the command line (no worker needed).

Every worker follows a promotion or rollback within seconds (it folds the same ``model-events`` log).
"""

from __future__ import annotations

import argparse
import getpass
import time
from pathlib import Path
from typing import Any

from app.learning.registry import PromotionRefused, Registry, promote_event, rollback_event
from app.serialization import isoformat_utc
from app.settings import Settings


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


def _print_versions(registry: Registry, refused: list[tuple[str, str]]) -> None:
    print(f"champion {registry.champion}  challenger {registry.challenger}  follow {registry.follow}")
    print(f"{'version':<22} {'status':<10} {'role':<11} {'model':<34} {'labels':>9} {'auc':>6} {'ap':>6}  created")
    for h in registry.versions():
        m = h.get("metrics") or {}
        auc = f"{m['auc']:.3f}" if m.get("auc") is not None else "-"
        ap = f"{m['ap']:.3f}" if m.get("ap") is not None else "-"
        print(f"{h['version']:<22} {h['status']:<10} {h.get('role', ''):<11} {h.get('model_name', ''):<34} "
              f"{h.get('labels_seen', 0):>9} {auc:>6} {ap:>6}  {h.get('created_at', '')}")  # fmt: skip
    for key, code in refused:
        print(f"refused snapshot {key}: {code}")
    for line in _lines(registry):
        print(line)


def _lines(registry: Registry) -> list[str]:
    """Per line (the newest champion and challenger versions): the quality window's size, frauds and AP, each model
    scored on the same transactions; the served probabilities' figures; the last comparison with its interval; and
    the reason of the last promotion."""
    out: list[str] = []
    newest: dict[str, dict[str, Any]] = {}
    for h in registry.versions():  # newest first
        if h.get("role") in ("champion", "challenger"):
            newest.setdefault(str(h["role"]), h)
    for role in ("champion", "challenger"):
        found = newest.get(role)
        if found is None:
            continue
        h = found
        m = h.get("metrics") or {}
        ap = f"{m['ap']:.3f}" if m.get("ap") is not None else "-"
        out.append(f"{role} line {h.get('model_name', '')} (newest {h['version']}): window {m.get('labelled', 0)} "
                   f"labels, {m.get('frauds', 0)} frauds, AP {ap}")  # fmt: skip
        served = h.get("served_metrics")
        if served:
            ap = f"{served['ap']:.3f}" if served.get("ap") is not None else "-"
            out.append(f"served probabilities: window {served.get('labelled', 0)} labels, "
                       f"{served.get('frauds', 0)} frauds, AP {ap}")  # fmt: skip
    comparison = next((h.get("comparison") for h in registry.versions() if h.get("comparison")), None)
    if comparison:
        interval = comparison.get("interval")
        ends = ""
        if interval:
            ends = f", interval [{interval[0]:+.3f}, {interval[1]:+.3f}] at {comparison['confidence']:.0%}"
        out.append(f"last comparison (#{comparison.get('number')}): champion AP {_ap(comparison.get('champion_ap'))}, "
                   f"challenger AP {_ap(comparison.get('challenger_ap'))} over {comparison.get('labelled')} labels "
                   f"({comparison.get('frauds')} frauds){ends}: {comparison.get('why')}")  # fmt: skip
    promoted = [e for e in registry.events if e.get("action") == "promoted"]
    if promoted:
        e = promoted[-1]
        out.append(f"last promotion: {e.get('version')} (was {e.get('previous')}) by {e.get('by')} at "
                   f"{e.get('timestamp')}: {e.get('reason') or '-'}")  # fmt: skip
    return out


def _ap(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


async def run_models(args: argparse.Namespace, settings: Settings) -> int:
    # The registry's Kafka side and the warm start load the model code (river): only when this command runs.
    from app.kafka.topics import ensure_topics
    from app.learning.registry_topics import publish_event, publish_version, read_registry, warm_start

    if args.action == "list":
        registry, refused = await read_registry(settings, args.timeout_s)
        _print_versions(registry, refused)
        return 0
    if args.action == "train":
        model, metrics = warm_start(settings, args.from_dir, args.holdout_days)
        await ensure_topics(settings)
        registry, _ = await read_registry(settings, args.timeout_s)
        sequence = max((int(h.get("sequence", 0)) for h in registry.headers.values()), default=0) + 1
        now = time.time()
        version = f"warm-{time.strftime('%Y%m%d%H%M%S', time.gmtime(now))}"
        header = {"version": version, "parent": None, "created_at": isoformat_utc(now), "model_name": model.name,
                  "role": "warm-start", "labels_seen": model.labels_learned, "sequence": sequence,
                  "metrics": metrics, "by": _who()}  # fmt: skip
        await publish_version(settings, header, model)
        figures = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        print(f"registered {version}: {model.labels_learned} labels; held-out {figures}")
        if args.promote:
            await publish_event(settings, {"action": "promoted", "version": version, "previous": registry.champion,
                                           "follow": True, "by": _who(), "reason": args.reason or "warm start",
                                           "timestamp": isoformat_utc(time.time())})  # fmt: skip
            print(f"promoted {version}")
        return 0
    registry, _ = await read_registry(settings, args.timeout_s)
    now_iso = isoformat_utc(time.time())
    try:
        if args.action == "promote":
            event = promote_event(registry, args.version, by=_who(), reason=args.reason, timestamp=now_iso,
                                  follow=args.follow)  # fmt: skip
        else:
            event = rollback_event(registry, by=_who(), reason=args.reason, timestamp=now_iso)
    except PromotionRefused as exc:
        raise ValueError(str(exc)) from None  # one line on stderr, exit 1 (refused)
    await publish_event(settings, event)
    print(f"{event['action']} {event['version']} (was {event['previous']})")
    return 0


def register(commands: Any) -> None:
    """Add ``models`` and its actions to the command line's subcommands."""
    models = commands.add_parser(
        "models",
        help="model versions: list, promote, rollback, train (warm start)",
        description="The registry is the models and model-events topics (MODELS_TOPIC, MODEL_EVENTS_TOPIC); "
        "every worker follows a promotion or rollback within seconds.",
    )
    models.add_argument("--timeout-s", type=float, default=30.0, help="give up on the broker after this long")
    actions = models.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every version with its status, labels seen and rolling AUC / AP")
    promote = actions.add_parser("promote", help="make a version the champion (pinned unless --follow)")
    promote.add_argument("version", help="a version id, or 'latest': the trainer's newest, following later ones")
    promote.add_argument("--follow", action="store_true", help="keep promoting the trainer's newer versions")
    promote.add_argument("--reason", default="")
    rollback = actions.add_parser("rollback", help="back to the champion before the current one (pinned)")
    rollback.add_argument("--reason", default="")
    train = actions.add_parser(
        "train", help="warm start: train on a labelled run, evaluate the held-out days, register a version"
    )
    train.add_argument("--from-dir", type=Path, required=True, help="a scripts/simulate.py --out-dir folder")
    train.add_argument("--holdout-days", type=float, default=7.0)
    train.add_argument("--promote", action="store_true", help="promote the registered version at once")
    train.add_argument("--reason", default="")
    models.set_defaults(run=run_models)
