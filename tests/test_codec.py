"""Tests for :mod:`gochat.gateway.codec`: decoding client frames, parsing requests, encoding replies."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from gochat.errors import ErrorCode, GochatError
from gochat.gateway.codec import (
    MAX_CLIENT_MSG_ID_LENGTH,
    MAX_REQUEST_ID_LENGTH,
    MAX_TOKEN_LENGTH,
    MAX_USERNAME_LENGTH,
    AuthRequest,
    Frame,
    FrameError,
    PingRequest,
    SendRequest,
    decode_frame,
    encode_ack,
    encode_error,
    encode_frame,
    encode_push,
    parse_request,
)
from gochat.model import Ack, StoredMessage

MAX_BODY = 16


def raw(envelope: Any) -> bytes:
    """*envelope* as the UTF-8 JSON bytes of a text frame."""
    return json.dumps(envelope, ensure_ascii=False).encode("utf-8")


def send_body(**overrides: Any) -> dict[str, Any]:
    """A valid ``send`` body with some fields replaced (or removed when the value is ``...``)."""
    body: dict[str, Any] = {"client_msg_id": "c1", "to": "bob", "body": "hi"}
    for name, value in overrides.items():
        if value is ...:
            del body[name]
        else:
            body[name] = value
    return body


class DecodeFrameTests(SynchronousTestCase):
    """``decode_frame`` accepts versioned JSON objects and says exactly what is wrong with anything else."""

    def assertDecodeError(self, payload: bytes, code: ErrorCode, is_binary: bool = False) -> GochatError:
        """Decoding *payload* raises a GochatError with *code*; return it."""
        error = self.assertRaises(GochatError, decode_frame, payload, is_binary)
        self.assertIs(error.code, code)
        return error

    def test_binary_frame_refused(self) -> None:
        """A binary message is UNSUPPORTED_FRAME even if it holds a valid envelope."""
        self.assertDecodeError(raw({"v": 1, "type": "ping"}), ErrorCode.UNSUPPORTED_FRAME, is_binary=True)

    def test_malformed_json(self) -> None:
        """Truncated or non-JSON text is BAD_FRAME."""
        for payload in (b'{"v":1,', b"", b"ping", b"{'v': 1}", b'{"v":1}}'):
            self.assertDecodeError(payload, ErrorCode.BAD_FRAME)

    def test_non_utf8_bytes(self) -> None:
        """Bytes that are not UTF-8 are BAD_FRAME, not an unhandled UnicodeDecodeError."""
        self.assertDecodeError(b'{"v":1,"type":"\xff\xfe"}', ErrorCode.BAD_FRAME)
        self.assertDecodeError(b'{"v":1,"type":"\xc3"}', ErrorCode.BAD_FRAME)
        self.assertDecodeError(b"\xff\xfe\xfd", ErrorCode.BAD_FRAME)

    def test_utf16_text_refused(self) -> None:
        """A frame is UTF-8 JSON; the same envelope encoded as UTF-16 is BAD_FRAME.

        The UTF-16-LE bytes of an ASCII envelope are valid UTF-8 (full of NULs),
        so they get through the WebSocket's UTF-8 check; they must not then be
        read as a different text than the one the client sent.
        """
        self.assertDecodeError('{"v":1,"type":"ping"}'.encode("utf-16-le"), ErrorCode.BAD_FRAME)

    def test_not_an_object(self) -> None:
        """Valid JSON that is not an object (array, string, number, null) is BAD_FRAME."""
        for envelope in ([1, "ping"], [], "ping", 1, None, True):
            self.assertDecodeError(raw(envelope), ErrorCode.BAD_FRAME)

    def test_missing_version_carries_request_id(self) -> None:
        """No ``v`` is UNSUPPORTED_VERSION, raised as a FrameError holding the request id."""
        error = self.assertDecodeError(raw({"type": "ping", "id": "r1"}), ErrorCode.UNSUPPORTED_VERSION)
        self.assertIsInstance(error, FrameError)
        assert isinstance(error, FrameError)
        self.assertEqual(error.request_id, "r1")

    def test_wrong_version(self) -> None:
        """Any version other than the number 1 is UNSUPPORTED_VERSION."""
        for version in (2, 0, -1, "1", None, [1], {"v": 1}):
            error = self.assertDecodeError(
                raw({"v": version, "type": "ping", "id": "r2"}), ErrorCode.UNSUPPORTED_VERSION
            )
            assert isinstance(error, FrameError)
            self.assertEqual(error.request_id, "r2")

    def test_boolean_version_refused(self) -> None:
        """``"v": true`` is not version 1 (even though ``True == 1`` in Python)."""
        self.assertDecodeError(b'{"v":true,"type":"ping"}', ErrorCode.UNSUPPORTED_VERSION)

    def test_wrong_version_without_id(self) -> None:
        """Without an id, the FrameError's request id is None."""
        error = self.assertDecodeError(raw({"v": 2, "type": "ping"}), ErrorCode.UNSUPPORTED_VERSION)
        assert isinstance(error, FrameError)
        self.assertIsNone(error.request_id)

    def test_type_must_be_string(self) -> None:
        """A missing or non-string type is BAD_FRAME carrying the request id."""
        for envelope in ({"v": 1, "id": "r3"}, {"v": 1, "type": 7, "id": "r3"}, {"v": 1, "type": None, "id": "r3"}):
            error = self.assertDecodeError(raw(envelope), ErrorCode.BAD_FRAME)
            assert isinstance(error, FrameError)
            self.assertEqual(error.request_id, "r3")

    def test_body_must_be_object(self) -> None:
        """A body that is not an object is BAD_FRAME carrying the request id."""
        for body in ([], "hi", 1, None, True):
            error = self.assertDecodeError(raw({"v": 1, "type": "send", "id": "r4", "body": body}), ErrorCode.BAD_FRAME)
            assert isinstance(error, FrameError)
            self.assertEqual(error.request_id, "r4")

    def test_request_id_too_long(self) -> None:
        """An id over the limit is BAD_FRAME and, being unusable, is not echoed (not a FrameError)."""
        long_id = "x" * (MAX_REQUEST_ID_LENGTH + 1)
        error = self.assertDecodeError(raw({"v": 1, "type": "ping", "id": long_id}), ErrorCode.BAD_FRAME)
        self.assertNotIsInstance(error, FrameError)

    def test_request_id_must_be_string(self) -> None:
        """A non-string id is BAD_FRAME, checked before the version."""
        for request_id in (5, ["r"], {"r": 1}, True):
            error = self.assertDecodeError(raw({"v": 9, "type": "ping", "id": request_id}), ErrorCode.BAD_FRAME)
            self.assertNotIsInstance(error, FrameError)

    def test_request_id_at_limit(self) -> None:
        """An id of exactly the maximum length is accepted."""
        long_id = "é" * MAX_REQUEST_ID_LENGTH
        frame = decode_frame(raw({"v": 1, "type": "ping", "id": long_id}), False)
        self.assertEqual(frame.request_id, long_id)

    def test_valid_with_id_and_body(self) -> None:
        """A complete envelope decodes to its type, id and body."""
        body = {"client_msg_id": "c1", "to": "bob", "body": "héllo 🌍"}
        frame = decode_frame(raw({"v": 1, "type": "send", "id": "r7", "body": body}), False)
        self.assertEqual(frame, Frame("send", "r7", body))

    def test_valid_without_id_and_body(self) -> None:
        """Without id and body, the id is None and the body empty."""
        self.assertEqual(decode_frame(b'{"v":1,"type":"ping"}', False), Frame("ping", None, {}))

    def test_explicit_null_id(self) -> None:
        """``"id": null`` is the same as no id."""
        self.assertEqual(decode_frame(b'{"v":1,"type":"ping","id":null}', False).request_id, None)

    def test_unknown_fields_ignored(self) -> None:
        """Extra envelope fields are ignored, for forward compatibility."""
        self.assertEqual(decode_frame(b'{"v":1,"type":"ping","extra":[1]}', False), Frame("ping", None, {}))

    def test_frame_error_is_gochat_error(self) -> None:
        """FrameError keeps the wrapped error's code and message."""
        error = FrameError(GochatError(ErrorCode.BAD_FRAME, "nope"), "r9")
        self.assertIsInstance(error, GochatError)
        self.assertIs(error.code, ErrorCode.BAD_FRAME)
        self.assertEqual(error.message, "nope")
        self.assertEqual(error.request_id, "r9")


