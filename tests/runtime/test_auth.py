"""Token verification with PyJWT, HS256 by default and RS256 by configuration."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.runtime import errors
from services.runtime.auth import (
    SigningKeyMissing,
    TokenVerifier,
    api_key_digest,
    api_key_id,
    digest_matches,
    mint_token,
    new_api_key,
)
from services.runtime.config import DEV_JWT_SECRET, Settings


def test_minted_token_verifies_with_its_claims() -> None:
    settings = Settings()
    token = mint_token(
        settings, tenant_id="acme", user_id="alice", roles=["trader", "viewer"], ttl_seconds=60
    )
    claims = TokenVerifier(settings).verify(token)
    assert (claims.tenant_id, claims.user_id, claims.roles) == (
        "acme",
        "alice",
        frozenset({"trader", "viewer"}),
    )


@pytest.mark.parametrize(
    "mutate,needle",
    [
        ({"aud": "someone-else"}, "audience"),
        ({"iss": "elsewhere"}, "issuer"),
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"roles": "trader"}, "roles"),
    ],
)
def test_claims_are_checked(mutate: dict[str, object], needle: str) -> None:
    payload = {"sub": "alice", "tenant": "acme", "roles": ["trader"], "exp": int(time.time()) + 60,
               "iss": "gate4-dev", "aud": "gate4-platform", **mutate}  # fmt: skip
    token = jwt.encode(payload, DEV_JWT_SECRET, algorithm="HS256")
    with pytest.raises(errors.Unauthenticated) as info:
        TokenVerifier(Settings()).verify(token)
    assert needle in info.value.detail.lower()


def test_token_without_tenant_is_refused() -> None:
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60, "iss": "gate4-dev",
                        "aud": "gate4-platform"}, DEV_JWT_SECRET, algorithm="HS256")  # fmt: skip
    with pytest.raises(errors.Unauthenticated):
        TokenVerifier(Settings()).verify(token)


def test_rs256_with_a_configured_public_key(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "jwt.pem").write_bytes(pem)
    settings = Settings(jwt_algorithms="RS256", jwt_public_key_file=str(tmp_path / "jwt.pem"))
    payload = {"sub": "bob", "tenant": "acme", "roles": ["sre"], "exp": int(time.time()) + 60,
               "iss": "gate4-dev", "aud": "gate4-platform"}  # fmt: skip
    good = jwt.encode(payload, key, algorithm="RS256")
    assert TokenVerifier(settings).verify(good).user_id == "bob"
    # An HS256 token signed with the public key text must not pass (algorithm confusion).
    with pytest.raises(errors.Unauthenticated):
        TokenVerifier(settings).verify(jwt.encode(payload, DEV_JWT_SECRET, algorithm="HS256"))


def test_api_keys_store_only_a_digest() -> None:
    key = new_api_key()
    assert key.plaintext.startswith(f"g4k_{key.key_id}_")
    assert key.digest == api_key_digest(key.plaintext) and key.plaintext not in key.digest
    assert api_key_id(key.plaintext) == key.key_id
    assert digest_matches(key.plaintext, key.digest)
    assert not digest_matches(key.plaintext + "x", key.digest)
    assert api_key_id("g4k__nothing") is None and api_key_id("bearer-token") is None


def test_rs256_with_keys_from_a_jwks_url() -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = Settings(
            jwt_algorithms="RS256",
            jwt_jwks_url=f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json",
        )
        payload = {
            "sub": "carol",
            "tenant": "acme",
            "roles": ["viewer"],
            "exp": int(time.time()) + 60,
            "iss": "gate4-dev",
            "aud": "gate4-platform",
        }
        token = jwt.encode(payload, key, algorithm="RS256", headers={"kid": "k1"})
        assert TokenVerifier(settings).verify(token).user_id == "carol"
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        with pytest.raises(errors.Unauthenticated):
            TokenVerifier(settings).verify(
                jwt.encode(payload, other, algorithm="RS256", headers={"kid": "k1"})
            )
    finally:
        server.shutdown()


def test_dev_tokens_follow_the_configured_algorithm(tmp_path: Path) -> None:
    """RS256 end to end: `gate4 dev credentials` signs with the private key file, the gateway
    verifies with the public key; without a private key minting says what is missing."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = tmp_path / "jwt-private.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = tmp_path / "jwt.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    settings = Settings(
        jwt_algorithms="RS256",
        jwt_private_key_file=str(private),
        jwt_public_key_file=str(public),
    )
    token = mint_token(settings, tenant_id="acme", user_id="al", roles=["sre"], ttl_seconds=60)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert TokenVerifier(settings).verify(token).user_id == "al"
    with pytest.raises(SigningKeyMissing, match="GATE4_JWT_PRIVATE_KEY_FILE"):
        mint_token(
            Settings(jwt_algorithms="RS256"),
            tenant_id="acme",
            user_id="al",
            roles=["sre"],
            ttl_seconds=60,
        )
