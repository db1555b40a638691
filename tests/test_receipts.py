"""The gateway's recv_ack coalescing: one logic call per (user, conversation) per flush, answers after it."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from gochat.errors import ErrorCode, GochatError
from gochat.gateway.receipts import ReceiptCoalescer


class ReceiptCoalescerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.calls: list[tuple[int, str, int]] = []
        self.results: list[Deferred[None]] = []
        self.receipts = ReceiptCoalescer(self.record, max_pending=3)

    def record(self, user_id: int, conv: str, seq: int) -> Deferred[None]:
        self.calls.append((user_id, conv, seq))
        d: Deferred[None] = Deferred()
        self.results.append(d)
        return d

    def test_highest_seq_per_user_and_conversation_once_per_flush(self) -> None:
        waiters = [
            self.receipts.received(1, "d:1:2", 7),
            self.receipts.received(1, "d:1:2", 9),
            self.receipts.received(1, "d:1:2", 8),
            self.receipts.received(2, "d:1:2", 4),
        ]
        self.assertEqual(self.calls, [])
        self.receipts.flush()
        self.assertEqual(self.calls, [(1, "d:1:2", 9), (2, "d:1:2", 4)])
        self.assertNoResult(waiters[0])
        self.results[0].callback(None)
        for waiter in waiters[:3]:
            self.assertIsNone(self.successResultOf(waiter))
        self.assertNoResult(waiters[3])
        self.receipts.flush()
        self.assertEqual(len(self.calls), 2, "nothing pending, nothing sent")

    def test_a_failed_call_fails_its_waiters(self) -> None:
        waiter = self.receipts.received(1, "g:1", 3)
        self.receipts.flush()
        self.results[0].errback(GochatError(ErrorCode.UNAVAILABLE, "down"))
        self.failureResultOf(waiter, GochatError)

    def test_flushes_at_once_when_too_many_are_pending(self) -> None:
        for user_id in (1, 2):
            self.receipts.received(user_id, "d:1:2", 1)
        self.assertEqual(self.calls, [])
        self.receipts.received(3, "d:1:3", 1)
        self.assertEqual(len(self.calls), 3)
        self.assertEqual(len(self.receipts), 0)
