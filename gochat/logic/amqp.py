"""RabbitMQ over txamqp 0.8.2: durable queues, publisher confirms, acked consumers, reconnection.

:class:`AmqpBus` is an ``IService``. A :class:`~twisted.application.internet.ClientService`
keeps one connection to the broker, reconnecting with exponential backoff; on every
connection the bus opens a publishing channel, declares its queues, turns on publisher
confirms and subscribes every live :class:`Consumer` again, each on a channel of its own.
:meth:`AmqpBus.publish` fires only once the broker has confirmed the message and fails
with ``unavailable`` when it cannot be sure the broker has it (not connected, nack,
unroutable, connection lost before the confirm); it never waits for a connection, so
callers decide when to retry. Deliveries reach a consumer's handler on the reactor thread
in delivery order, stamped with the connection (``generation``) they came on; acks for an
older connection are dropped, since the broker requeued those messages when it went.

txamqp is used for its spec loader, channels and handshake; the wire itself is handled
here, because txamqp 0.8.2 cannot carry binary bodies:

- its codec decodes every ``longstr`` *opportunistically*: ``Codec.dec_str`` returns
  ``str`` when the bytes happen to be valid UTF-8 and ``bytes`` otherwise, and body frames
  are decoded as ``longstr`` (``connection.Body.decode``), frame by frame;
- ``protocol.read_content`` gathers a body in a ``StringIO`` and, at the first ``bytes``
  frame, *replaces* it with a fresh ``BytesIO``, dropping what it had: a 300,001-byte body
  whose last frame holds a 0xff byte comes out as that last frame's 37,873 bytes. It also
  counts characters, not bytes (a multi-frame body of multi-byte UTF-8 overruns into the
  next frame and the connection dies), and an empty body comes out as ``""``;
- its ``encode_table`` knows strings and 32-bit integers only (``True`` goes out as the
  integer 1, which RabbitMQ refuses for ``x-single-active-consumer``) and its
  ``decode_table`` four types (a dead-lettered message's ``x-death`` header would close
  the connection); its string encoder writes the length in characters, not bytes.

So :class:`_AmqpProtocol` encodes and decodes every frame itself with :class:`_Codec`,
assembles content synchronously per channel (a body is its frames' bytes joined, always
``bytes``), hands methods straight to :class:`_Delegate`, which adds the publisher-confirm
handlers txamqp's ``TwistedDelegate`` lacks (``basic.ack``, ``basic.nack``,
``basic.return``), and keeps heartbeats on one periodic timer instead of rescheduling two
timers per frame. Responses to synchronous requests still go through txamqp's channels
(``basic.get`` is not supported: its content would take txamqp's reader).
"""

from __future__ import annotations

import functools
import importlib.resources
import itertools
import os
import platform
import random
import socket
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from io import BytesIO
from typing import Any

import txamqp.spec
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectionClosed, ConnectionDone
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from txamqp.client import Closed, TwistedDelegate
from txamqp.codec import Codec
from txamqp.connection import Body, Frame, Header, Heartbeat, Method
from txamqp.content import Content
from txamqp.message import Message
from txamqp.protocol import AMQClient

from gochat.errors import ErrorCode, GochatError

_log = Logger()

#: RabbitMQ's AMQP 0-9-1 spec with its extensions (confirm.select, basic.nack), from Debian's ``amqp-specs``.
SPEC_RESOURCE = "amqp0-9-1.stripped.extended.xml"

#: Reconnection backoff: first retry after about this many seconds, doubling up to ``RECONNECT_MAX``.
RECONNECT_INITIAL = 0.25
RECONNECT_MAX = 30.0
#: After :meth:`Consumer.cancel`, how long deliveries already handed over may stay unsettled before the
#: consumer's channel is closed anyway (and the broker requeues them).
CANCEL_GRACE = 30.0
#: Publishes waiting for a confirm on one connection before new ones are refused (memory bound).
MAX_UNCONFIRMED = 100_000
#: Largest frame we accept or ask for; RabbitMQ's default.
FRAME_MAX = 131_072
#: Silence, in heartbeat intervals, after which the broker is taken for dead.
MISSED_HEARTBEATS = 3

_FRAME_METHOD = 1
_FRAME_HEADER = 2
_FRAME_BODY = 3
_FRAME_HEARTBEAT = 8
_FRAME_END = b"\xce"
_FRAME_PREFIX = struct.Struct("!BHI")
_PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
_HEARTBEAT_FRAME = _FRAME_PREFIX.pack(_FRAME_HEARTBEAT, 0, 0) + _FRAME_END
_PERSISTENT = 2


@functools.cache
def amqp_spec() -> Any:
    """The loaded AMQP spec shipped in this package (parsed once)."""
    data = importlib.resources.files("gochat.logic").joinpath(SPEC_RESOURCE).read_bytes()
    return txamqp.spec.load_string(data, specfilename=SPEC_RESOURCE)


# Public API.


@dataclass(frozen=True)
class AmqpSettings:
    """Where the broker is and how to talk to it.

    ``heartbeat`` is in seconds (0 takes the broker's proposal). ``connect_timeout``
    bounds the TCP connect, the AMQP handshake plus setup of a new connection, and
    a clean close at stop.
    """

    host: str = "127.0.0.1"
    port: int = 5672
    vhost: str = "/"
    username: str = "guest"
    password: str = "guest"
    heartbeat: int = 10
    connect_timeout: float = 5.0


@dataclass(frozen=True)
class QueueSpec:
    """A queue the bus declares on every connection, e.g. ``arguments={"x-single-active-consumer": True}``."""

    name: str
    durable: bool = True
    arguments: Mapping[str, object] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class BrokerMessage:
    """One delivery. ``generation`` numbers the connection it came on; acks only count on that connection."""

    body: bytes
    delivery_tag: int
    redelivered: bool
    routing_key: str
    generation: int


