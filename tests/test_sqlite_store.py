"""The embedded store on a real SQLite file: schema, idempotent batched inserts, and ChatLogic over it."""

from __future__ import annotations

import sqlite3

from twisted.internet.defer import gatherResults
from twisted.trial.unittest import TestCase

from gochat.errors import ErrorCode, GochatError
from gochat.logic import sqlite_store
from gochat.logic.batch_writer import BatchPolicy
from gochat.logic.sqlite_store import SqliteAccountStore, SqliteMessageStore, SqliteStoreService, connect_pool
from gochat.model import StoredMessage


def message(seq: int, cmid: str | None = None, msg_id: int | None = None) -> StoredMessage:
    return StoredMessage(
        msg_id=msg_id if msg_id is not None else 1000 + seq,
        conv="d:1:2",
        seq=seq,
        sender_id=1,
        sender="alice",
        client_msg_id=cmid or f"m{seq}",
        body=f"body {seq} \N{GRINNING FACE}",
        ts=1_700_000_000_000 + seq,
    )


class SqliteStoreTests(TestCase):
    timeout = 30

    async def start(self, path: str | None = None) -> None:
        from twisted.internet import reactor

        self.path = path or self.mktemp()
        self.pool = connect_pool(self.path, reactor)
        self.accounts = SqliteAccountStore(self.pool)
        self.messages = SqliteMessageStore(self.pool, reactor, BatchPolicy(max_batch=50, max_delay=0.002))
        self.service = SqliteStoreService(self.pool, self.messages)
        self.service.startService()
        self.assertEqual(await self.service.ready, sqlite_store.SCHEMA_VERSION)

    async def stop(self) -> None:
        await self.service.stopService()

    async def test_messages_round_trip(self) -> None:
        """Batched messages are stored once each, found by client id, and last_seq follows them."""
        await self.start()
        self.addCleanup(self.stop)
        await gatherResults([self.messages.append(message(seq)) for seq in range(1, 121)])
        self.assertGreaterEqual(self.messages.writer.batches_written, 3)
        self.assertEqual(await self.messages.last_seq("d:1:2"), 120)
        self.assertEqual(await self.messages.last_seq("d:1:3"), 0)
        self.assertEqual(await self.messages.by_client_msg_id(1, "m7"), message(7))
        self.assertIsNone(await self.messages.by_client_msg_id(2, "m7"))
        self.assertEqual(await self.messages.count(), 120)

    async def test_redelivered_batch_inserts_nothing_twice(self) -> None:
        """Storing the same messages again (a redelivery) is a no-op, by msg_id, by seq and by client id."""
        await self.start()
        self.addCleanup(self.stop)
        await gatherResults([self.messages.append(message(seq)) for seq in range(1, 11)])
        await gatherResults([self.messages.append(message(seq)) for seq in range(1, 11)])
        await self.messages.append(message(3, cmid="other", msg_id=99))
        await self.messages.append(message(11, cmid="m4", msg_id=98))
        self.assertEqual(await self.messages.count(), 10)

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
        pending = [self.messages.append(message(seq)) for seq in range(1, 6)]
        await self.stop()
        await gatherResults(pending)
        await self.start(self.path)
        self.addCleanup(self.stop)
        self.assertEqual(await self.messages.last_seq("d:1:2"), 5)
        connection = sqlite3.connect(self.path)
        self.addCleanup(connection.close)
        versions = connection.execute("SELECT version FROM schema_version").fetchall()
        self.assertEqual(versions, [(sqlite_store.SCHEMA_VERSION,)])

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
        service = SqliteStoreService(pool, SqliteMessageStore(pool, reactor, BatchPolicy()))
        service.startService()
        with self.assertRaises(RuntimeError):
            await service.ready
        await service.stopService()
        self.flushLoggedErrors(RuntimeError)
