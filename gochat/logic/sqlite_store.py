"""The embedded default's store: SQLite through ``twisted.enterprise.adbapi``.

Accounts and groups are written one call at a time; messages come in batches
from the same :class:`~gochat.logic.persist.PersistWorker` as in production,
one ``executemany`` transaction per batch. The pool has a single connection
(SQLite allows one writer), so statements run in the order they were issued
and the schema migration issued at start runs before anything else. Work that
reads before it writes (the migration, group changes) takes the write lock
first (``BEGIN IMMEDIATE``), so it stays atomic even with a second process on
the same file.
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
from gochat.logic.interfaces import Account, ConversationState, Group, Member, StaleSequenceError
from gochat.logic.sequencing import Assignment, assign_seqs, conversation_heads
from gochat.model import MessageKind, PersistRequest, StoredMessage
from gochat.text import is_encodable

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
    (
        3,
        [
            # Edits, recalls and membership events are messages of their conversation pointing at ref_seq.
            "ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'text'",
            "ALTER TABLE messages ADD COLUMN ref_seq INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE user_convs ADD COLUMN read_seq INTEGER NOT NULL DEFAULT 0",
            # What a client received before read receipts existed counts as read: no flood of old unread.
            "UPDATE user_convs SET read_seq = acked_seq",
            "CREATE INDEX ix_user_convs_conv ON user_convs (conv)",
            """CREATE TABLE chat_groups (
                group_id INTEGER PRIMARY KEY AUTOINCREMENT,
                name TEXT NOT NULL,
                created_at REAL NOT NULL
            )""",
            # ordinal orders members as they joined (a member who leaves and rejoins goes last).
            """CREATE TABLE group_members (
                ordinal INTEGER PRIMARY KEY AUTOINCREMENT,
                group_id INTEGER NOT NULL,
                user_id INTEGER NOT NULL,
                username TEXT NOT NULL,
                role TEXT NOT NULL,
                joined_seq INTEGER NOT NULL,
                UNIQUE (group_id, user_id)
            )""",
            "CREATE INDEX ix_group_members_user ON group_members (user_id)",
        ],
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

#: The columns of a :class:`~gochat.model.StoredMessage`, in the order of its fields.
_MESSAGE_COLUMNS = "msg_id, conv, seq, sender_id, sender, client_msg_id, body, ts, kind, ref_seq"
_INSERT_MESSAGE = f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_UPSERT_HEADS = (
    "INSERT INTO user_convs (user_id, conv, last_seq, acked_seq) VALUES (?, ?, ?, 0)"
    " ON CONFLICT (user_id, conv) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq)"
)
_SELECT_BY_CLIENT_ID = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE sender_id = ? AND client_msg_id = ?"
_UPSERT_JOINED = (
    "INSERT INTO user_convs (user_id, conv, last_seq, acked_seq, read_seq) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (user_id, conv) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq),"
    " acked_seq = MAX(acked_seq, excluded.acked_seq), read_seq = MAX(read_seq, excluded.read_seq)"
)
#: A user's index rows and, for each, the text messages of others after the read seq up to the user's last seq.
_SELECT_CONVERSATIONS = """SELECT uc.conv, uc.last_seq, uc.acked_seq, uc.read_seq, COUNT(m.seq)
    FROM user_convs AS uc
    LEFT JOIN messages AS m
        ON m.conv = uc.conv AND m.seq > uc.read_seq AND m.seq <= uc.last_seq
        AND m.sender_id <> uc.user_id AND m.kind = ?
    WHERE uc.user_id = ?
    GROUP BY uc.conv, uc.last_seq, uc.acked_seq, uc.read_seq
    ORDER BY uc.conv"""
_GROUP_COLUMNS = "group_id, name, created_at"
_MEMBER_COLUMNS = "user_id, username, role, joined_seq"
_INSERT_MEMBER = "INSERT INTO group_members (group_id, user_id, username, role, joined_seq) VALUES (?, ?, ?, ?, ?)"


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


def _begin_immediate(cursor: Any) -> None:
    """Take SQLite's write lock now, so what this transaction reads stays true until it commits."""
    cursor.execute("BEGIN IMMEDIATE")


