"""killswitch.py on both backends: the latch per explicit scope, its generations and audit
events, the reads execution's checks rely on, and the claim and record of enforcement."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from gate4.risk.v1 import risk_pb2
from services.risk import books, killswitch
from services.runtime import errors, outcomes
from tests.risk.conftest import T0, RiskStore

LEASE = timedelta(seconds=30)


def engage(
    store: RiskStore,
    scope: str = "deployment",
    scope_id: str = "dep-1",
    *,
    trigger: str = killswitch.MANUAL,
    reason: str = "halt",
    tenant: str = "t1",
) -> tuple[risk_pb2.KillSwitch, bool]:
    evidence = risk_pb2.BreachEvidence(policy_version="risk-policy.v1@1")
    return store.run(  # type: ignore[no-any-return]
        lambda c: killswitch.engage(
            c,
            store.outbox,
            tenant,
            scope,
            scope_id,
            trigger=trigger,
            reason=reason,
            by="olga",
            evidence=evidence,
            flatten=True,
            at=T0,
        ),
        tenant,
    )


def release(store: RiskStore, scope: str = "deployment", scope_id: str = "dep-1") -> Any:
    return store.run(
        lambda c: killswitch.release(
            c, store.outbox, "t1", scope, scope_id, by="rita", reason="all clear", at=T0
        )
    )


def job(store: RiskStore, scope_id: str = "dep-1") -> killswitch.Enforcement:
    found = store.run(lambda c: killswitch.enforcement_for(c, "t1", "deployment", scope_id))
    assert found is not None
    return found  # type: ignore[no-any-return]


def get(store: RiskStore, scope: str = "deployment", scope_id: str = "dep-1") -> Any:
    return store.run(lambda c: killswitch.get(c, "t1", scope, scope_id))


def outcomes_of(store: RiskStore, *types: str) -> list[str]:
    return [e.outcome for e in store.events(*types)]


def test_a_switch_latches_until_released_and_each_engagement_is_a_generation(
    store: RiskStore,
) -> None:
    """Never engaged reads disengaged; engaging again changes nothing (its trigger stays the
    first); a release opens it; the next engagement is generation 2."""
    assert not get(store).engaged
    switch, changed = engage(store, reason="first")
    assert changed and switch.engaged and switch.trigger == killswitch.MANUAL
    assert (switch.enforcement, switch.engaged_by, switch.flatten) == ("pending", "olga", True)
    assert job(store).generation == 1

    again, changed = engage(store, trigger=killswitch.DRAWDOWN, reason="second")
    assert not changed and (again.trigger, again.reason) == (killswitch.MANUAL, "first")
    engage(store, reason="third")
    assert job(store).generation == 1
    # A manual repeat is audited as ALREADY_ENGAGED; an automatic one is not audited.
    assert outcomes_of(store, "killswitch.engaged") == [
        outcomes.ENGAGED,
        outcomes.ALREADY_ENGAGED,
    ]
    assert outcomes_of(store, "killswitch.tripped") == []

    released = release(store)
    assert not released.engaged and released.enforcement == ""
    assert (released.released_by, released.release_reason) == ("rita", "all clear")
    assert store.run(lambda c: killswitch.enforcement_for(c, "t1", "deployment", "dep-1")) is None
    assert outcomes_of(store, "killswitch.released") == [outcomes.RELEASED]
    with pytest.raises(errors.StateConflict):
        release(store)

    tripped, changed = engage(store, trigger=killswitch.DRAWDOWN, reason="drawdown")
    assert changed and tripped.trigger == killswitch.DRAWDOWN
    assert job(store).generation == 2
    assert outcomes_of(store, "killswitch.tripped") == [outcomes.KILL_SWITCH_TRIPPED]


def test_releasing_a_switch_never_engaged_is_a_conflict(store: RiskStore) -> None:
    """Only an engaged switch can be released: a scope never engaged is a 409."""
    with pytest.raises(errors.StateConflict):
        release(store, "account", "acc-1")


def test_list_all_is_per_tenant_ordered_and_may_keep_only_engaged(store: RiskStore) -> None:
    """The tenant's switches by scope and id, released ones only when not engaged_only;
    never another tenant's."""
    engage(store, "tenant", "t1")
    engage(store, "deployment", "dep-2")
    engage(store, "account", "acc-1")
    release(store, "deployment", "dep-2")
    engage(store, "account", "acc-9", tenant="t2")

    def listed(engaged_only: bool) -> list[tuple[str, str, bool]]:
        found = store.run(lambda c: killswitch.list_all(c, "t1", engaged_only))
        return [(s.scope, s.scope_id, s.engaged) for s in found]

    assert listed(False) == [
        ("account", "acc-1", True),
        ("deployment", "dep-2", False),
        ("tenant", "t1", True),
    ]
    assert listed(True) == [("account", "acc-1", True), ("tenant", "t1", True)]


