"""Tests for :mod:`gochat.ratelimit`: the token bucket."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gochat.ratelimit import TokenBucket


class TokenBucketTests(SynchronousTestCase):
    """``rate`` events a second on average, bursts of up to ``burst``; time passed in."""

    def test_burst_then_refusal(self) -> None:
        """A new bucket allows exactly ``burst`` events at once, then refuses."""
        bucket = TokenBucket(rate=2.0, burst=3, now=100.0)
        self.assertEqual([bucket.take(100.0) for _ in range(5)], [True, True, True, False, False])

    def test_refill_over_time(self) -> None:
        """Tokens come back at ``rate`` a second; a fraction of a token is not enough."""
        bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
        for _ in range(3):
            self.assertTrue(bucket.take(0.0))
        self.assertFalse(bucket.take(0.25))  # half a token
        self.assertTrue(bucket.take(0.5))  # one token
        self.assertFalse(bucket.take(0.5))
        self.assertTrue(bucket.take(1.0))
        self.assertTrue(bucket.take(1.5))
        self.assertFalse(bucket.take(1.5))

    def test_refusals_cost_nothing(self) -> None:
        """Refused events do not use up the refill."""
        bucket = TokenBucket(rate=1.0, burst=1, now=0.0)
        self.assertTrue(bucket.take(0.0))
        for now in (0.25, 0.5, 0.75):
            self.assertFalse(bucket.take(now))
        self.assertTrue(bucket.take(1.0))

    def test_capped_at_burst(self) -> None:
        """A long pause refills only up to ``burst``."""
        bucket = TokenBucket(rate=10.0, burst=4, now=0.0)
        for _ in range(4):
            bucket.take(0.0)
        self.assertEqual([bucket.take(3600.0) for _ in range(6)], [True] * 4 + [False] * 2)

    def test_steady_rate(self) -> None:
        """At a steady pace of exactly ``rate`` every event goes through, faster ones are refused."""
        bucket = TokenBucket(rate=4.0, burst=1, now=0.0)
        self.assertTrue(all(bucket.take(i * 0.25) for i in range(100)))
        bucket = TokenBucket(rate=4.0, burst=1, now=0.0)
        results = [bucket.take(i * 0.125) for i in range(100)]
        self.assertEqual(results.count(True), 50)

    def test_clock_backwards_adds_nothing(self) -> None:
        """Time going backwards neither adds tokens nor lets the same interval be counted twice."""
        bucket = TokenBucket(rate=1.0, burst=1, now=10.0)
        self.assertTrue(bucket.take(10.0))
        self.assertFalse(bucket.take(5.0))
        self.assertFalse(bucket.take(10.0))
        self.assertFalse(bucket.take(10.5))
        self.assertTrue(bucket.take(11.0))

    def test_invalid_arguments(self) -> None:
        """Non-positive rates and bursts under one are ValueError."""
        for rate, burst in ((0.0, 1), (-1.0, 5), (1.0, 0), (1.0, 0.5), (1.0, -3)):
            self.assertRaises(ValueError, TokenBucket, rate, burst, 0.0)
        TokenBucket(0.001, 1, 0.0)