class Consumer:
    """A subscription to one queue, made by :meth:`AmqpBus.consume`; lives across reconnections until cancelled.

    Ack or nack a message only on the consumer that delivered it.
    """

    def __init__(self, bus: AmqpBus, queue: str, prefetch: int, handler: Callable[[BrokerMessage], None]) -> None:
        self.queue = queue
        self.prefetch = prefetch
        self.cancelled = False
        self._bus = bus
        self._handler = handler

    def ack(self, message: BrokerMessage, multiple: bool = True) -> None:
        """``basic.ack`` *message* (and, with *multiple*, every earlier delivery of this consumer).

        Ignored, logged at debug, when *message* came on a connection that is gone: the
        broker has requeued it already.
        """
        self._bus._settle(self, message, ack=True, multiple=multiple, requeue=False)

    def nack(self, message: BrokerMessage, multiple: bool = True, requeue: bool = True) -> None:
        """``basic.nack`` *message* (and earlier ones with *multiple*); requeued unless *requeue* is false."""
        self._bus._settle(self, message, ack=False, multiple=multiple, requeue=requeue)

    def cancel(self) -> Deferred[None]:
        """Stop deliveries: the handler is not called again, here or after a reconnection.

        Fires once the broker has confirmed the cancel (at once when there is no live
        subscription); never fails. Deliveries already handed over can still be acked
        or nacked, so a drain can finish its batch: the consumer's channel closes once
        none is left unsettled, or ``CANCEL_GRACE`` seconds after the cancel, or when
        the bus stops, and the broker requeues whatever was still unsettled then.
        """
        return self._bus._cancel(self)

    def _deliver(self, message: BrokerMessage) -> None:
        try:
            self._handler(message)
        except Exception:
            _log.failure(
                "handler for queue {queue} failed on delivery {delivery_tag}; the message stays unacked",
                queue=self.queue,
                delivery_tag=message.delivery_tag,
            )


