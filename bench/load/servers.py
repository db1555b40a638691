"""The servers a load run starts itself, and what ``/proc`` says about them.

- **embedded**: one ``twistd gochat-gateway`` running the logic role in the
  same process on SQLite (``--data-dir`` in the run's directory);
- **production**: ``twistd gochat-logic`` on MariaDB, RabbitMQ and Redis (a
  database ``gochat_bench_<id>`` made with ``python -m gochat.logic.migrate``,
  a persist queue ``bench.<id>.persist``, Redis keys under ``bench.<id>:``) and
  ``twistd gochat-gateway --logic ... --broker ...`` taking its deliveries
  from its own queue, as an operator runs them.

Everything listens on 127.0.0.1 on ports the kernel picks (read back from the
processes' logs), and :meth:`Deployment.stop` removes what the run made
(unless asked to keep it). The processes run with ``PYTHONPATH`` set to
``--server-path`` when given, so a clean checkout can be measured while the
work tree is being edited.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pymysql

HOST = "127.0.0.1"
MYSQL_PORT = 3306
REDIS_PORT = 6379
AMQP_PORT = 5672
BROKER_URL = f"amqp://guest:guest@{HOST}:{AMQP_PORT}/"
GATEWAY_LISTENING = re.compile(r"Site starting on (\d+)")
LOGIC_LISTENING = re.compile(r"logic gRPC listening on \S+ \(port (\d+)\)")
LOGIC_MYSQL = re.compile(r"MySQL store ready")
LOGIC_RABBITMQ = re.compile(r"connected to RabbitMQ")
START_TIMEOUT = 60.0
#: How long production mode waits for MariaDB, RabbitMQ and Redis to accept connections.
SERVICE_WAIT = 120.0
STOP_TIMEOUT = 60.0
#: Lines kept in memory per process (the whole output goes to its log file).
KEPT_LINES = 2000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def log(message: str) -> None:
    """Progress on stderr (stdout is for the result)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# /proc.


def process_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of *pid* (its threads included), or ``None`` if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # Fields after the command name start at field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_rss_bytes(pid: int) -> int | None:
    """Resident set size of *pid* in bytes, or ``None`` if it is gone."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


def open_files(pid: int) -> int | None:
    """How many file descriptors *pid* has open, or ``None``."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def open_files_limit(pid: int) -> tuple[int, int] | None:
    """The (soft, hard) open-files limit of *pid*, from ``/proc/PID/limits``."""
    try:
        with open(f"/proc/{pid}/limits", encoding="ascii") as limits:
            for line in limits:
                if line.startswith("Max open files"):
                    soft, hard = line.split()[3:5]
                    return int(soft), int(hard)
    except (OSError, ValueError):
        return None
    return None


def find_pids(command_name: str) -> list[int]:
    """Pids whose ``/proc/PID/comm`` is *command_name* (the local MariaDB, RabbitMQ or Redis)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/comm", encoding="utf-8") as comm:
                if comm.read().strip() == command_name:
                    pids.append(int(entry))
    return pids


#: The backing services whose CPU a production run reports, by ``/proc/PID/comm``.
SERVICE_COMMANDS = {"mariadb": "mariadbd", "rabbitmq": "beam.smp", "redis": "redis-server"}


def raise_open_files_limit() -> tuple[int, int]:
    """Raise this process's soft open-files limit to the hard one (children inherit it); (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


# Processes.


def twistd() -> str:
    return os.path.join(os.path.dirname(sys.executable), "twistd")


