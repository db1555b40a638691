"""Deliveries over RabbitMQ: one queue per gateway, consumed by that gateway.

:class:`AmqpDeliveryBus` is the production :class:`~gochat.logic.interfaces.IDeliveryBus`.
Logic publishes each delivery (one per gateway per message, carrying every
session of that gateway it is for) to the gateway's own queue with a
publisher confirm; the gateway consumes its queue in order and acknowledges
each delivery after its frames are written (or after the sessions they were
for are gone, which clients recover from by sync).

A gateway's queue outlives short disconnections (a broker restart, a network
blip) but not the gateway: it expires five minutes after its last consumer
went away. Publishing to a gateway whose queue is gone fails with
``unavailable``; the bus logs it and drops the delivery, since no session is
left there to write to.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from gochat.errors import ErrorCode, GochatError
from gochat.grpc_bridge import delivery_from_pb, delivery_to_pb
from gochat.logic.amqp import AmqpBus, BrokerMessage, Consumer, QueueSpec
from gochat.logic.interfaces import DeliveryHandler
from gochat.model import Delivery
from gochat.v1 import logic_pb2 as pb

_log = Logger()
GATEWAY_QUEUE_PREFIX = "gochat.gateway."
GATEWAY_QUEUE_EXPIRES_MS = 300_000


def gateway_queue(gateway_id: str) -> str:
    """The name of *gateway_id*'s delivery queue."""
    return f"{GATEWAY_QUEUE_PREFIX}{gateway_id}"


def gateway_queue_spec(gateway_id: str) -> QueueSpec:
    """The gateway's queue, declared by the gateway's own bus."""
    return QueueSpec(gateway_queue(gateway_id), durable=False, arguments={"x-expires": GATEWAY_QUEUE_EXPIRES_MS})


def encode_delivery(delivery: Delivery) -> bytes:
    """The body of *delivery* on a gateway's queue: the ``gochat.v1.Delivery`` the gRPC stream carries too."""
    return delivery_to_pb(delivery).SerializeToString()


def decode_delivery(body: bytes) -> Delivery:
    """The delivery in *body*; ``ValueError`` if it is not one."""
    try:
        item = pb.Delivery.FromString(body)
    except Exception as e:  # protobuf's DecodeError
        raise ValueError(f"undecodable delivery: {e}") from e
    return delivery_from_pb(item)


def describe(delivery: Delivery) -> str:
    """What *delivery* carries, for a log line: ``message 123`` or ``typing signal in g:7``."""
    if delivery.message is not None:
        return f"message {delivery.message.msg_id}"
    if delivery.signal is not None:
        return f"{delivery.signal.kind} signal in {delivery.signal.conv}"
    return "empty delivery"


class _Subscription:
    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    def cancel(self) -> None:
        self._consumer.cancel().addErrback(lambda f: _log.failure("cancelling a delivery consumer failed", f))


class AmqpDeliveryBus:
    """:class:`~gochat.logic.interfaces.IDeliveryBus` over an :class:`AmqpBus`."""

    def __init__(self, bus: AmqpBus, prefetch: int = 1000) -> None:
        self._bus = bus
        self._prefetch = prefetch

    def publish(self, delivery: Delivery) -> Deferred[None]:
        d = self._bus.publish(gateway_queue(delivery.gateway_id), encode_delivery(delivery))
        d.addErrback(self._publish_failed, delivery)
        return d

    def _publish_failed(self, failure: Failure, delivery: Delivery) -> Failure | None:
        if isinstance(failure.value, GochatError) and failure.value.code is ErrorCode.UNAVAILABLE:
            _log.info(
                "delivery of {what} to gateway {gateway_id} not taken ({reason}); its sessions recover by sync",
                what=describe(delivery),
                gateway_id=delivery.gateway_id,
                reason=failure.value.message,
            )
            return None
        return failure

    def subscribe(self, gateway_id: str, handler: DeliveryHandler) -> _Subscription:
        """Consume *gateway_id*'s queue, which this bus must declare (see :func:`gateway_queue_spec`).

        Raises ``bad_request`` otherwise: a logic process asked to stream a
        gateway's deliveries over gRPC while it delivers through the broker
        means the gateway was started without ``--broker``.
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
                delivery = decode_delivery(message.body)
            except ValueError:
                _log.error("dropping an undecodable delivery (tag {tag})", tag=message.delivery_tag)
                consumer.nack(message, multiple=False, requeue=False)
                return
            handler(delivery)
            consumer.ack(message, multiple=True)

        consumer = self._bus.consume(gateway_queue(gateway_id), self._prefetch, received)
        return _Subscription(consumer)
