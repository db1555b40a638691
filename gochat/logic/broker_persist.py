"""The persist queue over RabbitMQ: durable hand-off from the send path to the persist worker.

:class:`BrokerPersistQueue` is the :class:`~gochat.logic.interfaces.IPersistQueue`
of production. The requests submitted during one reactor turn leave together
as one ``PersistBatch`` body on the durable persist queue (a persistent
message with a publisher confirm; split when it would pass
:data:`~gochat.logic.amqp_delivery.MAX_BATCH_ITEMS` requests or
:data:`~gochat.logic.amqp_delivery.MAX_BATCH_BYTES`), and each submitter waits
for the worker's reply on this process's own reply queue. The client's ack
therefore means "committed to the database", and a logic process can die at
any moment: a published request is committed by whichever worker is active,
and the client's retry (same client message id) finds it stored. A batch the
broker does not confirm fails every one of its submitters with
``unavailable``.

:class:`BrokerPersistConsumer` feeds the persist queue into a
:class:`~gochat.logic.persist.PersistWorker`. The queue is declared with
``x-single-active-consumer``: every logic process subscribes, the broker
lets one consume at a time (so batches, seqs and deliveries stay in order)
and hands over to another when it dies. A broker message's requests go to the
worker in order, and the worker commits in that order (FIFO). After a worker
batch commits, the consumer answers with one ``PersistReplyBatch`` per reply
queue, then acknowledges with one ``basic.ack(multiple=True)`` on the last
broker message all of whose requests have committed (a message can straddle
two worker batches: it is acked after the second). A crash before that ack
makes the broker redeliver the message; the worker finds its requests
already stored and answers with them, so nothing is stored twice.

When the worker's backlog is full, the consumer holds what it cannot submit
yet, in order (the rest of a message, and every message after it), and goes
on after the next commit. Nothing is requeued: that would reorder the queue
and, while the database is down, spin the same messages between the broker
and this process. What is held is still unacknowledged, so the broker's
prefetch limit bounds it, and at a stop the broker redelivers it whole to the
next consumer (a message the worker had in part included: that part is found
stored).

A lone ``PersistRequest`` or ``PersistReply`` body (as published before
batches existed, which an upgrade may find in the durable queue) parses as a
batch of none, since a batch's items are field 100 and the lone messages have
no such field; the decoders then read it as the one item it is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from gochat.errors import ErrorCode, GochatError
from gochat.grpc_bridge import kind_from_pb, kind_to_pb, message_from_pb, message_to_pb
from gochat.logic.amqp import AmqpBus, BrokerMessage, Consumer, QueueSpec
from gochat.logic.amqp_delivery import MAX_BATCH_BYTES, MAX_BATCH_ITEMS, split_batches
from gochat.logic.batch_writer import BatchPolicy
from gochat.logic.interfaces import IMessageStore
from gochat.logic.persist import Committed, PersistWorker
from gochat.model import PersistRequest, StoredMessage
from gochat.v1 import logic_pb2 as pb

_log = Logger()

PERSIST_QUEUE = "gochat.persist"


def persist_queue_spec(name: str = PERSIST_QUEUE) -> QueueSpec:
    """The durable persist queue, consumed by one logic process at a time."""
    return QueueSpec(name, durable=True, arguments={"x-single-active-consumer": True})


def reply_queue_spec(name: str) -> QueueSpec:
    """A logic process's reply queue: not durable, removed by the broker a minute after its owner is gone."""
    return QueueSpec(name, durable=False, arguments={"x-expires": 60_000})


def request_to_pb(request: PersistRequest, reply_to: str) -> pb.PersistRequest:
    return pb.PersistRequest(
        msg_id=request.msg_id,
        conv=request.conv,
        sender_id=request.sender_id,
        sender=request.sender,
        client_msg_id=request.client_msg_id,
        body=request.body,
        ts=request.ts,
        participants=request.participants,
        origin_gateway=request.origin_gateway,
        origin_session=request.origin_session,
        reply_to=reply_to,
        kind=kind_to_pb(request.kind),
        ref_seq=request.ref_seq,
    )


def request_from_pb(message: pb.PersistRequest) -> tuple[PersistRequest, str]:
    request = PersistRequest(
        msg_id=message.msg_id,
        conv=message.conv,
        sender_id=message.sender_id,
        sender=message.sender,
        client_msg_id=message.client_msg_id,
        body=message.body,
        ts=message.ts,
        participants=tuple(message.participants),
        origin_gateway=message.origin_gateway,
        origin_session=message.origin_session,
        kind=kind_from_pb(message.kind),
        ref_seq=message.ref_seq,
    )
    return request, message.reply_to


