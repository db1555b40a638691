"""In-process implementations of logic's outside worlds.

The route store and delivery bus serve the embedded default; the account
and message stores serve the tests (the embedded default keeps those in
SQLite). Same semantics as the Redis, RabbitMQ and database adapters: every
call returns a Deferred, deliveries for one gateway reach its subscribers in
publish order, a batch of messages commits all or nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

from gochat.errors import ErrorCode, GochatError
from gochat.logic.interfaces import (
    Account,
    ConversationState,
    DeliveryHandler,
    Group,
    Member,
    Route,
    StaleSequenceError,
)
from gochat.logic.sequencing import Assignment, assign_seqs, conversation_heads
from gochat.model import Delivery, MessageKind, PersistRequest, StoredMessage

_log = Logger()


class InMemoryRouteStore:
    """:class:`~gochat.logic.interfaces.IRouteStore` in a dict."""

    def __init__(self) -> None:
        self._routes: dict[int, set[Route]] = defaultdict(set)

    def add(self, user_id: int, route: Route) -> Deferred[None]:
        self._routes[user_id].add(route)
        return succeed(None)

    def remove(self, user_id: int, route: Route) -> Deferred[None]:
        routes = self._routes.get(user_id)
        if routes is not None:
            routes.discard(route)
            if not routes:
                del self._routes[user_id]
        return succeed(None)

    def online(self, user_ids: Iterable[int]) -> Deferred[dict[int, bool]]:
        return succeed({uid: bool(self._routes.get(uid)) for uid in user_ids})

    def refresh(self, gateway_id: str, sessions: Sequence[tuple[int, str]], now: float) -> Deferred[None]:
        for user_id, session_id in sessions:
            self._routes[user_id].add(Route(gateway_id, session_id))
        return succeed(None)

    def routes(self, user_ids: Iterable[int]) -> Deferred[dict[int, set[Route]]]:
        return succeed({uid: set(self._routes.get(uid, ())) for uid in user_ids})


class _Subscription:
    def __init__(self, bus: InMemoryDeliveryBus, gateway_id: str, handler: DeliveryHandler) -> None:
        self._bus = bus
        self.gateway_id = gateway_id
        self.handler = handler

    def cancel(self) -> None:
        self._bus._unsubscribe(self)


class InMemoryDeliveryBus:
    """:class:`~gochat.logic.interfaces.IDeliveryBus` that calls subscribers directly.

    A delivery for a gateway with no subscriber is dropped and logged: with
    no gateway listening there is no session to write to, and recipients
    recover what they missed by sync.
    """

    def __init__(self) -> None:
        self._subscribers: dict[str, list[_Subscription]] = defaultdict(list)

    def publish(self, delivery: Delivery) -> Deferred[None]:
        subscribers = self._subscribers.get(delivery.gateway_id)
        if not subscribers:
            _log.info(
                "no subscriber for gateway {gateway_id}; delivery left to sync",
                gateway_id=delivery.gateway_id,
            )
            return succeed(None)
        for subscription in list(subscribers):
            try:
                subscription.handler(delivery)
            except Exception:
                _log.failure("delivery handler for gateway {gateway_id} failed", gateway_id=delivery.gateway_id)
        return succeed(None)

    def subscribe(self, gateway_id: str, handler: DeliveryHandler) -> _Subscription:
        subscription = _Subscription(self, gateway_id, handler)
        self._subscribers[gateway_id].append(subscription)
        return subscription

    def _unsubscribe(self, subscription: _Subscription) -> None:
        subscribers = self._subscribers.get(subscription.gateway_id, [])
        if subscription in subscribers:
            subscribers.remove(subscription)
        if not subscribers:
            self._subscribers.pop(subscription.gateway_id, None)


class InMemoryAccountStore:
    """:class:`~gochat.logic.interfaces.IAccountStore` in dicts."""

    def __init__(self) -> None:
        self._by_name: dict[str, Account] = {}
        self._by_id: dict[int, Account] = {}

    def create(self, username: str, password_hash: str, created_at: float) -> Deferred[int]:
        if username in self._by_name:
            return fail(GochatError(ErrorCode.USERNAME_TAKEN, f"{username!r} is taken"))
        account = Account(len(self._by_id) + 1, username, password_hash)
        self._by_name[username] = account
        self._by_id[account.user_id] = account
        return succeed(account.user_id)

    def by_name(self, username: str) -> Deferred[Account | None]:
        return succeed(self._by_name.get(username))

    def by_id(self, user_id: int) -> Deferred[Account | None]:
        return succeed(self._by_id.get(user_id))


class InMemoryMessageStore:
    """:class:`~gochat.logic.interfaces.IMessageStore` in dicts; a batch commits at once, all or nothing."""

    def __init__(self) -> None:
        self.messages: dict[int, StoredMessage] = {}
        self._by_client_id: dict[tuple[int, str], StoredMessage] = {}
        self._last_seq: dict[str, int] = {}
        self._by_seq: dict[tuple[str, int], StoredMessage] = {}
        #: (user_id, conv) -> [last_seq, acked_seq, read_seq]: the per-user index.
        self._heads: dict[tuple[int, str], list[int]] = {}
        self.batches = 0

    def check(self, request: PersistRequest) -> None:
        """Anything fits in a dict."""

    def commit_batch(
        self, requests: Sequence[PersistRequest], known_last_seq: Mapping[str, int]
    ) -> Deferred[Assignment]:
        keys = {(r.sender_id, r.client_msg_id) for r in requests}
        existing = {key: self._by_client_id[key] for key in keys if key in self._by_client_id}
        last = {r.conv: known_last_seq.get(r.conv, self._last_seq.get(r.conv, 0)) for r in requests}
        assignment = assign_seqs(requests, existing, last)
        for message in assignment.new:
            if message.seq <= self._last_seq.get(message.conv, 0):
                return fail(StaleSequenceError(f"seq {message.seq} of {message.conv} is taken"))
        for message in assignment.new:
            self.messages[message.msg_id] = message
            self._by_client_id[(message.sender_id, message.client_msg_id)] = message
            self._by_seq[(message.conv, message.seq)] = message
            self._last_seq[message.conv] = message.seq
        for key, seq in conversation_heads(requests, assignment.new).items():
            head = self._heads.setdefault(key, [0, 0, 0])
            head[0] = max(head[0], seq)
        self.batches += 1
        return succeed(assignment)

    def by_client_msg_id(self, sender_id: int, client_msg_id: str) -> Deferred[StoredMessage | None]:
        return succeed(self._by_client_id.get((sender_id, client_msg_id)))

    def last_seq(self, conv: str) -> Deferred[int]:
        return succeed(self._last_seq.get(conv, 0))

    def conversations(self, user_id: int) -> Deferred[list[ConversationState]]:
        return succeed(
            [
                ConversationState(conv, last, acked, read, self._unread(user_id, conv, read, last))
                for (uid, conv), (last, acked, read) in sorted(self._heads.items())
                if uid == user_id
            ]
        )

    def _unread(self, user_id: int, conv: str, read_seq: int, last_seq: int) -> int:
        found = (self._by_seq.get((conv, seq)) for seq in range(read_seq + 1, last_seq + 1))
        return sum(1 for m in found if m is not None and m.kind == MessageKind.TEXT and m.sender_id != user_id)

    def messages_after(self, conv: str, after_seq: int, limit: int) -> Deferred[list[StoredMessage]]:
        found: list[StoredMessage] = []
        seq = after_seq + 1
        while len(found) < limit and (conv, seq) in self._by_seq:
            found.append(self._by_seq[(conv, seq)])
            seq += 1
        return succeed(found)

    def record_received(self, user_id: int, conv: str, seq: int) -> Deferred[None]:
        head = self._heads.get((user_id, conv))
        if head is not None:
            head[1] = max(head[1], min(seq, head[0]))
        return succeed(None)

    def messages_before(self, conv: str, before_seq: int, limit: int) -> Deferred[list[StoredMessage]]:
        found: list[StoredMessage] = []
        seq = min(before_seq, self._last_seq.get(conv, 0) + 1) - 1
        while len(found) < limit and (conv, seq) in self._by_seq:
            found.append(self._by_seq[(conv, seq)])
            seq -= 1
        return succeed(found[::-1])

    def message_at(self, conv: str, seq: int) -> Deferred[StoredMessage | None]:
        return succeed(self._by_seq.get((conv, seq)))

    def mark_read(self, user_id: int, conv: str, seq: int) -> Deferred[int]:
        head = self._heads.get((user_id, conv))
        if head is None:
            return succeed(0)
        head[2] = max(head[2], min(seq, head[0]))
        return succeed(head[2])

    def join(self, user_ids: Sequence[int], conv: str, seq: int) -> Deferred[None]:
        for user_id in user_ids:
            head = self._heads.setdefault((user_id, conv), [0, 0, 0])
            for i in range(3):
                head[i] = max(head[i], seq)
        return succeed(None)

    def read_positions(self, conv: str) -> Deferred[dict[int, int]]:
        return succeed({uid: head[2] for (uid, c), head in self._heads.items() if c == conv})


class InMemoryGroupStore:
    """:class:`~gochat.logic.interfaces.IGroupStore` in dicts."""

    def __init__(self) -> None:
        self._groups: dict[int, Group] = {}
        #: group_id -> user_id -> Member, in the order they joined (dicts keep insertion order).
        self._members: dict[int, dict[int, Member]] = {}

    def create(self, name: str, members: Sequence[Member], created_at: float) -> Deferred[Group]:
        group = Group(len(self._groups) + 1, name, created_at)
        self._groups[group.group_id] = group
        self._members[group.group_id] = {m.user_id: m for m in members}
        return succeed(group)

    def get(self, group_id: int) -> Deferred[Group | None]:
        return succeed(self._groups.get(group_id))

    def members(self, group_id: int) -> Deferred[list[Member]]:
        return succeed(list(self._members.get(group_id, {}).values()))

    def member(self, group_id: int, user_id: int) -> Deferred[Member | None]:
        return succeed(self._members.get(group_id, {}).get(user_id))

    def add_members(self, group_id: int, members: Sequence[Member], max_members: int) -> Deferred[list[Member]]:
        current = self._members.get(group_id)
        if current is None:
            return succeed([])
        fresh = list({m.user_id: m for m in members if m.user_id not in current}.values())
        if len(current) + len(fresh) > max_members:
            return fail(GochatError(ErrorCode.GROUP_FULL, f"a group has at most {max_members} members"))
        for member in fresh:
            current[member.user_id] = member
        return succeed(fresh)

    def remove_member(self, group_id: int, user_id: int) -> Deferred[bool]:
        return succeed(self._members.get(group_id, {}).pop(user_id, None) is not None)

    def set_role(self, group_id: int, user_id: int, role: str) -> Deferred[bool]:
        current = self._members.get(group_id, {})
        member = current.get(user_id)
        if member is None:
            return succeed(False)
        current[user_id] = Member(member.user_id, member.username, role, member.joined_seq)
        return succeed(True)

    def groups_of(self, user_id: int) -> Deferred[list[tuple[Group, Member, int]]]:
        return succeed(
            [
                (self._groups[group_id], members[user_id], len(members))
                for group_id, members in sorted(self._members.items())
                if user_id in members
            ]
        )
