"""The gRPC bridge for real: a logic gRPC server on 127.0.0.1 and the gateway's client talking to it.

The logic behind the server is the production composition
(:func:`gochat.logic.service.build` on SQLite in a temporary directory),
with a cheap scrypt cost so that hashing passwords takes no time.
"""

from __future__ import annotations

import collections
import pathlib
from collections.abc import Generator
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.trial.unittest import TestCase

from gochat.errors import ErrorCode, GochatError
from gochat.grpc_bridge import GrpcLogicClient, GrpcServerService, LogicServicer
from gochat.logic import service as logic_service
from gochat.logic.passwords import ScryptCost
from gochat.logic.tokens import TokenSigner, load_or_create_secret
from gochat.model import Ack, Delivery, Identity, LoginResult, SendCommand
from tests.integration.support import bounded, free_port

PASSWORD = "correct horse battery"
CHEAP_SCRYPT = ScryptCost(n=2**4, r=1, p=1)
WAIT = 20.0


class WatchedDeliveryBus:
    """The logic's delivery bus, wrapped so a test can wait until a gateway's stream has subscribed.

    The gateway's stream subscribes on a gRPC thread some time after
    :meth:`GrpcLogicClient.subscribe` returns; deliveries published before
    that are (rightly) not for it.
    """

    def __init__(self, bus: Any, reactor: Any) -> None:
        self._bus = bus
        self._reactor = reactor
        self.subscribed: set[str] = set()
        self._waiters: dict[str, list[Deferred[None]]] = collections.defaultdict(list)

    def publish(self, delivery: Delivery) -> Deferred[None]:
        result: Deferred[None] = self._bus.publish(delivery)
        return result

    def subscribe(self, gateway_id: str, handler: Any) -> Any:
        subscription = self._bus.subscribe(gateway_id, handler)
        self.subscribed.add(gateway_id)
        for waiter in self._waiters.pop(gateway_id, []):
            waiter.callback(None)
        return subscription

    def when_subscribed(self, gateway_id: str) -> Deferred[None]:
        if gateway_id in self.subscribed:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters[gateway_id].append(d)
        return bounded(d, self._reactor, WAIT, f"the delivery stream of {gateway_id} to subscribe")