class ParseRequestTests(SynchronousTestCase):
    """``parse_request`` turns a frame's body into a typed request or BAD_REQUEST / UNKNOWN_TYPE."""

    def assertBadRequest(self, frame: Frame, max_body_length: int = MAX_BODY) -> None:
        """Parsing *frame* raises BAD_REQUEST."""
        error = self.assertRaises(GochatError, parse_request, frame, max_body_length)
        self.assertIs(error.code, ErrorCode.BAD_REQUEST)

    def test_auth(self) -> None:
        """``auth`` with a token gives an AuthRequest."""
        self.assertEqual(parse_request(Frame("auth", "r1", {"token": "v1.a.b"}), MAX_BODY), AuthRequest("v1.a.b"))

    def test_auth_bad_token(self) -> None:
        """A missing, empty, non-string or over-long token is BAD_REQUEST."""
        for body in ({}, {"token": ""}, {"token": 12}, {"token": None}, {"token": "t" * (MAX_TOKEN_LENGTH + 1)}):
            self.assertBadRequest(Frame("auth", None, body))

    def test_auth_token_at_limit(self) -> None:
        """A token of exactly the maximum length is accepted."""
        token = "t" * MAX_TOKEN_LENGTH
        self.assertEqual(parse_request(Frame("auth", None, {"token": token}), MAX_BODY), AuthRequest(token))

    def test_ping(self) -> None:
        """``ping`` needs no body and ignores one."""
        self.assertEqual(parse_request(Frame("ping", None, {}), MAX_BODY), PingRequest())
        self.assertEqual(parse_request(Frame("ping", None, {"x": 1}), MAX_BODY), PingRequest())

    def test_send(self) -> None:
        """``send`` with all fields gives a SendRequest."""
        request = parse_request(Frame("send", "r2", send_body(body="héllo")), MAX_BODY)
        self.assertEqual(request, SendRequest(client_msg_id="c1", to="bob", body="héllo"))

    def test_send_missing_fields(self) -> None:
        """Each missing ``send`` field is BAD_REQUEST."""
        for name in ("client_msg_id", "to", "body"):
            self.assertBadRequest(Frame("send", None, send_body(**{name: ...})))

    def test_send_empty_fields(self) -> None:
        """Each empty ``send`` field is BAD_REQUEST."""
        for name in ("client_msg_id", "to", "body"):
            self.assertBadRequest(Frame("send", None, send_body(**{name: ""})))

    def test_send_wrong_types(self) -> None:
        """Non-string ``send`` fields are BAD_REQUEST."""
        for name in ("client_msg_id", "to", "body"):
            for value in (1, None, ["x"], {"x": 1}, True):
                self.assertBadRequest(Frame("send", None, send_body(**{name: value})))

    def test_send_over_long_fields(self) -> None:
        """client_msg_id and to over their limits are BAD_REQUEST; at the limit they pass."""
        self.assertBadRequest(Frame("send", None, send_body(client_msg_id="c" * (MAX_CLIENT_MSG_ID_LENGTH + 1))))
        self.assertBadRequest(Frame("send", None, send_body(to="u" * (MAX_USERNAME_LENGTH + 1))))
        request = parse_request(
            Frame("send", None, send_body(client_msg_id="c" * MAX_CLIENT_MSG_ID_LENGTH, to="u" * MAX_USERNAME_LENGTH)),
            MAX_BODY,
        )
        assert isinstance(request, SendRequest)
        self.assertEqual(len(request.client_msg_id), MAX_CLIENT_MSG_ID_LENGTH)
        self.assertEqual(len(request.to), MAX_USERNAME_LENGTH)

    def test_send_body_limit(self) -> None:
        """The body limit is the caller's, counted in characters, inclusive."""
        at_limit = "é" * MAX_BODY
        request = parse_request(Frame("send", None, send_body(body=at_limit)), MAX_BODY)
        assert isinstance(request, SendRequest)
        self.assertEqual(request.body, at_limit)
        self.assertBadRequest(Frame("send", None, send_body(body=at_limit + "x")))
        self.assertBadRequest(Frame("send", None, send_body(body="abc")), max_body_length=2)

    def test_unknown_type(self) -> None:
        """Unknown and differently-cased types are UNKNOWN_TYPE."""
        for frame_type in ("pong", "Ping", "SEND", "", "push"):
            error = self.assertRaises(GochatError, parse_request, Frame(frame_type, None, {}), MAX_BODY)
            self.assertIs(error.code, ErrorCode.UNKNOWN_TYPE)


