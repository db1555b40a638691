"""Tests for :mod:`gochat.logic.batch_writer`: batching, ordering, retries and draining, one batch at a time
and overlapping (:meth:`~gochat.logic.batch_writer.BatchWriter.overlapping`)."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gochat.errors import ErrorCode, GochatError
from gochat.logic.batch_writer import BatchPolicy, BatchWriter, EarlierBatchError


class SinkError(Exception):
    """What the fake sink fails with."""


class FakeSink:
    """Records every batch it is asked to write and returns a Deferred the test fires by hand.

    ``raise_next`` makes the next calls raise synchronously instead.
    """

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.deferreds: list[Deferred[None]] = []
        self.raise_next = 0

    def __call__(self, items: list[str]) -> Deferred[None]:
        self.calls.append(list(items))
        if self.raise_next:
            self.raise_next -= 1
            raise SinkError("sink exploded")
        d: Deferred[None] = Deferred()
        self.deferreds.append(d)
        return d

    def commit(self, index: int = -1) -> None:
        """Fire the Deferred of one call (the latest by default) as committed."""
        self.deferreds[index].callback(None)

    def fail(self, index: int = -1) -> None:
        """Fire the Deferred of one call (the latest by default) as failed."""
        self.deferreds[index].errback(SinkError("write failed"))


class BatchWriterTestCase(SynchronousTestCase):
    """Shared set-up: a writer on a fake sink and a Clock."""

    policy = BatchPolicy(max_batch=3, max_delay=0.5, max_pending=100, retry_initial=0.25, retry_max=1.0)

    def setUp(self) -> None:
        self.clock = Clock()
        self.sink = FakeSink()
        self.writer: BatchWriter[str] = BatchWriter(self.sink, self.clock, self.policy)


class BatchingTests(BatchWriterTestCase):
    """When batches are written."""

    def test_flush_at_max_batch(self) -> None:
        """Reaching ``max_batch`` writes at once and cancels the delay timer."""
        self.writer.add("a")
        self.writer.add("b")
        self.assertEqual(self.sink.calls, [])
        self.assertEqual(len(self.writer), 2)
        self.writer.add("c")
        self.assertEqual(self.sink.calls, [["a", "b", "c"]])
        self.assertEqual(len(self.writer), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_flush_at_max_delay(self) -> None:
        """A lone item is written ``max_delay`` after it arrived, not before."""
        self.writer.add("a")
        self.clock.advance(0.25)
        self.assertEqual(self.sink.calls, [])
        self.clock.advance(0.125)
        self.assertEqual(self.sink.calls, [])
        self.clock.advance(0.125)
        self.assertEqual(self.sink.calls, [["a"]])

    def test_delay_counts_from_first_item(self) -> None:
        """Later items join the waiting batch without restarting its timer."""
        self.writer.add("a")
        self.clock.advance(0.25)
        self.writer.add("b")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0.25)
        self.assertEqual(self.sink.calls, [["a", "b"]])

    def test_item_deferreds_wait_for_commit(self) -> None:
        """An item's Deferred fires only after the sink's Deferred for its batch fires."""
        ds = [self.writer.add(x) for x in "abc"]
        self.assertEqual(len(self.sink.calls), 1)
        for d in ds:
            self.assertNoResult(d)
        self.sink.commit()
        for d in ds:
            self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.writer.batches_written, 1)

    def test_one_batch_in_flight_order_preserved(self) -> None:
        """While a batch is being written nothing else is; the backlog follows in order."""
        first = [self.writer.add(x) for x in "abc"]
        later = [self.writer.add(x) for x in "defgh"]
        self.assertEqual(self.sink.calls, [["a", "b", "c"]])
        self.assertEqual(len(self.writer), 5)
        self.clock.advance(10)  # no timer may start a second write meanwhile
        self.assertEqual(len(self.sink.calls), 1)

        self.sink.commit()
        for d in first:
            self.successResultOf(d)
        # A full batch was waiting: it goes at once.
        self.assertEqual(self.sink.calls, [["a", "b", "c"], ["d", "e", "f"]])
        for d in later:
            self.assertNoResult(d)

        self.sink.commit()
        # The remainder is less than a batch: it waits for the delay.
        self.assertEqual(len(self.sink.calls), 2)
        self.clock.advance(0.5)
        self.assertEqual(self.sink.calls, [["a", "b", "c"], ["d", "e", "f"], ["g", "h"]])
        self.assertNoResult(later[3])
        self.sink.commit()
        for d in later:
            self.successResultOf(d)
        self.assertEqual(self.writer.batches_written, 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_commit_order_matches_add_order(self) -> None:
        """Item Deferreds fire in the order the items were added."""
        fired: list[str] = []
        for x in "abcde":
            self.writer.add(x).addCallback(lambda _, x=x: fired.append(x))
        self.sink.commit()
        self.clock.advance(0.5)
        self.sink.commit()
        self.assertEqual(fired, list("abcde"))


class RetryTests(BatchWriterTestCase):
    """A failed write is retried, the same batch, with exponential backoff."""

    def test_backoff_and_same_batch(self) -> None:
        """Retries wait 0.25, 0.5, 1.0, 1.0 (capped) seconds and resend the same items in the same order."""
        ds = [self.writer.add(x) for x in "abc"]
        later = self.writer.add("d")
        self.assertEqual(len(self.sink.calls), 1)
        for attempt, delay in enumerate((0.25, 0.5, 1.0, 1.0), start=1):
            self.sink.fail()
            self.assertEqual(self.writer.write_failures, attempt)
            self.clock.advance(delay - 0.125)
            self.assertEqual(len(self.sink.calls), attempt, f"retried too early after failure {attempt}")
            self.clock.advance(0.125)
            self.assertEqual(len(self.sink.calls), attempt + 1, f"not retried after {delay}s")
            for d in [*ds, later]:
                self.assertNoResult(d)
        self.assertEqual(self.sink.calls, [["a", "b", "c"]] * 5)
        self.assertEqual(len(self.flushLoggedErrors(SinkError)), 4)

        self.sink.commit()
        for d in ds:
            self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.writer.batches_written, 1)
        self.assertNoResult(later)
        self.clock.advance(0.5)
        self.assertEqual(self.sink.calls[-1], ["d"])
        self.sink.commit()
        self.successResultOf(later)

    def test_backoff_resets_after_success(self) -> None:
        """After a successful write the next failure waits the initial delay again."""
        for x in "abc":
            self.writer.add(x)
        self.sink.fail()
        self.clock.advance(0.25)
        self.sink.fail()
        self.clock.advance(0.5)
        self.sink.commit()
        self.assertEqual(len(self.sink.calls), 3)

        for x in "def":
            self.writer.add(x)
        self.assertEqual(len(self.sink.calls), 4)
        self.sink.fail()
        self.clock.advance(0.25)
        self.assertEqual(self.sink.calls[-1], ["d", "e", "f"])
        self.assertEqual(len(self.sink.calls), 5)
        self.assertEqual(len(self.flushLoggedErrors(SinkError)), 3)

    def test_sink_raising_synchronously(self) -> None:
        """A sink that raises instead of returning a Deferred is treated as a failed write."""
        self.sink.raise_next = 2
        ds = [self.writer.add(x) for x in "abc"]
        self.assertEqual(self.writer.write_failures, 1)
        self.clock.advance(0.25)
        self.assertEqual(self.writer.write_failures, 2)
        self.clock.advance(0.25)
        self.assertEqual(len(self.sink.calls), 2)
        self.clock.advance(0.25)
        self.assertEqual(self.sink.calls, [["a", "b", "c"]] * 3)
        for d in ds:
            self.assertNoResult(d)
        self.sink.commit()
        for d in ds:
            self.successResultOf(d)
        self.assertEqual(len(self.flushLoggedErrors(SinkError)), 2)


class BackpressureAndShutdownTests(BatchWriterTestCase):
    """Bounded backlog, flush and stop."""

    policy = BatchPolicy(max_batch=2, max_delay=0.5, max_pending=3, retry_initial=0.25, retry_max=1.0)

    def test_max_pending(self) -> None:
        """Once ``max_pending`` items wait, new ones are refused with UNAVAILABLE until the backlog drains."""
        self.writer.add("a")
        self.writer.add("b")  # written at once: in flight, no longer pending
        for x in "cde":
            self.writer.add(x)
        self.assertEqual(len(self.writer), 3)
        error = self.assertRaises(GochatError, self.writer.add, "f")
        self.assertIs(error.code, ErrorCode.UNAVAILABLE)
        self.assertEqual(len(self.writer), 3)

        self.sink.commit()  # [c, d] goes out
        self.assertEqual(len(self.writer), 1)
        self.writer.add("f")
        self.assertEqual(len(self.writer), 2)

    def test_stop_refuses_and_drains(self) -> None:
        """``stop`` refuses new items with SHUTTING_DOWN and fires once everything queued is committed."""
        ds = [self.writer.add(x) for x in "abc"]
        self.assertEqual(self.sink.calls, [["a", "b"]])
        stopped = self.writer.stop()
        error = self.assertRaises(GochatError, self.writer.add, "z")
        self.assertIs(error.code, ErrorCode.SHUTTING_DOWN)
        self.assertNoResult(stopped)

        self.sink.commit()
        # The remainder goes at once, not after the delay.
        self.assertEqual(self.sink.calls, [["a", "b"], ["c"]])
        self.assertNoResult(stopped)
        self.assertNoResult(ds[2])

        self.sink.commit()
        self.assertIsNone(self.successResultOf(stopped))
        for d in ds:
            self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_waits_for_retries(self) -> None:
        """``stop`` during a failing write fires only once the retry succeeds."""
        d = self.writer.add("a")
        stopped = self.writer.stop()
        self.assertEqual(self.sink.calls, [["a"]])
        self.sink.fail()
        self.clock.advance(0.25)
        self.assertNoResult(stopped)
        self.sink.commit()
        self.successResultOf(d)
        self.successResultOf(stopped)
        self.assertEqual(len(self.flushLoggedErrors(SinkError)), 1)

    def test_stop_when_idle(self) -> None:
        """``stop`` with nothing queued fires at once."""
        self.assertIsNone(self.successResultOf(self.writer.stop()))
        self.assertEqual(self.sink.calls, [])

    def test_flush_empty(self) -> None:
        """``flush`` with nothing queued or in flight fires at once without calling the sink."""
        self.assertIsNone(self.successResultOf(self.writer.flush()))
        self.assertEqual(self.sink.calls, [])

    def test_flush_writes_now(self) -> None:
        """``flush`` writes waiting items without waiting for the delay and cancels the timer."""
        d = self.writer.add("a")
        flushed = self.writer.flush()
        self.assertEqual(self.sink.calls, [["a"]])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertNoResult(flushed)
        self.sink.commit()
        self.successResultOf(d)
        self.successResultOf(flushed)
        self.writer.add("b")  # flush does not stop the writer
        self.clock.advance(0.5)
        self.assertEqual(self.sink.calls[-1], ["b"])

    def test_flush_waits_for_in_flight(self) -> None:
        """``flush`` while a batch is in flight and nothing waits fires after that batch commits."""
        self.writer.add("a")
        self.writer.add("b")
        flushed = self.writer.flush()
        self.assertNoResult(flushed)
        self.sink.commit()
        self.successResultOf(flushed)
        self.assertEqual(len(self.sink.calls), 1)


class ReentrancyTests(BatchWriterTestCase):
    """Callbacks on item Deferreds may add more items to the same writer."""

    policy = BatchPolicy(max_batch=2, max_delay=0.5, max_pending=100, retry_initial=0.25, retry_max=1.0)

    def test_add_from_commit_callback_keeps_one_batch_in_flight(self) -> None:
        """Items added by a commit callback never start a second concurrent write."""
        a = self.writer.add("a")
        self.writer.add("b")
        self.writer.add("c")
        a.addCallback(lambda _: [self.writer.add("d"), self.writer.add("e")])
        flushed = self.writer.flush()

        self.sink.commit()
        self.assertEqual(self.sink.calls, [["a", "b"], ["c", "d"]], "two batches in flight at once")
        self.sink.commit()
        self.assertEqual(self.sink.calls[-1], ["e"])
        self.assertNoResult(flushed)
        self.sink.commit()
        self.successResultOf(flushed)

    def test_flush_not_fired_early_by_commit_callback(self) -> None:
        """A flush waiter does not fire while a batch started from a commit callback is still in flight."""
        a = self.writer.add("a")
        self.writer.add("b")
        self.writer.add("c")
        d_holder: list[Deferred[None]] = []
        a.addCallback(lambda _: d_holder.append(self.writer.add("d")))
        flushed = self.writer.flush()

        self.sink.commit()
        self.assertEqual(self.sink.calls, [["a", "b"], ["c", "d"]])
        self.assertNoResult(d_holder[0])
        self.assertNoResult(flushed)
        self.sink.commit()
        self.successResultOf(d_holder[0])
        self.successResultOf(flushed)

    def test_add_from_commit_callback_single_timer(self) -> None:
        """An item added by a commit callback is written once, ``max_delay`` later, and not stranded."""
        a = self.writer.add("a")
        self.writer.add("b")
        a.addCallback(lambda _: self.writer.add("x"))
        self.sink.commit()
        self.clock.advance(0.25)
        self.assertEqual(len(self.sink.calls), 1)
        self.clock.advance(0.25)
        self.assertEqual(self.sink.calls, [["a", "b"], ["x"]])
        self.sink.commit()
        self.clock.advance(10)
        self.assertEqual(self.sink.calls, [["a", "b"], ["x"]])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class FakeOrderedSink:
    """An ordered sink (:meth:`BatchWriter.overlapping`): each call's batch is written when the test says
    ``ready``, and then commits once its ``after`` has fired; if ``after`` failed, the call fails with
    EarlierBatchError without committing. ``fail`` fails a call on its own."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.deferreds: list[Deferred[None]] = []
        self.committed: list[list[str]] = []
        self._after: list[list[object]] = []
        self._ready: list[bool] = []

    def __call__(self, items: list[str], after: Deferred[None]) -> Deferred[None]:
        index = len(self.calls)
        self.calls.append(list(items))
        self.deferreds.append(Deferred())
        self._after.append([])
        self._ready.append(False)

        def settled(result: object) -> None:
            self._after[index].append(result)
            self._maybe_commit(index)

        after.addBoth(settled)
        return self.deferreds[index]

    def ready(self, index: int = -1) -> None:
        """The call's batch is written; it commits as soon as the batch before has."""
        index %= len(self.calls)
        self._ready[index] = True
        self._maybe_commit(index)

    def fail(self, index: int = -1) -> None:
        self.deferreds[index].errback(SinkError("write failed"))

    def _maybe_commit(self, index: int) -> None:
        if self.deferreds[index].called or not self._after[index] or not self._ready[index]:
            return
        [outcome] = self._after[index]
        if isinstance(outcome, Failure):
            self.deferreds[index].errback(EarlierBatchError("the batch before was not committed"))
        else:
            self.committed.append(self.calls[index])
            self.deferreds[index].callback(None)


