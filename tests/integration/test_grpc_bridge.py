"""The gRPC bridge for real: a logic gRPC server on 127.0.0.1 and the gateway's client talking to it.

The logic behind the server is the production composition
(:func:`gochat.logic.service.build` on SQLite in a temporary directory),
with a cheap scrypt cost so that hashing passwords takes no time.
"""

from __future__ import annotations

import collections
import json
import pathlib
from collections.abc import Generator
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.trial.unittest import TestCase

from gochat.errors import ErrorCode, GochatError
from gochat.grpc_bridge import GrpcLogicClient, GrpcServerService, LogicServicer
from gochat.logic import service as logic_service
from gochat.logic.chat import ChatSettings
from gochat.logic.passwords import ScryptCost
from gochat.logic.tokens import TokenSigner, load_or_create_secret
from gochat.model import (
    Ack,
    ConversationInfo,
    Delivery,
    GroupInfo,
    HistoryPage,
    Identity,
    LoginResult,
    MemberInfo,
    MessageKind,
    SendCommand,
    Signal,
    SignalKind,
)
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
        if delivery.signal is not None and delivery.signal.kind == SignalKind.PRESENCE:
            return  # Presence notices race with the calls here; tests/test_presence.py follows them.
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


class BridgeTestCase(TestCase):
    """A real :class:`ChatLogic` served by :class:`GrpcServerService`, and a :class:`GrpcLogicClient` talking to it."""

    timeout = 60
    #: The logic's settings for the tests of this class.
    chat_settings = ChatSettings()

    def setUp(self) -> Deferred[int]:  # type: ignore[override]  # trial waits for a Deferred from setUp
        from twisted.internet import reactor as global_reactor

        reactor: Any = global_reactor
        self.reactor = reactor
        self.config = logic_service.LogicConfig(
            data_dir=pathlib.Path(self.mktemp()), grpc_listen=None, scrypt=CHEAP_SCRYPT, chat=self.chat_settings
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
        self.tokens: dict[str, str] = {}
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
    def people(self, *usernames: str) -> Generator[Deferred[Any], Any, list[Identity]]:
        """Sign up each of *usernames*; fires with their identities (their tokens go to ``self.tokens``)."""
        identities = []
        for username in usernames:
            login = yield self.sign_up(username)
            self.tokens[username] = login.token
            identities.append(Identity(login.user_id, username))
        return identities

    def say(
        self,
        sender: Identity,
        conv: str,
        client_msg_id: str,
        body: str,
        kind: str = MessageKind.TEXT,
        ref_seq: int = 0,
        route: tuple[str, str] = ("gw-x", "s-x"),
    ) -> Deferred[Ack]:
        """Send into the conversation *conv* (a group), text or an edit or recall of *ref_seq*."""
        command = SendCommand(
            sender_id=sender.user_id,
            sender=sender.username,
            gateway_id=route[0],
            session_id=route[1],
            client_msg_id=client_msg_id,
            to_username="",
            body=body,
            conv=conv,
            kind=kind,
            ref_seq=ref_seq,
        )
        return self.client.send(command)

    @inlineCallbacks
    def assert_fails_with(self, d: Deferred[Any], code: ErrorCode) -> Generator[Deferred[Any], Any, GochatError]:
        error: GochatError = yield self.assertFailure(d, GochatError)
        self.assertEqual(error.code, code, str(error))
        return error


class GrpcBridgeTests(BridgeTestCase):
    """:class:`GrpcLogicClient` against :class:`GrpcServerService` serving a real :class:`ChatLogic`."""

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
            self.assertEqual(
                sorted(zip(delivery.session_ids, delivery.user_ids, strict=True)),
                [("s-a2", alice.user_id), ("s-b1", bob.user_id), ("s-b2", bob.user_id)],
                "each session with the user it was routed for",
            )
            self.assertIsNone(delivery.signal)
            message = delivery.message
            assert message is not None
            self.assertEqual(
                (message.msg_id, message.conv, message.seq, message.ts), (ack.msg_id, ack.conv, ack.seq, ack.ts)
            )
            self.assertEqual(message.seq, n)
            self.assertEqual((message.sender_id, message.sender), (alice.user_id, "alice"))
            self.assertEqual((message.client_msg_id, message.body), (f"c-{n}", f"message {n}"))

        reply = yield self.client.send(self.command(bob, "alice", "r-1", "hi alice", ("gw-b", "s-b1")))
        delivery = yield deliveries.next()
        self.assertEqual(sorted(delivery.session_ids), ["s-a2", "s-b2"], "never back to the sending session")
        assert delivery.message is not None
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


class GroupBridgeTests(BridgeTestCase):
    """Groups, history, read receipts, typing and edits through the bridge: each answer equals ChatLogic's own."""

    @inlineCallbacks
    def test_group_lifecycle(self) -> Generator[Deferred[Any], Any, None]:
        alice, bob, carol = yield self.people("alice", "bob", "carol")
        group = yield self.client.create_group(alice, "Climbers \N{MOUNTAIN}", ["bob"])
        self.assertIsInstance(group, GroupInfo)
        self.assertEqual((group.name, group.member_count, group.role), ("Climbers \N{MOUNTAIN}", 2, "owner"))
        self.assertEqual(group.conv, f"g:{group.group_id}")
        gid = group.group_id

        added = yield self.client.add_members(alice, gid, ["carol"], "admin")
        self.assertEqual([(m.user_id, m.username, m.role) for m in added], [(carol.user_id, "carol", "admin")])
        self.assertIsInstance(added[0], MemberInfo)
        self.assertGreater(added[0].joined_seq, 0, "a new member sees the group from when they joined")

        members = yield self.client.members(bob.user_id, gid)
        self.assertEqual(
            [(m.username, m.role) for m in members], [("alice", "owner"), ("bob", "member"), ("carol", "admin")]
        )
        local_members = yield self.logic.chat.members(bob.user_id, gid)
        self.assertEqual(members, local_members)
        groups = yield self.client.groups(bob.user_id)
        self.assertEqual(groups, [GroupInfo(gid, group.conv, group.name, group.created_at, 3, "member")])

        self.assertIsNone((yield self.client.set_role(alice, gid, "bob", "admin")))
        self.assertIsNone((yield self.client.remove_member(alice, gid, "carol")))
        self.assertIsNone((yield self.client.leave_group(alice, gid)))
        members = yield self.client.members(bob.user_id, gid)
        self.assertEqual([(m.username, m.role) for m in members], [("bob", "owner")], "the admin took over")
        self.assertEqual((yield self.client.groups(alice.user_id)), [])
        self.assertEqual((yield self.client.groups(carol.user_id)), [])

        page = yield self.client.history(bob.user_id, group.conv, None, None, 50)
        events = [json.loads(m.body) for m in page.messages]
        self.assertEqual({m.kind for m in page.messages}, {MessageKind.MEMBER})
        self.assertEqual(
            [e["action"] for e in events], ["created", "added", "role", "removed", "left"], "every change is an event"
        )
        self.assertEqual({e["by"] for e in events}, {"alice"}, "the caller's identity crossed the wire")

    @inlineCallbacks
    def test_messages_edits_history_reads_and_the_conversation_list(self) -> Generator[Deferred[Any], Any, None]:
        alice, bob = yield self.people("alice", "bob")
        group = yield self.client.create_group(alice, "Pair", ["bob"])
        conv = group.conv
        first = yield self.say(alice, conv, "c-1", "hello")
        edit = yield self.say(alice, conv, "c-2", "hello, all", MessageKind.EDIT, first.seq)
        self.assertEqual((first.conv, edit.conv, edit.seq), (conv, conv, first.seq + 1))

        page = yield self.client.history(bob.user_id, conv, None, None, 50)
        self.assertIsInstance(page, HistoryPage)
        self.assertEqual(page.conv, conv)
        self.assertEqual(
            [(m.seq, m.kind, m.ref_seq, m.body) for m in page.messages[1:]],
            [(first.seq, "text", 0, "hello"), (edit.seq, "edit", first.seq, "hello, all")],
        )
        self.assertEqual(page.messages[0].kind, MessageKind.MEMBER)
        self.assertEqual(page, (yield self.logic.chat.history(bob.user_id, conv, None, None, 50)))

        newest = yield self.client.history(bob.user_id, conv, None, None, 2)
        oldest = yield self.client.history(bob.user_id, conv, None, 0, 2)
        before = yield self.client.history(bob.user_id, conv, edit.seq, None, 1)
        self.assertEqual([m.seq for m in newest.messages], [first.seq, edit.seq], "no bound: the newest")
        self.assertEqual([m.seq for m in oldest.messages], [1, first.seq], "after 0 is a bound, not none")
        self.assertEqual([m.seq for m in before.messages], [first.seq])

        (unread,) = yield self.client.conversation_list(bob.user_id)
        self.assertIsInstance(unread, ConversationInfo)
        self.assertEqual((unread.conv, unread.title, unread.last_seq), (conv, "Pair", edit.seq))
        self.assertGreater(unread.unread, 0)
        self.assertEqual([unread], (yield self.logic.chat.conversation_list(bob.user_id)))

        read_seq = yield self.client.mark_read(bob, conv, edit.seq, "gw-b", "s-b1")
        self.assertEqual(read_seq, edit.seq)
        (read,) = yield self.client.conversation_list(bob.user_id)
        self.assertEqual((read.read_seq, read.unread), (edit.seq, 0))
        page = yield self.client.history(alice.user_id, conv, None, None, 50)
        self.assertEqual(page.reads["bob"], edit.seq)
        self.assertEqual(page.reads, (yield self.logic.chat.history(alice.user_id, conv, None, None, 50)).reads)

    @inlineCallbacks
    def test_signals_and_group_messages_reach_the_gateway(self) -> Generator[Deferred[Any], Any, None]:
        deliveries = DeliveryQueue(self.reactor)
        self.client.subscribe("gw-b", deliveries)
        yield self.bus.when_subscribed("gw-b")
        alice, bob = yield self.people("alice", "bob")
        group = yield self.client.create_group(alice, "Pair", ["bob"])
        yield self.client.connect(self.tokens["alice"], "gw-a", "s-a1")
        yield self.client.connect(self.tokens["bob"], "gw-b", "s-b1")
        yield self.client.connect(self.tokens["bob"], "gw-b", "s-b2")

        yield self.client.typing(alice, group.conv)
        typing = yield deliveries.next()
        self.assertIsNone(typing.message)
        self.assertIsInstance(typing.signal, Signal)
        assert typing.signal is not None
        self.assertEqual(
            (typing.signal.kind, typing.signal.conv, typing.signal.user_id, typing.signal.username),
            (SignalKind.TYPING, group.conv, alice.user_id, "alice"),
        )
        self.assertGreater(typing.signal.ts, 0)
        self.assertEqual(sorted(typing.session_ids), ["s-b1", "s-b2"])
        self.assertEqual(typing.user_ids, (bob.user_id, bob.user_id))

        ack = yield self.say(alice, group.conv, "c-1", "hello", route=("gw-a", "s-a1"))
        message = yield deliveries.next()
        assert message.message is not None
        self.assertIsNone(message.signal)
        self.assertEqual((message.message.seq, message.message.kind), (ack.seq, MessageKind.TEXT))
        self.assertEqual(
            sorted(zip(message.session_ids, message.user_ids, strict=True)),
            [("s-b1", bob.user_id), ("s-b2", bob.user_id)],
        )

        edit = yield self.say(alice, group.conv, "c-2", "hello!", MessageKind.EDIT, ack.seq, ("gw-a", "s-a1"))
        changed = yield deliveries.next()
        assert changed.message is not None
        self.assertEqual(
            (changed.message.seq, changed.message.kind, changed.message.ref_seq, changed.message.body),
            (edit.seq, MessageKind.EDIT, ack.seq, "hello!"),
        )

        yield self.client.mark_read(bob, group.conv, edit.seq, "gw-b", "s-b1")
        read = yield deliveries.next()
        self.assertEqual(
            (read.session_ids, read.user_ids, read.message),
            (("s-b2",), (bob.user_id,), None),
            "bob's other device is told, not the one that read",
        )
        assert read.signal is not None
        self.assertEqual(read.signal, Signal(SignalKind.READ, group.conv, bob.user_id, "bob", edit.seq, read.signal.ts))


class RefusalBridgeTests(BridgeTestCase):
    """Every refusal of the group features reaches the gateway with its stable code."""

    #: Groups of three at most; every recall comes after its (negative) window has closed.
    chat_settings = ChatSettings(max_group_size=3, recall_window=-1.0)

    @inlineCallbacks
    def test_refusals(self) -> Generator[Deferred[Any], Any, None]:
        alice, bob, _, dave = yield self.people("alice", "bob", "carol", "dave")
        yield self.assert_fails_with(
            self.client.create_group(alice, "Four", ["bob", "carol", "dave"]), ErrorCode.GROUP_FULL
        )
        group = yield self.client.create_group(alice, "Three", ["bob", "carol"])
        gid, conv = group.group_id, group.conv

        yield self.assert_fails_with(self.client.add_members(alice, gid, ["dave"], "member"), ErrorCode.GROUP_FULL)
        yield self.assert_fails_with(self.client.add_members(bob, gid, ["dave"], "member"), ErrorCode.FORBIDDEN)
        yield self.assert_fails_with(self.client.set_role(bob, gid, "carol", "admin"), ErrorCode.FORBIDDEN)
        yield self.assert_fails_with(self.client.remove_member(bob, gid, "alice"), ErrorCode.FORBIDDEN)
        yield self.assert_fails_with(self.client.add_members(alice, gid, ["nobody"], "member"), ErrorCode.UNKNOWN_USER)

        yield self.assert_fails_with(self.client.members(dave.user_id, gid), ErrorCode.NOT_MEMBER)
        yield self.assert_fails_with(self.client.leave_group(dave, gid), ErrorCode.NOT_MEMBER)
        yield self.assert_fails_with(self.client.history(dave.user_id, conv, None, None, 10), ErrorCode.NOT_MEMBER)
        yield self.assert_fails_with(self.client.typing(dave, conv), ErrorCode.NOT_MEMBER)
        yield self.assert_fails_with(self.client.mark_read(dave, conv, 1, "gw", "s"), ErrorCode.NOT_MEMBER)
        yield self.assert_fails_with(self.say(dave, conv, "d-1", "let me in"), ErrorCode.NOT_MEMBER)

        ack = yield self.say(alice, conv, "c-1", "hi")
        yield self.assert_fails_with(self.say(bob, conv, "b-1", "hi!", MessageKind.EDIT, ack.seq), ErrorCode.FORBIDDEN)
        yield self.assert_fails_with(self.say(alice, conv, "c-2", "", MessageKind.RECALL, ack.seq), ErrorCode.TOO_LATE)
        yield self.assert_fails_with(self.say(alice, conv, "c-3", "x", MessageKind.EDIT, 99), ErrorCode.UNKNOWN_MESSAGE)
        yield self.assert_fails_with(self.client.history(alice.user_id, conv, 5, 3, 10), ErrorCode.BAD_REQUEST)


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
