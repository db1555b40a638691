"""The session state machine, driven with a Clock, a recording transport and a scripted logic client."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gochat import errors
from gochat.errors import ErrorCode, GochatError
from gochat.gateway.session import Session, SessionLimits, SessionState
from gochat.model import Ack, ConversationSync, Identity, StoredMessage, SyncResult
from gochat.wheel import HashedWheel

from .fakes import RecordingTransport, ScriptedLogic


def frame(frame_type: str, body: dict[str, object] | None = None, request_id: str | None = None) -> bytes:
    envelope: dict[str, object] = {"v": 1, "type": frame_type, "body": body or {}}
    if request_id is not None:
        envelope["id"] = request_id
    return json.dumps(envelope).encode()


class Observer:
    """The hub's part: session bookkeeping, and recv_acks passed straight on to logic."""

    def __init__(self, logic: Any = None) -> None:
        self.opened: list[Session] = []
        self.closed: list[Session] = []
        self.logic = logic
        self.sends_in_flight = 0

    def flush_received(self) -> None:
        pass

    def record_received(self, user_id: int, conv: str, seq: int) -> Deferred[None]:
        d: Deferred[None] = self.logic.record_received(user_id, conv, seq)
        return d

    def session_opened(self, session: Session) -> None:
        self.opened.append(session)

    def session_closed(self, session: Session) -> None:
        self.closed.append(session)

    def send_started(self, session: Session) -> None:
        self.sends_in_flight += 1

    def send_finished(self) -> None:
        self.sends_in_flight -= 1


class SessionTestCase(SynchronousTestCase):
    limits = SessionLimits(
        auth_timeout=10.0, idle_timeout=60.0, close_timeout=5.0, frames_per_second=10, frame_burst=20
    )

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.wheel: HashedWheel[Session] = HashedWheel(0.5, 64, self.clock.seconds())
        self.transport = RecordingTransport()
        self.logic = ScriptedLogic()
        self.observer = Observer(self.logic)
        self.session = Session(
            "s1", "gw1", self.transport, self.logic, self.wheel, self.observer, self.limits, self.clock.seconds()
        )

    def receive(self, data: bytes, is_binary: bool = False) -> None:
        self.session.frame_received(data, is_binary, self.clock.seconds())

    def advance(self, seconds: float) -> None:
        """Move time on in wheel ticks, as the gateway's TimerService does."""
        steps = int(seconds / self.wheel.tick)
        for _ in range(steps):
            self.clock.advance(self.wheel.tick)
            for session in self.wheel.advance(self.clock.seconds()):
                session.deadline_passed(self.clock.seconds())

    def authenticate(self) -> None:
        self.receive(frame("auth", {"token": "alice-token"}, "a1"))
        reply = self.transport.pop()
        self.assertEqual(reply["type"], "auth_ok")


