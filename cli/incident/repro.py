"""repro.sh: the commands that reproduce the incident's evidence, and (behind a switch) its
requests, with every secret written as its variable's name.

The script reads by default: health, the incident's audit events and traces, kill switches,
the policy, the chain, the decision tree and the contract tests. Requests of the incident that
changed state (or tried to) are rebuilt from the audit trail where it records their payload
and replayed only with REPLAY_SIDE_EFFECTS=yes, each with a fresh Idempotency-Key.
"""

from __future__ import annotations

import json
import shlex
from typing import Any
from urllib.parse import quote, urlencode

from cli.incident.evidence import Collected
from cli.incident.reads import RUNBOOK_REPRO_BODY

HEADER = """\
#!/usr/bin/env bash
# Gate4 incident {incident}: reproduction commands (lane {lane}, tenant {tenant}).
# Secrets are variable names, never values. Run from the repository root after
# `source var/dev-credentials.env` (or export PLATFORM_API_BASE, TOKEN, API_KEY, TENANT_ID and
# USER_ID for tenant {tenant}, and the GATE4_* names for `gate4`).
# Read only, unless REPLAY_SIDE_EFFECTS=yes: then the incident's requests are sent again.
set -euo pipefail
: "${{PLATFORM_API_BASE:?source var/dev-credentials.env first}}"
: "${{TOKEN:?}}" "${{API_KEY:?}}" "${{TENANT_ID:?}}" "${{USER_ID:?}}"
H=(-H "Authorization: Bearer $TOKEN" -H "X-API-Key: $API_KEY" -H "X-Tenant-Id: $TENANT_ID" \\
   -H "X-User-Id: $USER_ID")
"""


def _get(path: str, query: dict[str, str] | None = None) -> str:
    url = path + (f"?{urlencode(query)}" if query else "")
    return f'curl -sS "${{H[@]}}" "$PLATFORM_API_BASE{url}"; echo'


def _body(event: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(path, body) of the command a risk.decision or order.* event records."""
    data = event.get("data") or {}
    command = data.get("command")
    is_order = str(event.get("type", "")).startswith("order.") and not data.get("flatten")
    if command == "order.submit" or (is_order and data.get("side") and data.get("quantity")):
        body: dict[str, Any] = {
            "deploymentId": event.get("deploymentId"),
            "instrument": data.get("instrument"),
            "side": data.get("side"),
            "type": data.get("type"),
            "quantity": data.get("quantity"),
        }
        if data.get("limitPrice"):
            body["limitPrice"] = data["limitPrice"]
        if data.get("reduceOnly"):
            body["reduceOnly"] = True
        return "/v1/orders", body
    if command == "deployment.create":
        return "/v1/deployments", {
            "strategyId": data.get("strategyId"),
            "accountId": event.get("accountId"),
            "instruments": data.get("instruments"),
            "capitalAllocation": data.get("capitalAllocation"),
            **({"mode": data["mode"]} if data.get("mode") else {}),
        }
    return None


def _replays(c: Collected) -> list[str]:
    lines: list[str] = []
    for index, request_id in enumerate(c.given["requestIds"], start=1):
        trace = c.traces.get(request_id)
        span = trace.gateway_span() if trace else None
        answered = (
            f"{span.name} answered {span.http_status} {span.error_code}".rstrip()
            if span is not None
            else "no span recorded"
        )
        lines.append(f"  # {request_id}: {answered}")
        recorded = [e for e in c.events if e.get("requestId") == request_id]
        rebuilt = next((b for b in map(_body, recorded) if b is not None), None)
        method, _, path = (span.name if span else "").partition(" ")
        if rebuilt is not None:
            target, body = rebuilt
        elif method == "POST" and path == "/v2/conversations/sessions":
            target, body = path, {**RUNBOOK_REPRO_BODY, "topic": "incident-repro"}
            lines.append("  # (the original body is not recorded: the runbook's minimal repro)")
        else:
            lines.append("  # (its payload is not recorded in the audit trail: not replayed)")
            continue
        lines.append(
            f'  curl -sS "${{H[@]}}" -H "Content-Type: application/json" '
            f'-H "Idempotency-Key: repro-$(date +%s)-{index}" '
            f'-X POST "$PLATFORM_API_BASE{target}" -d {shlex.quote(json.dumps(body))}; echo'
        )
    return lines


def render(c: Collected, incident_id: str) -> str:
    lines = [HEADER.format(incident=incident_id, lane=c.lane.name, tenant=c.tenant_id)]
    lines += ["# Health (no credentials needed)", 'curl -sS "$PLATFORM_API_BASE/readyz"; echo', ""]
    lines.append("# The incident's requests: audit events and traces")
    for request_id in c.given["requestIds"]:
        lines.append(_get("/v1/audit/events", {"requestId": request_id}))
        lines.append(
            f'.venv/bin/gate4 trace {shlex.quote(request_id)} || echo "no spans for {request_id}"'
        )
    for key, name in (
        ("deploymentIds", "deploymentId"),
        ("orderIds", "orderId"),
        ("sessionIds", "sessionId"),
    ):
        for value in c.given[key]:
            lines.append(_get("/v1/audit/events", {name: value}))
    # The state of what they touched (ids the platform knows: refused orders are only events).
    for kind, path in (("deployments", "/v1/deployments"), ("orders", "/v1/orders")):
        known = [key for key, fetched in c.resources[kind].items() if fetched.ok]
        lines += [_get(f"{path}/{quote(key, safe='')}") for key in known[:5]]
    for session_id in c.given["sessionIds"]:
        lines.append(_get(f"/v2/conversations/sessions/{quote(session_id, safe='')}"))
    lines += [
        "",
        "# Kill switches, the policy snapshot and its validation, the audit chain",
        _get("/v1/risk/kill-switches"),
        'snapshot="$(mktemp -d)"',
        'curl -sS "${H[@]}" "$PLATFORM_API_BASE/v1/risk/policy" | tee "$snapshot/version.json"',
        "echo",
        '.venv/bin/python -c \'import json, sys; json.dump(json.load(sys.stdin)["policy"], '
        'sys.stdout)\' < "$snapshot/version.json" > "$snapshot/policy.json"',
        '.venv/bin/gate4 risk policy validate --file "$snapshot/policy.json"',
        _get("/v1/audit/chain/verify"),
        "",
        "# The runbook's decision tree and the lane's contract tests",
    ]
    tree = c.lane.tree
    deployment = next(iter(c.correlation.get("deploymentIds", [])), None)
    if tree == "risk":
        lines.append(
            ".venv/bin/gate4 triage risk" + (f" --deployment {deployment}" if deployment else "")
        )
    else:
        session = next(iter(c.given["sessionIds"]), None)
        extra = "".join(f" --request-id {r}" for r in c.given["requestIds"])
        lines.append(
            ".venv/bin/gate4 triage conversation"
            + extra
            + (f" --session {session}" if session else "")
        )
    if c.contracts is not None and c.contracts.files:
        lines.append(c.contracts.command)
    lines += ["", 'if [[ "${REPLAY_SIDE_EFFECTS:-no}" == yes ]]; then']
    replays = _replays(c)
    lines += [*replays, "  :"]
    lines += ["fi", ""]
    return "\n".join(lines)
