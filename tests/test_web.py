"""The web client's HTTP side: static files at ``/`` and the WebSocket's Origin check.

Requests go through the gateway's real site (``_site``) as raw HTTP bytes
on a ``StringTransport``, so path parsing, unquoting and the mounts of
``/api`` and ``/ws`` are those a browser meets. Time is a ``Clock``; there
are no sockets.

``ClientLogicTests`` run the page's protocol client (``client.js``) in Node,
when it is installed, feeding it server frames and reading the frames it
sends: unread counts, read receipts, typing, edits and group membership.
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess
import textwrap
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from gochat.gateway import service, tap, web
from gochat.gateway.hub import GatewayHub
from gochat.gateway.session import SessionLimits
from gochat.gateway.websocket import GatewayFactory, OriginPolicy, parse_origin
from tests.fakes import ScriptedLogic

STATIC = pathlib.Path(web.__file__).with_name("static")
HANDSHAKE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


class Response:
    """One parsed HTTP/1.1 response."""

    def __init__(self, raw: bytes) -> None:
        head, _, body = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.split(b"\r\n")
        self.status = int(status_line.split(b" ")[1])
        self.headers: dict[bytes, bytes] = {}
        for line in header_lines:
            name, _, value = line.partition(b":")
            self.headers[name.strip().lower()] = value.strip()
        self.body = _dechunk(body) if self.headers.get(b"transfer-encoding") == b"chunked" else body

    def header(self, name: str) -> str | None:
        value = self.headers.get(name.lower().encode("ascii"))
        return None if value is None else value.decode("latin-1")


def _dechunk(body: bytes) -> bytes:
    """The payload of a chunked HTTP/1.1 body."""
    payload = b""
    while True:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return payload
        payload += rest[:size]
        body = rest[size + 2 :]


def gateway_parts(clock: Clock, allowed_origins: tuple[str, ...] = ()) -> tuple[GatewayFactory, ScriptedLogic]:
    """A gateway factory wired to a hub on scripted logic, as ``build`` wires the real one."""
    logic = ScriptedLogic()
    factory = GatewayFactory(clock, "ws://127.0.0.1:8080/ws", 4096, allowed_origins=allowed_origins)
    factory.hub = GatewayHub("gw1", logic, clock, SessionLimits(), factory.prepare)
    return factory, logic


class SiteTestCase(SynchronousTestCase):
    """Raw HTTP requests against the gateway's site."""

    def setUp(self) -> None:
        self.clock = Clock()
        factory, logic = gateway_parts(self.clock)
        self.site = service._site(logic, factory, self.clock)

    def request(self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> Response:
        """Send one request on a fresh connection; the complete response."""
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1:8080", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        assert channel is not None
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        return Response(transport.value())

    def get(self, path: str, **headers: str) -> Response:
        return self.request("GET", path, {name.replace("_", "-"): value for name, value in headers.items()})


class StaticFileTests(SiteTestCase):
    def test_root_serves_the_page(self) -> None:
        """``/`` is index.html: HTML in UTF-8, revalidated on every load, and kept to its own origin by CSP."""
        response = self.get("/")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("content-type"), "text/html; charset=utf-8")
        self.assertEqual(response.header("cache-control"), "no-cache")
        self.assertEqual(response.body, (STATIC / "index.html").read_bytes())
        self.assertEqual(response.header("content-length"), str(len(response.body)))
        self.assertEqual(response.header("x-content-type-options"), "nosniff")
        csp = response.header("content-security-policy")
        assert csp is not None
        self.assertIn("script-src 'self'", csp)
        self.assertIn("connect-src 'self'", csp)
        self.assertIn("frame-ancestors 'none'", csp)
        self.assertEqual(self.get("/index.html").body, response.body)

    def test_each_file_has_its_content_type(self) -> None:
        """Types come from the server's own table, not from the host's mime.types."""
        for name, content_type in [
            ("app.js", "text/javascript; charset=utf-8"),
            ("client.js", "text/javascript; charset=utf-8"),
            ("style.css", "text/css; charset=utf-8"),
            ("favicon.svg", "image/svg+xml"),
        ]:
            response = self.get(f"/{name}")
            self.assertEqual((response.status, response.header("content-type")), (200, content_type), name)
            self.assertEqual(response.body, (STATIC / name).read_bytes())
            self.assertEqual(response.header("cache-control"), "no-cache")
            self.assertIsNone(response.header("content-security-policy"))

    def test_etag_revalidation(self) -> None:
        """The ETag is the content's; a matching If-None-Match (weak, in a list, or ``*``) gets 304 and no body."""
        etag = self.get("/app.js").header("etag")
        assert etag is not None
        self.assertRegex(etag, r'^"[0-9a-f]{32}"$')
        self.assertNotEqual(etag, self.get("/style.css").header("etag"))
        self.assertEqual(self.get("/app.js").header("etag"), etag, "the tag must be stable")
        for if_none_match in [etag, f"W/{etag}", f'"other", {etag}', "*"]:
            response = self.get("/app.js", if_none_match=if_none_match)
            self.assertEqual((response.status, response.body), (304, b""), if_none_match)
            self.assertEqual(response.header("etag"), etag)
        changed = self.get("/app.js", if_none_match='"0123"')
        self.assertEqual(changed.status, 200)
        self.assertEqual(changed.body, (STATIC / "app.js").read_bytes())

    def test_head_sends_headers_only(self) -> None:
        response = self.request("HEAD", "/style.css")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("content-type"), "text/css; charset=utf-8")
        self.assertEqual(response.header("content-length"), str(len((STATIC / "style.css").read_bytes())))
        self.assertEqual(response.body, b"")

    def test_unknown_names_are_not_found(self) -> None:
        """Only shipped files are served: no other file, no subdirectory, no listing, no way out by ``..``."""
        for path in [
            "/nope.js",
            "/web.py",
            "/static/app.js",
            "/app.js/",
            "/app.js/x",
            "//",
            "/../web.py",
            "/../../setup.py",
            "/%2e%2e/web.py",
            "/%2e%2e%2fweb.py",
            "/..%2f..%2fsetup.py",
            "/static%2findex.html",
            "/%00",
            "/%ff",
        ]:
            response = self.get(path)
            self.assertEqual(response.status, 404, path)
            self.assertEqual(response.header("content-type"), "text/plain; charset=utf-8", path)
            self.assertEqual(response.body, b"not found\n", path)

    def test_other_methods_are_refused(self) -> None:
        for method, path in [("POST", "/"), ("POST", "/app.js"), ("PUT", "/style.css"), ("DELETE", "/index.html")]:
            response = self.request(method, path, body=b"x")
            self.assertEqual((response.status, response.header("allow")), (405, "GET, HEAD"), (method, path))
            self.assertEqual(response.body, b"method not allowed\n")

    def test_api_stays_mounted(self) -> None:
        """The JSON API still answers under /api beside the files."""
        response = self.request("POST", "/api/login", body=b"[]")
        self.assertEqual(response.status, 400)
        self.assertEqual(json.loads(response.body)["error"]["code"], "bad_request")


