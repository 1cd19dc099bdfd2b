"""Runbook A: proactive notifications and the assistant's platform actions, end to end.

Everything goes through the gateway to the real five processes:

- A kill switch tripped by real marks (a long position marked down past the policy's
  `maxDrawdownPct`, confirmed twice) reaches an opted-in session exactly once, in its next
  turn, with kind, severity, ids, message, createdAt, the audit event it came from and the
  requestId of the mark that tripped it. An opted-out session and another tenant's session
  get nothing. Restarting the conversation process between the trip and the turn changes
  none of that; a second turn delivers nothing; the notification reads without a turn.
- The runbook's containment switch (`notificationsOptIn=false` in turn metadata) stops
  delivery at once; engaging an engaged switch is no transition and notifies nothing.
- "status of <deploymentId>" answers from real platform state; "stop <id>" then "yes"
  stops it, audited under the confirming turn's requestId; retrying that turn with its
  Idempotency-Key returns the identical body and stops nothing twice.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from tests.contracts.conftest import POLICY, audit_events, new_tenant
from tests.support.problems import assert_problem
from tests.support.stack import LiveStack, wait_for

SESSIONS = "/v2/conversations/sessions"
ACCOUNT = "acc-conv"
#: Trips the deployment's switch (only that scope, so one trip is one event) once equity is
#: more than 5% below its peak on 2 consecutive reports; positions stay (no flatten).
DRAWDOWN_POLICY: dict[str, Any] = {
    **copy.deepcopy(POLICY),
    "killSwitch": {
        "maxDrawdownPct": "5",
        "confirmations": 2,
        "flattenOnTrip": False,
        "scopes": ["deployment"],
    },
}
NOTIFICATION_FIELDS = {
    "notificationId",
    "kind",
    "severity",
    "message",
    "deploymentId",
    "accountId",
    "orderId",
    "createdAt",
    "sourceEventId",
    "requestId",
}


@dataclass
class Desk:
    """One tenant on a live platform: a trader and a risk-officer who is also an SRE."""

    tenant: str
    trader: httpx.Client
    officer: httpx.Client

    # -- conversation ------------------------------------------------------------------------

    def session(self, opt_in: bool) -> str:
        body = {
            "channel": "openclaw",
            "topic": "incident-triage",
            "metadata": {"notificationsOptIn": opt_in},
        }
        created = self.trader.post(SESSIONS, json=body)
        assert created.status_code == 201, created.text
        return str(created.json()["sessionId"])

    def turn(
        self,
        session_id: str,
        message: str,
        *,
        key: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> httpx.Response:
        body: dict[str, Any] = {"message": message}
        if metadata is not None:
            body["metadata"] = metadata
        headers = {"Idempotency-Key": key} if key else {}
        response = self.trader.post(f"{SESSIONS}/{session_id}/turns", json=body, headers=headers)
        assert response.status_code == 201, response.text
        return response

    def notifications(self, session_id: str, include_delivered: bool = False) -> list[Any]:
        params = {"includeDelivered": "true"} if include_delivered else {}
        reply = self.trader.get(f"{SESSIONS}/{session_id}/notifications", params=params)
        assert reply.status_code == 200, reply.text
        items: list[Any] = reply.json()["notifications"]
        return items

    def wait_notifications(self, session_id: str, *source_event_ids: str) -> list[Any]:
        """The session's pending notifications once those of the given events are in."""

        def probe() -> list[Any] | None:
            items = self.notifications(session_id)
            return items if set(source_event_ids) <= {i["sourceEventId"] for i in items} else None

        return wait_for(probe)

    # -- trading -----------------------------------------------------------------------------

    def mark(self, price: str) -> httpx.Response:
        fed = self.trader.post(
            "/v1/sandbox/marks", json={"marks": [{"instrument": "BTC-USD", "price": price}]}
        )
        assert fed.status_code == 200, fed.text
        return fed

    def deploy(self) -> str:
        self.mark("1000")
        created = self.trader.post(
            "/v1/deployments",
            json={
                "strategyId": "trend-1",
                "accountId": ACCOUNT,
                "instruments": ["BTC-USD"],
                "capitalAllocation": "10000",
                "mode": "paper",
            },
            headers={"Idempotency-Key": f"conv-dep-{uuid.uuid4().hex}"},
        )
        assert created.status_code == 201, created.text
        return str(created.json()["deploymentId"])

    def buy(self, deployment_id: str, quantity: str) -> None:
        order = self.trader.post(
            "/v1/orders",
            json={
                "deploymentId": deployment_id,
                "instrument": "BTC-USD",
                "side": "buy",
                "type": "market",
                "quantity": quantity,
            },
            headers={"Idempotency-Key": f"conv-ord-{uuid.uuid4().hex}"},
        )
        assert order.status_code == 201, order.text
        assert order.json()["status"] == "filled", order.text

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.trader.get(f"/v1/deployments/{deployment_id}").json()
        return found

    def switch(self, scope: str, scope_id: str) -> dict[str, Any]:
        state: dict[str, Any] = self.trader.get(f"/v1/risk/kill-switches/{scope}/{scope_id}").json()
        return state

    def engage(self, scope: str, scope_id: str, reason: str) -> httpx.Response:
        ref = f"/v1/risk/kill-switches/{scope}/{scope_id}/actions/engage"
        engaged = self.officer.post(ref, json={"reason": reason})
        assert engaged.status_code == 200, engaged.text
        return engaged

    def release(self, scope: str, scope_id: str, reason: str) -> httpx.Response:
        ref = f"/v1/risk/kill-switches/{scope}/{scope_id}/actions/release"
        released = self.officer.post(ref, json={"reason": reason})
        assert released.status_code == 200, released.text
        return released

    def event(self, type_: str, request_id: str) -> dict[str, Any]:
        """The one audit event of that type recorded under the requestId."""
        events = audit_events(self.officer, {type_}, requestId=request_id)
        (found,) = [e for e in events if e["type"] == type_]
        return found


