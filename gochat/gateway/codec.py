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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gochat.errors import ErrorCode, GochatError
from gochat.model import (
    Ack,
    ConversationInfo,
    GroupInfo,
    GroupRole,
    HistoryPage,
    MemberInfo,
    MessageKind,
    Signal,
    SignalKind,
    StoredMessage,
    SyncResult,
)
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
    """``send`` (a message for the user named ``to``, or into ``conv``), ``edit`` or ``recall`` (of ``ref_seq``)."""

    client_msg_id: str
    to: str
    body: str
    conv: str = ""
    kind: str = MessageKind.TEXT
    ref_seq: int = 0


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


@dataclass(frozen=True)
class GroupCreateRequest:
    """``group_create``: a new group named ``name`` with these members (the sender is its owner)."""

    name: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class GroupAddRequest:
    """``group_add``: add users to a group, as ``member`` or ``admin``."""

    group_id: int
    users: tuple[str, ...]
    role: str


@dataclass(frozen=True)
class GroupRemoveRequest:
    """``group_remove``: remove a member."""

    group_id: int
    user: str


@dataclass(frozen=True)
class GroupRoleRequest:
    """``group_role``: change a member's role (owner only)."""

    group_id: int
    user: str
    role: str


@dataclass(frozen=True)
class GroupLeaveRequest:
    """``group_leave``: leave a group."""

    group_id: int


@dataclass(frozen=True)
class GroupsRequest:
    """``groups``: list my groups."""


@dataclass(frozen=True)
class GroupMembersRequest:
    """``group_members``: list a group's members."""

    group_id: int


@dataclass(frozen=True)
class HistoryRequest:
    """``history``: a page of a conversation ``before`` or ``after`` a seq (else the newest)."""

    conv: str
    before: int | None
    after: int | None
    limit: int


@dataclass(frozen=True)
class ReadRequest:
    """``read``: I have read ``conv`` up to ``seq``."""

    conv: str
    seq: int


@dataclass(frozen=True)
class TypingRequest:
    """``typing``: I am typing in ``conv``."""

    conv: str


@dataclass(frozen=True)
class ConversationsRequest:
    """``conversations``: list my conversations with unread counts."""


Request = (
    AuthRequest
    | PingRequest
    | SendRequest
    | SyncRequest
    | RecvAckRequest
    | PresenceRequest
    | GroupCreateRequest
    | GroupAddRequest
    | GroupRemoveRequest
    | GroupRoleRequest
    | GroupLeaveRequest
    | GroupsRequest
    | GroupMembersRequest
    | HistoryRequest
    | ReadRequest
    | TypingRequest
    | ConversationsRequest
)
MAX_PRESENCE_USERS = 500
DEFAULT_SYNC_LIMIT = 200
MAX_SYNC_LIMIT = 1000
MAX_SYNC_CONVERSATIONS = 10_000
MAX_CONV_LENGTH = 128
MAX_GROUP_NAME_LENGTH = 64
MAX_GROUP_USERS = 1000
DEFAULT_HISTORY_LIMIT = 50
MAX_HISTORY_LIMIT = 200


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
    if frame.type in ("send", "edit", "recall"):
        return _send_request(frame.type, frame.body, max_body_length)
    parse = _PARSERS.get(frame.type)
    if parse is None:
        raise GochatError(ErrorCode.UNKNOWN_TYPE, f"unknown frame type {frame.type!r}")
    return parse(frame.body)


def _presence_request(body: dict[str, Any]) -> PresenceRequest:
    users = body.get("users")
    if not isinstance(users, list) or not 0 < len(users) <= MAX_PRESENCE_USERS:
        raise GochatError(ErrorCode.BAD_REQUEST, f"users must list 1 to {MAX_PRESENCE_USERS} usernames")
    if not all(isinstance(u, str) and 0 < len(u) <= MAX_USERNAME_LENGTH and is_encodable(u) for u in users):
        raise GochatError(ErrorCode.BAD_REQUEST, "users must be usernames")
    return PresenceRequest(tuple(users))


def _send_request(frame_type: str, body: dict[str, Any], max_body_length: int) -> SendRequest:
    if frame_type != "send":
        return SendRequest(
            client_msg_id=_string(body, "client_msg_id", MAX_CLIENT_MSG_ID_LENGTH),
            to="",
            body=_string(body, "body", max_body_length) if frame_type == "edit" else "",
            conv=_string(body, "conv", MAX_CONV_LENGTH),
            kind=MessageKind.EDIT if frame_type == "edit" else MessageKind.RECALL,
            ref_seq=_positive(body.get("seq"), "seq"),
        )
    has_to, has_conv = "to" in body, "conv" in body
    if has_to == has_conv:
        raise GochatError(ErrorCode.BAD_REQUEST, "send names either a recipient (to) or a conversation (conv)")
    return SendRequest(
        client_msg_id=_string(body, "client_msg_id", MAX_CLIENT_MSG_ID_LENGTH),
        to=_string(body, "to", MAX_USERNAME_LENGTH) if has_to else "",
        body=_string(body, "body", max_body_length),
        conv=_string(body, "conv", MAX_CONV_LENGTH) if has_conv else "",
    )


def _positive(value: object, name: str) -> int:
    if type(value) is not int or not 0 < value < 2**63:
        raise GochatError(ErrorCode.BAD_REQUEST, f"{name} must be a positive integer")
    return value


