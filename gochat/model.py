"""The values that cross between gateway and logic, whatever carries them.

Plain frozen dataclasses: the in-process logic client passes them as they
are, the gRPC bridge turns them into protobuf messages and back.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class MessageKind:
    """What a stored message is: text, or an event that changes an earlier message or the group.

    Events are messages of their conversation with their own seq, so one
    cursor per conversation syncs text and changes alike; ``ref_seq`` names
    the message an edit or recall changes.
    """

    TEXT = "text"
    EDIT = "edit"
    RECALL = "recall"
    #: A membership change of a group; the body is a JSON object (``action``, ``user``, ``by``, ``role``).
    MEMBER = "member"

    ALL = frozenset({TEXT, EDIT, RECALL, MEMBER})
    #: The kinds a client may send; ``member`` events are written by logic only.
    FROM_CLIENTS = frozenset({TEXT, EDIT, RECALL})


@dataclass(frozen=True)
class Identity:
    """Who an authenticated session belongs to."""

    user_id: int
    username: str


@dataclass(frozen=True)
class LoginResult:
    """A successful login: the bearer token and when it stops being valid."""

    user_id: int
    token: str
    expires_at: float


@dataclass(frozen=True)
class SendCommand:
    """A client's request to send ``body`` to the user named ``to_username``, or into the conversation ``conv``.

    Exactly one of ``to_username`` and ``conv`` is set. ``kind`` is text, or
    an edit or recall of the sender's own message ``ref_seq`` of ``conv``.
    """

    sender_id: int
    sender: str
    gateway_id: str
    session_id: str
    client_msg_id: str
    to_username: str
    body: str
    conv: str = ""
    kind: str = MessageKind.TEXT
    ref_seq: int = 0


@dataclass(frozen=True)
class Ack:
    """The sender's receipt, given only once the message is durable."""

    client_msg_id: str
    msg_id: int
    conv: str
    seq: int
    ts: int


@dataclass(frozen=True)
class StoredMessage:
    """One message as stored and as recipients see it; ``ts`` is in milliseconds."""

    msg_id: int
    conv: str
    seq: int
    sender_id: int
    sender: str
    client_msg_id: str
    body: str
    ts: int
    kind: str = MessageKind.TEXT
    ref_seq: int = 0

    def ack(self) -> Ack:
        """The sender's ack for this message."""
        return Ack(self.client_msg_id, self.msg_id, self.conv, self.seq, self.ts)


@dataclass(frozen=True)
class PersistRequest:
    """A message on its way to the store, before it has a seq.

    The persist worker gives it the next seq of its conversation in the same
    transaction that stores it; ``participants`` and the origin session say
    whom to deliver it to once committed.
    """

    msg_id: int
    conv: str
    sender_id: int
    sender: str
    client_msg_id: str
    body: str
    ts: int
    participants: tuple[int, ...]
    origin_gateway: str
    origin_session: str
    kind: str = MessageKind.TEXT
    ref_seq: int = 0


class SignalKind:
    """Ephemeral events: told to whoever is online, never stored."""

    TYPING = "typing"
    READ = "read"
    #: A contact came online (``seq`` 1) or went offline (``seq`` 0); ``conv`` is empty.
    PRESENCE = "presence"


@dataclass(frozen=True)
class Signal:
    """An ephemeral event about a conversation: *username* is typing, or has read it up to ``seq``."""

    kind: str
    conv: str
    user_id: int
    username: str
    seq: int
    ts: int


@dataclass(frozen=True)
class Delivery:
    """A stored message or a signal for the sessions one gateway holds; the gateway frames it once.

    ``user_ids[i]`` is the user ``session_ids[i]`` was routed for: the
    gateway writes only to a session that still belongs to that user, so a
    stale route can never leak a message. Exactly one of ``message`` and
    ``signal`` is set.
    """

    gateway_id: str
    session_ids: tuple[str, ...]
    user_ids: tuple[int, ...]
    message: StoredMessage | None
    signal: Signal | None = None


@dataclass(frozen=True)
class ConversationSync:
    """What a reconnecting client missed in one conversation.

    ``messages`` follow the client's position in seq order; ``complete``
    says they reach ``last_seq``, the conversation's newest seq when the sync
    was read (else the client syncs again from the last one it got).
    """

    conv: str
    last_seq: int
    messages: tuple[StoredMessage, ...]
    complete: bool


@dataclass(frozen=True)
class SyncResult:
    """Every conversation in which the client is behind; ``complete`` if each of them is."""

    conversations: tuple[ConversationSync, ...]

    @property
    def complete(self) -> bool:
        return all(c.complete for c in self.conversations)


class GroupRole:
    """A member's role in a group, from most to least powerful."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"

    ALL = (OWNER, ADMIN, MEMBER)


@dataclass(frozen=True)
class GroupInfo:
    """A group as a member sees it: its conversation key, name, size and the member's own role."""

    group_id: int
    conv: str
    name: str
    created_at: float
    member_count: int
    role: str


@dataclass(frozen=True)
class MemberInfo:
    """One member of a group; they see the group's messages with seq above ``joined_seq``."""

    user_id: int
    username: str
    role: str
    joined_seq: int


@dataclass(frozen=True)
class ConversationInfo:
    """One entry of a user's conversation list: newest seq, how far the user has read, and what is unread."""

    conv: str
    title: str
    last_seq: int
    read_seq: int
    unread: int


@dataclass(frozen=True)
class HistoryPage:
    """A page of a conversation in seq order, and how far each member has read it (by username)."""

    conv: str
    messages: tuple[StoredMessage, ...]
    reads: dict[str, int] = field(default_factory=dict)
