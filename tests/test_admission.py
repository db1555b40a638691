"""Admission control: the gateway stops reading senders while too many sends wait for logic, and resumes them."""

from __future__ import annotations

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gochat.errors import ErrorCode, GochatError
from gochat.gateway.admission import SendAdmission
from gochat.gateway.hub import GatewayHub
from gochat.gateway.session import Session, SessionLimits
from gochat.model import Ack

from .fakes import RecordingTransport, ScriptedLogic


class Reader:
    """A connection that records whether it is being read."""

    def __init__(self) -> None:
        self.reading = True
        self.pauses = 0

    def pause_reading(self) -> None:
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        self.reading = True


class SendAdmissionTests(SynchronousTestCase):
    def test_the_sender_that_reaches_the_limit_is_paused_and_resumed_at_half(self) -> None:
        """Below the limit nobody is paused; from it on each sender is paused once; at resume_at all are read again."""
        admission = SendAdmission(limit=4)
        quiet, busy, other = Reader(), Reader(), Reader()
        for _ in range(3):
            admission.started(quiet)
        self.assertTrue(quiet.reading)
        admission.started(busy)
        admission.started(busy)
        admission.started(other)
        self.assertEqual((quiet.reading, busy.reading, other.reading), (True, False, False))
        self.assertEqual((busy.pauses, admission.paused, admission.pauses, admission.in_flight), (1, 2, 2, 6))
        for _ in range(3):
            admission.finished()
        self.assertFalse(busy.reading, "3 in flight is above resume_at (2)")
        admission.finished()
        self.assertEqual((busy.reading, other.reading, admission.paused, admission.in_flight), (True, True, 0, 2))

    def test_a_forgotten_sender_is_not_resumed(self) -> None:
        admission = SendAdmission(limit=1, resume_at=0)
        gone = Reader()
        admission.started(gone)
        admission.forget(gone)
        admission.finished()
        self.assertFalse(gone.reading)
        self.assertEqual(admission.paused, 0)

    def test_release_all_resumes_at_once(self) -> None:
        admission = SendAdmission(limit=1)
        reader = Reader()
        admission.started(reader)
        admission.release_all()
        self.assertTrue(reader.reading)
        self.assertEqual(admission.in_flight, 1, "the send itself is still in flight")

    def test_limits_must_make_sense(self) -> None:
        for limit, resume_at in ((0, None), (4, 4), (4, -1), (4, 5)):
            with self.assertRaises(ValueError):
                SendAdmission(limit, resume_at)


def send_frame(i: int) -> bytes:
    body = {"client_msg_id": f"m{i}", "to": "bob", "body": "hi"}
    return json.dumps({"v": 1, "type": "send", "id": str(i), "body": body}).encode()


class HubAdmissionTests(SynchronousTestCase):
    """Through the hub and a session, as the gateway runs them."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.logic = ScriptedLogic()
        self.hub = GatewayHub("gw1", self.logic, self.clock, SessionLimits(), lambda p: p, max_sends_in_flight=3)
        self.transport = RecordingTransport()
        self.session: Session = self.hub.connection_made(self.transport)
        self.session.frame_received(b'{"v":1,"type":"auth","id":"a","body":{"token":"alice-token"}}', False, 0.0)
        self.assertEqual(self.transport.pop()["type"], "auth_ok")

    def test_a_sender_past_the_limit_stops_being_read_until_logic_catches_up(self) -> None:
        """Every send is taken and answered; reading pauses at 3 in flight and resumes when 1 is left."""
        for i in range(4):
            self.session.frame_received(send_frame(i), False, 0.0)
        self.assertEqual(len(self.logic.sends), 4, "a send that arrives while paused is still taken")
        self.assertFalse(self.transport.reading)
        self.assertEqual(self.hub.admission.in_flight, 4)
        for i, (command, d) in enumerate(self.logic.sends[:3]):
            if i == 2:
                d.errback(GochatError(ErrorCode.UNAVAILABLE, "retry"))  # a refusal frees its slot too
            else:
                d.callback(Ack(command.client_msg_id, 100 + i, "d:1:2", i + 1, 0))
            self.assertEqual(self.transport.reading, i == 2, f"after {i + 1} answers")
        self.assertEqual([f["type"] for f in self.transport.frames], ["ack", "ack", "error"])
        self.assertEqual(self.hub.admission.in_flight, 1)

    def test_a_paused_sender_that_disconnects_is_forgotten(self) -> None:
        for i in range(3):
            self.session.frame_received(send_frame(i), False, 0.0)
        self.assertEqual(self.hub.admission.paused, 1)
        self.hub.connection_lost(self.session)
        self.assertEqual(self.hub.admission.paused, 0)
        for _, d in self.logic.sends:
            d.errback(GochatError(ErrorCode.UNAVAILABLE, "gone"))
        self.assertEqual(self.hub.admission.in_flight, 0)
        self.assertFalse(self.transport.reading, "a closed connection is not resumed")

    def test_stopping_the_hub_reads_paused_senders_again_so_they_can_close(self) -> None:
        for i in range(3):
            self.session.frame_received(send_frame(i), False, 0.0)
        self.assertFalse(self.transport.reading)
        self.hub.stop()
        self.assertTrue(self.transport.reading)
        self.assertIsNotNone(self.transport.closed)
