"""Presence transitions: tell a user's contacts when they come online and when they go offline.

A user is online while at least one of their sessions is routed (any device,
any gateway). The first session's connect is the "online" transition; the
last session's disconnect starts a grace period, and only if the user is
still offline when it ends are the contacts told "offline", so a reconnect
(a page reload, a gateway drain, a network blip) is not broadcast twice.

Notices are signals (never stored), delivered to the contacts' live
sessions. Contacts are the other users of the user's one-to-one
conversations and the members of their groups up to a size (in a large
group, presence is asked for, not broadcast: a thousand members connecting
would otherwise send a million notices).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gochat.logic import delivery
from gochat.logic.interfaces import IDeliveryBus, IRouteStore, Route
from gochat.model import Identity, Signal, SignalKind

_log = Logger()

ONLINE = 1
OFFLINE = 0


class PresenceNotifier:
    """Publishes presence transitions to contacts; *contacts* finds whom to tell about a user."""

    def __init__(
        self,
        routes: IRouteStore,
        bus: IDeliveryBus,
        contacts: Callable[[int], Deferred[set[int]]],
        clock: IReactorTime,
        grace: float,
    ) -> None:
        self._routes = routes
        self._bus = bus
        self._contacts = contacts
        self._clock = clock
        self._grace = grace
        self._going_offline: dict[int, IDelayedCall] = {}
        self._stopped = False

    def connected(self, identity: Identity) -> None:
        """A session of the user was routed: if it is their only one, they came online."""
        pending = self._going_offline.pop(identity.user_id, None)
        if pending is not None and pending.active():
            # They were never shown offline: nothing to tell.
            pending.cancel()
            return
        d = self._routes.routes([identity.user_id])
        d.addCallback(self._maybe_online, identity)
        d.addErrback(self._failed, identity)

    def disconnected(self, identity: Identity) -> None:
        """A session of the user went: if none is left after the grace period, they went offline."""
        if self._stopped:
            return
        pending = self._going_offline.pop(identity.user_id, None)
        if pending is not None and pending.active():
            pending.cancel()
        self._going_offline[identity.user_id] = self._clock.callLater(self._grace, self._grace_over, identity)

    def stop(self) -> None:
        """Forget pending offline notices and start no more (the process is stopping)."""
        self._stopped = True
        for pending in self._going_offline.values():
            if pending.active():
                pending.cancel()
        self._going_offline.clear()

    def _maybe_online(self, routes: dict[int, set[Route]], identity: Identity) -> Deferred[None] | None:
        if len(routes.get(identity.user_id, ())) != 1:
            return None
        return self._tell(identity, ONLINE)

    def _grace_over(self, identity: Identity) -> None:
        self._going_offline.pop(identity.user_id, None)
        d = self._routes.online([identity.user_id])
        d.addCallback(lambda online: None if online.get(identity.user_id) else self._tell(identity, OFFLINE))
        d.addErrback(self._failed, identity)

    def _tell(self, identity: Identity, status: int) -> Deferred[None]:
        return Deferred.fromCoroutine(self._publish(identity, status))

    async def _publish(self, identity: Identity, status: int) -> None:
        contacts = sorted((await self._contacts(identity.user_id)) - {identity.user_id})
        if not contacts:
            return
        routes = await self._routes.routes(contacts)
        now_ms = int(self._clock.seconds() * 1000)
        signal = Signal(SignalKind.PRESENCE, "", identity.user_id, identity.username, status, now_ms)
        delivery.publish(self._bus, routes, contacts, None, signal)

    def _failed(self, failure: Failure, identity: Identity) -> None:
        _log.failure("presence notice about user {user_id} failed", failure, user_id=identity.user_id)


class PresenceService(Service):
    """Stops a :class:`PresenceNotifier` with the application, so no grace timer outlives it."""

    def __init__(self, notifier: PresenceNotifier) -> None:
        self._notifier = notifier

    def stopService(self) -> None:
        super().stopService()
        self._notifier.stop()
