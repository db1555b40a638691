"""The chat rules: accounts, sessions, and ordered, durable, idempotent 1:1 messages.

:class:`ChatLogic` is the one implementation of these rules; the embedded
default and production differ only in the stores and bus passed in.

The send path keeps the delivery contract:

1. a retried send (same sender, same ``client_msg_id``) joins the first
   attempt while it is in flight, or returns the stored message's ack after;
2. the conversation's next seq is taken from :class:`SequenceCounters`,
   seeded from the store the first time a conversation is seen;
3. the message is appended to the store; the ack is returned only once the
   batch holding it has committed;
4. after the commit, one delivery per gateway goes to the sessions of both
   participants (except the sending session), in seq order.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gochat.errors import ErrorCode, GochatError
from gochat.logic.interfaces import IAccountStore, IDeliveryBus, IMessageStore, IRouteStore, Route
from gochat.logic.sequencing import MessageIdGenerator, SequenceCounters, direct_conversation
from gochat.logic.tokens import TokenSigner
from gochat.model import Ack, Delivery, Identity, LoginResult, SendCommand, StoredMessage

_log = Logger()

USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{2,31}$")
MIN_PASSWORD_LENGTH = 8
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


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_valid_password_text(password: str) -> bool:
    """No control characters (scrypt ignores trailing NULs) and encodable as UTF-8 (no lone surrogates)."""
    return _is_utf8(password) and not any(ord(c) < 32 or ord(c) == 127 for c in password)


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
        self.messages = messages
        self.routes = routes
        self.deliveries = deliveries
        self._tokens = tokens
        self._hasher = hasher
        self._ids = ids
        self._clock = clock
        self._settings = settings
        self._seqs = SequenceCounters()
        self._seeding: dict[str, list[Deferred[None]]] = {}
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

    # Messages.

    def send(self, command: SendCommand) -> Deferred[Ack]:
        """Store a message and fire with its ack once it is durable; see the module docstring."""
        if not 0 < len(command.body) <= self._settings.max_body_length:
            error = GochatError(
                ErrorCode.BAD_REQUEST, f"body must have 1 to {self._settings.max_body_length} characters"
            )
            return fail(error)
        if not (command.client_msg_id and _is_utf8(command.body) and _is_utf8(command.client_msg_id)):
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
        conv = direct_conversation(command.sender_id, recipient_id)
        existing = await self.messages.by_client_msg_id(command.sender_id, command.client_msg_id)
        if existing is not None:
            if (existing.conv, existing.body) != (conv, command.body):
                raise GochatError(
                    ErrorCode.DUPLICATE_CLIENT_MSG_ID,
                    f"client_msg_id {command.client_msg_id!r} was already used for another message",
                )
            return existing.ack()
        await self._seeded(conv)
        # From here to append() nothing waits: the seq is taken and queued for
        # the writer in one step, so batches hold messages in seq order.
        now = self._clock.seconds()
        message = StoredMessage(
            msg_id=self._ids.next(now),
            conv=conv,
            seq=self._seqs.next(conv),
            sender_id=command.sender_id,
            sender=command.sender,
            client_msg_id=command.client_msg_id,
            body=command.body,
            ts=int(now * 1000),
        )
        try:
            committed = self.messages.append(message)
        except GochatError:
            # Refused before it was queued (the store is behind): give the seq back so none is skipped.
            self._seqs.release(conv, message.seq)
            raise
        await committed
        await self._deliver(message, (command.sender_id, recipient_id), Route(command.gateway_id, command.session_id))
        return message.ack()

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

    def _seeded(self, conv: str) -> Deferred[None]:
        """Fires once *conv*'s counter is seeded from the store; waiters resume in call order."""
        if conv in self._seqs and conv not in self._seeding:
            return succeed(None)
        d: Deferred[None] = Deferred()
        waiters = self._seeding.get(conv)
        if waiters is not None:
            waiters.append(d)
            return d
        self._seeding[conv] = [d]

        def seeded(last_seq: int) -> None:
            self._seqs.seed(conv, last_seq)
            for waiter in self._seeding.pop(conv):
                waiter.callback(None)

        def failed(failure: Failure) -> None:
            for waiter in self._seeding.pop(conv):
                waiter.errback(failure)

        self.messages.last_seq(conv).addCallbacks(seeded, failed)
        return d

    async def _deliver(self, message: StoredMessage, user_ids: tuple[int, int], origin: Route) -> None:
        """Publish one delivery per gateway holding a session of either participant, except *origin*.

        Routing trouble is logged, not raised: the message is stored and
        acknowledged, and recipients who miss the push recover it by sync.
        """
        try:
            routes_by_user = await self.routes.routes(set(user_ids))
        except Exception:
            _log.failure("routing of {msg_id} failed", msg_id=message.msg_id)
            return
        sessions: dict[str, list[str]] = defaultdict(list)
        for routes in routes_by_user.values():
            for route in sorted(routes):
                if route != origin:
                    sessions[route.gateway_id].append(route.session_id)
        for gateway_id, session_ids in sessions.items():
            d = self.deliveries.publish(Delivery(gateway_id, tuple(session_ids), message))
            d.addErrback(_log_delivery_failure, gateway_id)


def _log_delivery_failure(failure: Failure, gateway_id: str) -> None:
    _log.failure("delivery to {gateway_id} failed", failure, gateway_id=gateway_id)
