"""The conversation service process."""

from __future__ import annotations

from pathlib import Path

import grpc

from gate4.conversation.v1 import conversation_pb2, conversation_pb2_grpc
from services.conversation.assistant import Assistant
from services.conversation.notifications import Feed
from services.conversation.platform import Platform
from services.conversation.servicer import ConversationServicer
from services.runtime.app import BaseService


class ConversationService(BaseService):
    name = "conversation"
    service_names: tuple[str, ...] = (
        conversation_pb2.DESCRIPTOR.services_by_name["ConversationService"].full_name,
    )
    migrations = Path(__file__).resolve().parent / "migrations"
    peers = ("execution", "risk", "audit")
    feed: Feed | None = None

    def register(self, server: grpc.aio.Server) -> None:
        assistant = Assistant(Platform(self.channels))
        conversation_pb2_grpc.add_ConversationServiceServicer_to_server(
            ConversationServicer(self.db, self.outbox, assistant), server
        )
        self.feed = Feed(self.db, self.channels["audit"])
        self.feed.start()

    async def stop(self) -> None:
        if self.feed is not None:
            await self.feed.stop()
        await super().stop()
