"""Execution-only settings, read from the same GATE4_* environment as the shared Settings.

Documented in docs/portal/operations/gate4-orchestrator-controls.md ("Configuration").
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Keys are kept at least this long: the public contract promises 24 hours.
MIN_IDEMPOTENCY_TTL_SECONDS = 24 * 3600


class ExecutionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATE4_", extra="ignore")

    env: Literal["dev", "prod"] = "dev"

    # Paper venue.
    paper_venue_slippage_bps: Decimal = Field(default=Decimal(0), ge=0, le=1000)
    #: Largest quantity one fill may have; 0 = unlimited. The rest waits for later marks.
    paper_venue_max_fill_quantity: Decimal = Field(default=Decimal(0), ge=0)
    #: JSON object: account id (or "*") -> a fault for every attempt ("timeout", "lost_ack",
    #: "reject") or a list of per-attempt faults ("ok" = no fault). Test and demo use only.
    paper_venue_faults: str = ""

    # Idempotency and in-flight commands.
    execution_idempotency_ttl_seconds: int = Field(
        default=MIN_IDEMPOTENCY_TTL_SECONDS, ge=MIN_IDEMPOTENCY_TTL_SECONDS
    )
    #: How long a running command holds its key (and a pending order its venue slot) before
    #: another process may take over and reconcile it.
    execution_command_lease_seconds: float = Field(default=30.0, gt=0)
    execution_reconcile_interval_seconds: float = Field(default=5.0, gt=0)
    execution_cleanup_interval_seconds: float = Field(default=600.0, gt=0)

    # Orchestrator retry budget (per deployment, per process).
    execution_retry_max_attempts: int = Field(default=4, ge=1, le=20)
    execution_retry_base_seconds: float = Field(default=0.1, ge=0)
    execution_retry_max_backoff_seconds: float = Field(default=2.0, ge=0)
    execution_retry_budget_capacity: float = Field(default=10.0, ge=0)
    execution_retry_budget_refill_per_second: float = Field(default=0.2, ge=0)

    #: How long a deployment read may show risk's kill switches as last fetched (each
    #: process asks risk at most once per period and tenant; enforcement refreshes at once).
    execution_switch_cache_seconds: float = Field(default=1.0, ge=0, le=60)

    # Test hooks (see services/execution/faults.py); refused when GATE4_ENV=prod.
    fault_crash_after_commit: str = ""
    fault_crash_after_venue: str = ""

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.execution_command_lease_seconds)


@lru_cache(maxsize=1)
def get_execution_settings() -> ExecutionSettings:
    return ExecutionSettings()
