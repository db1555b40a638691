"""ChatLogic's rules on in-memory stores with a Clock: accounts, tokens, and the 1:1 delivery contract."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gochat.errors import ErrorCode, GochatError
from gochat.logic.interfaces import Route
from gochat.logic.memory import InMemoryMessageStore
from gochat.model import Ack, Delivery, Identity, PersistRequest, SendCommand

from .test_gateway import build_logic


class ChatTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000.0)
        self.messages = InMemoryMessageStore()
        self.logic = build_logic(self.clock, self.messages, max_pending=20)
        self.deliveries: dict[str, list[Delivery]] = {"gw1": [], "gw2": []}
        for gateway_id, received in self.deliveries.items():
            self.logic.deliveries.subscribe(gateway_id, received.append)

    def register(self, name: str) -> int:
        return self.successResultOf(self.logic.register(name, "password1"))

    def command(self, sender_id: int, to: str, cmid: str, body: str = "hello", session: str = "s1") -> SendCommand:
        return SendCommand(sender_id, f"user{sender_id}", "gw1", session, cmid, to, body)

    def error_code(self, d: Deferred[object]) -> ErrorCode:
        failure = self.failureResultOf(d, GochatError)
        assert isinstance(failure.value, GochatError)
        return failure.value.code


class AccountTests(ChatTestCase):
    def test_register_and_login(self) -> None:
        """A registered user logs in and gets a token that connects as that user, case-insensitively."""
        user_id = self.register("Alice")
        result = self.successResultOf(self.logic.login("ALICE", "password1"))
        self.assertEqual(result.user_id, user_id)
        self.assertEqual(result.expires_at, self.clock.seconds() + 3600.0)
        identity = self.successResultOf(self.logic.connect(result.token, "gw1", "s1"))
        self.assertEqual((identity.user_id, identity.username), (user_id, "alice"))

    def test_register_refusals(self) -> None:
        """Taken names, bad names and short passwords are refused with their codes."""
        self.register("alice")
        self.assertEqual(self.error_code(self.logic.register("alice", "password1")), ErrorCode.USERNAME_TAKEN)
        self.assertEqual(self.error_code(self.logic.register("a", "password1")), ErrorCode.BAD_REQUEST)
        self.assertEqual(self.error_code(self.logic.register("bad name!", "password1")), ErrorCode.BAD_REQUEST)
        self.assertEqual(self.error_code(self.logic.register("bob", "short")), ErrorCode.BAD_REQUEST)

    def test_bad_credentials_look_alike(self) -> None:
        """A wrong password and an unknown user fail the same way."""
        self.register("alice")
        self.assertEqual(self.error_code(self.logic.login("alice", "password2")), ErrorCode.BAD_CREDENTIALS)
        self.assertEqual(self.error_code(self.logic.login("nobody", "password1")), ErrorCode.BAD_CREDENTIALS)
        self.assertEqual(self.error_code(self.logic.login("!", "password1")), ErrorCode.BAD_CREDENTIALS)

    def test_token_expires(self) -> None:
        """A token stops connecting once its lifetime is over."""
        self.register("alice")
        token = self.successResultOf(self.logic.login("alice", "password1")).token
        self.clock.advance(3600.0)
        self.assertEqual(self.error_code(self.logic.connect(token, "gw1", "s1")), ErrorCode.TOKEN_EXPIRED)
        self.assertEqual(self.error_code(self.logic.connect("v1.x.y", "gw1", "s1")), ErrorCode.INVALID_TOKEN)


class SendTests(ChatTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.alice, self.bob = self.register("alice"), self.register("bob")
        for user_id, gateway_id, session_id in ((self.alice, "gw1", "s1"), (self.bob, "gw2", "b1")):
            self.successResultOf(self.logic.routes.add(user_id, Route(gateway_id, session_id)))

    def test_ack_waits_for_commit(self) -> None:
        """The ack and the push come only after the batch holding the message commits."""
        d = self.logic.send(self.command(self.alice, "bob", "m1"))
        self.assertNoResult(d)
        self.assertEqual(self.deliveries["gw2"], [])
        self.clock.advance(0.005)
        ack = self.successResultOf(d)
        self.assertEqual((ack.conv, ack.seq, ack.client_msg_id), (f"d:{self.alice}:{self.bob}", 1, "m1"))
        (delivery,) = self.deliveries["gw2"]
        self.assertEqual((delivery.session_ids, delivery.message.msg_id), (("b1",), ack.msg_id))
        self.assertEqual(self.deliveries["gw1"], [], "the sending session gets no push of its own message")

    def test_seq_gap_free_both_directions(self) -> None:
        """Both directions share one conversation whose seq goes 1, 2, 3... with no gap."""
        acks: list[Deferred[Ack]] = []
        for i in range(25):
            sender, to = (self.alice, "bob") if i % 3 else (self.bob, "alice")
            acks.append(self.logic.send(self.command(sender, to, f"m{i}")))
        self.clock.advance(0.1)
        results = [self.successResultOf(d) for d in acks]
        self.assertEqual([ack.seq for ack in results], list(range(1, 26)))
        self.assertEqual(len({ack.msg_id for ack in results}), 25)

    def test_idempotent_retry(self) -> None:
        """The same client_msg_id, in flight or after commit, returns the same ack and stores once."""
        first = self.logic.send(self.command(self.alice, "bob", "dup"))
        in_flight = self.logic.send(self.command(self.alice, "bob", "dup"))
        self.clock.advance(0.005)
        later = self.logic.send(self.command(self.alice, "bob", "dup"))
        self.clock.advance(0.005)
        ack = self.successResultOf(first)
        self.assertEqual(self.successResultOf(in_flight), ack)
        self.assertEqual(self.successResultOf(later), ack)
        self.assertEqual(len(self.messages.messages), 1)
        self.assertEqual(len(self.deliveries["gw2"]), 1)
        other = self.logic.send(self.command(self.bob, "alice", "dup"))
        self.clock.advance(0.005)
        self.assertEqual(self.successResultOf(other).seq, 2, "client ids are per sender")

    def test_refusals(self) -> None:
        """Unknown recipients and bodies out of bounds are refused and take no seq."""
        self.assertEqual(
            self.error_code(self.logic.send(self.command(self.alice, "carol", "x"))), ErrorCode.UNKNOWN_USER
        )
        self.assertEqual(
            self.error_code(self.logic.send(self.command(self.alice, "bob", "y", ""))), ErrorCode.BAD_REQUEST
        )
        too_long = self.command(self.alice, "bob", "z", "x" * 101)
        self.assertEqual(self.error_code(self.logic.send(too_long)), ErrorCode.BAD_REQUEST)
        d = self.logic.send(self.command(self.alice, "bob", "ok"))
        self.clock.advance(0.005)
        self.assertEqual(self.successResultOf(d).seq, 1)

    def test_store_backlog_refuses_without_gap(self) -> None:
        """When the worker's backlog is full a send is refused as unavailable and takes no seq."""
        held: list[Deferred[None]] = []
        commit = self.messages.commit_batch

        def slow_commit(requests, known):  # type: ignore[no-untyped-def]
            gate: Deferred[None] = Deferred()
            held.append(gate)
            return gate.addCallback(lambda _: commit(requests, known))

        self.messages.commit_batch = slow_commit  # type: ignore[method-assign]
        sends = [self.logic.send(self.command(self.alice, "bob", f"m{i}")) for i in range(35)]
        refused = [d for d in sends if d.called]
        self.assertEqual(len(refused), 5, "10 in the batch being written, 20 waiting, 5 refused")
        for d in refused:
            self.assertEqual(self.error_code(d), ErrorCode.UNAVAILABLE)
        while held:
            held.pop(0).callback(None)
            self.clock.advance(0.01)
        self.assertEqual([self.successResultOf(d).seq for d in sends[:30]], list(range(1, 31)))
        late = self.logic.send(self.command(self.alice, "bob", "late"))
        self.clock.advance(0.01)
        held.pop(0).callback(None)
        self.assertEqual(self.successResultOf(late).seq, 31)

    def test_seq_continues_after_restart(self) -> None:
        """A new logic over the same store continues each conversation after the highest stored seq."""
        for i in range(3):
            self.logic.send(self.command(self.alice, "bob", f"m{i}"))
        self.clock.advance(0.005)
        restarted = build_logic(self.clock, self.messages, accounts=self.logic.accounts)  # type: ignore[arg-type]
        d = restarted.send(self.command(self.bob, "alice", "after"))
        self.clock.advance(0.005)
        self.assertEqual(self.successResultOf(d).seq, 4)

    def test_retry_through_another_process(self) -> None:
        """A retry reaching another logic process after the commit gets the stored ack, not a new seq."""
        first = self.logic.send(self.command(self.alice, "bob", "dup"))
        self.clock.advance(0.005)
        other = build_logic(self.clock, self.messages, accounts=self.logic.accounts)  # type: ignore[arg-type]
        retry = other.send(self.command(self.alice, "bob", "dup"))
        self.clock.advance(0.005)
        self.assertEqual(self.successResultOf(retry), self.successResultOf(first))
        self.assertEqual(len(self.messages.messages), 1)

    def test_stale_seq_cache_is_refreshed(self) -> None:
        """When another worker wrote to a conversation, the batch is retried with fresh seqs, no gap, no reuse."""
        self.logic.send(self.command(self.alice, "bob", "m1"))
        self.clock.advance(0.005)
        other = build_logic(self.clock, self.messages, accounts=self.logic.accounts)  # type: ignore[arg-type]
        other.send(self.command(self.bob, "alice", "from-other"))
        self.clock.advance(0.005)
        d = self.logic.send(self.command(self.alice, "bob", "m2"))
        self.clock.advance(0.005)
        self.assertNoResult(d)
        self.clock.advance(1.0)
        self.assertEqual(self.successResultOf(d).seq, 3)
        self.assertEqual(sorted(m.seq for m in self.messages.messages.values()), [1, 2, 3])
        self.flushLoggedErrors()

    def test_deliveries_grouped_by_gateway(self) -> None:
        """Sessions on one gateway share one delivery; the sender's other devices are included."""
        self.successResultOf(self.logic.routes.add(self.bob, Route("gw2", "b2")))
        self.successResultOf(self.logic.routes.add(self.alice, Route("gw2", "a2")))
        self.logic.send(self.command(self.alice, "bob", "m1"))
        self.clock.advance(0.005)
        (delivery,) = self.deliveries["gw2"]
        self.assertEqual(sorted(delivery.session_ids), ["a2", "b1", "b2"])
        self.assertEqual(self.deliveries["gw1"], [])

    def test_disconnect_stops_deliveries(self) -> None:
        """A session that disconnected is no longer a delivery target."""
        self.successResultOf(self.logic.disconnect(Identity(self.bob, "bob"), "gw2", "b1"))
        self.logic.send(self.command(self.alice, "bob", "m1"))
        self.clock.advance(0.005)
        self.assertEqual(self.deliveries["gw2"], [])


