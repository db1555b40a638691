"""Deliveries through a gateway's own RabbitMQ queue: batched per gateway and turn, in order, acked after handling.

The codec, the batching and the consumer's side run against a fake bus on a
:class:`~twisted.internet.task.Clock` (no services needed); the rest against
the real broker.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gochat.errors import ErrorCode, GochatError
from gochat.grpc_bridge import delivery_to_pb
from gochat.logic.amqp import AmqpBus, AmqpSettings, BrokerMessage
from gochat.logic.amqp_delivery import (
    AmqpDeliveryBus,
    decode_deliveries,
    decode_delivery,
    describe,
    encode_deliveries,
    encode_delivery,
    gateway_queue,
    gateway_queue_spec,
    split_batches,
)
from gochat.model import Delivery, MessageKind, Signal, SignalKind, StoredMessage
from gochat.v1 import logic_pb2 as pb
from tests.integration.services import require_service
from tests.integration.support import bounded


def delivery(gateway_id: str, seq: int, body: str = "hi") -> Delivery:
    message = StoredMessage(1000 + seq, "d:1:2", seq, 1, "alice", f"m{seq}", body, 1_700_000_000_000 + seq)
    return Delivery(gateway_id, ("s1", "s2"), (2, 1), message)


def signal_delivery(gateway_id: str, kind: str, seq: int) -> Delivery:
    signal = Signal(kind, "g:7", 1, "alice", seq, 1_700_000_000_000 + seq)
    return Delivery(gateway_id, ("s1", "s2", "s3"), (2, 2, 3), None, signal)


class CodecTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """A delivery survives encoding byte for byte, unicode included."""
        item = delivery("gw", 7, "héllo \N{GRINNING FACE}")
        self.assertEqual(decode_delivery(encode_delivery(item)), item)
        self.assertEqual(encode_delivery(decode_delivery(encode_delivery(item))), encode_delivery(item))

    def test_edits_recalls_and_member_events(self) -> None:
        """A stored event keeps its kind and the seq it points at."""
        for kind, ref_seq in ((MessageKind.EDIT, 3), (MessageKind.RECALL, 4), (MessageKind.MEMBER, 0)):
            message = StoredMessage(1009, "g:7", 9, 1, "alice", "m9", "x", 1_700_000_000_009, kind, ref_seq)
            item = Delivery("gw", ("s1",), (2,), message)
            self.assertEqual(decode_delivery(encode_delivery(item)), item)

    def test_signals(self) -> None:
        """Typing and read signals survive encoding, with the users their sessions were routed for."""
        for item in (signal_delivery("gw", SignalKind.TYPING, 0), signal_delivery("gw", SignalKind.READ, 12)):
            body = encode_delivery(item)
            self.assertEqual(decode_delivery(body), item)
            self.assertEqual(encode_delivery(decode_delivery(body)), body)

    def test_descriptions_for_the_log(self) -> None:
        self.assertEqual(describe(delivery("gw", 7)), "message 1007")
        self.assertEqual(describe(signal_delivery("gw", SignalKind.TYPING, 0)), "typing signal in g:7")

    def test_garbage(self) -> None:
        """Bytes that are not a delivery raise ValueError."""
        with self.assertRaises(ValueError):
            decode_delivery(b"\xff\xff\xff")

    def test_malformed(self) -> None:
        """A delivery whose sessions and users do not pair up, or that carries nothing, raises ValueError."""
        unpaired = pb.Delivery(gateway_id="gw", session_ids=["s1", "s2"], user_ids=[1])
        unpaired.signal.kind = SignalKind.TYPING
        empty = pb.Delivery(gateway_id="gw", session_ids=["s1"], user_ids=[1])
        for item in (unpaired, empty):
            with self.assertRaises(ValueError):
                decode_delivery(item.SerializeToString())


class FakeConsumer:
    def __init__(self, handler: Callable[[BrokerMessage], None]) -> None:
        self.handler = handler
        self.acked: list[tuple[int, bool]] = []
        self.nacked: list[tuple[int, bool, bool]] = []

    def ack(self, message: BrokerMessage, multiple: bool = True) -> None:
        self.acked.append((message.delivery_tag, multiple))

    def nack(self, message: BrokerMessage, multiple: bool = True, requeue: bool = True) -> None:
        self.nacked.append((message.delivery_tag, multiple, requeue))

    def cancel(self) -> Deferred[None]:
        return succeed(None)


class FakeBus:
    """Records publishes; each waits for the test to confirm (or fail) it."""

    def __init__(self, *queues: str) -> None:
        self.declared_queues = frozenset(queues)
        self.published: list[tuple[str, bytes, Deferred[None]]] = []
        self.consumers: list[FakeConsumer] = []

    def publish(self, queue: str, body: bytes) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.published.append((queue, body, d))
        return d

    def consume(self, queue: str, prefetch: int, handler: Callable[[BrokerMessage], None]) -> FakeConsumer:
        consumer = FakeConsumer(handler)
        self.consumers.append(consumer)
        return consumer

    def bodies(self) -> list[tuple[str, list[Delivery]]]:
        return [(queue, decode_deliveries(body)) for queue, body, _ in self.published]


def broker_message(body: bytes, tag: int) -> BrokerMessage:
    return BrokerMessage(body=body, delivery_tag=tag, redelivered=False, routing_key="q", generation=1)


class BatchCodecTests(SynchronousTestCase):
    def test_a_batch_round_trips_in_order(self) -> None:
        items = [delivery("gw", 1), signal_delivery("gw", SignalKind.TYPING, 0), delivery("gw", 2, "\N{SNOWMAN}")]
        body = encode_deliveries(items)
        self.assertEqual(decode_deliveries(body), items)
        self.assertEqual(
            body,
            pb.DeliveryBatch(
                deliveries=[pb.Delivery.FromString(encode_delivery(d)) for d in items]
            ).SerializeToString(),
        )

    def test_a_lone_delivery_body_still_decodes(self) -> None:
        """A body published before batches existed (one Delivery) parses as a batch of none: it is read as one."""
        for item in (delivery("gw", 7), signal_delivery("gw", SignalKind.READ, 3)):
            body = encode_delivery(item)
            self.assertEqual(list(pb.DeliveryBatch.FromString(body).deliveries), [])
            self.assertEqual(decode_deliveries(body), [item])

    def test_garbage(self) -> None:
        with self.assertRaises(ValueError):
            decode_deliveries(b"\xff\xff\xff")

    def test_split_by_count_and_bytes(self) -> None:
        sizes = [10, 10, 10, 10, 10]
        self.assertEqual(
            list(split_batches(sizes, lambda n: n, max_items=2, max_bytes=1000)), [[10, 10], [10, 10], [10]]
        )
        self.assertEqual(
            list(split_batches(sizes, lambda n: n, max_items=100, max_bytes=35)), [[10, 10], [10, 10], [10]]
        )
        self.assertEqual(list(split_batches([5, 100, 5], lambda n: n, max_items=100, max_bytes=50)), [[5], [100], [5]])
        self.assertEqual(list(split_batches([], lambda n: n, max_items=2, max_bytes=50)), [])


class PublishBatchingTests(SynchronousTestCase):
    """Deliveries published in one reactor turn leave as one DeliveryBatch per gateway, in order."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.bus = FakeBus()
        self.deliveries = AmqpDeliveryBus(self.bus, clock=self.clock)  # type: ignore[arg-type]

    def test_one_body_per_gateway_per_turn(self) -> None:
        a = [delivery("a", seq) for seq in (1, 2, 3)]
        b = [delivery("b", seq) for seq in (1, 2)]
        results: list[object] = []
        for item in (a[0], b[0], a[1], a[2], b[1]):
            self.deliveries.publish(item).addBoth(results.append)
        self.assertEqual(self.bus.published, [])
        self.clock.advance(0)
        self.assertEqual(self.bus.bodies(), [(gateway_queue("a"), a), (gateway_queue("b"), b)])
        self.assertEqual(results, [])
        self.bus.published[1][2].callback(None)
        self.assertEqual(results, [None, None], "b's two, once b's batch is confirmed")
        self.bus.published[0][2].callback(None)
        self.assertEqual(results, [None] * 5)
        self.deliveries.publish(delivery("a", 4))
        self.clock.advance(0)
        self.assertEqual(self.bus.bodies()[2:], [(gateway_queue("a"), [delivery("a", 4)])])

    def test_a_long_turn_is_split_in_order(self) -> None:
        deliveries = AmqpDeliveryBus(self.bus, clock=self.clock, max_batch=100)  # type: ignore[arg-type]
        sent = [delivery("a", seq) for seq in range(1, 251)]
        for item in sent:
            deliveries.publish(item)
        self.clock.advance(0)
        bodies = self.bus.bodies()
        self.assertEqual([len(items) for _, items in bodies], [100, 100, 50])
        self.assertEqual([d for _, items in bodies for d in items], sent)

    def test_a_batch_stays_under_the_byte_cap(self) -> None:
        deliveries = AmqpDeliveryBus(self.bus, clock=self.clock, max_batch_bytes=3000)  # type: ignore[arg-type]
        sent = [delivery("a", seq, "x" * 1000) for seq in range(1, 6)]
        for item in sent:
            deliveries.publish(item)
        self.clock.advance(0)
        self.assertEqual([len(items) for _, items in self.bus.bodies()], [2, 2, 1])
        self.assertTrue(all(len(body) <= 3000 for _, body, _ in self.bus.published))

    def test_a_gone_gateway_is_logged_once_per_batch_and_dropped(self) -> None:
        results: list[object] = []
        for seq in (1, 2):
            self.deliveries.publish(delivery("gone", seq)).addBoth(results.append)
        self.clock.advance(0)
        with capturedLogs() as events:
            self.bus.published[0][2].errback(GochatError(ErrorCode.UNAVAILABLE, "no queue"))
        self.assertEqual(results, [None, None])
        (event,) = [e for e in events if "gone" in str(e.get("gateway_id"))]
        self.assertEqual(event["log_level"], LogLevel.info)

    def test_other_failures_reach_every_caller(self) -> None:
        results: list[object] = []
        for seq in (1, 2):
            self.deliveries.publish(delivery("a", seq)).addErrback(lambda f: results.append(f.value))
        self.clock.advance(0)
        error = RuntimeError("boom")
        self.bus.published[0][2].errback(error)
        self.assertEqual(results, [error, error])

    def test_a_publish_that_raises_fails_its_callers_only(self) -> None:
        """A queue name the bus refuses (over 255 bytes) fails that gateway's deliveries, not the others'."""
        bus = FakeBus()
        real_publish = bus.publish

        def publish(queue: str, body: bytes) -> Deferred[None]:
            if queue == gateway_queue("bad"):
                raise ValueError("queue name too long")
            return real_publish(queue, body)

        bus.publish = publish  # type: ignore[method-assign]
        deliveries = AmqpDeliveryBus(bus, clock=self.clock)  # type: ignore[arg-type]
        results: list[object] = []
        deliveries.publish(delivery("bad", 1)).addErrback(lambda f: results.append(f.type))
        deliveries.publish(delivery("good", 1)).addBoth(results.append)
        self.clock.advance(0)
        self.assertEqual(results, [ValueError])
        self.assertEqual([queue for queue, _ in bus.bodies()], [gateway_queue("good")])

    def test_without_a_clock_each_publish_goes_at_once(self) -> None:
        deliveries = AmqpDeliveryBus(self.bus)  # type: ignore[arg-type]
        deliveries.publish(delivery("a", 1))
        self.assertEqual(self.bus.bodies(), [(gateway_queue("a"), [delivery("a", 1)])])


