"""The twistd plugins: discovery, options, frozen configs, and builds that do nothing until started."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

from twisted.application.service import IService, IServiceMaker
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase

from gochat.gateway import service as gateway_service
from gochat.gateway import tap as gateway_tap
from gochat.gateway.session import SessionLimits
from gochat.grpc_bridge import GrpcServerService
from gochat.logic import service as logic_service
from gochat.logic import tap as logic_tap
from gochat.logic.batch_writer import BatchPolicy
from gochat.logic.chat import ChatSettings
from gochat.model import Ack, Identity, LoginResult, SendCommand


def service_makers() -> dict[str, Any]:
    """The installed twistd plugins by tapname."""
    return {maker.tapname: maker for maker in getPlugins(IServiceMaker)}


class ThreadedMemoryReactor(MemoryReactorClock):
    """A memory reactor that also hands out a thread pool, as adbapi and the password hasher need.

    The pool is never started: a build must not run anything on it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.threadpool = ThreadPool(minthreads=0, maxthreads=1, name="never-started")

    def getThreadPool(self) -> ThreadPool:
        return self.threadpool


class _Subscription:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class RecordingLogicClient:
    """An ``ILogicClient`` that records subscriptions and answers nothing else."""

    def __init__(self) -> None:
        self.subscriptions: list[tuple[str, _Subscription]] = []

    def register(self, username: str, password: str) -> Deferred[int]:
        raise AssertionError("not expected in these tests")

    def login(self, username: str, password: str) -> Deferred[LoginResult]:
        raise AssertionError("not expected in these tests")

    def connect(self, token: str, gateway_id: str, session_id: str) -> Deferred[Identity]:
        raise AssertionError("not expected in these tests")

    def disconnect(self, identity: Identity, gateway_id: str, session_id: str) -> Deferred[None]:
        return succeed(None)

    def send(self, command: SendCommand) -> Deferred[Ack]:
        raise AssertionError("not expected in these tests")

    def subscribe(self, gateway_id: str, handler: Any) -> _Subscription:
        subscription = _Subscription()
        self.subscriptions.append((gateway_id, subscription))
        return subscription


class PluginDiscoveryTests(SynchronousTestCase):
    """``twistd`` finds both roles through the plugin system."""

    def test_both_roles_are_plugins(self) -> None:
        makers = service_makers()
        self.assertIn("gochat-gateway", makers)
        self.assertIn("gochat-logic", makers)

    def test_plugins_point_at_the_tap_modules(self) -> None:
        makers = service_makers()
        self.assertIsInstance(makers["gochat-gateway"].options(), gateway_tap.Options)
        self.assertIsInstance(makers["gochat-logic"].options(), logic_tap.Options)
        self.assertTrue(makers["gochat-gateway"].description)
        self.assertTrue(makers["gochat-logic"].description)


