"""The pure parts of the load generator (``python -m bench``): percentiles, joins, the storage check, plans."""

from __future__ import annotations

import argparse
import json

from twisted.trial.unittest import SynchronousTestCase

from bench.load.cli import parse_duration
from bench.load.client import ConversationState, make_body, message_timestamp
from bench.load.plan import Account, ConnectionPlan, WorkerPlan, WorkerResult
from bench.load.profile import summarize
from bench.load.scenarios import SCENARIOS, Idle, Rate, ScenarioOptions, split_units
from bench.load.stats import (
    VIA_FINAL_SYNC,
    VIA_PUSH,
    VIA_SYNC,
    LatencySummary,
    ReceivedRecord,
    SentRecord,
    aggregate,
    check_storage,
    cpu_percent,
    join,
    merge_counters,
    per_second,
    percentile,
    percentile_per_second,
    rate_in_window,
)


def sent(
    sender: str, cmid: str, at: float, ack_ms: float | None, msg_id: str | None, recipients: int = 1
) -> SentRecord:
    return SentRecord(sender, 100 + ord(sender[0]), cmid, at, ack_ms, msg_id, 1, None, recipients)


def received(
    recipient: int, sender: str, cmid: str, msg_id: str, at: float, latency: float | None = 1.0, via: str = VIA_PUSH
) -> ReceivedRecord:
    return ReceivedRecord(recipient, sender, cmid, msg_id, latency, at, via)


class PercentileTests(SynchronousTestCase):
    """Nearest rank: every reported percentile is a value that was measured."""

    def test_one_to_a_hundred(self) -> None:
        values = [float(v) for v in range(1, 101)]
        self.assertEqual(percentile(values, 50), 50.0)
        self.assertEqual(percentile(values, 90), 90.0)
        self.assertEqual(percentile(values, 99), 99.0)
        self.assertEqual(percentile(values, 99.9), 100.0)
        self.assertEqual(percentile(values, 100), 100.0)
        self.assertEqual(percentile(values, 0), 1.0)

    def test_rank_is_not_pushed_up_by_rounding(self) -> None:
        """99.9% of 1,000 values is the 999th, although 0.999 * 1000 is 999.0000000000001 in floating point."""
        values = [float(v) for v in range(1, 1001)]
        self.assertEqual(percentile(values, 99.9), 999.0)

    def test_single_value(self) -> None:
        self.assertEqual(percentile([7.5], 50), 7.5)
        self.assertEqual(percentile([7.5], 99.9), 7.5)

    def test_refuses_nothing_and_out_of_range(self) -> None:
        self.assertRaises(ValueError, percentile, [], 50)
        self.assertRaises(ValueError, percentile, [1.0], 101)
        self.assertRaises(ValueError, percentile, [1.0], -1)

    def test_summary_sorts_and_reports_every_percentile(self) -> None:
        summary = LatencySummary.of([5.0, 1.0, 3.0, 2.0, 4.0])
        self.assertEqual(summary.count, 5)
        self.assertEqual(summary.mean, 3.0)
        self.assertEqual(summary.max, 5.0)
        self.assertEqual(summary.percentiles, {"p50": 3.0, "p90": 5.0, "p99": 5.0, "p99.9": 5.0})
        self.assertEqual(summary.as_dict()["p50"], 3.0)

    def test_summary_of_nothing(self) -> None:
        summary = LatencySummary.of([])
        self.assertEqual(summary.as_dict(), {"count": 0, "mean": None, "max": None})


class SeriesTests(SynchronousTestCase):
    def test_rate_counts_only_the_window(self) -> None:
        self.assertEqual(rate_in_window([-0.1, 0.0, 0.5, 1.9, 2.0, 2.1], 2.0), 2.0)
        self.assertRaises(ValueError, rate_in_window, [1.0], 0.0)

    def test_per_second_bins(self) -> None:
        self.assertEqual(per_second([0.0, 0.99, 1.0, 2.5, 3.0, -1.0], 3), [2, 1, 1])

    def test_percentile_per_second(self) -> None:
        samples = [(0.1, 1.0), (0.2, 3.0), (0.3, 2.0), (2.5, 10.0)]
        self.assertEqual(percentile_per_second(samples, 3, 50), [2.0, None, 10.0])

    def test_cpu_percent_and_counters(self) -> None:
        self.assertEqual(cpu_percent(1.5, 3.0), 50.0)
        self.assertRaises(ValueError, cpu_percent, 1.0, 0.0)
        self.assertEqual(merge_counters([{"b": 1, "a": 2}, {"a": 3}]), {"a": 5, "b": 1})


