"""Fixtures of the client-lane tests: one live platform for all of them, fresh tenants,
and the `gate4` CLI run in process (fast) or as the real console script.

Import the fixtures into a test module (`from tests.support.live import gate4_stack, ...`).
`gate4_stack` is a process-wide singleton, so every module that imports it shares one
platform (starting one takes seconds); each test works in a tenant of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cli import main as cli_main
from gate4_client import Credentials, Gate4Client, RetryPolicy
from services.runtime.roles import PLATFORM as ROLES
from tests.support.stack import LiveStack, start_stack

ROOT = Path(__file__).resolve().parents[2]
GATE4_BIN = Path(sys.executable).parent / "gate4"

_STACK: LiveStack | None = None


@pytest.fixture(scope="session")
def gate4_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    """One platform (five real processes on free loopback ports) for every client-lane test."""
    global _STACK
    owner = _STACK is None
    if _STACK is None:
        _STACK = start_stack(tmp_path_factory.mktemp("client-lane-stack"))
    yield _STACK
    if owner:
        _STACK.stack.stop()
        _STACK = None


@dataclass
class Tenant:
    """A fresh tenant with one user's credentials on the live platform."""

    live: LiveStack
    tenant_id: str
    user_id: str
    token: str = field(repr=False)
    api_key: str = field(repr=False)

    def env(self, **extra: str) -> dict[str, str]:
        """The GATE4_* variables `gate4` and `Gate4Client.from_env` read."""
        return {
            "GATE4_API_BASE": self.live.url,
            "GATE4_TOKEN": self.token,
            "GATE4_API_KEY": self.api_key,
            "GATE4_TENANT_ID": self.tenant_id,
            "GATE4_USER_ID": self.user_id,
            **extra,
        }

    def credentials(self) -> Credentials:
        return Credentials(
            token=self.token, api_key=self.api_key, tenant_id=self.tenant_id, user_id=self.user_id
        )

    def client(self, **kwargs: Any) -> Gate4Client:
        kwargs.setdefault("retry", RetryPolicy(max_retries=1, backoff_base=0.05))
        kwargs.setdefault("credentials", self.credentials())
        return Gate4Client(self.live.url, **kwargs)

    def secrets(self) -> tuple[str, str]:
        return (self.token, self.api_key)


def new_tenant(live: LiveStack, roles: list[str] | None = None, user: str = "alice") -> Tenant:
    tenant_id = f"t-{uuid.uuid4().hex[:12]}"
    return Tenant(
        live=live,
        tenant_id=tenant_id,
        user_id=user,
        token=live.token(tenant_id, user, list(roles or ROLES)),
        api_key=live.api_key(tenant_id),
    )


@pytest.fixture
def tenant(gate4_stack: LiveStack) -> Tenant:
    """A fresh tenant whose user holds all four roles."""
    return new_tenant(gate4_stack)


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def request_id(self) -> str:
        """The requestId the command reported on stderr (success and error alike)."""
        for word in self.stderr.replace(",", " ").replace(")", " ").split():
            if word.startswith("req_") or word.startswith("req:"):
                return word
        raise AssertionError(f"no requestId in stderr: {self.stderr!r}")


RunCli = Callable[..., CliResult]

#: Variables a caller's shell could set that change what `gate4` does.
_AMBIENT = ("OPENCLAW_SHELL", "GATE4_OUTPUT")


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> RunCli:
    """Runs `gate4 ARGV` in this process with exactly `env` as its GATE4_* environment."""

    def run(argv: list[str], env: Mapping[str, str]) -> CliResult:
        with monkeypatch.context() as patch:
            for name in list(os.environ):
                if name.startswith("GATE4_") or name in _AMBIENT:
                    patch.delenv(name)
            for name, value in env.items():
                patch.setenv(name, value)
            capsys.readouterr()
            code = cli_main.main(argv)
            captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def run_gate4_process(argv: list[str], env: Mapping[str, str], timeout: float = 60) -> CliResult:
    """Runs the installed `gate4` console script as a separate process."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GATE4_") and k not in _AMBIENT}
    proc = subprocess.run(
        [str(GATE4_BIN), *argv],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


DEMO_POLICY = ROOT / "cli" / "demo-risk-policy.json"


def ready_to_trade(tenant: Tenant, price: str = "50000") -> Tenant:
    """Puts the demo risk policy and a BTC-USD mark, so deployments and orders can pass."""
    with tenant.client() as gate4:
        gate4.put_policy(json.loads(DEMO_POLICY.read_text()), reason="client-lane tests")
        gate4.feed_marks([{"instrument": "BTC-USD", "price": price}])
    return tenant


def deploy(tenant: Tenant) -> str:
    """A running deployment of the tenant (policy and mark put first)."""
    ready_to_trade(tenant)
    with tenant.client() as gate4:
        deployment = gate4.create_deployment(
            strategy_id="mean-reversion-1",
            account_id="acc_demo",
            instruments=["BTC-USD"],
            capital_allocation="10000",
        )
    return deployment["deploymentId"]
