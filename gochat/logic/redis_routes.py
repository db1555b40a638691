"""The production route store: routes and presence in Redis, over txredisapi 1.6.

:class:`RedisRouteStore` implements :class:`~gochat.logic.interfaces.IRouteStore`
(``add``, ``remove``, ``routes``) plus what running many gateways needs:
``refresh`` (a gateway re-arms the TTL of all its sessions at once, so the
routes of a gateway that dies vanish within the TTL) and ``online`` (presence,
a by-product of routes). :class:`RedisRouteService` is the ``IService`` that
owns the connection; it builds the store as ``service.store``.

Data layout
    One sorted set per user, ``<key_prefix>routes:<user_id>``. A member is one
    session, ``"<gateway_id>\\x1f<session_id>"`` (UTF-8); its score is the
    moment the route expires, in epoch seconds. A route is live while its
    score is later than now. Gateway and session ids must not contain the
    separator (``\\x1f``): :meth:`RedisRouteStore.add` and the others raise
    ``ValueError`` for one that does. Every write also sets the key's TTL to the
    route TTL (``PEXPIRE``), so the key of a user nobody refreshes vanishes by
    itself; its members' scores are what decide liveness in between.

Commands (each call is one pipelined batch: one round trip, however many users)
    - ``add``: ``ZREMRANGEBYSCORE key -inf now`` (drops the user's expired
      routes), ``ZADD key now+ttl member``, ``PEXPIRE key ttl``.
    - ``remove``: ``ZREM key member`` (Redis deletes a set left empty).
    - ``routes``: ``ZRANGEBYSCORE key (now +inf`` per user: reads do not write.
    - ``online``: ``ZCOUNT key (now +inf`` per user.
    - ``refresh``: per user ``ZADD key now+ttl m1 now+ttl m2 ...`` (all of the
      user's sessions on that gateway in one command) and ``PEXPIRE key ttl``:
      two commands per user, never one per session.

    Expired members are dropped when the user's next session is added, or with
    the key when it expires; between those they only cost memory and are never
    returned.

Refresh re-adds, and who wins against ``remove``
    ``refresh`` uses a plain ``ZADD``, so it re-creates routes that Redis has
    lost (``FLUSHALL``, a restart with no persistence, a failover to a replica
    that lagged): after Redis comes back, routes rebuild as gateways refresh.
    ``ZADD XX`` would not resurrect a removed route, but it would not rebuild a
    lost one either. The gateway is the source of truth for its own sessions,
    so the ordering rule is on its side: **a gateway takes a session out of the
    list it refreshes before it calls** ``remove``. A refresh issued after the
    remove then does not name the session; one issued before it is executed
    before it, because a store writes every command on its one connection in
    call order and Redis executes a connection's commands in order. The one
    remaining race is a refresh and a remove for the same session sent through
    two *different* logic processes (two connections): the refresh may land
    last and bring the route back until it expires, at most ``route_ttl``
    seconds; deliveries to it reach a gateway that no longer has the session
    and are dropped there, and nothing is lost (the recipient syncs).

Time
    ``add``, ``routes`` and ``online`` read the store's clock (``clock.seconds()``);
    ``refresh`` takes ``now`` from its caller, the gateway's refresh timer.
    Scores come from the writers' clocks and are compared with the readers'
    clocks, and the key TTL runs on Redis's: hosts must keep their clocks in
    sync (NTP) to well within the TTL.

Connection and failures
    txredisapi's connection functions and :class:`txredisapi.RedisFactory`
    run on the global reactor (the factory's ``ClientService`` gets no clock,
    it defers with ``reactor.callLater``, and ``startConnecting`` is the only
    supported way to connect it), and its handler *waits* for a connection
    while Redis is down, so a call would hang for as long as an outage lasts.
    So :class:`RedisRouteService` keeps one connection itself, with a
    :class:`~twisted.application.internet.ClientService` on the reactor it is
    given, and uses txredisapi for its protocol: connection setup (AUTH,
    SELECT), the reply parser, its error types; always with
    ``convertNumbers=False`` (else a session id ``"007"`` would come back as
    the integer 7). A new connection is used once AUTH/SELECT (when
    configured) and a ``PING`` have succeeded; failed setups count towards the
    reconnection backoff. One connection, because it keeps every batch in call
    order (see above) and Redis runs commands on one thread anyway.

    Batches bypass txredisapi's per-command path: a command there costs two
    Deferreds and eight value encodings, its reply queue pops waiters off the
    front of a list (quadratic in a batch of thousands), and what follows a
    bulk string in a chunk of data waits for a turn of the global reactor. The
    protocol here encodes a batch in one write, collects its replies into one
    list and parses a chunk in one go: on the 2-core box a refresh of 10,000
    sessions (20,000 commands) went from 0.5-0.8 s to 0.05-0.1 s, and
    ``routes()`` of 1,000 users from 35 ms to about 8 ms.

    Calls never wait for a connection: while there is none they fail at once
    with ``GochatError(unavailable)``, and so does a batch whose connection is
    lost before every reply is in, or that gets no reply within
    ``reply_timeout`` (the connection is then dropped and made again, since a
    server or path that stopped answering is not to be trusted). A command
    Redis refuses with a transient error (``LOADING``, ``BUSY``, ``OOM``,
    ``READONLY``, ...) is ``unavailable`` too; any other refusal is
    ``internal``. Callers decide when to retry: a gateway's next refresh
    rebuilds whatever a failed one missed.

Importing this module does not import txredisapi, because txredisapi imports
the global reactor at import time; it is imported when the first connection is
built.
"""