class GatewayOptionsTests(SynchronousTestCase):
    """``gochat-gateway`` options become a frozen :class:`GatewayConfig`."""

    def parse(self, argv: list[str]) -> gateway_service.GatewayConfig:
        options = service_makers()["gochat-gateway"].options()
        options.parseOptions(argv)
        return gateway_tap.config_from_options(options)

    def test_every_option(self) -> None:
        config = self.parse(
            [
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--public-url",
                "ws://chat.example/ws",
                "--logic",
                "127.0.0.1:9",
                "--gateway-id",
                "gw-7",
                "--data-dir",
                "/srv/gochat",
                "--auth-timeout",
                "3",
                "--idle-timeout",
                "30",
                "--max-frame-bytes",
                "4096",
                "--max-body-chars",
                "1000",
                "--frames-per-second",
                "5",
                "--frame-burst",
                "7",
                "--wheel-tick",
                "0.25",
            ]
        )
        self.assertEqual(config.listen, "tcp:0:interface=127.0.0.1")
        self.assertEqual(config.public_url, "ws://chat.example/ws")
        self.assertEqual(config.logic, "127.0.0.1:9")
        self.assertEqual(config.gateway_id, "gw-7")
        self.assertEqual(config.max_frame_bytes, 4096)
        self.assertEqual(config.wheel_tick, 0.25)
        self.assertEqual(
            config.limits,
            SessionLimits(
                auth_timeout=3.0, idle_timeout=30.0, max_body_length=1000, frames_per_second=5.0, frame_burst=7
            ),
        )
        self.assertEqual(config.embedded_logic.data_dir, pathlib.Path("/srv/gochat"))
        self.assertIsNone(config.embedded_logic.grpc_listen)

    def test_defaults_are_the_embedded_gateway(self) -> None:
        config = self.parse([])
        self.assertEqual(config.logic, gateway_service.EMBEDDED)
        self.assertEqual(config.listen, "tcp:8080")
        self.assertEqual(config.limits, SessionLimits())
        self.assertEqual(config.embedded_logic.data_dir, pathlib.Path("gochat-data"))
        self.assertIsNone(config.embedded_logic.grpc_listen, "the embedded logic must not open a gRPC port")
        self.assertTrue(config.gateway_id, "a gateway id is made up when none is given")

    def test_config_is_frozen(self) -> None:
        config = self.parse(["--listen", "tcp:0"])
        with self.assertRaises(dataclasses.FrozenInstanceError):
            config.listen = "tcp:1"  # type: ignore[misc]

    def test_bad_number_is_a_usage_error(self) -> None:
        with self.assertRaises(usage.UsageError):
            self.parse(["--idle-timeout", "soon"])


class LogicOptionsTests(SynchronousTestCase):
    """``gochat-logic`` options become a frozen :class:`LogicConfig`."""

    def parse(self, argv: list[str]) -> logic_service.LogicConfig:
        options = service_makers()["gochat-logic"].options()
        options.parseOptions(argv)
        return logic_tap.config_from_options(options)

    def test_every_option(self) -> None:
        config = self.parse(
            [
                "--grpc-listen",
                "127.0.0.1:0",
                "--data-dir",
                "/srv/logic",
                "--database",
                "sqlite:/srv/db.sqlite",
                "--broker",
                "amqp://u:p@mq:5673/chat",
                "--persist-queue",
                "q.persist",
                "--token-secret-file",
                "/srv/secret",
                "--node-id",
                "3",
                "--batch-size",
                "10",
                "--batch-delay-ms",
                "2.5",
                "--token-ttl",
                "60",
                "--grpc-workers",
                "4",
            ]
        )
        self.assertEqual(config.grpc_listen, "127.0.0.1:0")
        self.assertEqual(config.data_dir, pathlib.Path("/srv/logic"))
        self.assertEqual(config.database, "sqlite:/srv/db.sqlite")
        self.assertEqual(config.broker, "amqp://u:p@mq:5673/chat")
        self.assertEqual(config.persist_queue, "q.persist")
        self.assertEqual(config.token_secret_path, pathlib.Path("/srv/secret"))
        self.assertEqual(config.node_id, 3)
        self.assertEqual(config.grpc_workers, 4)
        self.assertEqual(config.batch, BatchPolicy(max_batch=10, max_delay=0.0025))
        self.assertEqual(config.chat, ChatSettings(token_ttl=60.0))

    def test_defaults(self) -> None:
        config = self.parse([])
        self.assertEqual(config.grpc_listen, "127.0.0.1:9090")
        self.assertEqual(config.database, "mysql://root@127.0.0.1:3306/gochat")
        self.assertEqual(config.broker, "amqp://guest:guest@127.0.0.1:5672/")
        self.assertEqual(config.token_secret_path, pathlib.Path("gochat-data") / "token.key")
        self.assertEqual(config.node_id, 0)

    def test_config_is_frozen(self) -> None:
        config = self.parse([])
        with self.assertRaises(dataclasses.FrozenInstanceError):
            config.node_id = 1  # type: ignore[misc]

    def test_bad_number_is_a_usage_error(self) -> None:
        with self.assertRaises(usage.UsageError):
            self.parse(["--node-id", "first"])


