"""Typed errors with stable codes, and their mapping to every wire in one place.

Every refusal gochat makes is a :class:`GochatError` carrying an
:class:`ErrorCode`. The code's string is what clients see in an ``error``
frame and what travels between processes in gRPC metadata; the table below
says which codes also close the WebSocket and with which close code. Codes
and close codes are part of the public protocol (``docs/protocol.md``): add
new ones, never renumber or rename old ones.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ErrorCode(enum.Enum):
    """Stable error codes; the value is the wire string."""

    BAD_FRAME = "bad_frame"
    UNSUPPORTED_FRAME = "unsupported_frame"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_TYPE = "unknown_type"
    BAD_REQUEST = "bad_request"
    FRAME_TOO_LARGE = "frame_too_large"
    NOT_AUTHENTICATED = "not_authenticated"
    ALREADY_AUTHENTICATED = "already_authenticated"
    INVALID_TOKEN = "invalid_token"
    TOKEN_EXPIRED = "token_expired"
    AUTH_TIMEOUT = "auth_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    RATE_LIMITED = "rate_limited"
    UNKNOWN_USER = "unknown_user"
    USERNAME_TAKEN = "username_taken"
    BAD_CREDENTIALS = "bad_credentials"
    DUPLICATE_CLIENT_MSG_ID = "duplicate_client_msg_id"
    UNAVAILABLE = "unavailable"
    SHUTTING_DOWN = "shutting_down"
    SLOW_CONSUMER = "slow_consumer"
    INTERNAL = "internal"
    NOT_MEMBER = "not_member"
    FORBIDDEN = "forbidden"
    GROUP_FULL = "group_full"
    UNKNOWN_MESSAGE = "unknown_message"
    TOO_LATE = "too_late"


@dataclass(frozen=True)
class WireMapping:
    """How one error code shows on each wire.

    ``close_code`` is the WebSocket close code when the error ends the
    session, or ``None`` when the session goes on after an error frame.
    ``http_status`` is the status of the HTTP API's reply.
    ``grpc_status`` is the name of the ``grpc.StatusCode`` member used
    between gateway and logic (a name, so this module needs no gRPC import).
    """

    close_code: int | None
    http_status: int
    grpc_status: str


# WebSocket close codes 4000-4999 are reserved for applications (RFC 6455 7.4.2).
CLOSE_BAD_FRAME = 4400
CLOSE_UNSUPPORTED_FRAME = 4403
CLOSE_INVALID_TOKEN = 4401
CLOSE_TOKEN_EXPIRED = 4402
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_IDLE_TIMEOUT = 4409
CLOSE_RATE_LIMITED = 4429
CLOSE_SHUTTING_DOWN = 4503
CLOSE_SLOW_CONSUMER = 4410
CLOSE_INTERNAL = 4500

WIRE: dict[ErrorCode, WireMapping] = {
    ErrorCode.BAD_FRAME: WireMapping(None, 400, "INVALID_ARGUMENT"),
    ErrorCode.UNSUPPORTED_FRAME: WireMapping(CLOSE_UNSUPPORTED_FRAME, 400, "INVALID_ARGUMENT"),
    ErrorCode.UNSUPPORTED_VERSION: WireMapping(None, 400, "INVALID_ARGUMENT"),
    ErrorCode.UNKNOWN_TYPE: WireMapping(None, 400, "INVALID_ARGUMENT"),
    ErrorCode.BAD_REQUEST: WireMapping(None, 400, "INVALID_ARGUMENT"),
    ErrorCode.FRAME_TOO_LARGE: WireMapping(1009, 413, "INVALID_ARGUMENT"),
    ErrorCode.NOT_AUTHENTICATED: WireMapping(None, 401, "UNAUTHENTICATED"),
    ErrorCode.ALREADY_AUTHENTICATED: WireMapping(None, 400, "FAILED_PRECONDITION"),
    ErrorCode.INVALID_TOKEN: WireMapping(CLOSE_INVALID_TOKEN, 401, "UNAUTHENTICATED"),
    ErrorCode.TOKEN_EXPIRED: WireMapping(CLOSE_TOKEN_EXPIRED, 401, "UNAUTHENTICATED"),
    ErrorCode.AUTH_TIMEOUT: WireMapping(CLOSE_AUTH_TIMEOUT, 408, "DEADLINE_EXCEEDED"),
    ErrorCode.IDLE_TIMEOUT: WireMapping(CLOSE_IDLE_TIMEOUT, 408, "DEADLINE_EXCEEDED"),
    ErrorCode.RATE_LIMITED: WireMapping(None, 429, "RESOURCE_EXHAUSTED"),
    ErrorCode.UNKNOWN_USER: WireMapping(None, 404, "NOT_FOUND"),
    ErrorCode.USERNAME_TAKEN: WireMapping(None, 409, "ALREADY_EXISTS"),
    ErrorCode.BAD_CREDENTIALS: WireMapping(None, 401, "UNAUTHENTICATED"),
    ErrorCode.DUPLICATE_CLIENT_MSG_ID: WireMapping(None, 409, "ALREADY_EXISTS"),
    ErrorCode.UNAVAILABLE: WireMapping(None, 503, "UNAVAILABLE"),
    ErrorCode.SHUTTING_DOWN: WireMapping(CLOSE_SHUTTING_DOWN, 503, "UNAVAILABLE"),
    ErrorCode.SLOW_CONSUMER: WireMapping(CLOSE_SLOW_CONSUMER, 503, "RESOURCE_EXHAUSTED"),
    ErrorCode.INTERNAL: WireMapping(None, 500, "INTERNAL"),
    ErrorCode.NOT_MEMBER: WireMapping(None, 403, "PERMISSION_DENIED"),
    ErrorCode.FORBIDDEN: WireMapping(None, 403, "PERMISSION_DENIED"),
    ErrorCode.GROUP_FULL: WireMapping(None, 409, "FAILED_PRECONDITION"),
    ErrorCode.UNKNOWN_MESSAGE: WireMapping(None, 404, "NOT_FOUND"),
    ErrorCode.TOO_LATE: WireMapping(None, 409, "FAILED_PRECONDITION"),
}


class GochatError(Exception):
    """A refusal with a stable code and a human-readable message."""

    def __init__(self, code: ErrorCode, message: str = "") -> None:
        super().__init__(f"{code.value}: {message}" if message else code.value)
        self.code = code
        self.message = message or code.value.replace("_", " ")

    @property
    def wire(self) -> WireMapping:
        """How this error shows on the WebSocket, HTTP and gRPC wires."""
        return WIRE[self.code]

    @classmethod
    def from_wire(cls, code: str, message: str) -> GochatError:
        """Rebuild an error received from another process; unknown codes become INTERNAL."""
        try:
            return cls(ErrorCode(code), message)
        except ValueError:
            return cls(ErrorCode.INTERNAL, f"{code}: {message}")
