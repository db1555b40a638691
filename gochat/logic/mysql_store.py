"""The production store: MySQL/MariaDB through ``twisted.enterprise.adbapi`` and pymysql.

The same interfaces as :mod:`gochat.logic.sqlite_store`
(:class:`~gochat.logic.interfaces.IAccountStore`,
:class:`~gochat.logic.interfaces.IMessageStore`,
:class:`~gochat.logic.interfaces.IGroupStore`), over the schema of
:mod:`gochat.logic.migrate`.

Two ways in for messages, each one transaction and one multi-row ``INSERT`` per batch:

:meth:`MysqlMessageStore.commit_batch` (the interface; the persist worker's path)
    Seqs are assigned inside the transaction: it reads which requests are
    already stored (one ``(sender_id, client_msg_id) IN (...)`` query) and the
    last seq of the conversations the caller has no cache for (one grouped
    query), then inserts the new messages with a plain ``INSERT``. Writers are
    optimistic: if another process stored a seq or the same request since,
    a unique key refuses the insert, the transaction rolls back and the call
    fails with :class:`~gochat.logic.interfaces.StaleSequenceError`; the
    retry reads the fresh state. A retry after a commit whose outcome was
    lost finds its requests stored and returns them, so nothing is stored
    twice and every caller sees the seq that was stored.

:meth:`MysqlMessageStore.append` / :meth:`MysqlMessageStore.insert_batch` (messages with seqs already set)
    ``INSERT IGNORE``: a redelivered batch is a no-op for every row already
    stored, whichever unique key (``msg_id``, ``(conv, seq)``,
    ``(sender_id, client_msg_id)``) it hits. ``append`` goes through the shared
    :class:`~gochat.logic.batch_writer.BatchWriter`, overlapping: the next
    batch is written on a second connection while the one before commits, and
    commits only after it (:meth:`MysqlMessageStore._write_after`), so batches
    still commit, and are acknowledged, in order. The persist worker's batches
    do not overlap: each one's seqs depend on the one before.

The messages of a batch go through a statement prepared once per connection
for that many rows when the count recurs (a full batch, under load), sent
over the binary protocol (:mod:`gochat.logic.mysql_prepared`): MariaDB then
binds values instead of parsing literals. Other multi-row statements, and
batches of an odd size, are written here as literals (:class:`SqlLiterals`),
not by PyMySQL's ``executemany``: the same bytes, split into statements the
same way, but about five times cheaper per row, since the types of the
columns are known.

``IGNORE`` also turns data errors into warnings (a too-long value truncated,
an unencodable one replaced), and a data error in a plain ``INSERT`` would
fail its batch again at every retry; so every message is checked against the
schema before it is queued or written (:func:`check_fits`) and refused with
``bad_request``, never stored altered; so are groups and members
(:func:`check_group_fits`, :func:`check_member_fits`).

Failures: connection errors are failures of the returned Deferreds. The
batch writer retries a failed batch with backoff until it commits, so while
the database is down writes wait (their acks with them) and resume when it is
back. Reads are retried at once when the pool's connection turned out to be
dead (killed, timed out, server restarted), and so are the writes that may run
twice with the same outcome (``mark_read``, ``join``, ``set_role``); a call
that still cannot reach the database fails with ``unavailable``, which clients
may retry. Writes whose retry could answer differently (creating a group,
adding or removing members) are not retried.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain
from typing import Any, TypeVar

import pymysql
from pymysql.constants import SERVER_STATUS
from twisted.application.service import Service
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gochat.errors import ErrorCode, GochatError
from gochat.logic import migrate
from gochat.logic.batch_writer import BatchPolicy, BatchWriter, EarlierBatchError
from gochat.logic.interfaces import Account, ConversationState, Group, Member, StaleSequenceError
from gochat.logic.mysql_prepared import BinaryRows, prepared_statements
from gochat.logic.sequencing import Assignment, assign_seqs, conversation_heads
from gochat.model import MessageKind, PersistRequest, StoredMessage

_log = Logger()
T = TypeVar("T")

#: MySQL's duplicate-key error.
ER_DUP_ENTRY = 1062
#: Client and server errors that mean "this connection is dead", not "this statement is wrong":
#: server gone away, lost during query, lost (SSL), killed (MariaDB), disconnected for inactivity (MySQL 8).
CONNECTION_LOST_CODES = frozenset({2006, 2013, 2055, 1927, 4031})

# Column limits of the migrations, in characters (utf8mb4) or bytes.
MAX_CONV_LENGTH = 128
MAX_SENDER_LENGTH = 64
MAX_CLIENT_MSG_ID_LENGTH = 255
MAX_KIND_LENGTH = 16
MAX_GROUP_NAME_LENGTH = 64
MAX_USERNAME_LENGTH = 64
MAX_ROLE_LENGTH = 16
#: Bodies are MEDIUMTEXT (16 MiB - 1 bytes), but a row must also fit in one packet
#: (``max_allowed_packet``, 16 MiB by default) after escaping, which may double it.
MAX_BODY_BYTES = 4 * 1024 * 1024
_UNSIGNED_64 = 2**64
_SIGNED_64 = 2**63

#: The columns of a :class:`~gochat.model.StoredMessage`, in the order of its fields.
_MESSAGE_COLUMNS = "msg_id, conv, seq, sender_id, sender, client_msg_id, body, ts, kind, ref_seq"
#: For messages with their seq already set: a row already stored under any unique key is skipped.
#: (The rows follow, written by :meth:`SqlLiterals.message`.)
_INSERT_MESSAGES = f"INSERT IGNORE INTO messages ({_MESSAGE_COLUMNS}) VALUES "
#: For messages just given a seq: any unique key already taken fails the batch (a stale seq cache).
_INSERT_NEW_MESSAGES = f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES "


@dataclass(frozen=True)
class MysqlSettings:
    """Where the database is and how the pool talks to it.

    ``pool_min``/``pool_max`` bound the pool's threads, one connection each.
    The persist worker's batch writer holds at most one of them at a time (it
    writes one batch after another), ``append``'s at most two (its batches
    overlap), so reads always have the rest; and the pool's queue is first in,
    first out, so a burst of reads delays the next batch only by the reads
    queued before it, never indefinitely.
    Timeouts are in seconds; a read or write timeout turns a stalled server
    into a failure (and a retry) instead of a thread blocked forever.
    """

    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = field(default="", repr=False)
    database: str = "gochat"
    pool_min: int = 2
    pool_max: int = 8
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    write_timeout: float = 30.0


def connection_arguments(settings: MysqlSettings) -> dict[str, Any]:
    """The keyword arguments of ``pymysql.connect`` for *settings* (utf8mb4, transactions on)."""
    return {
        "host": settings.host,
        "port": settings.port,
        "user": settings.user,
        "password": settings.password,
        "database": settings.database,
        "charset": "utf8mb4",
        "autocommit": False,
        "connect_timeout": settings.connect_timeout,
        "read_timeout": settings.read_timeout,
        "write_timeout": settings.write_timeout,
    }


def _configure_session(connection: Any) -> None:
    """Strict SQL mode whatever the server's default: refuse bad data instead of altering it."""
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'")


