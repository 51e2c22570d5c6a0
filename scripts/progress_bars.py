"""Progress bars with an ETA for the long scripts (tqdm, on stderr).

Off when stderr is not a terminal (CI logs stay clean) or with ``--no-progress``. Loops update the bar every
:data:`EVERY` items, not per item, so a bar costs the hot loops nothing measurable.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

EVERY = 1000
T = TypeVar("T")


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (there is none anyway when stderr is not a terminal)")  # fmt: skip


def bar(total: float | None, desc: str, unit: str = "tx", enabled: bool = True) -> tqdm:
    """A bar on stderr; ``disable=None`` lets tqdm turn it off when stderr is not a terminal. The width is the
    terminal's, or 100 x 24 when it reports none (a fresh pseudo-terminal is 0 x 0, where tqdm draws nothing)."""
    size = shutil.get_terminal_size(fallback=(100, 24))
    return tqdm(total=total, desc=desc, unit=unit, disable=None if enabled else True, mininterval=0.5,
                smoothing=0.05, unit_scale=True, ncols=size.columns, nrows=size.lines)  # fmt: skip


def counted(items: Iterable[T], progress: tqdm, every: int = EVERY) -> Iterator[T]:
    """``items`` unchanged, advancing ``progress`` every ``every`` items; the plain iterable when it is off."""
    if progress.disable:
        yield from items
        return
    n = 0
    try:
        for item in items:
            n += 1  # counted when handed out: a loop that stops early took it
            yield item
            if n == every:
                progress.update(n)
                n = 0
    finally:
        progress.update(n)
