"""The embedded store on a real SQLite file: schema and its migrations, idempotent batched inserts, and the
behaviour every store shares (:class:`tests.store_contract.StoreContract`)."""

from __future__ import annotations

import dataclasses
import sqlite3

from twisted.internet.defer import gatherResults
from twisted.trial.unittest import TestCase

from gochat.errors import ErrorCode, GochatError
from gochat.logic import sqlite_store
from gochat.logic.batch_writer import BatchPolicy
from gochat.logic.interfaces import StaleSequenceError
from gochat.logic.persist import Committed, PersistWorker
from gochat.logic.sequencing import participants
from gochat.logic.sqlite_store import (
    SqliteAccountStore,
    SqliteGroupStore,
    SqliteMessageStore,
    SqliteStoreService,
    connect_pool,
)
from gochat.model import MessageKind, PersistRequest
from tests.store_contract import StoreContract


def request(n: int, cmid: str | None = None, conv: str = "d:1:2") -> PersistRequest:
    return PersistRequest(
        msg_id=1000 + n,
        conv=conv,
        sender_id=1,
        sender="alice",
        client_msg_id=cmid or f"m{n}",
        body=f"body {n} \N{GRINNING FACE}",
        ts=1_700_000_000_000 + n,
        participants=participants(conv),
        origin_gateway="gw",
        origin_session="s",
    )


def schema_2_database(path: str) -> None:
    """An SQLite file as gochat left it at schema version 2, with messages and a per-user index in it."""
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version, statements in sqlite_store.MIGRATIONS[:2]:
        for statement in statements:
            connection.execute(statement)
        connection.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    connection.executemany(
        "INSERT INTO messages (msg_id, conv, seq, sender_id, sender, client_msg_id, body, ts)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(1000 + n, "d:1:2", n, 1 if n < 4 else 2, "x", f"m{n}", f"old {n}", n) for n in range(1, 6)],
    )
    connection.executemany(
        "INSERT INTO user_convs (user_id, conv, last_seq, acked_seq) VALUES (?, ?, ?, ?)",
        [(1, "d:1:2", 5, 5), (2, "d:1:2", 5, 1)],
    )
    connection.commit()
    connection.close()


