"""The API key life cycle against a running gateway: an operator's `gate4 apikeys`, run as its
own process on the gateway's database, and the gateway refusing a revoked or expired key
within its cache lifetime (GATE4_API_KEY_CACHE_SECONDS, one second on this stack)."""

from __future__ import annotations

import time
import uuid

import httpx

from services.runtime.auth import api_key_id
from services.runtime.roles import PLATFORM as ROLES
from tests.security.conftest import KEY_CACHE_SECONDS, SecurityStack
from tests.support.live import CliResult, run_gate4_process

#: Time for requests and the operator's process start on a busy machine, on top of the cache
#: (generous: the test shows the cache lets go, not how fast a loaded host is).
SLACK_SECONDS = 10.0


def operator(stack: SecurityStack, *argv: str) -> CliResult:
    env = {**stack.env, "GATE4_VAR_DIR": str(stack.live.var_dir)}
    result = run_gate4_process(["apikeys", *argv], env)
    assert result.exit_code == 0, result.stderr
    return result


def status_with(stack: SecurityStack, tenant: str, key: str) -> int:
    token = stack.live.token(tenant, "alice", list(ROLES))
    headers = {
        "Authorization": f"Bearer {token}",
        "X-API-Key": key,
        "X-Tenant-Id": tenant,
        "X-User-Id": "alice",
    }
    return httpx.get(f"{stack.live.url}/v1/deployments", headers=headers, timeout=10).status_code


def refused_after(stack: SecurityStack, tenant: str, key: str, limit: float) -> float:
    """Seconds until the gateway answers 401 for the key (fails past `limit`)."""
    started = time.monotonic()
    while status_with(stack, tenant, key) != 401:
        elapsed = time.monotonic() - started
        assert elapsed < limit, f"key still accepted after {elapsed:.1f}s"
        time.sleep(0.1)
    return time.monotonic() - started


def test_a_revoked_key_is_refused_within_the_cache_lifetime(security_stack: SecurityStack) -> None:
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    key = operator(security_stack, "create", "--tenant", tenant, "--label", "revoke").stdout.strip()
    assert status_with(security_stack, tenant, key) == 200  # and now cached by the gateway
    operator(security_stack, "revoke", f"g4k_{api_key_id(key)}")
    refused_after(security_stack, tenant, key, KEY_CACHE_SECONDS + SLACK_SECONDS)
    listed = operator(security_stack, "list", "--tenant", tenant).stdout
    assert "revoked" in listed and key not in listed


def test_a_rotated_key_works_through_its_grace_period_then_stops(
    security_stack: SecurityStack,
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    old = operator(security_stack, "create", "--tenant", tenant, "--label", "rotate").stdout.strip()
    assert status_with(security_stack, tenant, old) == 200
    grace = 3
    rotated = time.monotonic()
    new = operator(security_stack, "rotate", f"g4k_{api_key_id(old)}", "--grace", str(grace))
    new_key = new.stdout.strip()
    assert status_with(security_stack, tenant, new_key) == 200
    assert status_with(security_stack, tenant, old) == 200  # inside the grace period
    limit = grace + KEY_CACHE_SECONDS + SLACK_SECONDS - (time.monotonic() - rotated)
    refused_after(security_stack, tenant, old, limit)
    assert status_with(security_stack, tenant, new_key) == 200
