"""Chaos run: acked messages survive ``kill -9`` of logic, a RabbitMQ restart and a MariaDB outage.

Run from the repository root (MariaDB on 127.0.0.1:3306 as root, RabbitMQ on
127.0.0.1:5672 as guest, both restartable by this user)::

    python bench/chaos.py --json                                    # 60 s, 20 pairs, logic killed 3 times
    python bench/chaos.py --json --duration 120 --logic-kills 5 --restart-rabbitmq --stop-mariadb 10
    python bench/chaos.py --json --duration 60 --logic-kills 6 --restart-rabbitmq --stop-mariadb 10 --overlap
    python bench/chaos.py --json --seed 7 --output bench/results/chaos.json

What it does
------------
1. Creates a throwaway database ``gochat_chaos_<hex>`` with ``python -m
   gochat.logic.migrate`` and a persist queue ``chaos.<hex>.persist`` of its
   own, picks free ports on 127.0.0.1, and starts ``twistd gochat-logic``
   (MariaDB + RabbitMQ) and ``twistd gochat-gateway --logic ... --broker
   ...`` (taking its deliveries from its own RabbitMQ queue, as production
   does), each logging to a file in a temporary directory.
2. Registers ``2 * --pairs`` users over the HTTP API and opens one WebSocket
   per user with the ``websockets`` library (an implementation independent of
   the server's Autobahn). In each pair both users send to each other, so
   every conversation's seq is contended by two senders.
3. For ``--duration`` seconds every user sends at a steady rate
   (``--rate`` messages per second in total), at most ``--in-flight``
   unacknowledged messages each. Every message has a unique
   ``client_msg_id``; until it is acked, the SAME id (same ``to``, same
   ``body``) is sent again after an ``error`` frame, after ``--ack-timeout``
   seconds without a reply, or after a disconnect (the client reconnects and
   authenticates again, with backoff). Every ack is recorded, late ones
   included.
4. Meanwhile, at seeded random moments spread over the run, one at a time:
   ``--logic-kills`` times SIGKILL of the logic process, restarted at once on
   the same gRPC port; with ``--restart-rabbitmq``, ``rabbitmqctl stop`` then
   ``rabbitmq-server -detached`` (up again when 5672 accepts and
   ``rabbitmqctl await_startup`` succeeds); with ``--stop-mariadb N``,
   ``mysqladmin shutdown``, N seconds down, then ``start-stop-daemon`` starts
   it again (up when it answers a query). The events come one at a time (a
   late one waits for the one before); with ``--overlap`` the kills keep
   their moments and may fall while RabbitMQ or MariaDB is down.
5. After the duration no new message is sent; pending ones are retried for at
   most ``--drain-timeout`` seconds. The gateway and logic are stopped with
   SIGTERM, and MariaDB is read with pymysql:

   - ``lost_acked``: acked messages that are not stored, or stored with
     another ``msg_id``/``conv``/``seq`` than an ack said (every ack of a
     message is checked, retries' acks too);
   - ``duplicated``: rows beyond the first for one (sender, client_msg_id),
     or for one body (every body is unique);
   - ``gaps``: seqs missing from ``1..max`` in a conversation.

The JSON result has the counts (with the errors clients saw, by code, and
the latency from a message's first attempt to its ack), the chaos that
happened and when, new acks per second, the command, the machine and the
durations. The exit status is 0 only when ``lost_acked``,
``duplicated`` and ``gaps`` are 0 and at least one message was acked.

Pushes are counted (and checked against the database) but not asserted:
pushes are best effort under chaos (routes may die with a logic process
that keeps them in memory, a RabbitMQ restart drops the gateway's
non-durable delivery queue with what it held); clients recover by sync.

Whatever happens (an error, SIGINT, SIGTERM) the script stops the processes
it started, starts MariaDB and RabbitMQ again if it stopped them, and drops
its database and queues (unless ``--keep``). Everything is on 127.0.0.1 and
bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pymysql
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

HOST = "127.0.0.1"
MYSQL_PORT = 3306
AMQP_PORT = 5672
BROKER_URL = f"amqp://guest:guest@{HOST}:{AMQP_PORT}/"
PASSWORD = "chaos-password-1"
MARIADB_START = ["start-stop-daemon", "--start", "--oknodo", "--background", "--exec", "/usr/sbin/mariadbd"]
#: Errors after which a send is retried with the same client_msg_id; any other error code is a refusal.
RETRYABLE = frozenset({"unavailable", "shutting_down", "rate_limited", "internal"})
LOGIC_LISTENING = re.compile(r"logic gRPC listening on \S+ \(port (\d+)\)")
LOGIC_RABBITMQ = re.compile(r"connected to RabbitMQ")
LOGIC_MYSQL = re.compile(r"MySQL store ready")
GATEWAY_LISTENING = re.compile(r"Site starting on (\d+)")
#: Where the service commands are looked for: PATH, then the system directories a non-login PATH may lack.
SERVICE_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
SERVICE_TIMEOUT = 90.0
TRACEBACK_SAMPLES = 3
TRACEBACK_LINES = 16


def log(message: str) -> None:
    """Progress on stderr (stdout is for the result)."""
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# Ports and services.


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str, every: float = 0.2) -> None:
    """Poll *condition* until it is true; ``TimeoutError`` naming *what* after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if await condition():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"gave up after {timeout:g}s waiting for {what}")
        await asyncio.sleep(every)


