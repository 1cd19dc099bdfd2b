"""Generates the Python gRPC code for every .proto under protos/ into one package tree.

`make proto` writes into generated/; the drift test writes into a temporary folder and compares.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Writes *_pb2.py, *_pb2_grpc.py and typing stubs for all protos into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).resolve().parent / "_proto"
    plugin = shutil.which("protoc-gen-mypy", path=str(Path(sys.executable).parent))
    grpc_plugin = shutil.which("protoc-gen-mypy_grpc", path=str(Path(sys.executable).parent))
    if plugin is None or grpc_plugin is None:
        raise SystemExit("mypy-protobuf is not installed in this environment (uv sync installs it)")
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy={plugin}",
        f"--plugin=protoc-gen-mypy_grpc={grpc_plugin}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Regular packages (not namespace packages) so mypy and the wheel see them.
    for folder in [out_dir / "gate4", *(p for p in (out_dir / "gate4").rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    (out_dir / "gate4" / "py.typed").touch()
    return sorted(p for p in out_dir.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=PROTO_ROOT.parent / "generated")
    args = parser.parse_args()
    target: Path = args.out
    if (target / "gate4").exists():
        shutil.rmtree(target / "gate4")
    written = generate(target)
    print(f"generated {len(written)} files under {target}")


if __name__ == "__main__":
    main()
