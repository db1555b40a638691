"""The whole gateway over in-memory WebSockets: Autobahn both sides, iosim between, a Clock for time.

Logic is the real :class:`ChatLogic` on in-memory stores, reached through the
in-process logic client, so these tests cover the same code the embedded
default runs, minus sockets and SQLite.
"""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from gochat import errors
from gochat.gateway.hub import GatewayHub
from gochat.gateway.logic_client import LocalLogicClient
from gochat.gateway.session import SessionLimits
from gochat.gateway.websocket import GatewayFactory
from gochat.logic.batch_writer import BatchPolicy
from gochat.logic.chat import ChatLogic, ChatSettings, PasswordHasher
from gochat.logic.delivery import Deliverer
from gochat.logic.memory import (
    InMemoryAccountStore,
    InMemoryDeliveryBus,
    InMemoryGroupStore,
    InMemoryMessageStore,
    InMemoryRouteStore,
)
from gochat.logic.passwords import ScryptCost, hash_password, verify_password
from gochat.logic.persist import PersistWorker
from gochat.logic.sequencing import MessageIdGenerator
from gochat.logic.tokens import TokenSigner
from gochat.model import Delivery, Identity, StoredMessage
from tests.fakes import RecordingTransport

URL = "ws://127.0.0.1:8080/ws"
CHEAP = ScryptCost(n=2**4, r=1, p=1)


def run_now(function: Any, *args: Any) -> Deferred[object]:
    """Run a blocking function at once: the tests' stand-in for a thread pool."""
    return maybeDeferred(function, *args)


def build_logic(
    clock: Clock,
    messages: InMemoryMessageStore | None = None,
    max_pending: int = 100_000,
    accounts: InMemoryAccountStore | None = None,
    settings: ChatSettings | None = None,
) -> ChatLogic:
    """ChatLogic on in-memory stores with cheap password hashing, wired as the embedded default is."""
    routes, bus = InMemoryRouteStore(), InMemoryDeliveryBus()
    messages = messages if messages is not None else InMemoryMessageStore()
    worker: PersistWorker[None] = PersistWorker(
        messages,
        clock,
        BatchPolicy(max_batch=10, max_delay=0.005, max_pending=max_pending),
        Deliverer(routes, bus).batch_committed,
    )
    return ChatLogic(
        accounts=accounts if accounts is not None else InMemoryAccountStore(),
        persist=worker,
        messages=messages,
        groups=InMemoryGroupStore(),
        routes=routes,
        deliveries=bus,
        tokens=TokenSigner(b"k" * 32),
        hasher=PasswordHasher(run_now, lambda p: hash_password(p, CHEAP), verify_password),
        ids=MessageIdGenerator(1),
        clock=clock,
        settings=settings if settings is not None else ChatSettings(token_ttl=3600.0, max_body_length=100),
    )


