"""The RabbitMQ bus as connections end under work in progress, found by the chaos runs.

- A consumer cancel that fails: quiet when the connection is going anyway,
  else a warning and a dropped connection. A gateway's hub cancels its
  delivery consumer as it drains, then the bus stops and closes the
  connection; when the close wins the race with the broker's
  ``basic.cancel-ok``, the cancel fails with the connection. That is a clean
  shutdown and must not log an error (the process tests check that a clean
  shutdown logs no traceback).
- A connection lost while a channel is being closed: every channel is still
  closed, and nothing raises.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from txamqp.client import Closed

from gochat.logic.amqp import AmqpBus, AmqpSettings, Consumer, _AmqpProtocol, _Delegate


class RecordingTransport:
    def __init__(self) -> None:
        self.lost = False

    def loseConnection(self) -> None:
        self.lost = True


class StubProtocol:
    def __init__(self) -> None:
        self.transport = RecordingTransport()


class StubSession:
    def __init__(self, closing: bool = False, closed: bool = False) -> None:
        self.protocol = StubProtocol()
        self.generation = 3
        self.closing = closing
        self.closed = closed


def connection_closed() -> Failure:
    """What a pending ``basic.cancel`` fails with when its connection closes."""
    return Failure(Closed(Failure(ConnectionDone())))


class CancelFailedTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.bus = AmqpBus(Clock(), AmqpSettings())
        self.consumer = Consumer(self.bus, "gochat.gateway.g1", 10, lambda message: None)

    def cancel_failed(self, session: StubSession) -> list[dict[str, Any]]:
        with capturedLogs() as events:
            self.bus._cancel_failed(connection_closed(), session, self.consumer)  # type: ignore[arg-type]
        return [event for event in events if event["log_level"] >= LogLevel.warn]

    def test_while_the_bus_stops_it_is_quiet(self) -> None:
        self.bus._stopping = True
        session = StubSession()
        self.assertEqual(self.cancel_failed(session), [])
        self.assertFalse(session.protocol.transport.lost, "the bus closes the connection itself, cleanly")

    def test_on_a_closing_or_closed_connection_it_is_quiet(self) -> None:
        for session in (StubSession(closing=True), StubSession(closed=True)):
            self.assertEqual(self.cancel_failed(session), [])
            self.assertFalse(session.protocol.transport.lost)

    def test_otherwise_it_warns_without_a_traceback_and_drops_the_connection(self) -> None:
        session = StubSession()
        (warning,) = self.cancel_failed(session)
        self.assertEqual(warning["reason"], "Connection was closed cleanly.")
        self.assertNotIn("Traceback", warning["reason"])
        self.assertTrue(session.protocol.transport.lost)


class ConnectionLostTests(SynchronousTestCase):
    def test_channels_forgotten_while_the_connection_closes_them_all_close(self) -> None:
        """Closing a channel fails the ``channel.close`` awaiting its close-ok, whose cleanup forgets the channel."""
        from twisted.internet.testing import StringTransport

        protocol = _AmqpProtocol(None, _Delegate(), AmqpSettings(), Clock())  # type: ignore[arg-type]
        protocol.transport = StringTransport()
        channels = [protocol.channel_now(channel_id) for channel_id in (1, 2, 3)]
        failed: list[int] = []
        for channel in channels:
            waiting = channel.responses.get()

            def forget(failure: Failure, channel: Any = channel) -> None:
                failed.append(channel.id)
                protocol.forget_channel(channel)

            waiting.addErrback(forget)
        protocol.do_close(ConnectionDone("lost"))
        self.assertEqual(sorted(failed), [1, 2, 3])
        self.assertTrue(all(channel.closed for channel in channels))
        self.assertEqual(protocol.channels, {})
