"""Scale-out: two gateways and two logic processes sharing one MariaDB database, persist queue and Redis prefix.

Every test case starts its own deployment in production mode: a fresh
database (``python -m gochat.logic.migrate``), a persist queue and a Redis key
prefix of its own, a token secret file both logic processes read, and four
``twistd`` processes on ports chosen by the kernel::

    clients --> gateway A --gRPC--> logic 1 --+
    clients --> gateway B --gRPC--> logic 2 --+--> MariaDB, RabbitMQ (persist queue), Redis (routes)

Deliveries come to each gateway through its own RabbitMQ queue, and the
gateways report their sessions every second (``--route-refresh 1``), so a
route lost from Redis comes back within about a second. Clients are the
JSON-frame WebSocket client of :mod:`tests.integration.support`, wrapped in
:class:`Device`, which sorts replies (by request id) from pushes.

Nothing waits for a fixed time: processes are ready when they log that
they listen and are connected, frames when they arrive, Redis state when a
poll sees it; every wait is bounded. Cleanup kills the processes, then drops
the database, deletes the persist queue and the prefix's Redis keys (reply
and gateway queues expire by themselves).

The gateways run with a higher per-connection frame rate than the default
(``--frames-per-second``/``--frame-burst``) because these clients pipeline
sends faster than a person types. Presence is not exposed to clients yet, so
it is not tested here.
"""

from __future__ import annotations

import collections
import itertools
import os
import pathlib
import re
import signal
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from gochat.logic.tokens import load_or_create_secret
from tests.integration.services import require_service
from tests.integration.support import (
    BROKER_URL,
    DEFAULT_WAIT,
    DELETE_KEYS_SCRIPT,
    GATEWAY_LISTENING,
    LOGIC_LISTENING,
    MYSQL_HOST,
    MYSQL_PORT,
    ConnectionClosedError,
    HttpJsonClient,
    TwistdProcess,
    WaitTimedOutError,
    bounded,
    connect,
    create_database,
    delete_queue,
    delete_redis_keys,
    drop_database,
    redis_glob,
    spawn_twistd,
    wait_until,
)

PASSWORD = "correct horse battery"
#: What a logic process logs once each of its backends is usable.
LOGIC_READY = (
    re.compile(r"connected to RabbitMQ at"),
    re.compile(r"connected to Redis at"),
    re.compile(r"MySQL store ready at schema version"),
)
#: What a gateway logs once its delivery queue is declared and consumed.
GATEWAY_READY = re.compile(r"connected to RabbitMQ at")
#: Error codes after which a client resends the same ``client_msg_id``.
RETRYABLE = frozenset({"unavailable", "rate_limited", "shutting_down", "internal"})


# Clients.