class JsonClient(WebSocketClientProtocol):
    """A test client that keeps every frame it receives and how it was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.opened = False

    def onOpen(self) -> None:
        self.opened = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.received.append(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.close_code = code

    def send_json(self, frame_type: str, body: dict[str, Any] | None = None, request_id: str | None = None) -> None:
        envelope: dict[str, Any] = {"v": 1, "type": frame_type, "body": body or {}}
        if request_id is not None:
            envelope["id"] = request_id
        self.sendMessage(json.dumps(envelope).encode())

    def pop(self) -> dict[str, Any]:
        return self.received.pop(0)


class GatewayTestCase(SynchronousTestCase):
    limits = SessionLimits(auth_timeout=10.0, idle_timeout=60.0, close_timeout=5.0)
    max_frame_bytes = 4096
    chat_settings: ChatSettings | None = None

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000.0)
        self.messages = InMemoryMessageStore()
        self.logic = build_logic(self.clock, self.messages, settings=self.chat_settings)
        self.factory = GatewayFactory(self.clock, URL, self.max_frame_bytes)
        self.hub = GatewayHub("gw1", LocalLogicClient(self.logic), self.clock, self.limits, self.factory.prepare)
        self.factory.hub = self.hub
        self.hub.start()
        self.pumps: list[iosim.IOPump] = []
        self.tokens: dict[str, str] = {}

    def flush(self) -> None:
        for pump in self.pumps:
            pump.flush()

    def settle(self) -> None:
        """Let the batch writer commit and the frames it releases travel."""
        self.flush()
        self.clock.advance(0.01)
        self.flush()

    def tick(self, seconds: float) -> None:
        """Run the gateway's heartbeat loop for *seconds*."""
        for _ in range(int(seconds / self.hub.wheel.tick)):
            self.clock.advance(self.hub.wheel.tick)
            self.hub.tick()
            self.flush()

    def connect(self) -> JsonClient:
        server = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000 + len(self.pumps)))
        client_factory = WebSocketClientFactory(URL)
        client_factory.protocol = JsonClient
        client = client_factory.buildProtocol(None)
        assert isinstance(client, JsonClient)
        server_transport = iosim.FakeTransport(server, isServer=True)
        client_transport = iosim.FakeTransport(client, isServer=False)
        pump = iosim.connect(server, server_transport, client, client_transport, greet=False)
        self.pumps.append(pump)
        self.flush()
        self.assertTrue(client.opened)
        return client

    def user(self, name: str) -> str:
        if name not in self.tokens:
            self.successResultOf(self.logic.register(name, "password1"))
            self.tokens[name] = self.successResultOf(self.logic.login(name, "password1")).token
        return self.tokens[name]

    def login(self, name: str) -> JsonClient:
        client = self.connect()
        client.send_json("auth", {"token": self.user(name)}, "a")
        self.flush()
        self.assertEqual(client.pop()["type"], "auth_ok")
        return client


class ChatTests(GatewayTestCase):
    def test_two_clients_chat_both_ways(self) -> None:
        """Each sender gets an ack with msg_id and seq after the commit; each recipient a push."""
        alice, bob = self.login("alice"), self.login("bob")
        alice.send_json("send", {"client_msg_id": "a1", "to": "bob", "body": "hi bob"}, "r1")
        self.flush()
        self.assertEqual(alice.received, [])
        self.settle()
        ack = alice.pop()
        self.assertEqual((ack["type"], ack["id"], ack["body"]["seq"], ack["body"]["conv"]), ("ack", "r1", 1, "d:1:2"))
        push = bob.pop()
        self.assertEqual(push["type"], "push")
        self.assertEqual(
            {k: push["body"][k] for k in ("msg_id", "seq", "from", "body", "client_msg_id")},
            {"msg_id": ack["body"]["msg_id"], "seq": 1, "from": "alice", "body": "hi bob", "client_msg_id": "a1"},
        )
        bob.send_json("send", {"client_msg_id": "b1", "to": "alice", "body": "hi alice"}, "r2")
        self.settle()
        self.assertEqual(bob.pop()["body"]["seq"], 2)
        self.assertEqual(alice.pop()["body"]["body"], "hi alice")
        self.assertEqual((alice.received, bob.received), ([], []))

    def test_pushes_arrive_in_seq_order(self) -> None:
        """Many messages in flight at once reach the recipient in seq order, gap-free."""
        alice, bob = self.login("alice"), self.login("bob")
        for i in range(50):
            alice.send_json("send", {"client_msg_id": f"m{i}", "to": "bob", "body": str(i)}, str(i))
        self.settle()
        self.assertEqual([f["body"]["seq"] for f in bob.received], list(range(1, 51)))
        self.assertEqual([f["body"]["body"] for f in bob.received], [str(i) for i in range(50)])
        self.assertEqual(sorted(f["body"]["seq"] for f in alice.received), list(range(1, 51)))

    def test_retried_send_returns_same_ack(self) -> None:
        """A retry with the same client_msg_id gets the same ack and is stored and pushed once."""
        alice, bob = self.login("alice"), self.login("bob")
        alice.send_json("send", {"client_msg_id": "same", "to": "bob", "body": "once"}, "r1")
        alice.send_json("send", {"client_msg_id": "same", "to": "bob", "body": "once"}, "r2")
        self.settle()
        alice.send_json("send", {"client_msg_id": "same", "to": "bob", "body": "once"}, "r3")
        self.settle()
        acks = [alice.pop() for _ in range(3)]
        self.assertEqual([a["id"] for a in acks], ["r1", "r2", "r3"])
        self.assertEqual(len({json.dumps(a["body"], sort_keys=True) for a in acks}), 1)
        self.assertEqual(len(bob.received), 1)
        self.assertEqual(len(self.messages.messages), 1)

    def test_every_device_gets_every_message(self) -> None:
        """Bob's two devices get the push, framed once; Alice's other device gets her own message."""
        alice_phone, alice_laptop = self.login("alice"), self.login("alice")
        bob_phone, bob_laptop = self.login("bob"), self.login("bob")
        prepared_before = self.hub.frames_prepared
        alice_phone.send_json("send", {"client_msg_id": "x", "to": "bob", "body": "everywhere"}, "r")
        self.settle()
        self.assertEqual(alice_phone.pop()["type"], "ack")
        for device in (alice_laptop, bob_phone, bob_laptop):
            self.assertEqual(device.pop()["body"]["body"], "everywhere")
        self.assertEqual(alice_phone.received, [])
        self.assertEqual(self.hub.frames_prepared - prepared_before, 1)

    def test_send_to_unknown_user(self) -> None:
        """A send to a user who does not exist gets unknown_user; the session goes on."""
        alice = self.login("alice")
        alice.send_json("send", {"client_msg_id": "x", "to": "nobody", "body": "hello?"}, "r")
        self.settle()
        reply = alice.pop()
        self.assertEqual((reply["type"], reply["id"], reply["body"]["code"]), ("error", "r", "unknown_user"))
        alice.send_json("ping", request_id="p")
        self.flush()
        self.assertEqual(alice.pop()["type"], "pong")


