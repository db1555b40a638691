"""Admission control: a gateway stops reading from senders while too many of its sends wait for logic.

Offered more messages than logic can store, a gateway that keeps reading
queues them without bound: every message waits longer, clients time out and
resend, and the resends are more work for a server that is already behind,
so goodput collapses. :class:`SendAdmission` bounds the gateway's sends in
flight instead. A send that finds *limit* or more in flight is still
taken, but its connection stops being read (TCP then pushes back on the
client); once the sends in flight fall to *resume_at*, every paused
connection is read again. Connections that send nothing are never paused,
so their recv-acks and pings keep flowing, and a sender is held back by
the time it takes logic to catch up, never refused.

Pure: no reactor, no clock; the hub calls it from its sessions.
"""

from __future__ import annotations

from typing import Protocol


class Pausable(Protocol):
    """A connection whose reading can be paused and resumed."""

    def pause_reading(self) -> None:
        """Stop reading from the socket (what is already read is still handled)."""

    def resume_reading(self) -> None:
        """Read from the socket again."""


class SendAdmission:
    """Counts a gateway's sends in flight and pauses the connections that send past *limit*."""

    def __init__(self, limit: int, resume_at: int | None = None) -> None:
        """Pause senders at *limit* sends in flight; resume them all at *resume_at* (default: half of *limit*).

        :raises ValueError: unless ``0 <= resume_at < limit``.
        """
        resume = limit // 2 if resume_at is None else resume_at
        if not 0 <= resume < limit:
            raise ValueError(f"need 0 <= resume_at < limit, not resume_at={resume} and limit={limit}")
        self.limit = limit
        self.resume_at = resume
        self.in_flight = 0
        self.pauses = 0
        self._paused: dict[int, Pausable] = {}

    @property
    def paused(self) -> int:
        """How many connections are paused now."""
        return len(self._paused)

    def started(self, sender: Pausable) -> None:
        """*sender* sent a message on its way to logic; pause it if that makes too many in flight."""
        self.in_flight += 1
        if self.in_flight >= self.limit and id(sender) not in self._paused:
            self._paused[id(sender)] = sender
            self.pauses += 1
            sender.pause_reading()

    def finished(self) -> None:
        """A send was answered (acked or refused); resume every paused sender once few enough are left."""
        self.in_flight -= 1
        if self._paused and self.in_flight <= self.resume_at:
            self.release_all()

    def release_all(self) -> None:
        """Resume every paused sender now (the gateway is closing its connections, which must read)."""
        paused, self._paused = self._paused, {}
        for sender in paused.values():
            sender.resume_reading()

    def forget(self, sender: Pausable) -> None:
        """*sender* is gone: never resume it."""
        self._paused.pop(id(sender), None)
