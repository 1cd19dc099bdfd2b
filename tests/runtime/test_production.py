"""What prod refuses (services/runtime/production.py), one weakness at a time.

`strong()` is a configuration prod accepts; each test weakens one thing and checks that the
refusal names its variable (and never quotes the secret).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from services.runtime.config import DEV_JWT_SECRET, DEV_SERVICE_TOKENS, IDENTITIES, Settings
from services.runtime.config import token_digest as digest
from services.runtime.production import UnsafeConfiguration, production_problems

TOKENS = {name: secrets.token_urlsafe(32) for name in IDENTITIES}
DIGESTS = ",".join(f"{name}={digest(token)}" for name, token in TOKENS.items())
DB_PASSWORD = secrets.token_urlsafe(32)


def strong(**changes: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "prod",
        "jwt_algorithms": "RS256",
        "jwt_jwks_url": "https://issuer.gate4.internal/.well-known/jwks.json",
        "database_url": f"postgresql://gate4:{DB_PASSWORD}@db.gate4.internal:5432/gate4",
        "service_token_digests": DIGESTS,
        **{f"{name}_service_token": token for name, token in TOKENS.items()},
    }
    values.update(changes)
    return Settings(**values)


def problems(settings: Settings, identity: str = "gateway") -> list[str]:
    return production_problems(settings, identity)


def test_dev_checks_nothing_and_a_strong_prod_configuration_passes() -> None:
    assert problems(Settings()) == []
    for identity in IDENTITIES:
        assert problems(strong(), identity) == []
        strong().check_production_safety(identity)


def test_prod_with_every_default_names_each_variable() -> None:
    with pytest.raises(UnsafeConfiguration) as refused:
        Settings(env="prod").check_production_safety("risk")
    text = str(refused.value)
    for variable in (
        "GATE4_JWT_ALGORITHMS",
        "GATE4_JWT_SECRET",
        "GATE4_RISK_SERVICE_TOKEN",
        "GATE4_SERVICE_TOKEN_DIGESTS",
        "GATE4_DATABASE_URL",
    ):
        assert variable in text
    assert "risk refuses to start" in text
    assert DEV_JWT_SECRET not in text and DEV_SERVICE_TOKENS["risk"] not in text


@pytest.mark.parametrize(
    "value,why",
    [
        ("", "is not set"),
        ("a" * 31, "is 31 bytes"),
        ("x" * 64, "too few distinct characters"),
        ("PLACEHOLDER-replace-with-a-random-secret-of-at-least-32-bytes", "placeholder"),
        ("please-change-me-before-going-live-0123456789", "placeholder"),
    ],
)
def test_weak_service_tokens_are_refused(value: str, why: str) -> None:
    (problem,) = problems(strong(execution_service_token=value), "execution")
    assert problem.startswith("GATE4_EXECUTION_SERVICE_TOKEN") and why in problem
    assert value == "" or value not in problem
    # Only the process's own token is its business: risk starts with execution's weak one.
    assert problems(strong(execution_service_token=value), "risk") == []


def test_thirty_two_random_bytes_are_enough() -> None:
    token = secrets.token_hex(16)  # 32 characters
    assert problems(strong(audit_service_token=token), "audit") == []
    assert problems(strong(audit_service_token=DEV_SERVICE_TOKENS["audit"]), "audit") == [
        "GATE4_AUDIT_SERVICE_TOKEN is the dev-only default"
    ]


def test_hs256_needs_an_explicit_allowance_and_a_strong_secret() -> None:
    (problem,) = problems(strong(jwt_algorithms="HS256", jwt_secret=secrets.token_urlsafe(48)))
    assert problem.startswith("GATE4_JWT_ALGORITHMS") and "GATE4_JWT_ALLOW_HS256" in problem
    allowed = {"jwt_algorithms": "HS256", "jwt_allow_hs256": True}
    assert problems(strong(**allowed, jwt_secret=secrets.token_urlsafe(48))) == []
    assert problems(strong(**allowed, jwt_secret=DEV_JWT_SECRET)) == [
        "GATE4_JWT_SECRET is the dev-only default"
    ]
    (short,) = problems(strong(**allowed, jwt_secret="s3cr3t"))
    assert short.startswith("GATE4_JWT_SECRET is 6 bytes")


def test_asymmetric_tokens_need_a_real_verification_key(tmp_path: Path) -> None:
    (problem,) = problems(strong(jwt_jwks_url=""))
    assert "GATE4_JWT_PUBLIC_KEY_FILE or GATE4_JWT_JWKS_URL" in problem
    assert problems(strong(jwt_jwks_url=""), "risk") == []  # only the gateway verifies tokens
    key = tmp_path / "jwt.pem"
    key.write_text("-----BEGIN PUBLIC KEY-----\n")
    assert problems(strong(jwt_jwks_url="", jwt_public_key_file=str(key))) == []
    for url in ("https://issuer.example.com/jwks.json", "http://issuer.gate4.internal/jwks"):
        (problem,) = problems(strong(jwt_jwks_url=url))
        assert problem.startswith("GATE4_JWT_JWKS_URL")


def test_no_sqlite_fallback_and_no_placeholder_database() -> None:
    (problem,) = problems(strong(database_url=""), "audit")
    assert "GATE4_DATABASE_URL (or GATE4_AUDIT_DATABASE_URL) must be set" in problem
    # A service's own URL is enough for it, and names itself when weak.
    own = strong(database_url="", audit_database_url=f"postgresql://a:{DB_PASSWORD}@db/audit")
    assert problems(own, "audit") == []
    weak = strong(gateway_database_url="postgresql://gate4:PLACEHOLDER-password@db:5432/gate4")
    assert problems(weak, "gateway") == [
        "GATE4_GATEWAY_DATABASE_URL: its password is a placeholder"
    ]
    (short,) = problems(strong(database_url="postgresql://gate4:hunter2@db:5432/gate4"))
    assert short.startswith("GATE4_DATABASE_URL: its password is 7 bytes")
    assert "hunter2" not in short
    # A URL with no password (peer or IAM authentication) is not a weak secret.
    assert problems(strong(database_url="postgresql://gate4@db.gate4.internal/gate4")) == []


def test_token_identities_need_every_digest_and_never_the_dev_ones() -> None:
    (missing,) = problems(strong(service_token_digests=""), "risk")
    assert missing.startswith("GATE4_SERVICE_TOKEN_DIGESTS must list")
    partial = ",".join(DIGESTS.split(",")[:3])
    (lacking,) = problems(strong(service_token_digests=partial), "risk")
    assert lacking == "GATE4_SERVICE_TOKEN_DIGESTS lacks execution, conversation"
    dev = DIGESTS.replace(
        f"risk={digest(TOKENS['risk'])}", f"risk={digest(DEV_SERVICE_TOKENS['risk'])}"
    )
    (dev_digest,) = problems(strong(service_token_digests=dev), "audit")
    assert dev_digest == "GATE4_SERVICE_TOKEN_DIGESTS holds the dev-only token digest of risk"


def test_malformed_or_ambiguous_digests_are_configuration_errors() -> None:
    with pytest.raises(ValueError, match="service_token_digests"):
        Settings(service_token_digests="gateway=PLACEHOLDER")
    with pytest.raises(ValueError, match="cannot be told apart"):
        Settings(service_token_digests=f"risk={'a1' * 32},execution={'a1' * 32}")


def test_mutual_tls_replaces_tokens_but_needs_its_files(tmp_path: Path) -> None:
    mtls = strong(
        tls="mtls", tls_dir=str(tmp_path), service_token_digests="", risk_service_token=""
    )
    (problem,) = problems(mtls, "risk")
    assert problem.startswith(f"GATE4_TLS_DIR ({tmp_path}) lacks ca.crt, risk.crt, risk.key")
    for name in ("ca.crt", "risk.crt", "risk.key"):
        (tmp_path / name).write_text("pem")
    assert problems(mtls, "risk") == []