class BadInputTests(GatewayTestCase):
    def test_oversize_frame_closes_1009(self) -> None:
        """A message over max_frame_bytes closes the connection with 1009; others keep chatting."""
        alice, bob = self.login("alice"), self.login("bob")
        alice.sendMessage(b"x" * (self.max_frame_bytes + 1))
        self.flush()
        self.assertEqual(alice.close_code, 1009)
        carol = self.login("carol")
        carol.send_json("send", {"client_msg_id": "c", "to": "bob", "body": "still here"}, "r")
        self.settle()
        self.assertEqual(bob.pop()["body"]["body"], "still here")

    def test_binary_frame_closes_4403(self) -> None:
        """A binary frame gets unsupported_frame and close 4403."""
        alice = self.login("alice")
        alice.sendMessage(b"\x00\xff", isBinary=True)
        self.flush()
        self.assertEqual(alice.pop()["body"]["code"], "unsupported_frame")
        self.assertEqual(alice.close_code, errors.CLOSE_UNSUPPORTED_FRAME)

    def test_forged_token_closes_4401(self) -> None:
        """A forged token gets invalid_token and close 4401; the route is never made."""
        self.user("alice")
        client = self.connect()
        token = self.tokens["alice"]
        client.send_json("auth", {"token": token[:-2] + "AA"}, "a")
        self.flush()
        self.assertEqual(client.pop()["body"]["code"], "invalid_token")
        self.assertEqual(client.close_code, errors.CLOSE_INVALID_TOKEN)
        self.assertEqual(self.hub.sessions, {})

    def test_expired_token_closes_4402(self) -> None:
        """A token past its lifetime gets token_expired and close 4402."""
        token = self.user("alice")
        self.clock.advance(3600.0 + 1)
        client = self.connect()
        client.send_json("auth", {"token": token}, "a")
        self.flush()
        self.assertEqual(client.pop()["body"]["code"], "token_expired")
        self.assertEqual(client.close_code, errors.CLOSE_TOKEN_EXPIRED)


