"""The web client's static files, served by the gateway at ``/``.

The files under ``gochat/gateway/static/`` are package data. They are read
once, when the gateway builds its site, into a fixed table keyed by file
name, so only the files that ship are ever served: a request for any other
name (a subdirectory, ``..``, an encoded slash, a file added at run time)
gets a 404, and there is no directory listing to render.

Every reply says what it is and how to cache it: an explicit content type
per extension (not the host's ``mime.types``), ``Cache-Control: no-cache``
with a strong ``ETag`` taken from the content, so a browser revalidates on
each load and an unchanged file costs a 304 with no body; and headers that
keep the page to its own origin (a Content-Security-Policy that allows only
the gateway's own scripts, styles and WebSocket, no framing, no sniffing).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

_log = Logger()

#: The content type of each extension the client uses. A shipped file with another extension is an error at start.
CONTENT_TYPES: Mapping[str, bytes] = {
    ".html": b"text/html; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
    ".json": b"application/json; charset=utf-8",
    ".txt": b"text/plain; charset=utf-8",
}

#: The page's policy: its own scripts, styles and images; WebSocket and fetch to its own origin only
#: ('self' covers ws:/wss: to the same host in CSP Level 3); never framed, no plugins, no <base> tricks.
CONTENT_SECURITY_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

#: The file ``/`` serves.
INDEX = "index.html"


@dataclass(frozen=True)
class StaticFile:
    """One file of the client: its bytes, content type and entity tag."""

    name: str
    content: bytes
    content_type: bytes
    etag: bytes

    @classmethod
    def from_bytes(cls, name: str, content: bytes) -> StaticFile:
        """A file named *name* holding *content*; the type comes from the extension, the ETag from the content."""
        extension = name[name.rfind(".") :].lower() if "." in name else ""
        content_type = CONTENT_TYPES.get(extension)
        if content_type is None:
            raise ValueError(f"no content type known for static file {name!r}")
        digest = hashlib.sha256(content).hexdigest()[:32]
        return cls(name, content, content_type, f'"{digest}"'.encode("ascii"))


def load_static_files(directory: Traversable | None = None) -> dict[str, StaticFile]:
    """Read every file directly in *directory* (the package's ``static`` folder by default), keyed by name.

    Subdirectories and hidden files are left out, so the table holds exactly
    the client's files; at least ``index.html`` must be there.
    """
    if directory is None:
        directory = files("gochat.gateway").joinpath("static")
    table: dict[str, StaticFile] = {}
    for entry in directory.iterdir():
        if entry.is_file() and not entry.name.startswith("."):
            table[entry.name] = StaticFile.from_bytes(entry.name, entry.read_bytes())
    if INDEX not in table:
        raise ValueError(f"the web client has no {INDEX}")
    return table


def _matches(if_none_match: bytes, etag: bytes) -> bool:
    """Whether an ``If-None-Match`` header names *etag* (weak comparison, as RFC 9110 prescribes for it)."""
    for candidate in if_none_match.split(b","):
        tag = candidate.strip()
        if tag == b"*" or tag.removeprefix(b"W/") == etag:
            return True
    return False


def _set_common_headers(request: Request) -> None:
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"no-referrer")
    request.setHeader(b"x-frame-options", b"DENY")


class StaticFileResource(Resource):
    """Serves one :class:`StaticFile` to ``GET`` and ``HEAD``; any other method gets a plain-text 405."""

    isLeaf = True

    def __init__(self, static: StaticFile) -> None:
        super().__init__()
        self._static = static

    def render(self, request: Request) -> bytes:
        if request.method in (b"GET", b"HEAD"):
            return super().render(request)  # type: ignore[no-any-return]
        _set_common_headers(request)
        request.setResponseCode(http.NOT_ALLOWED)
        request.setHeader(b"allow", b"GET, HEAD")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"method not allowed\n"

    def render_GET(self, request: Request) -> bytes:
        if self._headers(request):
            return b""
        return self._static.content

    def render_HEAD(self, request: Request) -> bytes:
        # The headers of a GET, with the length of the body that is not sent.
        if not self._headers(request):
            request.setHeader(b"content-length", b"%d" % len(self._static.content))
        return b""

    def _headers(self, request: Request) -> bool:
        """Set the reply's headers; True when the client's copy is current (a 304, no body)."""
        static = self._static
        _set_common_headers(request)
        request.setHeader(b"content-type", static.content_type)
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"etag", static.etag)
        if static.content_type.startswith(b"text/html"):
            request.setHeader(b"content-security-policy", CONTENT_SECURITY_POLICY)
        if_none_match = request.getHeader(b"if-none-match")
        if if_none_match is not None and _matches(if_none_match, static.etag):
            request.setResponseCode(http.NOT_MODIFIED)
            return True
        return False


class NotFoundResource(Resource):
    """A plain-text 404 for any name the client does not ship."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        _set_common_headers(request)
        request.setResponseCode(http.NOT_FOUND)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        return b"not found\n"


class WebClientRoot(Resource):
    """The root of the gateway's site: the client's files at ``/NAME``, ``index.html`` at ``/``.

    Children added with ``putChild`` (``api``, ``ws``) come first; every
    other first path segment is looked up in the file table, and anything
    with more segments than one, or a name not in the table, is a 404.
    """

    def __init__(self, static_files: Mapping[str, StaticFile]) -> None:
        super().__init__()
        self._files = {name: StaticFileResource(static) for name, static in static_files.items()}
        self._files[""] = self._files[INDEX]
        self._not_found = NotFoundResource()
        _log.debug("web client: serving {count} static files", count=len(static_files))

    def getChild(self, path: bytes, request: Request) -> IResource:
        try:
            name = path.decode("utf-8")
        except UnicodeDecodeError:
            return self._not_found
        resource = self._files.get(name)
        if resource is None or request.postpath:
            return self._not_found
        return resource

    def render(self, request: Request) -> bytes:
        # Reached only for a request whose path is empty (no leading slash); treat it like "/".
        return self._files[""].render(request)


def web_client_root(directory: Traversable | None = None) -> WebClientRoot:
    """The site root serving the web client from *directory* (the package's ``static`` folder by default)."""
    return WebClientRoot(load_static_files(directory))
