"""One chat connection of the load generator, on the ``websockets`` library (asyncio).

A :class:`Client` keeps its WebSocket connected and authenticated (with
backoff, counting reconnects), sends messages with unique ``client_msg_id``\\ s
and retries them with the same id until acked (after an ``error`` frame, an
ack timeout or a reconnect), records every ack and every push, acknowledges
what it received (``recv_ack``, cumulative, at most once per interval), keeps
its session alive with ``ping``, and after a reconnect recovers what it missed
with ``sync``, as docs/protocol.md asks of a client.

Each message body starts with ``t=<monotonic ns of the first attempt>``, so a
recipient in any process of the machine can time send -> push by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from bench.load.plan import ConnectionPlan
from bench.load.stats import VIA_FINAL_SYNC, VIA_PUSH, VIA_SYNC, ReceivedRecord, SentRecord

#: Errors after which a send is retried with the same client_msg_id; any other code refuses the message.
RETRYABLE = frozenset({"unavailable", "shutting_down", "rate_limited", "internal"})
#: Close codes after which reconnecting cannot help (bad or expired token, client bug).
FATAL_CLOSE_CODES = frozenset({4401, 4402, 4403})
#: A ping is sent once a connection has sent nothing for this fraction of the server's heartbeat.
PING_AFTER = 0.9
MAX_SYNC_ROUNDS = 100
SYNC_LIMIT = 1000
#: Retries after an error back off exponentially per message, from the first delay up to this one (seconds).
MAX_RETRY_DELAY = 5.0
#: The longest an attempt waits for its ack before the message is sent again (seconds).
MAX_ACK_TIMEOUT = 60.0


class RunContext(Protocol):
    """What a client needs from the worker that runs it."""

    url: str
    counters: Counter[str]
    start: float
    ack_timeout: float
    connect_timeout: float
    body_size: int
    received: list[ReceivedRecord]

    def message_final(self, client: Client, message: Outgoing) -> None:
        """*message* was acked or refused (its slot is free)."""


@dataclass(slots=True)
class Outgoing:
    """One message from its first attempt to its ack (or refusal)."""

    cmid: str
    body: str
    first: float
    recipients: int
    attempts: int = 0
    last_attempt: float = 0.0
    ack_at: float | None = None
    msg_id: str | None = None
    seq: int | None = None
    conv: str | None = None
    refused: str | None = None
    retry_pending: bool = False
    timeouts: int = 0


@dataclass(slots=True)
class ConversationState:
    """The seqs of one conversation this client has (pushed to it, or its own acked ones)."""

    prefix: int = 0
    have: set[int] = field(default_factory=set)
    last_pushed: int = 0
    acked_up_to: int = 0

    def add(self, seq: int) -> None:
        if seq <= self.prefix:
            return
        self.have.add(seq)
        while self.prefix + 1 in self.have:
            self.prefix += 1
            self.have.discard(self.prefix)

    def has(self, seq: int) -> bool:
        return seq <= self.prefix or seq in self.have

    def gaps(self) -> int:
        """Seqs missing between 1 and the highest seq seen."""
        return max(self.have) - self.prefix - len(self.have) if self.have else 0


def message_timestamp(body: str) -> int | None:
    """The ``t=<ns>`` a load-generator body starts with, or ``None``."""
    if not body.startswith("t="):
        return None
    end = body.find(" ")
    try:
        return int(body[2:end] if end > 0 else body[2:])
    except ValueError:
        return None


def make_body(cmid: str, sent_ns: int, size: int) -> str:
    """A body of at least *size* characters carrying its send time and its client_msg_id."""
    head = f"t={sent_ns} {cmid} "
    return head + "x" * max(0, size - len(head))


class Client:
    """One user's session (see the module docstring)."""

    def __init__(self, run: RunContext, plan: ConnectionPlan, tag: str, slots: int, rng: random.Random) -> None:
        self.run = run
        self.plan = plan
        self.username = plan.account.username
        self.user_id = plan.account.user_id
        self.tag = tag
        self.rng = rng
        self.ws: ClientConnection | None = None
        self.ready = asyncio.Event()
        self.first_outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.stopping = False
        self.heartbeat = 30.0
        self.last_sent = 0.0
        self.connections = 0
        self.slots = asyncio.Semaphore(slots)
        self.messages: list[Outgoing] = []
        self.unacked: dict[str, Outgoing] = {}
        self.requests: dict[str, Outgoing] = {}
        self.convs: dict[str, ConversationState] = {}
        self.dirty: set[str] = set()
        self.out_of_order = 0
        #: Set for the final sync: pushes from then on are neither recorded nor counted as had.
        self.books_closed = False
        self._numbers = 0
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}

    # Connection.

    async def run_forever(self, max_first_attempts: int = 10) -> None:
        """Connect, authenticate, read; reconnect with backoff until :meth:`stop` (or a fatal refusal).

        The first outcome (:attr:`first_outcome`) is ``True`` at the first
        ``auth_ok``, ``False`` after *max_first_attempts* failures in a row or a
        fatal close before it.
        """
        backoff = 0.1
        failures = 0
        while not self.stopping:
            fatal = False
            ws = await self._connect()
            if ws is None:
                failures += 1
            else:
                authenticated, close_code = await self._session(ws)
                if authenticated:
                    backoff, failures = 0.1, 0
                else:
                    failures += 1
                if self.stopping:
                    break
                if close_code is not None and close_code != 1000:
                    self.run.counters[f"closed:{close_code}"] += 1
                fatal = close_code in FATAL_CLOSE_CODES
            if fatal or (not self.first_outcome.done() and failures >= max_first_attempts):
                if not self.first_outcome.done():
                    self.first_outcome.set_result(False)
                return
            await asyncio.sleep(backoff * self.rng.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 5.0)

    async def _connect(self) -> ClientConnection | None:
        """Open the WebSocket (no compression: a browser's is not negotiated by the gateway either)."""
        try:
            return await connect(
                self.run.url,
                open_timeout=self.run.connect_timeout,
                ping_interval=None,
                close_timeout=2,
                max_size=2**22,
                compression=None,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as e:
            self.run.counters[f"connect_error:{type(e).__name__}"] += 1
            return None

    async def _session(self, ws: ClientConnection) -> tuple[bool, int | None]:
        """Authenticate and read until the connection ends; (whether it authenticated, the close code)."""
        self.connections += 1
        if self.connections > 1:
            self.run.counters["reconnects"] += 1
        authenticated = False
        try:
            if await self._authenticate(ws):
                authenticated = True
                self.ws = ws
                self.last_sent = asyncio.get_running_loop().time()
                resume = asyncio.create_task(self._resume(first=self.connections == 1))
                try:
                    async for raw in ws:
                        self._dispatch(json.loads(raw))
                finally:
                    if not resume.done():
                        resume.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, ConnectionError, TimeoutError):
                        await resume
        except ConnectionClosed:
            pass
        except (TimeoutError, OSError, ValueError) as e:
            self.run.counters[f"connection_error:{type(e).__name__}"] += 1
        finally:
            self._lost()
            with contextlib.suppress(Exception):
                await ws.close()
        return authenticated, ws.close_code

    async def _authenticate(self, ws: ClientConnection) -> bool:
        """``auth`` until ``auth_ok``; ``unavailable`` is retried on the same connection, other errors are not."""
        for attempt in range(1, 6):
            request_id = f"a{attempt}"
            await ws.send(
                json.dumps({"v": 1, "type": "auth", "id": request_id, "body": {"token": self.plan.account.token}})
            )
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), self.run.connect_timeout))
                if frame.get("id") == request_id:
                    break
                self._dispatch(frame)
            if frame.get("type") == "auth_ok":
                self.heartbeat = float(frame["body"].get("heartbeat", self.heartbeat))
                return True
            code = frame.get("body", {}).get("code", "?")
            self.run.counters[f"auth_error:{code}"] += 1
            if code not in RETRYABLE:
                return False
            await asyncio.sleep(0.5 * attempt)
        return False

    async def _resume(self, first: bool) -> None:
        """After auth: on a reconnect, ``sync`` what was missed; then (re)send every unacked message."""
        if not first:
            await self._sync()
        self.ready.set()
        if not self.first_outcome.done():
            self.first_outcome.set_result(True)
        for message in list(self.unacked.values()):
            if not message.retry_pending:
                await self.transmit(message)

    async def final_sync(self) -> None:
        """Close the books (later pushes and acks are ignored) and ``sync`` what has not been pushed yet.

        The worker closes every client's books before any of them syncs, so no
        message is acked to its sender after its recipient's sync was answered.
        """
        self.books_closed = True
        if self.ws is not None and self.ready.is_set():
            await self._sync(VIA_FINAL_SYNC)

    async def _sync(self, via: str = VIA_SYNC) -> None:
        since = {conv: state.prefix for conv, state in self.convs.items()}
        for _ in range(MAX_SYNC_ROUNDS):
            reply = await self.request("sync", {"since": since, "limit": SYNC_LIMIT})
            if reply.get("type") != "sync_ok":
                self.run.counters[f"sync_error:{reply.get('body', {}).get('code', '?')}"] += 1
                return
            body = reply["body"]
            self.run.counters["syncs"] += 1
            since = {}
            for conv in body.get("convs", []):
                messages = conv.get("messages", [])
                for message in messages:
                    self._synced(message, via)
                if not conv.get("complete", True) and messages:
                    since[conv["conv"]] = int(messages[-1]["seq"])
            if body.get("complete", True) or not since:
                return

    def _lost(self) -> None:
        self.ready.clear()
        self.ws = None
        self.requests.clear()
        for future in self._replies.values():
            if not future.done():
                future.set_exception(ConnectionError("connection lost"))
        self._replies.clear()

    async def request(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send a request frame and wait for the reply with its id."""
        ws = self.ws
        if ws is None:
            raise ConnectionError("not connected")
        self._numbers += 1
        request_id = f"q{self._numbers}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = future
        try:
            await self._send_frame(ws, {"v": 1, "type": kind, "id": request_id, "body": body})
            return await asyncio.wait_for(future, self.run.ack_timeout * 3)
        finally:
            self._replies.pop(request_id, None)

    async def _send_frame(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        self.last_sent = asyncio.get_running_loop().time()
        await ws.send(json.dumps(frame, separators=(",", ":")))

    def stop(self) -> None:
        self.stopping = True

    async def close(self) -> None:
        self.stopping = True
        ws = self.ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)

    # Sending.

    def new_message(self, now: float) -> Outgoing:
        assert self.plan.send_to is not None
        self._numbers += 1
        cmid = f"{self.tag}-{self._numbers}"
        message = Outgoing(cmid, make_body(cmid, time.monotonic_ns(), self.run.body_size), now, self.plan.recipients)
        self.messages.append(message)
        self.unacked[cmid] = message
        return message

    async def transmit(self, message: Outgoing) -> None:
        """Send one attempt of *message* if connected; else it goes out when the session is back."""
        message.retry_pending = False
        ws = self.ws
        if ws is None or not self.ready.is_set() or message.cmid not in self.unacked:
            return
        assert self.plan.send_to is not None
        self._numbers += 1
        request_id = f"s{self._numbers}"
        self.requests[request_id] = message
        message.attempts += 1
        message.last_attempt = asyncio.get_running_loop().time()
        body = {"client_msg_id": message.cmid, **self.plan.send_to, "body": message.body}
        try:
            await self._send_frame(ws, {"v": 1, "type": "send", "id": request_id, "body": body})
        except ConnectionClosed:
            self.requests.pop(request_id, None)

    def retry_later(self, message: Outgoing, delay: float) -> None:
        """Send *message* again after about *delay* seconds (same client_msg_id, same body)."""
        if message.retry_pending:
            return
        message.retry_pending = True

        def fire() -> None:
            if message.cmid in self.unacked and not self.books_closed:
                asyncio.get_running_loop().create_task(self.transmit(message))
            else:
                message.retry_pending = False

        asyncio.get_running_loop().call_later(delay * self.rng.uniform(0.5, 1.5), fire)

    def overdue(self, now: float) -> list[Outgoing]:
        """Unacked messages whose last attempt has waited longer than their ack timeout.

        The timeout doubles with each one a message has had (up to
        :data:`MAX_ACK_TIMEOUT`), so that an overloaded server is not buried
        under resends of what it is still working on. Nothing is overdue once
        the books are closed.
        """
        if self.books_closed:
            return []
        overdue = []
        for m in self.unacked.values():
            if m.retry_pending or not m.attempts:
                continue
            if now - m.last_attempt > min(MAX_ACK_TIMEOUT, self.run.ack_timeout * 2**m.timeouts):
                m.timeouts += 1
                overdue.append(m)
        return overdue

    # Frames in.

    def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        body = frame.get("body") or {}
        request_id = frame.get("id")
        if kind == "push":
            self._pushed(body)
            return
        if request_id is not None:
            future = self._replies.get(request_id)
            if future is not None:
                if not future.done():
                    future.set_result(frame)
                return
        if kind == "ack":
            if request_id is not None:
                self.requests.pop(request_id, None)
            self._acked(body)
        elif kind == "error":
            code = str(body.get("code", "?"))
            self.run.counters[f"error:{code}"] += 1
            message = self.requests.pop(request_id, None) if request_id is not None else None
            if message is None or message.cmid not in self.unacked:
                return
            if code in RETRYABLE:
                self.retry_later(message, min(MAX_RETRY_DELAY, 0.1 * 2 ** max(0, message.attempts - 1)))
            else:
                message.refused = code
                del self.unacked[message.cmid]
                self.run.message_final(self, message)
        elif kind in ("pong", "recv_ack_ok"):
            return
        else:
            self.run.counters[f"unexpected:{kind}"] += 1

    def _acked(self, body: dict[str, Any]) -> None:
        if self.books_closed:
            self.run.counters["acks_after_final_sync"] += 1
            return
        message = self.unacked.pop(str(body.get("client_msg_id")), None)
        if message is None:
            self.run.counters["late_acks"] += 1
            return
        message.ack_at = asyncio.get_running_loop().time()
        message.msg_id = str(body["msg_id"])
        message.seq = int(body["seq"])
        message.conv = str(body["conv"])
        self._conversation(message.conv).add(message.seq)
        self.run.message_final(self, message)

    def _conversation(self, conv: str) -> ConversationState:
        state = self.convs.get(conv)
        if state is None:
            state = self.convs[conv] = ConversationState()
        return state

    def _pushed(self, body: dict[str, Any]) -> None:
        if self.books_closed:
            self.run.counters["pushes_after_final_sync"] += 1
            return
        now_ns = time.monotonic_ns()
        conv = str(body["conv"])
        seq = int(body["seq"])
        state = self._conversation(conv)
        if seq <= state.last_pushed:
            self.out_of_order += 1
        state.last_pushed = max(state.last_pushed, seq)
        state.add(seq)
        self.dirty.add(conv)
        sent_ns = message_timestamp(str(body.get("body", "")))
        self.run.received.append(
            ReceivedRecord(
                self.user_id,
                str(body.get("from")),
                str(body.get("client_msg_id")),
                str(body.get("msg_id")),
                None if sent_ns is None else (now_ns - sent_ns) / 1e6,
                now_ns / 1e9 - self.run.start,
                VIA_PUSH,
            )
        )

    def _synced(self, message: dict[str, Any], via: str) -> None:
        conv = str(message["conv"])
        seq = int(message["seq"])
        state = self._conversation(conv)
        if state.has(seq):
            return
        state.add(seq)
        self.dirty.add(conv)
        if message.get("from") == self.username:
            return
        self.run.received.append(
            ReceivedRecord(
                self.user_id,
                str(message.get("from")),
                str(message.get("client_msg_id")),
                str(message.get("msg_id")),
                None,
                time.monotonic() - self.run.start,
                via,
            )
        )

    # Periodic duties (called by the worker's ticker).

    def tick(self, now: float, recv_acks: bool, ping_style: str = "json") -> None:
        """Send the due ``recv_ack``\\ s (if *recv_acks*), and a ping of *ping_style* (``json``, ``websocket``
        or ``none``) if the session has been quiet for most of a heartbeat."""
        ws = self.ws
        if ws is None or not self.ready.is_set():
            return
        frames: list[dict[str, Any]] = []
        if recv_acks and self.dirty:
            for conv in self.dirty:
                state = self.convs[conv]
                if state.prefix > state.acked_up_to:
                    state.acked_up_to = state.prefix
                    frames.append({"v": 1, "type": "recv_ack", "body": {"conv": conv, "seq": state.prefix}})
            self.dirty.clear()
        ping = not frames and ping_style != "none" and now - self.last_sent >= PING_AFTER * self.heartbeat
        if ping:
            self.run.counters["pings"] += 1
            if ping_style == "json":
                frames.append({"v": 1, "type": "ping", "body": {}})
        if frames or ping:
            asyncio.get_running_loop().create_task(self._send_all(ws, frames, ping and ping_style == "websocket"))

    async def _send_all(self, ws: ClientConnection, frames: list[dict[str, Any]], control_ping: bool) -> None:
        with contextlib.suppress(ConnectionClosed):
            for frame in frames:
                await self._send_frame(ws, frame)
            if control_ping:
                self.last_sent = asyncio.get_running_loop().time()
                await ws.ping()

    # Results.

    def sent_records(self) -> list[SentRecord]:
        start = self.run.start
        return [
            SentRecord(
                self.username,
                self.user_id,
                m.cmid,
                m.first - start,
                None if m.ack_at is None else (m.ack_at - m.first) * 1000.0,
                m.msg_id,
                m.attempts,
                m.refused,
                m.recipients,
            )
            for m in self.messages
        ]

    def seq_gaps(self) -> int:
        return sum(state.gaps() for state in self.convs.values())
