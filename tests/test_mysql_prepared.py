"""The binary protocol of :mod:`gochat.logic.mysql_prepared`: the bytes of each command, and which counts get a
prepared statement. Against a scripted connection that answers as MariaDB's protocol answers; the round trip
through a real server is in ``tests/integration/test_mysql_store.py``."""

from __future__ import annotations

import gc
import random
import struct
import weakref
from typing import Any

import pymysql
from pymysql.constants import COMMAND, FIELD_TYPE
from pymysql.protocol import MysqlPacket
from twisted.trial.unittest import SynchronousTestCase

from gochat.logic import mysql_prepared
from gochat.logic.mysql_prepared import BinaryRows, PreparedStatements
from gochat.logic.mysql_store import _INSERT_MESSAGES, HEAD_ROW, MESSAGE_ROW
from tests.test_mysql_literals import NASTY


def reference_values(types: tuple[type, ...], signed: set[int], rows: list[tuple[Any, ...]]) -> bytes:
    """The values of *rows* as the protocol lays them out, written the plain way: value by value."""
    out = bytearray()
    for row in rows:
        for index, (kind, value) in enumerate(zip(types, row, strict=True)):
            if kind is int:
                out += value.to_bytes(8, "little", signed=index in signed)
            else:
                data = value.encode("utf-8")
                out += b"\xfe" + len(data).to_bytes(8, "little") + data
    return bytes(out)


def message_row(rng: random.Random) -> tuple[Any, ...]:
    def text(limit: int) -> str:
        return "".join(rng.choices(NASTY + "abc xyz", k=rng.randrange(limit)))

    return (
        rng.choice((0, 1, 2**63, 2**64 - 1, rng.getrandbits(64))),
        text(40),
        rng.getrandbits(64),
        rng.getrandbits(64),
        text(20),
        text(60),
        text(rng.choice((10, 300, 70_000))),
        rng.choice((-(2**63), -1, 0, 2**63 - 1, rng.getrandbits(63))),
        "text",
        rng.getrandbits(64),
    )


class BinaryRowsTests(SynchronousTestCase):
    def test_one_row_by_hand(self) -> None:
        """A number is 8 little-endian bytes; a text an 0xFE length marker, 8 bytes of length, its UTF-8."""
        rows = BinaryRows((int, str, int), signed=(2,))
        self.assertEqual(
            rows.encode([(1, "é", -2)]),
            b"\x01\0\0\0\0\0\0\0" + b"\xfe\x02\0\0\0\0\0\0\0" + "é".encode() + b"\xfe\xff\xff\xff\xff\xff\xff\xff",
        )
        self.assertEqual(rows.parameter_types, bytes((FIELD_TYPE.LONGLONG, 0x80, FIELD_TYPE.VAR_STRING, 0, 8, 0)))
        self.assertEqual(rows.statement("INSERT INTO t VALUES ", 2, " X"), "INSERT INTO t VALUES (?,?,?),(?,?,?) X")

    def test_message_rows_match_the_plain_layout(self) -> None:
        """Batches of generated messages (odd text, 0-70,000 byte bodies, every edge of both number kinds)."""
        rng = random.Random(5)
        binary = MESSAGE_ROW.binary
        assert binary is not None
        for _ in range(200):
            rows = [message_row(rng) for _ in range(rng.randrange(1, 30))]
            self.assertEqual(binary.encode(rows), reference_values(MESSAGE_ROW.types, {7}, rows))
        self.assertEqual(binary.width, 10)
        self.assertEqual(binary.parameter_types[14:16], bytes((FIELD_TYPE.LONGLONG, 0)))  # ts is signed

    def test_shapes_ending_in_a_number_or_starting_with_text(self) -> None:
        for types in ((str,), (str, int), (int, int), (str, str, int, str)):
            rows = [tuple(n if kind is int else f"v{n}'" for kind in types) for n in range(5)]
            self.assertEqual(BinaryRows(types).encode(rows), reference_values(types, set(), rows))

    def test_numbers_outside_their_column_are_not_encoded(self) -> None:
        """None: the batch goes as literals, and the server answers for the value."""
        rows = BinaryRows((int, int), signed=(1,))
        self.assertIsNone(rows.encode([(0, 0), (-1, 0)]))
        self.assertIsNone(rows.encode([(2**64, 0)]))
        self.assertIsNone(rows.encode([(0, 2**63)]))
        self.assertIsNone(rows.encode([(0, -(2**63) - 1)]))
        self.assertIsNotNone(rows.encode([(2**64 - 1, -(2**63))]))

    def test_lone_surrogates_raise_as_literals_do(self) -> None:
        with self.assertRaises(UnicodeEncodeError):
            BinaryRows((str,)).encode([("lone \ud800",)])

    def test_only_numbers_and_text(self) -> None:
        with self.assertRaises(ValueError):
            BinaryRows((int, bytes))

    def test_shapes_that_are_not_prepared(self) -> None:
        """The per-user index rows vary in number from batch to batch: always literals."""
        self.assertIsNone(HEAD_ROW.binary)