async def command(argv: list[str], timeout: float) -> tuple[int, str]:
    """Run *argv* with no input, bounded by *timeout*; ``(exit status, output)``; -1 if it had to be killed.

    Its output goes to a pipe that is closed when it exits, never to ours: a
    daemon it starts must not hold our stdout open.
    """
    executable = shutil.which(argv[0], path=SERVICE_PATH) or argv[0]
    try:
        process = await asyncio.create_subprocess_exec(
            executable,
            *argv[1:],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
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
    assert process.returncode is not None
    return process.returncode, out.decode("utf-8", "replace")


def mysql_connect(database: str | None = None) -> Any:
    return pymysql.connect(
        host=HOST,
        port=MYSQL_PORT,
        user="root",
        password="",
        database=database,
        charset="utf8mb4",
        connect_timeout=2,
        read_timeout=30,
        autocommit=True,
    )


def mysql_answers() -> bool:
    try:
        connection = mysql_connect()
    except pymysql.err.MySQLError:
        return False
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return True
    except pymysql.err.MySQLError:
        return False
    finally:
        connection.close()


def mariadb_pid() -> int | None:
    """The server's pid, from its pid file (``@@pid_file``)."""
    try:
        connection = mysql_connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT @@pid_file")
                path = cursor.fetchone()[0]
        finally:
            connection.close()
        return int(Path(path).read_text().strip())
    except (pymysql.err.MySQLError, OSError, ValueError, TypeError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether *pid* runs (a zombie, exited but not reaped by its parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


async def rabbitmq_ready() -> bool:
    if not port_open(AMQP_PORT):
        return False
    status, _ = await command(["rabbitmqctl", "await_startup", "--timeout", "10"], 20)
    return status == 0


@dataclass
class Services:
    """MariaDB and RabbitMQ as this run left them: whatever it stopped, it starts again (:meth:`ensure_up`)."""

    mariadb_down: bool = False
    rabbitmq_down: bool = False

    async def stop_mariadb(self) -> None:
        pid = await asyncio.to_thread(mariadb_pid)
        self.mariadb_down = True
        status, out = await command(["mysqladmin", "-uroot", f"-h{HOST}", f"-P{MYSQL_PORT}", "shutdown"], 60)
        if status != 0:
            log(f"mysqladmin shutdown failed ({status}): {out.strip()}; sending SIGTERM to {pid}")
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        if pid is not None:
            await wait_until(_async(lambda: not pid_alive(pid)), 60, f"mariadbd {pid} to exit")
        await wait_until(_async(lambda: not port_open(MYSQL_PORT)), 30, "port 3306 to close")

    async def start_mariadb(self) -> None:
        status, out = await command(MARIADB_START, 30)
        if status != 0:
            log(f"start-stop-daemon failed ({status}): {out.strip()}")
        await wait_until(lambda: asyncio.to_thread(mysql_answers), SERVICE_TIMEOUT, "MariaDB to answer", every=0.25)
        self.mariadb_down = False

    async def stop_rabbitmq(self) -> None:
        self.rabbitmq_down = True
        status, out = await command(["rabbitmqctl", "stop"], 60)
        if status != 0:
            log(f"rabbitmqctl stop failed ({status}): {out.strip()}")
        await wait_until(_async(lambda: not port_open(AMQP_PORT)), 60, "port 5672 to close")

    async def start_rabbitmq(self) -> None:
        status, out = await command(["rabbitmq-server", "-detached"], 30)
        if status != 0:
            log(f"rabbitmq-server -detached failed ({status}): {out.strip()}")
        await wait_until(rabbitmq_ready, SERVICE_TIMEOUT, "RabbitMQ to start", every=0.5)
        self.rabbitmq_down = False

    async def ensure_up(self) -> list[str]:
        """Start again whatever this run stopped and is not back (cleanup); what could not be started."""
        problems: list[str] = []
        if self.mariadb_down or not await asyncio.to_thread(mysql_answers):
            log("starting MariaDB again")
            try:
                await self.start_mariadb()
            except Exception as e:
                problems.append(f"MariaDB: {e}")
        if self.rabbitmq_down or not port_open(AMQP_PORT):
            log("starting RabbitMQ again")
            try:
                await self.start_rabbitmq()
            except Exception as e:
                problems.append(f"RabbitMQ: {e}")
        return problems


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def run() -> bool:
        return check()

    return run


# The gochat processes.


class ManagedProcess:
    """A ``twistd -n`` child started by this run: its output teed to a log file, watched for lines."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self.tracebacks = 0
        #: The first tracebacks logged, each with the log line before it (for the result, without the logs).
        self.traceback_samples: list[list[str]] = []
        self._reader: asyncio.Task[None] | None = None
        self._log: TextIO | None = None
        self._seen = asyncio.Event()

    async def start(self) -> None:
        self._log = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115  # closed when the output ends
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            start_new_session=True,
        )
        self._reader = asyncio.create_task(self._read())

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None and self._log is not None
        previous = ""
        capturing: list[str] | None = None
        try:
            while raw := await self.process.stdout.readline():
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self._log.write(line + "\n")
                if capturing is not None and len(capturing) < TRACEBACK_LINES:
                    capturing.append(line)
                if "Traceback" in line:
                    self.tracebacks += 1
                    if len(self.traceback_samples) < TRACEBACK_SAMPLES:
                        capturing = [previous, line]
                        self.traceback_samples.append(capturing)
                if len(self.lines) < 10_000:
                    self.lines.append(line)
                previous = line
                self._seen.set()
        finally:
            self._log.close()

    async def wait_for(self, pattern: re.Pattern[str], timeout: float = START_TIMEOUT) -> re.Match[str]:
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
                raise TimeoutError(
                    f"{self.name} did not log {pattern.pattern!r} within {timeout:g}s; see {self.log_path}"
                )
            self._seen.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._seen.wait(), min(remaining, 0.5))

    async def kill(self) -> None:
        """SIGKILL and reap."""
        if self.process is None:
            return
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        if self._reader is not None:
            await self._reader

    async def terminate(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait up to *timeout*, then SIGKILL; the exit status."""
        if self.process is None:
            return None
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                log(f"{self.name} did not exit {timeout:g}s after SIGTERM; killing it")
        await self.kill()
        return self.process.returncode


def twistd() -> str:
    return os.path.join(os.path.dirname(sys.executable), "twistd")


# Clients.


class DisconnectedError(Exception):
    """The connection went while a reply was awaited."""


@dataclass
class Outgoing:
    """One message, from its first attempt to its ack."""

    cmid: str
    sender: str
    to: str
    body: str
    attempts: int = 0
    acks: list[dict[str, Any]] = field(default_factory=list)
    refused: str | None = None
    #: Loop time of the first attempt, and seconds from it to the first ack.
    created: float = 0.0
    latency: float | None = None


@dataclass
class Stats:
    attempts: int = 0
    unique: int = 0
    acked: int = 0
    late_acks: int = 0
    ack_conflicts: int = 0
    refused: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    auth_retries: int = 0
    pushes: int = 0
    #: When the run's sending started (loop time), and how many messages were first acked in each second since.
    started: float | None = None
    acks_per_second: list[int] = field(default_factory=list)

    def first_ack(self, now: float) -> None:
        self.acked += 1
        if self.started is None:
            return
        second = max(0, int(now - self.started))
        if second >= len(self.acks_per_second):
            self.acks_per_second.extend([0] * (second + 1 - len(self.acks_per_second)))
        self.acks_per_second[second] += 1

    def longest_stall(self) -> int:
        """The most consecutive seconds without a new ack, before the last ack."""
        longest = current = 0
        for n in self.acks_per_second:
            current = current + 1 if n == 0 else 0
            longest = max(longest, current)
        return longest


class ChatClient:
    """One user's WebSocket: keeps itself connected and authenticated, sends with retries, records acks and pushes."""

    def __init__(self, run: Run, username: str, user_id: int, token: str) -> None:
        self.run = run
        self.username = username
        self.user_id = user_id
        self.token = token
        self.ws: ClientConnection | None = None
        self.connected = asyncio.Event()
        self.stopping = False
        self.replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.sent: dict[str, Outgoing] = {}
        #: Pushes received: (conv, seq) -> msg_id strings seen.
        self.pushes: dict[tuple[str, int], set[str]] = defaultdict(set)
        self._auth_number = 0
        self._rng = random.Random()

    async def connection_loop(self) -> None:
        backoff = 0.1
        stats = self.run.stats
        while not self.stopping:
            try:
                ws = await connect(
                    self.run.ws_url,
                    open_timeout=5,
                    ping_interval=20,
                    ping_timeout=20,
                    close_timeout=2,
                    max_size=2**20,
                )
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as e:
                stats.connect_failures += 1
                stats.errors[f"connect:{type(e).__name__}"] += 1
                await asyncio.sleep(backoff * self._rng.uniform(0.5, 1.5))
                backoff = min(backoff * 2, 2.0)
                continue
            stats.connects += 1
            try:
                if await self._authenticate(ws):
                    backoff = 0.1
                    self.ws = ws
                    self.connected.set()
                    async for raw in ws:
                        self._dispatch(json.loads(raw))
            except (ConnectionClosed, TimeoutError, OSError, ValueError) as e:
                if not isinstance(e, ConnectionClosed):
                    stats.errors[f"connection:{type(e).__name__}"] += 1
            finally:
                self.connected.clear()
                self.ws = None
                for future in self.replies.values():
                    if not future.done():
                        future.set_exception(DisconnectedError())
                await ws.close()
            if not self.stopping:
                stats.disconnects += 1
                await asyncio.sleep(backoff * self._rng.uniform(0.5, 1.5))
                backoff = min(backoff * 2, 2.0)

    async def _authenticate(self, ws: ClientConnection) -> bool:
        """Send ``auth`` until ``auth_ok`` (``unavailable`` leaves the session open); False if it cannot."""
        for _ in range(15):
            self._auth_number += 1
            request_id = f"auth-{self._auth_number}"
            await ws.send(json.dumps({"v": 1, "type": "auth", "id": request_id, "body": {"token": self.token}}))
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if frame.get("id") == request_id:
                    break
                self._dispatch(frame)
            if frame["type"] == "auth_ok":
                return True
            code = frame["body"].get("code", "?")
            self.run.stats.errors[f"auth:{code}"] += 1
            if code not in RETRYABLE:
                return False
            self.run.stats.auth_retries += 1
            await asyncio.sleep(0.5)
        return False

    def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        body = frame.get("body") or {}
        if kind == "push":
            self.run.stats.pushes += 1
            self.pushes[(body["conv"], int(body["seq"]))].add(str(body["msg_id"]))
            return
        request_id = frame.get("id")
        future = self.replies.get(request_id) if request_id is not None else None
        if future is not None and not future.done():
            future.set_result(frame)
            return
        if kind == "ack":
            # The reply to an attempt we stopped waiting for: an ack all the same.
            message = self.sent.get(body.get("client_msg_id", ""))
            if message is not None:
                self.run.stats.late_acks += 1
                self._record_ack(message, body)
        elif kind == "error":
            self.run.stats.errors[body.get("code", "?")] += 1

    def _record_ack(self, message: Outgoing, body: dict[str, Any]) -> None:
        ack = {"msg_id": str(body["msg_id"]), "conv": body["conv"], "seq": int(body["seq"])}
        if message.acks and ack != message.acks[0]:
            self.run.stats.ack_conflicts += 1
        if not message.acks:
            now = asyncio.get_running_loop().time()
            message.latency = now - message.created
            self.run.stats.first_ack(now)
        message.acks.append(ack)

    async def deliver(self, message: Outgoing) -> None:
        """Send *message* until it is acked (or refused, or the run is over)."""
        stats = self.run.stats
        delay = 0.1
        loop = asyncio.get_running_loop()
        while not message.acks and not self.run.hard_stop.is_set():
            await self.connected.wait()
            ws = self.ws
            if ws is None:
                continue
            message.attempts += 1
            stats.attempts += 1
            request_id = f"{message.cmid}.{message.attempts}"
            future: asyncio.Future[dict[str, Any]] = loop.create_future()
            self.replies[request_id] = future
            frame = {
                "v": 1,
                "type": "send",
                "id": request_id,
                "body": {"client_msg_id": message.cmid, "to": message.to, "body": message.body},
            }
            try:
                await ws.send(json.dumps(frame))
                reply = await asyncio.wait_for(future, self.run.options.ack_timeout)
            except TimeoutError:
                stats.errors["timeout"] += 1
            except (ConnectionClosed, DisconnectedError):
                stats.errors["disconnected"] += 1
            else:
                if reply["type"] == "ack":
                    self._record_ack(message, reply["body"])
                    return
                code = reply["body"].get("code", "?")
                stats.errors[code] += 1
                if code not in RETRYABLE:
                    message.refused = code
                    stats.refused += 1
                    return
            finally:
                del self.replies[request_id]
            if message.acks:  # a late ack arrived meanwhile
                return
            await asyncio.sleep(delay * self._rng.uniform(0.5, 1.5))
            delay = min(delay * 2, 2.0)

    async def sender_loop(self, partner: str, rate: float, in_flight: int, deadline: float) -> None:
        """Offer messages to *partner* at *rate* per second until *deadline*, at most *in_flight* unacked."""
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(in_flight)
        interval = 1.0 / rate
        next_at = loop.time() + self._rng.uniform(0, interval)
        number = 0
        while True:
            await slots.acquire()
            now = loop.time()
            if next_at > now:
                await asyncio.sleep(next_at - now)
            if loop.time() >= deadline:
                slots.release()
                break
            next_at = max(next_at + interval, loop.time() - 1.0)
            number += 1
            cmid = f"{self.username}-{number}-{uuid.uuid4().hex[:8]}"
            message = Outgoing(
                cmid,
                self.username,
                partner,
                f"chaos {self.run.run_id} {cmid} from {self.username}",
                created=loop.time(),
            )
            self.sent[cmid] = message
            self.run.stats.unique += 1
            task = asyncio.create_task(self.deliver(message))
            task.add_done_callback(lambda _: slots.release())
            self.run.pending.add(task)
            task.add_done_callback(self.run.pending.discard)

    async def close(self) -> None:
        self.stopping = True
        ws = self.ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 3)


# HTTP accounts.


def post_json(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode("utf-8"), headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def account(base: str, username: str) -> tuple[int, str]:
    """Register (or find registered) *username* and log in; ``(user_id, token)``. Retries while logic is busy."""
    for attempt in range(20):
        status, body = post_json(f"{base}/api/register", {"username": username, "password": PASSWORD})
        if status in (201, 409):
            break
        time.sleep(0.25 * (attempt + 1))
    else:
        raise RuntimeError(f"cannot register {username}: {status} {body}")
    for attempt in range(20):
        status, body = post_json(f"{base}/api/login", {"username": username, "password": PASSWORD})
        if status == 200:
            return int(body["user_id"]), str(body["token"])
        time.sleep(0.25 * (attempt + 1))
    raise RuntimeError(f"cannot log {username} in: {status} {body}")


# The run.


@dataclass
class ChaosEvent:
    kind: str
    at: float
    started: float | None = None
    took: float | None = None
    error: str | None = None


class Run:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.seed: int = options.seed if options.seed is not None else random.SystemRandom().randrange(2**31)
        self.rng = random.Random(self.seed)
        self.run_id = uuid.uuid4().hex[:12]
        self.database = f"gochat_chaos_{self.run_id}"
        self.queue = f"chaos.{self.run_id}.persist"
        self.gateway_id = f"chaos-{self.run_id}"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"gochat-chaos-{self.run_id}-"))
        self.grpc_port = free_port()
        self.http_port = free_port()
        while self.http_port == self.grpc_port:
            self.http_port = free_port()
        self.ws_url = f"ws://{HOST}:{self.http_port}/ws"
        self.stats = Stats()
        self.services = Services()
        self.events: list[ChaosEvent] = []
        self.logic: ManagedProcess | None = None
        self.logic_generation = 0
        self.logic_tracebacks = 0
        self.traceback_samples: dict[str, list[list[str]]] = {}
        self.gateway: ManagedProcess | None = None
        self.clients: list[ChatClient] = []
        self.pending: set[asyncio.Task[None]] = set()
        self.hard_stop = asyncio.Event()
        self.durations: dict[str, float] = {}
        self.database_created = False

    # Processes.

    def logic_argv(self) -> list[str]:
        return [
            twistd(),
            "-n",
            "--pidfile=",
            "gochat-logic",
            "--grpc-listen",
            f"{HOST}:{self.grpc_port}",
            "--database",
            f"mysql://root@{HOST}:{MYSQL_PORT}/{self.database}",
            "--broker",
            BROKER_URL,
            "--persist-queue",
            self.queue,
            "--data-dir",
            str(self.workdir / "logic"),
        ]

    def note_tracebacks(self, process: ManagedProcess) -> None:
        self.logic_tracebacks += process.tracebacks
        if process.traceback_samples:
            self.traceback_samples[process.name] = process.traceback_samples

    async def start_logic(self, wait_for_backends: bool) -> None:
        self.logic_generation += 1
        self.logic = ManagedProcess(
            f"logic#{self.logic_generation}", self.logic_argv(), self.workdir / f"logic-{self.logic_generation}.log"
        )
        await self.logic.start()
        await self.logic.wait_for(LOGIC_LISTENING)
        if wait_for_backends:
            await self.logic.wait_for(LOGIC_MYSQL)
            await self.logic.wait_for(LOGIC_RABBITMQ)

    async def start_gateway(self) -> None:
        argv = [
            twistd(),
            "-n",
            "--pidfile=",
            "gochat-gateway",
            "--logic",
            f"{HOST}:{self.grpc_port}",
            "--gateway-id",
            self.gateway_id,
            "--broker",
            BROKER_URL,
            "--listen",
            f"tcp:{self.http_port}:interface={HOST}",
            "--data-dir",
            str(self.workdir / "gateway"),
            "--frames-per-second",
            "1000",
            "--frame-burst",
            "2000",
        ]
        self.gateway = ManagedProcess("gateway", argv, self.workdir / "gateway.log")
        await self.gateway.start()
        await self.gateway.wait_for(GATEWAY_LISTENING)

    async def migrate(self) -> None:
        status, out = await command(
            [sys.executable, "-m", "gochat.logic.migrate", "--host", HOST, "--database", self.database], 60
        )
        self.database_created = True
        if status != 0:
            raise RuntimeError(f"migrate failed ({status}): {out}")

    # Chaos.

    def schedule(self) -> list[ChaosEvent]:
        """The chaos at seeded moments: one event per equal slot of the run's middle 80%, in seeded order.

        With ``--overlap`` the logic kills get the slots and the service
        outages random moments of their own, so a kill may fall while
        RabbitMQ or MariaDB is down.
        """
        if self.options.overlap:
            span = 0.8 * self.options.duration
            kills = self.options.logic_kills
            events = [
                ChaosEvent("kill-logic", round(0.1 * self.options.duration + (i + self.rng.random()) * span / kills, 3))
                for i in range(kills)
            ]
            if self.options.restart_rabbitmq:
                events.append(
                    ChaosEvent("restart-rabbitmq", round(self.rng.uniform(0.1, 0.6) * self.options.duration, 3))
                )
            if self.options.stop_mariadb > 0:
                events.append(ChaosEvent("stop-mariadb", round(self.rng.uniform(0.1, 0.6) * self.options.duration, 3)))
            return sorted(events, key=lambda e: e.at)
        kinds = ["kill-logic"] * self.options.logic_kills
        if self.options.restart_rabbitmq:
            kinds.append("restart-rabbitmq")
        if self.options.stop_mariadb > 0:
            kinds.append("stop-mariadb")
        self.rng.shuffle(kinds)
        if not kinds:
            return []
        start, span = 0.1 * self.options.duration, 0.8 * self.options.duration
        slot = span / len(kinds)
        return [
            ChaosEvent(kind, round(start + i * slot + self.rng.uniform(0, 0.5 * slot), 3))
            for i, kind in enumerate(kinds)
        ]

    async def chaos(self, started: float) -> None:
        """The events one after another or, with ``--overlap``, each kind on its own (logic kills in order)."""
        if not self.options.overlap:
            await self.play(self.events, started)
            return
        kinds = sorted({e.kind for e in self.events})
        await asyncio.gather(*(self.play([e for e in self.events if e.kind == kind], started) for kind in kinds))

    async def play(self, events: list[ChaosEvent], started: float) -> None:
        loop = asyncio.get_running_loop()
        for event in events:
            delay = started + event.at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            event.started = round(loop.time() - started, 3)
            log(f"chaos at {event.started:.1f}s: {event.kind}")
            t0 = loop.time()
            try:
                await self.act(event.kind)
            except asyncio.CancelledError:
                event.error = "interrupted"
                raise
            except Exception as e:
                event.error = f"{type(e).__name__}: {e}"
                log(f"chaos {event.kind} failed: {event.error}")
                raise
            finally:
                event.took = round(loop.time() - t0, 3)

    async def act(self, kind: str) -> None:
        if kind == "kill-logic":
            assert self.logic is not None
            await self.logic.kill()
            self.note_tracebacks(self.logic)
            await self.start_logic(wait_for_backends=False)
        elif kind == "restart-rabbitmq":
            await self.services.stop_rabbitmq()
            await self.services.start_rabbitmq()
        elif kind == "stop-mariadb":
            await self.services.stop_mariadb()
            await asyncio.sleep(self.options.stop_mariadb)
            await self.services.start_mariadb()
        else:
            raise ValueError(kind)

    # Traffic.

    async def open_clients(self) -> None:
        base = f"http://{HOST}:{self.http_port}"
        names = [f"ch{self.run_id[:8]}-{i}" for i in range(2 * self.options.pairs)]
        limit = asyncio.Semaphore(4)

        async def one(name: str) -> ChatClient:
            async with limit:
                user_id, token = await asyncio.to_thread(account, base, name)
            return ChatClient(self, name, user_id, token)

        self.clients = list(await asyncio.gather(*(one(name) for name in names)))

    async def traffic(self) -> None:
        loop = asyncio.get_running_loop()
        connections = [asyncio.create_task(c.connection_loop()) for c in self.clients]
        try:
            await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in self.clients)), START_TIMEOUT)
            log(f"{len(self.clients)} clients connected; sending for {self.options.duration:g}s")
            started = loop.time()
            self.stats.started = started
            deadline = started + self.options.duration
            rate = self.options.rate / len(self.clients)
            senders = []
            for i, client in enumerate(self.clients):
                partner = self.clients[i ^ 1].username
                senders.append(asyncio.create_task(client.sender_loop(partner, rate, self.options.in_flight, deadline)))
            chaos = asyncio.create_task(self.chaos(started))
            try:
                await asyncio.gather(*senders)
                self.durations["send"] = round(loop.time() - started, 3)
                log(f"sending stopped: {self.stats.unique} messages, {self.stats.acked} acked; waiting for chaos")
                await chaos
            finally:
                if not chaos.done():
                    chaos.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await chaos
            drain_started = loop.time()
            pending = set(self.pending)
            log(f"draining {len(pending)} unacked messages (at most {self.options.drain_timeout:g}s)")
            if pending:
                await asyncio.wait(pending, timeout=self.options.drain_timeout)
            self.durations["drain"] = round(loop.time() - drain_started, 3)
        finally:
            self.hard_stop.set()
            for task in list(self.pending):
                task.cancel()
            await asyncio.gather(*self.pending, return_exceptions=True)
            await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
            for task in connections:
                task.cancel()
            await asyncio.gather(*connections, return_exceptions=True)

    # Verification.

    def verify(self) -> dict[str, Any]:
        connection = mysql_connect(self.database)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT sender_id, client_msg_id, msg_id, conv, seq, body FROM messages")
                rows = cursor.fetchall()
        finally:
            connection.close()
        by_key: dict[tuple[int, str], list[tuple[Any, ...]]] = defaultdict(list)
        by_body: Counter[str] = Counter()
        seqs: dict[str, list[int]] = defaultdict(list)
        for sender_id, cmid, msg_id, conv, seq, body in rows:
            by_key[(int(sender_id), cmid)].append((str(msg_id), conv, int(seq)))
            by_body[body] += 1
            seqs[conv].append(int(seq))
        duplicated = sum(len(found) - 1 for found in by_key.values()) + sum(n - 1 for n in by_body.values())
        gaps = 0
        for values in seqs.values():
            distinct = set(values)
            gaps += max(distinct) - len(distinct) + (len(values) - len(distinct))
        lost_acked = 0
        acked_keys: set[tuple[int, str]] = set()
        sent_keys: set[tuple[int, str]] = set()
        unacked = refused = 0
        for client in self.clients:
            for message in client.sent.values():
                key = (client.user_id, message.cmid)
                sent_keys.add(key)
                if message.refused:
                    refused += 1
                if not message.acks:
                    unacked += 1
                    continue
                acked_keys.add(key)
                stored = by_key.get(key)
                if not stored or any((ack["msg_id"], ack["conv"], ack["seq"]) != stored[0] for ack in message.acks):
                    lost_acked += 1
        stored_by_msg_id = {row[0]: row for found in by_key.values() for row in found}
        push_mismatches = 0
        pushes_unique = 0
        for client in self.clients:
            for (conv, seq), msg_ids in client.pushes.items():
                pushes_unique += 1
                if len(msg_ids) != 1:
                    push_mismatches += 1
                    continue
                (msg_id,) = msg_ids
                row = stored_by_msg_id.get(msg_id)
                if row is None or (row[1], row[2]) != (conv, seq):
                    push_mismatches += 1
        return {
            "stored": len(rows),
            "conversations": len(seqs),
            "lost_acked": lost_acked,
            "duplicated": duplicated,
            "gaps": gaps,
            "unacked_at_end": unacked,
            "refused": refused,
            "stored_not_acked": len(set(by_key) - acked_keys),
            "stored_not_sent": len(set(by_key) - sent_keys),
            "pushes_unique": pushes_unique,
            "push_mismatches": push_mismatches,
        }

    # Cleanup.

    async def stop_processes(self) -> dict[str, Any]:
        exits: dict[str, Any] = {}
        for process in (self.gateway, self.logic):
            if process is not None and process.process is not None:
                exits[process.name] = await process.terminate()
        if self.logic is not None:
            self.note_tracebacks(self.logic)
            self.logic = None
        if self.gateway is not None and self.gateway.traceback_samples:
            self.traceback_samples[self.gateway.name] = self.gateway.traceback_samples
        return exits

    async def drop(self) -> None:
        if self.options.keep:
            log(f"kept database {self.database}, queue {self.queue}, logs in {self.workdir}")
            return
        if self.database_created:
            try:
                await asyncio.to_thread(self._drop_database)
            except pymysql.err.MySQLError as e:
                log(f"could not drop {self.database}: {e}")
        for queue in (self.queue, f"gochat.gateway.{self.gateway_id}"):
            status, out = await command(["rabbitmqctl", "-q", "delete_queue", queue], 60)
            if status != 0:
                log(f"could not delete queue {queue}: {out.strip()}")

    def _drop_database(self) -> None:
        connection = mysql_connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS `{self.database}`")
        finally:
            connection.close()


