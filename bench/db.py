"""Benchmark: batched message inserts versus one INSERT + commit per message, on MariaDB.

Run from the repository root (MariaDB on 127.0.0.1:3306, user root)::

    python bench/db.py                                   # human-readable summary
    python bench/db.py --json                            # one JSON object on stdout
    python bench/db.py --json --output bench/results/db.json
    python bench/db.py --rows 100000 --naive-rows 3000 --batch 500 --overlap 3
    python bench/db.py --ceilings                        # also what the server and a bare client reach

What is measured
----------------
One list of messages is generated (seeded): ``--rows`` of them, spread over
1,000 conversations with gap-free seqs, 40-160 character bodies with some
non-ASCII text, as chat traffic looks. All paths write into the production
schema (``gochat.logic.migrate``, table ``messages``) of a throwaway
database ``gochat_bench_<uuid>``, created, migrated and dropped by the run,
through the production adbapi pool (:func:`gochat.logic.mysql_store.connect_pool`):

``naive``
    The first ``--naive-rows`` messages, one at a time:
    ``MysqlMessageStore.insert_batch([message])`` awaited before the next, i.e.
    one ``INSERT`` and one ``COMMIT`` per message, sequential, like a writer
    that acknowledges each message on its own commit.

``batched``
    All ``--rows`` messages through ``MysqlMessageStore.put``, i.e. the
    shared :class:`~gochat.logic.batch_writer.BatchWriter`: one multi-row
    ``INSERT IGNORE`` in one transaction per batch of ``--batch`` messages
    (from the third full batch on a connection, through the statement
    prepared for that many rows, :mod:`gochat.logic.mysql_prepared`; before
    that as literals written by ``SqlLiterals``), ``--overlap`` batches in
    flight on as many connections (the next ones are written while the one
    before commits, and commit after it). ``--in-flight`` messages are offered at the start
    and each acknowledgement offers the next one, as that many senders each
    waiting for its ack would (offering all 100,000 at once would instead
    measure a backlog of 100,000). Acknowledgements come a batch at a time,
    through the store's ``on_written`` hook, as a broker consumer hears of
    them (one ``basic.ack`` per batch), not through a Deferred per message
    (``append``): on this 2-core box that Deferred costs several
    microseconds a message, of the CPU the server needs. The clock stops
    when the last message's batch has committed.

``persist_worker``
    The same rows as ``PersistRequest`` (no seq yet) through
    :class:`~gochat.logic.persist.PersistWorker` into
    ``MysqlMessageStore.commit_batch``: the production path, where each batch
    is one transaction that looks up already-stored client ids, reads the last
    seq of conversations not yet cached, assigns seqs and inserts them with one
    multi-row ``INSERT``, and upserts the per-user index. One batch at a time
    (each batch's seqs depend on the one before). It stores
    exactly the same rows. Fed the same way, through ``PersistWorker.put`` and
    ``on_committed``, as the broker's persist consumer feeds it.

The table is emptied before each path, so all start from the same state, and
after each path the stored rows are checked (count, msg_id and seq sums, each
conversation starting at seq 1). rows/s of the paths are comparable although the row counts differ: the
naive path is bound by one durable commit per row (``fsync`` with
``innodb_flush_log_at_trx_commit=1``), so its rate is flat in the number of
rows, and 3,000 rows keep it to about a second. Wall-clock time of each path
is reported, with the process CPU time over the same interval.

``--ceilings`` adds what the same rows reach without the writer, each from
plain PyMySQL connections, no Twisted, one transaction per ``--batch`` rows:
the server alone (``server_one_connection``: the statements built before the
clock starts, sent one after another; ``server_two_connections``: the same
statements from two connections at once, commits in no particular order), and
a synchronous client that builds them as it goes (``client_pymysql``:
PyMySQL's ``executemany``; ``client_literals``: ``execute_literal_rows``;
``client_prepared``: ``execute_rows``, which sends each batch after the
second to a prepared statement, :mod:`gochat.logic.mysql_prepared`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import pymysql  # noqa: E402
from twisted.internet.defer import Deferred, gatherResults  # noqa: E402

from gochat.logic import migrate  # noqa: E402
from gochat.logic.batch_writer import BatchPolicy  # noqa: E402
from gochat.logic.mysql_store import (  # noqa: E402
    _INSERT_MESSAGES,
    MESSAGE_ROW,
    MysqlMessageStore,
    MysqlSettings,
    SqlLiterals,
    _configure_session,
    _message_row,
    connect_pool,
    connection_arguments,
    execute_literal_rows,
    execute_rows,
)
from gochat.logic.persist import PersistWorker  # noqa: E402
from gochat.model import PersistRequest, StoredMessage  # noqa: E402

GOAL_RATIO = 50.0
CONVERSATIONS = 1000
_WORDS: tuple[str, ...] = ("hi", "ok", "yes", "no", "lunch", "later", "meeting", "tomorrow", "thanks", "see", "you")
_WORDS += ("at", "the", "station", "\N{THUMBS UP SIGN}", "\N{GRINNING FACE}", "ça", "déjà", "vu", "\u4f60\u597d")


def make_rows(count: int, seed: int) -> list[StoredMessage]:
    """*count* messages over :data:`CONVERSATIONS` conversations, each with gap-free seqs from 1."""
    rng = random.Random(seed)
    users = rng.sample(range(1, 100 * CONVERSATIONS), 2 * CONVERSATIONS)
    pairs = [sorted(users[2 * i : 2 * i + 2]) for i in range(CONVERSATIONS)]
    next_seq: dict[str, int] = {}
    rows = []
    base_ms = 1_760_000_000_000
    for index in range(count):
        low, high = pairs[rng.randrange(CONVERSATIONS)]
        sender = rng.choice((low, high))
        conv = f"d:{low}:{high}"
        seq = next_seq.get(conv, 0) + 1
        next_seq[conv] = seq
        body_words: list[str] = []
        target = rng.randrange(40, 161)
        while sum(len(w) + 1 for w in body_words) < target:
            body_words.append(rng.choice(_WORDS))
        rows.append(
            StoredMessage(
                msg_id=(index + 1) << 22,
                conv=conv,
                seq=seq,
                sender_id=sender,
                sender=f"user{sender}",
                client_msg_id=uuid.UUID(int=rng.getrandbits(128), version=4).hex,
                body=" ".join(body_words)[:target],
                ts=base_ms + index,
            )
        )
    return rows


def memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def machine(server: dict[str, Any]) -> dict[str, Any]:
    import twisted

    return {
        "cpu_count": os.cpu_count(),
        "memory_bytes": memory_bytes(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "twisted": twisted.__version__,
        "pymysql": ".".join(str(part) for part in pymysql.VERSION[:3]),
        "database": server,
    }


def server_info(cursor: Any) -> dict[str, Any]:
    cursor.execute(
        "SELECT VERSION(), @@innodb_flush_log_at_trx_commit, @@sync_binlog, @@log_bin, @@innodb_buffer_pool_size"
    )
    version, flush_at_commit, sync_binlog, log_bin, buffer_pool = cursor.fetchone()
    return {
        "version": version,
        "innodb_flush_log_at_trx_commit": int(flush_at_commit),
        "sync_binlog": int(sync_binlog),
        "log_bin": bool(log_bin),
        "innodb_buffer_pool_size": int(buffer_pool),
    }


def log(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def figures(rows: int, wall: float, cpu: float) -> dict[str, Any]:
    return {
        "rows": rows,
        "seconds": round(wall, 4),
        "cpu_seconds": round(cpu, 4),
        "rows_per_s": round(rows / wall, 1),
    }


async def open_connections(pool: Any, count: int) -> None:
    """Have *count* of *pool*'s threads open their connection now, before any clock starts.

    Each interaction waits at a barrier until all *count* are running, so they
    run on *count* threads at once and each opens its own connection (PyMySQL
    builds an SSL context for each, about 0.1 s of CPU). Otherwise the
    batched path's second connection, opened when its first overlapping batch
    starts, would be timed.
    """
    barrier = threading.Barrier(count)

    def hold(cursor: Any) -> None:
        barrier.wait(timeout=30)
        cursor.execute("SELECT 1")
        cursor.fetchall()

    await gatherResults([pool.runInteraction(hold) for _ in range(count)])


def check_stored(cursor: Any, rows: list[StoredMessage], path: str) -> None:
    """Exit unless exactly *rows* are stored: their number, msg_ids and seqs (sums), each conversation gap-free."""
    cursor.execute("SELECT COUNT(*), SUM(msg_id), SUM(seq), COUNT(DISTINCT conv), SUM(seq = 1) FROM messages")
    found = tuple(int(value or 0) for value in cursor.fetchone())
    convs = {row.conv for row in rows}
    expected = (len(rows), sum(r.msg_id for r in rows), sum(r.seq for r in rows), len(convs), len(convs))
    if found != expected:
        raise SystemExit(f"{path}: stored (count, sum msg_id, sum seq, convs, seq 1s) {found}, expected {expected}")


async def run_naive(store: MysqlMessageStore, rows: list[StoredMessage], cursor: Any) -> dict[str, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    for row in rows:
        await store.insert_batch([row])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    check_stored(cursor, rows, "naive")
    return figures(len(rows), wall, cpu)


class BatchLoop:
    """A closed loop of *count* items, as senders each waiting for its ack make: ``put`` queues item *index*;
    :meth:`run` offers ``in_flight`` of them, and :meth:`committed`, the writer's ``on_written`` (or the persist
    worker's ``on_committed``), called once per committed batch, offers one new item for each of the batch's."""

    def __init__(self, count: int) -> None:
        self.put: Callable[[int], None] = lambda _index: None
        self.count = count
        self.next_index = 0
        self.remaining = count
        self.done: Deferred[None] = Deferred()

    def offer(self, how_many: int) -> None:
        end = min(self.next_index + how_many, self.count)
        for index in range(self.next_index, end):
            self.put(index)
        self.next_index = end

    def committed(self, items: Sequence[object]) -> None:
        self.remaining -= len(items)
        if self.remaining == 0:
            self.done.callback(None)
        self.offer(len(items))

    async def run(self, in_flight: int) -> tuple[float, float]:
        """Wall and CPU seconds from the first offer to the last commit."""
        wall, cpu = time.perf_counter(), time.process_time()
        self.offer(in_flight)
        await self.done
        return time.perf_counter() - wall, time.process_time() - cpu


async def run_batched(
    pool: Any, reactor: Any, policy: BatchPolicy, overlap: int, rows: list[StoredMessage], in_flight: int, cursor: Any
) -> dict[str, Any]:
    loop = BatchLoop(len(rows))
    store = MysqlMessageStore(pool, reactor, policy, overlap=overlap, on_written=loop.committed)
    loop.put = lambda index: store.put(rows[index])
    wall, cpu = await loop.run(in_flight)
    check_stored(cursor, rows, "batched")
    result = figures(len(rows), wall, cpu)
    result["batches"] = store.writer.batches_written
    result["write_failures"] = store.writer.write_failures
    return result


def persist_request(row: StoredMessage) -> PersistRequest:
    """*row* before it has a seq, as the persist worker receives it."""
    participants = tuple(int(part) for part in row.conv.split(":")[1:])
    return PersistRequest(
        row.msg_id, row.conv, row.sender_id, row.sender, row.client_msg_id, row.body, row.ts, participants, "gw", "s"
    )


async def run_persist_worker(
    store: MysqlMessageStore, rows: list[StoredMessage], policy: BatchPolicy, in_flight: int, reactor: Any, cursor: Any
) -> dict[str, Any]:
    requests = [persist_request(row) for row in rows]
    loop = BatchLoop(len(requests))
    worker: PersistWorker[None] = PersistWorker(store, reactor, policy, loop.committed)
    loop.put = lambda index: worker.put(requests[index])
    wall, cpu = await loop.run(in_flight)
    check_stored(cursor, rows, "persist_worker")
    result = figures(len(rows), wall, cpu)
    result["batches"] = worker.writer.batches_written
    result["write_failures"] = worker.writer.write_failures
    return result


def run_ceilings(settings: MysqlSettings, rows: list[StoredMessage], batch: int, cursor: Any) -> dict[str, Any]:
    """The ceilings of ``--ceilings`` (see the module), each on an emptied table, each checked like the paths."""
    values = [_message_row(row) for row in rows]
    batches = [values[start : start + batch] for start in range(0, len(values), batch)]

    def connect() -> Any:
        connection = pymysql.connect(**connection_arguments(settings))
        _configure_session(connection)
        return connection

    def measure(name: str, connections: int, work: Callable[[Any, int], None]) -> dict[str, Any]:
        cursor.execute("TRUNCATE TABLE messages")
        opened = [connect() for _ in range(connections)]
        try:
            threads = [threading.Thread(target=work, args=(connection, k)) for k, connection in enumerate(opened)]
            wall, cpu = time.perf_counter(), time.process_time()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        finally:
            for connection in opened:
                connection.close()
        check_stored(cursor, rows, name)
        return figures(len(rows), wall, cpu)

    with connect() as connection:
        head = _INSERT_MESSAGES.encode(connection.encoding)
        literals = SqlLiterals(connection)
        statements = [head + b",".join(literals.rows(MESSAGE_ROW, part)) for part in batches]

    def prebuilt(connection: Any, k: int, step: int = 1) -> None:
        with connection.cursor() as own:
            for statement in statements[k::step]:
                own.execute(statement)
                connection.commit()

    def pymysql_executemany(connection: Any, _: int) -> None:
        query = _INSERT_MESSAGES + MESSAGE_ROW.placeholders
        with connection.cursor() as own:
            for part in batches:
                own.executemany(query, part)
                connection.commit()

    def each_batch_through(execute: Callable[..., int]) -> Callable[[Any, int], None]:
        """Work that inserts the batches one transaction each, each with *execute* (``execute_rows`` or another
        function of its signature)."""

        def work(connection: Any, _: int) -> None:
            with connection.cursor() as own:
                for part in batches:
                    execute(own, _INSERT_MESSAGES, MESSAGE_ROW, part)
                    connection.commit()

        return work

    return {
        "server_one_connection": measure("server_one_connection", 1, prebuilt),
        "server_two_connections": measure("server_two_connections", 2, lambda c, k: prebuilt(c, k, 2)),
        "client_pymysql": measure("client_pymysql", 1, pymysql_executemany),
        "client_literals": measure("client_literals", 1, each_batch_through(execute_literal_rows)),
        "client_prepared": measure("client_prepared", 1, each_batch_through(execute_rows)),
    }


async def bench(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    settings = MysqlSettings(
        host=args.host,
        port=args.port,
        user=args.user,
        password=args.password,
        database=f"gochat_bench_{uuid.uuid4().hex}",
    )
    admin_arguments = connection_arguments(settings)
    del admin_arguments["database"]
    admin = pymysql.connect(**admin_arguments)
    try:
        cursor = admin.cursor()
        server = server_info(cursor)
        migrate.create_database(cursor, settings.database)
        try:
            admin.select_db(settings.database)
            migrate.apply(cursor)
            admin.commit()
            log(args.quiet, f"generating {args.rows} rows")
            rows = make_rows(args.rows, args.seed)
            pool = connect_pool(settings, reactor)
            try:
                policy = BatchPolicy(max_batch=args.batch, max_delay=0.005)
                store = MysqlMessageStore(pool, reactor, policy, overlap=args.overlap)
                await open_connections(pool, max(args.overlap, 1))  # before the clocks start

                log(args.quiet, f"naive: {args.naive_rows} x (INSERT + COMMIT)")
                naive = await run_naive(store, rows[: args.naive_rows], cursor)
                cursor.execute("TRUNCATE TABLE messages")
                log(
                    args.quiet,
                    f"batched: {args.rows} rows through put, {args.batch} per batch, {args.overlap} in flight",
                )
                batched = await run_batched(pool, reactor, policy, args.overlap, rows, args.in_flight, cursor)
                cursor.execute("TRUNCATE TABLE messages")
                log(args.quiet, f"persist_worker: {args.rows} rows through commit_batch, {args.batch} per batch")
                persist = await run_persist_worker(store, rows, policy, args.in_flight, reactor, cursor)
            finally:
                pool.close()
            ceilings = None
            if args.ceilings:
                log(args.quiet, "ceilings: the server alone, and a synchronous client")
                ceilings = run_ceilings(settings, rows, args.batch, cursor)
        finally:
            cursor.execute(f"DROP DATABASE IF EXISTS `{settings.database}`")
    finally:
        admin.close()

    ratio = batched["rows_per_s"] / naive["rows_per_s"]
    persist_ratio = persist["rows_per_s"] / naive["rows_per_s"]
    result = {
        "benchmark": "MariaDB inserts: BatchWriter, one multi-row INSERT per batch, vs one INSERT+COMMIT per message",
        "command": ["python", "bench/db.py", *sys.argv[1:]],
        "machine": machine(server),
        "parameters": {
            "rows": args.rows,
            "naive_rows": args.naive_rows,
            "batch": args.batch,
            "overlap": args.overlap,
            "in_flight": args.in_flight,
            "max_delay_s": 0.005,
            "conversations": CONVERSATIONS,
            "seed": args.seed,
            "schema_version": migrate.SCHEMA_VERSION,
            "pool": {"min": settings.pool_min, "max": settings.pool_max},
        },
        "naive": naive,
        "batched": batched,
        "persist_worker": persist,
        "ratio_rows_per_s": round(ratio, 1),
        "ratio_persist_worker_rows_per_s": round(persist_ratio, 1),
        "goal": {"ratio_at_least": GOAL_RATIO, "met": ratio >= GOAL_RATIO},
    }
    if ceilings is not None:
        result["ceilings"] = ceilings
    return result


def print_summary(result: dict[str, Any]) -> None:
    server = result["machine"]["database"]
    print(f"MariaDB {server['version']}, {result['machine']['cpu_count']} cores, Python {result['machine']['python']}")
    for path in ("naive", "batched", "persist_worker"):
        r = result[path]
        print(f"{path:14} {r['rows']:>8} rows in {r['seconds']:8.3f} s  {r['rows_per_s']:>10,.0f} rows/s")
    goal = result["goal"]
    verdict = "met" if goal["met"] else "NOT met"
    goal_text = f"goal >= {goal['ratio_at_least']:.0f}x: {verdict}"
    print(f"ratio batched/naive        {result['ratio_rows_per_s']:.1f}x ({goal_text})")
    print(f"ratio persist_worker/naive {result['ratio_persist_worker_rows_per_s']:.1f}x")
    for name, ceiling in result.get("ceilings", {}).items():
        print(f"ceiling {name:24} {ceiling['rows_per_s']:>10,.0f} rows/s")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--output", type=Path, help="also write the JSON object to this file")
    parser.add_argument("--rows", type=int, default=100_000, help="rows for the batched path (default 100,000)")
    parser.add_argument("--naive-rows", type=int, default=3_000, help="rows for the naive path (default 3,000)")
    parser.add_argument("--batch", type=int, default=500, help="BatchWriter max_batch (default 500)")
    parser.add_argument(
        "--overlap", type=int, default=3, help="batched path: batches in flight (default 3; the store: 1)"
    )
    parser.add_argument("--ceilings", action="store_true", help="also measure the server alone and a bare client")
    parser.add_argument(
        "--in-flight", type=int, default=2_000, help="batched path: messages offered and not yet committed (2,000)"
    )
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3306)
    parser.add_argument("--user", default="root")
    parser.add_argument("--password", default=os.environ.get("MYSQL_PWD", ""), help="default: $MYSQL_PWD")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if min(args.rows, args.batch, args.in_flight, args.overlap) < 1 or not 1 <= args.naive_rows <= args.rows:
        parser.error("--rows, --batch, --overlap and --in-flight must be positive, --naive-rows within 1..--rows")
    return args


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if args.output is not None:
        args.output.write_text(text + "\n", encoding="utf-8")
    if args.json:
        print(text)
    else:
        print_summary(result)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse *argv*, run the benchmark on a real reactor, report; exits (``react`` does)."""
    from twisted.internet.task import react

    args = parse_args(argv)

    async def run(reactor: Any) -> None:
        report(await bench(reactor, args), args)

    react(lambda reactor: Deferred.fromCoroutine(run(reactor)))


if __name__ == "__main__":
    main()