def connect_pool(settings: MysqlSettings, reactor: IReactorThreads) -> adbapi.ConnectionPool:
    """An adbapi pool of pymysql connections to *settings*' database.

    Connections are opened lazily, one per pool thread, and replaced after
    they fail (``cp_reconnect``). The pool's threads start when *reactor*
    runs and stop at its shutdown or at ``close()``.
    """
    return adbapi.ConnectionPool(
        "pymysql",
        cp_min=settings.pool_min,
        cp_max=settings.pool_max,
        cp_reconnect=True,
        cp_openfun=_configure_session,
        cp_name=f"gochat-mysql-{settings.database}",
        cp_reactor=reactor,
        **connection_arguments(settings),
    )


def is_connection_lost(failure: Failure) -> bool:
    """Whether *failure* says the connection died (so the same work may be retried on another)."""
    error = failure.value
    if isinstance(error, adbapi.ConnectionLost | pymysql.err.InterfaceError):
        return True
    return (
        isinstance(error, pymysql.err.OperationalError) and bool(error.args) and error.args[0] in CONNECTION_LOST_CODES
    )


def _interact(pool: adbapi.ConnectionPool, work: Callable[[Any], T]) -> Deferred[T]:
    """``runInteraction`` with its result type kept (adbapi is unannotated)."""
    d: Deferred[T] = pool.runInteraction(work)
    return d


def _unavailable(failure: Failure, what: str) -> Failure:
    """Database errors a client can do nothing about but retry become ``unavailable``; others pass."""
    if failure.check(pymysql.err.OperationalError, pymysql.err.InterfaceError, adbapi.ConnectionLost):
        _log.warn("MySQL unavailable for {what}: {error}", what=what, error=failure.getErrorMessage())
        return Failure(GochatError(ErrorCode.UNAVAILABLE, "the database is unavailable; retry"))
    return failure


def _read(pool: adbapi.ConnectionPool, work: Callable[[Any], T], what: str) -> Deferred[T]:
    """Run the read-only *work*; retried while the connections it lands on turn out dead.

    Each failed attempt drops its dead connection, so at most one attempt per
    pool thread fails before a fresh connection is used.
    """
    result: Deferred[T] = Deferred()

    def attempt(attempts_left: int) -> None:
        def failed(failure: Failure) -> None:
            if attempts_left > 0 and is_connection_lost(failure):
                attempt(attempts_left - 1)
            else:
                result.errback(_unavailable(failure, what))

        _interact(pool, work).addCallbacks(result.callback, failed)

    attempt(int(pool.max))
    return result


class MysqlAccountStore:
    """:class:`~gochat.logic.interfaces.IAccountStore` on MySQL/MariaDB."""

    def __init__(self, pool: adbapi.ConnectionPool) -> None:
        self._pool = pool

    def create(self, username: str, password_hash: str, created_at: float) -> Deferred[int]:
        """Store a new account; ``username_taken`` if the name exists. Not retried: a retry after a
        commit whose outcome was lost would report the caller's own new account as taken."""

        def insert(cursor: Any) -> int:
            try:
                cursor.execute(
                    "INSERT INTO users (username, password_hash, created_at) VALUES (%s, %s, %s)",
                    (username, password_hash, created_at),
                )
            except pymysql.err.IntegrityError as error:
                if error.args and error.args[0] == ER_DUP_ENTRY:
                    raise GochatError(ErrorCode.USERNAME_TAKEN, f"{username!r} is taken") from None
                raise
            return int(cursor.lastrowid)

        return _interact(self._pool, insert).addErrback(_unavailable, "create account")

    def _one(self, where: str, value: object) -> Deferred[Account | None]:
        def select(cursor: Any) -> Account | None:
            cursor.execute(f"SELECT user_id, username, password_hash FROM users WHERE {where} = %s", (value,))
            row = cursor.fetchone()
            return None if row is None else Account(int(row[0]), row[1], row[2])

        return _read(self._pool, select, "account lookup")

    def by_name(self, username: str) -> Deferred[Account | None]:
        return self._one("username", username)

    def by_id(self, user_id: int) -> Deferred[Account | None]:
        return self._one("user_id", user_id)


def _text_problems(*fields: tuple[str, str, int]) -> list[str]:
    """What keeps each ``(name, text, max characters)`` out of its utf8mb4 column."""
    problems: list[str] = []
    for name, text, limit in fields:
        if len(text) > limit:
            problems.append(f"{name} is longer than {limit} characters")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            problems.append(f"{name} is not valid Unicode text")
    return problems


def _unsigned_problems(*fields: tuple[str, int]) -> list[str]:
    """What keeps each ``(name, number)`` out of its ``BIGINT UNSIGNED`` column."""
    return [f"{name} is outside 0..2**64-1" for name, number in fields if not 0 <= number < _UNSIGNED_64]


def check_group_fits(name: str) -> None:
    """Raise ``bad_request`` unless a group called *name* can be stored exactly as it is."""
    problems = _text_problems(("group name", name, MAX_GROUP_NAME_LENGTH))
    if problems:
        raise GochatError(ErrorCode.BAD_REQUEST, f"the group cannot be stored: {'; '.join(problems)}")


def check_member_fits(member: Member) -> None:
    """Raise ``bad_request`` unless *member* can be stored exactly as it is."""
    problems = _text_problems(
        ("username", member.username, MAX_USERNAME_LENGTH), ("role", member.role, MAX_ROLE_LENGTH)
    )
    problems += _unsigned_problems(("user_id", member.user_id), ("joined_seq", member.joined_seq))
    if problems:
        raise GochatError(ErrorCode.BAD_REQUEST, f"member {member.user_id} cannot be stored: {'; '.join(problems)}")


def check_fits(message: StoredMessage | PersistRequest) -> None:
    """Raise ``bad_request`` unless *message* can be stored exactly as it is.

    Strings must be valid UTF-8 (no lone surrogates) and within their
    columns; numbers within their column types; ``kind`` one of
    :attr:`MessageKind.ALL <gochat.model.MessageKind.ALL>`.
    """
    if _fits_plainly(message):
        return
    problems = _problems(message)
    if problems:
        raise GochatError(ErrorCode.BAD_REQUEST, f"message {message.msg_id} cannot be stored: {'; '.join(problems)}")


