"""The Redis route store without Redis: the commands it sends, the replies it reads, and its connection's failures.

The store runs over a recording pipeline and a :class:`Clock`; the service over a
:class:`MemoryReactorClock` whose connection is a :class:`StringTransport`, so
every byte written and every reply, timeout and disconnection is under the
test's control. The same code against a real Redis is in
``tests/integration/test_redis_routes.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gochat.errors import ErrorCode, GochatError
from gochat.logic.interfaces import Route
from gochat.logic.redis_routes import (
    RECONNECT_MAX,
    RedisCommand,
    RedisRouteService,
    RedisRouteStore,
    RedisSettings,
    encode_commands,
)


class RespCommandReader:
    """Reads the commands a client sends (RESP arrays of bulk strings), however the bytes are split."""

    def __init__(self) -> None:
        self._buffer = b""
        self.commands: list[list[bytes]] = []

    def feed(self, data: bytes) -> list[list[bytes]]:
        """Add *data*; the commands it completed (also appended to ``commands``)."""
        self._buffer += data
        done: list[list[bytes]] = []
        while True:
            command, used = self._parse(self._buffer)
            if command is None:
                break
            self._buffer = self._buffer[used:]
            done.append(command)
        self.commands.extend(done)
        return done

    @staticmethod
    def _parse(buffer: bytes) -> tuple[list[bytes] | None, int]:
        end = buffer.find(b"\r\n")
        if end < 0:
            return None, 0
        assert buffer[:1] == b"*", buffer[:20]
        count = int(buffer[1:end])
        position = end + 2
        args: list[bytes] = []
        for _ in range(count):
            end = buffer.find(b"\r\n", position)
            if end < 0:
                return None, 0
            assert buffer[position : position + 1] == b"$", buffer[position : position + 20]
            length = int(buffer[position + 1 : end])
            start = end + 2
            if len(buffer) < start + length + 2:
                return None, 0
            args.append(buffer[start : start + length])
            position = start + length + 2
        return args, position


def commands_in(data: bytes) -> list[list[bytes]]:
    reader = RespCommandReader()
    reader.feed(data)
    return reader.commands


class RecordingPipeline:
    """Stands in for the connection: records each batch, answers with the replies queued for it."""

    def __init__(self) -> None:
        self.batches: list[list[list[bytes]]] = []
        self.replies: list[list[Any]] = []
        self.failure: Exception | None = None

    def pipeline(self, commands: Sequence[RedisCommand]) -> Deferred[list[Any]]:
        self.batches.append(commands_in(encode_commands(commands)))
        if self.failure is not None:
            return fail(self.failure)
        replies = self.replies.pop(0) if self.replies else [1] * len(commands)
        return succeed(replies)


SETTINGS = RedisSettings(key_prefix="t:", route_ttl=90.0)


class StoreCommandTests(SynchronousTestCase):
    """What each call sends: one batch, the right commands, scores from the clock or *now*."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.redis = RecordingPipeline()
        self.store = RedisRouteStore(self.redis, self.clock, SETTINGS)

    def test_add_drops_expired_routes_adds_and_sets_the_key_ttl(self) -> None:
        """add(): one batch of ZREMRANGEBYSCORE up to now, ZADD at now+ttl, PEXPIRE ttl in milliseconds."""
        self.assertIsNone(self.successResultOf(self.store.add(7, Route("gw-1", "s-1"))))
        self.assertEqual(
            self.redis.batches,
            [
                [
                    [b"ZREMRANGEBYSCORE", b"t:routes:7", b"-inf", b"1000.0"],
                    [b"ZADD", b"t:routes:7", b"1090.0", b"gw-1\x1fs-1"],
                    [b"PEXPIRE", b"t:routes:7", b"90000"],
                ]
            ],
        )

    def test_remove_is_one_zrem(self) -> None:
        self.successResultOf(self.store.remove(7, Route("gw-1", "s-1")))
        self.assertEqual(self.redis.batches, [[[b"ZREM", b"t:routes:7", b"gw-1\x1fs-1"]]])

    def test_routes_reads_live_members_of_every_user_in_one_batch(self) -> None:
        """routes(): one ZRANGEBYSCORE (now +inf per distinct user, parsed into Routes; a user with none gets a set."""
        self.redis.replies.append([["gw-1\x1f007", "gw-2\x1fs"], [], ["gw-1\x1f"]])
        result = self.successResultOf(self.store.routes([1, 2, 1, 3]))
        self.assertEqual(result, {1: {Route("gw-1", "007"), Route("gw-2", "s")}, 2: set(), 3: {Route("gw-1", "")}})
        self.assertEqual(
            self.redis.batches,
            [[[b"ZRANGEBYSCORE", f"t:routes:{uid}".encode(), b"(1000.0", b"+inf"] for uid in (1, 2, 3)]],
        )

    def test_routes_skips_members_it_did_not_write(self) -> None:
        """A member without the separator (not written by the store) is logged and left out."""
        self.redis.replies.append([["no-separator", "gw\x1fs", b"\xff\x1fbinary"]])
        result = self.successResultOf(self.store.routes([1]))
        self.assertEqual(result, {1: {Route("gw", "s"), Route("\ufffd", "binary")}})

    def test_routes_and_online_of_nobody_send_nothing(self) -> None:
        self.assertEqual(self.successResultOf(self.store.routes([])), {})
        self.assertEqual(self.successResultOf(self.store.online(iter(()))), {})
        self.successResultOf(self.store.refresh("gw", [], 1.0))
        self.assertEqual(self.redis.batches, [])

    def test_online_counts_live_members(self) -> None:
        self.redis.replies.append([2, 0])
        self.assertEqual(self.successResultOf(self.store.online([5, 6])), {5: True, 6: False})
        self.assertEqual(
            self.redis.batches,
            [[[b"ZCOUNT", b"t:routes:5", b"(1000.0", b"+inf"], [b"ZCOUNT", b"t:routes:6", b"(1000.0", b"+inf"]]],
        )

    def test_refresh_sends_two_commands_per_user_not_one_per_session(self) -> None:
        """refresh(): one batch; per user one ZADD with all its sessions at now+ttl (plain ZADD: missing routes
        come back) and one PEXPIRE; the clock is not read, *now* is the caller's."""
        sessions = [(1, "a"), (2, "b"), (1, "c"), (3, "d"), (2, "e")]
        self.successResultOf(self.store.refresh("gw-9", sessions, now=50.5))
        self.assertEqual(
            self.redis.batches,
            [
                [
                    [b"ZADD", b"t:routes:1", b"140.5", b"gw-9\x1fa", b"140.5", b"gw-9\x1fc"],
                    [b"PEXPIRE", b"t:routes:1", b"90000"],
                    [b"ZADD", b"t:routes:2", b"140.5", b"gw-9\x1fb", b"140.5", b"gw-9\x1fe"],
                    [b"PEXPIRE", b"t:routes:2", b"90000"],
                    [b"ZADD", b"t:routes:3", b"140.5", b"gw-9\x1fd"],
                    [b"PEXPIRE", b"t:routes:3", b"90000"],
                ]
            ],
        )

    def test_ids_with_the_separator_are_refused(self) -> None:
        """ValueError before anything is sent, from every method that writes an id."""
        for call in (
            lambda: self.store.add(1, Route("g\x1f", "s")),
            lambda: self.store.add(1, Route("g", "s\x1f")),
            lambda: self.store.remove(1, Route("g\x1fx", "s")),
            lambda: self.store.refresh("g\x1f", [(1, "s")], 0.0),
            lambda: self.store.refresh("g", [(1, "ok"), (2, "s\x1f")], 0.0),
        ):
            self.assertRaises(ValueError, call)
        self.assertEqual(self.redis.batches, [])

    def test_strings_stay_strings(self) -> None:
        """Numeric-looking and non-ASCII ids go out as UTF-8 text and are read back as the same text."""
        route = Route("0x10", "007")
        self.successResultOf(self.store.add(1, Route("gw-ñ", "1e3")))
        self.assertEqual(self.redis.batches[0][1][3], "gw-ñ\x1f1e3".encode())
        self.redis.replies.append([["0x10\x1f007"]])
        self.assertEqual(self.successResultOf(self.store.routes([1])), {1: {route}})

    def test_failures_pass_through(self) -> None:
        self.redis.failure = GochatError(ErrorCode.UNAVAILABLE, "down")
        failure = self.failureResultOf(self.store.routes([1]), GochatError)
        self.assertEqual(failure.value.code, ErrorCode.UNAVAILABLE)

    def test_settings_are_checked(self) -> None:
        for bad in ({"route_ttl": 0}, {"reply_timeout": -1.0}, {"connect_timeout": float("inf")}, {"db": -1}):
            self.assertRaises(ValueError, RedisSettings, **bad)


