"""The client frame codec: versioned JSON envelopes in, bytes out.

A frame is one WebSocket text message holding a JSON object::

    {"v": 1, "type": "send", "id": "r7", "body": {...}}

``v`` is the protocol version (1), ``type`` the frame type, ``id`` an
optional client-chosen request id (echoed on the reply and on errors about
that request) and ``body`` an object whose fields depend on the type.

This module is pure: it neither reads clocks nor touches sockets. Decoding
raises :class:`~gochat.errors.GochatError` with a code that says exactly what
was wrong, so the session can answer with an error frame and go on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gochat.errors import ErrorCode, GochatError
from gochat.model import Ack, StoredMessage, SyncResult
from gochat.text import is_encodable

PROTOCOL_VERSION = 1
MAX_REQUEST_ID_LENGTH = 64
MAX_CLIENT_MSG_ID_LENGTH = 64
MAX_USERNAME_LENGTH = 32
MAX_TOKEN_LENGTH = 1024


@dataclass(frozen=True)
class Frame:
    """A decoded envelope whose body has not been interpreted yet."""

    type: str
    request_id: str | None
    body: dict[str, Any]


@dataclass(frozen=True)
class AuthRequest:
    """``auth``: present a token from the HTTP login."""

    token: str


@dataclass(frozen=True)
class PingRequest:
    """``ping``: keep the session alive; answered by ``pong``."""


@dataclass(frozen=True)
class SendRequest:
    """``send``: a message for the user named ``to``."""

    client_msg_id: str
    to: str
    body: str


@dataclass(frozen=True)
class SyncRequest:
    """``sync``: what did I miss? ``since`` maps conversations to the last seq the client has."""

    since: dict[str, int] | None
    limit: int


@dataclass(frozen=True)
class RecvAckRequest:
    """``recv_ack``: the client has every message of ``conv`` up to ``seq`` (cumulative)."""

    conv: str
    seq: int


@dataclass(frozen=True)
class PresenceRequest:
    """``presence``: are these contacts online?"""

    users: tuple[str, ...]


Request = AuthRequest | PingRequest | SendRequest | SyncRequest | RecvAckRequest | PresenceRequest
MAX_PRESENCE_USERS = 500
DEFAULT_SYNC_LIMIT = 200
MAX_SYNC_LIMIT = 1000
MAX_SYNC_CONVERSATIONS = 10_000
MAX_CONV_LENGTH = 128


def decode_frame(payload: bytes, is_binary: bool) -> Frame:
    """Parse one WebSocket message into a :class:`Frame`.

    Binary messages are refused (``unsupported_frame``): the JSON protocol is
    text-only. Anything that is not a JSON object with a known version, a
    string type and an object body is ``bad_frame``.
    """
    if is_binary:
        raise GochatError(ErrorCode.UNSUPPORTED_FRAME, "binary frames are not part of the JSON protocol")
    try:
        envelope = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise GochatError(ErrorCode.BAD_FRAME, f"malformed JSON: {e}") from None
    if not isinstance(envelope, dict):
        raise GochatError(ErrorCode.BAD_FRAME, "a frame must be a JSON object")
    request_id = envelope.get("id")
    if request_id is not None and not (isinstance(request_id, str) and len(request_id) <= MAX_REQUEST_ID_LENGTH):
        raise GochatError(ErrorCode.BAD_FRAME, f"id must be a string of at most {MAX_REQUEST_ID_LENGTH} characters")
    version = envelope.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise FrameError(
            GochatError(ErrorCode.UNSUPPORTED_VERSION, f"protocol version must be {PROTOCOL_VERSION}"), request_id
        )
    frame_type = envelope.get("type")
    if not isinstance(frame_type, str):
        raise FrameError(GochatError(ErrorCode.BAD_FRAME, "type must be a string"), request_id)
    body = envelope.get("body", {})
    if not isinstance(body, dict):
        raise FrameError(GochatError(ErrorCode.BAD_FRAME, "body must be an object"), request_id)
    return Frame(frame_type, request_id, body)


class FrameError(GochatError):
    """A decoding error that happened after the request id was known, so the reply can carry it."""

    def __init__(self, error: GochatError, request_id: str | None) -> None:
        super().__init__(error.code, error.message)
        self.request_id = request_id


def _string(body: dict[str, Any], name: str, max_length: int, min_length: int = 1) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise GochatError(ErrorCode.BAD_REQUEST, f"{name} must be a string")
    if not min_length <= len(value) <= max_length:
        raise GochatError(ErrorCode.BAD_REQUEST, f"{name} must have {min_length} to {max_length} characters")
    if not is_encodable(value):
        raise GochatError(ErrorCode.BAD_REQUEST, f"{name} must be valid Unicode (no lone surrogates)")
    return value


def parse_request(frame: Frame, max_body_length: int) -> Request:
    """Interpret a frame's body by its type; unknown types are ``unknown_type``."""
    if frame.type == "auth":
        return AuthRequest(_string(frame.body, "token", MAX_TOKEN_LENGTH))
    if frame.type == "ping":
        return PingRequest()
    if frame.type == "send":
        return SendRequest(
            client_msg_id=_string(frame.body, "client_msg_id", MAX_CLIENT_MSG_ID_LENGTH),
            to=_string(frame.body, "to", MAX_USERNAME_LENGTH),
            body=_string(frame.body, "body", max_body_length),
        )
    if frame.type == "sync":
        return _sync_request(frame.body)
    if frame.type == "presence":
        users = frame.body.get("users")
        if not isinstance(users, list) or not 0 < len(users) <= MAX_PRESENCE_USERS:
            raise GochatError(ErrorCode.BAD_REQUEST, f"users must list 1 to {MAX_PRESENCE_USERS} usernames")
        if not all(isinstance(u, str) and 0 < len(u) <= MAX_USERNAME_LENGTH and is_encodable(u) for u in users):
            raise GochatError(ErrorCode.BAD_REQUEST, "users must be usernames")
        return PresenceRequest(tuple(users))
    if frame.type == "recv_ack":
        return RecvAckRequest(_string(frame.body, "conv", MAX_CONV_LENGTH), _seq(frame.body.get("seq"), "seq"))
    raise GochatError(ErrorCode.UNKNOWN_TYPE, f"unknown frame type {frame.type!r}")


