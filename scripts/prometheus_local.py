"""A local Prometheus (the Debian package's binary) scraping local workers with the project's alert rules.

Where Docker is missing, the demo runs the same Prometheus and rules as docker-compose.yml against its worker.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from local_processes import free_port, stop_process, wait_http_ok

from app.serialization import loads

REPO_ROOT = Path(__file__).resolve().parent.parent
ALERT_RULES = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
JOB = "fraud-worker"  # the job name of deploy/prometheus.yml, which the alert rules select on


def config_text(targets: list[str], rule_files: list[Path], interval_s: float) -> str:
    """A Prometheus config scraping ``targets`` (host:port) as the worker job, loading ``rule_files``.

    >>> print(config_text(["127.0.0.1:6066"], [Path("/r/alerts.yml")], 5))  # doctest: +NORMALIZE_WHITESPACE
    global: {scrape_interval: 5s, evaluation_interval: 5s}
    rule_files: ["/r/alerts.yml"]
    scrape_configs:
      - job_name: fraud-worker
        static_configs: [{targets: ["127.0.0.1:6066"]}]
    """
    quoted = ", ".join(f'"{t}"' for t in targets)
    rules = ", ".join(f'"{p}"' for p in rule_files)
    return (
        f"global: {{scrape_interval: {interval_s:g}s, evaluation_interval: {interval_s:g}s}}\n"
        f"rule_files: [{rules}]\n"
        "scrape_configs:\n"
        f"  - job_name: {JOB}\n"
        f"    static_configs: [{{targets: [{quoted}]}}]\n"
    )


def start(targets: list[str], home: Path, interval_s: float = 5.0) -> tuple[subprocess.Popen[bytes], str] | None:
    """Start Prometheus on a free port with its config, data and log under ``home``; None when not installed."""
    binary = shutil.which("prometheus")
    if binary is None:
        return None
    home.mkdir(parents=True, exist_ok=True)
    config = home / "prometheus.yml"
    config.write_text(config_text(targets, [ALERT_RULES], interval_s))
    port = free_port()
    with (home / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1d"],
            cwd=home, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(f"{url}/-/ready", process, timeout_s=60)
    except RuntimeError:
        stop_process(process)
        raise
    return process, url


def api(url: str, path: str) -> Any:
    """The ``data`` of a Prometheus HTTP API answer."""
    with urllib.request.urlopen(f"{url}{path}", timeout=5) as response:
        return loads(response.read())["data"]


def status_line(url: str) -> str:
    """What Prometheus sees now: the worker targets' health, the rules loaded and the alerts firing."""
    health = Counter(str(t["health"]) for t in api(url, "/api/v1/targets")["activeTargets"])
    rules = [r for group in api(url, "/api/v1/rules")["groups"] for r in group["rules"]]
    alerts = api(url, "/api/v1/alerts")["alerts"]
    firing = sorted(str(a["labels"]["alertname"]) for a in alerts if a["state"] == "firing")
    return f"targets {dict(health)}, {len(rules)} alert rules loaded, firing: {', '.join(firing) or 'none'}"
