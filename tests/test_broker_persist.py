"""The broker persist path: batches per turn, bodies with every field, acks after commit, a bounded stop.

Against a fake bus (what was published, acked, nacked, cancelled) and the
in-memory store, on a :class:`~twisted.internet.task.Clock`; the real
broker is exercised in ``tests/integration``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from gochat.errors import ErrorCode, GochatError
from gochat.grpc_bridge import message_from_pb, message_to_pb
from gochat.logic.amqp import BrokerMessage
from gochat.logic.batch_writer import BatchPolicy
from gochat.logic.broker_persist import (
    BrokerPersistConsumer,
    BrokerPersistQueue,
    decode_replies,
    decode_request,
    decode_requests,
    encode_batch,
    encode_request,
    request_to_pb,
)
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


def batch_message(tag: int, *requests: PersistRequest, reply_to: str = "reply.queue") -> BrokerMessage:
    """One broker message carrying *requests* as a PersistBatch, as a logic process publishes them now."""
    body = pb.PersistBatch(requests=[request_to_pb(r, reply_to) for r in requests]).SerializeToString()
    return BrokerMessage(body=body, delivery_tag=tag, redelivered=False, routing_key="gochat.persist", generation=1)


def replies_in(body: bytes) -> list[int]:
    return [reply.request_msg_id for reply in decode_replies(body)]


class BatchCodecTests(SynchronousTestCase):
    """Batches of requests and replies, and the lone bodies from before batches, which still decode."""

    def test_a_batch_round_trips_in_order(self) -> None:
        originals = [request(1), request(2, MessageKind.EDIT, 1), request(3)]
        body = encode_batch([request_to_pb(r, "reply.queue") for r in originals])
        self.assertEqual(decode_requests(body), [(r, "reply.queue") for r in originals])

    def test_a_lone_request_still_decodes(self) -> None:
        """A PersistRequest body left in the durable queue by a logic process from before batches."""
        body = encode_request(request(1), "reply.queue")
        self.assertEqual(list(pb.PersistBatch.FromString(body).requests), [], "a batch of none")
        self.assertEqual(decode_requests(body), [(request(1), "reply.queue")])

    def test_a_lone_reply_still_decodes(self) -> None:
        stored = StoredMessage(1001, "d:1:2", 1, 1, "alice", "c-1", "hi", 1)
        lone = pb.PersistReply(request_msg_id=1001, message=message_to_pb(stored)).SerializeToString()
        self.assertEqual(list(pb.PersistReplyBatch.FromString(lone).replies), [])
        (reply,) = decode_replies(lone)
        self.assertEqual((reply.request_msg_id, message_from_pb(reply.message)), (1001, stored))

    def test_garbage(self) -> None:
        for decode in (decode_requests, decode_replies):
            with self.assertRaises(ValueError):
                decode(b"\xff\xff\xff")


class SubmitBatchingTests(SynchronousTestCase):
    """The requests submitted during one reactor turn leave as one PersistBatch."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.bus = FakeBus()
        self.queue = BrokerPersistQueue(self.bus, self.clock, "reply.queue")  # type: ignore[arg-type]
        self.queue.startService()

    def test_one_publish_per_turn(self) -> None:
        for n in (1, 2, 3):
            self.queue.submit(request(n))
        self.assertEqual(self.bus.published, [])
        self.clock.advance(0)
        ((queue_name, body),) = self.bus.published
        self.assertEqual(queue_name, "gochat.persist")
        self.assertEqual(decode_requests(body), [(request(n), "reply.queue") for n in (1, 2, 3)])
        self.queue.submit(request(4))
        self.clock.advance(0)
        self.assertEqual(decode_requests(self.bus.published[1][1]), [(request(4), "reply.queue")])

    def test_a_long_turn_is_split_by_count_and_bytes(self) -> None:
        queue = BrokerPersistQueue(  # type: ignore[arg-type]
            self.bus, self.clock, "reply.queue", max_batch=2, max_batch_bytes=10_000
        )
        for n in range(1, 6):
            queue.submit(request(n))
        self.clock.advance(0)
        self.assertEqual([len(decode_requests(body)) for _, body in self.bus.published], [2, 2, 1])
        del self.bus.published[:]
        queue = BrokerPersistQueue(  # type: ignore[arg-type]
            self.bus, self.clock, "reply.queue", max_batch=100, max_batch_bytes=5_000
        )
        big = [replace(request(n), body="x" * 2000) for n in range(1, 6)]
        for r in big:
            queue.submit(r)
        self.clock.advance(0)
        self.assertEqual([len(decode_requests(body)) for _, body in self.bus.published], [2, 2, 1])
        self.assertTrue(all(len(body) <= 5_000 for _, body in self.bus.published))
        decoded = [r for _, body in self.bus.published for r, _ in decode_requests(body)]
        self.assertEqual(decoded, big)

    def test_a_failed_publish_fails_every_submitter_of_its_batch(self) -> None:
        outcomes: list[object] = []
        self.bus.refuse = GochatError(ErrorCode.UNAVAILABLE, "not connected to RabbitMQ")
        for n in (1, 2):
            self.queue.submit(request(n)).addErrback(lambda f: outcomes.append(f.value))
        self.clock.advance(0)
        self.assertEqual(outcomes, [self.bus.refuse] * 2)
        self.bus.refuse = None
        self.queue.submit(request(3)).addErrback(lambda f: outcomes.append(f.value))
        self.clock.advance(0)
        self.clock.pump([1.0] * 31)  # nothing of the failed batch was left waiting to time out: one more, 3's
        self.assertEqual(len(outcomes), 3)

    def test_a_publish_that_raises_fails_its_batch(self) -> None:
        def publish(queue: str, body: bytes) -> Deferred[None]:
            raise ValueError("queue name too long")

        self.bus.publish = publish  # type: ignore[method-assign]
        outcomes: list[object] = []
        self.queue.submit(request(1)).addErrback(lambda f: outcomes.append(f.value))
        self.clock.advance(0)
        (error,) = outcomes
        self.assertIsInstance(error, GochatError)
        assert isinstance(error, GochatError)
        self.assertEqual(error.code, ErrorCode.UNAVAILABLE)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_one_reply_batch_answers_every_submitter(self) -> None:
        results: list[StoredMessage] = []
        for n in (1, 2, 3):
            self.queue.submit(request(n)).addCallback(results.append)
        self.clock.advance(0)
        stored = [StoredMessage(1000 + n, "d:1:2", n, 1, "alice", f"c-{n}", f"message {n}", n) for n in (1, 2, 3)]
        body = pb.PersistReplyBatch(
            replies=[pb.PersistReply(request_msg_id=m.msg_id, message=message_to_pb(m)) for m in stored]
        ).SerializeToString()
        (reply_consumer,) = self.bus.consumers
        reply_consumer.handler(reply_message(body, 7))
        self.assertEqual(results, stored)
        self.assertEqual(reply_consumer.acked, [(7, False)])

    def test_a_lone_reply_answers_its_submitter(self) -> None:
        """A reply from a persist consumer of before batches."""
        results: list[StoredMessage] = []
        self.queue.submit(request(1)).addCallback(results.append)
        self.clock.advance(0)
        stored = StoredMessage(1001, "d:1:2", 1, 1, "alice", "c-1", "message 1", 1)
        body = pb.PersistReply(request_msg_id=1001, message=message_to_pb(stored)).SerializeToString()
        self.bus.consumers[0].handler(reply_message(body, 1))
        self.assertEqual(results, [stored])

    def test_stop_before_the_flush_publishes_nothing(self) -> None:
        outcomes: list[object] = []
        self.queue.submit(request(1)).addErrback(lambda f: outcomes.append(f.value))
        self.queue.stopService()
        self.clock.advance(0)
        self.assertEqual(self.bus.published, [])
        self.assertEqual([type(o) for o in outcomes], [GochatError])