def encode_request(request: PersistRequest, reply_to: str) -> bytes:
    """*request* alone as a ``PersistRequest`` body (as published before batches)."""
    return request_to_pb(request, reply_to).SerializeToString()


def decode_request(body: bytes) -> tuple[PersistRequest, str]:
    """The lone request in *body* and its reply queue; ``ValueError`` if *body* is not a PersistRequest."""
    try:
        message = pb.PersistRequest.FromString(body)
    except Exception as e:  # protobuf raises its own DecodeError
        raise ValueError(f"undecodable persist request: {e}") from e
    return request_from_pb(message)


def encode_batch(requests: Sequence[pb.PersistRequest]) -> bytes:
    """The ``PersistBatch`` body of *requests*, in order."""
    return pb.PersistBatch(requests=requests).SerializeToString()


def request_items(body: bytes) -> list[pb.PersistRequest]:
    """The requests of a body, batch or lone, in order, still on the wire; ``ValueError`` if it is neither."""
    try:
        items = pb.PersistBatch.FromString(body).requests
        return list(items) if items else [pb.PersistRequest.FromString(body)]
    except Exception as e:  # protobuf raises its own DecodeError
        raise ValueError(f"undecodable persist request: {e}") from e


def decode_requests(body: bytes) -> list[tuple[PersistRequest, str]]:
    """The requests of a body, batch or lone, in order, each with its reply queue; ``ValueError`` if neither."""
    return [request_from_pb(item) for item in request_items(body)]


def decode_replies(body: bytes) -> list[pb.PersistReply]:
    """The replies of a body, batch or lone, in order; ``ValueError`` if it is neither."""
    try:
        items = pb.PersistReplyBatch.FromString(body).replies
        return list(items) if items else [pb.PersistReply.FromString(body)]
    except Exception as e:  # protobuf raises its own DecodeError
        raise ValueError(f"undecodable persist reply: {e}") from e


def _first_size(item: tuple[Any, ...]) -> int:
    size: int = item[0].ByteSize()
    return size


def _size(item: Any) -> int:
    size: int = item.ByteSize()
    return size


@dataclass
class _Waiter:
    result: Deferred[StoredMessage]
    deadline: float


class BrokerPersistQueue(Service):
    """:class:`~gochat.logic.interfaces.IPersistQueue` over the broker; also consumes this process's replies."""

    def __init__(
        self,
        bus: AmqpBus,
        clock: IReactorTime,
        reply_queue: str,
        persist_queue: str = PERSIST_QUEUE,
        reply_timeout: float = 30.0,
        max_batch: int = MAX_BATCH_ITEMS,
        max_batch_bytes: int = MAX_BATCH_BYTES,
    ) -> None:
        self._bus = bus
        self._clock = clock
        self.reply_queue = reply_queue
        self._persist_queue = persist_queue
        self._reply_timeout = reply_timeout
        self._max_batch = max_batch
        self._max_batch_bytes = max_batch_bytes
        self._waiting: dict[int, list[_Waiter]] = {}
        self._outbox: list[tuple[pb.PersistRequest, int, _Waiter]] = []
        self._flush_call: IDelayedCall | None = None
        self._consumer: Consumer | None = None
        self._sweeper = LoopingCall(self._expire)
        self._sweeper.clock = clock

    def startService(self) -> None:
        super().startService()
        self._consumer = self._bus.consume(self.reply_queue, 1000, self._reply_received)
        self._sweeper.start(1.0, now=False)

    def stopService(self) -> Deferred[None] | None:
        """Stop taking replies and fail every submission still waiting with ``unavailable``.

        Their replies could only come to the reply consumer cancelled here, so
        nothing would ever fire them (and a gRPC thread blocked on one would
        keep the process from exiting). The clients retry, through another
        logic process, with the same client message id: a request that gets
        committed anyway is found stored. (``unavailable``, not
        ``shutting_down``: the client's gateway and session stay.) Requests
        not published yet are not published.
        """
        super().stopService()
        if self._sweeper.running:
            self._sweeper.stop()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self._outbox = []
        waiting, self._waiting = self._waiting, {}
        for waiters in waiting.values():
            for waiter in waiters:
                if not waiter.result.called:
                    waiter.result.errback(GochatError(ErrorCode.UNAVAILABLE, "this logic process is stopping; retry"))
        consumer, self._consumer = self._consumer, None
        return consumer.cancel() if consumer is not None else None

    def submit(self, request: PersistRequest) -> Deferred[StoredMessage]:
        """Queue *request* for this turn's batch; fires with the committed message when the worker answers."""
        waiter = _Waiter(Deferred(), self._clock.seconds() + self._reply_timeout)
        self._waiting.setdefault(request.msg_id, []).append(waiter)
        self._outbox.append((request_to_pb(request, self.reply_queue), request.msg_id, waiter))
        if self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self._flush)
        return waiter.result

    def _flush(self) -> None:
        """Publish what was submitted this turn, one ``PersistBatch`` per run that fits the caps."""
        self._flush_call = None
        outbox, self._outbox = self._outbox, []
        for chunk in split_batches(outbox, _first_size, self._max_batch, self._max_batch_bytes):
            body = encode_batch([item for item, _, _ in chunk])
            published = maybeDeferred(self._bus.publish, self._persist_queue, body)
            published.addErrback(self._publish_failed, chunk)

    def _publish_failed(self, failure: Failure, chunk: list[tuple[pb.PersistRequest, int, _Waiter]]) -> None:
        error = failure.value if isinstance(failure.value, GochatError) else None
        if error is None:
            _log.failure("publishing a persist batch failed", failure)
        for _item, msg_id, waiter in chunk:
            self._forget(msg_id, waiter)
            if not waiter.result.called:
                waiter.result.errback(error or GochatError(ErrorCode.UNAVAILABLE, "the message broker is unreachable"))

    def _forget(self, msg_id: int, waiter: _Waiter) -> None:
        waiters = self._waiting.get(msg_id)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del self._waiting[msg_id]

    def _reply_received(self, message: BrokerMessage) -> None:
        try:
            replies = decode_replies(message.body)
        except ValueError:
            _log.failure("dropping an undecodable persist reply")
            replies = []
        for reply in replies:
            try:
                stored = message_from_pb(reply.message)
            except Exception:
                _log.failure("dropping an undecodable persist reply")
                continue
            for waiter in self._waiting.pop(reply.request_msg_id, []):
                if not waiter.result.called:
                    waiter.result.callback(stored)
        if self._consumer is not None:
            self._consumer.ack(message, multiple=False)

    def _expire(self) -> None:
        """Fail submissions whose reply is overdue; the client retries with the same id and loses nothing."""
        now = self._clock.seconds()
        for msg_id, waiters in list(self._waiting.items()):
            for waiter in list(waiters):
                if waiter.deadline <= now:
                    self._forget(msg_id, waiter)
                    waiter.result.errback(GochatError(ErrorCode.UNAVAILABLE, "the store did not answer in time; retry"))


