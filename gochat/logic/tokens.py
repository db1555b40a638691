"""Signed, expiring bearer tokens; pure, time passed in.

A token is ``v1.<payload>.<signature>``: the payload is base64url JSON
``{"uid": int, "name": str, "exp": float}`` and the signature is
HMAC-SHA256 of ``v1.<payload>`` under the logic service's secret. Only logic
holds the secret; gateways pass tokens through unread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import pathlib

from gochat.errors import ErrorCode, GochatError
from gochat.model import Identity

_PREFIX = "v1"


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issues and verifies tokens under one secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the token secret must be at least 32 bytes")
        self._secret = secret

    def _sign(self, signed_part: str) -> str:
        return _b64encode(hmac.new(self._secret, signed_part.encode("ascii"), hashlib.sha256).digest())

    def issue(self, identity: Identity, now: float, ttl: float) -> tuple[str, float]:
        """A token for *identity* valid for *ttl* seconds from *now*, and its expiry time."""
        expires_at = now + ttl
        payload = {"uid": identity.user_id, "name": identity.username, "exp": expires_at}
        signed_part = f"{_PREFIX}.{_b64encode(json.dumps(payload, separators=(',', ':')).encode())}"
        return f"{signed_part}.{self._sign(signed_part)}", expires_at

    def verify(self, token: str, now: float) -> Identity:
        """The identity a token carries; ``invalid_token`` if forged or garbled, ``token_expired`` if old."""
        parts = token.split(".")
        if not token.isascii() or len(parts) != 3 or parts[0] != _PREFIX:
            raise GochatError(ErrorCode.INVALID_TOKEN, "malformed token")
        signed_part = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._sign(signed_part), parts[2]):
            raise GochatError(ErrorCode.INVALID_TOKEN, "bad token signature")
        try:
            payload = json.loads(_b64decode(parts[1]))
            identity = Identity(int(payload["uid"]), str(payload["name"]))
            expires_at = float(payload["exp"])
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise GochatError(ErrorCode.INVALID_TOKEN, "malformed token payload") from None
        if now >= expires_at:
            raise GochatError(ErrorCode.TOKEN_EXPIRED, "token expired; log in again")
        return identity


def load_or_create_secret(path: pathlib.Path) -> bytes:
    """Read the token secret at *path*, creating a random one (mode 0600) if the file is missing.

    Every logic process of one deployment must share the same file.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(_b64encode(os.urandom(48)).encode("ascii") + b"\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            # link() publishes the complete file atomically, and fails if another process won the race.
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_bytes().strip()