class AmqpBus(Service):
    """Publisher confirms and consumers over one reconnecting RabbitMQ connection."""

    def __init__(self, reactor: IReactorTime, settings: AmqpSettings, queues: Sequence[QueueSpec] = ()) -> None:
        self._reactor = reactor
        self._settings = settings
        self._queues = tuple(queues)
        self._consumers: list[Consumer] = []
        self._session: _Session | None = None
        self._generation = 0
        self._failed_setups = 0
        self._stopping = False
        self._connected_waiters: list[Deferred[None]] = []
        backoff = backoffPolicy(
            initialDelay=RECONNECT_INITIAL / 2,
            maxDelay=RECONNECT_MAX,
            factor=2.0,
            jitter=lambda: random.random() * RECONNECT_INITIAL / 2,
        )
        # ClientService counts failed TCP connects; a connection that comes up but cannot be set
        # up (refused credentials, a queue declared with other arguments) counts here instead.
        self._client = ClientService(
            HostnameEndpoint(reactor, settings.host, settings.port, timeout=settings.connect_timeout),
            _AmqpFactory(self),
            retryPolicy=lambda attempt: backoff(attempt + self._failed_setups),
            clock=reactor,
        )

    @property
    def declared_queues(self) -> frozenset[str]:
        """The names of the queues this bus declares on every connection."""
        return frozenset(spec.name for spec in self._queues)

    # IService.

    def startService(self) -> None:
        """Start connecting; the connection is set up (and set up again after every loss) in the background."""
        super().startService()
        self._stopping = False
        self._client.startService()

    def stopService(self) -> Deferred[None]:
        """Close cleanly: cancel consumers, wait for outstanding confirms, close channels and the connection.

        New publishes are refused at once. The clean part is bounded by
        ``connect_timeout``; after it the connection is dropped. Fires once disconnected.
        """
        super().stopService()
        self._stopping = True
        waiters, self._connected_waiters = self._connected_waiters, []
        for waiter in waiters:
            waiter.errback(GochatError(ErrorCode.SHUTTING_DOWN, "the RabbitMQ bus stopped"))
        return Deferred.fromCoroutine(self._stop())

    # The API.

    def when_connected(self) -> Deferred[None]:
        """Fires once a connection is set up: now if one is, else when the next one is."""
        session = self._session
        if session is not None and session.ready:
            return succeed(None)
        waiter: Deferred[None] = Deferred(self._connected_waiters.remove)
        self._connected_waiters.append(waiter)
        return waiter

    def publish(self, queue: str, body: bytes) -> Deferred[None]:
        """Publish *body* persistently to *queue* (default exchange, ``routing_key=queue``, mandatory).

        Fires once the broker confirms it. Fails with ``unavailable`` at once when not
        connected, and later on ``basic.nack``, when no queue of that name exists, or when
        the connection is lost before the confirm. Raises ``ValueError`` for a queue name
        over 255 bytes.
        """
        session = self._session
        if self._stopping or not self.running:
            return fail(GochatError(ErrorCode.UNAVAILABLE, "the RabbitMQ bus is not running"))
        if session is None or not session.ready:
            return fail(GochatError(ErrorCode.UNAVAILABLE, "not connected to RabbitMQ"))
        if len(session.unconfirmed) >= MAX_UNCONFIRMED:
            return fail(GochatError(ErrorCode.UNAVAILABLE, "RabbitMQ is behind confirming publishes"))
        return session.publish(queue, body)

    def consume(self, queue: str, prefetch: int, handler: Callable[[BrokerMessage], None]) -> Consumer:
        """Subscribe *handler* to *queue*, at most *prefetch* unacked deliveries at a time (0: no limit).

        Subscribes now if connected and again on every reconnection, until cancelled.
        The queue should be one the bus declares (``queues``): a subscription the broker
        refuses is logged and makes the bus reconnect, with backoff while it keeps failing.
        """
        if not 0 <= prefetch <= 0xFFFF:
            raise ValueError(f"prefetch must be 0..65535, not {prefetch}")
        consumer = Consumer(self, queue, prefetch, handler)
        self._consumers.append(consumer)
        session = self._session
        if session is not None and session.ready:
            Deferred.fromCoroutine(self._subscribe(session, consumer)).addErrback(
                self._subscribe_failed, session, consumer
            )
        return consumer

    # Connection life cycle (called by the protocol).

    def _connection_made(self, protocol: _AmqpProtocol) -> None:
        self._generation += 1
        session = _Session(protocol, self._generation)
        protocol.session = session
        self._session = session
        session.setup_timer = self._reactor.callLater(self._settings.connect_timeout, self._setup_timed_out, session)
        Deferred.fromCoroutine(self._setup(session)).addCallbacks(
            self._setup_done, self._setup_failed, callbackArgs=(session,), errbackArgs=(session,)
        )

    async def _setup(self, session: _Session) -> None:
        protocol = session.protocol
        await protocol.authenticate(self._settings.username, self._settings.password, mechanism="PLAIN")
        channel = await session.open_channel()
        for queue in self._queues:
            await channel.queue_declare(queue=queue.name, durable=queue.durable, arguments=dict(queue.arguments))
        await channel.confirm_select(nowait=False)
        session.publish_channel_id = channel.id
        # Consumers added while this runs are picked up too: loop until none is missing.
        while missing := [
            c for c in self._consumers if c not in session.subscriptions and c not in session.subscribing
        ]:
            for consumer in missing:
                await self._subscribe(session, consumer)

    def _setup_done(self, _: None, session: _Session) -> None:
        session.cancel_setup_timer()
        if session.closed:
            return
        session.ready = True
        self._failed_setups = 0
        _log.info(
            "connected to RabbitMQ at {host}:{port} vhost {vhost} (connection {generation})",
            host=self._settings.host,
            port=self._settings.port,
            vhost=self._settings.vhost,
            generation=session.generation,
        )
        waiters, self._connected_waiters = self._connected_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _setup_failed(self, failure: Failure, session: _Session) -> None:
        session.cancel_setup_timer()
        if self._stopping:
            return
        self._failed_setups += 1
        fields: dict[str, Any] = {
            "generation": session.generation,
            "host": self._settings.host,
            "port": self._settings.port,
        }
        reason = _expected_reason(failure)
        if reason is None:
            _log.failure("could not set up connection {generation} to RabbitMQ at {host}:{port}", failure, **fields)
        else:
            _log.error(
                "could not set up connection {generation} to RabbitMQ at {host}:{port}: {reason}; retrying",
                reason=reason,
                **fields,
            )
        session.protocol.transport.abortConnection()

    def _setup_timed_out(self, session: _Session) -> None:
        session.setup_timer = None
        if session.ready or session.closed:
            return
        _log.error(
            "connection {generation} to RabbitMQ not set up within {timeout}s; dropping it",
            generation=session.generation,
            timeout=self._settings.connect_timeout,
        )
        session.protocol.transport.abortConnection()

    def _connection_lost(self, protocol: _AmqpProtocol, reason: Failure) -> None:
        session = protocol.session
        if session is None:
            return
        expected = self._stopping or session.closing
        was_ready = session.ready
        if self._session is session:
            self._session = None
        session.lost()
        if expected:
            _log.info("connection {generation} to RabbitMQ closed", generation=session.generation)
        elif was_ready:
            _log.warn(
                "lost connection {generation} to RabbitMQ ({reason}); reconnecting",
                generation=session.generation,
                reason=reason.getErrorMessage(),
            )

    def _channel_failed(self, protocol: _AmqpProtocol, channel_id: int, code: int, text: str) -> None:
        """The broker closed a channel (an error on it): start over on a new connection."""
        session = protocol.session
        if session is None or session.closed or session.closing or self._stopping:
            return
        _log.error(
            "RabbitMQ closed channel {channel} of connection {generation}: {code} {text}; reconnecting",
            channel=channel_id,
            generation=session.generation,
            code=code,
            text=text,
        )
        protocol.transport.loseConnection()

    def _broker_cancelled(self, protocol: _AmqpProtocol, channel_id: int) -> None:
        """The broker cancelled a consumer (its queue went): reconnect, which declares and subscribes again."""
        session = protocol.session
        if session is None or session.closed or session.closing or self._stopping:
            return
        subscription = session.by_channel.get(channel_id)
        _log.warn(
            "RabbitMQ cancelled the consumer of queue {queue} on connection {generation}; reconnecting",
            queue=subscription.consumer.queue if subscription is not None else "?",
            generation=session.generation,
        )
        protocol.transport.loseConnection()

    # Consumers.

    async def _subscribe(self, session: _Session, consumer: Consumer) -> None:
        session.subscribing.add(consumer)
        try:
            channel = await session.open_channel()
            subscription = _Subscription(consumer, channel, f"gochat.{session.generation}.{channel.id}")
            session.subscriptions[consumer] = subscription
            session.by_channel[channel.id] = subscription
            await channel.basic_qos(prefetch_size=0, prefetch_count=consumer.prefetch, global_=False)
            await channel.basic_consume(queue=consumer.queue, consumer_tag=subscription.tag)
        finally:
            session.subscribing.discard(consumer)
        if consumer.cancelled:
            await self._unsubscribe(session, consumer, close_now=True)

    def _subscribe_failed(self, failure: Failure, session: _Session, consumer: Consumer) -> None:
        if session.closed or self._stopping:
            return
        fields: dict[str, Any] = {"queue": consumer.queue, "generation": session.generation}
        reason = _expected_reason(failure)
        if reason is None:
            _log.failure("could not subscribe to queue {queue} on connection {generation}", failure, **fields)
        else:
            _log.error(
                "could not subscribe to queue {queue} on connection {generation}: {reason}", reason=reason, **fields
            )
        session.protocol.transport.loseConnection()

    async def _unsubscribe(self, session: _Session, consumer: Consumer, close_now: bool) -> None:
        """``basic.cancel`` *consumer*; close its channel now, or once what it was given is settled."""
        subscription = session.subscriptions.get(consumer)
        if subscription is None or subscription.cancelling:
            return
        subscription.cancelling = True
        await subscription.channel.basic_cancel(consumer_tag=subscription.tag)
        subscription.cancel_confirmed = True
        if close_now or not subscription.unsettled:
            await self._close_subscription(session, subscription)
        else:
            subscription.close_timer = self._reactor.callLater(
                CANCEL_GRACE, self._close_subscription_soon, session, subscription
            )

    async def _close_subscription(self, session: _Session, subscription: _Subscription) -> None:
        if subscription.closing:
            return
        subscription.closing = True
        subscription.cancel_close_timer()
        session.by_channel.pop(subscription.channel.id, None)
        try:
            await session.close_channel(subscription.channel)
        finally:
            if session.subscriptions.get(subscription.consumer) is subscription:
                del session.subscriptions[subscription.consumer]
        _log.debug(
            "closed the channel of the cancelled consumer of queue {queue} ({unsettled} unsettled, requeued)",
            queue=subscription.consumer.queue,
            unsettled=subscription.unsettled,
        )

    def _close_subscription_soon(self, session: _Session, subscription: _Subscription) -> None:
        subscription.cancel_close_timer()
        if session.closed:
            return
        d = Deferred.fromCoroutine(self._close_subscription(session, subscription))
        d.addErrback(self._cancel_failed, session, subscription.consumer)

    def _cancel(self, consumer: Consumer) -> Deferred[None]:
        if consumer.cancelled:
            return succeed(None)
        consumer.cancelled = True
        self._consumers.remove(consumer)
        session = self._session
        if session is None or session.closed or consumer in session.subscribing:
            return succeed(None)  # nothing live, or _subscribe unsubscribes once it is done
        d = Deferred.fromCoroutine(self._unsubscribe(session, consumer, close_now=False))
        d.addTimeout(self._settings.connect_timeout, self._reactor)
        d.addErrback(self._cancel_failed, session, consumer)
        return d

    def _cancel_failed(self, failure: Failure, session: _Session, consumer: Consumer) -> None:
        # The broker requeues what the consumer held when the channel or connection goes, so
        # there is nothing to undo; if the connection is still there, drop it to be sure.
        reason = _expected_reason(failure) or failure.getErrorMessage()
        if self._stopping or session.closing or session.closed:
            # The connection closed (or is closing) under the cancel, e.g. a consumer cancelled while
            # the bus stops: that ends the subscription too, and there is nothing left to drop.
            _log.debug(
                "the cancel of the consumer of queue {queue} ended with connection {generation} ({reason})",
                queue=consumer.queue,
                reason=reason,
                generation=session.generation,
            )
            return
        _log.warn(
            "could not cancel the consumer of queue {queue} cleanly ({reason}); dropping connection {generation}",
            queue=consumer.queue,
            reason=reason,
            generation=session.generation,
        )
        session.protocol.transport.loseConnection()

    def _settle(self, consumer: Consumer, message: BrokerMessage, ack: bool, multiple: bool, requeue: bool) -> None:
        session = self._session
        subscription = None
        if session is not None and not session.closed and session.generation == message.generation:
            subscription = session.subscriptions.get(consumer)
        if subscription is None or subscription.closing:
            _log.debug(
                "not settling delivery {delivery_tag} of connection {generation}: it is gone, the broker requeued it",
                delivery_tag=message.delivery_tag,
                generation=message.generation,
            )
            return
        assert session is not None
        channel_id = subscription.channel.id
        if ack:
            session.protocol.send_method(channel_id, "basic.ack", message.delivery_tag, multiple)
        else:
            session.protocol.send_method(channel_id, "basic.nack", message.delivery_tag, multiple, requeue)
        subscription.settle(message.delivery_tag, multiple)
        if subscription.cancel_confirmed and not subscription.unsettled:
            self._close_subscription_soon(session, subscription)

    # Stopping.

    async def _stop(self) -> None:
        session = self._session
        if session is not None and session.ready:
            closing = Deferred.fromCoroutine(self._close(session))
            closing.addTimeout(self._settings.connect_timeout, self._reactor)
            try:
                await closing
            except Exception as e:
                _log.warn(
                    "could not close connection {generation} to RabbitMQ cleanly ({reason}); dropping it",
                    generation=session.generation,
                    reason=str(e) or type(e).__name__,
                )
        await self._client.stopService()

    async def _close(self, session: _Session) -> None:
        session.closing = True
        for subscription in list(session.subscriptions.values()):
            if not subscription.cancelling:
                await self._unsubscribe(session, subscription.consumer, close_now=True)
            elif subscription.cancel_confirmed:
                await self._close_subscription(session, subscription)
        await session.drained()
        publish_channel = session.protocol.channels.get(session.publish_channel_id)
        if publish_channel is not None:
            await session.close_channel(publish_channel)
        await session.protocol.channel_now(0).connection_close(
            reply_code=200, reply_text="gochat is stopping", class_id=0, method_id=0
        )


