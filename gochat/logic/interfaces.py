"""One interface per outside world logic talks to.

Each has an in-memory or embedded implementation in this package (used by
the embedded default and the tests) and, for production, an adapter over the
real service behind the same interface.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred

from gochat.logic.sequencing import Assignment
from gochat.model import Delivery, PersistRequest, StoredMessage


@dataclass(frozen=True)
class Account:
    """A stored user account."""

    user_id: int
    username: str
    password_hash: str


@dataclass(frozen=True, order=True)
class Route:
    """Where one live session of a user is: which gateway, which session there."""

    gateway_id: str
    session_id: str


class IAccountStore(Protocol):
    """Users and their password hashes."""

    def create(self, username: str, password_hash: str, created_at: float) -> Deferred[int]:
        """Store a new account; fails with ``username_taken`` if the name exists."""

    def by_name(self, username: str) -> Deferred[Account | None]:
        """The account called *username*, if any."""

    def by_id(self, user_id: int) -> Deferred[Account | None]:
        """The account with id *user_id*, if any."""


class IMessageStore(Protocol):
    """Durable messages, ordered by seq within each conversation."""

    def commit_batch(
        self, requests: Sequence[PersistRequest], known_last_seq: Mapping[str, int]
    ) -> Deferred[Assignment]:
        """Store a batch in one transaction, seqs assigned by :func:`~gochat.logic.sequencing.assign_seqs`.

        Requests already stored (same sender and client message id) are not
        stored again and come back as the stored message. *known_last_seq* is
        the caller's cache of last seqs; conversations missing from it are
        read from the store inside the transaction. If the cache was stale
        (another writer stored a seq since), the transaction fails with
        :class:`StaleSequenceError` and stores nothing.
        """

    def by_client_msg_id(self, sender_id: int, client_msg_id: str) -> Deferred[StoredMessage | None]:
        """The message a sender stored under a client message id, if any."""

    def last_seq(self, conv: str) -> Deferred[int]:
        """The highest stored seq of *conv*, 0 if it has none."""

    def conversations(self, user_id: int) -> Deferred[list[ConversationState]]:
        """Every conversation *user_id* takes part in, kept up to date by :meth:`commit_batch`."""

    def messages_after(self, conv: str, after_seq: int, limit: int) -> Deferred[list[StoredMessage]]:
        """Up to *limit* messages of *conv* with seq above *after_seq*, in seq order."""

    def record_received(self, user_id: int, conv: str, seq: int) -> Deferred[None]:
        """Raise *user_id*'s acknowledged seq of *conv* to *seq* (never lower it, never past the last seq)."""


@dataclass(frozen=True)
class ConversationState:
    """One of a user's conversations: its newest seq and the highest seq the user acknowledged receiving."""

    conv: str
    last_seq: int
    acked_seq: int


class StaleSequenceError(Exception):
    """A batch's seqs collided with stored ones: the writer's cache of last seqs is out of date."""


class IRouteStore(Protocol):
    """Which sessions each user has open, and on which gateway."""

    def add(self, user_id: int, route: Route) -> Deferred[None]:
        """Record a live session."""

    def remove(self, user_id: int, route: Route) -> Deferred[None]:
        """Forget a session."""

    def routes(self, user_ids: Iterable[int]) -> Deferred[dict[int, set[Route]]]:
        """The live sessions of each of *user_ids*."""

    def online(self, user_ids: Iterable[int]) -> Deferred[dict[int, bool]]:
        """Whether each of *user_ids* has at least one live session (presence, aggregated over devices)."""

    def refresh(self, gateway_id: str, sessions: Sequence[tuple[int, str]], now: float) -> Deferred[None]:
        """Keep alive (and restore, if lost) the routes of every ``(user_id, session_id)`` live on *gateway_id*."""


DeliveryHandler = Callable[[Delivery], None]


class DeliverySubscription(Protocol):
    """A gateway's live subscription."""

    def cancel(self) -> None:
        """Stop receiving deliveries."""


class IDeliveryBus(Protocol):
    """Carries deliveries from logic to the gateway that holds the recipient's session."""

    def publish(self, delivery: Delivery) -> Deferred[None]:
        """Send *delivery* to its gateway; in order with earlier publishes to the same gateway."""

    def subscribe(self, gateway_id: str, handler: DeliveryHandler) -> DeliverySubscription:
        """Call *handler* with each delivery for *gateway_id* until cancelled."""


class IPersistQueue(Protocol):
    """Hands a message to the persist worker and waits until it is committed.

    In-process in the embedded default; over a durable RabbitMQ queue with
    publisher confirms in production.
    """

    def submit(self, request: PersistRequest) -> Deferred[StoredMessage]:
        """Fires with the stored message (seq assigned) once it is committed."""