def machine() -> dict[str, Any]:
    memory = None
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024

    import twisted

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "memory_bytes": memory,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "twisted": twisted.__version__,
        "websockets": importlib.metadata.version("websockets"),
    }
    with contextlib.suppress(pymysql.err.MySQLError):
        connection = mysql_connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT VERSION()")
                info["mariadb"] = cursor.fetchone()[0]
        finally:
            connection.close()
    return info


async def rabbitmq_version() -> str | None:
    status, out = await command(["rabbitmqctl", "version"], 20)
    return out.strip().splitlines()[-1] if status == 0 and out.strip() else None


async def setup_and_traffic(run: Run, result: dict[str, Any]) -> None:
    """Everything up to the end of the traffic; cancelled as a whole on SIGINT/SIGTERM (cleanup is not)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    if not await asyncio.to_thread(mysql_answers):
        raise RuntimeError(f"MariaDB does not answer at {HOST}:{MYSQL_PORT}")
    if not port_open(AMQP_PORT):
        raise RuntimeError(f"RabbitMQ does not accept connections at {HOST}:{AMQP_PORT}")
    result["machine"] = await asyncio.to_thread(machine)
    result["machine"]["rabbitmq"] = await rabbitmq_version()
    run.events = run.schedule()
    log(f"run {run.run_id} seed {run.seed}; logs in {run.workdir}; chaos {[(e.kind, e.at) for e in run.events]}")
    await run.migrate()
    await run.start_logic(wait_for_backends=True)
    await run.start_gateway()
    await run.open_clients()
    run.durations["setup"] = round(loop.time() - t0, 3)
    await run.traffic()


async def clean_up(run: Run, result: dict[str, Any], failures: list[str]) -> dict[str, Any]:
    """Stop the processes, bring back the services, verify, drop what the run made; the verification."""
    loop = asyncio.get_running_loop()
    verification: dict[str, Any] = {}
    result["exits"] = await run.stop_processes()
    problems = await run.services.ensure_up()
    failures.extend(f"could not restart {p}" for p in problems)
    if run.database_created and not problems:
        t_verify = loop.time()
        try:
            verification = await asyncio.to_thread(run.verify)
        except Exception as e:
            failures.append(f"verification failed: {type(e).__name__}: {e}")
        run.durations["verify"] = round(loop.time() - t_verify, 3)
    await run.drop()
    if not run.options.keep:
        shutil.rmtree(run.workdir, ignore_errors=True)
    return verification


def ack_latency(run: Run) -> dict[str, float]:
    """Seconds from a message's first attempt to its first ack, retries included: percentiles and the maximum."""
    latencies = sorted(m.latency for c in run.clients for m in c.sent.values() if m.latency is not None)
    if not latencies:
        return {}

    def at(fraction: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(fraction * len(latencies)))], 4)

    return {"p50": at(0.50), "p99": at(0.99), "p999": at(0.999), "max": round(latencies[-1], 4)}


