"""The broker persist path: its bodies carry every field, and its stop is bounded and leaves no submitter waiting.

Against a fake bus (what was published, acked, nacked, cancelled) and the
in-memory store, on a :class:`~twisted.internet.task.Clock`; the real
broker is exercised in ``tests/integration``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from gochat.errors import ErrorCode, GochatError
from gochat.logic.amqp import BrokerMessage
from gochat.logic.batch_writer import BatchPolicy
from gochat.logic.broker_persist import BrokerPersistConsumer, BrokerPersistQueue, decode_request, encode_request
from gochat.logic.memory import InMemoryMessageStore
from gochat.logic.sequencing import Assignment
from gochat.model import MessageKind, PersistRequest, StoredMessage
from gochat.v1 import logic_pb2 as pb

POLICY = BatchPolicy(max_batch=10, max_delay=0.005, retry_initial=0.05, retry_max=1.0)


class FakeConsumer:
    def __init__(self, queue: str, handler: Callable[[BrokerMessage], None]) -> None:
        self.queue = queue
        self.handler = handler
        self.acked: list[tuple[int, bool]] = []
        self.nacked: list[tuple[int, bool, bool]] = []
        self.cancelled = False

    def ack(self, message: BrokerMessage, multiple: bool = True) -> None:
        self.acked.append((message.delivery_tag, multiple))

    def nack(self, message: BrokerMessage, multiple: bool = True, requeue: bool = True) -> None:
        self.nacked.append((message.delivery_tag, multiple, requeue))

    def cancel(self) -> Deferred[None]:
        self.cancelled = True
        return succeed(None)


class FakeBus:
    """Publishes are confirmed at once and recorded; consumers are handed to the test."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.consumers: list[FakeConsumer] = []
        self.refuse: GochatError | None = None

    def publish(self, queue: str, body: bytes) -> Deferred[None]:
        self.published.append((queue, body))
        return succeed(None) if self.refuse is None else fail(self.refuse)

    def consume(self, queue: str, prefetch: int, handler: Callable[[BrokerMessage], None]) -> FakeConsumer:
        consumer = FakeConsumer(queue, handler)
        self.consumers.append(consumer)
        return consumer


