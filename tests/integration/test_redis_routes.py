"""The production route store on a real Redis: routes, devices, TTL expiry and refresh, presence, text kept as
text, one round trip per refresh, rebuilding after a flush, and failing fast when Redis is away.

Needs Redis (``GOCHAT_REDIS_HOST``/``GOCHAT_REDIS_PORT``, default 127.0.0.1:6379):
skipped with the reason when it is unreachable, failed instead when
``GOCHAT_REQUIRE_SERVICES=1``. Other things use that Redis: every test keeps
its keys under a prefix of its own, ``gochat-test-<uuid>:``, deletes only
those (a "flush" here deletes the test's keys, never the server's), and
removes them afterwards. Expiry is driven by a :class:`Clock` given to the
store (route scores are expiry times), so nothing waits for time to pass.
Outages go through a TCP proxy standing in for the network path: it can cut
the connection, refuse new ones, and hold Redis's replies back.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.task import Clock
from twisted.protocols import portforward
from twisted.trial.unittest import TestCase

from gochat.errors import ErrorCode, GochatError
from gochat.logic.interfaces import Route
from gochat.logic.redis_routes import RedisRouteService, RedisRouteStore, RedisSettings
from tests.integration.services import require_service
from tests.integration.support import bounded, free_port
from tests.test_redis_routes_unit import RespCommandReader

REDIS_HOST = os.environ.get("GOCHAT_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("GOCHAT_REDIS_PORT", "6379"))

#: Bound on any single wait in these tests.
WAIT = 10.0
#: How soon a call must fail when Redis cannot be reached ("promptly", with room for a loaded CI box).
PROMPTLY = 1.0


# A proxy standing in for the network path to Redis.


class RedisProxyServer(portforward.ProxyServer):
    """The client's side of one proxied connection: counts the commands it sends."""

    factory: RedisProxy

    def connectionMade(self) -> None:
        proxy = self.factory
        if not proxy.up:
            self.transport.abortConnection()
            proxy.refused += 1
            return
        self.commands = RespCommandReader()
        proxy.live.add(self)
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        self.factory.commands.extend(self.commands.feed(data))
        super().dataReceived(data)
        self.factory.check_conditions()

    def connectionLost(self, reason: Any) -> None:
        self.factory.live.discard(self)
        super().connectionLost(reason)
        self.factory.check_conditions()


class RedisProxyClient(portforward.ProxyClient):
    """Redis's side of one proxied connection: its replies are held back while the proxy holds."""

    peer: RedisProxyServer

    def connectionMade(self) -> None:
        self.proxy = self.peer.factory
        self.proxy.upstream.add(self)
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        if self.proxy.holding:
            self.proxy.held.append((self.peer, data))
        else:
            super().dataReceived(data)

    def connectionLost(self, reason: Any) -> None:
        self.proxy.upstream.discard(self)
        super().connectionLost(reason)
        self.proxy.check_conditions()


class RedisProxyClientFactory(portforward.ProxyClientFactory):
    protocol = RedisProxyClient
    noisy = False


class RedisProxy(portforward.ProxyFactory):
    """A TCP proxy to Redis that can go down (cut, refuse) and come back, and hold replies back."""

    protocol = RedisProxyServer
    noisy = False

    def __init__(self, reactor: Any) -> None:
        super().__init__(REDIS_HOST, REDIS_PORT)
        self.reactor = reactor
        self.up = True
        self.holding = False
        self.held: list[tuple[RedisProxyServer, bytes]] = []
        self.live: set[RedisProxyServer] = set()
        self.upstream: set[RedisProxyClient] = set()
        self.refused = 0
        self.commands: list[list[bytes]] = []
        self._conditions: list[tuple[Callable[[], bool], Deferred[None]]] = []

    def buildProtocol(self, addr: Any) -> RedisProxyServer:
        server = RedisProxyServer()
        server.factory = self
        server.reactor = self.reactor
        server.clientProtocolFactory = RedisProxyClientFactory
        return server

    def cut(self) -> None:
        """The outage: open connections die, new ones are refused."""
        self.up = False
        for server in list(self.live):
            server.transport.abortConnection()

    def restore(self) -> None:
        self.up = True

    def hold(self) -> None:
        """Keep Redis's replies from reaching the client (a server, or a path, that stopped answering)."""
        self.holding = True

    def release(self) -> None:
        """Let replies through again, held ones first (dropped if their connection is gone)."""
        self.holding = False
        held, self.held = self.held, []
        for server, data in held:
            if server in self.live:
                server.transport.write(data)

    def close(self) -> Deferred[None]:
        """Drop every connection, both sides; fires once all are closed (cleanup)."""
        self.cut()
        self.release()
        for client in list(self.upstream):
            client.transport.abortConnection()
        return self.when(lambda: not self.live and not self.upstream, "the proxy's connections to close")

    def when(self, predicate: Callable[[], bool], what: str) -> Deferred[None]:
        """Fires once *predicate* holds, checked whenever a client sends data or a connection closes;
        fails after ``WAIT``."""
        if predicate():
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._conditions.append((predicate, d))
        return bounded(d, self.reactor, WAIT, what)

    def check_conditions(self) -> None:
        for predicate, d in list(self._conditions):
            if predicate():
                self._conditions.remove((predicate, d))
                if not d.called:
                    d.callback(None)


