"""The load generator end to end: ``python -m bench`` against the embedded gateway loses and doubles nothing.

A few seconds of 1:1 traffic over ten connections (five pairs, each user
sending to the other) through a real ``twistd gochat-gateway`` process that
the generator starts on a free port of 127.0.0.1; then the generator reads the
gateway's SQLite file and checks that every acked message is stored exactly
once and reached its recipient. The figures it prints are not checked here:
speed is for ``bench/results/``, never for a test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

REPO = Path(__file__).resolve().parents[2]
#: Bound on the whole run (server start, registration, 3 s of traffic, drain, verification), not a measurement.
RUN_TIMEOUT = 180


class LoadSmokeTests(SynchronousTestCase):
    def run_bench(self, *arguments: str) -> dict[str, Any]:
        """Run ``python -m bench --json ARGUMENTS`` from the repository root; its JSON result."""
        completed = subprocess.run(
            [sys.executable, "-m", "bench", "--json", *arguments],
            cwd=REPO,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        self.assertTrue(completed.stdout.strip(), f"no result; stderr:\n{completed.stderr[-4000:]}")
        result: dict[str, Any] = json.loads(completed.stdout)
        self.assertEqual(
            completed.returncode, 0, f"failures: {result.get('failures')}; stderr:\n{completed.stderr[-4000:]}"
        )
        return result

    def test_flat_embedded_loses_nothing(self) -> None:
        result = self.run_bench("-c", "10", "-d", "3s", "--mode", "embedded", "--drain-timeout", "30")
        self.assertTrue(result["ok"], result["failures"])
        self.assertEqual(result["connections"]["connected"], 10)
        self.assertEqual(
            result["loss"], {"lost": 0, "duplicated": 0, "missing_pushes": 0, "duplicate_pushes": 0, "unacked": 0}
        )
        messages = result["messages"]
        self.assertGreater(messages["acked"], 0)
        self.assertEqual(messages["delivered"], messages["acked"])
        self.assertEqual(result["storage"]["stored"], messages["acked"])
        self.assertEqual(result["ordering"], {"seq_gaps": 0, "out_of_order": 0})
        self.assertEqual(result["servers"]["gateway"]["tracebacks"], 0)
