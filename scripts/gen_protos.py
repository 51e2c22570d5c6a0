"""Regenerate the checked-in gRPC modules of ``proto/*.proto`` into ``app/serving/protos/`` (grpcio-tools).

    .venv/bin/python scripts/gen_protos.py            # writes app/serving/protos/
    .venv/bin/python scripts/gen_protos.py --out DIR  # writes DIR/app/serving/protos/ (the test compares it)

The proto directory is mapped to the import path ``app/serving/protos`` so the generated ``_pb2_grpc`` module imports
``from app.serving.protos import ..._pb2``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = REPO_ROOT / "proto"


def generate(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    protos = sorted(PROTO_DIR.glob("*.proto"))
    args = [
        "protoc",
        f"-Iapp/serving/protos={PROTO_DIR}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(f"app/serving/protos/{p.name}" for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out / "app" / "serving" / "protos").glob("*_pb2*.py*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT, help="root to write app/serving/protos/ under")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path)


if __name__ == "__main__":
    sys.exit(main())