class _Subscription:
    """A consumer's channel on one connection, and how many of its deliveries are not settled yet.

    Delivery tags on a channel run 1, 2, 3...; everything up to ``_settled_through``
    is settled, plus the single tags in ``_settled_above``.
    """

    def __init__(self, consumer: Consumer, channel: Any, tag: str) -> None:
        self.consumer = consumer
        self.channel = channel
        self.tag = tag
        self.delivered = 0
        self.cancelling = False
        self.cancel_confirmed = False
        self.closing = False
        self.close_timer: IDelayedCall | None = None
        self._settled_through = 0
        self._settled_above: set[int] = set()

    @property
    def unsettled(self) -> int:
        return self.delivered - self._settled_through - len(self._settled_above)

    def settle(self, tag: int, multiple: bool) -> None:
        if multiple:
            through = self.delivered if tag == 0 else tag
            if through > self._settled_through:
                self._settled_through = through
                self._settled_above = {t for t in self._settled_above if t > through}
        elif tag > self._settled_through:
            self._settled_above.add(tag)
        while self._settled_through + 1 in self._settled_above:
            self._settled_through += 1
            self._settled_above.remove(self._settled_through)

    def cancel_close_timer(self) -> None:
        if self.close_timer is not None and self.close_timer.active():
            self.close_timer.cancel()
        self.close_timer = None


