"""Reads back what the server stored, for the loss check of a run.

The rows of the ``messages`` table sent by the run's users are read from the
SQLite file of the embedded mode or from MariaDB in production (or from the
``--database`` given with ``--url``), and compared with the acks the clients
got by :func:`bench.load.stats.check_storage`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pymysql

#: Sender ids per query (keeps the statement small).
CHUNK = 1000


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for i in range(0, len(ids), CHUNK):
        yield ids[i : i + CHUNK]


def read_sqlite(path: Path, sender_ids: Iterable[int]) -> list[tuple[int, str, str]]:
    """``(sender_id, client_msg_id, msg_id)`` of the rows sent by *sender_ids*, read-only."""
    ids = sorted(set(sender_ids))
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        rows: list[tuple[int, str, str]] = []
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            cursor = connection.execute(
                f"SELECT sender_id, client_msg_id, msg_id FROM messages WHERE sender_id IN ({marks})",
                chunk,
            )
            rows.extend((int(s), str(c), str(m)) for s, c, m in cursor)
        return rows
    finally:
        connection.close()


def read_mysql(url: str, sender_ids: Iterable[int]) -> list[tuple[int, str, str]]:
    """The same from a ``mysql://user[:password]@host[:port]/database`` URL."""
    parts = urlsplit(url)
    if parts.scheme != "mysql" or not parts.path.strip("/"):
        raise ValueError(f"not a mysql://user@host:port/database URL: {url!r}")
    connection = pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=parts.path.strip("/"),
        charset="utf8mb4",
        connect_timeout=5,
        read_timeout=300,
    )
    ids = sorted(set(sender_ids))
    try:
        rows: list[tuple[int, str, str]] = []
        with connection.cursor() as cursor:
            for chunk in _chunks(ids):
                marks = ",".join(["%s"] * len(chunk))
                cursor.execute(
                    f"SELECT sender_id, client_msg_id, msg_id FROM messages WHERE sender_id IN ({marks})",
                    chunk,
                )
                rows.extend((int(s), str(c), str(m)) for s, c, m in cursor.fetchall())
        return rows
    finally:
        connection.close()


def read_rows(database: str, sender_ids: Iterable[int]) -> list[tuple[int, str, str]]:
    """Rows from ``sqlite:PATH`` or ``mysql://...``."""
    if database.startswith("sqlite:"):
        return read_sqlite(Path(database.removeprefix("sqlite:")), sender_ids)
    return read_mysql(database, sender_ids)
