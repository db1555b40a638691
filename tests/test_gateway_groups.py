"""Groups through the whole gateway: Autobahn both sides over iosim, the real ChatLogic on in-memory stores.

The frames of docs/protocol.md for groups, history, read receipts, typing,
edit and recall; a group message framed once for 1,000 members on one
gateway; a member offline during 50 group messages resuming by sync.
"""

from __future__ import annotations

from typing import Any

from gochat.gateway import codec
from gochat.logic.chat import ChatSettings
from gochat.model import StoredMessage

from .test_gateway import GatewayTestCase, JsonClient


def frames_of(client: JsonClient, frame_type: str) -> list[dict[str, Any]]:
    """The bodies of the frames of *frame_type* the client got, taken out of its record."""
    found = [f for f in client.received if f["type"] == frame_type]
    client.received = [f for f in client.received if f["type"] != frame_type]
    return [f["body"] for f in found]


class GroupFramesTests(GatewayTestCase):
    def create_group(self, owner: JsonClient, *members: str) -> dict[str, Any]:
        owner.send_json("group_create", {"name": "team", "members": list(members)}, "g")
        self.settle()
        (reply,) = frames_of(owner, "group_create_ok")
        return reply

    def test_group_chat_end_to_end(self) -> None:
        """Create, send into the conversation, everyone else gets the push; list groups and members."""
        alice, bob, carol = self.login("alice"), self.login("bob"), self.login("carol")
        group = self.create_group(alice, "bob", "carol")
        self.assertEqual((group["conv"], group["role"], group["members"]), ("g:1", "owner", 3))
        for client in (alice, bob, carol):
            (event,) = frames_of(client, "push")
            self.assertEqual((event["kind"], event["seq"]), ("member", 1))
        bob.send_json("send", {"client_msg_id": "b1", "conv": "g:1", "body": "hi team"}, "s")
        self.settle()
        (ack,) = frames_of(bob, "ack")
        self.assertEqual((ack["conv"], ack["seq"]), ("g:1", 2))
        for client in (alice, carol):
            (push,) = frames_of(client, "push")
            self.assertEqual((push["from"], push["body"], push["kind"]), ("bob", "hi team", "text"))
        self.assertEqual(frames_of(bob, "push"), [])
        carol.send_json("groups", {}, "l")
        carol.send_json("group_members", {"group_id": 1}, "m")
        self.settle()
        (listing,) = frames_of(carol, "groups_ok")
        self.assertEqual([g["name"] for g in listing["groups"]], ["team"])
        (members,) = frames_of(carol, "group_members_ok")
        self.assertEqual([m["user"] for m in members["members"]], ["alice", "bob", "carol"])

    def test_refusals_are_error_frames(self) -> None:
        """A non-member sending, reading history or typing gets not_member; the session goes on."""
        alice, self_dave = self.login("alice"), self.login("dave")
        self.login("bob")
        self.create_group(alice, "bob")
        for frame_type, body in (
            ("send", {"client_msg_id": "d1", "conv": "g:1", "body": "let me in"}),
            ("history", {"conv": "g:1"}),
            ("typing", {"conv": "g:1"}),
            ("read", {"conv": "g:1", "seq": 1}),
            ("group_members", {"group_id": 1}),
        ):
            self_dave.send_json(frame_type, body, frame_type)
            self.settle()
            error = self_dave.pop()
            self.assertEqual((error["type"], error["id"], error["body"]["code"]), ("error", frame_type, "not_member"))
        for bad in ({"to": "bob", "conv": "g:1"}, {}):
            self_dave.send_json("send", {"client_msg_id": "x", "body": "b", **bad}, "bad")
            self.settle()
            self.assertEqual(self_dave.pop()["body"]["code"], "bad_request")
        self_dave.send_json("ping", {}, "p")
        self.flush()
        self.assertEqual(self_dave.pop()["type"], "pong")

    def test_history_read_receipts_typing_edit_recall(self) -> None:
        alice, bob = self.login("alice"), self.login("bob")
        self.create_group(alice, "bob")
        for i in range(3):
            alice.send_json("send", {"client_msg_id": f"a{i}", "conv": "g:1", "body": f"m{i}"})
        self.settle()
        frames_of(alice, "ack")
        bob.send_json("history", {"conv": "g:1", "before": 4, "limit": 2}, "h")
        self.settle()
        (page,) = frames_of(bob, "history_ok")
        self.assertEqual([m["seq"] for m in page["messages"]], [2, 3])
        bob.send_json("conversations", {}, "c")
        self.settle()
        (convs,) = frames_of(bob, "conversations_ok")
        self.assertEqual(convs["convs"], [{"conv": "g:1", "title": "team", "last_seq": 4, "read_seq": 0, "unread": 3}])
        bob.send_json("read", {"conv": "g:1", "seq": 4}, "r")
        self.settle()
        self.assertEqual(frames_of(bob, "read_ok"), [{"conv": "g:1", "seq": 4}])
        (receipt,) = frames_of(alice, "receipt")
        self.assertEqual((receipt["from"], receipt["seq"]), ("bob", 4))
        bob.send_json("typing", {"conv": "g:1"})
        bob.send_json("typing", {"conv": "g:1"}, "t2")
        self.settle()
        (typing,) = frames_of(alice, "typing")
        self.assertEqual(typing["from"], "bob")
        (limited,) = frames_of(bob, "error")
        self.assertEqual(limited["code"], "rate_limited")
        self.clock.advance(1.0)
        frames_of(bob, "push")
        alice.send_json("edit", {"client_msg_id": "e1", "conv": "g:1", "seq": 2, "body": "m0!"}, "e")
        alice.send_json("recall", {"client_msg_id": "r1", "conv": "g:1", "seq": 3}, "x")
        bob.send_json("edit", {"client_msg_id": "e2", "conv": "g:1", "seq": 2, "body": "mine now"}, "e")
        self.settle()
        self.assertEqual([a["seq"] for a in frames_of(alice, "ack")], [5, 6])
        self.assertEqual(frames_of(bob, "error")[0]["code"], "forbidden")
        pushes = frames_of(bob, "push")
        self.assertEqual(
            [(p["kind"], p["ref_seq"], p["body"]) for p in pushes], [("edit", 2, "m0!"), ("recall", 3, "")]
        )