@dataclass(eq=False)
class _Taken:
    """A broker message of the persist queue, from its delivery until it is acked or nacked."""

    message: BrokerMessage
    #: Its requests not yet given to the worker, in order (decoded as they are given: lighter while held).
    unsubmitted: deque[pb.PersistRequest]
    #: Given to the worker and not committed yet.
    in_worker: int = 0
    #: Given to the worker at all (the others were refused by the store).
    accepted: int = 0
    settled: bool = False

    @property
    def done(self) -> bool:
        """Every request of it committed, or refused."""
        return not self.unsubmitted and self.in_worker == 0


@dataclass(frozen=True)
class _Delivered:
    taken: _Taken
    reply_to: str


class BrokerPersistConsumer(Service):
    """Consumes the persist queue into its own :class:`PersistWorker`, acknowledging each message after its commit.

    *then* is called with every committed batch after the replies went out
    (the deliverer).

    Stopping commits what the worker took, but waits at most *drain_timeout*
    seconds: while the database is down a batch cannot commit, and a process
    told to stop must stop. What is left uncommitted, or was held for room in
    the worker, was never acked to the broker, which redelivers it to the next
    consumer when this one's connection closes.
    """

    def __init__(
        self,
        bus: AmqpBus,
        store: IMessageStore,
        clock: IReactorTime,
        policy: BatchPolicy,
        then: Callable[[Sequence[Committed[Any]]], None],
        persist_queue: str = PERSIST_QUEUE,
        prefetch: int = 1000,
        drain_timeout: float = 10.0,
        max_batch: int = MAX_BATCH_ITEMS,
        max_batch_bytes: int = MAX_BATCH_BYTES,
    ) -> None:
        self._bus = bus
        self._clock = clock
        self._queue = persist_queue
        self._prefetch = prefetch
        self._then = then
        self._drain_timeout = drain_timeout
        self._max_pending = policy.max_pending
        self._max_batch = max_batch
        self._max_batch_bytes = max_batch_bytes
        self.worker: PersistWorker[_Delivered] = PersistWorker(store, clock, policy, self.batch_committed)
        self._consumer: Consumer | None = None
        #: Taken messages not wholly given to the worker yet, in delivery order.
        self._held: deque[_Taken] = deque()
        self._pumping = False

    def startService(self) -> None:
        super().startService()
        self._consumer = self._bus.consume(self._queue, self._prefetch, self._received)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._drain())

    async def _drain(self) -> None:
        """Stop taking deliveries, commit and acknowledge what was taken (bounded), then let go of the consumer."""
        consumer = self._consumer
        if consumer is not None:
            await consumer.cancel()
        try:
            await self.worker.stop().addTimeout(self._drain_timeout, self._clock)
        except DeferredTimeoutError:
            _log.warn(
                "stopping before the store committed (a batch being written, {queued} more queued) within {timeout}s; "
                "the broker redelivers them to the next consumer",
                queued=len(self.worker.writer),
                timeout=self._drain_timeout,
            )
        self._held.clear()
        self._consumer = None

    def _received(self, message: BrokerMessage) -> None:
        try:
            requests = request_items(message.body)
        except ValueError:
            _log.error("dropping an undecodable persist request (tag {tag})", tag=message.delivery_tag)
            if self._consumer is not None:
                self._consumer.nack(message, multiple=False, requeue=False)
            return
        if not self.running:
            return
        self._held.append(_Taken(message, deque(requests)))
        self._pump()

    def _pump(self) -> None:
        """Give held requests to the worker, in order, while its backlog has room."""
        if self._pumping:
            return  # a commit inside worker.submit (a synchronous store): the outer loop goes on
        self._pumping = True
        try:
            while self._held and self.running:
                taken = self._held[0]
                if not self._submit(taken):
                    return  # no room: the next commit pumps again
                self._held.popleft()
                if taken.done:
                    self._settle_alone(taken)
        finally:
            self._pumping = False

    def _submit(self, taken: _Taken) -> bool:
        """Give *taken*'s requests to the worker while it has room; whether all of them are given."""
        writer = self.worker.writer
        while taken.unsubmitted:
            if len(writer) >= self._max_pending:
                return False
            item = taken.unsubmitted.popleft()
            request, reply_to = request_from_pb(item)
            taken.in_worker += 1
            taken.accepted += 1
            try:
                self.worker.put(request, _Delivered(taken, reply_to))  # its commit comes to batch_committed
            except GochatError as error:
                taken.in_worker -= 1
                taken.accepted -= 1
                if error.code is ErrorCode.BAD_REQUEST:
                    # The store cannot hold it, now or ever: drop it rather than block the queue behind it. Its
                    # submitter checked it before publishing, so only a submitter with other limits sends one.
                    _log.error(
                        "dropping persist request {msg_id} (tag {tag}) the store refuses: {reason}",
                        msg_id=request.msg_id,
                        tag=taken.message.delivery_tag,
                        reason=error.message,
                    )
                    continue
                taken.unsubmitted.appendleft(item)  # the worker is full or stopping
                return False
        return True

    def _settle_alone(self, taken: _Taken) -> None:
        """Settle a message that is done without a commit to ack it: all of it refused, or its last part."""
        if taken.settled or self._consumer is None:
            return
        taken.settled = True
        if taken.accepted:
            self._consumer.ack(taken.message, multiple=True)  # its accepted requests, and all before, committed
        else:
            self._consumer.nack(taken.message, multiple=False, requeue=False)

    def batch_committed(self, items: Sequence[Committed[_Delivered]]) -> None:
        """Answer each reply queue with one batch, ack the last message now wholly committed, then pump."""
        replies: dict[str, list[pb.PersistReply]] = {}
        last: _Taken | None = None
        for item in items:
            context = item.context
            if context is None or item.message is None:
                continue
            if context.reply_to:
                reply = pb.PersistReply(request_msg_id=item.request.msg_id, message=message_to_pb(item.message))
                replies.setdefault(context.reply_to, []).append(reply)
            taken = context.taken
            taken.in_worker -= 1
            if taken.done and not taken.settled:
                taken.settled = True
                last = taken
        for reply_to, queued in replies.items():
            for chunk in split_batches(queued, _size, self._max_batch, self._max_batch_bytes):
                body = pb.PersistReplyBatch(replies=chunk).SerializeToString()
                maybeDeferred(self._bus.publish, reply_to, body).addErrback(_log_reply_failure)
        if last is not None and self._consumer is not None:
            # FIFO: every message delivered before it is committed too (or was nacked on its own).
            self._consumer.ack(last.message, multiple=True)
        self._then(items)
        if self._held:
            self._pump()


def _log_reply_failure(failure: Failure) -> None:
    """A reply that cannot go out is expected: its submitter died (its queue is gone), or the broker is away."""
    if not failure.check(GochatError):
        _log.failure("persist reply could not be published", failure)
        return
    _log.warn(
        "persist reply could not be published ({reason}); a live submitter times out and its client retries",
        reason=failure.getErrorMessage(),
    )
