"""Multi-row ``INSERT`` statements prepared once per connection and executed over MySQL's binary protocol.

Why: MariaDB parses a text ``INSERT`` afresh each time, one ``Item`` per
literal; for the message table that is about a fifth of the server's CPU per
row (``bench/results/db.md``, "Session 6"). A prepared statement is parsed
once; each execution sends the values in binary (8 bytes for a number, a
length and the UTF-8 bytes for a text: nothing to escape), and the server
binds them instead of parsing them.

PyMySQL speaks only the text protocol, so the three commands used here
(``COM_STMT_PREPARE``, ``COM_STMT_EXECUTE``, ``COM_STMT_CLOSE``) are written
on its connection's packet layer, ``_execute_command`` and ``_read_packet``,
which every PyMySQL command goes through: errors arrive as PyMySQL's own
exceptions (a duplicate key is an ``IntegrityError`` 1062 either way), and
the connection's status is kept as PyMySQL keeps it.

A statement holds a fixed number of rows, so each row count needs its own.
:class:`PreparedStatements` keeps a connection's statements, most recently
used first, within a budget of parameters (the server holds about 480 bytes
per parameter of a prepared statement), and prepares a row count only when
it recurs among the recent asks: under load nearly every batch is full, so
one statement serves them all, and the odd count of a partial batch does
not cost a prepare; it goes as literals
(:func:`gochat.logic.mysql_store.execute_rows`). Only number and text
columns are written here, each value of exactly its column's type; a batch
with anything else goes as literals too.
"""

from __future__ import annotations

import struct
import threading
import weakref
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain, repeat
from typing import Any

import pymysql
from pymysql.constants import COMMAND, FIELD_TYPE
from twisted.logger import Logger

_log = Logger()

#: Parameter types of ``COM_STMT_EXECUTE``: a type byte, then a flag byte whose top bit says unsigned.
_UNSIGNED_BIGINT = bytes((FIELD_TYPE.LONGLONG, 0x80))
_SIGNED_BIGINT = bytes((FIELD_TYPE.LONGLONG, 0))
_TEXT = bytes((FIELD_TYPE.VAR_STRING, 0))
#: A length-encoded integer's marker for "the next 8 bytes": every text is sent with this form of its length, so
#: each segment of a row packs with one fixed ``struct`` format whatever its texts' lengths.
_EIGHT_BYTE_LENGTH = 0xFE
#: ``COM_STMT_EXECUTE``'s header after the statement id: no cursor, one iteration.
_NO_CURSOR_ONE_ITERATION = struct.pack("<BI", 0, 1)
#: The bytes of a ``COM_STMT_EXECUTE`` besides its NULL bitmap, types and values: command, id, flags, iterations
#: and the "types follow" byte.
_EXECUTE_OVERHEAD = 1 + 4 + 5 + 1
#: A statement's row count, with the text before and after its rows.
_Key = tuple[str, int, str]
#: The server's answers to a prepare that mean "send literals instead": ``max_prepared_stmt_count`` reached, and
#: a statement that cannot be prepared.
_PREPARE_REFUSED = frozenset({1461, 1295})
#: The answer to an execute of a statement the server does not know (any more).
ER_UNKNOWN_STMT_HANDLER = 1243
#: The server refuses a statement with more placeholders than this.
MAX_STATEMENT_PARAMETERS = 65_535