class _Session:
    """One AMQP connection and what lives on it: the publishing channel with its unconfirmed publishes, and a
    channel per consumer."""

    def __init__(self, protocol: _AmqpProtocol, generation: int) -> None:
        self.protocol = protocol
        self.generation = generation
        self.ready = False
        self.closed = False
        self.closing = False
        self.setup_timer: IDelayedCall | None = None
        self.publish_channel_id = 0
        self.unconfirmed: dict[int, Deferred[None]] = {}
        self.subscriptions: dict[Consumer, _Subscription] = {}
        self.by_channel: dict[int, _Subscription] = {}
        self.subscribing: set[Consumer] = set()
        self._next_tag = 1
        self._next_channel_id = 1
        self._free_channel_ids: list[int] = []
        self._drain_waiters: list[Deferred[None]] = []

    def cancel_setup_timer(self) -> None:
        if self.setup_timer is not None and self.setup_timer.active():
            self.setup_timer.cancel()
        self.setup_timer = None

    async def open_channel(self) -> Any:
        if self._free_channel_ids:
            channel_id = self._free_channel_ids.pop()
        else:
            channel_id = self._next_channel_id
            self._next_channel_id += 1
        if channel_id > self.protocol.channel_max:
            raise GochatError(ErrorCode.UNAVAILABLE, f"out of AMQP channels ({self.protocol.channel_max})")
        channel = self.protocol.channel_now(channel_id)
        await channel.channel_open()
        return channel

    async def close_channel(self, channel: Any) -> None:
        try:
            await channel.channel_close(reply_code=200, reply_text="done", class_id=0, method_id=0)
        finally:
            if self.protocol.forget_channel(channel) and not self.closed:
                self._free_channel_ids.append(channel.id)

    def publish(self, queue: str, body: bytes) -> Deferred[None]:
        tag = self._next_tag
        frames = self.protocol.publish_frames(
            self.publish_channel_id, queue, body, {"delivery-mode": _PERSISTENT, "message-id": str(tag)}
        )
        self._next_tag += 1

        def cancelled(_: Deferred[None]) -> None:
            # The caller gave up waiting; the broker may still have it.
            self.unconfirmed.pop(tag, None)
            self._check_drained()

        confirmed: Deferred[None] = Deferred(cancelled)
        self.unconfirmed[tag] = confirmed
        self.protocol.transport.write(frames)
        return confirmed

    def confirmed(self, channel_id: int, tag: int, multiple: bool, ok: bool) -> None:
        """``basic.ack`` (*ok*) or ``basic.nack`` from the broker for publishes up to *tag* (*multiple*) or *tag*."""
        if channel_id != self.publish_channel_id:
            return
        if multiple:
            tags = list(self.unconfirmed) if tag == 0 else list(itertools.takewhile(tag.__ge__, self.unconfirmed))
        else:
            tags = [tag] if tag in self.unconfirmed else []
        waiters = [self.unconfirmed.pop(t) for t in tags]
        for waiter in waiters:
            if ok:
                waiter.callback(None)
            else:
                waiter.errback(GochatError(ErrorCode.UNAVAILABLE, "RabbitMQ refused the message (basic.nack)"))
        self._check_drained()

    def returned(self, message: Any) -> None:
        """``basic.return``: the broker had no queue for a publish; it confirms it next, so fail it now."""
        try:
            tag = int(message.content.properties["message-id"])
        except (KeyError, ValueError):
            _log.warn("RabbitMQ returned a message this bus did not publish: {reply}", reply=message.reply_text)
            return
        waiter = self.unconfirmed.pop(tag, None)
        if waiter is not None:
            waiter.errback(
                GochatError(
                    ErrorCode.UNAVAILABLE,
                    f"no queue {message.routing_key!r} on RabbitMQ ({message.reply_code} {message.reply_text})",
                )
            )
        self._check_drained()

    def deliver(self, channel_id: int, message: Any) -> None:
        subscription = self.by_channel.get(channel_id)
        if subscription is None:
            return  # its channel is closing: requeued by the broker when it is closed
        tag = message.delivery_tag
        subscription.delivered = tag
        consumer = subscription.consumer
        if consumer.cancelled:  # sent before the broker saw our basic.cancel: give it back now
            self.protocol.send_method(channel_id, "basic.nack", tag, False, True)
            subscription.settle(tag, multiple=False)
            return
        consumer._deliver(
            BrokerMessage(
                body=message.content.body,
                delivery_tag=message.delivery_tag,
                redelivered=message.redelivered,
                routing_key=message.routing_key,
                generation=self.generation,
            )
        )

    def drained(self) -> Deferred[None]:
        """Fires once no publish waits for a confirm."""
        if not self.unconfirmed:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._drain_waiters.append(waiter)
        return waiter

    def _check_drained(self) -> None:
        if not self.unconfirmed and self._drain_waiters:
            waiters, self._drain_waiters = self._drain_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def lost(self) -> None:
        self.closed = True
        self.ready = False
        self.cancel_setup_timer()
        for subscription in self.subscriptions.values():
            subscription.cancel_close_timer()
        waiters = list(self.unconfirmed.values())
        self.unconfirmed.clear()
        for waiter in waiters:
            waiter.errback(
                GochatError(ErrorCode.UNAVAILABLE, "connection to RabbitMQ lost before the broker confirmed")
            )
        self._check_drained()


def _expected_reason(failure: Failure) -> str | None:
    """One line on a failure that is the broker's or the network's doing; ``None`` for anything else (a bug)."""
    error = failure.value
    if isinstance(error, Closed):
        reason = error.args[0] if error.args else None
        if isinstance(reason, Failure):
            return reason.getErrorMessage()
        if isinstance(reason, Message):  # the broker's channel.close or connection.close
            return f"{reason.reply_code} {reason.reply_text}"
        return str(reason)
    if isinstance(error, GochatError | ConnectionClosed | CancelledError | DeferredTimeoutError):
        return str(error) or type(error).__name__
    return None


# The wire.


class _ProtocolError(Exception):
    """The broker sent something that is not AMQP 0-9-1 as we know it."""


_NUMBERS = {
    b"b": struct.Struct("!b"),
    b"B": struct.Struct("!B"),
    b"s": struct.Struct("!h"),
    b"u": struct.Struct("!H"),
    b"I": struct.Struct("!i"),
    b"i": struct.Struct("!I"),
    b"l": struct.Struct("!q"),
    b"L": struct.Struct("!Q"),
    b"f": struct.Struct("!f"),
    b"d": struct.Struct("!d"),
    b"T": struct.Struct("!Q"),
}


