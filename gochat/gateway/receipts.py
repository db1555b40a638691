"""Coalesce clients' ``recv_ack`` frames before they reach logic.

A ``recv_ack`` is cumulative ("I have every message of this conversation up
to this seq"), so of several for one user and conversation only the highest
matters. The gateway keeps the highest seq per (user, conversation) and hands
them to logic once per flush (the hub flushes on every tick of its timing
wheel), so a busy conversation costs one logic call and one database update
per tick instead of one per push. Each frame's answer (``recv_ack_ok``)
waits for the flush that carried it, so an answered ``recv_ack`` is
recorded.

Pure: no reactor; the hub decides when to flush.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

Recorder = Callable[[int, str, int], Deferred[None]]

#: Pending (user, conversation) pairs past which a flush happens at once, bounding memory.
MAX_PENDING = 10_000


class ReceiptCoalescer:
    """Highest acknowledged seq per (user, conversation), handed to *record* in one call each per flush."""

    def __init__(self, record: Recorder, max_pending: int = MAX_PENDING) -> None:
        self._record = record
        self._max_pending = max_pending
        self._pending: dict[tuple[int, str], tuple[int, list[Deferred[None]]]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def received(self, user_id: int, conv: str, seq: int) -> Deferred[None]:
        """Note a ``recv_ack``; fires once logic has recorded it (or a later one that covers it)."""
        key = (user_id, conv)
        waiter: Deferred[None] = Deferred()
        highest, waiters = self._pending.get(key, (seq, []))
        waiters.append(waiter)
        self._pending[key] = (max(highest, seq), waiters)
        if len(self._pending) >= self._max_pending:
            self.flush()
        return waiter

    def flush(self) -> None:
        """Hand every pending seq to logic; each waiter fires with its call's outcome."""
        pending, self._pending = self._pending, {}
        for (user_id, conv), (seq, waiters) in pending.items():
            d = self._record(user_id, conv, seq)
            d.addBoth(_settle, waiters)


def _settle(outcome: object, waiters: list[Deferred[None]]) -> None:
    for waiter in waiters:
        if isinstance(outcome, Failure):
            waiter.errback(outcome)
        else:
            waiter.callback(None)
