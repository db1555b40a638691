"""Deliveries through a gateway's own RabbitMQ queue, in order, acknowledged after handling."""

from __future__ import annotations

import uuid

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gochat.logic.amqp import AmqpBus, AmqpSettings
from gochat.logic.amqp_delivery import (
    AmqpDeliveryBus,
    decode_delivery,
    describe,
    encode_delivery,
    gateway_queue_spec,
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
        logic = AmqpDeliveryBus(await self.start_bus())
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
        logic = AmqpDeliveryBus(await self.start_bus())
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
        logic = AmqpDeliveryBus(await self.start_bus())
        await logic.publish(delivery(f"gone-{uuid.uuid4().hex}", 1))
        await logic.publish(signal_delivery(f"gone-{uuid.uuid4().hex}", SignalKind.TYPING, 0))