class Socket:
    """Stands for a connection's socket: a new one after a reconnect."""


class ScriptedConnection:
    """The packet layer of a PyMySQL connection, answering as the server would: a prepare gets its id, a
    definition packet per parameter and an EOF; an execute an OK packet with ``affected`` rows. ``errors`` holds
    ``(command, code)`` answers to give instead, each once, as an error packet."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []
        self._sock: Socket | None = Socket()
        self.server_status = 0
        self.next_id = 1
        self.affected = 0
        self.answers: list[bytes] = []
        self.errors: list[tuple[int, int]] = []

    def _execute_command(self, command: int, data: bytes | str) -> None:
        data = data.encode() if isinstance(data, str) else data
        self.sent.append((command, data))
        for error in self.errors:
            if error[0] == command:
                self.errors.remove(error)
                self.answers.append(b"\xff" + struct.pack("<H", error[1]) + b"#HY000scripted error")
                return
        if command == COMMAND.COM_STMT_PREPARE:
            parameters = data.count(b"?")
            self.answers.append(b"\x00" + struct.pack("<IHHBH", self.next_id, 0, parameters, 0, 0))
            self.answers += [b"\x03def" + b"\x00" * 20] * parameters
            if parameters:
                self.answers.append(b"\xfe\x00\x00\x02\x00")
            self.next_id += 1
        elif command == COMMAND.COM_STMT_EXECUTE:
            self.answers.append(b"\x00" + bytes((self.affected, 0)) + struct.pack("<HH", 2, 0))

    def _read_packet(self) -> MysqlPacket:
        packet = MysqlPacket(self.answers.pop(0), "utf8")
        if packet.is_error_packet():
            packet.raise_for_error()
        return packet

    def _read_ok_packet(self) -> Any:
        ok = pymysql.protocol.OKPacketWrapper(self._read_packet())
        self.server_status = ok.server_status
        return ok

    def commands(self) -> list[int]:
        return [command for command, _ in self.sent]


def rows_of(count: int) -> list[tuple[Any, ...]]:
    return [(n, "d:1:2", n, 1, "s", f"m{n}", "hi", n, "text", 0) for n in range(count)]


class PreparedStatementsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.connection = ScriptedConnection()
        self.statements = PreparedStatements(self.connection, max_parameters=100, max_statements=3, window=8)
        binary = MESSAGE_ROW.binary
        assert binary is not None
        self.binary = binary

    def insert(self, count: int, max_bytes: int = 1_000_000) -> int | None:
        return self.statements.execute(self.binary, _INSERT_MESSAGES, rows_of(count), "", max_bytes)

    def test_a_count_is_prepared_at_its_third_ask_then_executed(self) -> None:
        """Twice nothing is sent (the caller writes literals); the third time the statement is prepared and
        executed; later asks only execute it."""
        self.connection.affected = 2
        self.assertIsNone(self.insert(2))
        self.assertIsNone(self.insert(2))
        self.assertEqual(self.connection.sent, [])
        self.assertEqual(self.insert(2), 2)
        self.assertEqual(self.insert(2), 2)
        self.assertEqual(
            self.connection.commands(),
            [COMMAND.COM_STMT_PREPARE, COMMAND.COM_STMT_EXECUTE, COMMAND.COM_STMT_EXECUTE],
        )
        self.assertEqual(self.connection.sent[0][1], self.binary.statement(_INSERT_MESSAGES, 2, "").encode())
        self.assertEqual(self.connection.server_status, 2)

    def test_execute_command_bytes(self) -> None:
        """Statement id, no cursor, one iteration, an all-zero NULL bitmap, the types, then the values."""
        for _ in range(3):
            self.insert(2)
        _, payload = self.connection.sent[-1]
        types = self.binary.parameter_types * 2
        self.assertEqual(
            payload,
            struct.pack("<IBI", 1, 0, 1) + bytes(3) + b"\x01" + types + self.binary.encode(rows_of(2)),  # type: ignore[operator]
        )

    def test_asks_outside_the_window_do_not_count(self) -> None:
        self.insert(1)
        self.insert(1)
        for count in range(2, 10):  # eight other asks push both out of the window of 8
            self.insert(count)
        self.assertIsNone(self.insert(1))
        self.assertEqual(self.connection.sent, [])

    def test_least_recently_used_statements_are_closed_to_stay_within_budget(self) -> None:
        """max_parameters 100: statements of 3, 4 and 2 rows (90 parameters); a 1-row one makes 4 statements,
        over max_statements 3, so the least recently used (4 rows) is closed; then 7 rows (70) closes two more."""
        for count in (3, 4, 2):
            for _ in range(3):
                self.insert(count)
        self.insert(3)  # most recently used now
        self.connection.sent.clear()
        for _ in range(3):
            self.insert(1)
        closed = [struct.unpack("<I", data)[0] for command, data in self.connection.sent if command == 0x19]
        self.assertEqual(closed, [2])  # the 4-row statement, least recently used
        self.connection.sent.clear()
        for _ in range(3):
            self.insert(7)
        closed = [struct.unpack("<I", data)[0] for command, data in self.connection.sent if command == 0x19]
        self.assertEqual(closed, [3, 1])  # 2 rows, then 3 rows: 1 row (10) + 7 rows (70) fit
        self.assertEqual((self.statements.prepared, self.statements.closed), (5, 3))

    def test_counts_over_the_budget_are_never_prepared(self) -> None:
        for _ in range(5):
            self.assertIsNone(self.insert(11))
        self.assertEqual(self.connection.sent, [])

    def test_a_command_over_max_bytes_is_not_sent(self) -> None:
        """The statement is prepared (it will serve smaller rows), but this batch goes as literals."""
        for _ in range(2):
            self.insert(2)
        self.assertIsNone(self.insert(2, max_bytes=100))
        self.assertEqual(self.connection.commands(), [COMMAND.COM_STMT_PREPARE])

    def test_a_reconnected_session_prepares_again(self) -> None:
        """A new socket is a new server session, whatever its thread id: the statements are prepared again."""
        for _ in range(3):
            self.insert(2)
        self.connection._sock = Socket()
        self.insert(2)
        self.assertEqual(
            self.connection.commands(),
            [COMMAND.COM_STMT_PREPARE, COMMAND.COM_STMT_EXECUTE, COMMAND.COM_STMT_PREPARE, COMMAND.COM_STMT_EXECUTE],
        )

    def test_a_closed_connection_gets_literals(self) -> None:
        self.connection._sock = None
        for _ in range(4):
            self.assertIsNone(self.insert(2))
        self.assertEqual(self.connection.sent, [])

    def test_a_refused_prepare_means_literals_until_asked_as_often_again(self) -> None:
        """max_prepared_stmt_count reached (1461): nothing stored, nothing raised; the count is prepared again at
        its third ask after that."""
        self.connection.errors.append((COMMAND.COM_STMT_PREPARE, 1461))
        for _ in range(5):
            self.assertIsNone(self.insert(2))
        self.assertEqual(self.connection.commands(), [COMMAND.COM_STMT_PREPARE])
        self.assertEqual(self.statements.refused, 1)
        self.connection.affected = 2
        self.assertEqual(self.insert(2), 2)
        self.assertEqual(self.statements.prepared, 1)

    def test_other_prepare_errors_are_raised(self) -> None:
        self.connection.errors.append((COMMAND.COM_STMT_PREPARE, 1064))
        self.insert(2)
        self.insert(2)
        with self.assertRaises(pymysql.err.ProgrammingError):
            self.insert(2)

    def test_a_lost_statement_is_forgotten(self) -> None:
        """Unknown statement (1243): nothing was stored, so literals go instead, and the count is prepared again
        at its third ask after that."""
        for _ in range(3):
            self.insert(2)
        self.connection.errors.append((COMMAND.COM_STMT_EXECUTE, 1243))
        self.assertIsNone(self.insert(2))
        self.assertIsNone(self.insert(2))
        self.assertIsNone(self.insert(2))
        self.assertIsNotNone(self.insert(2))
        self.assertEqual(self.statements.prepared, 2)

    def test_statement_errors_are_raised_and_the_statement_kept(self) -> None:
        """A duplicate key (1062) is the batch's answer, raised as PyMySQL raises it; the statement stays."""
        for _ in range(3):
            self.insert(2)
        self.connection.errors.append((COMMAND.COM_STMT_EXECUTE, 1062))
        with self.assertRaises(pymysql.err.IntegrityError) as raised:
            self.insert(2)
        self.assertEqual(raised.exception.args[0], 1062)
        self.connection.sent.clear()
        self.insert(2)
        self.assertEqual(self.connection.commands(), [COMMAND.COM_STMT_EXECUTE])

    def test_a_connection_let_go_is_freed_with_its_statements(self) -> None:
        connection = ScriptedConnection()
        mysql_prepared.prepared_statements(connection)
        gone = weakref.ref(connection)
        del connection
        gc.collect()
        self.assertIsNone(gone())

    def test_one_cache_per_connection(self) -> None:
        first = mysql_prepared.prepared_statements(self.connection)
        self.assertIs(mysql_prepared.prepared_statements(self.connection), first)
        self.assertIsNot(mysql_prepared.prepared_statements(ScriptedConnection()), first)
