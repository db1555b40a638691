"""Chaos: no acked message is lost or stored twice, and seqs stay gap-free, while the backends fail.

Each test runs ``bench/chaos.py`` (real ``twistd`` processes, MariaDB,
RabbitMQ, WebSocket clients that retry with the same ``client_msg_id`` until
acked) as a subprocess and checks its JSON verdict, read back from MariaDB:

- the logic process is SIGKILLed three times and restarted;
- RabbitMQ is stopped and started again;
- MariaDB is stopped for ten seconds (writes wait, then resume).

The script stops the processes it started and starts again any service it
stopped, whatever happens; if a test here gives up on it, it is sent SIGTERM,
which runs that cleanup too. These tests stop and start the machine's
MariaDB and RabbitMQ, so they need the right to (``mysqladmin shutdown``,
``start-stop-daemon``, ``rabbitmqctl``); together they take about two and a
half minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import unittest
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.integration.services import require_service, services_required

_log = Logger()
CHAOS_SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"
#: What the chaos run calls to stop and start the services.
TOOLS = ("mysqladmin", "start-stop-daemon", "rabbitmqctl", "rabbitmq-server")
SERVICE_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
#: How long the script gets to clean up after SIGTERM before it is killed.
CLEANUP_GRACE = 150.0


class ChaosRun(ProcessProtocol):
    """``python bench/chaos.py --json ...``: its stdout (the JSON result), its stderr (progress), its exit."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.out = bytearray()
        self.err = bytearray()
        self.exit_code: int | None = None
        self.ended: Deferred[int | None] = Deferred()
        self._end_waiters: list[Deferred[None]] = []
        self.done = False

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.done = True
        if isinstance(reason.value, ProcessDone | ProcessTerminated):
            self.exit_code = reason.value.exitCode
        waiters, self._end_waiters = self._end_waiters, []
        for waiter in waiters:
            waiter.callback(None)
        self.ended.callback(self.exit_code)

    def stop(self) -> Deferred[None] | None:
        """Cleanup: SIGTERM (the script then cleans up), SIGKILL if it has not ended after ``CLEANUP_GRACE``."""
        if self.done:
            return None
        assert self.transport is not None
        self.transport.signalProcess("TERM")
        ended: Deferred[None] = Deferred()
        self._end_waiters.append(ended)
        kill = self.reactor.callLater(CLEANUP_GRACE, self._kill)
        ended.addBoth(lambda result: kill.cancel() if kill.active() else None)
        return ended

    def _kill(self) -> None:
        if not self.done and self.transport is not None:
            self.transport.signalProcess(signal.SIGKILL)


def require_service_tools() -> None:
    """Skip (or fail, with ``GOCHAT_REQUIRE_SERVICES=1``) unless the service control commands are installed."""
    missing = [tool for tool in TOOLS if shutil.which(tool, path=SERVICE_PATH) is None]
    if missing:
        reason = f"chaos needs {', '.join(missing)} to stop and start the services"
        if services_required():
            raise AssertionError(f"{reason} (GOCHAT_REQUIRE_SERVICES=1 requires it)")
        raise unittest.SkipTest(reason)


class ChaosTests(TestCase):
    """bench/chaos.py against the real services; each run has its own database, queue, ports and processes."""

    timeout = 240

    def setUp(self) -> None:
        require_service("MariaDB", "127.0.0.1", 3306)
        require_service("RabbitMQ", "127.0.0.1", 5672)
        require_service_tools()

    async def chaos(self, *arguments: str) -> dict[str, Any]:
        """Run the script with *arguments*; its result, once checked to be a pass."""
        from twisted.internet import reactor

        run = ChaosRun(reactor)
        output = os.path.abspath(self.mktemp()) + ".json"
        argv = [sys.executable, str(CHAOS_SCRIPT), "--json", "--drain-timeout", "60", "--output", output, *arguments]
        env = dict(os.environ, PATH=SERVICE_PATH, PYTHONUNBUFFERED="1")
        # No ``path=``: Twisted then uses posix_spawnp instead of forking a process that may run gRPC threads.
        reactor.spawnProcess(run, sys.executable, argv, env=env)
        self.addCleanup(run.stop)
        exit_code = await run.ended
        progress = run.err.decode("utf-8", "replace")
        try:
            result: dict[str, Any] = json.loads(run.out)
        except ValueError:
            self.fail(f"chaos.py exited with {exit_code} and no JSON result; it said:\n{progress}")
        counts = result["counts"]
        _log.info(
            "chaos {arguments}: {counts}; chaos {chaos}; durations {durations} (result in {output}); it said:\n{said}",
            arguments=" ".join(arguments),
            counts=counts,
            chaos=result["chaos"],
            durations=result["durations"],
            output=output,
            said=progress,
        )
        context = f"seed {result['seed']}; failures {result['failures']}; counts {counts}; chaos {result['chaos']}"
        self.assertEqual(counts.get("lost_acked"), 0, context)
        self.assertEqual(counts.get("duplicated"), 0, context)
        self.assertEqual(counts.get("gaps"), 0, context)
        self.assertEqual(counts.get("unacked_at_end"), 0, context)
        self.assertEqual(counts.get("stored"), counts["acked"], context)
        self.assertGreaterEqual(counts["acked"], 500, context)
        self.assertEqual(result["failures"], [], f"{context}\n{progress}")
        self.assertEqual(exit_code, 0, f"{context}\n{progress}")
        return result

    async def test_logic_killed_three_times(self) -> None:
        result = await self.chaos("--duration", "45", "--pairs", "10", "--rate", "300", "--logic-kills", "3")
        self.assertEqual(result["counts"]["logic_kills"], 3, result["chaos"])

    async def test_rabbitmq_restarted(self) -> None:
        result = await self.chaos(
            "--duration", "25", "--pairs", "10", "--rate", "300", "--logic-kills", "0", "--restart-rabbitmq"
        )
        self.assertEqual(result["counts"]["rabbitmq_restarts"], 1, result["chaos"])

    async def test_mariadb_stopped_for_ten_seconds(self) -> None:
        result = await self.chaos(
            "--duration", "25", "--pairs", "10", "--rate", "300", "--logic-kills", "0", "--stop-mariadb", "10"
        )
        self.assertEqual(result["counts"]["mariadb_stop_seconds"], 10, result["chaos"])