class BinaryRows:
    """Rows of fixed column types written as the parameters of one ``COM_STMT_EXECUTE``.

    *types* gives each column's Python type, ``int`` (a ``BIGINT``,
    unsigned unless its index is in *signed*) or ``str`` (UTF-8 text). A row
    is written as runs of numbers each followed by one text's length, each
    run packed by one ``struct`` format, with the text's bytes between them;
    a batch is written column by column (``map`` over each column), so no
    Python code runs per value.
    """

    def __init__(self, types: Sequence[type], signed: Iterable[int] = ()) -> None:
        signed = frozenset(signed)
        if not all(kind in (int, str) for kind in types):
            raise ValueError(f"only int and str columns can be sent in binary, not {types}")
        self.width = len(types)
        self.parameter_types = b"".join(
            (_SIGNED_BIGINT if index in signed else _UNSIGNED_BIGINT) if kind is int else _TEXT
            for index, kind in enumerate(types)
        )
        self.placeholders = "(" + ",".join("?" * self.width) + ")"
        self._segments: list[tuple[Callable[..., bytes], tuple[int, ...], int | None]] = []
        numbers: list[int] = []
        for index, kind in enumerate(types):
            if kind is int:
                numbers.append(index)
                continue
            self._segments.append((self._packer(numbers, signed, text=True), tuple(numbers), index))
            numbers = []
        if numbers:
            self._segments.append((self._packer(numbers, signed, text=False), tuple(numbers), None))

    @staticmethod
    def _packer(numbers: Sequence[int], signed: frozenset[int], text: bool) -> Callable[..., bytes]:
        formats = "".join("q" if index in signed else "Q" for index in numbers)
        return struct.Struct("<" + formats + ("BQ" if text else "")).pack

    def encode(self, rows: Sequence[tuple[object, ...]]) -> bytes | None:
        """The values of *rows*, laid out as ``COM_STMT_EXECUTE`` sends them (no NULLs).

        ``None`` if a number does not fit its column's 64 bits, so that the
        caller sends the batch as literals and the server answers for it.
        Text that cannot be encoded (a lone surrogate) raises
        ``UnicodeEncodeError``, as it does written as literals.
        """
        columns = list(zip(*rows, strict=True))
        parts: list[Iterator[bytes] | list[bytes]] = []
        for pack, numbers, text in self._segments:
            values = [columns[index] for index in numbers]
            if text is None:
                parts.append(map(pack, *values))
                continue
            encoded = list(map(str.encode, columns[text]))
            parts.append(map(pack, *values, repeat(_EIGHT_BYTE_LENGTH), map(len, encoded)))
            parts.append(encoded)
        try:
            return b"".join(chain.from_iterable(zip(*parts, strict=True)))
        except struct.error:
            return None

    def statement(self, prefix: str, count: int, postfix: str) -> str:
        """``prefix (?,...),(?,...) postfix``: *count* rows of placeholders."""
        return prefix + ",".join([self.placeholders] * count) + postfix


def _prepare(connection: Any, sql: str) -> int:
    """Prepare *sql* on *connection* (``COM_STMT_PREPARE``); its statement id.

    The answer is an OK packet (the id, then the numbers of result columns
    and of parameters), then one definition per parameter and per column,
    each list closed by an EOF packet (PyMySQL never asks the server to
    leave those out).
    """
    connection._execute_command(COMMAND.COM_STMT_PREPARE, sql)
    answer = connection._read_packet().get_all_data()
    statement_id, columns, parameters = struct.unpack_from("<IHH", answer, 1)
    for count in (parameters, columns):
        if count:
            for _ in range(count + 1):
                connection._read_packet()
    return int(statement_id)


