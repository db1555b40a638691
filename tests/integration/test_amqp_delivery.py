"""Deliveries through a gateway's own RabbitMQ queue, in order, acknowledged after handling."""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gochat.logic.amqp import AmqpBus, AmqpSettings
from gochat.logic.amqp_delivery import AmqpDeliveryBus, decode_delivery, encode_delivery, gateway_queue_spec
from gochat.model import Delivery, StoredMessage
from tests.integration.services import require_service
from tests.integration.support import bounded


def delivery(gateway_id: str, seq: int, body: str = "hi") -> Delivery:
    message = StoredMessage(1000 + seq, "d:1:2", seq, 1, "alice", f"m{seq}", body, 1_700_000_000_000 + seq)
    return Delivery(gateway_id, ("s1", "s2"), message)


class CodecTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """A delivery survives encoding byte for byte, unicode included."""
        item = delivery("gw", 7, "héllo \N{GRINNING FACE}")
        self.assertEqual(decode_delivery(encode_delivery(item)), item)

    def test_garbage(self) -> None:
        """Bytes that are not a delivery raise ValueError."""
        with self.assertRaises(ValueError):
            decode_delivery(b"\xff\xff\xff")


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
        self.assertEqual([d.message.seq for d in received], list(range(1, 501)))
        self.assertEqual(received[0], delivery(gateway_id, 1))

    async def test_gone_gateway_is_not_an_error(self) -> None:
        """Publishing to a gateway whose queue is gone completes (logged): its sessions recover by sync."""
        logic = AmqpDeliveryBus(await self.start_bus())
        result: Any = await logic.publish(delivery(f"gone-{uuid.uuid4().hex}", 1))
        self.assertIsNone(result)
