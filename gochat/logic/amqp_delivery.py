"""Deliveries over RabbitMQ: one queue per gateway, consumed by that gateway.

:class:`AmqpDeliveryBus` is the production :class:`~gochat.logic.interfaces.IDeliveryBus`.
Logic makes one delivery per gateway per message, carrying every session of
that gateway it is for. The deliveries for one gateway published during one
reactor turn leave together, in order, as one ``DeliveryBatch`` body (split
when it would pass :data:`MAX_BATCH_ITEMS` or :data:`MAX_BATCH_BYTES`),
published to the gateway's own queue with a publisher confirm; each
publisher's Deferred fires once its batch is confirmed. Batches to one gateway
go out on one channel in the order they were made, so a gateway sees its
deliveries in publish order. The gateway consumes its queue in order, hands
each delivery of a body to its handler in turn and acknowledges the body after
the last one's frames are written (or after the sessions they were for are
gone, which clients recover from by sync).

A body of one lone ``Delivery`` (what logic published before batches) parses
as a batch of none, since a batch's deliveries are field 100 and a Delivery
has no such field: the consumer then reads it as the one delivery it is, so a
gateway takes both forms during an upgrade.

A gateway's queue outlives short disconnections (a broker restart, a network
blip) but not the gateway: it expires five minutes after its last consumer
went away. Publishing to a gateway whose queue is gone fails with
``unavailable``; the bus logs it and drops the batch, since no session is
left there to write to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gochat.errors import ErrorCode, GochatError
from gochat.grpc_bridge import delivery_from_pb, delivery_to_pb
from gochat.logic.amqp import AmqpBus, BrokerMessage, Consumer, QueueSpec
from gochat.logic.interfaces import DeliveryHandler
from gochat.model import Delivery
from gochat.v1 import logic_pb2 as pb

_log = Logger()
T = TypeVar("T")
GATEWAY_QUEUE_PREFIX = "gochat.gateway."
GATEWAY_QUEUE_EXPIRES_MS = 300_000

#: At most this many items (deliveries, persist requests, persist replies) in one broker message.
MAX_BATCH_ITEMS = 100
#: ... and about this many bytes of protobuf (one larger item goes alone): a few 128 KiB frames, far under
#: RabbitMQ's largest message (128 MiB by default).
MAX_BATCH_BYTES = 1 << 20
#: What an item adds to a batch body besides its own bytes, at most: field 100's tag and the length.
_ITEM_OVERHEAD = 7


def split_batches(
    items: Sequence[T], size: Callable[[T], int], max_items: int = MAX_BATCH_ITEMS, max_bytes: int = MAX_BATCH_BYTES
) -> Iterator[list[T]]:
    """*items* in order, in runs of at most *max_items* and *max_bytes* (by *size*; a larger item goes alone)."""
    run: list[T] = []
    run_bytes = 0
    for item in items:
        item_bytes = size(item) + _ITEM_OVERHEAD
        if run and (len(run) >= max_items or run_bytes + item_bytes > max_bytes):
            yield run
            run, run_bytes = [], 0
        run.append(item)
        run_bytes += item_bytes
    if run:
        yield run


def gateway_queue(gateway_id: str) -> str:
    """The name of *gateway_id*'s delivery queue."""
    return f"{GATEWAY_QUEUE_PREFIX}{gateway_id}"


def gateway_queue_spec(gateway_id: str) -> QueueSpec:
    """The gateway's queue, declared by the gateway's own bus."""
    return QueueSpec(gateway_queue(gateway_id), durable=False, arguments={"x-expires": GATEWAY_QUEUE_EXPIRES_MS})


def encode_delivery(delivery: Delivery) -> bytes:
    """*delivery* alone as a ``gochat.v1.Delivery``, the message the gRPC stream carries too (and a lone body)."""
    return delivery_to_pb(delivery).SerializeToString()


def decode_delivery(body: bytes) -> Delivery:
    """The lone delivery in *body*; ``ValueError`` if it is not one."""
    try:
        item = pb.Delivery.FromString(body)
    except Exception as e:  # protobuf's DecodeError
        raise ValueError(f"undecodable delivery: {e}") from e
    return delivery_from_pb(item)


def encode_deliveries(deliveries: Sequence[Delivery]) -> bytes:
    """The body of a ``DeliveryBatch`` of *deliveries*, in order."""
    return pb.DeliveryBatch(deliveries=[delivery_to_pb(d) for d in deliveries]).SerializeToString()


def delivery_items(body: bytes) -> list[pb.Delivery]:
    """The deliveries of a body, batch or lone, still on the wire; ``ValueError`` if *body* is neither."""
    try:
        batch = pb.DeliveryBatch.FromString(body)
        if batch.deliveries:
            return list(batch.deliveries)
        return [pb.Delivery.FromString(body)]  # a lone Delivery parses as a batch of none
    except Exception as e:  # protobuf's DecodeError
        raise ValueError(f"undecodable delivery: {e}") from e


def decode_deliveries(body: bytes) -> list[Delivery]:
    """The deliveries of a body, batch or lone, in order; ``ValueError`` if any is malformed."""
    return [delivery_from_pb(item) for item in delivery_items(body)]


