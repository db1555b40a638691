"""The ordering rules: conversation keys, per-conversation seq, message ids. Pure.

Every conversation has a gap-free, strictly increasing seq starting at 1.
Message ids are 64-bit, time-ordered and unique across logic nodes
(milliseconds since 2025-01-01, a 10-bit node id, a 12-bit counter).
"""

from __future__ import annotations

EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
NODE_BITS = 10
COUNTER_BITS = 12
MAX_NODE_ID = (1 << NODE_BITS) - 1


def direct_conversation(user_a: int, user_b: int) -> str:
    """The key of the one-to-one conversation between two users, the same from both sides."""
    low, high = sorted((user_a, user_b))
    return f"d:{low}:{high}"


def participants(conv: str) -> tuple[int, ...]:
    """The user ids of a one-to-one conversation key; ``ValueError`` for anything else."""
    kind, *ids = conv.split(":")
    if kind != "d" or len(ids) != 2:
        raise ValueError(f"not a direct conversation: {conv!r}")
    return tuple(int(i) for i in ids)


class SequenceCounters:
    """The last seq given out per conversation, for the conversations this process has loaded.

    Seeds come from the store (the highest stored seq); a conversation must be
    seeded before :meth:`next` is called for it.
    """

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def __contains__(self, conv: str) -> bool:
        return conv in self._last

    def seed(self, conv: str, last_seq: int) -> None:
        """Start *conv* after *last_seq*, unless it is already further along."""
        if last_seq > self._last.get(conv, -1):
            self._last[conv] = last_seq

    def next(self, conv: str) -> int:
        """The next seq of *conv*."""
        seq = self._last[conv] + 1
        self._last[conv] = seq
        return seq

    def release(self, conv: str, seq: int) -> None:
        """Take back *seq* when it was the last given out and its message was never stored."""
        if self._last.get(conv) == seq:
            self._last[conv] = seq - 1


class MessageIdGenerator:
    """Time-ordered unique 64-bit ids; monotonic even if the clock steps back."""

    def __init__(self, node_id: int) -> None:
        if not 0 <= node_id <= MAX_NODE_ID:
            raise ValueError(f"node id must be within 0..{MAX_NODE_ID}")
        self._node_id = node_id
        self._last_ms = 0
        self._counter = 0

    def next(self, now: float) -> int:
        """A new id for a message created at *now* (seconds since the epoch)."""
        ms = max(int(now * 1000) - EPOCH_MS, self._last_ms)
        if ms == self._last_ms:
            self._counter += 1
            if self._counter >> COUNTER_BITS:
                ms += 1
                self._counter = 0
        else:
            self._counter = 0
        self._last_ms = ms
        return (ms << (NODE_BITS + COUNTER_BITS)) | (self._node_id << COUNTER_BITS) | self._counter
