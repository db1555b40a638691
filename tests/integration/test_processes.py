"""gochat as an operator runs it: ``twistd`` processes, HTTP login, WebSocket chat, SIGTERM drain.

Each test spawns real ``twistd -n`` processes listening on ports chosen by
the kernel (port 0; the port is read from the process's "listening" log
line), drives them with real HTTP and WebSocket clients, then stops them
with SIGTERM while the clients are still connected: the gateway must close
each session with the "shutting down; reconnect" code and every process
must shut down cleanly.

A clean shutdown of ``twistd`` is not exit status 0: after the reactor has
stopped and every service has drained, twistd re-raises the signal that
stopped it (``twisted.application.app._exitWithSignal``) so that a
supervisor sees how it ended. Clean therefore means: the process logged
"Server Shut Down.", logged no traceback on the way, and ended by the
SIGTERM it was sent (or with status 0).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Generator
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from gochat.errors import CLOSE_SHUTTING_DOWN
from tests.integration.services import require_service
from tests.integration.support import (
    GATEWAY_LISTENING,
    LOGIC_LISTENING,
    HttpJsonClient,
    JsonFrameClient,
    TwistdProcess,
    connect,
    spawn_twistd,
)

PASSWORD = "correct horse battery"
CLEAN_EXITS = [(0, None), (None, signal.SIGTERM)]


class ProcessTestCase(TestCase):
    """Spawning processes and clients that are cleaned up whatever happens."""

    timeout = 60

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor: Any = reactor
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)
        self.http = HttpJsonClient(reactor)
        self.addCleanup(self.http.close)

    def spawn(self, name: str, args: list[str]) -> TwistdProcess:
        process = spawn_twistd(self.reactor, name, args, self.workdir)
        self.addCleanup(process.kill)
        return process

    @inlineCallbacks
    def open_client(self, url: str, name: str) -> Generator[Deferred[Any], Any, JsonFrameClient]:
        client: JsonFrameClient = yield connect(self.reactor, url, name)
        self.addCleanup(client.abort)
        return client

    @inlineCallbacks
    def log_in(self, base: str, username: str) -> Generator[Deferred[Any], Any, JsonFrameClient]:
        """Register *username* over HTTP, log in, and open an authenticated WebSocket; fires with the client."""
        status, body = yield self.http.post(f"{base}/api/register", {"username": username, "password": PASSWORD})
        self.assertEqual(status, 201, body)
        self.assertIsInstance(body["user_id"], int)
        status, login = yield self.http.post(f"{base}/api/login", {"username": username, "password": PASSWORD})
        self.assertEqual(status, 200, login)
        self.assertEqual(login["user_id"], body["user_id"])

        client: JsonFrameClient = yield self.open_client(base.replace("http://", "ws://") + "/ws", username)
        client.send_frame({"v": 1, "type": "auth", "id": "auth-1", "body": {"token": login["token"]}})
        reply = yield client.next_frame()
        self.assertEqual(reply["type"], "auth_ok", reply)
        self.assertEqual(reply["id"], "auth-1")
        self.assertEqual((reply["body"]["user_id"], reply["body"]["username"]), (login["user_id"], username))
        return client

    @inlineCallbacks
    def exchange(
        self, sender: JsonFrameClient, recipient: JsonFrameClient, n: int, expected_seq: int
    ) -> Generator[Deferred[Any], Any, None]:
        """*sender* sends one message to *recipient*: the sender gets the ack, the recipient the push."""
        text = f"message {n} from {sender.name} to {recipient.name}"
        sender.send_frame(
            {
                "v": 1,
                "type": "send",
                "id": f"req-{n}",
                "body": {"client_msg_id": f"c-{n}", "to": recipient.name, "body": text},
            }
        )
        ack, push = yield gatherResults([sender.next_frame(), recipient.next_frame()])
        self.assertEqual(ack["type"], "ack", ack)
        self.assertEqual(ack["id"], f"req-{n}")
        self.assertEqual(ack["body"]["client_msg_id"], f"c-{n}")
        self.assertEqual(ack["body"]["seq"], expected_seq)
        self.assertTrue(ack["body"]["msg_id"])

        self.assertEqual(push["type"], "push", push)
        self.assertEqual(
            {key: push["body"][key] for key in ("msg_id", "conv", "seq", "from", "client_msg_id", "body")},
            {
                "msg_id": ack["body"]["msg_id"],
                "conv": ack["body"]["conv"],
                "seq": expected_seq,
                "from": sender.name,
                "client_msg_id": f"c-{n}",
                "body": text,
            },
        )

    @inlineCallbacks
    def chat_both_ways(
        self, gateway_port: int
    ) -> Generator[Deferred[Any], Any, tuple[JsonFrameClient, JsonFrameClient]]:
        """alice and bob register, log in, and message each other; fires with their clients."""
        base = f"http://127.0.0.1:{gateway_port}"
        alice = yield self.log_in(base, "alice")
        bob = yield self.log_in(base, "bob")
        yield self.exchange(alice, bob, 1, expected_seq=1)
        yield self.exchange(bob, alice, 2, expected_seq=2)
        yield self.exchange(alice, bob, 3, expected_seq=3)
        return alice, bob

    @inlineCallbacks
    def group_flow(self, alice: JsonFrameClient, bob: JsonFrameClient) -> Generator[Deferred[Any], Any, str]:
        """alice makes a group with bob; a message, a read receipt, typing and history cross the real processes."""
        alice.send_frame({"v": 1, "type": "group_create", "id": "g", "body": {"name": "pair", "members": ["bob"]}})
        frames = yield gatherResults([alice.next_frame(), alice.next_frame(), bob.next_frame()])
        by_type = {frame["type"]: frame for frame in frames[:2]}
        self.assertEqual(set(by_type), {"group_create_ok", "push"}, frames)
        conv = by_type["group_create_ok"]["body"]["conv"]
        self.assertEqual(
            (frames[2]["type"], frames[2]["body"]["kind"], frames[2]["body"]["conv"]), ("push", "member", conv)
        )
        alice.send_frame(
            {"v": 1, "type": "send", "id": "gs", "body": {"client_msg_id": "g-1", "conv": conv, "body": "to the group"}}
        )
        ack, push = yield gatherResults([alice.next_frame(), bob.next_frame()])
        self.assertEqual((ack["type"], ack["body"]["seq"]), ("ack", 2), ack)
        self.assertEqual((push["type"], push["body"]["body"], push["body"]["kind"]), ("push", "to the group", "text"))
        bob.send_frame({"v": 1, "type": "read", "id": "r", "body": {"conv": conv, "seq": 2}})
        read_ok, receipt = yield gatherResults([bob.next_frame(), alice.next_frame()])
        self.assertEqual((read_ok["type"], read_ok["body"]["seq"]), ("read_ok", 2), read_ok)
        self.assertEqual((receipt["type"], receipt["body"]["from"], receipt["body"]["seq"]), ("receipt", "bob", 2))
        bob.send_frame({"v": 1, "type": "typing", "body": {"conv": conv}})
        typing = yield alice.next_frame()
        self.assertEqual((typing["type"], typing["body"]["from"]), ("typing", "bob"), typing)
        bob.send_frame({"v": 1, "type": "history", "id": "h", "body": {"conv": conv, "limit": 10}})
        history = yield bob.next_frame()
        self.assertEqual([m["seq"] for m in history["body"]["messages"]], [1, 2], history)
        self.assertEqual(history["body"]["reads"]["bob"], 2)
        return str(conv)

    @inlineCallbacks
    def stop_cleanly(self, process: TwistdProcess) -> Generator[Deferred[Any], Any, None]:
        """SIGTERM *process* and check it shut down cleanly (see the module docstring)."""
        exit_status = yield process.terminate()
        self.assertIn(exit_status, CLEAN_EXITS, process.output)
        self.assertIn("Server Shut Down.", process.output)
        self.assertNotIn("Traceback", process.output, f"{process.name} logged an error:\n{process.output}")

    @inlineCallbacks
    def drain(
        self, gateway: TwistdProcess, clients: list[JsonFrameClient], *others: TwistdProcess
    ) -> Generator[Deferred[Any], Any, None]:
        """SIGTERM the gateway with clients connected: they are told to reconnect and it exits; then the others."""
        yield self.stop_cleanly(gateway)
        closes = yield gatherResults([client.close_status for client in clients])
        for client, (_clean, code, _reason) in zip(clients, closes, strict=True):
            self.assertEqual(code, CLOSE_SHUTTING_DOWN, f"{client.name} closed with {code}")
        for process in others:
            yield self.stop_cleanly(process)


class EmbeddedGatewayProcessTests(ProcessTestCase):
    """``twistd gochat-gateway``: the whole chat in one process (the embedded default)."""

    @inlineCallbacks
    def test_two_users_chat_then_drain(self) -> Generator[Deferred[Any], Any, None]:
        gateway = self.spawn(
            "gateway",
            [
                "gochat-gateway",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--data-dir",
                os.path.join(self.workdir, "data"),
            ],
        )
        port = yield gateway.wait_for_port(GATEWAY_LISTENING)
        alice, bob = yield self.chat_both_ways(port)
        yield self.group_flow(alice, bob)
        yield self.drain(gateway, [alice, bob])


class SplitProcessesTests(ProcessTestCase):
    """``twistd gochat-logic`` and ``twistd gochat-gateway --logic HOST:PORT``: the two roles over gRPC."""

    @inlineCallbacks
    def test_two_users_chat_across_grpc_then_drain(self) -> Generator[Deferred[Any], Any, None]:
        logic = self.spawn(
            "logic",
            [
                "gochat-logic",
                "--grpc-listen",
                "127.0.0.1:0",
                "--data-dir",
                os.path.join(self.workdir, "logic"),
                "--database",
                "",
                "--broker",
                "none",
                "--redis",
                "none",
            ],
        )
        grpc_port = yield logic.wait_for_port(LOGIC_LISTENING)
        gateway = self.spawn(
            "gateway",
            ["gochat-gateway", "--logic", f"127.0.0.1:{grpc_port}", "--listen", "tcp:0:interface=127.0.0.1"],
        )
        port = yield gateway.wait_for_port(GATEWAY_LISTENING)
        alice, bob = yield self.chat_both_ways(port)
        yield self.group_flow(alice, bob)
        yield self.drain(gateway, [alice, bob], logic)


class ProductionProcessesTests(ProcessTestCase):
    """Production mode: MariaDB, the RabbitMQ persist queue and per-gateway delivery queues."""

    def setUp(self) -> None:
        super().setUp()
        require_service("MariaDB", "127.0.0.1", 3306)
        require_service("RabbitMQ", "127.0.0.1", 5672)
        require_service("Redis", "127.0.0.1", 6379)
        self.database = f"gochat_proc_{uuid.uuid4().hex[:12]}"
        subprocess.run(
            [sys.executable, "-m", "gochat.logic.migrate", "--database", self.database],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.addCleanup(self.drop_database)

    def drop_database(self) -> None:
        import pymysql

        connection = pymysql.connect(host="127.0.0.1", user="root", password="")
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS `{self.database}`")
        finally:
            connection.close()

    @inlineCallbacks
    def test_two_users_chat_through_mariadb_and_rabbitmq(self) -> Generator[Deferred[Any], Any, None]:
        queue = f"test.{uuid.uuid4().hex[:12]}.persist"
        self.addCleanup(subprocess.run, ["rabbitmqctl", "-q", "delete_queue", queue], capture_output=True, timeout=30)
        logic = self.spawn(
            "logic",
            [
                "gochat-logic",
                "--grpc-listen",
                "127.0.0.1:0",
                "--data-dir",
                os.path.join(self.workdir, "logic"),
                "--database",
                f"mysql://root@127.0.0.1:3306/{self.database}",
                "--persist-queue",
                queue,
                "--redis-key-prefix",
                f"{queue}:",
            ],
        )
        grpc_port = yield logic.wait_for_port(LOGIC_LISTENING)
        gateway = self.spawn(
            "gateway",
            [
                "gochat-gateway",
                "--logic",
                f"127.0.0.1:{grpc_port}",
                "--broker",
                "amqp://guest:guest@127.0.0.1:5672/",
                "--listen",
                "tcp:0:interface=127.0.0.1",
            ],
        )
        port = yield gateway.wait_for_port(GATEWAY_LISTENING)
        alice, bob = yield self.chat_both_ways(port)
        conv = yield self.group_flow(alice, bob)
        yield self.drain(gateway, [alice, bob], logic)
        import pymysql

        connection = pymysql.connect(host="127.0.0.1", user="root", password="", database=self.database)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT conv, seq, kind FROM messages ORDER BY conv, seq")
                self.assertEqual(
                    cursor.fetchall(),
                    (
                        ("d:1:2", 1, "text"),
                        ("d:1:2", 2, "text"),
                        ("d:1:2", 3, "text"),
                        (conv, 1, "member"),
                        (conv, 2, "text"),
                    ),
                )
        finally:
            connection.close()