class _Codec(Codec):  # type: ignore[misc]
    """txamqp's codec with strings measured in bytes, ``longstr`` always ``bytes``, ``shortstr`` always ``str``,
    and field tables of every type RabbitMQ uses (``S`` values come out as ``str``, ``x`` as ``bytes``)."""

    def __init__(self, data: bytes = b"") -> None:
        super().__init__(BytesIO(data))

    def value(self) -> bytes:
        self.flush()
        result: bytes = self.stream.getvalue()
        return result

    def read(self, n: int) -> bytes:
        data: bytes = self.stream.read(n)
        if len(data) != n:
            raise _ProtocolError(f"truncated field: wanted {n} bytes, got {len(data)}")
        self.nread += n
        return data

    def encode_shortstr(self, s: str | bytes) -> None:
        data = s.encode() if isinstance(s, str) else s
        if len(data) > 0xFF:
            raise ValueError(f"AMQP short strings hold 255 bytes, not {len(data)}: {data[:40]!r}...")
        self.pack("!B", len(data))
        self.write(data)

    def decode_shortstr(self) -> str:
        return self.read(self.unpack("!B")).decode("utf-8", "surrogateescape")

    def encode_longstr(self, s: str | bytes | Mapping[str, object]) -> None:
        if isinstance(s, Mapping):  # txamqp's AMQPLAIN response is a table in a longstr
            self.encode_table(s)
            return
        data = s.encode() if isinstance(s, str) else s
        self.pack("!L", len(data))
        self.write(data)

    def decode_longstr(self) -> bytes:
        return self.read(self.unpack("!L"))

    def encode_table(self, table: Mapping[str, object]) -> None:
        inner = _Codec()
        for key, value in table.items():
            inner.encode_shortstr(key)
            inner.encode_field(value)
        self.encode_longstr(inner.value())

    def decode_table(self) -> dict[str, object]:
        end = self.unpack("!L") + self.nread
        table: dict[str, object] = {}
        while self.nread < end:
            key = self.decode_shortstr()
            table[key] = self.decode_field()
        return table

    def encode_field(self, value: object) -> None:
        if value is None:
            self.write(b"V")
        elif isinstance(value, bool):
            self.write(b"t")
            self.pack("!B", value)
        elif isinstance(value, int):
            if -(2**31) <= value < 2**31:
                self.write(b"I")
                self.pack("!i", value)
            else:
                self.write(b"l")
                self.pack("!q", value)
        elif isinstance(value, float):
            self.write(b"d")
            self.pack("!d", value)
        elif isinstance(value, str):
            self.write(b"S")
            self.encode_longstr(value)
        elif isinstance(value, bytes | bytearray):
            self.write(b"x")
            self.encode_longstr(bytes(value))
        elif isinstance(value, Mapping):
            self.write(b"F")
            self.encode_table(value)
        elif isinstance(value, list | tuple):
            inner = _Codec()
            for item in value:
                inner.encode_field(item)
            self.write(b"A")
            self.encode_longstr(inner.value())
        else:
            raise TypeError(f"cannot put a {type(value).__name__} in an AMQP field table")

    def decode_field(self) -> object:
        kind = self.read(1)
        number = _NUMBERS.get(kind)
        if number is not None:
            return number.unpack(self.read(number.size))[0]
        decode = self._FIELD_DECODERS.get(kind)
        if decode is None:
            raise _ProtocolError(f"unknown field table type {kind!r}")
        return decode(self)

    def _decode_bool(self) -> bool:
        return bool(self.unpack("!B"))

    def _decode_text(self) -> str:
        return self.decode_longstr().decode("utf-8", "surrogateescape")

    def _decode_array(self) -> list[object]:
        end = self.unpack("!L") + self.nread
        items = []
        while self.nread < end:
            items.append(self.decode_field())
        return items

    def _decode_decimal(self) -> Decimal:
        scale = self.unpack("!B")
        return Decimal(self.unpack("!i")).scaleb(-scale)

    def _decode_void(self) -> None:
        return None

    _FIELD_DECODERS: Mapping[bytes, Callable[[_Codec], object]] = {
        b"t": _decode_bool,
        b"S": _decode_text,
        b"x": decode_longstr,
        b"F": decode_table,
        b"A": _decode_array,
        b"D": _decode_decimal,
        b"V": _decode_void,
    }


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _FRAME_PREFIX.pack(kind, channel, len(payload)) + payload + _FRAME_END


def _encode_method(method: Any, args: Sequence[object]) -> bytes:
    codec = _Codec()
    codec.encode_short(method.klass.id)
    codec.encode_short(method.id)
    for spec_field, arg in zip(method.fields, args, strict=True):
        codec.encode(spec_field.type, arg)
    return codec.value()


def _decode_method(spec: Any, payload: bytes) -> Any:
    codec = _Codec(payload)
    klass = spec.classes.byid[codec.decode_short()]
    method = klass.methods.byid[codec.decode_short()]
    args = []
    for spec_field in method.fields:
        if spec_field.type != "bit":
            codec.incoming_bits.clear()  # bits pack only with the bits next to them
        args.append(codec.decode(spec_field.type))
    return Method(method, *args)


def _encode_header(klass: Any, size: int, properties: Mapping[str, object]) -> bytes:
    unknown = set(properties) - {f.name for f in klass.fields}
    if unknown:
        raise ValueError(f"no such {klass.name} properties: {sorted(unknown)}")
    codec = _Codec()
    codec.encode_short(klass.id)
    codec.encode_short(0)  # weight: 0-9-1 content has no children
    codec.encode_longlong(size)
    fields = list(klass.fields)
    present = [properties.get(f.name) is not None for f in fields]
    # Property flags: 15 to a word, the first property in the top bit; bit 0 says another word follows.
    for start in range(0, max(len(fields), 1), 15):
        word = 0
        for offset, is_present in enumerate(present[start : start + 15]):
            if is_present:
                word |= 1 << (15 - offset)
        if start + 15 < len(fields):
            word |= 1
        codec.encode_short(word)
    for spec_field, is_present in zip(fields, present, strict=True):
        if is_present:
            codec.encode(spec_field.type, properties[spec_field.name])
    return codec.value()


def _decode_header(spec: Any, payload: bytes) -> Any:
    codec = _Codec(payload)
    klass = spec.classes.byid[codec.decode_short()]
    weight = codec.decode_short()
    size = codec.decode_longlong()
    present: list[bool] = []
    while True:
        word = codec.decode_short()
        present.extend(bool(word >> bit & 1) for bit in range(15, 0, -1))
        if not word & 1:
            break
    properties = {}
    for spec_field, is_present in zip(klass.fields, present, strict=False):
        if is_present:
            properties[spec_field.name] = codec.decode(spec_field.type)
    return Header(klass, weight, size, **properties)