class Device:
    """One WebSocket session of a user: replies matched to requests by id, pushes kept in arrival order."""

    def __init__(self, reactor: Any, name: str, client: Any) -> None:
        self.reactor = reactor
        self.name = name
        self.client = client
        self.session_id = ""
        #: Bodies of the ``push`` frames, in arrival order.
        self.pushes: list[dict[str, Any]] = []
        #: Frames that were neither a push nor a reply to a request still waited for.
        self.stray: list[dict[str, Any]] = []
        self.presence: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self._lost = False
        self._ids = itertools.count(1)
        self._replies: dict[str, Deferred[dict[str, Any]]] = {}
        self._conditions: list[tuple[Callable[[], bool], Deferred[None]]] = []
        client.on_frame(self._frame_arrived)
        client.close_status.addCallback(self._closed)

    @property
    def lost(self) -> bool:
        """Whether the connection is gone."""
        return self._lost

    @property
    def requests_in_flight(self) -> int:
        return len(self._replies)

    def request(self, kind: str, body: dict[str, Any], timeout: float = DEFAULT_WAIT) -> Deferred[dict[str, Any]]:
        """Send a ``kind`` frame with a fresh request id; fires with the reply frame (whatever its type).

        Fails with :class:`ConnectionClosedError` if the connection goes first.
        """
        if self._lost:
            return fail(ConnectionClosedError(f"{self.name}: connection closed"))
        request_id = f"{self.name}.{next(self._ids)}"
        reply: Deferred[dict[str, Any]] = Deferred()
        self._replies[request_id] = reply

        def forget(result: object) -> object:
            self._replies.pop(request_id, None)
            return result

        reply.addBoth(forget)
        self.client.send_frame({"v": 1, "type": kind, "id": request_id, "body": body})
        return bounded(reply, self.reactor, timeout, f"the reply to {kind} {request_id}")

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float = DEFAULT_WAIT) -> Deferred[None]:
        """Fires once *check* holds, checked after every frame; fails if the connection goes first."""
        if check():
            return succeed(None)
        if self._lost:
            return fail(ConnectionClosedError(f"{self.name}: connection closed while waiting for {what}"))
        done: Deferred[None] = Deferred()
        entry = (check, done)
        self._conditions.append(entry)

        def forget(result: object) -> object:
            if entry in self._conditions:
                self._conditions.remove(entry)
            return result

        done.addBoth(forget)
        return bounded(done, self.reactor, timeout, f"{what} on {self.name}")

    def wait_for_push(self, client_msg_id: str, timeout: float = DEFAULT_WAIT) -> Deferred[dict[str, Any]]:
        """Fires with the push of the message with *client_msg_id*."""

        def find() -> dict[str, Any] | None:
            return next((push for push in self.pushes if push["client_msg_id"] == client_msg_id), None)

        d = self.wait_for(lambda: find() is not None, f"the push of {client_msg_id}", timeout)
        return d.addCallback(lambda _: find())

    def _frame_arrived(self, frame: dict[str, Any]) -> None:
        request_id = frame.get("id")
        if frame.get("type") == "push":
            self.pushes.append(frame["body"])
        elif frame.get("type") == "presence":
            # Unsolicited and timing-dependent by design: a contact's "online" is told to those who share a
            # conversation with them when they connect, which may be just after a first message made them contacts.
            self.presence.append(frame)
        elif isinstance(request_id, str) and request_id in self._replies:
            self._replies.pop(request_id).callback(frame)
        else:
            self.stray.append(frame)
        for check, done in list(self._conditions):
            if not done.called and check():
                done.callback(None)

    def _closed(self, status: tuple[bool, int | None, str | None]) -> tuple[bool, int | None, str | None]:
        self._lost = True
        self.close_code = status[1]
        replies, self._replies = self._replies, {}
        for reply in replies.values():
            if not reply.called:
                reply.errback(ConnectionClosedError(f"{self.name}: connection closed before the reply"))
        for _check, done in list(self._conditions):
            if not done.called:
                done.errback(ConnectionClosedError(f"{self.name}: connection closed"))
        return status


@dataclass
class User:
    name: str
    user_id: int
    token: str


@dataclass
class Gateway:
    process: TwistdProcess
    gateway_id: str
    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


def message_key(message: dict[str, Any]) -> tuple[str, int, str]:
    """What identifies a message as a client sees it: conversation, seq, client message id."""
    return (message["conv"], message["seq"], message["client_msg_id"])


def pushes_in_order(device: Device) -> dict[str, list[int]]:
    """The seqs pushed to *device*, conversation by conversation, in arrival order."""
    seqs: dict[str, list[int]] = collections.defaultdict(list)
    for push in device.pushes:
        seqs[push["conv"]].append(push["seq"])
    return dict(seqs)


def read_messages(database: str) -> list[tuple[str, int, int, str, int]]:
    """Every stored message as ``(conv, seq, sender_id, client_msg_id, msg_id)``, by conversation and seq."""
    import pymysql

    connection = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="", database=database)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT conv, seq, sender_id, client_msg_id, msg_id FROM messages ORDER BY conv, seq")
            return [(conv, int(seq), int(sender), cmid, int(msg_id)) for conv, seq, sender, cmid, msg_id in cursor]
    finally:
        connection.close()


# The deployment.


