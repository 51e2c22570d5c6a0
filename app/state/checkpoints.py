"""Local checkpoint files (the model): written whole or not at all.

The bytes are made on the event loop (they must be a consistent picture of live state); the write and the
``fsync`` go to a thread with :func:`write_in_thread`, because a disk flush can take tens of milliseconds on a
shared machine, and every decision in flight would wait for it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from pathlib import Path


def write_atomically(path: Path, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to a temporary file, flush it to disk, then rename it over ``path``: a crash leaves the
    old file or the new one, never half of one.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "model.pkl"
    >>> write_atomically(target, [b"ab", b"c"])
    >>> target.read_bytes(), target.with_suffix(".tmp").exists()
    (b'abc', False)
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        for chunk in chunks:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


async def write_in_thread(path: Path, chunks: list[bytes]) -> None:
    """:func:`write_atomically` off the event loop (the file I/O releases the interpreter lock)."""
    await asyncio.to_thread(write_atomically, path, chunks)
