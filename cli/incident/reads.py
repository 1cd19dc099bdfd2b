"""What the triage checks read, each thing once: the Platform API (gate4_client) and the local
trace store, plus the conversation probes (the runbook's minimal repro and a few turns).

GET /readyz is read first. A read served by a service it shows down (a hung risk answers no
health check within the gateway's second) is not sent: it is reported at once as
`DEPENDENCY_DOWN`, since it could only wait out its deadline, and the SRE needs the answer
in seconds during the outage these tools are for."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from cli.errors import DEPENDENCY_DOWN
from cli.incident.platform import (
    Api,
    Fetched,
    RequestTrace,
    audit_events,
    fetch,
    request_traces,
    utcnow,
)
from gate4_client import Call
from gate4_client.models import Session
from services.runtime.canonical import digest

T = TypeVar("T")

SERVING = "SERVING"
PROBE_TOPIC = "triage-probe"
#: The runbook's minimal repro body (Runbook A, triage checklist), as the probes send it.
RUNBOOK_REPRO_BODY: dict[str, Any] = {
    "channel": "openclaw",
    "topic": PROBE_TOPIC,
    "metadata": {"notificationsOptIn": True},
}


@dataclass
class Options:
    request_ids: list[str] = field(default_factory=list)
    session_id: str | None = None
    deployment_id: str | None = None
    trace_sources: list[Path] = field(default_factory=list)
    span_wait: float = 0.0
    #: Whether the conversation checks may send probe requests (a session and turns).
    probes: bool = True
    #: A client's session payload to replay through POST /v2/conversations/sessions.
    payload: dict[str, Any] | None = None
    window: timedelta = timedelta(minutes=15)
    min_rejections: int = 3
    now: datetime = field(default_factory=utcnow)


@dataclass
class ProbeCall:
    name: str
    request_id: str
    fetched: Fetched

    def as_json(self) -> dict[str, Any]:
        return {"probe": self.name, "requestId": self.request_id, **self.fetched.as_json()}


def new_probe_id(kind: str) -> str:
    return f"req_triage_{kind.replace(' ', '-')}_{uuid.uuid4().hex[:16]}"


class Platform:
    """Everything the checks read, each read once."""

    def __init__(self, api: Api, options: Options) -> None:
        self.api = api
        self.options = options
        self._versions: dict[str, Fetched] = {}
        self._validations: dict[str, Fetched] = {}
        self._events: dict[tuple[tuple[str, str], ...], Fetched] = {}

    @cached_property
    def readyz(self) -> Fetched:
        return fetch("curl -sS $PLATFORM_API_BASE/readyz", self.api.client.readyz)

    def service_status(self, name: str) -> str:
        if not self.readyz.ok:
            return "UNKNOWN"
        return str(self.readyz.data.get("services", {}).get(name, "UNKNOWN"))

    def down(self, service: str) -> str:
        """Why `service` is not worth asking ("" when it is, or when /readyz did not say)."""
        status = self.service_status(service)
        if status in (SERVING, "UNKNOWN"):
            return ""
        return f"{service} is {status} on GET /readyz: not asked (it could only time out)"

    def fetch(self, command: str, call: Callable[[], T], service: str) -> Fetched:
        """One read through the Platform API of something `service` holds."""
        down = self.down(service)
        if down:
            return Fetched(command, False, code=DEPENDENCY_DOWN, detail=down)
        return fetch(command, call)

    @cached_property
    def traces(self) -> dict[str, RequestTrace]:
        return request_traces(
            self.options.request_ids,
            self.options.trace_sources,
            self.api.tenant_id,
            self.options.span_wait,
        )

    def events(self, **filters: str) -> Fetched:
        key = tuple(sorted(filters.items()))
        if key not in self._events:
            command = "gate4 audit events " + " ".join(
                f"--{_option(k)} {v}" for k, v in sorted(filters.items())
            )
            down = self.down("audit")
            self._events[key] = (
                Fetched(command, False, code=DEPENDENCY_DOWN, detail=down)
                if down
                else audit_events(self.api, dict(filters), command)
            )
        return self._events[key]

    def policy_versions(self, account: str | None) -> Fetched:
        key = account or ""
        if key not in self._versions:
            command = "gate4 risk policy versions" + (f" --account {account}" if account else "")
            self._versions[key] = self.fetch(
                command, lambda: self.api.client.list_policy_versions(account_id=account), "risk"
            )
        return self._versions[key]

    def validate(self, policy: dict[str, Any]) -> Fetched:
        key = digest(policy)
        if key not in self._validations:
            self._validations[key] = self.fetch(
                "gate4 risk policy validate --file POLICY",
                lambda: self.api.client.validate_policy(policy),
                "risk",
            )
        return self._validations[key]

    @cached_property
    def engaged_switches(self) -> Fetched:
        return self.fetch(
            "gate4 killswitch list --engaged-only",
            lambda: self.api.client.list_kill_switches(engaged_only=True),
            "risk",
        )

    @cached_property
    def deployment(self) -> Fetched | None:
        dep = self.options.deployment_id
        if not dep:
            return None
        return self.fetch(
            f"gate4 deployments get {dep}", lambda: self.api.client.get_deployment(dep), "execution"
        )

    @cached_property
    def session(self) -> Fetched | None:
        sid = self.options.session_id
        if not sid:
            return None
        return self.fetch(
            f"gate4 sessions get {sid}", lambda: self.api.client.get_session(sid), "conversation"
        )

    @cached_property
    def probes(self) -> dict[str, ProbeCall]:
        """The conversation probes: the runbook's repro session, a read, a turn and its
        keyed retry, a twin session fed the same message, and an unknown id (an error)."""
        client = self.api.client
        calls: dict[str, ProbeCall] = {}

        def probe(name: str, action: Callable[[str], Any]) -> Fetched:
            rid = new_probe_id(name)
            fetched = self.fetch(name, lambda: action(rid), "conversation")
            calls[name] = ProbeCall(name, rid, fetched)
            return fetched

        create: Call[Session] = Call("createSession", body=RUNBOOK_REPRO_BODY)
        session = probe("create session", lambda rid: client.send(create, request_id=rid))
        if session.ok:
            sid = str(session.data.get("sessionId", ""))
            probe("get session", lambda rid: client.get_session(sid, request_id=rid))
            key = f"triage-{uuid.uuid4().hex}"
            probe(
                "create turn",
                lambda rid: client.create_turn(sid, "help", idempotency_key=key, request_id=rid),
            )
            probe(
                "retry turn",
                lambda rid: client.create_turn(sid, "help", idempotency_key=key, request_id=rid),
            )
            twin = probe("twin session", lambda rid: client.send(create, request_id=rid))
            if twin.ok:
                tid = str(twin.data.get("sessionId", ""))
                probe("twin turn", lambda rid: client.create_turn(tid, "help", request_id=rid))
        probe(
            "unknown session",
            lambda rid: client.get_session("ses_triage_probe_unknown", request_id=rid),
        )
        return calls

    @cached_property
    def payload_replay(self) -> ProbeCall | None:
        payload = self.options.payload
        if payload is None:
            return None
        rid = new_probe_id("payload")
        call: Call[Session] = Call("createSession", body=payload)
        fetched = self.fetch(
            "POST /v2/conversations/sessions (--payload)",
            lambda: self.api.client.send(call, request_id=rid),
            "conversation",
        )
        return ProbeCall("replay --payload", rid, fetched)


def _option(name: str) -> str:
    return {
        "requestId": "request-id",
        "deploymentId": "deployment",
        "orderId": "order",
        "sessionId": "session",
        "accountId": "account",
    }.get(name, name)
