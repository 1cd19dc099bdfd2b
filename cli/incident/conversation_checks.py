"""Runbook A's decisions (conversation and OpenClaw): B routes healthy, D contract payload
and headers valid, F memory and notification semantics valid."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from cli.incident.platform import parse_time
from cli.incident.reads import SERVING, Platform
from cli.incident.trees import FAIL, INFO, PASS, UNKNOWN, Answer, Evidence
from services.runtime.canonical import digest

#: Codes of the gateway that mean the caller broke the contract (payload or headers).
CONTRACT_CODES = frozenset(
    {
        "VALIDATION_FAILED",
        "IDEMPOTENCY_KEY_REQUIRED",
        "IDEMPOTENCY_KEY_REUSED",
        "UNAUTHENTICATED",
        "FORBIDDEN",
        "TENANT_MISMATCH",
        "USER_MISMATCH",
    }
)
#: Audit events the conversation service turns into notifications (type -> outcomes, None:
#: every outcome), as docs/portal/platform/gate4-conversation-contract.md lists them.
NOTIFYING_EVENTS: dict[str, frozenset[str] | None] = {
    "killswitch.tripped": frozenset({"KILL_SWITCH_TRIPPED"}),
    "killswitch.engaged": frozenset({"ENGAGED"}),
    "killswitch.released": frozenset({"RELEASED"}),
    "deployment.stopped": None,
    "deployment.failed": None,
    "deployment.degraded": None,
    "deployment.recovered": None,
}
#: How long the notification feed may take before a missing notification counts.
NOTIFICATION_GRACE = timedelta(seconds=5)
SESSION_KEYS = ("sessionId", "channel", "topic", "contextMemory", "contextMemorySnapshot")
TURN_KEYS = (
    "turnId",
    "sessionId",
    "sequence",
    "reply",
    "contextMemory",
    "contextMemorySnapshot",
    "notifications",
    "requestId",
)
NOTIFICATION_KEYS = ("notificationId", "kind", "severity", "message", "createdAt")


def routes_healthy(p: Platform) -> Answer:
    """B: the gateway answers, conversation is SERVING, and the probes are not refused
    with 5xx (a 4xx is the contract's concern, decided next)."""
    evidence: list[Evidence] = []
    ready = p.readyz
    if not ready.ok and ready.status is None:
        evidence.append(Evidence("readyz", FAIL, f"GET /readyz: {ready.result()}"))
        return Answer(False, evidence)
    services = ready.data.get("services", {}) if ready.ok else {}
    conversation = services.get("conversation", "UNKNOWN")
    others = ", ".join(f"{k} {v}" for k, v in sorted(services.items()) if k != "conversation")
    evidence.append(
        Evidence(
            "readyz",
            PASS if conversation == SERVING else FAIL,
            f"GET /readyz: {ready.data.get('status') if ready.ok else ready.result()}; "
            f"conversation {conversation}" + (f"; {others}" if others else ""),
            ready.data if ready.ok else None,
        )
    )
    healthy = conversation == SERVING
    if p.options.probes:
        for call in p.probes.values():
            if call.fetched.unavailable:
                healthy = False
                evidence.append(
                    Evidence(
                        f"probe: {call.name}",
                        FAIL,
                        f"{call.name} ({call.request_id}): {call.fetched.result()}",
                    )
                )
        if healthy:
            names = ", ".join(p.probes)
            evidence.append(Evidence("probes", PASS, f"every probe answered without 5xx: {names}"))
    for request_id, trace in p.traces.items():
        span = trace.gateway_span()
        if span is not None and (span.http_status or 0) >= 500:
            evidence.append(
                Evidence(
                    f"request {request_id}",
                    INFO,
                    f"{span.name} answered {span.http_status} {span.error_code} at the time",
                )
            )
    return Answer(healthy, evidence)


def _missing(document: Any, keys: tuple[str, ...]) -> list[str]:
    if not isinstance(document, dict):
        return list(keys)
    return [k for k in keys if k not in document]


def _snapshot_problems(document: dict[str, Any]) -> list[str]:
    snapshot = document.get("contextMemorySnapshot")
    if not isinstance(snapshot, dict):
        return ["contextMemorySnapshot missing"]
    problems = [
        f"contextMemorySnapshot.{k} missing"
        for k in _missing(snapshot, ("version", "digest", "content"))
    ]
    return problems


def payload_valid(p: Platform) -> Answer:
    """D: the runbook's minimal repro and its error shape follow the contract; the client's
    payload (--payload) and the incident's requests were not refused for the contract."""
    evidence: list[Evidence] = []
    if p.options.probes:
        evidence += _probe_contract(p)
    replay = p.payload_replay
    if replay is not None:
        fetched = replay.fetched
        if fetched.ok:
            evidence.append(
                Evidence(
                    "payload",
                    PASS,
                    "the client's payload was accepted (201): it matches the contract",
                    {"sessionId": fetched.data.get("sessionId")},
                )
            )
        elif fetched.status is not None and fetched.status < 500:
            evidence.append(
                Evidence(
                    "payload",
                    FAIL,
                    f"the client's payload is refused: {fetched.result()} "
                    f"(requestId {replay.request_id})",
                )
            )
    for request_id, trace in p.traces.items():
        span = trace.gateway_span()
        if span is None:
            evidence.append(Evidence(f"request {request_id}", INFO, "no spans found"))
            continue
        status = span.http_status or 0
        code = span.error_code
        line = f"{span.name} answered {status}" + (f" {code}" if code else "")
        if code in CONTRACT_CODES:
            evidence.append(Evidence(f"request {request_id}", FAIL, f"{line}: contract error"))
        else:
            evidence.append(Evidence(f"request {request_id}", INFO, line))
    if p.session is not None:
        session = p.session
        if session.ok:
            channel = session.data.get("channel")
            lane = (session.data.get("metadata") or {}).get("clientLane")
            if lane and channel != "openclaw":
                evidence.append(
                    Evidence(
                        "session channel",
                        FAIL,
                        f"session {p.options.session_id} is in OpenClaw lane {lane} but has "
                        f"channel={channel}: the OpenClaw lane uses channel=openclaw",
                    )
                )
            else:
                evidence.append(
                    Evidence(
                        "session channel",
                        PASS,
                        f"session channel={channel}" + (f", clientLane={lane}" if lane else ""),
                    )
                )
        elif not session.unavailable:
            evidence.append(Evidence("session", FAIL, f"gate4 sessions get: {session.result()}"))
    if any(e.result == FAIL for e in evidence):
        return Answer(False, evidence)
    return Answer(True, evidence)


def _probe_contract(p: Platform) -> list[Evidence]:
    evidence: list[Evidence] = []
    probes = p.probes
    create = probes["create session"]
    if create.fetched.status == 403 and create.fetched.code == "FORBIDDEN":
        evidence.append(
            Evidence(
                "repro: create session",
                INFO,
                "the probes need the trader role (403 FORBIDDEN): contract probes not run; "
                "use trader credentials, or --no-probes",
            )
        )
    elif not create.fetched.ok:
        if not create.fetched.unavailable:
            evidence.append(
                Evidence(
                    "repro: create session",
                    FAIL,
                    f"the runbook's minimal repro was refused: {create.fetched.result()} "
                    f"(requestId {create.request_id}): check the Authorization, X-API-Key, "
                    "X-Tenant-Id and X-User-Id headers and the payload",
                )
            )
    else:
        session = create.fetched.data
        problems = [f"{k} missing" for k in _missing(session, SESSION_KEYS)]
        problems += _snapshot_problems(session)
        if session.get("channel") != "openclaw":
            problems.append(f"channel is {session.get('channel')!r}, not 'openclaw'")
        if (session.get("metadata") or {}).get("notificationsOptIn") is not True:
            problems.append("metadata.notificationsOptIn did not come back true")
        evidence.append(
            Evidence(
                "repro: create session",
                FAIL if problems else PASS,
                "; ".join(problems)
                or f"201 with the contract's fields (requestId {create.request_id})",
            )
        )
    turn = probes.get("create turn")
    if turn is not None and turn.fetched.ok:
        document = turn.fetched.data
        problems = [f"{k} missing" for k in _missing(document, TURN_KEYS)]
        problems += _snapshot_problems(document)
        if document.get("requestId") != turn.request_id:
            problems.append(
                f"requestId {document.get('requestId')!r} is not the one sent ({turn.request_id})"
            )
        evidence.append(
            Evidence(
                "repro: create turn",
                FAIL if problems else PASS,
                "; ".join(problems) or "201 with reply, memory, snapshot, notifications",
            )
        )
    elif turn is not None and not turn.fetched.unavailable:
        evidence.append(Evidence("repro: create turn", FAIL, turn.fetched.result()))
    unknown = probes["unknown session"]
    fetched = unknown.fetched
    if fetched.status == 404 and fetched.code == "NOT_FOUND":
        if fetched.request_id == unknown.request_id:
            evidence.append(
                Evidence(
                    "canonical error",
                    PASS,
                    "an unknown session is 404 NOT_FOUND as problem+json with the requestId sent",
                )
            )
        else:
            evidence.append(
                Evidence("canonical error", FAIL, "the 404 problem lacks the requestId sent")
            )
    elif not fetched.unavailable:
        evidence.append(
            Evidence(
                "canonical error",
                FAIL,
                f"an unknown session answered {fetched.result()}, not 404 NOT_FOUND",
            )
        )
    return evidence


def memory_notifications_valid(p: Platform) -> Answer:
    """F: notifications can flow (audit SERVING: the feed follows its stream), memory
    snapshots are deterministic across sessions and retries, and an opted-in session
    (--session) got a notification for every notifying event since it opened."""
    evidence: list[Evidence] = []
    audit = p.service_status("audit")
    evidence.append(
        Evidence(
            "notification feed",
            PASS if audit == SERVING else FAIL,
            f"audit is {audit}: "
            + (
                "the notification feed can follow the audit stream"
                if audit == SERVING
                else "the notification feed cannot subscribe to the audit stream"
            ),
        )
    )
    if p.options.probes:
        evidence += _memory_probes(p)
    if p.session is not None and p.session.ok:
        evidence += _notification_coverage(p, p.session.data)
    unknowns = [e for e in evidence if e.result == UNKNOWN]
    if any(e.result == FAIL for e in evidence):
        return Answer(False, evidence)
    if unknowns:
        return Answer(None, evidence)
    return Answer(True, evidence)


def _memory_probes(p: Platform) -> list[Evidence]:
    probes = p.probes
    turn, retry, twin = probes.get("create turn"), probes.get("retry turn"), probes.get("twin turn")
    if turn is None or not turn.fetched.ok:
        return [Evidence("memory", INFO, "no probe turn: memory semantics not exercised")]
    document = turn.fetched.data
    problems = []
    snapshot = document.get("contextMemorySnapshot") or {}
    content = snapshot.get("content")
    if content != document.get("contextMemory"):
        problems.append("contextMemorySnapshot.content differs from contextMemory")
    if content is not None and snapshot.get("digest") != digest(content):
        problems.append("contextMemorySnapshot.digest is not the SHA-256 of its content")
    if snapshot.get("version") != 1:
        problems.append(f"snapshot version {snapshot.get('version')} after one turn, not 1")
    notifications = document.get("notifications")
    if not isinstance(notifications, list):
        problems.append("notifications is not a list")
    else:
        for item in notifications:
            missing = _missing(item, NOTIFICATION_KEYS)
            if missing:
                problems.append(f"a notification lacks {', '.join(missing)}")
    if retry is not None and retry.fetched.ok:
        again = retry.fetched.data
        if (again.get("turnId"), again.get("contextMemorySnapshot")) != (
            document.get("turnId"),
            snapshot,
        ):
            problems.append("a retry with the same Idempotency-Key changed the turn or memory")
    if twin is not None and twin.fetched.ok:
        other = twin.fetched.data.get("contextMemorySnapshot") or {}
        if other.get("digest") != snapshot.get("digest"):
            problems.append("two sessions fed the same message have different memory digests")
    return [
        Evidence(
            "memory",
            FAIL if problems else PASS,
            "; ".join(problems)
            or "snapshot content = contextMemory, digest = SHA-256 of canonical content, "
            "identical across a keyed retry and across two sessions",
            {"digest": snapshot.get("digest"), "version": snapshot.get("version")},
        )
    ]


def _notification_coverage(p: Platform, session: dict[str, Any]) -> list[Evidence]:
    sid = str(session.get("sessionId"))
    opted = (session.get("metadata") or {}).get("notificationsOptIn") is True and (
        (session.get("contextMemory") or {}).get("preferences", {}).get("notificationsOptIn")
        is not False
    )
    if not opted:
        return [Evidence("notifications", INFO, f"session {sid} is not opted in")]
    created = str(session.get("createdAt", ""))
    expected: list[dict[str, Any]] = []
    for event_type, outcomes in NOTIFYING_EVENTS.items():
        fetched = p.events(type=event_type, since=created)
        if not fetched.ok:
            return [Evidence("notifications", UNKNOWN, f"audit trail: {fetched.result()}")]
        expected += [e for e in fetched.data if outcomes is None or e.get("outcome") in outcomes]
    listing = p.fetch(
        f"gate4 sessions notifications {sid} --include-delivered",
        lambda: p.api.client.list_notifications(sid, include_delivered=True),
        "conversation",
    )
    if not listing.ok:
        return [Evidence("notifications", UNKNOWN, f"notifications route: {listing.result()}")]
    delivered = {n.get("sourceEventId") for n in listing.data.get("notifications", [])}
    cutoff = p.options.now - NOTIFICATION_GRACE
    pending = [e for e in expected if e["eventId"] not in delivered]
    # The feed may still be on its way for the newest events: only older ones count missing.
    missing = [
        e["eventId"] for e in pending if (parse_time(e.get("occurredAt", "")) or cutoff) < cutoff
    ]
    covered = len(expected) - len(pending)
    if missing:
        return [
            Evidence(
                "notifications",
                FAIL,
                f"{len(missing)} of {len(expected)} notifying audit events since session {sid} "
                f"opened have no notification after {NOTIFICATION_GRACE.seconds} s",
                {"missingEventIds": missing[:20]},
            )
        ]
    waiting = (
        f" ({len(pending)} newer than {NOTIFICATION_GRACE.seconds} s pending)" if pending else ""
    )
    return [
        Evidence(
            "notifications",
            PASS,
            f"session {sid}: {covered} of {len(expected)} notifying audit events since it "
            f"opened became notifications{waiting}",
        )
    ]