def test_engaged_for_returns_the_widest_engaged_scope(store: RiskStore) -> None:
    """A command falls in its tenant, account and deployment: the widest holding one wins."""

    def engaged_for(account: str = "acc-1", deployment: str = "dep-1") -> str | None:
        found = store.run(lambda c: books.load(c, "t1", account, T0).engaged_for(deployment))
        return f"{found.scope}:{found.scope_id}" if found is not None else None

    assert engaged_for() is None
    engage(store, "deployment", "dep-1")
    assert engaged_for() == "deployment:dep-1"
    assert engaged_for(deployment="dep-2") is None
    engage(store, "account", "acc-1")
    assert engaged_for() == "account:acc-1"
    assert engaged_for(account="acc-2") == "deployment:dep-1"
    engage(store, "tenant", "t1")
    assert engaged_for(account="acc-2", deployment="dep-2") == "tenant:t1"
    engage(store, "tenant", "t2", tenant="t2")
    assert store.run(lambda c: books.load(c, "t3", "acc-1", T0).engaged_for("dep-1")) is None


def test_states_of_answers_in_the_order_asked_and_skips_missing_ids(store: RiskStore) -> None:
    """One state per (scope, id) asked, in that order; a scope without id is skipped."""
    engage(store, "account", "acc-1")
    refs = [("deployment", "dep-1"), ("account", ""), ("account", "acc-1"), ("tenant", "t1")]
    states = store.run(lambda c: killswitch.states_of(c, "t1", refs))
    assert [(s.scope, s.scope_id, s.engaged) for s in states] == [
        ("deployment", "dep-1", False),
        ("account", "acc-1", True),
        ("tenant", "t1", False),
    ]
    assert store.run(lambda c: killswitch.states_of(c, "t1", [("account", "")])) == []


@pytest.mark.parametrize(
    ("scope", "scope_id", "error"),
    [
        ("planet", "p1", errors.ValidationFailed),
        ("account", "", errors.ValidationFailed),
        ("account", "bad id!", errors.ValidationFailed),
        ("tenant", "t2", errors.NotFound),  # another tenant's switch does not exist
    ],
)
def test_check_ref_refuses_what_names_no_switch_of_the_tenant(
    scope: str, scope_id: str, error: type[errors.Gate4Error]
) -> None:
    """Refused: an unknown scope, a missing or malformed id, another tenant's switch."""
    with pytest.raises(error):
        killswitch.check_ref("t1", scope, scope_id)
    # The tenant's own scopes of that kind pass.
    own = {"tenant": "t1", "account": "acc-1", "deployment": "dep_1"}
    if scope in own:
        killswitch.check_ref("t1", scope, own[scope])


def claim(store: RiskStore, work: killswitch.Enforcement, owner: str, at: Any = T0) -> bool:
    return store.run(  # type: ignore[no-any-return]
        lambda c: killswitch.claim(c, work, owner=owner, now=at, lease=LEASE)
    )


def record(store: RiskStore, work: killswitch.Enforcement, status: str, owner: str) -> bool:
    return store.run(  # type: ignore[no-any-return]
        lambda c: killswitch.record_enforcement(
            c,
            store.outbox,
            work,
            status=status,
            detail=f"{status} by {owner}",
            data={"cancelledOrderIds": ["ord_a"]},
            owner=owner,
            now=T0,
        )
    )