class SubscribeTests(SynchronousTestCase):
    """The gateway's side: each delivery of a body to the handler, in order, then one ack."""

    def setUp(self) -> None:
        self.bus = FakeBus(gateway_queue("gw"))
        self.received: list[Delivery] = []
        acked_when: list[int] = []
        self.acked_when = acked_when
        AmqpDeliveryBus(self.bus).subscribe("gw", self.handle)  # type: ignore[arg-type]
        (self.consumer,) = self.bus.consumers

    def handle(self, item: Delivery) -> None:
        self.acked_when.append(len(self.consumer.acked))
        self.received.append(item)

    def test_a_batch_reaches_the_handler_in_order_then_is_acked(self) -> None:
        sent = [delivery("gw", 1), signal_delivery("gw", SignalKind.TYPING, 0), delivery("gw", 2)]
        self.consumer.handler(broker_message(encode_deliveries(sent), 5))
        self.assertEqual(self.received, sent)
        self.assertEqual(self.acked_when, [0, 0, 0], "acked after the last one was handled")
        self.assertEqual(self.consumer.acked, [(5, True)])

    def test_a_lone_delivery_body(self) -> None:
        """What a logic process from before batches published (or left in the queue) is still delivered."""
        self.consumer.handler(broker_message(encode_delivery(delivery("gw", 1)), 1))
        self.assertEqual(self.received, [delivery("gw", 1)])
        self.assertEqual(self.consumer.acked, [(1, True)])

    def test_an_undecodable_body_is_dropped(self) -> None:
        with capturedLogs():
            self.consumer.handler(broker_message(b"\xff\xff\xff", 1))
        self.assertEqual((self.received, self.consumer.nacked, self.consumer.acked), ([], [(1, False, False)], []))

    def test_a_malformed_delivery_is_dropped_alone(self) -> None:
        unpaired = pb.Delivery(gateway_id="gw", session_ids=["s1", "s2"], user_ids=[1])
        unpaired.signal.kind = SignalKind.TYPING
        body = pb.DeliveryBatch(
            deliveries=[delivery_to_pb(delivery("gw", 1)), unpaired, delivery_to_pb(delivery("gw", 2))]
        ).SerializeToString()
        with capturedLogs():
            self.consumer.handler(broker_message(body, 1))
        self.assertEqual(self.received, [delivery("gw", 1), delivery("gw", 2)])
        self.assertEqual(self.consumer.acked, [(1, True)])

    def test_a_handler_failure_does_not_lose_the_rest_of_the_batch(self) -> None:
        def handle(item: Delivery) -> None:
            if item.message is not None and item.message.seq == 1:
                raise RuntimeError("boom")
            self.received.append(item)

        bus = FakeBus(gateway_queue("gw"))
        AmqpDeliveryBus(bus).subscribe("gw", handle)  # type: ignore[arg-type]
        (consumer,) = bus.consumers
        consumer.handler(broker_message(encode_deliveries([delivery("gw", 1), delivery("gw", 2)]), 1))
        self.assertEqual(self.received, [delivery("gw", 2)])
        self.assertEqual(consumer.acked, [(1, True)])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class AmqpDeliveryTests(TestCase):
    timeout = 30

    async def start_bus(self, gateway_id: str | None = None) -> AmqpBus:
        from twisted.internet import reactor

        queues = [gateway_queue_spec(gateway_id)] if gateway_id else []
        bus = AmqpBus(reactor, AmqpSettings(), queues)
        bus.startService()
        self.addCleanup(bus.stopService)
        await bounded(bus.when_connected(), reactor, 10, "RabbitMQ")
        return bus

    def setUp(self) -> None:
        require_service("RabbitMQ", "127.0.0.1", 5672)

    async def test_in_order_to_the_right_gateway(self) -> None:
        """A gateway receives its deliveries in publish order, all of them, and nothing else's."""
        from twisted.internet import reactor

        gateway_id = f"test-{uuid.uuid4().hex[:10]}"
        gateway_bus = await self.start_bus(gateway_id)
        logic = AmqpDeliveryBus(await self.start_bus(), clock=reactor)
        received: list[Delivery] = []
        done: Deferred[None] = Deferred()

        def handle(item: Delivery) -> None:
            received.append(item)
            if len(received) == 500 and not done.called:
                done.callback(None)

        subscription = AmqpDeliveryBus(gateway_bus).subscribe(gateway_id, handle)
        self.addCleanup(subscription.cancel)
        await bounded(gateway_bus.when_connected(), reactor, 10, "gateway bus")
        for seq in range(1, 501):
            logic.publish(delivery(gateway_id, seq))
        await bounded(done, reactor, 20, "500 deliveries")
        self.assertEqual([d.message.seq for d in received if d.message is not None], list(range(1, 501)))
        self.assertEqual(received[0], delivery(gateway_id, 1))

    async def test_signals_keep_their_place_among_messages(self) -> None:
        """Typing and read signals share the gateway's queue with messages and arrive in publish order."""
        from twisted.internet import reactor

        gateway_id = f"test-{uuid.uuid4().hex[:10]}"
        gateway_bus = await self.start_bus(gateway_id)
        logic = AmqpDeliveryBus(await self.start_bus(), clock=reactor)
        sent = [
            delivery(gateway_id, 1),
            signal_delivery(gateway_id, SignalKind.TYPING, 0),
            delivery(gateway_id, 2, "\N{GRINNING FACE}"),
            signal_delivery(gateway_id, SignalKind.READ, 2),
        ]
        received: list[Delivery] = []
        done: Deferred[None] = Deferred()

        def handle(item: Delivery) -> None:
            received.append(item)
            if len(received) == len(sent) and not done.called:
                done.callback(None)

        subscription = AmqpDeliveryBus(gateway_bus).subscribe(gateway_id, handle)
        self.addCleanup(subscription.cancel)
        await bounded(gateway_bus.when_connected(), reactor, 10, "gateway bus")
        for item in sent:
            logic.publish(item)
        await bounded(done, reactor, 20, "4 deliveries")
        self.assertEqual(received, sent)

    async def test_gone_gateway_is_not_an_error(self) -> None:
        """Publishing to a gateway whose queue is gone completes (logged): its sessions recover by sync."""
        from twisted.internet import reactor

        logic = AmqpDeliveryBus(await self.start_bus(), clock=reactor)
        await logic.publish(delivery(f"gone-{uuid.uuid4().hex}", 1))
        await logic.publish(signal_delivery(f"gone-{uuid.uuid4().hex}", SignalKind.TYPING, 0))

    async def test_lone_bodies_and_batches_share_a_queue(self) -> None:
        """A lone Delivery left in the queue by a logic process from before batches arrives in its place."""
        from twisted.internet import reactor

        gateway_id = f"test-{uuid.uuid4().hex[:10]}"
        gateway_bus = await self.start_bus(gateway_id)
        logic_bus = await self.start_bus()
        logic = AmqpDeliveryBus(logic_bus, clock=reactor)
        sent = [delivery(gateway_id, seq) for seq in range(1, 5)]
        received: list[Delivery] = []
        done: Deferred[None] = Deferred()

        def handle(item: Delivery) -> None:
            received.append(item)
            if len(received) == len(sent) and not done.called:
                done.callback(None)

        await logic_bus.publish(gateway_queue(gateway_id), encode_delivery(sent[0]))
        await logic.publish(sent[1])
        await logic_bus.publish(gateway_queue(gateway_id), encode_delivery(sent[2]))
        await logic.publish(sent[3])
        subscription = AmqpDeliveryBus(gateway_bus).subscribe(gateway_id, handle)
        self.addCleanup(subscription.cancel)
        await bounded(done, reactor, 20, "4 deliveries")
        self.assertEqual(received, sent)