def describe(delivery: Delivery) -> str:
    """What *delivery* carries, for a log line: ``message 123`` or ``typing signal in g:7``."""
    if delivery.message is not None:
        return f"message {delivery.message.msg_id}"
    if delivery.signal is not None:
        return f"{delivery.signal.kind} signal in {delivery.signal.conv}"
    return "empty delivery"


def _describe_all(deliveries: Sequence[Delivery]) -> str:
    if len(deliveries) == 1:
        return describe(deliveries[0])
    return f"{len(deliveries)} deliveries ({describe(deliveries[0])} to {describe(deliveries[-1])})"


class _Subscription:
    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    def cancel(self) -> None:
        self._consumer.cancel().addErrback(lambda f: _log.failure("cancelling a delivery consumer failed", f))


_Outgoing = tuple[pb.Delivery, Delivery, "Deferred[None]"]


class AmqpDeliveryBus:
    """:class:`~gochat.logic.interfaces.IDeliveryBus` over an :class:`AmqpBus`.

    *clock* schedules the end-of-turn flush (``callLater(0)``) that publishes
    what each gateway was sent during the turn. Without one (a gateway, which
    only subscribes), each publish goes out at once, a batch of one.
    """

    def __init__(
        self,
        bus: AmqpBus,
        prefetch: int = 1000,
        *,
        clock: IReactorTime | None = None,
        max_batch: int = MAX_BATCH_ITEMS,
        max_batch_bytes: int = MAX_BATCH_BYTES,
    ) -> None:
        self._bus = bus
        self._prefetch = prefetch
        self._clock = clock
        self._max_batch = max_batch
        self._max_batch_bytes = max_batch_bytes
        self._outbox: dict[str, list[_Outgoing]] = {}
        self._flush_call: IDelayedCall | None = None

    def publish(self, delivery: Delivery) -> Deferred[None]:
        """Queue *delivery* for its gateway's batch of this turn; fires once that batch is confirmed.

        A gateway whose queue is gone (``unavailable``) is logged, and the
        Deferred fires all the same; other failures fail it.
        """
        published: Deferred[None] = Deferred()
        self._outbox.setdefault(delivery.gateway_id, []).append((delivery_to_pb(delivery), delivery, published))
        if self._clock is None:
            self._flush()
        elif self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self._flush)
        return published

    def _flush(self) -> None:
        self._flush_call = None
        outbox, self._outbox = self._outbox, {}
        for gateway_id, outgoing in outbox.items():
            queue = gateway_queue(gateway_id)
            for chunk in split_batches(outgoing, lambda o: o[0].ByteSize(), self._max_batch, self._max_batch_bytes):
                body = pb.DeliveryBatch(deliveries=[item for item, _, _ in chunk]).SerializeToString()
                d = maybeDeferred(self._bus.publish, queue, body)
                d.addCallbacks(self._confirmed, self._publish_failed, callbackArgs=(chunk,), errbackArgs=(chunk,))

    def _confirmed(self, _: None, chunk: list[_Outgoing]) -> None:
        for _item, _delivery, published in chunk:
            published.callback(None)

    def _publish_failed(self, failure: Failure, chunk: list[_Outgoing]) -> None:
        if isinstance(failure.value, GochatError) and failure.value.code is ErrorCode.UNAVAILABLE:
            deliveries = [delivery for _, delivery, _ in chunk]
            _log.info(
                "delivery of {what} to gateway {gateway_id} not taken ({reason}); its sessions recover by sync",
                what=_describe_all(deliveries),
                gateway_id=deliveries[0].gateway_id,
                reason=failure.value.message,
            )
            self._confirmed(None, chunk)
            return
        for _item, _delivery, published in chunk:
            published.errback(failure)

    def subscribe(self, gateway_id: str, handler: DeliveryHandler) -> _Subscription:
        """Consume *gateway_id*'s queue, which this bus must declare (see :func:`gateway_queue_spec`).

        Each body's deliveries reach *handler* in order; the body is acked
        (``multiple``) after the last. A delivery that is malformed, or whose
        handler raises, is logged and skipped; the rest of its body goes on.
        Raises ``bad_request`` when the queue is not declared: a logic process
        asked to stream a gateway's deliveries over gRPC while it delivers
        through the broker means the gateway was started without ``--broker``.
        """
        if gateway_queue(gateway_id) not in self._bus.declared_queues:
            raise GochatError(
                ErrorCode.BAD_REQUEST,
                f"deliveries for {gateway_id} go through the broker: start that gateway with --broker",
            )
        consumer: Consumer | None = None

        def received(message: BrokerMessage) -> None:
            assert consumer is not None
            try:
                items = delivery_items(message.body)
            except ValueError:
                _log.error("dropping an undecodable delivery (tag {tag})", tag=message.delivery_tag)
                consumer.nack(message, multiple=False, requeue=False)
                return
            for item in items:
                try:
                    delivery = delivery_from_pb(item)
                except ValueError as e:
                    _log.error(
                        "dropping a malformed delivery (tag {tag}): {reason}", tag=message.delivery_tag, reason=e
                    )
                    continue
                try:
                    handler(delivery)
                except Exception:
                    _log.failure("delivery handler failed on {what}; skipping it", what=describe(delivery))
            consumer.ack(message, multiple=True)

        consumer = self._bus.consume(gateway_queue(gateway_id), self._prefetch, received)
        return _Subscription(consumer)
