"""Test doubles for the gateway's outside worlds: a recording transport and a scripted logic client."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed

from gochat.errors import ErrorCode, GochatError
from gochat.gateway.logic_client import DeliveryHandler
from gochat.model import Ack, Identity, LoginResult, SendCommand, SyncResult


class RecordingTransport:
    """A session transport that keeps what was written and how the session was closed."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.prepared: list[object] = []
        self.closed: tuple[int, str] | None = None
        self.aborted = False
        self.reading = True

    def send_frame(self, data: bytes) -> None:
        self.frames.append(json.loads(data))

    def send_prepared(self, prepared: object) -> None:
        self.prepared.append(prepared)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def pop(self) -> dict[str, Any]:
        """The oldest frame not yet looked at."""
        return self.frames.pop(0)


class ScriptedLogic:
    """An ILogicClient whose answers the test controls.

    ``tokens`` maps valid tokens to identities; ``"expired"`` fails with
    token_expired. Sends are held as Deferreds in ``sends`` until the test
    fires them, unless ``auto_ack`` is set.
    """

    def __init__(self) -> None:
        self.tokens: dict[str, Identity] = {"alice-token": Identity(1, "alice"), "bob-token": Identity(2, "bob")}
        self.connected: list[tuple[Identity, str, str]] = []
        self.disconnected: list[tuple[Identity, str, str]] = []
        self.sends: list[tuple[SendCommand, Deferred[Ack]]] = []
        self.pending_connects: list[Deferred[Identity]] | None = None
        self.syncs: list[tuple[int, Mapping[str, int] | None, int, Deferred[SyncResult]]] = []
        self.received: list[tuple[int, str, int]] = []
        self.refreshes: list[tuple[str, list[tuple[int, str]]]] = []
        self.subscriptions: list[tuple[str, DeliveryHandler]] = []

    def register(self, username: str, password: str) -> Deferred[int]:
        return succeed(1)

    def login(self, username: str, password: str) -> Deferred[LoginResult]:
        return succeed(LoginResult(1, f"{username}-token", 0.0))

    def connect(self, token: str, gateway_id: str, session_id: str) -> Deferred[Identity]:
        if token == "expired":
            return fail(GochatError(ErrorCode.TOKEN_EXPIRED, "token expired"))
        identity = self.tokens.get(token)
        if identity is None:
            return fail(GochatError(ErrorCode.INVALID_TOKEN, "bad token signature"))
        self.connected.append((identity, gateway_id, session_id))
        if self.pending_connects is not None:
            d: Deferred[Identity] = Deferred()
            self.pending_connects.append(d)
            return d
        return succeed(identity)

    def disconnect(self, identity: Identity, gateway_id: str, session_id: str) -> Deferred[None]:
        self.disconnected.append((identity, gateway_id, session_id))
        return succeed(None)

    def send(self, command: SendCommand) -> Deferred[Ack]:
        d: Deferred[Ack] = Deferred()
        self.sends.append((command, d))
        return d

    def sync(self, user_id: int, since: Mapping[str, int] | None, limit: int) -> Deferred[SyncResult]:
        d: Deferred[SyncResult] = Deferred()
        self.syncs.append((user_id, since, limit, d))
        return d

    def record_received(self, user_id: int, conv: str, seq: int) -> Deferred[None]:
        self.received.append((user_id, conv, seq))
        return succeed(None)

    def presence(self, user_id: int, usernames: Sequence[str]) -> Deferred[dict[str, bool]]:
        return succeed({name: name == "bob" for name in usernames})

    def refresh_routes(self, gateway_id: str, sessions: Sequence[tuple[int, str]]) -> Deferred[None]:
        self.refreshes.append((gateway_id, list(sessions)))
        return succeed(None)

    def subscribe(self, gateway_id: str, handler: DeliveryHandler) -> _Unsubscribe:
        entry = (gateway_id, handler)
        self.subscriptions.append(entry)
        return _Unsubscribe(self.subscriptions, entry)


class _Unsubscribe:
    def __init__(self, subscriptions: list[tuple[str, DeliveryHandler]], entry: tuple[str, DeliveryHandler]) -> None:
        self._subscriptions = subscriptions
        self._entry = entry

    def cancel(self) -> None:
        if self._entry in self._subscriptions:
            self._subscriptions.remove(self._entry)
