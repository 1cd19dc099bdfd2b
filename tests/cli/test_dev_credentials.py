from __future__ import annotations

import time
from pathlib import Path

import pytest

from cli.credentials import DevCredentials
from cli.main import main
from services.runtime.auth import TokenVerifier
from services.runtime.config import Settings
from services.runtime.roles import PLATFORM as ROLES
from tests.cli.helpers import lookup_api_key
from tests.support.shell import source_env

ARGS = ["dev", "credentials", "--tenant", "acme", "--user", "alice"]
ENV_NAMES = ["PLATFORM_API_BASE", "TOKEN", "API_KEY", "TENANT_ID", "USER_ID"]
GATE4_NAMES = ["GATE4_API_BASE", "GATE4_TOKEN", "GATE4_API_KEY", "GATE4_TENANT_ID", "GATE4_USER_ID"]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_prints_sourceable_credentials_that_the_gateway_accepts(
    gate4_env: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # On both backends: the key lands wherever the gateway's database is configured.
    monkeypatch.setenv("GATE4_GATEWAY_DATABASE_URL", database_url)
    code, out, err = run([*ARGS, "--roles", "trader,viewer,trader", "--ttl", "600"], capsys)
    assert code == 0
    assert err == ""

    env = source_env(out)
    assert list(env) == ENV_NAMES + GATE4_NAMES
    for name in ENV_NAMES:
        gate4_name = "GATE4_API_BASE" if name == "PLATFORM_API_BASE" else f"GATE4_{name}"
        assert env[gate4_name] == env[name]
    assert env["PLATFORM_API_BASE"] == "http://127.0.0.1:8080"
    assert (env["TENANT_ID"], env["USER_ID"]) == ("acme", "alice")

    claims = TokenVerifier(Settings()).verify(env["TOKEN"])
    assert (claims.tenant_id, claims.user_id) == ("acme", "alice")
    assert claims.roles == {"trader", "viewer"}
    assert abs(claims.expires_at - (time.time() + 600)) < 30

    record = lookup_api_key(gate4_env, env["API_KEY"])
    assert record is not None
    assert record.tenant_id == "acme"
    assert record.label == "dev-credentials:alice"


def test_api_base_and_label_follow_settings_and_flags(
    gate4_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATE4_GATEWAY_HOST", "0.0.0.0")
    monkeypatch.setenv("GATE4_GATEWAY_PORT", "18080")
    code, out, _ = run([*ARGS, "--roles", "sre", "--label", "pager"], capsys)
    assert code == 0
    env = source_env(out)
    assert env["PLATFORM_API_BASE"] == "http://127.0.0.1:18080"
    record = lookup_api_key(gate4_env, env["API_KEY"])
    assert record is not None and record.label == "pager"


def test_var_dir_flag_picks_the_gateway_database(
    gate4_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "elsewhere"
    code, out, _ = run([*ARGS, "--roles", "viewer", "--var-dir", str(other)], capsys)
    assert code == 0
    key = source_env(out)["API_KEY"]
    assert lookup_api_key(other, key) is not None
    assert not (gate4_env / "gateway.db").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--roles", "viewer,admin"], "unknown role(s) admin"),
        (["--roles", " , "], "--roles needs at least one of"),
        (["--roles", "viewer", "--ttl", "0"], "--ttl must be a positive"),
        (["--roles", "viewer", "--label", "x" * 201], "--label must be 1-200 characters"),
    ],
)
def test_bad_values_are_usage_errors_and_change_nothing(
    gate4_env: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code, out, err = run([*ARGS, *extra], capsys)
    assert code == 2
    assert out == ""
    assert message in err
    assert not gate4_env.exists()


@pytest.mark.parametrize(
    ("tenant", "user", "message"),
    [
        ("bad tenant", "alice", "invalid tenant id 'bad tenant'"),
        ("-acme", "alice", "invalid tenant id '-acme'"),
        ("a" * 65, "alice", "invalid tenant id"),
        ("acme", "alice/../root", "invalid user id"),
    ],
)
def test_bad_ids_are_usage_errors(
    gate4_env: Path, capsys: pytest.CaptureFixture[str], tenant: str, user: str, message: str
) -> None:
    argv = ["dev", "credentials", f"--tenant={tenant}", f"--user={user}", "--roles=viewer"]
    code, out, err = run(argv, capsys)
    assert (code, out) == (2, "")
    assert message in err
    assert not gate4_env.exists()


def test_missing_roles_is_a_usage_error(
    gate4_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(ARGS, capsys)
    assert code == 2
    assert "--roles" in err


def test_refused_in_production(
    gate4_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATE4_ENV", "prod")
    monkeypatch.setenv("GATE4_JWT_SECRET", "a-real-production-secret")
    code, out, err = run([*ARGS, "--roles", "viewer"], capsys)
    assert (code, out) == (2, "")
    assert "GATE4_ENV=prod" in err
    assert not gate4_env.exists()


def test_invalid_configuration_is_a_usage_error(
    gate4_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATE4_GATEWAY_PORT", "not-a-port")
    code, _, err = run([*ARGS, "--roles", "viewer"], capsys)
    assert code == 2
    assert "invalid configuration: GATE4_GATEWAY_PORT" in err


def test_secrets_stay_out_of_repr() -> None:
    creds = DevCredentials(
        api_base="http://127.0.0.1:8080",
        tenant_id="acme",
        user_id="alice",
        roles=ROLES,
        expires_at=0,
        token="secret-token",
        api_key="g4k_id_secret-key",
    )
    assert "secret" not in repr(creds)
