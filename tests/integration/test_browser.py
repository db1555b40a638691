"""The web client in a real browser: two people chat through ``twistd gochat-gateway``'s page at ``/``.

The gateway runs as an operator runs it (the embedded default, a real
process on a free 127.0.0.1 port). Debian's Chromium, driven by Playwright's
Python package (``executable_path=/usr/bin/chromium``; no browser download),
opens the page in two browser contexts, which share nothing, as two windows
of two people would. Both register and log in through the page, open a 1:1
conversation and write to each other; each must see the other's message and
its own marked as stored with its seq, and the other user shown online. A
third person's message opens a second conversation, unread until opened.

Then the gateway is stopped (SIGTERM, so both pages are told to reconnect)
while Alice writes: her message waits as "sending". A new gateway process on
the same port and data directory comes up; both pages must reconnect on
their own (backoff with jitter), resume with ``sync``, and Alice's waiting
message must be sent again, stored once, and reach Bob.

Last, a group. Carol logs in on a new device (a fresh context, nothing
stored): her conversation list comes from ``conversations`` (titled with
Alice's name) and opening it pages in ``history``. Alice creates a group with
Bob and Carol from the sidebar; each of them sees it by its name, with the
"created" note. Messages go both ways; Bob's typing shows on Alice's page;
Alice's message shows "read by 2" once both have it open (``read`` and
``receipt``); Alice edits it and the others see the new text marked edited.
Carol leaves from the group's header (Alice sees the note and the smaller
member list) and Alice adds her back.

The browser runs in a worker thread (Playwright's synchronous API) while the
reactor goes on reading the gateway's output; the thread asks the reactor
to restart the gateway with ``blockingCallFromThread``. Every wait polls a
condition with a deadline (Playwright's auto-waiting assertions), never a
fixed sleep. A screenshot of each page is left in the test's temporary
directory (``web-client-alice.png``, ``web-client-bob.png``), taken with
the group open on both and Carol typing; ``docs/web-client.png`` is a copy
of Alice's.

Without Chromium or the playwright package the test is skipped, saying
which is missing, unless ``GOCHAT_REQUIRE_SERVICES=1`` (as in CI), where it
fails instead.
"""

from __future__ import annotations

import os
import unittest
from collections.abc import Generator
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.trial.unittest import TestCase

from tests.integration.services import services_required
from tests.integration.support import GATEWAY_LISTENING, TwistdProcess, free_port, spawn_twistd

CHROMIUM = "/usr/bin/chromium"
#: What Chromium needs to run headless as root in a container, with nothing reaching outside.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
PASSWORD = "correct horse battery"
#: Milliseconds any single browser step may take.
STEP_MS = 15_000
#: Milliseconds the pages may take to reconnect after the gateway came back (their backoff is at most 30 s).
RECONNECT_MS = 40_000


def require_browser() -> None:
    """Skip (or fail, with ``GOCHAT_REQUIRE_SERVICES=1``) unless Chromium and Playwright's package are here."""
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package (pip install -e '.[test]')")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if services_required():
            raise AssertionError(f"{reason}; GOCHAT_REQUIRE_SERVICES=1 requires it")
        raise unittest.SkipTest(reason)


