"""Prometheus metrics of the gateway, exposed at GET /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "gate4_gateway_requests",
    "HTTP requests answered, by route template, method and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "gate4_gateway_request_duration_seconds",
    "Time from request start to the end of the response.",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
ERRORS = Counter(
    "gate4_gateway_problems",
    "problem+json responses, by error code.",
    ["code"],
    registry=REGISTRY,
)
UPSTREAM_FAILURES = Counter(
    "gate4_gateway_upstream_failures",
    "gRPC calls to services that failed, by service and gRPC status.",
    ["service", "grpc_status"],
    registry=REGISTRY,
)
