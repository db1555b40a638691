"""The embedded default's store: SQLite through ``twisted.enterprise.adbapi``.

Accounts are written one by one; messages come in batches from the same
:class:`~gochat.logic.persist.PersistWorker` as in production, one
``executemany`` transaction per batch. The pool has a single connection
(SQLite allows one writer), so statements run in the order they were issued
and the schema migration issued at start runs before anything else.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger

from gochat.errors import ErrorCode, GochatError
from gochat.logic.interfaces import Account, ConversationState, StaleSequenceError
from gochat.logic.sequencing import Assignment, assign_seqs, conversation_heads
from gochat.model import PersistRequest, StoredMessage

_log = Logger()
T = TypeVar("T")


def _interact(pool: adbapi.ConnectionPool, work: Callable[[Any], T]) -> Deferred[T]:
    """``runInteraction`` with its result type kept (adbapi is unannotated)."""
    d: Deferred[T] = pool.runInteraction(work)
    return d


MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE users (
                user_id INTEGER PRIMARY KEY AUTOINCREMENT,
                username TEXT NOT NULL UNIQUE,
                password_hash TEXT NOT NULL,
                created_at REAL NOT NULL
            )""",
            """CREATE TABLE messages (
                msg_id INTEGER PRIMARY KEY,
                conv TEXT NOT NULL,
                seq INTEGER NOT NULL,
                sender_id INTEGER NOT NULL,
                sender TEXT NOT NULL,
                client_msg_id TEXT NOT NULL,
                body TEXT NOT NULL,
                ts INTEGER NOT NULL,
                UNIQUE (conv, seq),
                UNIQUE (sender_id, client_msg_id)
            )""",
        ],
    ),
    (
        2,
        [
            """CREATE TABLE user_convs (
                user_id INTEGER NOT NULL,
                conv TEXT NOT NULL,
                last_seq INTEGER NOT NULL,
                acked_seq INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (user_id, conv)
            )""",
            # Backfill: a one-to-one key is d:<low>:<high>.
            """INSERT OR IGNORE INTO user_convs (user_id, conv, last_seq, acked_seq)
                SELECT CAST(substr(conv, 3, instr(substr(conv, 3), ':') - 1) AS INTEGER), conv, MAX(seq), 0
                FROM messages WHERE conv LIKE 'd:%' GROUP BY conv
                UNION ALL
                SELECT CAST(substr(conv, 3 + instr(substr(conv, 3), ':')) AS INTEGER), conv, MAX(seq), 0
                FROM messages WHERE conv LIKE 'd:%' GROUP BY conv""",
        ],
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

_MESSAGE_COLUMNS = "msg_id, conv, seq, sender_id, sender, client_msg_id, body, ts"
_INSERT_MESSAGE = f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_UPSERT_HEADS = (
    "INSERT INTO user_convs (user_id, conv, last_seq, acked_seq) VALUES (?, ?, ?, 0)"
    " ON CONFLICT (user_id, conv) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq)"
)
_SELECT_BY_CLIENT_ID = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE sender_id = ? AND client_msg_id = ?"


def _configure_connection(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA busy_timeout=5000")


def connect_pool(path: str, reactor: IReactorThreads) -> adbapi.ConnectionPool:
    """A one-connection adbapi pool on the SQLite file at *path*."""
    return adbapi.ConnectionPool(
        "sqlite3",
        path,
        check_same_thread=False,
        cp_min=1,
        cp_max=1,
        cp_openfun=_configure_connection,
        cp_reactor=reactor,
    )


def _migrate(cursor: Any) -> int:
    cursor.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    cursor.execute("SELECT MAX(version) FROM schema_version")
    current = cursor.fetchone()[0] or 0
    if current > SCHEMA_VERSION:
        raise RuntimeError(f"database schema {current} is newer than this gochat ({SCHEMA_VERSION})")
    for version, statements in MIGRATIONS:
        if version > current:
            for statement in statements:
                cursor.execute(statement)
            cursor.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            current = version
    return int(current)


class SqliteAccountStore:
    """:class:`~gochat.logic.interfaces.IAccountStore` on SQLite."""

    def __init__(self, pool: adbapi.ConnectionPool) -> None:
        self._pool = pool

    def create(self, username: str, password_hash: str, created_at: float) -> Deferred[int]:
        def insert(cursor: Any) -> int:
            try:
                cursor.execute(
                    "INSERT INTO users (username, password_hash, created_at) VALUES (?, ?, ?)",
                    (username, password_hash, created_at),
                )
            except sqlite3.IntegrityError:
                raise GochatError(ErrorCode.USERNAME_TAKEN, f"{username!r} is taken") from None
            return int(cursor.lastrowid)

        return _interact(self._pool, insert)

    def _one(self, where: str, value: object) -> Deferred[Account | None]:
        def select(cursor: Any) -> Account | None:
            cursor.execute(f"SELECT user_id, username, password_hash FROM users WHERE {where} = ?", (value,))
            row = cursor.fetchone()
            return None if row is None else Account(int(row[0]), row[1], row[2])

        return _interact(self._pool, select)

    def by_name(self, username: str) -> Deferred[Account | None]:
        return self._one("username", username)

    def by_id(self, user_id: int) -> Deferred[Account | None]:
        return self._one("user_id", user_id)


def _message_row(message: StoredMessage) -> tuple[object, ...]:
    return (
        message.msg_id,
        message.conv,
        message.seq,
        message.sender_id,
        message.sender,
        message.client_msg_id,
        message.body,
        message.ts,
    )


class SqliteMessageStore:
    """:class:`~gochat.logic.interfaces.IMessageStore` on SQLite."""

    def __init__(self, pool: adbapi.ConnectionPool) -> None:
        self._pool = pool

    def commit_batch(
        self, requests: Sequence[PersistRequest], known_last_seq: Mapping[str, int]
    ) -> Deferred[Assignment]:
        batch = list(requests)
        cached = dict(known_last_seq)

        def commit(cursor: Any) -> Assignment:
            existing: dict[tuple[int, str], StoredMessage] = {}
            for sender_id, client_msg_id in {(r.sender_id, r.client_msg_id) for r in batch}:
                cursor.execute(_SELECT_BY_CLIENT_ID, (sender_id, client_msg_id))
                row = cursor.fetchone()
                if row is not None:
                    existing[(sender_id, client_msg_id)] = StoredMessage(*row)
            last: dict[str, int] = {}
            for conv in {r.conv for r in batch}:
                if conv in cached:
                    last[conv] = cached[conv]
                else:
                    cursor.execute("SELECT MAX(seq) FROM messages WHERE conv = ?", (conv,))
                    last[conv] = int(cursor.fetchone()[0] or 0)
            assignment = assign_seqs(batch, existing, last)
            try:
                cursor.executemany(_INSERT_MESSAGE, [_message_row(m) for m in assignment.new])
            except sqlite3.IntegrityError as e:
                raise StaleSequenceError(str(e)) from e
            heads = conversation_heads(batch, assignment.new)
            cursor.executemany(_UPSERT_HEADS, [(uid, conv, seq) for (uid, conv), seq in sorted(heads.items())])
            return assignment

        return _interact(self._pool, commit)

    def by_client_msg_id(self, sender_id: int, client_msg_id: str) -> Deferred[StoredMessage | None]:
        def select(cursor: Any) -> StoredMessage | None:
            cursor.execute(_SELECT_BY_CLIENT_ID, (sender_id, client_msg_id))
            row = cursor.fetchone()
            return None if row is None else StoredMessage(*row)

        return _interact(self._pool, select)

    def last_seq(self, conv: str) -> Deferred[int]:
        def select(cursor: Any) -> int:
            cursor.execute("SELECT MAX(seq) FROM messages WHERE conv = ?", (conv,))
            return int(cursor.fetchone()[0] or 0)

        return _interact(self._pool, select)

    def conversations(self, user_id: int) -> Deferred[list[ConversationState]]:
        def select(cursor: Any) -> list[ConversationState]:
            cursor.execute(
                "SELECT conv, last_seq, acked_seq FROM user_convs WHERE user_id = ? ORDER BY conv", (user_id,)
            )
            return [ConversationState(conv, int(last), int(acked)) for conv, last, acked in cursor.fetchall()]

        return _interact(self._pool, select)

    def messages_after(self, conv: str, after_seq: int, limit: int) -> Deferred[list[StoredMessage]]:
        def select(cursor: Any) -> list[StoredMessage]:
            cursor.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conv = ? AND seq > ? ORDER BY seq LIMIT ?",
                (conv, after_seq, limit),
            )
            return [StoredMessage(*row) for row in cursor.fetchall()]

        return _interact(self._pool, select)

    def record_received(self, user_id: int, conv: str, seq: int) -> Deferred[None]:
        def update(cursor: Any) -> None:
            cursor.execute(
                "UPDATE user_convs SET acked_seq = MAX(acked_seq, MIN(?, last_seq)) WHERE user_id = ? AND conv = ?",
                (seq, user_id, conv),
            )

        return _interact(self._pool, update)

    def count(self) -> Deferred[int]:
        """How many messages are stored (for operators and tests)."""

        def select(cursor: Any) -> int:
            cursor.execute("SELECT COUNT(*) FROM messages")
            return int(cursor.fetchone()[0])

        return _interact(self._pool, select)


class SqliteStoreService(Service):
    """Owns the pool: migrates the schema at start, closes the pool at stop."""

    def __init__(self, pool: adbapi.ConnectionPool) -> None:
        self._pool = pool
        self.ready: Deferred[int] = Deferred()

    def startService(self) -> None:
        super().startService()
        d = self._pool.runInteraction(_migrate)
        d.addCallback(self._migrated)
        d.addErrback(self._migration_failed)

    def _migrated(self, version: int) -> int:
        _log.info("SQLite store ready at schema version {version}", version=version)
        self.ready.callback(version)
        return version

    def _migration_failed(self, failure: Any) -> None:
        _log.failure("SQLite schema migration failed", failure)
        self.ready.errback(failure)

    def stopService(self) -> None:
        super().stopService()
        self._pool.close()
