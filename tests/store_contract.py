"""What every message and group store does, written once.

:class:`StoreContract` is a mixin of test methods: a trial ``TestCase`` of a
store adapter inherits it and defines :meth:`~StoreContract.start_stores`,
which sets ``self.messages`` (an :class:`~gochat.logic.interfaces.IMessageStore`)
and ``self.groups`` (an :class:`~gochat.logic.interfaces.IGroupStore`) on
empty stores. Only the interfaces are used, so the in-memory, SQLite and
MySQL stores are held to the same behaviour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gochat.errors import ErrorCode, GochatError
from gochat.logic.interfaces import ConversationState, IGroupStore, IMessageStore, Member
from gochat.model import GroupRole, MessageKind, PersistRequest, StoredMessage

if TYPE_CHECKING:
    from twisted.trial.unittest import TestCase

    _Base = TestCase
else:
    _Base = object

DIRECT = "d:1:2"
GROUP = "g:7"


def persist_request(
    n: int,
    conv: str = DIRECT,
    sender_id: int = 1,
    participants: tuple[int, ...] = (1, 2),
    kind: str = MessageKind.TEXT,
    ref_seq: int = 0,
    body: str | None = None,
) -> PersistRequest:
    """Request *n* (msg_id ``1000 + n``, client id ``c<n>``; *n* unique within a test)."""
    return PersistRequest(
        msg_id=1000 + n,
        conv=conv,
        sender_id=sender_id,
        sender=f"user{sender_id}",
        client_msg_id=f"c{n}",
        body=f"body {n} \N{GRINNING FACE}" if body is None else body,
        ts=1_700_000_000_000 + n,
        participants=participants,
        origin_gateway="gw",
        origin_session="s",
        kind=kind,
        ref_seq=ref_seq,
    )


def member(user_id: int, role: str = GroupRole.MEMBER, joined_seq: int = 0) -> Member:
    return Member(user_id, f"user{user_id}", role, joined_seq)


class StoreContract(_Base):
    """The behaviour of :class:`IMessageStore` (kinds, history, read cursors, unread) and :class:`IGroupStore`."""

    messages: IMessageStore
    groups: IGroupStore

    async def start_stores(self) -> None:
        """Set ``self.messages`` and ``self.groups`` to empty stores (and arrange their cleanup)."""
        raise NotImplementedError

    async def store(self, *requests: PersistRequest) -> list[StoredMessage]:
        """Commit *requests* as one batch, the store reading the last seqs itself."""
        return (await self.messages.commit_batch(list(requests), {})).results

    async def state(self, user_id: int, conv: str) -> tuple[int, int, int, int] | None:
        """*user_id*'s ``(last_seq, acked_seq, read_seq, unread)`` in *conv*, or None if not indexed."""
        for c in await self.messages.conversations(user_id):
            if c.conv == conv:
                return (c.last_seq, c.acked_seq, c.read_seq, c.unread)
        return None

    # Messages: kinds, history, lookups.

    async def test_kind_and_ref_seq_round_trip(self) -> None:
        """Edits, recalls and member events are stored with their kind and ref_seq and read back by every read."""
        await self.start_stores()
        results = await self.store(
            persist_request(1),
            persist_request(2, kind=MessageKind.EDIT, ref_seq=1, body="fixed"),
            persist_request(3, kind=MessageKind.RECALL, ref_seq=1, body=""),
            persist_request(4, kind=MessageKind.MEMBER, body='{"action": "add", "user": 3}'),
        )
        self.assertEqual(
            [(m.seq, m.kind, m.ref_seq, m.body) for m in results],
            [
                (1, MessageKind.TEXT, 0, "body 1 \N{GRINNING FACE}"),
                (2, MessageKind.EDIT, 1, "fixed"),
                (3, MessageKind.RECALL, 1, ""),
                (4, MessageKind.MEMBER, 0, '{"action": "add", "user": 3}'),
            ],
        )
        self.assertEqual(await self.messages.messages_after(DIRECT, 0, 10), results)
        self.assertEqual(await self.messages.messages_before(DIRECT, 10, 10), results)
        for m in results:
            self.assertEqual(await self.messages.by_client_msg_id(1, m.client_msg_id), m)
            self.assertEqual(await self.messages.message_at(DIRECT, m.seq), m)
        again = await self.messages.commit_batch([persist_request(2, kind=MessageKind.EDIT, ref_seq=1)], {})
        self.assertEqual((again.results, again.new), ([results[1]], []))

    async def test_messages_before_pages_backwards(self) -> None:
        """messages_before gives the newest messages below a seq, in seq order; paging back reaches seq 1."""
        await self.start_stores()
        requests = [persist_request(n) for n in range(1, 26)]
        requests[5:5] = [persist_request(100 + n, conv="d:1:3", participants=(1, 3)) for n in range(1, 6)]
        await self.store(*requests)
        pages: list[list[int]] = []
        before = 1 << 40
        while page := await self.messages.messages_before(DIRECT, before, 10):
            pages.append([m.seq for m in page])
            self.assertEqual({m.conv for m in page}, {DIRECT})
            before = page[0].seq
        self.assertEqual(pages, [list(range(16, 26)), list(range(6, 16)), list(range(1, 6))])
        self.assertEqual([m.seq for m in await self.messages.messages_before(DIRECT, 4, 2)], [2, 3])
        self.assertEqual([m.seq for m in await self.messages.messages_before("d:1:3", 100, 100)], [1, 2, 3, 4, 5])
        self.assertEqual(await self.messages.messages_before(DIRECT, 1, 10), [])
        self.assertEqual(await self.messages.messages_before(DIRECT, 20, 0), [])
        self.assertEqual(await self.messages.messages_before("d:9:9", 100, 10), [])

    async def test_message_at(self) -> None:
        """message_at finds one message by conversation and seq, and nothing elsewhere."""
        await self.start_stores()
        results = await self.store(*(persist_request(n) for n in range(1, 4)))
        self.assertEqual(await self.messages.message_at(DIRECT, 2), results[1])
        for conv, seq in ((DIRECT, 0), (DIRECT, 4), ("d:1:3", 2), ("g:2", 1)):
            self.assertIsNone(await self.messages.message_at(conv, seq))

    # The per-user index: read cursors, joins, unread counts.

    async def test_mark_read_only_rises_and_stops_at_last_seq(self) -> None:
        """mark_read never lowers the read seq, caps it at the user's last seq, and answers what is stored."""
        await self.start_stores()
        await self.store(*(persist_request(n) for n in range(1, 6)))
        self.assertEqual(await self.messages.mark_read(2, DIRECT, 3), 3)
        self.assertEqual(await self.messages.mark_read(2, DIRECT, 1), 3)
        self.assertEqual(await self.messages.mark_read(2, DIRECT, 99), 5)
        self.assertEqual(await self.state(2, DIRECT), (5, 0, 5, 0))
        await self.store(*(persist_request(n) for n in range(6, 8)))
        self.assertEqual(await self.state(2, DIRECT), (7, 0, 5, 2))
        self.assertEqual(await self.messages.mark_read(2, DIRECT, 99), 7)
        self.assertEqual(await self.state(1, DIRECT), (7, 0, 0, 0))
        # No row, no read seq, and none is made.
        self.assertEqual(await self.messages.mark_read(3, DIRECT, 2), 0)
        self.assertEqual(await self.messages.mark_read(2, "d:2:9", 1), 0)
        self.assertEqual(await self.messages.conversations(3), [])
        self.assertEqual(await self.messages.read_positions(DIRECT), {1: 0, 2: 7})

    async def test_join_sets_positions_and_never_lowers_them(self) -> None:
        """join enters a conversation seen, received and read up to a seq; a rejoin only moves positions up."""
        await self.start_stores()
        await self.messages.join([5], GROUP, 0)
        self.assertEqual(await self.messages.conversations(5), [ConversationState(GROUP, 0, 0, 0, 0)])
        await self.store(*(persist_request(n, conv=GROUP, participants=(1, 5)) for n in range(1, 4)))
        await self.messages.join([6], GROUP, 3)
        self.assertEqual(await self.state(6, GROUP), (3, 3, 3, 0))
        await self.messages.join([6], GROUP, 1)
        self.assertEqual(await self.state(6, GROUP), (3, 3, 3, 0))
        await self.store(*(persist_request(n, conv=GROUP, participants=(1, 5, 6)) for n in range(4, 6)))
        self.assertEqual(await self.state(6, GROUP), (5, 3, 3, 2))
        # 6 leaves: messages 6 and 7 are not indexed for them; rejoining at 7 skips past them.
        await self.store(*(persist_request(n, conv=GROUP, participants=(1, 5)) for n in range(6, 8)))
        self.assertEqual(await self.state(6, GROUP), (5, 3, 3, 2))
        await self.messages.join([6], GROUP, 7)
        self.assertEqual(await self.state(6, GROUP), (7, 7, 7, 0))
        # A rejoin at an older seq keeps what 5 already received and read.
        await self.messages.record_received(5, GROUP, 6)
        self.assertEqual(await self.messages.mark_read(5, GROUP, 7), 7)
        await self.messages.join([5], GROUP, 2)
        self.assertEqual(await self.state(5, GROUP), (7, 6, 7, 0))
        await self.messages.join([5], GROUP, 0)
        self.assertEqual(await self.state(5, GROUP), (7, 6, 7, 0))

    async def test_read_positions(self) -> None:
        """read_positions lists the read seq of every user indexed in a conversation, and only that one."""
        await self.start_stores()
        self.assertEqual(await self.messages.read_positions(GROUP), {})
        await self.store(*(persist_request(n, conv=GROUP, participants=(1, 5)) for n in range(1, 5)))
        await self.store(persist_request(10, conv="g:8", participants=(1, 9)))
        await self.messages.join([6], GROUP, 2)
        await self.messages.mark_read(5, GROUP, 3)
        self.assertEqual(await self.messages.read_positions(GROUP), {1: 0, 5: 3, 6: 2})
        self.assertEqual(await self.messages.read_positions("g:8"), {1: 0, 9: 0})

    async def test_unread_counts(self) -> None:
        """Unread counts others' text messages above the read seq, up to the user's own last seq.

        The user's own messages, edits, recalls and member events are not counted, and nor are messages
        stored after the user's index stopped following the conversation (they left the group).
        """
        await self.start_stores()
        await self.store(
            *(persist_request(n) for n in range(1, 4)),
            *(persist_request(n, sender_id=2) for n in range(4, 6)),
            persist_request(6, kind=MessageKind.EDIT, ref_seq=1, body="edited"),
            persist_request(7, kind=MessageKind.RECALL, ref_seq=2, body=""),
            persist_request(8),
        )
        self.assertEqual(await self.state(2, DIRECT), (8, 0, 0, 4))
        self.assertEqual(await self.state(1, DIRECT), (8, 0, 0, 2))
        await self.messages.mark_read(2, DIRECT, 3)
        self.assertEqual(await self.state(2, DIRECT), (8, 0, 3, 1))
        await self.messages.mark_read(1, DIRECT, 8)
        self.assertEqual(await self.state(1, DIRECT), (8, 0, 8, 0))

        everyone = (1, 2, 3)
        await self.store(
            persist_request(20, conv=GROUP, participants=everyone, kind=MessageKind.MEMBER, body="{}"),
            *(persist_request(n, conv=GROUP, participants=everyone, sender_id=2) for n in range(21, 24)),
        )
        # 3 leaves: the next messages are indexed for 1 and 2 only.
        await self.store(*(persist_request(n, conv=GROUP, participants=(1, 2), sender_id=2) for n in range(24, 27)))
        self.assertEqual(await self.state(3, GROUP), (4, 0, 0, 3))
        self.assertEqual(await self.state(1, GROUP), (7, 0, 0, 6))
        self.assertEqual(
            await self.messages.conversations(2),
            [ConversationState(DIRECT, 8, 0, 3, 1), ConversationState(GROUP, 7, 0, 0, 0)],
        )
        self.assertEqual(await self.messages.conversations(4), [])

    # Groups.

    async def test_create_get_and_members(self) -> None:
        """A group is stored with its members in the order given; unknown groups and users are absent."""
        await self.start_stores()
        founders = [member(1, GroupRole.OWNER), member(3), member(2, GroupRole.ADMIN, joined_seq=4)]
        group = await self.groups.create("team \N{GRINNING FACE}", founders, 1_700_000_000.25)
        self.assertEqual((group.name, group.created_at), ("team \N{GRINNING FACE}", 1_700_000_000.25))
        self.assertEqual(await self.groups.get(group.group_id), group)
        self.assertEqual(await self.groups.members(group.group_id), founders)
        self.assertEqual(await self.groups.member(group.group_id, 2), founders[2])
        self.assertIsNone(await self.groups.member(group.group_id, 4))
        other = await self.groups.create("other", [member(4, GroupRole.OWNER)], 1_700_000_001.0)
        self.assertGreater(other.group_id, group.group_id)
        self.assertEqual(await self.groups.members(other.group_id), [member(4, GroupRole.OWNER)])
        unknown = other.group_id + 100
        self.assertIsNone(await self.groups.get(unknown))
        self.assertEqual(await self.groups.members(unknown), [])
        self.assertIsNone(await self.groups.member(unknown, 1))

    async def test_add_members_skips_members_and_respects_the_limit(self) -> None:
        """add_members adds only newcomers, in order; past the limit it fails group_full and adds nobody."""
        await self.start_stores()
        group = await self.groups.create("g", [member(1, GroupRole.OWNER)], 1.0)
        gid = group.group_id
        self.assertEqual(
            await self.groups.add_members(gid, [member(2), member(3, joined_seq=5)], 4),
            [
                member(2),
                member(3, joined_seq=5),
            ],
        )
        self.assertEqual(await self.groups.add_members(gid, [member(3), member(4), member(4)], 4), [member(4)])
        self.assertEqual(await self.groups.add_members(gid, [member(1), member(2)], 4), [])
        expected = [member(1, GroupRole.OWNER), member(2), member(3, joined_seq=5), member(4)]
        for newcomers, limit in (([member(5)], 4), ([member(2), member(5)], 4), ([member(5), member(6)], 5)):
            with self.assertRaises(GochatError) as caught:
                await self.groups.add_members(gid, newcomers, limit)
            self.assertEqual(caught.exception.code, ErrorCode.GROUP_FULL)
            self.assertEqual(await self.groups.members(gid), expected)
        self.assertEqual(await self.groups.add_members(gid, [member(5)], 5), [member(5)])
        self.assertEqual(await self.groups.members(gid), [*expected, member(5)])
        self.assertEqual(await self.groups.add_members(gid + 100, [member(9)], 10), [])
        self.assertEqual(await self.groups.members(gid + 100), [])

    async def test_remove_member_and_rejoin(self) -> None:
        """remove_member says whether they were a member; one who rejoins comes last in the member list."""
        await self.start_stores()
        group = await self.groups.create("g", [member(1, GroupRole.OWNER), member(2), member(3)], 1.0)
        gid = group.group_id
        self.assertTrue(await self.groups.remove_member(gid, 2))
        self.assertFalse(await self.groups.remove_member(gid, 2))
        self.assertFalse(await self.groups.remove_member(gid + 100, 1))
        self.assertIsNone(await self.groups.member(gid, 2))
        self.assertEqual(await self.groups.add_members(gid, [member(2, joined_seq=9)], 10), [member(2, joined_seq=9)])
        self.assertEqual(
            await self.groups.members(gid), [member(1, GroupRole.OWNER), member(3), member(2, joined_seq=9)]
        )

    async def test_set_role(self) -> None:
        """set_role changes a member's role (answering True even when it is unchanged) and keeps their place."""
        await self.start_stores()
        group = await self.groups.create("g", [member(1, GroupRole.OWNER), member(2), member(3)], 1.0)
        gid = group.group_id
        self.assertTrue(await self.groups.set_role(gid, 2, GroupRole.ADMIN))
        self.assertTrue(await self.groups.set_role(gid, 2, GroupRole.ADMIN))
        self.assertFalse(await self.groups.set_role(gid, 9, GroupRole.ADMIN))
        self.assertFalse(await self.groups.set_role(gid + 100, 1, GroupRole.ADMIN))
        self.assertEqual(
            await self.groups.members(gid), [member(1, GroupRole.OWNER), member(2, GroupRole.ADMIN), member(3)]
        )

    async def test_groups_of(self) -> None:
        """groups_of lists a user's groups by id, with their membership and each group's size."""
        await self.start_stores()
        first = await self.groups.create("first", [member(1, GroupRole.OWNER), member(2), member(3)], 1.0)
        second = await self.groups.create("second", [member(2, GroupRole.OWNER)], 2.0)
        third = await self.groups.create("third", [member(3, GroupRole.OWNER), member(1, joined_seq=2)], 3.0)
        self.assertEqual(
            await self.groups.groups_of(1),
            [(first, member(1, GroupRole.OWNER), 3), (third, member(1, joined_seq=2), 2)],
        )
        self.assertEqual(
            await self.groups.groups_of(2), [(first, member(2), 3), (second, member(2, GroupRole.OWNER), 1)]
        )
        await self.groups.remove_member(first.group_id, 2)
        self.assertEqual(await self.groups.groups_of(2), [(second, member(2, GroupRole.OWNER), 1)])
        self.assertEqual(
            await self.groups.groups_of(1),
            [(first, member(1, GroupRole.OWNER), 2), (third, member(1, joined_seq=2), 2)],
        )
        self.assertEqual(await self.groups.groups_of(9), [])
