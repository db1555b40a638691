"""The gateway's hub: its sessions, its timing wheel and its deliveries.

One :class:`GatewayHub` per gateway process. It creates a
:class:`~gochat.gateway.session.Session` per connection, owns the one
:class:`~gochat.wheel.HashedWheel` every session's deadline lives on (driven
by :meth:`tick` from a single ``TimerService``), and writes deliveries from
logic to the sessions they name, framing each payload once whatever the
number of recipients.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gochat.errors import CLOSE_SHUTTING_DOWN
from gochat.gateway import codec
from gochat.gateway.admission import SendAdmission
from gochat.gateway.logic_client import ILogicClient, Subscription
from gochat.gateway.receipts import ReceiptCoalescer
from gochat.gateway.session import Session, SessionLimits, SessionTransport
from gochat.model import Delivery
from gochat.wheel import HashedWheel

_log = Logger()


class DeliverySource(Protocol):
    """Where a gateway's deliveries come from: logic's stream, or the gateway's own broker queue."""

    def subscribe(self, gateway_id: str, handler: Callable[[Delivery], None]) -> Subscription:
        """Call *handler* with every delivery addressed to *gateway_id*, in order."""


class FramedConnection(SessionTransport, Protocol):
    """A session's socket that can also take a frame prepared once for many sockets."""

    def send_prepared(self, prepared: object) -> None:
        """Write a frame made by the hub's *prepare* function."""