class StaticFileTableTests(SynchronousTestCase):
    def test_package_ships_the_client(self) -> None:
        """Every file in the package's static folder loads with a known type."""
        files = web.load_static_files()
        self.assertLessEqual({"index.html", "app.js", "client.js", "style.css", "favicon.svg"}, set(files))

    def test_page_refers_only_to_shipped_files(self) -> None:
        """Each local src/href of index.html and each import of the scripts names a file the gateway serves."""
        shipped = set(web.load_static_files())
        html = (STATIC / "index.html").read_text(encoding="utf-8")
        references = set(re.findall(r'(?:src|href)="([^"]+)"', html))
        for script in ("app.js", "client.js"):
            source = (STATIC / script).read_text(encoding="utf-8")
            references |= {name.removeprefix("./") for name in re.findall(r'from\s+"([^"]+)"', source)}
        self.assertTrue(references)
        self.assertLessEqual(references, shipped)

    def test_scripts_never_parse_html(self) -> None:
        """User text reaches the page as text only: no API that parses a string as HTML appears in the client."""
        for script in STATIC.glob("*.js"):
            source = script.read_text(encoding="utf-8")
            for api in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
                self.assertNotIn(api, source, f"{script.name} uses {api}")

    def test_unknown_extension_is_refused(self) -> None:
        directory = pathlib.Path(self.mktemp())
        directory.mkdir()
        (directory / "index.html").write_bytes(b"<!doctype html>")
        (directory / "notes.md").write_bytes(b"# hi")
        with self.assertRaisesRegex(ValueError, "notes.md"):
            web.load_static_files(directory)

    def test_index_is_required_and_subdirectories_ignored(self) -> None:
        directory = pathlib.Path(self.mktemp())
        (directory / "sub").mkdir(parents=True)
        (directory / "sub" / "index.html").write_bytes(b"x")
        with self.assertRaisesRegex(ValueError, "index.html"):
            web.load_static_files(directory)
        (directory / "index.html").write_bytes(b"<!doctype html>")
        (directory / ".hidden.js").write_bytes(b"secret")
        self.assertEqual(set(web.load_static_files(directory)), {"index.html"})


