"""Buffer items and write them in batches, one transaction per batch.

Callers get a Deferred per item (:meth:`BatchWriter.add`) that fires only
after the batch holding it has been written (committed) by the sink. A
caller that hears of commits a batch at a time instead, through
``on_written`` (called with each batch's items once it is committed, before
their Deferreds fire), queues items with :meth:`BatchWriter.put` and pays for
no Deferred at all. Batches commit in order, so an item is never committed
before an item added earlier, and item Deferreds fire in the order the items
were added. A failed write is retried with exponential
backoff, the same batch again, until it succeeds: nothing is acknowledged
that is not written, and nothing is reordered. While the backlog is over
``max_pending`` new items are refused with ``unavailable`` so memory stays
bounded.

The sink is any function taking a list of items and returning a Deferred
that fires once they are committed, e.g. ``executemany`` in one
``runInteraction``. The writer hands it one batch at a time.

:meth:`BatchWriter.overlapping` hands an *ordered sink* up to ``depth``
batches at a time: batch N+1 is written while batch N commits. The sink also
gets a Deferred, ``after``, that fires once the batch before has been
committed and acknowledged, or fails (:class:`EarlierBatchError`) if it was
not; the sink may write before ``after`` fires, but must not commit before
it, and must not commit at all if it fails. So batches still commit in order;
when one fails, those after it fail too and all are retried, in order, once
every batch handed out has come back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gochat.errors import ErrorCode, GochatError

T = TypeVar("T")
_log = Logger()


@dataclass(frozen=True)
class BatchPolicy:
    """When to write: at ``max_batch`` items or ``max_delay`` seconds after the first waiting item."""

    max_batch: int = 500
    max_delay: float = 0.005
    max_pending: int = 100_000
    retry_initial: float = 0.05
    retry_max: float = 5.0


class EarlierBatchError(Exception):
    """What ``after`` fails with when the batch before was not committed: the ordered sink must not commit."""


#: An ordered sink: the items, and ``after``, which fires once the batch before is committed (or fails if not).
OrderedSink = Callable[[list[T], Deferred[None]], Deferred[None]]

_Batch = list[tuple[T, Deferred[None] | None]]


@dataclass(eq=False)
class _Flight(Generic[T]):
    """A batch handed to the sink: its place in the order of batches, and its own ``after`` for the next one."""

    order: int
    batch: _Batch[T]
    done: Deferred[None]
    committed: bool = False


class BatchWriter(Generic[T]):
    """Groups items into batches for *sink*, driven by *clock*; one batch written at a time."""

    def __init__(
        self,
        sink: Callable[[list[T]], Deferred[None]],
        clock: IReactorTime,
        policy: BatchPolicy,
        on_written: Callable[[list[T]], None] | None = None,
    ) -> None:
        self._setup(lambda items, _after: sink(items), clock, policy, 1, on_written)

    @classmethod
    def overlapping(
        cls,
        sink: OrderedSink[T],
        clock: IReactorTime,
        policy: BatchPolicy,
        depth: int,
        on_written: Callable[[list[T]], None] | None = None,
    ) -> BatchWriter[T]:
        """A writer with up to *depth* batches handed to the ordered *sink* at a time (see the module)."""
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        writer: BatchWriter[T] = cls.__new__(cls)
        writer._setup(sink, clock, policy, depth, on_written)
        return writer

    def _setup(
        self,
        sink: OrderedSink[T],
        clock: IReactorTime,
        policy: BatchPolicy,
        depth: int,
        on_written: Callable[[list[T]], None] | None,
    ) -> None:
        self._sink = sink
        self._on_written = on_written
        self._clock = clock
        self._policy = policy
        self._depth = depth
        self._pending: _Batch[T] = []
        self._flights: deque[_Flight[T]] = deque()
        self._next_order = 0
        self._failed: list[tuple[int, _Batch[T]]] = []  # batches whose write failed, waiting for the retry
        self._retry: deque[tuple[int, _Batch[T]]] = deque()  # batches to write again, before anything else
        self._retry_timer: IDelayedCall | None = None
        self._timer: IDelayedCall | None = None
        self._retry_delay = policy.retry_initial
        self._busy = 0  # inside _pump, or firing item Deferreds: items added meanwhile only queue
        self._stopping = False
        self._idle_waiters: list[Deferred[None]] = []
        self.batches_written = 0
        self.write_failures = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, item: T) -> Deferred[None]:
        """Queue *item*; the Deferred fires once it is committed.

        :raises GochatError: ``shutting_down`` once :meth:`stop` was called, ``unavailable`` while the backlog
            is full; nothing is queued then.
        """
        d: Deferred[None] = Deferred()
        self._queue(item, d)
        return d

    def put(self, item: T) -> None:
        """Queue *item* for a caller that hears of its commit through ``on_written``; raises as :meth:`add`."""
        self._queue(item, None)

    def _queue(self, item: T, waiter: Deferred[None] | None) -> None:
        if self._stopping:
            raise GochatError(ErrorCode.SHUTTING_DOWN, "the writer is stopping")
        if len(self._pending) >= self._policy.max_pending:
            raise GochatError(ErrorCode.UNAVAILABLE, "the store is behind; retry")
        self._pending.append((item, waiter))
        if not self._busy and self._can_write():
            if len(self._pending) >= self._policy.max_batch:
                self._pump()
            elif self._timer is None:
                self._timer = self._clock.callLater(self._policy.max_delay, self._timer_fired)

    def flush(self) -> Deferred[None]:
        """Write everything queued now; fires once all of it is committed."""
        if self._idle():
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        self._pump()
        return d

    def stop(self) -> Deferred[None]:
        """Refuse new items and flush the rest (the service's drain)."""
        self._stopping = True
        return self.flush()

    def _idle(self) -> bool:
        """Nothing queued, handed out, or waiting to be written again."""
        return not (self._pending or self._flights or self._failed or self._retry or self._retry_timer)

    def _can_write(self) -> bool:
        """Whether a new batch may be handed to the sink now: no failed batch waits, and there is room."""
        return not (self._failed or self._retry or self._retry_timer) and len(self._flights) < self._depth

    def _timer_fired(self) -> None:
        self._timer = None
        self._pump(partial=True)

    def _pump(self, partial: bool = False) -> None:
        """Hand out what may go now, in order: batches to retry first, then full batches, then a partial one if
        the delay is over or someone waits for a flush; then arm the timer, or fire the flush waiters."""
        if self._busy:
            return  # the pump below, or the one after the item Deferreds fire, sees the new state
        self._busy += 1
        try:
            while len(self._flights) < self._depth and not (self._failed or self._retry_timer):
                if self._retry:
                    order, batch = self._retry.popleft()
                elif self._pending and (partial or self._idle_waiters or len(self._pending) >= self._policy.max_batch):
                    partial = False
                    batch = self._pending[: self._policy.max_batch]
                    del self._pending[: len(batch)]
                    order, self._next_order = self._next_order, self._next_order + 1
                    if self._timer is not None and self._timer.active():
                        self._timer.cancel()
                    self._timer = None
                else:
                    break
                self._launch(order, batch)
        finally:
            self._busy -= 1
        if self._failed and not self._flights and self._retry_timer is None:
            # Every batch handed out has come back: write the failed ones again, in order, after the backoff.
            delay = self._retry_delay
            self._retry_delay = min(self._retry_delay * 2, self._policy.retry_max)
            self._retry_timer = self._clock.callLater(delay, self._retry_failed)
        if self._pending and self._timer is None and self._can_write():
            self._timer = self._clock.callLater(self._policy.max_delay, self._timer_fired)
        if self._idle() and self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def _launch(self, order: int, batch: _Batch[T]) -> None:
        after: Deferred[None] = self._flights[-1].done if self._flights else succeed(None)
        flight = _Flight(order, batch, Deferred())
        self._flights.append(flight)
        try:
            d = self._sink([item for item, _ in batch], after)
        except Exception:
            d = fail(Failure())
        d.addCallbacks(self._written, self._failed_write, callbackArgs=(flight,), errbackArgs=(flight,))

    def _written(self, _: object, flight: _Flight[T]) -> None:
        self._retry_delay = self._policy.retry_initial
        flight.committed = True
        # Acknowledge in order: a batch's items only once every batch before it is acknowledged.
        while self._flights and self._flights[0].committed:
            done = self._flights.popleft()
            self.batches_written += 1
            self._busy += 1
            try:
                if self._on_written is not None:
                    try:
                        self._on_written([item for item, _ in done.batch])
                    except Exception:
                        # Its items are committed whatever the hook did: a raising hook must not stall the writer.
                        _log.failure("on_written failed for a committed batch of {size}", size=len(done.batch))
                for _item, waiter in done.batch:
                    if waiter is not None:
                        waiter.callback(None)
            finally:
                self._busy -= 1
            done.done.callback(None)
        self._pump()

    def _failed_write(self, failure: Failure, flight: _Flight[T]) -> None:
        if not failure.check(EarlierBatchError):  # not a failure of its own: the one before failed
            self.write_failures += 1
            _log.failure(
                "batch of {size} failed; retrying in {delay:.2f}s",
                failure,
                size=len(flight.batch),
                delay=self._retry_delay,
            )
        self._flights.remove(flight)
        self._failed.append((flight.order, flight.batch))
        # The batch after it (if handed out) must not commit; nobody else waits on this.
        flight.done.errback(EarlierBatchError(f"batch {flight.order} was not committed"))
        flight.done.addErrback(lambda _: None)
        self._pump()

    def _retry_failed(self) -> None:
        self._retry_timer = None
        self._retry.extend(sorted(self._failed, key=lambda failed: failed[0]))
        self._failed = []
        self._pump()