@contextmanager
def open_desk(live: LiveStack) -> Iterator[Desk]:
    """A fresh tenant with the drawdown policy active."""
    tenant = new_tenant("conv")
    with (
        live.client(live.headers(tenant, "tina", ["trader", "viewer"])) as trader,
        live.client(live.headers(tenant, "olga", ["risk-officer", "sre"])) as officer,
    ):
        put = officer.put("/v1/risk/policy", json={"policy": DRAWDOWN_POLICY, "reason": "drill"})
        assert put.status_code == 200, put.text
        yield Desk(tenant, trader, officer)


def test_a_drawdown_trip_reaches_opted_in_sessions_exactly_once_across_a_restart(
    private_stack: LiveStack,
) -> None:
    with open_desk(private_stack) as desk, open_desk(private_stack) as elsewhere:
        opted_in = desk.session(True)
        opted_out = desk.session(False)
        other_tenant = elsewhere.session(True)
        deployment_id = desk.deploy()
        desk.buy(deployment_id, "5")  # long 5 at 1000 on 10000 of capital

        # A mark of 800 is equity 9000, 10% below the peak: the first report only counts.
        desk.mark("800")
        assert desk.switch("deployment", deployment_id)["engaged"] is False
        trip_request_id = desk.mark("800").headers["x-request-id"]
        switch = desk.switch("deployment", deployment_id)
        assert (switch["engaged"], switch["trigger"]) == (True, "drawdown")
        tripped = desk.event("killswitch.tripped", trip_request_id)
        assert tripped["outcome"] == "KILL_SWITCH_TRIPPED"

        # Readable without a turn, before any turn delivers it.
        (pending,) = desk.wait_notifications(opted_in, tripped["eventId"])
        assert set(pending) == NOTIFICATION_FIELDS
        assert pending["notificationId"].startswith("ntf_")
        assert (pending["kind"], pending["severity"]) == ("killswitch.tripped", "critical")
        assert pending["deploymentId"] == deployment_id
        assert pending["sourceEventId"] == tripped["eventId"]
        assert pending["requestId"] == trip_request_id
        assert pending["message"] == (
            f"Kill switch tripped for deployment {deployment_id}: {switch['reason']}"
        )
        assert "maxDrawdownPct 5" in pending["message"]
        assert datetime.fromisoformat(pending["createdAt"]).utcoffset() is not None
        session = desk.trader.get(f"{SESSIONS}/{opted_in}").json()
        assert session["pendingNotificationCount"] == 1

        # The conversation process restarts between the trip and the turn.
        private_stack.stack.restart("conversation")
        # The feed handles one audit stream in order: once an event recorded after the
        # restart is in, the feed has resumed past the trip (and would have repeated it).
        engaged = elsewhere.engage("tenant", elsewhere.tenant, "drill elsewhere")
        sentinel = elsewhere.event("killswitch.engaged", engaged.headers["x-request-id"])
        (theirs,) = elsewhere.wait_notifications(other_tenant, sentinel["eventId"])
        assert theirs["kind"] == "killswitch.engaged"  # and not this tenant's trip

        assert desk.notifications(opted_in) == [pending]
        turn = desk.turn(opted_in, "kill switch").json()
        assert turn["notifications"] == [pending]
        assert f"deployment {deployment_id}: drawdown" in turn["reply"]["text"]
        assert desk.turn(opted_in, "help").json()["notifications"] == []
        assert desk.notifications(opted_in) == []
        assert desk.notifications(opted_in, include_delivered=True) == [pending]
        assert desk.trader.get(f"{SESSIONS}/{opted_in}").json()["pendingNotificationCount"] == 0

        # Opted out: never queued, never delivered.
        assert desk.notifications(opted_out, include_delivered=True) == []
        assert desk.turn(opted_out, "kill switch").json()["notifications"] == []


