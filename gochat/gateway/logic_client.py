"""What the gateway needs from logic, and the in-process way to get it.

:class:`ILogicClient` is the gateway's one view of the logic service. Two
implementations stand behind it: :class:`LocalLogicClient` here calls a
:class:`~gochat.logic.chat.ChatLogic` in the same process (the embedded
default and the tests), and :class:`~gochat.grpc_bridge.GrpcLogicClient`
calls a logic process over gRPC. Both return Deferreds and raise
:class:`~gochat.errors.GochatError` the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred, succeed

from gochat.model import (
    Ack,
    ConversationInfo,
    Delivery,
    GroupInfo,
    HistoryPage,
    Identity,
    LoginResult,
    MemberInfo,
    SendCommand,
    SyncResult,
)

if TYPE_CHECKING:
    from gochat.logic.chat import ChatLogic

DeliveryHandler = Callable[[Delivery], None]


class Subscription(Protocol):
    """A live subscription to a gateway's deliveries."""

    def cancel(self) -> None:
        """Stop receiving deliveries."""


class ILogicClient(Protocol):
    """The logic service as the gateway sees it."""

    def register(self, username: str, password: str) -> Deferred[int]:
        """Create an account; fires with the new user id."""

    def login(self, username: str, password: str) -> Deferred[LoginResult]:
        """Check a password; fires with a signed, expiring token."""

    def connect(self, token: str, gateway_id: str, session_id: str) -> Deferred[Identity]:
        """Validate a session's token and route the user's deliveries to it."""

    def disconnect(self, identity: Identity, gateway_id: str, session_id: str) -> Deferred[None]:
        """Stop routing deliveries to a closed session."""

    def send(self, command: SendCommand) -> Deferred[Ack]:
        """Store a message; fires with the sender's ack once it is durable."""

    def sync(self, user_id: int, since: Mapping[str, int] | None, limit: int) -> Deferred[SyncResult]:
        """What the user missed, per conversation (see :meth:`ChatLogic.sync`)."""

    def record_received(self, user_id: int, conv: str, seq: int) -> Deferred[None]:
        """The user has every message of *conv* up to *seq*."""

    def refresh_routes(self, gateway_id: str, sessions: Sequence[tuple[int, str]]) -> Deferred[None]:
        """Report this gateway's live ``(user_id, session_id)`` pairs, keeping their routes alive."""

    def presence(self, user_id: int, usernames: Sequence[str]) -> Deferred[dict[str, bool]]:
        """Whether each named contact of the user is online."""

    def subscribe(self, gateway_id: str, handler: DeliveryHandler) -> Subscription:
        """Call *handler* with every delivery addressed to *gateway_id*, in order."""

    def create_group(self, identity: Identity, name: str, usernames: Sequence[str]) -> Deferred[GroupInfo]:
        """Create a group owned by the user, with the named users as members."""

    def add_members(
        self, identity: Identity, group_id: int, usernames: Sequence[str], role: str
    ) -> Deferred[list[MemberInfo]]:
        """Add users to a group (owner or admin only); fires with those added."""

    def remove_member(self, identity: Identity, group_id: int, username: str) -> Deferred[None]:
        """Remove a member (owner: anyone; admin: plain members)."""

    def set_role(self, identity: Identity, group_id: int, username: str, role: str) -> Deferred[None]:
        """Change a member's role (owner only; giving ``owner`` transfers ownership)."""

    def leave_group(self, identity: Identity, group_id: int) -> Deferred[None]:
        """Leave a group; an owner who leaves hands ownership on."""

    def groups(self, user_id: int) -> Deferred[list[GroupInfo]]:
        """The user's groups."""

    def members(self, user_id: int, group_id: int) -> Deferred[list[MemberInfo]]:
        """A group's members, for a member."""

    def history(
        self, user_id: int, conv: str, before: int | None, after: int | None, limit: int
    ) -> Deferred[HistoryPage]:
        """A page of a conversation by seq, for a member."""

    def mark_read(self, identity: Identity, conv: str, seq: int, gateway_id: str, session_id: str) -> Deferred[int]:
        """The user has read *conv* up to *seq*; the other members and the user's other sessions are told."""

    def typing(self, identity: Identity, conv: str) -> Deferred[None]:
        """Tell the conversation's other online members that the user is typing."""

    def conversation_list(self, user_id: int) -> Deferred[list[ConversationInfo]]:
        """The user's conversations with their unread counts."""