def _names(body: dict[str, Any], name: str, min_count: int) -> tuple[str, ...]:
    users = body.get(name, [])
    if not isinstance(users, list) or not min_count <= len(users) <= MAX_GROUP_USERS:
        raise GochatError(ErrorCode.BAD_REQUEST, f"{name} must list {min_count} to {MAX_GROUP_USERS} usernames")
    if not all(isinstance(u, str) and 0 < len(u) <= MAX_USERNAME_LENGTH and is_encodable(u) for u in users):
        raise GochatError(ErrorCode.BAD_REQUEST, f"{name} must be usernames")
    return tuple(users)


def _role(body: dict[str, Any], default: str | None = None) -> str:
    role = body.get("role", default)
    if role not in GroupRole.ALL:
        raise GochatError(ErrorCode.BAD_REQUEST, f"role must be one of {list(GroupRole.ALL)}")
    return str(role)


def _optional_seq(body: dict[str, Any], name: str) -> int | None:
    return None if body.get(name) is None else _seq(body[name], name)


def _history_request(body: dict[str, Any]) -> HistoryRequest:
    limit = body.get("limit", DEFAULT_HISTORY_LIMIT)
    if type(limit) is not int or not 1 <= limit <= MAX_HISTORY_LIMIT:
        raise GochatError(ErrorCode.BAD_REQUEST, f"limit must be an integer 1..{MAX_HISTORY_LIMIT}")
    before, after = _optional_seq(body, "before"), _optional_seq(body, "after")
    if before is not None and after is not None:
        raise GochatError(ErrorCode.BAD_REQUEST, "page either before or after a seq, not both")
    return HistoryRequest(_string(body, "conv", MAX_CONV_LENGTH), before, after, limit)


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


_PARSERS: dict[str, Callable[[dict[str, Any]], Request]] = {
    "auth": lambda b: AuthRequest(_string(b, "token", MAX_TOKEN_LENGTH)),
    "ping": lambda b: PingRequest(),
    "sync": _sync_request,
    "presence": _presence_request,
    "recv_ack": lambda b: RecvAckRequest(_string(b, "conv", MAX_CONV_LENGTH), _seq(b.get("seq"), "seq")),
    "group_create": lambda b: GroupCreateRequest(_string(b, "name", MAX_GROUP_NAME_LENGTH), _names(b, "members", 0)),
    "group_add": lambda b: GroupAddRequest(
        _positive(b.get("group_id"), "group_id"), _names(b, "users", 1), _role(b, GroupRole.MEMBER)
    ),
    "group_remove": lambda b: GroupRemoveRequest(
        _positive(b.get("group_id"), "group_id"), _string(b, "user", MAX_USERNAME_LENGTH)
    ),
    "group_role": lambda b: GroupRoleRequest(
        _positive(b.get("group_id"), "group_id"), _string(b, "user", MAX_USERNAME_LENGTH), _role(b)
    ),
    "group_leave": lambda b: GroupLeaveRequest(_positive(b.get("group_id"), "group_id")),
    "groups": lambda b: GroupsRequest(),
    "group_members": lambda b: GroupMembersRequest(_positive(b.get("group_id"), "group_id")),
    "history": _history_request,
    "read": lambda b: ReadRequest(_string(b, "conv", MAX_CONV_LENGTH), _seq(b.get("seq"), "seq")),
    "typing": lambda b: TypingRequest(_string(b, "conv", MAX_CONV_LENGTH)),
    "conversations": lambda b: ConversationsRequest(),
}


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
    """A stored message as clients see it, in ``push``, ``sync_ok`` and ``history_ok``.

    ``kind`` says what it is (``text``, or an ``edit``/``recall`` of the
    message at ``ref_seq``, or a group ``member`` change whose body is a JSON
    object).
    """
    body = {
        "msg_id": str(message.msg_id),
        "conv": message.conv,
        "seq": message.seq,
        "from": message.sender,
        "client_msg_id": message.client_msg_id,
        "body": message.body,
        "ts": message.ts,
        "kind": message.kind,
    }
    if message.ref_seq:
        body["ref_seq"] = message.ref_seq
    return body


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


def encode_signal(signal: Signal) -> bytes:
    """``typing`` (someone is typing in ``conv``) or ``receipt`` (someone has read ``conv`` up to ``seq``)."""
    if signal.kind == SignalKind.TYPING:
        return encode_frame("typing", {"conv": signal.conv, "from": signal.username, "ts": signal.ts})
    if signal.kind == SignalKind.PRESENCE:
        status = "online" if signal.seq else "offline"
        return encode_frame("presence", {"user": signal.username, "status": status, "ts": signal.ts})
    return encode_frame("receipt", {"conv": signal.conv, "from": signal.username, "seq": signal.seq, "ts": signal.ts})


def group_body(group: GroupInfo) -> dict[str, Any]:
    """A group as its members see it."""
    return {
        "group_id": group.group_id,
        "conv": group.conv,
        "name": group.name,
        "members": group.member_count,
        "role": group.role,
        "created_at": group.created_at,
    }


def member_body(member: MemberInfo) -> dict[str, Any]:
    """One member of a group."""
    return {"user": member.username, "role": member.role, "joined_seq": member.joined_seq}


def history_body(page: HistoryPage) -> dict[str, Any]:
    """The ``history_ok`` body: messages in seq order and each member's read seq."""
    return {"conv": page.conv, "messages": [message_body(m) for m in page.messages], "reads": dict(page.reads)}


def conversation_body(info: ConversationInfo) -> dict[str, Any]:
    """One entry of ``conversations_ok``."""
    return {
        "conv": info.conv,
        "title": info.title,
        "last_seq": info.last_seq,
        "read_seq": info.read_seq,
        "unread": info.unread,
    }
