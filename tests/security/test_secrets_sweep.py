"""The secrets sweep: after a full run of the platform, no secret shows up anywhere.

One run on `security_stack` (its own random JWT secret and service tokens; with PostgreSQL
up, a database password too): the operator issues an API key, a user puts a policy, deploys,
places an approved and a refused order, talks to the assistant (status, a proposed and a
confirmed stop), engages and releases the kill switch, reads and verifies the audit trail,
follows a trace, triages and captures an incident; a few requests fail on purpose (wrong key,
key as bearer, another tenant, bad JSON, an API base the credentials were not issued for).
Then every byte under the var dir (logs, span files, the services' databases with their
audit records, the evidence bundle), every CLI output and every error body is searched for
the token, the API key, the JWT secret, each service token and the database password.

The one output allowed to hold a secret is the stdout of `gate4 apikeys create`: printing
the new key once is that command's job.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx

from services.runtime.roles import PLATFORM as ROLES
from tests.security.conftest import SecurityStack
from tests.support.live import CliResult, RunCli, run_cli
from tests.support.stack import wait_for

__all__ = ["run_cli"]

ROOT = Path(__file__).resolve().parents[2]
DEMO_POLICY = ROOT / "cli" / "demo-risk-policy.json"


def test_no_secret_reaches_logs_spans_audit_records_errors_cli_output_or_evidence(
    security_stack: SecurityStack, run_cli: RunCli, tmp_path: Path
) -> None:
    live, found = security_stack.live, security_stack.secrets
    operator_env = {**security_stack.env, "GATE4_VAR_DIR": str(live.var_dir)}
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    outputs: list[tuple[str, CliResult]] = []

    issued = run_cli(["apikeys", "create", "--tenant", tenant, "--label", "sweep"], operator_env)
    assert issued.exit_code == 0, issued.stderr
    api_key = issued.stdout.strip()
    token = live.token(tenant, "sweeper", list(ROLES))
    found.add("API key", api_key)
    found.add("API key secret part", api_key.split("_", 2)[2])
    found.add("bearer token", token)
    found.add("bearer token signature", token.rsplit(".", 1)[1])
    outputs.append(("apikeys create (stderr)", CliResult(0, "", issued.stderr)))

    env = {
        "GATE4_API_BASE": live.url,
        "GATE4_TOKEN": token,
        "GATE4_API_KEY": api_key,
        "GATE4_TENANT_ID": tenant,
        "GATE4_USER_ID": "sweeper",
    }

    def gate4(*argv: str, expect: int = 0) -> CliResult:
        result = run_cli(list(argv), env)
        outputs.append((" ".join(argv), result))
        assert result.exit_code == expect, (argv, result.stdout[-2000:], result.stderr[-2000:])
        return result

    gate4("risk", "policy", "put", "--file", str(DEMO_POLICY), "--reason", "sweep")
    with httpx.Client(base_url=live.url, headers=_headers(env), timeout=10) as http:
        mark = {"marks": [{"instrument": "BTC-USD", "price": "50000"}]}
        marks = http.post("/v1/sandbox/marks", json=mark)
        assert marks.status_code == 200, marks.text
    dep = gate4(
        "deployments", "create", "--strategy", "s1", "--account", "acc-1",
        "--instrument", "BTC-USD", "--capital", "10000",
    ).json()["deploymentId"]  # fmt: skip
    order = gate4(
        "orders", "submit", "--deployment", dep, "--instrument", "BTC-USD",
        "--side", "buy", "--quantity", "0.01",
    )  # fmt: skip
    gate4(
        "orders", "submit", "--deployment", dep, "--instrument", "BTC-USD",
        "--side", "buy", "--quantity", "1000000", expect=6,
    )  # fmt: skip
    session = gate4("sessions", "create", "--topic", "sweep", "--notifications").json()
    for message in ("status", f"stop {dep}", "yes"):
        gate4("turns", "send", session["sessionId"], "--message", message)
    gate4("killswitch", "engage", "tenant", "--reason", "sweep drill")
    gate4("killswitch", "release", "tenant", "--reason", "sweep drill over")
    gate4("audit", "events", "--deployment", dep)
    gate4("audit", "verify")
    gate4("trace", order.request_id, "--var-dir", str(live.var_dir), "--wait", "5")
    gate4("triage", "risk", "--deployment", dep, "--var-dir", str(live.var_dir))
    bundle = tmp_path / "incident"
    gate4(
        "incident", "capture", "--request-id", order.request_id, "--lane", "risk",
        "--skip-contract-tests", "secrets sweep", "--output-dir", str(bundle),
        "--var-dir", str(live.var_dir), "--span-wait", "2",
    )  # fmt: skip
    # Refused before anything is sent: these credentials belong to another API base.
    gate4("audit", "verify", "--api-base", "http://127.0.0.1:9", expect=2)
    wrong = run_cli(["audit", "verify"], {**env, "GATE4_API_KEY": api_key[:-4] + "AAAA"})
    assert wrong.exit_code == 3
    outputs.append(("audit verify with a wrong key", wrong))

    bodies = _error_bodies(live.url, env, api_key, token)

    # The evidence bundle and the whole var dir, once the last spans are exported.
    rid = order.request_id
    wait_for(lambda: any(rid in s.get("attributes", {}).values() for s in live.spans()))
    files = sorted(p for p in [*live.var_dir.rglob("*"), *bundle.rglob("*")] if p.is_file())
    kinds = {p.suffix for p in files} | {p.parent.name for p in files}
    assert {"logs", "traces", ".db"} <= kinds, kinds
    assert (bundle / "handoff.md").is_file() and (bundle / "evidence.json").is_file()
    assert len(outputs) >= 18 and len(bodies) >= 5

    leaks = [f"{p.relative_to(p.anchor)}: {found.found_in(p.read_bytes())}" for p in files]
    leaks = [line for line in leaks if not line.endswith("[]")]
    for what, result in outputs:
        names = found.found_in(result.stdout + result.stderr)
        if names:
            leaks.append(f"gate4 {what}: {names}")
    for what, body in bodies.items():
        names = found.found_in(body)
        if names:
            leaks.append(f"error body of {what}: {names}")
    assert leaks == [], "\n".join(leaks)
    assert len(found.values) >= 10  # every secret was really looked for


def _headers(env: dict[str, str]) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {env['GATE4_TOKEN']}",
        "X-API-Key": env["GATE4_API_KEY"],
        "X-Tenant-Id": env["GATE4_TENANT_ID"],
        "X-User-Id": env["GATE4_USER_ID"],
    }


def _error_bodies(base: str, env: dict[str, str], api_key: str, token: str) -> dict[str, str]:
    """Requests that fail on purpose, some with a secret in the wrong place."""
    good = _headers(env)
    wrong_key = {**good, "X-API-Key": api_key + "x"}
    key_as_token = {**good, "Authorization": f"Bearer {api_key}"}
    token_as_key = {**good, "X-API-Key": token}
    other_tenant = {**good, "X-Tenant-Id": "other"}
    posting = {**good, "Idempotency-Key": "sweep-key-0001", "Content-Type": "application/json"}
    cases = {
        "a wrong API key": ("/v1/deployments", wrong_key, None, 401),
        "the API key as token": ("/v1/deployments", key_as_token, None, 401),
        "the token as API key": ("/v1/deployments", token_as_key, None, 401),
        "another tenant": ("/v1/deployments", other_tenant, None, 403),
        "an unknown deployment": ("/v1/deployments/dep_missing", good, None, 404),
        "a token as the order body": ("/v1/orders", posting, token, 400),
    }
    bodies: dict[str, str] = {}
    with httpx.Client(base_url=base, timeout=10) as http:
        for what, (path, headers, content, status) in cases.items():
            method = "GET" if content is None else "POST"
            response = http.request(method, path, headers=headers, content=content)
            assert response.status_code == status, (what, response.text)
            assert json.loads(response.text)["requestId"]
            bodies[what] = response.text + json.dumps(dict(response.headers))
    return bodies
