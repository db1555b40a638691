"""The RabbitMQ adapter against the real broker at 127.0.0.1:5672 (guest/guest).

Each test works on queues of its own (uuid names), deleted afterwards. Queue
depths are read on a separate plain txamqp connection (:class:`BrokerAdmin`),
so a test can tell what the broker holds, not just what the bus says. Waits
are for conditions (a number of deliveries, a confirm, a reconnection), each
bounded so a broken adapter fails the test instead of hanging it.

The field-table and header codec is checked without a broker in
:class:`CodecTests`.
"""

from __future__ import annotations

import collections
import os
import time
import uuid
from decimal import Decimal
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gochat.errors import ErrorCode, GochatError
from gochat.logic.amqp import (
    _FRAME_BODY,
    _FRAME_HEADER,
    _FRAME_METHOD,
    _HEARTBEAT_FRAME,
    AmqpBus,
    AmqpSettings,
    BrokerMessage,
    Consumer,
    QueueSpec,
    _AmqpProtocol,
    _Codec,
    _decode_header,
    _Delegate,
    _encode_header,
    _encode_method,
    _frame,
    amqp_spec,
)
from tests.integration.services import require_service
from tests.integration.support import bounded, free_port

HOST = "127.0.0.1"
PORT = 5672
WAIT = 30.0
MiB = 1 << 20


class Collector:
    """A consumer handler that keeps what it is given; :meth:`wait_for` waits until it has *count*."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.messages: list[BrokerMessage] = []
        self._waiters: list[tuple[int, Deferred[list[BrokerMessage]]]] = []

    def __call__(self, message: BrokerMessage) -> None:
        self.messages.append(message)
        ready = [w for w in self._waiters if w[0] <= len(self.messages)]
        self._waiters = [w for w in self._waiters if w[0] > len(self.messages)]
        for _, waiter in ready:
            waiter.callback(self.messages)

    def wait_for(self, count: int) -> Deferred[list[BrokerMessage]]:
        if len(self.messages) >= count:
            return succeed(self.messages)
        d: Deferred[list[BrokerMessage]] = Deferred()
        self._waiters.append((count, d))
        return bounded(d, self._reactor, WAIT, f"{count} deliveries (have {len(self.messages)})")


class LogWatcher:
    """Keeps the gochat.logic.amqp log events of a test; :meth:`wait_for` waits for one that matches."""

    def __init__(self, test: TestCase, reactor: Any) -> None:
        from twisted.logger import globalLogPublisher

        self._reactor = reactor
        self.events: list[dict[str, Any]] = []
        self._waiters: list[tuple[Any, Deferred[dict[str, Any]]]] = []
        globalLogPublisher.addObserver(self)
        test.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_namespace") != "gochat.logic.amqp":
            return
        self.events.append(event)
        for waiter in [w for w in self._waiters if w[0](event)]:
            self._waiters.remove(waiter)
            waiter[1].callback(event)

    def wait_for(self, what: str, predicate: Any) -> Deferred[dict[str, Any]]:
        for event in self.events:
            if predicate(event):
                return succeed(event)
        d: Deferred[dict[str, Any]] = Deferred()
        self._waiters.append((predicate, d))
        return bounded(d, self._reactor, WAIT, what)

    def wait_for_connection(self, generation: int) -> Deferred[dict[str, Any]]:
        return self.wait_for(
            f"connection {generation}",
            lambda e: e["log_format"].startswith("connected to RabbitMQ") and e["generation"] == generation,
        )


class BrokerAdmin:
    """A plain txamqp connection for looking at and deleting queues, independent of the bus under test."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._client: Any = None
        self._channel: Any = None

    async def connect(self) -> None:
        from twisted.internet.protocol import ClientCreator
        from txamqp.client import TwistedDelegate
        from txamqp.protocol import AMQClient

        creator = ClientCreator(
            self._reactor, AMQClient, delegate=TwistedDelegate(), vhost="/", spec=amqp_spec(), clock=self._reactor
        )
        self._client = await creator.connectTCP(HOST, PORT)
        await self._client.authenticate("guest", "guest")
        self._channel = await self._client.channel(1)
        await self._channel.channel_open()

    async def ready_count(self, queue: str) -> int:
        """How many messages *queue* holds ready for delivery (delivered-but-unacked ones not counted)."""
        reply = await self._channel.queue_declare(queue=queue, passive=True)
        count: int = reply.message_count
        return count

    async def delete(self, queue: str) -> None:
        await self._channel.queue_delete(queue=queue)

    async def close(self) -> None:
        if self._client is None:
            return
        disconnected = self._client.disconnected.wait()
        self._client.transport.loseConnection()
        await disconnected


