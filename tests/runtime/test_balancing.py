"""Client-side balancing: peers dialled as dns:///host:port with round_robin and keepalive,
servers closing connections at their maximum age; all from Settings."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from cli.devstack import free_port
from services.runtime.clients import channel, channel_options, dial_target
from services.runtime.config import Settings
from services.runtime.server import server_options


def _settings(**values: object) -> Settings:
    return Settings.model_validate(values)


def test_channel_options_carry_the_configured_policy_and_keepalive() -> None:
    settings = _settings(
        grpc_lb_policy="round_robin",
        grpc_keepalive_time_seconds=12.5,
        grpc_keepalive_timeout_seconds=4,
    )
    options = dict(channel_options(settings))
    assert options["grpc.lb_policy_name"] == "round_robin"
    assert options["grpc.keepalive_time_ms"] == 12_500
    assert options["grpc.keepalive_timeout_ms"] == 4_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert dict(channel_options(_settings(grpc_lb_policy="pick_first")))["grpc.lb_policy_name"] == (
        "pick_first"
    )


def test_defaults_balance_with_round_robin() -> None:
    assert dict(channel_options(Settings()))["grpc.lb_policy_name"] == "round_robin"
    assert dict(channel_options(Settings(), "risk:50052"))["grpc.lb_policy_name"] == "round_robin"


def test_an_ip_literal_has_nothing_to_balance_and_reconnects_on_demand() -> None:
    for addr in ("127.0.0.1:50052", "[::1]:50052", "10.0.0.7:50052"):
        assert dict(channel_options(Settings(), addr))["grpc.lb_policy_name"] == "pick_first"


def test_server_options_carry_the_maximum_connection_age_and_accept_the_pings() -> None:
    settings = _settings(
        grpc_max_connection_age_seconds=90,
        grpc_max_connection_age_grace_seconds=7,
        grpc_keepalive_time_seconds=20,
    )
    options = dict(server_options(settings))
    assert options["grpc.max_connection_age_ms"] == 90_000
    assert options["grpc.max_connection_age_grace_ms"] == 7_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    # Clients ping every 20 s: the server tolerates pings that close together.
    assert options["grpc.http2.min_ping_interval_without_data_ms"] <= 20_000
    assert options["grpc.so_reuseport"] == 0


def test_addresses_are_dialled_through_the_dns_resolver() -> None:
    assert dial_target("127.0.0.1:50051") == "dns:///127.0.0.1:50051"
    assert dial_target("gate4-risk:50052") == "dns:///gate4-risk:50052"
    for explicit in ("dns:///gate4-risk:50052", "ipv4:10.0.0.1:1,10.0.0.2:1", "unix:/tmp/s"):
        assert dial_target(explicit) == explicit


async def _serve_health(settings: Settings, port: int) -> grpc.aio.Server:
    server = grpc.aio.server(options=server_options(settings))
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server


def test_a_round_robin_channel_to_a_dns_name_reaches_a_real_server() -> None:
    port = free_port()

    async def scenario() -> list[int]:
        settings = _settings(
            audit_addr=f"localhost:{port}",  # dialled as dns:///localhost:<port>
            grpc_keepalive_time_seconds=1,
            grpc_max_connection_age_seconds=1,
            grpc_max_connection_age_grace_seconds=1,
        )
        server = await _serve_health(settings, port)
        ch = channel(settings, "audit", 5.0, identity="gateway")
        statuses: list[int] = []
        try:
            stub = health_pb2_grpc.HealthStub(ch)
            # Calls keep working across the server closing connections at their maximum age.
            for _ in range(3):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), wait_for_ready=True)
                statuses.append(reply.status)
                await asyncio.sleep(0.8)
        finally:
            await ch.close()
            await server.stop(0)
        return statuses

    statuses = asyncio.run(asyncio.wait_for(scenario(), timeout=20))
    assert statuses == [health_pb2.HealthCheckResponse.SERVING] * 3