def _fits_plainly(message: StoredMessage | PersistRequest) -> bool:
    """Whether *message* fits, known cheaply (it runs for every message): values of exactly their types, within
    their columns, text ASCII (or encoded once to find out). False means "look closer": :func:`_problems` decides;
    True only where it finds none."""
    conv, sender, client_msg_id, body, kind = (
        message.conv,
        message.sender,
        message.client_msg_id,
        message.body,
        message.kind,
    )
    msg_id, sender_id, ts, ref_seq = message.msg_id, message.sender_id, message.ts, message.ref_seq
    seq = message.seq if isinstance(message, StoredMessage) else 0
    if not (
        str is type(conv) is type(sender) is type(client_msg_id) is type(body) is type(kind)
        and int is type(msg_id) is type(seq) is type(sender_id) is type(ts) is type(ref_seq)
    ):
        return False
    if not (
        len(conv) <= MAX_CONV_LENGTH
        and len(sender) <= MAX_SENDER_LENGTH
        and len(client_msg_id) <= MAX_CLIENT_MSG_ID_LENGTH
        and kind in MessageKind.ALL
        and 0 <= msg_id < _UNSIGNED_64
        and 0 <= seq < _UNSIGNED_64
        and 0 <= sender_id < _UNSIGNED_64
        and 0 <= ref_seq < _UNSIGNED_64
        and -_SIGNED_64 <= ts < _SIGNED_64
    ):
        return False
    try:
        if not (conv.isascii() and sender.isascii() and client_msg_id.isascii()):
            conv.encode("utf-8")
            sender.encode("utf-8")
            client_msg_id.encode("utf-8")
        return (len(body) if body.isascii() else len(body.encode("utf-8"))) <= MAX_BODY_BYTES
    except UnicodeEncodeError:
        return False


def _problems(message: StoredMessage | PersistRequest) -> list[str]:
    """What keeps *message* out of the database, each said (:func:`check_fits`)."""
    seq = message.seq if isinstance(message, StoredMessage) else 0
    problems = _text_problems(
        ("conv", message.conv, MAX_CONV_LENGTH),
        ("sender", message.sender, MAX_SENDER_LENGTH),
        ("client_msg_id", message.client_msg_id, MAX_CLIENT_MSG_ID_LENGTH),
    )
    if message.kind not in MessageKind.ALL:
        problems.append(f"kind {message.kind[:MAX_KIND_LENGTH]!r} is not one of {', '.join(sorted(MessageKind.ALL))}")
    try:
        body_bytes = len(message.body.encode("utf-8"))
    except UnicodeEncodeError:
        problems.append("body is not valid Unicode text")
    else:
        if body_bytes > MAX_BODY_BYTES:
            problems.append(f"body is longer than {MAX_BODY_BYTES} bytes")
    problems += _unsigned_problems(
        ("msg_id", message.msg_id), ("seq", seq), ("sender_id", message.sender_id), ("ref_seq", message.ref_seq)
    )
    if not -_SIGNED_64 <= message.ts < _SIGNED_64:
        problems.append("ts is outside the signed 64-bit range")
    return problems


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


def _backslash_escaped(text: str) -> str:
    """*text* as PyMySQL's ``escape_string`` escapes it (the backslash first: the others add backslashes)."""
    return (
        text.replace("\\", "\\\\")
        .replace("\x00", "\\0")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\x1a", "\\Z")
        .replace("'", "\\'")
        .replace('"', '\\"')
    )


#: Whether a text holds a character PyMySQL escapes with a backslash (NUL, LF, CR, Ctrl-Z, backslash, quotes).
_HAS_BACKSLASH_ESCAPED = re.compile(r"""[\\\x00\n\r\x1a'"]""").search
#: The same but the single quote, in UTF-8 text (where these bytes are only ever these characters).
_HAS_BACKSLASH_ESCAPED_BYTES = re.compile(rb"""[\\\x00\n\r\x1a"]""").search
_HAS_QUOTE = re.compile("'").search


def _quote_doubled(text: str) -> str:
    """*text* as PyMySQL escapes it when the session's ``sql_mode`` has ``NO_BACKSLASH_ESCAPES``."""
    return text.replace("'", "''")


@dataclass(frozen=True)
class RowShape:
    """One kind of row written in bulk: the type of each column, ``int`` or ``str``.

    :attr:`template` writes a row whose values all have exactly those types
    (``%d``, what PyMySQL's ``escape_int`` writes, and ``'%s'``), its text not
    yet escaped; :attr:`placeholders` is the same row as PyMySQL's ``%s``
    template. ``exact`` may be given, spelled out, for a hot shape.
    """

    types: tuple[type, ...]
    parenthesized: bool = True
    exact: Callable[[tuple[object, ...]], bool] | None = None
    #: Whether :func:`execute_rows` sends rows of this shape to prepared statements, which pays where the same
    #: number of rows recurs (a batch of messages) and not where it varies (a batch's per-user index rows).
    prepared: bool = False
    #: The ``int`` columns that are signed ``BIGINT`` (the others are unsigned), for :attr:`binary`.
    signed: tuple[int, ...] = ()

    @cached_property
    def binary(self) -> BinaryRows | None:
        """How rows of this shape are sent to a prepared statement, or ``None`` if they are not (:attr:`prepared`)."""
        return BinaryRows(self.types, self.signed) if self.prepared and self.parenthesized else None

    @cached_property
    def template(self) -> str:
        return self._wrap(", ".join("%d" if kind is int else "'%s'" for kind in self.types))

    @cached_property
    def placeholders(self) -> str:
        return self._wrap(", ".join(["%s"] * len(self.types)))

    def _wrap(self, values: str) -> str:
        return f"({values})" if self.parenthesized else values

    @cached_property
    def text_columns(self) -> tuple[int, ...]:
        return tuple(index for index, kind in enumerate(self.types) if kind is str)

    def are_exact(self, values: tuple[object, ...]) -> bool:
        """Whether every value of *values*, rows of this shape's width laid end to end, has exactly its column's
        type: one check per column, not per value (it runs for every batch written)."""
        width = len(self.types)
        return all({kind} == set(map(type, values[index::width])) for index, kind in enumerate(self.types))

    def batch_template(self, count: int) -> str:
        """:attr:`template` *count* times, separated by commas."""
        return ",".join([self.template] * count)

    def is_exact(self, row: tuple[object, ...]) -> bool:
        """Whether every value of *row* has exactly its column's type (not a subclass)."""
        if self.exact is not None:
            return self.exact(row)
        return tuple(map(type, row)) == self.types