def _migrate(cursor: Any) -> int:
    # One transaction for every pending migration (SQLite's DDL is transactional): all or nothing.
    _begin_immediate(cursor)
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
        message.kind,
        message.ref_seq,
    )


class SqliteMessageStore:
    """:class:`~gochat.logic.interfaces.IMessageStore` on SQLite."""

    def __init__(self, pool: adbapi.ConnectionPool) -> None:
        self._pool = pool

    def check(self, request: PersistRequest) -> None:
        """SQLite stores text of any length, but only valid Unicode (no lone surrogates), and 64-bit integers."""
        texts = (request.conv, request.sender, request.client_msg_id, request.body, request.kind)
        numbers = (request.msg_id, request.sender_id, request.ts, request.ref_seq)
        if not all(is_encodable(text) for text in texts) or not all(-(2**63) <= n < 2**63 for n in numbers):
            raise GochatError(ErrorCode.BAD_REQUEST, f"message {request.msg_id} cannot be stored: not valid text")

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
        """The user's index rows by conv, each with its unread count (one query over the ``(conv, seq)`` index)."""

        def select(cursor: Any) -> list[ConversationState]:
            cursor.execute(_SELECT_CONVERSATIONS, (MessageKind.TEXT, user_id))
            return [
                ConversationState(conv, int(last), int(acked), int(read), int(unread))
                for conv, last, acked, read, unread in cursor.fetchall()
            ]

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

    def messages_before(self, conv: str, before_seq: int, limit: int) -> Deferred[list[StoredMessage]]:
        def select(cursor: Any) -> list[StoredMessage]:
            if limit < 1:
                return []
            cursor.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conv = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
                (conv, before_seq, limit),
            )
            return [StoredMessage(*row) for row in reversed(cursor.fetchall())]

        return _interact(self._pool, select)

    def message_at(self, conv: str, seq: int) -> Deferred[StoredMessage | None]:
        def select(cursor: Any) -> StoredMessage | None:
            cursor.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conv = ? AND seq = ?", (conv, seq))
            row = cursor.fetchone()
            return None if row is None else StoredMessage(*row)

        return _interact(self._pool, select)

    def mark_read(self, user_id: int, conv: str, seq: int) -> Deferred[int]:
        def update(cursor: Any) -> int:
            cursor.execute(
                "UPDATE user_convs SET read_seq = MAX(read_seq, MIN(?, last_seq)) WHERE user_id = ? AND conv = ?",
                (seq, user_id, conv),
            )
            cursor.execute("SELECT read_seq FROM user_convs WHERE user_id = ? AND conv = ?", (user_id, conv))
            row = cursor.fetchone()
            return 0 if row is None else int(row[0])

        return _interact(self._pool, update)

    def join(self, user_ids: Sequence[int], conv: str, seq: int) -> Deferred[None]:
        rows = [(user_id, conv, seq, seq, seq) for user_id in user_ids]

        def upsert(cursor: Any) -> None:
            cursor.executemany(_UPSERT_JOINED, rows)

        return _interact(self._pool, upsert)

    def read_positions(self, conv: str) -> Deferred[dict[int, int]]:
        def select(cursor: Any) -> dict[int, int]:
            cursor.execute("SELECT user_id, read_seq FROM user_convs WHERE conv = ?", (conv,))
            return {int(user_id): int(read) for user_id, read in cursor.fetchall()}

        return _interact(self._pool, select)

    def count(self) -> Deferred[int]:
        """How many messages are stored (for operators and tests)."""

        def select(cursor: Any) -> int:
            cursor.execute("SELECT COUNT(*) FROM messages")
            return int(cursor.fetchone()[0])

        return _interact(self._pool, select)


def _group(row: tuple[Any, ...]) -> Group:
    group_id, name, created_at = row
    return Group(int(group_id), name, float(created_at))


def _member(row: tuple[Any, ...]) -> Member:
    user_id, username, role, joined_seq = row
    return Member(int(user_id), username, role, int(joined_seq))


def _distinct(members: Sequence[Member]) -> list[Member]:
    """*members* once per user: the last entry of a user, at the place of their first."""
    return list({m.user_id: m for m in members}.values())


