"""The persist queue over RabbitMQ: durable hand-off from the send path to the persist worker.

:class:`BrokerPersistQueue` is the :class:`~gochat.logic.interfaces.IPersistQueue`
of production. It publishes each request to the durable persist queue (a
persistent message, with a publisher confirm) and waits for the worker's
reply on this process's own reply queue. The client's ack therefore means
"committed to the database", and a logic process can die at any moment: a
published request is committed by whichever worker is active, and the
client's retry (same client message id) finds it stored.

:class:`BrokerPersistConsumer` feeds the persist queue into a
:class:`~gochat.logic.persist.PersistWorker`. The queue is declared with
``x-single-active-consumer``: every logic process subscribes, the broker
lets one consume at a time (so batches, seqs and deliveries stay in order)
and hands over to another when it dies. After a batch commits the consumer
answers each request's ``reply_to`` queue, then acknowledges the batch with
one ``basic.ack(multiple=True)`` on its last delivery tag. A crash before that
ack makes the broker redeliver the batch; the worker finds every message
already stored and answers with it, so nothing is stored twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from gochat.errors import ErrorCode, GochatError
from gochat.grpc_bridge import kind_from_pb, kind_to_pb, message_from_pb, message_to_pb
from gochat.logic.amqp import AmqpBus, BrokerMessage, Consumer, QueueSpec
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


def encode_request(request: PersistRequest, reply_to: str) -> bytes:
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
    ).SerializeToString()


def decode_request(body: bytes) -> tuple[PersistRequest, str]:
    """The request and its reply queue; ``ValueError`` if *body* is not a PersistRequest."""
    try:
        message = pb.PersistRequest.FromString(body)
    except Exception as e:  # protobuf raises its own DecodeError
        raise ValueError(f"undecodable persist request: {e}") from e
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
    ) -> None:
        self._bus = bus
        self._clock = clock
        self.reply_queue = reply_queue
        self._persist_queue = persist_queue
        self._reply_timeout = reply_timeout
        self._waiting: dict[int, list[_Waiter]] = {}
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
        ``shutting_down``: the client's gateway and session stay.)
        """
        super().stopService()
        if self._sweeper.running:
            self._sweeper.stop()
        waiting, self._waiting = self._waiting, {}
        for waiters in waiting.values():
            for waiter in waiters:
                if not waiter.result.called:
                    waiter.result.errback(GochatError(ErrorCode.UNAVAILABLE, "this logic process is stopping; retry"))
        consumer, self._consumer = self._consumer, None
        return consumer.cancel() if consumer is not None else None

    def submit(self, request: PersistRequest) -> Deferred[StoredMessage]:
        """Publish *request*; fires with the committed message when the worker answers."""
        waiter = _Waiter(Deferred(), self._clock.seconds() + self._reply_timeout)
        self._waiting.setdefault(request.msg_id, []).append(waiter)
        published = self._bus.publish(self._persist_queue, encode_request(request, self.reply_queue))
        published.addErrback(self._publish_failed, request.msg_id, waiter)
        return waiter.result

    def _publish_failed(self, failure: Failure, msg_id: int, waiter: _Waiter) -> None:
        self._forget(msg_id, waiter)
        if not waiter.result.called:
            error = failure.value if isinstance(failure.value, GochatError) else None
            waiter.result.errback(error or GochatError(ErrorCode.UNAVAILABLE, "the message broker is unreachable"))

    def _forget(self, msg_id: int, waiter: _Waiter) -> None:
        waiters = self._waiting.get(msg_id)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del self._waiting[msg_id]

    def _reply_received(self, message: BrokerMessage) -> None:
        try:
            reply = pb.PersistReply.FromString(message.body)
            stored = message_from_pb(reply.message)
        except Exception:
            _log.failure("dropping an undecodable persist reply")
        else:
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


@dataclass(frozen=True)
class _Delivered:
    broker_message: BrokerMessage
    reply_to: str


class BrokerPersistConsumer(Service):
    """Consumes the persist queue into its own :class:`PersistWorker`, acknowledging each batch after its commit.

    *then* is called with every committed batch after the replies went out
    (the deliverer).

    Stopping commits what was taken, but waits at most *drain_timeout*
    seconds: while the database is down a batch cannot commit, and a process
    told to stop must stop. What is left uncommitted was never acked to the
    broker, which redelivers it to the next consumer when this one's
    connection closes.
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
    ) -> None:
        self._bus = bus
        self._clock = clock
        self._queue = persist_queue
        self._prefetch = prefetch
        self._then = then
        self._drain_timeout = drain_timeout
        self.worker: PersistWorker[_Delivered] = PersistWorker(store, clock, policy, self.batch_committed)
        self._consumer: Consumer | None = None

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
        self._consumer = None

    def _received(self, message: BrokerMessage) -> None:
        try:
            request, reply_to = decode_request(message.body)
        except ValueError:
            _log.error("dropping an undecodable persist request (tag {tag})", tag=message.delivery_tag)
            if self._consumer is not None:
                self._consumer.nack(message, multiple=False, requeue=False)
            return
        if not self.running:
            return
        try:
            self.worker.submit(request, _Delivered(message, reply_to)).addErrback(_log_submit_failure)
        except GochatError as error:
            if self._consumer is None:
                return
            if error.code is ErrorCode.BAD_REQUEST:
                # The store cannot hold it, now or ever: drop it rather than block the queue behind it. Its
                # submitter checked it before publishing, so only a submitter with other limits sends one.
                _log.error(
                    "dropping persist request {msg_id} (tag {tag}) the store refuses: {reason}",
                    msg_id=request.msg_id,
                    tag=message.delivery_tag,
                    reason=error.message,
                )
                self._consumer.nack(message, multiple=False, requeue=False)
            else:
                # The worker's backlog is full: give the message back for later.
                self._consumer.nack(message, multiple=False, requeue=True)

    def batch_committed(self, items: Sequence[Committed[_Delivered]]) -> None:
        """Answer each request's reply queue, then ack the batch's last delivery at once."""
        last: BrokerMessage | None = None
        for item in items:
            if item.context is None or item.message is None:
                continue
            reply = pb.PersistReply(request_msg_id=item.request.msg_id, message=message_to_pb(item.message))
            if item.context.reply_to:
                self._bus.publish(item.context.reply_to, reply.SerializeToString()).addErrback(_log_reply_failure)
            last = item.context.broker_message
        if last is not None and self._consumer is not None:
            self._consumer.ack(last, multiple=True)
        self._then(items)


def _log_submit_failure(failure: Failure) -> None:
    _log.failure("persist request failed", failure)


def _log_reply_failure(failure: Failure) -> None:
    """A reply that cannot go out is expected: its submitter died (its queue is gone), or the broker is away."""
    if not failure.check(GochatError):
        _log.failure("persist reply could not be published", failure)
        return
    _log.warn(
        "persist reply could not be published ({reason}); a live submitter times out and its client retries",
        reason=failure.getErrorMessage(),
    )
