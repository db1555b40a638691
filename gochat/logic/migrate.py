"""The MySQL/MariaDB schema, versioned, and the command that brings a database up to it.

Production migrations are an explicit step, run before the new code starts::

    python -m gochat.logic.migrate --host db --user gochat --database gochat          # create + migrate
    python -m gochat.logic.migrate --host db --user gochat --database gochat --check  # verify only

The password comes from ``--password`` or, better (it is then not visible in
``ps``), from the ``MYSQL_PWD`` environment variable.

The logic service only :func:`check`\\ s the version at start and refuses a
database that is behind or ahead of the code; it never migrates by itself.

Every table is InnoDB in ``utf8mb4`` with a *binary, no-pad* collation
(``utf8mb4_nopad_bin`` on MariaDB, ``utf8mb4_0900_bin`` on MySQL 8): every
text key here is an identifier compared byte for byte. Usernames are already
normalised to lower case by the application, so a case- or accent-folding
collation could only add surprises (``"strasse"`` = ``"straße"``); and a
PAD SPACE collation (``utf8mb4_bin``, ``*_ci``) would make ``"m1"`` and
``"m1 "`` the same ``client_msg_id``, so ``INSERT IGNORE`` would silently
drop the second, different message.

MySQL commits DDL implicitly, so a migration cannot be rolled back as a
whole: each statement is written to be safe to run again (``IF NOT
EXISTS``; a column or an index is added only if ``information_schema`` does
not list it yet, :class:`AddColumn`, :class:`AddIndex`, since MySQL 8 has no
``ADD COLUMN IF NOT EXISTS``), and a migration's version row is committed
right after its statements. Concurrent runs are serialised by a named lock.

Each migration keeps the code of the version before it working (new columns
have defaults), so the processes still running the old code keep going while
it is applied; they are replaced afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Collations tried in order when creating tables; the first the server has is used.
NO_PAD_BINARY_COLLATIONS = ("utf8mb4_nopad_bin", "utf8mb4_0900_bin")
LOCK_NAME = "gochat.migrate"
LOCK_TIMEOUT_SECONDS = 60

_DATABASE_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")


@dataclass(frozen=True)
class AddColumn:
    """``ALTER TABLE table ADD COLUMN column definition``, skipped if the column exists."""

    table: str
    column: str
    definition: str


@dataclass(frozen=True)
class AddIndex:
    """``CREATE INDEX name ON table (columns)``, skipped if the table has an index called *name*."""

    table: str
    name: str
    columns: str


Step = str | AddColumn | AddIndex


@dataclass(frozen=True)
class Migration:
    """One schema version: the steps that reach it from the previous one.

    A step is an SQL statement, in which ``{collation}`` is replaced by the
    server's no-pad binary utf8mb4 collation, or a guarded
    :class:`AddColumn` or :class:`AddIndex`.
    """

    version: int
    description: str
    statements: tuple[Step, ...]


MIGRATIONS: list[Migration] = [
    Migration(
        1,
        "users and messages",
        (
            """CREATE TABLE IF NOT EXISTS users (
                user_id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
                username VARCHAR(64) NOT NULL,
                password_hash VARCHAR(512) NOT NULL,
                created_at DOUBLE NOT NULL,
                PRIMARY KEY (user_id),
                UNIQUE KEY uq_users_username (username)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}""",
            # msg_id is time-ordered, so the clustered index is appended to.
            # (conv, seq) is both the redelivery guard and the index that
            # reads a conversation in seq order.
            """CREATE TABLE IF NOT EXISTS messages (
                msg_id BIGINT UNSIGNED NOT NULL,
                conv VARCHAR(128) NOT NULL,
                seq BIGINT UNSIGNED NOT NULL,
                sender_id BIGINT UNSIGNED NOT NULL,
                sender VARCHAR(64) NOT NULL,
                client_msg_id VARCHAR(255) NOT NULL,
                body MEDIUMTEXT NOT NULL,
                ts BIGINT NOT NULL,
                PRIMARY KEY (msg_id),
                UNIQUE KEY uq_messages_conv_seq (conv, seq),
                UNIQUE KEY uq_messages_sender_client (sender_id, client_msg_id)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}""",
        ),
    ),
    Migration(
        2,
        "per-user conversation index with received cursors",
        (
            # One row per (user, conversation): its newest seq, kept by the
            # persist worker in the storing transaction, and the highest seq
            # the user acknowledged receiving. Sync reads a user's rows.
            """CREATE TABLE IF NOT EXISTS user_convs (
                user_id BIGINT UNSIGNED NOT NULL,
                conv VARCHAR(128) NOT NULL,
                last_seq BIGINT UNSIGNED NOT NULL,
                acked_seq BIGINT UNSIGNED NOT NULL DEFAULT 0,
                PRIMARY KEY (user_id, conv)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}""",
            # Backfill from the messages stored before: a one-to-one key is d:<low>:<high>.
            """INSERT IGNORE INTO user_convs (user_id, conv, last_seq, acked_seq)
                SELECT CAST(SUBSTRING_INDEX(SUBSTRING_INDEX(conv, ':', 2), ':', -1) AS UNSIGNED), conv, MAX(seq), 0
                FROM messages WHERE conv LIKE 'd:%' GROUP BY conv
                UNION ALL
                SELECT CAST(SUBSTRING_INDEX(conv, ':', -1) AS UNSIGNED), conv, MAX(seq), 0
                FROM messages WHERE conv LIKE 'd:%' GROUP BY conv""",
        ),
    ),
    Migration(
        3,
        "message kinds, read cursors, groups",
        (
            # Edits, recalls and membership events are messages of their
            # conversation; ref_seq names the message an edit or recall
            # changes. Both are appended with a default (instant on MariaDB
            # 10.3+ and MySQL 8), so existing rows are text.
            AddColumn("messages", "kind", "VARCHAR(16) NOT NULL DEFAULT 'text'"),
            AddColumn("messages", "ref_seq", "BIGINT UNSIGNED NOT NULL DEFAULT 0"),
            # How far each user has read each conversation. What a client
            # received before read receipts existed counts as read, so an
            # upgrade does not mark every old message unread.
            AddColumn("user_convs", "read_seq", "BIGINT UNSIGNED NOT NULL DEFAULT 0"),
            "UPDATE user_convs SET read_seq = acked_seq WHERE read_seq < acked_seq",
            # Read receipts of a conversation: every member's row.
            AddIndex("user_convs", "ix_user_convs_conv", "conv"),
            """CREATE TABLE IF NOT EXISTS chat_groups (
                group_id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
                name VARCHAR(64) NOT NULL,
                created_at DOUBLE NOT NULL,
                PRIMARY KEY (group_id)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}""",
            # ordinal orders a group's members as they joined (one who
            # leaves and rejoins goes last); user_id finds a user's groups.
            """CREATE TABLE IF NOT EXISTS group_members (
                group_id BIGINT UNSIGNED NOT NULL,
                user_id BIGINT UNSIGNED NOT NULL,
                username VARCHAR(64) NOT NULL,
                role VARCHAR(16) NOT NULL,
                joined_seq BIGINT UNSIGNED NOT NULL,
                ordinal BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
                PRIMARY KEY (group_id, user_id),
                UNIQUE KEY uq_group_members_ordinal (ordinal),
                KEY ix_group_members_user (user_id)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}""",
        ),
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1].version

_CREATE_SCHEMA_VERSION = """CREATE TABLE IF NOT EXISTS schema_version (
    version INT UNSIGNED NOT NULL,
    description VARCHAR(255) NOT NULL,
    applied_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""


class SchemaVersionError(RuntimeError):
    """The database's schema is not the one this code was written for."""

    def __init__(self, found: int, expected: int) -> None:
        if found < expected:
            advice = "run `python -m gochat.logic.migrate` before starting gochat"
            state = "behind"
        else:
            advice = "this gochat is older than the database; deploy the newer gochat"
            state = "ahead of"
        super().__init__(f"database schema version {found} is {state} this gochat's {expected}: {advice}")
        self.found = found
        self.expected = expected


class MigrationLockedError(RuntimeError):
    """Another migration held the lock for longer than :data:`LOCK_TIMEOUT_SECONDS`."""


def binary_collation(cursor: Any) -> str:
    """The server's no-pad binary utf8mb4 collation; ``RuntimeError`` if it has none."""
    placeholders = ", ".join(["%s"] * len(NO_PAD_BINARY_COLLATIONS))
    cursor.execute(
        f"SELECT COLLATION_NAME FROM information_schema.COLLATIONS WHERE COLLATION_NAME IN ({placeholders})",
        NO_PAD_BINARY_COLLATIONS,
    )
    available = {row[0] for row in cursor.fetchall()}
    for name in NO_PAD_BINARY_COLLATIONS:
        if name in available:
            return name
    raise RuntimeError(f"the server has none of the collations {', '.join(NO_PAD_BINARY_COLLATIONS)}")


def _current_version(cursor: Any) -> int:
    cursor.execute(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
        ("schema_version",),
    )
    if not cursor.fetchone()[0]:
        return 0
    cursor.execute("SELECT MAX(version) FROM schema_version")
    return int(cursor.fetchone()[0] or 0)


def check(cursor: Any) -> int:
    """The schema version of the current database; :class:`SchemaVersionError` unless it is :data:`SCHEMA_VERSION`."""
    current = _current_version(cursor)
    if current != SCHEMA_VERSION:
        raise SchemaVersionError(current, SCHEMA_VERSION)
    return current


def apply(cursor: Any) -> int:
    """Apply the pending migrations to the current database; returns the version it is at.

    Refuses (:class:`SchemaVersionError`) a database ahead of this code.
    Each migration is committed as it completes, so a failure leaves the
    database at the last complete version (plus, at worst, tables of the
    failed one, which its ``IF NOT EXISTS`` statements pick up on a rerun).
    """
    cursor.execute("SELECT GET_LOCK(%s, %s)", (LOCK_NAME, LOCK_TIMEOUT_SECONDS))
    if cursor.fetchone()[0] != 1:
        raise MigrationLockedError(f"another migration held the lock {LOCK_NAME!r} for {LOCK_TIMEOUT_SECONDS}s")
    try:
        version = _apply_locked(cursor)
    except BaseException:
        # The original error matters; on a broken connection the server has released the lock anyway.
        with contextlib.suppress(Exception):
            _release_lock(cursor)
        raise
    _release_lock(cursor)
    return version


def _apply_locked(cursor: Any) -> int:
    cursor.execute(_CREATE_SCHEMA_VERSION)
    current = _current_version(cursor)
    if current > SCHEMA_VERSION:
        raise SchemaVersionError(current, SCHEMA_VERSION)
    collation = binary_collation(cursor)
    for migration in MIGRATIONS:
        if migration.version <= current:
            continue
        for step in migration.statements:
            _run_step(cursor, step, collation)
        cursor.execute(
            "INSERT INTO schema_version (version, description) VALUES (%s, %s)",
            (migration.version, migration.description),
        )
        cursor.execute("COMMIT")
        current = migration.version
    return current


def _listed(cursor: Any, view: str, name_column: str, table: str, name: str) -> bool:
    """Whether ``information_schema.<view>`` lists *name* (in *name_column*) for *table* of this database."""
    cursor.execute(
        f"SELECT COUNT(*) FROM information_schema.{view}"
        f" WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s AND {name_column} = %s",
        (table, name),
    )
    return bool(cursor.fetchone()[0])


def _run_step(cursor: Any, step: Step, collation: str) -> None:
    if isinstance(step, AddColumn):
        if not _listed(cursor, "COLUMNS", "COLUMN_NAME", step.table, step.column):
            cursor.execute(f"ALTER TABLE `{step.table}` ADD COLUMN `{step.column}` {step.definition}")
    elif isinstance(step, AddIndex):
        if not _listed(cursor, "STATISTICS", "INDEX_NAME", step.table, step.name):
            cursor.execute(f"CREATE INDEX `{step.name}` ON `{step.table}` ({step.columns})")
    else:
        cursor.execute(step.format(collation=collation))


def _release_lock(cursor: Any) -> None:
    cursor.execute("SELECT RELEASE_LOCK(%s)", (LOCK_NAME,))
    cursor.fetchall()


def create_database(cursor: Any, name: str) -> None:
    """Create database *name* (utf8mb4, no-pad binary collation) unless it exists."""
    if not _DATABASE_NAME.match(name):
        raise ValueError(f"database name must be 1-64 characters of A-Z, a-z, 0-9, '_': {name!r}")
    collation = binary_collation(cursor)
    cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE {collation}")


def _parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gochat.logic.migrate",
        description="Create the gochat MySQL/MariaDB database if missing and apply pending schema migrations.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3306)
    parser.add_argument("--user", default="root")
    parser.add_argument(
        "--password", default=os.environ.get("MYSQL_PWD", ""), help="default: the MYSQL_PWD environment variable"
    )
    parser.add_argument("--database", default="gochat")
    parser.add_argument(
        "--check", action="store_true", help="only check that the schema is current; exit 1 if it is not"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: prints the schema version; exit status 0 when the database is current."""
    import pymysql

    from gochat.logic.mysql_store import MysqlSettings, connection_arguments

    options = _parse_arguments(argv)
    settings = MysqlSettings(
        host=options.host, port=options.port, user=options.user, password=options.password, database=options.database
    )
    arguments = connection_arguments(settings)
    del arguments["database"]
    try:
        connection = pymysql.connect(**arguments)
    except pymysql.err.OperationalError as error:
        print(f"cannot connect to {settings.host}:{settings.port}: {error}", file=sys.stderr)
        return 1
    try:
        cursor = connection.cursor()
        if not options.check:
            create_database(cursor, settings.database)
        try:
            connection.select_db(settings.database)
        except pymysql.err.OperationalError as error:
            print(f"cannot use database {settings.database!r}: {error}", file=sys.stderr)
            return 1
        try:
            version = check(cursor) if options.check else apply(cursor)
        except SchemaVersionError as error:
            print(str(error), file=sys.stderr)
            return 1
        connection.commit()
        print(f"{settings.database}: schema version {version}")
        return 0
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(main())