class ScaleOutTestCase(TestCase):
    """Starts two logic processes and two gateways (A -> logic 1, B -> logic 2) with resources of their own."""

    timeout = 120

    def setUp(self) -> Deferred[None]:
        require_service("MariaDB", MYSQL_HOST, MYSQL_PORT)
        require_service("RabbitMQ", "127.0.0.1", 5672)
        require_service("Redis", "127.0.0.1", 6379)
        from twisted.internet import reactor

        self.reactor: Any = reactor
        self.tag = uuid.uuid4().hex[:12]
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)
        self.database = f"gochat_scale_{self.tag}"
        self.addCleanup(drop_database, self.database)
        create_database(self.database)
        self.persist_queue = f"test.{self.tag}.persist"
        self.addCleanup(delete_queue, self.persist_queue)
        self.redis_prefix = f"test.{self.tag}:"
        self.addCleanup(delete_redis_keys, self.redis_prefix)
        # Both logic processes must sign and check tokens with one secret: a user logs in through one and
        # authenticates through the other.
        self.secret = os.path.join(self.workdir, "token.key")
        load_or_create_secret(pathlib.Path(self.secret))
        self.http = HttpJsonClient(reactor)
        self.addCleanup(self.http.close)
        self.gateways: dict[str, Gateway] = {}
        return Deferred.fromCoroutine(self._start())

    def spawn(self, name: str, args: list[str]) -> TwistdProcess:
        """Start a twistd process, killed at cleanup; a traceback in its log fails the test."""
        process = spawn_twistd(self.reactor, name, args, self.workdir)
        self.addCleanup(process.kill)
        self.addCleanup(self._assert_no_traceback, process)
        return process

    def _assert_no_traceback(self, process: TwistdProcess) -> None:
        self.assertNotIn("Traceback", process.output, f"{process.name} logged an error:\n{process.output}")

    async def _start(self) -> None:
        logics = [
            self.spawn(
                f"logic-{node}",
                [
                    "gochat-logic",
                    "--grpc-listen",
                    "127.0.0.1:0",
                    "--node-id",
                    str(node),
                    "--data-dir",
                    os.path.join(self.workdir, f"logic-{node}"),
                    "--token-secret-file",
                    self.secret,
                    "--database",
                    f"mysql://root@{MYSQL_HOST}:{MYSQL_PORT}/{self.database}",
                    "--persist-queue",
                    self.persist_queue,
                    "--redis-key-prefix",
                    self.redis_prefix,
                ],
            )
            for node in (1, 2)
        ]
        grpc_ports = await gatherResults(
            [Deferred.fromCoroutine(self._logic_ready(logic)) for logic in logics], consumeErrors=True
        )
        names = ("a", "b")
        gateways = {
            name: self.spawn(
                f"gateway-{name}",
                [
                    "gochat-gateway",
                    "--listen",
                    "tcp:0:interface=127.0.0.1",
                    "--logic",
                    f"127.0.0.1:{grpc_port}",
                    "--broker",
                    BROKER_URL,
                    "--route-refresh",
                    "1",
                    "--gateway-id",
                    f"test-{self.tag}-{name}",
                    "--data-dir",
                    os.path.join(self.workdir, f"gateway-{name}"),
                    "--frames-per-second",
                    "1000",
                    "--frame-burst",
                    "1000",
                ],
            )
            for name, grpc_port in zip(names, grpc_ports, strict=True)
        }
        ports = await gatherResults(
            [Deferred.fromCoroutine(self._gateway_ready(gateways[name])) for name in names], consumeErrors=True
        )
        for name, port in zip(names, ports, strict=True):
            self.gateways[name] = Gateway(gateways[name], f"test-{self.tag}-{name}", port)

    async def _logic_ready(self, logic: TwistdProcess) -> int:
        port = await logic.wait_for_port(LOGIC_LISTENING)
        for pattern in LOGIC_READY:
            await logic.wait_for_line(pattern)
        return port

    async def _gateway_ready(self, gateway: TwistdProcess) -> int:
        port = await gateway.wait_for_port(GATEWAY_LISTENING)
        await gateway.wait_for_line(GATEWAY_READY)
        return port

    # Users and devices.

    async def new_user(self, name: str, via: str = "a") -> User:
        """Register *name* and log in over HTTP through gateway *via*."""
        base = self.gateways[via].http
        status, body = await self.http.post(f"{base}/api/register", {"username": name, "password": PASSWORD})
        self.assertEqual(status, 201, body)
        status, login = await self.http.post(f"{base}/api/login", {"username": name, "password": PASSWORD})
        self.assertEqual(status, 200, login)
        return User(name, login["user_id"], login["token"])

    async def open_device(self, user: User, gateway: str, label: str | None = None) -> Device:
        """Open a WebSocket to *gateway* ("a" or "b") and authenticate as *user*."""
        name = label or f"{user.name}@{gateway}"
        client = await connect(self.reactor, self.gateways[gateway].ws, name)
        self.addCleanup(client.abort)
        device = Device(self.reactor, name, client)
        reply = await device.request("auth", {"token": user.token})
        self.assertEqual(reply["type"], "auth_ok", reply)
        self.assertEqual((reply["body"]["user_id"], reply["body"]["username"]), (user.user_id, user.name))
        device.session_id = reply["body"]["session_id"]
        return device

    async def send(self, device: Device, to: str, client_msg_id: str, text: str | None = None) -> dict[str, Any]:
        """Send one message; the body of its ack."""
        body = {"client_msg_id": client_msg_id, "to": to, "body": text or f"{client_msg_id} for {to}"}
        reply = await device.request("send", body)
        self.assertEqual(reply["type"], "ack", reply)
        self.assertEqual(reply["body"]["client_msg_id"], client_msg_id)
        ack: dict[str, Any] = reply["body"]
        return ack

    async def deliver(
        self, sender: Device, to: User, recipients: Iterable[Device], client_msg_id: str, expected_seq: int
    ) -> dict[str, Any]:
        """*sender* sends to *to*: it is acked with *expected_seq*, and each of *recipients* gets it pushed."""
        text = f"{client_msg_id}: from {sender.name} to {to.name}"
        ack = await self.send(sender, to.name, client_msg_id, text)
        self.assertEqual(ack["seq"], expected_seq, ack)
        for recipient in recipients:
            push = await recipient.wait_for_push(client_msg_id)
            self.assertEqual(
                {key: push[key] for key in ("msg_id", "conv", "seq", "client_msg_id", "body", "ts")},
                {**{key: ack[key] for key in ("msg_id", "conv", "seq", "client_msg_id", "ts")}, "body": text},
                f"push to {recipient.name}",
            )
        return ack

    async def sync(self, device: Device, since: dict[str, int] | None = None) -> dict[str, Any]:
        """Send ``sync`` (with *since* if given, else ``{}``); the body of ``sync_ok``."""
        reply = await device.request("sync", {} if since is None else {"since": since})
        self.assertEqual(reply["type"], "sync_ok", reply)
        body: dict[str, Any] = reply["body"]
        return body

    async def recv_ack(self, device: Device, conv: str, seq: int) -> None:
        reply = await device.request("recv_ack", {"conv": conv, "seq": seq})
        self.assertEqual(reply["type"], "recv_ack_ok", reply)

    def assert_pushes_in_seq_order(self, *devices: Device) -> None:
        """No session got a conversation out of order, or one message twice."""
        for device in devices:
            for conv, seqs in pushes_in_order(device).items():
                self.assertEqual(seqs, sorted(set(seqs)), f"pushes of {conv} to {device.name}")

    def assert_stored_gap_free(self, rows: list[tuple[str, int, int, str, int]]) -> dict[str, list[int]]:
        """Each conversation's seqs are 1..n, each (sender, client_msg_id) is stored once; the seqs by conversation."""
        seqs: dict[str, list[int]] = collections.defaultdict(list)
        for conv, seq, *_ in rows:
            seqs[conv].append(seq)
        for conv, stored in seqs.items():
            self.assertEqual(stored, list(range(1, len(stored) + 1)), f"seqs stored for {conv}")
        keys = collections.Counter((sender, cmid) for _conv, _seq, sender, cmid, _msg_id in rows)
        self.assertEqual([key for key, count in keys.items() if count > 1], [], "messages stored twice")
        return dict(seqs)


