"""Groups and conversation features in ChatLogic, on in-memory stores with a Clock.

Groups (roles, membership events, the size limit), write diffusion into every
member's index, history, read receipts and unread counts, typing, and edit and
recall; each with its refusals.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gochat.errors import ErrorCode, GochatError
from gochat.logic.chat import ChatLogic, ChatSettings
from gochat.logic.interfaces import Route
from gochat.logic.memory import InMemoryMessageStore
from gochat.model import Ack, Delivery, GroupRole, Identity, MessageKind, SendCommand, SignalKind, StoredMessage

from .test_gateway import build_logic

T = TypeVar("T")
SETTINGS = ChatSettings(token_ttl=3600.0, max_body_length=100, max_group_size=5, recall_window=60.0, edit_window=300.0)


class GroupTestCase(SynchronousTestCase):
    names = ("alice", "bob", "carol", "dave")

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000.0)
        self.messages = InMemoryMessageStore()
        self.logic: ChatLogic = build_logic(self.clock, self.messages, settings=SETTINGS)
        self.deliveries: list[Delivery] = []
        self.logic.deliveries.subscribe("gw1", self.deliveries.append)
        self.users: dict[str, Identity] = {}
        for name in self.names:
            user_id = self.successResultOf(self.logic.register(name, "password1"))
            self.users[name] = Identity(user_id, name)
            self.successResultOf(self.logic.routes.add(user_id, Route("gw1", f"{name}-1")))

    def settle(self) -> None:
        self.clock.advance(0.01)

    def result(self, d: Deferred[T]) -> T:
        self.settle()
        return self.successResultOf(d)

    def refused(self, d: Deferred[Any]) -> ErrorCode:
        self.settle()
        failure = self.failureResultOf(d, GochatError)
        assert isinstance(failure.value, GochatError)
        return failure.value.code

    def send(
        self, name: str, conv: str, cmid: str, body: str = "hi", kind: str = MessageKind.TEXT, ref: int = 0
    ) -> Ack:
        return self.result(self.logic.send(self.command(name, conv, cmid, body, kind, ref)))

    def command(
        self, name: str, conv: str, cmid: str, body: str = "hi", kind: str = MessageKind.TEXT, ref: int = 0
    ) -> SendCommand:
        user = self.users[name]
        return SendCommand(user.user_id, name, "gw1", f"{name}-1", cmid, "", body, conv, kind, ref)

    def create(self, owner: str = "alice", members: tuple[str, ...] = ("bob", "carol")) -> str:
        group = self.result(self.logic.create_group(self.users[owner], "friends", members))
        return group.conv

    def pushed_to(self) -> dict[str, list[StoredMessage]]:
        """Who got which message pushed, by username (from the session ids), emptying the record."""
        got: dict[str, list[StoredMessage]] = {}
        for delivery in self.deliveries:
            if delivery.message is not None:
                for session_id in delivery.session_ids:
                    got.setdefault(session_id.split("-")[0], []).append(delivery.message)
        self.deliveries.clear()
        return got


class GroupMembershipTests(GroupTestCase):
    def test_create_tells_every_member(self) -> None:
        """The creator owns the group; every member gets the ``created`` event and sees the group listed."""
        conv = self.create()
        self.assertEqual(conv, "g:1")
        pushed = self.pushed_to()
        self.assertEqual(sorted(pushed), ["alice", "bob", "carol"])
        event = pushed["bob"][0]
        self.assertEqual((event.kind, event.seq), (MessageKind.MEMBER, 1))
        self.assertEqual(json.loads(event.body), {"action": "created", "name": "friends", "by": "alice"})
        groups = self.result(self.logic.groups(self.users["bob"].user_id))
        self.assertEqual([(g.conv, g.role, g.member_count) for g in groups], [("g:1", GroupRole.MEMBER, 3)])
        members = self.result(self.logic.members(self.users["carol"].user_id, 1))
        self.assertEqual(
            [(m.username, m.role) for m in members],
            [("alice", "owner"), ("bob", "member"), ("carol", "member")],
        )

    def test_non_member_refusals(self) -> None:
        """A non-member cannot send, read history, list members, mark read, or type in a group."""
        conv = self.create()
        dave = self.users["dave"]
        self.assertEqual(self.refused(self.logic.send(self.command("dave", conv, "d1"))), ErrorCode.NOT_MEMBER)
        self.assertEqual(self.refused(self.logic.history(dave.user_id, conv, None, None, 10)), ErrorCode.NOT_MEMBER)
        self.assertEqual(self.refused(self.logic.members(dave.user_id, 1)), ErrorCode.NOT_MEMBER)
        self.assertEqual(self.refused(self.logic.mark_read(dave, conv, 1, "gw1", "dave-1")), ErrorCode.NOT_MEMBER)
        self.assertEqual(self.refused(self.logic.typing(dave, conv)), ErrorCode.NOT_MEMBER)
        self.assertEqual(self.refused(self.logic.send(self.command("dave", "g:99", "d2"))), ErrorCode.NOT_MEMBER)
        self.assertEqual(self.refused(self.logic.send(self.command("dave", "d:1:2", "d3"))), ErrorCode.NOT_MEMBER)
        self.assertEqual(self.refused(self.logic.send(self.command("dave", "nonsense", "d4"))), ErrorCode.NOT_MEMBER)

    def test_roles(self) -> None:
        """Members add nobody; admins add members but not admins and remove members but not admins; owners all."""
        self.create()
        alice, bob, carol = self.users["alice"], self.users["bob"], self.users["carol"]
        self.assertEqual(self.refused(self.logic.add_members(bob, 1, ["dave"])), ErrorCode.FORBIDDEN)
        self.result(self.logic.set_role(alice, 1, "bob", GroupRole.ADMIN))
        self.assertEqual(self.refused(self.logic.add_members(bob, 1, ["dave"], GroupRole.ADMIN)), ErrorCode.FORBIDDEN)
        added = self.result(self.logic.add_members(bob, 1, ["dave", "carol"]))
        self.assertEqual([m.username for m in added], ["dave"])
        self.result(self.logic.set_role(alice, 1, "carol", GroupRole.ADMIN))
        self.assertEqual(self.refused(self.logic.remove_member(bob, 1, "carol")), ErrorCode.FORBIDDEN)
        self.assertEqual(self.refused(self.logic.remove_member(bob, 1, "alice")), ErrorCode.FORBIDDEN)
        self.assertEqual(self.refused(self.logic.set_role(bob, 1, "dave", GroupRole.ADMIN)), ErrorCode.FORBIDDEN)
        self.result(self.logic.remove_member(bob, 1, "dave"))
        self.result(self.logic.remove_member(alice, 1, "carol"))
        self.assertEqual(self.refused(self.logic.remove_member(alice, 1, "carol")), ErrorCode.NOT_MEMBER)
        self.assertEqual(self.refused(self.logic.set_role(carol, 1, "bob", GroupRole.MEMBER)), ErrorCode.NOT_MEMBER)
        self.assertEqual(self.refused(self.logic.set_role(alice, 1, "bob", "king")), ErrorCode.BAD_REQUEST)

    def test_size_limit(self) -> None:
        """A group never grows past max_group_size (5 here): creating or adding past it adds nobody."""
        for name in ("erin", "frank"):
            user_id = self.successResultOf(self.logic.register(name, "password1"))
            self.users[name] = Identity(user_id, name)
        too_many = ["bob", "carol", "dave", "erin", "frank"]
        self.assertEqual(
            self.refused(self.logic.create_group(self.users["alice"], "big", too_many)), ErrorCode.GROUP_FULL
        )
        self.assertEqual(self.result(self.logic.groups(self.users["alice"].user_id)), [])
        self.create(members=("bob", "carol", "dave"))
        self.assertEqual(
            self.refused(self.logic.add_members(self.users["alice"], 1, ["erin", "frank"])), ErrorCode.GROUP_FULL
        )
        self.assertEqual(len(self.result(self.logic.members(self.users["alice"].user_id, 1))), 4)
        self.result(self.logic.add_members(self.users["alice"], 1, ["erin"]))
        self.assertEqual(len(self.result(self.logic.members(self.users["alice"].user_id, 1))), 5)

    def test_removed_member_is_told_and_then_sees_nothing(self) -> None:
        """The removed user gets the ``removed`` event; later messages neither reach nor sync to them."""
        conv = self.create()
        self.send("alice", conv, "a1", "before")
        self.result(self.logic.remove_member(self.users["alice"], 1, "carol"))
        self.pushed_to()
        self.send("alice", conv, "a2", "after")
        self.assertNotIn("carol", self.pushed_to())
        carol = self.users["carol"].user_id
        synced = self.result(self.logic.sync(carol, None, 100))
        (state,) = synced.conversations
        self.assertEqual([m.body for m in state.messages][-1], '{"action":"removed","user":"carol","by":"alice"}')
        self.assertNotIn("after", [m.body for m in state.messages])
        self.assertTrue(state.complete)
        synced = self.result(self.logic.sync(carol, {conv: 0}, 100))
        self.assertNotIn("after", [m.body for m in synced.conversations[0].messages])

    def test_new_member_sees_from_joining_on(self) -> None:
        """A member added later syncs and pages from their joining, not the earlier messages."""
        conv = self.create()
        self.send("alice", conv, "a1", "old news")
        self.result(self.logic.add_members(self.users["alice"], 1, ["dave"]))
        self.send("bob", conv, "b1", "welcome")
        dave = self.users["dave"].user_id
        synced = self.result(self.logic.sync(dave, {conv: 0}, 100))
        bodies = [m.body for m in synced.conversations[0].messages]
        self.assertEqual(bodies[-1], "welcome")
        self.assertNotIn("old news", bodies)
        page = self.result(self.logic.history(dave, conv, None, 0, 100))
        self.assertEqual([m.seq for m in page.messages], [3, 4])
        self.assertEqual(json.loads(page.messages[0].body)["action"], "added")

    def test_owner_leaving_hands_ownership_on(self) -> None:
        """An owner who leaves makes the longest-standing admin owner, else the longest-standing member."""
        self.create(members=("bob", "carol", "dave"))
        alice, carol = self.users["alice"], self.users["carol"]
        self.result(self.logic.set_role(alice, 1, "carol", GroupRole.ADMIN))
        self.result(self.logic.leave_group(alice, 1))
        roles = {m.username: m.role for m in self.result(self.logic.members(carol.user_id, 1))}
        self.assertEqual(roles, {"bob": "member", "carol": "owner", "dave": "member"})
        self.result(self.logic.leave_group(carol, 1))
        roles = {m.username: m.role for m in self.result(self.logic.members(self.users["bob"].user_id, 1))}
        self.assertEqual(roles, {"bob": "owner", "dave": "member"})
        self.assertEqual(self.refused(self.logic.leave_group(carol, 1)), ErrorCode.NOT_MEMBER)
        self.assertEqual(self.result(self.logic.groups(alice.user_id)), [])

    def test_ownership_transfer(self) -> None:
        """Naming another member owner makes the old owner an admin."""
        self.create()
        self.result(self.logic.set_role(self.users["alice"], 1, "bob", GroupRole.OWNER))
        roles = {m.username: m.role for m in self.result(self.logic.members(self.users["bob"].user_id, 1))}
        self.assertEqual(roles, {"alice": "admin", "bob": "owner", "carol": "member"})

    def test_bad_group_names(self) -> None:
        for name in ("", "   ", "x" * 65, "tab\there"):
            self.assertEqual(
                self.refused(self.logic.create_group(self.users["alice"], name, [])), ErrorCode.BAD_REQUEST
            )


class WriteDiffusionTests(GroupTestCase):
    def test_stored_once_indexed_for_every_member(self) -> None:
        """A group message is one stored row; every member's index head moves; one delivery per gateway."""
        conv = self.create()
        self.successResultOf(self.logic.routes.add(self.users["bob"].user_id, Route("gw1", "bob-2")))
        self.deliveries.clear()
        stored_before = len(self.messages.messages)
        ack = self.send("bob", conv, "b1", "hello all")
        self.assertEqual((ack.conv, ack.seq), (conv, 2))
        self.assertEqual(len(self.messages.messages), stored_before + 1)
        for name in ("alice", "bob", "carol"):
            (state,) = self.successResultOf(self.messages.conversations(self.users[name].user_id))
            self.assertEqual((state.conv, state.last_seq), (conv, 2))
        (delivery,) = self.deliveries
        self.assertEqual(sorted(delivery.session_ids), ["alice-1", "bob-2", "carol-1"])
        owners = dict(zip(delivery.session_ids, delivery.user_ids, strict=True))
        self.assertEqual(owners["bob-2"], self.users["bob"].user_id)

    def test_idempotent_group_send(self) -> None:
        """A retried group send returns the same ack and stores nothing twice."""
        conv = self.create()
        first = self.send("bob", conv, "b1")
        self.assertEqual(self.send("bob", conv, "b1"), first)
        self.assertEqual(sorted(m.seq for m in self.messages.messages.values() if m.conv == conv), [1, 2])


