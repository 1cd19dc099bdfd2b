"""gate4_client/generated/client.py is exactly what clients/python/generate_sync.py makes of
aio.py."""

from __future__ import annotations

import difflib
import importlib.util
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "clients" / "python" / "gate4_client" / "generated" / "client.py"


def _load_generator() -> Any:
    path = ROOT / "clients" / "python" / "generate_sync.py"
    spec = importlib.util.spec_from_file_location("client_generate_sync", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["client_generate_sync"] = module
    spec.loader.exec_module(module)
    return module


def test_the_sync_client_is_generated_from_the_async_one(tmp_path: Path) -> None:
    generator = _load_generator()
    fresh = generator.generate(tmp_path / "client.py").read_text().splitlines()
    committed = COMMITTED.read_text().splitlines()
    diff = list(difflib.unified_diff(committed, fresh, "committed", "generated", lineterm=""))
    shown = "\n".join(diff[:40])
    assert not diff, f"run `{generator.COMMAND}`: client.py drifted from aio.py\n{shown}"


def test_what_token_replacement_cannot_translate_is_refused() -> None:
    # The generator stops rather than emit a sync client still typed with `Awaitable`.
    code = "from collections.abc import Awaitable\nwait: Awaitable[None]\n"
    assert _load_generator().leftovers(code) == ["Awaitable"]
