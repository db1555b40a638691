"""Tests for :mod:`gochat.errors`: the stable codes and their mapping to every wire."""

from __future__ import annotations

import grpc
from twisted.trial.unittest import SynchronousTestCase

from gochat.errors import WIRE, ErrorCode, GochatError, WireMapping


class ErrorCodeTests(SynchronousTestCase):
    """The codes are part of the public protocol."""

    def test_values_are_lowercase_names(self) -> None:
        """Each code's wire string is its name in lower case."""
        for code in ErrorCode:
            self.assertEqual(code.value, code.name.lower())

    def test_no_aliases(self) -> None:
        """No two codes share a wire string (an enum alias would hide one)."""
        self.assertEqual(len(ErrorCode.__members__), len(list(ErrorCode)))

    def test_known_wire_strings(self) -> None:
        """A few codes clients already depend on keep their exact strings."""
        self.assertEqual(ErrorCode("bad_frame"), ErrorCode.BAD_FRAME)
        self.assertEqual(ErrorCode("rate_limited"), ErrorCode.RATE_LIMITED)
        self.assertEqual(ErrorCode("token_expired"), ErrorCode.TOKEN_EXPIRED)
        self.assertEqual(ErrorCode("shutting_down"), ErrorCode.SHUTTING_DOWN)


class WireMappingTests(SynchronousTestCase):
    """Every code shows sensibly on WebSocket, HTTP and gRPC."""

    def test_every_code_is_mapped(self) -> None:
        """WIRE has exactly one entry for every ErrorCode, and nothing else."""
        self.assertEqual(set(WIRE), set(ErrorCode))
        for code in ErrorCode:
            self.assertIsInstance(WIRE[code], WireMapping)

    def test_close_codes_in_application_range(self) -> None:
        """A close code is None, 1009 (message too big) or in the application range 4000-4999."""
        for code, mapping in WIRE.items():
            close = mapping.close_code
            if close is None or close == 1009:
                continue
            self.assertTrue(4000 <= close <= 4999, f"{code}: close code {close} outside 4000-4999")

    def test_close_codes_distinct(self) -> None:
        """Two codes that close the socket never share a close code, so clients can tell them apart."""
        closes = [m.close_code for m in WIRE.values() if m.close_code is not None]
        self.assertEqual(len(closes), len(set(closes)))

    def test_specific_close_codes(self) -> None:
        """The closing errors use their documented close codes; per-request errors keep the session open."""
        self.assertEqual(WIRE[ErrorCode.FRAME_TOO_LARGE].close_code, 1009)
        self.assertEqual(WIRE[ErrorCode.UNSUPPORTED_FRAME].close_code, 4403)
        self.assertEqual(WIRE[ErrorCode.INVALID_TOKEN].close_code, 4401)
        self.assertEqual(WIRE[ErrorCode.TOKEN_EXPIRED].close_code, 4402)
        self.assertEqual(WIRE[ErrorCode.AUTH_TIMEOUT].close_code, 4408)
        self.assertEqual(WIRE[ErrorCode.IDLE_TIMEOUT].close_code, 4409)
        self.assertEqual(WIRE[ErrorCode.SHUTTING_DOWN].close_code, 4503)
        for code in (ErrorCode.BAD_FRAME, ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_TYPE, ErrorCode.RATE_LIMITED):
            self.assertIsNone(WIRE[code].close_code, code)

    def test_http_statuses_are_errors(self) -> None:
        """Every HTTP status is a 4xx or 5xx."""
        for code, mapping in WIRE.items():
            self.assertTrue(400 <= mapping.http_status <= 599, f"{code}: {mapping.http_status}")

    def test_grpc_statuses_exist(self) -> None:
        """Every gRPC status name is a real ``grpc.StatusCode`` member other than OK."""
        for code, mapping in WIRE.items():
            status = grpc.StatusCode[mapping.grpc_status]
            self.assertIsNot(status, grpc.StatusCode.OK, code)


class GochatErrorTests(SynchronousTestCase):
    """The exception carrying a code."""

    def test_message_and_str(self) -> None:
        """An explicit message is kept and shown after the code."""
        error = GochatError(ErrorCode.BAD_REQUEST, "to must be a string")
        self.assertIs(error.code, ErrorCode.BAD_REQUEST)
        self.assertEqual(error.message, "to must be a string")
        self.assertEqual(str(error), "bad_request: to must be a string")

    def test_default_message(self) -> None:
        """Without a message, the code's words stand in."""
        error = GochatError(ErrorCode.RATE_LIMITED)
        self.assertEqual(error.message, "rate limited")
        self.assertEqual(str(error), "rate_limited")

    def test_wire_property(self) -> None:
        """``wire`` is the code's WIRE entry."""
        self.assertIs(GochatError(ErrorCode.INVALID_TOKEN).wire, WIRE[ErrorCode.INVALID_TOKEN])

    def test_from_wire_known(self) -> None:
        """A known code string comes back as that code with the message unchanged."""
        for code in ErrorCode:
            error = GochatError.from_wire(code.value, "why")
            self.assertIs(error.code, code)
            self.assertEqual(error.message, "why")

    def test_from_wire_unknown(self) -> None:
        """An unknown code string becomes INTERNAL, keeping the original code in the message."""
        error = GochatError.from_wire("martian_error", "what happened")
        self.assertIs(error.code, ErrorCode.INTERNAL)
        self.assertEqual(error.message, "martian_error: what happened")

    def test_from_wire_is_case_sensitive(self) -> None:
        """The enum name is not a wire string: ``RATE_LIMITED`` is unknown."""
        self.assertIs(GochatError.from_wire("RATE_LIMITED", "x").code, ErrorCode.INTERNAL)
