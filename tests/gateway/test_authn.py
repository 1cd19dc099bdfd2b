"""The gateway's auth check: verified tokens cached until their `exp` (bounded, and only
when they verified), then the one check of token, API key, tenant and user headers and role."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
from starlette.datastructures import Headers

from gateway.apikeys import ApiKeyStore, open_database
from gateway.authn import Authenticator, Principal, authorize
from services.runtime import errors, roles
from services.runtime.auth import (
    TokenCache,
    TokenClaims,
    TokenVerifier,
    api_key_id,
    mint_token,
)
from services.runtime.config import Settings
from services.runtime.resilience import ManualClock

NOW = 1_800_000_000.0


class CountingVerifier(TokenVerifier):
    """The real verifier, counting its calls."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.calls = 0

    def verify(self, token: str) -> TokenClaims:
        self.calls += 1
        return super().verify(token)


def clock_at(epoch: float) -> ManualClock:
    return ManualClock(datetime.fromtimestamp(epoch, UTC))


def move_to(clock: ManualClock, epoch: float) -> None:
    clock.advance(epoch - clock.now().timestamp())


def _token(user: str = "alice", ttl: int = 600) -> str:
    return mint_token(Settings(), tenant_id="acme", user_id=user, roles=["viewer"], ttl_seconds=ttl)


def _cache(max_entries: int = 16) -> tuple[TokenCache, CountingVerifier, ManualClock]:
    verifier = CountingVerifier(Settings())
    clock = clock_at(time.time())
    return TokenCache(verifier, max_entries, clock=clock), verifier, clock


def test_a_cached_token_is_not_verified_again() -> None:
    cache, verifier, _ = _cache()
    token = _token()
    first = cache.verify(token)
    for _ in range(5):
        assert cache.verify(token) == first
    assert verifier.calls == 1
    assert (first.tenant_id, first.user_id) == ("acme", "alice")


def test_an_entry_is_never_served_at_or_after_the_tokens_exp() -> None:
    cache, verifier, clock = _cache()
    token = _token(ttl=60)
    claims = cache.verify(token)
    move_to(clock, claims.expires_at - 0.001)
    cache.verify(token)
    assert verifier.calls == 1
    # At exp the entry is gone: the token is verified again (PyJWT's leeway, 30 s by
    # default, still accepts it, on the real clock), and not cached any more.
    move_to(clock, claims.expires_at)
    cache.verify(token)
    cache.verify(token)
    assert verifier.calls == 3
    assert len(cache) == 0


class StubVerifier(TokenVerifier):
    """Accepts any token with fixed claims until told to refuse, like a token past its
    verifier's leeway."""

    def __init__(self, expires_at: int) -> None:
        super().__init__(Settings())
        self.claims = TokenClaims("alice", "acme", frozenset({"viewer"}), expires_at)
        self.refusal: errors.Gate4Error | None = None

    def verify(self, token: str) -> TokenClaims:
        if self.refusal is not None:
            raise self.refusal
        return self.claims


def test_past_exp_the_verifiers_refusal_is_what_the_client_gets() -> None:
    verifier = StubVerifier(expires_at=int(NOW) + 60)
    clock = clock_at(NOW)
    cache = TokenCache(verifier, 16, clock=clock)
    assert cache.verify("token") == verifier.claims
    verifier.refusal = errors.Unauthenticated("bearer token expired")
    move_to(clock, NOW + 59)
    assert cache.verify("token") == verifier.claims  # cached: the verifier is not asked
    move_to(clock, NOW + 60)
    with pytest.raises(errors.Unauthenticated, match="expired"):
        cache.verify("token")


def test_a_token_already_past_its_exp_is_not_cached() -> None:
    verifier = StubVerifier(expires_at=int(NOW))  # accepted within the leeway
    cache = TokenCache(verifier, 16, clock=clock_at(NOW + 10))
    cache.verify("token")
    assert len(cache) == 0


def test_invalid_tokens_are_never_cached() -> None:
    cache, verifier, _ = _cache()
    forged = jwt.encode(
        {"sub": "alice", "tenant": "acme", "exp": int(time.time()) + 60,
         "iss": "gate4-dev", "aud": "gate4-platform"},
        "not-the-platform-secret-but-long-enough-for-hs256",
        algorithm="HS256",
    )  # fmt: skip
    for _ in range(3):
        with pytest.raises(errors.Unauthenticated):
            cache.verify(forged)
    assert verifier.calls == 3
    assert len(cache) == 0


def test_only_the_exact_token_string_hits() -> None:
    cache, verifier, _ = _cache()
    token = _token()
    cache.verify(token)
    header, payload, signature = token.split(".")
    tampered = f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    with pytest.raises(errors.Unauthenticated):
        cache.verify(tampered)
    assert verifier.calls == 2


