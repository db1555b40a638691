"""The persist worker: batches messages into the store and gives them their seq.

Every message passes here between a client's ``send`` and its ack. The worker
groups requests with the shared :class:`~gochat.logic.batch_writer.BatchWriter`
(one transaction per batch, batches strictly one after another) and asks the
store to commit each batch with seqs assigned inside the transaction, so a
crash at any moment neither skips nor reuses a seq. It caches the last seq of
each conversation it has written; a :class:`StaleSequenceError` (another
worker wrote since, e.g. around a failover) empties the cache and the batch is
retried.

After a batch commits, ``on_committed`` is called once with the whole batch,
in order, before any submitter hears back: that is where deliveries go out
and where a broker consumer acknowledges the batch's last delivery tag.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from gochat.logic.batch_writer import BatchPolicy, BatchWriter
from gochat.logic.interfaces import IMessageStore, StaleSequenceError
from gochat.logic.sequencing import Assignment
from gochat.model import PersistRequest, StoredMessage

C = TypeVar("C")


@dataclass
class Committed(Generic[C]):
    """One request of a committed batch: what it became, whether to deliver it, and the submitter's context."""

    request: PersistRequest
    context: C | None
    message: StoredMessage | None = None
    is_new: bool = False


class PersistWorker(Generic[C]):
    """Batches :class:`PersistRequest` into an :class:`IMessageStore`."""

    def __init__(
        self,
        store: IMessageStore,
        clock: IReactorTime,
        policy: BatchPolicy,
        on_committed: Callable[[list[Committed[C]]], None],
    ) -> None:
        self._store = store
        self._on_committed = on_committed
        self._last_seq: dict[str, int] = {}
        self.writer: BatchWriter[Committed[C]] = BatchWriter(self._commit, clock, policy)

    def submit(self, request: PersistRequest, context: C | None = None) -> Deferred[StoredMessage]:
        """Queue *request*; fires with the stored message once its batch has committed.

        Raises :class:`~gochat.errors.GochatError` at once, before anything
        is queued: ``bad_request`` when the store could not hold the request
        as it is (so it never fails a batch it shares with others),
        ``unavailable`` when the backlog is full.
        """
        self._store.check(request)
        item: Committed[C] = Committed(request, context)
        d = self.writer.add(item)
        return d.addCallback(lambda _: _stored(item))

    def put(self, request: PersistRequest, context: C | None = None) -> None:
        """Queue *request* as :meth:`submit` does, with no Deferred: for a caller that hears of the commit
        through ``on_committed`` only (a broker consumer), which saves the Deferred's cost on every message."""
        self._store.check(request)
        self.writer.put(Committed(request, context))

    def stop(self) -> Deferred[None]:
        """Refuse new requests and commit everything queued."""
        return self.writer.stop()

    def _commit(self, items: list[Committed[C]]) -> Deferred[None]:
        d = self._store.commit_batch([item.request for item in items], self._last_seq)
        return d.addCallbacks(self._committed, self._failed, callbackArgs=(items,))

    def _committed(self, assignment: Assignment, items: list[Committed[C]]) -> None:
        self._last_seq.update(assignment.last_seq)
        for item, message in zip(items, assignment.results, strict=True):
            item.message = message
            # The request's own message, stored now or by an earlier attempt of this same request (a broker
            # redelivery after a crash, a commit whose answer was lost): deliver it (again) so a push is never
            # lost; recipients drop a seq they already have. A retry under a new msg_id is not delivered again.
            item.is_new = message.msg_id == item.request.msg_id
        self._on_committed(items)

    def _failed(self, failure: Failure) -> Failure:
        if failure.check(StaleSequenceError):
            self._last_seq.clear()
        return failure


def _stored(item: Committed[C]) -> StoredMessage:
    assert item.message is not None
    return item.message


class PersistService(Service):
    """Drains the worker when the application stops."""

    def __init__(self, worker: PersistWorker[C]) -> None:
        self._worker = worker

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self._worker.stop()
