"""The Autobahn binding: WebSocket connections in, sessions out.

:class:`GatewayProtocol` is a thin adapter: it hands complete messages and
the time to its :class:`~gochat.gateway.session.Session` and implements the
session's transport. Autobahn's own handshake timers are switched off: the
session's timer on the hub's wheel bounds the opening handshake (it starts
at TCP accept) and the closing handshake.

Each connection is the streaming producer of its own transport, so Twisted
tells it when the socket's send buffer is full (``pauseProducing``) and
when it has drained (``resumeProducing``). A client that keeps the buffer
full while more than ``max_backlog_bytes`` are written to it is a slow
consumer: its session is closed with ``slow_consumer`` (4410) and nothing
more is queued for it, so the gateway's memory stays bounded and nothing is
dropped silently; the client recovers what it missed by sync.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import PreparedMessage, WebSocketProtocol
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from gochat.errors import ErrorCode, GochatError
from gochat.gateway.hub import GatewayHub
from gochat.gateway.session import Session


@implementer(IPushProducer)
class GatewayProtocol(WebSocketServerProtocol):
    """One client connection."""

    factory: GatewayFactory
    session: Session | None = None

    _paused = False
    _backlog = 0
    _too_slow = False

    def connectionMade(self) -> None:
        super().connectionMade()
        transport: Any = self.transport
        if getattr(transport, "producer", None) is not None:
            # The HTTP channel that carried the upgrade is still registered; it is done with this socket.
            transport.unregisterProducer()
        if hasattr(transport, "registerProducer"):
            transport.registerProducer(self, True)
        self.session = self.factory.hub.connection_made(self)

    # IPushProducer, for our own transport's send buffer.

    def pauseProducing(self) -> None:
        # Twisted calls this on every write while the buffer is over its size: count from the first.
        if not self._paused:
            self._paused = True
            self._backlog = 0

    def resumeProducing(self) -> None:
        self._paused = False
        self._backlog = 0

    def stopProducing(self) -> None:
        self._paused = True

    def _written(self, size: int) -> None:
        if not self._paused or self._too_slow:
            return
        self._backlog += size
        if self._backlog > self.factory.max_backlog_bytes and self.session is not None:
            self._too_slow = True
            self.session.fail(GochatError(ErrorCode.SLOW_CONSUMER, "not reading fast enough; resume by sync"))

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.session is not None:
            self.session.frame_received(payload, isBinary, self.factory.clock.seconds())

    def onPing(self, payload: bytes) -> None:
        super().onPing(payload)
        if self.session is not None:
            self.session.activity(self.factory.clock.seconds())

    def onPong(self, payload: bytes) -> None:
        if self.session is not None:
            self.session.activity(self.factory.clock.seconds())

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        if self.session is not None:
            self.factory.hub.connection_lost(self.session)
            self.session = None

    # SessionTransport

    def send_frame(self, data: bytes) -> None:
        if self.state == WebSocketProtocol.STATE_OPEN:
            # One unfragmented text frame. Not sendMessage: Autobahn applies the *inbound* message size
            # limit to what it sends too, and a sync reply may rightly be larger than any client frame.
            self.sendFrame(opcode=1, payload=data)
            self._written(len(data))

    def send_prepared(self, prepared: object) -> None:
        assert isinstance(prepared, PreparedMessage)
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendPreparedMessage(prepared)
            self._written(len(prepared.payloadHybi))

    def close(self, code: int, reason: str) -> None:
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendClose(code, reason)
        elif self.state != WebSocketProtocol.STATE_CLOSED:
            self.abort()

    def abort(self) -> None:
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
        elif self.transport is not None:
            self.transport.loseConnection()


class GatewayFactory(WebSocketServerFactory):
    """Builds :class:`GatewayProtocol` for one hub (set as ``hub`` before the factory starts)."""

    protocol = GatewayProtocol  # type: ignore[assignment]

    hub: GatewayHub

    def __init__(self, clock: IReactorTime, url: str, max_frame_bytes: int, max_backlog_bytes: int = 1 << 20) -> None:
        super().__init__(url)
        self.clock = clock
        self.max_backlog_bytes = max_backlog_bytes
        self.setProtocolOptions(
            maxFramePayloadSize=max_frame_bytes,
            maxMessagePayloadSize=max_frame_bytes,
            openHandshakeTimeout=0,
            closeHandshakeTimeout=0,
            autoPingInterval=0,
            failByDrop=False,
        )

    def prepare(self, payload: bytes) -> object:
        """Frame *payload* once as a text message, for :meth:`GatewayProtocol.send_prepared`."""
        return self.prepareMessage(payload, isBinary=False)


class GatewayWebSocketResource(WebSocketResource):
    """Serves the WebSocket at a path of the gateway's HTTP site.

    The HTTP channel that carried the upgrade request is left behind when
    Autobahn takes the socket over; its idle timeout is cancelled so no
    per-connection timer outlives the handshake.
    """

    def render(self, request: Request) -> Any:
        channel = request.channel
        if channel is not None and hasattr(channel, "setTimeout"):
            channel.setTimeout(None)
        return super().render(request)