def _refuse(item: object) -> Deferred[None]:
    raise GochatError(ErrorCode.UNAVAILABLE, "the store is behind; retry")


class BadTextTests(ChatTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.alice, self.bob = self.register("alice"), self.register("bob")

    def test_lone_surrogates_refused(self) -> None:
        """Text UTF-8 cannot carry is refused before it reaches the store (it would poison a batch)."""
        for command in (self.command(self.alice, "bob", "m1", "bad \ud800"), self.command(self.alice, "bob", "\udfff")):
            self.assertEqual(self.error_code(self.logic.send(command)), ErrorCode.BAD_REQUEST)
        d = self.logic.send(self.command(self.alice, "bob", "m2", "fine \N{GRINNING FACE}"))
        self.clock.advance(0.005)
        self.assertEqual(self.successResultOf(d).seq, 1)

    def test_what_the_store_cannot_hold_is_refused_alone(self) -> None:
        """A message the store's check refuses gets bad_request at once, takes no seq, and holds up no other."""

        def check(request: PersistRequest) -> None:
            if len(request.client_msg_id) > 10:
                raise GochatError(ErrorCode.BAD_REQUEST, "client_msg_id is longer than 10 characters")

        self.messages.check = check  # type: ignore[method-assign]
        refused = self.logic.send(self.command(self.alice, "bob", "x" * 11))
        self.assertEqual(self.error_code(refused), ErrorCode.BAD_REQUEST)
        d = self.logic.send(self.command(self.alice, "bob", "m1"))
        self.clock.advance(0.005)
        self.assertEqual(self.successResultOf(d).seq, 1)

    def test_reused_client_msg_id_for_other_message(self) -> None:
        """A client_msg_id reused for a different body or recipient is refused, not silently acked."""
        self.register("carol")
        self.logic.send(self.command(self.alice, "bob", "m1", "first"))
        self.clock.advance(0.005)
        other_body = self.logic.send(self.command(self.alice, "bob", "m1", "second"))
        other_recipient = self.logic.send(self.command(self.alice, "carol", "m1", "first"))
        self.clock.advance(0.005)
        self.assertEqual(self.error_code(other_body), ErrorCode.DUPLICATE_CLIENT_MSG_ID)
        self.assertEqual(self.error_code(other_recipient), ErrorCode.DUPLICATE_CLIENT_MSG_ID)

    def test_password_control_characters_refused(self) -> None:
        """Passwords with NUL or other control characters, or lone surrogates, are refused at registration."""
        for password in ("password\x00", "pass\nword1", "password\ud800"):
            self.assertEqual(self.error_code(self.logic.register("dave", password)), ErrorCode.BAD_REQUEST)
