"""One Settings object: execution's variables keep their names, and every tunable is bounded.
(That the README's table lists every field with its default: tests/cli/test_docs_and_deploy.py.)"""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from services.runtime.config import MIN_IDEMPOTENCY_TTL_SECONDS, Settings


def test_execution_variables_keep_their_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deployments and docs set GATE4_EXECUTION_* and GATE4_PAPER_VENUE_*: still read."""
    monkeypatch.setenv("GATE4_EXECUTION_COMMAND_LEASE_SECONDS", "1.5")
    monkeypatch.setenv("GATE4_EXECUTION_IDEMPOTENCY_TTL_SECONDS", "172800")
    monkeypatch.setenv("GATE4_PAPER_VENUE_SLIPPAGE_BPS", "2.5")
    monkeypatch.setenv("GATE4_FAULT_CRASH_AFTER_COMMIT", "SubmitOrder")
    settings = Settings()
    assert settings.command_lease == timedelta(seconds=1.5)
    assert settings.execution_idempotency_ttl_seconds == 172800
    assert str(settings.paper_venue_slippage_bps) == "2.5"
    assert settings.fault_crash_after_commit == "SubmitOrder"


def test_keys_are_kept_at_least_the_24_hours_the_contract_promises() -> None:
    assert Settings().execution_idempotency_ttl_seconds == MIN_IDEMPOTENCY_TTL_SECONDS
    with pytest.raises(ValidationError, match="execution_idempotency_ttl_seconds"):
        Settings(execution_idempotency_ttl_seconds=MIN_IDEMPOTENCY_TTL_SECONDS - 1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("execution_command_lease_seconds", 0),
        ("execution_switch_read_timeout_seconds", 0),
        ("execution_stop_poll_seconds", 0),
        ("execution_stop_poll_seconds", 5),
        ("api_key_negative_cache_seconds", -1),
        ("api_key_negative_cache_seconds", 3600),
        ("execution_retry_max_attempts", 0),
        ("paper_venue_slippage_bps", 5000),
    ],
)
def test_tunables_out_of_bounds_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings.model_validate({field: value})


def test_risk_releases_an_unrecorded_approval_only_after_the_command_lease() -> None:
    """An approval still within a command's lease may yet be recorded by execution."""
    with pytest.raises(ValidationError, match="GATE4_RISK_RESERVATION_RELEASE_SECONDS"):
        Settings(execution_command_lease_seconds=60, risk_reservation_release_seconds=60)
    Settings(execution_command_lease_seconds=59, risk_reservation_release_seconds=60)
