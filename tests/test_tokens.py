"""Tests for :mod:`gochat.logic.tokens`: signed, expiring bearer tokens and the secret file."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import pathlib
import stat

from twisted.trial.unittest import SynchronousTestCase

from gochat.errors import ErrorCode, GochatError
from gochat.logic.tokens import TokenSigner, load_or_create_secret
from gochat.model import Identity

SECRET = b"s" * 32
OTHER_SECRET = b"o" * 32
ALICE = Identity(42, "alice")


def b64(data: bytes) -> str:
    """Unpadded base64url, as tokens use."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    """Inverse of :func:`b64`."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def forge(prefix: str, payload_b64: str, secret: bytes = SECRET) -> str:
    """A token with a correct HMAC signature over ``prefix.payload_b64``, built independently of the module."""
    signed = f"{prefix}.{payload_b64}"
    signature = b64(hmac.new(secret, signed.encode("ascii"), hashlib.sha256).digest())
    return f"{signed}.{signature}"


class TokenSignerTests(SynchronousTestCase):
    """Issue and verify tokens."""

    def setUp(self) -> None:
        self.signer = TokenSigner(SECRET)

    def assertInvalid(self, token: str, now: float = 1000.0, signer: TokenSigner | None = None) -> None:
        """Verifying *token* raises INVALID_TOKEN."""
        error = self.assertRaises(GochatError, (signer or self.signer).verify, token, now)
        self.assertIs(error.code, ErrorCode.INVALID_TOKEN)

    def test_round_trip(self) -> None:
        """A fresh token verifies to the identity it was issued for; expiry is now + ttl."""
        token, expires_at = self.signer.issue(ALICE, 1000.0, 60.0)
        self.assertEqual(expires_at, 1060.0)
        self.assertEqual(self.signer.verify(token, 1000.0), ALICE)
        self.assertEqual(self.signer.verify(token, 1059.999), ALICE)

    def test_format(self) -> None:
        """A token is ``v1.<base64url JSON payload>.<signature>`` with the documented payload."""
        token, _ = self.signer.issue(Identity(7, "bøb"), 100.0, 50.0)
        prefix, payload, signature = token.split(".")
        self.assertEqual(prefix, "v1")
        self.assertEqual(json.loads(unb64(payload)), {"uid": 7, "name": "bøb", "exp": 150.0})
        self.assertEqual(token, forge("v1", payload))
        self.assertNotIn("=", token)
        self.assertTrue(signature)

    def test_unicode_username(self) -> None:
        """Non-ASCII usernames survive the round trip."""
        identity = Identity(3, "日本語")
        token, _ = self.signer.issue(identity, 0.0, 10.0)
        self.assertEqual(self.signer.verify(token, 5.0), identity)

    def test_expired_exactly_at_expiry(self) -> None:
        """At the expiry instant and after, the token is TOKEN_EXPIRED."""
        token, expires_at = self.signer.issue(ALICE, 1000.0, 60.0)
        for now in (expires_at, expires_at + 0.001, expires_at + 1e6):
            error = self.assertRaises(GochatError, self.signer.verify, token, now)
            self.assertIs(error.code, ErrorCode.TOKEN_EXPIRED)

    def test_tampered_payload(self) -> None:
        """A payload changed after signing (another uid) is INVALID_TOKEN."""
        token, _ = self.signer.issue(ALICE, 1000.0, 60.0)
        prefix, _payload, signature = token.split(".")
        forged = b64(json.dumps({"uid": 1, "name": "root", "exp": 1e12}).encode())
        self.assertInvalid(f"{prefix}.{forged}.{signature}")

    def test_tampered_signature(self) -> None:
        """Changing, truncating or dropping the signature is INVALID_TOKEN."""
        token, _ = self.signer.issue(ALICE, 1000.0, 60.0)
        last = "A" if token[-1] != "A" else "B"
        self.assertInvalid(token[:-1] + last)
        self.assertInvalid(token[:-1])
        self.assertInvalid(token.rsplit(".", 1)[0] + ".")

    def test_other_secret(self) -> None:
        """A token signed under another secret is INVALID_TOKEN, both ways."""
        other = TokenSigner(OTHER_SECRET)
        token, _ = other.issue(ALICE, 1000.0, 60.0)
        self.assertInvalid(token)
        mine, _ = self.signer.issue(ALICE, 1000.0, 60.0)
        self.assertInvalid(mine, signer=other)

    def test_garbage(self) -> None:
        """Strings that are not three dot-separated parts are INVALID_TOKEN."""
        for token in ("", "garbage", "a.b", "v1.a", "v1.a.b.c", "....", "v1..", "v1.x.y"):
            self.assertInvalid(token)

    def test_non_ascii_garbage(self) -> None:
        """Non-ASCII strings from clients are INVALID_TOKEN, not an unhandled Unicode/TypeError."""
        token, _ = self.signer.issue(ALICE, 1000.0, 60.0)
        prefix, payload, signature = token.split(".")
        for bad in ("v1.é.x", f"{prefix}.{payload}é.{signature}", f"{prefix}.{payload}.{signature[:-1]}é", "é"):
            self.assertInvalid(bad)

    def test_wrong_prefix(self) -> None:
        """A correctly signed token with another version prefix is INVALID_TOKEN."""
        payload = b64(json.dumps({"uid": 42, "name": "alice", "exp": 1e12}).encode())
        self.assertEqual(self.signer.verify(forge("v1", payload), 1000.0), ALICE)
        self.assertInvalid(forge("v2", payload))
        self.assertInvalid(forge("V1", payload))

    def test_signed_non_json_payload(self) -> None:
        """A correctly signed payload that is not JSON is INVALID_TOKEN (the payload check, not the signature)."""
        self.assertInvalid(forge("v1", b64(b"not json")))
        self.assertInvalid(forge("v1", b64(b"\xff\xfe\xfd")))

    def test_signed_invalid_base64_payload(self) -> None:
        """A correctly signed payload that is not valid base64 is INVALID_TOKEN."""
        self.assertInvalid(forge("v1", "a"))

    def test_signed_wrong_shape_payload(self) -> None:
        """Correctly signed JSON without the right fields or types is INVALID_TOKEN."""
        for payload in (
            [42, "alice", 1e12],
            {"name": "alice", "exp": 1e12},
            {"uid": 42, "exp": 1e12},
            {"uid": 42, "name": "alice"},
            {"uid": "abc", "name": "alice", "exp": 1e12},
            {"uid": 42, "name": "alice", "exp": "later"},
            {"uid": None, "name": "alice", "exp": 1e12},
            "a string",
            None,
        ):
            self.assertInvalid(forge("v1", b64(json.dumps(payload).encode())))

    def test_short_secret(self) -> None:
        """Secrets under 32 bytes are refused; 32 bytes are enough."""
        self.assertRaises(ValueError, TokenSigner, b"x" * 31)
        self.assertRaises(ValueError, TokenSigner, b"")
        TokenSigner(b"x" * 32)


