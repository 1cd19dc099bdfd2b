"""What a process refuses to start with when GATE4_ENV=prod.

Every refusal names the variable to fix, and all of them are reported at once:

- secrets (GATE4_JWT_SECRET, the process's own GATE4_<NAME>_SERVICE_TOKEN, the password of a
  database URL) shorter than 32 bytes, with too few distinct characters to be random, equal
  to a dev-only default, or looking like a placeholder (`PLACEHOLDER`, `change-me`, ...);
- HS256 (or any HS*) bearer tokens unless GATE4_JWT_ALLOW_HS256=true: whoever can verify a
  shared-secret token can also sign one;
- RS256/ES256 without a verification key for the gateway, or a placeholder JWKS URL;
- no explicit database URL: the SQLite fallback puts the audit chain, idempotency records and
  API keys on a pod's local disk;
- token identities without GATE4_SERVICE_TOKEN_DIGESTS (or with the dev tokens' digests),
  unless GATE4_TLS=mtls identifies callers by certificate; TLS without its files.

The page docs/portal/operations/gate4-security-model.md says the same for operators.
"""

from __future__ import annotations

import sqlalchemy as sa

from services.runtime.config import (
    DEV_JWT_SECRET,
    DEV_SERVICE_TOKENS,
    IDENTITIES,
    Settings,
    token_digest,
)

MIN_SECRET_BYTES = 32
MIN_DISTINCT_CHARACTERS = 8
#: Fragments of the values people leave in templates; compared case-insensitively.
PLACEHOLDER_MARKERS = (
    "placeholder",
    "change-me",
    "changeme",
    "change_me",
    "replace-with",
    "replace_me",
    "replaceme",
    "dev-only",
    "example",
    "your-",
    "<",
)


class UnsafeConfiguration(RuntimeError):
    """The process would start with a configuration prod refuses."""

    def __init__(self, identity: str, problems: list[str]) -> None:
        self.identity = identity
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{identity} refuses to start with GATE4_ENV=prod:\n{lines}")


def is_placeholder(value: str) -> bool:
    lowered = value.lower()
    return any(marker in lowered for marker in PLACEHOLDER_MARKERS)


def secret_weakness(value: str, dev_default: str | None = None) -> str | None:
    """Why a secret is too weak for prod, or None. Never quotes the value."""
    if not value:
        return "is not set"
    if dev_default is not None and value == dev_default:
        return "is the dev-only default"
    if is_placeholder(value):
        return "is a placeholder"
    size = len(value.encode())
    if size < MIN_SECRET_BYTES:
        return f"is {size} bytes; use at least {MIN_SECRET_BYTES} random bytes"
    if len(set(value)) < MIN_DISTINCT_CHARACTERS:
        return "has too few distinct characters to be random"
    return None


def production_problems(settings: Settings, identity: str) -> list[str]:
    """Each weak setting the process `identity` would start with, naming its variable."""
    if settings.env != "prod":
        return []
    if identity not in IDENTITIES:
        raise ValueError(f"unknown identity {identity!r}")
    return [
        *_token_problems(settings, identity),
        *_identity_problems(settings, identity),
        *_database_problems(settings, identity),
    ]


def _token_problems(settings: Settings, identity: str) -> list[str]:
    problems: list[str] = []
    algorithms = [a.strip().upper() for a in settings.jwt_algorithms.split(",") if a.strip()]
    if any(a.startswith("HS") for a in algorithms):
        if not settings.jwt_allow_hs256:
            problems.append(
                "GATE4_JWT_ALGORITHMS: HS256 is refused in prod (a shared secret lets every "
                "verifier sign tokens); use RS256 or ES256 with GATE4_JWT_PUBLIC_KEY_FILE or "
                "GATE4_JWT_JWKS_URL, or set GATE4_JWT_ALLOW_HS256=true"
            )
        weakness = secret_weakness(settings.jwt_secret, DEV_JWT_SECRET)
        if weakness:
            problems.append(f"GATE4_JWT_SECRET {weakness}")
    elif identity == "gateway" and not settings.jwt_public_key_file and not settings.jwt_jwks_url:
        problems.append(
            "GATE4_JWT_PUBLIC_KEY_FILE or GATE4_JWT_JWKS_URL must name the key that verifies "
            f"{','.join(algorithms)} bearer tokens"
        )
    if settings.jwt_jwks_url and (
        is_placeholder(settings.jwt_jwks_url) or not settings.jwt_jwks_url.startswith("https://")
    ):
        problems.append("GATE4_JWT_JWKS_URL must be the issuer's real https:// JWKS URL")
    return problems


def _identity_problems(settings: Settings, identity: str) -> list[str]:
    problems: list[str] = []
    if settings.tls != "off":
        files = ["ca.crt", f"{identity}.crt", f"{identity}.key"]
        missing = [f for f in files if not (settings.tls_path() / f).is_file()]
        if missing:
            problems.append(
                f"GATE4_TLS_DIR ({settings.tls_path()}) lacks {', '.join(missing)} for "
                f"GATE4_TLS={settings.tls}"
            )
    if settings.tls == "mtls":
        return problems  # certificates identify every caller; tokens are not used
    variable = f"GATE4_{identity.upper()}_SERVICE_TOKEN"
    weakness = secret_weakness(settings.service_token_of(identity), DEV_SERVICE_TOKENS[identity])
    if weakness:
        problems.append(f"{variable} {weakness}")
    if not settings.service_token_digests.strip():
        problems.append(
            "GATE4_SERVICE_TOKEN_DIGESTS must list <identity>=<sha256 of its token> for "
            f"{', '.join(IDENTITIES)} (or set GATE4_TLS=mtls)"
        )
    else:
        digests = settings.service_token_digest_map()
        absent = [name for name in IDENTITIES if name not in digests]
        if absent:
            problems.append(f"GATE4_SERVICE_TOKEN_DIGESTS lacks {', '.join(absent)}")
        dev = [n for n, d in digests.items() if d == token_digest(DEV_SERVICE_TOKENS[n])]
        if dev:
            problems.append(
                f"GATE4_SERVICE_TOKEN_DIGESTS holds the dev-only token digest of {', '.join(dev)}"
            )
    return problems


def database_problems(settings: Settings, component: str) -> list[str]:
    """What is wrong, for prod, with the database URL `component` would use (the migration
    command checks each component's before it connects)."""
    return _database_problems(settings, component)


def _database_problems(settings: Settings, identity: str) -> list[str]:
    variable = f"GATE4_{identity.upper()}_DATABASE_URL"
    specific: str = getattr(settings, f"{identity}_database_url")
    if specific:
        url = specific
    elif settings.database_url:
        url, variable = settings.database_url, "GATE4_DATABASE_URL"
    else:
        return [
            f"GATE4_DATABASE_URL (or {variable}) must be set: no SQLite fallback in prod, whose "
            "file would live on the pod's disk"
        ]
    try:
        password = sa.make_url(url).password
    except sa.exc.ArgumentError:
        return [f"{variable} is not a database URL"]
    if is_placeholder(url.replace(password or "", "")):
        return [f"{variable} is a placeholder"]
    if password is not None:
        weakness = secret_weakness(str(password))
        if weakness:
            return [f"{variable}: its password {weakness}"]
    return []