class EncodeTests(SynchronousTestCase):
    """Server frames are compact UTF-8 JSON envelopes."""

    def test_encode_frame_with_id(self) -> None:
        """The envelope carries version, type, id and body."""
        data = encode_frame("pong", {"a": 1}, "r1")
        self.assertEqual(json.loads(data), {"v": 1, "type": "pong", "id": "r1", "body": {"a": 1}})

    def test_encode_frame_without_id(self) -> None:
        """Without a request id there is no ``id`` key at all; the JSON is compact."""
        data = encode_frame("pong", {})
        self.assertEqual(data, b'{"v":1,"type":"pong","body":{}}')
        self.assertNotIn("id", json.loads(data))

    def test_unicode_preserved(self) -> None:
        """Non-ASCII text is sent as UTF-8, not as ``\\u`` escapes, and reads back unchanged."""
        text = "héllo 🌍 日本"
        data = encode_frame("push", {"body": text})
        self.assertIn(text.encode("utf-8"), data)
        self.assertNotIn(b"\\u", data)
        self.assertEqual(json.loads(data.decode("utf-8"))["body"]["body"], text)

    def test_round_trip_through_decoder(self) -> None:
        """A server frame is a valid client-side envelope for the same decoder."""
        frame = decode_frame(encode_frame("pong", {"x": "é"}, "r5"), False)
        self.assertEqual(frame, Frame("pong", "r5", {"x": "é"}))

    def test_encode_error(self) -> None:
        """An error frame carries the code's wire string and the message, and echoes the request id."""
        data = encode_error(GochatError(ErrorCode.BAD_REQUEST, "to must be a string"), "r2")
        self.assertEqual(
            json.loads(data),
            {"v": 1, "type": "error", "id": "r2", "body": {"code": "bad_request", "message": "to must be a string"}},
        )

    def test_encode_error_default_message(self) -> None:
        """Without a message or id the frame has the default message and no id."""
        self.assertEqual(
            json.loads(encode_error(GochatError(ErrorCode.RATE_LIMITED))),
            {"v": 1, "type": "error", "body": {"code": "rate_limited", "message": "rate limited"}},
        )

    def test_encode_ack(self) -> None:
        """An ack carries msg_id as a decimal string (64-bit safe) and seq/ts as numbers."""
        msg_id = 2**63 - 1
        data = encode_ack(Ack("c1", msg_id, "d:1:2", 7, 1_700_000_000_123), "r3")
        self.assertEqual(
            json.loads(data),
            {
                "v": 1,
                "type": "ack",
                "id": "r3",
                "body": {
                    "client_msg_id": "c1",
                    "msg_id": "9223372036854775807",
                    "conv": "d:1:2",
                    "seq": 7,
                    "ts": 1_700_000_000_123,
                },
            },
        )

    def test_encode_push(self) -> None:
        """A push carries the stored message, msg_id as a decimal string, and no request id."""
        message = StoredMessage(
            msg_id=(1 << 62) + 12345,
            conv="d:1:2",
            seq=3,
            sender_id=1,
            sender="alice",
            client_msg_id="c9",
            body="grüße 👋",
            ts=1_700_000_000_000,
        )
        data = encode_push(message)
        self.assertIn("grüße 👋".encode(), data)
        self.assertEqual(
            json.loads(data),
            {
                "v": 1,
                "type": "push",
                "body": {
                    "msg_id": str((1 << 62) + 12345),
                    "conv": "d:1:2",
                    "seq": 3,
                    "from": "alice",
                    "client_msg_id": "c9",
                    "body": "grüße 👋",
                    "ts": 1_700_000_000_000,
                    "kind": "text",
                },
            },
        )
        self.assertEqual(int(json.loads(data)["body"]["msg_id"]), message.msg_id)


