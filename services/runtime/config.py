"""Configuration from environment variables (documented in README.md, "Configuration").

Every process reads the same variables; a service picks its own listen address and database
from them. Defaults are for local development only.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("audit", "risk", "execution", "conversation")
ServiceName = Literal["audit", "risk", "execution", "conversation", "gateway"]

# Dev-only defaults: refused when GATE4_ENV=prod.
DEV_JWT_SECRET = "gate4-dev-only-jwt-secret-change-me-in-production"  # noqa: S105
DEV_SERVICE_TOKEN = "gate4-dev-only-service-token"  # noqa: S105


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATE4_", extra="ignore")

    env: Literal["dev", "prod"] = "dev"
    var_dir: Path = Path("var")
    log_level: str = "INFO"

    # Storage: empty means SQLite under var_dir; a per-service URL wins over the shared one.
    database_url: str = ""
    audit_database_url: str = ""
    risk_database_url: str = ""
    execution_database_url: str = ""
    conversation_database_url: str = ""
    gateway_database_url: str = ""
    group_commit_max_batch: int = Field(default=256, ge=1)
    outbox_max_backlog: int = Field(default=10_000, ge=1)

    # Addresses (host:port) each service listens on and every client dials.
    audit_addr: str = "127.0.0.1:50051"
    risk_addr: str = "127.0.0.1:50052"
    execution_addr: str = "127.0.0.1:50053"
    conversation_addr: str = "127.0.0.1:50054"
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080

    rpc_timeout_seconds: float = Field(default=5.0, gt=0)

    # Risk: how long an approved order's reservation may go unsettled before risk asks
    # execution about it, and how old an approval must be before an order execution never
    # recorded is released (longer than execution's command lease).
    risk_reservation_check_seconds: float = Field(default=30.0, gt=0)
    risk_reservation_release_seconds: float = Field(default=60.0, gt=0)
    # Deadline of risk's EnforceKillSwitch call: long enough to cancel and flatten a scope.
    risk_enforcement_timeout_seconds: float = Field(default=30.0, gt=0)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    service_token: str = DEV_SERVICE_TOKEN

    # Authentication: HS256 with a shared secret by default; RS256 with a PEM key or a JWKS URL.
    jwt_secret: str = DEV_JWT_SECRET
    jwt_algorithms: str = "HS256"
    jwt_public_key_file: str = ""
    jwt_jwks_url: str = ""
    jwt_issuer: str = "gate4-dev"
    jwt_audience: str = "gate4-platform"
    jwt_leeway_seconds: int = Field(default=30, ge=0)
    api_key_cache_seconds: float = Field(default=30.0, ge=0)

    def service_addr(self, service: str) -> str:
        addr: str = getattr(self, f"{service}_addr")
        return addr

    def database_url_for(self, service: str) -> str:
        specific: str = getattr(self, f"{service}_database_url")
        if specific:
            return specific
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / f'{service}.db').resolve()}"

    def check_production_safety(self) -> None:
        """Refuses to run outside dev with the dev-only secrets."""
        if self.env != "prod":
            return
        if self.jwt_secret == DEV_JWT_SECRET and "HS256" in self.jwt_algorithms:
            raise RuntimeError("GATE4_JWT_SECRET must be set when GATE4_ENV=prod")
        if self.service_token == DEV_SERVICE_TOKEN:
            raise RuntimeError("GATE4_SERVICE_TOKEN must be set when GATE4_ENV=prod")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    settings = Settings()
    settings.check_production_safety()
    return settings
