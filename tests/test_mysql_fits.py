"""The MariaDB store's check of what fits its columns (:func:`gochat.logic.mysql_store.check_fits`): its quick
answer for the common case never lets through what the full check refuses, at and around every limit."""

from __future__ import annotations

import dataclasses
import random

from twisted.trial.unittest import SynchronousTestCase

from gochat.errors import ErrorCode, GochatError
from gochat.logic import mysql_store
from gochat.logic.mysql_store import (
    MAX_BODY_BYTES,
    MAX_CLIENT_MSG_ID_LENGTH,
    MAX_CONV_LENGTH,
    MAX_SENDER_LENGTH,
    check_fits,
)
from gochat.model import MessageKind, PersistRequest, StoredMessage

BASE = StoredMessage(1, "d:1:2", 1, 1, "alice", "m1", "hello", 1_700_000_000_000)
REQUEST = PersistRequest(1, "d:1:2", 1, "alice", "m1", "hello", 1_700_000_000_000, (1, 2), "gw", "s")


class Text(str):
    pass


def texts(limit: int) -> list[object]:
    """Text at and around *limit* characters: ASCII, 2- and 4-byte characters, a lone surrogate, other types."""
    return [
        "",
        "a" * limit,
        "a" * (limit + 1),
        "é" * limit,
        "é" * (limit + 1),
        "\N{GRINNING FACE}" * limit,
        "\N{GRINNING FACE}" * (limit + 1),
        "a" * (limit - 1) + "\ud800",
        "\udfff",
        Text("a"),
        b"bytes",
    ]


NUMBERS: list[object] = [0, 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -1, -(2**63), -(2**63) - 1, True, 1.0, None]
BODIES: list[object] = [
    "",
    "x" * MAX_BODY_BYTES,
    "x" * (MAX_BODY_BYTES + 1),
    "é" * (MAX_BODY_BYTES // 2),
    "é" * (MAX_BODY_BYTES // 2) + "x",
    "\N{GRINNING FACE}" * (MAX_BODY_BYTES // 4),
    "\N{GRINNING FACE}" * (MAX_BODY_BYTES // 4) + "x",
    "body \ud800",
    Text("body"),
]
KINDS: list[object] = [*sorted(MessageKind.ALL), "", "TEXT", "text ", Text("text"), "x" * 40]


def variants() -> list[StoredMessage | PersistRequest]:
    """The base message and request with each field, one at a time, set to each of its test values."""
    values: dict[str, list[object]] = {
        "conv": texts(MAX_CONV_LENGTH),
        "sender": texts(MAX_SENDER_LENGTH),
        "client_msg_id": texts(MAX_CLIENT_MSG_ID_LENGTH),
        "body": BODIES,
        "kind": KINDS,
        "msg_id": NUMBERS,
        "sender_id": NUMBERS,
        "ref_seq": NUMBERS,
        "ts": NUMBERS,
    }
    found: list[StoredMessage | PersistRequest] = [BASE, REQUEST]
    for name, options in values.items():
        for value in options:
            found.append(dataclasses.replace(BASE, **{name: value}))
            found.append(dataclasses.replace(REQUEST, **{name: value}))
    found += [dataclasses.replace(BASE, seq=value) for value in NUMBERS]
    return found


def outcome(message: StoredMessage | PersistRequest) -> str:
    """What check_fits does with *message*: passes, refuses (bad_request), or raises another error."""
    try:
        check_fits(message)
    except GochatError as error:
        return f"refused:{error.code}"
    except Exception as error:
        return f"error:{type(error).__name__}"
    return "fits"


def full_outcome(message: StoredMessage | PersistRequest) -> str:
    """The same with the full check alone."""
    try:
        problems = mysql_store._problems(message)
    except Exception as error:
        return f"error:{type(error).__name__}"
    return f"refused:{ErrorCode.BAD_REQUEST}" if problems else "fits"


class CheckFitsTests(SynchronousTestCase):
    def test_quick_answer_agrees_with_the_full_check(self) -> None:
        """For every variant, at and past each limit: check_fits does what the full check alone would do, and
        the quick answer says "fits" only where the full check finds no problem."""
        quick_fits = 0
        for message in variants():
            with self.subTest(message=repr(message)[:200]):
                self.assertEqual(outcome(message), full_outcome(message))
                if mysql_store._fits_plainly(message):
                    quick_fits += 1
                    self.assertEqual(mysql_store._problems(message), [])
        self.assertGreater(quick_fits, 40)  # the quick answer is used, not always "look closer"

    def test_generated_messages(self) -> None:
        """Random text mixing ASCII, accents, emoji and surrogates, at random lengths around the limits."""
        rng = random.Random(17)
        alphabet = "ab é中\N{GRINNING FACE}\ud800\udfff"

        def text(limit: int) -> str:
            length = rng.choice((rng.randrange(limit + 2), limit, limit + 1))
            if rng.random() < 0.5:
                return "x" * length
            return "".join(rng.choices(alphabet, k=length))

        for _ in range(3000):
            message = dataclasses.replace(
                BASE,
                conv=text(MAX_CONV_LENGTH),
                sender=text(MAX_SENDER_LENGTH),
                client_msg_id=text(MAX_CLIENT_MSG_ID_LENGTH),
                body=text(300),
            )
            self.assertEqual(outcome(message), full_outcome(message))
            if mysql_store._fits_plainly(message):
                self.assertEqual(mysql_store._problems(message), [])

    def test_refusal_says_why(self) -> None:
        with self.assertRaises(GochatError) as raised:
            check_fits(dataclasses.replace(BASE, conv="c" * (MAX_CONV_LENGTH + 1), body="\ud800"))
        self.assertEqual(raised.exception.code, ErrorCode.BAD_REQUEST)
        self.assertIn(f"conv is longer than {MAX_CONV_LENGTH} characters", str(raised.exception))
        self.assertIn("body is not valid Unicode text", str(raised.exception))