class HistoryTests(GroupTestCase):
    def test_paging_both_ways(self) -> None:
        """Pages before a seq are the newest below it; pages after a seq the oldest above it; seq order always."""
        conv = self.create()
        for i in range(10):
            self.send("alice", conv, f"a{i}", str(i))
        bob = self.users["bob"].user_id
        newest = self.result(self.logic.history(bob, conv, None, None, 3))
        self.assertEqual([m.seq for m in newest.messages], [9, 10, 11])
        older = self.result(self.logic.history(bob, conv, 9, None, 3))
        self.assertEqual([m.seq for m in older.messages], [6, 7, 8])
        after = self.result(self.logic.history(bob, conv, None, 9, 5))
        self.assertEqual([m.seq for m in after.messages], [10, 11])
        first = self.result(self.logic.history(bob, conv, 3, None, 10))
        self.assertEqual([m.seq for m in first.messages], [1, 2])

    def test_direct_history_for_participants_only(self) -> None:
        alice, bob = self.users["alice"], self.users["bob"]
        ack = self.result(self.logic.send(SendCommand(alice.user_id, "alice", "gw1", "alice-1", "m1", "bob", "yo")))
        page = self.result(self.logic.history(bob.user_id, ack.conv, None, None, 10))
        self.assertEqual([m.body for m in page.messages], ["yo"])
        self.assertEqual(
            self.refused(self.logic.history(self.users["carol"].user_id, ack.conv, None, None, 10)),
            ErrorCode.NOT_MEMBER,
        )

    def test_bad_paging(self) -> None:
        conv = self.create()
        bob = self.users["bob"].user_id
        for before, after, limit in ((1, 1, 10), (None, None, 0), (None, None, 201), (0, None, 10), (None, -1, 10)):
            self.assertEqual(self.refused(self.logic.history(bob, conv, before, after, limit)), ErrorCode.BAD_REQUEST)


