"""The production store on a real MariaDB: schema versions and migrations, seqs assigned in the transaction,
idempotent batched inserts, surviving killed connections and outages, and the behaviour every store shares
(:class:`tests.store_contract.StoreContract`).

Needs MariaDB (``GOCHAT_MYSQL_HOST``/``GOCHAT_MYSQL_PORT``, default
127.0.0.1:3306, user root, empty password): skipped with the reason when it is
unreachable, failed instead when ``GOCHAT_REQUIRE_SERVICES=1``. Every test
works in a database of its own, ``gochat_test_<uuid>``, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import random
import uuid
from collections.abc import Callable
from typing import Any
from unittest import mock

import pymysql
from pymysql.constants import SERVER_STATUS
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.protocols import portforward
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from gochat.errors import ErrorCode, GochatError
from gochat.logic import migrate, mysql_prepared, mysql_store
from gochat.logic.batch_writer import BatchPolicy, BatchWriter, EarlierBatchError
from gochat.logic.interfaces import StaleSequenceError
from gochat.logic.mysql_store import (
    MAX_BODY_BYTES,
    MESSAGE_ROW,
    MysqlAccountStore,
    MysqlGroupStore,
    MysqlMessageStore,
    MysqlSettings,
    MysqlStoreService,
    connect_pool,
)
from gochat.logic.persist import Committed, PersistWorker
from gochat.model import GroupRole, MessageKind, PersistRequest, StoredMessage
from tests.integration.services import require_service
from tests.store_contract import StoreContract, member
from tests.test_mysql_literals import NASTY as NASTY_TEXT

MYSQL_HOST = os.environ.get("GOCHAT_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("GOCHAT_MYSQL_PORT", "3306"))
MYSQL_USER = "root"
MYSQL_PASSWORD = ""

#: What a dead pool connection, or a batch that lost a race, logs when the writer retries it.
RETRIED_ERRORS = (pymysql.err.OperationalError, pymysql.err.InterfaceError, adbapi.ConnectionLost, StaleSequenceError)


def admin_connection(database: str | None = None) -> Any:
    return pymysql.connect(
        host=MYSQL_HOST,
        port=MYSQL_PORT,
        user=MYSQL_USER,
        password=MYSQL_PASSWORD,
        database=database,
        charset="utf8mb4",
        autocommit=True,
    )


def message(
    seq: int, cmid: str | None = None, msg_id: int | None = None, conv: str = "d:1:2", body: str = ""
) -> StoredMessage:
    """A message with its seq already set (the ``append``/``insert_batch`` path)."""
    return StoredMessage(
        msg_id=msg_id if msg_id is not None else 1000 + seq,
        conv=conv,
        seq=seq,
        sender_id=1,
        sender="alice",
        client_msg_id=cmid or f"m{seq}",
        body=body or f"body {seq} \N{GRINNING FACE}",
        ts=1_700_000_000_000 + seq,
    )


def request(n: int, cmid: str | None = None, conv: str = "d:1:2", body: str = "", sender_id: int = 1) -> PersistRequest:
    """A request before it has a seq (the ``commit_batch`` path); msg_id ``1000 + n``."""
    return PersistRequest(
        msg_id=1000 + n,
        conv=conv,
        sender_id=sender_id,
        sender="alice",
        client_msg_id=cmid or f"m{n}",
        body=body or f"body {n} \N{GRINNING FACE}",
        ts=1_700_000_000_000 + n,
        participants=(1, 2),
        origin_gateway="gw",
        origin_session="s",
    )


def stored(req: PersistRequest, seq: int) -> StoredMessage:
    """What *req* becomes once stored at *seq*."""
    return StoredMessage(req.msg_id, req.conv, seq, req.sender_id, req.sender, req.client_msg_id, req.body, req.ts)


class GatedProxyServer(portforward.ProxyServer):
    """One proxied connection; refused (accepted and aborted at once) while the gate is down."""

    factory: GatedProxyFactory

    def connectionMade(self) -> None:
        gate = self.factory
        if not gate.up:
            self.transport.abortConnection()
            gate.refused += 1
            if gate.on_refused is not None:
                gate.on_refused()
            return
        gate.live.add(self)
        super().connectionMade()

    def connectionLost(self, reason: Any) -> None:
        self.factory.live.discard(self)
        super().connectionLost(reason)


class GatedProxyFactory(portforward.ProxyFactory):
    """A TCP proxy to MariaDB standing in for the network path: it can go down and come back."""

    protocol = GatedProxyServer
    noisy = False

    def __init__(self, host: str, port: int, reactor: Any) -> None:
        super().__init__(host, port)
        self.reactor = reactor
        self.up = True
        self.live: set[GatedProxyServer] = set()
        self.refused = 0
        self.on_refused: Callable[[], None] | None = None
        self.went_down: Deferred[None] = Deferred()

    def buildProtocol(self, addr: Any) -> GatedProxyServer:
        server = GatedProxyServer()
        server.factory = self
        server.reactor = self.reactor
        return server

    def cut(self) -> None:
        """The outage: every open connection dies, new ones are refused."""
        self.up = False
        for server in list(self.live):
            server.transport.abortConnection()
        if not self.went_down.called:
            self.went_down.callback(None)

    def restore(self) -> None:
        self.up = True


class MysqlStoreTests(StoreContract, TestCase):
    timeout = 60
    messages: MysqlMessageStore
    groups: MysqlGroupStore

    def setUp(self) -> None:
        require_service("MariaDB", MYSQL_HOST, MYSQL_PORT)
        self.database = f"gochat_test_{uuid.uuid4().hex}"
        self.admin = admin_connection()
        self.addCleanup(self.admin.close)
        self.admin.cursor().execute(f"CREATE DATABASE `{self.database}` CHARACTER SET utf8mb4")
        self.addCleanup(self.admin.cursor().execute, f"DROP DATABASE IF EXISTS `{self.database}`")

    def migrate_database(self) -> int:
        connection = admin_connection(self.database)
        try:
            return migrate.apply(connection.cursor())
        finally:
            connection.close()

    def query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        """A statement on the test database through a connection of its own, outside the pool."""
        connection = admin_connection(self.database)
        try:
            cursor = connection.cursor()
            cursor.execute(sql, args or None)
            return list(cursor.fetchall())
        finally:
            connection.close()

    async def start(self, policy: BatchPolicy | None = None, port: int = MYSQL_PORT, overlap: int = 1) -> None:
        """Migrate the test database, then start the store service and a persist worker on a pool through *port*."""
        from twisted.internet import reactor

        self.migrate_database()
        policy = policy or BatchPolicy(max_batch=50, max_delay=0.002)
        self.pool = connect_pool(MysqlSettings(host=MYSQL_HOST, port=port, database=self.database), reactor)
        self.accounts = MysqlAccountStore(self.pool)
        self.messages = MysqlMessageStore(self.pool, reactor, policy, overlap=overlap)
        self.groups = MysqlGroupStore(self.pool)
        self.committed: list[Committed[None]] = []
        self.worker: PersistWorker[None] = PersistWorker(self.messages, reactor, policy, self.committed.extend)
        self.service = MysqlStoreService(self.pool, self.messages)
        self.service.startService()
        self.addCleanup(self.stop)
        self.assertEqual(await self.service.ready, migrate.SCHEMA_VERSION)

    async def stop(self) -> None:
        if self.service.running:
            await self.worker.stop()
            await self.service.stopService()

    async def start_stores(self) -> None:
        await self.start()

    async def test_a_request_that_does_not_fit_is_refused_before_it_joins_a_batch(self) -> None:
        """The worker refuses it at once with bad_request; the batch writer never sees it, the others commit."""
        await self.start()
        with self.assertRaises(GochatError) as raised:
            self.worker.submit(request(1, cmid="c" * 256))
        self.assertEqual(raised.exception.code, ErrorCode.BAD_REQUEST)
        committed = await self.worker.submit(request(2))
        self.assertEqual(committed.seq, 1)
        self.assertEqual(self.worker.writer.write_failures, 0)

    def kill_pool_connections(self) -> int:
        """``KILL`` every connection open on the test database (the pools'); how many there were."""
        cursor = self.admin.cursor()
        cursor.execute(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()", (self.database,)
        )
        ids = [row[0] for row in cursor.fetchall()]
        for connection_id in ids:
            with contextlib.suppress(pymysql.err.OperationalError):  # it may have ended meanwhile
                cursor.execute(f"KILL {int(connection_id)}")
        return len(ids)

    # Schema.

    def test_migrate_creates_versioned_schema(self) -> None:
        """apply() creates InnoDB no-pad binary utf8mb4 tables once; a second apply and check() change nothing."""
        self.assertEqual(self.migrate_database(), migrate.SCHEMA_VERSION)
        self.assertEqual(self.migrate_database(), migrate.SCHEMA_VERSION)
        self.assertEqual(
            self.query("SELECT version FROM schema_version ORDER BY version"),
            [(v,) for v in range(1, migrate.SCHEMA_VERSION + 1)],
        )
        tables = self.query(
            "SELECT TABLE_NAME, ENGINE, TABLE_COLLATION FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME <> 'schema_version' ORDER BY TABLE_NAME"
        )
        names = ["chat_groups", "group_members", "messages", "user_convs", "users"]
        self.assertEqual(sorted((name, engine) for name, engine, _ in tables), [(name, "InnoDB") for name in names])
        for _name, _engine, collation in tables:
            self.assertIn(collation, migrate.NO_PAD_BINARY_COLLATIONS)
        body_type = self.query(
            "SELECT DATA_TYPE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'messages' AND COLUMN_NAME = 'body'"
        )
        self.assertEqual(body_type, [("mediumtext",)])
        connection = admin_connection(self.database)
        self.addCleanup(connection.close)
        self.assertEqual(migrate.check(connection.cursor()), migrate.SCHEMA_VERSION)

    def test_check_refuses_schema_behind(self) -> None:
        """An empty database, or one whose last migration is missing, is behind: check() raises."""
        connection = admin_connection(self.database)
        self.addCleanup(connection.close)
        with self.assertRaises(migrate.SchemaVersionError) as caught:
            migrate.check(connection.cursor())
        self.assertEqual((caught.exception.found, caught.exception.expected), (0, migrate.SCHEMA_VERSION))
        self.assertIn("behind", str(caught.exception))
        self.migrate_database()
        self.query("DELETE FROM schema_version WHERE version = %s", migrate.SCHEMA_VERSION)
        with self.assertRaises(migrate.SchemaVersionError) as caught:
            migrate.check(connection.cursor())
        self.assertEqual(caught.exception.found, migrate.SCHEMA_VERSION - 1)

    def test_check_and_apply_refuse_schema_ahead(self) -> None:
        """A database migrated by a newer gochat is refused by check() and by apply(), which leaves it alone."""
        self.migrate_database()
        self.query("INSERT INTO schema_version (version, description) VALUES (%s, 'from the future')", 999)
        connection = admin_connection(self.database)
        self.addCleanup(connection.close)
        with self.assertRaises(migrate.SchemaVersionError) as caught:
            migrate.check(connection.cursor())
        self.assertIn("ahead", str(caught.exception))
        with self.assertRaises(migrate.SchemaVersionError):
            migrate.apply(connection.cursor())
        self.assertEqual(self.query("SELECT MAX(version) FROM schema_version"), [(999,)])

    async def test_service_refuses_unmigrated_database(self) -> None:
        """The service only checks: on a database that was never migrated, ready fails and nothing is created."""
        from twisted.internet import reactor

        pool = connect_pool(MysqlSettings(host=MYSQL_HOST, port=MYSQL_PORT, database=self.database), reactor)
        service = MysqlStoreService(pool, MysqlMessageStore(pool, reactor, BatchPolicy()))
        service.startService()
        with self.assertRaises(migrate.SchemaVersionError):
            await service.ready
        await service.stopService()
        self.flushLoggedErrors(migrate.SchemaVersionError)
        self.assertEqual(self.query("SHOW TABLES"), [])

    def test_migrate_command(self) -> None:
        """The command creates the database, migrates it, says the version; --check exits 1 until then."""
        name = f"gochat_test_{uuid.uuid4().hex}"
        self.addCleanup(self.admin.cursor().execute, f"DROP DATABASE IF EXISTS `{name}`")
        arguments = ["--host", MYSQL_HOST, "--port", str(MYSQL_PORT), "--user", MYSQL_USER, "--database", name]

        def run(*extra: str) -> tuple[int, str, str]:
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                status = migrate.main([*arguments, "--password", MYSQL_PASSWORD, *extra])
            return status, out.getvalue(), err.getvalue()

        status, _, err = run("--check")
        self.assertEqual(status, 1)
        self.assertIn("Unknown database", err)
        self.assertEqual(run(), (0, f"{name}: schema version {migrate.SCHEMA_VERSION}\n", ""))
        self.assertEqual(run(), (0, f"{name}: schema version {migrate.SCHEMA_VERSION}\n", ""))
        self.assertEqual(run("--check"), (0, f"{name}: schema version {migrate.SCHEMA_VERSION}\n", ""))
        cursor = self.admin.cursor()
        cursor.execute("SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,))
        self.assertIn(cursor.fetchone()[0], migrate.NO_PAD_BINARY_COLLATIONS)

    def schema_2_database(self) -> None:
        """The test database as gochat left it at schema version 2, with messages and a per-user index in it."""
        with (
            mock.patch.object(migrate, "MIGRATIONS", migrate.MIGRATIONS[:2]),
            mock.patch.object(migrate, "SCHEMA_VERSION", 2),
        ):
            self.assertEqual(self.migrate_database(), 2)
        rows = [(1000 + n, "d:1:2", n, 1 if n < 4 else 2, "x", f"m{n}", f"old {n}", n) for n in range(1, 6)]
        connection = admin_connection(self.database)
        try:
            cursor = connection.cursor()
            cursor.executemany(
                "INSERT INTO messages (msg_id, conv, seq, sender_id, sender, client_msg_id, body, ts)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                rows,
            )
            cursor.executemany(
                "INSERT INTO user_convs (user_id, conv, last_seq, acked_seq) VALUES (%s, %s, %s, %s)",
                [(1, "d:1:2", 5, 5), (2, "d:1:2", 5, 1)],
            )
        finally:
            connection.close()

    async def test_migration_from_schema_2_keeps_data(self) -> None:
        """``python -m gochat.logic.migrate`` takes a schema 2 database with data to 3: old messages are text,
        what each user had received counts as read, and the new columns, cursors and group tables work.
        Run again after losing its version row (a crash before the commit), it redoes nothing and succeeds."""
        self.schema_2_database()
        arguments = ["--host", MYSQL_HOST, "--port", str(MYSQL_PORT), "--user", MYSQL_USER, "--password", ""]
        arguments += ["--database", self.database]
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            self.assertEqual(migrate.main([*arguments, "--check"]), 1)
            self.assertEqual(migrate.main(arguments), 0)
        self.assertIn(f"{self.database}: schema version {migrate.SCHEMA_VERSION}\n", out.getvalue())
        self.query("DELETE FROM schema_version WHERE version = 3")
        with contextlib.redirect_stdout(io.StringIO()):
            self.assertEqual(migrate.main(arguments), 0)
        columns = self.query(
            "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, COLUMN_DEFAULT FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = DATABASE() AND COLUMN_NAME IN ('kind', 'ref_seq', 'read_seq') ORDER BY COLUMN_NAME"
        )
        self.assertEqual(
            [(table, column, kind) for table, column, kind, _ in columns],
            [
                ("messages", "kind", "varchar(16)"),
                ("user_convs", "read_seq", "bigint(20) unsigned"),
                ("messages", "ref_seq", "bigint(20) unsigned"),
            ],
        )
        self.assertEqual(self.query("SELECT read_seq FROM user_convs ORDER BY user_id"), [(5,), (1,)])

        await self.start()
        old = await self.messages.messages_after("d:1:2", 0, 10)
        self.assertEqual(
            [(m.seq, m.body, m.kind, m.ref_seq) for m in old], [(n, f"old {n}", "text", 0) for n in range(1, 6)]
        )
        self.assertEqual(
            [(c.conv, c.last_seq, c.acked_seq, c.read_seq, c.unread) for c in await self.messages.conversations(2)],
            [("d:1:2", 5, 1, 1, 2)],
        )
        edit = dataclasses.replace(request(6), kind=MessageKind.EDIT, ref_seq=4)
        [edited] = (await self.messages.commit_batch([edit], {})).results
        self.assertEqual((edited.seq, edited.kind, edited.ref_seq), (6, MessageKind.EDIT, 4))
        group = await self.groups.create("after the upgrade", [member(1, GroupRole.OWNER)], 1.0)
        self.assertEqual(await self.groups.groups_of(1), [(group, member(1, GroupRole.OWNER), 1)])

    # Accounts.

    async def test_accounts(self) -> None:
        """Accounts get increasing ids; a taken name is username_taken."""
        await self.start()
        first = await self.accounts.create("alice", "hash-a", 1.0)
        second = await self.accounts.create("bob", "hash-b", 2.0)
        self.assertEqual(second, first + 1)
        with self.assertRaises(GochatError) as caught:
            await self.accounts.create("alice", "hash-c", 3.0)
        self.assertEqual(caught.exception.code, ErrorCode.USERNAME_TAKEN)
        account = await self.accounts.by_name("bob")
        assert account is not None
        self.assertEqual((account.user_id, account.password_hash), (second, "hash-b"))
        self.assertEqual(await self.accounts.by_id(first), await self.accounts.by_name("alice"))
        self.assertIsNone(await self.accounts.by_name("carol"))
        self.assertIsNone(await self.accounts.by_id(second + 1))

    # Messages through commit_batch: seqs assigned in the transaction.

    async def test_persist_worker_round_trip(self) -> None:
        """Batched requests get seqs 1..n in order, are found by client id, and last_seq follows them."""
        await self.start()
        results = await gatherResults([self.worker.submit(request(n)) for n in range(1, 121)])
        self.assertEqual(results, [stored(request(n), n) for n in range(1, 121)])
        self.assertGreaterEqual(self.worker.writer.batches_written, 3)
        self.assertEqual(await self.messages.last_seq("d:1:2"), 120)
        self.assertEqual(await self.messages.last_seq("d:1:3"), 0)
        self.assertEqual(await self.messages.by_client_msg_id(1, "m7"), results[6])
        self.assertIsNone(await self.messages.by_client_msg_id(2, "m7"))
        self.assertEqual(await self.messages.count(), 120)
        self.assertEqual(await self.messages.messages_in("d:1:2", limit=500), results)
        self.assertEqual([item.is_new for item in self.committed], [True] * 120)

    async def test_commit_batch_redelivery_stores_nothing_twice(self) -> None:
        """Requests already stored, or twice in one batch, come back as stored and take no seq."""
        await self.start()
        batch = [request(n) for n in range(1, 11)]
        first = await self.messages.commit_batch(batch, {})
        self.assertEqual(first.results, [stored(r, n) for n, r in enumerate(batch, start=1)])
        self.assertEqual(first.last_seq, {"d:1:2": 10})
        again = await self.messages.commit_batch(batch, {"d:1:2": 10})
        self.assertEqual((again.results, again.new), (first.results, []))
        again_uncached = await self.messages.commit_batch(batch, {})
        self.assertEqual((again_uncached.results, again_uncached.new), (first.results, []))
        mixed = await self.messages.commit_batch([request(11), batch[4], request(11), request(12, conv="d:1:3")], {})
        self.assertEqual(
            mixed.results,
            [stored(request(11), 11), first.results[4], stored(request(11), 11), stored(request(12, conv="d:1:3"), 1)],
        )
        self.assertEqual(mixed.new, [stored(request(11), 11), stored(request(12, conv="d:1:3"), 1)])
        self.assertEqual(mixed.last_seq, {"d:1:2": 11, "d:1:3": 1})
        self.assertEqual((await self.messages.commit_batch([], {})).results, [])
        self.assertEqual(await self.messages.count(), 12)

    async def test_commit_batch_stale_cache_fails_whole_batch(self) -> None:
        """A batch built on a stale last-seq stores nothing and says so with StaleSequenceError."""
        await self.start()
        await self.messages.commit_batch([request(1), request(2)], {})
        with self.assertRaises(StaleSequenceError):
            await self.messages.commit_batch([request(3, conv="d:1:3"), request(4)], {"d:1:2": 0})
        self.assertEqual(await self.messages.count(), 2)
        self.assertEqual(await self.messages.last_seq("d:1:3"), 0)

    async def test_second_writer_makes_cache_stale_then_seqs_continue(self) -> None:
        """Two logic processes on one conversation: the one whose cache went stale fails its batch once,
        re-reads, and continues the seq with no gap and no reuse."""
        from twisted.internet import reactor

        await self.start(BatchPolicy(max_batch=10, max_delay=0.002, retry_initial=0.005))
        other_pool = connect_pool(MysqlSettings(host=MYSQL_HOST, port=MYSQL_PORT, database=self.database), reactor)
        self.addCleanup(other_pool.close)
        other: PersistWorker[None] = PersistWorker(
            MysqlMessageStore(other_pool, reactor, BatchPolicy()), reactor, BatchPolicy(max_batch=10), lambda _: None
        )
        self.addCleanup(other.stop)
        first = await gatherResults([self.worker.submit(request(n)) for n in range(1, 6)])
        second = await gatherResults([other.submit(request(n)) for n in range(6, 11)])
        third = await gatherResults([self.worker.submit(request(n)) for n in range(11, 16)])
        self.assertEqual([m.seq for m in first + second + third], list(range(1, 16)))
        self.assertEqual(self.worker.writer.write_failures, 1)
        self.assertEqual(len(self.flushLoggedErrors(StaleSequenceError)), 1)

    async def test_concurrent_writers_and_cross_process_redelivery(self) -> None:
        """Two processes writing the same conversations at once, each also given some of the other's requests
        (a broker redelivery): every request is stored once, every conversation's seqs are 1..n, and both
        processes report the same stored message for a shared request."""
        from twisted.internet import reactor

        policy = BatchPolicy(max_batch=20, max_delay=0.001, retry_initial=0.002, retry_max=0.02)
        await self.start(policy)
        other_pool = connect_pool(MysqlSettings(host=MYSQL_HOST, port=MYSQL_PORT, database=self.database), reactor)
        self.addCleanup(other_pool.close)
        other: PersistWorker[None] = PersistWorker(
            MysqlMessageStore(other_pool, reactor, policy), reactor, policy, lambda _: None
        )
        self.addCleanup(other.stop)
        requests = [request(n, conv=f"d:1:{2 + n % 3}") for n in range(1, 601)]
        submitted: dict[int, list[Deferred[StoredMessage]]] = {}
        for n, req in enumerate(requests, start=1):
            workers = [self.worker, other] if n % 10 == 0 else [self.worker if n % 2 else other]
            submitted[req.msg_id] = [worker.submit(req) for worker in workers]
        results = {msg_id: await gatherResults(ds) for msg_id, ds in submitted.items()}
        for msg_id, outcomes in results.items():
            self.assertEqual(len(set(outcomes)), 1, f"{msg_id} stored differently by the two processes")
        by_conv: dict[str, list[int]] = {}
        for outcomes in results.values():
            by_conv.setdefault(outcomes[0].conv, []).append(outcomes[0].seq)
        for conv, seqs in by_conv.items():
            self.assertEqual(sorted(seqs), list(range(1, len(seqs) + 1)), conv)
        rows = self.query("SELECT msg_id, conv, seq FROM messages")
        self.assertEqual(sorted(rows), sorted((m[0].msg_id, m[0].conv, m[0].seq) for m in results.values()))
        self.flushLoggedErrors(*RETRIED_ERRORS)

    async def test_unread_counts_over_many_statements(self) -> None:
        """Unread counts stay right when a user's conversations take several counting statements."""
        await self.start()
        requests = [
            request(100 * c + n, conv=f"d:2:{10 + c}", sender_id=10 + c) for c in range(5) for n in range(1, c + 2)
        ]
        await self.messages.commit_batch([dataclasses.replace(r, participants=(2, r.sender_id)) for r in requests], {})
        await self.messages.mark_read(2, "d:2:13", 2)
        with mock.patch.object(mysql_store, "UNREAD_RANGES_PER_STATEMENT", 2):
            states = await self.messages.conversations(2)
        self.assertEqual(
            [(c.conv, c.last_seq, c.read_seq, c.unread) for c in states],
            [("d:2:10", 1, 0, 1), ("d:2:11", 2, 0, 2), ("d:2:12", 3, 0, 3), ("d:2:13", 4, 2, 2), ("d:2:14", 5, 0, 5)],
        )

    # Groups: limits of the schema, and the size limit under concurrent additions.

    async def test_group_values_that_do_not_fit_are_refused(self) -> None:
        """A group name, username or role longer than its column, or a number out of range, is bad_request
        before anything is written: never truncated."""
        await self.start()
        owner = member(1, GroupRole.OWNER)
        group = await self.groups.create("n" * 64, [owner], 1.0)
        self.assertEqual(await self.groups.get(group.group_id), group)
        refusals = [
            lambda: self.groups.create("n" * 65, [owner], 1.0),
            lambda: self.groups.create("lone \ud800", [owner], 1.0),
            lambda: self.groups.create("ok", [owner, dataclasses.replace(member(2), username="u" * 65)], 1.0),
            lambda: self.groups.add_members(
                group.group_id, [member(2), dataclasses.replace(member(3), role="r" * 17)], 9
            ),
            lambda: self.groups.add_members(group.group_id, [member(2), member(-3)], 9),
            lambda: self.groups.add_members(group.group_id, [dataclasses.replace(member(2), joined_seq=2**64)], 9),
            lambda: self.groups.set_role(group.group_id, 1, "r" * 17),
            lambda: self.messages.join([1], "g:" + "9" * 200, 1),
            lambda: self.messages.commit_batch([request(1), dataclasses.replace(request(2), kind="e" * 17)], {}),
            lambda: self.messages.commit_batch([dataclasses.replace(request(2), kind="poll")], {}),
            lambda: self.messages.commit_batch([dataclasses.replace(request(2), ref_seq=-1)], {}),
        ]
        for refusal in refusals:
            with self.assertRaises(GochatError) as caught:
                refusal()
            self.assertEqual(caught.exception.code, ErrorCode.BAD_REQUEST)
        self.assertEqual(self.query("SELECT COUNT(*) FROM chat_groups"), [(1,)])
        self.assertEqual(await self.groups.members(group.group_id), [owner])
        self.assertEqual(await self.messages.count(), 0)

    async def test_concurrent_additions_never_pass_the_limit(self) -> None:
        """Additions racing from two processes (pools) are serialised on the group's row: the group ends
        exactly full, each addition either whole or refused group_full."""
        from twisted.internet import reactor

        await self.start()
        other_pool = connect_pool(MysqlSettings(host=MYSQL_HOST, port=MYSQL_PORT, database=self.database), reactor)
        self.addCleanup(other_pool.close)
        other = MysqlGroupStore(other_pool)
        group = await self.groups.create("race", [member(1, GroupRole.OWNER)], 1.0)
        limit = 15
        attempts = [
            (self.groups if n % 2 else other).add_members(group.group_id, [member(10 * n), member(10 * n + 1)], limit)
            for n in range(1, 21)
        ]

        def refusal(failure: Failure) -> GochatError:
            failure.trap(GochatError)
            assert isinstance(failure.value, GochatError)
            return failure.value

        outcomes = await gatherResults([d.addErrback(refusal) for d in attempts])
        added = [o for o in outcomes if isinstance(o, list)]
        refused = [o for o in outcomes if isinstance(o, GochatError)]
        self.assertEqual((len(added), len(refused)), (7, 13))
        self.assertEqual({o.code for o in refused}, {ErrorCode.GROUP_FULL})
        members = await self.groups.members(group.group_id)
        self.assertEqual(len(members), limit)
        self.assertEqual({m.user_id for m in members[1:]}, {m.user_id for batch in added for m in batch})

    async def test_addition_waits_for_the_group_lock_and_counts_what_was_committed(self) -> None:
        """add_members waits on the group's row while another transaction holds it, then counts the members
        that transaction committed: the group is full and nobody more is added."""
        from twisted.internet import reactor, task

        await self.start()
        group = await self.groups.create("locked", [member(1, GroupRole.OWNER)], 1.0)
        holder = pymysql.connect(
            host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, password=MYSQL_PASSWORD, database=self.database
        )
        self.addCleanup(holder.close)
        cursor = holder.cursor()
        cursor.execute("SELECT group_id FROM chat_groups WHERE group_id = %s FOR UPDATE", (group.group_id,))
        cursor.executemany(
            "INSERT INTO group_members (group_id, user_id, username, role, joined_seq) VALUES (%s, %s, %s, %s, %s)",
            [(group.group_id, user_id, f"user{user_id}", GroupRole.MEMBER, 0) for user_id in (2, 3)],
        )
        adding = self.groups.add_members(group.group_id, [member(10), member(11)], 4)
        waiting = (
            "SELECT COUNT(*) FROM information_schema.INNODB_TRX AS t JOIN information_schema.PROCESSLIST AS p"
            " ON p.ID = t.trx_mysql_thread_id WHERE p.DB = %s AND t.trx_state = 'LOCK WAIT'"
        )
        # Until the addition is seen waiting on the lock (or, wrongly, done). InnoDB refreshes what
        # INNODB_TRX shows only when it was last read over 0.1 s ago, so a faster poll would see the
        # same stale snapshot for ever.
        for _ in range(100):
            if adding.called or self.query(waiting, self.database) != [(0,)]:
                break
            await task.deferLater(reactor, 0.15, lambda: None)
        self.assertFalse(adding.called, "add_members did not wait for the group's lock")
        holder.commit()
        with self.assertRaises(GochatError) as caught:
            await adding
        self.assertEqual(caught.exception.code, ErrorCode.GROUP_FULL)
        self.assertEqual([m.user_id for m in await self.groups.members(group.group_id)], [1, 2, 3])

    # Messages with their seq set: append (the BatchWriter) and insert_batch, INSERT IGNORE.

    async def test_append_round_trip(self) -> None:
        """Appended messages are written in batches, stored once each, and found by client id."""
        await self.start()
        await gatherResults([self.messages.append(message(seq)) for seq in range(1, 121)])
        self.assertGreaterEqual(self.messages.writer.batches_written, 3)
        self.assertEqual(await self.messages.last_seq("d:1:2"), 120)
        self.assertEqual(await self.messages.by_client_msg_id(1, "m7"), message(7))
        self.assertEqual(await self.messages.count(), 120)
        recall = dataclasses.replace(message(121), kind=MessageKind.RECALL, ref_seq=7, body="")
        edit = dataclasses.replace(message(122), kind=MessageKind.EDIT, ref_seq=8, body="fixed")
        await self.messages.append(recall)
        await self.messages.insert_batch([edit])
        self.assertEqual(await self.messages.messages_before("d:1:2", 200, 2), [recall, edit])

    async def test_put_messages_are_heard_of_per_batch_once_committed(self) -> None:
        """put queues with no Deferred: on_written hears of each batch, in order, only once it is committed (its
        rows are visible to another connection by then)."""
        from twisted.internet import reactor

        await self.start()
        heard: list[tuple[int, int]] = []

        def written(batch: list[StoredMessage]) -> None:
            stored = self.query("SELECT COUNT(*) FROM messages WHERE seq <= %s", batch[-1].seq)[0][0]
            heard.append((batch[-1].seq, stored))

        store = MysqlMessageStore(
            self.pool, reactor, BatchPolicy(max_batch=40, max_delay=0.002), overlap=2, on_written=written
        )
        for seq in range(1, 121):
            store.put(message(seq))
        with self.assertRaises(GochatError) as raised:
            store.put(message(121, cmid="c" * 256))
        self.assertEqual(raised.exception.code, ErrorCode.BAD_REQUEST)
        await store.writer.stop()
        self.assertEqual(heard, [(40, 40), (80, 80), (120, 120)])
        self.assertEqual(await self.messages.messages_in("d:1:2", limit=200), [message(seq) for seq in range(1, 121)])

    async def test_redelivered_batch_inserts_nothing_twice(self) -> None:
        """The same messages again, through the writer or insert_batch, are no-ops on every unique key."""
        await self.start()
        batch = [message(seq) for seq in range(1, 11)]
        await gatherResults([self.messages.append(m) for m in batch])
        await gatherResults([self.messages.append(m) for m in batch])
        await self.messages.insert_batch(batch)
        await self.messages.insert_batch([*batch[3:], message(11)])
        await self.messages.append(message(3, cmid="other", msg_id=99))  # same (conv, seq)
        await self.messages.append(message(12, cmid="m4", msg_id=98))  # same (sender_id, client_msg_id)
        await self.messages.insert_batch([message(13, msg_id=1001)])  # same msg_id
        await self.messages.insert_batch([])
        self.assertEqual(await self.messages.count(), 11)
        self.assertEqual(await self.messages.messages_in("d:1:2"), [*batch, message(11)])

    async def test_append_overlaps_batches_and_acknowledges_in_order(self) -> None:
        """append hands the next batch to a second connection while one commits; acknowledgements still come
        in the order of the appends, and every message is stored once."""
        await self.start(BatchPolicy(max_batch=50, max_delay=0.002), overlap=2)
        in_flight = 0
        most = 0
        write_after = self.messages._write_after

        def counted(messages: list[StoredMessage], after: Deferred[None]) -> Deferred[None]:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)

            def done(result: object) -> object:
                nonlocal in_flight
                in_flight -= 1
                return result

            return write_after(messages, after).addBoth(done)

        self.messages.writer._sink = counted
        acked: list[int] = []
        appended = [
            self.messages.append(message(seq)).addCallback(lambda _, seq=seq: acked.append(seq))
            for seq in range(1, 1001)
        ]
        await gatherResults(appended)
        self.assertEqual(most, 2)
        self.assertEqual(acked, list(range(1, 1001)))
        self.assertEqual(self.query("SELECT COUNT(*), MIN(seq), MAX(seq) FROM messages"), [(1000, 1, 1000)])

    #: Rows inserted by the open transactions on the test database.
    def row_locked(self, seq: int, conv: str = "d:1:2") -> bool:
        """Whether another transaction holds the lock on the message row (*conv*, *seq*).

        A locking read that does not wait fails at once if it does: so a row
        another transaction has inserted and not yet committed is locked.
        (The tests first polled ``INNODB_TRX.trx_rows_modified`` every 5 ms,
        but InnoDB refreshes that table only when it was last read over 0.1 s
        ago, so the poll saw a stale snapshot for ever.)
        """
        connection = admin_connection(self.database)
        try:
            connection.cursor().execute(
                "SELECT seq FROM messages WHERE conv = %s AND seq = %s LOCK IN SHARE MODE NOWAIT", (conv, seq)
            )
        except pymysql.err.OperationalError as e:
            if e.args[0] == 1205:  # ER_LOCK_WAIT_TIMEOUT: what NOWAIT answers when the lock is held
                return True
            raise
        finally:
            connection.close()
        return False

    async def wait_until_locked(self, seqs: list[int], writing: Deferred[None]) -> None:
        """Poll until every row of *seqs* is locked by an uncommitted insert, or *writing* has finished."""
        from twisted.internet import reactor, task

        for _ in range(2000):
            if writing.called or all(self.row_locked(seq) for seq in seqs):
                return
            await task.deferLater(reactor, 0.005, lambda: None)

    async def test_overlapping_batch_commits_only_after_the_one_before(self) -> None:
        """A batch written while the one before commits is not visible until that one committed; if that one
        fails, it rolls back and fails with EarlierBatchError; if that one takes too long, it gives up, rolls
        back and fails with CommitOrderTimeoutError."""

        await self.start(overlap=2)
        self.messages._commit_wait = 30.0
        after: Deferred[None] = Deferred()
        writing = self.messages._write_after([message(1), message(2)], after)
        await self.wait_until_locked([1, 2], writing)
        self.assertNoResult(writing)
        self.assertTrue(self.row_locked(1) and self.row_locked(2))
        self.assertEqual(self.query("SELECT COUNT(*) FROM messages"), [(0,)])
        self.assertNoResult(writing)
        after.callback(None)
        await writing
        self.assertEqual(self.query("SELECT COUNT(*) FROM messages"), [(2,)])

        failed_before: Deferred[None] = Deferred()
        writing = self.messages._write_after([message(3)], failed_before)
        failed_before.errback(EarlierBatchError("the one before failed"))
        with self.assertRaises(EarlierBatchError):
            await writing

        self.messages._commit_wait = 0.2
        with self.assertRaises(mysql_store.CommitOrderTimeoutError):
            await self.messages._write_after([message(4)], Deferred())
        self.assertEqual(self.query("SELECT seq FROM messages ORDER BY seq"), [(1,), (2,)])

    async def test_giving_up_the_wait_releases_a_row_the_batch_before_needs(self) -> None:
        """The same row in two batches, the later one inserted first: the earlier one waits for its lock, the
        later one for the earlier one's commit. The later one gives up after commit_wait and rolls back, so the
        earlier one commits (well before InnoDB's lock wait timeout); written again, the later one finds the row
        stored (INSERT IGNORE)."""
        from twisted.internet import reactor

        await self.start()
        # Long enough for the poll below (a new connection per query) to see the rows before it gives up.
        self.messages._commit_wait = 3.0
        later = self.messages._write_after([message(2), message(3)], Deferred())
        await self.wait_until_locked([2, 3], later)
        self.assertNoResult(later)
        started = reactor.seconds()
        earlier = self.messages._write_after([message(1), message(2)], succeed(None))
        with self.assertRaises(mysql_store.CommitOrderTimeoutError):
            await later
        await earlier
        self.assertLess(reactor.seconds() - started, 20.0)  # InnoDB's lock wait timeout is 50 s
        self.assertEqual(self.query("SELECT seq FROM messages ORDER BY seq"), [(1,), (2,)])
        await self.messages._write_after([message(2), message(3)], succeed(None))
        self.assertEqual(self.query("SELECT seq FROM messages ORDER BY seq"), [(1,), (2,), (3,)])

    async def test_stop_drains_the_writer(self) -> None:
        """Stopping commits everything queued before the pool closes."""
        await self.start(BatchPolicy(max_batch=1000, max_delay=60.0))
        pending = [self.messages.append(message(seq)) for seq in range(1, 301)]
        self.assertEqual(self.query("SELECT COUNT(*) FROM messages"), [(0,)])
        await self.service.stopService()
        await gatherResults(pending)
        self.assertEqual(self.query("SELECT COUNT(*), MAX(seq) FROM messages"), [(300, 300)])

    # Text and sizes.

    async def test_text_is_stored_byte_exact(self) -> None:
        """utf8mb4 round-trips exactly: astral emoji, ZWJ sequences, combining marks, NUL, trailing spaces.

        Client ids compare byte for byte (no-pad binary collation), in SQL as
        in Python: ids that differ only by a trailing space or by case are
        different messages, and a retry of each is recognised as itself.
        """
        await self.start()
        bodies = {
            "emoji": "\N{GRINNING FACE}\N{PILE OF POO}\U0001f9d1\u200d\U0001f680 \U0001faf6\U0001f3fd",
            "family": "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
            "combining": "e\u0301 vs \u00e9, A\u030a, \u1100\u1161\u11a8",
            "cjk": "\u4f60\u597d\u4e16\u754c \U00020000\U0002a6d6",
            "controls": "nul:\x00 tab:\t cr:\r\n end",
            "spaces": "trailing spaces   ",
            "quotes": "'\"\\%_;--",
        }
        requests = [request(n, cmid=name, body=body) for n, (name, body) in enumerate(bodies.items(), start=1)]
        requests += [request(8, cmid="emoji "), request(9, cmid="Emoji")]
        first = await self.messages.commit_batch(requests, {})
        self.assertEqual(len(first.new), 9)
        again = await self.messages.commit_batch(list(reversed(requests)), {})
        self.assertEqual((again.results, again.new), (list(reversed(first.results)), []))
        self.assertEqual(await self.messages.messages_in("d:1:2"), first.results)
        for name, body in bodies.items():
            found = await self.messages.by_client_msg_id(1, name)
            assert found is not None
            self.assertEqual(found.body, body)
        for seq, body in enumerate(bodies.values(), start=1):
            [(raw,)] = self.query("SELECT CAST(body AS BINARY) FROM messages WHERE seq = %s", seq)
            self.assertEqual(raw, body.encode("utf-8"))
        self.assertEqual(await self.messages.by_client_msg_id(1, "emoji "), first.results[7])

    async def test_large_bodies(self) -> None:
        """A body over 1 MiB is stored whole; one over MAX_BODY_BYTES, or not encodable, or a field too long
        for its column, is refused with bad_request before anything is queued or written, never altered."""
        await self.start()
        generator = random.Random(7)
        big = "".join(generator.choices("abcdefghij \N{GRINNING FACE}\u00e9\u4e2d", k=800_000))
        self.assertGreater(len(big.encode("utf-8")), 1024 * 1024)
        stored_big = await self.worker.submit(request(1, body=big))
        self.assertEqual(stored_big.body, big)
        await self.messages.append(message(2, body=big))
        for cmid in ("m1", "m2"):
            found = await self.messages.by_client_msg_id(1, cmid)
            assert found is not None
            self.assertEqual(found.body, big)
        self.assertEqual(self.query("SELECT LENGTH(body) FROM messages"), [(len(big.encode("utf-8")),)] * 2)

        too_big = "x" * (MAX_BODY_BYTES + 1)
        refused: list[tuple[PersistRequest, StoredMessage]] = [
            (request(3, body=too_big), message(3, body=too_big)),
            (request(3, body="lone \ud800 surrogate"), message(3, body="lone \ud800 surrogate")),
            (request(3, cmid="c" * 256), message(3, cmid="c" * 256)),
            (request(3, conv="d:" + "9" * 200), message(3, conv="d:" + "9" * 200)),
            (request(3, sender_id=-1), message(3, msg_id=-1)),
        ]
        for refused_request, refused_message in refused:
            with self.assertRaises(GochatError) as by_commit:
                self.messages.commit_batch([request(4), refused_request], {})
            with self.assertRaises(GochatError) as by_append:
                self.messages.append(refused_message)
            with self.assertRaises(GochatError) as by_insert:
                self.messages.insert_batch([message(4), refused_message])
            for caught in (by_commit, by_append, by_insert):
                self.assertEqual(caught.exception.code, ErrorCode.BAD_REQUEST)
        self.assertEqual(len(self.messages.writer), 0)
        self.assertEqual(await self.messages.count(), 2)

    async def test_escaped_text_round_trips(self) -> None:
        """Generated text full of what needs escaping (quotes, backslashes, NUL, CR, LF, Ctrl-Z) and non-ASCII
        goes through each write path (append, insert_batch, commit_batch and its index upsert) and reads back
        exactly; the statements are built by SqlLiterals, not PyMySQL (tests/test_mysql_literals.py compares)."""
        await self.start(BatchPolicy(max_batch=40, max_delay=0.002))
        rng = random.Random(3)

        def nasty(length: int) -> str:
            return "".join(rng.choices(NASTY_TEXT, k=rng.randrange(length + 1)))

        convs = [f"g:{nasty(20)}" for _ in range(5)]
        appended = [
            message(seq, cmid=f"a{seq}{nasty(30)}", conv=convs[seq % 5], body=nasty(300) or "x")
            for seq in range(1, 121)
        ]
        appended = [dataclasses.replace(m, sender=nasty(60)) for m in appended]
        await gatherResults([self.messages.append(m) for m in appended[:80]])
        await self.messages.insert_batch(appended[80:])
        requests = [
            request(n, cmid=f"r{n}{nasty(30)}", conv=convs[n % 5], body=nasty(300) or "y") for n in range(200, 260)
        ]
        assignment = await self.messages.commit_batch(requests, {})
        self.assertEqual(len(assignment.new), len(requests))
        again = await self.messages.commit_batch(requests, {})
        self.assertEqual((again.results, again.new), (assignment.results, []))
        for conv in convs:
            expected = sorted([m for m in [*appended, *assignment.new] if m.conv == conv], key=lambda m: m.seq)
            self.assertEqual(await self.messages.messages_in(conv, 0, 1000), expected)
        heads = self.query("SELECT conv, MAX(last_seq) FROM user_convs GROUP BY conv")
        self.assertEqual(
            {conv: int(seq) for conv, seq in heads},
            {conv: max(m.seq for m in assignment.new if m.conv == conv) for conv in convs},
        )

    def strict_connection(self) -> Any:
        """A connection to the test database in the store's SQL mode, closed at cleanup."""
        connection = admin_connection(self.database)
        self.addCleanup(connection.close)
        mysql_store._configure_session(connection)
        return connection

    @staticmethod
    def session_status(cursor: Any, name: str) -> int:
        cursor.execute("SHOW SESSION STATUS LIKE %s", (name,))
        return int(cursor.fetchone()[1])

    def test_prepared_statements_store_exactly_what_literals_store(self) -> None:
        """Batches of 20 rows of odd text, 0-70,000 byte bodies and every edge of both number kinds: the first two
        go as literals, the rest through one prepared statement, and every value reads back as it was."""
        self.migrate_database()
        rng = random.Random(9)
        cursor = self.strict_connection().cursor()
        executions = self.session_status(cursor, "Com_stmt_execute")
        written: list[tuple[Any, ...]] = []
        for batch in range(6):
            rows = []
            for n in range(20):
                msg_id = batch * 20 + n + 1
                text = "".join(rng.choices(NASTY_TEXT, k=rng.randrange(128)))
                rows.append(
                    (
                        2**64 - msg_id,
                        text or "c",
                        rng.choice((1, 2**64 - 1 - msg_id)),
                        rng.choice((0, 2**64 - 1)),
                        text[:64],
                        f"{msg_id}{text}"[:255],
                        "".join(rng.choices(NASTY_TEXT, k=rng.choice((0, 300, 70_000)))),
                        rng.choice((-(2**63), -1, 0, 2**63 - 1)),
                        rng.choice(sorted(MessageKind.ALL)),
                        rng.choice((0, 2**64 - 1)),
                    )
                )
            self.assertEqual(mysql_store.execute_rows(cursor, mysql_store._INSERT_MESSAGES, MESSAGE_ROW, rows), 20)
            written += rows
        self.assertEqual(self.session_status(cursor, "Com_stmt_execute") - executions, 4)
        cursor.execute(f"SELECT {mysql_store._MESSAGE_COLUMNS} FROM messages ORDER BY msg_id DESC")
        self.assertEqual(cursor.fetchall(), tuple(written))

    def test_prepared_statements_answer_as_literals_do(self) -> None:
        """Through a prepared statement, INSERT IGNORE counts only the new rows; a plain INSERT of a stored row fails
        with the duplicate-key error the persist path turns into StaleSequenceError, and so does a value too long
        for its column, each in strict mode; the connection goes on."""
        self.migrate_database()
        connection = self.strict_connection()
        cursor = connection.cursor()
        rows = [mysql_store._message_row(message(seq)) for seq in range(1, 6)]
        insert_ignore = mysql_store._INSERT_MESSAGES
        affected = [mysql_store.execute_rows(cursor, insert_ignore, MESSAGE_ROW, rows[:2]) for _ in range(3)]
        self.assertEqual(affected, [2, 0, 0])
        statements = mysql_prepared.prepared_statements(connection)
        self.assertEqual(statements.prepared, 1)
        again = rows[1:3]
        for _ in range(3):
            executions = self.session_status(cursor, "Com_stmt_execute")
            with self.assertRaises(pymysql.err.IntegrityError) as raised:
                mysql_store.execute_rows(cursor, mysql_store._INSERT_NEW_MESSAGES, MESSAGE_ROW, again)
            self.assertEqual(raised.exception.args[0], mysql_store.ER_DUP_ENTRY)
        self.assertEqual(self.session_status(cursor, "Com_stmt_execute") - executions, 1)
        self.assertEqual(mysql_store.execute_rows(cursor, mysql_store._INSERT_MESSAGES, MESSAGE_ROW, again), 1)
        too_long = [rows[3], (*rows[4][:1], "c" * 129, *rows[4][2:])]
        for _ in range(3):
            with self.assertRaises(pymysql.err.DataError):
                mysql_store.execute_rows(cursor, mysql_store._INSERT_NEW_MESSAGES, MESSAGE_ROW, too_long)
        self.assertEqual(statements.prepared, 2)  # INSERT IGNORE and INSERT, of 2 rows each
        cursor.execute("SELECT seq FROM messages ORDER BY seq")
        self.assertEqual(cursor.fetchall(), ((1,), (2,), (3,)))

    def test_prepared_statements_survive_a_reconnect(self) -> None:
        """The same PyMySQL connection reconnected is a new server session: its statements are prepared again."""
        self.migrate_database()
        connection = self.strict_connection()
        cursor = connection.cursor()
        for seq in range(1, 4):
            mysql_store.execute_rows(
                cursor, mysql_store._INSERT_MESSAGES, MESSAGE_ROW, [mysql_store._message_row(message(seq))]
            )
        self.assertEqual(mysql_prepared.prepared_statements(connection).prepared, 1)
        connection.close()
        connection.connect()
        mysql_store._configure_session(connection)
        cursor = connection.cursor()
        row = mysql_store._message_row(message(4))
        self.assertEqual(mysql_store.execute_rows(cursor, mysql_store._INSERT_MESSAGES, MESSAGE_ROW, [row]), 1)
        self.assertEqual(mysql_prepared.prepared_statements(connection).prepared, 2)
        cursor.execute("SELECT COUNT(*) FROM messages")
        self.assertEqual(cursor.fetchone(), (4,))

    def test_escaping_without_backslashes(self) -> None:
        """In a session with NO_BACKSLASH_ESCAPES (quotes doubled, backslashes literal) the same rows round-trip
        too, and a quote cannot end a value early."""
        self.migrate_database()
        rng = random.Random(4)
        rows = [
            (n, "d:1:2", n, 1, "s", f"m{n}", "".join(rng.choices(NASTY_TEXT, k=rng.randrange(200))), n, "text", 0)
            for n in range(1, 201)
        ]
        rows.append((999, "d:1:2", 999, 1, "s", "evil", "\\'); DELETE FROM messages; -- '", 0, "text", 0))
        connection = admin_connection(self.database)
        try:
            cursor = connection.cursor()
            cursor.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
            self.assertTrue(connection.server_status & SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES)
            self.assertEqual(mysql_store.execute_rows(cursor, mysql_store._INSERT_MESSAGES, MESSAGE_ROW, rows), 201)
            cursor.execute("SELECT msg_id, body FROM messages ORDER BY msg_id")
            self.assertEqual(cursor.fetchall(), tuple((row[0], row[6]) for row in rows))
        finally:
            connection.close()

    async def test_batches_are_split_below_max_allowed_packet(self) -> None:
        """A batch of large bodies made of quotes (each escaped to twice its size) goes in statements of at most
        1,024,000 bytes or max_allowed_packet, one row alone past that; with a smaller packet limit, in smaller
        statements; a row that cannot fit in one packet fails its batch before anything is sent, and the
        connection stays usable."""
        await self.start(BatchPolicy(max_batch=10, max_delay=0.002))
        [(packet,)] = self.query("SELECT @@max_allowed_packet")
        body = "'\\" * 700_000  # 2.8 MB escaped: over PyMySQL's statement size, within the packet
        self.assertGreater(2 * len(body), mysql_store.MAX_STATEMENT_BYTES)
        self.assertLess(2 * len(body) + 1000, packet)
        big = [message(seq, body=body if seq % 2 else "short") for seq in range(1, 9)]
        await gatherResults([self.messages.append(m) for m in big])
        self.assertEqual(self.messages.writer.batches_written, 1)
        self.assertEqual(
            self.query("SELECT seq, LENGTH(body) FROM messages ORDER BY seq"),
            [(m.seq, len(m.body)) for m in big],
        )

        rows = [mysql_store._message_row(message(seq, body='"x' * 20_000)) for seq in range(100, 130)]
        connection = admin_connection(self.database)
        try:
            cursor = connection.cursor()
            mysql_store._max_allowed_packet[connection] = 100_000
            sent: list[int] = []
            execute = cursor.execute

            def recorded(sql: Any, args: Any = None) -> Any:
                sent.append(len(sql))
                return execute(sql, args)

            cursor.execute = recorded
            self.assertEqual(mysql_store.execute_rows(cursor, mysql_store._INSERT_MESSAGES, MESSAGE_ROW, rows), 30)
            self.assertGreater(len(sent), 5)
            self.assertLess(max(sent), 100_000)
            too_big = mysql_store._message_row(message(200, body="y" * 100_000))
            with self.assertRaises(pymysql.err.OperationalError) as raised:
                mysql_store.execute_rows(cursor, mysql_store._INSERT_MESSAGES, MESSAGE_ROW, [rows[0], too_big])
            self.assertEqual(raised.exception.args[0], mysql_store.ER_NET_PACKET_TOO_LARGE)
            sent.clear()
            cursor.execute("SELECT COUNT(*) FROM messages WHERE seq >= 100")
            self.assertEqual(cursor.fetchone(), (30,))
        finally:
            connection.close()

    async def test_messages_in_order_and_paging(self) -> None:
        """messages_in reads one conversation in seq order, after a seq, a page at a time."""
        await self.start()
        seqs = list(range(1, 58))
        random.Random(3).shuffle(seqs)
        await self.messages.insert_batch([message(seq) for seq in seqs])
        await self.messages.insert_batch(
            [message(seq, conv="d:1:3", msg_id=5000 + seq, cmid=f"other{seq}") for seq in range(1, 20)]
        )
        pages: list[list[StoredMessage]] = []
        after = 0
        while True:
            page = await self.messages.messages_in("d:1:2", after_seq=after, limit=10)
            if not page:
                break
            pages.append(page)
            after = page[-1].seq
        self.assertEqual([len(page) for page in pages], [10, 10, 10, 10, 10, 7])
        self.assertEqual([m for page in pages for m in page], [message(seq) for seq in range(1, 58)])
        self.assertEqual([m.seq for m in await self.messages.messages_in("d:1:3", after_seq=17)], [18, 19])
        self.assertEqual(await self.messages.messages_in("d:9:9"), [])
        with self.assertRaises(ValueError):
            self.messages.messages_in("d:1:2", limit=0)

    # Failures: the writer waits and resumes; nothing acknowledged is lost, nothing is stored twice.

    def submit(self, n: int, through_worker: bool) -> Deferred[Any]:
        """Message *n* of conversation d:1:2 (msg_id 1000 + n, seq n) through the chosen path."""
        return self.worker.submit(request(n)) if through_worker else self.messages.append(message(n))

    def writer(self, through_worker: bool) -> BatchWriter[Any]:
        return self.worker.writer if through_worker else self.messages.writer

    async def assert_stored_once(self, total: int, results: list[Any], through_worker: bool) -> None:
        """Messages 1..total are each stored once at seq n; the worker acknowledged each with what is stored."""
        if through_worker:
            self.assertEqual(results, [stored(request(n), n) for n in range(1, total + 1)])
        self.assertEqual(await self.messages.count(), total)
        rows = self.query("SELECT msg_id, seq FROM messages ORDER BY seq")
        self.assertEqual(rows, [(1000 + n, n) for n in range(1, total + 1)])

    async def killed_connections(self, through_worker: bool) -> None:
        await self.start(BatchPolicy(max_batch=100, max_delay=0.002, retry_initial=0.01, retry_max=0.1))
        total = 3000
        kills: list[int] = []
        reads: list[tuple[int, Deferred[int]]] = []

        def kill_until_the_writer_has_failed(result: object) -> object:
            if self.writer(through_worker).write_failures < 3:
                kills.append(self.kill_pool_connections())
            return result

        def batch_committed(result: object, n: int) -> object:
            # Kill every pool connection after each committed batch, and again
            # once the read issued after that kill has answered (the read may
            # have taken, failed on and replaced the connections the writer
            # would have met), until the writer has failed three times: with
            # no read in between, the writer's next batch meets a killed
            # connection or is killed in flight, so the failures are certain.
            if self.writer(through_worker).write_failures < 3:
                kills.append(self.kill_pool_connections())
                read = self.messages.last_seq("d:1:2")
                read.addCallback(kill_until_the_writer_has_failed)
                reads.append((n, read))
            return result

        submitted = []
        for n in range(1, total + 1):
            d = self.submit(n, through_worker)
            if n % 100 == 0:
                d.addCallback(batch_committed, n)
            submitted.append(d)
        results = await gatherResults(submitted)

        self.assertGreaterEqual(self.writer(through_worker).write_failures, 3)
        self.assertGreater(sum(kills), 0)
        for committed_n, read in reads:
            # A read issued right after the kill still answers, with what was committed by then or later.
            last_seq = await read
            self.assertGreaterEqual(last_seq, committed_n)
            self.assertEqual(last_seq % 100, 0)
        await self.assert_stored_once(total, results, through_worker)
        self.flushLoggedErrors(*RETRIED_ERRORS)

    async def test_persist_worker_resumes_after_connections_are_killed(self) -> None:
        """commit_batch batches keep flowing while the pool's connections are KILLed; reads retry; every
        message is stored exactly once at its seq."""
        await self.killed_connections(through_worker=True)

    async def test_append_writer_resumes_after_connections_are_killed(self) -> None:
        """The same for append (INSERT IGNORE through the BatchWriter)."""
        await self.killed_connections(through_worker=False)

    async def outage(self, through_worker: bool) -> None:
        from twisted.internet import reactor

        gate = GatedProxyFactory(MYSQL_HOST, MYSQL_PORT, reactor)
        listening = reactor.listenTCP(0, gate, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        await self.start(
            BatchPolicy(max_batch=50, max_delay=0.002, retry_initial=0.01, retry_max=0.05),
            port=listening.getHost().port,
        )
        total = 1000
        writer = self.writer(through_worker)
        acked: set[int] = set()
        read_refused: Deferred[None] = Deferred()
        outage_over: Deferred[tuple[set[int], set[int]]] = Deferred()
        failures_before = writer.write_failures

        def end_outage_when_seen_down() -> None:
            # Called on each refused connection: come back once the writer has
            # retried a few times and the read below has been refused.
            retried = writer.write_failures - failures_before >= 3
            if retried and read_refused.called and not outage_over.called:
                stored_seqs = {row[0] for row in self.query("SELECT seq FROM messages")}
                acked_while_down = set(acked)
                gate.restore()
                outage_over.callback((acked_while_down, stored_seqs))

        gate.on_refused = end_outage_when_seen_down

        def record(result: object, n: int) -> object:
            acked.add(n)
            if n == 150:
                # The next batch is in flight, or about to be: cut now.
                reactor.callLater(0, gate.cut)
            return result

        submitted = [self.submit(n, through_worker).addCallback(record, n) for n in range(1, total + 1)]
        await gate.went_down
        with self.assertRaises(GochatError) as caught:
            await self.messages.last_seq("d:1:2")
        self.assertEqual(caught.exception.code, ErrorCode.UNAVAILABLE)
        read_refused.callback(None)

        acked_while_down, stored_while_down = await outage_over
        self.assertGreaterEqual(len(acked_while_down), 150)
        self.assertLess(len(acked_while_down), total)
        self.assertLessEqual(acked_while_down, stored_while_down)
        results = await gatherResults(submitted)
        self.assertEqual(acked, set(range(1, total + 1)))
        await self.assert_stored_once(total, results, through_worker)
        self.assertGreater(gate.refused, 0)
        self.flushLoggedErrors(*RETRIED_ERRORS)

    async def test_persist_worker_survives_outage(self) -> None:
        """While the database is unreachable commit_batch writes wait (nothing is acked that is not stored)
        and reads fail ``unavailable``; once it is back every message is stored exactly once at its seq."""
        await self.outage(through_worker=True)

    async def test_append_writer_survives_outage(self) -> None:
        """The same for append (INSERT IGNORE through the BatchWriter)."""
        await self.outage(through_worker=False)
