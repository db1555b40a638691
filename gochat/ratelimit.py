"""A token bucket, the flood guard of every connection; pure, time passed in."""

from __future__ import annotations


class TokenBucket:
    """Allows ``rate`` events a second on average and bursts of up to ``burst``.

    The bucket refills continuously from the time passed to :meth:`take`, so
    it needs no timer of its own.
    """

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; say whether the event may go ahead."""
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
            self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