class AmqpBusTests(TestCase):
    """:class:`AmqpBus` with publisher confirms and acked consumers, against RabbitMQ."""

    timeout = 60

    def setUp(self) -> Deferred[None]:
        require_service("RabbitMQ", HOST, PORT)
        from twisted.internet import reactor

        self.reactor = reactor
        self.queue = f"gochat-test-{uuid.uuid4().hex}"
        self.admin = BrokerAdmin(reactor)
        self.addCleanup(lambda: Deferred.fromCoroutine(self.admin.close()))
        self.addCleanup(lambda: Deferred.fromCoroutine(self.admin.delete(self.queue)))
        return Deferred.fromCoroutine(self.admin.connect())

    def make_bus(self, queues: tuple[QueueSpec, ...] | None = None, port: int = PORT) -> AmqpBus:
        """A started bus declaring *queues* (by default this test's queue), stopped at cleanup."""
        bus = AmqpBus(
            self.reactor, AmqpSettings(host=HOST, port=port), (QueueSpec(self.queue),) if queues is None else queues
        )
        bus.startService()
        self.addCleanup(lambda: bus.stopService() if bus.running else None)
        return bus

    async def connected_bus(self, queues: tuple[QueueSpec, ...] | None = None) -> AmqpBus:
        bus = self.make_bus(queues)
        await bounded(bus.when_connected(), self.reactor, WAIT, "the bus to connect")
        return bus

    async def publish_all(self, bus: AmqpBus, bodies: list[bytes]) -> None:
        """Publish every body at once (all in flight) and wait for every confirm."""
        await bounded(gatherResults([bus.publish(self.queue, body) for body in bodies]), self.reactor, WAIT, "confirms")

    def consume(self, bus: AmqpBus, prefetch: int = 0) -> tuple[Consumer, Collector]:
        collector = Collector(self.reactor)
        return bus.consume(self.queue, prefetch, collector), collector

    async def test_publish_confirm_then_consume(self) -> None:
        """A confirmed publish arrives whole, as bytes, with its routing key, first delivery, and acks away."""
        bus = await self.connected_bus()
        result = await bus.publish(self.queue, b"hello")
        self.assertIsNone(result)
        self.assertEqual(await self.admin.ready_count(self.queue), 1)

        consumer, collector = self.consume(bus, prefetch=10)
        [message] = await collector.wait_for(1)
        self.assertIs(type(message.body), bytes)
        self.assertEqual(message.body, b"hello")
        self.assertEqual(message.routing_key, self.queue)
        self.assertFalse(message.redelivered)
        self.assertEqual(message.generation, 1)

        consumer.ack(message)
        await consumer.cancel()
        await bus.stopService()
        self.assertEqual(await self.admin.ready_count(self.queue), 0)

    async def test_bodies_come_out_as_the_bytes_that_went_in(self) -> None:
        """Binary, UTF-8, empty and multi-frame bodies all come back byte for byte, always of type bytes.

        txamqp 0.8.2 on its own returns ``str`` for valid UTF-8 and empty bodies,
        loses the first frames of a body whose last frame is not UTF-8 (300,001
        bytes in, 37,873 out), and drops the connection on multi-frame UTF-8.
        """
        bodies = [
            os.urandom(MiB),
            os.urandom(MiB) + b"\xff",
            b"a" * 300_000 + b"\xff",
            b"\xff",
            b"",
            b"plain ascii",
            "h\u00e9llo w\u00f6rld \u2713 \U0001f600 ".encode() * 20_000,  # multi-byte characters split across frames
            b"\x00" * 131_064 + b"\xce",  # exactly one frame's payload, then a byte that looks like a frame end
        ]
        bus = await self.connected_bus()
        await self.publish_all(bus, bodies)
        consumer, collector = self.consume(bus)
        messages = await collector.wait_for(len(bodies))
        self.assertEqual([type(m.body) for m in messages], [bytes] * len(bodies))
        self.assertEqual([len(m.body) for m in messages], [len(b) for b in bodies])
        for sent, message in zip(bodies, messages, strict=True):
            self.assertEqual(message.body, sent)
        consumer.ack(messages[-1])

    async def test_a_thousand_messages_keep_their_order(self) -> None:
        """1,000 publishes in flight at once are delivered in publish order."""
        bodies = [b"%d" % i for i in range(1000)]
        bus = await self.connected_bus()
        await self.publish_all(bus, bodies)
        collector = Collector(self.reactor)

        def ack_every_50th(message: BrokerMessage) -> None:
            collector(message)
            if len(collector.messages) % 50 == 0:
                consumer.ack(message)

        consumer = bus.consume(self.queue, 100, ack_every_50th)
        await collector.wait_for(1000)
        self.assertEqual([m.body for m in collector.messages], bodies)
        self.assertEqual([m.delivery_tag for m in collector.messages], list(range(1, 1001)))

    async def test_ack_multiple_acks_everything_up_to_the_tag(self) -> None:
        """One ``multiple`` ack settles every earlier delivery: only the later ones come back after a restart."""
        bodies = [b"%d" % i for i in range(100)]
        bus = await self.connected_bus()
        await self.publish_all(bus, bodies)
        consumer, collector = self.consume(bus)
        messages = await collector.wait_for(100)
        consumer.ack(messages[59], multiple=True)
        await bus.stopService()
        self.assertEqual(await self.admin.ready_count(self.queue), 40)

        second = await self.connected_bus()
        consumer, collector = self.consume(second)
        messages = await collector.wait_for(40)
        consumer.ack(messages[-1])
        await second.stopService()
        self.assertEqual([m.body for m in messages], bodies[60:])
        self.assertTrue(all(m.redelivered for m in messages))
        self.assertEqual(await self.admin.ready_count(self.queue), 0)

    async def test_nack_requeues_and_redelivers(self) -> None:
        """A nack with requeue brings the message back marked redelivered; without requeue it is dropped."""
        bus = await self.connected_bus()
        await self.publish_all(bus, [b"again"])
        consumer, collector = self.consume(bus, prefetch=1)
        [first] = await collector.wait_for(1)
        self.assertFalse(first.redelivered)
        consumer.nack(first, requeue=True)
        second = (await collector.wait_for(2))[1]
        self.assertEqual(second.body, b"again")
        self.assertTrue(second.redelivered)
        self.assertNotEqual(second.delivery_tag, first.delivery_tag)

        consumer.nack(second, requeue=False)
        await consumer.cancel()
        self.assertEqual(await self.admin.ready_count(self.queue), 0)

    async def test_dropped_connection_reconnects_and_redelivers(self) -> None:
        """After the connection drops, the bus reconnects, subscribes again and gets the unacked messages again.

        Acks for deliveries of the old connection are ignored (the broker requeued them),
        so they cannot hit the new channel's delivery tags.
        """
        bodies = [b"%d" % i for i in range(5)]
        bus = await self.connected_bus()
        await self.publish_all(bus, bodies)
        consumer, collector = self.consume(bus, prefetch=10)
        old = await collector.wait_for(5)
        self.assertEqual({m.generation for m in old}, {1})

        assert bus._session is not None
        bus._session.protocol.transport.abortConnection()
        consumer.ack(old[-1])  # the connection is going: ignored
        again = (await collector.wait_for(10))[5:]
        self.assertEqual([m.body for m in again], bodies)
        self.assertTrue(all(m.redelivered for m in again))
        self.assertEqual({m.generation for m in again}, {2})
        await bounded(bus.when_connected(), self.reactor, WAIT, "the bus to reconnect")

        consumer.ack(old[-1])  # an old generation's tag 5 must not ack the new tag 5
        await bus.publish(self.queue, b"after")
        after = (await collector.wait_for(11))[10]
        self.assertEqual(after.body, b"after")
        consumer.ack(after)
        await bus.stopService()
        self.assertEqual(await self.admin.ready_count(self.queue), 0)
        self.assertEqual(bus._generation, 2)

    async def test_unacked_messages_go_to_the_next_consumer_when_a_bus_stops(self) -> None:
        """Stopping a bus with unacked deliveries hands them, redelivered, to a consumer on a new bus."""
        bodies = [b"%d" % i for i in range(5)]
        first = await self.connected_bus()
        await self.publish_all(first, bodies)
        _, collector = self.consume(first, prefetch=10)
        await collector.wait_for(5)
        await first.stopService()

        second = AmqpBus(self.reactor, AmqpSettings(host=HOST, port=PORT), (QueueSpec(self.queue),))
        consumer, collector = self.consume(second, prefetch=10)  # before start: subscribed once connected
        second.startService()
        self.addCleanup(lambda: second.stopService() if second.running else None)
        messages = await collector.wait_for(5)
        self.assertEqual([m.body for m in messages], bodies)
        self.assertTrue(all(m.redelivered for m in messages))
        consumer.ack(messages[-1])

    async def test_publish_fails_fast_when_not_connected(self) -> None:
        """With no broker, before start and after stop, publish fails ``unavailable`` at once."""
        unstarted = AmqpBus(self.reactor, AmqpSettings(host=HOST, port=PORT), ())
        self.failureResultOf(unstarted.publish(self.queue, b"x"), GochatError)

        nowhere = self.make_bus(port=free_port())
        started = time.monotonic()
        failure = self.failureResultOf(nowhere.publish(self.queue, b"x"), GochatError)
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertEqual(failure.value.code, ErrorCode.UNAVAILABLE)
        await nowhere.stopService()

        bus = await self.connected_bus()
        await bus.stopService()
        failure = self.failureResultOf(bus.publish(self.queue, b"x"), GochatError)
        self.assertEqual(failure.value.code, ErrorCode.UNAVAILABLE)

    async def test_publishes_lost_with_the_connection_fail(self) -> None:
        """Publishes still unconfirmed when the connection drops fail ``unavailable``; none succeeds."""
        bus = await self.connected_bus()
        pending = [bus.publish(self.queue, b"%d" % i) for i in range(200)]
        assert bus._session is not None
        bus._session.protocol.transport.abortConnection()
        outcomes: list[Any] = []
        for d in pending:
            d.addBoth(outcomes.append)
        await bounded(gatherResults(pending), self.reactor, WAIT, "every publish to settle")
        self.assertEqual(len(outcomes), 200)
        for outcome in outcomes:
            self.assertIsInstance(outcome.value, GochatError)
            self.assertEqual(outcome.value.code, ErrorCode.UNAVAILABLE)

    async def test_unroutable_publish_fails(self) -> None:
        """A publish to a queue that does not exist fails ``unavailable`` instead of vanishing."""
        bus = await self.connected_bus()
        with self.assertRaises(GochatError) as raised:
            await bus.publish(f"gochat-test-missing-{uuid.uuid4().hex}", b"lost?")
        self.assertEqual(raised.exception.code, ErrorCode.UNAVAILABLE)
        await bus.publish(self.queue, b"still fine")

    async def test_prefetch_is_honoured(self) -> None:
        """With prefetch 10 and no acks, exactly 10 are delivered; acking lets the next 10 through."""
        bus = await self.connected_bus()
        await self.publish_all(bus, [b"%d" % i for i in range(30)])
        consumer, collector = self.consume(bus, prefetch=10)
        first = await collector.wait_for(10)
        # 20 still ready on the broker means the 11th was never sent to us.
        self.assertEqual(await self.admin.ready_count(self.queue), 20)
        self.assertEqual(len(collector.messages), 10)

        consumer.ack(first[9], multiple=True)
        await collector.wait_for(20)
        self.assertEqual(await self.admin.ready_count(self.queue), 10)
        self.assertEqual(len(collector.messages), 20)
        self.assertEqual([m.body for m in collector.messages], [b"%d" % i for i in range(20)])

    async def test_queue_arguments_are_declared(self) -> None:
        """Boolean and integer queue arguments reach the broker as such; declaring again is idempotent."""
        spec = QueueSpec(self.queue, arguments={"x-single-active-consumer": True, "x-max-length": 10_000})
        first = await self.connected_bus((spec,))
        second = await self.connected_bus((spec,))
        await second.publish(self.queue, b"to the single active consumer")
        _, collector = self.consume(first, prefetch=1)
        [message] = await collector.wait_for(1)
        self.assertEqual(message.body, b"to the single active consumer")

    async def test_channel_error_from_the_broker_reconnects(self) -> None:
        """Acking a tag twice makes RabbitMQ close the channel; the bus starts over on a new connection."""
        bus = await self.connected_bus()
        await self.publish_all(bus, [b"one", b"two"])
        consumer, collector = self.consume(bus, prefetch=10)
        one, _two = await collector.wait_for(2)
        consumer.ack(one, multiple=False)
        consumer.ack(one, multiple=False)  # unknown delivery tag: PRECONDITION_FAILED closes the channel
        [redelivered] = (await collector.wait_for(3))[2:]
        self.assertEqual(redelivered.body, b"two")
        self.assertEqual(redelivered.generation, 2)
        consumer.ack(redelivered)
        await bus.stopService()
        self.assertEqual(await self.admin.ready_count(self.queue), 0)

    async def test_cancel_stops_deliveries_and_lets_a_drain_ack_what_it_was_given(self) -> None:
        """After cancel the handler gets nothing more, yet what it was given can still be acked (a drain
        commits its batch, then acks it); the channel closes once nothing is unsettled."""
        log = LogWatcher(self, self.reactor)
        bus = await self.connected_bus()
        await self.publish_all(bus, [b"%d" % i for i in range(5)])
        consumer, collector = self.consume(bus, prefetch=2)
        taken = await collector.wait_for(2)
        await consumer.cancel()
        await bus.publish(self.queue, b"5")
        self.assertEqual(await self.admin.ready_count(self.queue), 4)
        self.assertEqual([m.body for m in collector.messages], [b"0", b"1"])

        consumer.ack(taken[1], multiple=True)
        closed = await log.wait_for(
            "the consumer's channel to close", lambda e: "closed the channel" in e["log_format"]
        )
        self.assertEqual(closed["unsettled"], 0)
        await bus.stopService()
        self.assertEqual(await self.admin.ready_count(self.queue), 4)
        self.assertEqual(len(collector.messages), 2)

    async def test_unsettled_after_cancel_are_requeued_when_the_bus_stops(self) -> None:
        """A cancelled consumer that never settles what it was given does not keep it: stopping requeues it."""
        bus = await self.connected_bus()
        await self.publish_all(bus, [b"0", b"1", b"2"])
        consumer, collector = self.consume(bus, prefetch=1)
        await collector.wait_for(1)
        await consumer.cancel()
        self.assertEqual(await self.admin.ready_count(self.queue), 2)
        await bus.stopService()
        self.assertEqual(await self.admin.ready_count(self.queue), 3)
        self.assertEqual([m.body for m in collector.messages], [b"0"])

    async def test_deleted_queue_is_declared_again(self) -> None:
        """When the queue being consumed is deleted, the broker cancels the consumer; the bus reconnects,
        declares the queue again and resubscribes."""
        log = LogWatcher(self, self.reactor)
        bus = await self.connected_bus()
        consumer, collector = self.consume(bus, prefetch=10)
        await bus.publish(self.queue, b"before")
        await collector.wait_for(1)
        await self.admin.delete(self.queue)
        await log.wait_for_connection(2)
        await bus.publish(self.queue, b"after")
        after = (await collector.wait_for(2))[1]
        self.assertEqual((after.body, after.generation), (b"after", 2))
        consumer.ack(after)

    async def test_refused_login_is_retried_with_the_reason_logged(self) -> None:
        """Credentials the broker refuses: the reason is logged, the bus keeps retrying, publish fails fast."""
        log = LogWatcher(self, self.reactor)
        bus = AmqpBus(self.reactor, AmqpSettings(host=HOST, port=PORT, password="wrong"), ())
        bus.startService()
        self.addCleanup(lambda: bus.stopService() if bus.running else None)
        connected = bus.when_connected()
        failed = await log.wait_for(
            "a second failed setup", lambda e: "could not set up" in e["log_format"] and e["generation"] == 2
        )
        self.assertIn("ACCESS_REFUSED", failed["reason"])
        self.assertNoResult(connected)
        failure = self.failureResultOf(bus.publish(self.queue, b"x"), GochatError)
        self.assertEqual(failure.value.code, ErrorCode.UNAVAILABLE)
        await bus.stopService()
        self.assertEqual(self.failureResultOf(connected, GochatError).value.code, ErrorCode.SHUTTING_DOWN)

    async def test_throughput(self) -> None:
        """Measured, not asserted: confirmed publishes and consume with batched acks, small messages."""
        count = 5000
        bus = await self.connected_bus()
        body = b"x" * 100
        started = time.perf_counter()
        await self.publish_all(bus, [body] * count)
        publish_rate = count / (time.perf_counter() - started)

        batch = 100
        done: Deferred[None] = Deferred()
        received = collections.Counter[str]()

        def handler(message: BrokerMessage) -> None:
            received["n"] += 1
            if received["n"] % batch == 0 or received["n"] == count:
                consumer.ack(message, multiple=True)
            if received["n"] == count:
                done.callback(None)

        started = time.perf_counter()
        consumer = bus.consume(self.queue, 1000, handler)
        await bounded(done, self.reactor, WAIT, "all deliveries")
        consume_rate = count / (time.perf_counter() - started)
        await bus.stopService()
        self.assertEqual(await self.admin.ready_count(self.queue), 0)
        print(
            f"\nAMQP throughput, {count} x {len(body)} B:"
            f" publish with confirms (all in flight) {publish_rate:,.0f} msg/s;"
            f" consume, prefetch 1000, ack every {batch} (multiple) {consume_rate:,.0f} msg/s"
        )