def handshake(factory: GatewayFactory, host: str, origin: str | None) -> tuple[bytes, StringTransport]:
    """Send a WebSocket opening handshake to a new connection; the response status line and the transport."""
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50001))
    assert protocol is not None
    transport = StringTransport()
    protocol.makeConnection(transport)
    lines = [
        "GET /ws HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {HANDSHAKE_KEY}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    protocol.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    return transport.value().split(b"\r\n", 1)[0], transport


class OriginCheckTests(SynchronousTestCase):
    """The opening handshake checks Origin before a session may authenticate."""

    def accepted(self, host: str, origin: str | None, allowed: tuple[str, ...] = ()) -> bool:
        """Whether a handshake to *host* from *origin* is answered 101 (else it must be the 403 refusal)."""
        factory, _ = gateway_parts(Clock(), allowed)
        status, _ = handshake(factory, host, origin)
        if status == b"HTTP/1.1 101 Switching Protocols":
            return True
        self.assertEqual(status, b"HTTP/1.1 403 origin not allowed")
        return False

    def test_same_origin_is_allowed(self) -> None:
        """The page the gateway served: its origin's host and port are the Host the request went to."""
        self.assertTrue(self.accepted("127.0.0.1:8080", "http://127.0.0.1:8080"))
        self.assertTrue(self.accepted("Chat.Example.org", "http://chat.example.org"))
        self.assertTrue(self.accepted("chat.example.org", "https://chat.example.org"))
        self.assertTrue(self.accepted("chat.example.org:443", "https://chat.example.org"))
        self.assertTrue(self.accepted("[::1]:8080", "http://[::1]:8080"))

    def test_no_origin_is_allowed(self) -> None:
        """Clients that are not browsers send no Origin and are not cross-site pages."""
        self.assertTrue(self.accepted("127.0.0.1:8080", None))

    def test_foreign_origin_is_refused_with_403(self) -> None:
        """Another site's page, the same host on another port, a null or file origin: 403, and the connection ends."""
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:9999",
            "http://localhost:8080",
            "http://127.0.0.1.evil.example:8080",
            "null",
            "file://",
        ]:
            factory, _ = gateway_parts(Clock())
            status, transport = handshake(factory, "127.0.0.1:8080", origin)
            self.assertEqual(status, b"HTTP/1.1 403 origin not allowed", origin)
            self.assertTrue(transport.disconnecting, origin)
            self.assertNotIn(b"evil", transport.value(), "the Origin is never echoed")

    def test_configured_origin_is_allowed(self) -> None:
        """--allowed-origin adds pages of other origins, compared without regard to case or a default port."""
        allowed = ("https://app.example.com", "http://localhost:3000")
        self.assertTrue(self.accepted("gw.example.com", "https://app.example.com", allowed))
        self.assertTrue(self.accepted("gw.example.com", "HTTPS://App.Example.com:443", allowed))
        self.assertTrue(self.accepted("gw.example.com", "http://localhost:3000", allowed))
        self.assertFalse(self.accepted("gw.example.com", "http://localhost:3001", allowed))
        self.assertFalse(self.accepted("gw.example.com", "http://app.example.com", allowed))

    def test_any_origin_when_configured(self) -> None:
        self.assertTrue(self.accepted("gw.example.com", "https://anything.example", ("*",)))
        self.assertFalse(self.accepted("gw.example.com", "null", ("*",)))

    def test_refused_through_the_site(self) -> None:
        """The same check applies to the WebSocket mounted at /ws of the gateway's site."""
        clock = Clock()
        factory, logic = gateway_parts(clock)
        site = service._site(logic, factory, clock)
        replies = []
        for origin in ("http://evil.example", "http://127.0.0.1:8080"):
            channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50002))
            assert channel is not None
            transport = StringTransport()
            transport.protocol = channel  # type: ignore[attr-defined]  # as on a TCP transport; Autobahn swaps it
            channel.makeConnection(transport)
            channel.dataReceived(
                (
                    "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {HANDSHAKE_KEY}\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n"
                ).encode("latin-1")
            )
            replies.append(transport.value().split(b"\r\n", 1)[0])
        self.assertEqual(replies, [b"HTTP/1.1 403 origin not allowed", b"HTTP/1.1 101 Switching Protocols"])