def test_the_containment_switch_stops_delivery_at_once(live_stack: LiveStack) -> None:
    with open_desk(live_stack) as desk:
        contained = desk.session(True)
        control = desk.session(True)
        engaged = desk.engage("tenant", desk.tenant, "incident drill")
        engaged_event = desk.event("killswitch.engaged", engaged.headers["x-request-id"])
        desk.wait_notifications(contained, engaged_event["eventId"])
        desk.wait_notifications(control, engaged_event["eventId"])

        # Runbook A: force notificationsOptIn=false. That very turn delivers nothing.
        turn = desk.turn(contained, "status", metadata={"notificationsOptIn": False}).json()
        assert turn["notifications"] == []
        assert turn["contextMemory"]["preferences"]["notificationsOptIn"] is False
        session = desk.trader.get(f"{SESSIONS}/{contained}").json()
        assert session["metadata"]["notificationsOptIn"] is False
        assert session["pendingNotificationCount"] == 0
        assert desk.notifications(contained) == []

        released = desk.release("tenant", desk.tenant, "drill over")
        released_event = desk.event("killswitch.released", released.headers["x-request-id"])
        desk.wait_notifications(control, released_event["eventId"])  # the feed has passed it
        assert desk.notifications(contained) == []
        assert desk.turn(contained, "help").json()["notifications"] == []

        # The session that kept its opt-in got both transitions.
        delivered = desk.turn(control, "help").json()["notifications"]
        assert [(n["kind"], n["sourceEventId"]) for n in delivered] == [
            ("killswitch.engaged", engaged_event["eventId"]),
            ("killswitch.released", released_event["eventId"]),
        ]