class LocalLogicClient:
    """:class:`ILogicClient` over a :class:`ChatLogic` in this process."""

    def __init__(self, logic: ChatLogic) -> None:
        self._logic = logic

    def register(self, username: str, password: str) -> Deferred[int]:
        return self._logic.register(username, password)

    def login(self, username: str, password: str) -> Deferred[LoginResult]:
        return self._logic.login(username, password)

    def connect(self, token: str, gateway_id: str, session_id: str) -> Deferred[Identity]:
        return self._logic.connect(token, gateway_id, session_id)

    def disconnect(self, identity: Identity, gateway_id: str, session_id: str) -> Deferred[None]:
        self._logic.disconnect(identity, gateway_id, session_id)
        return succeed(None)

    def send(self, command: SendCommand) -> Deferred[Ack]:
        return self._logic.send(command)

    def sync(self, user_id: int, since: Mapping[str, int] | None, limit: int) -> Deferred[SyncResult]:
        return self._logic.sync(user_id, since, limit)

    def record_received(self, user_id: int, conv: str, seq: int) -> Deferred[None]:
        return self._logic.record_received(user_id, conv, seq)

    def refresh_routes(self, gateway_id: str, sessions: Sequence[tuple[int, str]]) -> Deferred[None]:
        return self._logic.refresh_routes(gateway_id, sessions)

    def presence(self, user_id: int, usernames: Sequence[str]) -> Deferred[dict[str, bool]]:
        return self._logic.presence(user_id, usernames)

    def subscribe(self, gateway_id: str, handler: DeliveryHandler) -> Subscription:
        return self._logic.deliveries.subscribe(gateway_id, handler)

    def create_group(self, identity: Identity, name: str, usernames: Sequence[str]) -> Deferred[GroupInfo]:
        return self._logic.create_group(identity, name, usernames)

    def add_members(
        self, identity: Identity, group_id: int, usernames: Sequence[str], role: str
    ) -> Deferred[list[MemberInfo]]:
        return self._logic.add_members(identity, group_id, usernames, role)

    def remove_member(self, identity: Identity, group_id: int, username: str) -> Deferred[None]:
        return self._logic.remove_member(identity, group_id, username)

    def set_role(self, identity: Identity, group_id: int, username: str, role: str) -> Deferred[None]:
        return self._logic.set_role(identity, group_id, username, role)

    def leave_group(self, identity: Identity, group_id: int) -> Deferred[None]:
        return self._logic.leave_group(identity, group_id)

    def groups(self, user_id: int) -> Deferred[list[GroupInfo]]:
        return self._logic.groups(user_id)

    def members(self, user_id: int, group_id: int) -> Deferred[list[MemberInfo]]:
        return self._logic.members(user_id, group_id)

    def history(
        self, user_id: int, conv: str, before: int | None, after: int | None, limit: int
    ) -> Deferred[HistoryPage]:
        return self._logic.history(user_id, conv, before, after, limit)

    def mark_read(self, identity: Identity, conv: str, seq: int, gateway_id: str, session_id: str) -> Deferred[int]:
        return self._logic.mark_read(identity, conv, seq, gateway_id, session_id)

    def typing(self, identity: Identity, conv: str) -> Deferred[None]:
        return self._logic.typing(identity, conv)

    def conversation_list(self, user_id: int) -> Deferred[list[ConversationInfo]]:
        return self._logic.conversation_list(user_id)
