"""What every domain service shares: its database, migrations, outbox, peer channels and
background workers (services/runtime/resilience.py), started and stopped one way."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Sequence
from pathlib import Path

import grpc

from services.runtime.clients import channel
from services.runtime.config import Settings, get_settings
from services.runtime.outbox import SHIP_RETRY, Outbox
from services.runtime.resilience import Worker
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
            retry=dataclasses.replace(SHIP_RETRY, max_delay=self.settings.outbox_retry_max_seconds),
        )
        self.channels: dict[str, grpc.aio.Channel] = {}
        #: The service's background workers running, in the order they started.
        self.running: list[Worker] = []

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
        for worker in self.workers():
            worker.start()
            self.running.append(worker)

    def register(self, server: grpc.aio.Server) -> None:
        raise NotImplementedError

    def workers(self) -> Sequence[Worker]:
        """The service's background loops, started once its servicers are registered."""
        return ()

    async def stopped(self) -> None:
        """After the workers have stopped, while peers, the database and the outbox's
        shipper still run: a service's last words (its own cleanup) still ship."""

    async def stop(self) -> None:
        # Each worker finishes the step under way (bounded), last started first; the
        # outbox's shipper last, so what they recorded may still ship.
        while self.running:
            await self.running.pop().drain()
        await self.stopped()
        await self.outbox.drain()
        for ch in self.channels.values():
            await ch.close()
        self.db.close()