def test_one_claim_holds_an_engagement_until_its_lease_lapses(store: RiskStore) -> None:
    """Of two enforcers only one claims; a lapsed claim may be taken over; a claim for a
    generation that is over is refused."""
    engage(store)
    first = job(store)
    assert claim(store, first, "risk-a")
    assert not claim(store, first, "risk-b")
    assert not claim(store, first, "risk-b", T0 + LEASE - timedelta(seconds=1))
    assert claim(store, first, "risk-b", T0 + LEASE + timedelta(seconds=1))

    release(store)
    engage(store)
    assert not claim(store, first, "risk-a", T0 + timedelta(hours=1))  # generation 1 is over
    assert claim(store, job(store), "risk-a", T0 + timedelta(hours=1))


def test_an_enforcement_is_recorded_and_audited_once(store: RiskStore) -> None:
    """ENFORCED is stored with its time and frees the claim; a repeat is not audited
    again, nor claimable; an enforced engagement stays enforced."""
    engage(store)
    work = job(store)
    assert claim(store, work, "risk-a")
    assert record(store, work, killswitch.ENFORCED, "risk-a")
    switch = get(store)
    assert (switch.enforcement, switch.enforcement_detail) == ("enforced", "enforced by risk-a")
    assert switch.HasField("enforced_at")
    assert record(store, work, killswitch.ENFORCED, "risk-b")
    assert record(store, work, killswitch.FAILED, "risk-b")
    assert get(store).enforcement == "enforced"
    assert not claim(store, work, "risk-b", T0 + timedelta(hours=1))
    (event,) = store.events("killswitch.enforcement")
    assert event.outcome == outcomes.ENFORCED
    assert event.data["generation"] == 1 and event.data["engagementOver"] is False


def test_only_the_first_failure_is_audited_and_the_claim_is_given_up(store: RiskStore) -> None:
    """A failure frees the claim at once and is audited once; the failed engagement is
    listed as unenforced."""
    engage(store)
    work = job(store)
    assert claim(store, work, "risk-a")
    record(store, work, killswitch.FAILED, "risk-a")
    assert claim(store, work, "risk-b")  # the failed engagement is claimable again at once
    record(store, work, killswitch.FAILED, "risk-b")
    assert get(store).enforcement_detail == "failed by risk-b"
    assert outcomes_of(store, "killswitch.enforcement") == [outcomes.ENFORCEMENT_FAILED]
    later = T0 + timedelta(minutes=5)
    assert store.run(lambda c: killswitch.unenforced(c, T0, later)) == [
        killswitch.Enforcement(
            "t1", "deployment", "dep-1", 1, True, "halt", work.request_id, killswitch.FAILED
        )
    ]


def test_an_enforcement_of_an_engagement_over_is_audited_but_changes_nothing(
    store: RiskStore,
) -> None:
    """Execution acted on generation 1 after it ended: audited as over; generation 2
    stays pending."""
    engage(store)
    work = job(store)
    release(store)
    engage(store, reason="again")
    assert not record(store, work, killswitch.ENFORCED, "risk-a")
    assert get(store).enforcement == "pending"  # generation 2 is still to enforce
    (event,) = store.events("killswitch.enforcement")
    assert event.data["engagementOver"] is True and event.data["generation"] == 1


def test_unenforced_lists_pending_engagements_older_than_the_cutoff_and_unclaimed(
    store: RiskStore,
) -> None:
    """Pending engagements older than the cutoff are listed unless a live claim holds them."""
    engage(store)
    work = job(store)
    assert store.run(lambda c: killswitch.unenforced(c, T0, T0)) == []  # not older than T0
    after = T0 + timedelta(seconds=1)
    assert [j.scope_id for j in store.run(lambda c: killswitch.unenforced(c, after, after))] == [
        "dep-1"
    ]
    assert claim(store, work, "risk-a", after)
    assert store.run(lambda c: killswitch.unenforced(c, after, after)) == []
    lapsed = after + LEASE + timedelta(seconds=1)
    assert len(store.run(lambda c: killswitch.unenforced(c, after, lapsed))) == 1