class SqliteStoreTests(StoreContract, TestCase):
    timeout = 30
    messages: SqliteMessageStore
    groups: SqliteGroupStore

    async def start(self, path: str | None = None) -> None:
        from twisted.internet import reactor

        self.path = path or self.mktemp()
        self.pool = connect_pool(self.path, reactor)
        self.accounts = SqliteAccountStore(self.pool)
        self.messages = SqliteMessageStore(self.pool)
        self.groups = SqliteGroupStore(self.pool)
        self.committed: list[Committed[None]] = []
        self.worker: PersistWorker[None] = PersistWorker(
            self.messages, reactor, BatchPolicy(max_batch=50, max_delay=0.002), self.committed.extend
        )
        self.service = SqliteStoreService(self.pool)
        self.service.startService()
        self.assertEqual(await self.service.ready, sqlite_store.SCHEMA_VERSION)

    async def stop(self) -> None:
        await self.worker.stop()
        self.service.stopService()

    async def start_stores(self) -> None:
        await self.start()
        self.addCleanup(self.stop)

    async def test_messages_round_trip(self) -> None:
        """Batched messages get seqs 1..n in order, are found by client id, and last_seq follows them."""
        await self.start()
        self.addCleanup(self.stop)
        stored = await gatherResults([self.worker.submit(request(n)) for n in range(1, 121)])
        self.assertEqual([m.seq for m in stored], list(range(1, 121)))
        self.assertGreaterEqual(self.worker.writer.batches_written, 3)
        self.assertEqual(await self.messages.last_seq("d:1:2"), 120)
        self.assertEqual(await self.messages.last_seq("d:1:3"), 0)
        self.assertEqual(await self.messages.by_client_msg_id(1, "m7"), stored[6])
        self.assertEqual(stored[6].body, "body 7 \N{GRINNING FACE}")
        self.assertIsNone(await self.messages.by_client_msg_id(2, "m7"))
        self.assertEqual(await self.messages.count(), 120)
        self.assertEqual([item.is_new for item in self.committed], [True] * 120)

    async def test_put_requests_are_heard_of_through_on_committed(self) -> None:
        """Requests queued with put (no Deferred each) are stored in order and reported once each, with their
        contexts, to on_committed."""
        from twisted.internet import reactor

        await self.start()
        self.addCleanup(self.stop)
        heard: list[tuple[int, str | None]] = []
        worker: PersistWorker[str] = PersistWorker(
            self.messages,
            reactor,
            BatchPolicy(max_batch=50, max_delay=0.002),
            lambda items: heard.extend((item.message.seq if item.message else -1, item.context) for item in items),
        )
        for n in range(1, 121):
            worker.put(request(n), f"c{n}")
        await worker.stop()
        self.assertEqual(heard, [(n, f"c{n}") for n in range(1, 121)])
        self.assertEqual(await self.messages.count(), 120)

    async def test_redelivered_batch_inserts_nothing_twice(self) -> None:
        """Committing the same requests again (a broker redelivery) stores nothing and returns the same messages."""
        await self.start()
        self.addCleanup(self.stop)
        batch = [request(n) for n in range(1, 11)]
        first = await self.messages.commit_batch(batch, {})
        again = await self.messages.commit_batch(batch, {"d:1:2": 10})
        self.assertEqual(again.results, first.results)
        self.assertEqual(again.new, [])
        self.assertEqual(await self.messages.count(), 10)

    async def test_stale_cache_fails_whole_batch(self) -> None:
        """A batch built on a stale last-seq stores nothing and says so with StaleSequenceError."""
        await self.start()
        self.addCleanup(self.stop)
        await self.messages.commit_batch([request(1), request(2)], {})
        with self.assertRaises(StaleSequenceError):
            await self.messages.commit_batch([request(3, conv="d:1:3"), request(4)], {"d:1:2": 0})
        self.assertEqual(await self.messages.count(), 2)
        self.assertEqual(await self.messages.last_seq("d:1:3"), 0)

    async def test_accounts(self) -> None:
        """Accounts get increasing ids; a taken name is username_taken."""
        await self.start()
        self.addCleanup(self.stop)
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

    async def test_data_survives_restart(self) -> None:
        """Stop flushes what is queued; a restart on the same file migrates nothing and sees the data."""
        await self.start()
        pending = [self.worker.submit(request(n)) for n in range(1, 6)]
        await self.stop()
        await gatherResults(pending)
        await self.start(self.path)
        self.addCleanup(self.stop)
        self.assertEqual(await self.messages.last_seq("d:1:2"), 5)
        connection = sqlite3.connect(self.path)
        self.addCleanup(connection.close)
        versions = connection.execute("SELECT version FROM schema_version").fetchall()
        self.assertEqual(versions, [(v,) for v in range(1, sqlite_store.SCHEMA_VERSION + 1)])

    async def test_newer_schema_is_refused(self) -> None:
        """A database from a newer gochat is refused at start, not silently used."""
        path = self.mktemp()
        connection = sqlite3.connect(path)
        connection.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        connection.execute("INSERT INTO schema_version VALUES (999)")
        connection.commit()
        connection.close()
        from twisted.internet import reactor

        pool = connect_pool(path, reactor)
        service = SqliteStoreService(pool)
        service.startService()
        with self.assertRaises(RuntimeError):
            await service.ready
        service.stopService()
        self.flushLoggedErrors(RuntimeError)

    async def test_per_user_conversation_index(self) -> None:
        """Each participant's index follows the newest seq; received cursors only rise, up to the newest."""
        await self.start()
        self.addCleanup(self.stop)
        await gatherResults([self.worker.submit(request(n)) for n in range(1, 6)])
        await self.worker.submit(request(6, conv="d:1:3"))
        self.assertEqual(
            [(c.conv, c.last_seq, c.acked_seq) for c in await self.messages.conversations(1)],
            [("d:1:2", 5, 0), ("d:1:3", 1, 0)],
        )
        self.assertEqual([(c.conv, c.last_seq) for c in await self.messages.conversations(2)], [("d:1:2", 5)])
        await self.messages.record_received(2, "d:1:2", 3)
        await self.messages.record_received(2, "d:1:2", 1)
        await self.messages.record_received(2, "d:1:2", 99)
        await self.messages.record_received(2, "d:1:3", 1)
        self.assertEqual([(c.conv, c.acked_seq) for c in await self.messages.conversations(2)], [("d:1:2", 5)])
        self.assertEqual([m.seq for m in await self.messages.messages_after("d:1:2", 2, 2)], [3, 4])

    async def test_migration_from_schema_2_keeps_data(self) -> None:
        """A schema 2 file with data is migrated at start: old messages are text, what each user had received
        counts as read, and the new columns, cursors and group tables work."""
        path = self.mktemp()
        schema_2_database(path)
        await self.start(path)
        self.addCleanup(self.stop)
        old = await self.messages.messages_after("d:1:2", 0, 10)
        self.assertEqual(
            [(m.seq, m.body, m.kind, m.ref_seq) for m in old], [(n, f"old {n}", "text", 0) for n in range(1, 6)]
        )
        self.assertEqual(
            [(c.conv, c.last_seq, c.acked_seq, c.read_seq, c.unread) for c in await self.messages.conversations(2)],
            [("d:1:2", 5, 1, 1, 2)],
        )
        self.assertEqual(await self.messages.read_positions("d:1:2"), {1: 5, 2: 1})
        edit = dataclasses.replace(request(6), kind=MessageKind.EDIT, ref_seq=4)
        [stored] = (await self.messages.commit_batch([edit], {})).results
        self.assertEqual((stored.seq, stored.kind, stored.ref_seq), (6, MessageKind.EDIT, 4))
        group = await self.groups.create("after the upgrade", [], 1.0)
        self.assertEqual(await self.groups.get(group.group_id), group)
        connection = sqlite3.connect(path)
        self.addCleanup(connection.close)
        versions = connection.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        self.assertEqual(versions, [(v,) for v in range(1, sqlite_store.SCHEMA_VERSION + 1)])

    async def test_failed_migration_changes_nothing(self) -> None:
        """A migration that fails part way is rolled back whole: the file stays at schema 2, data intact."""
        path = self.mktemp()
        schema_2_database(path)
        connection = sqlite3.connect(path)
        self.addCleanup(connection.close)
        connection.execute("CREATE TABLE group_members (in_the_way INTEGER)")  # migration 3's last table
        connection.commit()
        from twisted.internet import reactor

        service = SqliteStoreService(connect_pool(path, reactor))
        service.startService()
        with self.assertRaises(sqlite3.OperationalError):
            await service.ready
        service.stopService()
        self.flushLoggedErrors(sqlite3.OperationalError)
        self.assertEqual(connection.execute("SELECT MAX(version) FROM schema_version").fetchone(), (2,))
        columns = {row[1] for row in connection.execute("PRAGMA table_info(messages)")}
        self.assertNotIn("kind", columns)
        self.assertIsNone(connection.execute("SELECT name FROM sqlite_master WHERE name = 'chat_groups'").fetchone())
        self.assertEqual(connection.execute("SELECT COUNT(*) FROM messages").fetchone(), (5,))
