"""The MariaDB store's multi-row statements (:class:`gochat.logic.mysql_store.SqlLiterals`,
:func:`~gochat.logic.mysql_store.execute_literal_rows`) are byte for byte what PyMySQL's ``executemany`` and ``mogrify``
send, over many generated rows: nasty characters, non-ASCII, long values, values of other
types, either escaping mode (backslashes, or doubled quotes under ``NO_BACKSLASH_ESCAPES``), split into the same
statements. No server needed: PyMySQL escapes without one. (The round trip through MariaDB is in
``tests/integration/test_mysql_store.py``.)
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from typing import Any

import pymysql
from pymysql.constants import SERVER_STATUS
from twisted.trial.unittest import SynchronousTestCase

from gochat.logic import mysql_store
from gochat.logic.mysql_store import (
    HEAD_ROW,
    KEY_ROW,
    MESSAGE_ROW,
    TEXT_VALUE,
    RowShape,
    SqlLiterals,
    execute_literal_rows,
)

#: Every character PyMySQL escapes, quote-like and percent characters it does not, and text beyond ASCII:
#: Latin-1, a combining mark, CJK, an astral emoji, a ZWJ, U+FFFF, a (valid) noncharacter, the BOM.
NASTY = "\\'\"\x00\n\r\x1a\t\x08`%_;-#/*?:\x7f\x80\xa0é\u0301中\N{GRINNING FACE}\u200d\uffff\U0010ffff\ufeff"
ASCII = "abcdefghijklmnopqrstuvwxyz ABC 0123456789"

_VALUES_10 = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"


class Color(enum.IntEnum):
    RED = 1


class Text(str):
    """A str subclass: PyMySQL escapes it as text; it must not take the fast path's ``%s`` unchecked."""

    def __str__(self) -> str:
        return "'); DROP TABLE messages; --"


class Number(int):
    def __str__(self) -> str:
        return "0); DROP TABLE messages; --"


class RecordingCursor(pymysql.cursors.Cursor):
    """A PyMySQL cursor on an unconnected connection: what would be sent is recorded instead."""

    def __init__(self, connection: Any, max_allowed_packet: int = 16 * 1024 * 1024) -> None:
        super().__init__(connection)
        self.sent: list[bytes] = []
        self.max_allowed_packet = max_allowed_packet
        self._row: tuple[object, ...] | None = None

    def execute(self, query: Any, args: Any = None) -> int:
        if args is not None:
            return int(super().execute(query, args))  # mogrifies, then comes back here with args None
        if query == "SELECT @@max_allowed_packet":
            self._row = (self.max_allowed_packet,)
            return 1
        self.sent.append(query.encode(self.connection.encoding) if isinstance(query, str) else bytes(query))
        return 0

    def fetchone(self) -> Any:
        return self._row


_connections: dict[bool, Any] = {}


def connection(no_backslash_escapes: bool = False) -> Any:
    """A utf8mb4 PyMySQL connection that never connects; its status says which escaping the session uses.

    One of each kind, made once (each makes an SSL context, about 50 ms).
    """
    conn = _connections.get(no_backslash_escapes)
    if conn is None:
        conn = _connections[no_backslash_escapes] = pymysql.connections.Connection(
            defer_connect=True, charset="utf8mb4"
        )
        conn.server_status = SERVER_STATUS.SERVER_STATUS_AUTOCOMMIT
        if no_backslash_escapes:
            conn.server_status |= SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES
    return conn


def text(rng: random.Random, max_length: int = 200) -> str:
    """Mostly plain, sometimes a few nasty characters, sometimes only nasty ones, sometimes empty."""
    length = rng.randrange(max_length + 1)
    mode = rng.random()
    if mode < 0.1:
        return ""
    if mode < 0.4:
        return "".join(rng.choices(ASCII, k=length))
    if mode < 0.8:
        chars = rng.choices(ASCII, k=length)
        for _ in range(rng.randrange(1, 4)):
            chars.insert(rng.randrange(len(chars) + 1), rng.choice(NASTY))
        return "".join(chars)
    return "".join(rng.choices(NASTY, k=length))


def number(rng: random.Random) -> int:
    return rng.choice((0, 1, 2**63 - 1, 2**64 - 1, -(2**63), rng.randrange(2**64)))


#: Drops the characters PyMySQL escapes in either mode: what is left goes through the one-format path.
_UNESCAPED = str.maketrans(dict.fromkeys("\\'\"\x00\n\r\x1a"))


