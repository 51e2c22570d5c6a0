"""The process under test: idle after a burst, peak memory, its data dir's size, and the CPU split of its py-spy
samples."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil

FRAMEWORK = "asyncio, faust, web and the rest"
CATEGORIES = (  # a sample's category: the first frame that matches one, from the innermost frame outwards
    ("parsing (app/records.py)", ("app/records.py",)),
    ("customer features (app/features/)", ("app/features/",)),
    ("terminal aggregates (app/state/terminals.py)", ("app/state/terminals.py",)),
    (
        "model (app/learning/model.py, app/decisions/assess.py, river)",
        ("app/learning/model.py", "app/decisions/assess.py", "river/"),
    ),  # noqa: E501
    ("decisions (app/decisions/scorer.py: batch, outputs, their JSON)", ("app/decisions/scorer.py",)),
    ("terminal feed (app/state/terminal_feed.py)", ("app/state/terminal_feed.py",)),
    (
        "trainer (app/learning/trainer.py, training.py: reads predictions and labels)",
        ("app/learning/trainer.py", "app/learning/training.py"),
    ),  # noqa: E501
    ("aiokafka producer (sends, batches, transactions)", ("aiokafka/producer/",)),
    ("aiokafka consumer (fetches, records)", ("aiokafka/consumer/",)),
    ("transactional loop (app/kafka/transactional.py)", ("app/kafka/transactional.py",)),
)
# aiokafka's shared layers count for the producer or consumer that called them, else on their own
CLIENT: tuple[str, tuple[str, ...]] = ("aiokafka client and connections (requests, socket I/O)", ("aiokafka/",))


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and its children: a worker and its trainer process (``python -m app trainer``)."""
    process = psutil.Process(pid)
    try:
        return [process, *process.children(recursive=True)]
    except psutil.Error:
        return [process]


def wait_idle(pid: int, timeout_s: float = 120.0, busy_share: float = 0.05) -> float:
    """Wait until the process and its children are idle (a worker's trainer process may still be working through a
    backlog such as the learning topic after a burst); returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        tree = process_tree(pid)
        for process in tree:
            try:
                process.cpu_percent(None)  # the first call starts the measurement
            except psutil.Error:
                pass
        time.sleep(1.0)
        busy = 0.0
        for process in tree:
            try:
                busy += process.cpu_percent(None)
            except psutil.Error:
                pass
        if busy / 100.0 < busy_share:
            break
    return time.monotonic() - started


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def cost_split(raw_profile: Path) -> dict[str, float]:
    """Share of CPU samples per category from py-spy's raw (collapsed stack) output."""
    counts: Counter[str] = Counter()
    for line in raw_profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        category = None
        for frame in reversed(stack.split(";")):
            category = next((name for name, needles in CATEGORIES if any(n in frame for n in needles)), None)
            if category:
                break
        if category is None:
            category = CLIENT[0] if any(n in stack for n in CLIENT[1]) else FRAMEWORK
        counts[category] += int(count)
    total = sum(counts.values()) or 1
    return {name: round(value / total, 4) for name, value in counts.most_common()}


def start_profiler(pid: int, output: Path) -> subprocess.Popen[bytes] | None:
    py_spy = Path(sys.executable).parent / "py-spy"
    if not shutil.which(str(py_spy)):
        return None
    return subprocess.Popen(
        [str(py_spy), "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--output", str(output),
         "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def schedstat_s(pid: int) -> tuple[float, float]:
    """Seconds the process's threads (not its children) ran on a CPU and waited on a run queue, runnable but not
    running, since they started (Linux ``/proc/<pid>/task/*/schedstat``; zeros elsewhere). The wait over a phase is
    the CPU the host's other processes took from it: a decision that waits there waits for no code of the worker."""
    ran = waited = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            fields = stat.read_text().split()
        except OSError:  # a thread that ended meanwhile
            continue
        ran, waited = ran + int(fields[0]), waited + int(fields[1])
    return ran / 1e9, waited / 1e9
