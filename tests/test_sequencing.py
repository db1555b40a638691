"""Tests for :mod:`gochat.logic.sequencing`: conversation keys, per-conversation seq and message ids."""

from __future__ import annotations

import itertools

from twisted.trial.unittest import SynchronousTestCase

from gochat.logic.sequencing import (
    COUNTER_BITS,
    EPOCH_MS,
    MAX_NODE_ID,
    NODE_BITS,
    MessageIdGenerator,
    SequenceCounters,
    direct_conversation,
    participants,
)

# 1000 seconds after the id epoch, in seconds since the Unix epoch.
T0 = EPOCH_MS / 1000 + 1000.0
T0_MS = 1_000_000


def split_id(msg_id: int) -> tuple[int, int, int]:
    """(milliseconds since the id epoch, node id, counter) of *msg_id*."""
    return (
        msg_id >> (NODE_BITS + COUNTER_BITS),
        (msg_id >> COUNTER_BITS) & ((1 << NODE_BITS) - 1),
        msg_id & ((1 << COUNTER_BITS) - 1),
    )


class ConversationKeyTests(SynchronousTestCase):
    """Direct conversation keys and their parsing."""

    def test_symmetric(self) -> None:
        """Both sides get the same key, lower id first."""
        self.assertEqual(direct_conversation(7, 3), "d:3:7")
        self.assertEqual(direct_conversation(3, 7), "d:3:7")
        self.assertEqual(direct_conversation(10, 9), "d:9:10")  # numeric, not string, order

    def test_self_conversation(self) -> None:
        """A user writing to themselves has a key too."""
        self.assertEqual(direct_conversation(5, 5), "d:5:5")

    def test_participants_round_trip(self) -> None:
        """``participants`` gives back the two ids of a key."""
        self.assertEqual(participants(direct_conversation(42, 7)), (7, 42))
        self.assertEqual(participants("d:1:2"), (1, 2))

    def test_participants_rejects_others(self) -> None:
        """Keys of other kinds or shapes are ValueError."""
        for conv in ("", "d", "d:1", "d:1:2:3", "g:1:2", "D:1:2", "x", "d:a:b", "d:1:", "d::2", ":1:2"):
            self.assertRaises(ValueError, participants, conv)


class SequenceCountersTests(SynchronousTestCase):
    """Per-conversation seq: seeded from the store, then strictly increasing without gaps."""

    def test_seed_then_next(self) -> None:
        """After seeding with the last stored seq, next gives the following numbers."""
        counters = SequenceCounters()
        self.assertNotIn("d:1:2", counters)
        counters.seed("d:1:2", 0)
        self.assertIn("d:1:2", counters)
        self.assertEqual([counters.next("d:1:2") for _ in range(3)], [1, 2, 3])

    def test_seed_from_store(self) -> None:
        """Seeding with a stored seq continues after it."""
        counters = SequenceCounters()
        counters.seed("d:1:2", 41)
        self.assertEqual(counters.next("d:1:2"), 42)

    def test_seed_never_moves_back(self) -> None:
        """A stale seed (lower or equal) is ignored; a higher one moves ahead."""
        counters = SequenceCounters()
        counters.seed("d:1:2", 0)
        for _ in range(5):
            counters.next("d:1:2")
        counters.seed("d:1:2", 2)
        counters.seed("d:1:2", 5)
        self.assertEqual(counters.next("d:1:2"), 6)
        counters.seed("d:1:2", 10)
        self.assertEqual(counters.next("d:1:2"), 11)

    def test_conversations_independent(self) -> None:
        """Each conversation has its own counter."""
        counters = SequenceCounters()
        counters.seed("d:1:2", 0)
        counters.seed("d:1:3", 100)
        self.assertEqual(counters.next("d:1:2"), 1)
        self.assertEqual(counters.next("d:1:3"), 101)
        self.assertEqual(counters.next("d:1:2"), 2)

    def test_next_unseeded(self) -> None:
        """``next`` on an unseeded conversation is a KeyError, never a made-up seq."""
        self.assertRaises(KeyError, SequenceCounters().next, "d:1:2")


class MessageIdGeneratorTests(SynchronousTestCase):
    """64-bit ids: milliseconds, node id, counter; unique and strictly increasing."""

    def test_layout(self) -> None:
        """The id holds milliseconds since the id epoch, the node id and the counter."""
        generator = MessageIdGenerator(node_id=5)
        first = generator.next(T0)
        self.assertEqual(split_id(first), (T0_MS, 5, 0))
        self.assertEqual(first, (T0_MS << 22) | (5 << 12))
        self.assertEqual(split_id(generator.next(T0)), (T0_MS, 5, 1))
        self.assertEqual(split_id(generator.next(T0 + 0.002)), (T0_MS + 2, 5, 0))

    def test_node_ids_distinct(self) -> None:
        """Two nodes at the same instant never produce the same id."""
        a = MessageIdGenerator(1)
        b = MessageIdGenerator(2)
        ids_a = {a.next(T0) for _ in range(5000)}
        ids_b = {b.next(T0) for _ in range(5000)}
        self.assertFalse(ids_a & ids_b)

    def test_same_millisecond_100k(self) -> None:
        """100k ids in one millisecond are unique and strictly increasing; overflow borrows the next ms."""
        generator = MessageIdGenerator(node_id=MAX_NODE_ID)
        ids = [generator.next(T0) for _ in range(100_000)]
        self.assertTrue(all(a < b for a, b in itertools.pairwise(ids)))
        self.assertEqual(len(set(ids)), 100_000)
        for i in (0, 4095, 4096, 99_999):
            self.assertEqual(split_id(ids[i]), (T0_MS + i // 4096, MAX_NODE_ID, i % 4096))
        self.assertTrue(all(0 < i < 2**63 for i in ids))

    def test_clock_steps_back(self) -> None:
        """When the clock steps backwards ids keep increasing, in the last millisecond used."""
        generator = MessageIdGenerator(node_id=3)
        ids = [generator.next(T0)]
        ids += [generator.next(T0 - 5.0) for _ in range(10_000)]
        ids.append(generator.next(T0 - 3600.0))
        self.assertTrue(all(a < b for a, b in itertools.pairwise(ids)))
        self.assertEqual(len(set(ids)), len(ids))
        self.assertEqual(split_id(ids[1]), (T0_MS, 3, 1))
        # Once the clock is past the borrowed time, ids follow it again with a fresh counter.
        later = generator.next(T0 + 10.0)
        self.assertGreater(later, ids[-1])
        self.assertEqual(split_id(later), (T0_MS + 10_000, 3, 0))

    def test_time_order(self) -> None:
        """An id made later (by the clock) is larger, even across generators."""
        a = MessageIdGenerator(MAX_NODE_ID)
        b = MessageIdGenerator(0)
        self.assertLess(a.next(T0), b.next(T0 + 0.001))

    def test_invalid_node_id(self) -> None:
        """Node ids outside 0..1023 are ValueError; the bounds themselves are fine."""
        self.assertEqual(MAX_NODE_ID, 1023)
        for node_id in (-1, MAX_NODE_ID + 1, 2**20):
            self.assertRaises(ValueError, MessageIdGenerator, node_id)
        MessageIdGenerator(0)
        MessageIdGenerator(MAX_NODE_ID)