class AuthenticationTests(SessionTestCase):
    def test_auth_ok(self) -> None:
        """A valid token opens the session, routes it, and the reply echoes the request id."""
        self.receive(frame("auth", {"token": "alice-token"}, "a1"))
        reply = self.transport.pop()
        self.assertEqual(
            reply,
            {
                "v": 1,
                "type": "auth_ok",
                "id": "a1",
                "body": {"user_id": 1, "username": "alice", "session_id": "s1", "heartbeat": 30.0},
            },
        )
        self.assertIs(self.session.state, SessionState.OPEN)
        self.assertEqual(self.session.identity, Identity(1, "alice"))
        self.assertEqual(self.logic.connected, [(Identity(1, "alice"), "gw1", "s1")])
        self.assertEqual(self.observer.opened, [self.session])

    def test_forged_token(self) -> None:
        """A forged token gets an invalid_token error frame and the 4401 close."""
        self.receive(frame("auth", {"token": "forged"}, "a1"))
        reply = self.transport.pop()
        self.assertEqual((reply["type"], reply["id"], reply["body"]["code"]), ("error", "a1", "invalid_token"))
        self.assertEqual(self.transport.closed, (errors.CLOSE_INVALID_TOKEN, "invalid_token"))
        self.assertIs(self.session.state, SessionState.CLOSING)
        self.assertEqual(self.observer.opened, [])

    def test_expired_token(self) -> None:
        """An expired token gets token_expired and the 4402 close."""
        self.receive(frame("auth", {"token": "expired"}, "a1"))
        self.assertEqual(self.transport.pop()["body"]["code"], "token_expired")
        self.assertEqual(self.transport.closed, (errors.CLOSE_TOKEN_EXPIRED, "token_expired"))

    def test_send_before_auth(self) -> None:
        """A send before auth is refused with not_authenticated; the session stays and can still auth."""
        self.receive(frame("send", {"client_msg_id": "m1", "to": "bob", "body": "hi"}, "s1"))
        reply = self.transport.pop()
        self.assertEqual((reply["type"], reply["id"], reply["body"]["code"]), ("error", "s1", "not_authenticated"))
        self.assertEqual(self.logic.sends, [])
        self.assertIsNone(self.transport.closed)
        self.authenticate()

    def test_send_while_authenticating(self) -> None:
        """Frames other than ping are refused while logic is still checking the token."""
        self.logic.pending_connects = []
        self.receive(frame("auth", {"token": "alice-token"}, "a1"))
        self.assertIs(self.session.state, SessionState.AUTHENTICATING)
        self.receive(frame("send", {"client_msg_id": "m1", "to": "bob", "body": "hi"}, "s1"))
        self.assertEqual(self.transport.pop()["body"]["code"], "not_authenticated")
        self.logic.pending_connects[0].callback(Identity(1, "alice"))
        self.assertEqual(self.transport.pop()["type"], "auth_ok")

    def test_second_auth(self) -> None:
        """Authenticating twice is refused with already_authenticated."""
        self.authenticate()
        self.receive(frame("auth", {"token": "alice-token"}, "a2"))
        self.assertEqual(self.transport.pop()["body"]["code"], "already_authenticated")
        self.assertEqual(len(self.logic.connected), 1)

    def test_auth_deadline(self) -> None:
        """A connection that never authenticates is closed with 4408 at the deadline, not before."""
        self.advance(9.5)
        self.assertIsNone(self.transport.closed)
        self.advance(1.0)
        self.assertEqual(self.transport.pop()["body"]["code"], "auth_timeout")
        self.assertEqual(self.transport.closed, (errors.CLOSE_AUTH_TIMEOUT, "auth_timeout"))

    def test_pings_do_not_extend_auth_deadline(self) -> None:
        """Pinging without authenticating does not keep a connection past the auth deadline."""
        for _ in range(10):
            self.receive(frame("ping"))
            self.advance(1.0)
        self.assertEqual(self.transport.closed, (errors.CLOSE_AUTH_TIMEOUT, "auth_timeout"))

    def test_socket_lost_during_auth(self) -> None:
        """If the socket goes while logic routes it, the late route is undone."""
        self.logic.pending_connects = []
        self.receive(frame("auth", {"token": "alice-token"}, "a1"))
        self.session.connection_lost()
        self.logic.pending_connects[0].callback(Identity(1, "alice"))
        self.assertEqual(self.logic.disconnected, [(Identity(1, "alice"), "gw1", "s1")])
        self.assertEqual(self.transport.frames, [])


class IdleAndCloseTests(SessionTestCase):
    def test_idle_timeout(self) -> None:
        """An authenticated session with no frame for idle_timeout is closed with 4409."""
        self.authenticate()
        self.advance(59.0)
        self.assertIsNone(self.transport.closed)
        self.advance(1.5)
        self.assertEqual(self.transport.pop()["body"]["code"], "idle_timeout")
        self.assertEqual(self.transport.closed, (errors.CLOSE_IDLE_TIMEOUT, "idle_timeout"))

    def test_frames_keep_alive(self) -> None:
        """Every frame (and WebSocket ping/pong activity) pushes the idle deadline out."""
        self.authenticate()
        for i in range(10):
            self.advance(40.0)
            if i % 2:
                self.receive(frame("ping", request_id=f"p{i}"))
                self.assertEqual(self.transport.pop(), {"v": 1, "type": "pong", "id": f"p{i}", "body": {}})
            else:
                self.session.activity(self.clock.seconds())
        self.assertIsNone(self.transport.closed)
        self.assertIs(self.session.state, SessionState.OPEN)

    def test_close_timeout_aborts(self) -> None:
        """A peer that does not finish the closing handshake is cut off after close_timeout."""
        self.authenticate()
        self.session.close(4503, "bye")
        self.assertEqual(self.transport.closed, (4503, "bye"))
        self.advance(4.5)
        self.assertFalse(self.transport.aborted)
        self.advance(1.0)
        self.assertTrue(self.transport.aborted)

    def test_activity_while_closing_does_not_delay_the_abort(self) -> None:
        """Pongs after the close frame do not push the close timeout back as they pushed the idle one."""
        self.authenticate()
        self.session.close(4503, "bye")
        for _ in range(5):
            self.advance(1.0)
            self.session.activity(self.clock.seconds())
        self.advance(0.5)
        self.assertTrue(self.transport.aborted)

    def test_connection_lost_unroutes(self) -> None:
        """Losing the socket cancels the timer and removes the route."""
        self.authenticate()
        self.session.connection_lost()
        self.assertIs(self.session.state, SessionState.CLOSED)
        self.assertEqual(self.logic.disconnected, [(Identity(1, "alice"), "gw1", "s1")])
        self.assertEqual(self.observer.closed, [self.session])
        self.assertEqual(len(self.wheel), 0)
        self.receive(frame("ping"))
        self.assertEqual(self.transport.frames, [])


