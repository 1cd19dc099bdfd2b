"""Several replicas of a service on one host: GATE4_<NAME>_ADDR lists them, comma-separated,
and a caller's channel balances over all of them (what `gate4 dev scale-out` relies on)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from cli.devca import ensure_dev_ca
from cli.devstack import free_port
from services.runtime.clients import channel, channel_options, dial_target
from services.runtime.config import Settings
from services.runtime.identity import server_credentials
from services.runtime.server import server_options

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_a_list_of_ip_literals_is_one_balanced_target() -> None:
    assert dial_target("127.0.0.1:1,127.0.0.1:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert dial_target(" [::1]:1, [::1]:2 ") == "ipv6:[::1]:1,[::1]:2"
    options = dict(channel_options(Settings(), "127.0.0.1:1,127.0.0.1:2"))
    assert options["grpc.lb_policy_name"] == "round_robin"
    # TLS checks the peer against one name; every replica's certificate covers it.
    assert options["grpc.default_authority"] == "127.0.0.1:1"
    # One address: as before.
    assert dial_target("127.0.0.1:1") == "dns:///127.0.0.1:1"
    assert dict(channel_options(Settings(), "127.0.0.1:1"))["grpc.lb_policy_name"] == "pick_first"


@pytest.mark.parametrize("addr", ["risk-a:1,risk-b:1", "127.0.0.1:1,[::1]:1"])
def test_a_list_grpc_cannot_dial_as_one_target_is_refused(addr: str) -> None:
    with pytest.raises(ValueError, match="several addresses"):
        dial_target(addr)


def test_calls_spread_over_the_listed_replicas_and_skip_one_that_is_gone() -> None:
    """Two health servers, one answering SERVING and one NOT_SERVING, tell the replicas
    apart: both answer while both run; once one stops, every call reaches the other."""
    ports = [free_port(), free_port()]

    async def scenario() -> tuple[set[int], set[int]]:
        settings = Settings.model_validate(
            {"risk_addr": ",".join(f"127.0.0.1:{port}" for port in ports)}
        )
        servers = []
        for port, status in zip(ports, (SERVING, NOT_SERVING), strict=True):
            server = grpc.aio.server(options=server_options(settings))
            servicer = health.aio.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
            server.add_insecure_port(f"127.0.0.1:{port}")
            await server.start()
            await servicer.set("", status)
            servers.append(server)
        ch = channel(settings, "risk", 5.0, identity="gateway")
        stub = health_pb2_grpc.HealthStub(ch)

        async def statuses(calls: int) -> set[int]:
            seen: set[int] = set()
            for _ in range(calls):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), wait_for_ready=True)
                seen.add(reply.status)
            return seen

        try:
            both = await statuses(6)
            await servers[0].stop(0)
            # Calls in flight on the stopped replica may fail; then every call reaches the other.
            deadline = time.monotonic() + 10
            while True:
                try:
                    after = await statuses(6)
                    break
                except grpc.aio.AioRpcError:
                    assert time.monotonic() < deadline
        finally:
            await ch.close()
            for server in servers:
                await server.stop(0)
        return both, after

    both, after = asyncio.run(asyncio.wait_for(scenario(), timeout=30))
    assert both == {SERVING, NOT_SERVING}
    assert after == {NOT_SERVING}


@pytest.mark.parametrize("mode", ["tls", "mtls"])
def test_a_list_target_verifies_each_replicas_certificate(mode: str, tmp_path: Path) -> None:
    """`gate4 dev scale-out` with GATE4_TLS set: the replicas' certificates name 127.0.0.1."""
    ports = [free_port(), free_port()]
    settings = Settings.model_validate(
        {
            "tls": mode,
            "tls_dir": str(tmp_path),
            "risk_addr": ",".join(f"127.0.0.1:{port}" for port in ports),
        }
    )
    ensure_dev_ca(tmp_path)
    credentials = server_credentials(settings, "risk")
    assert credentials is not None

    async def scenario() -> list[int]:
        servers = []
        for port in ports:
            server = grpc.aio.server(options=server_options(settings))
            servicer = health.aio.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
            server.add_secure_port(f"127.0.0.1:{port}", credentials)
            await server.start()
            await servicer.set("", SERVING)
            servers.append(server)
        ch = channel(settings, "risk", 5.0, identity="gateway")
        try:
            stub = health_pb2_grpc.HealthStub(ch)
            return [
                (await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)).status
                for _ in range(4)
            ]
        finally:
            await ch.close()
            for server in servers:
                await server.stop(0)

    assert asyncio.run(asyncio.wait_for(scenario(), timeout=30)) == [SERVING] * 4