class ConsumerBatchTests(SynchronousTestCase):
    """A broker message carries many requests: it is acked once all of them have committed, and only then."""

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
        )
        self.consumer.startService()
        (self.broker,) = self.bus.consumers

    def test_a_batch_commits_and_is_acked_once(self) -> None:
        self.broker.handler(batch_message(1, request(1), request(2), request(3)))
        self.clock.advance(POLICY.max_delay)
        self.assertEqual(sorted(self.store.messages), [1001, 1002, 1003])
        self.assertEqual(self.broker.acked, [(1, True)])
        self.assertEqual(len(self.committed), 3)

    def test_one_reply_batch_per_reply_queue(self) -> None:
        self.broker.handler(batch_message(1, request(1), request(2), reply_to="reply.a"))
        self.broker.handler(batch_message(2, request(3), reply_to="reply.b"))
        self.broker.handler(batch_message(3, request(4), reply_to="reply.a"))
        self.clock.advance(POLICY.max_delay)
        self.assertEqual(
            [(queue, replies_in(body)) for queue, body in self.bus.published],
            [("reply.a", [1001, 1002, 1004]), ("reply.b", [1003])],
        )
        self.assertEqual(self.broker.acked, [(3, True)])

    def test_a_message_split_over_two_worker_batches_is_acked_after_the_second(self) -> None:
        """The worker writes 10 at a time here: the ack waits for the 15th request of the message, not the 10th."""
        self.store.down = True
        self.broker.handler(batch_message(1, *(request(n) for n in range(1, 16))))
        self.broker.handler(batch_message(2, request(16)))
        self.store.down = False
        self.clock.advance(POLICY.retry_initial)  # the first ten commit
        self.assertEqual(len(self.store.messages), 10)
        self.assertEqual(self.broker.acked, [])
        self.clock.advance(POLICY.max_delay)
        self.assertEqual(len(self.store.messages), 16)
        self.assertEqual(self.broker.acked, [(2, True)])
        self.flushLoggedErrors(ConnectionError)

    def test_a_refused_request_is_dropped_alone_and_its_batch_goes_on(self) -> None:
        store = PickyStore()
        consumer = BrokerPersistConsumer(self.bus, store, self.clock, POLICY, lambda items: None)  # type: ignore[arg-type]
        consumer.startService()
        broker = self.bus.consumers[-1]
        with capturedLogs() as events:
            broker.handler(batch_message(1, request(1), request(2), request(3)))
            broker.handler(batch_message(2, request(2)))
        self.clock.advance(POLICY.max_delay)
        self.assertEqual(sorted(store.messages), [1001, 1003])
        self.assertEqual(broker.nacked, [(2, False, False)], "a message with nothing else in it is dropped")
        self.assertEqual(broker.acked, [(1, True)])
        self.assertEqual(len([e for e in events if e["log_level"] == LogLevel.error]), 2)

    def test_a_lone_request_body_from_before_batches(self) -> None:
        self.broker.handler(delivery(1))
        self.broker.handler(batch_message(2, request(2), request(3)))
        self.clock.advance(POLICY.max_delay)
        self.assertEqual([m.seq for m in self.store.messages.values()], [1, 2, 3])
        self.assertEqual(self.broker.acked, [(2, True)])

    def test_an_undecodable_body_is_dropped(self) -> None:
        with capturedLogs():
            self.broker.handler(reply_message(b"\xff\xff\xff", 1))
        self.assertEqual(self.broker.nacked, [(1, False, False)])

    def test_a_full_backlog_holds_messages_whole_and_in_order(self) -> None:
        """Nothing is requeued (which would reorder, and spin while the store is down); what does not fit waits.

        The backlog takes 12 requests here (besides the 10 being written). The
        first message's 12 go in, the second message's 12 only in part: the
        rest of it, and the third message after it, wait for the worker to
        make room. Nothing is acked before all of a message has committed.
        """
        policy = BatchPolicy(max_batch=10, max_delay=0.005, max_pending=12, retry_initial=0.05, retry_max=1.0)
        store = OutageStore()
        store.down = True
        consumer = BrokerPersistConsumer(self.bus, store, self.clock, policy, lambda items: None)  # type: ignore[arg-type]
        consumer.startService()
        broker = self.bus.consumers[-1]
        broker.handler(batch_message(1, *(request(n) for n in range(1, 13))))
        broker.handler(batch_message(2, *(request(n) for n in range(13, 25))))
        broker.handler(batch_message(3, request(25)))
        self.clock.pump([0.05] * 20)  # the database stays down
        self.assertEqual((broker.acked, broker.nacked), ([], []))
        store.down = False
        self.clock.pump([0.5] * 10)
        self.assertEqual([m.seq for m in sorted(store.messages.values(), key=lambda m: m.msg_id)], list(range(1, 26)))
        self.assertEqual(broker.nacked, [])
        self.assertEqual(broker.acked, [(1, True), (3, True)])
        self.flushLoggedErrors(ConnectionError)

    def test_stop_leaves_what_is_held_unacked(self) -> None:
        """A message held for room, or partly in the worker, is not acked: the broker redelivers it whole."""
        policy = BatchPolicy(max_batch=10, max_delay=0.005, max_pending=5, retry_initial=0.05, retry_max=1.0)
        store = OutageStore()
        store.down = True
        consumer = BrokerPersistConsumer(  # type: ignore[arg-type]
            self.bus, store, self.clock, policy, lambda items: None, drain_timeout=10.0
        )
        consumer.startService()
        broker = self.bus.consumers[-1]
        broker.handler(batch_message(1, *(request(n) for n in range(1, 4))))
        broker.handler(batch_message(2, *(request(n) for n in range(4, 10))))
        broker.handler(batch_message(3, request(10)))
        self.clock.advance(policy.max_delay)
        results: list[object] = []
        consumer.stopService().addBoth(results.append)
        store.down = False
        self.clock.pump([0.5] * 4)
        self.assertEqual(results, [None])
        self.assertEqual(broker.acked, [(1, True)])
        self.assertEqual(sorted(store.messages), list(range(1001, 1006)), "message 2 only in part")
        self.flushLoggedErrors(ConnectionError)


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
        clock.advance(0)
        for tag, (queue_name, body) in enumerate(bus.published, start=1):
            self.assertEqual(queue_name, "gochat.persist")
            persist_consumer.handler(
                BrokerMessage(body=body, delivery_tag=tag, redelivered=False, routing_key=queue_name, generation=1)
            )
        del bus.published[:]
        clock.advance(POLICY.max_delay)
        self.assertEqual([queue_name for queue_name, _ in bus.published], ["reply.queue"])
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
        ((queue, body),) = self.bus.published
        self.assertEqual((queue, replies_in(body)), ("reply.queue", [1001, 1002, 1003]))
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
        self.clock.advance(0)
        self.assertEqual(len(self.bus.published), 1)
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