def _exact_message(row: tuple[object, ...]) -> bool:
    """:meth:`RowShape.is_exact` for :data:`MESSAGE_ROW`, spelled out: it runs for every message written."""
    msg_id, conv, seq, sender_id, sender, client_msg_id, body, ts, kind, ref_seq = row
    return int is type(msg_id) is type(seq) is type(sender_id) is type(ts) is type(ref_seq) and str is type(
        conv
    ) is type(sender) is type(client_msg_id) is type(body) is type(kind)


#: A message, as :func:`_message_row` gives it (the columns of :data:`_MESSAGE_COLUMNS`).
MESSAGE_ROW = RowShape(
    (int, str, int, int, str, str, str, int, str, int), exact=_exact_message, prepared=True, signed=(7,)
)
#: A row of the per-user index upsert: ``(user_id, conv, last_seq, acked_seq)``.
HEAD_ROW = RowShape((int, str, int, int))
#: A ``(sender_id, client_msg_id)`` pair.
KEY_ROW = RowShape((int, str))
#: One string.
TEXT_VALUE = RowShape((str,), parenthesized=False)


class SqlLiterals:
    """Rows of SQL literals exactly as PyMySQL writes them on *connection*, at a fraction of the cost (PyMySQL
    dispatches on each value's type and escapes strings character by character).

    A row whose values have exactly its :class:`RowShape`'s types goes
    through one ``%`` format (:attr:`RowShape.template`) and is encoded with
    the connection's encoding. Text needs escaping only if it holds one of the
    seven characters PyMySQL's ``escape_string`` escapes (NUL, LF, CR,
    Ctrl-Z, backslash, both quotes), or a quote when the session has
    ``NO_BACKSLASH_ESCAPES`` (PyMySQL then doubles quotes instead, and so do
    we). Those are ASCII, and in UTF-8 an ASCII byte is only ever that
    character, so the encoded rows of a whole batch are searched at once: if
    they hold none of those bytes and no quote besides the template's,
    nothing needed escaping. Otherwise each row is searched, and those that
    need it are written again from their text escaped as PyMySQL escapes it.
    A row with a value of any other type (``None``, ``bytes``, ``bool``, a
    subclass) is written value by value by PyMySQL's ``Connection.escape``.
    So the text is PyMySQL's, character for character
    (``tests/test_mysql_literals.py`` compares them). Backslash escapes are
    safe in utf8mb4: no byte of a multi-byte UTF-8 character is a quote or a
    backslash.
    """

    def __init__(self, connection: Any) -> None:
        self.encoding: str = connection.encoding
        self.escape: Callable[[object], str] = connection.escape
        self.escaped: Callable[[str], str]
        self._needs_escaping: Callable[[str], object]  # whether a text holds a character escaped_text changes
        self._other_specials: Callable[[bytes], object] | None  # one besides the quote, in encoded text
        if connection.server_status & SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES:
            self.escaped, self._needs_escaping, self._other_specials = _quote_doubled, _HAS_QUOTE, None
        else:
            self.escaped, self._needs_escaping, self._other_specials = (
                _backslash_escaped,
                _HAS_BACKSLASH_ESCAPED,
                _HAS_BACKSLASH_ESCAPED_BYTES,
            )

    def _clean(self, data: bytes, quotes: int) -> bool:
        """Whether *data*, rows written from unescaped text, holds no character that needed escaping."""
        if data.count(b"'") != quotes:
            return False
        return self._other_specials is None or self._other_specials(data) is None

    def rows(self, shape: RowShape, rows: Sequence[tuple[object, ...]]) -> list[bytes]:
        """Each of *rows* written and encoded, as PyMySQL's ``executemany`` writes it into a statement."""
        template, encoding, text_columns = shape.template, self.encoding, shape.text_columns
        written: list[bytes] = []
        odd: set[int] = set()
        for row in rows:
            if shape.is_exact(row):
                written.append((template % row).encode(encoding))
            else:
                odd.add(len(written))
                written.append((shape.placeholders % tuple(map(self.escape, row))).encode(encoding))
        quotes = 2 * len(text_columns)
        if odd or not self._clean(b"".join(written), quotes * len(written)):
            for index, row in enumerate(rows):
                if index not in odd and not self._clean(written[index], quotes):
                    escaped = list(row)
                    for column in text_columns:
                        if self._needs_escaping(row[column]):  # type: ignore[arg-type]
                            escaped[column] = self.escaped(row[column])  # type: ignore[arg-type]
                    written[index] = (template % tuple(escaped)).encode(encoding)
        return written

    def joined(self, shape: RowShape, rows: Sequence[tuple[object, ...]]) -> bytes:
        """*rows* written (:meth:`rows`) and separated by commas, e.g. for an ``IN (...)`` list or a statement.

        The usual batch, every value of exactly its column's type, is
        written by one ``%`` format and one encode for all its rows; if some
        text needed escaping (an apostrophe is common enough in chat), the
        texts that need it are escaped and the batch is formatted once more.
        A batch with a value of any other type goes row by row (:meth:`rows`).
        """
        if rows and set(map(len, rows)) == {len(shape.types)}:
            values = tuple(chain.from_iterable(rows))
            if shape.are_exact(values):
                template = shape.batch_template(len(rows))
                data = (template % values).encode(self.encoding)
                if not self._clean(data, 2 * len(shape.text_columns) * len(rows)):
                    data = (template % self._escaped_texts(shape, values)).encode(self.encoding)
                return data
        return b",".join(self.rows(shape, rows))

    def _escaped_texts(self, shape: RowShape, values: tuple[object, ...]) -> tuple[object, ...]:
        """*values*, rows of *shape* laid end to end, with each text that needs escaping escaped."""
        escaped = list(values)
        width = len(shape.types)
        for column in shape.text_columns:
            for index in range(column, len(escaped), width):
                text = escaped[index]
                if self._needs_escaping(text):  # type: ignore[arg-type]
                    escaped[index] = self.escaped(text)  # type: ignore[arg-type]
        return tuple(escaped)


#: PyMySQL's ``Cursor.max_stmt_length``: ``executemany`` starts a new statement rather than pass it.
MAX_STATEMENT_BYTES = 1_024_000
#: MySQL's "packet too large" error.
ER_NET_PACKET_TOO_LARGE = 1153
#: ``@@max_allowed_packet`` of each connection (read-only for a session, fixed when it connects).
_max_allowed_packet: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def _packet_limit(cursor: Any) -> int:
    """The connection's ``max_allowed_packet``, asked once per connection."""
    connection = cursor.connection
    limit = _max_allowed_packet.get(connection)
    if limit is None:
        cursor.execute("SELECT @@max_allowed_packet")
        limit = _max_allowed_packet[connection] = int(cursor.fetchone()[0])
    return limit


