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

    def check(self, request: PersistRequest) -> None:
        """Raise ``bad_request`` unless *request* can be stored exactly as it is.

        Called before a request is queued, so that a message the store would
        refuse is refused alone, at once, and never fails the batch it would
        have shared with others (which the batch writer would retry forever).
        """

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

    def messages_before(self, conv: str, before_seq: int, limit: int) -> Deferred[list[StoredMessage]]:
        """Up to *limit* messages of *conv* with seq below *before_seq*: the newest such, in seq order."""

    def message_at(self, conv: str, seq: int) -> Deferred[StoredMessage | None]:
        """The message of *conv* at *seq*, if stored."""

    def mark_read(self, user_id: int, conv: str, seq: int) -> Deferred[int]:
        """Raise *user_id*'s read seq of *conv* to *seq* (never lower, never past the user's last seq).

        Fires with the read seq now stored; 0 if the user has no such conversation.
        """

    def join(self, user_ids: Sequence[int], conv: str, seq: int) -> Deferred[None]:
        """Enter *conv* in each user's index as seen, acknowledged and read up to *seq* (members joining a group).

        One statement for all of them, in one transaction.

        Never lowers what is stored: a member who left and rejoins keeps
        their positions if they are further.
        """

    def read_positions(self, conv: str) -> Deferred[dict[int, int]]:
        """The read seq of every user who has *conv* in their index."""


@dataclass(frozen=True)
class ConversationState:
    """One of a user's conversations: its newest seq (for this user), and how far the user received and read it.

    ``unread`` counts the text messages of others between ``read_seq`` and ``last_seq``.
    """

    conv: str
    last_seq: int
    acked_seq: int
    read_seq: int = 0
    unread: int = 0


@dataclass(frozen=True)
class Group:
    """A stored group."""

    group_id: int
    name: str
    created_at: float


@dataclass(frozen=True)
class Member:
    """A stored membership: who, with which role, seeing the group's messages above ``joined_seq``."""

    user_id: int
    username: str
    role: str
    joined_seq: int


class IGroupStore(Protocol):
    """Groups and their members. Each call is atomic."""

    def create(self, name: str, members: Sequence[Member], created_at: float) -> Deferred[Group]:
        """Store a new group with *members* (one of them the owner)."""

    def get(self, group_id: int) -> Deferred[Group | None]:
        """The group, if it exists."""

    def members(self, group_id: int) -> Deferred[list[Member]]:
        """Every member of the group, in the order they joined (empty for an unknown group)."""

    def member(self, group_id: int, user_id: int) -> Deferred[Member | None]:
        """*user_id*'s membership of the group, if any."""

    def add_members(self, group_id: int, members: Sequence[Member], max_members: int) -> Deferred[list[Member]]:
        """Add those of *members* not in the group yet; fires with the ones added.

        Fails with ``group_full`` and adds nobody if the group would have more
        than *max_members*.
        """

    def remove_member(self, group_id: int, user_id: int) -> Deferred[bool]:
        """Remove a member; fires with whether they were one."""

    def set_role(self, group_id: int, user_id: int, role: str) -> Deferred[bool]:
        """Change a member's role; fires with whether they are a member."""

    def groups_of(self, user_id: int) -> Deferred[list[tuple[Group, Member, int]]]:
        """Every group *user_id* belongs to, with their membership and the group's member count, by group id."""


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