class OriginPolicyTests(SynchronousTestCase):
    def test_parse_origin(self) -> None:
        self.assertEqual(parse_origin("https://Chat.Example.com"), ("https", "chat.example.com", 443))
        self.assertEqual(parse_origin("http://localhost:3000/"), ("http", "localhost", 3000))
        for bad in ["null", "file:///x", "ftp://x", "http://", "https://x/path", "http://x:99999", "x.example"]:
            with self.assertRaises(ValueError, msg=bad):
                parse_origin(bad)

    def test_garbled_headers_are_refused(self) -> None:
        policy = OriginPolicy.from_origins(())
        self.assertFalse(policy.allows("http://x", None))
        self.assertFalse(policy.allows("http://x", "x:notaport"))
        self.assertFalse(policy.allows("not an origin", "x"))
        self.assertTrue(policy.allows("", "x"))

    def test_bad_configured_origin_is_an_error(self) -> None:
        with self.assertRaises(ValueError):
            OriginPolicy.from_origins(["https://ok.example", "not-an-origin"])


class OptionTests(SynchronousTestCase):
    def parse(self, *args: str) -> Any:
        options = tap.Options()
        options.parseOptions(list(args))
        return tap.config_from_options(options)

    def test_allowed_origin_is_repeatable(self) -> None:
        self.assertEqual(self.parse().allowed_origins, ())
        config = self.parse("--allowed-origin", "https://a.example", "--allowed-origin", "http://localhost:3000")
        self.assertEqual(config.allowed_origins, ("https://a.example", "http://localhost:3000"))
        self.assertEqual(self.parse("--allowed-origin", "*").allowed_origins, ("*",))

    def test_malformed_origin_is_a_usage_error(self) -> None:
        with self.assertRaisesRegex(usage.UsageError, "--allowed-origin"):
            self.parse("--allowed-origin", "chat.example.com")


