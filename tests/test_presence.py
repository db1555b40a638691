"""Presence transitions told to contacts: online at the first session, offline after the last one's grace period."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gochat.gateway import codec
from gochat.logic.chat import ChatSettings
from gochat.logic.memory import InMemoryMessageStore
from gochat.model import Delivery, Identity, SendCommand, Signal, SignalKind

from .test_gateway import build_logic

SETTINGS = ChatSettings(token_ttl=3600.0, max_body_length=100, presence_grace=5.0, presence_group_limit=3)


class PresenceTransitionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000.0)
        self.logic = build_logic(self.clock, InMemoryMessageStore(), settings=SETTINGS)
        self.deliveries: list[Delivery] = []
        self.logic.deliveries.subscribe("gw1", self.deliveries.append)
        self.users: dict[str, Identity] = {}
        self.tokens: dict[str, str] = {}
        for name in ("alice", "bob", "carol", "dave"):
            self.users[name] = Identity(self.successResultOf(self.logic.register(name, "password1")), name)
            self.tokens[name] = self.successResultOf(self.logic.login(name, "password1")).token
        alice = self.users["alice"]
        self.logic.send(SendCommand(alice.user_id, "alice", "gw1", "x", "m1", "bob", "hi"))
        self.clock.advance(0.01)

    def connect(self, name: str, session: str) -> None:
        self.successResultOf(self.logic.connect(self.tokens[name], "gw1", session))

    def disconnect(self, name: str, session: str) -> None:
        self.successResultOf(self.logic.disconnect(self.users[name], "gw1", session))

    def notices(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(user, status, sessions told) of every presence signal so far, emptying the record."""
        found = []
        for delivery in self.deliveries:
            signal = delivery.signal
            if isinstance(signal, Signal) and signal.kind == SignalKind.PRESENCE:
                found.append((signal.username, "online" if signal.seq else "offline", delivery.session_ids))
        self.deliveries.clear()
        return found

    def test_first_session_online_last_session_offline_after_grace(self) -> None:
        self.connect("bob", "b1")
        self.assertEqual(self.notices(), [])
        self.connect("alice", "a1")
        self.assertEqual(self.notices(), [("alice", "online", ("b1",))])
        self.connect("alice", "a2")
        self.disconnect("alice", "a1")
        self.clock.advance(10)
        self.assertEqual(self.notices(), [])
        self.disconnect("alice", "a2")
        self.clock.advance(4.9)
        self.assertEqual(self.notices(), [])
        self.clock.advance(0.2)
        self.assertEqual(self.notices(), [("alice", "offline", ("b1",))])

    def test_a_reconnect_within_the_grace_period_is_not_told(self) -> None:
        self.connect("bob", "b1")
        self.connect("alice", "a1")
        self.notices()
        self.disconnect("alice", "a1")
        self.clock.advance(2)
        self.connect("alice", "a2")
        self.clock.advance(10)
        self.assertEqual(self.notices(), [])

    def test_strangers_and_large_groups_are_not_told(self) -> None:
        """carol shares nothing with alice; dave shares only a group larger than presence_group_limit."""
        self.connect("carol", "c1")
        self.connect("dave", "d1")
        self.connect("bob", "b1")
        group = self.logic.create_group(self.users["dave"], "big", ["alice", "bob", "carol"])
        self.clock.advance(0.01)
        self.successResultOf(group)
        self.notices()
        self.deliveries.clear()
        self.connect("alice", "a1")
        self.assertEqual(self.notices(), [("alice", "online", ("b1",))])

    def test_small_groups_share_presence(self) -> None:
        self.connect("carol", "c1")
        group = self.logic.create_group(self.users["carol"], "small", ["alice"])
        self.clock.advance(0.01)
        self.successResultOf(group)
        self.deliveries.clear()
        self.connect("alice", "a1")
        self.assertEqual(self.notices(), [("alice", "online", ("c1",))])

    def test_the_frame(self) -> None:
        frame = codec.encode_signal(Signal(SignalKind.PRESENCE, "", 1, "alice", 0, 5))
        self.assertEqual(frame, b'{"v":1,"type":"presence","body":{"user":"alice","status":"offline","ts":5}}')