class ReadReceiptTests(GroupTestCase):
    def test_read_is_stored_told_and_counted(self) -> None:
        """Marking read tells the others and the reader's other sessions (not this one); unread counts follow."""
        conv = self.create()
        bob = self.users["bob"]
        self.successResultOf(self.logic.routes.add(bob.user_id, Route("gw1", "bob-2")))
        for i in range(3):
            self.send("alice", conv, f"a{i}", str(i))
        self.send("bob", conv, "b1", "mine")
        listing = {c.conv: c for c in self.result(self.logic.conversation_list(bob.user_id))}
        self.assertEqual((listing[conv].title, listing[conv].last_seq, listing[conv].unread), ("friends", 5, 3))
        self.deliveries.clear()
        self.assertEqual(self.result(self.logic.mark_read(bob, conv, 3, "gw1", "bob-1")), 3)
        (delivery,) = self.deliveries
        assert delivery.signal is not None
        self.assertEqual(
            (delivery.signal.kind, delivery.signal.seq, delivery.signal.username), (SignalKind.READ, 3, "bob")
        )
        self.assertEqual(sorted(delivery.session_ids), ["alice-1", "bob-2", "carol-1"])
        listing = {c.conv: c for c in self.result(self.logic.conversation_list(bob.user_id))}
        self.assertEqual((listing[conv].read_seq, listing[conv].unread), (3, 1))
        self.assertEqual(self.result(self.logic.mark_read(bob, conv, 2, "gw1", "bob-1")), 3)
        self.assertEqual(self.result(self.logic.mark_read(bob, conv, 99, "gw1", "bob-1")), 5)
        page = self.result(self.logic.history(self.users["alice"].user_id, conv, None, None, 1))
        self.assertEqual(page.reads["bob"], 5)

    def test_direct_conversation_title_is_the_other_user(self) -> None:
        alice = self.users["alice"]
        self.result(self.logic.send(SendCommand(alice.user_id, "alice", "gw1", "alice-1", "m1", "bob", "yo")))
        (info,) = self.result(self.logic.conversation_list(self.users["bob"].user_id))
        self.assertEqual((info.title, info.unread), ("alice", 1))


