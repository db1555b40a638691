"""Compose the logic role's services from a frozen config.

:func:`build` only composes ``IService`` objects; nothing runs until the
application starts them. The embedded default calls it too (from the gateway)
with no gRPC address, and gets the same :class:`ChatLogic` production runs.
"""

from __future__ import annotations

import functools
import pathlib
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.threads import deferToThreadPool

from gochat.grpc_bridge import GrpcServerService, LogicServicer
from gochat.lifecycle import StopInReverse
from gochat.logic.batch_writer import BatchPolicy
from gochat.logic.chat import ChatLogic, ChatSettings, PasswordHasher
from gochat.logic.delivery import Deliverer
from gochat.logic.memory import InMemoryDeliveryBus, InMemoryRouteStore
from gochat.logic.passwords import ScryptCost, hash_password, verify_password
from gochat.logic.persist import PersistService, PersistWorker
from gochat.logic.sequencing import MessageIdGenerator
from gochat.logic.sqlite_store import SqliteAccountStore, SqliteMessageStore, SqliteStoreService, connect_pool
from gochat.logic.tokens import TokenSigner, load_or_create_secret


@dataclass(frozen=True)
class LogicConfig:
    """Everything the logic role is configured with."""

    data_dir: pathlib.Path = pathlib.Path("gochat-data")
    database: str = ""
    token_secret_file: str = ""
    grpc_listen: str | None = "127.0.0.1:9090"
    grpc_workers: int = 64
    node_id: int = 0
    batch: BatchPolicy = field(default_factory=BatchPolicy)
    chat: ChatSettings = field(default_factory=ChatSettings)
    scrypt: ScryptCost = field(default_factory=ScryptCost)

    @property
    def database_path(self) -> pathlib.Path:
        return pathlib.Path(self.database) if self.database else self.data_dir / "gochat.sqlite"

    @property
    def token_secret_path(self) -> pathlib.Path:
        return pathlib.Path(self.token_secret_file) if self.token_secret_file else self.data_dir / "token.key"


class LogicService(StopInReverse):
    """The logic role: its store, its gRPC server, and the :class:`ChatLogic` they serve."""

    def __init__(self, chat: ChatLogic, store: SqliteStoreService) -> None:
        super().__init__()
        self.chat = chat
        self.store = store


def build(config: LogicConfig, reactor: Any) -> LogicService:
    """Compose the logic role on *reactor* (which provides time, threads and thread hand-off)."""
    config.database_path.parent.mkdir(parents=True, exist_ok=True)
    pool = connect_pool(str(config.database_path), reactor)
    accounts = SqliteAccountStore(pool)
    store = SqliteStoreService(pool)
    routes = InMemoryRouteStore()
    deliveries = InMemoryDeliveryBus()
    deliverer = Deliverer(routes, deliveries)
    worker: PersistWorker[None] = PersistWorker(
        SqliteMessageStore(pool), reactor, config.batch, deliverer.batch_committed
    )
    threads = functools.partial(deferToThreadPool, reactor, reactor.getThreadPool())
    hasher = PasswordHasher(
        threads,
        functools.partial(hash_password, cost=config.scrypt),
        verify_password,
    )
    chat = ChatLogic(
        accounts=accounts,
        persist=worker,
        routes=routes,
        deliveries=deliveries,
        tokens=TokenSigner(load_or_create_secret(config.token_secret_path)),
        hasher=hasher,
        ids=MessageIdGenerator(config.node_id),
        clock=reactor,
        settings=config.chat,
    )
    service = LogicService(chat, store)
    store.setServiceParent(service)
    PersistService(worker).setServiceParent(service)
    if config.grpc_listen is not None:
        grpc_service = GrpcServerService(LogicServicer(chat, reactor), config.grpc_listen, reactor, config.grpc_workers)
        grpc_service.setServiceParent(service)
    return service