class EncodingTests(SynchronousTestCase):
    def test_encode_commands(self) -> None:
        """RESP arrays of bulk strings: str as UTF-8, int in decimal, bytes as they are."""
        self.assertEqual(
            encode_commands([("ZADD", b"k\r\n", 12, "é"), ("PING",)]),
            b"*4\r\n$4\r\nZADD\r\n$3\r\nk\r\n\r\n$2\r\n12\r\n$2\r\n\xc3\xa9\r\n*1\r\n$4\r\nPING\r\n",
        )


class Connected:
    """A service on a MemoryReactorClock whose connection attempt was answered with a StringTransport."""

    def __init__(self, settings: RedisSettings = SETTINGS) -> None:
        self.reactor = MemoryReactorClock()
        self.service = RedisRouteService(self.reactor, settings)
        self.service.startService()

    def accept(self, ping_reply: bytes = b"+PONG\r\n") -> tuple[Any, StringTransport]:
        """Answer the latest connection attempt; the protocol and its transport, the setup PING answered."""
        host, port, factory, _timeout, _bind = self.reactor.tcpClients[-1]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport()
        protocol.makeConnection(transport)
        assert commands_in(transport.value())[-1] == [b"PING"], transport.value()
        transport.clear()
        protocol.dataReceived(ping_reply)
        return protocol, transport