def _encode_frame(frame: Any) -> bytes:
    payload = frame.payload
    if isinstance(payload, Method):
        return _frame(_FRAME_METHOD, frame.channel, _encode_method(payload.method, payload.args))
    if isinstance(payload, Header):
        if payload.weight:
            raise ValueError("AMQP 0-9-1 content has no children")
        return _frame(_FRAME_HEADER, frame.channel, _encode_header(payload.klass, payload.size, payload.properties))
    if isinstance(payload, Body):
        content = payload.content
        return _frame(_FRAME_BODY, frame.channel, content.encode() if isinstance(content, str) else bytes(content))
    if isinstance(payload, Heartbeat):
        return _HEARTBEAT_FRAME
    raise TypeError(f"cannot encode {payload!r}")


@dataclass
class _PendingContent:
    """A content-bearing method whose header and body frames are still arriving on its channel."""

    method: Any
    size: int = -1
    properties: dict[str, object] = field(default_factory=dict)
    received: int = 0
    chunks: list[bytes] = field(default_factory=list)


class _AmqpProtocol(AMQClient):  # type: ignore[misc]
    """txamqp's client with this module's frame codec, synchronous content assembly and a cheap heartbeat."""

    def __init__(self, bus: AmqpBus, delegate: _Delegate, settings: AmqpSettings, clock: IReactorTime) -> None:
        # heartbeat=0: txamqp's heartbeat reschedules two timers per frame; ours is one periodic check.
        super().__init__(delegate, settings.vhost, amqp_spec(), heartbeat=0, clock=clock)
        self.bus = bus
        self.settings = settings
        self.session: _Session | None = None
        self.channel_max = 0xFFFF
        self._methods = {name: self.spec.parse_method(name) for name in ("basic.publish", "basic.ack", "basic.nack")}
        self._basic = self.spec.classes.byname["basic"]
        self._inbox = bytearray()
        self._contents: dict[int, _PendingContent] = {}
        self._heartbeat: LoopingCall | None = None
        self._heartbeat_interval = 0
        self._last_received = clock.seconds()
        self._dropped = False

    # Connection events.

    def send_init_string(self) -> None:
        self.transport.write(_PROTOCOL_HEADER)

    def connectionMade(self) -> None:
        super().connectionMade()
        self.bus._connection_made(self)

    def connectionLost(self, reason: Failure) -> None:
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        self._contents.clear()
        super().connectionLost(reason)
        self.bus._connection_lost(self, reason)

    def channel_failed(self, channel: Any, reason: Failure) -> None:
        self._contents.pop(channel.id, None)  # the broker's channel.close, reported by _Delegate.channel_close

    def do_close(self, reason: Any) -> None:
        """txamqp's, over copies: closing a channel fails what waits on it, and those callbacks may
        :meth:`forget_channel` (a ``close_channel`` under way), which txamqp's loop over the live dict
        does not survive (``RuntimeError``, and the channels after it never closed)."""
        for channel in list(self.channels.values()):
            channel.close(reason)
        for queue in list(self.queues.values()):
            queue.close()
        self.delegate.close(reason)

    # Channels.

    def channel_now(self, channel_id: int) -> Any:
        """The channel object for *channel_id*, made if new (txamqp's ``channel()`` without the Deferred)."""
        channel = self.channels.get(channel_id)
        if channel is None:
            channel = self.channels[channel_id] = self.channelFactory(channel_id, self.outgoing, self)
        return channel

    def forget_channel(self, channel: Any) -> bool:
        """Drop a channel we closed so its id can be reused; whether it was still ours."""
        self._contents.pop(channel.id, None)
        channel.close(ConnectionDone("channel closed"))
        return self.channels.pop(channel.id, None) is channel

    # Writing.

    def send_frame(self, frame: Any) -> None:
        self.transport.write(_encode_frame(frame))

    def send_method(self, channel_id: int, name: str, *args: object) -> None:
        self.transport.write(_frame(_FRAME_METHOD, channel_id, _encode_method(self._methods[name], args)))

    def publish_frames(self, channel_id: int, routing_key: str, body: bytes, properties: Mapping[str, object]) -> bytes:
        """The frames of a mandatory ``basic.publish`` of *body* to the default exchange, ready to write."""
        if not isinstance(body, bytes):
            raise TypeError(f"a message body is bytes, not {type(body).__name__}")
        method = _encode_method(self._methods["basic.publish"], (0, "", routing_key, True, False))
        parts = [
            _frame(_FRAME_METHOD, channel_id, method),
            _frame(_FRAME_HEADER, channel_id, _encode_header(self._basic, len(body), properties)),
        ]
        step = self.MAX_LENGTH - 8
        view = memoryview(body)
        parts.extend(_frame(_FRAME_BODY, channel_id, view[i : i + step].tobytes()) for i in range(0, len(body), step))
        return b"".join(parts)

    # Reading.

    def dataReceived(self, data: bytes) -> None:
        self._last_received = self.clock.seconds()
        inbox = self._inbox
        inbox += data
        offset = 0
        try:
            while len(inbox) - offset >= _FRAME_PREFIX.size and not self._dropped and not self.transport.disconnecting:
                kind, channel_id, size = _FRAME_PREFIX.unpack_from(inbox, offset)
                if size > self.MAX_LENGTH:
                    raise _ProtocolError(f"frame of {size} bytes, more than frame_max {self.MAX_LENGTH}")
                end = offset + 7 + size
                if end >= len(inbox):
                    break
                if inbox[end] != _FRAME_END[0]:
                    raise _ProtocolError(f"frame end {inbox[end]:#x}, not 0xce")
                payload = bytes(inbox[offset + 7 : end])
                offset = end + 1
                self._frame_received(kind, channel_id, payload)
        except Exception:
            _log.failure("broke on what RabbitMQ sent; dropping the connection")
            self._dropped = True
            self.transport.abortConnection()
        del inbox[:offset]

    def _frame_received(self, kind: int, channel_id: int, payload: bytes) -> None:
        if kind == _FRAME_BODY:
            self._body_received(channel_id, payload)
        elif kind == _FRAME_METHOD:
            self._method_received(channel_id, _decode_method(self.spec, payload))
        elif kind == _FRAME_HEADER:
            self._header_received(channel_id, _decode_header(self.spec, payload))
        elif kind != _FRAME_HEARTBEAT:
            raise _ProtocolError(f"unknown frame type {kind}")

    def _method_received(self, channel_id: int, method: Any) -> None:
        if method.method.response:
            # The reply to a request of ours: txamqp's channel hands it to the waiting invoke().
            self.channel_now(channel_id).dispatch(Frame(channel_id, method), self.work)
        elif method.method.content:
            if channel_id in self._contents:
                raise _ProtocolError(f"{method.method.name} before the previous content on channel {channel_id}")
            self._contents[channel_id] = _PendingContent(method)
        else:
            self.delegate.dispatch(self.channel_now(channel_id), Message(method.method, method.args))

    def _header_received(self, channel_id: int, header: Any) -> None:
        pending = self._contents.get(channel_id)
        if pending is None:  # content of a reply: txamqp's channel queues it for invoke()
            self.channel_now(channel_id).dispatch(Frame(channel_id, header), self.work)
            return
        if header.weight:
            raise _ProtocolError("AMQP 0-9-1 content has no children")
        pending.size = header.size
        pending.properties = header.properties
        if pending.size == 0:
            self._content_complete(channel_id, pending)

    def _body_received(self, channel_id: int, payload: bytes) -> None:
        pending = self._contents.get(channel_id)
        if pending is None:
            self.channel_now(channel_id).dispatch(Frame(channel_id, Body(payload)), self.work)
            return
        if pending.size < 0:
            raise _ProtocolError(f"body frame before the content header on channel {channel_id}")
        pending.chunks.append(payload)
        pending.received += len(payload)
        if pending.received >= pending.size:
            self._content_complete(channel_id, pending)

    def _content_complete(self, channel_id: int, pending: _PendingContent) -> None:
        del self._contents[channel_id]
        if pending.received != pending.size:
            raise _ProtocolError(f"content of {pending.received} bytes, header said {pending.size}")
        body = pending.chunks[0] if len(pending.chunks) == 1 else b"".join(pending.chunks)
        content = Content(body, [], pending.properties)
        self.delegate.dispatch(
            self.channel_now(channel_id), Message(pending.method.method, pending.method.args, content)
        )

    # Heartbeats.

    def start_heartbeat(self, interval: int) -> None:
        """Send a heartbeat every *interval*/2 s; drop the connection after ``MISSED_HEARTBEATS`` silent intervals."""
        if interval <= 0:
            return
        self._heartbeat_interval = interval
        self._heartbeat = LoopingCall(self._heartbeat_tick)
        self._heartbeat.clock = self.clock
        self._heartbeat.start(interval / 2, now=False)

    def _heartbeat_tick(self) -> None:
        silence = self.clock.seconds() - self._last_received
        if silence > MISSED_HEARTBEATS * self._heartbeat_interval:
            _log.warn("nothing from RabbitMQ for {silence:.0f}s; dropping the connection", silence=silence)
            self._dropped = True
            self.transport.abortConnection()
            return
        self.transport.write(_HEARTBEAT_FRAME)