class GatewayBuildTests(SynchronousTestCase):
    """:func:`gochat.gateway.service.build` composes services; starting them is what listens."""

    def config(self, **changes: Any) -> gateway_service.GatewayConfig:
        return dataclasses.replace(
            gateway_service.GatewayConfig(listen="tcp:18080:interface=127.0.0.1", gateway_id="gw-test"), **changes
        )

    def test_build_does_nothing_until_started(self) -> None:
        reactor = MemoryReactorClock()
        logic = RecordingLogicClient()
        top = gateway_service.build(self.config(), reactor, logic=logic)
        self.assertTrue(IService.providedBy(top))
        self.assertEqual(reactor.tcpServers, [])
        self.assertEqual(logic.subscriptions, [])
        self.assertEqual(reactor.getDelayedCalls(), [])

        top.startService()
        self.addCleanup(lambda: top.stopService() if top.running else None)
        self.assertEqual(len(reactor.tcpServers), 1)
        port, _factory, _backlog, interface = reactor.tcpServers[0]
        self.assertEqual((port, interface), (18080, "127.0.0.1"))
        self.assertEqual([gateway_id for gateway_id, _ in logic.subscriptions], ["gw-test"])

    def test_stop_cancels_the_subscription_and_the_timer(self) -> None:
        reactor = MemoryReactorClock()
        logic = RecordingLogicClient()
        top = gateway_service.build(self.config(), reactor, logic=logic)
        top.startService()
        self.assertEqual(len(reactor.getDelayedCalls()), 1, "one TimerService drives the wheel")
        stopped = top.stopService()
        self.successResultOf(stopped)
        self.assertTrue(logic.subscriptions[0][1].cancelled)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_remote_logic_build_connects_nowhere(self) -> None:
        reactor = MemoryReactorClock()
        top = gateway_service.build(self.config(logic="127.0.0.1:9"), reactor)
        closers = [child for child in top if isinstance(child, gateway_service._ClientCloser)]
        self.assertEqual(len(closers), 1, "the gRPC client is closed with the gateway")
        self.addCleanup(closers[0].stopService)
        self.assertEqual(reactor.tcpServers, [])
        self.assertEqual(reactor.tcpClients, [])
        self.assertFalse(any(isinstance(child, logic_service.LogicService) for child in top))

    def test_embedded_build_opens_nothing(self) -> None:
        data_dir = pathlib.Path(self.mktemp())
        reactor = ThreadedMemoryReactor()
        config = self.config(embedded_logic=logic_service.LogicConfig(data_dir=data_dir, grpc_listen=None))
        top = gateway_service.build(config, reactor)
        embedded = [child for child in top if isinstance(child, logic_service.LogicService)]
        self.assertEqual(len(embedded), 1, "the embedded default runs the logic role in-process")
        self.assertFalse(any(isinstance(child, GrpcServerService) for child in embedded[0]))
        self.assertEqual(reactor.tcpServers, [])
        self.assertFalse((data_dir / "gochat.sqlite").exists(), "the database is opened at start only")
        self.assertFalse(reactor.threadpool.started)


class LogicBuildTests(SynchronousTestCase):
    """:func:`gochat.logic.service.build` composes the store and the gRPC server without starting them."""

    def test_build_with_grpc_does_not_listen(self) -> None:
        data_dir = pathlib.Path(self.mktemp())
        reactor = ThreadedMemoryReactor()
        config = logic_service.LogicConfig(data_dir=data_dir, grpc_listen="127.0.0.1:0")
        top = logic_service.build(config, reactor)
        grpc_services = [child for child in top if isinstance(child, GrpcServerService)]
        self.assertEqual(len(grpc_services), 1)
        self.assertIsNone(grpc_services[0].port, "the gRPC port is bound at start only")
        self.assertIn(top.store, list(top))
        self.assertFalse((data_dir / "gochat.sqlite").exists(), "the database is opened at start only")
        self.assertFalse(reactor.threadpool.started)

    def test_build_without_grpc_has_no_server(self) -> None:
        reactor = ThreadedMemoryReactor()
        config = logic_service.LogicConfig(data_dir=pathlib.Path(self.mktemp()), grpc_listen=None)
        top = logic_service.build(config, reactor)
        self.assertFalse(any(isinstance(child, GrpcServerService) for child in top))
