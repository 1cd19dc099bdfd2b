"""The conversation service process."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import grpc

from gate4.conversation.v1 import conversation_pb2, conversation_pb2_grpc
from services.conversation.assistant import Assistant
from services.conversation.notifications import RESUBSCRIBE, Feed
from services.conversation.platform import Platform
from services.conversation.servicer import ConversationServicer
from services.runtime.app import BaseService
from services.runtime.idempotency import KeyPolicy
from services.runtime.resilience import Worker


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
            ConversationServicer(self.db, self.outbox, assistant, KeyPolicy.of(self.settings)),
            server,
        )
        self.feed = Feed(
            self.db,
            self.channels["audit"],
            retry=dataclasses.replace(
                RESUBSCRIBE, max_delay=self.settings.notifications_retry_max_seconds
            ),
        )

    def workers(self) -> Sequence[Worker]:
        assert self.feed is not None
        return (self.feed,)
