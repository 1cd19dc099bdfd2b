"""Verified tokens are cached until their `exp`, bounded, and only when they verified."""

from __future__ import annotations

import time

import jwt
import pytest

from services.runtime import errors
from services.runtime.auth import TokenCache, TokenClaims, TokenVerifier, mint_token
from services.runtime.config import Settings

NOW = 1_800_000_000.0


class CountingVerifier(TokenVerifier):
    """The real verifier, counting its calls."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.calls = 0

    def verify(self, token: str) -> TokenClaims:
        self.calls += 1
        return super().verify(token)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _token(user: str = "alice", ttl: int = 600) -> str:
    return mint_token(Settings(), tenant_id="acme", user_id=user, roles=["viewer"], ttl_seconds=ttl)


def _cache(max_entries: int = 16) -> tuple[TokenCache, CountingVerifier, Clock]:
    verifier = CountingVerifier(Settings())
    clock = Clock(time.time())
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
    clock.now = claims.expires_at - 0.001
    cache.verify(token)
    assert verifier.calls == 1
    # At exp the entry is gone: the token is verified again (PyJWT's leeway, 30 s by
    # default, still accepts it, on the real clock), and not cached any more.
    clock.now = claims.expires_at
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
    clock = Clock(NOW)
    cache = TokenCache(verifier, 16, clock=clock)
    assert cache.verify("token") == verifier.claims
    verifier.refusal = errors.Unauthenticated("bearer token expired")
    clock.now = NOW + 59
    assert cache.verify("token") == verifier.claims  # cached: the verifier is not asked
    clock.now = NOW + 60
    with pytest.raises(errors.Unauthenticated, match="expired"):
        cache.verify("token")


def test_a_token_already_past_its_exp_is_not_cached() -> None:
    verifier = StubVerifier(expires_at=int(NOW))  # accepted within the leeway
    cache = TokenCache(verifier, 16, clock=Clock(NOW + 10))
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