class TimerTests(GatewayTestCase):
    def test_never_authenticates(self) -> None:
        """A client that never authenticates is closed with 4408 by the wheel; the hub forgets it."""
        client = self.connect()
        self.assertEqual(self.hub.live_sessions, 1)
        self.tick(self.limits.auth_timeout + 1)
        self.assertEqual(client.pop()["body"]["code"], "auth_timeout")
        self.assertEqual(client.close_code, errors.CLOSE_AUTH_TIMEOUT)
        self.assertEqual(self.hub.live_sessions, 0)
        self.assertEqual(len(self.hub.wheel), 0)

    def test_silent_client_is_closed(self) -> None:
        """An authenticated client that goes silent is closed at the idle timeout; a pinging one is not."""
        silent, chatty = self.login("alice"), self.login("bob")
        for _ in range(int(self.limits.idle_timeout / 20) + 1):
            chatty.send_json("ping")
            self.tick(20)
        self.assertEqual(silent.close_code, errors.CLOSE_IDLE_TIMEOUT)
        self.assertIsNone(chatty.close_code)
        (only,) = self.hub.sessions.values()
        self.assertEqual(only.identity, Identity(2, "bob"))

    def test_stop_closes_sessions_for_reconnect(self) -> None:
        """Stopping the hub closes every session with 4503 (reconnect elsewhere) and unsubscribes."""
        alice, bob = self.login("alice"), self.login("bob")
        self.hub.stop()
        self.flush()
        self.assertEqual((alice.close_code, bob.close_code), (errors.CLOSE_SHUTTING_DOWN, errors.CLOSE_SHUTTING_DOWN))
        self.assertEqual(self.hub.live_sessions, 0)
        self.assertTrue(self.hub.when_drained().called)


class ResumeTests(GatewayTestCase):
    def test_offline_user_gets_all_missed_messages_once_in_order(self) -> None:
        """100 messages sent while bob is away all come back on sync, in seq order, once, flagged complete."""
        self.user("bob")
        alice = self.login("alice")
        for i in range(100):
            alice.send_json("send", {"client_msg_id": f"m{i}", "to": "bob", "body": f"n{i}"}, str(i))
            if i % 20 == 19:
                self.settle()
        self.settle()
        self.assertEqual(len(alice.received), 100)
        bob = self.login("bob")
        bob.send_json("sync", {}, "y")
        self.flush()
        reply = bob.pop()
        self.assertEqual((reply["type"], reply["body"]["complete"]), ("sync_ok", True))
        (conv,) = reply["body"]["convs"]
        self.assertEqual([m["seq"] for m in conv["messages"]], list(range(1, 101)))
        self.assertEqual([m["body"] for m in conv["messages"]], [f"n{i}" for i in range(100)])
        self.assertEqual(bob.received, [])

        bob.send_json("recv_ack", {"conv": conv["conv"], "seq": 100}, "k")
        self.flush()
        self.assertEqual(bob.received, [], "answered once the hub's tick has handed it to logic")
        self.tick(self.hub.wheel.tick)
        self.assertEqual(bob.pop()["type"], "recv_ack_ok")
        other_device = self.login("bob")
        other_device.send_json("sync", {}, "y2")
        self.flush()
        self.assertEqual(other_device.pop()["body"], {"complete": True, "convs": []})

    def test_sync_in_pages(self) -> None:
        """With a limit, sync says it is incomplete; the client continues from the last seq it got."""
        self.user("bob")
        alice = self.login("alice")
        for i in range(25):
            alice.send_json("send", {"client_msg_id": f"m{i}", "to": "bob", "body": "x"}, str(i))
        self.settle()
        bob = self.login("bob")
        got: list[int] = []
        since: dict[str, int] = {}
        for _ in range(5):
            bob.send_json("sync", {"since": since, "limit": 10}, "y")
            self.flush()
            body = bob.pop()["body"]
            for conv in body["convs"]:
                got += [m["seq"] for m in conv["messages"]]
                since[conv["conv"]] = conv["messages"][-1]["seq"]
            if body["complete"]:
                break
        self.assertEqual(got, list(range(1, 26)))

    def test_cannot_sync_or_ack_other_peoples_conversations(self) -> None:
        """Naming someone else's conversation in since or recv_ack reveals and changes nothing."""
        self.user("bob")
        alice = self.login("alice")
        alice.send_json("send", {"client_msg_id": "secret", "to": "bob", "body": "for bob only"}, "s")
        self.settle()
        carol = self.login("carol")
        carol.send_json("sync", {"since": {"d:1:2": 0}}, "y")
        carol.send_json("recv_ack", {"conv": "d:1:2", "seq": 1}, "k")
        self.flush()
        self.tick(self.hub.wheel.tick)
        self.assertEqual(carol.pop()["body"], {"complete": True, "convs": []})
        self.assertEqual(carol.pop()["type"], "recv_ack_ok")
        bob = self.login("bob")
        bob.send_json("sync", {}, "y")
        self.flush()
        self.assertEqual(len(bob.pop()["body"]["convs"][0]["messages"]), 1)