# 1. Users on different gateways, users with several devices.


class CrossGatewayTests(ScaleOutTestCase):
    """Messages cross from one gateway and logic process to the other, and reach every device of a user."""

    async def test_users_and_devices_on_different_gateways(self) -> None:
        alice, bob, carol, dave = [await self.new_user(name) for name in ("alice", "bob", "carol", "dave")]
        alice_a = await self.open_device(alice, "a")
        bob_b = await self.open_device(bob, "b")
        carol_a = await self.open_device(carol, "a")
        carol_b = await self.open_device(carol, "b")
        dave_b = await self.open_device(dave, "b")

        # 1:1 both ways between gateways A (logic 1) and B (logic 2).
        for n in range(3):
            await self.deliver(alice_a, bob, [bob_b], f"a{n}", expected_seq=2 * n + 1)
            await self.deliver(bob_b, alice, [alice_a], f"b{n}", expected_seq=2 * n + 2)

        # Carol has a device on each gateway: each gets every message, including the ones she sends from
        # the other one; a message to herself reaches only her other device.
        await self.deliver(dave_b, carol, [carol_a, carol_b], "d1", expected_seq=1)
        await self.deliver(carol_a, dave, [dave_b, carol_b], "c1", expected_seq=2)
        await self.deliver(carol_b, dave, [dave_b, carol_a], "c2", expected_seq=3)
        await self.deliver(carol_a, carol, [carol_b], "note", expected_seq=1)
        await self.deliver(dave_b, carol, [carol_a, carol_b], "d2", expected_seq=4)
        await self.deliver(carol_b, dave, [dave_b, carol_a], "c3", expected_seq=5)

        # Last, one message to every device: each gateway's deliveries come in commit order, so once these
        # are in, any push still due (a duplicate, or one to the sending session) would have come before.
        await self.deliver(alice_a, carol, [carol_a, carol_b], "to-carol", expected_seq=1)
        await self.deliver(alice_a, dave, [dave_b], "to-dave", expected_seq=1)
        await self.deliver(alice_a, bob, [bob_b], "to-bob", expected_seq=7)
        await self.deliver(bob_b, alice, [alice_a], "to-alice", expected_seq=8)

        expected = {
            alice_a: ["b0", "b1", "b2", "to-alice"],
            bob_b: ["a0", "a1", "a2", "to-bob"],
            carol_a: ["d1", "c2", "d2", "c3", "to-carol"],
            carol_b: ["d1", "c1", "note", "d2", "to-carol"],
            dave_b: ["c1", "c2", "c3", "to-dave"],
        }
        for device, client_msg_ids in expected.items():
            self.assertEqual(
                sorted(push["client_msg_id"] for push in device.pushes), sorted(client_msg_ids), device.name
            )
            self.assertEqual(device.stray, [], device.name)
        self.assert_pushes_in_seq_order(*expected)
        self.assert_stored_gap_free(read_messages(self.database))


