"""The logic servicer, unit by unit: each RPC against a fake ChatLogic, and the model's protobuf conversions.

The servicer keeps worker threads for other calls while sends wait for the
store; each group and conversation RPC calls the ChatLogic method of the same
name and refuses with the logic's stable error code.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TypeVar

import grpc
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gochat.errors import WIRE, ErrorCode, GochatError
from gochat.grpc_bridge import (
    ERROR_METADATA_KEY,
    LogicServicer,
    conversation_from_pb,
    delivery_from_pb,
    delivery_to_pb,
    group_from_pb,
    history_from_pb,
    history_to_pb,
    member_from_pb,
    message_from_pb,
    message_to_pb,
)
from gochat.model import (
    Ack,
    ConversationInfo,
    Delivery,
    GroupInfo,
    HistoryPage,
    Identity,
    MemberInfo,
    MessageKind,
    SendCommand,
    Signal,
    SignalKind,
    StoredMessage,
)
from gochat.v1 import logic_pb2 as pb

T = TypeVar("T")


class AbortedError(Exception):
    pass


class FakeContext:
    """The two ServicerContext methods the servicer uses to refuse a call."""

    def __init__(self) -> None:
        self.metadata: Any = None
        self.status: Any = None

    def set_trailing_metadata(self, metadata: Any) -> None:
        self.metadata = metadata

    def abort(self, code: Any, details: str) -> None:
        self.status = (code, details)
        raise AbortedError(details)


class StalledLogic:
    """Sends that wait until the test lets them commit."""

    def __init__(self) -> None:
        self.pending: list[Deferred[Ack]] = []
        self.arrived = threading.Semaphore(0)

    def send(self, command: SendCommand) -> Deferred[Ack]:
        d: Deferred[Ack] = Deferred()
        self.pending.append(d)
        self.arrived.release()
        return d


class SendCapTests(TestCase):
    timeout = 20

    async def test_sends_over_the_cap_are_refused_at_once(self) -> None:
        """With every send slot waiting on the store, one more send is refused as unavailable, not queued."""
        from twisted.internet import reactor

        logic = StalledLogic()
        servicer = LogicServicer(logic, reactor, max_concurrent_sends=2)  # type: ignore[arg-type]
        request = pb.SendRequest(sender_id=1, sender="a", client_msg_id="m", to_username="b", body="x")
        waiting = [deferToThread(servicer.Send, request, FakeContext()) for _ in range(2)]
        for _ in range(2):
            await deferToThread(logic.arrived.acquire)
        refused = FakeContext()
        with self.assertRaises(AbortedError):
            await deferToThread(servicer.Send, request, refused)
        self.assertEqual(refused.metadata, ((ERROR_METADATA_KEY, "unavailable"),))
        for d in logic.pending:
            d.callback(Ack("m", 7, "d:1:2", 1, 0))
        replies = [await d for d in waiting]
        self.assertEqual([r.seq for r in replies], [1, 1])
        accepted = deferToThread(servicer.Send, request, FakeContext())
        await deferToThread(logic.arrived.acquire)
        logic.pending[-1].callback(Ack("m", 7, "d:1:2", 1, 0))
        self.assertEqual((await accepted).msg_id, 7, "slots are given back")


# The group and conversation RPCs, against a fake ChatLogic.

ALICE = Identity(1, "alice")
GROUP = GroupInfo(
    group_id=7, conv="g:7", name="Climbers \N{MOUNTAIN}", created_at=1_700_000_000.25, member_count=3, role="owner"
)
BOB = MemberInfo(user_id=2, username="bob", role="admin", joined_seq=4)
CAROL = MemberInfo(user_id=3, username="carol", role="member", joined_seq=0)
EDIT = StoredMessage(11, "g:7", 5, 1, "alice", "c-5", "fixed", 1_700_000_000_500, MessageKind.EDIT, 3)
TEXT = StoredMessage(10, "g:7", 4, 2, "bob", "c-4", "héllo", 1_700_000_000_400)
PAGE = HistoryPage("g:7", (TEXT, EDIT), {"alice": 5, "bob": 4})
CONVERSATIONS = [ConversationInfo("g:7", "Climbers", 5, 3, 2), ConversationInfo("d:1:2", "bob", 9, 9, 0)]


class FakeGroupLogic:
    """The ChatLogic methods behind the group and conversation RPCs: records each call, answers with canned values.

    While ``refuse`` is set, every call fails with it.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.refuse: Exception | None = None

    def _answer(self, name: str, *args: Any, result: T) -> Deferred[T]:
        self.calls.append((name, *args))
        return fail(self.refuse) if self.refuse is not None else succeed(result)

    def create_group(self, identity: Identity, name: str, usernames: Sequence[str]) -> Deferred[GroupInfo]:
        return self._answer("create_group", identity, name, list(usernames), result=GROUP)

    def add_members(
        self, identity: Identity, group_id: int, usernames: Sequence[str], role: str
    ) -> Deferred[list[MemberInfo]]:
        return self._answer("add_members", identity, group_id, list(usernames), role, result=[BOB, CAROL])

    def remove_member(self, identity: Identity, group_id: int, username: str) -> Deferred[None]:
        return self._answer("remove_member", identity, group_id, username, result=None)

    def set_role(self, identity: Identity, group_id: int, username: str, role: str) -> Deferred[None]:
        return self._answer("set_role", identity, group_id, username, role, result=None)

    def leave_group(self, identity: Identity, group_id: int) -> Deferred[None]:
        return self._answer("leave_group", identity, group_id, result=None)

    def groups(self, user_id: int) -> Deferred[list[GroupInfo]]:
        return self._answer("groups", user_id, result=[GROUP])

    def members(self, user_id: int, group_id: int) -> Deferred[list[MemberInfo]]:
        return self._answer("members", user_id, group_id, result=[BOB, CAROL])

    def history(
        self, user_id: int, conv: str, before: int | None, after: int | None, limit: int
    ) -> Deferred[HistoryPage]:
        return self._answer("history", user_id, conv, before, after, limit, result=PAGE)

    def mark_read(self, identity: Identity, conv: str, seq: int, gateway_id: str, session_id: str) -> Deferred[int]:
        return self._answer("mark_read", identity, conv, seq, gateway_id, session_id, result=5)

    def typing(self, identity: Identity, conv: str) -> Deferred[None]:
        return self._answer("typing", identity, conv, result=None)

    def conversation_list(self, user_id: int) -> Deferred[list[ConversationInfo]]:
        return self._answer("conversation_list", user_id, result=CONVERSATIONS)

    def send(self, command: SendCommand) -> Deferred[Ack]:
        return self._answer("send", command, result=Ack(command.client_msg_id, 12, command.conv, 6, 1))


