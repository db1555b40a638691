"""Password hashing with scrypt (memory-hard, in the standard library).

Hashes are self-describing, ``scrypt$n$r$p$salt$hash`` with base64 salt and
hash, so the cost can be raised later without invalidating stored hashes.
Hashing takes tens of milliseconds on purpose: callers run it in a thread
(see :class:`~gochat.logic.chat.ChatLogic`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ScryptCost:
    """scrypt's cost parameters; the default uses 16 MiB and about 50 ms a hash."""

    n: int = 2**14
    r: int = 8
    p: int = 1


def hash_password(password: str, cost: ScryptCost) -> str:
    """A salted, encoded scrypt hash of *password*."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=cost.n, r=cost.r, p=cost.p, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${cost.n}${cost.r}${cost.p}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether *password* matches *encoded*; malformed hashes never match."""
    try:
        scheme, n, r, p, salt_b64, digest_b64 = encoded.split("$")
        if scheme != "scrypt":
            return False
        salt = base64.b64decode(salt_b64)
        expected = base64.b64decode(digest_b64)
        digest = hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=int(n), r=int(r), p=int(p), dklen=len(expected), maxmem=2**26
        )
    except (ValueError, TypeError, OverflowError, binascii.Error):
        return False
    return hmac.compare_digest(digest, expected)