def counts(run: Run, verification: dict[str, Any]) -> dict[str, Any]:
    stats = run.stats
    done = [e for e in run.events if e.took is not None and e.error is None]
    return {
        "sent_attempts": stats.attempts,
        "unique_messages": stats.unique,
        "acked": stats.acked,
        "retries": stats.attempts - stats.unique,
        "late_acks": stats.late_acks,
        "ack_conflicts": stats.ack_conflicts,
        "errors": dict(sorted(stats.errors.items())),
        "connects": stats.connects,
        "connect_failures": stats.connect_failures,
        "disconnects": stats.disconnects,
        "auth_retries": stats.auth_retries,
        "pushes_received": stats.pushes,
        "longest_ack_stall_seconds": stats.longest_stall(),
        "ack_latency_seconds": ack_latency(run),
        "logic_kills": sum(1 for e in done if e.kind == "kill-logic"),
        "rabbitmq_restarts": sum(1 for e in done if e.kind == "restart-rabbitmq"),
        "mariadb_stop_seconds": sum(run.options.stop_mariadb for e in done if e.kind == "stop-mariadb"),
        "logic_tracebacks": run.logic_tracebacks,
        "gateway_tracebacks": run.gateway.tracebacks if run.gateway is not None else 0,
        **verification,
    }