def statements(prefix: bytes, rows: Sequence[bytes], postfix: bytes, max_bytes: int) -> list[bytes]:
    """``prefix row,row,... postfix``, split as PyMySQL's ``executemany`` splits it: a new statement whenever
    the next row would take this one past *max_bytes*; never within a row, so a row longer than that is alone."""
    sql = bytearray(prefix)
    sql += rows[0]
    split = []
    for row in rows[1:]:
        if len(sql) + len(row) + len(postfix) + 1 > max_bytes:
            split.append(bytes(sql + postfix))
            sql = bytearray(prefix)
        else:
            sql += b","
        sql += row
    split.append(bytes(sql + postfix))
    return split


def execute_rows(
    cursor: Any, prefix: str, shape: RowShape, rows: Sequence[tuple[object, ...]], postfix: str = ""
) -> int:
    """Execute ``prefix (row),(row),... postfix``; the affected rows.

    Through a statement prepared on the connection for that many rows
    (:mod:`gochat.logic.mysql_prepared`) when it has one, or has been asked
    for one often enough, every value is of exactly its column's type and
    the values fit one command; otherwise as literals
    (:func:`execute_literal_rows`). The server stores the same values
    either way.
    """
    if not rows:
        return 0
    connection = cursor.connection
    binary = shape.binary
    if (
        binary is not None
        and connection.encoding in _UTF8_ENCODINGS
        and set(map(len, rows)) == {binary.width}
        and shape.are_exact(tuple(chain.from_iterable(rows)))
    ):
        limit = min(MAX_STATEMENT_BYTES, _packet_limit(cursor) - 1)
        affected = prepared_statements(connection).execute(binary, prefix, rows, postfix, limit)
        if affected is not None:
            return affected
    return execute_literal_rows(cursor, prefix, shape, rows, postfix)


#: PyMySQL's names of the encoding of a ``utf8mb4`` connection: what :class:`BinaryRows` writes text in.
_UTF8_ENCODINGS = frozenset({"utf8", "utf-8"})


def execute_literal_rows(
    cursor: Any, prefix: str, shape: RowShape, rows: Sequence[tuple[object, ...]], postfix: str = ""
) -> int:
    """Execute ``prefix (row),(row),... postfix``, the rows written by :meth:`SqlLiterals.rows`.

    What ``cursor.executemany(prefix + shape.placeholders + postfix, rows)``
    sends: the same bytes, in the same statements (split at
    :data:`MAX_STATEMENT_BYTES`, or at the server's ``max_allowed_packet`` if
    that is smaller). A row that alone exceeds ``max_allowed_packet`` fails
    the call before any statement is sent (the server would refuse it and
    drop the connection). Returns the affected rows.
    """
    if not rows:
        return 0
    literals = SqlLiterals(cursor.connection)
    head, tail = prefix.encode(literals.encoding), postfix.encode(literals.encoding)
    packet = _packet_limit(cursor)
    limit = min(MAX_STATEMENT_BYTES, packet - 1)  # the packet also holds the command byte
    joined = literals.joined(shape, rows)
    if len(head) + len(joined) + len(tail) <= limit:
        return int(cursor.execute(head + joined + tail))
    split = statements(head, literals.rows(shape, rows), tail, limit)
    for sql in split:
        if len(sql) > packet - 1:
            raise pymysql.err.OperationalError(
                ER_NET_PACKET_TOO_LARGE,
                f"a row needs a statement of {len(sql):,} bytes; the server's max_allowed_packet is {packet:,}",
            )
    return sum(int(cursor.execute(sql)) for sql in split)


def _stored_message(row: tuple[Any, ...]) -> StoredMessage:
    msg_id, conv, seq, sender_id, sender, client_msg_id, body, ts, kind, ref_seq = row
    return StoredMessage(
        int(msg_id), conv, int(seq), int(sender_id), sender, client_msg_id, body, int(ts), kind, int(ref_seq)
    )


def _stored_by_client_id(cursor: Any, keys: set[tuple[int, str]]) -> dict[tuple[int, str], StoredMessage]:
    """The stored messages among *keys* (``(sender_id, client_msg_id)``), in one indexed query."""
    if not keys:
        return {}
    pairs = SqlLiterals(cursor.connection).joined(KEY_ROW, list(keys))
    cursor.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE (sender_id, client_msg_id) IN (".encode() + pairs + b")"
    )
    found = (_stored_message(row) for row in cursor.fetchall())
    return {(m.sender_id, m.client_msg_id): m for m in found}


def _last_seqs(cursor: Any, convs: set[str]) -> dict[str, int]:
    """The highest stored seq of each of *convs* (0 for none), in one indexed query."""
    if not convs:
        return {}
    names = SqlLiterals(cursor.connection).joined(TEXT_VALUE, [(conv,) for conv in convs])
    cursor.execute(b"SELECT conv, MAX(seq) FROM messages WHERE conv IN (" + names + b") GROUP BY conv")
    last = dict.fromkeys(convs, 0)
    last.update({conv: int(seq) for conv, seq in cursor.fetchall()})
    return last


#: The rows go between the two, written by :meth:`SqlLiterals.head` (:func:`execute_rows`).
_UPSERT_HEADS = (
    "INSERT INTO user_convs (user_id, conv, last_seq, acked_seq) VALUES ",
    " ON DUPLICATE KEY UPDATE last_seq = GREATEST(last_seq, VALUES(last_seq))",
)
# Every value is a placeholder so that PyMySQL's executemany sends one multi-row INSERT (a literal in the
# VALUES tuple makes it fall back to one statement per row).
_UPSERT_JOINED = (
    "INSERT INTO user_convs (user_id, conv, last_seq, acked_seq, read_seq) VALUES (%s, %s, %s, %s, %s)"
    " ON DUPLICATE KEY UPDATE last_seq = GREATEST(last_seq, VALUES(last_seq)),"
    " acked_seq = GREATEST(acked_seq, VALUES(acked_seq)), read_seq = GREATEST(read_seq, VALUES(read_seq))"
)
#: How many conversations one unread-counting statement covers (one range of the (conv, seq) key each).
UNREAD_RANGES_PER_STATEMENT = 500