def test_the_cache_is_bounded_and_drops_the_least_recently_used() -> None:
    cache, verifier, _ = _cache(max_entries=2)
    a, b, c = _token("a"), _token("b"), _token("c")
    cache.verify(a)
    cache.verify(b)
    cache.verify(a)  # a is now the most recently used
    cache.verify(c)  # b goes
    assert len(cache) == 2
    assert verifier.calls == 3
    cache.verify(a)
    cache.verify(c)
    assert verifier.calls == 3
    cache.verify(b)
    assert verifier.calls == 4
    assert len(cache) == 2


def test_size_zero_verifies_every_time() -> None:
    cache, verifier, _ = _cache(max_entries=0)
    token = _token()
    cache.verify(token)
    cache.verify(token)
    assert verifier.calls == 2
    assert len(cache) == 0


def test_the_gateway_uses_the_configured_bound() -> None:
    assert Settings().token_cache_size == 4096
    assert Settings(token_cache_size=0).token_cache_size == 0


# -- the gateway's one auth check (gateway/authn.py) ------------------------------------------


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[ApiKeyStore]:
    db = open_database(Settings(gateway_database_url=f"sqlite:///{tmp_path / 'gateway.db'}"))
    db.start()
    yield ApiKeyStore(db, 30)
    db.close()


def headers(token: str, api_key: str, tenant: str = "acme", user: str = "alice") -> Headers:
    return Headers(
        {
            "authorization": f"Bearer {token}",
            "x-api-key": api_key,
            "x-tenant-id": tenant,
            "x-user-id": user,
        }
    )


def authenticate(keys: ApiKeyStore, given: Headers) -> Principal:
    return asyncio.run(Authenticator(TokenVerifier(Settings()), keys).authenticate(given))


def test_a_token_and_key_of_the_headers_tenant_and_user_make_the_principal(
    keys: ApiKeyStore,
) -> None:
    key = keys.create_sync("acme", "ci")
    token = mint_token(
        Settings(),
        tenant_id="acme",
        user_id="alice",
        roles=[roles.TRADER, roles.INTERNAL, "root"],
        ttl_seconds=60,
    )
    principal = authenticate(keys, headers(token, key))
    assert (principal.tenant_id, principal.user_id) == ("acme", "alice")
    # Only platform roles pass: an internal role never comes from a user token.
    assert principal.roles == {roles.TRADER}
    assert principal.api_key_id == api_key_id(key)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"authorization": ""}, errors.Unauthenticated, "missing bearer token"),
        ({"authorization": "Basic abc"}, errors.Unauthenticated, "missing bearer token"),
        ({"x-api-key": ""}, errors.Unauthenticated, "missing API key"),
        ({"x-api-key": "g4k_unknown_key"}, errors.Unauthenticated, "invalid or revoked"),
        ({"x-tenant-id": "globex"}, errors.TenantMismatch, "bearer token"),
        ({"x-user-id": "bob"}, errors.UserMismatch, "X-User-Id"),
        ({"x-user-id": "bad user!"}, errors.ValidationFailed, "malformed X-User-Id"),
    ],
)
def test_each_missing_or_mismatched_credential_is_refused_with_its_reason(
    keys: ApiKeyStore, change: dict[str, str], error: type[errors.Gate4Error], message: str
) -> None:
    key = keys.create_sync("acme", "ci")
    token = mint_token(Settings(), tenant_id="acme", user_id="alice", roles=[], ttl_seconds=60)
    given = {**headers(token, key), **change}
    with pytest.raises(error, match=message):
        authenticate(keys, Headers({k: v for k, v in given.items() if v}))


def test_a_key_of_another_tenant_is_refused(keys: ApiKeyStore) -> None:
    other = keys.create_sync("globex", "ci")
    token = mint_token(Settings(), tenant_id="acme", user_id="alice", roles=[], ttl_seconds=60)
    with pytest.raises(errors.TenantMismatch, match="API key"):
        authenticate(keys, headers(token, other))


def test_reads_need_any_platform_role_and_writes_their_own() -> None:
    trader = Principal("acme", "alice", frozenset({roles.TRADER}), "k1")
    authorize(trader, roles.VIEWER)
    authorize(trader, roles.TRADER)
    with pytest.raises(errors.Forbidden, match="'risk-officer' role"):
        authorize(trader, roles.RISK_OFFICER)
    with pytest.raises(errors.Forbidden):
        authorize(Principal("acme", "alice", frozenset(), "k1"), roles.VIEWER)
