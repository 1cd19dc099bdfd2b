"""errors.from_peer: the one mapping from a failed call to a peer service to a Gate4Error."""

from __future__ import annotations

import grpc
import pytest

from services.execution.riskgate import undecided
from services.runtime import errors, outcomes


def rpc_error(
    code: grpc.StatusCode, details: str = "", domain: errors.Gate4Error | None = None
) -> grpc.aio.AioRpcError:
    trailing = errors.trailing_metadata(domain) if domain is not None else ()
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details=details
    )


def test_a_domain_error_from_the_peer_passes_through() -> None:
    sent = errors.KillSwitchEngaged("held", outcome=outcomes.KILL_SWITCH_ENGAGED)
    got = errors.from_peer("execution", rpc_error(sent.grpc_code, "held", sent))
    assert isinstance(got, errors.KillSwitchEngaged)
    assert (got.detail, got.outcome) == ("held", outcomes.KILL_SWITCH_ENGAGED)


def test_a_domain_unavailable_keeps_its_own_code() -> None:
    # Risk answered, and its answer is "unavailable": that is not the transport failing.
    sent = errors.RiskUnavailable("audit backlog full")
    got = errors.from_peer("risk", rpc_error(grpc.StatusCode.UNAVAILABLE, "x", sent))
    assert isinstance(got, errors.RiskUnavailable) and got.detail == "audit backlog full"


@pytest.mark.parametrize("service", ["execution", "risk", "audit"])
def test_an_unreachable_peer_is_dependency_unavailable_and_nothing_ran(service: str) -> None:
    got = errors.from_peer(service, rpc_error(grpc.StatusCode.UNAVAILABLE, "connect failed"))
    assert isinstance(got, errors.DependencyUnavailable)
    assert got.detail == f"the {service} service is unavailable; nothing was executed"
    assert got.status_for_http() == 503


def test_a_slow_peer_is_deadline_exceeded() -> None:
    got = errors.from_peer("execution", rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED))
    assert isinstance(got, errors.DeadlineExceeded)
    assert got.detail == "the execution service did not answer in time"


def test_a_slow_risk_fails_closed() -> None:
    got = errors.from_peer("risk", rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED))
    assert isinstance(got, errors.RiskUnavailable)
    assert got.status_for_http() == 503


def test_other_statuses_keep_the_peer_status() -> None:
    got = errors.from_peer("audit", rpc_error(grpc.StatusCode.INTERNAL, "boom"))
    assert isinstance(got, errors.UnmappedError)
    assert (got.error_code(), got.detail, got.status_for_http()) == ("INTERNAL", "boom", 500)


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (rpc_error(grpc.StatusCode.UNAVAILABLE), "DEPENDENCY_UNAVAILABLE"),
        (rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED), "RISK_UNAVAILABLE"),
        (
            rpc_error(
                grpc.StatusCode.UNAVAILABLE, "", errors.RiskUnavailable("audit backlog full")
            ),
            "RISK_UNAVAILABLE: audit backlog full",
        ),
        (rpc_error(grpc.StatusCode.INTERNAL, "boom"), "INTERNAL: boom"),
    ],
)
def test_the_caller_says_what_the_failure_means_for_its_command(
    exc: grpc.aio.AioRpcError, cause: str
) -> None:
    # The order path: whatever went wrong, there is no decision, so the command does not run.
    got = errors.from_peer("risk", exc, meaning=undecided)
    assert isinstance(got, errors.RiskUnavailable)
    assert got.outcome == outcomes.RISK_UNAVAILABLE
    assert "nothing was executed" in got.detail and cause in got.detail
