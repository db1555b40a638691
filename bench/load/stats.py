"""The pure half of the load generator: records, percentiles, joins and the storage check.

Nothing here does I/O or reads a clock: the worker processes produce
:class:`SentRecord` and :class:`ReceivedRecord` values (with times relative to
the run's start, in seconds, and latencies in milliseconds), the parent joins
them here, and the same functions are unit-tested in ``tests/test_bench_load.py``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: The percentiles every latency summary reports, as (name, percent).
PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))


# Records, as the workers send them to the parent (compact lists on the wire).


@dataclass(frozen=True)
class SentRecord:
    """One message a client offered: when, whether and how it was acked.

    *sent_at* is the first attempt, in seconds since the run's start;
    *ack_ms* runs from that first attempt to the first ack (retries
    included, as a user would feel it), ``None`` if never acked.
    *recipients* is how many pushes the message should cause (1 for 1:1).
    """

    sender: str
    sender_id: int
    cmid: str
    sent_at: float
    ack_ms: float | None
    msg_id: str | None
    attempts: int
    refused: str | None
    recipients: int

    def to_wire(self) -> list[Any]:
        return [
            self.sender,
            self.sender_id,
            self.cmid,
            round(self.sent_at, 6),
            None if self.ack_ms is None else round(self.ack_ms, 4),
            self.msg_id,
            self.attempts,
            self.refused,
            self.recipients,
        ]

    @classmethod
    def from_wire(cls, item: Sequence[Any]) -> SentRecord:
        sender, sender_id, cmid, sent_at, ack_ms, msg_id, attempts, refused, recipients = item
        return cls(
            str(sender),
            int(sender_id),
            str(cmid),
            float(sent_at),
            None if ack_ms is None else float(ack_ms),
            None if msg_id is None else str(msg_id),
            int(attempts),
            None if refused is None else str(refused),
            int(recipients),
        )


#: How a message reached a recipient: a live push, a ``sync`` after a reconnect, or the ``sync`` every client
#: makes when the drain after the window ends with deliveries still missing (the message was not pushed in time,
#: but the recipient can have it: not lost).
VIA_PUSH = "push"
VIA_SYNC = "sync"
VIA_FINAL_SYNC = "final_sync"


@dataclass(frozen=True)
class ReceivedRecord:
    """One message as a recipient got it.

    *latency_ms* runs from the sender's first attempt (its timestamp travels
    in the body) to the push; ``None`` for a message recovered by sync.
    *received_at* is in seconds since the run's start.
    """

    recipient_id: int
    sender: str
    cmid: str
    msg_id: str
    latency_ms: float | None
    received_at: float
    via: str

    def to_wire(self) -> list[Any]:
        return [
            self.recipient_id,
            self.sender,
            self.cmid,
            self.msg_id,
            None if self.latency_ms is None else round(self.latency_ms, 4),
            round(self.received_at, 6),
            self.via,
        ]

    @classmethod
    def from_wire(cls, item: Sequence[Any]) -> ReceivedRecord:
        recipient_id, sender, cmid, msg_id, latency_ms, received_at, via = item
        return cls(
            int(recipient_id),
            str(sender),
            str(cmid),
            str(msg_id),
            None if latency_ms is None else float(latency_ms),
            float(received_at),
            str(via),
        )


# Percentiles.


def percentile(sorted_values: Sequence[float], percent: float) -> float:
    """The nearest-rank *percent* percentile of *sorted_values* (ascending, not empty).

    The smallest value with at least *percent* % of the values at or below
    it: no interpolation, so the figure is always a latency that happened.
    """
    if not sorted_values:
        raise ValueError("no values")
    if not 0.0 <= percent <= 100.0:
        raise ValueError(f"percent out of range: {percent}")
    # Rounded first so that 99.9% of 1000 is exactly rank 999, not 999.0000000000001 -> 1000.
    rank = math.ceil(round(percent / 100.0 * len(sorted_values), 9))
    return sorted_values[max(rank, 1) - 1]


@dataclass(frozen=True)
class LatencySummary:
    """Count, mean, the :data:`PERCENTILES` and the maximum of some latencies (milliseconds)."""

    count: int
    mean: float | None
    percentiles: dict[str, float]
    max: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> LatencySummary:
        ordered = sorted(values)
        if not ordered:
            return cls(0, None, {}, None)
        return cls(
            len(ordered),
            sum(ordered) / len(ordered),
            {name: percentile(ordered, percent) for name, percent in PERCENTILES},
            ordered[-1],
        )

    def as_dict(self) -> dict[str, Any]:
        """Milliseconds rounded to microseconds, for the JSON result."""
        out: dict[str, Any] = {"count": self.count}
        out["mean"] = None if self.mean is None else round(self.mean, 3)
        out.update({name: round(value, 3) for name, value in self.percentiles.items()})
        out["max"] = None if self.max is None else round(self.max, 3)
        return out


# Time series.


def rate_in_window(times: Iterable[float], duration: float) -> float:
    """Events per second among *times* (seconds since the start) that fall in ``[0, duration]``."""
    if duration <= 0:
        raise ValueError("duration must be positive")
    return sum(1 for t in times if 0.0 <= t <= duration) / duration


def per_second(times: Iterable[float], seconds: int) -> list[int]:
    """How many of *times* fall in each whole second ``[k, k+1)`` for ``k < seconds``; later ones are dropped."""
    counts = [0] * seconds
    for t in times:
        if t >= 0:
            k = int(t)
            if k < seconds:
                counts[k] += 1
    return counts


def percentile_per_second(samples: Iterable[tuple[float, float]], seconds: int, percent: float) -> list[float | None]:
    """For each whole second, the *percent* percentile of the values of the ``(time, value)`` samples in it."""
    buckets: list[list[float]] = [[] for _ in range(seconds)]
    for t, value in samples:
        if t >= 0 and int(t) < seconds:
            buckets[int(t)].append(value)
    return [percentile(sorted(bucket), percent) if bucket else None for bucket in buckets]


# Joining what the senders and the recipients saw.


@dataclass
class DeliveryCounts:
    """Messages offered, acked and delivered, joined by (sender, client_msg_id).

    ``missing_pushes``: expected deliveries (acked messages times their
    recipients) that no recipient reported, by push or by sync, even after
    the final sync; ``delivered_by_final_sync``: deliveries not pushed by the
    end of the drain that the final sync found; ``duplicate_pushes``: a recipient
    got the same message more than once; ``unexpected``: received messages no
    sender reported (another run's, or a bug).
    """

    sent: int = 0
    acked: int = 0
    unacked: int = 0
    refused: int = 0
    attempts: int = 0
    expected_deliveries: int = 0
    delivered: int = 0
    delivered_by_push: int = 0
    delivered_by_sync: int = 0
    delivered_by_final_sync: int = 0
    missing_pushes: int = 0
    duplicate_pushes: int = 0
    unexpected: int = 0
    msg_id_mismatches: int = 0
    refusals: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        out = {key: value for key, value in self.__dict__.items() if key != "refusals"}
        out["refusals"] = dict(sorted(self.refusals.items()))
        return out


def join(sent: Iterable[SentRecord], received: Iterable[ReceivedRecord]) -> DeliveryCounts:
    """Match every received message to its sent record and count what is missing or doubled.

    A delivery counts once per (message, recipient); a second copy to the
    same recipient is a duplicate. A received msg_id that differs from the one
    the sender's ack gave is a mismatch.
    """
    counts = DeliveryCounts()
    by_key: dict[tuple[str, str], SentRecord] = {}
    for record in sent:
        by_key[(record.sender, record.cmid)] = record
        counts.sent += 1
        counts.attempts += record.attempts
        if record.msg_id is not None:
            counts.acked += 1
            counts.expected_deliveries += record.recipients
        else:
            counts.unacked += 1
        if record.refused is not None:
            counts.refused += 1
            counts.refusals[record.refused] += 1
    seen: set[tuple[str, str, int]] = set()
    delivered_per_key: Counter[tuple[str, str]] = Counter()
    via: Counter[str] = Counter()
    for item in received:
        key = (item.sender, item.cmid)
        found = by_key.get(key)
        if found is None:
            counts.unexpected += 1
            continue
        if (item.sender, item.cmid, item.recipient_id) in seen:
            counts.duplicate_pushes += 1
            continue
        seen.add((item.sender, item.cmid, item.recipient_id))
        if found.msg_id is not None and found.msg_id != item.msg_id:
            counts.msg_id_mismatches += 1
        counts.delivered += 1
        via[item.via] += 1
        delivered_per_key[key] += 1
    counts.delivered_by_sync = via[VIA_SYNC]
    counts.delivered_by_final_sync = via[VIA_FINAL_SYNC]
    counts.delivered_by_push = counts.delivered - counts.delivered_by_sync - counts.delivered_by_final_sync
    for key, record in by_key.items():
        if record.msg_id is not None:
            counts.missing_pushes += max(0, record.recipients - delivered_per_key.get(key, 0))
    return counts


# The storage check.


@dataclass(frozen=True)
class StorageCheck:
    """What the database holds against what the clients were acked.

    ``lost``: acked messages that are not stored, or stored under another
    msg_id than the ack gave; ``duplicated``: rows beyond the first for one
    (sender_id, client_msg_id), plus rows that reuse another row's msg_id;
    ``stored_unacked``: stored messages whose ack never reached the client
    (not a loss: a retry would get the same ack); ``foreign``: stored rows no
    client of this run sent.
    """

    stored: int
    lost: int
    duplicated: int
    stored_unacked: int
    foreign: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def check_storage(
    acked: Mapping[tuple[int, str], str], sent: Iterable[tuple[int, str]], rows: Iterable[tuple[int, str, str]]
) -> StorageCheck:
    """Compare *acked* ((sender_id, client_msg_id) -> msg_id) and *sent* keys with the stored *rows*.

    *rows* are ``(sender_id, client_msg_id, msg_id)`` as read from the
    ``messages`` table, for the senders of the run.
    """
    stored: dict[tuple[int, str], list[str]] = {}
    msg_ids: Counter[str] = Counter()
    total = 0
    for sender_id, cmid, msg_id in rows:
        stored.setdefault((int(sender_id), str(cmid)), []).append(str(msg_id))
        msg_ids[str(msg_id)] += 1
        total += 1
    duplicated = sum(len(found) - 1 for found in stored.values()) + sum(n - 1 for n in msg_ids.values())
    lost = 0
    for key, msg_id in acked.items():
        found = stored.get(key)
        if not found or found[0] != msg_id:
            lost += 1
    sent_keys = set(sent)
    stored_unacked = sum(1 for key in stored if key in sent_keys and key not in acked)
    foreign = sum(1 for key in stored if key not in sent_keys)
    return StorageCheck(total, lost, duplicated, stored_unacked, foreign)


# Adding up the workers.


def merge_counters(counters: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """The key-wise sum of *counters*, sorted by key."""
    total: Counter[str] = Counter()
    for counter in counters:
        total.update(counter)
    return dict(sorted(total.items()))


@dataclass
class Aggregate:
    """The figures of a messaging run, from every worker's records.

    Throughputs count events in the measurement window ``[0, duration]``
    (acks by ack time, deliveries by receipt time, offers by first attempt);
    latencies cover every message, those acked or pushed during the drain
    after the window included. The per-second series run until the last
    event, at most *series_seconds*.
    """

    counts: DeliveryCounts
    ack: LatencySummary
    push: LatencySummary
    offered_per_second: float
    acked_per_second: float
    delivered_per_second: float
    acked_series: list[int]
    delivered_series: list[int]
    push_p50_series: list[float | None]
    push_p99_series: list[float | None]
    ack_samples: list[tuple[float, float]]
    push_samples: list[tuple[float, float]]


def aggregate(
    sent: Sequence[SentRecord], received: Sequence[ReceivedRecord], duration: float, series_seconds: int
) -> Aggregate:
    """Join, summarize and bin the records of a run (see :class:`Aggregate`)."""
    counts = join(sent, received)
    ack_samples = [(r.sent_at, r.ack_ms) for r in sent if r.ack_ms is not None]
    ack_times = [t + ms / 1000.0 for t, ms in ack_samples]
    first_receipts: dict[tuple[str, str, int], ReceivedRecord] = {}
    for item in received:
        first_receipts.setdefault((item.sender, item.cmid, item.recipient_id), item)
    delivered_times = [item.received_at for item in first_receipts.values()]
    sent_at = {(r.sender, r.cmid): r.sent_at for r in sent}
    push_samples = [
        (sent_at[(item.sender, item.cmid)], item.latency_ms)
        for item in first_receipts.values()
        if item.latency_ms is not None and (item.sender, item.cmid) in sent_at
    ]
    last = max([0.0, *ack_times, *delivered_times])
    seconds = max(1, min(series_seconds, math.ceil(last)))
    return Aggregate(
        counts=counts,
        ack=LatencySummary.of(ms for _, ms in ack_samples),
        push=LatencySummary.of(ms for _, ms in push_samples),
        offered_per_second=rate_in_window((r.sent_at for r in sent), duration),
        acked_per_second=rate_in_window(ack_times, duration),
        delivered_per_second=rate_in_window(delivered_times, duration),
        acked_series=per_second(ack_times, seconds),
        delivered_series=per_second(delivered_times, seconds),
        push_p50_series=percentile_per_second(push_samples, seconds, 50.0),
        push_p99_series=percentile_per_second(push_samples, seconds, 99.0),
        ack_samples=ack_samples,
        push_samples=push_samples,
    )


def cpu_percent(cpu_seconds: float, wall_seconds: float) -> float:
    """CPU time as a percentage of one core over *wall_seconds*."""
    if wall_seconds <= 0:
        raise ValueError("wall_seconds must be positive")
    return 100.0 * cpu_seconds / wall_seconds