async def execute(options: argparse.Namespace, work_started: Callable[[asyncio.Task[None]], None]) -> dict[str, Any]:
    """The whole run; always cleans up. Returns the result (``ok`` says whether it passed).

    *work_started* is given the task that can be cancelled (on a signal);
    the cleanup after it runs whatever happened to it.
    """
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    run = Run(options)
    result: dict[str, Any] = {
        "benchmark": "chaos",
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "seed": run.seed,
        "run_id": run.run_id,
        "options": {
            name: getattr(options, name)
            for name in (
                *("duration", "pairs", "rate", "in_flight", "ack_timeout", "drain_timeout"),
                *("logic_kills", "restart_rabbitmq", "stop_mariadb", "overlap"),
            )
        },
    }
    failures: list[str] = []
    work = asyncio.create_task(setup_and_traffic(run, result))
    work_started(work)
    await asyncio.wait([work])
    if work.cancelled():
        failures.append("run interrupted")
        log("interrupted; cleaning up")
    elif (error := work.exception()) is not None:
        failures.append(f"run aborted: {type(error).__name__}: {error}")
        log(f"run aborted: {type(error).__name__}: {error}; cleaning up")
    verification = await clean_up(run, result, failures)
    result["counts"] = counts(run, verification)
    result["chaos"] = [e.__dict__ for e in run.events]
    run.durations["total"] = round(loop.time() - t0, 3)
    sending = run.durations.get("send", 0.0) + run.durations.get("drain", 0.0)
    if sending > 0:
        result["acked_per_second"] = round(run.stats.acked / sending, 1)
    result["durations"] = run.durations
    result["acks_per_second"] = run.stats.acks_per_second
    result["traceback_samples"] = run.traceback_samples
    if not verification:
        failures.append("nothing verified")
    for name in ("lost_acked", "duplicated", "gaps"):
        if verification.get(name):
            failures.append(f"{name} = {verification[name]}")
    if run.stats.acked == 0:
        failures.append("no message was acked")
    result["failures"] = failures
    result["ok"] = not failures
    return result


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--output", help="also write the JSON result to this file")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of sending (default 60)")
    parser.add_argument("--pairs", type=int, default=20, help="client pairs (default 20)")
    parser.add_argument("--rate", type=float, default=300.0, help="messages per second offered in total")
    parser.add_argument("--in-flight", type=int, default=8, help="unacked messages per sender at most")
    parser.add_argument("--ack-timeout", type=float, default=5.0, help="seconds before a send is retried")
    parser.add_argument("--drain-timeout", type=float, default=60.0, help="seconds to let retries finish")
    parser.add_argument("--logic-kills", type=int, default=3, help="SIGKILLs of the logic process (default 3)")
    parser.add_argument("--restart-rabbitmq", action="store_true", help="restart RabbitMQ once mid-run")
    parser.add_argument("--stop-mariadb", type=float, default=0.0, metavar="SECONDS", help="stop MariaDB this long")
    parser.add_argument(
        "--overlap",
        action="store_true",
        help="let logic kills fall during the service outages (default: one at a time)",
    )
    parser.add_argument("--seed", type=int, help="seed of the chaos schedule (default: random, reported)")
    parser.add_argument("--keep", action="store_true", help="keep the database, the queue and the logs")
    options = parser.parse_args(argv)
    if options.duration <= 0 or options.pairs < 1 or options.rate <= 0 or options.in_flight < 1:
        parser.error("--duration, --pairs, --rate and --in-flight must be positive")
    if options.logic_kills < 0 or options.stop_mariadb < 0:
        parser.error("--logic-kills and --stop-mariadb must not be negative")
    return options