class DeliveryQueue:
    """Collects deliveries handed to a subscription handler; :meth:`next` takes them in order."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._received: collections.deque[Delivery] = collections.deque()
        self._waiters: collections.deque[Deferred[Delivery]] = collections.deque()

    def __call__(self, delivery: Delivery) -> None:
        if self._waiters:
            self._waiters.popleft().callback(delivery)
        else:
            self._received.append(delivery)

    def next(self) -> Deferred[Delivery]:
        if self._received:
            return succeed(self._received.popleft())
        d: Deferred[Delivery] = Deferred()
        self._waiters.append(d)
        return bounded(d, self._reactor, WAIT, "a delivery")


class GrpcBridgeTests(TestCase):
    """:class:`GrpcLogicClient` against :class:`GrpcServerService` serving a real :class:`ChatLogic`."""

    timeout = 60

    def setUp(self) -> Deferred[int]:  # type: ignore[override]  # trial waits for a Deferred from setUp
        from twisted.internet import reactor as global_reactor

        reactor: Any = global_reactor
        self.reactor = reactor
        self.config = logic_service.LogicConfig(
            data_dir=pathlib.Path(self.mktemp()), grpc_listen=None, scrypt=CHEAP_SCRYPT
        )
        self.logic = logic_service.build(self.config, reactor)
        self.bus = WatchedDeliveryBus(self.logic.chat.deliveries, reactor)
        self.logic.chat.deliveries = self.bus
        self.logic.startService()
        self.addCleanup(self.logic.stopService)

        self.server = GrpcServerService(LogicServicer(self.logic.chat, reactor), "127.0.0.1:0", reactor, max_workers=8)
        self.server.startService()
        self.addCleanup(self.server.stopService)
        self.assertTrue(self.server.port)

        self.client = GrpcLogicClient(f"127.0.0.1:{self.server.port}", reactor, timeout=WAIT)
        self.addCleanup(self.client.close)
        ready: Deferred[int] = self.logic.store.ready
        return ready

    @inlineCallbacks
    def sign_up(self, username: str) -> Generator[Deferred[Any], Any, LoginResult]:
        """Register and log in *username*; fires with the :class:`LoginResult`."""
        yield self.client.register(username, PASSWORD)
        result: LoginResult = yield self.client.login(username, PASSWORD)
        return result

    def command(self, sender: Identity, to: str, client_msg_id: str, body: str, route: tuple[str, str]) -> SendCommand:
        return SendCommand(
            sender_id=sender.user_id,
            sender=sender.username,
            gateway_id=route[0],
            session_id=route[1],
            client_msg_id=client_msg_id,
            to_username=to,
            body=body,
        )

    @inlineCallbacks
    def assert_fails_with(self, d: Deferred[Any], code: ErrorCode) -> Generator[Deferred[Any], Any, GochatError]:
        error: GochatError = yield self.assertFailure(d, GochatError)
        self.assertEqual(error.code, code, str(error))
        return error

    # Accounts and sessions.

    @inlineCallbacks
    def test_register_login_connect(self) -> Generator[Deferred[Any], Any, None]:
        user_id = yield self.client.register("alice", PASSWORD)
        self.assertIsInstance(user_id, int)
        self.assertGreater(user_id, 0)

        login = yield self.client.login("Alice", PASSWORD)
        self.assertIsInstance(login, LoginResult)
        self.assertEqual(login.user_id, user_id)
        self.assertTrue(login.token)
        self.assertGreater(login.expires_at, self.reactor.seconds())

        identity = yield self.client.connect(login.token, "gw-1", "s-1")
        self.assertEqual(identity, Identity(user_id, "alice"))

    @inlineCallbacks
    def test_disconnect_removes_the_route(self) -> Generator[Deferred[Any], Any, None]:
        login = yield self.sign_up("alice")
        identity = yield self.client.connect(login.token, "gw-1", "s-1")
        routes = yield self.logic.chat.routes.routes({identity.user_id})
        self.assertEqual(len(routes[identity.user_id]), 1)

        result = yield self.client.disconnect(identity, "gw-1", "s-1")
        self.assertIsNone(result)
        routes = yield self.logic.chat.routes.routes({identity.user_id})
        self.assertEqual(routes[identity.user_id], set())

    # Messages.

    @inlineCallbacks
    def test_send_acks_in_sequence_and_a_retry_gets_the_same_ack(self) -> Generator[Deferred[Any], Any, None]:
        alice_login = yield self.sign_up("alice")
        yield self.sign_up("bob")
        alice = yield self.client.connect(alice_login.token, "gw-1", "s-1")

        first = yield self.client.send(self.command(alice, "bob", "c-1", "hello bob", ("gw-1", "s-1")))
        self.assertIsInstance(first, Ack)
        self.assertEqual((first.client_msg_id, first.seq), ("c-1", 1))
        self.assertGreater(first.msg_id, 0)
        self.assertTrue(first.conv)
        self.assertGreater(first.ts, 0)

        second = yield self.client.send(self.command(alice, "bob", "c-2", "are you there?", ("gw-1", "s-1")))
        self.assertEqual((second.client_msg_id, second.seq, second.conv), ("c-2", 2, first.conv))
        self.assertGreater(second.msg_id, first.msg_id)

        retried = yield self.client.send(self.command(alice, "bob", "c-1", "hello bob", ("gw-1", "s-1")))
        self.assertEqual(retried, first)

    @inlineCallbacks
    def test_deliveries_reach_the_subscribed_gateway(self) -> Generator[Deferred[Any], Any, None]:
        deliveries = DeliveryQueue(self.reactor)
        self.client.subscribe("gw-b", deliveries)
        yield self.bus.when_subscribed("gw-b")

        alice_login = yield self.sign_up("alice")
        bob_login = yield self.sign_up("bob")
        alice = yield self.client.connect(alice_login.token, "gw-a", "s-a1")
        yield self.client.connect(alice_login.token, "gw-b", "s-a2")
        bob = yield self.client.connect(bob_login.token, "gw-b", "s-b1")
        yield self.client.connect(bob_login.token, "gw-b", "s-b2")

        acks = []
        for n in (1, 2):
            ack = yield self.client.send(self.command(alice, "bob", f"c-{n}", f"message {n}", ("gw-a", "s-a1")))
            acks.append(ack)

        for n, ack in enumerate(acks, start=1):
            delivery = yield deliveries.next()
            self.assertEqual(delivery.gateway_id, "gw-b")
            self.assertEqual(sorted(delivery.session_ids), ["s-a2", "s-b1", "s-b2"])
            message = delivery.message
            self.assertEqual(
                (message.msg_id, message.conv, message.seq, message.ts), (ack.msg_id, ack.conv, ack.seq, ack.ts)
            )
            self.assertEqual(message.seq, n)
            self.assertEqual((message.sender_id, message.sender), (alice.user_id, "alice"))
            self.assertEqual((message.client_msg_id, message.body), (f"c-{n}", f"message {n}"))

        reply = yield self.client.send(self.command(bob, "alice", "r-1", "hi alice", ("gw-b", "s-b1")))
        delivery = yield deliveries.next()
        self.assertEqual(sorted(delivery.session_ids), ["s-a2", "s-b2"], "never back to the sending session")
        self.assertEqual((delivery.message.seq, delivery.message.sender), (reply.seq, "bob"))
        self.assertEqual(reply.seq, 3)

    # Errors.

    @inlineCallbacks
    def test_username_taken(self) -> Generator[Deferred[Any], Any, None]:
        yield self.client.register("alice", PASSWORD)
        yield self.assert_fails_with(self.client.register("ALICE", PASSWORD), ErrorCode.USERNAME_TAKEN)

    @inlineCallbacks
    def test_bad_request(self) -> Generator[Deferred[Any], Any, None]:
        yield self.assert_fails_with(self.client.register("alice", "short"), ErrorCode.BAD_REQUEST)

    @inlineCallbacks
    def test_bad_credentials(self) -> Generator[Deferred[Any], Any, None]:
        yield self.client.register("alice", PASSWORD)
        yield self.assert_fails_with(self.client.login("alice", "wrong password"), ErrorCode.BAD_CREDENTIALS)
        yield self.assert_fails_with(self.client.login("nobody", PASSWORD), ErrorCode.BAD_CREDENTIALS)

    @inlineCallbacks
    def test_forged_token_is_invalid(self) -> Generator[Deferred[Any], Any, None]:
        user_id = yield self.client.register("alice", PASSWORD)
        forger = TokenSigner(b"not the logic service's secret!!" * 2)
        token, _ = forger.issue(Identity(user_id, "alice"), self.reactor.seconds(), 3600.0)
        error = yield self.assert_fails_with(self.client.connect(token, "gw-1", "s-1"), ErrorCode.INVALID_TOKEN)
        self.assertTrue(error.message)
        yield self.assert_fails_with(self.client.connect("garbage", "gw-1", "s-1"), ErrorCode.INVALID_TOKEN)

    @inlineCallbacks
    def test_expired_token(self) -> Generator[Deferred[Any], Any, None]:
        user_id = yield self.client.register("alice", PASSWORD)
        signer = TokenSigner(load_or_create_secret(self.config.token_secret_path))
        token, _ = signer.issue(Identity(user_id, "alice"), self.reactor.seconds() - 120.0, 60.0)
        yield self.assert_fails_with(self.client.connect(token, "gw-1", "s-1"), ErrorCode.TOKEN_EXPIRED)

    @inlineCallbacks
    def test_unknown_recipient(self) -> Generator[Deferred[Any], Any, None]:
        login = yield self.sign_up("alice")
        alice = yield self.client.connect(login.token, "gw-1", "s-1")
        yield self.assert_fails_with(
            self.client.send(self.command(alice, "nobody", "c-1", "anyone?", ("gw-1", "s-1"))),
            ErrorCode.UNKNOWN_USER,
        )


class UnreachableLogicTests(TestCase):
    """A client whose logic server cannot be reached fails its calls with ``unavailable``."""

    timeout = 60

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor: Any = reactor

    @inlineCallbacks
    def test_closed_port_is_unavailable(self) -> Generator[Deferred[Any], Any, None]:
        client = GrpcLogicClient(f"127.0.0.1:{free_port()}", self.reactor, timeout=2.0)
        self.addCleanup(client.close)
        error = yield self.assertFailure(client.register("alice", PASSWORD), GochatError)
        self.assertEqual(error.code, ErrorCode.UNAVAILABLE)

    @inlineCallbacks
    def test_call_after_close_is_unavailable(self) -> Generator[Deferred[Any], Any, None]:
        client = GrpcLogicClient(f"127.0.0.1:{free_port()}", self.reactor, timeout=2.0)
        client.close()
        error = yield self.assertFailure(client.login("alice", PASSWORD), GochatError)
        self.assertEqual(error.code, ErrorCode.UNAVAILABLE)