def _unread_counts(cursor: Any, user_id: int, ranges: Sequence[tuple[str, int, int]]) -> dict[str, int]:
    """For each ``(conv, read_seq, last_seq)``: the text messages of others with read_seq < seq <= last_seq.

    One range of the ``(conv, seq)`` key per conversation, so only unread
    messages are read. (A join from ``user_convs`` cannot do that: MariaDB
    and MySQL look a joined table up by ``conv`` alone and walk the
    conversation's whole history; measured 450 times slower at 10,000
    messages per conversation.)
    """
    counts: dict[str, int] = {}
    for start in range(0, len(ranges), UNREAD_RANGES_PER_STATEMENT):
        chunk = ranges[start : start + UNREAD_RANGES_PER_STATEMENT]
        condition = " OR ".join(["(conv = %s AND seq > %s AND seq <= %s)"] * len(chunk))
        cursor.execute(
            f"SELECT conv, COUNT(*) FROM messages WHERE ({condition}) AND sender_id <> %s AND kind = %s GROUP BY conv",
            [*(value for r in chunk for value in r), user_id, MessageKind.TEXT],
        )
        counts.update((conv, int(count)) for conv, count in cursor.fetchall())
    return counts


class CommitOrderTimeoutError(Exception):
    """A batch written while the one before was committing gave up waiting for it (and rolled back)."""


class MysqlMessageStore:
    """:class:`~gochat.logic.interfaces.IMessageStore` on MySQL/MariaDB, written in batches.

    ``append``'s writer has up to *overlap* batches in flight (1: one after
    another); ``commit_wait`` bounds how long a batch waits for the one before
    to commit (:meth:`_write_after`); *on_written* is called with each batch
    once it is committed, in order, before the Deferreds of ``append`` fire.
    """

    def __init__(
        self,
        pool: adbapi.ConnectionPool,
        clock: IReactorTime,
        policy: BatchPolicy,
        overlap: int = 1,
        commit_wait: float = 2.0,
        on_written: Callable[[list[StoredMessage]], None] | None = None,
    ) -> None:
        self._pool = pool
        self._commit_wait = commit_wait
        self.writer: BatchWriter[StoredMessage] = BatchWriter.overlapping(
            self._write_after, clock, policy, overlap, on_written
        )

    def _write(self, messages: list[StoredMessage]) -> Deferred[None]:
        rows = [_message_row(m) for m in messages]

        def insert(cursor: Any) -> None:
            execute_rows(cursor, _INSERT_MESSAGES, MESSAGE_ROW, rows)

        return _interact(self._pool, insert)

    def _write_after(self, messages: list[StoredMessage], after: Deferred[None]) -> Deferred[None]:
        """Insert *messages* in one transaction that commits only once *after* has fired, i.e. once the batch
        before is committed; if *after* fails, roll back (:class:`~gochat.logic.batch_writer.EarlierBatchError`).

        The pool thread inserts first and then waits, so this batch's rows go
        to the server while the batch before commits. It waits at most
        ``commit_wait`` seconds, then rolls back and fails
        (:class:`CommitOrderTimeoutError`; the writer writes it again after
        the one before): the batch before may be waiting for a row this one
        locked (the same row in both), and rolling back releases it.
        """
        rows = [_message_row(m) for m in messages]
        before: list[object] = []  # the outcome of *after*, set in the reactor thread before `settled`
        settled = threading.Event()

        def record(result: object) -> None:
            before.append(result)
            settled.set()

        after.addBoth(record)

        def insert(cursor: Any) -> None:
            if settled.is_set() and isinstance(before[0], Failure):
                raise EarlierBatchError("the batch before was not committed")
            execute_rows(cursor, _INSERT_MESSAGES, MESSAGE_ROW, rows)
            if not settled.wait(self._commit_wait):
                raise CommitOrderTimeoutError(f"the batch before did not commit within {self._commit_wait:g} s")
            if isinstance(before[0], Failure):
                raise EarlierBatchError("the batch before was not committed")

        return _interact(self._pool, insert)

    def check(self, request: PersistRequest) -> None:
        """:func:`check_fits`."""
        check_fits(request)

    def commit_batch(
        self, requests: Sequence[PersistRequest], known_last_seq: Mapping[str, int]
    ) -> Deferred[Assignment]:
        """Store *requests* in one transaction with seqs from :func:`~gochat.logic.sequencing.assign_seqs`.

        Requests already stored (same sender and client message id) come
        back as the stored message and are not stored again. Conversations
        missing from *known_last_seq* are read inside the transaction. If the
        cache was stale, or another writer stored one of these requests
        meanwhile, nothing is stored and the Deferred fails with
        :class:`~gochat.logic.interfaces.StaleSequenceError`. Raises
        ``bad_request`` before anything is written if a request does not fit.
        """
        batch = list(requests)
        for request in batch:
            check_fits(request)
        cached = dict(known_last_seq)

        def commit(cursor: Any) -> Assignment:
            existing = _stored_by_client_id(cursor, {(r.sender_id, r.client_msg_id) for r in batch})
            convs = {r.conv for r in batch}
            last = {conv: cached[conv] for conv in convs if conv in cached}
            last.update(_last_seqs(cursor, convs - last.keys()))
            assignment = assign_seqs(batch, existing, last)
            if assignment.new:
                try:
                    execute_rows(cursor, _INSERT_NEW_MESSAGES, MESSAGE_ROW, [_message_row(m) for m in assignment.new])
                except pymysql.err.IntegrityError as error:
                    if error.args and error.args[0] == ER_DUP_ENTRY:
                        raise StaleSequenceError(str(error.args[-1])) from error
                    raise
                heads = conversation_heads(batch, assignment.new)
                prefix, postfix = _UPSERT_HEADS
                rows = [(uid, conv, seq, 0) for (uid, conv), seq in sorted(heads.items())]
                execute_rows(cursor, prefix, HEAD_ROW, rows, postfix)
            return assignment

        return _interact(self._pool, commit)

    def append(self, message: StoredMessage) -> Deferred[None]:
        """Queue *message* for the next batch; fires once that batch is committed.

        Raises ``bad_request`` (:func:`check_fits`), or the writer's
        ``unavailable``/``shutting_down``, before anything is queued.
        """
        check_fits(message)
        return self.writer.add(message)

    def put(self, message: StoredMessage) -> None:
        """Queue *message* as :meth:`append` does, but with no Deferred of its own: for a caller that hears of
        commits a batch at a time, through *on_written* (as a broker consumer acks a batch's last tag)."""
        check_fits(message)
        self.writer.put(message)

    def insert_batch(self, messages: list[StoredMessage]) -> Deferred[None]:
        """Store *messages* in one transaction (one ``executemany``), skipping any already stored.

        For a caller that has given the seqs and batches itself (a replay,
        an import, the benchmark): fires once committed; fails as the
        database does, without retrying. Raises ``bad_request`` before
        writing anything if any message does not fit.
        """
        for message in messages:
            check_fits(message)
        if not messages:
            return succeed(None)
        return self._write(messages)

    def by_client_msg_id(self, sender_id: int, client_msg_id: str) -> Deferred[StoredMessage | None]:
        def select(cursor: Any) -> StoredMessage | None:
            cursor.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE sender_id = %s AND client_msg_id = %s",
                (sender_id, client_msg_id),
            )
            row = cursor.fetchone()
            return None if row is None else _stored_message(row)

        return _read(self._pool, select, "message lookup")

    def last_seq(self, conv: str) -> Deferred[int]:
        def select(cursor: Any) -> int:
            cursor.execute("SELECT MAX(seq) FROM messages WHERE conv = %s", (conv,))
            return int(cursor.fetchone()[0] or 0)

        return _read(self._pool, select, "last seq")

    def conversations(self, user_id: int) -> Deferred[list[ConversationState]]:
        """The user's index rows by conv, each with its unread count (:func:`_unread_counts`), in one transaction."""

        def select(cursor: Any) -> list[ConversationState]:
            cursor.execute(
                "SELECT conv, last_seq, acked_seq, read_seq FROM user_convs WHERE user_id = %s ORDER BY conv",
                (user_id,),
            )
            rows = [(conv, int(last), int(acked), int(read)) for conv, last, acked, read in cursor.fetchall()]
            unread = _unread_counts(
                cursor, user_id, [(conv, read, last) for conv, last, _, read in rows if read < last]
            )
            return [ConversationState(conv, last, acked, read, unread.get(conv, 0)) for conv, last, acked, read in rows]

        return _read(self._pool, select, "conversation list")

    def messages_after(self, conv: str, after_seq: int, limit: int) -> Deferred[list[StoredMessage]]:
        return self.messages_in(conv, after_seq, limit)

    def record_received(self, user_id: int, conv: str, seq: int) -> Deferred[None]:
        def update(cursor: Any) -> None:
            cursor.execute(
                "UPDATE user_convs SET acked_seq = GREATEST(acked_seq, LEAST(%s, last_seq))"
                " WHERE user_id = %s AND conv = %s",
                (seq, user_id, conv),
            )

        return _interact(self._pool, update)

    def messages_before(self, conv: str, before_seq: int, limit: int) -> Deferred[list[StoredMessage]]:
        if limit < 1:
            return succeed([])

        def select(cursor: Any) -> list[StoredMessage]:
            cursor.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conv = %s AND seq < %s ORDER BY seq DESC LIMIT %s",
                (conv, before_seq, limit),
            )
            return [_stored_message(row) for row in reversed(cursor.fetchall())]

        return _read(self._pool, select, "conversation history")

    def message_at(self, conv: str, seq: int) -> Deferred[StoredMessage | None]:
        def select(cursor: Any) -> StoredMessage | None:
            cursor.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conv = %s AND seq = %s", (conv, seq))
            row = cursor.fetchone()
            return None if row is None else _stored_message(row)

        return _read(self._pool, select, "message lookup")

    def mark_read(self, user_id: int, conv: str, seq: int) -> Deferred[int]:
        """Raise the read seq (retried like a read: running it twice is running it once)."""

        def update(cursor: Any) -> int:
            cursor.execute(
                "UPDATE user_convs SET read_seq = GREATEST(read_seq, LEAST(%s, last_seq))"
                " WHERE user_id = %s AND conv = %s",
                (seq, user_id, conv),
            )
            cursor.execute("SELECT read_seq FROM user_convs WHERE user_id = %s AND conv = %s", (user_id, conv))
            row = cursor.fetchone()
            return 0 if row is None else int(row[0])

        return _read(self._pool, update, "mark read")

    def join(self, user_ids: Sequence[int], conv: str, seq: int) -> Deferred[None]:
        """Upsert the users' index rows at *seq* at least, one multi-row statement (retried like a read: it only
        raises positions)."""
        problems = _text_problems(("conv", conv, MAX_CONV_LENGTH)) + _unsigned_problems(
            ("seq", seq), *(("user_id", user_id) for user_id in user_ids)
        )
        if problems:
            raise GochatError(ErrorCode.BAD_REQUEST, f"cannot join {conv[:MAX_CONV_LENGTH]!r}: {'; '.join(problems)}")

        rows = [(user_id, conv, seq, seq, seq) for user_id in user_ids]

        def upsert(cursor: Any) -> None:
            if rows:
                cursor.executemany(_UPSERT_JOINED, rows)

        return _read(self._pool, upsert, "join conversation")

    def read_positions(self, conv: str) -> Deferred[dict[int, int]]:
        def select(cursor: Any) -> dict[int, int]:
            cursor.execute("SELECT user_id, read_seq FROM user_convs WHERE conv = %s", (conv,))
            return {int(user_id): int(read) for user_id, read in cursor.fetchall()}

        return _read(self._pool, select, "read positions")

    def messages_in(self, conv: str, after_seq: int = 0, limit: int = 100) -> Deferred[list[StoredMessage]]:
        """Up to *limit* messages of *conv* with seq greater than *after_seq*, in seq order."""
        if limit < 1:
            raise ValueError(f"limit must be positive, not {limit}")

        def select(cursor: Any) -> list[StoredMessage]:
            cursor.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conv = %s AND seq > %s ORDER BY seq LIMIT %s",
                (conv, after_seq, limit),
            )
            return [_stored_message(row) for row in cursor.fetchall()]

        return _read(self._pool, select, "conversation read")

    def count(self) -> Deferred[int]:
        """How many messages are stored (for operators and tests)."""

        def select(cursor: Any) -> int:
            cursor.execute("SELECT COUNT(*) FROM messages")
            return int(cursor.fetchone()[0])

        return _read(self._pool, select, "message count")


