"""Credentials: JWT bearer tokens (verified with PyJWT) and per-tenant API keys.

Tokens carry `sub` (user), `tenant` and `roles`. HS256 with a shared secret is the dev
default; RS256/ES256 with a PEM public key or a JWKS URL is configured by environment (and
dev credentials are then signed with GATE4_JWT_PRIVATE_KEY_FILE).
API keys look like `g4k_<keyId>_<secret>`; only the SHA-256 of the whole key is stored
(keys are 256-bit random, so a fast hash is enough, unlike passwords).
A token verified once is remembered until its `exp` (`TokenCache`), so a client's requests
do not pay for the signature check (most of the gateway's auth cost) every time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jwt

from services.runtime import errors
from services.runtime.config import Settings
from services.runtime.resilience import SYSTEM, Clock

API_KEY_PREFIX = "g4k"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: str
    tenant_id: str
    roles: frozenset[str]
    expires_at: int


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.algorithms = [a.strip() for a in settings.jwt_algorithms.split(",") if a.strip()]

    @cached_property
    def _jwks(self) -> jwt.PyJWKClient | None:
        url = self.settings.jwt_jwks_url
        return jwt.PyJWKClient(url, cache_keys=True) if url else None

    @cached_property
    def _public_key(self) -> str | None:
        path = self.settings.jwt_public_key_file
        return Path(path).read_text() if path else None

    def _key_for(self, token: str) -> Any:
        if self._jwks is not None:
            return self._jwks.get_signing_key_from_jwt(token).key
        if self._public_key is not None:
            return self._public_key
        return self.settings.jwt_secret

    def verify(self, token: str) -> TokenClaims:
        try:
            claims = jwt.decode(
                token,
                key=self._key_for(token),
                algorithms=self.algorithms,
                audience=self.settings.jwt_audience or None,
                issuer=self.settings.jwt_issuer or None,
                leeway=self.settings.jwt_leeway_seconds,
                options={"require": ["exp", "sub", "tenant"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise errors.Unauthenticated("bearer token expired") from exc
        except jwt.PyJWTError as exc:
            raise errors.Unauthenticated(f"invalid bearer token: {exc}") from exc
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise errors.Unauthenticated("invalid bearer token: roles must be a list of strings")
        return TokenClaims(
            user_id=str(claims["sub"]),
            tenant_id=str(claims["tenant"]),
            roles=frozenset(roles),
            expires_at=int(claims["exp"]),
        )


class TokenCache:
    """The claims of tokens verified already, served until each token's `exp`.

    Keyed by the SHA-256 of the exact token string: any other string (another signature, a
    changed claim, whitespace) is a miss and is verified, and no usable credential is kept
    in memory. Only tokens that verified are kept, so an invalid, forged or expired token is
    verified and refused on every request as before. An entry is served only while the clock
    is before its `exp`, without the verifier's leeway, so it never outlives what a fresh
    verification would accept. At most `max_entries` (0: nothing is cached); the least
    recently used goes first. Not thread-safe: the gateway verifies on its event loop.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        max_entries: int,
        clock: Clock = SYSTEM,
    ) -> None:
        self.verifier = verifier
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, TokenClaims] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def verify(self, token: str) -> TokenClaims:
        key = hashlib.sha256(token.encode()).digest()
        now = self._clock.now().timestamp()
        claims = self._entries.get(key)
        if claims is not None:
            if now < claims.expires_at:
                self._entries.move_to_end(key)
                return claims
            del self._entries[key]
        claims = self.verifier.verify(token)
        if self.max_entries and now < claims.expires_at:
            self._entries[key] = claims
            if len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return claims


class SigningKeyMissing(ValueError):
    """An RS/ES algorithm is configured but no private key to sign with."""


def signing_key(settings: Settings) -> tuple[str, Any]:
    """The first configured algorithm and what signs with it: the HS secret, or the PEM
    private key of GATE4_JWT_PRIVATE_KEY_FILE for RS256/ES256 (dev credentials and tests;
    production tokens come from your issuer)."""
    algorithm = next((a.strip() for a in settings.jwt_algorithms.split(",") if a.strip()), "")
    if algorithm.upper().startswith("HS"):
        return algorithm, settings.jwt_secret
    if not settings.jwt_private_key_file:
        raise SigningKeyMissing(
            f"GATE4_JWT_ALGORITHMS={settings.jwt_algorithms} needs GATE4_JWT_PRIVATE_KEY_FILE to "
            "sign tokens"
        )
    return algorithm, Path(settings.jwt_private_key_file).read_text()


def mint_token(
    settings: Settings, *, tenant_id: str, user_id: str, roles: list[str], ttl_seconds: int
) -> str:
    """Signs a token with the first configured algorithm (see `signing_key`)."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": user_id,
        "tenant": tenant_id,
        "roles": sorted(set(roles)),
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
    }
    if settings.jwt_issuer:
        payload["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        payload["aud"] = settings.jwt_audience
    algorithm, key = signing_key(settings)
    return jwt.encode(payload, key, algorithm=algorithm)


@dataclass(frozen=True)
class NewApiKey:
    key_id: str
    plaintext: str
    digest: str


def new_api_key() -> NewApiKey:
    key_id = secrets.token_hex(6)
    plaintext = f"{API_KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    return NewApiKey(key_id=key_id, plaintext=plaintext, digest=api_key_digest(plaintext))


def api_key_digest(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def api_key_id(plaintext: str) -> str | None:
    parts = plaintext.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1]


def digest_matches(plaintext: str, digest: str) -> bool:
    return hmac.compare_digest(api_key_digest(plaintext), digest)
