"""generated/ is exactly what `make proto` produces from protos/."""

from __future__ import annotations

import filecmp
import importlib.util
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("proto_generate", ROOT / "protos" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["proto_generate"] = module
    spec.loader.exec_module(module)
    return module


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    generated = _load_generator().generate(tmp_path)
    fresh = {p.relative_to(tmp_path) for p in generated}
    committed = {
        p.relative_to(ROOT / "generated")
        for p in (ROOT / "generated").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert fresh == committed, "run `make proto`: generated/ and protos/ list different files"
    stale = [
        str(rel)
        for rel in sorted(fresh)
        if not filecmp.cmp(tmp_path / rel, ROOT / "generated" / rel, shallow=False)
    ]
    assert not stale, f"run `make proto`: generated/ drifted from protos/ in {stale}"


def test_every_service_has_its_proto_package() -> None:
    for service in ("audit", "risk", "execution", "conversation"):
        text = (ROOT / "protos" / "gate4" / service / "v1" / f"{service}.proto").read_text()
        assert f"package gate4.{service}.v1;" in text