def _execute(connection: Any, statement_id: int, parameter_types: bytes, parameter_count: int, values: bytes) -> int:
    """Execute the prepared statement *statement_id* with *values* (``COM_STMT_EXECUTE``); the affected rows."""
    connection._execute_command(
        COMMAND.COM_STMT_EXECUTE,
        b"".join(
            (
                struct.pack("<I", statement_id),
                _NO_CURSOR_ONE_ITERATION,
                bytes((parameter_count + 7) // 8),  # the NULL bitmap: none
                b"\x01",  # the types follow
                parameter_types,
                values,
            )
        ),
    )
    return int(connection._read_ok_packet().affected_rows)


def _close(connection: Any, statement_id: int) -> None:
    """Free the prepared statement *statement_id* on the server (``COM_STMT_CLOSE``, which has no answer)."""
    connection._execute_command(COMMAND.COM_STMT_CLOSE, struct.pack("<I", statement_id))


class PreparedStatements:
    """The multi-row statements prepared on one PyMySQL connection, most recently used first.

    They hold at most *max_parameters* parameters and *max_statements*
    statements together; the least recently used are closed to make room.
    A statement is prepared when it is asked for the *asks_to_prepare*-th
    time among the last *window* asks, so that the counts that recur (a full
    batch under load, a message or two when quiet) have one and the odd
    count of a partial batch costs no prepare (whose answer is a packet per
    parameter). Statements belong to the server session: when the
    connection has a new socket (it reconnected), they are forgotten. A
    server that refuses to prepare (its ``max_prepared_stmt_count`` reached)
    or has lost a statement gets literals instead, and the count must be
    asked for again as often before it is prepared again.

    Only a weak reference to the connection is kept, so that the
    connection's entry in :func:`prepared_statements` goes with it.
    """

    def __init__(
        self,
        connection: Any,
        max_parameters: int = 10_000,
        max_statements: int = 16,
        window: int = 64,
        asks_to_prepare: int = 3,
    ) -> None:
        self._connection = weakref.ref(connection)
        self.max_parameters = max_parameters
        self.max_statements = max_statements
        self.asks_to_prepare = asks_to_prepare
        self._socket: weakref.ref[Any] | None = None
        self._statements: OrderedDict[_Key, tuple[int, int]] = OrderedDict()
        self._recent: deque[_Key] = deque(maxlen=window)
        self._recent_asks: Counter[_Key] = Counter()
        self._parameters = 0
        self.prepared = 0
        self.closed = 0
        self.refused = 0

    @property
    def connection(self) -> Any:
        connection = self._connection()
        if connection is None:
            raise ReferenceError("the connection of these prepared statements is gone")
        return connection

    def statement_id(self, rows: BinaryRows, prefix: str, count: int, postfix: str) -> int | None:
        """The id of the statement for *count* rows, prepared now if it has been asked for often enough; else
        ``None``."""
        connection = self.connection
        socket = connection._sock
        if socket is None:
            return None  # closed: the literal path reports it as PyMySQL does
        if self._socket is None or self._socket() is not socket:
            self._socket = weakref.ref(socket)
            self._statements.clear()
            self._parameters = 0
        key = (prefix, count, postfix)
        found = self._statements.get(key)
        if found is not None:
            self._statements.move_to_end(key)
            return found[0]
        parameters = count * rows.width
        if parameters > min(self.max_parameters, MAX_STATEMENT_PARAMETERS) or not self._asked_often(key):
            return None
        while self._statements and (
            self._parameters + parameters > self.max_parameters or len(self._statements) >= self.max_statements
        ):
            _, (old_id, old_parameters) = self._statements.popitem(last=False)
            self._parameters -= old_parameters
            _close(connection, old_id)
            self.closed += 1
        try:
            statement_id = _prepare(connection, rows.statement(prefix, count, postfix))
        except pymysql.err.MySQLError as error:
            if error.args[0] not in _PREPARE_REFUSED:
                raise
            _log.warn("the server refused to prepare a statement of {count} rows: {error}", count=count, error=error)
            self._forget_asks(key)
            self.refused += 1
            return None
        self._statements[key] = (statement_id, parameters)
        self._parameters += parameters
        self.prepared += 1
        return statement_id

    def _asked_often(self, key: _Key) -> bool:
        """Count an ask for *key*; whether it makes :attr:`asks_to_prepare` among the last asks."""
        if len(self._recent) == self._recent.maxlen:
            oldest = self._recent[0]
            self._recent_asks[oldest] -= 1
            if not self._recent_asks[oldest]:
                del self._recent_asks[oldest]
        self._recent.append(key)
        self._recent_asks[key] += 1
        return self._recent_asks[key] >= self.asks_to_prepare

    def _forget_asks(self, key: _Key) -> None:
        self._recent = deque((other for other in self._recent if other != key), maxlen=self._recent.maxlen)
        self._recent_asks.pop(key, None)

    def execute(
        self, rows: BinaryRows, prefix: str, values: Sequence[tuple[object, ...]], postfix: str, max_bytes: int
    ) -> int | None:
        """Insert *values* through a prepared statement; the affected rows, or ``None`` if nothing was stored.

        Nothing is sent when there is no statement for their number yet
        (:meth:`statement_id`), a number does not fit its column, or the
        command would take more than *max_bytes*; nothing is stored when the
        server no longer knows the statement, which is then forgotten. Any
        other error of the server is raised, as PyMySQL raises it.
        """
        statement_id = self.statement_id(rows, prefix, len(values), postfix)
        if statement_id is None:
            return None
        encoded = rows.encode(values)
        count = len(values) * rows.width
        if encoded is None or _EXECUTE_OVERHEAD + (count + 7) // 8 + 2 * count + len(encoded) > max_bytes:
            return None
        try:
            return _execute(self.connection, statement_id, rows.parameter_types * len(values), count, encoded)
        except pymysql.err.MySQLError as error:
            if error.args[0] != ER_UNKNOWN_STMT_HANDLER:
                raise
            _log.warn("the server lost a prepared statement: {error}", error=error)
            key = (prefix, len(values), postfix)
            self._parameters -= self._statements.pop(key)[1]
            self._forget_asks(key)
            return None


_by_connection: weakref.WeakKeyDictionary[Any, PreparedStatements] = weakref.WeakKeyDictionary()
_by_connection_lock = threading.Lock()


def prepared_statements(connection: Any) -> PreparedStatements:
    """*connection*'s :class:`PreparedStatements`, made on first use (pool threads share this map)."""
    with _by_connection_lock:
        statements = _by_connection.get(connection)
        if statements is None:
            statements = _by_connection[connection] = PreparedStatements(connection)
        return statements
