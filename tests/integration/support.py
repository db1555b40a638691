"""Helpers for the integration tests: twistd processes, an HTTP JSON client and a JSON-frame WebSocket client.

Everything here takes the reactor as an argument (the tests import it inside
their methods) and waits for conditions, never for fixed delays: a process is
ready when it logs the line that says it listens, a frame is there when it
arrives. Every wait has a bound so a broken server fails the test instead of
hanging it.
"""

from __future__ import annotations

import collections
import io
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

#: How long any single wait in these helpers may take before it fails.
DEFAULT_WAIT = 20.0

GATEWAY_LISTENING = re.compile(r"Site starting on (\d+)")
LOGIC_LISTENING = re.compile(r"logic gRPC listening on \S+ \(port (\d+)\)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (prefer binding port 0 where the server can)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def twistd_path() -> str:
    """The ``twistd`` script of the Python running the tests."""
    return os.path.join(os.path.dirname(sys.executable), "twistd")


class WaitTimedOutError(AssertionError):
    """A bounded wait ran out; the message says what was awaited."""


def bounded(d: Deferred[Any], reactor: Any, seconds: float, what: str) -> Deferred[Any]:
    """*d*, failed with :class:`WaitTimedOutError` if it has not fired within *seconds*."""

    def timed_out(failure: Failure) -> Failure:
        from twisted.internet.defer import TimeoutError as DeferredTimeout

        if failure.check(DeferredTimeout):
            raise WaitTimedOutError(f"gave up after {seconds:g}s waiting for {what}")
        return failure

    d.addTimeout(seconds, reactor)
    d.addErrback(timed_out)
    return d


def wait_until(
    reactor: Any, check: Callable[[], bool | Deferred[bool]], timeout: float, what: str, interval: float = 0.05
) -> Deferred[None]:
    """Fires once *check* (which may return a Deferred) says true; polled every *interval* seconds, failed with
    :class:`WaitTimedOutError` after *timeout*. For conditions nothing notifies about (state in another process)."""
    deadline = reactor.seconds() + timeout

    async def poll() -> None:
        while True:
            if await maybeDeferred(check):
                return
            if reactor.seconds() >= deadline:
                raise WaitTimedOutError(f"gave up after {timeout:g}s waiting for {what}")
            await deferLater(reactor, interval, lambda: None)

    return Deferred.fromCoroutine(poll())


# Processes.


class ProcessExitedEarlyError(AssertionError):
    """The process ended while a test was still waiting for its output."""


class TwistdProcess(ProcessProtocol):
    """One ``twistd -n`` child: its merged output, line by line, and its exit.

    Start it with :func:`spawn_twistd`; :meth:`when_ended` fires with
    ``(exit_code, signal)`` once the process is gone and reaped.
    """

    def __init__(self, reactor: Any, name: str) -> None:
        self.reactor = reactor
        self.name = name
        self.lines: list[str] = []
        self._end_waiters: list[Deferred[tuple[int | None, int | None]]] = []
        self.exit: tuple[int | None, int | None] | None = None
        self._partial = b""
        self._waiters: list[tuple[re.Pattern[str], Deferred[re.Match[str]]]] = []

    @property
    def output(self) -> str:
        """Everything the process wrote so far (stdout and stderr)."""
        return "\n".join(self.lines)

    @property
    def running(self) -> bool:
        return self.exit is None

    def wait_for_line(self, pattern: re.Pattern[str], timeout: float = DEFAULT_WAIT) -> Deferred[re.Match[str]]:
        """Fires with the match of the first output line (already seen or to come) matching *pattern*."""
        for line in self.lines:
            match = pattern.search(line)
            if match is not None:
                return succeed(match)
        if not self.running:
            return fail(self._exited_early(pattern))
        d: Deferred[re.Match[str]] = Deferred()
        self._waiters.append((pattern, d))

        def forget(result: object) -> object:
            self._waiters = [(p, w) for p, w in self._waiters if w is not d]
            return result

        d.addBoth(forget)

        def explain(failure: Failure) -> Failure:
            if failure.check(WaitTimedOutError):
                raise WaitTimedOutError(f"{failure.value}; {self.name} said:\n{self.output}")
            return failure

        return bounded(d, self.reactor, timeout, f"{self.name} to log {pattern.pattern!r}").addErrback(explain)

    def wait_for_port(self, pattern: re.Pattern[str], timeout: float = DEFAULT_WAIT) -> Deferred[int]:
        """Fires with the port number in group 1 of the first line matching *pattern*."""
        return self.wait_for_line(pattern, timeout).addCallback(lambda match: int(match.group(1)))

    def terminate(self, timeout: float = DEFAULT_WAIT) -> Deferred[tuple[int | None, int | None]]:
        """Send SIGTERM (as an operator or init system would); fires with ``(exit_code, signal)``."""
        if self.running:
            assert self.transport is not None
            self.transport.signalProcess("TERM")
        return bounded(self.when_ended(), self.reactor, timeout, f"{self.name} to exit after SIGTERM")

    def kill(self) -> Deferred[None]:
        """Make sure the process is gone and reaped (test cleanup): SIGKILL if it still runs."""
        if self.running:
            assert self.transport is not None
            self.transport.signalProcess("KILL")
        return self.when_ended().addCallback(lambda _: None)

    def when_ended(self) -> Deferred[tuple[int | None, int | None]]:
        """Fires with ``(exit_code, signal)`` once the process has exited and been reaped."""
        if self.exit is not None:
            return succeed(self.exit)
        d: Deferred[tuple[int | None, int | None]] = Deferred()
        self._end_waiters.append(d)
        return d

    # ProcessProtocol

    def outReceived(self, data: bytes) -> None:
        self._received(data)

    def errReceived(self, data: bytes) -> None:
        self._received(data)

    def _received(self, data: bytes) -> None:
        *complete, self._partial = (self._partial + data).split(b"\n")
        for raw in complete:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            for pattern, d in list(self._waiters):
                match = pattern.search(line)
                if match is not None and not d.called:
                    d.callback(match)

    def processEnded(self, reason: Failure) -> None:
        if self._partial:
            self._received(b"\n")
        status = reason.value
        if isinstance(status, ProcessDone | ProcessTerminated):
            self.exit = (status.exitCode, status.signal)
        else:
            self.exit = (None, None)
        for pattern, d in list(self._waiters):
            if not d.called:
                d.errback(self._exited_early(pattern))
        waiters, self._end_waiters = self._end_waiters, []
        for waiter in waiters:
            waiter.callback(self.exit)

    def _exited_early(self, pattern: re.Pattern[str]) -> ProcessExitedEarlyError:
        return ProcessExitedEarlyError(
            f"{self.name} exited with {self.exit} before logging {pattern.pattern!r}; it said:\n{self.output}"
        )


def spawn_twistd(reactor: Any, name: str, args: list[str], cwd: str) -> TwistdProcess:
    """Run ``twistd -n --pidfile= --rundir=CWD ARGS``, logging to its stdout.

    The directory is given to twistd rather than as ``spawnProcess(path=...)``:
    with a ``path`` Twisted forks instead of using ``posix_spawnp``, and a fork
    of a process running gRPC threads can abort in the child ("epoll_wait
    error: Bad file descriptor") before it ever execs.
    """
    process = TwistdProcess(reactor, name)
    executable = twistd_path()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    reactor.spawnProcess(process, executable, [executable, "-n", "--pidfile=", f"--rundir={cwd}", *args], env=env)
    return process


# HTTP.


class HttpJsonClient:
    """POSTs JSON objects and reads JSON replies over keep-alive connections closed by :meth:`close`."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._agent = Agent(reactor, pool=self._pool)

    def post(self, url: str, body: dict[str, Any], timeout: float = DEFAULT_WAIT) -> Deferred[tuple[int, Any]]:
        """Fires with ``(status, decoded JSON body)``."""
        producer = FileBodyProducer(io.BytesIO(json.dumps(body).encode("utf-8")))
        d = self._agent.request(
            b"POST", url.encode("ascii"), Headers({b"content-type": [b"application/json"]}), producer
        )

        def read(response: Any) -> Deferred[tuple[int, Any]]:
            body: Deferred[bytes] = Deferred()
            response.deliverBody(_BodyCollector(body))
            return body.addCallback(lambda data: (response.code, json.loads(data)))

        d.addCallback(read)
        return bounded(d, self._reactor, timeout, f"POST {url}")

    def close(self) -> Deferred[None]:
        """Close the kept-alive connections; fires once they are closed."""
        closed: Deferred[None] = self._pool.closeCachedConnections()
        return closed


class _BodyCollector(Protocol):
    """Collects a whole response body (``readBody`` without its abort-on-error machinery)."""

    def __init__(self, finished: Deferred[bytes]) -> None:
        self._finished = finished
        self._chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):
            self._finished.callback(b"".join(self._chunks))
        else:
            self._finished.errback(reason)


# WebSocket.


class ConnectionClosedError(AssertionError):
    """The WebSocket closed while a frame was awaited."""


class _JsonFrameProtocol(WebSocketClientProtocol):
    factory: _JsonFrameFactory

    def onOpen(self) -> None:
        self.factory.client._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.client._frame_received(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.client._close_seen(wasClean, code, reason)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.factory.client._connection_lost()


class _JsonFrameFactory(WebSocketClientFactory):
    """Builds the one connection of a :class:`JsonFrameClient`."""

    protocol = _JsonFrameProtocol  # type: ignore[assignment]  # Autobahn protocols are untyped

    def __init__(self, client: JsonFrameClient, url: str, reactor: Any) -> None:
        super().__init__(url, reactor=reactor)
        self.client = client


class JsonFrameClient:
    """A WebSocket client speaking gochat's JSON frames.

    Received frames queue up; :meth:`next_frame` takes them in order.
    ``close_status`` fires with ``(was_clean, code, reason)`` when the
    WebSocket closes, whoever closes it.
    """

    def __init__(self, reactor: Any, name: str) -> None:
        self._reactor = reactor
        self.name = name
        self._protocol: _JsonFrameProtocol | None = None
        self._open: Deferred[JsonFrameClient] = Deferred()
        self._frames: collections.deque[dict[str, Any]] = collections.deque()
        self._waiters: collections.deque[Deferred[dict[str, Any]]] = collections.deque()
        self.close_status: Deferred[tuple[bool, int | None, str | None]] = Deferred()
        self._lost_waiters: list[Deferred[None]] = []
        self._gone = False
        self._handler: Callable[[dict[str, Any]], None] | None = None

    def on_frame(self, handler: Callable[[dict[str, Any]], None]) -> None:
        """Hand every frame to *handler* as it arrives (those already queued first) instead of queueing it for
        :meth:`next_frame`: for a client that sorts replies and pushes itself."""
        self._handler = handler
        while self._frames:
            handler(self._frames.popleft())

    def send_frame(self, frame: dict[str, Any]) -> None:
        """Send *frame* as one JSON text message."""
        assert self._protocol is not None, "not connected"
        self._protocol.sendMessage(json.dumps(frame).encode("utf-8"), isBinary=False)

    def next_frame(self, timeout: float = DEFAULT_WAIT) -> Deferred[dict[str, Any]]:
        """Fires with the next frame received (already queued or to come)."""
        if self._frames:
            return succeed(self._frames.popleft())
        if self._gone:
            return fail(ConnectionClosedError(f"{self.name}: connection closed"))
        d: Deferred[dict[str, Any]] = Deferred()
        self._waiters.append(d)

        def forget(result: object) -> object:
            if d in self._waiters:
                self._waiters.remove(d)
            return result

        d.addBoth(forget)
        return bounded(d, self._reactor, timeout, f"a frame on {self.name}")

    def close(self, timeout: float = DEFAULT_WAIT) -> Deferred[None]:
        """Start the closing handshake (1000) if open; fires once the TCP connection is gone."""
        if self._gone:
            return succeed(None)
        if self._protocol is not None:
            self._protocol.sendClose(1000)
        lost: Deferred[None] = Deferred()
        self._lost_waiters.append(lost)
        return bounded(lost, self._reactor, timeout, f"{self.name} to close")

    def abort(self) -> Deferred[None]:
        """Drop the TCP connection at once (cleanup after a failure); fires once it is gone."""
        transport: Any = None if self._protocol is None else self._protocol.transport
        if self._gone or transport is None:
            return succeed(None)
        lost: Deferred[None] = Deferred()
        self._lost_waiters.append(lost)
        transport.abortConnection()
        return lost

    # From the protocol.

    def _opened(self, protocol: _JsonFrameProtocol) -> None:
        self._protocol = protocol
        self._open.callback(self)

    def _frame_received(self, frame: dict[str, Any]) -> None:
        if self._handler is not None:
            self._handler(frame)
        elif self._waiters:
            self._waiters.popleft().callback(frame)
        else:
            self._frames.append(frame)

    def _close_seen(self, was_clean: bool, code: int | None, reason: str | None) -> None:
        if not self.close_status.called:
            self.close_status.callback((was_clean, code, reason))

    def _connection_lost(self) -> None:
        self._gone = True
        if not self.close_status.called:
            self.close_status.callback((False, None, "connection lost"))
        if not self._open.called:
            self._open.errback(ConnectionClosedError(f"{self.name}: closed before the WebSocket opened"))
        while self._waiters:
            self._waiters.popleft().errback(ConnectionClosedError(f"{self.name}: connection closed"))
        waiters, self._lost_waiters = self._lost_waiters, []
        for waiter in waiters:
            waiter.callback(None)


def connect(reactor: Any, url: str, name: str = "client", timeout: float = DEFAULT_WAIT) -> Deferred[JsonFrameClient]:
    """Open a WebSocket to *url* (``ws://host:port/path``); fires once the handshake is done."""
    parts = urlsplit(url)
    assert parts.scheme == "ws" and parts.hostname is not None and parts.port is not None, url
    client = JsonFrameClient(reactor, name)
    factory = _JsonFrameFactory(client, url, reactor=reactor)
    factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0, autoPingInterval=0)
    endpoint = TCP4ClientEndpoint(reactor, parts.hostname, parts.port, timeout=int(timeout))
    connected = endpoint.connect(factory)
    connected.addCallback(lambda _: client._open)
    return bounded(connected, reactor, timeout, f"{name} to open {url}")


# Per-test resources on the shared services (blocking: for setUp and cleanups).

#: The local services every production-mode test uses.
MYSQL_HOST, MYSQL_PORT = "127.0.0.1", 3306
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"


def create_database(name: str) -> None:
    """Create database *name* at the current schema (``python -m gochat.logic.migrate``, as an operator would)."""
    subprocess.run(
        [sys.executable, "-m", "gochat.logic.migrate", "--database", name], check=True, capture_output=True, timeout=60
    )


def drop_database(name: str) -> None:
    """Drop database *name* if it exists."""
    import pymysql

    connection = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="")
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        connection.close()


