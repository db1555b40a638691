"""Compose the logic role's services from a frozen config.

:func:`build` only composes ``IService`` objects; nothing runs until the
application starts them. The embedded default calls it too (from the gateway)
with no gRPC address, and gets the same :class:`ChatLogic` production runs.
"""

from __future__ import annotations

import functools
import pathlib
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.application.service import Service
from twisted.internet.threads import deferToThreadPool

from gochat.grpc_bridge import GrpcServerService, LogicServicer
from gochat.lifecycle import StopInReverse
from gochat.logic.batch_writer import BatchPolicy
from gochat.logic.chat import ChatLogic, ChatSettings, PasswordHasher
from gochat.logic.delivery import Deliverer
from gochat.logic.interfaces import (
    IAccountStore,
    IDeliveryBus,
    IGroupStore,
    IMessageStore,
    IPersistQueue,
    IRouteStore,
)
from gochat.logic.memory import InMemoryDeliveryBus, InMemoryRouteStore
from gochat.logic.passwords import ScryptCost, hash_password, verify_password
from gochat.logic.persist import PersistService, PersistWorker
from gochat.logic.presence import PresenceService
from gochat.logic.sequencing import MessageIdGenerator
from gochat.logic.sqlite_store import (
    SqliteAccountStore,
    SqliteGroupStore,
    SqliteMessageStore,
    SqliteStoreService,
    connect_pool,
)
from gochat.logic.tokens import TokenSigner, load_or_create_secret

EMBEDDED_DATABASE = ""
DEFAULT_DATABASE = "mysql://root@127.0.0.1:3306/gochat"
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class LogicConfig:
    """Everything the logic role is configured with.

    ``database`` is ``mysql://user:password@host:port/name`` or
    ``sqlite:PATH``; empty means SQLite in ``data_dir`` (the embedded
    default). ``broker`` is ``amqp://user:password@host:port/vhost`` for the
    durable persist queue, or ``None`` to hand messages to the persist worker
    in-process.
    """

    data_dir: pathlib.Path = pathlib.Path("gochat-data")
    database: str = EMBEDDED_DATABASE
    broker: str | None = None
    redis: str | None = None
    redis_key_prefix: str = "gochat:"
    token_secret_file: str = ""
    grpc_listen: str | None = "127.0.0.1:9090"
    grpc_workers: int = 1024
    node_id: int = 0
    persist_queue: str = "gochat.persist"
    batch: BatchPolicy = field(default_factory=BatchPolicy)
    chat: ChatSettings = field(default_factory=ChatSettings)
    scrypt: ScryptCost = field(default_factory=ScryptCost)

    @property
    def token_secret_path(self) -> pathlib.Path:
        return pathlib.Path(self.token_secret_file) if self.token_secret_file else self.data_dir / "token.key"


class LogicService(StopInReverse):
    """The logic role: its store, its persist path, its gRPC server, and the :class:`ChatLogic` they serve.

    Children stop in reverse order: gRPC calls finish, the persist path
    commits what it holds, then the store closes.
    """

    def __init__(self, chat: ChatLogic, store: Any) -> None:
        super().__init__()
        self.chat = chat
        #: The store's service; its ``ready`` Deferred fires once the schema is checked.
        self.store = store


@dataclass
class _Stores:
    accounts: IAccountStore
    messages: IMessageStore
    groups: IGroupStore
    service: Service