class ServiceTests(SynchronousTestCase):
    """The connection: batches in one write, replies in order, failures as ``unavailable``, and no hanging."""

    def setUp(self) -> None:
        self.net = Connected()
        self.service = self.net.service

    def assert_unavailable(self, d: Deferred[Any]) -> GochatError:
        failure = self.failureResultOf(d, GochatError)
        self.assertEqual(failure.value.code, ErrorCode.UNAVAILABLE, failure.value)
        error: GochatError = failure.value
        return error

    def test_calls_fail_at_once_until_connected(self) -> None:
        """Before the connection is set up (and before start) calls fail with unavailable, they never wait."""
        self.assertFalse(self.service.connected)
        self.assert_unavailable(self.service.store.routes([1]))
        waiting = self.service.when_connected()
        self.assertNoResult(waiting)
        self.net.accept()
        self.successResultOf(waiting)
        self.successResultOf(self.service.when_connected())
        self.assertTrue(self.service.connected)

    def test_refresh_is_written_at_once_and_fires_with_the_last_reply(self) -> None:
        """All commands of a batch are written before any reply; the batch fires once all replies are in."""
        protocol, transport = self.net.accept()
        sessions = [(uid, f"s{uid}") for uid in range(100)]
        done = self.service.store.refresh("gw", sessions, 0.0)
        written = commands_in(transport.value())
        self.assertEqual(len(written), 200)
        self.assertEqual({c[0] for c in written}, {b"ZADD", b"PEXPIRE"})
        replies = b":1\r\n" * 199
        for byte in range(len(replies)):
            protocol.dataReceived(replies[byte : byte + 1])
        self.assertNoResult(done)
        protocol.dataReceived(b":1\r\n")
        self.assertIsNone(self.successResultOf(done))

    def test_batches_get_their_own_replies_however_data_is_split(self) -> None:
        """Bulk and multi-bulk replies split anywhere (or all in one chunk) reach the right batch, text intact."""
        for split in (1, 3, 1000):
            protocol, _ = self.net.accept()
            first = self.service.store.routes([1, 2])
            second = self.service.store.online([1])
            data = b"*2\r\n$5\r\ngw\x1f07\r\n$6\r\ngw\x1f1e3\r\n*0\r\n:2\r\n"
            for start in range(0, len(data), split):
                protocol.dataReceived(data[start : start + split])
            self.assertEqual(self.successResultOf(first), {1: {Route("gw", "07"), Route("gw", "1e3")}, 2: set()})
            self.assertEqual(self.successResultOf(second), {1: True})
            protocol.connectionLost(Failure(ConnectionDone()))
            self.net.reactor.advance(RECONNECT_MAX * 2)

    def test_no_reactor_turn_per_bulk_reply(self) -> None:
        """Every reply in a chunk is parsed in that dataReceived call (txredisapi alone defers with callLater)."""
        protocol, _ = self.net.accept()
        done = self.service.store.routes(range(50))
        protocol.dataReceived(b"".join(b"*1\r\n$4\r\ng\x1f%02d\r\n" % uid for uid in range(50)))
        self.assertEqual(self.successResultOf(done), {uid: {Route("g", f"{uid:02d}")} for uid in range(50)})
        self.assertEqual(self.net.reactor.getDelayedCalls(), [])

    def test_error_replies(self) -> None:
        """A transient refusal is unavailable; any other is internal; the connection goes on."""
        protocol, _ = self.net.accept()
        loading = self.service.store.online([1])
        wrong = self.service.store.online([1, 2])
        fine = self.service.store.online([3])
        protocol.dataReceived(b"-LOADING Redis is loading the dataset in memory\r\n")
        protocol.dataReceived(b":1\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n:1\r\n")
        self.assertIn("LOADING", self.assert_unavailable(loading).message)
        failure = self.failureResultOf(wrong, GochatError)
        self.assertEqual(failure.value.code, ErrorCode.INTERNAL)
        self.assertEqual(self.successResultOf(fine), {3: True})

    def test_no_reply_in_time_is_unavailable_and_drops_the_connection(self) -> None:
        """After reply_timeout the batch fails, the connection is aborted, and later batches fail with it."""
        protocol, transport = self.net.accept()
        first = self.service.store.routes([1])
        self.net.reactor.advance(SETTINGS.reply_timeout / 2)
        second = self.service.store.routes([2])
        self.net.reactor.advance(SETTINGS.reply_timeout / 2)
        self.assertIn("did not reply", self.assert_unavailable(first).message)
        self.assertTrue(transport.disconnected)
        # Not used again even before the abort has gone through: calls fail at once, waiters wait.
        self.assertFalse(self.service.connected)
        self.assert_unavailable(self.service.store.routes([3]))
        self.assertNoResult(self.service.when_connected())
        self.assertNoResult(second)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assert_unavailable(second)

    def test_connection_lost_fails_the_batches_in_flight_and_reconnects(self) -> None:
        protocol, _ = self.net.accept()
        attempts = len(self.net.reactor.tcpClients)
        pending = self.service.store.add(1, Route("g", "s"))
        protocol.dataReceived(b":0\r\n")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertIn("lost the connection", self.assert_unavailable(pending).message)
        self.assert_unavailable(self.service.store.online([1]))
        self.net.reactor.advance(RECONNECT_MAX * 2)
        self.assertEqual(len(self.net.reactor.tcpClients), attempts + 1)
        protocol, _ = self.net.accept()
        done = self.service.store.online([1])
        protocol.dataReceived(b":1\r\n")
        self.assertEqual(self.successResultOf(done), {1: True})

    def test_a_cancelled_batch_still_takes_its_replies(self) -> None:
        """A caller that cancels does not shift the replies of the batches after it."""
        protocol, _ = self.net.accept()
        first = self.service.store.online([1, 2])
        second = self.service.store.online([3])
        first.cancel()
        self.failureResultOf(first)
        protocol.dataReceived(b":1\r\n:1\r\n:0\r\n")
        self.assertEqual(self.successResultOf(second), {3: False})

    def test_failed_setup_backs_off_and_retries(self) -> None:
        """A connection that does not answer PING properly is dropped and counts towards the backoff."""
        protocol, transport = self.net.accept(ping_reply=b"-ERR max number of clients reached\r\n")
        self.assertTrue(transport.disconnected)
        self.assertFalse(self.service.connected)
        protocol.connectionLost(Failure(ConnectionDone()))
        attempts = len(self.net.reactor.tcpClients)
        # A lost working connection is retried after 0.5-0.75 s; a failed setup counts one more step.
        self.net.reactor.advance(0.9)
        self.assertEqual(len(self.net.reactor.tcpClients), attempts, "retried before backing off")
        self.net.reactor.advance(RECONNECT_MAX * 2)
        self.assertEqual(len(self.net.reactor.tcpClients), attempts + 1)
        self.net.accept()
        self.assertTrue(self.service.connected)

    def test_setup_without_ping_reply_times_out(self) -> None:
        host, port, factory, _timeout, _bind = self.net.reactor.tcpClients[-1]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.net.reactor.advance(SETTINGS.connect_timeout)
        self.assertTrue(transport.disconnected)
        self.assertFalse(self.service.connected)

    def test_auth_and_select_come_before_ping(self) -> None:
        net = Connected(RedisSettings(password="sesame", db=3))
        host, port, factory, _timeout, _bind = net.reactor.tcpClients[-1]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertEqual(commands_in(transport.value()), [[b"AUTH", b"sesame"]])
        protocol.dataReceived(b"+OK\r\n")
        protocol.dataReceived(b"+OK\r\n")
        self.assertEqual(commands_in(transport.value()), [[b"AUTH", b"sesame"], [b"SELECT", b"3"], [b"PING"]])
        protocol.dataReceived(b"+PONG\r\n")
        self.assertTrue(net.service.connected)

    def test_refused_auth_is_retried_with_backoff(self) -> None:
        net = Connected(RedisSettings(password="wrong"))
        host, port, factory, _timeout, _bind = net.reactor.tcpClients[-1]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertFalse(net.service.connected)
        attempts = len(net.reactor.tcpClients)
        net.reactor.advance(RECONNECT_MAX * 2)
        self.assertEqual(len(net.reactor.tcpClients), attempts + 1)

    def test_stop_drains_then_closes(self) -> None:
        """stopService refuses new calls, lets the batch in flight finish, then closes the connection."""
        protocol, transport = self.net.accept()
        pending = self.service.store.online([1])
        stopped = self.service.stopService()
        self.assert_unavailable(self.service.store.online([2]))
        self.assertNoResult(stopped)
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b":1\r\n")
        self.assertEqual(self.successResultOf(pending), {1: True})
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(stopped)

    def test_stop_fails_connection_waiters(self) -> None:
        waiting = self.service.when_connected()
        self.successResultOf(self.service.stopService())
        failure = self.failureResultOf(waiting, GochatError)
        self.assertEqual(failure.value.code, ErrorCode.SHUTTING_DOWN)