class _Delegate(TwistedDelegate):  # type: ignore[misc]
    """Handles what the broker sends unasked: the handshake, deliveries, publisher confirms, closes."""

    client: _AmqpProtocol

    def connection_start(self, channel: Any, message: Any) -> None:
        server = message.server_properties
        _log.debug("RabbitMQ {version} at the other end", version=server.get("version", "?"))
        channel.connection_start_ok(
            client_properties={
                "product": "gochat",
                "platform": f"Python {platform.python_version()}",
                "connection_name": f"gochat {socket.gethostname()}:{os.getpid()}",
                "capabilities": {
                    "publisher_confirms": True,
                    "basic.nack": True,
                    "consumer_cancel_notify": True,
                    "authentication_failure_close": True,
                },
            },
            mechanism=self.client.mechanism,
            response=self.client.response,
            locale=self.client.locale,
        )

    def connection_tune(self, channel: Any, message: Any) -> None:
        client = self.client
        frame_max = min(message.frame_max or FRAME_MAX, FRAME_MAX)
        client.channel_max = message.channel_max or 0xFFFF
        ours, theirs = client.settings.heartbeat, message.heartbeat
        heartbeat = max(ours, theirs) if 0 in (ours, theirs) else min(ours, theirs)
        client.MAX_LENGTH = frame_max
        channel.connection_tune_ok(channel_max=client.channel_max, frame_max=frame_max, heartbeat=heartbeat)
        client.start_heartbeat(heartbeat)
        client.started.fire()

    def basic_deliver(self, channel: Any, message: Any) -> None:
        if self.client.session is not None:
            self.client.session.deliver(channel.id, message)

    def basic_ack(self, channel: Any, message: Any) -> None:
        if self.client.session is not None:
            self.client.session.confirmed(channel.id, message.delivery_tag, message.multiple, ok=True)

    def basic_nack(self, channel: Any, message: Any) -> None:
        if self.client.session is not None:
            self.client.session.confirmed(channel.id, message.delivery_tag, message.multiple, ok=False)

    def basic_return_(self, channel: Any, message: Any) -> None:
        if self.client.session is not None:
            self.client.session.returned(message)

    def basic_cancel(self, channel: Any, message: Any) -> None:
        self.client.bus._broker_cancelled(self.client, channel.id)

    def channel_close(self, channel: Any, message: Any) -> None:
        super().channel_close(channel, message)  # channel.close-ok, and the channel's waiters fail
        self.client.bus._channel_failed(self.client, channel.id, message.reply_code, message.reply_text)

    def connection_close(self, channel: Any, message: Any) -> None:
        _log.warn("RabbitMQ closes the connection: {code} {text}", code=message.reply_code, text=message.reply_text)
        super().connection_close(channel, message)


class _AmqpFactory(Factory):
    """Builds one :class:`_AmqpProtocol` per connection of the bus's ClientService."""

    noisy = False

    def __init__(self, bus: AmqpBus) -> None:
        self._bus = bus

    def buildProtocol(self, addr: IAddress | None) -> _AmqpProtocol:
        return _AmqpProtocol(self._bus, _Delegate(), self._bus._settings, self._bus._reactor)


__all__ = [
    "SPEC_RESOURCE",
    "AmqpBus",
    "AmqpSettings",
    "BrokerMessage",
    "Consumer",
    "QueueSpec",
    "amqp_spec",
]