class CodecTests(SynchronousTestCase):
    """The field-table and content-header codec the bus uses instead of txamqp's."""

    def round_trip_table(self, table: dict[str, object]) -> object:
        codec = _Codec()
        codec.encode_table(table)
        return _Codec(codec.value()).decode_table()

    def test_field_tables_keep_their_types(self) -> None:
        table: dict[str, object] = {
            "x-single-active-consumer": True,
            "off": False,
            "small": -5,
            "big": 2**40,
            "ratio": 0.5,
            "name": "gr\u00fc\u00dfe \u2713",
            "raw": b"\x00\xff",
            "nothing": None,
            "nested": {"a": 1, "b": ["x", 2, True]},
        }
        self.assertEqual(self.round_trip_table(table), table)

    def test_decodes_rabbitmq_field_types(self) -> None:
        """Types RabbitMQ puts in headers (x-death: arrays, timestamps, longs) and decimals decode."""
        payload = (
            b"\x01T" + b"T" + (1_700_000_000).to_bytes(8, "big") + b"\x01D" + b"D\x02" + (12345).to_bytes(4, "big")
        )
        data = len(payload).to_bytes(4, "big") + payload
        self.assertEqual(_Codec(data).decode_table(), {"T": 1_700_000_000, "D": Decimal("123.45")})

    def test_short_strings_are_measured_in_bytes(self) -> None:
        codec = _Codec()
        codec.encode_shortstr("\u00e9t\u00e9")
        self.assertEqual(codec.value(), b"\x05" + "\u00e9t\u00e9".encode())
        self.assertEqual(_Codec(codec.value()).decode_shortstr(), "\u00e9t\u00e9")
        with self.assertRaises(ValueError):
            _Codec().encode_shortstr("\u00e9" * 128)

    def test_long_strings_decode_as_bytes(self) -> None:
        codec = _Codec()
        codec.encode_longstr("valid utf-8")
        self.assertEqual(_Codec(codec.value()).decode_longstr(), b"valid utf-8")

    def test_content_header_round_trip(self) -> None:
        basic = amqp_spec().classes.byname["basic"]
        properties = {"delivery-mode": 2, "message-id": "17", "headers": {"x-death": [{"count": 1}]}}
        header = _decode_header(amqp_spec(), _encode_header(basic, 1 << 33, properties))
        self.assertEqual(header.size, 1 << 33)
        self.assertEqual(header.properties, properties)


