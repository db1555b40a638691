"""Tests for :mod:`gochat.logic.passwords`: salted, self-describing scrypt hashes."""

from __future__ import annotations

import base64
import hashlib

from twisted.trial.unittest import SynchronousTestCase

from gochat.logic.passwords import ScryptCost, hash_password, verify_password

CHEAP = ScryptCost(n=2**4, r=1, p=1)


class HashPasswordTests(SynchronousTestCase):
    """``hash_password`` produces ``scrypt$n$r$p$salt$hash``."""

    def test_format(self) -> None:
        """The hash names the scheme and cost and holds a 16-byte salt and a 32-byte digest."""
        scheme, n, r, p, salt, digest = hash_password("secret", CHEAP).split("$")
        self.assertEqual((scheme, n, r, p), ("scrypt", "16", "1", "1"))
        self.assertEqual(len(base64.b64decode(salt)), 16)
        self.assertEqual(len(base64.b64decode(digest)), 32)

    def test_digest_is_scrypt(self) -> None:
        """The digest is scrypt of the UTF-8 password under the stored salt and cost."""
        encoded = hash_password("pässwörd", ScryptCost(n=2**5, r=2, p=1))
        _, n, r, p, salt, digest = encoded.split("$")
        self.assertEqual((n, r, p), ("32", "2", "1"))
        expected = hashlib.scrypt("pässwörd".encode(), salt=base64.b64decode(salt), n=32, r=2, p=1, dklen=32)
        self.assertEqual(base64.b64decode(digest), expected)

    def test_salted(self) -> None:
        """Hashing the same password twice gives different hashes (fresh salt), both of which verify."""
        first = hash_password("secret", CHEAP)
        second = hash_password("secret", CHEAP)
        self.assertNotEqual(first, second)
        self.assertNotEqual(first.split("$")[4], second.split("$")[4])
        self.assertTrue(verify_password("secret", first))
        self.assertTrue(verify_password("secret", second))


class VerifyPasswordTests(SynchronousTestCase):
    """``verify_password`` says True only for the right password and never raises on bad hashes."""

    def test_right_and_wrong(self) -> None:
        """The right password matches; near misses do not."""
        encoded = hash_password("correct horse", CHEAP)
        self.assertTrue(verify_password("correct horse", encoded))
        for wrong in ("correct hors", "correct horse ", "Correct horse", "", " correct horse"):
            self.assertFalse(verify_password(wrong, encoded), wrong)

    def test_unicode_and_empty(self) -> None:
        """Non-ASCII and empty passwords round-trip."""
        for password in ("日本語 🔑", ""):
            self.assertTrue(verify_password(password, hash_password(password, CHEAP)))

    def test_independently_built_hash(self) -> None:
        """A hash built by hand in the documented format verifies, at whatever cost it names."""
        salt = b"0123456789abcdef"
        digest = hashlib.scrypt(b"pw", salt=salt, n=8, r=1, p=2, dklen=32)
        encoded = f"scrypt$8$1$2${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
        self.assertTrue(verify_password("pw", encoded))
        self.assertFalse(verify_password("pW", encoded))

    def test_tampered_digest(self) -> None:
        """Changing the stored digest makes the right password fail."""
        scheme, n, r, p, salt, digest = hash_password("pw", CHEAP).split("$")
        raw = bytearray(base64.b64decode(digest))
        raw[0] ^= 1
        tampered = "$".join((scheme, n, r, p, salt, base64.b64encode(bytes(raw)).decode()))
        self.assertFalse(verify_password("pw", tampered))

    def test_malformed_returns_false(self) -> None:
        """Malformed encodings return False instead of raising."""
        good = hash_password("pw", CHEAP)
        _, _, _, _, salt, digest = good.split("$")
        for encoded in (
            "",
            "scrypt",
            "plain-text-password",
            good + "$extra",
            good.replace("scrypt$", "bcrypt$", 1),
            f"scrypt$x$1$1${salt}${digest}",
            f"scrypt$15$1$1${salt}${digest}",  # n not a power of two
            f"scrypt$1$1$1${salt}${digest}",  # n too small
            f"scrypt$16$0$1${salt}${digest}",
            f"scrypt$16$1$0${salt}${digest}",
            f"scrypt$16$1$1$!!!${digest}",
            f"scrypt$16$1$1${salt}$",
            f"scrypt$16$1$1${salt}$AAA",  # bad padding
            f"scrypt$16$1$1$é${digest}",
            f"scrypt$1048576$8$1${salt}${digest}",  # over the memory limit
        ):
            self.assertIs(verify_password("pw", encoded), False, encoded)

    def test_out_of_range_cost_returns_false(self) -> None:
        """Negative or huge cost numbers return False instead of raising (TypeError/OverflowError)."""
        _, _, _, _, salt, digest = hash_password("pw", CHEAP).split("$")
        for encoded in (
            f"scrypt$-16$1$1${salt}${digest}",
            f"scrypt$16$-1$1${salt}${digest}",
            f"scrypt$16$1$-1${salt}${digest}",
            f"scrypt${2**70}$1$1${salt}${digest}",
            f"scrypt$16$1${2**70}${salt}${digest}",
        ):
            self.assertIs(verify_password("pw", encoded), False, encoded)