class BrowserChatTests(TestCase):
    """Two browser contexts chat through a real gateway process."""

    timeout = 180

    def setUp(self) -> None:
        require_browser()
        from twisted.internet import reactor

        self.reactor: Any = reactor
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/"
        self.generation = 0

    @inlineCallbacks
    def start_gateway(self) -> Generator[Deferred[Any], Any, TwistdProcess]:
        """Start ``twistd gochat-gateway`` (embedded default) on this test's port and data directory."""
        self.generation += 1
        gateway = spawn_twistd(
            self.reactor,
            f"gateway-{self.generation}",
            [
                "gochat-gateway",
                "--listen",
                f"tcp:{self.port}:interface=127.0.0.1",
                "--data-dir",
                os.path.join(self.workdir, "data"),
            ],
            self.workdir,
        )
        self.addCleanup(gateway.kill)
        port = yield gateway.wait_for_port(GATEWAY_LISTENING)
        self.assertEqual(port, self.port)
        self.gateway = gateway
        return gateway

    @inlineCallbacks
    def stop_gateway(self) -> Generator[Deferred[Any], Any, None]:
        """SIGTERM the gateway: it closes every session with "shutting down; reconnect" and exits."""
        yield self.gateway.terminate()
        self.assertNotIn("Traceback", self.gateway.output, self.gateway.output)

    @inlineCallbacks
    def test_two_people_chat_in_two_browser_contexts(self) -> Generator[Deferred[Any], Any, None]:
        yield self.start_gateway()
        yield deferToThread(self.chat_in_browser)

    # In the worker thread.

    def chat_in_browser(self) -> None:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                self.conversation(browser)
            finally:
                browser.close()

    def conversation(self, browser: Any) -> None:
        """The whole story in *browser*; uncaught errors in any page fail it."""
        errors: list[str] = []
        alice = self.open_page(browser, "alice", errors)
        bob = self.open_page(browser, "bob", errors)
        self.chat_both_ways(alice, bob)
        self.second_conversation(browser, alice, errors)
        self.chat_through_a_restart(alice, bob)
        carol = self.open_page(browser, "carol", errors)
        self.log_in(carol, "carol")
        self.new_device_lists_conversations(carol)
        self.group_chat(alice, bob, carol)
        for name, page in (("alice", alice), ("bob", bob)):
            page.locator("#message-input").blur()
            page.mouse.move(0, 0)
            page.screenshot(path=os.path.join(self.workdir, f"web-client-{name}.png"))
        self.assertEqual(errors, [], "the pages threw")

    def chat_both_ways(self, alice: Any, bob: Any) -> None:
        """Register, log in, and write to each other: own messages stored with a seq, the other's shown."""
        from playwright.sync_api import expect

        # Bob registers; Alice registers, logs out, and logs in again with the login button.
        self.register(bob, "bob")
        self.register(alice, "alice")
        alice.click("#logout")
        expect(alice.locator("#login-form")).to_be_visible(timeout=STEP_MS)
        alice.fill("#username", "Alice")
        alice.fill("#password", PASSWORD)
        alice.click("#login-button")
        self.expect_online(alice)
        expect(alice.locator("#me")).to_have_text("alice", timeout=STEP_MS)

        # Alice starts a chat with Bob; her message is stored as seq 1.
        alice.fill("#new-chat-name", "bob")
        alice.click("#new-chat-button")
        self.write(alice, "Hi Bob! Lunch at noon?")
        self.expect_own(alice, 1, "Hi Bob! Lunch at noon?")

        # Bob's page lists the conversation (from the push) with one unread message; he opens it.
        bob_conv = bob.locator('.conv[data-peer="alice"]')
        expect(bob_conv.locator(".unread")).to_have_text("1", timeout=STEP_MS)
        bob_conv.click()
        self.expect_theirs(bob, 1, "alice", "Hi Bob! Lunch at noon?")

        # Bob answers; markup in a message is shown as text, never run or rendered.
        reply = 'Sure <img src=x onerror="document.title=1"> see you <b>there</b>'
        self.write(bob, reply)
        self.expect_own(bob, 2, reply)
        self.expect_theirs(alice, 2, "bob", reply)
        for page in (alice, bob):
            expect(page.locator("#messages img, #messages b")).to_have_count(0)

        # Each sees the other online (the presence frame, asked when the conversation appeared).
        expect(alice.locator('.conv[data-peer="bob"] .presence-dot')).to_have_attribute(
            "data-presence", "online", timeout=STEP_MS
        )
        expect(bob.locator('.conv[data-peer="alice"] .presence-dot')).to_have_attribute(
            "data-presence", "online", timeout=STEP_MS
        )

    def second_conversation(self, browser: Any, alice: Any, errors: list[str]) -> None:
        """The conversation list holds more than one conversation, each with its own messages."""
        from playwright.sync_api import expect

        # A third person writes to Alice: a second conversation, unread until she opens it, with its own seqs.
        carol = self.open_page(browser, "carol", errors)
        self.register(carol, "carol")
        carol.fill("#new-chat-name", "alice")
        carol.click("#new-chat-button")
        self.write(carol, "Hello Alice, it's Carol.")
        self.expect_own(carol, 1, "Hello Alice, it's Carol.")
        carol.context.close()
        alice_to_carol = alice.locator('.conv[data-peer="carol"]')
        expect(alice_to_carol.locator(".unread")).to_have_text("1", timeout=STEP_MS)
        expect(alice.locator(".conv")).to_have_count(2)
        alice_to_carol.click()
        self.expect_theirs(alice, 1, "carol", "Hello Alice, it's Carol.")
        expect(alice.locator("#messages li.message")).to_have_count(1)
        expect(alice_to_carol.locator(".unread")).to_have_count(0)
        alice.click('.conv[data-peer="bob"]')
        self.expect_own(alice, 1, "Hi Bob! Lunch at noon?")
        expect(alice.locator("#messages li.message")).to_have_count(2)

    def chat_through_a_restart(self, alice: Any, bob: Any) -> None:
        """The gateway restarts: the pages reconnect and resume by themselves, and nothing is lost or doubled."""
        from playwright.sync_api import expect

        # The gateway goes away: both pages notice and wait to reconnect; Alice's next message waits as "sending".
        blockingCallFromThread(self.reactor, self.stop_gateway)
        for page in (alice, bob):
            expect(page.locator("#status")).not_to_have_attribute("data-state", "online", timeout=STEP_MS)
        waiting = "Are you still there? (sent while the server was down)"
        self.write(alice, waiting)
        expect(alice.locator('#messages li.message.own[data-state="sending"] .body')).to_have_text(waiting)

        # A new gateway on the same port and data: the pages reconnect, resume, and the waiting message goes out once.
        blockingCallFromThread(self.reactor, self.start_gateway)
        for page in (alice, bob):
            self.expect_online(page, RECONNECT_MS)
        self.expect_own(alice, 3, waiting, RECONNECT_MS)
        self.expect_theirs(bob, 3, "alice", waiting)
        self.write(bob, "Yes! Reconnected by myself.")
        self.expect_own(bob, 4, "Yes! Reconnected by myself.")
        self.expect_theirs(alice, 4, "bob", "Yes! Reconnected by myself.")
        for page, peer in ((alice, "bob"), (bob, "alice")):
            expect(page.locator('#messages li:not([data-state="acked"])')).to_have_count(0)
            expect(page.locator("#messages li.message")).to_have_count(4)
            expect(page.locator(f'.conv[data-peer="{peer}"] .presence-dot')).to_have_attribute(
                "data-presence", "online", timeout=STEP_MS
            )

    def new_device_lists_conversations(self, carol: Any) -> None:
        """A browser with nothing stored lists the user's conversations by name and loads one's messages on opening."""
        from playwright.sync_api import expect

        to_alice = carol.locator('.conv[data-peer="alice"]')
        expect(to_alice.locator(".conv-title")).to_have_text("alice", timeout=STEP_MS)
        to_alice.click()
        self.expect_own(carol, 1, "Hello Alice, it's Carol.")

    def group_chat(self, alice: Any, bob: Any, carol: Any) -> None:
        """A group: created by Alice, chatted in both ways, typing, a read receipt, an edit, a leave and an add."""
        from playwright.sync_api import expect

        # Alice creates "Lunch crew" with Bob and Carol; it opens, with the "created" note and its members.
        alice.click("#new-group-toggle")
        alice.fill("#group-name", "Lunch crew")
        alice.fill("#group-members", "bob, Carol")
        alice.click("#create-group-button")
        expect(alice.locator("#conv-title")).to_have_text("Lunch crew")
        created = "alice created the group “Lunch crew”."
        expect(alice.locator("#messages li.note")).to_have_text([created])
        expect(alice.locator("#conv-presence")).to_have_text("3 members: alice, bob, carol")
        key = alice.locator("#conversation-pane").get_attribute("data-conv")
        self.assertRegex(key or "", r"^g:\d+$")
        group = f'.conv[data-conv="{key}"]'

        # Bob and Carol find it in their lists by its name and open it.
        for page in (bob, carol):
            expect(page.locator(f"{group} .conv-title")).to_have_text("Lunch crew")
            page.click(group)
            expect(page.locator("#messages li.note")).to_have_text([created])

        # A message each way; both readers have the conversation open, so Alice's shows "read by 2".
        self.write(alice, "Who's in for lunch?")
        self.expect_own(alice, 2, "Who's in for lunch?")
        for page in (bob, carol):
            self.expect_theirs(page, 2, "alice", "Who's in for lunch?")
        expect(alice.locator('#messages li.own[data-seq="2"] .receipt')).to_have_text("read by 2")

        # Bob types: Alice sees it until his message arrives.
        bob.fill("#message-input", "Me!")
        expect(alice.locator("#typing")).to_have_text("bob is typing…")
        bob.press("#message-input", "Enter")
        self.expect_own(bob, 3, "Me!")
        for page in (alice, carol):
            self.expect_theirs(page, 3, "bob", "Me!")
        expect(alice.locator("#typing")).to_have_text("")

        # Alice edits her message (an edit event, seq 4); the others see the new text, marked edited.
        alice.hover('#messages li.own[data-seq="2"] .body')
        alice.click('#messages li.own[data-seq="2"] [data-action="edit"]')
        expect(alice.locator("#message-input")).to_have_value("Who's in for lunch?")
        self.write(alice, "Who's in for lunch at 12:30?")
        self.expect_own(alice, 2, "Who's in for lunch at 12:30?")
        for page in (bob, carol):
            self.expect_theirs(page, 2, "alice", "Who's in for lunch at 12:30?")
            expect(page.locator('#messages li[data-seq="2"] .edited')).to_have_text("edited")

        # Carol leaves (two clicks: Leave, then "Really leave?"); Alice adds her back from the header.
        carol.click("#leave-group")
        carol.click("#leave-group")
        expect(carol.locator("#message-input")).to_be_disabled()
        expect(alice.locator("#messages li.note").last).to_have_text("carol left.")
        expect(alice.locator("#conv-presence")).to_have_text("2 members: alice, bob")
        alice.click("#add-member-toggle")
        alice.fill("#add-member-name", "carol")
        alice.click("#add-member-button")
        expect(alice.locator("#messages li.note").last).to_have_text("alice added carol.")
        expect(alice.locator("#conv-presence")).to_have_text("3 members: alice, bob, carol")
        expect(carol.locator("#message-input")).to_be_enabled()
        self.write(carol, "Back, and in!")
        self.expect_own(carol, 7, "Back, and in!")
        for page in (alice, bob):
            self.expect_theirs(page, 7, "carol", "Back, and in!")

        # For the screenshot: Carol is typing again.
        carol.fill("#message-input", "Count me in for 12:30")
        for page in (alice, bob):
            expect(page.locator("#typing")).to_have_text("carol is typing…")

    def open_page(self, browser: Any, name: str, errors: list[str]) -> Any:
        """A new browser context (its own storage, as another person's window) showing the login form."""
        context = browser.new_context(viewport={"width": 1000, "height": 620}, locale="en-GB", timezone_id="UTC")
        context.set_default_timeout(STEP_MS)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(f"{name}: {error}"))
        page.goto(self.base)
        return page

    def register(self, page: Any, username: str) -> None:
        page.fill("#username", username)
        page.fill("#password", PASSWORD)
        page.click("#register-button")
        self.expect_online(page)

    def log_in(self, page: Any, username: str) -> None:
        page.fill("#username", username)
        page.fill("#password", PASSWORD)
        page.click("#login-button")
        self.expect_online(page)

    def write(self, page: Any, text: str) -> None:
        """Type *text* into the composer and press Enter, as a person sends."""
        page.fill("#message-input", text)
        page.press("#message-input", "Enter")

    def expect_online(self, page: Any, timeout: float = STEP_MS) -> None:
        from playwright.sync_api import expect

        expect(page.locator("#status")).to_have_attribute("data-state", "online", timeout=timeout)

    def expect_own(self, page: Any, seq: int, text: str, timeout: float = STEP_MS) -> None:
        """The page shows its own message *text* as stored (acked) with *seq*."""
        from playwright.sync_api import expect

        message = page.locator(f'#messages li.message.own[data-state="acked"][data-seq="{seq}"]')
        expect(message.locator(".body")).to_have_text(text, timeout=timeout)
        expect(message.locator(".delivery")).to_contain_text(f"seq {seq}")

    def expect_theirs(self, page: Any, seq: int, sender: str, text: str, timeout: float = STEP_MS) -> None:
        """The page shows *sender*'s message *text* at *seq*."""
        from playwright.sync_api import expect

        message = page.locator(f'#messages li.message.theirs[data-seq="{seq}"]')
        expect(message.locator(".body")).to_have_text(text, timeout=timeout)
        expect(message.locator(".from")).to_have_text(sender)
