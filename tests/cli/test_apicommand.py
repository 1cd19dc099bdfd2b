"""cli/apicommand.py: exit-code mapping, lanes and table output (no network)."""

from __future__ import annotations

import argparse

import pytest

from cli.apicommand import exit_code_for, render_table, resolve_channel, resolve_lane
from cli.errors import (
    EXIT_AUTH,
    EXIT_CODES,
    EXIT_CONFLICT,
    EXIT_FAILURE,
    EXIT_KILL_SWITCH,
    EXIT_NOT_FOUND,
    EXIT_RISK_REJECTED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    UsageError,
)


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "VALIDATION_FAILED", EXIT_USAGE),
        (401, "UNAUTHENTICATED", EXIT_AUTH),
        (403, "TENANT_MISMATCH", EXIT_AUTH),
        (404, "NOT_FOUND", EXIT_NOT_FOUND),
        (409, "STATE_CONFLICT", EXIT_CONFLICT),
        (422, "IDEMPOTENCY_KEY_REUSED", EXIT_CONFLICT),
        (422, "RISK_LIMIT_BREACHED", EXIT_RISK_REJECTED),
        (423, "KILL_SWITCH_ENGAGED", EXIT_KILL_SWITCH),
        (429, "RATE_LIMITED", EXIT_UNAVAILABLE),
        (503, "RISK_UNAVAILABLE", EXIT_UNAVAILABLE),
        (504, "DEADLINE_EXCEEDED", EXIT_UNAVAILABLE),
        (500, "INTERNAL", EXIT_FAILURE),
        (501, "NOT_IMPLEMENTED", EXIT_FAILURE),
    ],
)
def test_every_problem_maps_to_a_documented_exit_code(
    status: int, code: str, expected: int
) -> None:
    assert exit_code_for(status, code) == expected
    assert expected in EXIT_CODES


def args(lane: str | None = None, channel: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(lane=lane, channel=channel)


def test_lane_and_channel_resolution() -> None:
    assert resolve_lane(args(), {}) is None
    assert resolve_lane(args(), {"OPENCLAW_SHELL": "exec"}) == "skill"
    assert resolve_lane(args(), {"GATE4_CLIENT_LANE": "cli", "OPENCLAW_SHELL": "exec"}) == "cli"
    assert resolve_lane(args("none"), {"OPENCLAW_SHELL": "exec"}) is None
    assert resolve_lane(args("cli"), {"GATE4_CLIENT_LANE": "skill"}) == "cli"
    with pytest.raises(UsageError):
        resolve_lane(args(), {"GATE4_CLIENT_LANE": "carrier-pigeon"})
    assert resolve_channel(args(), {}, None) == "cli"
    assert resolve_channel(args(), {}, "skill") == "openclaw"
    assert resolve_channel(args(), {"GATE4_CHANNEL": "web"}, "cli") == "web"
    assert resolve_channel(args(channel="ops"), {"GATE4_CHANNEL": "web"}, None) == "ops"


def test_table_output() -> None:
    document = {
        "events": [
            {"sequence": 1, "type": "a.b", "data": {"x": 1}},
            {"sequence": 2, "type": "c", "outcome": "APPROVED"},
        ],
        "nextCursor": "abc",
    }
    assert render_table(document, ("sequence", "type", "outcome")).splitlines() == [
        "events: 2",
        "SEQUENCE  TYPE  OUTCOME",
        "1         a.b",
        "2         c     APPROVED",
        "nextCursor: abc",
    ]
    assert render_table({"positions": [], "state": "running", "digest": ""}).splitlines() == [
        "positions  []",
        "state      running",
        "digest",
    ]
    assert render_table({"scope": "tenant", "engaged": False, "evidence": {"a": 1}}) == (
        'scope     tenant\nengaged   false\nevidence  {"a":1}'
    )
