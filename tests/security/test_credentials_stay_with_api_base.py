"""Credentials go only to the API base they were issued for: `gate4_client` and `gate4`
refuse another base unless that gateway's own credentials are given explicitly, and never
follow a redirect. A recording sink on loopback plays the attacker's host."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.errors import EXIT_OK, EXIT_USAGE
from gate4_client import (
    AsyncGate4Client,
    ConfigurationError,
    Credentials,
    Gate4Client,
    TransportError,
    config_from_env,
    same_api_base,
)
from gate4_client.errors import ApiError
from services.runtime.roles import PLATFORM as ROLES
from tests.security.conftest import SecurityStack
from tests.support.live import RunCli, run_cli, run_gate4_process
from tests.support.sink import Sink, credential_sink

__all__ = ["run_cli"]


@pytest.fixture
def sink() -> Iterator[Sink]:
    with credential_sink() as recording:
        yield recording


@pytest.fixture
def env(security_stack: SecurityStack) -> dict[str, str]:
    """A fresh tenant's GATE4_* credentials, issued for the security stack's gateway."""
    live = security_stack.live
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    return {
        "GATE4_API_BASE": live.url,
        "GATE4_TOKEN": live.token(tenant, "alice", list(ROLES)),
        "GATE4_API_KEY": live.api_key(tenant),
        "GATE4_TENANT_ID": tenant,
        "GATE4_USER_ID": "alice",
    }


def secrets_of(env: dict[str, str]) -> tuple[str, str]:
    return env["GATE4_TOKEN"], env["GATE4_API_KEY"]


@pytest.mark.parametrize(
    "a,b,same",
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/", True),
        ("https://GW.example.com", "https://gw.example.com:443", True),
        ("http://gw/gate4", "http://gw:80/gate4/", True),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8081", False),
        ("http://127.0.0.1:8080", "http://localhost:8080", False),
        ("http://gw", "https://gw", False),
        ("http://gw/gate4", "http://gw/other", False),
        ("http://gw:8080", "http://gw:8080@evil:80", False),
    ],
)
def test_what_counts_as_the_same_api_base(a: str, b: str, same: bool) -> None:
    assert same_api_base(a, b) is same


def test_the_client_refuses_to_carry_environment_credentials_elsewhere(
    env: dict[str, str], sink: Sink
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Gate4Client.from_env(env, base_url=sink.url)
    assert sink.url in str(refused.value)
    assert not any(secret in str(refused.value) for secret in secrets_of(env))
    with pytest.raises(ConfigurationError):
        Gate4Client(sink.url, config=config_from_env(env))
    with pytest.raises(ConfigurationError):
        AsyncGate4Client.from_env(env, base_url=sink.url)
    assert sink.requests == []
    # The base they were issued for works, spelled either way.
    with Gate4Client.from_env(env, base_url=env["GATE4_API_BASE"] + "/") as gate4:
        assert gate4.list_deployments()["deployments"] == []


def test_explicit_credentials_go_where_they_are_told(env: dict[str, str], sink: Sink) -> None:
    """Credentials given explicitly with the client are the caller's decision."""
    explicit = Credentials(token="sink-token", api_key="g4k_sink_key", tenant_id="t", user_id="u")
    with Gate4Client(sink.url, credentials=explicit) as gate4:
        gate4.list_deployments()
    assert "sink-token" in sink.received()
    assert not any(secret in sink.received() for secret in secrets_of(env))


def test_the_client_never_follows_a_redirect_to_another_host(
    env: dict[str, str], sink: Sink
) -> None:
    with credential_sink() as front:
        front.redirect_to = sink.url
        credentials = Credentials(
            token=env["GATE4_TOKEN"],
            api_key=env["GATE4_API_KEY"],
            tenant_id=env["GATE4_TENANT_ID"],
            user_id=env["GATE4_USER_ID"],
        )
        with Gate4Client(front.url, credentials=credentials) as gate4, pytest.raises(ApiError):
            gate4.list_deployments()

        async def follow() -> None:
            async with AsyncGate4Client(front.url, credentials=credentials) as agate4:
                await agate4.list_deployments()

        with pytest.raises((ApiError, TransportError)):
            asyncio.run(follow())
    assert len(front.requests) == 2
    assert sink.requests == []


def test_gate4_refuses_an_api_base_override_before_sending_anything(
    env: dict[str, str], sink: Sink, run_cli: RunCli
) -> None:
    for argv in (
        ["audit", "verify", "--api-base", sink.url],
        ["deployments", "list", f"--api-base={sink.url}/"],
        ["orders", "submit", "--deployment", "dep_x", "--instrument", "BTC-USD", "--side", "buy",
         "--quantity", "1", "--api-base", sink.url],
    ):  # fmt: skip
        result = run_cli(argv, env)
        assert result.exit_code == EXIT_USAGE, result.stderr
        assert "refusing to send the credentials issued for" in result.stderr
        assert not any(s in result.stdout + result.stderr for s in secrets_of(env))
    # The SRE tooling takes the same path.
    capture = run_cli(
        ["triage", "risk", "--api-base", sink.url, "--var-dir", str(Path.cwd() / "var")], env
    )
    assert capture.exit_code == EXIT_USAGE
    # As the installed console script, in its own process, too.
    process = run_gate4_process(["audit", "verify", "--api-base", sink.url], env)
    assert process.exit_code == EXIT_USAGE
    assert sink.requests == []
    # The API base the credentials belong to may be spelled out.
    same = run_cli(["audit", "verify", "--api-base", env["GATE4_API_BASE"] + "/"], env)
    assert same.exit_code == EXIT_OK, same.stderr


def test_another_gateway_needs_its_own_credentials_file(
    env: dict[str, str], sink: Sink, run_cli: RunCli, tmp_path: Path
) -> None:
    """`--credentials FILE` brings a gateway's base and credentials together; the file's
    credentials then go to the file's base only."""
    creds = tmp_path / "other.env"
    creds.write_text(
        "# credentials of another gateway\n"
        + "".join(f"export {name}='{value}'\n" for name, value in env.items())
    )
    ambient = {**env, "GATE4_API_BASE": sink.url, "GATE4_TOKEN": "ambient-token"}
    ok = run_cli(["audit", "verify", "--credentials", str(creds)], ambient)
    assert ok.exit_code == EXIT_OK, ok.stderr
    aimed = run_cli(["audit", "verify", "--credentials", str(creds), "--api-base", sink.url], env)
    assert aimed.exit_code == EXIT_USAGE
    baseless = tmp_path / "baseless.env"
    baseless.write_text(f"export GATE4_TOKEN='{env['GATE4_TOKEN']}'\n")
    refused = run_cli(["audit", "verify", "--credentials", str(baseless)], env)
    assert refused.exit_code == EXIT_USAGE and "no GATE4_API_BASE" in refused.stderr
    assert sink.requests == []
