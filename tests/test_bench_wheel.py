"""The wheel benchmark (``bench/wheel.py``): its replays agree, and its baselines are what they claim."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from bench import wheel as bench_wheel

ROOT = Path(__file__).resolve().parent.parent
MIX = bench_wheel.Mix(timeout=60.0, round_seconds=5.0, frames=0.5, closes=0.002, duration_ticks=180)


class ReplayTests(SynchronousTestCase):
    def test_replays_expire_the_same_connections(self) -> None:
        """Every implementation expires the same connections in the same rounds."""
        ops = bench_wheel.generate_ops(3000, MIX, seed=7)
        wheel = bench_wheel.run_wheel_intrusive(ops, MIX)
        self.assertGreater(wheel.expired, 0)
        for runner in (
            bench_wheel.run_wheel_separate,
            bench_wheel.run_timeout_mixin,
            bench_wheel.run_reactor_heap,
        ):
            run = runner(ops, MIX)
            bench_wheel.check_same_expiries(runner.__name__, run, wheel)
            self.assertEqual(run.per_round_expired, wheel.per_round_expired)
            self.assertEqual(run.schedules, wheel.schedules)
            self.assertGreater(run.visit_ns, 0)

    def test_timeout_mixin_replay_leaves_the_global_reactor_alone(self) -> None:
        from twisted.internet import reactor

        before = list(reactor.getDelayedCalls())
        bench_wheel.run_timeout_mixin(bench_wheel.generate_ops(500, MIX, seed=1), MIX)
        self.assertEqual(list(reactor.getDelayedCalls()), before)


class TimeoutMixinConnectionTests(SynchronousTestCase):
    """The baseline's connections behave as TimeoutMixin does, on the benchmark's own reactor."""

    def setUp(self) -> None:
        self.clock = [bench_wheel.START]
        self.reactor = bench_wheel._heap_reactor(self.clock)
        self.expired: list[int] = []
        self.connection = bench_wheel._timeout_connection_class(self.reactor, self.expired.append)

    def advance(self, seconds: float) -> None:
        self.clock[0] += seconds
        self.reactor.runUntilCurrent()

    def test_reset_pushes_the_timeout_back(self) -> None:
        conn = self.connection(5)
        conn.setTimeout(60.0)
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        self.advance(30)
        conn.resetTimeout()
        self.advance(59)
        self.assertEqual(self.expired, [])
        self.advance(1)
        self.assertEqual(self.expired, [5])

    def test_close_cancels(self) -> None:
        conn = self.connection(3)
        conn.setTimeout(60.0)
        conn.setTimeout(None)
        self.advance(120)
        self.assertEqual(self.expired, [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_marginal_memory_counts_the_delayed_call(self) -> None:
        """An armed TimeoutMixin connection costs at least a ``DelayedCall`` more than a plain one."""
        mixin = bench_wheel.bytes_per_timeout_mixin_timer(2000, MIX)
        call = bench_wheel.bytes_per_delayed_call(2000, MIX)
        self.assertGreater(mixin, call * 0.8)
        self.assertGreater(mixin, bench_wheel.bytes_per_intrusive_timer(2000, MIX)["total"])


class CommandLineTests(SynchronousTestCase):
    def test_json_reports_both_ratios_and_bytes(self) -> None:
        """``--json`` at small sizes: the TimeoutMixin headline, the bare-heap figure, bytes per timer."""
        out = subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / "wheel.py"),
                "--json",
                "--connections",
                "2000",
                "4000",
                "--memory-connections",
                "2000",
                "--clock-connections",
                "200",
                "--repeat",
                "1",
            ],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout
        result = json.loads(out)
        for size in result["sizes"]:
            self.assertTrue(size["same_expiries"])
            for impl in bench_wheel.IMPLEMENTATIONS:
                self.assertGreater(size[impl]["cpu_s"], 0)
            self.assertGreater(size["cpu_ratio_timeout_mixin_over_wheel_intrusive"], 0)
            self.assertGreater(size["cpu_ratio_heap_over_wheel_intrusive"], 0)
        goals = result["goals"]
        self.assertEqual(list(goals)[:2], ["cpu_ratio_vs_timeout_mixin", "cpu_ratio_vs_bare_reactor_heap"])
        self.assertEqual(set(goals["cpu_ratio_vs_timeout_mixin"]["by_connections"]), {"2000", "4000"})
        memory = result["memory"][0]
        self.assertGreater(memory["timeout_mixin_bytes_per_timer"], memory["wheel_intrusive_bytes_per_timer"])
        self.assertIn("TimeoutMixin", result["parameters"]["baseline"])