def summary(result: dict[str, Any]) -> str:
    counts = result.get("counts", {})
    keys = [
        *("unique_messages", "acked", "sent_attempts", "retries", "stored", "lost_acked", "duplicated", "gaps"),
        *("unacked_at_end", "pushes_received", "logic_kills", "rabbitmq_restarts", "mariadb_stop_seconds"),
    ]
    lines = [f"{key:>22}: {counts.get(key)}" for key in keys]
    lines.append(f"{'errors':>22}: {counts.get('errors')}")
    lines.append(f"{'durations':>22}: {result.get('durations')}")
    lines.append(f"{'result':>22}: {'OK' if result['ok'] else 'FAILED ' + '; '.join(result['failures'])}")
    return "\n".join(lines)


async def amain(options: argparse.Namespace) -> dict[str, Any]:
    """:func:`execute` with SIGINT and SIGTERM cancelling the run's work (once), never its cleanup."""
    loop = asyncio.get_running_loop()
    work: list[asyncio.Task[None]] = []

    def interrupt() -> None:
        if work and not work[0].done():
            work[0].cancel()
        else:
            log("signal ignored: cleaning up")

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupt)
    return await execute(options, work.append)


def main(argv: list[str] | None = None) -> int:
    options = parse_arguments(argv)
    result = asyncio.run(amain(options))
    text = json.dumps(result, indent=2)
    if options.output:
        Path(options.output).write_text(text + "\n", encoding="utf-8")
    print(text if options.json else summary(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
