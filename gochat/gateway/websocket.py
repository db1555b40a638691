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

Browsers send every page's WebSocket to any server it names, cookies or not,
so the opening handshake checks ``Origin`` (:class:`OriginPolicy`): the
gateway's own page (the origin whose host and port are the ``Host`` the
request was sent to), the origins the operator configured
(``--allowed-origin``), and clients that send no ``Origin`` at all (not
browsers) are let in; any other page gets HTTP 403 before a session starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import PreparedMessage, WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from gochat.errors import ErrorCode, GochatError
from gochat.gateway.hub import GatewayHub
from gochat.gateway.session import Session

_log = Logger()

#: The port a page's origin implies when it names none.
_DEFAULT_PORTS = {"http": 80, "https": 443}

#: The reason in the status line of a refused handshake (fixed: the Origin header is never echoed).
ORIGIN_REFUSED = "origin not allowed"


def parse_origin(origin: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of a web origin such as ``https://chat.example.com`` (default port filled in).

    Raises :class:`ValueError` for anything that is not an ``http`` or
    ``https`` origin with a host: ``null``, ``file://``, a path, a bad port.
    """
    parts = urlsplit(origin.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ValueError(f"not an http(s) origin: {origin!r}")
    port = parts.port  # raises ValueError for a port that is not a number in range
    return scheme, parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS[scheme]


def _host_and_port(host_header: str) -> tuple[str, int | None]:
    """Host name (lower-case) and port (None when absent) of a ``Host`` header; ValueError when garbled."""
    parts = urlsplit(f"//{host_header.strip()}")
    if not parts.hostname:
        raise ValueError(f"no host in {host_header!r}")
    return parts.hostname.lower(), parts.port


@dataclass(frozen=True)
class OriginPolicy:
    """Which web pages may open the gateway's WebSocket.

    Always the gateway's own page: an origin whose host and port are those
    of the request's ``Host`` header (the port defaults to the origin
    scheme's when the header names none, as a browser sends it). Also every
    origin in ``allowed`` (``scheme://host[:port]``, compared after
    normalising case and default ports), or any origin if ``allowed`` holds
    ``"*"``. A request without ``Origin`` does not come from a web page and
    is allowed: browsers always send one.

    The scheme is not compared with the connection's: behind a proxy that
    ends TLS, the page is ``https`` while the gateway hears plain HTTP, and
    one host and port serve only one of the two anyway.
    """

    allowed: frozenset[tuple[str, str, int]] = frozenset()
    any_origin: bool = False

    @classmethod
    def from_origins(cls, origins: Iterable[str]) -> OriginPolicy:
        """The policy allowing *origins* besides the same origin; ValueError for a malformed one."""
        origins = list(origins)
        return cls(frozenset(parse_origin(o) for o in origins if o != "*"), "*" in origins)

    def allows(self, origin: str | None, host_header: str | None) -> bool:
        """Whether a handshake with this ``Origin`` (None or empty: absent), sent to this ``Host``, may go on."""
        if not origin:
            return True
        try:
            scheme, host, port = parse_origin(origin)
        except ValueError:
            return False
        if self.any_origin or (scheme, host, port) in self.allowed:
            return True
        if host_header is None:
            return False
        try:
            request_host, request_port = _host_and_port(host_header)
        except ValueError:
            return False
        return (request_host, request_port if request_port is not None else _DEFAULT_PORTS[scheme]) == (host, port)


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

    def onConnect(self, request: ConnectionRequest) -> None:
        """Refuse the handshake with HTTP 403 unless the factory's :class:`OriginPolicy` allows its origin."""
        host = request.headers.get("host")
        if not self.factory.origin_policy.allows(request.origin, host):
            _log.info(
                "refused a WebSocket from origin {origin!r} sent to host {host!r} by {peer}",
                origin=request.origin,
                host=host,
                peer=request.peer,
            )
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, ORIGIN_REFUSED)

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

    def pause_reading(self) -> None:
        transport: Any = self.transport  # a TCP transport is the IPushProducer of what it reads
        if transport is not None:
            transport.pauseProducing()

    def resume_reading(self) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.resumeProducing()

    def abort(self) -> None:
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
        elif self.transport is not None:
            self.transport.loseConnection()


class GatewayFactory(WebSocketServerFactory):
    """Builds :class:`GatewayProtocol` for one hub (set as ``hub`` before the factory starts).

    *allowed_origins* are the web origins let in besides the gateway's own
    page (see :class:`OriginPolicy`).
    """

    protocol = GatewayProtocol  # type: ignore[assignment]

    hub: GatewayHub

    def __init__(
        self,
        clock: IReactorTime,
        url: str,
        max_frame_bytes: int,
        max_backlog_bytes: int = 1 << 20,
        allowed_origins: Iterable[str] = (),
    ) -> None:
        super().__init__(url)
        self.clock = clock
        self.max_backlog_bytes = max_backlog_bytes
        self.origin_policy = OriginPolicy.from_origins(allowed_origins)
        self.setProtocolOptions(
            maxFramePayloadSize=max_frame_bytes,
            maxMessagePayloadSize=max_frame_bytes,
            openHandshakeTimeout=0,
            closeHandshakeTimeout=0,
            autoPingInterval=0,
            failByDrop=False,
            # Autobahn's own check lets every origin through (its default "*"), "null" included, so that
            # onConnect decides for all of them and refuses with one clear 403.
            allowNullOrigin=True,
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
