"""After a batch commits: one delivery per gateway for each new message, in seq order."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from gochat.logic.interfaces import IDeliveryBus, IRouteStore, Route
from gochat.logic.persist import Committed
from gochat.model import Delivery, Signal, StoredMessage

_log = Logger()


class Deliverer:
    """Looks up the participants' sessions and publishes deliveries to their gateways.

    One route lookup per batch; deliveries are published in batch (that is,
    seq) order. The sending session gets none: it has its ack. Trouble is
    logged, not raised: the messages are stored, and a recipient who misses a
    push recovers it by sync.
    """

    def __init__(self, routes: IRouteStore, bus: IDeliveryBus) -> None:
        self._routes = routes
        self._bus = bus

    def batch_committed(self, items: Sequence[Committed[Any]]) -> None:
        """The persist worker's ``on_committed`` hook."""
        fresh = [item for item in items if item.is_new and item.message is not None]
        if not fresh:
            return
        user_ids = {uid for item in fresh for uid in item.request.participants}
        d = self._routes.routes(user_ids)
        d.addCallbacks(self._publish, self._routing_failed, callbackArgs=(fresh,))

    def _publish(self, routes_by_user: dict[int, set[Route]], fresh: list[Committed[Any]]) -> None:
        for item in fresh:
            assert item.message is not None
            origin = Route(item.request.origin_gateway, item.request.origin_session)
            publish(self._bus, routes_by_user, item.request.participants, item.message, None, exclude=origin)

    def _routing_failed(self, failure: Failure) -> None:
        _log.failure("route lookup failed; recipients will recover by sync", failure)


def by_gateway(
    routes_by_user: Mapping[int, Iterable[Route]], user_ids: Iterable[int], exclude: Route | None
) -> dict[str, tuple[list[str], list[int]]]:
    """The sessions of *user_ids*, grouped by gateway: ``gateway_id -> (session_ids, user_ids)``, each once."""
    sessions: dict[str, tuple[list[str], list[int]]] = defaultdict(lambda: ([], []))
    seen: set[Route] = set()
    for user_id in user_ids:
        for route in sorted(routes_by_user.get(user_id, ())):
            if route != exclude and route not in seen:
                seen.add(route)
                session_ids, owners = sessions[route.gateway_id]
                session_ids.append(route.session_id)
                owners.append(user_id)
    return sessions


def publish(
    bus: IDeliveryBus,
    routes_by_user: Mapping[int, Iterable[Route]],
    user_ids: Iterable[int],
    message: StoredMessage | None,
    signal: Signal | None,
    exclude: Route | None = None,
) -> None:
    """One delivery of *message* or *signal* per gateway holding sessions of *user_ids*; failures are logged."""
    for gateway_id, (session_ids, owners) in by_gateway(routes_by_user, user_ids, exclude).items():
        delivery = Delivery(gateway_id, tuple(session_ids), tuple(owners), message, signal)
        published: Deferred[None] = bus.publish(delivery)
        published.addErrback(_log_delivery_failure, gateway_id)


def _log_delivery_failure(failure: Failure, gateway_id: str) -> None:
    _log.failure("delivery to {gateway_id} failed", failure, gateway_id=gateway_id)
