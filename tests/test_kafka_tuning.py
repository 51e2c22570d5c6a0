"""aiokafka's tuning is applied by :func:`app.kafka.tuning.apply_tuning` only: importing our modules patches nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

READ = (
    "from aiokafka.producer import sender; from aiokafka.consumer.fetcher import Fetcher; "
    "current = lambda: (sender.BACKOFF_OVERRIDE, Fetcher.__init__.__kwdefaults__['prefetch_backoff']); "
)


def run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", READ + code], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_importing_the_kafka_modules_leaves_aiokafka_as_it_ships() -> None:
    code = (
        "before = current(); "
        "import app.kafka.transactional, app.kafka.clients, app.decisions.scorer, app.learning.trainer; "
        "print(before == current(), before)"
    )
    same, _ = run(code).split(" ", 1)
    assert same == "True"


def test_apply_tuning_sets_the_retry_backoff_and_the_fetch_pause() -> None:
    code = (
        "from app.kafka.tuning import RETRY_BACKOFF_MS, apply_tuning; before = current(); "
        "apply_tuning(); backoff_only = current(); apply_tuning(fetch_pause_ms=7); "
        "print(before[0] != RETRY_BACKOFF_MS / 1000, backoff_only == (RETRY_BACKOFF_MS / 1000, before[1]), "
        "current() == (RETRY_BACKOFF_MS / 1000, 0.007))"
    )
    assert run(code) == "True True True"
