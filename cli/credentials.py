"""Dev credentials: a signed token plus an API key issued in the gateway's own database.

`gate4 dev credentials` prints them; `gate4 dev up` writes the demo tenant's to
var/dev-credentials.env. Both go through `issue_credentials`, so what `make run` seeds is
exactly what the command mints. `dev up` passes the key of the file it wrote last time, which
is reused while it is still valid: restarts mint a fresh token, not another API key.
"""

from __future__ import annotations

import os
import shlex
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic.util import CommandError
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from cli.errors import CliError, UsageError
from cli.settings import require_dev
from gateway.apikeys import ApiKeyStore, open_database
from services.runtime.auth import mint_token
from services.runtime.config import Settings
from services.runtime.correlation import TENANT_ID_RE
from services.runtime.roles import PLATFORM as ROLES

CREDENTIALS_FILE = "dev-credentials.env"
DEFAULT_TTL_SECONDS = 12 * 3600
LABEL_MAX = 200  # gateway_api_keys.label is VARCHAR(200)

DEMO_TENANT = "demo"
DEMO_USER = "demo-user"
DEMO_ROLES = ROLES


@dataclass(frozen=True)
class DevCredentials:
    api_base: str
    tenant_id: str
    user_id: str
    roles: tuple[str, ...]
    expires_at: int
    # Kept out of repr so a stray log line or traceback never shows them.
    token: str = field(repr=False)
    api_key: str = field(repr=False)

    def env(self) -> dict[str, str]:
        """The runbook's names first, then the GATE4_* names the CLI client reads."""
        values = {
            "API_BASE": self.api_base,
            "TOKEN": self.token,
            "API_KEY": self.api_key,
            "TENANT_ID": self.tenant_id,
            "USER_ID": self.user_id,
        }
        env = {("PLATFORM_API_BASE" if k == "API_BASE" else k): v for k, v in values.items()}
        env.update({f"GATE4_{k}": v for k, v in values.items()})
        return env

    def env_text(self) -> str:
        expires = datetime.fromtimestamp(self.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines = [
            f"# Gate4 dev credentials: tenant {self.tenant_id}, user {self.user_id}, "
            f"roles {','.join(self.roles)}; token expires {expires}.",
            "# Secrets: keep private. Use with: source <this file>",
        ]
        lines += [f"export {name}={shlex.quote(value)}" for name, value in self.env().items()]
        return "\n".join(lines) + "\n"


def parse_roles(text: str | Iterable[str]) -> tuple[str, ...]:
    """Comma-separated roles, each one of ROLES; returned deduplicated in ROLES order."""
    items = text.split(",") if isinstance(text, str) else list(text)
    roles = {r.strip() for r in items if r.strip()}
    if not roles:
        raise UsageError(f"--roles needs at least one of: {','.join(ROLES)}")
    unknown = sorted(roles - set(ROLES))
    if unknown:
        raise UsageError(f"unknown role(s) {', '.join(unknown)}; roles are: {', '.join(ROLES)}")
    return tuple(r for r in ROLES if r in roles)


def check_id(kind: str, value: str) -> str:
    if not TENANT_ID_RE.match(value):
        raise UsageError(
            f"invalid {kind} {value!r}: use 1-64 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return value


def issue_credentials(
    settings: Settings,
    *,
    api_base: str,
    tenant_id: str,
    user_id: str,
    roles: str | Iterable[str],
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    label: str | None = None,
    reuse_api_key: str | None = None,
) -> DevCredentials:
    """Validates, mints the token and stores a new API key for the tenant, unless
    `reuse_api_key` is a valid key of that tenant."""
    require_dev(settings, "dev credentials")
    check_id("tenant id", tenant_id)
    check_id("user id", user_id)
    role_list = parse_roles(roles)
    if ttl_seconds <= 0:
        raise UsageError(f"--ttl must be a positive number of seconds, not {ttl_seconds}")
    label = f"dev-credentials:{user_id}" if label is None else label
    if not label or len(label) > LABEL_MAX:
        raise UsageError(f"--label must be 1-{LABEL_MAX} characters")

    expires_at = int(time.time()) + ttl_seconds
    try:
        token = mint_token(
            settings,
            tenant_id=tenant_id,
            user_id=user_id,
            roles=list(role_list),
            ttl_seconds=ttl_seconds,
        )
    except (OSError, ValueError) as exc:  # no key file (SigningKeyMissing), unreadable, not PEM
        raise UsageError(f"cannot sign the token: {exc}") from exc
    api_key = _api_key(settings, tenant_id, label, reuse_api_key)
    return DevCredentials(
        api_base=api_base,
        tenant_id=tenant_id,
        user_id=user_id,
        roles=role_list,
        expires_at=expires_at,
        token=token,
        api_key=api_key,
    )


def _api_key(settings: Settings, tenant_id: str, label: str, reuse: str | None) -> str:
    with gateway_keys(settings) as store:
        if reuse:
            record = store.active_sync(reuse)
            if record is not None and record.tenant_id == tenant_id:
                return reuse
        return store.create_sync(tenant_id, label)


@contextmanager
def gateway_keys(settings: Settings) -> Iterator[ApiKeyStore]:
    """The API keys in the gateway's database (GATE4_GATEWAY_DATABASE_URL, else
    GATE4_DATABASE_URL, else var/gateway.db); database errors become CLI errors that name the
    database without its password."""
    url = settings.database_url_for("gateway")
    try:
        db = open_database(settings)
    except (SQLAlchemyError, CommandError) as exc:
        raise CliError(
            f"cannot open the gateway database {_safe_url(url)}: {_reason(exc)}"
        ) from exc
    try:
        yield ApiKeyStore(db, settings.api_key_cache_seconds)
    except SQLAlchemyError as exc:
        raise CliError(f"cannot store the API key in {_safe_url(url)}: {_reason(exc)}") from exc
    finally:
        db.close()


def _reason(exc: Exception) -> str:
    # The driver's message without SQLAlchemy's multi-line statement and parameter dump.
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _safe_url(url: str) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable database URL>"


def write_env_file(path: Path, creds: DevCredentials) -> None:
    """Writes atomically with mode 0600: readers never see a partial or world-readable file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(creds.env_text())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