def odd_value(rng: random.Random) -> object:
    """A value of a type the fast path does not take: PyMySQL's own escaping must write it."""
    return rng.choice(
        (None, True, False, 1.5, -0.0, b"\x00'\\bytes", bytearray(b"ba"), Color.RED, Text("it's"), Number(7))
    )


def message_row(rng: random.Random, odd: float = 0.0) -> tuple[object, ...]:
    row: list[object] = [
        number(rng),
        text(rng, 128),
        number(rng),
        number(rng),
        text(rng, 64),
        text(rng, 255),
        text(rng, 400),
        number(rng),
        rng.choice(("text", "edit", "recall", text(rng, 16))),
        number(rng),
    ]
    if rng.random() < odd:
        row[rng.randrange(len(row))] = odd_value(rng)
    return tuple(row)


def head_row(rng: random.Random, odd: float = 0.0) -> tuple[object, ...]:
    row: list[object] = [number(rng), text(rng, 128), number(rng), 0]
    if rng.random() < odd:
        row[rng.randrange(len(row))] = odd_value(rng)
    return tuple(row)


class LiteralsMatchPyMySQL(SynchronousTestCase):
    """execute_literal_rows and SqlLiterals against PyMySQL's executemany and Connection.escape."""

    def assertSame(self, ours: list[bytes], expected: list[bytes]) -> None:
        """Equal lists of statements or rows; else the first difference, in short (a diff of megabytes takes
        minutes)."""
        for index, (mine, theirs) in enumerate(zip(ours, expected, strict=False)):
            if mine != theirs:
                at = next(i for i in range(min(len(mine), len(theirs)) + 1) if mine[i : i + 1] != theirs[i : i + 1])
                self.fail(
                    f"item {index} differs at byte {at}: {mine[at - 40 : at + 40]!r} != {theirs[at - 40 : at + 40]!r}"
                )
        self.assertEqual(len(ours), len(expected))

    def pymysql_sends(self, conn: Any, query: str, rows: list[tuple[object, ...]]) -> list[bytes]:
        cursor = RecordingCursor(conn)
        cursor.executemany(query, rows)
        return cursor.sent

    def ours(
        self, conn: Any, prefix: str, shape: RowShape, rows: list[tuple[object, ...]], postfix: str = "", **kw: Any
    ) -> list[bytes]:
        cursor = RecordingCursor(conn, **kw)
        mysql_store._max_allowed_packet.pop(conn, None)
        execute_literal_rows(cursor, prefix, shape, rows, postfix)
        return cursor.sent

    def test_placeholders(self) -> None:
        """The shapes' %s templates are PyMySQL's, and their fast templates have one placeholder per column."""
        self.assertEqual(MESSAGE_ROW.placeholders, _VALUES_10)
        self.assertEqual(MESSAGE_ROW.template, "(%d, '%s', %d, %d, '%s', '%s', '%s', %d, '%s', %d)")
        self.assertEqual(TEXT_VALUE.placeholders, "%s")
        self.assertEqual(TEXT_VALUE.template, "'%s'")

    def test_message_rows(self) -> None:
        """600 batches of 1-60 generated messages, in both escaping modes: the same statements."""
        rng = random.Random(20240601)
        for batch in range(600):
            conn = connection(no_backslash_escapes=batch % 2 == 1)
            rows = [message_row(rng, odd=0.05) for _ in range(rng.randrange(1, 61))]
            expected = self.pymysql_sends(conn, mysql_store._INSERT_MESSAGES + _VALUES_10, rows)
            self.assertSame(self.ours(conn, mysql_store._INSERT_MESSAGES, MESSAGE_ROW, rows), expected)

    def test_head_rows(self) -> None:
        """The per-user index upsert, with its ON DUPLICATE KEY UPDATE clause after the rows."""
        rng = random.Random(7)
        prefix, postfix = mysql_store._UPSERT_HEADS
        for batch in range(500):
            conn = connection(no_backslash_escapes=batch % 2 == 1)
            rows = [head_row(rng, odd=0.05) for _ in range(rng.randrange(1, 61))]
            expected = self.pymysql_sends(conn, prefix + HEAD_ROW.placeholders + postfix, rows)
            self.assertSame(self.ours(conn, prefix, HEAD_ROW, rows, postfix), expected)

    def test_in_lists(self) -> None:
        """IN lists of texts and of (sender_id, client_msg_id) pairs: what PyMySQL's mogrify writes."""
        rng = random.Random(11)
        for index in range(1000):
            conn = connection(no_backslash_escapes=index % 2 == 1)
            literals = SqlLiterals(conn)
            values = [(text(rng) if rng.random() < 0.95 else odd_value(rng),) for _ in range(rng.randrange(1, 20))]
            self.assertSame(
                [literals.joined(TEXT_VALUE, values)],
                [",".join(RecordingCursor(conn).mogrify("%s", value) for value in values).encode()],
            )
            keys = [
                (number(rng), text(rng, 255)) if rng.random() < 0.95 else (odd_value(rng), odd_value(rng))
                for _ in range(rng.randrange(1, 20))
            ]
            self.assertSame(
                [literals.joined(KEY_ROW, keys)],
                [",".join(RecordingCursor(conn).mogrify("(%s, %s)", key) for key in keys).encode()],
            )

    def test_every_character_alone(self) -> None:
        """Each of the first 0x800 code points and each nasty one, alone and between others, one row each and all
        in one batch."""
        for no_backslash_escapes in (False, True):
            conn = connection(no_backslash_escapes)
            literals = SqlLiterals(conn)
            values = [
                (value,)
                for char in [chr(code) for code in range(0x800)] + list(NASTY)
                for value in (char, f"a{char}b", char * 3)
            ]
            expected = [conn.escape(value).encode() for (value,) in values]
            self.assertSame(literals.rows(TEXT_VALUE, values), expected)
            for value, written in zip(values, expected, strict=True):
                self.assertSame(literals.rows(TEXT_VALUE, [value]), [written])

    def test_subclasses_are_not_trusted(self) -> None:
        """A str or int subclass whose __str__ lies is not formatted by the fast path but escaped by PyMySQL: the
        str subclass by its value, the int subclass as the quoted, escaped text of its __str__."""
        conn = connection()
        row = (Number(1), Text("c"), 1, 1, "s", "m", "b", 1, "text", 0)
        [written] = SqlLiterals(conn).rows(MESSAGE_ROW, [row])
        self.assertEqual(written, RecordingCursor(conn).mogrify(_VALUES_10, row).encode())
        self.assertTrue(written.startswith(b"('0); DROP TABLE messages; --', 'c', 1,"), written)

    def test_whole_batches(self) -> None:
        """Batches with nothing to escape and nothing odd, written by one format for all their rows, in both
        escaping modes; and the same batches with one row spoiled in each way the one format must not take."""
        rng = random.Random(13)
        spoilers: list[Callable[[tuple[object, ...]], tuple[object, ...]]] = [
            lambda row: (*row[:6], "it's", *row[7:]),
            lambda row: (*row[:6], 'say "hi"', *row[7:]),
            lambda row: (*row[:6], "a\\b\nc", *row[7:]),
            lambda row: (Number(row[0]), *row[1:]),
            lambda row: (row[0], Text(row[1]), *row[2:]),
            lambda row: (*row[:7], True, *row[8:]),
            lambda row: (*row[:6], None, *row[7:]),
            lambda row: (*row[:6], b"bytes", *row[7:]),
        ]
        for batch in range(200):
            conn = connection(no_backslash_escapes=batch % 2 == 1)
            rows = [message_row(rng, odd=0) for _ in range(rng.randrange(1, 60))]
            rows = [
                tuple(value.translate(_UNESCAPED) if type(value) is str else value for value in row) for row in rows
            ]
            expected = self.pymysql_sends(conn, mysql_store._INSERT_MESSAGES + _VALUES_10, rows)
            self.assertSame(self.ours(conn, mysql_store._INSERT_MESSAGES, MESSAGE_ROW, rows), expected)
            spoilt = list(rows)
            at = rng.randrange(len(spoilt))
            spoilt[at] = spoilers[batch % len(spoilers)](spoilt[at])
            expected = self.pymysql_sends(conn, mysql_store._INSERT_MESSAGES + _VALUES_10, spoilt)
            self.assertSame(self.ours(conn, mysql_store._INSERT_MESSAGES, MESSAGE_ROW, spoilt), expected)

    def test_rows_of_another_width_are_not_joined_as_one(self) -> None:
        """Rows whose lengths add up to whole rows of the shape are still written row by row (and fail as one
        format per row fails), not re-cut into rows of the shape's width."""
        conn = connection()
        with self.assertRaises(TypeError):
            SqlLiterals(conn).joined(TEXT_VALUE, [("a", "b"), ()])
        self.assertEqual(SqlLiterals(conn).joined(KEY_ROW, [(1, "a"), (2, "b")]), b"(1, 'a'),(2, 'b')")

    def test_long_values_split_like_pymysql(self) -> None:
        """Rows of up to 1.5 MB: statements split where PyMySQL splits them, one oversized row alone."""
        rng = random.Random(5)
        sizes = [10, 300_000, 700_000, 20, 1_500_000, 5, 1_000_000, 400_000, 400_000, 100_000]
        rows = []
        for index, size in enumerate(sizes):
            body = "".join(rng.choices(ASCII + NASTY, k=size))
            rows.append((index, "d:1:2", index, 1, "s", f"m{index}", body, 0, "text", 0))
        conn = connection()
        expected = self.pymysql_sends(conn, mysql_store._INSERT_MESSAGES + _VALUES_10, rows)
        self.assertGreater(len(expected), 4)
        self.assertSame(self.ours(conn, mysql_store._INSERT_MESSAGES, MESSAGE_ROW, rows), expected)

    def test_split_at_every_boundary(self) -> None:
        """Statement limits byte by byte around the rows' sizes: the same split as PyMySQL at each (a statement
        exactly at the limit is not split)."""
        rng = random.Random(9)
        rows = [(i, "d:1:2", i, 1, "s", f"m{i}", text(rng, 40), 0, "text", 0) for i in range(12)]
        conn = connection()
        [whole] = self.pymysql_sends(conn, mysql_store._INSERT_MESSAGES + _VALUES_10, rows)
        for limit in [*range(150, 700), *range(len(whole) - 3, len(whole) + 3)]:
            cursor = RecordingCursor(conn)
            cursor.max_stmt_length = limit
            cursor.executemany(mysql_store._INSERT_MESSAGES + _VALUES_10, rows)
            self.patch(mysql_store, "MAX_STATEMENT_BYTES", limit)
            self.assertSame(self.ours(conn, mysql_store._INSERT_MESSAGES, MESSAGE_ROW, rows), cursor.sent)

    def test_split_below_a_small_max_allowed_packet(self) -> None:
        """With max_allowed_packet below PyMySQL's 1,024,000, no statement passes it; a row that cannot fit
        fails the call before anything is sent."""
        rows = [(i, "d:1:2", i, 1, "s", f"m{i}", "x" * 30_000, 0, "text", 0) for i in range(100)]
        conn = connection()
        sent = self.ours(conn, mysql_store._INSERT_MESSAGES, MESSAGE_ROW, rows, max_allowed_packet=100_000)
        self.assertGreater(len(sent), 30)
        self.assertTrue(all(len(statement) < 100_000 for statement in sent))
        self.assertEqual(b"".join(sent).count(b"'text'"), 100)

        cursor = RecordingCursor(conn, max_allowed_packet=100_000)
        mysql_store._max_allowed_packet.pop(conn, None)
        big = [*rows[:3], (200, "d:1:2", 200, 1, "s", "big", "y" * 100_000, 0, "text", 0)]
        with self.assertRaises(pymysql.err.OperationalError) as raised:
            execute_literal_rows(cursor, mysql_store._INSERT_MESSAGES, MESSAGE_ROW, big)
        self.assertEqual(raised.exception.args[0], mysql_store.ER_NET_PACKET_TOO_LARGE)
        self.assertEqual(cursor.sent, [])

    def test_lone_surrogates_fail_as_in_pymysql(self) -> None:
        """Text that is not valid Unicode cannot be encoded by either (the store refuses it earlier: check_fits)."""
        conn = connection()
        rows = [(1, "d:1:2", 1, 1, "s", "m", "lone \ud800", 0, "text", 0)]
        with self.assertRaises(UnicodeEncodeError):
            self.pymysql_sends(conn, mysql_store._INSERT_MESSAGES + _VALUES_10, rows)
        with self.assertRaises(UnicodeEncodeError):
            self.ours(conn, mysql_store._INSERT_MESSAGES, MESSAGE_ROW, rows)

    def test_no_rows_no_statement(self) -> None:
        conn = connection()
        self.assertSame(self.ours(conn, mysql_store._INSERT_MESSAGES, MESSAGE_ROW, []), [])
