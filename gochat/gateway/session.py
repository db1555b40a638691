"""The session state machine: one client connection from handshake to close.

Pure: no reactor, no sockets. The Autobahn protocol feeds it frames and the
current time; it answers through a :class:`SessionTransport`, talks to logic
through an :class:`~gochat.gateway.logic_client.ILogicClient`, and keeps one
timer on the gateway's shared :class:`~gochat.wheel.HashedWheel` (the session
is that timer): first the auth deadline, then the idle timeout, which every
frame pushes back by recording its time in the timer's ``touched_at``.

States::

    AWAITING_AUTH --auth--> AUTHENTICATING --ok--> OPEN
          |                       |                 |
          +-- deadline, fatal error, drain ---------+--> CLOSING --> CLOSED
                                                                (socket gone)

The timer also bounds CLOSING: a peer that does not answer the close
handshake within ``close_timeout`` is cut off. The auth deadline starts at
TCP accept, so it also bounds the WebSocket opening handshake.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from gochat import errors
from gochat.errors import ErrorCode, GochatError
from gochat.gateway import codec
from gochat.gateway.logic_client import ILogicClient
from gochat.model import Ack, Identity, SendCommand, StoredMessage, SyncResult
from gochat.ratelimit import TokenBucket
from gochat.wheel import HashedWheel, WheelTimer

_log = Logger()
T = TypeVar("T")
#: Conversations whose last typing time a session remembers; past it, the memory starts afresh.
MAX_TYPING_CONVERSATIONS = 256


class SessionState(enum.Enum):
    """Where a session is in its life; see the module docstring."""

    AWAITING_AUTH = "awaiting_auth"
    AUTHENTICATING = "authenticating"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


_ENDING = frozenset({SessionState.CLOSING, SessionState.CLOSED})


@dataclass(frozen=True)
class SessionLimits:
    """Per-connection limits; every one is a gateway setting."""

    auth_timeout: float = 10.0
    idle_timeout: float = 60.0
    close_timeout: float = 5.0
    max_body_length: int = 8192
    frames_per_second: float = 50.0
    frame_burst: int = 100
    rate_strikes_before_close: int = 50
    max_held_pushes: int = 10_000
    #: Seconds between two ``typing`` frames of one session for one conversation.
    typing_interval: float = 1.0


class SessionTransport(Protocol):
    """The socket side of a session."""

    def send_frame(self, data: bytes) -> None:
        """Write one text frame."""

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake with a WebSocket close code."""

    def abort(self) -> None:
        """Drop the TCP connection at once."""

    def pause_reading(self) -> None:
        """Stop reading from the socket (admission control; what was read is still handled)."""

    def resume_reading(self) -> None:
        """Read from the socket again."""


class SessionObserver(Protocol):
    """Who wants to know when a session is routed and when it ends (the gateway's hub)."""

    def session_opened(self, session: Session) -> None:
        """The session authenticated; deliveries for it may arrive from now on."""

    def session_closed(self, session: Session) -> None:
        """The session ended; it receives nothing more."""

    def flush_received(self) -> None:
        """Hand logic the recv_acks held so far (before a sync, so it resumes after them)."""

    def record_received(self, user_id: int, conv: str, seq: int) -> Deferred[None]:
        """A ``recv_ack``: fires once logic has recorded it (the hub coalesces them; see
        :mod:`gochat.gateway.receipts`)."""

    def send_started(self, session: Session) -> None:
        """*session* handed logic a message; the observer may pause its reading (see
        :mod:`gochat.gateway.admission`)."""

    def send_finished(self) -> None:
        """A send handed to logic was answered, acked or refused."""