class SendTests(SessionTestCase):
    def test_send_is_acked_when_logic_acks(self) -> None:
        """A send becomes a SendCommand; its ack frame is written only when logic's Deferred fires."""
        self.authenticate()
        self.receive(frame("send", {"client_msg_id": "m1", "to": "bob", "body": "hi"}, "s1"))
        command, d = self.logic.sends[0]
        self.assertEqual(
            (command.sender_id, command.sender, command.to_username, command.body, command.client_msg_id),
            (1, "alice", "bob", "hi", "m1"),
        )
        self.assertEqual((command.gateway_id, command.session_id), ("gw1", "s1"))
        self.assertEqual(self.transport.frames, [])
        d.callback(Ack("m1", 252175444919451648, "d:1:2", 1, 1795812911262))
        self.assertEqual(
            self.transport.pop(),
            {
                "v": 1,
                "type": "ack",
                "id": "s1",
                "body": {
                    "client_msg_id": "m1",
                    "msg_id": "252175444919451648",
                    "conv": "d:1:2",
                    "seq": 1,
                    "ts": 1795812911262,
                },
            },
        )

    def test_send_error_is_reported(self) -> None:
        """A refusal from logic becomes an error frame for that request; the session goes on."""
        self.authenticate()
        self.receive(frame("send", {"client_msg_id": "m1", "to": "nobody", "body": "hi"}, "s1"))
        self.logic.sends[0][1].errback(GochatError(ErrorCode.UNKNOWN_USER, "no user 'nobody'"))
        reply = self.transport.pop()
        self.assertEqual((reply["id"], reply["body"]), ("s1", {"code": "unknown_user", "message": "no user 'nobody'"}))
        self.assertIs(self.session.state, SessionState.OPEN)

    def test_unexpected_failure_is_unavailable(self) -> None:
        """An unexpected failure is logged and reported as unavailable, never as a traceback."""
        self.authenticate()
        self.receive(frame("send", {"client_msg_id": "m1", "to": "bob", "body": "hi"}, "s1"))
        self.logic.sends[0][1].errback(RuntimeError("boom"))
        self.assertEqual(self.transport.pop()["body"]["code"], "unavailable")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_ack_after_close_is_not_written(self) -> None:
        """An ack arriving after the socket closed is dropped (the client retries with the same id)."""
        self.authenticate()
        self.receive(frame("send", {"client_msg_id": "m1", "to": "bob", "body": "hi"}, "s1"))
        self.session.connection_lost()
        self.logic.sends[0][1].callback(Ack("m1", 1, "d:1:2", 1, 0))
        self.assertEqual(self.transport.frames, [])


class BadInputTests(SessionTestCase):
    def test_malformed_json(self) -> None:
        """Malformed JSON gets bad_frame; the session stays open."""
        self.authenticate()
        self.receive(b"{not json")
        self.assertEqual(self.transport.pop()["body"]["code"], "bad_frame")
        self.assertIsNone(self.transport.closed)

    def test_binary_frame(self) -> None:
        """A binary frame is refused and closes with 4403."""
        self.authenticate()
        self.receive(b"\x00\x01", is_binary=True)
        self.assertEqual(self.transport.pop()["body"]["code"], "unsupported_frame")
        self.assertEqual(self.transport.closed, (errors.CLOSE_UNSUPPORTED_FRAME, "unsupported_frame"))

    def test_unknown_type(self) -> None:
        """An unknown type gets unknown_type with the request id."""
        self.authenticate()
        self.receive(frame("teleport", {}, "t1"))
        reply = self.transport.pop()
        self.assertEqual((reply["id"], reply["body"]["code"]), ("t1", "unknown_type"))

    def test_wrong_version(self) -> None:
        """A frame of another protocol version gets unsupported_version with its id."""
        self.receive(json.dumps({"v": 2, "type": "ping", "id": "x"}).encode())
        reply = self.transport.pop()
        self.assertEqual((reply["id"], reply["body"]["code"]), ("x", "unsupported_version"))

    def test_body_too_long(self) -> None:
        """A message body over the limit is a bad_request and reaches no logic."""
        self.authenticate()
        body = "x" * (self.limits.max_body_length + 1)
        self.receive(frame("send", {"client_msg_id": "m1", "to": "bob", "body": body}, "s1"))
        self.assertEqual(self.transport.pop()["body"]["code"], "bad_request")
        self.assertEqual(self.logic.sends, [])

    def test_flood(self) -> None:
        """Past the burst, frames get rate_limited; persistent flooding closes with 4429."""
        self.authenticate()
        for i in range(self.limits.frame_burst - 1):
            self.receive(frame("ping", request_id=str(i)))
        self.assertEqual({f["type"] for f in self.transport.frames}, {"pong"})
        self.transport.frames.clear()
        self.receive(frame("ping"))
        self.assertEqual(self.transport.pop()["body"]["code"], "rate_limited")
        self.assertIsNone(self.transport.closed)
        for _ in range(self.limits.rate_strikes_before_close):
            self.receive(frame("ping"))
        self.assertEqual(self.transport.closed, (errors.CLOSE_RATE_LIMITED, "rate_limited"))

    def test_rate_recovers(self) -> None:
        """After a pause the bucket refills and frames are served again."""
        self.authenticate()
        for _ in range(self.limits.frame_burst + 5):
            self.receive(frame("ping"))
        self.transport.frames.clear()
        self.clock.advance(1.0)
        self.receive(frame("ping", request_id="later"))
        self.assertEqual(self.transport.pop()["type"], "pong")