#: What each script below starts with: client.js as a module, a socket that records frames, and a client.
CLIENT_PRELUDE = """
import assert from "node:assert/strict";
import * as gochat from "./client.mjs";

globalThis.WebSocket = { OPEN: 1 };
const sent = [];
function frames(type) {
  const found = sent.filter((f) => f.type === type);
  sent.splice(0, sent.length, ...sent.filter((f) => f.type !== type));
  return found.map((f) => f.body);
}
function newClient(userId, username) {
  const client = new gochat.ChatClient({ token: "t", userId, username, expiresAt: null }, { url: "ws://x/ws" });
  client.ws = { readyState: 1, send: (text) => sent.push(JSON.parse(text)), close() {} };
  client.authed = true;
  client._frameReceived({ v: 1, type: "sync_ok", id: "r0", body: { complete: true, convs: [] } });
  client.stop = () => {};
  frames("groups");
  frames("conversations");
  return client;
}
let seq = 0;
function push(client, conv, from, body, extra = {}) {
  seq = extra.seq ?? seq + 1;
  const message = { msg_id: String(seq), conv, seq, from, client_msg_id: `c${seq}`, body, ts: 1, kind: "text" };
  Object.assign(message, extra);
  client._frameReceived({ v: 1, type: "push", body: message });
}
"""