class StubSession:
    """Stands in for the bus's per-connection state: records deliveries."""

    def __init__(self) -> None:
        self.delivered: list[Any] = []

    def deliver(self, channel_id: int, message: Any) -> None:
        self.delivered.append((channel_id, message))


class AbortableTransport:
    """A StringTransport that records ``abortConnection`` (Twisted's sets ``disconnected`` only)."""

    def __new__(cls) -> Any:
        from twisted.internet.testing import StringTransport

        class Transport(StringTransport):  # type: ignore[misc]
            aborted = False

            def abortConnection(self) -> None:
                self.aborted = True
                super().abortConnection()

        return Transport()


class ProtocolTests(SynchronousTestCase):
    """The frame reader and heartbeat of the protocol, on a StringTransport and a Clock."""

    def make_protocol(self) -> tuple[Any, Any, StubSession]:
        from twisted.internet.task import Clock

        clock = Clock()
        protocol = _AmqpProtocol(None, _Delegate(), AmqpSettings(), clock)  # type: ignore[arg-type]
        protocol.transport = AbortableTransport()
        protocol.MAX_LENGTH = 131_072
        protocol.session = StubSession()
        return protocol, clock, protocol.session

    def deliver_frames(self, body: bytes, channel: int = 3, tag: int = 7) -> bytes:
        spec = amqp_spec()
        deliver = _encode_method(spec.parse_method("basic.deliver"), ("ctag", tag, True, "", "q"))
        header = _encode_header(spec.classes.byname["basic"], len(body), {"delivery-mode": 2})
        step = 131_072 - 8
        return b"".join(
            [_frame(_FRAME_METHOD, channel, deliver), _frame(_FRAME_HEADER, channel, header)]
            + [_frame(_FRAME_BODY, channel, body[i : i + step]) for i in range(0, len(body), step)]
        )

    def test_any_segmentation_gives_the_same_bodies(self) -> None:
        """Frames cut anywhere by TCP (one byte at a time, odd sizes) assemble into the same bytes."""
        bodies = [os.urandom(300_001), b"", "\u00e9".encode() * 70_000, b"\xff"]
        data = b"".join(self.deliver_frames(body, tag=i) for i, body in enumerate(bodies))
        for cut in (1, 977, 65_536):
            protocol, _, session = self.make_protocol()
            for i in range(0, len(data), cut):
                protocol.dataReceived(data[i : i + cut])
            self.assertEqual([m.content.body for _, m in session.delivered], bodies)
            self.assertEqual([type(m.content.body) for _, m in session.delivered], [bytes] * len(bodies))
            self.assertEqual([m.delivery_tag for _, m in session.delivered], list(range(len(bodies))))
            self.assertEqual({(c, m.routing_key, m.redelivered) for c, m in session.delivered}, {(3, "q", True)})
            self.assertFalse(protocol.transport.aborted)

    def test_garbage_drops_the_connection(self) -> None:
        """A frame without its end marker aborts the connection instead of being guessed at."""
        protocol, _, session = self.make_protocol()
        data = bytearray(self.deliver_frames(b"body"))
        data[-1] = 0
        protocol.dataReceived(bytes(data))
        self.assertTrue(protocol.transport.aborted)
        self.assertEqual(session.delivered, [])
        self.flushLoggedErrors()

    def test_oversized_frame_drops_the_connection_before_buffering_it(self) -> None:
        protocol, _, _ = self.make_protocol()
        protocol.dataReceived(bytes([_FRAME_BODY, 0, 1]) + (1 << 30).to_bytes(4, "big"))
        self.assertTrue(protocol.transport.aborted)
        self.flushLoggedErrors()

    def test_heartbeat_sent_and_silence_detected(self) -> None:
        """Heartbeats go out every half interval; three silent intervals drop the connection."""
        protocol, clock, _ = self.make_protocol()
        protocol.start_heartbeat(10)
        clock.advance(5)
        self.assertEqual(protocol.transport.value(), _HEARTBEAT_FRAME)
        clock.advance(20)
        protocol.dataReceived(_HEARTBEAT_FRAME)  # the broker is alive
        clock.advance(25)
        self.assertFalse(protocol.transport.aborted)
        clock.advance(10)
        self.assertTrue(protocol.transport.aborted)
        protocol._heartbeat.stop()
