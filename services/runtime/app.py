"""What every domain service shares: its database, migrations, outbox and peer channels."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc

from services.runtime.clients import channel
from services.runtime.config import Settings, get_settings
from services.runtime.outbox import Outbox
from services.runtime.storage import Database
from services.runtime.storage.migrations import migrate


class BaseService:
    """A ServiceApp with storage; subclasses set the class attributes and `register`."""

    name: str
    service_names: tuple[str, ...]
    migrations: Path
    #: Peers this service calls; "audit" is implied when the service keeps an outbox.
    peers: tuple[str, ...] = ()
    uses_outbox = True

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.db = Database(
            self.settings.database_url_for(self.name),
            name=self.name,
            max_batch=self.settings.group_commit_max_batch,
            trace_sql=self.settings.trace_sql,
        )
        self.outbox = Outbox(
            self.db,
            self.name,
            self.settings.outbox_max_backlog,
            self.settings.outbox_reserve,
            lease_seconds=self.settings.outbox_lease_seconds,
            # Stable across restarts of this replica (one address per host), so a restarted
            # process takes back what its crashed run had claimed.
            shipper_id=f"{socket.gethostname()}/{self.name}@{self.settings.service_addr(self.name)}",
        )
        self.channels: dict[str, grpc.aio.Channel] = {}

    async def start(self, server: grpc.aio.Server) -> None:
        if self.settings.migrate_on_start:
            migrate(self.db, self.migrations, self.name)
        self.db.start()
        wanted = {*self.peers, *(("audit",) if self.uses_outbox else ())}
        self.channels = {
            peer: channel(
                self.settings, peer, self.settings.dependency_timeout(peer), identity=self.name
            )
            for peer in sorted(wanted)
        }
        if self.uses_outbox:
            self.outbox.start(self.channels["audit"])
        self.register(server)

    def register(self, server: grpc.aio.Server) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        await self.outbox.stop()
        for ch in self.channels.values():
            await ch.close()
        self.db.close()
