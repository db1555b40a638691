"""The ``Calls`` stream for real: batched sends and recv-acks between a gateway's client and a logic gRPC server.

The logic behind the server is a fake whose sends wait until the test
answers them, so a test can hold calls in flight and see what the stream
does with them: batch them, refuse past its cap, fail them when the stream
is lost or the answer is late, and carry on over a new stream afterwards.
"""

from __future__ import annotations

from typing import Any

import grpc
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from gochat.errors import ErrorCode, GochatError
from gochat.grpc_bridge import GrpcLogicClient, GrpcServerService, LogicServicer
from gochat.model import Ack, SendCommand
from tests.integration.support import bounded

WAIT = 20.0


class HeldLogic:
    """Sends that wait until the test answers them; recv-acks recorded and answered at once."""

    def __init__(self) -> None:
        self.sends: list[tuple[SendCommand, Deferred[Ack]]] = []
        self.received: list[tuple[int, str, int]] = []
        self._arrivals: list[tuple[int, Deferred[None]]] = []

    def send(self, command: SendCommand) -> Deferred[Ack]:
        if command.to_username == "nobody":
            raise GochatError(ErrorCode.UNKNOWN_USER, "no such user: nobody")
        d: Deferred[Ack] = Deferred()
        self.sends.append((command, d))
        for waiting in [w for w in self._arrivals if w[0] <= len(self.sends)]:
            self._arrivals.remove(waiting)
            waiting[1].callback(None)
        return d

    def record_received(self, user_id: int, conv: str, seq: int) -> Deferred[None]:
        self.received.append((user_id, conv, seq))
        return succeed(None)

    def arrived(self, n: int) -> Deferred[None]:
        """Fires once *n* sends have reached the logic."""
        if len(self.sends) >= n:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._arrivals.append((n, d))
        return d

    def answer_all(self) -> None:
        """Commit every held send, seq by arrival, and forget them."""
        sends, self.sends = self.sends, []
        for seq, (command, d) in enumerate(sends, 1):
            d.callback(Ack(command.client_msg_id, 1000 + seq, "d:1:2", seq, 0))


def command(client_msg_id: str, to: str = "bob") -> SendCommand:
    return SendCommand(
        sender_id=1,
        sender="alice",
        gateway_id="gw",
        session_id="s1",
        client_msg_id=client_msg_id,
        to_username=to,
        body=f"body of {client_msg_id}",
    )


class CallStreamTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor: Any = reactor
        self.logic = HeldLogic()

    def serve(self, max_stream_calls: int = 20_000, port: int = 0) -> GrpcServerService:
        servicer = LogicServicer(self.logic, self.reactor, max_stream_calls=max_stream_calls)  # type: ignore[arg-type]
        server = GrpcServerService(servicer, f"127.0.0.1:{port}", self.reactor, max_workers=4)
        server.startService()
        self.addCleanup(server.stopService)
        return server

    def client(self, server: GrpcServerService, timeout: float = WAIT) -> GrpcLogicClient:
        client = GrpcLogicClient(f"127.0.0.1:{server.port}", self.reactor, timeout=timeout)
        self.addCleanup(client.close)
        return client

    async def test_calls_of_one_turn_leave_in_one_batch(self) -> None:
        """Fifty sends and a recv-ack made in one reactor turn cross as one CallBatch; each gets its own answer."""
        client = self.client(self.serve())
        sends = [client.send(command(f"m{i}")) for i in range(50)]
        received = client.record_received(2, "d:1:2", 7)
        await bounded(self.logic.arrived(50), self.reactor, WAIT, "50 sends at logic")
        self.assertEqual(client.calls.batches_sent, 1)
        self.assertEqual([c.client_msg_id for c, _ in self.logic.sends], [f"m{i}" for i in range(50)])
        self.logic.answer_all()
        acks = [await bounded(d, self.reactor, WAIT, "an ack") for d in sends]
        self.assertEqual([(a.client_msg_id, a.seq) for a in acks], [(f"m{i}", i + 1) for i in range(50)])
        await bounded(received, self.reactor, WAIT, "the recv-ack")
        self.assertEqual(self.logic.received, [(2, "d:1:2", 7)])

    async def test_a_refusal_reaches_its_call_only(self) -> None:
        """A send logic refuses fails with logic's error code; the sends beside it in the batch are answered."""
        client = self.client(self.serve())
        good = client.send(command("ok"))
        bad = client.send(command("bad", to="nobody"))
        error = await bounded(self.assertFailure(bad, GochatError), self.reactor, WAIT, "the refusal")
        self.assertEqual(error.code, ErrorCode.UNKNOWN_USER)
        await bounded(self.logic.arrived(1), self.reactor, WAIT, "the good send")
        self.logic.answer_all()
        self.assertEqual((await bounded(good, self.reactor, WAIT, "the ack")).client_msg_id, "ok")

    async def test_calls_past_the_cap_are_refused_at_once(self) -> None:
        """With max_stream_calls sends waiting for the store, one more is refused as unavailable, not queued."""
        client = self.client(self.serve(max_stream_calls=2))
        held = [client.send(command(f"m{i}")) for i in range(2)]
        await bounded(self.logic.arrived(2), self.reactor, WAIT, "two held sends")
        error = await bounded(
            self.assertFailure(client.send(command("m2")), GochatError), self.reactor, WAIT, "the refusal"
        )
        self.assertEqual(error.code, ErrorCode.UNAVAILABLE)
        self.logic.answer_all()
        await bounded(DeferredList(held, fireOnOneErrback=True), self.reactor, WAIT, "the held acks")
        accepted = client.send(command("m3"))
        await bounded(self.logic.arrived(1), self.reactor, WAIT, "a send after the slots came back")
        self.logic.answer_all()
        self.assertEqual((await bounded(accepted, self.reactor, WAIT, "the ack")).client_msg_id, "m3")

    async def test_an_unanswered_call_fails_at_the_timeout(self) -> None:
        """A send logic never answers fails with unavailable after the client's timeout; the stream stays up."""
        client = self.client(self.serve(), timeout=1.0)
        late = client.send(command("late"))
        error = await bounded(self.assertFailure(late, GochatError), self.reactor, WAIT, "the timeout")
        self.assertEqual(error.code, ErrorCode.UNAVAILABLE)
        self.assertIn("in time", error.message)
        self.logic.answer_all()  # the answer that comes after the timeout is dropped
        ontime = client.send(command("ontime"))
        await bounded(self.logic.arrived(1), self.reactor, WAIT, "the next send")
        self.logic.answer_all()
        self.assertEqual((await bounded(ontime, self.reactor, WAIT, "the ack")).client_msg_id, "ontime")

    async def test_a_lost_stream_fails_its_calls_and_the_next_call_opens_another(self) -> None:
        """Logic going away fails the calls in flight with unavailable; once it is back, calls go through."""
        server = self.serve()
        port = server.port
        client = self.client(server)
        held = client.send(command("held"))
        await bounded(self.logic.arrived(1), self.reactor, WAIT, "the held send")
        await server.stopService()
        error = await bounded(self.assertFailure(held, GochatError), self.reactor, WAIT, "the failure")
        self.assertEqual(error.code, ErrorCode.UNAVAILABLE)
        self.logic.sends.clear()
        assert port is not None
        self.serve(port=port)
        # The channel reconnects with backoff; wait until it is back rather than racing it.
        await deferToThread(grpc.channel_ready_future(client._channel).result, WAIT)
        again = client.send(command("again"))
        await bounded(self.logic.arrived(1), self.reactor, WAIT, "the send on a new stream")
        self.logic.answer_all()
        self.assertEqual((await bounded(again, self.reactor, WAIT, "the ack")).client_msg_id, "again")
