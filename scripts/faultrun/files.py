"""The run's small files: JSON status files replaced atomically (the processes talk through them), and the
helper processes' logs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson


def process_logging(path: Path) -> None:
    logging.basicConfig(filename=str(path), level=logging.INFO,
                        format="%(asctime)s %(processName)s %(levelname)s %(name)s: %(message)s")  # fmt: skip


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(orjson.dumps(obj, option=orjson.OPT_INDENT_2))
    tmp.replace(path)


def read_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
