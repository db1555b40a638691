"""The chat rules: accounts, sessions, and ordered, durable, idempotent 1:1 messages.

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
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gochat.errors import ErrorCode, GochatError
from gochat.logic.interfaces import IAccountStore, IDeliveryBus, IMessageStore, IPersistQueue, IRouteStore, Route
from gochat.logic.sequencing import MessageIdGenerator, direct_conversation, participants
from gochat.logic.tokens import TokenSigner
from gochat.model import Ack, ConversationSync, Identity, LoginResult, PersistRequest, SendCommand, SyncResult
from gochat.text import is_encodable

_log = Logger()

USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{2,31}$")
MIN_PASSWORD_LENGTH = 8
MAX_SYNC_LIMIT = 1000
MAX_PRESENCE_NAMES = 500
MAX_CONV_LENGTH = 128
MAX_PASSWORD_LENGTH = 256


@dataclass(frozen=True)
class ChatSettings:
    """Logic-wide settings."""

    token_ttl: float = 24 * 3600.0
    max_body_length: int = 8192


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
        self.routes = routes
        self.deliveries = deliveries
        self._tokens = tokens
        self._hasher = hasher
        self._ids = ids
        self._clock = clock
        self._settings = settings
        self._in_flight: dict[tuple[int, str], list[Deferred[Ack]]] = {}
        self._ids_by_name: dict[str, int] = {}

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
        return identity

    def disconnect(self, identity: Identity, gateway_id: str, session_id: str) -> Deferred[None]:
        """Stop routing to a session that closed."""
        return self.routes.remove(identity.user_id, Route(gateway_id, session_id))

    def refresh_routes(self, gateway_id: str, sessions: Sequence[tuple[int, str]]) -> Deferred[None]:
        """A gateway's periodic report of its live sessions: their routes stay (or come back, after a Redis loss)."""
        return self.routes.refresh(gateway_id, sessions, self._clock.seconds())

    # Messages.

    def send(self, command: SendCommand) -> Deferred[Ack]:
        """Store a message and fire with its ack once it is durable; see the module docstring."""
        if not 0 < len(command.body) <= self._settings.max_body_length:
            error = GochatError(
                ErrorCode.BAD_REQUEST, f"body must have 1 to {self._settings.max_body_length} characters"
            )
            return fail(error)
        if not (command.client_msg_id and is_encodable(command.body) and is_encodable(command.client_msg_id)):
            return fail(GochatError(ErrorCode.BAD_REQUEST, "body and client_msg_id must be valid, non-empty Unicode"))
        key = (command.sender_id, command.client_msg_id)
        result: Deferred[Ack] = Deferred()
        waiters = self._in_flight.get(key)
        if waiters is not None:
            waiters.append(result)
            return result
        self._in_flight[key] = [result]
        Deferred.fromCoroutine(self._send(command)).addBoth(self._settle, key)
        return result

    def _settle(self, outcome: Ack | Failure, key: tuple[int, str]) -> None:
        for waiter in self._in_flight.pop(key):
            if isinstance(outcome, Failure):
                waiter.errback(outcome)
            else:
                waiter.callback(outcome)

    async def _send(self, command: SendCommand) -> Ack:
        recipient_id = await self._user_id(command.to_username)
        now = self._clock.seconds()
        request = PersistRequest(
            msg_id=self._ids.next(now),
            conv=direct_conversation(command.sender_id, recipient_id),
            sender_id=command.sender_id,
            sender=command.sender,
            client_msg_id=command.client_msg_id,
            body=command.body,
            ts=int(now * 1000),
            participants=(command.sender_id, recipient_id),
            origin_gateway=command.gateway_id,
            origin_session=command.session_id,
        )
        stored = await self.persist.submit(request)
        if (stored.conv, stored.body) != (request.conv, request.body):
            raise GochatError(
                ErrorCode.DUPLICATE_CLIENT_MSG_ID,
                f"client_msg_id {command.client_msg_id!r} was already used for another message",
            )
        return stored.ack()

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
            if start >= state.last_seq:
                continue
            messages = await self.messages.messages_after(state.conv, start, limit)
            complete = bool(messages) and messages[-1].seq >= state.last_seq
            behind.append(ConversationSync(state.conv, state.last_seq, tuple(messages), complete))
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

    async def _presence(self, user_id: int, usernames: list[str]) -> dict[str, bool]:
        contacts: set[int] = set()
        for state in await self.messages.conversations(user_id):
            try:
                contacts.update(participants(state.conv))
            except ValueError:
                continue
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