class JoinTests(SynchronousTestCase):
    """Every received message is matched to its sender's record by (sender, client_msg_id)."""

    def test_each_acked_message_delivered_once(self) -> None:
        counts = join(
            [sent("alice", "a1", 0.0, 2.0, "11"), sent("bob", "b1", 0.1, 2.0, "12")],
            [received(1, "alice", "a1", "11", 0.01), received(2, "bob", "b1", "12", 0.11)],
        )
        self.assertEqual((counts.sent, counts.acked, counts.delivered), (2, 2, 2))
        self.assertEqual((counts.missing_pushes, counts.duplicate_pushes, counts.unexpected), (0, 0, 0))

    def test_missing_duplicate_unexpected_and_mismatched(self) -> None:
        counts = join(
            [
                sent("alice", "a1", 0.0, 2.0, "11"),
                sent("alice", "a2", 0.0, 2.0, "12"),
                sent("alice", "a3", 0.0, None, None),
            ],
            [
                received(2, "alice", "a1", "11", 0.1),
                received(2, "alice", "a1", "11", 0.2),
                received(2, "alice", "a2", "99", 0.2),
                received(2, "mallory", "m1", "13", 0.2),
            ],
        )
        self.assertEqual(counts.unacked, 1)
        self.assertEqual(counts.expected_deliveries, 2)
        self.assertEqual(counts.duplicate_pushes, 1)
        self.assertEqual(counts.unexpected, 1)
        self.assertEqual(counts.msg_id_mismatches, 1)
        self.assertEqual(counts.missing_pushes, 0)

    def test_fan_out_counts_each_recipient(self) -> None:
        counts = join(
            [sent("alice", "g1", 0.0, 2.0, "21", recipients=3)],
            [received(2, "alice", "g1", "21", 0.1), received(3, "alice", "g1", "21", 0.1, via=VIA_SYNC)],
        )
        self.assertEqual((counts.delivered, counts.delivered_by_push, counts.delivered_by_sync), (2, 1, 1))
        self.assertEqual(counts.missing_pushes, 1)

    def test_late_deliveries_found_by_the_final_sync_are_not_missing(self) -> None:
        counts = join(
            [sent("alice", "a1", 0.0, 2.0, "11"), sent("alice", "a2", 0.0, 2.0, "12")],
            [received(2, "alice", "a1", "11", 0.1), received(2, "alice", "a2", "12", 40.0, None, VIA_FINAL_SYNC)],
        )
        self.assertEqual((counts.delivered_by_push, counts.delivered_by_final_sync, counts.missing_pushes), (1, 1, 0))

    def test_refusals_are_counted_by_code(self) -> None:
        refused = SentRecord("alice", 1, "a1", 0.0, None, None, 1, "bad_request", 1)
        counts = join([refused], [])
        self.assertEqual((counts.refused, dict(counts.refusals)), (1, {"bad_request": 1}))
        self.assertEqual(counts.missing_pushes, 0)


