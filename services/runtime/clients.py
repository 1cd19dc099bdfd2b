"""Channels and stubs for calling other services, with correlation and tracing attached."""

from __future__ import annotations

import ipaddress
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from services.runtime.config import Settings
from services.runtime.identity import channel_credentials, outgoing_token
from services.runtime.interceptors import client_interceptors

#: Target schemes gRPC resolves itself: an address naming one is dialled as it is.
_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


def addresses(addr: str) -> list[str]:
    """The host:port entries of a configured address: one, or several comma-separated."""
    return [entry.strip() for entry in addr.split(",") if entry.strip()]


def dial_target(addr: str) -> str:
    """The target a channel dials for a configured host:port: `dns:///host:port`, so every
    address the name resolves to (each pod behind a headless Service) is a balancing
    candidate. An IP literal such as 127.0.0.1:50051 resolves to itself.

    Several IP literals, comma-separated (`127.0.0.1:50052,127.0.0.1:50062`: replicas on one
    host, as `gate4 dev scale-out` runs them), become one `ipv4:`/`ipv6:` target, which gRPC
    balances over without DNS. A list of names cannot be one target: refused."""
    if addr.startswith(_SCHEMES):
        return addr
    entries = addresses(addr)
    if len(entries) < 2:
        return f"dns:///{addr.strip()}"
    families = {_ip_family(entry) for entry in entries}
    if len(families) != 1 or None in families:
        raise ValueError(
            f"{addr!r}: several addresses must all be IPv4 or all IPv6 literals "
            "(127.0.0.1:50052,127.0.0.1:50062); give one name that resolves to every replica "
            "instead"
        )
    return f"{families.pop()}:{','.join(entries)}"


def _ip_family(addr: str) -> str | None:
    """`ipv4` or `ipv6` for an IP-literal host:port, None for a name."""
    host = addr.rsplit(":", 1)[0].strip("[]")
    try:
        return f"ipv{ipaddress.ip_address(host).version}"
    except ValueError:
        return None


def lb_policy(settings: Settings, addr: str) -> str:
    """GATE4_GRPC_LB_POLICY for a name, which may resolve to several pods, or for a list of
    addresses; `pick_first` for one IP literal, which has nothing to balance. pick_first
    reconnects when a call needs the channel, where round_robin reconnects in the background
    with a growing backoff and fails calls at once meanwhile, also just after its one peer
    came back. With several peers round_robin just skips the one that is down."""
    entries = addresses(addr)
    single_ip = len(entries) == 1 and _ip_family(entries[0]) is not None
    return "pick_first" if single_ip else settings.grpc_lb_policy


def channel_options(settings: Settings, addr: str = "") -> list[tuple[str, str | int]]:
    """Balancing and keepalive options of a channel to `addr` (README.md, "Configuration":
    GATE4_GRPC_*)."""
    options: list[tuple[str, str | int]] = [
        ("grpc.lb_policy_name", lb_policy(settings, addr)),
        ("grpc.keepalive_time_ms", _ms(settings.grpc_keepalive_time_seconds)),
        ("grpc.keepalive_timeout_ms", _ms(settings.grpc_keepalive_timeout_seconds)),
        # Idle channels ping too, so a dead peer is found before the next call needs it.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    entries = addresses(addr)
    if len(entries) > 1 and not addr.startswith(_SCHEMES):
        # A list target has no authority of its own; the first entry's host is the name a
        # TLS peer's certificate is checked against (every replica's covers 127.0.0.1).
        options.append(("grpc.default_authority", entries[0]))
    return options


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def channel(
    settings: Settings, service: str, timeout: float | None = None, *, identity: str
) -> grpc.aio.Channel:
    """A channel to `service` on which `identity` calls (its token, or with mtls its
    certificate; services/runtime/identity.py), TLS when GATE4_TLS says so. Our interceptor
    runs outside OTel's so baggage is set.

    A unary call's deadline is `timeout` (default GATE4_RPC_TIMEOUT_SECONDS), capped by the
    budget of the request being served (services/runtime/deadlines.py)."""
    interceptors: list[Any] = [
        *client_interceptors(
            outgoing_token(settings, identity),
            timeout or settings.rpc_timeout_seconds,
            settings.deadline_margin_seconds,
        ),
        *aio_client_interceptors(),  # type: ignore[no-untyped-call]
    ]
    addr = settings.service_addr(service)
    target = dial_target(addr)
    options = channel_options(settings, addr)
    credentials = channel_credentials(settings, identity)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