class FanOutTests(GatewayTestCase):
    chat_settings = ChatSettings(token_ttl=3600.0, max_body_length=100, max_group_size=1001)
    max_frame_bytes = 64 * 1024

    def quick_login(self, name: str) -> JsonClient:
        """Log in pumping only this client's connection, so a thousand logins stay linear."""
        client = self.connect()
        client.send_json("auth", {"token": self.user(name)}, "a")
        self.pumps[-1].flush()
        self.assertEqual(client.pop()["type"], "auth_ok")
        return client

    def test_one_message_to_1000_members_is_framed_once(self) -> None:
        """A message to a group of 1,000 online members is encoded once and reaches every member once."""
        owner = self.quick_login("owner")
        members = [self.quick_login(f"member{i:04d}") for i in range(1000)]
        owner.send_json("group_create", {"name": "everyone", "members": [f"member{i:04d}" for i in range(1000)]})
        self.settle()
        for client in [owner, *members]:
            client.received.clear()
        encodings: list[StoredMessage] = []
        real_encode = codec.encode_push

        def counting_encode(message: StoredMessage) -> bytes:
            encodings.append(message)
            return real_encode(message)

        self.patch(codec, "encode_push", counting_encode)
        prepared_before = self.hub.frames_prepared
        owner.send_json("send", {"client_msg_id": "big", "conv": "g:1", "body": "hello, everyone"}, "s")
        self.settle()
        self.assertEqual(len(encodings), 1)
        self.assertEqual(self.hub.frames_prepared - prepared_before, 1)
        self.assertEqual(owner.pop()["type"], "ack")
        for client in members:
            (push,) = client.received
            self.assertEqual((push["type"], push["body"]["body"], push["body"]["seq"]), ("push", "hello, everyone", 2))


class OfflineResumeTests(GatewayTestCase):
    def test_member_offline_during_50_messages_resumes_in_order_once(self) -> None:
        alice, bob = self.login("alice"), self.login("bob")
        self.user("carol")
        alice.send_json("group_create", {"name": "team", "members": ["bob", "carol"]}, "g")
        self.settle()
        for i in range(50):
            (alice if i % 2 else bob).send_json("send", {"client_msg_id": f"m{i}", "conv": "g:1", "body": str(i)})
            self.settle()
        carol = self.login("carol")
        carol.send_json("sync", {"limit": 1000}, "s")
        self.settle()
        (synced,) = frames_of(carol, "sync_ok")
        (conv,) = synced["convs"]
        self.assertTrue(conv["complete"])
        texts = [m for m in conv["messages"] if m["kind"] == "text"]
        self.assertEqual([m["body"] for m in texts], [str(i) for i in range(50)])
        self.assertEqual([m["seq"] for m in conv["messages"]], list(range(1, 52)))
        carol.send_json("recv_ack", {"conv": "g:1", "seq": 51})
        bob.send_json("send", {"client_msg_id": "after", "conv": "g:1", "body": "live"})
        self.settle()
        self.assertEqual([p["seq"] for p in frames_of(carol, "push")], [52])
        carol.send_json("sync", {}, "s2")
        self.settle()
        (again,) = frames_of(carol, "sync_ok")
        ((conv_again,),) = [again["convs"]]
        self.assertEqual((conv_again["last_seq"], [m["seq"] for m in conv_again["messages"]]), (52, [52]))