class StorageCheckTests(SynchronousTestCase):
    """An acked message must be stored once, under the msg_id its ack gave."""

    def test_all_stored_once(self) -> None:
        check = check_storage(
            {(1, "a1"): "11", (1, "a2"): "12"}, [(1, "a1"), (1, "a2")], [(1, "a1", "11"), (1, "a2", "12")]
        )
        self.assertEqual(check.as_dict(), {"stored": 2, "lost": 0, "duplicated": 0, "stored_unacked": 0, "foreign": 0})

    def test_missing_and_mismatched_rows_are_lost(self) -> None:
        check = check_storage({(1, "a1"): "11", (1, "a2"): "12"}, [(1, "a1"), (1, "a2")], [(1, "a2", "13")])
        self.assertEqual(check.lost, 2)

    def test_duplicates_unacked_and_foreign(self) -> None:
        check = check_storage(
            {(1, "a1"): "11"},
            [(1, "a1"), (1, "a2")],
            [(1, "a1", "11"), (1, "a1", "14"), (1, "a2", "12"), (2, "z", "11")],
        )
        # (1, a1) twice, and msg_id 11 twice.
        self.assertEqual(check.duplicated, 2)
        self.assertEqual(check.stored_unacked, 1)
        self.assertEqual(check.foreign, 1)
        self.assertEqual(check.lost, 0)


class AggregateTests(SynchronousTestCase):
    def test_figures_of_a_small_run(self) -> None:
        records = [
            sent("alice", "a1", 0.2, 10.0, "1"),
            sent("alice", "a2", 0.7, 20.0, "2"),
            sent("bob", "b1", 1.5, 30.0, "3"),
            sent("bob", "b2", 1.99, 30.0, "4"),  # acked after the 2-second window
        ]
        deliveries = [
            received(2, "alice", "a1", "1", 0.212, 12.0),
            received(2, "alice", "a2", "2", 0.722, 22.0),
            received(2, "alice", "a2", "2", 0.9, 22.0),  # duplicate: not delivered twice
            received(1, "bob", "b1", "3", 1.532, 32.0),
            received(1, "bob", "b2", "4", 2.5, None, via=VIA_SYNC),
        ]
        figures = aggregate(records, deliveries, duration=2.0, series_seconds=10)
        self.assertEqual(figures.offered_per_second, 2.0)
        self.assertEqual(figures.acked_per_second, 1.5)
        self.assertEqual(figures.delivered_per_second, 1.5)
        self.assertEqual(figures.acked_series, [2, 1, 1])
        self.assertEqual(figures.delivered_series, [2, 1, 1])
        self.assertEqual(figures.push.count, 3)
        self.assertEqual(figures.push.percentiles["p50"], 22.0)
        self.assertEqual(figures.ack.max, 30.0)
        self.assertEqual(figures.push_p50_series, [12.0, 32.0, None])
        self.assertEqual(figures.counts.duplicate_pushes, 1)
        self.assertEqual(figures.counts.delivered_by_sync, 1)

    def test_records_survive_the_wire(self) -> None:
        record = SentRecord("alice", 1, "x.0.1-3", 1.25, 3.5, "77", 2, None, 1)
        self.assertEqual(SentRecord.from_wire(json.loads(json.dumps(record.to_wire()))), record)
        item = ReceivedRecord(2, "alice", "x.0.1-3", "77", None, 1.5, VIA_SYNC)
        self.assertEqual(ReceivedRecord.from_wire(json.loads(json.dumps(item.to_wire()))), item)


class ClientStateTests(SynchronousTestCase):
    def test_body_carries_its_send_time(self) -> None:
        body = make_body("c-1", 123456789, 100)
        self.assertEqual(len(body), 100)
        self.assertEqual(message_timestamp(body), 123456789)
        self.assertIsNone(message_timestamp("hello"))
        self.assertIsNone(message_timestamp("t=abc rest"))

    def test_conversation_prefix_and_gaps(self) -> None:
        state = ConversationState()
        for seq in (1, 2, 4, 6):
            state.add(seq)
        self.assertEqual(state.prefix, 2)
        self.assertEqual(state.gaps(), 2)
        self.assertTrue(state.has(1) and state.has(4))
        self.assertFalse(state.has(3))
        state.add(3)
        state.add(5)
        self.assertEqual((state.prefix, state.gaps()), (6, 0))


