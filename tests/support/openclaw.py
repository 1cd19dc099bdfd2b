"""The real OpenClaw for tests: installed by clients/openclaw/install.sh (what `make openclaw`
runs) into the git-ignored .cache/openclaw, and run with a throwaway HOME and state directory
so nothing of the machine's own OpenClaw setup is read or written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = ROOT / "clients" / "openclaw" / "install.sh"
CACHE = Path(os.environ.get("OPENCLAW_CACHE_DIR") or ROOT / ".cache" / "openclaw")
OPENCLAW = CACHE / "bin" / "openclaw"
PACKAGE = CACHE / "openclaw" / "node_modules" / "openclaw"
QUICK_VALIDATE = PACKAGE / "skills" / "skill-creator" / "scripts" / "quick_validate.py"
#: The folder that contains skills/ (what OPENCLAW_WORKSPACE_DIR points at).
WORKSPACE = ROOT / "clients" / "openclaw"
SKILL_NAME = "gate4-platform"
SKILL_DIR = WORKSPACE / "skills" / SKILL_NAME
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
INSTALL_TIMEOUT_SECONDS = 900


def ensure_openclaw() -> Path:
    """Installs Node 24 and OpenClaw when missing (quick when present); returns the CLI.

    Without the npm registry the test cannot run: it skips, except under CI=true where it
    fails, as the PostgreSQL tests do."""
    proc = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_SECONDS,
        check=False,
    )
    if proc.returncode != 0 or not OPENCLAW.exists():
        message = f"installing OpenClaw failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return OPENCLAW


@dataclass
class OpenClawRun:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def openclaw_env(
    home: Path,
    path: Sequence[Path | str],
    extra: Mapping[str, str] | None = None,
    workspace: Path = WORKSPACE,
) -> dict[str, str]:
    """A minimal environment: PATH as given, a throwaway HOME and state, and a workspace whose
    skills/ holds the skill (the repo's clients/openclaw by default)."""
    return {
        "PATH": os.pathsep.join(str(p) for p in path),
        "HOME": str(home),
        "OPENCLAW_STATE_DIR": str(home / ".openclaw"),
        "OPENCLAW_WORKSPACE_DIR": str(workspace),
        "LANG": "C.UTF-8",
        **(extra or {}),
    }


def scratch_workspace(root: Path) -> Path:
    """A workspace with a copy of the skill. An agent run writes its bootstrap files
    (AGENTS.md, SOUL.md, ...) into the workspace, which must not be the repository."""
    workspace = root / "workspace"
    shutil.copytree(SKILL_DIR, workspace / "skills" / SKILL_NAME)
    return workspace


def run_openclaw(args: Sequence[str], env: Mapping[str, str], timeout: float = 120) -> OpenClawRun:
    proc = subprocess.run(
        [str(OPENCLAW), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=env.get("HOME"),
    )
    return OpenClawRun(proc.returncode, proc.stdout, proc.stderr)


def skills_info(env: Mapping[str, str]) -> dict[str, Any]:
    run = run_openclaw(["skills", "info", SKILL_NAME, "--json"], env)
    assert run.exit_code == 0, run.stderr[-2000:]
    info: dict[str, Any] = run.json()
    return info


def agent_turn(
    env: Mapping[str, str], message: str, session_id: str, timeout: float = 300
) -> OpenClawRun:
    """One user message to the local (embedded) agent `main`, in the OpenClaw session
    `session_id`: successive calls with the same id are one conversation, each run sending
    the session's history to the model."""
    return run_openclaw(
        [
            "agent",
            "--local",
            "--agent",
            "main",
            "--session-id",
            session_id,
            "--message",
            message,
            "--json",
        ],
        env,
        timeout=timeout,
    )