def _stores(config: LogicConfig, reactor: Any) -> _Stores:
    url = urlsplit(config.database)
    if url.scheme == "mysql":
        from gochat.logic import mysql_store

        settings = mysql_store.MysqlSettings(
            host=url.hostname or "127.0.0.1",
            port=url.port or 3306,
            user=unquote(url.username or "root"),
            password=unquote(url.password or ""),
            database=url.path.lstrip("/") or "gochat",
        )
        pool = mysql_store.connect_pool(settings, reactor)
        messages = mysql_store.MysqlMessageStore(pool, reactor, config.batch)
        return _Stores(
            mysql_store.MysqlAccountStore(pool),
            messages,
            mysql_store.MysqlGroupStore(pool),
            mysql_store.MysqlStoreService(pool, messages),
        )
    if url.scheme not in ("", "sqlite"):
        raise ValueError(f"unsupported database {config.database!r}: use mysql://... or sqlite:PATH")
    path = (
        pathlib.Path(config.database.removeprefix("sqlite:")) if config.database else config.data_dir / "gochat.sqlite"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pool = connect_pool(str(path), reactor)
    return _Stores(SqliteAccountStore(pool), SqliteMessageStore(pool), SqliteGroupStore(pool), SqliteStoreService(pool))


def build(config: LogicConfig, reactor: Any) -> LogicService:
    """Compose the logic role on *reactor* (which provides time, threads and thread hand-off)."""
    stores = _stores(config, reactor)
    routes: IRouteStore = InMemoryRouteStore()
    deliveries: IDeliveryBus = InMemoryDeliveryBus()
    children: list[Service] = [stores.service]
    if config.redis is not None:
        from gochat.logic.redis_routes import RedisRouteService

        redis_service = RedisRouteService(reactor, redis_settings(config.redis, config.redis_key_prefix))
        routes = redis_service.store
        children.append(redis_service)
    persist: IPersistQueue
    if config.broker is None:
        deliverer = Deliverer(routes, deliveries)
        worker: PersistWorker[None] = PersistWorker(stores.messages, reactor, config.batch, deliverer.batch_committed)
        children.append(PersistService(worker))
        persist = worker
    else:
        from gochat.logic import amqp, amqp_delivery, broker_persist

        reply_queue = f"gochat.reply.{config.node_id}.{uuid.uuid4().hex[:12]}"
        bus = amqp.AmqpBus(
            reactor,
            amqp_settings(config.broker),
            [broker_persist.persist_queue_spec(config.persist_queue), broker_persist.reply_queue_spec(reply_queue)],
        )
        deliveries = amqp_delivery.AmqpDeliveryBus(bus, clock=reactor)
        deliverer = Deliverer(routes, deliveries)
        consumer = broker_persist.BrokerPersistConsumer(
            bus,
            stores.messages,
            reactor,
            config.batch,
            deliverer.batch_committed,
            config.persist_queue,
            prefetch=2 * config.batch.max_batch,
        )
        queue = broker_persist.BrokerPersistQueue(bus, reactor, reply_queue, config.persist_queue)
        children += [bus, consumer, queue]
        persist = queue
    threads = functools.partial(deferToThreadPool, reactor, reactor.getThreadPool())
    hasher = PasswordHasher(threads, functools.partial(hash_password, cost=config.scrypt), verify_password)
    chat = ChatLogic(
        accounts=stores.accounts,
        persist=persist,
        messages=stores.messages,
        groups=stores.groups,
        routes=routes,
        deliveries=deliveries,
        tokens=TokenSigner(load_or_create_secret(config.token_secret_path)),
        hasher=hasher,
        ids=MessageIdGenerator(config.node_id),
        clock=reactor,
        settings=config.chat,
    )
    children.append(PresenceService(chat.presence_notices))
    if config.grpc_listen is not None:
        children.append(
            GrpcServerService(
                LogicServicer(chat, reactor, max_concurrent_sends=max(1, config.grpc_workers - 8)),
                config.grpc_listen,
                reactor,
                config.grpc_workers,
            )
        )
    service = LogicService(chat, stores.service)
    for child in children:
        child.setServiceParent(service)
    return service


def amqp_settings(url: str) -> Any:
    """The :class:`~gochat.logic.amqp.AmqpSettings` an ``amqp://user:password@host:port/vhost`` URL names."""
    from gochat.logic.amqp import AmqpSettings

    parts = urlsplit(url)
    if parts.scheme != "amqp":
        raise ValueError(f"unsupported broker {url!r}: use amqp://user:password@host:port/vhost")
    return AmqpSettings(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5672,
        vhost=unquote(parts.path[1:]) if len(parts.path) > 1 else "/",
        username=unquote(parts.username or "guest"),
        password=unquote(parts.password or "guest"),
    )


def redis_settings(url: str, key_prefix: str = "gochat:") -> Any:
    """The :class:`~gochat.logic.redis_routes.RedisSettings` a ``redis://[:password@]host:port/db`` URL names."""
    from gochat.logic.redis_routes import RedisSettings

    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError(f"unsupported Redis URL {url!r}: use redis://host:port/db")
    return RedisSettings(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 6379,
        db=int(parts.path[1:] or 0),
        password=unquote(parts.password) if parts.password else None,
        key_prefix=key_prefix,
    )
