"""Fixtures for the CLI tests: a hermetic GATE4_* environment rooted in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def gate4_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No GATE4_* from the caller's shell; var dir and cwd in tmp_path. Returns the var dir."""
    for name in list(os.environ):
        if name.startswith("GATE4_"):
            monkeypatch.delenv(name)
    var_dir = tmp_path / "var"
    monkeypatch.setenv("GATE4_VAR_DIR", str(var_dir))
    monkeypatch.chdir(tmp_path)
    return var_dir
