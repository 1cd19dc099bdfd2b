"""Configuration from environment variables (documented in README.md, "Configuration").

Every process reads the same variables; a service picks its own listen address and database
from them. Defaults are for local development only.
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("audit", "risk", "execution", "conversation")
#: The folder under the var dir where processes write their span files.
TRACES_DIR = "traces"
ServiceName = Literal["audit", "risk", "execution", "conversation", "gateway"]
#: Internal identities: every process calls services as one of these (services/runtime/identity.py).
IDENTITIES = ("gateway", *SERVICES)

# Dev-only defaults: refused when GATE4_ENV=prod.
DEV_JWT_SECRET = "gate4-dev-only-jwt-secret-change-me-in-production"  # noqa: S105
DEV_SERVICE_TOKENS = {name: f"gate4-dev-only-{name}-service-token" for name in IDENTITIES}
_DIGEST_ENTRY = re.compile(r"^([a-z]+)=([0-9a-f]{64})$")
#: Idempotency keys are kept at least this long: the public contract promises 24 hours.
MIN_IDEMPOTENCY_TTL_SECONDS = 24 * 3600


def token_digest(token: str) -> str:
    """SHA-256 of a service token: what a service keeps to recognise its callers."""
    return hashlib.sha256(token.encode()).hexdigest()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATE4_", extra="ignore")

    env: Literal["dev", "prod"] = "dev"
    var_dir: Path = Path("var")
    log_level: str = "INFO"
    # Local span files (var/traces/): each process rolls its file over at this size, and the
    # folder is pruned (oldest rolled-over files first) to stay under the total.
    trace_file_max_bytes: int = Field(default=32 * 1024 * 1024, ge=4096)
    traces_max_bytes: int = Field(default=512 * 1024 * 1024, ge=4096)

    # Storage: empty means SQLite under var_dir; a per-service URL wins over the shared one.
    database_url: str = ""
    audit_database_url: str = ""
    risk_database_url: str = ""
    execution_database_url: str = ""
    conversation_database_url: str = ""
    gateway_database_url: str = ""
    group_commit_max_batch: int = Field(default=256, ge=1)
    # A span per SQL statement: off by default, it costs a large share of write throughput.
    trace_sql: bool = False
    outbox_max_backlog: int = Field(default=10_000, ge=1)
    # Headroom beyond the bound kept for risk-reducing commands (stop, flatten, cancel,
    # kill-switch engage, reduce-only orders) and equity reports: the brake works while
    # audit is down. Bounded too: past it, those are refused as well.
    outbox_reserve: int = Field(default=1_000, ge=0)
    # How long a shipper's claim holds its rows: what a crashed shipper delays its tenants'
    # events by. Above the settle margin plus one short call (services/runtime/outbox.py).
    outbox_lease_seconds: float = Field(default=10.0, ge=7.0)

    # Addresses (host:port) each service listens on and every client dials.
    audit_addr: str = "127.0.0.1:50051"
    risk_addr: str = "127.0.0.1:50052"
    execution_addr: str = "127.0.0.1:50053"
    conversation_addr: str = "127.0.0.1:50054"
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    # Each service's Prometheus metrics port (services/runtime/metrics.py), on the host of its
    # own address above; 0: no metrics server. `gate4 dev up` derives one for each when unset.
    audit_metrics_port: int = Field(default=0, ge=0, le=65535)
    risk_metrics_port: int = Field(default=0, ge=0, le=65535)
    execution_metrics_port: int = Field(default=0, ge=0, le=65535)
    conversation_metrics_port: int = Field(default=0, ge=0, le=65535)

    # Client-side balancing (services/runtime/clients.py, server.py): peers are dialled as
    # dns:///host:port with this policy, so a name resolving to several pods (a headless
    # Service) spreads calls over all of them. Keepalive pings find dead connections; servers
    # close each connection after its maximum age (plus a grace for calls in flight), so
    # clients resolve again and reach new replicas.
    grpc_lb_policy: Literal["round_robin", "pick_first"] = "round_robin"
    grpc_keepalive_time_seconds: float = Field(default=30.0, gt=0)
    grpc_keepalive_timeout_seconds: float = Field(default=10.0, gt=0)
    grpc_max_connection_age_seconds: float = Field(default=300.0, gt=0)
    grpc_max_connection_age_grace_seconds: float = Field(default=30.0, ge=0)

    # The budget of a request: the deadline of the gateway's call (and of calls made outside
    # any request). A service calling a dependency waits at most that dependency's timeout,
    # and never past its own caller's deadline less the margin (services/runtime/deadlines.py).
    rpc_timeout_seconds: float = Field(default=5.0, gt=0)
    deadline_margin_seconds: float = Field(default=0.5, ge=0)
    risk_timeout_seconds: float = Field(default=2.0, gt=0)
    audit_timeout_seconds: float = Field(default=5.0, gt=0)
    execution_timeout_seconds: float = Field(default=5.0, gt=0)

    # Risk: how long an approved order's reservation may go unsettled before risk asks
    # execution about it, and how old an approval must be before an order execution never
    # recorded is released (longer than execution's command lease).
    risk_reservation_check_seconds: float = Field(default=30.0, gt=0)
    risk_reservation_release_seconds: float = Field(default=60.0, gt=0)
    # Deadline of risk's EnforceKillSwitch call: long enough to cancel and flatten a scope.
    risk_enforcement_timeout_seconds: float = Field(default=30.0, gt=0)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    # Apply each database's migrations when a process starts (dev, SQLite). In prod a
    # migration Job runs them with a DDL-capable role (`python -m
    # services.runtime.storage.migrations`) and the processes, with DML rights only, skip it.
    migrate_on_start: bool = True

    # Internal identities (docs/portal/operations/gate4-security-model.md): each process sends
    # its own token on every call it makes; a service tells its callers apart by the tokens'
    # SHA-256 in GATE4_SERVICE_TOKEN_DIGESTS (empty: the digests of the five tokens below, as
    # in dev), or with GATE4_TLS=mtls by their certificates.
    gateway_service_token: str = DEV_SERVICE_TOKENS["gateway"]
    audit_service_token: str = DEV_SERVICE_TOKENS["audit"]
    risk_service_token: str = DEV_SERVICE_TOKENS["risk"]
    execution_service_token: str = DEV_SERVICE_TOKENS["execution"]
    conversation_service_token: str = DEV_SERVICE_TOKENS["conversation"]
    service_token_digests: str = ""
    # gRPC transport: off (plaintext, dev), tls (servers prove who they are) or mtls (callers
    # too: the certificate is the caller's identity). Files under tls_dir (empty: var/tls).
    tls: Literal["off", "tls", "mtls"] = "off"
    tls_dir: str = ""

    # Authentication: HS256 with a shared secret by default; RS256 with a PEM key or a JWKS URL.
    jwt_secret: str = DEV_JWT_SECRET
    jwt_algorithms: str = "HS256"
    # Prod refuses HS256 (whoever verifies can also sign) unless this says it is intended.
    jwt_allow_hs256: bool = False
    jwt_public_key_file: str = ""
    # PEM private key that `gate4 dev credentials` signs RS256/ES256 tokens with.
    jwt_private_key_file: str = ""
    jwt_jwks_url: str = ""
    jwt_issuer: str = "gate4-dev"
    jwt_audience: str = "gate4-platform"
    jwt_leeway_seconds: int = Field(default=30, ge=0)
    api_key_cache_seconds: float = Field(default=30.0, ge=0)
    # An unknown key's refusal is cached too (a typo should not hammer the database), never
    # longer than a known key's lookup.
    api_key_negative_cache_seconds: float = Field(default=2.0, ge=0, le=60)
    # Verified bearer tokens the gateway keeps (by SHA-256, until their `exp`), so a client's
    # token is checked once, not on every request; 0: every request verifies its token.
    token_cache_size: int = Field(default=4096, ge=0)

    # Idempotency keys (services/runtime/idempotency.py), of execution's commands and of
    # conversation's turns alike: a running command holds its key (and a pending order its
    # venue slot) for the lease before another attempt may take it over; completed keys are
    # kept for the lifetime, then purged. The names predate conversation's use of them.
    execution_idempotency_ttl_seconds: int = Field(
        default=MIN_IDEMPOTENCY_TTL_SECONDS, ge=MIN_IDEMPOTENCY_TTL_SECONDS, le=30 * 24 * 3600
    )
    execution_command_lease_seconds: float = Field(default=30.0, gt=0, le=3600)

    # Execution (docs/portal/operations/gate4-orchestrator-controls.md, "Configuration").
    execution_reconcile_interval_seconds: float = Field(default=5.0, gt=0, le=3600)
    execution_cleanup_interval_seconds: float = Field(default=600.0, gt=0, le=86400)
    # How long a deployment read may show risk's kill switches as last fetched (each process
    # asks risk at most once per period and tenant; enforcement refreshes at once), and how
    # long that read waits for risk (past it the read shows the switches as unknown).
    execution_switch_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    execution_switch_read_timeout_seconds: float = Field(default=1.0, gt=0, le=30)
    # How often a stop still at work at its answer deadline looks whether it has begun (then
    # it answers 202); the wait is bounded by the same deadline, so short polls cost little.
    execution_stop_poll_seconds: float = Field(default=0.01, gt=0, le=1)
    # The orchestrator's retry budget (per deployment, per process).
    execution_retry_max_attempts: int = Field(default=4, ge=1, le=20)
    execution_retry_base_seconds: float = Field(default=0.1, ge=0, le=60)
    execution_retry_max_backoff_seconds: float = Field(default=2.0, ge=0, le=300)
    execution_retry_budget_capacity: float = Field(default=10.0, ge=0, le=1000)
    execution_retry_budget_refill_per_second: float = Field(default=0.2, ge=0, le=100)
    # Paper venue: market-order slippage against the taker, the largest quantity one fill may
    # have (0: unlimited; the rest waits for later marks), and simulated faults as a JSON
    # object, account id (or "*") -> a fault for every attempt ("timeout", "lost_ack",
    # "reject") or a list of per-attempt faults ("ok": none). Faults: tests and demos only.
    paper_venue_slippage_bps: Decimal = Field(default=Decimal(0), ge=0, le=1000)
    paper_venue_max_fill_quantity: Decimal = Field(default=Decimal(0), ge=0)
    paper_venue_faults: str = ""
    # Test hooks (services/execution/faults.py), refused when GATE4_ENV=prod.
    fault_crash_after_commit: str = ""
    fault_crash_after_venue: str = ""

    # -- retry policies (services/runtime/resilience.py; README.md, "Configuration")
    # Risk's kill-switch enforcement: the retry loop's interval and first backoff, and the
    # longest it waits before asking execution again about one engagement.
    risk_enforcement_retry_seconds: float = Field(default=2.0, gt=0)
    risk_enforcement_max_backoff_seconds: float = Field(default=60.0, gt=0)
    # Longest pause of an outbox shipper between attempts while audit is unreachable.
    outbox_retry_max_seconds: float = Field(default=5.0, gt=0)
    # Longest pause of conversation's notification feed before it resubscribes to audit.
    notifications_retry_max_seconds: float = Field(default=5.0, gt=0)

    @field_validator("service_token_digests")
    @classmethod
    def _digests_are_well_formed(cls, value: str) -> str:
        seen: dict[str, str] = {}
        for entry in (e.strip() for e in value.split(",") if e.strip()):
            match = _DIGEST_ENTRY.match(entry)
            if match is None or match.group(1) not in IDENTITIES:
                # Names only: a token pasted here by mistake must not reach a log.
                raise ValueError(
                    f"entry for {entry.partition('=')[0][:16]!r}: write <identity>=<sha256 "
                    f"hex> with identities {', '.join(IDENTITIES)}"
                )
            if match.group(2) in seen.values():
                raise ValueError("two identities share one token: callers cannot be told apart")
            seen[match.group(1)] = match.group(2)
        return value

    @model_validator(mode="after")
    def _release_outlasts_the_command_lease(self) -> Settings:
        # Risk releases an approved order execution never recorded; while a command still
        # holds its lease, execution may yet record it.
        if self.risk_reservation_release_seconds <= self.execution_command_lease_seconds:
            raise ValueError(
                "GATE4_RISK_RESERVATION_RELEASE_SECONDS must exceed "
                "GATE4_EXECUTION_COMMAND_LEASE_SECONDS"
            )
        return self

    @property
    def command_lease(self) -> timedelta:
        """How long a running command holds its key, or a pending order its venue slot."""
        return timedelta(seconds=self.execution_command_lease_seconds)

    def service_token_of(self, identity: str) -> str:
        token: str = getattr(self, f"{identity}_service_token")
        return token

    def service_token_digest_map(self) -> dict[str, str]:
        """identity -> SHA-256 of its token: the callers a service recognises by token."""
        if self.service_token_digests.strip():
            pairs = (e.strip().split("=", 1) for e in self.service_token_digests.split(","))
            return {name: digest for name, digest in pairs if name}
        return {name: token_digest(self.service_token_of(name)) for name in IDENTITIES}

    def tls_path(self) -> Path:
        return Path(self.tls_dir) if self.tls_dir else self.var_dir / "tls"

    def service_addr(self, service: str) -> str:
        addr: str = getattr(self, f"{service}_addr")
        return addr

    def metrics_addr(self, service: str) -> tuple[str, int] | None:
        """Where the service serves its metrics: the host it listens on, its metrics port;
        None when the port is 0."""
        port: int = getattr(self, f"{service}_metrics_port")
        if not port:
            return None
        host = self.service_addr(service).rpartition(":")[0].strip("[]")
        return host or "0.0.0.0", port  # noqa: S104 - as the gRPC address: no host, every one

    def dependency_timeout(self, service: str) -> float:
        """How long a service waits for a call to `service` (capped by its caller's budget)."""
        timeout: float = getattr(self, f"{service}_timeout_seconds", self.rpc_timeout_seconds)
        return timeout

    def database_url_for(self, service: str) -> str:
        specific: str = getattr(self, f"{service}_database_url")
        if specific:
            return specific
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / f'{service}.db').resolve()}"

    def check_production_safety(self, identity: str) -> None:
        """With GATE4_ENV=prod, raises `UnsafeConfiguration` naming every weak variable the
        process `identity` would start with (services/runtime/production.py)."""
        # Imported here: production.py reads this module's dev defaults.
        from services.runtime.production import UnsafeConfiguration, production_problems

        problems = production_problems(self, identity)
        if problems:
            raise UnsafeConfiguration(identity, problems)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings; each process checks them for prod with its own identity."""
    return Settings()