class TypingTests(GroupTestCase):
    def test_typing_reaches_online_members_only_and_is_not_stored(self) -> None:
        conv = self.create()
        self.successResultOf(self.logic.disconnect(self.users["carol"], "gw1", "carol-1"))
        stored = len(self.messages.messages)
        self.deliveries.clear()
        self.result(self.logic.typing(self.users["alice"], conv))
        (delivery,) = self.deliveries
        assert delivery.signal is not None
        self.assertEqual((delivery.signal.kind, delivery.session_ids), (SignalKind.TYPING, ("bob-1",)))
        self.assertEqual(len(self.messages.messages), stored)


class EditRecallTests(GroupTestCase):
    def test_edit_and_recall_are_events_pointing_at_their_seq(self) -> None:
        conv = self.create()
        self.send("bob", conv, "b1", "helo")
        edit = self.send("bob", conv, "b2", "hello", MessageKind.EDIT, 2)
        recall = self.send("bob", conv, "b3", "", MessageKind.RECALL, 2)
        self.assertEqual((edit.seq, recall.seq), (3, 4))
        page = self.result(self.logic.history(self.users["carol"].user_id, conv, None, 1, 10))
        self.assertEqual(
            [(m.kind, m.ref_seq, m.body) for m in page.messages],
            [("text", 0, "helo"), ("edit", 2, "hello"), ("recall", 2, "")],
        )

    def test_refusals(self) -> None:
        """Someone else's message, an event, an unknown seq, past the window, a recall with a body."""
        conv = self.create()
        self.send("bob", conv, "b1", "text")
        self.assertEqual(
            self.refused(self.logic.send(self.command("carol", conv, "c1", "x", MessageKind.EDIT, 2))),
            ErrorCode.FORBIDDEN,
        )
        self.assertEqual(
            self.refused(self.logic.send(self.command("alice", conv, "a1", "", MessageKind.RECALL, 2))),
            ErrorCode.FORBIDDEN,
        )
        self.assertEqual(
            self.refused(self.logic.send(self.command("alice", conv, "a2", "x", MessageKind.EDIT, 1))),
            ErrorCode.BAD_REQUEST,
        )
        self.assertEqual(
            self.refused(self.logic.send(self.command("bob", conv, "b2", "x", MessageKind.EDIT, 50))),
            ErrorCode.UNKNOWN_MESSAGE,
        )
        self.assertEqual(
            self.refused(self.logic.send(self.command("bob", conv, "b3", "body", MessageKind.RECALL, 2))),
            ErrorCode.BAD_REQUEST,
        )
        self.assertEqual(
            self.refused(self.logic.send(self.command("bob", conv, "b4", "x", MessageKind.MEMBER, 2))),
            ErrorCode.BAD_REQUEST,
        )
        self.assertEqual(
            self.refused(self.logic.send(self.command("bob", conv, "member:1"))),
            ErrorCode.BAD_REQUEST,
        )
        self.clock.advance(61)
        self.assertEqual(
            self.refused(self.logic.send(self.command("bob", conv, "b5", "", MessageKind.RECALL, 2))),
            ErrorCode.TOO_LATE,
        )
        self.send("bob", conv, "b6", "still editable", MessageKind.EDIT, 2)
        self.clock.advance(300)
        self.assertEqual(
            self.refused(self.logic.send(self.command("bob", conv, "b7", "x", MessageKind.EDIT, 2))),
            ErrorCode.TOO_LATE,
        )
