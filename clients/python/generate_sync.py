"""Generates the synchronous client, gate4_client/generated/client.py, from the asyncio one, aio.py.

unasync drops `async`/`await` and renames tokens (its own list plus REPLACEMENTS); the module
docstring is swapped for the synchronous one and ruff sorts and formats the result. Run it
with COMMAND; the drift test (tests/clients/test_client_drift.py) generates into a temporary
folder and compares.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tempfile
from pathlib import Path

import unasync  # type: ignore[import-untyped]

PACKAGE = Path(__file__).resolve().parent / "gate4_client"
SOURCE = PACKAGE / "aio.py"
TARGET = PACKAGE / "generated" / "client.py"
REPO_ROOT = PACKAGE.parents[2]
COMMAND = "uv run --frozen python clients/python/generate_sync.py"

#: Renames on top of unasync's own (`__aenter__` -> `__enter__`, `AsyncX` -> `SyncX`, ...).
REPLACEMENTS = {
    "AsyncGate4Client": "Gate4Client",
    "AsyncClient": "Client",  # httpx
    "AsyncBaseTransport": "BaseTransport",  # httpx
    "aclose": "close",
    "asyncio": "time",  # `import asyncio`, `asyncio.sleep`
}

HEADER = (
    "# Generated from aio.py by clients/python/generate_sync.py (unasync): do not edit.\n"
    f"# Change aio.py, then run `{COMMAND}`.\n"
)
DOCSTRING = '''"""`Gate4Client`: the synchronous Platform API client (httpx).

The same methods as `AsyncGate4Client`, without `await`: this module is aio.py, unasynced.
"""
'''


def unasynced(source: Path) -> str:
    """The source with unasync's token replacements applied."""
    with tempfile.TemporaryDirectory() as scratch:
        # unasync maps folders: the package's file lands under the same name in scratch.
        rule = unasync.Rule(
            fromdir=str(source.parent), todir=scratch, additional_replacements=REPLACEMENTS
        )
        unasync.unasync_files([str(source)], rules=[rule])
        return (Path(scratch) / source.name).read_text()


def leftovers(code: str) -> list[str]:
    """Identifiers still naming async things (e.g. `Awaitable`): aio.py used something that
    token replacement cannot translate and that should move to `_core`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.alias):
            names.add(node.name)
    return sorted(n for n in names if "async" in n.lower() or "await" in n.lower())


def with_sync_docstring(code: str) -> str:
    first = ast.parse(code).body[0]
    if not (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
        and first.end_lineno is not None
    ):
        raise SystemExit(f"{SOURCE.name} must start with its module docstring")
    rest = code.splitlines(keepends=True)[first.end_lineno :]
    return HEADER + DOCSTRING + "".join(rest)


def ruff(code: str, *args: str) -> str:
    """The code through `ruff <args>` under the repository's settings (pinned in uv.lock)."""
    done = subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, "-m", "ruff", *args, "--stdin-filename", str(TARGET), "-"],
        input=code,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"ruff {args[0]} failed: {done.stderr.strip()}")
    return done.stdout


def formatted(code: str) -> str:
    """Imports sorted and code formatted as `make lint` wants: renamed imports move, and
    lines that lost `await ` may now fit on one."""
    return ruff(ruff(code, "check", "--select", "I", "--fix-only", "--quiet"), "format")


def generate(out: Path) -> Path:
    """Writes the synchronous client generated from aio.py to `out`."""
    code = unasynced(SOURCE)
    left = leftovers(code)
    if left:
        raise SystemExit(f"{SOURCE.name}: no synchronous counterpart for {', '.join(left)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(formatted(with_sync_docstring(code)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=TARGET)
    args = parser.parse_args()
    print(f"generated {generate(args.out)} from {SOURCE.name}")


if __name__ == "__main__":
    main()
