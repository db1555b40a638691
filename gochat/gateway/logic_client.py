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

from gochat.model import Ack, Delivery, Identity, LoginResult, SendCommand, SyncResult

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
