"""The values that cross between gateway and logic, whatever carries them.

Plain frozen dataclasses: the in-process logic client passes them as they
are, the gRPC bridge turns them into protobuf messages and back.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    """A client's request to send ``body`` to the user named ``to_username``."""

    sender_id: int
    sender: str
    gateway_id: str
    session_id: str
    client_msg_id: str
    to_username: str
    body: str


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


@dataclass(frozen=True)
class Delivery:
    """A message for the sessions one gateway holds; the gateway frames it once."""

    gateway_id: str
    session_ids: tuple[str, ...]
    message: StoredMessage


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
