"""The logic servicer keeps worker threads for other calls while sends wait for the store."""

from __future__ import annotations

import threading
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from gochat.grpc_bridge import ERROR_METADATA_KEY, LogicServicer
from gochat.model import Ack, SendCommand
from gochat.v1 import logic_pb2 as pb


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
