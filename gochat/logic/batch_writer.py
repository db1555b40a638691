"""Buffer items and write them in batches, one transaction per batch.

Callers get a Deferred per item that fires only after the batch holding it
has been written (committed) by the sink. Batches are written one at a time,
in order, so an item is never committed before an item added earlier. A
failed write is retried with exponential backoff, the same batch again,
until it succeeds: nothing is acknowledged that is not written, and nothing
is reordered. While the backlog is over ``max_pending`` new items are
refused with ``unavailable`` so memory stays bounded.

The sink is any function taking a list of items and returning a Deferred
that fires once they are committed, e.g. ``executemany`` in one
``runInteraction``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from twisted.internet.defer import Deferred, succeed
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


class BatchWriter(Generic[T]):
    """Groups items into batches for *sink*, driven by *clock*."""

    def __init__(self, sink: Callable[[list[T]], Deferred[None]], clock: IReactorTime, policy: BatchPolicy) -> None:
        self._sink = sink
        self._clock = clock
        self._policy = policy
        self._pending: list[tuple[T, Deferred[None]]] = []
        self._writing = False
        self._timer: IDelayedCall | None = None
        self._retry_delay = policy.retry_initial
        self._stopping = False
        self._idle_waiters: list[Deferred[None]] = []
        self.batches_written = 0
        self.write_failures = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, item: T) -> Deferred[None]:
        """Queue *item*; the Deferred fires once it is committed."""
        if self._stopping:
            raise GochatError(ErrorCode.SHUTTING_DOWN, "the writer is stopping")
        if len(self._pending) >= self._policy.max_pending:
            raise GochatError(ErrorCode.UNAVAILABLE, "the store is behind; retry")
        d: Deferred[None] = Deferred()
        self._pending.append((item, d))
        if not self._writing:
            if len(self._pending) >= self._policy.max_batch:
                self._write_next()
            elif self._timer is None:
                self._timer = self._clock.callLater(self._policy.max_delay, self._timer_fired)
        return d

    def flush(self) -> Deferred[None]:
        """Write everything queued now; fires once all of it is committed."""
        if not self._pending and not self._writing:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        if not self._writing:
            self._write_next()
        return d

    def stop(self) -> Deferred[None]:
        """Refuse new items and flush the rest (the service's drain)."""
        self._stopping = True
        return self.flush()

    def _timer_fired(self) -> None:
        self._timer = None
        if not self._writing:
            self._write_next()

    def _write_next(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if not self._pending:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)
            return
        batch = self._pending[: self._policy.max_batch]
        del self._pending[: len(batch)]
        self._writing = True
        self._attempt(batch)

    def _attempt(self, batch: list[tuple[T, Deferred[None]]]) -> None:
        try:
            d = self._sink([item for item, _ in batch])
        except Exception:
            d = Deferred()
            d.errback(Failure())
        d.addCallbacks(self._written, self._failed, callbackArgs=(batch,), errbackArgs=(batch,))

    def _written(self, _: object, batch: list[tuple[T, Deferred[None]]]) -> None:
        self._retry_delay = self._policy.retry_initial
        self.batches_written += 1
        # Still "writing" while callbacks run: items they add only queue, and
        # what to write next is decided once, below, on the final state.
        for _item, waiter in batch:
            waiter.callback(None)
        self._writing = False
        if self._pending and (len(self._pending) >= self._policy.max_batch or self._idle_waiters):
            self._write_next()
        elif self._pending:
            self._timer = self._clock.callLater(self._policy.max_delay, self._timer_fired)
        else:
            self._write_next()

    def _failed(self, failure: Failure, batch: list[tuple[T, Deferred[None]]]) -> None:
        self.write_failures += 1
        delay = self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, self._policy.retry_max)
        _log.failure("batch of {size} failed; retrying in {delay:.2f}s", failure, size=len(batch), delay=delay)
        self._clock.callLater(delay, self._attempt, batch)
