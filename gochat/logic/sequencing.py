"""The ordering rules: conversation keys, per-conversation seq, message ids. Pure.

Every conversation has a gap-free, strictly increasing seq starting at 1. The
seq is given by :func:`assign_seqs` inside the transaction that stores the
message, so a crash anywhere can neither skip nor reuse one.
Message ids are 64-bit, time-ordered and unique across logic nodes
(milliseconds since 2025-01-01, a 10-bit node id, a 12-bit counter).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gochat.model import PersistRequest, StoredMessage

EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
NODE_BITS = 10
COUNTER_BITS = 12
MAX_NODE_ID = (1 << NODE_BITS) - 1


def direct_conversation(user_a: int, user_b: int) -> str:
    """The key of the one-to-one conversation between two users, the same from both sides."""
    low, high = sorted((user_a, user_b))
    return f"d:{low}:{high}"


def group_conversation(group_id: int) -> str:
    """The key of a group's conversation."""
    return f"g:{group_id}"


def group_id_of(conv: str) -> int:
    """The group id of a group conversation key; ``ValueError`` for anything else."""
    kind, _, number = conv.partition(":")
    if kind != "g" or not number.isdigit() or len(number) > 19:
        raise ValueError(f"not a group conversation: {conv!r}")
    return int(number)


def participants(conv: str) -> tuple[int, ...]:
    """The user ids of a one-to-one conversation key; ``ValueError`` for anything else."""
    kind, *ids = conv.split(":")
    if kind != "d" or len(ids) != 2 or not all(i.isdigit() and len(i) <= 19 for i in ids):
        raise ValueError(f"not a direct conversation: {conv!r}")
    return tuple(int(i) for i in ids)


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


@dataclass(frozen=True)
class Assignment:
    """What a batch of requests became: one stored message per request, which of them are new, and the last seqs."""

    results: list[StoredMessage]
    new: list[StoredMessage]
    last_seq: dict[str, int]


def assign_seqs(
    requests: Sequence[PersistRequest],
    existing: Mapping[tuple[int, str], StoredMessage],
    last_seq: Mapping[str, int],
) -> Assignment:
    """Give each new request the next seq of its conversation, in request order.

    A request whose (sender, client message id) is already stored, or appears
    earlier in the batch, becomes that message again: a retry or a broker
    redelivery stores nothing twice and takes no seq. ``last_seq`` must hold
    every conversation of the batch (0 for a new one).
    """
    known = dict(existing)
    last = {conv: last_seq[conv] for conv in {r.conv for r in requests}}
    results: list[StoredMessage] = []
    new: list[StoredMessage] = []
    for request in requests:
        key = (request.sender_id, request.client_msg_id)
        message = known.get(key)
        if message is None:
            seq = last[request.conv] + 1
            last[request.conv] = seq
            message = StoredMessage(
                msg_id=request.msg_id,
                conv=request.conv,
                seq=seq,
                sender_id=request.sender_id,
                sender=request.sender,
                client_msg_id=request.client_msg_id,
                body=request.body,
                ts=request.ts,
                kind=request.kind,
                ref_seq=request.ref_seq,
            )
            known[key] = message
            new.append(message)
        results.append(message)
    return Assignment(results, new, last)


def conversation_heads(requests: Sequence[PersistRequest], new: Sequence[StoredMessage]) -> dict[tuple[int, str], int]:
    """The highest new seq of each (participant, conversation) a batch touched: the rows of the per-user index."""
    participants = {request.msg_id: request.participants for request in requests}
    heads: dict[tuple[int, str], int] = {}
    for message in new:
        for user_id in participants.get(message.msg_id, ()):
            key = (user_id, message.conv)
            if message.seq > heads.get(key, 0):
                heads[key] = message.seq
    return heads