PB_ALICE = pb.Identity(user_id=1, username="alice")


class GroupRpcTests(TestCase):
    """Each new RPC calls the ChatLogic method of the same name with the request's values and converts the reply."""

    timeout = 20

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.logic = FakeGroupLogic()
        self.servicer = LogicServicer(self.logic, reactor)  # type: ignore[arg-type]

    def call(self, rpc: str, request: Any, context: FakeContext | None = None) -> Deferred[Any]:
        """Run the servicer's *rpc* on a thread, as gRPC's worker pool does."""
        return deferToThread(getattr(self.servicer, rpc), request, context or FakeContext())

    async def test_create_group(self) -> None:
        request = pb.CreateGroupRequest(identity=PB_ALICE, name="Climbers", usernames=["bob", "carol"])
        reply = await self.call("CreateGroup", request)
        self.assertEqual(self.logic.calls, [("create_group", ALICE, "Climbers", ["bob", "carol"])])
        self.assertEqual(group_from_pb(reply.group), GROUP)

    async def test_add_members(self) -> None:
        request = pb.AddMembersRequest(identity=PB_ALICE, group_id=7, usernames=["bob", "carol"], role="member")
        reply = await self.call("AddMembers", request)
        self.assertEqual(self.logic.calls, [("add_members", ALICE, 7, ["bob", "carol"], "member")])
        self.assertEqual([member_from_pb(m) for m in reply.added], [BOB, CAROL])

    async def test_remove_member_set_role_leave(self) -> None:
        await self.call("RemoveMember", pb.RemoveMemberRequest(identity=PB_ALICE, group_id=7, username="carol"))
        await self.call("SetRole", pb.SetRoleRequest(identity=PB_ALICE, group_id=7, username="bob", role="owner"))
        await self.call("LeaveGroup", pb.LeaveGroupRequest(identity=PB_ALICE, group_id=7))
        self.assertEqual(
            self.logic.calls,
            [
                ("remove_member", ALICE, 7, "carol"),
                ("set_role", ALICE, 7, "bob", "owner"),
                ("leave_group", ALICE, 7),
            ],
        )

    async def test_groups_and_members(self) -> None:
        groups = await self.call("Groups", pb.GroupsRequest(user_id=1))
        members = await self.call("Members", pb.MembersRequest(user_id=1, group_id=7))
        self.assertEqual(self.logic.calls, [("groups", 1), ("members", 1, 7)])
        self.assertEqual([group_from_pb(g) for g in groups.groups], [GROUP])
        self.assertEqual([member_from_pb(m) for m in members.members], [BOB, CAROL])

    async def test_history_bounds_absent_zero_and_set(self) -> None:
        """An unset bound reaches the logic as None, and a bound of 0 as 0: they are not the same."""
        reply = await self.call("History", pb.HistoryRequest(user_id=1, conv="g:7", limit=50))
        await self.call("History", pb.HistoryRequest(user_id=1, conv="g:7", before=0, limit=50))
        await self.call("History", pb.HistoryRequest(user_id=1, conv="g:7", before=9, after=3, limit=2))
        self.assertEqual(
            self.logic.calls,
            [
                ("history", 1, "g:7", None, None, 50),
                ("history", 1, "g:7", 0, None, 50),
                ("history", 1, "g:7", 9, 3, 2),
            ],
        )
        self.assertEqual(history_from_pb(reply), PAGE)

    async def test_mark_read_typing_conversation_list(self) -> None:
        read = await self.call(
            "MarkRead", pb.MarkReadRequest(identity=PB_ALICE, conv="g:7", seq=5, gateway_id="gw", session_id="s")
        )
        await self.call("Typing", pb.TypingRequest(identity=PB_ALICE, conv="g:7"))
        listed = await self.call("ConversationList", pb.ConversationListRequest(user_id=1))
        self.assertEqual(
            self.logic.calls,
            [("mark_read", ALICE, "g:7", 5, "gw", "s"), ("typing", ALICE, "g:7"), ("conversation_list", 1)],
        )
        self.assertEqual(read.read_seq, 5)
        self.assertEqual([conversation_from_pb(c) for c in listed.conversations], CONVERSATIONS)

    async def test_send_into_a_conversation_with_a_kind(self) -> None:
        """A send names a conversation instead of a user, and an edit or recall the seq it changes."""
        request = pb.SendRequest(
            sender_id=1, sender="alice", client_msg_id="c-6", body="", conv="g:7", kind="recall", ref_seq=4
        )
        await self.call("Send", request)
        await self.call("Send", pb.SendRequest(sender_id=1, sender="alice", client_msg_id="c-7", to_username="bob"))
        (_, recall), (_, text) = self.logic.calls
        self.assertEqual((recall.conv, recall.kind, recall.ref_seq, recall.to_username), ("g:7", "recall", 4, ""))
        self.assertEqual((text.conv, text.kind, text.ref_seq), ("", MessageKind.TEXT, 0), "no kind on the wire is text")

    async def test_refusals_carry_their_code(self) -> None:
        """A GochatError from the logic aborts with its gRPC status and its stable code in the metadata."""
        cases = [
            (ErrorCode.NOT_MEMBER, "History", pb.HistoryRequest(user_id=1, conv="g:7", limit=5)),
            (ErrorCode.FORBIDDEN, "SetRole", pb.SetRoleRequest(identity=PB_ALICE, group_id=7, username="bob")),
            (ErrorCode.GROUP_FULL, "AddMembers", pb.AddMembersRequest(identity=PB_ALICE, group_id=7, usernames=["x"])),
            (ErrorCode.TOO_LATE, "Send", pb.SendRequest(sender_id=1, conv="g:7", kind="recall", ref_seq=1)),
            (ErrorCode.UNKNOWN_MESSAGE, "Send", pb.SendRequest(sender_id=1, conv="g:7", kind="edit", ref_seq=99)),
            (ErrorCode.NOT_MEMBER, "Typing", pb.TypingRequest(identity=PB_ALICE, conv="g:8")),
        ]
        for code, rpc, request in cases:
            self.logic.refuse = GochatError(code, f"refused {rpc}")
            context = FakeContext()
            with self.assertRaises(AbortedError):
                await self.call(rpc, request, context)
            self.assertEqual(context.metadata, ((ERROR_METADATA_KEY, code.value),))
            self.assertEqual(context.status, (getattr(grpc.StatusCode, WIRE[code].grpc_status), f"refused {rpc}"))

    async def test_an_unexpected_failure_is_internal(self) -> None:
        self.logic.refuse = RuntimeError("boom")
        context = FakeContext()
        with self.assertRaises(AbortedError):
            await self.call("Groups", pb.GroupsRequest(user_id=1), context)
        self.assertEqual(context.metadata, ((ERROR_METADATA_KEY, "internal"),))
        self.assertEqual(context.status, (grpc.StatusCode.INTERNAL, "internal error"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class ConversionTests(SynchronousTestCase):
    """The model values survive their protobuf form exactly, both ways."""

    def test_messages_keep_kind_and_ref_seq(self) -> None:
        for message in (TEXT, EDIT, replace(TEXT, kind=MessageKind.MEMBER, body='{"action": "join"}')):
            self.assertEqual(
                message_from_pb(pb.Message.FromString(message_to_pb(message).SerializeToString())), message
            )

    def test_text_costs_no_bytes_and_an_old_body_is_text(self) -> None:
        """Text is the empty kind on the wire, so bodies written before kinds existed decode as text."""
        self.assertEqual(message_to_pb(TEXT).kind, "")
        self.assertEqual(message_from_pb(pb.Message(msg_id=1, conv="d:1:2", seq=1)).kind, MessageKind.TEXT)

    def test_deliveries_of_messages_and_signals(self) -> None:
        typing = Signal(SignalKind.TYPING, "g:7", 1, "alice", 0, 1_700_000_000_900)
        read = Signal(SignalKind.READ, "g:7", 1, "alice", 5, 1_700_000_001_000)
        for delivery in (
            Delivery("gw", ("s1", "s2", "s3"), (2, 2, 3), EDIT),
            Delivery("gw", ("s1",), (2,), None, typing),
            Delivery("gw", ("s1", "s4"), (2, 1), None, read),
        ):
            wire = delivery_to_pb(delivery).SerializeToString()
            self.assertEqual(delivery_from_pb(pb.Delivery.FromString(wire)), delivery)

    def test_malformed_deliveries(self) -> None:
        with self.assertRaises(ValueError):
            delivery_from_pb(
                pb.Delivery(gateway_id="gw", session_ids=["s1", "s2"], user_ids=[2], message=message_to_pb(TEXT))
            )
        with self.assertRaises(ValueError):
            delivery_from_pb(pb.Delivery(gateway_id="gw", session_ids=["s1"], user_ids=[2]))

    def test_history_reads_and_an_empty_page(self) -> None:
        self.assertEqual(history_from_pb(pb.HistoryReply.FromString(history_to_pb(PAGE).SerializeToString())), PAGE)
        empty = HistoryPage("g:7", ())
        self.assertEqual(history_from_pb(history_to_pb(empty)), empty)
