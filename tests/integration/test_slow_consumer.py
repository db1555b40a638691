"""A client that stops reading is closed with slow_consumer (4410) and the gateway's backlog for it stays bounded.

Real TCP on 127.0.0.1: the client completes the WebSocket handshake and
authenticates, then stops reading; the gateway keeps pushing. Twisted pauses
the connection's producer once the socket buffers are full, the gateway
counts what it writes while paused and closes the session past its limit.
The client then reads everything it was sent and finds the close frame.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from gochat import errors
from gochat.gateway.hub import GatewayHub
from gochat.gateway.session import SessionLimits
from gochat.gateway.websocket import GatewayFactory, GatewayWebSocketResource
from gochat.model import Delivery, StoredMessage
from tests.fakes import ScriptedLogic

BACKLOG_LIMIT = 64 * 1024


def masked_text_frame(payload: bytes) -> bytes:
    """A client-to-server text frame (clients must mask)."""
    mask = os.urandom(4)
    header = bytes([0x81])
    if len(payload) < 126:
        header += bytes([0x80 | len(payload)])
    else:
        header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Split unmasked server frames into (opcode, payload); stops at a partial frame."""
    frames, i = [], 0
    while i + 2 <= len(data):
        opcode, length = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if length == 126:
            (length,) = struct.unpack("!H", data[i : i + 2])
            i += 2
        elif length == 127:
            (length,) = struct.unpack("!Q", data[i : i + 8])
            i += 8
        if i + length > len(data):
            break
        frames.append((opcode, data[i : i + length]))
        i += length
    return frames


class StallingClient(Protocol):
    """Handshakes, authenticates, then stops reading until told to drain."""

    def __init__(self) -> None:
        self.received = b""
        self.upgraded: Deferred[None] = Deferred()
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(  # type: ignore[union-attr]
            (
                "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.upgraded.called and b"\r\n\r\n" in self.received:
            head, self.received = self.received.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 101"), head
            self.upgraded.callback(None)

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)


class SlowConsumerTests(TestCase):
    timeout = 60

    async def test_stalled_reader_is_closed_with_4410(self) -> None:
        """Pushes to a client that stopped reading end in close 4410 after a bounded backlog."""
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint

        logic = ScriptedLogic()
        factory = GatewayFactory(reactor, "ws://127.0.0.1/ws", 65536, max_backlog_bytes=BACKLOG_LIMIT)
        hub = GatewayHub("gw1", logic, reactor, SessionLimits(), factory.prepare)
        factory.hub = hub
        root = Resource()
        root.putChild(b"ws", GatewayWebSocketResource(factory))
        port = reactor.listenTCP(0, Site(root, reactor=reactor), interface="127.0.0.1")
        self.addCleanup(port.stopListening)

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        client = StallingClient()
        await endpoint.connect(Factory.forProtocol(lambda: client))
        await client.upgraded
        client.transport.write(  # type: ignore[union-attr]
            masked_text_frame(
                json.dumps({"v": 1, "type": "auth", "id": "a", "body": {"token": "alice-token"}}).encode()
            )
        )
        while not hub.sessions:
            await deferLater(reactor, 0.01, lambda: None)
        (session_id,) = hub.sessions
        session = hub.sessions[session_id]
        client.transport.pauseProducing()  # type: ignore[union-attr]

        body = "x" * 1000
        seq = 0
        for _ in range(2000):
            if not session.accepts_deliveries:
                break
            for _ in range(50):
                seq += 1
                message = StoredMessage(seq, "d:1:2", seq, 2, "bob", f"m{seq}", body, 0)
                hub.deliver(Delivery("gw1", (session_id,), (1,), message))
            await deferLater(reactor, 0, lambda: None)
        self.assertFalse(session.accepts_deliveries, "the stalled session was never closed")
        connection: Any = hub._connections[session_id]
        self.assertLessEqual(connection._backlog, BACKLOG_LIMIT + len(body) + 200)

        client.transport.resumeProducing()  # type: ignore[union-attr]
        while not server_frames(client.received) or server_frames(client.received)[-1][0] != 8:
            await deferLater(reactor, 0.01, lambda: None)
        client.transport.loseConnection()  # type: ignore[union-attr]
        await client.closed
        frames = server_frames(client.received)
        texts = [json.loads(p) for op, p in frames if op == 1]
        close = [p for op, p in frames if op == 8]
        self.assertEqual(texts[0]["type"], "auth_ok")
        pushes = [t["body"]["seq"] for t in texts if t["type"] == "push"]
        self.assertEqual(pushes, list(range(1, len(pushes) + 1)), "what arrived is a gap-free prefix")
        self.assertLess(len(pushes), seq, "the flood was cut off")
        self.assertEqual(texts[-1]["body"]["code"], "slow_consumer")
        self.assertEqual(struct.unpack("!H", close[0][:2])[0], errors.CLOSE_SLOW_CONSUMER)