class SqliteGroupStore:
    """:class:`~gochat.logic.interfaces.IGroupStore` on SQLite."""

    def __init__(self, pool: adbapi.ConnectionPool) -> None:
        self._pool = pool

    def create(self, name: str, members: Sequence[Member], created_at: float) -> Deferred[Group]:
        rows = _distinct(members)

        def insert(cursor: Any) -> Group:
            _begin_immediate(cursor)
            cursor.execute("INSERT INTO chat_groups (name, created_at) VALUES (?, ?)", (name, created_at))
            group = Group(int(cursor.lastrowid), name, created_at)
            cursor.executemany(
                _INSERT_MEMBER, [(group.group_id, m.user_id, m.username, m.role, m.joined_seq) for m in rows]
            )
            return group

        return _interact(self._pool, insert)

    def get(self, group_id: int) -> Deferred[Group | None]:
        def select(cursor: Any) -> Group | None:
            cursor.execute(f"SELECT {_GROUP_COLUMNS} FROM chat_groups WHERE group_id = ?", (group_id,))
            row = cursor.fetchone()
            return None if row is None else _group(row)

        return _interact(self._pool, select)

    def members(self, group_id: int) -> Deferred[list[Member]]:
        def select(cursor: Any) -> list[Member]:
            cursor.execute(
                f"SELECT {_MEMBER_COLUMNS} FROM group_members WHERE group_id = ? ORDER BY ordinal", (group_id,)
            )
            return [_member(row) for row in cursor.fetchall()]

        return _interact(self._pool, select)

    def member(self, group_id: int, user_id: int) -> Deferred[Member | None]:
        def select(cursor: Any) -> Member | None:
            cursor.execute(
                f"SELECT {_MEMBER_COLUMNS} FROM group_members WHERE group_id = ? AND user_id = ?", (group_id, user_id)
            )
            row = cursor.fetchone()
            return None if row is None else _member(row)

        return _interact(self._pool, select)

    def add_members(self, group_id: int, members: Sequence[Member], max_members: int) -> Deferred[list[Member]]:
        """Add those of *members* not in the group yet, all or none; an unknown group gets nobody."""
        candidates = _distinct(members)

        def insert(cursor: Any) -> list[Member]:
            _begin_immediate(cursor)
            cursor.execute("SELECT 1 FROM chat_groups WHERE group_id = ?", (group_id,))
            if cursor.fetchone() is None:
                return []
            cursor.execute("SELECT user_id FROM group_members WHERE group_id = ?", (group_id,))
            present = {int(row[0]) for row in cursor.fetchall()}
            fresh = [m for m in candidates if m.user_id not in present]
            if len(present) + len(fresh) > max_members:
                raise GochatError(ErrorCode.GROUP_FULL, f"a group has at most {max_members} members")
            cursor.executemany(_INSERT_MEMBER, [(group_id, m.user_id, m.username, m.role, m.joined_seq) for m in fresh])
            return fresh

        return _interact(self._pool, insert)

    def remove_member(self, group_id: int, user_id: int) -> Deferred[bool]:
        def delete(cursor: Any) -> bool:
            cursor.execute("DELETE FROM group_members WHERE group_id = ? AND user_id = ?", (group_id, user_id))
            return bool(cursor.rowcount)

        return _interact(self._pool, delete)

    def set_role(self, group_id: int, user_id: int, role: str) -> Deferred[bool]:
        def update(cursor: Any) -> bool:
            cursor.execute(
                "UPDATE group_members SET role = ? WHERE group_id = ? AND user_id = ?", (role, group_id, user_id)
            )
            return bool(cursor.rowcount)

        return _interact(self._pool, update)

    def groups_of(self, user_id: int) -> Deferred[list[tuple[Group, Member, int]]]:
        def select(cursor: Any) -> list[tuple[Group, Member, int]]:
            cursor.execute(
                "SELECT g.group_id, g.name, g.created_at, me.user_id, me.username, me.role, me.joined_seq,"
                " (SELECT COUNT(*) FROM group_members AS other WHERE other.group_id = me.group_id)"
                " FROM group_members AS me JOIN chat_groups AS g ON g.group_id = me.group_id"
                " WHERE me.user_id = ? ORDER BY g.group_id",
                (user_id,),
            )
            return [(_group(row[:3]), _member(row[3:7]), int(row[7])) for row in cursor.fetchall()]

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
