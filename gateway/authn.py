"""The gateway's one auth check: bearer token + API key + tenant/user headers + role."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from starlette.datastructures import Headers

from gateway.apikeys import ApiKeyStore
from services.runtime import errors, roles
from services.runtime.auth import TokenClaims
from services.runtime.correlation import TENANT_ID_RE
from services.runtime.errors import FieldError

_KNOWN_ROLES = frozenset(roles.PLATFORM)


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    user_id: str
    roles: frozenset[str]
    api_key_id: str


class Verifier(Protocol):
    """A TokenVerifier, or the TokenCache in front of one (services/runtime/auth.py)."""

    def verify(self, token: str) -> TokenClaims: ...


class Authenticator:
    def __init__(self, verifier: Verifier, keys: ApiKeyStore) -> None:
        self.verifier = verifier
        self.keys = keys

    async def authenticate(self, headers: Headers) -> Principal:
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.Unauthenticated("missing bearer token: send 'Authorization: Bearer <JWT>'")
        api_key = headers.get("x-api-key", "")
        if not api_key:
            raise errors.Unauthenticated("missing API key: send the 'X-API-Key' header")
        claims = self.verifier.verify(token.strip())
        record = await self.keys.lookup(api_key)
        if record is None:
            raise errors.Unauthenticated("invalid or revoked API key")

        tenant_id = _id_header(headers, "X-Tenant-Id")
        user_id = _id_header(headers, "X-User-Id")
        if claims.tenant_id != tenant_id:
            raise errors.TenantMismatch(
                "the bearer token was not issued for the tenant in X-Tenant-Id"
            )
        if record.tenant_id != tenant_id:
            raise errors.TenantMismatch("the API key does not belong to the tenant in X-Tenant-Id")
        if claims.user_id != user_id:
            raise errors.UserMismatch("the bearer token was not issued for the user in X-User-Id")
        # Only platform roles pass on; internal roles can never come from a user token.
        return Principal(tenant_id, user_id, claims.roles & _KNOWN_ROLES, record.key_id)


def authorize(principal: Principal, role: str) -> None:
    """Reads are open to any platform role; every other operation needs its own role."""
    if role == roles.VIEWER and principal.roles:
        return
    if role not in principal.roles:
        raise errors.Forbidden(f"this operation needs the '{role}' role")


def _id_header(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if value is None:
        raise errors.ValidationFailed(
            f"missing {name} header", field_errors=[FieldError(name, "required header is missing")]
        )
    if not TENANT_ID_RE.match(value):
        raise errors.ValidationFailed(
            f"malformed {name} header",
            field_errors=[
                FieldError(name, "1-64 characters of A-Z a-z 0-9 . _ -, starting alphanumeric")
            ],
        )
    return value