def _seq(value: object, name: str) -> int:
    if type(value) is not int or value < 0:
        raise GochatError(ErrorCode.BAD_REQUEST, f"{name} must be an integer >= 0")
    return value


def _sync_request(body: dict[str, Any]) -> SyncRequest:
    limit = body.get("limit", DEFAULT_SYNC_LIMIT)
    if type(limit) is not int or not 1 <= limit <= MAX_SYNC_LIMIT:
        raise GochatError(ErrorCode.BAD_REQUEST, f"limit must be an integer 1..{MAX_SYNC_LIMIT}")
    raw = body.get("since")
    if raw is None:
        return SyncRequest(None, limit)
    if not isinstance(raw, dict) or len(raw) > MAX_SYNC_CONVERSATIONS:
        raise GochatError(
            ErrorCode.BAD_REQUEST, f"since must map at most {MAX_SYNC_CONVERSATIONS} conversations to seqs"
        )
    since: dict[str, int] = {}
    for conv, seq in raw.items():
        if not 0 < len(conv) <= MAX_CONV_LENGTH or not is_encodable(conv):
            raise GochatError(ErrorCode.BAD_REQUEST, f"bad conversation key in since: {conv[:40]!r}")
        since[conv] = _seq(seq, f"since[{conv!r}]")
    return SyncRequest(since, limit)


def encode_frame(frame_type: str, body: dict[str, Any], request_id: str | None = None) -> bytes:
    """Serialise one server frame as compact UTF-8 JSON."""
    envelope: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": frame_type}
    if request_id is not None:
        envelope["id"] = request_id
    envelope["body"] = body
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode_error(error: GochatError, request_id: str | None = None) -> bytes:
    """The ``error`` frame for *error*: its stable code and a readable message."""
    return encode_frame("error", {"code": error.code.value, "message": error.message}, request_id)


def encode_ack(ack: Ack, request_id: str | None) -> bytes:
    """The ``ack`` frame answering a ``send``."""
    return encode_frame(
        "ack",
        {"client_msg_id": ack.client_msg_id, "msg_id": str(ack.msg_id), "conv": ack.conv, "seq": ack.seq, "ts": ack.ts},
        request_id,
    )


def message_body(message: StoredMessage) -> dict[str, Any]:
    """A stored message as clients see it, in ``push`` and ``sync_ok``."""
    return {
        "msg_id": str(message.msg_id),
        "conv": message.conv,
        "seq": message.seq,
        "from": message.sender,
        "client_msg_id": message.client_msg_id,
        "body": message.body,
        "ts": message.ts,
    }


def encode_push(message: StoredMessage) -> bytes:
    """The ``push`` frame carrying a stored message to a recipient."""
    return encode_frame("push", message_body(message))


def encode_sync(result: SyncResult, request_id: str | None) -> bytes:
    """The ``sync_ok`` frame: every conversation the client is behind in, and whether each is recovered whole."""
    convs = [
        {
            "conv": c.conv,
            "last_seq": c.last_seq,
            "complete": c.complete,
            "messages": [message_body(m) for m in c.messages],
        }
        for c in result.conversations
    ]
    return encode_frame("sync_ok", {"complete": result.complete, "convs": convs}, request_id)
