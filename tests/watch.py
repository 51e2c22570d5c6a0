"""Watching a running worker from a broker test: read one of its metrics, wait for a condition."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from tests.conftest import WorkerProcess


def metric(worker: WorkerProcess, name: str) -> float:
    """One sample of the worker's ``/metrics``, by its name with labels as exposed
    (``fraud_labels_total{outcome="late_fraud"}``); NaN when it is not there."""
    match = re.search(rb"^" + re.escape(name.encode()) + rb" (\S+)$", worker.http_get("/metrics"), re.M)
    return float(match.group(1)) if match else float("nan")


def wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` until it holds; an :class:`AssertionError` naming ``what`` after ``timeout_s``. A condition
    that raises ``OSError`` (a process restarting), ``KeyError`` or ``TypeError`` (a page not there yet) is asked
    again."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (OSError, KeyError, TypeError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout_s} s: {what}")
