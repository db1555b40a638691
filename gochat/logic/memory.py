"""In-process implementations of logic's outside worlds.

The route store and delivery bus serve the embedded default; the account
and message stores serve the tests (the embedded default keeps those in
SQLite). Same semantics as the Redis, RabbitMQ and database adapters: every
call returns a Deferred, deliveries for one gateway reach its subscribers in
publish order, messages are acknowledged only after their batch commits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gochat.errors import ErrorCode, GochatError
from gochat.logic.batch_writer import BatchPolicy, BatchWriter
from gochat.logic.interfaces import Account, DeliveryHandler, Route
from gochat.model import Delivery, StoredMessage

_log = Logger()


class InMemoryRouteStore:
    """:class:`~gochat.logic.interfaces.IRouteStore` in a dict."""

    def __init__(self) -> None:
        self._routes: dict[int, set[Route]] = defaultdict(set)

    def add(self, user_id: int, route: Route) -> Deferred[None]:
        self._routes[user_id].add(route)
        return succeed(None)

    def remove(self, user_id: int, route: Route) -> Deferred[None]:
        routes = self._routes.get(user_id)
        if routes is not None:
            routes.discard(route)
            if not routes:
                del self._routes[user_id]
        return succeed(None)

    def routes(self, user_ids: Iterable[int]) -> Deferred[dict[int, set[Route]]]:
        return succeed({uid: set(self._routes.get(uid, ())) for uid in user_ids})


class _Subscription:
    def __init__(self, bus: InMemoryDeliveryBus, gateway_id: str, handler: DeliveryHandler) -> None:
        self._bus = bus
        self.gateway_id = gateway_id
        self.handler = handler

    def cancel(self) -> None:
        self._bus._unsubscribe(self)


class InMemoryDeliveryBus:
    """:class:`~gochat.logic.interfaces.IDeliveryBus` that calls subscribers directly.

    A delivery for a gateway with no subscriber is dropped and logged: with
    no gateway listening there is no session to write to, and recipients
    recover what they missed by sync.
    """

    def __init__(self) -> None:
        self._subscribers: dict[str, list[_Subscription]] = defaultdict(list)

    def publish(self, delivery: Delivery) -> Deferred[None]:
        subscribers = self._subscribers.get(delivery.gateway_id)
        if not subscribers:
            _log.info(
                "no subscriber for gateway {gateway_id}; delivery of {msg_id} left to sync",
                gateway_id=delivery.gateway_id,
                msg_id=delivery.message.msg_id,
            )
            return succeed(None)
        for subscription in list(subscribers):
            try:
                subscription.handler(delivery)
            except Exception:
                _log.failure("delivery handler for gateway {gateway_id} failed", gateway_id=delivery.gateway_id)
        return succeed(None)

    def subscribe(self, gateway_id: str, handler: DeliveryHandler) -> _Subscription:
        subscription = _Subscription(self, gateway_id, handler)
        self._subscribers[gateway_id].append(subscription)
        return subscription

    def _unsubscribe(self, subscription: _Subscription) -> None:
        subscribers = self._subscribers.get(subscription.gateway_id, [])
        if subscription in subscribers:
            subscribers.remove(subscription)
        if not subscribers:
            self._subscribers.pop(subscription.gateway_id, None)


class InMemoryAccountStore:
    """:class:`~gochat.logic.interfaces.IAccountStore` in dicts."""

    def __init__(self) -> None:
        self._by_name: dict[str, Account] = {}
        self._by_id: dict[int, Account] = {}

    def create(self, username: str, password_hash: str, created_at: float) -> Deferred[int]:
        if username in self._by_name:
            return fail(GochatError(ErrorCode.USERNAME_TAKEN, f"{username!r} is taken"))
        account = Account(len(self._by_id) + 1, username, password_hash)
        self._by_name[username] = account
        self._by_id[account.user_id] = account
        return succeed(account.user_id)

    def by_name(self, username: str) -> Deferred[Account | None]:
        return succeed(self._by_name.get(username))

    def by_id(self, user_id: int) -> Deferred[Account | None]:
        return succeed(self._by_id.get(user_id))


class InMemoryMessageStore:
    """:class:`~gochat.logic.interfaces.IMessageStore` in dicts, committed through a batch writer.

    The writer's sink stores the batch in memory and fires at once, so the
    ack-after-commit ordering is the same as with a database.
    """

    def __init__(self, clock: IReactorTime, policy: BatchPolicy) -> None:
        self.messages: dict[int, StoredMessage] = {}
        self._by_client_id: dict[tuple[int, str], StoredMessage] = {}
        self._by_seq: dict[tuple[str, int], StoredMessage] = {}
        self.writer: BatchWriter[StoredMessage] = BatchWriter(self._commit, clock, policy)

    def _commit(self, batch: list[StoredMessage]) -> Deferred[None]:
        for message in batch:
            key = (message.sender_id, message.client_msg_id)
            if (
                message.msg_id in self.messages
                or key in self._by_client_id
                or (message.conv, message.seq) in self._by_seq
            ):
                continue
            self.messages[message.msg_id] = message
            self._by_client_id[key] = message
            self._by_seq[(message.conv, message.seq)] = message
        return succeed(None)

    def append(self, message: StoredMessage) -> Deferred[None]:
        return self.writer.add(message)

    def by_client_msg_id(self, sender_id: int, client_msg_id: str) -> Deferred[StoredMessage | None]:
        return succeed(self._by_client_id.get((sender_id, client_msg_id)))

    def last_seq(self, conv: str) -> Deferred[int]:
        return succeed(max((seq for c, seq in self._by_seq if c == conv), default=0))