# 2. Resume by sync.


class SyncAfterDisconnectTests(ScaleOutTestCase):
    """A client that was away gets what it missed by ``sync``, once; ``recv_ack`` moves every device on."""

    async def test_hundred_missed_messages_come_back_by_sync(self) -> None:
        alice, bob = await self.new_user("alice"), await self.new_user("bob")
        alice_a = await self.open_device(alice, "a")
        bob_b = await self.open_device(bob, "b")
        first = await self.deliver(alice_a, bob, [bob_b], "hello", expected_seq=1)
        conv = first["conv"]
        await self.recv_ack(bob_b, conv, 1)
        await bob_b.client.close()

        acks = await gatherResults(
            [Deferred.fromCoroutine(self.send(alice_a, "bob", f"m{n:03d}", f"message {n}")) for n in range(100)],
            consumeErrors=True,
        )
        sent = {ack["seq"]: ack for ack in acks}
        self.assertEqual(sorted(sent), list(range(2, 102)))

        # Bob comes back through the other gateway (and logic process) and resumes after the seq he has.
        bob_a = await self.open_device(bob, "a", "bob@a")
        synced = await self.sync(bob_a, {conv: 1})
        self.assertTrue(synced["complete"], synced)
        [recovered] = synced["convs"]
        self.assertEqual((recovered["conv"], recovered["last_seq"], recovered["complete"]), (conv, 101, True))
        messages = recovered["messages"]
        self.assertEqual([m["seq"] for m in messages], list(range(2, 102)))
        for message in messages:
            ack = sent[message["seq"]]
            self.assertEqual(
                (message["msg_id"], message["client_msg_id"], message["from"], message["body"]),
                (ack["msg_id"], ack["client_msg_id"], "alice", f"message {int(ack['client_msg_id'][1:])}"),
            )
        # One more message, pushed live: once it is in, no push of the 100 can still be on its way (one
        # conversation arrives in seq order), so "exactly once" covers the pushes too.
        await self.deliver(alice_a, bob, [bob_a], "welcome-back", expected_seq=102)
        received = collections.Counter(m["client_msg_id"] for m in [*messages, *bob_a.pushes])
        self.assertEqual(set(received.values()), {1}, received)
        self.assertEqual(len(received), 101)

        # A second device resumes where the user left off: after seq 1 before the recv_ack, nothing after it.
        bob_b2 = await self.open_device(bob, "b", "bob@b-2")
        before = await self.sync(bob_b2)
        self.assertEqual([(c["conv"], c["complete"]) for c in before["convs"]], [(conv, True)])
        self.assertEqual([m["seq"] for m in before["convs"][0]["messages"]], list(range(2, 103)))
        await self.recv_ack(bob_a, conv, 102)
        after = await self.sync(bob_b2)
        self.assertEqual(after, {"complete": True, "convs": []})
        self.assertEqual(bob_b2.pushes, [])
        self.assert_stored_gap_free(read_messages(self.database))