_GROUP_COLUMNS = "group_id, name, created_at"
_MEMBER_COLUMNS = "user_id, username, role, joined_seq"
# Every value a placeholder: one multi-row INSERT per executemany.
_INSERT_MEMBERS = (
    "INSERT INTO group_members (group_id, user_id, username, role, joined_seq) VALUES (%s, %s, %s, %s, %s)"
)


def _group(row: tuple[Any, ...]) -> Group:
    group_id, name, created_at = row
    return Group(int(group_id), name, float(created_at))


def _member(row: tuple[Any, ...]) -> Member:
    user_id, username, role, joined_seq = row
    return Member(int(user_id), username, role, int(joined_seq))


def _distinct(members: Sequence[Member]) -> list[Member]:
    """*members* once per user: the last entry of a user, at the place of their first."""
    return list({m.user_id: m for m in members}.values())


class MysqlGroupStore:
    """:class:`~gochat.logic.interfaces.IGroupStore` on MySQL/MariaDB.

    ``add_members`` locks the group's row (``SELECT ... FOR UPDATE``) before
    it counts, so concurrent additions from any number of logic processes
    never take a group past its limit.
    """

    def __init__(self, pool: adbapi.ConnectionPool) -> None:
        self._pool = pool

    def create(self, name: str, members: Sequence[Member], created_at: float) -> Deferred[Group]:
        """Store the group and its members in one transaction; ``bad_request`` first if any does not fit.

        Not retried: a retry after a commit whose outcome was lost would create a second group.
        """
        check_group_fits(name)
        rows = _distinct(members)
        for member in rows:
            check_member_fits(member)

        def insert(cursor: Any) -> Group:
            cursor.execute("INSERT INTO chat_groups (name, created_at) VALUES (%s, %s)", (name, created_at))
            group = Group(int(cursor.lastrowid), name, created_at)
            if rows:
                cursor.executemany(
                    _INSERT_MEMBERS, [(group.group_id, m.user_id, m.username, m.role, m.joined_seq) for m in rows]
                )
            return group

        return _interact(self._pool, insert).addErrback(_unavailable, "create group")

    def get(self, group_id: int) -> Deferred[Group | None]:
        def select(cursor: Any) -> Group | None:
            cursor.execute(f"SELECT {_GROUP_COLUMNS} FROM chat_groups WHERE group_id = %s", (group_id,))
            row = cursor.fetchone()
            return None if row is None else _group(row)

        return _read(self._pool, select, "group lookup")

    def members(self, group_id: int) -> Deferred[list[Member]]:
        def select(cursor: Any) -> list[Member]:
            cursor.execute(
                f"SELECT {_MEMBER_COLUMNS} FROM group_members WHERE group_id = %s ORDER BY ordinal", (group_id,)
            )
            return [_member(row) for row in cursor.fetchall()]

        return _read(self._pool, select, "group members")

    def member(self, group_id: int, user_id: int) -> Deferred[Member | None]:
        def select(cursor: Any) -> Member | None:
            cursor.execute(
                f"SELECT {_MEMBER_COLUMNS} FROM group_members WHERE group_id = %s AND user_id = %s",
                (group_id, user_id),
            )
            row = cursor.fetchone()
            return None if row is None else _member(row)

        return _read(self._pool, select, "group membership")

    def add_members(self, group_id: int, members: Sequence[Member], max_members: int) -> Deferred[list[Member]]:
        """Add those of *members* not in the group yet, all or none; an unknown group gets nobody.

        Not retried: a retry after a commit whose outcome was lost would
        report the members it added as already there.
        """
        candidates = _distinct(members)
        for member in candidates:
            check_member_fits(member)

        def insert(cursor: Any) -> list[Member]:
            cursor.execute("SELECT group_id FROM chat_groups WHERE group_id = %s FOR UPDATE", (group_id,))
            if cursor.fetchone() is None:
                return []
            cursor.execute("SELECT user_id FROM group_members WHERE group_id = %s", (group_id,))
            present = {int(row[0]) for row in cursor.fetchall()}
            fresh = [m for m in candidates if m.user_id not in present]
            if len(present) + len(fresh) > max_members:
                raise GochatError(ErrorCode.GROUP_FULL, f"a group has at most {max_members} members")
            if fresh:
                cursor.executemany(
                    _INSERT_MEMBERS, [(group_id, m.user_id, m.username, m.role, m.joined_seq) for m in fresh]
                )
            return fresh

        return _interact(self._pool, insert).addErrback(_unavailable, "add group members")

    def remove_member(self, group_id: int, user_id: int) -> Deferred[bool]:
        """Not retried: a retry after a commit whose outcome was lost would say they were not a member."""

        def delete(cursor: Any) -> bool:
            cursor.execute("DELETE FROM group_members WHERE group_id = %s AND user_id = %s", (group_id, user_id))
            return bool(cursor.rowcount)

        return _interact(self._pool, delete).addErrback(_unavailable, "remove group member")

    def set_role(self, group_id: int, user_id: int, role: str) -> Deferred[bool]:
        """Retried like a read: setting a role twice is setting it once."""
        problems = _text_problems(("role", role, MAX_ROLE_LENGTH))
        if problems:
            raise GochatError(ErrorCode.BAD_REQUEST, f"the role cannot be stored: {'; '.join(problems)}")

        def update(cursor: Any) -> bool:
            # Whether the row exists, not whether it changed (MySQL counts changed rows only).
            cursor.execute(
                "SELECT 1 FROM group_members WHERE group_id = %s AND user_id = %s FOR UPDATE", (group_id, user_id)
            )
            if cursor.fetchone() is None:
                return False
            cursor.execute(
                "UPDATE group_members SET role = %s WHERE group_id = %s AND user_id = %s", (role, group_id, user_id)
            )
            return True

        return _read(self._pool, update, "set member role")

    def groups_of(self, user_id: int) -> Deferred[list[tuple[Group, Member, int]]]:
        def select(cursor: Any) -> list[tuple[Group, Member, int]]:
            cursor.execute(
                "SELECT g.group_id, g.name, g.created_at, me.user_id, me.username, me.role, me.joined_seq,"
                " (SELECT COUNT(*) FROM group_members AS other WHERE other.group_id = me.group_id)"
                " FROM group_members AS me JOIN chat_groups AS g ON g.group_id = me.group_id"
                " WHERE me.user_id = %s ORDER BY g.group_id",
                (user_id,),
            )
            return [(_group(row[:3]), _member(row[3:7]), int(row[7])) for row in cursor.fetchall()]

        return _read(self._pool, select, "groups of a user")


class MysqlStoreService(Service):
    """Owns the pool: checks the schema version at start, drains the batch writer and closes at stop.

    It never migrates (that is ``python -m gochat.logic.migrate``, an
    explicit deployment step). ``ready`` fires with the schema version, or
    fails with :class:`~gochat.logic.migrate.SchemaVersionError` (or the
    connection error) if the database is not usable.
    """

    def __init__(self, pool: adbapi.ConnectionPool, messages: MysqlMessageStore) -> None:
        self._pool = pool
        self._messages = messages
        self.ready: Deferred[int] = Deferred()

    def startService(self) -> None:
        super().startService()
        d = _interact(self._pool, migrate.check)
        d.addCallbacks(self._checked, self._check_failed)

    def _checked(self, version: int) -> None:
        _log.info("MySQL store ready at schema version {version}", version=version)
        self.ready.callback(version)

    def _check_failed(self, failure: Failure) -> None:
        _log.failure("MySQL store is not usable", failure)
        self.ready.errback(failure)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        d = self._messages.writer.stop()
        d.addBoth(lambda _: self._pool.close())
        return d