class LoadOrCreateSecretTests(SynchronousTestCase):
    """The secret file is created once, private, and read back unchanged."""

    def test_creates_once(self) -> None:
        """The first call creates a 0600 file (and its directory); the second returns the same secret."""
        path = pathlib.Path(self.mktemp()) / "conf" / "token-secret"
        secret = load_or_create_secret(path)
        self.assertTrue(path.exists())
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertGreaterEqual(len(secret), 32)
        self.assertEqual(path.read_bytes(), secret + b"\n")
        self.assertEqual(load_or_create_secret(path), secret)
        self.assertEqual(path.read_bytes(), secret + b"\n")
        token, _ = TokenSigner(secret).issue(ALICE, 0.0, 10.0)
        self.assertEqual(TokenSigner(load_or_create_secret(path)).verify(token, 1.0), ALICE)

    def test_secrets_are_random(self) -> None:
        """Two new files get different secrets."""
        base = pathlib.Path(self.mktemp())
        self.assertNotEqual(load_or_create_secret(base / "a"), load_or_create_secret(base / "b"))

    def test_reads_existing(self) -> None:
        """An existing file is read, with surrounding whitespace stripped, and not rewritten."""
        path = pathlib.Path(self.mktemp())
        path.write_bytes(b"  " + SECRET + b"\n\n")
        self.assertEqual(load_or_create_secret(path), SECRET)
        self.assertEqual(path.read_bytes(), b"  " + SECRET + b"\n\n")
