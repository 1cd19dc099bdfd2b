"""The ConversationService RPCs."""

from __future__ import annotations

from google.protobuf import json_format
from grpc import aio
from sqlalchemy.engine import Connection

from gate4.conversation.v1 import conversation_pb2, conversation_pb2_grpc
from services.conversation import sessions
from services.runtime import correlation, errors, outbox
from services.runtime.outbox import Outbox
from services.runtime.storage import Database

Context = aio.ServicerContext[object, object]


class ConversationServicer(conversation_pb2_grpc.ConversationServiceServicer):
    def __init__(self, db: Database, box: Outbox) -> None:
        self.db = db
        self.outbox = box

    async def CreateSession(
        self, request: conversation_pb2.CreateSessionRequest, context: Context
    ) -> conversation_pb2.Session:
        corr = correlation.current()
        metadata = json_format.MessageToDict(request.metadata)
        sessions.check_new_session(request.channel, request.topic, metadata)

        def op(conn: Connection) -> conversation_pb2.Session:
            self.outbox.ensure_capacity(conn)
            created = sessions.create(
                conn, corr.tenant_id, corr.user_id, request.channel, request.topic, metadata
            )
            self.outbox.add(
                conn,
                outbox.event(
                    "conversation.session.created",
                    source="conversation",
                    outcome="CREATED",
                    session_id=created.session_id,
                    data={"channel": created.channel, "topic": created.topic},
                ),
            )
            return created

        session = await self.db.write(op)
        self.outbox.notify()
        return session

    async def _session(self, session_id: str) -> conversation_pb2.Session:
        tenant = correlation.current().tenant_id
        found = await self.db.read(lambda c: sessions.get(c, tenant, session_id))
        if found is None:
            # Another tenant's session is indistinguishable from a missing one.
            raise errors.NotFound(f"session {session_id!r} not found")
        return found

    async def GetSession(
        self, request: conversation_pb2.GetSessionRequest, context: Context
    ) -> conversation_pb2.Session:
        return await self._session(request.session_id)

    async def CreateTurn(
        self, request: conversation_pb2.CreateTurnRequest, context: Context
    ) -> conversation_pb2.Turn:
        await self._session(request.session_id)
        raise errors.NotImplementedYet("conversation turns arrive with the conversation runtime")

    async def ListNotifications(
        self, request: conversation_pb2.ListNotificationsRequest, context: Context
    ) -> conversation_pb2.ListNotificationsResponse:
        await self._session(request.session_id)
        # Notifications are produced from the audit stream once sessions subscribe to it.
        return conversation_pb2.ListNotificationsResponse()
