"""The built wheel runs on its own: installed into a fresh venv outside the source tree, its
processes start, serve the packaged OpenAPI document and enforce the packaged policy schema,
and the CLI finds its packaged data (demo policy, escalation matrix)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.devstack import Stack
from gateway.openapi import ApiContract
from tests.support.problems import assert_problem
from tests.support.stack import TEST_ENV, LiveStack

ROOT = Path(__file__).resolve().parents[2]
STEP_TIMEOUT_SECONDS = 180
#: Variables that would point the installed package's tools back at the source tree.
SOURCE_TREE_VARS = ("VIRTUAL_ENV", "PYTHONPATH", "UV_PROJECT_ENVIRONMENT")

# Prints where each top-level package and each data file comes from, as the installed
# package sees them.
PROBE = """
import json
import cli, gateway, services, gate4
from cli.dev import DEMO_RISK_POLICY
from cli.incident.escalation import DEFAULT_MATRIX, load_matrix
from gateway.openapi import SPEC, ApiContract
from services.risk import policy

print(json.dumps({
    "modules": [m.__file__ for m in (cli, gateway, services, gate4)],
    "data": [str(p) for p in (SPEC, policy.SCHEMA, DEFAULT_MATRIX, DEMO_RISK_POLICY)],
    "operations": len(ApiContract().operations),
    "schemaId": policy.schema()["$id"],
    "matrixRows": len(load_matrix()),
    "demoPolicy": json.loads(DEMO_RISK_POLICY.read_text(encoding="utf-8"))["schema"],
}))
"""


def _uv() -> str:
    found = os.environ.get("UV") or shutil.which("uv") or str(Path.home() / ".local/bin/uv")
    assert Path(found).is_file(), "uv is needed to build and install the wheel (make uv)"
    return found


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        args,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv holding the wheel built from this tree and the locked dependencies."""
    work = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in SOURCE_TREE_VARS}
    uv = _uv()
    _run([uv, "build", "--wheel", "--out-dir", str(work / "dist"), str(ROOT)], ROOT, env)
    wheels = sorted((work / "dist").glob("gate4_platform-*.whl"))
    assert len(wheels) == 1, wheels
    requirements = work / "requirements.txt"
    _run(
        [
            uv,
            "export",
            "--frozen",
            "--no-dev",
            "--no-hashes",
            "--no-emit-project",
            "--quiet",
            "--output-file",
            str(requirements),
        ],
        ROOT,
        env,
    )
    venv = work / "venv"
    _run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], work, env)
    python = venv / "bin" / "python"
    _run(
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--python",
            str(python),
            "-r",
            str(requirements),
            str(wheels[0]),
        ],
        work,
        env,
    )
    yield python


def test_the_installed_package_carries_its_data(venv_python: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in SOURCE_TREE_VARS}
    probe = json.loads(_run([str(venv_python), "-c", PROBE], tmp_path, env))
    site = venv_python.parent.parent
    for path in probe["modules"] + probe["data"]:
        assert Path(path).is_relative_to(site), path
    assert probe["operations"] == len(ApiContract().operations)
    assert probe["schemaId"] == "urn:gate4:schema:risk-policy.v1"
    assert probe["matrixRows"] >= 4
    assert probe["demoPolicy"] == "risk-policy.v1"
    assert "incident" in _run([str(venv_python.parent / "gate4"), "--help"], tmp_path, env)


def test_the_installed_package_runs_the_platform(venv_python: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stack = Stack(tmp_path / "var", env=TEST_ENV, python=str(venv_python), cwd=run_dir)
    # The processes import from the venv, not from this tree, with the stack's own environment.
    where = _run(
        [str(venv_python), "-c", "import gateway, services; print(gateway.__file__)"],
        run_dir,
        stack.env,
    )
    assert Path(where.strip()).is_relative_to(venv_python.parent.parent), where
    live = LiveStack(stack)
    try:
        stack.start(timeout=60)
        with live.client() as client:
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 200
            served = client.get("/openapi.yaml")
            assert served.status_code == 200
            assert served.content == (ROOT / "gateway" / "platform-api.openapi.yaml").read_bytes()
        demo = json.loads((ROOT / "cli" / "demo-risk-policy.json").read_text())
        with live.client(live.headers(tenant="wheel")) as client:
            bad = client.put(
                "/v1/risk/policy",
                json={"policy": {"schema": "risk-policy.v1"}, "reason": "schema check"},
            )
            assert_problem(bad, 400, "RISK_POLICY_INVALID")
            put = client.put("/v1/risk/policy", json={"policy": demo, "reason": "wheel smoke"})
            assert put.status_code in (200, 201), put.text
            active = client.get("/v1/risk/policy")
            assert active.status_code == 200, active.text
            assert active.json()["version"] == 1
    finally:
        stack.stop()
