"""The gateway's HTTP JSON API: register and log in.

``POST /api/register`` with ``{"username", "password"}`` answers 201
``{"user_id"}``; ``POST /api/login`` answers 200 ``{"user_id", "token",
"expires_at"}``. Errors answer with the status from
:data:`gochat.errors.WIRE` and ``{"error": {"code", "message"}}``. The
gateway only relays: logic owns accounts and tokens.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from gochat.errors import ErrorCode, GochatError
from gochat.gateway.logic_client import ILogicClient

_log = Logger()

MAX_REQUEST_BYTES = 16 * 1024


def _write_json(request: Request, status: int, body: dict[str, Any]) -> None:
    if request.finished or request._disconnected:
        return
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    request.write(json.dumps(body, separators=(",", ":")).encode("utf-8"))
    request.finish()


def _write_error(request: Request, error: GochatError) -> None:
    _write_json(request, error.wire.http_status, {"error": {"code": error.code.value, "message": error.message}})


def _credentials(request: Request) -> tuple[str, str]:
    content = request.content.read(MAX_REQUEST_BYTES + 1) if request.content is not None else b""
    if len(content) > MAX_REQUEST_BYTES:
        raise GochatError(ErrorCode.FRAME_TOO_LARGE, f"request body over {MAX_REQUEST_BYTES} bytes")
    try:
        body = json.loads(content)
    except (UnicodeDecodeError, ValueError):
        raise GochatError(ErrorCode.BAD_REQUEST, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise GochatError(ErrorCode.BAD_REQUEST, "the body must be a JSON object")
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise GochatError(ErrorCode.BAD_REQUEST, "username and password must be strings")
    return username, password


class _CredentialsEndpoint(Resource):
    isLeaf = True

    def __init__(self, call: Callable[[str, str], Deferred[Any]], status: int, reply: Callable[[Any], dict[str, Any]]):
        super().__init__()
        self._call = call
        self._status = status
        self._reply = reply

    def render_POST(self, request: Request) -> Any:
        try:
            username, password = _credentials(request)
        except GochatError as e:
            _write_error(request, e)
            return NOT_DONE_YET
        d = self._call(username, password)
        d.addCallbacks(
            lambda result: _write_json(request, self._status, self._reply(result)), self._failed, errbackArgs=(request,)
        )
        return NOT_DONE_YET

    def _failed(self, failure: Failure, request: Request) -> None:
        if isinstance(failure.value, GochatError):
            _write_error(request, failure.value)
        else:
            _log.failure("HTTP API call failed", failure)
            _write_error(request, GochatError(ErrorCode.UNAVAILABLE, "try again later"))


def api_resource(logic: ILogicClient) -> Resource:
    """The ``/api`` subtree."""
    api = Resource()
    api.putChild(b"register", _CredentialsEndpoint(logic.register, 201, lambda uid: {"user_id": uid}))
    api.putChild(
        b"login",
        _CredentialsEndpoint(
            logic.login,
            200,
            lambda result: {"user_id": result.user_id, "token": result.token, "expires_at": result.expires_at},
        ),
    )
    return api
