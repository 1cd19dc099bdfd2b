"""Two replicas of the platform on one PostgreSQL database, as a busy desk would run it.

`start_replicas` runs two lanes on free loopback ports against ONE database:

    lane 1: gateway-1 -> execution-1 <-> risk-1      audit, conversation (shared)
    lane 2: gateway-2 -> execution-2 <-> risk-2

Gateway i dials execution i and risk i, execution i dials risk i and risk i dials execution i
(each process gets its own GATE4_<NAME>_ADDR); both lanes use the one audit and conversation
process. Every process, the gateways' API-key stores included, has GATE4_DATABASE_URL
pointing at the same database, so one API key works on both gateways and both lanes share
deployments, orders, positions, policies and kill switches.

Each lane is a `DatabaseStack` (an ExecutionStack whose credentials are issued in the lane's
database), so whatever a test does with one platform (headers, clients, restarting execution,
waiting until the processes reach each other again) works on either lane. Processes are
named `audit`, `conversation`, `risk-1`, `execution-2`, `gateway-1`, ... for `process`,
`kill` and `restart`.

`replica_stack` creates the database with tests/support/postgres.py, starts the lanes, and
always stops every process and drops the database afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from cli.devstack import GATEWAY, PROCESSES, ManagedProcess, Stack, free_port
from services.runtime.config import Settings
from tests.execution.support import ExecutionStack
from tests.support import postgres
from tests.support.stack import TEST_ENV

#: The processes the first lane runs; the second runs only its own risk, execution, gateway.
SHARED = ("audit", "conversation")
PER_LANE = ("risk", "execution", GATEWAY)
LANES = 2


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
    """Two lanes of the platform sharing one PostgreSQL database (see the module docstring)."""

    var_dir: Path
    database_url: str
    lanes: list[DatabaseStack]

    @property
    def urls(self) -> list[str]:
        """Gateway base URLs, lane 1 first."""
        return [lane.url for lane in self.lanes]

    def headers(
        self, tenant: str = "acme", user: str = "alice", roles: list[str] | None = None
    ) -> dict[str, str]:
        """Credentials that work on both gateways (the API key lives in the shared database)."""
        return self.lanes[0].headers(tenant=tenant, user=user, roles=roles)

    def client(self, lane: int, headers: dict[str, str] | None = None) -> httpx.Client:
        """A client of gateway `lane` (0 or 1)."""
        return self.lanes[lane].client(headers)

    def process(self, name: str) -> ManagedProcess:
        """`audit`, `conversation`, or `<risk|execution|gateway>-<1|2>`."""
        if name in SHARED:
            return self.lanes[0].stack.processes[name]
        kind, _, lane = name.rpartition("-")
        if kind not in PER_LANE or lane not in {str(i + 1) for i in range(len(self.lanes))}:
            raise KeyError(f"no process {name!r}; try e.g. execution-1 or gateway-2")
        return self.lanes[int(lane) - 1].stack.processes[kind]

    def processes(self) -> dict[str, ManagedProcess]:
        named = {name: self.lanes[0].stack.processes[name] for name in SHARED}
        for index, lane in enumerate(self.lanes, start=1):
            for kind in PER_LANE:
                named[f"{kind}-{index}"] = lane.stack.processes[kind]
        return named

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
        """Each gateway reaches its risk and its execution reaches its risk again."""
        for lane in self.lanes:
            lane.wait_reachable(timeout)

    def stop(self) -> None:
        """Gateways first, then executions, risks and the shared services; every process is
        stopped even when stopping another one fails."""
        for lane in self.lanes:
            lane.close_channels()
        order = [GATEWAY, "execution", "risk"]
        procs = [lane.stack.processes[kind] for kind in order for lane in self.lanes]
        procs += [self.lanes[0].stack.processes[name] for name in reversed(SHARED)]
        _stop_all(procs)


def _stop_all(procs: list[ManagedProcess]) -> None:
    errors: list[BaseException] = []
    for proc in procs:
        try:
            proc.stop()
        except Exception as exc:  # keep stopping the others; report the first failure
            errors.append(exc)
    if errors:
        raise errors[0]


def start_replicas(
    var_dir: Path, database_url: str, env: dict[str, str] | None = None, timeout: float = 60.0
) -> ReplicaStack:
    """Starts both lanes on `database_url`: every service at once, then both gateways."""
    extra = {**TEST_ENV, **(env or {}), "GATE4_DATABASE_URL": database_url}
    shared_ports = {name: free_port() for name in SHARED}
    lanes: list[DatabaseStack] = []
    for index in range(1, LANES + 1):
        ports = {name: free_port() for name in PROCESSES}
        ports.update(shared_ports)
        names = [*SHARED, *PER_LANE] if index == 1 else list(PER_LANE)
        stack = Stack(var_dir / f"lane-{index}", ports=ports, env=extra, names=names)
        lanes.append(DatabaseStack(stack, database_url=database_url))
    replicas = ReplicaStack(var_dir, database_url, lanes)
    try:
        every = [p for lane in lanes for p in lane.stack.processes.values()]
        services = [p for p in every if p.name != GATEWAY]
        gateways = [p for p in every if p.name == GATEWAY]
        for proc in services:
            proc.start()
        for proc in services:
            proc.wait_ready(timeout)
        for proc in gateways:
            proc.start()
        for proc in gateways:
            proc.wait_ready(timeout)
    except BaseException:
        replicas.stop()
        raise
    return replicas


@contextmanager
def replica_stack(
    var_dir: Path, admin_url: str = postgres.ADMIN_URL, env: dict[str, str] | None = None
) -> Iterator[ReplicaStack]:
    """Both lanes on a fresh database gate4_test_<hex>; stopped and dropped afterwards."""
    with postgres.fresh_database(admin_url) as url:
        replicas = start_replicas(var_dir, url, env)
        try:
            yield replicas
        finally:
            replicas.stop()