# 3. A gateway dies.


@dataclass
class Chatter:
    """A user with one device at a time who keeps sending to a partner and resends unacked sends."""

    user: User
    partner: str
    device: Device
    devices: list[Device] = field(default_factory=list)
    #: Acks of this user's sends, by client message id.
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Messages that came in ``sync_ok`` replies.
    synced: list[dict[str, Any]] = field(default_factory=list)
    resends: int = 0
    ready: bool = True
    _waiters: list[Deferred[Device]] = field(default_factory=list)

    def when_ready(self) -> Deferred[Device]:
        """The device to send on: now, or once the user has reconnected and synced."""
        if self.ready and not self.device.lost:
            return succeed(self.device)
        waiter: Deferred[Device] = Deferred(self._waiters.remove)
        self._waiters.append(waiter)
        return waiter

    def now_on(self, device: Device) -> None:
        """*device* (already in ``devices``) is the one to send on from now on."""
        self.device = device
        self.ready = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(device)

    def received(self) -> list[dict[str, Any]]:
        """Every message pushed to or synced by any of the user's devices, with repeats."""
        return [*(push for device in self.devices for push in device.pushes), *self.synced]

    def known(self) -> dict[str, dict[int, tuple[str, str]]]:
        """What the user knows: ``(msg_id, client_msg_id)`` by conversation and seq, from acks and received messages.

        Raises ``AssertionError`` if two of them disagree about a seq.
        """
        known: dict[str, dict[int, tuple[str, str]]] = collections.defaultdict(dict)
        for message in [*self.acks.values(), *self.received()]:
            value = (message["msg_id"], message["client_msg_id"])
            seen = known[message["conv"]].setdefault(message["seq"], value)
            if seen != value:
                where = f"seq {message['seq']} of {message['conv']}"
                raise AssertionError(f"{self.user.name}: {where} is both {seen} and {value}")
        return known

    def last_seen(self) -> dict[str, int]:
        """The seq up to which the user has every message, by conversation."""
        last = {}
        for conv, seqs in self.known().items():
            seq = 0
            while seq + 1 in seqs:
                seq += 1
            last[conv] = seq
        return last