class RedisRouteStoreTests(TestCase):
    timeout = 30

    def setUp(self) -> Deferred[None]:
        from twisted.internet import reactor

        require_service("Redis", REDIS_HOST, REDIS_PORT)
        self.reactor = reactor
        self.prefix = f"gochat-test-{uuid.uuid4().hex}:"
        self.admin = self.service()
        self.addCleanup(self.delete_test_keys)
        return self.connected(self.admin)

    # Helpers.

    def settings(self, port: int = REDIS_PORT, **overrides: Any) -> RedisSettings:
        return RedisSettings(host=REDIS_HOST, port=port, key_prefix=self.prefix, **overrides)

    def service(self, port: int = REDIS_PORT, **overrides: Any) -> RedisRouteService:
        """A started service on the test's prefix (stopped at cleanup)."""
        service = RedisRouteService(self.reactor, self.settings(port, **overrides))
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def connected(self, service: RedisRouteService) -> Deferred[None]:
        return bounded(
            service.when_connected(), self.reactor, WAIT, f"a connection to Redis on {service.settings.port}"
        )

    async def started(self, **overrides: Any) -> RedisRouteService:
        service = self.service(**overrides)
        await self.connected(service)
        return service

    def proxy(self) -> tuple[RedisProxy, int]:
        """A proxy to Redis on a port of its own (closed at cleanup)."""
        proxy = RedisProxy(self.reactor)
        port = self.reactor.listenTCP(0, proxy, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(proxy.close)
        return proxy, port.getHost().port

    async def own_keys(self) -> list[str]:
        """Every key under the test's prefix, found with SCAN (never KEYS: the server is shared)."""
        keys: list[str] = []
        cursor = "0"
        while True:
            [(cursor, batch)] = await self.admin.pipeline([("SCAN", cursor, "MATCH", self.prefix + "*", "COUNT", 1000)])
            keys.extend(batch)
            if cursor == "0":
                return keys

    async def delete_test_keys(self) -> int:
        """The test's "FLUSHDB": deletes the test's keys only; how many there were."""
        keys = await self.own_keys()
        for start in range(0, len(keys), 1000):
            await self.admin.pipeline([("DEL", *keys[start : start + 1000])])
        return len(keys)

    async def assert_unavailable_promptly(self, call: Callable[[], Deferred[Any]]) -> None:
        started = self.reactor.seconds()
        with self.assertRaises(GochatError) as caught:
            await bounded(call(), self.reactor, WAIT, "a call to an unreachable Redis")
        elapsed = self.reactor.seconds() - started
        self.assertEqual(caught.exception.code, ErrorCode.UNAVAILABLE, caught.exception)
        self.assertLess(elapsed, PROMPTLY, f"took {elapsed:.3f}s to fail")

    # Routes.

    async def test_add_remove_and_routes_for_many_users_in_one_call(self) -> None:
        """Routes of 300 users come back from one routes() call (users without any get an empty set);
        removed ones are gone, and removing what is not there is harmless."""
        store = (await self.started()).store
        users = range(1, 301)
        await gatherResults([store.add(uid, Route(f"gw-{uid % 3}", f"s-{uid}")) for uid in users])
        routes = await store.routes([*users, 9999])
        self.assertEqual(routes, {**{uid: {Route(f"gw-{uid % 3}", f"s-{uid}")} for uid in users}, 9999: set()})
        await gatherResults([store.remove(uid, Route(f"gw-{uid % 3}", f"s-{uid}")) for uid in users if uid % 2])
        await store.remove(1, Route("gw-1", "s-1"))
        await store.remove(9999, Route("gw-0", "nothing"))
        routes = await store.routes(users)
        self.assertEqual(
            routes, {uid: {Route(f"gw-{uid % 3}", f"s-{uid}")} if uid % 2 == 0 else set() for uid in users}
        )
        self.assertEqual(
            sorted(await self.own_keys()), sorted(store.key(uid).decode() for uid in users if uid % 2 == 0)
        )

    async def test_multiple_devices(self) -> None:
        """One user with sessions on several gateways gets them all; removing one leaves the others."""
        store = (await self.started()).store
        phone, laptop, tablet = Route("gw-a", "phone"), Route("gw-b", "laptop"), Route("gw-a", "tablet")
        for route in (phone, laptop, tablet):
            await store.add(42, route)
        await store.add(42, phone)
        self.assertEqual(await store.routes([42]), {42: {phone, laptop, tablet}})
        await store.remove(42, laptop)
        self.assertEqual(await store.routes([42]), {42: {phone, tablet}})

    async def test_strings_stay_strings(self) -> None:
        """Ids that look like numbers come back as the same text (the convertNumbers trap), and so do
        non-ASCII, empty and spaced ones."""
        store = (await self.started()).store
        routes = {
            Route("007", "007"),
            Route("00123", "1e3"),
            Route("gw", "-0"),
            Route("gw", "1.50"),
            Route("gw", "nan"),
            Route("gw", "inf"),
            Route("gw", "0x1f"),
            Route("gw", ""),
            Route("gw-ñ", "séance \N{GRINNING FACE}"),
        }
        for route in routes:
            await store.add(7, route)
        self.assertEqual(await store.routes([7]), {7: routes})
        self.assertEqual(await store.online([7]), {7: True})

    async def test_ids_with_the_separator_are_refused(self) -> None:
        store = (await self.started()).store
        with self.assertRaises(ValueError):
            store.add(1, Route("gw\x1fx", "s"))
        with self.assertRaises(ValueError):
            store.refresh("gw", [(1, "s\x1f")], 0.0)
        self.assertEqual(await self.own_keys(), [])

    # Expiry, refresh, presence.

    async def clocked(self, ttl: float = 90.0) -> tuple[RedisRouteStore, Clock]:
        """A store on a real connection whose idea of now is a Clock (at a realistic epoch time)."""
        service = await self.started(route_ttl=ttl)
        clock = Clock()
        clock.advance(1_700_000_000.0)
        return RedisRouteStore(service, clock, service.settings), clock

    async def test_routes_expire_after_the_ttl(self) -> None:
        """A route not refreshed is gone once route_ttl has passed, from routes() and online(); the key
        itself carries a TTL so Redis drops it too."""
        store, clock = await self.clocked(ttl=90.0)
        await store.add(1, Route("gw", "old"))
        clock.advance(30.0)
        await store.add(1, Route("gw", "new"))
        clock.advance(59.0)
        self.assertEqual(await store.routes([1]), {1: {Route("gw", "old"), Route("gw", "new")}})
        clock.advance(1.0)
        self.assertEqual(await store.routes([1]), {1: {Route("gw", "new")}})
        self.assertEqual(await store.online([1]), {1: True})
        [pttl] = await self.admin.pipeline([("PTTL", store.key(1))])
        self.assertTrue(0 < pttl <= 90_000, pttl)
        clock.advance(30.0)
        self.assertEqual(await store.routes([1]), {1: set()})
        self.assertEqual(await store.online([1]), {1: False})
        # The next add drops the expired members.
        await store.add(1, Route("gw", "newest"))
        [members] = await self.admin.pipeline([("ZRANGE", store.key(1), 0, -1)])
        self.assertEqual(members, ["gw\x1fnewest"])

    async def test_refresh_keeps_routes_alive_past_the_ttl(self) -> None:
        """Refreshed routes live route_ttl past the refresh; the gateway's sessions it did not list expire."""
        store, clock = await self.clocked(ttl=90.0)
        for uid in (1, 2, 3):
            await store.add(uid, Route("gw-a", f"s{uid}"))
        await store.add(1, Route("gw-b", "other-gateway"))
        clock.advance(60.0)
        await store.refresh("gw-a", [(1, "s1"), (2, "s2")], clock.seconds())
        clock.advance(60.0)  # 120 s after the adds: only the refreshed routes are left
        self.assertEqual(await store.routes([1, 2, 3]), {1: {Route("gw-a", "s1")}, 2: {Route("gw-a", "s2")}, 3: set()})
        self.assertEqual(await store.online([1, 2, 3]), {1: True, 2: True, 3: False})
        clock.advance(30.0)
        self.assertEqual(await store.online([1, 2]), {1: False, 2: False})

    async def test_online(self) -> None:
        store = (await self.started()).store
        await store.add(1, Route("gw", "a"))
        await store.add(1, Route("gw", "b"))
        await store.add(2, Route("gw", "c"))
        self.assertEqual(await store.online([1, 2, 3]), {1: True, 2: True, 3: False})
        await store.remove(1, Route("gw", "a"))
        await store.remove(2, Route("gw", "c"))
        self.assertEqual(await store.online([1, 2, 3]), {1: True, 2: False, 3: False})

    async def test_refresh_is_one_round_trip(self) -> None:
        """With Redis's replies held back, a refresh of 750 sessions of 250 users still sends all of its
        commands (two per user, none per session): it never waits for a reply in between. Released,
        it completes without sending anything more."""
        proxy, port = self.proxy()
        service = await self.started(port=port)
        sessions = [(uid, f"s{uid}-{device}") for uid in range(1, 251) for device in range(3)]
        before = len(proxy.commands)
        proxy.hold()
        refreshed = service.store.refresh("gw-a", sessions, time.time())
        await proxy.when(lambda: len(proxy.commands) - before >= 500, "the refresh's 500 commands")
        sent = proxy.commands[before:]
        self.assertEqual(len(sent), 500)
        self.assertEqual([command[0] for command in sent], [b"ZADD", b"PEXPIRE"] * 250)
        self.assertFalse(refreshed.called)
        proxy.release()
        await bounded(refreshed, self.reactor, WAIT, "the refresh's replies")
        self.assertEqual(len(proxy.commands), before + 500)
        routes = await service.store.routes(range(1, 251))
        self.assertEqual(routes, {uid: {Route("gw-a", f"s{uid}-{d}") for d in range(3)} for uid in range(1, 251)})

    async def test_refresh_rebuilds_after_a_flush(self) -> None:
        """Routes lost in Redis (here: the test's keys deleted) come back with the next refresh."""
        store = (await self.started()).store
        sessions = [(uid, f"s{uid}") for uid in range(1, 51)]
        for uid, session_id in sessions:
            await store.add(uid, Route("gw-a", session_id))
        self.assertEqual(await self.delete_test_keys(), 50)
        self.assertEqual(await store.routes(range(1, 51)), {uid: set() for uid in range(1, 51)})
        await store.refresh("gw-a", sessions, time.time())
        self.assertEqual(await store.routes(range(1, 51)), {uid: {Route("gw-a", f"s{uid}")} for uid in range(1, 51)})
        [pttl] = await self.admin.pipeline([("PTTL", store.key(1))])
        self.assertTrue(0 < pttl <= 90_000, pttl)

    async def test_remove_wins_over_refresh_in_call_order(self) -> None:
        """A refresh sent before a remove, both in flight at once, does not bring the route back (commands go
        out in call order on one connection); a refresh after it does not list the session (the gateway
        drops a session from its list before removing it)."""
        store = (await self.started()).store
        a, b = Route("gw", "a"), Route("gw", "b")
        await store.add(1, a)
        await store.add(1, b)
        await gatherResults([store.refresh("gw", [(1, "a"), (1, "b")], time.time()), store.remove(1, a)])
        self.assertEqual(await store.routes([1]), {1: {b}})
        await store.refresh("gw", [(1, "b")], time.time())
        self.assertEqual(await store.routes([1]), {1: {b}})

    # Redis away.

    async def test_unreachable_redis_fails_fast(self) -> None:
        """Pointed at a closed port (connection attempts failing in the background), every call fails
        with unavailable at once: none waits for a connection."""
        service = self.service(port=free_port())
        store = service.store
        await self.assert_unavailable_promptly(lambda: store.add(1, Route("gw", "s")))
        await self.assert_unavailable_promptly(lambda: store.routes([1, 2]))
        await self.assert_unavailable_promptly(lambda: store.online([1]))
        await self.assert_unavailable_promptly(lambda: store.refresh("gw", [(1, "s")], time.time()))
        await self.assert_unavailable_promptly(lambda: store.remove(1, Route("gw", "s")))
        self.assertFalse(service.connected)

    async def test_outage_then_routes_rebuild_as_gateways_refresh(self) -> None:
        """The path to Redis goes down: calls fail with unavailable promptly (the batch in flight too).
        Redis comes back empty (a restart): the connection is made again and the next refresh rebuilds."""
        proxy, port = self.proxy()
        service = await self.started(port=port)
        store = service.store
        sessions = [(uid, f"s{uid}") for uid in range(1, 21)]
        await store.refresh("gw-a", sessions, time.time())
        proxy.cut()
        await self.assert_unavailable_promptly(lambda: store.routes([1]))
        await self.assert_unavailable_promptly(lambda: store.refresh("gw-a", sessions, time.time()))
        self.assertFalse(service.connected)
        self.assertEqual(await self.delete_test_keys(), 20)
        proxy.restore()
        await self.connected(service)
        self.assertEqual(await store.online(range(1, 21)), dict.fromkeys(range(1, 21), False))
        await store.refresh("gw-a", sessions, time.time())
        self.assertEqual(await store.routes(range(1, 21)), {uid: {Route("gw-a", f"s{uid}")} for uid in range(1, 21)})

    async def test_redis_not_answering_fails_after_the_reply_timeout(self) -> None:
        """Replies that never come fail the call with unavailable after reply_timeout, not never; the
        connection is dropped and made again once Redis answers."""
        proxy, port = self.proxy()
        service = await self.started(port=port, reply_timeout=0.3)
        proxy.hold()
        started = self.reactor.seconds()
        with self.assertRaises(GochatError) as caught:
            await bounded(service.store.routes([1]), self.reactor, WAIT, "the reply timeout")
        self.assertEqual(caught.exception.code, ErrorCode.UNAVAILABLE)
        self.assertIn("did not reply", caught.exception.message)
        self.assertLess(self.reactor.seconds() - started, 0.3 + PROMPTLY)
        proxy.release()
        await self.connected(service)
        await service.store.add(1, Route("gw", "s"))
        self.assertEqual(await service.store.routes([1]), {1: {Route("gw", "s")}})

    # Throughput (printed, never asserted).

    async def test_measure_refresh_and_routes_throughput(self) -> None:
        """Prints how long one refresh of 10,000 sessions (of 10,000 users) and routes() of 1,000 users take."""
        store = (await self.started()).store
        sessions = [(uid, f"session-{uid}") for uid in range(1, 10_001)]
        timings: list[float] = []
        for _ in range(3):
            started = time.perf_counter()
            await store.refresh("gw-bench", sessions, time.time())
            timings.append(time.perf_counter() - started)
        best = min(timings)
        print(
            f"\nredis routes: refresh of {len(sessions):,} sessions: best {best * 1000:.1f} ms "
            f"({len(sessions) / best:,.0f} sessions/s; runs {', '.join(f'{t * 1000:.1f}' for t in timings)} ms)"
        )
        for uid in range(1, 501):
            await store.add(uid, Route("gw-other", f"second-device-{uid}"))
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            routes = await store.routes(range(1, 1001))
            timings.append(time.perf_counter() - started)
        best = min(timings)
        routes_found = sum(len(r) for r in routes.values())
        print(
            f"redis routes: routes() of 1,000 users ({routes_found:,} routes): best {best * 1000:.1f} ms "
            f"({1000 / best:,.0f} users/s; runs {', '.join(f'{t * 1000:.1f}' for t in timings)} ms)"
        )
        self.assertEqual(routes_found, 1500)
