"""With GATE4_ENV=prod, the real processes refuse weak configuration, and the Kubernetes
manifests carry no secret that would pass.

The unit tests of services/runtime/production.py try each weakness; here the five processes
are started for real with the manifests' own values (and with one-character secrets) and
must exit at once, naming the variables, without creating a database file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.devstack import free_port, settings_from
from services.runtime.config import IDENTITIES, SERVICES
from services.runtime.production import production_problems
from tests.support import k8s


def k8s_env(identity: str) -> tuple[dict[str, str], dict[str, str]]:
    """(everything the process's Deployment in the prod overlay gives it, just its Secrets'
    part)."""
    deployment = k8s.named("prod")["Deployment", f"gate4-{identity}"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return k8s.container_env("prod", container)


@pytest.mark.parametrize("identity", IDENTITIES)
def test_the_k8s_secrets_values_are_each_refused(identity: str) -> None:
    env, secret_env = k8s_env(identity)
    assert env["GATE4_ENV"] == "prod"
    problems = production_problems(settings_from(env), identity)
    text = "\n".join(problems)
    for variable in secret_env:
        assert variable in text, f"{variable} of the {identity} Deployment would pass"
    for value in secret_env.values():
        assert value not in text  # refusals name variables, never quote values
    assert "GATE4_SERVICE_TOKEN_DIGESTS" in text
    if identity == "gateway":
        assert "GATE4_JWT_JWKS_URL" in text


def _start(identity: str, env: dict[str, str], var_dir: Path) -> subprocess.Popen[str]:
    module = "gateway" if identity == "gateway" else f"services.{identity}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("GATE4_")}
    ports = {f"GATE4_{name.upper()}_ADDR": f"127.0.0.1:{free_port()}" for name in SERVICES}
    return subprocess.Popen(
        [sys.executable, "-m", module],
        env={
            **base,
            **env,
            **ports,
            "GATE4_GATEWAY_HOST": "127.0.0.1",
            "GATE4_GATEWAY_PORT": str(free_port()),
            "GATE4_VAR_DIR": str(var_dir),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _refusals(starts: dict[str, subprocess.Popen[str]]) -> dict[str, tuple[int, str]]:
    results: dict[str, tuple[int, str]] = {}
    for name, proc in starts.items():
        try:
            _out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail(f"{name} started with a configuration prod must refuse")
        results[name] = (proc.returncode, err)
    return results


def test_every_process_refuses_to_start_with_the_k8s_placeholders(tmp_path: Path) -> None:
    starts = {
        identity: _start(identity, k8s_env(identity)[0], tmp_path / identity)
        for identity in IDENTITIES
    }
    for identity, (code, err) in _refusals(starts).items():
        assert code != 0, identity
        assert f"{identity} refuses to start with GATE4_ENV=prod" in err, err
        assert "Traceback" not in err
        for variable in k8s_env(identity)[1]:
            assert variable in err, (identity, variable)
        # Refused before storage was touched: no SQLite file stands in for the database.
        assert not list((tmp_path / identity).rglob("*.db")), identity


def test_one_character_secrets_and_no_database_url_are_refused(tmp_path: Path) -> None:
    weak = {
        "GATE4_ENV": "prod",
        "GATE4_JWT_ALGORITHMS": "HS256",
        "GATE4_JWT_ALLOW_HS256": "true",
        "GATE4_JWT_SECRET": "x",
        **{f"GATE4_{name.upper()}_SERVICE_TOKEN": "y" for name in IDENTITIES},
    }
    starts = {name: _start(name, weak, tmp_path / name) for name in ("gateway", "audit")}
    for identity, (code, err) in _refusals(starts).items():
        assert code != 0
        assert "GATE4_JWT_SECRET is 1 bytes" in err
        assert f"GATE4_{identity.upper()}_SERVICE_TOKEN is 1 bytes" in err
        assert "GATE4_SERVICE_TOKEN_DIGESTS must list" in err
        assert f"GATE4_DATABASE_URL (or GATE4_{identity.upper()}_DATABASE_URL) must be set" in err
        assert not (tmp_path / identity / f"{identity}.db").exists()