class GatewayKillTests(ScaleOutTestCase):
    """SIGKILL of a gateway while its clients send: they move to the other one and lose or double nothing."""

    LANES = 3
    PER_LANE = 20
    KILL_AFTER_ACKS = 40
    MAX_ATTEMPTS = 30

    async def test_clients_move_to_the_other_gateway_after_sigkill(self) -> None:
        # Pairs across the gateways, and one with both ends on the gateway that dies.
        pairs = [("a", "b"), ("a", "a"), ("b", "a")]
        chatters: list[Chatter] = []
        for n, gateways in enumerate(pairs):
            users = [await self.new_user(f"user{n}{side}") for side in "xy"]
            for (user, gateway), partner in zip(zip(users, gateways, strict=True), reversed(users), strict=True):
                device = await self.open_device(user, gateway)
                chatters.append(Chatter(user, partner.name, device, [device]))
        self.acked = 0
        self.enough_acked: Deferred[None] = Deferred()
        self.reconnections: list[Deferred[None]] = []
        self.reconnecting = True
        for chatter in chatters:
            self.follow(chatter)

        lanes = [Deferred.fromCoroutine(self.lane(chatter, lane)) for chatter in chatters for lane in range(self.LANES)]
        await bounded(self.enough_acked, self.reactor, 30, f"{self.KILL_AFTER_ACKS} acks before the kill")
        doomed = self.gateways["a"]
        in_flight = sum(c.device.requests_in_flight for c in chatters if c.device.name.endswith("@a"))
        acked_at_kill = self.acked
        assert doomed.process.transport is not None
        doomed.process.transport.signalProcess("KILL")
        exit_status = await bounded(doomed.process.when_ended(), self.reactor, DEFAULT_WAIT, "gateway A to die")
        self.assertEqual(exit_status[1], signal.SIGKILL, exit_status)

        await gatherResults(lanes, consumeErrors=True)
        await gatherResults(self.reconnections, consumeErrors=True)
        self.reconnecting = False  # from here on a lost connection is the test's own cleanup
        total = len(chatters) * self.LANES * self.PER_LANE
        self.assertEqual(self.acked, total)
        self.assertGreater(in_flight, 0, "no send was in flight on gateway A when it was killed")
        self.assertLess(acked_at_kill, total // 2, "the kill came too late to be mid-run")
        self.assertEqual(len(self.reconnections), sum(1 for gateway in pairs for side in gateway if side == "a"))
        self.assertGreaterEqual(sum(c.resends for c in chatters), in_flight)

        # Each client syncs once more from what it has, as after any reconnect, and picks up what went to a
        # dead session.
        for chatter in chatters:
            await self.sync_from_last_seen(chatter, chatter.device)

        rows = read_messages(self.database)
        stored_seqs = self.assert_stored_gap_free(rows)
        stored = {(sender, cmid): (conv, seq, str(msg_id)) for conv, seq, sender, cmid, msg_id in rows}
        acked = {
            (chatter.user.user_id, cmid): (ack["conv"], ack["seq"], ack["msg_id"])
            for chatter in chatters
            for cmid, ack in chatter.acks.items()
        }
        self.assertEqual(stored, acked, "stored messages are not exactly the acked ones")

        by_name = {chatter.user.name: chatter for chatter in chatters}
        for chatter in chatters:
            partner = by_name[chatter.partner]
            [conv] = {ack["conv"] for ack in chatter.acks.values()}
            # Every message of the partner's reached this user exactly once (at one seq, its acked one),
            # by push or by sync; and the user knows the conversation whole, without a gap.
            positions: dict[str, set[int]] = collections.defaultdict(set)
            for message in chatter.received():
                if message["conv"] == conv:
                    positions[message["client_msg_id"]].add(message["seq"])
            self.assertEqual(
                {cmid: positions.get(cmid) for cmid in partner.acks},
                {cmid: {ack["seq"]} for cmid, ack in partner.acks.items()},
                f"what {chatter.user.name} received from {partner.user.name}",
            )
            self.assertEqual(sorted(chatter.known()[conv]), stored_seqs[conv], chatter.user.name)
            self.assert_pushes_in_seq_order(*chatter.devices)

    def follow(self, chatter: Chatter) -> None:
        """When the chatter's gateway goes away while the test runs, reconnect it to gateway B (the one left)."""
        device = chatter.device

        def lost(status: object) -> object:
            if self.reconnecting and chatter.device is device:
                chatter.ready = False
                self.reconnections.append(Deferred.fromCoroutine(self.reconnect(chatter)))
            return status

        device.client.close_status.addCallback(lost)

    async def reconnect(self, chatter: Chatter) -> None:
        """Protocol order: auth, then sync from what the user has, then resume sending (the lanes resend)."""
        device = await self.open_device(chatter.user, "b", f"{chatter.user.name}@b-again")
        chatter.devices.append(device)
        await self.sync_from_last_seen(chatter, device)
        chatter.now_on(device)
        self.follow(chatter)

    async def sync_from_last_seen(self, chatter: Chatter, device: Device) -> None:
        """Sync from the seq up to which the user has everything, until the reply is complete.

        Each conversation comes back from the next seq on, in order, without a gap or a repeat.
        """
        while True:
            since = chatter.last_seen()
            reply = await self.sync(device, since)
            for conv in reply["convs"]:
                start = since.get(conv["conv"], 0) + 1
                self.assertEqual(
                    [m["seq"] for m in conv["messages"]],
                    list(range(start, start + len(conv["messages"]))),
                    f"sync of {conv['conv']} from {start} on {device.name}",
                )
                chatter.synced.extend(conv["messages"])
            if reply["complete"]:
                return

    async def lane(self, chatter: Chatter, lane: int) -> None:
        """Send ``PER_LANE`` messages one after another, each until acked, resending with the same id."""
        for k in range(self.PER_LANE):
            client_msg_id = f"{chatter.user.name}-{lane}-{k}"
            body = {"client_msg_id": client_msg_id, "to": chatter.partner, "body": f"{client_msg_id} says hi"}
            for attempt in range(self.MAX_ATTEMPTS):
                if attempt:
                    chatter.resends += 1
                device = await bounded(chatter.when_ready(), self.reactor, 30, f"{chatter.user.name} to reconnect")
                try:
                    reply = await device.request("send", body, timeout=15)
                except (ConnectionClosedError, WaitTimedOutError):
                    continue
                if reply["type"] == "ack":
                    self.assertEqual(reply["body"]["client_msg_id"], client_msg_id)
                    chatter.acks[client_msg_id] = reply["body"]
                    self.acked += 1
                    if self.acked >= self.KILL_AFTER_ACKS and not self.enough_acked.called:
                        self.enough_acked.callback(None)
                    break
                self.assertEqual(reply["type"], "error", reply)
                self.assertIn(reply["body"]["code"], RETRYABLE, reply)
                await deferLater(self.reactor, 0.05 * (attempt + 1), lambda: None)  # the client's retry backoff
            else:
                self.fail(f"{client_msg_id} not acked after {self.MAX_ATTEMPTS} attempts")


# 4. Redis loses everything.


class RedisFlushTests(ScaleOutTestCase):
    """Redis is only a cache of routes: after losing every key, routes come back and nothing else changes."""

    async def test_routes_rebuild_and_seqs_continue_after_redis_loses_its_keys(self) -> None:
        from gochat.logic.redis_routes import RedisRouteService, RedisSettings

        redis = RedisRouteService(self.reactor, RedisSettings(key_prefix=self.redis_prefix))
        redis.startService()
        self.addCleanup(redis.stopService)
        await bounded(redis.when_connected(), self.reactor, DEFAULT_WAIT, "a connection to Redis")

        alice, bob = await self.new_user("alice"), await self.new_user("bob")
        alice_a = await self.open_device(alice, "a")
        bob_b = await self.open_device(bob, "b")
        expected_routes = {alice.user_id: self.gateways["a"].gateway_id, bob.user_id: self.gateways["b"].gateway_id}

        async def routes_in_place() -> bool:
            routes = await redis.store.routes(expected_routes)
            return all(
                any(route.gateway_id == gateway_id for route in routes[user_id])
                for user_id, gateway_id in expected_routes.items()
            )

        self.assertTrue(await routes_in_place())
        await self.deliver(alice_a, bob, [bob_b], "before-1", expected_seq=1)
        ack = await self.deliver(bob_b, alice, [alice_a], "before-2", expected_seq=2)
        conv = ack["conv"]
        await self.recv_ack(bob_b, conv, 2)

        # Mid-run: ten sends in flight while every key of the deployment goes.
        sends = [Deferred.fromCoroutine(self.send(alice_a, "bob", f"during-{n}")) for n in range(10)]
        [deleted] = await redis.pipeline([("EVAL", DELETE_KEYS_SCRIPT, "0", redis_glob(self.redis_prefix))])
        self.assertGreaterEqual(int(deleted), 2, "the routes of alice and bob were not in Redis")
        during = await gatherResults(sends, consumeErrors=True)
        self.assertEqual(sorted(a["seq"] for a in during), list(range(3, 13)))

        # The gateways' refreshes put the routes back, and pushes flow live again.
        await wait_until(self.reactor, routes_in_place, DEFAULT_WAIT, "the routes to come back into Redis")
        await self.deliver(alice_a, bob, [bob_b], "after-1", expected_seq=13)
        await self.deliver(bob_b, alice, [alice_a], "after-2", expected_seq=14)
        self.assert_pushes_in_seq_order(alice_a, bob_b)

        # Sync still finds the gaps in MariaDB: from the seq a client names, and from the user's recv_ack.
        gap = await self.sync(bob_b, {conv: 2})
        self.assertEqual([(c["conv"], c["complete"]) for c in gap["convs"]], [(conv, True)])
        self.assertEqual([m["seq"] for m in gap["convs"][0]["messages"]], list(range(3, 15)))
        bob_a = await self.open_device(bob, "a", "bob@a")
        resumed = await self.sync(bob_a)
        self.assertEqual(resumed["convs"], gap["convs"])

        # Seqs went on from where they were: none reused, none skipped.
        rows = read_messages(self.database)
        self.assertEqual(self.assert_stored_gap_free(rows), {conv: list(range(1, 15))})
        acked_ids = {m["seq"]: m["msg_id"] for m in gap["convs"][0]["messages"]}
        self.assertEqual({seq: str(msg_id) for _c, seq, _s, _m, msg_id in rows if seq > 2}, acked_ids)