from __future__ import annotations

import collections
import functools
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from gochat.errors import ErrorCode, GochatError
from gochat.logic.interfaces import Route

_log = Logger()

#: Separates the gateway id from the session id in a sorted-set member.
SEPARATOR = "\x1f"

#: Reconnection backoff: first retry after about this many seconds, doubling up to ``RECONNECT_MAX``.
RECONNECT_INITIAL = 0.5
RECONNECT_MAX = 10.0

#: Error replies that say Redis cannot serve right now (rather than that the command is wrong).
TRANSIENT_REPLIES = frozenset(
    {"LOADING", "BUSY", "OOM", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS", "MISCONF"}
)

#: One Redis command: its name, then its arguments (``bytes`` go out as they are, ``str`` as UTF-8).
RedisCommand = Sequence[bytes | str | int]


@dataclass(frozen=True)
class RedisSettings:
    """Where Redis is, how routes are kept in it, and how long to wait for it.

    ``route_ttl`` is how long a route lives after it is added or refreshed, in
    seconds; gateways should refresh at a fraction of it (a third, say).
    ``connect_timeout`` bounds a TCP connect plus the setup of a new connection
    (AUTH, SELECT, PING); ``reply_timeout`` bounds the wait for a batch's replies.
    """

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    password: str | None = None
    key_prefix: str = "gochat:"
    route_ttl: float = 90.0
    connect_timeout: float = 5.0
    reply_timeout: float = 5.0

    def __post_init__(self) -> None:
        for name in ("route_ttl", "connect_timeout", "reply_timeout"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if self.db < 0:
            raise ValueError(f"db must be >= 0, not {self.db}")


class RedisPipeline(Protocol):
    """Sends a batch of commands in one write and collects their replies (what the store needs of a connection)."""

    def pipeline(self, commands: Sequence[RedisCommand]) -> Deferred[list[Any]]:
        """Fires with the replies, in command order; fails on the first error reply or a lost connection."""


# The store.


def _score(seconds: float) -> str:
    """A score as Redis reads it back exactly (shortest round-tripping decimal)."""
    return repr(float(seconds))


def _check_id(kind: str, value: str) -> None:
    if SEPARATOR in value:
        raise ValueError(f"{kind} {value!r} contains the route separator \\x1f")


def _member(gateway_id: str, session_id: str) -> bytes:
    return f"{gateway_id}{SEPARATOR}{session_id}".encode()


class RedisRouteStore:
    """:class:`~gochat.logic.interfaces.IRouteStore` in Redis sorted sets, with TTL refresh and presence.

    See the module docstring for the data layout, the commands, and the
    ordering rule between ``refresh`` and ``remove``. Every method sends one
    pipelined batch (one round trip); each fails with ``unavailable`` when
    Redis cannot be reached and raises ``ValueError`` for an id containing
    the separator.
    """

    def __init__(self, redis: RedisPipeline, clock: IReactorTime, settings: RedisSettings) -> None:
        self._redis = redis
        self._clock = clock
        self._prefix = settings.key_prefix
        self.ttl = settings.route_ttl
        self._ttl_ms = str(math.ceil(settings.route_ttl * 1000))

    def key(self, user_id: int) -> bytes:
        """The Redis key holding *user_id*'s routes."""
        return f"{self._prefix}routes:{int(user_id)}".encode()

    # IRouteStore.

    def add(self, user_id: int, route: Route) -> Deferred[None]:
        """Record a live session, expiring ``route_ttl`` seconds from now unless refreshed."""
        _check_id("gateway id", route.gateway_id)
        _check_id("session id", route.session_id)
        now = self._clock.seconds()
        key = self.key(user_id)
        return self._write(
            [
                ("ZREMRANGEBYSCORE", key, "-inf", _score(now)),
                ("ZADD", key, _score(now + self.ttl), _member(route.gateway_id, route.session_id)),
                ("PEXPIRE", key, self._ttl_ms),
            ]
        )

    def remove(self, user_id: int, route: Route) -> Deferred[None]:
        """Forget a session (nothing happens if it is not there)."""
        _check_id("gateway id", route.gateway_id)
        _check_id("session id", route.session_id)
        return self._write([("ZREM", self.key(user_id), _member(route.gateway_id, route.session_id))])

    def routes(self, user_ids: Iterable[int]) -> Deferred[dict[int, set[Route]]]:
        """The unexpired sessions of each of *user_ids* (an empty set for a user with none), in one round trip."""
        ids = list(dict.fromkeys(user_ids))
        if not ids:
            return succeed({})
        live = "(" + _score(self._clock.seconds())
        d = self._redis.pipeline([("ZRANGEBYSCORE", self.key(uid), live, "+inf") for uid in ids])
        return d.addCallback(
            lambda replies: {uid: _routes(uid, reply) for uid, reply in zip(ids, replies, strict=True)}
        )

    # Scale-out.

    def refresh(self, gateway_id: str, sessions: Sequence[tuple[int, str]], now: float) -> Deferred[None]:
        """Re-arm, until ``now + route_ttl``, the route of every ``(user_id, session_id)`` live on *gateway_id*.

        One pipelined batch of two commands per user, whatever the number of
        sessions. Routes missing from Redis are added again (so a flushed or
        restarted Redis is rebuilt by the next refresh of every gateway):
        *sessions* must list only sessions that are live right now, and a
        session must leave that list before its ``remove`` is called.
        """
        _check_id("gateway id", gateway_id)
        members: dict[int, list[bytes | str]] = {}
        expires = _score(now + self.ttl)
        for user_id, session_id in sessions:
            _check_id("session id", session_id)
            members.setdefault(user_id, []).extend((expires, _member(gateway_id, session_id)))
        commands: list[RedisCommand] = []
        for user_id, scored in members.items():
            key = self.key(user_id)
            commands.append(("ZADD", key, *scored))
            commands.append(("PEXPIRE", key, self._ttl_ms))
        return self._write(commands)

    def online(self, user_ids: Iterable[int]) -> Deferred[dict[int, bool]]:
        """Whether each of *user_ids* has at least one unexpired route, in one round trip."""
        ids = list(dict.fromkeys(user_ids))
        if not ids:
            return succeed({})
        live = "(" + _score(self._clock.seconds())
        d = self._redis.pipeline([("ZCOUNT", self.key(uid), live, "+inf") for uid in ids])
        return d.addCallback(lambda counts: {uid: int(count) > 0 for uid, count in zip(ids, counts, strict=True)})

    def _write(self, commands: list[RedisCommand]) -> Deferred[None]:
        if not commands:
            return succeed(None)
        return self._redis.pipeline(commands).addCallback(lambda _: None)


def _routes(user_id: int, members: Iterable[str | bytes]) -> set[Route]:
    routes = set()
    for member in members:
        text = member.decode("utf-8", "replace") if isinstance(member, bytes) else str(member)
        gateway_id, separator, session_id = text.partition(SEPARATOR)
        if not separator:
            _log.warn("ignoring malformed route {member!r} of user {user_id}", member=text, user_id=user_id)
            continue
        routes.add(Route(gateway_id, session_id))
    return routes


# The connection.


class RedisRouteService(Service):
    """Owns one reconnecting connection to Redis and the :class:`RedisRouteStore` over it (``self.store``).

    Starting the service starts connecting (and reconnecting with backoff
    after every loss); :meth:`when_connected` fires once a connection is
    usable. Stopping refuses new calls, waits for the batches in flight
    (each bounded by ``reply_timeout``), then closes the connection.

    :meth:`pipeline` is the one way commands go out: the whole batch is
    written at once, in call order with every other batch on the connection,
    and the replies come back as one list.
    """

    def __init__(self, reactor: IReactorTime, settings: RedisSettings) -> None:
        self.settings = settings
        self._reactor = reactor
        self._protocol: Any = None
        self._failed_setups = 0
        self._in_flight = 0
        self._drain_waiters: list[Deferred[None]] = []
        self._connected_waiters: list[Deferred[None]] = []
        self._stopping = False
        backoff = backoffPolicy(
            initialDelay=RECONNECT_INITIAL / 2,
            maxDelay=RECONNECT_MAX,
            factor=2.0,
            jitter=lambda: random.random() * RECONNECT_INITIAL / 2,
        )
        # ClientService counts failed TCP connects and forgets them once one succeeds; a connection
        # that comes up but cannot be set up (refused AUTH, no PING reply) counts here instead.
        self._client = ClientService(
            HostnameEndpoint(reactor, settings.host, settings.port, timeout=settings.connect_timeout),
            _RedisProtocolFactory(self),
            retryPolicy=lambda attempt: backoff(attempt + self._failed_setups),
            clock=reactor,
        )
        self.store = RedisRouteStore(self, reactor, settings)

    # IService.

    def startService(self) -> None:
        """Start connecting; calls fail with ``unavailable`` until a connection is set up."""
        super().startService()
        self._stopping = False
        self._client.startService()

    def stopService(self) -> Deferred[None]:
        """Refuse new calls, let the batches in flight finish, close the connection; fires once closed."""
        super().stopService()
        self._stopping = True
        waiters, self._connected_waiters = self._connected_waiters, []
        for waiter in waiters:
            waiter.errback(GochatError(ErrorCode.SHUTTING_DOWN, "the Redis connection stopped"))
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._in_flight:
            drained: Deferred[None] = Deferred()
            self._drain_waiters.append(drained)
            await drained
        await self._client.stopService()
        self._protocol = None

    # The API.

    @property
    def connected(self) -> bool:
        """Whether a set-up connection is there to take commands."""
        return self._protocol is not None

    def when_connected(self) -> Deferred[None]:
        """Fires once a connection is set up: now if one is, else when the next one is."""
        if self._protocol is not None:
            return succeed(None)
        waiter: Deferred[None] = Deferred(self._connected_waiters.remove)
        self._connected_waiters.append(waiter)
        return waiter

    def pipeline(self, commands: Sequence[RedisCommand]) -> Deferred[list[Any]]:
        """Write *commands* in one go without waiting for replies; fires with the replies in order.

        Fails at once with ``unavailable`` when there is no connection (or the
        service is stopping), later when the connection is lost or no reply
        comes within ``reply_timeout``, or when Redis refuses a command
        transiently; with ``internal`` when it refuses one for good.
        """
        protocol = self._protocol
        if self._stopping or not self.running:
            return fail(GochatError(ErrorCode.UNAVAILABLE, "the Redis connection is not running"))
        if protocol is None or not protocol.connected:
            return fail(GochatError(ErrorCode.UNAVAILABLE, "not connected to Redis"))
        if not commands:
            return succeed([])
        request = encode_commands(commands)
        self._in_flight += 1
        replies: Deferred[list[Any]] = protocol.send_batch(request, len(commands))
        replies.addCallback(_raise_error_reply)
        replies.addTimeout(self.settings.reply_timeout, self._reactor, onTimeoutCancel=self._no_reply(protocol))
        replies.addErrback(_as_gochat_error)
        replies.addBoth(self._batch_done)
        return replies

    # Connection life cycle (called by the protocols).

    def _setup(self, protocol: Any) -> None:
        """AUTH and SELECT are done (txredisapi's ``whenConnected``); PING, then take the connection into use."""
        pinged: Deferred[Any] = protocol.ping()
        pinged.addTimeout(self.settings.connect_timeout, self._reactor)
        pinged.addCallbacks(self._pinged, self._setup_failed, callbackArgs=(protocol,), errbackArgs=(protocol,))

    def _pinged(self, reply: object, protocol: Any) -> None:
        if reply != "PONG":
            self._setup_failed(Failure(GochatError(ErrorCode.INTERNAL, f"PING answered {reply!r}")), protocol)
            return
        if self._stopping or not protocol.connected:
            protocol.transport.loseConnection()
            return
        self._protocol = protocol
        self._failed_setups = 0
        _log.info("connected to Redis at {host}:{port}", host=self.settings.host, port=self.settings.port)
        waiters, self._connected_waiters = self._connected_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _setup_failed(self, failure: Failure, protocol: Any) -> None:
        if self._stopping:
            protocol.transport.abortConnection()
            return
        self._failed_setups += 1
        _log.warn(
            "could not set up a connection to Redis at {host}:{port}: {reason}",
            host=self.settings.host,
            port=self.settings.port,
            reason=failure.getErrorMessage(),
        )
        protocol.transport.abortConnection()

    def _refused(self, why: str) -> None:
        """txredisapi reports a refused AUTH or SELECT (it closes the connection itself)."""
        self._failed_setups += 1
        _log.warn("{why}; retrying with backoff", why=why)

    def _drop(self, protocol: Any, why: str) -> None:
        """Stop using *protocol* now (calls fail at once until the next connection) and abort its connection."""
        if self._protocol is protocol:
            self._protocol = None
            _log.warn(
                "dropping the connection to Redis at {host}:{port} ({why}); reconnecting",
                host=self.settings.host,
                port=self.settings.port,
                why=why,
            )
        protocol.transport.abortConnection()

    def _lost(self, protocol: Any) -> None:
        if self._protocol is protocol:
            self._protocol = None
            if not self._stopping:
                _log.warn(
                    "lost the connection to Redis at {host}:{port}; reconnecting",
                    host=self.settings.host,
                    port=self.settings.port,
                )

    # Batches.

    def _no_reply(self, protocol: Any) -> Callable[[object, float], Failure]:
        """What a batch on *protocol* that got no reply in time fails with; the connection is dropped."""

        def timed_out(result: object, timeout: float) -> Failure:
            self._drop(protocol, f"no reply within {timeout:g}s")
            return Failure(GochatError(ErrorCode.UNAVAILABLE, f"Redis did not reply within {timeout:g}s"))

        return timed_out

    def _batch_done(self, result: object) -> object:
        self._in_flight -= 1
        if not self._in_flight:
            waiters, self._drain_waiters = self._drain_waiters, []
            for waiter in waiters:
                waiter.callback(None)
        return result


def _raise_error_reply(replies: list[Any]) -> list[Any]:
    """A batch's replies, or the first error among them raised (an error reply, or the lost connection)."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def _as_gochat_error(failure: Failure) -> Failure:
    """txredisapi's failures as gochat's: connection trouble and transient refusals are ``unavailable``."""
    import txredisapi

    if failure.check(GochatError, CancelledError):
        return failure
    if failure.check(txredisapi.ConnectionError):
        return Failure(GochatError(ErrorCode.UNAVAILABLE, f"lost the connection to Redis ({failure.value})"))
    if failure.check(txredisapi.ResponseError):
        reply = str(failure.value)
        code = ErrorCode.UNAVAILABLE if reply.split(" ", 1)[0] in TRANSIENT_REPLIES else ErrorCode.INTERNAL
        return Failure(GochatError(code, f"Redis refused a command: {reply}"))
    return failure


# The wire: txredisapi's protocol, with batches that cost O(1) per command.


def encode_commands(commands: Iterable[RedisCommand]) -> bytes:
    """*commands* in the Redis protocol (RESP arrays of bulk strings), ready to be written in one go."""
    parts: list[bytes] = []
    for command in commands:
        parts.append(b"*%d\r\n" % len(command))
        for arg in command:
            if isinstance(arg, str):
                value = arg.encode()
            elif isinstance(arg, int):
                value = b"%d" % arg
            else:
                value = arg
            parts.append(b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(parts)


class _Batch:
    """Collects the next *expected* replies of a connection into one list."""

    __slots__ = ("done", "expected", "replies")

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.replies: list[Any] = []
        # Cancelling (a timeout) fails ``done`` at once; the batch stays queued and still
        # takes its replies off the stream, so later batches get theirs.
        self.done: Deferred[list[Any]] = Deferred(lambda _: None)

    def take(self, reply: object) -> bool:
        """Add *reply*; whether the batch is complete (and ``done`` fired, unless it was cancelled)."""
        self.replies.append(reply)
        if len(self.replies) < self.expected:
            return False
        if not self.done.called:
            self.done.callback(self.replies)
        return True


class _ReplyQueue:
    """Stands in for txredisapi's ``ReplyQueue``: replies matched to requests first in, first out.

    txredisapi 1.6's queue pops waiters off the front of a list, which is
    O(n) per reply and quadratic for a batch of thousands of commands, and
    takes a Deferred per command. Here waiters sit in a deque, and a whole
    batch waits as one :class:`_Batch`. Single commands (txredisapi's own
    ``execute_command``, used for PING) keep their Deferred per reply.
    """

    def __init__(self) -> None:
        self.waiting: collections.deque[Any] = collections.deque()
        self.pending: collections.deque[Any] = collections.deque()

    def get(self) -> Deferred[Any]:
        if self.pending:
            return succeed(self.pending.popleft())
        d: Deferred[Any] = Deferred(self._cancel_get)
        self.waiting.append(d)
        return d

    def _cancel_get(self, d: Deferred[Any]) -> None:
        # As txredisapi's ReplyQueue: the reply will still come, so its slot stays taken.
        self.waiting[self.waiting.index(d)] = Deferred()

    def expect(self, count: int) -> Deferred[list[Any]]:
        """Fires with the next *count* replies, in order."""
        batch = _Batch(count)
        while self.pending:
            if batch.take(self.pending.popleft()):
                return batch.done
        self.waiting.append(batch)
        return batch.done

    def put(self, reply: object) -> None:
        if not self.waiting:
            self.pending.append(reply)
            return
        head = self.waiting[0]
        if isinstance(head, _Batch):
            if head.take(reply):
                self.waiting.popleft()
        else:
            self.waiting.popleft().callback(reply)


@functools.cache
def _protocol_class() -> Any:
    """txredisapi's ``RedisProtocol`` with batches and without a reactor turn per bulk reply (built on first use)."""
    import txredisapi

    class BatchingRedisProtocol(txredisapi.RedisProtocol):  # type: ignore[misc]  # txredisapi is untyped
        """Adds :meth:`send_batch`, and parses every reply in a chunk of data at once.

        txredisapi's line receiver hands what follows a bulk string in a chunk to
        ``callLater(0, ...)`` on the *global* reactor, pausing the transport in
        between: one reactor turn per bulk string (per route read). Here the rest
        is parsed in a loop in the same ``dataReceived`` call.
        """

        _rest: bytes | str = b""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.replyQueue = _ReplyQueue()

        def send_batch(self, request: bytes, count: int) -> Deferred[list[Any]]:
            """Write *request* (*count* encoded commands); fires with their *count* replies, in order.

            Error replies, and a lost connection's ``ConnectionError``, are in the list as exceptions.
            """
            self.transport.write(request)
            return self.replyQueue.expect(count)

        def setLineMode(self, extra: bytes | str = b"") -> None:
            self.line_mode = 1
            self._rest = extra

        def dataReceived(self, data: bytes, unpause: bool = False) -> None:
            super().dataReceived(data, unpause)
            while self._rest:
                rest, self._rest = self._rest, b""
                super().dataReceived(rest)

    return BatchingRedisProtocol


class _RedisProtocolFactory(Factory):
    """Builds one protocol per connection of the service's ClientService.

    txredisapi's protocol calls back into its factory when AUTH or SELECT is
    refused (``stopTrying()``, ``connectionError()``). Here that does not stop
    reconnecting: the refusal is logged and the backoff grows.
    """

    noisy = False
    #: Read by txredisapi on a refused AUTH/SELECT: not lazy, so it leaves the reporting to connectionError.
    isLazy = False

    def __init__(self, service: RedisRouteService) -> None:
        self._service = service

    def buildProtocol(self, addr: IAddress | None) -> Any:
        settings = self._service.settings
        protocol = _protocol_class()(
            charset="utf-8",
            replyTimeout=None,
            password=settings.password,
            dbid=settings.db or None,
            convertNumbers=False,
        )
        protocol.factory = self
        # The class attribute is the global reactor's callLater, bound when txredisapi was imported.
        protocol.callLater = self._service._reactor.callLater
        protocol.whenConnected().addCallback(self._service._setup)
        protocol.whenDisconnected().addCallback(self._service._lost)
        return protocol

    def stopTrying(self) -> None:
        """Called by txredisapi when AUTH or SELECT is refused; reconnecting goes on with backoff."""

    def connectionError(self, why: str) -> None:
        self._service._refused(why)


__all__ = [
    "RECONNECT_INITIAL",
    "RECONNECT_MAX",
    "SEPARATOR",
    "TRANSIENT_REPLIES",
    "RedisCommand",
    "RedisPipeline",
    "RedisRouteService",
    "RedisRouteStore",
    "RedisSettings",
    "encode_commands",
]
