"""In-process route store and delivery bus: the embedded default's, and the tests'.

Same semantics as the Redis and RabbitMQ adapters that replace them in
production: every call returns a Deferred, deliveries for one gateway reach
its subscribers in publish order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from gochat.logic.interfaces import DeliveryHandler, Route
from gochat.model import Delivery

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
            _log.info("no subscriber for gateway {gateway_id}; delivery of {msg_id} left to sync",
                      gateway_id=delivery.gateway_id, msg_id=delivery.message.msg_id)
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
