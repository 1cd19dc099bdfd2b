"""`gate4 apikeys`: the operator's key life cycle on the gateway's database."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from cli.errors import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from cli.main import main
from services.runtime.auth import api_key_id
from tests.cli.helpers import lookup_api_key


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def listing(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, str]]:
    code, out, _ = run(["apikeys", "list", "--output", "json", *args], capsys)
    assert code == EXIT_OK
    keys: list[dict[str, str]] = json.loads(out)["apiKeys"]
    return keys


def test_create_prints_the_key_once_and_list_shows_only_prefix_and_label(
    gate4_env: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("GATE4_GATEWAY_DATABASE_URL", database_url)
    code, out, err = run(["apikeys", "create", "--tenant", "acme", "--label", "ci"], capsys)
    assert code == EXIT_OK
    key = out.strip()
    assert out == key + "\n"  # stdout holds the key alone: `> file` keeps just it
    prefix = f"g4k_{api_key_id(key)}"
    assert f"issued {prefix} for tenant acme (ci)" in err and key not in err
    record = lookup_api_key(gate4_env, key)  # in the configured database, as the gateway looks
    assert record is not None and (record.tenant_id, record.label) == ("acme", "ci")
    run(["apikeys", "create", "--tenant", "globex", "--label", "desk"], capsys)

    keys = listing(capsys)
    first = keys[0]
    assert (first["prefix"], first["tenantId"], first["label"], first["status"]) == (
        prefix, "acme", "ci", "active"
    )  # fmt: skip
    assert [k["tenantId"] for k in listing(capsys, "--tenant", "globex")] == ["globex"]
    code, table, _ = run(["apikeys", "list"], capsys)
    assert code == EXIT_OK and prefix in table and "PREFIX" in table
    assert key not in table and key.split("_", 2)[2] not in json.dumps(keys)


def test_revoke_and_rotate_by_prefix(gate4_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(["apikeys", "create", "--tenant", "acme", "--label", "ci"], capsys)
    old = out.strip()
    prefix = f"g4k_{api_key_id(old)}"

    code, out, err = run(["apikeys", "rotate", prefix, "--grace", "1"], capsys)
    assert code == EXIT_OK
    new = out.strip()
    assert new != old and lookup_api_key(gate4_env, new) is not None
    assert f"{prefix} works until" in err and new not in err
    assert lookup_api_key(gate4_env, old) is not None  # the grace period
    keys = {k["prefix"]: k for k in listing(capsys)}
    assert {p: k["status"] for p, k in keys.items()} == {
        prefix: "expiring",
        f"g4k_{api_key_id(new)}": "active",
    }
    # The listing shows whole seconds: the grace period ends within the second it names.
    ends = datetime.fromisoformat(keys[prefix]["expiresAt"])
    assert lookup_api_key(gate4_env, old, at=ends - timedelta(seconds=0.001)) is not None
    assert lookup_api_key(gate4_env, old, at=ends + timedelta(seconds=1)) is None

    new_prefix = f"g4k_{api_key_id(new)}"
    code, out, err = run(["apikeys", "revoke", new_prefix], capsys)
    assert (code, out) == (EXIT_OK, "")
    assert f"revoked {new_prefix}" in err and "within 30 s (GATE4_API_KEY_CACHE_SECONDS)" in err
    assert lookup_api_key(gate4_env, new) is None


def test_unknown_keys_and_bad_values(gate4_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["apikeys", "revoke", "g4k_0123456789ab"], capsys)
    assert code == EXIT_NOT_FOUND and "API_KEY_NOT_FOUND" in err
    code, _, err = run(["apikeys", "rotate", "g4k_0123456789ab"], capsys)
    assert code == EXIT_NOT_FOUND
    code, _, err = run(["apikeys", "revoke", "g4k_no/such"], capsys)
    assert code == EXIT_USAGE
    code, _, err = run(["apikeys", "create", "--tenant", "bad tenant", "--label", "x"], capsys)
    assert code == EXIT_USAGE
    code, _, err = run(
        ["apikeys", "create", "--tenant", "acme", "--label", "x", "--expires-in", "0"], capsys
    )
    assert code == EXIT_USAGE
    assert listing(capsys) == []


def test_works_in_prod_where_dev_credentials_are_refused(
    gate4_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Operators manage keys on the production database; only dev credentials are dev only."""
    monkeypatch.setenv("GATE4_ENV", "prod")
    code, out, _ = run(["apikeys", "create", "--tenant", "acme", "--label", "prod"], capsys)
    assert code == EXIT_OK and out.startswith("g4k_")
    dev = ["dev", "credentials", "--tenant", "a", "--user", "u", "--roles", "viewer"]
    assert run(dev, capsys)[0] == EXIT_USAGE