class GatewayHub:
    """Sessions, deadlines and deliveries of one gateway."""

    def __init__(
        self,
        gateway_id: str,
        logic: ILogicClient,
        clock: IReactorTime,
        limits: SessionLimits,
        prepare: Callable[[bytes], object],
        wheel_tick: float = 0.5,
        wheel_slots: int = 512,
        deliveries: DeliverySource | None = None,
        route_refresh: float = 30.0,
        max_sends_in_flight: int = 2000,
    ) -> None:
        self._deliveries: DeliverySource = deliveries if deliveries is not None else logic
        self._route_refresh = route_refresh
        self._next_refresh = clock.seconds() + route_refresh
        self._refreshing = False
        self.gateway_id = gateway_id
        self.logic = logic
        self._clock = clock
        self._limits = limits
        self._prepare = prepare
        self.wheel: HashedWheel[Session] = HashedWheel(wheel_tick, wheel_slots, clock.seconds())
        #: Authenticated sessions, the ones deliveries may name.
        self.sessions: dict[str, Session] = {}
        self._live: dict[str, Session] = {}
        self._connections: dict[str, FramedConnection] = {}
        self._next_session = 0
        # Session ids are unique across restarts of a gateway that keeps its id: routes of the previous
        # incarnation may outlive it (route TTL, queue expiry) and must never name a new session.
        self._incarnation = secrets.token_hex(4)
        self._subscription: Subscription | None = None
        self.frames_prepared = 0
        self.receipts = ReceiptCoalescer(self._hand_to_logic)
        self.admission = SendAdmission(max_sends_in_flight)
        self._drain_waiters: list[Deferred[None]] = []

    def start(self) -> None:
        """Begin taking deliveries: from this gateway's broker queue, or from logic itself."""
        self._subscription = self._deliveries.subscribe(self.gateway_id, self.deliver)

    def stop(self) -> None:
        """Stop taking deliveries and close every session with the "reconnect elsewhere" code."""
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None
        self.receipts.flush()
        self.admission.release_all()
        for session in list(self._live.values()):
            session.close(CLOSE_SHUTTING_DOWN, "gateway shutting down; reconnect")

    @property
    def live_sessions(self) -> int:
        """How many connections this gateway holds, authenticated or not."""
        return len(self._live)

    def when_drained(self) -> Deferred[None]:
        """Fires once no connection is left."""
        d: Deferred[None] = Deferred()
        if not self._live:
            d.callback(None)
        else:
            self._drain_waiters.append(d)
        return d

    def connection_made(self, connection: FramedConnection) -> Session:
        """A TCP connection arrived: give it a session whose auth deadline starts now."""
        self._next_session += 1
        session_id = f"{self._incarnation}.{self._next_session:x}"
        session = Session(
            session_id,
            self.gateway_id,
            connection,
            self.logic,
            self.wheel,
            self,
            self._limits,
            self._clock.seconds(),
        )
        self._connections[session_id] = connection
        self._live[session_id] = session
        return session

    def connection_lost(self, session: Session) -> None:
        """The socket of *session* is gone."""
        self.admission.forget(session)
        try:
            session.connection_lost()
        finally:
            self._connections.pop(session.session_id, None)
            self._live.pop(session.session_id, None)
        if not self._live and self._drain_waiters:
            waiters, self._drain_waiters = self._drain_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    # SessionObserver

    def session_opened(self, session: Session) -> None:
        self.sessions[session.session_id] = session

    def session_closed(self, session: Session) -> None:
        self.sessions.pop(session.session_id, None)

    def record_received(self, user_id: int, conv: str, seq: int) -> Deferred[None]:
        return self.receipts.received(user_id, conv, seq)

    def send_started(self, session: Session) -> None:
        self.admission.started(session)

    def send_finished(self) -> None:
        self.admission.finished()

    def flush_received(self) -> None:
        self.receipts.flush()

    def _hand_to_logic(self, user_id: int, conv: str, seq: int) -> Deferred[None]:
        return self.logic.record_received(user_id, conv, seq)

    # Timers

    def tick(self) -> None:
        """Advance the wheel to now and act on every deadline that passed; hand logic the recv_acks that came;
        report live sessions now and then."""
        now = self._clock.seconds()
        self.receipts.flush()
        if now >= self._next_refresh and not self._refreshing:
            self._next_refresh = now + self._route_refresh
            self._refresh_routes()
        for session in self.wheel.advance(now):
            try:
                session.deadline_passed(now)
            except Exception:
                _log.failure("deadline handling failed for session {session_id}", session_id=session.session_id)

    def _refresh_routes(self) -> None:
        """One report of every authenticated session, so their routes outlive the store's TTL (and a lost store)."""
        sessions = [
            (session.identity.user_id, session.session_id)
            for session in self.sessions.values()
            if session.identity is not None and session.accepts_deliveries
        ]
        if not sessions:
            return
        self._refreshing = True
        d = self.logic.refresh_routes(self.gateway_id, sessions)
        d.addErrback(lambda f: _log.failure("route refresh of {count} sessions failed", f, count=len(sessions)))
        d.addBoth(self._refreshed)

    def _refreshed(self, _: object) -> None:
        self._refreshing = False

    # Deliveries

    def deliver(self, delivery: Delivery) -> None:
        """Write *delivery*'s message or signal to each of its sessions here, framed once.

        A session gets it only if it still belongs to the user it was routed
        for: a stale route (another user's, under a reused session id) must
        never leak a message. Pushes wait while their session syncs; signals,
        which nothing orders, do not.
        """
        prepared: object | None = None
        message, signal = delivery.message, delivery.signal
        for session_id, user_id in zip(delivery.session_ids, delivery.user_ids, strict=False):
            session = self.sessions.get(session_id)
            if session is None or not session.accepts_deliveries:
                continue
            if session.identity is None or session.identity.user_id != user_id:
                _log.warn(
                    "dropping delivery for session {session_id}: routed for user {user_id}, not its owner",
                    session_id=session_id,
                    user_id=user_id,
                )
                continue
            if message is not None and session.holding_pushes:
                session.hold(message)
                continue
            if prepared is None:
                if message is not None:
                    frame = codec.encode_push(message)
                elif signal is not None:
                    frame = codec.encode_signal(signal)
                else:
                    return
                prepared = self._prepare(frame)
                self.frames_prepared += 1
            self._connections[session_id].send_prepared(prepared)
