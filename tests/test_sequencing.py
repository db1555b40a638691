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
    assign_seqs,
    direct_conversation,
    participants,
)
from gochat.model import PersistRequest

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


def persist_request(msg_id: int, sender_id: int, cmid: str, conv: str = "d:1:2", body: str = "hi") -> PersistRequest:
    return PersistRequest(msg_id, conv, sender_id, f"user{sender_id}", cmid, body, 1000 + msg_id, (1, 2), "gw", "s")


class AssignSeqsTests(SynchronousTestCase):
    """The pure rule that gives seqs inside the storing transaction."""

    def test_new_requests_follow_last_seq_in_order(self) -> None:
        """New requests take last+1, last+2... per conversation, in request order."""
        requests = [persist_request(1, 1, "a"), persist_request(2, 2, "b", conv="d:2:3"), persist_request(3, 1, "c")]
        assignment = assign_seqs(requests, {}, {"d:1:2": 7, "d:2:3": 0})
        self.assertEqual([(m.conv, m.seq) for m in assignment.results], [("d:1:2", 8), ("d:2:3", 1), ("d:1:2", 9)])
        self.assertEqual(assignment.new, assignment.results)
        self.assertEqual(assignment.last_seq, {"d:1:2": 9, "d:2:3": 1})
        self.assertEqual([m.msg_id for m in assignment.results], [1, 2, 3])

    def test_stored_requests_come_back_unchanged(self) -> None:
        """A request already stored (a retry or redelivery) becomes the stored message and takes no seq."""
        stored = assign_seqs([persist_request(1, 1, "a")], {}, {"d:1:2": 0}).results[0]
        retry = persist_request(99, 1, "a")
        assignment = assign_seqs([retry, persist_request(2, 1, "b")], {(1, "a"): stored}, {"d:1:2": 1})
        self.assertEqual(assignment.results[0], stored)
        self.assertEqual([m.seq for m in assignment.new], [2])

    def test_duplicates_within_a_batch(self) -> None:
        """The same client id twice in one batch is stored once; both get the first one's message."""
        assignment = assign_seqs([persist_request(1, 1, "a"), persist_request(2, 1, "a")], {}, {"d:1:2": 0})
        self.assertEqual(assignment.results[0], assignment.results[1])
        self.assertEqual(len(assignment.new), 1)
        self.assertEqual(assignment.last_seq, {"d:1:2": 1})

    def test_client_ids_are_per_sender(self) -> None:
        """Two senders may use the same client id."""
        assignment = assign_seqs([persist_request(1, 1, "a"), persist_request(2, 2, "a")], {}, {"d:1:2": 0})
        self.assertEqual([m.seq for m in assignment.new], [1, 2])


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
