"""The ConversationService RPCs."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from grpc import aio
from sqlalchemy.engine import Connection

from gate4.conversation.v1 import conversation_pb2, conversation_pb2_grpc
from services.conversation import memory as mem
from services.conversation import notifications, sessions, turns
from services.conversation.assistant import Assistant, Outcome, TurnInput
from services.runtime import correlation, errors, outbox
from services.runtime.canonical import digest
from services.runtime.idempotency import KeyPolicy
from services.runtime.metadata import REPLAYED_FLAG
from services.runtime.outbox import Outbox
from services.runtime.resilience import SYSTEM, Clock
from services.runtime.storage import Database
from services.runtime.timeutil import to_timestamp
from services.runtime.validation import IDEMPOTENCY_KEY_RE, Checker

Context = aio.ServicerContext[object, object]
MAX_MESSAGE = 4000


class ConversationServicer(conversation_pb2_grpc.ConversationServiceServicer):
    def __init__(
        self,
        db: Database,
        box: Outbox,
        assistant: Assistant,
        keys: KeyPolicy,
        clock: Clock = SYSTEM,
    ) -> None:
        self.db = db
        #: Turn leases and every time a session, turn or notification records.
        self.clock = clock
        #: The lease and lifetime of turn keys, as of every idempotency key.
        self.keys = keys
        self.outbox = box
        self.assistant = assistant

    # -- sessions --------------------------------------------------------------------------

    async def CreateSession(
        self, request: conversation_pb2.CreateSessionRequest, context: Context
    ) -> conversation_pb2.Session:
        corr = correlation.current()
        metadata = json_format.MessageToDict(request.metadata)
        sessions.check_new_session(request.channel, request.topic, metadata)

        def op(conn: Connection) -> conversation_pb2.Session:
            self.outbox.ensure_capacity(conn)
            session_id = sessions.create(
                conn,
                corr.tenant_id,
                corr.user_id,
                request.channel,
                request.topic,
                metadata,
                self.clock.now(),
            )
            self.outbox.add(
                conn,
                outbox.event(
                    "conversation.session.created",
                    source="conversation",
                    outcome="CREATED",
                    session_id=session_id,
                    data={"channel": request.channel, "topic": request.topic},
                ),
            )
            row = sessions.row(conn, corr.tenant_id, session_id)
            assert row is not None
            return sessions.message(row)

        session = await self.db.write(op)
        self.outbox.notify()
        return session

    def _load(self, conn: Connection, session_id: str) -> Any:
        row = sessions.row(conn, correlation.current().tenant_id, session_id)
        if row is None:
            # Another tenant's session is indistinguishable from a missing one.
            raise errors.NotFound(f"session {session_id!r} not found")
        return row

    async def GetSession(
        self, request: conversation_pb2.GetSessionRequest, context: Context
    ) -> conversation_pb2.Session:
        def op(conn: Connection) -> conversation_pb2.Session:
            row = self._load(conn, request.session_id)
            return sessions.message(row, notifications.pending_count(conn, request.session_id))

        return await self.db.read(op)

    async def ListNotifications(
        self, request: conversation_pb2.ListNotificationsRequest, context: Context
    ) -> conversation_pb2.ListNotificationsResponse:
        def op(conn: Connection) -> list[conversation_pb2.Notification]:
            self._load(conn, request.session_id)
            return notifications.listing(conn, request.session_id, request.include_delivered)

        return conversation_pb2.ListNotificationsResponse(notifications=await self.db.read(op))

    # -- turns -----------------------------------------------------------------------------

    async def CreateTurn(
        self, request: conversation_pb2.CreateTurnRequest, context: Context
    ) -> conversation_pb2.Turn:
        check = Checker()
        check.text("message", request.message, max_length=MAX_MESSAGE, required=True)
        turn_metadata = json_format.MessageToDict(request.metadata)
        for key, value in turn_metadata.items():
            if key != sessions.OPT_IN:
                check.fail(f"metadata.{key}", "unknown turn metadata")
            elif not isinstance(value, bool):
                check.fail(f"metadata.{key}", "a boolean")
        key = request.idempotency_key
        if key and not IDEMPOTENCY_KEY_RE.match(key):
            check.fail("Idempotency-Key", "8-255 characters of A-Z a-z 0-9 . _ : -")
        check.done("invalid turn")

        corr = correlation.current()
        request_digest = digest({"message": request.message, "metadata": turn_metadata})

        def inputs(row: Any, claim: turns.Claim) -> tuple[TurnInput, dict[str, Any]]:
            memory = json.loads(row.memory)
            metadata = json.loads(row.metadata)
            # A turn's own opt-in change applies before anything is delivered in it.
            if sessions.OPT_IN in turn_metadata:
                metadata[sessions.OPT_IN] = turn_metadata[sessions.OPT_IN]
                memory = mem.evolve(memory, notificationsOptIn=turn_metadata[sessions.OPT_IN])
            command_key = f"turn:{request.session_id}:{key or claim.turn_id}"
            return TurnInput(request.message, memory, command_key), metadata

        def finish(
            conn: Connection, claim: turns.Claim, outcome: Outcome, metadata: dict[str, Any]
        ) -> conversation_pb2.Turn:
            if outcome.notifications_opt_in is not None:
                metadata[sessions.OPT_IN] = outcome.notifications_opt_in
            return self._complete(conn, request, claim, outcome, metadata)

        def begin(
            conn: Connection,
        ) -> tuple[conversation_pb2.Turn | None, Any, turns.Claim | None, bool]:
            """Replays a stored turn; answers a turn that needs nothing from the platform
            in this one write; else claims the session's next turn."""
            row = self._load(conn, request.session_id)
            now = self.clock.now()
            stored = turns.replay(conn, request.session_id, key, request_digest, now)
            if stored is not None:
                return stored, row, None, True
            claim = turns.claim(
                conn,
                corr.tenant_id,
                request.session_id,
                row.turn_count,
                key,
                request_digest,
                now,
                self.keys,
            )
            turn_input, metadata = inputs(row, claim)
            outcome = self.assistant.local(turn_input)
            if outcome is not None:
                return finish(conn, claim, outcome, metadata), row, None, False
            return None, row, claim, False

        answered, row, claim, replayed = await self.db.write(begin)
        if answered is not None:
            if replayed:
                await context.send_initial_metadata(REPLAYED_FLAG)
            else:
                self.outbox.notify()
            return answered
        assert claim is not None
        try:
            turn_input, metadata = inputs(row, claim)
            outcome = await self.assistant.respond(turn_input)
            turn = await self.db.write(lambda c: finish(c, claim, outcome, metadata))
        except BaseException:
            await self.db.write(lambda c: turns.release(c, claim.turn_id))
            raise
        self.outbox.notify()
        return turn

    def _complete(
        self,
        conn: Connection,
        request: conversation_pb2.CreateTurnRequest,
        claim: turns.Claim,
        outcome: Outcome,
        metadata: dict[str, Any],
    ) -> conversation_pb2.Turn:
        self.outbox.ensure_capacity(conn)
        now = self.clock.now()
        opted_in = bool(metadata.get(sessions.OPT_IN, False))
        if opted_in:
            delivered = notifications.deliver(conn, request.session_id, claim.turn_id, now)
        else:
            notifications.discard_pending(conn, request.session_id, now)
            delivered = []
        sessions.advance(
            conn,
            request.session_id,
            turn_count=claim.sequence,
            memory=outcome.memory,
            metadata=metadata,
            now=now,
        )
        corr = correlation.current()
        turn = conversation_pb2.Turn(
            turn_id=claim.turn_id,
            session_id=request.session_id,
            sequence=claim.sequence,
            message=request.message,
            reply=conversation_pb2.Reply(text=outcome.text, actions=outcome.actions),
            context_memory_snapshot=mem.snapshot(claim.sequence, outcome.memory),
            notifications=delivered,
            request_id=corr.request_id,
        )
        turn.context_memory.SetInParent()
        turn.context_memory.update(outcome.memory)
        created = to_timestamp(now)
        assert created is not None
        turn.created_at.CopyFrom(created)
        turns.complete(conn, turn, now)
        self.outbox.add(
            conn,
            outbox.event(
                "conversation.turn",
                source="conversation",
                outcome=str(outcome.memory.get("lastIntent", "")).upper() or "ANSWERED",
                session_id=request.session_id,
                deployment_id=next(
                    (a.deployment_id for a in outcome.actions if a.deployment_id), ""
                ),
                data={
                    "turnId": claim.turn_id,
                    "sequence": claim.sequence,
                    "actions": [
                        {"kind": a.kind, "status": a.status, "deploymentId": a.deployment_id}
                        for a in outcome.actions
                    ],
                    "notificationsDelivered": len(delivered),
                    "memoryDigest": turn.context_memory_snapshot.digest,
                },
            ),
        )
        return turn