def test_engaging_an_engaged_switch_notifies_nothing(live_stack: LiveStack) -> None:
    with open_desk(live_stack) as desk:
        session_id = desk.session(True)
        first = desk.engage("account", ACCOUNT, "incident 42")
        again = desk.engage("account", ACCOUNT, "incident 42, again")
        assert again.json()["engagedAt"] == first.json()["engagedAt"]
        assert again.json()["reason"] == "incident 42"
        repeat = desk.event("killswitch.engaged", again.headers["x-request-id"])
        assert repeat["outcome"] == "ALREADY_ENGAGED"
        released = desk.release("account", ACCOUNT, "reviewed")
        released_event = desk.event("killswitch.released", released.headers["x-request-id"])

        pending = desk.wait_notifications(session_id, released_event["eventId"])
        assert [(n["kind"], n["requestId"]) for n in pending] == [
            ("killswitch.engaged", first.headers["x-request-id"]),
            ("killswitch.released", released.headers["x-request-id"]),
        ]
        assert f"account {ACCOUNT}: incident 42" in pending[0]["message"]


def test_status_and_a_confirmed_stop_act_on_real_platform_state(live_stack: LiveStack) -> None:
    with open_desk(live_stack) as desk:
        deployment_id = desk.deploy()
        desk.buy(deployment_id, "2")
        session_id = desk.session(False)

        status = desk.turn(session_id, f"status of {deployment_id}").json()
        platform = desk.deployment(deployment_id)
        text = status["reply"]["text"]
        assert platform["state"] == "running"
        assert text.startswith(f"{deployment_id} (trend-1 on {ACCOUNT}): running;")
        (position,) = platform["positions"]
        assert position["quantity"] == "2"
        assert f"Positions: BTC-USD 2 @ {position['averagePrice']}." in text
        assert f"Policy {platform['policyVersion']}." in text
        assert status["contextMemory"]["activeDeploymentId"] == deployment_id

        proposed = desk.turn(session_id, f"stop {deployment_id}").json()
        (action,) = proposed["reply"]["actions"]
        assert (action["kind"], action["status"]) == ("stop_deployment", "proposed")
        assert proposed["contextMemory"]["pendingConfirmation"] == {
            "action": "stop_deployment",
            "deploymentId": deployment_id,
            "flatten": False,
        }
        assert desk.deployment(deployment_id)["state"] == "running"  # nothing happened yet

        key = f"confirm-{uuid.uuid4().hex}"
        confirmed = desk.turn(session_id, "yes", key=key)
        body = confirmed.json()
        request_id = confirmed.headers["x-request-id"]
        assert body["requestId"] == request_id
        (action,) = body["reply"]["actions"]
        assert (action["status"], action["outcome"]) == ("executed", "STOPPED")
        assert action["requestId"] == request_id
        stopped = desk.deployment(deployment_id)
        assert stopped["state"] == "stopped"
        assert stopped["stateReason"] == "stopped from conversation after user confirmation"

        # The stop is in the audit trail under the confirming turn's requestId.
        wanted = {"conversation.turn", "risk.decision", "deployment.stopping", "deployment.stopped"}
        events = audit_events(desk.officer, wanted, requestId=request_id)
        assert {e["requestId"] for e in events} == {request_id}
        by_type = {e["type"]: e for e in events}
        assert by_type["deployment.stopped"]["deploymentId"] == deployment_id
        assert by_type["deployment.stopped"]["outcome"] == "STOPPED"
        assert by_type["risk.decision"]["data"]["command"] == "deployment.stop"
        assert by_type["conversation.turn"]["sessionId"] == session_id

        # A retry with the same key: the identical body, and nothing runs again.
        retry = desk.turn(session_id, "yes", key=key)
        assert retry.content == confirmed.content
        assert retry.headers["idempotent-replayed"] == "true"
        assert desk.trader.get(f"{SESSIONS}/{session_id}").json()["turnCount"] == 3
        trail = audit_events(desk.officer, {"deployment.stopped"}, deploymentId=deployment_id)
        assert [e["type"] for e in trail].count("deployment.stopped") == 1
        assert [e["type"] for e in trail].count("deployment.stopping") == 1
        reused = desk.trader.post(
            f"{SESSIONS}/{session_id}/turns",
            json={"message": "no"},
            headers={"Idempotency-Key": key},
        )
        assert_problem(reused, 422, "IDEMPOTENCY_KEY_REUSED")