class RouteRefreshTests(GatewayTestCase):
    def test_lost_routes_come_back_with_the_next_refresh(self) -> None:
        """When the route store loses a gateway's routes (a Redis flush), the periodic refresh restores them."""
        alice, bob = self.login("alice"), self.login("bob")
        routes = self.logic.routes
        everything = self.successResultOf(routes.routes([1, 2]))
        for user_id, user_routes in everything.items():
            for route in user_routes:
                self.successResultOf(routes.remove(user_id, route))
        alice.send_json("send", {"client_msg_id": "lost", "to": "bob", "body": "nobody routed"}, "1")
        self.settle()
        self.assertEqual(alice.pop()["type"], "ack")
        self.assertEqual(bob.received, [], "no route, no push (bob would recover it by sync)")
        for _ in range(4):
            alice.send_json("ping")
            bob.send_json("ping")
            self.tick(10)
        alice.received.clear()
        bob.received.clear()
        alice.send_json("send", {"client_msg_id": "found", "to": "bob", "body": "routed again"}, "2")
        self.settle()
        self.assertEqual(bob.pop()["body"]["body"], "routed again")


class IsolationTests(GatewayTestCase):
    def test_delivery_for_someone_elses_conversation_is_dropped(self) -> None:
        """A stale route naming a session of another user never makes it receive the message."""
        alice = self.login("alice")
        (session_id,) = self.hub.sessions
        message = StoredMessage(1, "d:2:3", 1, 2, "bob", "x", "not for alice", 0)
        self.hub.deliver(Delivery("gw1", (session_id,), (2,), message))
        self.flush()
        self.assertEqual(alice.received, [])
        self.flushLoggedErrors()

    def test_session_ids_differ_across_gateway_incarnations(self) -> None:
        """A gateway restarted under the same id gives its sessions ids its previous run never used."""
        other = GatewayHub("gw1", self.hub.logic, self.clock, self.limits, self.factory.prepare)
        first = self.connect()
        self.assertTrue(first.opened)
        (old_id,) = self.hub._live
        new_session = other.connection_made(RecordingTransport())
        self.assertNotEqual(new_session.session_id, old_id)


class PresenceTests(GatewayTestCase):
    def test_contacts_presence_over_devices(self) -> None:
        """A user sees whether contacts are online on any device; strangers and unknown names are left out."""
        alice, bob = self.login("alice"), self.login("bob")
        bob_laptop = self.login("bob")
        self.login("carol")
        alice.send_json("send", {"client_msg_id": "hi", "to": "bob", "body": "hi"}, "s")
        self.settle()
        alice.received.clear()
        alice.send_json("presence", {"users": ["Bob", "carol", "nobody"]}, "p1")
        self.settle()
        self.assertEqual(alice.pop(), {"v": 1, "type": "presence_ok", "id": "p1", "body": {"users": {"bob": "online"}}})
        bob.transport.loseConnection()
        self.flush()
        alice.send_json("presence", {"users": ["bob"]}, "p2")
        self.settle()
        self.assertEqual(alice.pop()["body"]["users"], {"bob": "online"}, "still online on his laptop")
        bob_laptop.transport.loseConnection()
        self.flush()
        alice.send_json("presence", {"users": ["bob"]}, "p3")
        self.settle()
        self.assertEqual(alice.pop()["body"]["users"], {"bob": "offline"})

    def test_bad_presence_requests(self) -> None:
        """An empty or malformed user list is a bad_request."""
        alice = self.login("alice")
        for body in ({}, {"users": []}, {"users": "bob"}, {"users": [1]}, {"users": ["x" * 33]}):
            alice.send_json("presence", body, "p")
            self.flush()
            self.assertEqual(alice.pop()["body"]["code"], "bad_request", body)