def stored(seq: int, conv: str = "d:1:2") -> StoredMessage:
    return StoredMessage(5000 + seq, conv, seq, 2, "bob", f"m{seq}", f"text {seq}", 1000 + seq)


class SyncTests(SessionTestCase):
    def test_sync_reply_then_held_pushes_in_order(self) -> None:
        """Pushes arriving during a sync wait, then follow the reply, minus those it already carried."""
        self.authenticate()
        self.receive(frame("sync", {"since": {"d:1:2": 3}, "limit": 50}, "y1"))
        user_id, since, limit, d = self.logic.syncs[0]
        self.assertEqual((user_id, since, limit), (1, {"d:1:2": 3}, 50))
        self.assertTrue(self.session.holding_pushes)
        for seq in (5, 6, 7):
            self.session.hold(stored(seq))
        self.session.hold(stored(1, conv="d:1:3"))
        self.assertEqual(self.transport.frames, [])
        d.callback(SyncResult((ConversationSync("d:1:2", 5, (stored(4), stored(5)), True),)))
        reply = self.transport.pop()
        self.assertEqual((reply["type"], reply["id"], reply["body"]["complete"]), ("sync_ok", "y1", True))
        self.assertEqual([m["seq"] for m in reply["body"]["convs"][0]["messages"]], [4, 5])
        pushes = [(f["body"]["conv"], f["body"]["seq"]) for f in self.transport.frames]
        self.assertEqual(pushes, [("d:1:2", 6), ("d:1:2", 7), ("d:1:3", 1)])
        self.assertFalse(self.session.holding_pushes)

    def test_incomplete_conversation_drops_held_pushes(self) -> None:
        """Held pushes of a conversation the sync did not bring up to date are left to the next sync."""
        self.authenticate()
        self.receive(frame("sync", {}, "y1"))
        d = self.logic.syncs[0][3]
        self.session.hold(stored(40))
        d.callback(SyncResult((ConversationSync("d:1:2", 39, (stored(1), stored(2)), False),)))
        reply = self.transport.pop()
        self.assertEqual(reply["body"]["complete"], False)
        self.assertEqual(self.transport.frames, [])

    def test_one_sync_at_a_time(self) -> None:
        """A second sync while one runs is refused; a failed sync releases what it held."""
        self.authenticate()
        self.receive(frame("sync", {}, "y1"))
        self.receive(frame("sync", {}, "y2"))
        self.assertEqual(self.transport.pop()["body"]["code"], "bad_request")
        self.session.hold(stored(9))
        self.logic.syncs[0][3].errback(GochatError(ErrorCode.UNAVAILABLE, "store down"))
        self.assertEqual(self.transport.pop()["body"]["code"], "unavailable")
        self.assertEqual(self.transport.pop()["body"]["seq"], 9)

    def test_recv_ack(self) -> None:
        """recv_ack records the cumulative seq and answers only when it has an id."""
        self.authenticate()
        self.receive(frame("recv_ack", {"conv": "d:1:2", "seq": 7}))
        self.receive(frame("recv_ack", {"conv": "d:1:2", "seq": 9}, "k"))
        self.assertEqual(self.logic.received, [(1, "d:1:2", 7), (1, "d:1:2", 9)])
        self.assertEqual(self.transport.frames, [{"v": 1, "type": "recv_ack_ok", "id": "k", "body": {}}])

    def test_sync_needs_auth(self) -> None:
        """sync and recv_ack before auth are refused."""
        self.receive(frame("sync", {}, "y"))
        self.receive(frame("recv_ack", {"conv": "d:1:2", "seq": 1}, "k"))
        self.assertEqual([f["body"]["code"] for f in self.transport.frames], ["not_authenticated"] * 2)
        self.assertEqual((self.logic.syncs, self.logic.received), ([], []))