class OverlappingTests(SynchronousTestCase):
    """BatchWriter.overlapping: batch N+1 is written while N commits; commits, acks and retries stay in order."""

    policy = BatchPolicy(max_batch=3, max_delay=0.5, max_pending=100, retry_initial=0.25, retry_max=1.0)

    def setUp(self) -> None:
        self.clock = Clock()
        self.sink = FakeOrderedSink()
        self.writer: BatchWriter[str] = BatchWriter.overlapping(self.sink, self.clock, self.policy, depth=2)
        self.fired: list[str] = []

    def add(self, items: str) -> list[Deferred[None]]:
        ds = [self.writer.add(x) for x in items]
        for x, d in zip(items, ds, strict=True):
            d.addCallback(lambda _, x=x: self.fired.append(x))
        return ds

    def test_depth_must_be_positive(self) -> None:
        self.assertRaises(ValueError, BatchWriter.overlapping, self.sink, self.clock, self.policy, 0)

    def test_up_to_depth_batches_handed_out(self) -> None:
        """Two full batches go at once; the third waits for the first to commit."""
        self.add("abcdefghi")
        self.assertEqual(self.sink.calls, [list("abc"), list("def")])
        self.assertEqual(len(self.writer), 3)
        self.clock.advance(10)
        self.assertEqual(len(self.sink.calls), 2)
        self.sink.ready(0)
        self.assertEqual(self.fired, list("abc"))
        self.assertEqual(self.sink.calls[-1], list("ghi"))

    def test_later_batch_commits_and_acks_after_the_earlier(self) -> None:
        """Batch 2 written first still commits, and its items are acknowledged, only after batch 1's."""
        first = self.add("abc")
        second = self.add("def")
        self.sink.ready(1)
        self.assertEqual(self.sink.committed, [])
        for d in [*first, *second]:
            self.assertNoResult(d)
        self.sink.ready(0)
        self.assertEqual(self.sink.committed, [list("abc"), list("def")])
        self.assertEqual(self.fired, list("abcdef"))
        self.assertEqual(self.writer.batches_written, 2)

    def test_acks_stay_in_order_even_if_a_sink_commits_out_of_order(self) -> None:
        """A sink that fires batch 2 before batch 1 (against the contract) still gets its acks in order."""
        self.add("abcdef")
        self.sink.deferreds[1].callback(None)
        self.assertEqual(self.fired, [])
        self.sink.deferreds[0].callback(None)
        self.assertEqual(self.fired, list("abcdef"))

    def test_a_partial_batch_goes_after_the_delay_while_another_is_in_flight(self) -> None:
        self.add("abcd")
        self.assertEqual(self.sink.calls, [list("abc")])
        self.clock.advance(0.5)
        self.assertEqual(self.sink.calls, [list("abc"), ["d"]])
        self.sink.ready(1)
        self.sink.ready(0)
        self.assertEqual(self.fired, list("abcd"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failure_fails_the_batch_after_and_both_are_retried_in_order(self) -> None:
        """Batch 1 fails while batch 2 waits to commit: batch 2 is not committed, counts as no failure of its
        own, and both are written again, in order, after the backoff; nothing is acknowledged before."""
        ds = self.add("abcdefg")
        self.sink.ready(1)
        self.sink.fail(0)
        self.assertEqual(self.sink.committed, [])
        self.assertEqual(self.writer.write_failures, 1)
        self.assertEqual(len(self.flushLoggedErrors(SinkError)), 1)
        self.assertEqual(len(self.flushLoggedErrors(EarlierBatchError)), 0)
        self.clock.advance(0.125)
        self.assertEqual(len(self.sink.calls), 2)
        self.clock.advance(0.125)
        self.assertEqual(self.sink.calls[2:], [list("abc"), list("def")])
        self.sink.ready(3)
        self.sink.ready(2)
        self.assertEqual(self.sink.committed, [list("abc"), list("def")])
        self.assertEqual(len(self.sink.calls), 4)  # the rest only after the retried batches, and the delay
        self.clock.advance(0.5)
        self.assertEqual(self.sink.calls[4:], [["g"]])
        self.sink.ready(4)
        self.assertEqual(self.fired, list("abcdefg"))
        for d in ds:
            self.successResultOf(d)

    def test_retry_waits_for_every_batch_handed_out(self) -> None:
        """Batch 1 fails while batch 2 is still being written: nothing is written again until batch 2 has come
        back (failed: the one before was not committed); then the backoff, then both in order."""
        self.add("abcdef")
        self.sink.fail(0)
        self.clock.advance(1.0)
        self.assertEqual(len(self.sink.calls), 2)
        self.sink.ready(1)
        self.assertEqual(self.sink.committed, [])
        self.clock.advance(0.125)
        self.assertEqual(len(self.sink.calls), 2)
        self.clock.advance(0.125)
        self.assertEqual(self.sink.calls[2:], [list("abc"), list("def")])
        self.sink.ready(2)
        self.sink.ready(3)
        self.assertEqual(self.fired, list("abcdef"))
        self.assertEqual(self.writer.write_failures, 1)
        self.flushLoggedErrors(SinkError)

    def test_later_batch_failing_alone_is_retried_after_the_earlier_commits(self) -> None:
        """Batch 2 fails on its own while batch 1 is in flight: batch 1 commits and is acknowledged, then
        batch 2 is written again after the backoff, and the batch after it only then."""
        self.add("abcdef")
        self.sink.fail(1)
        self.add("ghi")
        self.assertEqual(len(self.sink.calls), 2)  # nothing new is handed out while a failed batch waits
        self.sink.ready(0)
        self.assertEqual(self.fired, list("abc"))
        self.assertEqual(len(self.sink.calls), 2)
        self.clock.advance(0.25)
        self.assertEqual(self.sink.calls[2:], [list("def"), list("ghi")])
        self.sink.ready(2)
        self.sink.ready(3)
        self.assertEqual(self.fired, list("abcdefghi"))
        self.assertEqual(self.sink.committed, [list("abc"), list("def"), list("ghi")])
        self.assertEqual(len(self.flushLoggedErrors(SinkError)), 1)

    def test_backoff_grows_per_round_and_resets(self) -> None:
        """Each retry round waits twice as long as the last (capped); a commit resets it."""
        self.add("abcdef")
        for attempt, delay in enumerate((0.25, 0.5, 1.0), start=1):
            self.sink.fail(-2)
            self.sink.ready(-1)  # comes back failed: the batch before was not committed
            self.clock.advance(delay - 0.125)
            self.assertEqual(len(self.sink.calls), 2 * attempt)
            self.clock.advance(0.125)
            self.assertEqual(len(self.sink.calls), 2 * attempt + 2)
        self.sink.ready(-1)
        self.sink.ready(-2)
        self.assertEqual(self.fired, list("abcdef"))
        self.add("xyz")
        self.sink.fail()
        self.clock.advance(0.25)
        self.assertEqual(self.sink.calls[-1], list("xyz"))
        self.assertEqual(self.writer.write_failures, 4)
        self.flushLoggedErrors(SinkError)

    def test_stop_drains_every_batch_in_flight(self) -> None:
        ds = self.add("abcdefg")
        stopped = self.writer.stop()
        self.assertRaises(GochatError, self.writer.add, "z")
        self.sink.ready(1)
        self.sink.ready(0)
        self.assertNoResult(stopped)
        self.assertEqual(self.sink.calls[-1], ["g"])
        self.sink.ready(2)
        self.successResultOf(stopped)
        for d in ds:
            self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_items_added_by_ack_callbacks_queue_behind(self) -> None:
        """Acknowledgement callbacks that add items never overtake batches already handed out."""
        first = self.add("abc")
        first[0].addCallback(lambda _: self.add("xyz"))
        self.add("def")
        self.sink.ready(0)
        self.assertEqual(self.sink.calls, [list("abc"), list("def"), list("xyz")])
        self.sink.ready(2)
        self.assertEqual(self.fired, list("abc"))
        self.sink.ready(1)
        self.assertEqual(self.fired, list("abcdefxyz"))


class OnWrittenTests(SynchronousTestCase):
    """``on_written`` hears of each committed batch once, in order, before the item Deferreds; ``put`` queues
    items with no Deferred, batched, retried and drained as ``add``'s."""

    policy = BatchPolicy(max_batch=3, max_delay=0.5, max_pending=5, retry_initial=0.25, retry_max=1.0)

    def setUp(self) -> None:
        self.clock = Clock()
        self.events: list[object] = []
        self.sink = FakeOrderedSink()
        self.writer: BatchWriter[str] = BatchWriter.overlapping(
            self.sink, self.clock, self.policy, depth=2, on_written=lambda items: self.events.append(list(items))
        )

    def test_batches_heard_in_commit_order_before_item_deferreds(self) -> None:
        self.writer.put("a")
        self.writer.put("b")
        self.writer.add("c").addCallback(lambda _: self.events.append("c fired"))
        for item in "def":
            self.writer.put(item)
        self.assertEqual(self.sink.calls, [["a", "b", "c"], ["d", "e", "f"]])
        self.sink.ready(1)  # the later batch commits first: nobody hears of it yet
        self.assertEqual(self.events, [])
        self.sink.ready(0)
        self.assertEqual(self.events, [["a", "b", "c"], "c fired", ["d", "e", "f"]])

    def test_a_put_item_is_retried_until_written_and_heard_of_once(self) -> None:
        self.writer.put("a")
        self.clock.advance(0.5)
        self.sink.fail(0)
        self.assertEqual(len(self.flushLoggedErrors(SinkError)), 1)
        self.assertEqual(self.events, [])
        self.clock.advance(0.25)
        self.assertEqual(self.sink.calls, [["a"], ["a"]])
        self.sink.ready(1)
        self.assertEqual(self.events, [["a"]])

    def test_put_refuses_as_add_does(self) -> None:
        for item in range(2 * 3 + 5):  # two batches handed out, five waiting: the backlog is full
            self.writer.put(str(item))
        with self.assertRaises(GochatError) as raised:
            self.writer.put("f")
        self.assertIs(raised.exception.code, ErrorCode.UNAVAILABLE)
        self.writer.stop()
        with self.assertRaises(GochatError) as raised:
            self.writer.put("g")
        self.assertIs(raised.exception.code, ErrorCode.SHUTTING_DOWN)

    def test_stop_drains_put_items(self) -> None:
        self.writer.put("a")
        stopped = self.writer.stop()
        self.assertNoResult(stopped)
        self.sink.ready(0)
        self.assertEqual(self.events, [["a"]])
        self.successResultOf(stopped)

    def test_a_raising_hook_is_logged_and_the_writer_goes_on(self) -> None:
        def explode(items: list[str]) -> None:
            raise ValueError(f"hook failed on {items}")

        writer: BatchWriter[str] = BatchWriter.overlapping(self.sink, self.clock, self.policy, 2, explode)
        first = writer.add("a")
        writer.put("b")
        writer.put("c")
        second = writer.add("d")
        self.clock.advance(0.5)
        self.sink.ready(0)
        self.sink.ready(1)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(writer.batches_written, 2)