class OutageStore(InMemoryMessageStore):
    """The in-memory store, failing every commit while ``down``."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.failed_commits = 0

    def commit_batch(
        self, requests: Sequence[PersistRequest], known_last_seq: Mapping[str, int]
    ) -> Deferred[Assignment]:
        if self.down:
            self.failed_commits += 1
            return fail(ConnectionError("the database is down"))
        return super().commit_batch(requests, known_last_seq)


class PickyStore(OutageStore):
    """A store with a column limit: it refuses (at ``check``) message 1002, as MariaDB refuses an over-long value."""

    def check(self, request: PersistRequest) -> None:
        if request.msg_id == 1002:
            raise GochatError(ErrorCode.BAD_REQUEST, "message 1002 cannot be stored: body is too long")


def request(n: int, kind: str = MessageKind.TEXT, ref_seq: int = 0) -> PersistRequest:
    return PersistRequest(
        msg_id=1000 + n,
        conv="d:1:2",
        sender_id=1,
        sender="alice",
        client_msg_id=f"c-{n}",
        body=f"message {n}",
        ts=n,
        participants=(1, 2),
        origin_gateway="g",
        origin_session="s",
        kind=kind,
        ref_seq=ref_seq,
    )


def delivery(n: int, kind: str = MessageKind.TEXT, ref_seq: int = 0) -> BrokerMessage:
    return BrokerMessage(
        body=encode_request(request(n, kind, ref_seq), "reply.queue"),
        delivery_tag=n,
        redelivered=False,
        routing_key="gochat.persist",
        generation=1,
    )


def reply_message(body: bytes, tag: int) -> BrokerMessage:
    return BrokerMessage(body=body, delivery_tag=tag, redelivered=False, routing_key="reply.queue", generation=1)


class CodecTests(SynchronousTestCase):
    """A persist request survives its RabbitMQ body exactly, kind and ref_seq included."""

    def test_round_trip(self) -> None:
        for original in (
            request(1),
            request(2, MessageKind.EDIT, 1),
            request(3, MessageKind.RECALL, 2),
            request(4, MessageKind.MEMBER),
            PersistRequest(
                9, "g:7", 1, "alice", "c-\N{SNOWMAN}", "h\u00e9llo \N{GRINNING FACE}", 5, (1, 2, 3), "g", "s"
            ),
        ):
            body = encode_request(original, "reply.queue")
            decoded, reply_to = decode_request(body)
            self.assertEqual((decoded, reply_to), (original, "reply.queue"))
            self.assertEqual(encode_request(decoded, reply_to), body, "byte for byte")

    def test_a_body_without_a_kind_is_text(self) -> None:
        """A request queued by a logic process that knew no kinds is stored as text."""
        body = pb.PersistRequest(msg_id=5, conv="d:1:2", sender_id=1, body="hi", reply_to="r").SerializeToString()
        decoded, _ = decode_request(body)
        self.assertEqual((decoded.kind, decoded.ref_seq), (MessageKind.TEXT, 0))

    def test_garbage(self) -> None:
        with self.assertRaises(ValueError):
            decode_request(b"\xff\xff\xff")


class KindRoundTripTests(SynchronousTestCase):
    """An edit goes through the queue, the worker and the reply and comes back to its submitter as an edit."""

    def test_the_submitter_gets_the_stored_kind_and_ref_seq(self) -> None:
        clock = Clock()
        bus = FakeBus()
        store = InMemoryMessageStore()
        consumer = BrokerPersistConsumer(bus, store, clock, POLICY, lambda items: None)  # type: ignore[arg-type]
        queue = BrokerPersistQueue(bus, clock, "reply.queue")  # type: ignore[arg-type]
        consumer.startService()
        queue.startService()
        persist_consumer, reply_consumer = bus.consumers
        results: list[StoredMessage] = []
        queue.submit(request(1)).addCallback(results.append)
        queue.submit(request(2, MessageKind.EDIT, 1)).addCallback(results.append)
        for tag, (queue_name, body) in enumerate(bus.published, start=1):
            self.assertEqual(queue_name, "gochat.persist")
            persist_consumer.handler(
                BrokerMessage(body=body, delivery_tag=tag, redelivered=False, routing_key=queue_name, generation=1)
            )
        del bus.published[:]
        clock.advance(POLICY.max_delay)
        self.assertEqual([queue_name for queue_name, _ in bus.published], ["reply.queue"] * 2)
        for tag, (_, body) in enumerate(bus.published, start=1):
            reply_consumer.handler(reply_message(body, tag))
        self.assertEqual([(m.seq, m.kind, m.ref_seq) for m in results], [(1, "text", 0), (2, "edit", 1)])
        self.assertEqual(results, [store.messages[1001], store.messages[1002]])


class ConsumerDrainTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.bus = FakeBus()
        self.store = OutageStore()
        self.committed: list[Any] = []
        self.consumer = BrokerPersistConsumer(
            self.bus,  # type: ignore[arg-type]
            self.store,
            self.clock,
            POLICY,
            self.committed.extend,
            drain_timeout=10.0,
        )
        self.consumer.startService()
        (self.broker,) = self.bus.consumers

    def stopped(self) -> list[object]:
        results: list[object] = []
        self.consumer.stopService().addBoth(results.append)
        return results

    def test_stop_commits_and_acks_what_was_taken(self) -> None:
        for n in (1, 2, 3):
            self.broker.handler(delivery(n))
        results = self.stopped()
        self.assertEqual(results, [None])
        self.assertTrue(self.broker.cancelled)
        self.assertEqual(self.broker.acked, [(3, True)])
        self.assertEqual([queue for queue, _ in self.bus.published], ["reply.queue"] * 3)
        self.assertEqual(len(self.store.messages), 3)

    def test_a_reply_to_a_gone_submitter_is_a_warning_and_the_batch_is_acked(self) -> None:
        """After a crash the broker redelivers requests whose submitter (and reply queue) died with it."""
        self.bus.refuse = GochatError(ErrorCode.UNAVAILABLE, "no queue 'reply.queue' on RabbitMQ (312 NO_ROUTE)")
        self.broker.handler(delivery(1))
        with capturedLogs() as events:
            self.clock.advance(POLICY.max_delay)
        self.assertEqual(self.broker.acked, [(1, True)])
        (warning,) = [e for e in events if e["log_level"] >= LogLevel.warn]
        self.assertEqual(warning["log_level"], LogLevel.warn)
        self.assertIn("NO_ROUTE", warning["reason"])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_stop_while_the_store_is_down_gives_up_after_the_drain_timeout(self) -> None:
        """The process can stop; nothing is acked, so the broker redelivers it all to the next consumer."""
        self.store.down = True
        for n in (1, 2):
            self.broker.handler(delivery(n))
        self.clock.advance(POLICY.max_delay)
        self.assertEqual(self.store.failed_commits, 1)
        results = self.stopped()
        self.assertEqual(results, [])
        self.clock.pump([1.0] * 9)
        self.assertEqual(results, [])
        self.clock.advance(1.1)
        self.assertEqual(results, [None])
        self.assertTrue(self.broker.cancelled)
        self.assertGreater(self.store.failed_commits, 5)
        self.assertEqual(self.broker.acked, [])
        self.assertEqual(self.bus.published, [])
        self.assertEqual(self.store.messages, {})
        self.flushLoggedErrors(ConnectionError)

    def test_store_back_within_the_drain_timeout_commits_and_acks(self) -> None:
        self.store.down = True
        self.broker.handler(delivery(1))
        self.clock.advance(POLICY.max_delay)
        results = self.stopped()
        self.clock.advance(3.0)
        self.store.down = False
        self.clock.pump([1.0] * 3)
        self.assertEqual(results, [None])
        self.assertEqual(self.broker.acked, [(1, True)])
        self.assertEqual(len(self.store.messages), 1)
        self.flushLoggedErrors(ConnectionError)

    def test_a_late_commit_after_giving_up_is_harmless(self) -> None:
        self.store.down = True
        self.broker.handler(delivery(1))
        self.clock.advance(POLICY.max_delay)
        results = self.stopped()
        self.clock.pump([1.0] * 11)
        self.assertEqual(results, [None])
        self.store.down = False
        self.clock.pump([1.0] * 2)
        self.assertEqual(len(self.store.messages), 1)
        self.assertEqual(self.broker.acked, [])  # let go of: the broker redelivers it, and it is found stored
        self.flushLoggedErrors(ConnectionError)


class QueueStopTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.bus = FakeBus()
        self.queue = BrokerPersistQueue(
            self.bus,  # type: ignore[arg-type]
            self.clock,
            "reply.queue",
            reply_timeout=30.0,
        )
        self.queue.startService()

    def test_stop_fails_submissions_still_waiting_for_their_reply(self) -> None:
        """Their replies could only come to the reply consumer that stops: fail them now, the client retries."""
        outcomes: list[StoredMessage | GochatError] = []
        for n in (1, 2):
            d = self.queue.submit(request(n))
            d.addCallbacks(outcomes.append, lambda f: outcomes.append(f.value))
        self.assertEqual(len(self.bus.published), 2)
        self.assertEqual(outcomes, [])
        self.queue.stopService()
        self.assertEqual([type(o) for o in outcomes], [GochatError, GochatError])
        self.assertEqual({o.code for o in outcomes if isinstance(o, GochatError)}, {ErrorCode.UNAVAILABLE})
        (reply_consumer,) = self.bus.consumers
        self.assertTrue(reply_consumer.cancelled)
        self.clock.advance(60.0)  # the sweeper is stopped and nothing fires twice


class PoisonTests(SynchronousTestCase):
    def test_a_request_the_store_refuses_is_dropped_alone(self) -> None:
        """It is nacked without requeue, logged, and the requests around it commit and are acked as usual."""
        clock, bus = Clock(), FakeBus()
        store = PickyStore()
        consumer = BrokerPersistConsumer(bus, store, clock, POLICY, lambda items: None)  # type: ignore[arg-type]
        consumer.startService()
        (broker,) = bus.consumers
        for n in (1, 2, 3):
            broker.handler(delivery(n))
        clock.advance(POLICY.max_delay)
        self.assertEqual(broker.nacked, [(2, False, False)])
        self.assertEqual(broker.acked, [(3, True)])
        self.assertEqual(sorted(store.messages), [1001, 1003])
        self.assertEqual(len(self.flushLoggedErrors()), 0)
