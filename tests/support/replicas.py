"""The platform scaled out, as `gate4 dev scale-out` runs it, for the replica tests.

`start_replicas` starts cli.devstack's `ScaleOut`, the very class behind `gate4 dev
scale-out`: 2 gateways, 2 risk, 2 execution, 1 audit and 1 conversation process, each on a
free loopback port, all on ONE PostgreSQL database migrated once before they start. Every
caller balances over every replica of a service (round_robin over GATE4_<NAME>_ADDR's list),
so a gateway's orders reach both execution replicas, each of which asks both risk replicas.
The processes share deployments, orders, positions, policies, kill switches, idempotency
keys and API keys through the database.

`ReplicaStack` adds what tests need: credentials valid on both gateways, a client per
gateway, `kill` (SIGKILL, as a crashed host) and `restart` by process name (`audit`,
`risk-1`, `execution-2`, `gateway-1`, ...). `DatabaseStack` is one platform (a Stack) whose
credentials are issued in its database; the order-path tests use it on its own too.

`replica_stack` creates the database with tests/support/postgres.py, starts the replicas,
and always stops every process and drops the database afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from cli.devstack import ManagedProcess, ScaleOut
from services.runtime.config import Settings
from tests.support import postgres
from tests.support.execution_stack import ExecutionStack
from tests.support.stack import TEST_ENV, wait_for

#: A tenant with no risk policy: its probes reach risk and execution and change nothing.
PROBE_TENANT = "probe-replicas"


@dataclass
class DatabaseStack(ExecutionStack):
    """A platform whose processes keep their data at `database_url` (empty: SQLite files
    under the var dir). Credentials are issued in that database, where its gateway looks."""

    database_url: str = ""

    def settings(self) -> Settings:
        if not self.database_url:
            return super().settings()
        return Settings(
            var_dir=self.var_dir,
            database_url=self.database_url,
            gateway_database_url=self.database_url,
        )

    def close_channels(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()


@dataclass
class ReplicaStack:
    """A running `ScaleOut` (see the module docstring)."""

    scale: ScaleOut

    @property
    def database_url(self) -> str:
        return self.scale.database_url

    @property
    def platform(self) -> DatabaseStack:
        """The whole set as one platform (gateway-1 its URL): credentials, settings."""
        return DatabaseStack(self.scale, database_url=self.database_url)

    @property
    def urls(self) -> list[str]:
        """Gateway base URLs, gateway-1 first."""
        return self.scale.gateway_urls

    def headers(
        self, tenant: str = "acme", user: str = "alice", roles: list[str] | None = None
    ) -> dict[str, str]:
        """Credentials that work on every gateway (the API key lives in the shared database)."""
        return self.platform.headers(tenant=tenant, user=user, roles=roles)

    def client(self, gateway: int, headers: dict[str, str] | None = None) -> httpx.Client:
        """A client of gateway `gateway` (0 for gateway-1)."""
        return httpx.Client(base_url=self.urls[gateway], headers=headers or {}, timeout=10)

    def process(self, name: str) -> ManagedProcess:
        """`audit`, `conversation`, or `<risk|execution|gateway>-<n>`."""
        if name not in self.scale.processes:
            known = ", ".join(self.scale.processes)
            raise KeyError(f"no process {name!r}; the processes are {known}")
        return self.scale.processes[name]

    def processes(self) -> dict[str, ManagedProcess]:
        return dict(self.scale.processes)

    def kill(self, name: str) -> None:
        """SIGKILL: no drain, no cleanup, as a crashed host would leave it."""
        self.process(name).kill()

    def restart(self, name: str, timeout: float = 60.0, **env: str) -> None:
        """Starts the process again (SIGKILL first if it still runs), with env changes
        ("" removes a variable), and waits until it is ready."""
        proc = self.process(name)
        proc.kill()
        for key, value in env.items():
            if value:
                proc.env[key] = value
            else:
                proc.env.pop(key, None)
        proc.start()
        proc.wait_ready(timeout)

    def wait_reachable(self, timeout: float = 20.0) -> None:
        """Every gateway answers a policy read and a refused deployment again, i.e. reaches
        risk and an execution that reaches risk (the probe tenant has no policy, so nothing
        is ever created)."""
        headers = self.headers(tenant=PROBE_TENANT)
        body = {
            "strategyId": "probe",
            "accountId": "acc-probe",
            "instruments": ["BTC-USD"],
            "capitalAllocation": "1",
        }

        def probe() -> bool:
            for index in range(len(self.urls)):
                with self.client(index, headers) as client:
                    policy = client.get("/v1/risk/policy")
                    created = client.post(
                        "/v1/deployments",
                        json=body,
                        headers={"Idempotency-Key": f"probe-{uuid.uuid4().hex}"},
                    )
                if (policy.status_code, created.status_code) != (404, 422):
                    return False
            return True

        wait_for(probe, timeout=timeout, interval=0.1)

    def stop(self) -> None:
        """Gateways first, audit last; every process is stopped even when another fails."""
        self.scale.stop()


def start_replicas(
    var_dir: Path, database_url: str, env: dict[str, str] | None = None, timeout: float = 60.0
) -> ReplicaStack:
    """Starts `gate4 dev scale-out`'s processes on `database_url` (an existing database)."""
    scale = ScaleOut(var_dir, database_url, env={**TEST_ENV, **(env or {})})
    try:
        scale.start(timeout)
    except BaseException:
        scale.stop()
        raise
    return ReplicaStack(scale)


@contextmanager
def replica_stack(
    var_dir: Path, admin_url: str = postgres.ADMIN_URL, env: dict[str, str] | None = None
) -> Iterator[ReplicaStack]:
    """The replicas on a fresh database gate4_test_<hex>; stopped and dropped afterwards."""
    with postgres.fresh_database(admin_url) as url:
        replicas = start_replicas(var_dir, url, env)
        try:
            yield replicas
        finally:
            replicas.stop()