def delete_queue(name: str) -> None:
    """Delete RabbitMQ queue *name* (nothing happens if it is not there)."""
    subprocess.run(["rabbitmqctl", "-q", "delete_queue", name], capture_output=True, timeout=30, check=False)


#: Deletes every key matching ARGV[1] in one atomic step; returns how many there were.
DELETE_KEYS_SCRIPT = (
    "local n = 0 for _, key in ipairs(redis.call('KEYS', ARGV[1])) do n = n + redis.call('DEL', key) end return n"
)


def redis_glob(prefix: str) -> str:
    """The ``KEYS``/``SCAN`` pattern matching every key that starts with *prefix*."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"


def delete_redis_keys(prefix: str, timeout: float = 5.0) -> int:
    """Delete every Redis key starting with *prefix* (never the others: the Redis is shared); how many went."""
    from gochat.logic.redis_routes import encode_commands

    with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=timeout) as connection:
        connection.sendall(encode_commands([("EVAL", DELETE_KEYS_SCRIPT, "0", redis_glob(prefix))]))
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = connection.recv(4096)
            if not chunk:
                break
            reply += chunk
    if not reply.startswith(b":"):
        raise AssertionError(f"Redis refused to delete the keys of {prefix!r}: {reply!r}")
    return int(reply[1:].strip())