class ClientLogicTests(SynchronousTestCase):
    """client.js's state, without a browser: Node runs it against recorded frames (skipped without Node)."""

    def run_script(self, script: str) -> None:
        node = shutil.which("node")
        if node is None:
            raise SkipTest("these tests run client.js in Node, which is not installed")
        directory = pathlib.Path(self.mktemp())
        directory.mkdir(parents=True)
        (directory / "client.mjs").write_bytes((STATIC / "client.js").read_bytes())
        # The client's timers (presence polls, heartbeats) would keep Node running: exit once the script is through.
        source = CLIENT_PRELUDE + textwrap.dedent(script) + "\nprocess.exit(0);\n"
        (directory / "test.mjs").write_text(source, encoding="utf-8")
        result = subprocess.run(
            [node, "test.mjs"], cwd=directory, capture_output=True, text=True, timeout=30, check=False
        )
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_unread_counts_follow_the_read_position(self) -> None:
        """The list's counts, then pushes: others' text counts, own messages and edits do not; reading clears it."""
        self.run_script("""
            const client = newClient(1, "alice");
            client.setVisible(true);
            client._frameReceived({ v: 1, type: "conversations_ok", id: "x", body: { convs: [
              { conv: "d:1:2", title: "bob", last_seq: 3, read_seq: 1, unread: 2 },
              { conv: "d:1:3", title: "#3", last_seq: 0, read_seq: 0, unread: 0 },
            ] } });
            const conv = client.conversations.get("d:1:2");
            assert.equal(client.title(conv), "bob");
            assert.equal(client.title(client.conversations.get("d:1:3")), "user #3");
            assert.equal(client.unreadOf(conv), 2);
            seq = 3;
            push(client, "d:1:2", "bob", "one more");
            push(client, "d:1:2", "alice", "from my phone");
            push(client, "d:1:2", "bob", "one more!", { kind: "edit", ref_seq: 4 });
            assert.equal(client.unreadOf(conv), 3);
            client.select("d:1:2");
            assert.equal(client.unreadOf(conv), 0);
            client._sendReads();
            assert.deepEqual(frames("read"), [{ conv: "d:1:2", seq: 6 }]);
            // Read on another device: the count follows its receipt.
            push(client, "d:1:3", "carol", "hi");
            assert.equal(client.unreadOf(client.conversations.get("d:1:3")), 1);
            client._frameReceived({ v: 1, type: "receipt", body: { conv: "d:1:3", from: "alice", seq: seq, ts: 1 } });
            assert.equal(client.unreadOf(client.conversations.get("d:1:3")), 0);
        """)

    def test_only_a_visible_conversation_is_read(self) -> None:
        """Hidden or unfocused, the open conversation counts unread, and no read is sent for it."""
        self.run_script("""
            const client = newClient(1, "alice");
            push(client, "d:1:2", "bob", "hi");
            client.setVisible(false);
            client.select("d:1:2");
            push(client, "d:1:2", "bob", "there?");
            client._sendReads();
            assert.equal(client.unreadOf(client.conversations.get("d:1:2")), 2);
            assert.deepEqual(frames("read"), []);
            client.setVisible(true);
            client._sendReads();
            assert.deepEqual(frames("read"), [{ conv: "d:1:2", seq: 2 }]);
            // Nothing of anyone else's since: no read to send for one's own message.
            push(client, "d:1:2", "alice", "yes");
            client._readConfirmed("d:1:2", 2);
            client._sendReads();
            assert.deepEqual(frames("read"), []);
        """)

    def test_edits_and_recalls_apply_to_their_seq(self) -> None:
        self.run_script("""
            const conv = new gochat.Conversation("g:1");
            const base = { msgId: "", clientMsgId: "", ts: 1, refSeq: null };
            conv.add({ ...base, seq: 3, from: "a", body: "third", kind: "recall", refSeq: 2 });
            conv.add({ ...base, seq: 1, from: "a", body: "first", kind: "text" });
            conv.add({ ...base, seq: 2, from: "a", body: "second", kind: "text" });
            conv.add({ ...base, seq: 4, from: "a", body: "first!", kind: "edit", refSeq: 1 });
            assert.deepEqual(
              conv.shown.map((m) => [m.seq, m.body, m.edited, m.recalled]),
              [[1, "first!", true, false], [2, "", false, true]],
            );
            assert.equal(conv.lastSeq, 4);
        """)

    def test_receipts_say_who_has_read(self) -> None:
        """A direct chat's message is read when the other has read its seq; a group's counts the others who have."""
        self.run_script("""
            const client = newClient(1, "alice");
            const created = JSON.stringify({ action: "created", name: "team", by: "alice" });
            push(client, "g:7", "alice", created, { kind: "member", seq: 1 });
            push(client, "g:7", "alice", "lunch?", { seq: 2 });
            const group = client.conversations.get("g:7");
            assert.equal(client.title(group), "team");
            const message = group.shown[1];
            assert.equal(client.readBy(group, message), 0);
            client._frameReceived({ v: 1, type: "receipt", body: { conv: "g:7", from: "bob", seq: 2, ts: 1 } });
            client._frameReceived({ v: 1, type: "receipt", body: { conv: "g:7", from: "carol", seq: 1, ts: 1 } });
            assert.equal(client.readBy(group, message), 1);
            client._historyReceived(
              { conv: "g:7", messages: [], reads: { alice: 2, bob: 2, carol: 2 } },
              { kind: "history", conv: "g:7", before: null, limit: 50 },
            );
            assert.equal(client.readBy(group, message), 2);
            push(client, "d:1:2", "alice", "hi", { seq: 1 });
            const direct = client.conversations.get("d:1:2");
            assert.equal(client.readBy(direct, direct.shown[0]), false);
            client._frameReceived({ v: 1, type: "receipt", body: { conv: "d:1:2", from: "bob", seq: 1, ts: 1 } });
            assert.equal(client.readBy(direct, direct.shown[0]), true);
        """)

    def test_typing_is_sent_at_most_every_two_seconds(self) -> None:
        """Keystrokes within 2 s send one typing frame, and one more when the 2 s are over; a send resets it."""
        self.run_script("""
            let now = 1_000_000;
            Date.now = () => now;
            const timers = new Map(); // a clock the test turns: each timer runs when the test says
            let lastTimer = 0;
            globalThis.setTimeout = (callback) => {
              timers.set(++lastTimer, callback);
              return lastTimer;
            };
            globalThis.clearTimeout = (id) => timers.delete(id);
            const client = newClient(1, "alice");
            push(client, "d:1:2", "bob", "hi");
            const conv = client.conversations.get("d:1:2");
            client.typed(conv);
            now += 500;
            client.typed(conv);
            client.typed(conv);
            assert.deepEqual(frames("typing"), [{ conv: "d:1:2" }]);
            now += 1_500; // the 2 s are over: the keystrokes since are told once
            timers.get(client.typingLater.get("d:1:2"))();
            assert.deepEqual(frames("typing"), [{ conv: "d:1:2" }]);
            now += 2_100;
            client.send(conv, "done");
            now += 1_200; // a message went: typing may be told again a second after the last
            client.typed(conv);
            assert.deepEqual(frames("typing"), [{ conv: "d:1:2" }]);
            // Someone else typing shows for 4 s, and stops with their message.
            client._frameReceived({ v: 1, type: "typing", body: { conv: "d:1:2", from: "bob", ts: 1 } });
            assert.deepEqual(client.typingIn(conv), ["bob"]);
            push(client, "d:1:2", "bob", "ok");
            assert.deepEqual(client.typingIn(conv), []);
            client._frameReceived({ v: 1, type: "typing", body: { conv: "d:1:2", from: "bob", ts: 1 } });
            now += 4_100;
            assert.deepEqual(client.typingIn(conv), []);
        """)

    def test_membership_follows_the_notes_and_a_stale_group_list(self) -> None:
        """Leaving closes the group; a groups_ok asked for before a change does not undo it; being added reopens it."""
        self.run_script("""
            const client = newClient(2, "bob");
            const note = (action, extra) => JSON.stringify({ action, by: "alice", ...extra });
            push(client, "g:3", "alice", note("created", { name: "team" }), { kind: "member", seq: 1 });
            const conv = client.conversations.get("g:3");
            assert.equal(conv.left, false);
            assert.deepEqual(client.sendTarget(conv), { conv: "g:3" });
            const stamp = client.stamp;
            push(client, "g:3", "alice", note("removed", { user: "bob" }), { kind: "member", seq: 2 });
            assert.equal(conv.left, true);
            assert.equal(client.sendTarget(conv), null);
            const group = { group_id: 3, conv: "g:3", name: "team", members: 2, role: "member", created_at: 1 };
            const listed = { groups: [group] };
            client._groupsReceived(listed, stamp);
            assert.equal(conv.left, true, "a list from before the removal");
            // Added again after messages the user was not there for: those are not missing.
            push(client, "g:3", "alice", note("added", { users: ["bob"], role: "member" }), { kind: "member", seq: 9 });
            assert.equal(conv.left, false);
            assert.equal(conv.lastSeq, 9);
            assert.equal(conv.hasGap, false);
            client._groupsReceived({ groups: [] }, client.stamp);
            assert.equal(conv.left, true, "a fresh list without the group");
        """)

    def test_names_and_notes_for_people(self) -> None:
        self.run_script("""
            assert.deepEqual(gochat.splitNames(" Bob, carol;bob  DAVE "), ["bob", "carol", "dave"]);
            const note = (change) =>
              gochat.describeMember({ from: "alice", body: JSON.stringify({ by: "alice", ...change }) });
            assert.equal(note({ action: "created", name: "team" }), "alice created the group “team”.");
            assert.equal(note({ action: "added", users: ["bob", "carol"], role: "member" }), "alice added bob, carol.");
            assert.equal(note({ action: "left", user: "alice", owner: "bob" }), "alice left; bob is the owner now.");
            assert.equal(note({ action: "role", user: "bob", role: "admin" }), "alice made bob admin.");
            assert.equal(gochat.describeMember({ from: "x", body: "not json" }), "The membership changed.");
            const late = "Too late: the time to change that message has passed.";
            assert.equal(gochat.describeRefusal("too_late", "x"), late);
        """)
