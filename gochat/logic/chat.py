"""The chat rules: accounts, sessions, groups, and ordered, durable, idempotent messages.

:class:`ChatLogic` is the one implementation of these rules; the embedded
default and production differ only in the stores and bus passed in.

The send path keeps the delivery contract:

1. a retried send (same sender, same ``client_msg_id``) joins the first
   attempt while it is in flight in this process;
2. the message goes to the persist queue, whose worker stores it with the
   conversation's next seq in one transaction, or finds it already stored (a
   retry through another process, a redelivery) and returns it unchanged;
3. the ack is returned only once that transaction has committed, and only if
   the stored message is this one (a reused id for another message is
   refused);
4. deliveries go out from the worker after the commit, in seq order (see
   :mod:`gochat.logic.delivery`).

Groups are written by diffusion: a group message is stored once, and the
same transaction raises the head of that conversation in every member's
index (``participants`` of the request are the members when it was sent),
so one sync request per user finds everything. Membership changes, edits and
recalls are messages of their conversation too (kinds ``member``, ``edit``,
``recall``), with their own seq, so a client follows one cursor per
conversation. Typing and read receipts are signals: told to whoever is
online, never stored as messages (a read position is stored in the reader's
index).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gochat.errors import ErrorCode, GochatError
from gochat.logic import delivery
from gochat.logic.interfaces import (
    IAccountStore,
    IDeliveryBus,
    IGroupStore,
    IMessageStore,
    IPersistQueue,
    IRouteStore,
    Member,
    Route,
)
from gochat.logic.presence import PresenceNotifier
from gochat.logic.sequencing import (
    MessageIdGenerator,
    direct_conversation,
    group_conversation,
    group_id_of,
    participants,
)
from gochat.logic.tokens import TokenSigner
from gochat.model import (
    Ack,
    ConversationInfo,
    ConversationSync,
    GroupInfo,
    GroupRole,
    HistoryPage,
    Identity,
    LoginResult,
    MemberInfo,
    MessageKind,
    PersistRequest,
    SendCommand,
    Signal,
    SignalKind,
    StoredMessage,
    SyncResult,
)
from gochat.text import is_encodable

_log = Logger()

USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{2,31}$")
MIN_PASSWORD_LENGTH = 8
MAX_SYNC_LIMIT = 1000
MAX_PRESENCE_NAMES = 500
MAX_CONV_LENGTH = 128
MAX_PASSWORD_LENGTH = 256
MAX_GROUP_NAME_LENGTH = 64
MAX_HISTORY_LIMIT = 200
#: The client message ids of membership events; clients may not use them.
MEMBER_EVENT_ID_PREFIX = "member:"
#: Members named in one create or add request.
MAX_NAMES_PER_REQUEST = 1000


@dataclass(frozen=True)
class ChatSettings:
    """Logic-wide settings.

    ``max_group_size`` bounds a group's members, owner included;
    ``recall_window`` and ``edit_window`` (seconds) bound how long after
    sending a sender may recall or edit a message. ``presence_grace`` is how
    long a user must stay disconnected before contacts are told they went
    offline, and groups up to ``presence_group_limit`` members share presence
    transitions (see :mod:`gochat.logic.presence`).
    """

    token_ttl: float = 24 * 3600.0
    max_body_length: int = 8192
    max_group_size: int = 2000
    recall_window: float = 120.0
    edit_window: float = 900.0
    presence_grace: float = 5.0
    presence_group_limit: int = 100


class PasswordHasher:
    """Hashes and checks passwords off the reactor thread.

    *run* runs a blocking function somewhere else and returns a Deferred of
    its result (``deferToThreadPool`` in production, a direct call in tests).
    """

    def __init__(
        self,
        run: Callable[..., Deferred[object]],
        hash_password: Callable[[str], str],
        verify_password: Callable[[str, str], bool],
    ) -> None:
        self._run = run
        self._hash = hash_password
        self._verify = verify_password

    def hash(self, password: str) -> Deferred[str]:
        return self._run(self._hash, password)  # type: ignore[return-value]

    def verify(self, password: str, encoded: str) -> Deferred[bool]:
        return self._run(self._verify, password, encoded)  # type: ignore[return-value]


def _is_valid_password_text(password: str) -> bool:
    """No control characters (scrypt ignores trailing NULs) and encodable as UTF-8 (no lone surrogates)."""
    return is_encodable(password) and not any(ord(c) < 32 or ord(c) == 127 for c in password)


def normalise_username(username: str) -> str:
    """Usernames are case-insensitive: 3-32 of ``a-z 0-9 _ . -``, starting with a letter or digit."""
    name = username.strip().lower()
    if not USERNAME_PATTERN.match(name):
        raise GochatError(
            ErrorCode.BAD_REQUEST, "username must be 3-32 characters of a-z, 0-9, '_', '.', '-', starting alphanumeric"
        )
    return name


class ChatLogic:
    """Accounts, routes and the 1:1 send path, over injected stores, bus and clock."""

    def __init__(
        self,
        accounts: IAccountStore,
        persist: IPersistQueue,
        messages: IMessageStore,
        groups: IGroupStore,
        routes: IRouteStore,
        deliveries: IDeliveryBus,
        tokens: TokenSigner,
        hasher: PasswordHasher,
        ids: MessageIdGenerator,
        clock: IReactorTime,
        settings: ChatSettings,
    ) -> None:
        self.accounts = accounts
        self.persist = persist
        self.messages = messages
        self.group_store = groups
        self.routes = routes
        self.deliveries = deliveries
        self._tokens = tokens
        self._hasher = hasher
        self._ids = ids
        self._clock = clock
        self._settings = settings
        self._in_flight: dict[tuple[int, str], list[Deferred[Ack]]] = {}
        self._ids_by_name: dict[str, int] = {}
        self._names_by_id: dict[int, str] = {}
        self.presence_notices = PresenceNotifier(
            routes,
            deliveries,
            lambda user_id: self._contacts(user_id, settings.presence_group_limit),
            clock,
            settings.presence_grace,
        )

    # Accounts.

    def register(self, username: str, password: str) -> Deferred[int]:
        """Create an account; fires with its user id."""
        return Deferred.fromCoroutine(self._register(username, password))

    async def _register(self, username: str, password: str) -> int:
        name = normalise_username(username)
        if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
            raise GochatError(
                ErrorCode.BAD_REQUEST, f"password must have {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"
            )
        if not _is_valid_password_text(password):
            raise GochatError(ErrorCode.BAD_REQUEST, "password must be valid Unicode text without control characters")
        encoded = await self._hasher.hash(password)
        return await self.accounts.create(name, encoded, self._clock.seconds())

    def login(self, username: str, password: str) -> Deferred[LoginResult]:
        """Check a password and issue a token; a wrong name and a wrong password fail alike."""
        return Deferred.fromCoroutine(self._login(username, password))

    async def _login(self, username: str, password: str) -> LoginResult:
        bad = GochatError(ErrorCode.BAD_CREDENTIALS, "wrong username or password")
        try:
            name = normalise_username(username)
        except GochatError:
            raise bad from None
        account = await self.accounts.by_name(name)
        if account is None or not await self._hasher.verify(password, account.password_hash):
            raise bad
        identity = Identity(account.user_id, account.username)
        token, expires_at = self._tokens.issue(identity, self._clock.seconds(), self._settings.token_ttl)
        return LoginResult(identity.user_id, token, expires_at)

    # Sessions.

    def connect(self, token: str, gateway_id: str, session_id: str) -> Deferred[Identity]:
        """Validate *token* and route the user's deliveries to the session."""
        return Deferred.fromCoroutine(self._connect(token, gateway_id, session_id))

    async def _connect(self, token: str, gateway_id: str, session_id: str) -> Identity:
        identity = self._tokens.verify(token, self._clock.seconds())
        await self.routes.add(identity.user_id, Route(gateway_id, session_id))
        self.presence_notices.connected(identity)
        return identity

    def disconnect(self, identity: Identity, gateway_id: str, session_id: str) -> Deferred[None]:
        """Stop routing to a session that closed."""
        d = self.routes.remove(identity.user_id, Route(gateway_id, session_id))
        return d.addCallback(lambda _: self.presence_notices.disconnected(identity))

    def refresh_routes(self, gateway_id: str, sessions: Sequence[tuple[int, str]]) -> Deferred[None]:
        """A gateway's periodic report of its live sessions: their routes stay (or come back, after a Redis loss)."""
        return self.routes.refresh(gateway_id, sessions, self._clock.seconds())

    # Messages.

    def send(self, command: SendCommand) -> Deferred[Ack]:
        """Store a message and fire with its ack once it is durable; see the module docstring."""
        try:
            self._check_send(command)
        except GochatError as error:
            return fail(error)
        key = (command.sender_id, command.client_msg_id)
        result: Deferred[Ack] = Deferred()
        waiters = self._in_flight.get(key)
        if waiters is not None:
            waiters.append(result)
            return result
        self._in_flight[key] = [result]
        Deferred.fromCoroutine(self._send(command)).addBoth(self._settle, key)
        return result

    def _check_send(self, command: SendCommand) -> None:
        if command.kind not in MessageKind.FROM_CLIENTS:
            raise GochatError(ErrorCode.BAD_REQUEST, f"kind must be one of {sorted(MessageKind.FROM_CLIENTS)}")
        if (command.kind == MessageKind.TEXT) != (command.ref_seq == 0) or command.ref_seq < 0:
            raise GochatError(
                ErrorCode.BAD_REQUEST, "edit and recall name the seq they change (ref_seq); text does not"
            )
        if bool(command.conv) == bool(command.to_username):
            raise GochatError(ErrorCode.BAD_REQUEST, "name either a recipient (to) or a conversation (conv)")
        if command.kind == MessageKind.RECALL:
            if command.body:
                raise GochatError(ErrorCode.BAD_REQUEST, "a recall has no body")
        elif not 0 < len(command.body) <= self._settings.max_body_length:
            raise GochatError(ErrorCode.BAD_REQUEST, f"body must have 1 to {self._settings.max_body_length} characters")
        if not (command.client_msg_id and is_encodable(command.body) and is_encodable(command.client_msg_id)):
            raise GochatError(ErrorCode.BAD_REQUEST, "body and client_msg_id must be valid, non-empty Unicode")
        if command.client_msg_id.startswith(MEMBER_EVENT_ID_PREFIX):
            raise GochatError(ErrorCode.BAD_REQUEST, f"client_msg_id may not start with {MEMBER_EVENT_ID_PREFIX!r}")
        if len(command.conv) > MAX_CONV_LENGTH:
            raise GochatError(ErrorCode.BAD_REQUEST, f"conv must have at most {MAX_CONV_LENGTH} characters")

    def _settle(self, outcome: Ack | Failure, key: tuple[int, str]) -> None:
        for waiter in self._in_flight.pop(key):
            if isinstance(outcome, Failure):
                waiter.errback(outcome)
            else:
                waiter.callback(outcome)

    async def _send(self, command: SendCommand) -> Ack:
        if command.conv:
            conv = command.conv
            members = await self._members_of(command.sender_id, conv)
        else:
            recipient_id = await self._user_id(command.to_username)
            conv = direct_conversation(command.sender_id, recipient_id)
            members = (command.sender_id, recipient_id)
        now = self._clock.seconds()
        if command.kind != MessageKind.TEXT:
            await self._check_change(command.sender_id, conv, command.kind, command.ref_seq, now)
        request = PersistRequest(
            msg_id=self._ids.next(now),
            conv=conv,
            sender_id=command.sender_id,
            sender=command.sender,
            client_msg_id=command.client_msg_id,
            body=command.body,
            ts=int(now * 1000),
            participants=members,
            origin_gateway=command.gateway_id,
            origin_session=command.session_id,
            kind=command.kind,
            ref_seq=command.ref_seq,
        )
        self.messages.check(request)
        stored = await self.persist.submit(request)
        if (stored.conv, stored.body, stored.kind, stored.ref_seq) != (
            request.conv,
            request.body,
            request.kind,
            request.ref_seq,
        ):
            raise GochatError(
                ErrorCode.DUPLICATE_CLIENT_MSG_ID,
                f"client_msg_id {command.client_msg_id!r} was already used for another message",
            )
        return stored.ack()

    async def _check_change(self, user_id: int, conv: str, kind: str, ref_seq: int, now: float) -> None:
        """An edit or recall must change one of the user's own text messages, within the window."""
        target = await self.messages.message_at(conv, ref_seq)
        if target is None:
            raise GochatError(ErrorCode.UNKNOWN_MESSAGE, f"{conv} has no message {ref_seq}")
        if target.kind != MessageKind.TEXT:
            raise GochatError(ErrorCode.BAD_REQUEST, f"message {ref_seq} is an event; only text can change")
        if target.sender_id != user_id:
            raise GochatError(ErrorCode.FORBIDDEN, f"only its sender may {kind} message {ref_seq}")
        window = self._settings.recall_window if kind == MessageKind.RECALL else self._settings.edit_window
        if now * 1000 - target.ts > window * 1000:
            raise GochatError(ErrorCode.TOO_LATE, f"a message can be {kind}ed for {window:g} seconds after sending")

    async def _members_of(self, user_id: int, conv: str) -> tuple[int, ...]:
        """Everyone in *conv* (its members now), if *user_id* is one of them; else ``not_member``."""
        not_member = GochatError(ErrorCode.NOT_MEMBER, f"you are not a member of {conv[:MAX_CONV_LENGTH]!r}")
        if conv.startswith("g:"):
            try:
                group_id = group_id_of(conv)
            except ValueError:
                raise not_member from None
            members = await self.group_store.members(group_id)
            ids = tuple(m.user_id for m in members)
            if user_id not in ids:
                raise not_member
            return ids
        try:
            ids = participants(conv)
        except ValueError:
            raise not_member from None
        if user_id not in ids:
            raise not_member
        for other in ids:
            if other != user_id and await self._username(other) is None:
                raise not_member
        return ids

    # Resume.

    def sync(self, user_id: int, since: Mapping[str, int] | None, limit: int) -> Deferred[SyncResult]:
        """What *user_id* is missing, conversation by conversation, up to *limit* messages each.

        A conversation the client names in *since* resumes after that seq;
        any other resumes after the seq the user last acknowledged receiving
        (so a client that lost its state resumes where its user left off).
        Only the user's own conversations are read: naming another is ignored.
        """
        if not 1 <= limit <= MAX_SYNC_LIMIT:
            return fail(GochatError(ErrorCode.BAD_REQUEST, f"limit must be 1..{MAX_SYNC_LIMIT}"))
        return Deferred.fromCoroutine(self._sync(user_id, dict(since or {}), limit))

    async def _sync(self, user_id: int, since: dict[str, int], limit: int) -> SyncResult:
        states = await self.messages.conversations(user_id)
        behind = []
        for state in states:
            start = max(0, since.get(state.conv, state.acked_seq))
            if state.conv.startswith("g:"):
                # A member sees a group from their (latest) joining on; a former member up to their removal,
                # which is where their index head stopped.
                member = await self.group_store.member(group_id_of(state.conv), user_id)
                if member is not None:
                    start = max(start, member.joined_seq)
            if start >= state.last_seq:
                continue
            found = await self.messages.messages_after(state.conv, start, limit)
            messages = tuple(m for m in found if m.seq <= state.last_seq)
            complete = bool(messages) and messages[-1].seq >= state.last_seq
            behind.append(ConversationSync(state.conv, state.last_seq, messages, complete))
        return SyncResult(tuple(behind))

    def record_received(self, user_id: int, conv: str, seq: int) -> Deferred[None]:
        """The user has every message of *conv* up to *seq* (cumulative); sync resumes after it."""
        if seq < 0 or not conv or len(conv) > MAX_CONV_LENGTH:
            return fail(GochatError(ErrorCode.BAD_REQUEST, "recv_ack needs a conversation and a seq >= 0"))
        return self.messages.record_received(user_id, conv, seq)

    # Presence.

    def presence(self, user_id: int, usernames: Sequence[str]) -> Deferred[dict[str, bool]]:
        """Whether each named user is online (any device), for the users *user_id* shares a conversation with.

        Others, and unknown names, are left out of the answer: presence is not
        revealed to strangers.
        """
        if len(usernames) > MAX_PRESENCE_NAMES:
            return fail(GochatError(ErrorCode.BAD_REQUEST, f"ask about at most {MAX_PRESENCE_NAMES} users"))
        return Deferred.fromCoroutine(self._presence(user_id, list(usernames)))

    def _contacts(self, user_id: int, group_limit: int | None = None) -> Deferred[set[int]]:
        """Who may see *user_id*'s presence: the other users of their conversations and groups.

        Groups with more than *group_limit* members are left out (all groups when it is None).
        """
        return Deferred.fromCoroutine(self._find_contacts(user_id, group_limit))

    async def _find_contacts(self, user_id: int, group_limit: int | None) -> set[int]:
        contacts: set[int] = set()
        for state in await self.messages.conversations(user_id):
            try:
                contacts.update(participants(state.conv))
            except ValueError:
                continue
        for group, _, count in await self.group_store.groups_of(user_id):
            if group_limit is None or count <= group_limit:
                contacts.update(m.user_id for m in await self.group_store.members(group.group_id))
        return contacts

    async def _presence(self, user_id: int, usernames: list[str]) -> dict[str, bool]:
        contacts = await self._contacts(user_id)
        wanted: dict[int, str] = {}
        for name in usernames:
            try:
                found = await self._user_id(name)
            except GochatError:
                continue
            if found in contacts:
                wanted[found] = normalise_username(name)
        online = await self.routes.online(wanted) if wanted else {}
        return {name: online.get(uid, False) for uid, name in wanted.items()}

    # Groups.

    def create_group(self, identity: Identity, name: str, usernames: Sequence[str]) -> Deferred[GroupInfo]:
        """Create a group owned by *identity* with the named users as members; they are all told."""
        return Deferred.fromCoroutine(self._create_group(identity, name, list(usernames)))

    async def _create_group(self, identity: Identity, name: str, usernames: list[str]) -> GroupInfo:
        name = _group_name(name)
        others = [uid for uid in await self._user_ids(usernames) if uid != identity.user_id]
        if 1 + len(others) > self._settings.max_group_size:
            raise GochatError(ErrorCode.GROUP_FULL, f"a group has at most {self._settings.max_group_size} members")
        members = [Member(identity.user_id, identity.username, GroupRole.OWNER, 0)]
        members += [Member(uid, await self._known_username(uid), GroupRole.MEMBER, 0) for uid in others]
        group = await self.group_store.create(name, members, self._clock.seconds())
        conv = group_conversation(group.group_id)
        await self.messages.join([m.user_id for m in members], conv, 0)
        await self._membership_event(identity, conv, {"action": "created", "name": name}, [])
        return GroupInfo(group.group_id, conv, group.name, group.created_at, len(members), GroupRole.OWNER)

    def add_members(
        self, identity: Identity, group_id: int, usernames: Sequence[str], role: str = GroupRole.MEMBER
    ) -> Deferred[list[MemberInfo]]:
        """Add users as members or admins: owners may add either, admins plain members, members nobody.

        New members see the group from now on, not its earlier messages.
        """
        return Deferred.fromCoroutine(self._add_members(identity, group_id, list(usernames), role))

    async def _add_members(
        self, identity: Identity, group_id: int, usernames: list[str], role: str
    ) -> list[MemberInfo]:
        actor = await self._membership(identity.user_id, group_id)
        if role not in (GroupRole.ADMIN, GroupRole.MEMBER):
            raise GochatError(ErrorCode.BAD_REQUEST, "new members join as 'admin' or 'member'")
        if actor.role == GroupRole.MEMBER or (role == GroupRole.ADMIN and actor.role != GroupRole.OWNER):
            raise GochatError(ErrorCode.FORBIDDEN, f"a group {actor.role} cannot add {role}s")
        conv = group_conversation(group_id)
        joined_seq = await self.messages.last_seq(conv)
        candidates = [
            Member(uid, await self._known_username(uid), role, joined_seq) for uid in await self._user_ids(usernames)
        ]
        added = await self.group_store.add_members(group_id, candidates, self._settings.max_group_size)
        await self.messages.join([m.user_id for m in added], conv, joined_seq)
        if added:
            event = {"action": "added", "users": [m.username for m in added], "role": role}
            await self._membership_event(identity, conv, event, [])
        return [_member_info(m) for m in added]

    def remove_member(self, identity: Identity, group_id: int, username: str) -> Deferred[None]:
        """Remove a member: the owner may remove anyone else, admins plain members. The removed user is told."""
        return Deferred.fromCoroutine(self._remove_member(identity, group_id, username))

    async def _remove_member(self, identity: Identity, group_id: int, username: str) -> None:
        actor = await self._membership(identity.user_id, group_id)
        target = await self._target(group_id, username)
        if target.user_id == identity.user_id:
            raise GochatError(ErrorCode.BAD_REQUEST, "to remove yourself, leave the group")
        if not (actor.role == GroupRole.OWNER or (actor.role == GroupRole.ADMIN and target.role == GroupRole.MEMBER)):
            raise GochatError(ErrorCode.FORBIDDEN, f"a group {actor.role} cannot remove a {target.role}")
        await self.group_store.remove_member(group_id, target.user_id)
        event = {"action": "removed", "user": target.username}
        await self._membership_event(identity, group_conversation(group_id), event, [target.user_id])

    def set_role(self, identity: Identity, group_id: int, username: str, role: str) -> Deferred[None]:
        """The owner changes a member's role; naming a new ``owner`` hands ownership over (the old one turns admin)."""
        return Deferred.fromCoroutine(self._set_role(identity, group_id, username, role))

    async def _set_role(self, identity: Identity, group_id: int, username: str, role: str) -> None:
        actor = await self._membership(identity.user_id, group_id)
        if role not in GroupRole.ALL:
            raise GochatError(ErrorCode.BAD_REQUEST, f"role must be one of {list(GroupRole.ALL)}")
        if actor.role != GroupRole.OWNER:
            raise GochatError(ErrorCode.FORBIDDEN, "only the owner changes roles")
        target = await self._target(group_id, username)
        if target.user_id == identity.user_id:
            raise GochatError(ErrorCode.BAD_REQUEST, "the owner hands ownership to another member instead")
        await self.group_store.set_role(group_id, target.user_id, role)
        if role == GroupRole.OWNER:
            await self.group_store.set_role(group_id, identity.user_id, GroupRole.ADMIN)
        event = {"action": "role", "user": target.username, "role": role}
        await self._membership_event(identity, group_conversation(group_id), event, [])

    def leave_group(self, identity: Identity, group_id: int) -> Deferred[None]:
        """Leave a group; an owner's ownership passes to the longest-standing admin, else member."""
        return Deferred.fromCoroutine(self._leave_group(identity, group_id))

    async def _leave_group(self, identity: Identity, group_id: int) -> None:
        me = await self._membership(identity.user_id, group_id)
        event: dict[str, object] = {"action": "left", "user": identity.username}
        if me.role == GroupRole.OWNER:
            others = [m for m in await self.group_store.members(group_id) if m.user_id != identity.user_id]
            admins = [m for m in others if m.role == GroupRole.ADMIN]
            if admins or others:
                successor = (admins or others)[0]
                await self.group_store.set_role(group_id, successor.user_id, GroupRole.OWNER)
                event["owner"] = successor.username
        await self.group_store.remove_member(group_id, identity.user_id)
        await self._membership_event(identity, group_conversation(group_id), event, [identity.user_id])

    def groups(self, user_id: int) -> Deferred[list[GroupInfo]]:
        """The groups *user_id* belongs to, with their role in each."""
        return Deferred.fromCoroutine(self._groups(user_id))

    async def _groups(self, user_id: int) -> list[GroupInfo]:
        return [
            GroupInfo(g.group_id, group_conversation(g.group_id), g.name, g.created_at, count, m.role)
            for g, m, count in await self.group_store.groups_of(user_id)
        ]

    def members(self, user_id: int, group_id: int) -> Deferred[list[MemberInfo]]:
        """A group's members and roles, in joining order; members only."""
        return Deferred.fromCoroutine(self._members(user_id, group_id))

    async def _members(self, user_id: int, group_id: int) -> list[MemberInfo]:
        await self._membership(user_id, group_id)
        return [_member_info(m) for m in await self.group_store.members(group_id)]

    async def _membership(self, user_id: int, group_id: int) -> Member:
        member = await self.group_store.member(group_id, user_id)
        if member is None:
            raise GochatError(ErrorCode.NOT_MEMBER, f"you are not a member of group {group_id}")
        return member

    async def _target(self, group_id: int, username: str) -> Member:
        target = await self.group_store.member(group_id, await self._user_id(username))
        if target is None:
            raise GochatError(ErrorCode.NOT_MEMBER, f"{username!r} is not a member of group {group_id}")
        return target

    async def _membership_event(
        self, identity: Identity, conv: str, event: Mapping[str, object], also: Iterable[int]
    ) -> StoredMessage:
        """Store a membership change as a ``member`` message, told to the members (and *also* to the users who left)."""
        members = [m.user_id for m in await self.group_store.members(group_id_of(conv))]
        now = self._clock.seconds()
        msg_id = self._ids.next(now)
        request = PersistRequest(
            msg_id=msg_id,
            conv=conv,
            sender_id=identity.user_id,
            sender=identity.username,
            client_msg_id=f"{MEMBER_EVENT_ID_PREFIX}{msg_id}",
            body=json.dumps({**event, "by": identity.username}, separators=(",", ":"), ensure_ascii=False),
            ts=int(now * 1000),
            participants=tuple(dict.fromkeys([*members, *also])),
            origin_gateway="",
            origin_session="",
            kind=MessageKind.MEMBER,
        )
        self.messages.check(request)
        return await self.persist.submit(request)

    # History, read receipts, typing, the conversation list.

    def history(
        self, user_id: int, conv: str, before: int | None, after: int | None, limit: int
    ) -> Deferred[HistoryPage]:
        """Up to *limit* messages of *conv* after seq *after*, or before seq *before*, or the newest; members only.

        A group member sees the messages since they (last) joined. The page
        also says how far each member has read.
        """
        if not 1 <= limit <= MAX_HISTORY_LIMIT:
            return fail(GochatError(ErrorCode.BAD_REQUEST, f"limit must be 1..{MAX_HISTORY_LIMIT}"))
        if before is not None and after is not None:
            return fail(GochatError(ErrorCode.BAD_REQUEST, "page either before or after a seq, not both"))
        if (before is not None and before < 1) or (after is not None and after < 0):
            return fail(GochatError(ErrorCode.BAD_REQUEST, "before must be >= 1 and after >= 0"))
        return Deferred.fromCoroutine(self._history(user_id, conv, before, after, limit))

    async def _history(self, user_id: int, conv: str, before: int | None, after: int | None, limit: int) -> HistoryPage:
        members = await self._members_of(user_id, conv)
        floor = 0
        if conv.startswith("g:"):
            floor = (await self._membership(user_id, group_id_of(conv))).joined_seq
        if after is not None:
            found = await self.messages.messages_after(conv, max(after, floor), limit)
        else:
            found = await self.messages.messages_before(conv, before if before is not None else 2**62, limit)
        messages = tuple(m for m in found if m.seq > floor)
        positions = await self.messages.read_positions(conv)
        reads = {await self._known_username(uid): positions[uid] for uid in members if uid in positions}
        return HistoryPage(conv, messages, reads)

    def mark_read(self, identity: Identity, conv: str, seq: int, gateway_id: str, session_id: str) -> Deferred[int]:
        """*identity* has read *conv* up to *seq*: store it, and tell the other members and the user's other sessions.

        Fires with the stored read seq (never lowered, never past the newest
        message).
        """
        if seq < 0 or not conv or len(conv) > MAX_CONV_LENGTH:
            return fail(GochatError(ErrorCode.BAD_REQUEST, "read needs a conversation and a seq >= 0"))
        return Deferred.fromCoroutine(self._mark_read(identity, conv, seq, Route(gateway_id, session_id)))

    async def _mark_read(self, identity: Identity, conv: str, seq: int, origin: Route) -> int:
        members = await self._members_of(identity.user_id, conv)
        read_seq = await self.messages.mark_read(identity.user_id, conv, seq)
        signal = Signal(SignalKind.READ, conv, identity.user_id, identity.username, read_seq, self._now_ms())
        await self._signal(signal, members, exclude=origin)
        return read_seq

    def typing(self, identity: Identity, conv: str) -> Deferred[None]:
        """Tell the other members of *conv* who are online that *identity* is typing; nothing is stored."""
        if not conv or len(conv) > MAX_CONV_LENGTH:
            return fail(GochatError(ErrorCode.BAD_REQUEST, "typing needs a conversation"))
        return Deferred.fromCoroutine(self._typing(identity, conv))

    async def _typing(self, identity: Identity, conv: str) -> None:
        members = await self._members_of(identity.user_id, conv)
        signal = Signal(SignalKind.TYPING, conv, identity.user_id, identity.username, 0, self._now_ms())
        await self._signal(signal, [uid for uid in members if uid != identity.user_id])

    async def _signal(self, signal: Signal, user_ids: Sequence[int], exclude: Route | None = None) -> None:
        if not user_ids:
            return
        routes = await self.routes.routes(user_ids)
        delivery.publish(self.deliveries, routes, user_ids, None, signal, exclude=exclude)

    def conversation_list(self, user_id: int) -> Deferred[list[ConversationInfo]]:
        """Every conversation of *user_id*: a title (the other user, or the group's name), seqs and unread count."""
        return Deferred.fromCoroutine(self._conversation_list(user_id))

    async def _conversation_list(self, user_id: int) -> list[ConversationInfo]:
        titles = {group_conversation(g.group_id): g.name for g, _, _ in await self.group_store.groups_of(user_id)}
        result = []
        for state in await self.messages.conversations(user_id):
            title = titles.get(state.conv)
            if title is None:
                title = await self._title(user_id, state.conv)
            result.append(ConversationInfo(state.conv, title, state.last_seq, state.read_seq, state.unread))
        return result

    async def _title(self, user_id: int, conv: str) -> str:
        if conv.startswith("g:"):
            group = await self.group_store.get(group_id_of(conv))
            return group.name if group is not None else conv
        others = [uid for uid in participants(conv) if uid != user_id] or [user_id]
        return await self._known_username(others[0])

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def _user_ids(self, usernames: list[str]) -> list[int]:
        """The ids of *usernames*, each once, in order; ``unknown_user`` names the first unknown one."""
        if len(usernames) > MAX_NAMES_PER_REQUEST:
            raise GochatError(ErrorCode.BAD_REQUEST, f"name at most {MAX_NAMES_PER_REQUEST} users at a time")
        return list(dict.fromkeys([await self._user_id(name) for name in usernames]))

    async def _username(self, user_id: int) -> str | None:
        known = self._names_by_id.get(user_id)
        if known is not None:
            return known
        account = await self.accounts.by_id(user_id)
        if account is None:
            return None
        self._names_by_id[user_id] = account.username
        return account.username

    async def _known_username(self, user_id: int) -> str:
        name = await self._username(user_id)
        return name if name is not None else f"#{user_id}"

    async def _user_id(self, username: str) -> int:
        unknown = GochatError(ErrorCode.UNKNOWN_USER, f"no user {username!r}")
        try:
            name = normalise_username(username)
        except GochatError:
            raise unknown from None
        known = self._ids_by_name.get(name)
        if known is not None:
            return known
        account = await self.accounts.by_name(name)
        if account is None:
            raise unknown
        self._ids_by_name[name] = account.user_id
        return account.user_id


def _group_name(name: str) -> str:
    name = name.strip()
    if not 0 < len(name) <= MAX_GROUP_NAME_LENGTH or not is_encodable(name) or any(ord(c) < 32 for c in name):
        raise GochatError(
            ErrorCode.BAD_REQUEST, f"a group name has 1 to {MAX_GROUP_NAME_LENGTH} characters, no control characters"
        )
    return name


def _member_info(member: Member) -> MemberInfo:
    return MemberInfo(member.user_id, member.username, member.role, member.joined_seq)