class ResumeRequestTests(SynchronousTestCase):
    """``sync`` and ``recv_ack`` bodies."""

    def parse(self, frame_type: str, body: dict[str, Any]) -> object:
        from gochat.gateway.codec import Frame, parse_request

        return parse_request(Frame(frame_type, "r", body), 8192)

    def refused(self, frame_type: str, body: dict[str, Any]) -> ErrorCode:
        with self.assertRaises(GochatError) as caught:
            self.parse(frame_type, body)
        return caught.exception.code

    def test_sync(self) -> None:
        """since is optional; limit defaults to 200; seqs are non-negative ints."""
        from gochat.gateway.codec import SyncRequest

        self.assertEqual(self.parse("sync", {}), SyncRequest(None, 200))
        self.assertEqual(self.parse("sync", {"since": {"d:1:2": 4}, "limit": 7}), SyncRequest({"d:1:2": 4}, 7))
        for bad in (
            {"limit": 0},
            {"limit": 1001},
            {"limit": True},
            {"since": []},
            {"since": {"d:1:2": -1}},
            {"since": {"d:1:2": 1.5}},
            {"since": {"d:1:2": True}},
            {"since": {"": 1}},
            {"since": {"x" * 129: 1}},
            {"since": {"\ud800": 1}},
        ):
            self.assertEqual(self.refused("sync", bad), ErrorCode.BAD_REQUEST, bad)

    def test_recv_ack(self) -> None:
        """recv_ack needs a conversation and a non-negative integer seq."""
        from gochat.gateway.codec import RecvAckRequest

        self.assertEqual(self.parse("recv_ack", {"conv": "d:1:2", "seq": 0}), RecvAckRequest("d:1:2", 0))
        for bad in ({"conv": "d:1:2"}, {"seq": 1}, {"conv": "d:1:2", "seq": "3"}, {"conv": "", "seq": 1}):
            self.assertEqual(self.refused("recv_ack", bad), ErrorCode.BAD_REQUEST, bad)