class PlanTests(SynchronousTestCase):
    def accounts(self, n: int) -> list[Account]:
        return [Account(i + 1, f"user{i}", f"token{i}") for i in range(n)]

    def test_pairs_send_to_each_other_and_stay_in_one_worker(self) -> None:
        options = ScenarioOptions(connections=6, sessions_per_user=1, rate=600.0, window=1)
        units = Rate().plan(self.accounts(6), options, {})
        self.assertEqual(
            [[c.account.username for c in unit] for unit in units],
            [["user0", "user1"], ["user2", "user3"], ["user4", "user5"]],
        )
        self.assertEqual(units[0][0].send_to, {"to": "user1"})
        self.assertEqual(units[0][1].send_to, {"to": "user0"})
        parts = split_units(units, 2)
        self.assertEqual([[c.account.user_id for c in part] for part in parts], [[1, 2, 5, 6], [3, 4]])
        self.assertEqual(Rate().rate_per_connection(options, 6), 100.0)
        self.assertIsNone(SCENARIOS["flat"]().rate_per_connection(options, 6))

    def test_one_to_one_needs_pairs(self) -> None:
        options = ScenarioOptions(connections=3, sessions_per_user=1, rate=1.0, window=1)
        self.assertRaises(ValueError, Rate().plan, self.accounts(3), options, {})

    def test_idle_spreads_sessions_over_fewer_users(self) -> None:
        options = ScenarioOptions(connections=250, sessions_per_user=100, rate=1.0, window=1)
        self.assertEqual(Idle().users_needed(options), 3)
        units = Idle().plan(self.accounts(3), options, {})
        self.assertEqual(len(units), 250)
        self.assertTrue(all(unit[0].send_to is None for unit in units))
        self.assertEqual(sum(1 for unit in units if unit[0].account.user_id == 1), 84)

    def test_worker_plan_and_result_survive_json(self) -> None:
        plan = WorkerPlan(
            worker=1,
            url="ws://127.0.0.1:1/ws",
            scenario="rate",
            run_tag="abc",
            connections=[ConnectionPlan(Account(1, "user0", "t"), {"to": "user1"}, 1)],
            rate_per_connection=2.0,
        )
        self.assertEqual(WorkerPlan.from_dict(json.loads(plan.to_json())), plan)
        result = WorkerResult(1, [], [], {"pings": 2}, [0.5], 1, 1.0, 0.5, 1024, 0, 0)
        self.assertEqual(WorkerResult.from_dict(json.loads(result.to_json())), result)

    def test_durations(self) -> None:
        self.assertEqual(parse_duration("30s"), 30.0)
        self.assertEqual(parse_duration("2m"), 120.0)
        self.assertEqual(parse_duration("250ms"), 0.25)
        self.assertEqual(parse_duration("7"), 7.0)
        self.assertRaises(argparse.ArgumentTypeError, parse_duration, "soon")
        self.assertRaises(argparse.ArgumentTypeError, parse_duration, "0s")


class ProfileSummaryTests(SynchronousTestCase):
    def test_idle_waits_are_counted_apart(self) -> None:
        lines = [
            "run (twisted/app.py:10);deliver (/work/gochat/gateway/hub.py:5) 50",
            "run (twisted/app.py:10);EPollReactor.doPoll (/x/site-packages/twisted/internet/epollreactor.py:5) 40",
            "run (twisted/app.py:10);dataReceived (/x/site-packages/autobahn/protocol.py:7);encode (json/e.py:3) 30",
            "work (twisted/_threads/_threadworker.py:1);Condition.wait (threading.py:320) 500",
            "run (twisted/app.py:10);dataReceived (/x/site-packages/autobahn/protocol.py:9) 10",
            "",
        ]
        summary = summarize(lines, top=3)
        self.assertEqual((summary["busy_samples"], summary["idle_samples"]), (90, 540))
        self.assertEqual(
            summary["self"][0], {"function": "deliver (gochat/gateway/hub.py)", "samples": 50, "percent": 55.6}
        )
        inclusive = {entry["function"]: entry["percent"] for entry in summary["inclusive"]}
        self.assertEqual(inclusive["run (twisted/app.py)"], 100.0)
        self.assertEqual(inclusive["dataReceived (autobahn/protocol.py)"], 44.4)
        by_package = {entry["package"]: entry["percent"] for entry in summary["self_by_package"]}
        self.assertEqual(by_package, {"gochat/gateway": 55.6, "json": 33.3, "autobahn": 11.1})