class Session(WheelTimer["Session"]):
    """One client connection's protocol logic.

    The session is its own timer on the gateway's wheel (an intrusive
    :class:`~gochat.wheel.WheelTimer` whose payload is the session), so no
    timer object is allocated per connection.  ``touched_at`` is when the
    client was last heard from; once the session is open its timer is an
    *idle* one (:meth:`~gochat.wheel.HashedWheel.idle`), so recording that
    time on each frame is all it takes to push the idle timeout back.  Before
    authentication and while closing the timer is fixed: frames do not push
    the auth deadline or the close timeout back.  ``active`` and ``deadline``
    describe the session's timer, not the connection.
    """

    def __init__(
        self,
        session_id: str,
        gateway_id: str,
        transport: SessionTransport,
        logic: ILogicClient,
        wheel: HashedWheel[Session],
        observer: SessionObserver,
        limits: SessionLimits,
        now: float,
    ) -> None:
        super().__init__(self)
        self.session_id = session_id
        self.gateway_id = gateway_id
        self.state = SessionState.AWAITING_AUTH
        self.identity: Identity | None = None
        self._transport = transport
        self._logic = logic
        self._wheel = wheel
        self._observer = observer
        self._limits = limits
        self._bucket = TokenBucket(limits.frames_per_second, limits.frame_burst, now)
        self._rate_strikes = 0
        self._held: list[StoredMessage] | None = None
        self._typing_at: dict[str, float] = {}
        self.touched_at = now
        wheel.reset(self, limits.auth_timeout, now)

    # Input from the connection.

    def frame_received(self, payload: bytes, is_binary: bool, now: float) -> None:
        """Handle one complete WebSocket message from the client."""
        if self.state in _ENDING:
            return
        if not self._bucket.take(now):
            self._rate_strikes += 1
            if self._rate_strikes >= self._limits.rate_strikes_before_close:
                self.fail(
                    GochatError(ErrorCode.RATE_LIMITED, "too many frames; closing"),
                    close_code=errors.CLOSE_RATE_LIMITED,
                )
            else:
                self._send_error(GochatError(ErrorCode.RATE_LIMITED, "too many frames; slow down"), None)
            return
        self._rate_strikes = 0
        self.touched_at = now
        request_id: str | None = None
        try:
            frame = codec.decode_frame(payload, is_binary)
            request_id = frame.request_id
            request = codec.parse_request(frame, self._limits.max_body_length)
        except codec.FrameError as e:
            self._refuse(e, e.request_id)
            return
        except GochatError as e:
            self._refuse(e, request_id)
            return
        self._dispatch(request, request_id)

    def activity(self, now: float) -> None:
        """Count transport-level traffic (WebSocket ping or pong) as a sign of life."""
        self.touched_at = now

    def deadline_passed(self, now: float) -> None:
        """The wheel says this session's timer ran out: auth deadline, idle timeout or close timeout."""
        self.touched_at = now
        if self.state is SessionState.CLOSING:
            self._transport.abort()
        elif self.state is SessionState.OPEN:
            self.fail(GochatError(ErrorCode.IDLE_TIMEOUT, f"no frame for {self._limits.idle_timeout:g}s"))
        elif self.state is not SessionState.CLOSED:
            self.fail(GochatError(ErrorCode.AUTH_TIMEOUT, f"not authenticated within {self._limits.auth_timeout:g}s"))

    def connection_lost(self) -> None:
        """The socket is gone: cancel the timer and un-route the session."""
        if self.state is SessionState.CLOSED:
            return
        self.state = SessionState.CLOSED
        self._wheel.cancel(self)
        if self.identity is not None:
            self._observer.session_closed(self)
            d = self._logic.disconnect(self.identity, self.gateway_id, self.session_id)
            d.addErrback(lambda f: _log.failure("disconnect of {session_id} failed", f, session_id=self.session_id))

    # Output.

    def fail(self, error: GochatError, close_code: int | None = None) -> None:
        """Send an error frame, then close with the error's close code (or *close_code*)."""
        if self.state in _ENDING:
            return
        code = close_code if close_code is not None else error.wire.close_code
        self._send_error(error, None)
        self.close(code if code is not None else 4500, error.code.value)

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; the socket is cut if it does not finish in ``close_timeout``."""
        if self.state in _ENDING:
            return
        self.state = SessionState.CLOSING
        self._wheel.reset(self, self._limits.close_timeout, self.touched_at)
        self._transport.close(code, reason)

    @property
    def accepts_deliveries(self) -> bool:
        """Whether pushes may be written to this session now (authenticated, not closing)."""
        return self.state is SessionState.OPEN

    def _refuse(self, error: GochatError, request_id: str | None) -> None:
        if error.wire.close_code is not None:
            self.fail(error)
        else:
            self._send_error(error, request_id)

    def _send_error(self, error: GochatError, request_id: str | None) -> None:
        self._send(codec.encode_error(error, request_id))

    def _send(self, data: bytes) -> None:
        if self.state not in _ENDING:
            self._transport.send_frame(data)

    # Requests.

    def _dispatch(self, request: codec.Request, request_id: str | None) -> None:
        if isinstance(request, codec.PingRequest):
            self._send(codec.encode_frame("pong", {}, request_id))
        elif isinstance(request, codec.AuthRequest):
            self._authenticate(request, request_id)
        elif self.state is not SessionState.OPEN:
            self._send_error(GochatError(ErrorCode.NOT_AUTHENTICATED, "send an auth frame first"), request_id)
        elif isinstance(request, codec.SyncRequest):
            self._sync(request, request_id)
        elif isinstance(request, codec.RecvAckRequest):
            self._recv_ack(request, request_id)
        elif isinstance(request, codec.PresenceRequest):
            self._presence(request, request_id)
        elif isinstance(request, codec.SendRequest):
            self._send_message(request, request_id)
        elif isinstance(request, codec.TypingRequest):
            self._typing(request, request_id)
        else:
            self._group_or_conversation(request, request_id)

    def _group_or_conversation(self, request: codec.Request, request_id: str | None) -> None:
        """The requests answered by one ``<type>_ok`` frame built from logic's result."""
        identity = self.identity
        assert identity is not None
        logic, user_id = self._logic, identity.user_id
        if isinstance(request, codec.GroupCreateRequest):
            self._reply(
                logic.create_group(identity, request.name, request.members),
                "group_create_ok",
                codec.group_body,
                request_id,
            )
        elif isinstance(request, codec.GroupAddRequest):
            d_added = logic.add_members(identity, request.group_id, request.users, request.role)
            self._reply(
                d_added, "group_add_ok", lambda added: {"added": [codec.member_body(m) for m in added]}, request_id
            )
        elif isinstance(request, codec.GroupRemoveRequest):
            self._reply(
                logic.remove_member(identity, request.group_id, request.user), "group_remove_ok", _empty, request_id
            )
        elif isinstance(request, codec.GroupRoleRequest):
            self._reply(
                logic.set_role(identity, request.group_id, request.user, request.role),
                "group_role_ok",
                _empty,
                request_id,
            )
        elif isinstance(request, codec.GroupLeaveRequest):
            self._reply(logic.leave_group(identity, request.group_id), "group_leave_ok", _empty, request_id)
        elif isinstance(request, codec.GroupsRequest):
            self._reply(
                logic.groups(user_id),
                "groups_ok",
                lambda groups: {"groups": [codec.group_body(g) for g in groups]},
                request_id,
            )
        elif isinstance(request, codec.GroupMembersRequest):
            self._reply(
                logic.members(user_id, request.group_id),
                "group_members_ok",
                lambda members: {"group_id": request.group_id, "members": [codec.member_body(m) for m in members]},
                request_id,
            )
        elif isinstance(request, codec.HistoryRequest):
            d_page = logic.history(user_id, request.conv, request.before, request.after, request.limit)
            self._reply(d_page, "history_ok", codec.history_body, request_id)
        elif isinstance(request, codec.ReadRequest):
            d_read = logic.mark_read(identity, request.conv, request.seq, self.gateway_id, self.session_id)
            self._reply(d_read, "read_ok", lambda seq: {"conv": request.conv, "seq": seq}, request_id)
        elif isinstance(request, codec.ConversationsRequest):
            self._reply(
                logic.conversation_list(user_id),
                "conversations_ok",
                lambda convs: {"convs": [codec.conversation_body(c) for c in convs]},
                request_id,
            )

    def _reply(
        self, d: Deferred[T], reply_type: str, body: Callable[[T], dict[str, Any]], request_id: str | None
    ) -> None:
        d.addCallbacks(
            lambda result: self._send(codec.encode_frame(reply_type, body(result), request_id)),
            self._send_failed,
            errbackArgs=(request_id,),
        )

    def _typing(self, request: codec.TypingRequest, request_id: str | None) -> None:
        assert self.identity is not None
        now = self.touched_at
        last = self._typing_at.get(request.conv)
        if last is not None and now - last < self._limits.typing_interval:
            error = f"typing at most once every {self._limits.typing_interval:g}s per conversation"
            self._send_error(GochatError(ErrorCode.RATE_LIMITED, error), request_id)
            return
        if len(self._typing_at) >= MAX_TYPING_CONVERSATIONS:
            self._typing_at.clear()
        self._typing_at[request.conv] = now
        d = self._logic.typing(self.identity, request.conv)
        if request_id is not None:
            d.addCallback(lambda _: self._send(codec.encode_frame("typing_ok", {}, request_id)))
        d.addErrback(self._send_failed, request_id)

    def _authenticate(self, request: codec.AuthRequest, request_id: str | None) -> None:
        if self.state is not SessionState.AWAITING_AUTH:
            self._send_error(GochatError(ErrorCode.ALREADY_AUTHENTICATED), request_id)
            return
        self.state = SessionState.AUTHENTICATING
        d = self._logic.connect(request.token, self.gateway_id, self.session_id)
        d.addCallbacks(self._authenticated, self._auth_failed, callbackArgs=(request_id,), errbackArgs=(request_id,))

    def _authenticated(self, identity: Identity, request_id: str | None) -> None:
        if self.state in _ENDING:
            # The socket went away while logic routed it: undo the route.
            d = self._logic.disconnect(identity, self.gateway_id, self.session_id)
            d.addErrback(
                lambda f: _log.failure("late disconnect of {session_id} failed", f, session_id=self.session_id)
            )
            return
        self.identity = identity
        self.state = SessionState.OPEN
        self._observer.session_opened(self)
        self._wheel.idle(self, self._limits.idle_timeout, self.touched_at)
        body: dict[str, Any] = {
            "user_id": identity.user_id,
            "username": identity.username,
            "session_id": self.session_id,
            "heartbeat": self._limits.idle_timeout / 2,
        }
        self._send(codec.encode_frame("auth_ok", body, request_id))

    def _auth_failed(self, failure: Failure, request_id: str | None) -> None:
        if self.state in _ENDING:
            return
        error = self._as_error(failure)
        self.state = SessionState.AWAITING_AUTH
        self._send_error(error, request_id)
        if error.wire.close_code is not None:
            self.close(error.wire.close_code, error.code.value)

    # Resume.

    @property
    def holding_pushes(self) -> bool:
        """Whether live pushes wait while a sync is answered, so a conversation never arrives out of order."""
        return self._held is not None

    def hold(self, message: StoredMessage) -> None:
        """Keep a live push until the sync in progress has been answered."""
        assert self._held is not None
        if len(self._held) >= self._limits.max_held_pushes:
            self.fail(GochatError(ErrorCode.SLOW_CONSUMER, "too many pushes while syncing; sync again"))
            return
        self._held.append(message)

    def _sync(self, request: codec.SyncRequest, request_id: str | None) -> None:
        if self._held is not None:
            self._send_error(GochatError(ErrorCode.BAD_REQUEST, "a sync is already running"), request_id)
            return
        assert self.identity is not None
        self._held = []
        self._observer.flush_received()
        d = self._logic.sync(self.identity.user_id, request.since, request.limit)
        d.addCallbacks(self._synced, self._sync_failed, callbackArgs=(request_id,), errbackArgs=(request_id,))

    def _synced(self, result: SyncResult, request_id: str | None) -> None:
        held, self._held = self._held or [], None
        self._send(codec.encode_sync(result, request_id))
        # Live pushes that arrived meanwhile follow, minus what the sync already carried; none for a
        # conversation the sync did not bring up to date (the client syncs it again, in order).
        reached = {c.conv: c.messages[-1].seq if c.messages else 0 for c in result.conversations}
        behind = {c.conv for c in result.conversations if not c.complete}
        for message in held:
            if message.conv not in behind and message.seq > reached.get(message.conv, 0):
                self._send(codec.encode_push(message))

    def _sync_failed(self, failure: Failure, request_id: str | None) -> None:
        held, self._held = self._held or [], None
        self._send_error(self._as_error(failure), request_id)
        for message in held:
            self._send(codec.encode_push(message))

    def _presence(self, request: codec.PresenceRequest, request_id: str | None) -> None:
        assert self.identity is not None
        d = self._logic.presence(self.identity.user_id, request.users)
        d.addCallbacks(
            lambda online: self._send(
                codec.encode_frame(
                    "presence_ok",
                    {"users": {name: "online" if up else "offline" for name, up in sorted(online.items())}},
                    request_id,
                )
            ),
            self._send_failed,
            errbackArgs=(request_id,),
        )

    def _recv_ack(self, request: codec.RecvAckRequest, request_id: str | None) -> None:
        assert self.identity is not None
        d = self._observer.record_received(self.identity.user_id, request.conv, request.seq)
        if request_id is not None:
            d.addCallback(lambda _: self._send(codec.encode_frame("recv_ack_ok", {}, request_id)))
        d.addErrback(self._send_failed, request_id)

    def _send_message(self, request: codec.SendRequest, request_id: str | None) -> None:
        assert self.identity is not None
        command = SendCommand(
            sender_id=self.identity.user_id,
            sender=self.identity.username,
            gateway_id=self.gateway_id,
            session_id=self.session_id,
            client_msg_id=request.client_msg_id,
            to_username=request.to,
            body=request.body,
            conv=request.conv,
            kind=request.kind,
            ref_seq=request.ref_seq,
        )
        self._observer.send_started(self)
        d = self._logic.send(command)
        d.addBoth(self._send_settled)
        d.addCallbacks(self._acked, self._send_failed, callbackArgs=(request_id,), errbackArgs=(request_id,))

    def _send_settled(self, result: T) -> T:
        self._observer.send_finished()
        return result

    def pause_reading(self) -> None:
        """Stop reading this connection (admission control); a closing session is left alone."""
        if self.state not in _ENDING:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Read this connection again (a closing one too: it must read the client's close frame)."""
        if self.state is not SessionState.CLOSED:
            self._transport.resume_reading()

    def _acked(self, ack: Ack, request_id: str | None) -> None:
        self._send(codec.encode_ack(ack, request_id))

    def _send_failed(self, failure: Failure, request_id: str | None) -> None:
        self._send_error(self._as_error(failure), request_id)

    def _as_error(self, failure: Failure) -> GochatError:
        if isinstance(failure.value, GochatError):
            return failure.value
        _log.failure("logic call failed for session {session_id}", failure, session_id=self.session_id)
        return GochatError(ErrorCode.UNAVAILABLE, "the service could not complete the request; retry")


def _empty(_: object) -> dict[str, Any]:
    return {}
