"""The long scripts' progress bars: shown with an ETA on a terminal, absent from logs, items passed unchanged."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys

from progress_bars import bar, counted
from tqdm import tqdm

from tests.conftest import REPO_ROOT

SNIPPET = """
import sys, time
sys.path.insert(0, "scripts")
from progress_bars import bar, counted
with bar(5000, "demo") as progress:
    for _ in counted(range(5000), progress, every=1000):
        time.sleep(0.0002)
print("done")
"""


def test_counted_passes_every_item_and_counts_them_in_steps() -> None:
    progress = tqdm(total=2500, file=io.StringIO(), disable=False, mininterval=0)
    updates: list[int] = []
    original = progress.update
    progress.update = lambda n=1: updates.append(n) or original(n)  # type: ignore[method-assign]
    assert list(counted(range(2500), progress, every=1000)) == list(range(2500))
    assert updates == [1000, 1000, 500] and progress.n == 2500


def test_counted_counts_what_was_taken_when_the_loop_stops_early() -> None:
    progress = tqdm(total=100, file=io.StringIO(), disable=False, mininterval=0)
    items = counted(range(100), progress, every=10)
    for i in items:
        if i == 24:
            break
    items.close()  # type: ignore[attr-defined]
    assert progress.n == 25


def test_a_disabled_bar_is_the_plain_iteration() -> None:
    progress = bar(10, "off", enabled=False)
    assert progress.disable and list(counted(range(10), progress)) == list(range(10))


def test_the_bar_shows_with_an_eta_on_a_terminal_and_not_in_a_log() -> None:
    piped = subprocess.run([sys.executable, "-c", SNIPPET], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0 and piped.stdout == "done\n" and piped.stderr == ""

    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-c", SNIPPET], cwd=REPO_ROOT, stdin=follower, stdout=follower,
                               stderr=follower)  # fmt: skip
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=60) == 0
    os.close(leader)
    text = output.decode(errors="replace")
    assert "demo: 100%" in text and "5.00k/5.00k" in text and "<00:00" in text  # done, with the ETA column
    assert text.rstrip().endswith("done")