class ServerProcess:
    """A ``twistd -n`` child of this run: its output teed to a log file and searched for lines."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self.tracebacks = 0
        self._seen = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
            limit=2**20,
        )
        self._reader = asyncio.create_task(self._read(open(self.log_path, "a", encoding="utf-8")))  # noqa: SIM115

    async def _read(self, log_file: TextIO) -> None:
        assert self.process is not None and self.process.stdout is not None
        with log_file:
            while raw := await self.process.stdout.readline():
                line = raw.decode("utf-8", "replace").rstrip("\n")
                log_file.write(line + "\n")
                if "Traceback" in line:
                    self.tracebacks += 1
                if len(self.lines) < KEPT_LINES:
                    self.lines.append(line)
                self._seen.set()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def wait_for(self, pattern: re.Pattern[str], timeout: float = START_TIMEOUT) -> re.Match[str]:
        """The first output line matching *pattern*; fails if the process exits or *timeout* passes first."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for line in self.lines[checked:]:
                if match := pattern.search(line):
                    return match
            checked = len(self.lines)
            if not self.running and self._reader is not None and self._reader.done():
                raise RuntimeError(f"{self.name} exited before logging {pattern.pattern!r}; see {self.log_path}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name} did not log {pattern.pattern!r} in {timeout:g}s; see {self.log_path}")
            self._seen.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._seen.wait(), min(remaining, 0.5))

    async def terminate(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM (the server drains), SIGKILL after *timeout*; the exit status."""
        if self.process is None:
            return None
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                log(f"{self.name} did not exit {timeout:g}s after SIGTERM; killing it")
                with contextlib.suppress(ProcessLookupError):
                    self.process.send_signal(signal.SIGKILL)
                await self.process.wait()
        if self._reader is not None:
            await self._reader
        return self.process.returncode


async def run_command(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run *argv* bounded by *timeout*; ``(exit status, output)``, -1 if it could not run or was killed."""
    executable = shutil.which(argv[0], path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"])) or argv[0]
    try:
        process = await asyncio.create_subprocess_exec(
            executable,
            *argv[1:],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
    except OSError as e:
        return -1, str(e)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        return -1, f"{argv[0]} timed out after {timeout:g}s"
    return process.returncode or 0, out.decode("utf-8", "replace")


def port_open(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


async def wait_for_port(name: str, port: int, timeout: float) -> None:
    """Wait until *name* accepts connections on *port* (another session's test may be restarting it)."""
    deadline = time.monotonic() + timeout
    waited = False
    while not await asyncio.to_thread(port_open, port):
        if time.monotonic() >= deadline:
            raise RuntimeError(f"production mode needs {name} on {HOST}:{port}; nothing answered for {timeout:g}s")
        if not waited:
            log(f"waiting up to {timeout:g}s for {name} on {HOST}:{port}")
            waited = True
        await asyncio.sleep(1.0)


def mysql_connect(database: str | None = None) -> Any:
    return pymysql.connect(
        host=HOST,
        port=MYSQL_PORT,
        user="root",
        password="",
        database=database,
        charset="utf8mb4",
        connect_timeout=5,
        read_timeout=300,
        autocommit=True,
    )


def redis_command(*args: str, timeout: float = 10.0) -> bytes:
    """One Redis command over a fresh connection; the raw reply (first line and what follows)."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args
    )
    with socket.create_connection((HOST, REDIS_PORT), timeout=timeout) as connection:
        connection.sendall(payload)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            reply += chunk
            if reply.startswith(b"$"):
                size = int(reply[1 : reply.index(b"\r\n")])
                header = reply.index(b"\r\n") + 2
                while len(reply) < header + size + 2:
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
                break
    return reply


#: Deletes every key matching ARGV[1] in one step; how many there were.
DELETE_KEYS_SCRIPT = (
    "local n = 0 for _, key in ipairs(redis.call('KEYS', ARGV[1])) do n = n + redis.call('DEL', key) end return n"
)


def redis_glob(prefix: str) -> str:
    """The ``KEYS`` pattern matching every key that starts with *prefix*."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"


# Deployments.


@dataclass
class Deployment:
    """The gochat processes of one run, and the resources made for it."""

    mode: str
    run_id: str
    workdir: Path
    env: dict[str, str]
    frames_per_second: float
    frame_burst: int
    idle_timeout: float | None = None
    keep: bool = False
    gateway: ServerProcess | None = None
    logic: ServerProcess | None = None
    http_port: int = 0
    database: str | None = None
    database_created: bool = False
    persist_queue: str | None = None
    redis_prefix: str | None = None
    gateway_id: str = ""
    logic_port: int = 0
    exits: dict[str, int | None] = field(default_factory=dict)

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.http_port}/ws"

    @property
    def http_base(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def sqlite_path(self) -> Path:
        return self.workdir / "gateway" / "gochat.sqlite"

    def processes(self) -> dict[str, ServerProcess]:
        return {p.name: p for p in (self.gateway, self.logic) if p is not None}

    async def start(self) -> None:
        self.gateway_id = f"bench-{self.run_id}"
        if self.mode == "production":
            await self._start_logic()
        argv = [
            twistd(),
            "-n",
            "--pidfile=",
            "gochat-gateway",
            "--listen",
            f"tcp:0:interface={HOST}",
            "--gateway-id",
            self.gateway_id,
            "--data-dir",
            str(self.workdir / "gateway"),
            "--frames-per-second",
            f"{self.frames_per_second:g}",
            "--frame-burst",
            str(self.frame_burst),
        ]
        if self.idle_timeout is not None:
            argv += ["--idle-timeout", f"{self.idle_timeout:g}"]
        if self.logic is not None:
            argv += ["--logic", f"{HOST}:{self.logic_port}", "--broker", BROKER_URL]
        self.gateway = ServerProcess("gateway", argv, self.workdir / "gateway.log", self.env)
        await self.gateway.start()
        match = await self.gateway.wait_for(GATEWAY_LISTENING)
        self.http_port = int(match.group(1))
        if self.mode == "embedded":
            await self.gateway.wait_for(re.compile(r"SQLite store ready"))
        else:
            await self.gateway.wait_for(LOGIC_RABBITMQ)

    async def _start_logic(self) -> None:
        for name, port in (("MariaDB", MYSQL_PORT), ("RabbitMQ", AMQP_PORT), ("Redis", REDIS_PORT)):
            await wait_for_port(name, port, SERVICE_WAIT)
        self.database = f"gochat_bench_{self.run_id}"
        self.persist_queue = f"bench.{self.run_id}.persist"
        self.redis_prefix = f"bench.{self.run_id}:"
        self.database_created = True
        status, out = await run_command(
            [sys.executable, "-m", "gochat.logic.migrate", "--host", HOST, "--database", self.database], 120, self.env
        )
        if status != 0:
            raise RuntimeError(f"migrate failed ({status}): {out}")
        argv = [
            twistd(),
            "-n",
            "--pidfile=",
            "gochat-logic",
            "--grpc-listen",
            f"{HOST}:0",
            "--database",
            f"mysql://root@{HOST}:{MYSQL_PORT}/{self.database}",
            "--broker",
            BROKER_URL,
            "--persist-queue",
            self.persist_queue,
            "--redis",
            f"redis://{HOST}:{REDIS_PORT}/0",
            "--redis-key-prefix",
            self.redis_prefix,
            "--data-dir",
            str(self.workdir / "logic"),
        ]
        self.logic = ServerProcess("logic", argv, self.workdir / "logic.log", self.env)
        await self.logic.start()
        self.logic_port = int((await self.logic.wait_for(LOGIC_LISTENING)).group(1))
        await self.logic.wait_for(LOGIC_MYSQL)
        await self.logic.wait_for(LOGIC_RABBITMQ)

    async def stop(self) -> None:
        """SIGTERM the gateway, then logic (each drains); record how they exited."""
        for process in (self.gateway, self.logic):
            if process is not None and process.process is not None:
                self.exits[process.name] = await process.terminate()

    async def clean_up(self) -> None:
        """Drop the database, delete the queues and the Redis keys of the run (unless kept)."""
        if self.keep:
            log(f"kept: {self.workdir}, database {self.database}, queue {self.persist_queue}")
            return
        if self.database_created and self.database is not None:
            try:
                await asyncio.to_thread(_drop_database, self.database)
            except pymysql.err.MySQLError as e:
                log(f"could not drop database {self.database}: {e}")
        if self.mode == "production":
            for queue in (self.persist_queue, f"gochat.gateway.{self.gateway_id}"):
                if queue is None:
                    continue
                status, out = await run_command(["rabbitmqctl", "-q", "delete_queue", queue], 60)
                if status != 0 and "not found" not in out.lower().replace("_", " "):
                    log(f"could not delete queue {queue}: {out.strip()}")
            if self.redis_prefix is not None:
                try:
                    redis_command("EVAL", DELETE_KEYS_SCRIPT, "0", redis_glob(self.redis_prefix))
                except OSError as e:
                    log(f"could not delete Redis keys {self.redis_prefix}*: {e}")
        shutil.rmtree(self.workdir, ignore_errors=True)


def _drop_database(name: str) -> None:
    connection = mysql_connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        connection.close()
