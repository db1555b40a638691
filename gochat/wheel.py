"""A hashed timing wheel for very many coarse, frequently re-armed timeouts.

The gateway keeps one idle timeout per connection and pushes it back on every
incoming frame.  Twisted's ``callLater`` costs a heap operation (with
Python-level comparisons) every time a re-armed call reaches the top of the
heap, and an ``O(n)`` ``list.remove`` for ``task.Clock``.  A hashed wheel trades
timing precision (one tick) for constant-time operations:

- time is cut into integer *ticks* of ``tick`` seconds; a timer is due at the
  first tick boundary at or after its requested deadline, so it never fires
  early and fires at most one tick late;
- the wheel is a ring of ``slots`` buckets (Python ``set`` objects); a timer
  due at tick ``d`` waits in bucket ``d % slots``;
- :meth:`HashedWheel.reset` is lazy: pushing a deadline later only rewrites the
  timer's deadline field.  When :meth:`HashedWheel.advance` reaches the bucket
  the timer sits in and finds it not yet due, it moves the timer to the bucket
  of its current deadline.  A connection that receives thousands of frames per
  timeout period therefore costs one field write per frame plus at most one
  bucket move per wheel revolution.

The module is pure: it reads no clock and imports nothing from Twisted.  Every
operation that depends on the current time takes it as ``now`` (seconds, any
monotonic origin), so the wheel can be driven by ``reactor.seconds()`` in
production and by plain numbers in tests.

Tick arithmetic tolerates floating-point noise of ``1e-9`` tick: ``0.3 / 0.1``
is ``2.9999999999999996`` and must still count as tick 3.  Deadlines are
rounded up and the current tick is rounded down, both with that tolerance, so a
timer scheduled at ``now`` with ``delay`` is returned by ``advance(now +
delay)``.

Deadlines that fall on or before the last tick the wheel has already processed
(zero or negative delays, or a stale ``now``) are clamped to the next tick: the
wheel never holds a timer that is already overdue, so such a timer is returned
by the first :meth:`HashedWheel.advance` that crosses a tick boundary.

A timer is *fixed* or *idle*.  A fixed timer (armed by :meth:`HashedWheel.reset`
or :meth:`HashedWheel.schedule`) is due at the time it was given.  An idle
timer (armed by :meth:`HashedWheel.idle`) is due ``span`` seconds after it was
last *touched*, and touching it is writing the time to its ``touched_at``
attribute: no call, no bucket, nothing else.  :meth:`HashedWheel.advance`
reads ``touched_at`` when it reaches the bucket the timer sits in and, if the
timer was touched since, moves it to the bucket of its real deadline.  This is
the shape of an idle timeout that every incoming frame pushes back: the
per-frame cost is the one store the owner makes to remember when it last heard
from its peer, which it needs anyway.

A timer is either a separate object made by :meth:`HashedWheel.schedule`, or
*intrusive*: the object that owns the deadline (the gateway's session) is an
instance of a :class:`WheelTimer` subclass and is armed in place with
:meth:`HashedWheel.reset`.  Then a reset touches only the owner, which the
caller has just touched anyway, and nothing is allocated per timer.

A timer belongs to one wheel at a time; passing an active timer to another
wheel is not detected and corrupts both.
"""

from __future__ import annotations

import enum
from math import ceil, floor, inf, isfinite, nan, nextafter
from operator import attrgetter
from typing import Any, Generic, Literal, TypeVar, cast

__all__ = ["HashedWheel", "WheelTimer"]

P = TypeVar("P")

_EPSILON = 1e-9
"""Tolerance, in ticks, for float noise when converting seconds to ticks."""

_INACTIVE = -1
"""Slot index of a timer that is in no bucket (cancelled, expired or new).

Hot paths test ``slot < 0``: any negative slot means inactive.
"""

_FIXED = -1.0
"""``_wheel_span`` of a fixed timer: one that touches do not push back.

Hot paths test ``span >= 0.0``: a negative span means fixed.
"""

_by_deadline = attrgetter("_wheel_deadline")
_new_timer = object.__new__


class _Payload(enum.Enum):
    """Markers stored in a timer's payload slot in place of a payload."""

    ITSELF = enum.auto()
    """The payload is the timer itself (an intrusive timer).

    Storing the timer in its own slot would make every intrusive timer a
    reference cycle, left to the cycle collector when its owner drops it.
    """


_ITSELF: Literal[_Payload.ITSELF] = _Payload.ITSELF


class WheelTimer(Generic[P]):
    """One timeout on a :class:`HashedWheel`.

    A timer is either made by :meth:`HashedWheel.schedule` (a *separate*
    timer that some owner keeps a reference to), or is the owner itself (an
    *intrusive* timer, see below).  The class is deliberately tiny (five
    slots, no ``__dict__``) because the gateway keeps one per live
    connection.  ``payload`` is what :meth:`HashedWheel.advance` hands back
    when the timer expires; the caller may replace it at any time.

    A timer is *active* while it sits in the wheel.  Expiry and cancellation
    make it inactive; :meth:`HashedWheel.reset` makes it active again, so one
    timer object can serve a connection for its whole life.

    Intrusive timers
    ----------------
    The object that owns a deadline can *be* its timer, as with Linux's
    ``timer_list`` or Netty's wheel: subclass ``WheelTimer``, parametrised by
    the subclass itself, call ``WheelTimer.__init__(self, self)`` (the
    payload is the object) and arm it with :meth:`HashedWheel.reset`::

        class Connection(WheelTimer["Connection"]):
            __slots__ = ("peer",)  # or no __slots__, for a __dict__

            def __init__(self, peer: str, wheel: HashedWheel[Connection], now: float) -> None:
                super().__init__(self)
                self.peer = peer
                wheel.reset(self, 30.0, now)

    There is then no timer object to allocate or to reach: the wheel's state
    is five slots in the owner's own memory, which the owner's code touches
    anyway, and :meth:`HashedWheel.advance` returns the owners themselves.
    The timer does not refer to itself (the slot records that the payload is
    the timer), so being a timer adds no reference cycle to the owner; the
    wheel holds it, and keeps it alive, only while it is active.

    A subclass must call ``WheelTimer.__init__`` before the timer is used,
    must not reuse the names ``payload``, ``active``, ``deadline``,
    ``touched_at`` or any name starting with ``_wheel_``, and must keep
    identity equality and hashing, because the wheel's buckets are sets.  A
    class body that defines one of those names, ``__eq__`` or ``__hash__``
    raises :class:`TypeError`; a class decorator that adds ``__eq__``
    afterwards (``@dataclass``) is not caught, so do not use one.
    """

    __slots__ = ("_wheel_deadline", "_wheel_payload", "_wheel_slot", "_wheel_span", "touched_at")

    _wheel_deadline: int
    _wheel_payload: P | Literal[_Payload.ITSELF]
    _wheel_slot: int
    _wheel_span: float
    touched_at: float
    """When the timer was last touched, in the wheel's seconds.

    For an idle timer (see :meth:`HashedWheel.idle`), writing a later time
    here pushes its deadline back to ``touched_at + span``; the wheel reads
    it only when it reaches the timer's bucket.  Only ever write the current
    time: writing an earlier one than the timer's bucket was chosen from
    does not make it fire sooner.  A fixed timer ignores it, so the owner can
    keep its "last heard from" time here whatever state it is in.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse subclasses the wheel's buckets would mishandle (see the class docstring)."""
        super().__init_subclass__(**kwargs)
        if cls.__eq__ is not object.__eq__ or cls.__hash__ is not object.__hash__:
            raise TypeError(f"{cls.__qualname__} must keep identity __eq__ and __hash__ to be a WheelTimer")
        for klass in cls.__mro__[: cls.__mro__.index(WheelTimer)]:
            clash = _RESERVED.intersection(klass.__dict__)
            if clash:
                raise TypeError(f"{cls.__qualname__} redefines {', '.join(sorted(clash))}, which WheelTimer uses")

    def __init__(self, payload: P) -> None:
        """Create an inactive timer; :meth:`HashedWheel.reset` activates it.

        An intrusive timer passes itself: ``WheelTimer.__init__(self, self)``.
        """
        self._wheel_payload = _ITSELF if payload is self else payload
        self._wheel_deadline = 0
        self._wheel_slot = _INACTIVE
        self._wheel_span = _FIXED
        self.touched_at = 0.0

    @property
    def payload(self) -> P:
        """What :meth:`HashedWheel.advance` returns when the timer expires (may be replaced)."""
        payload = self._wheel_payload
        if payload is _ITSELF:
            return cast(P, self)
        return payload

    @payload.setter
    def payload(self, payload: P) -> None:
        self._wheel_payload = _ITSELF if payload is self else payload

    @property
    def active(self) -> bool:
        """Whether the timer is scheduled (not yet expired, not cancelled)."""
        return self._wheel_slot != _INACTIVE

    @property
    def idle(self) -> bool:
        """Whether touches push the deadline back (armed by :meth:`HashedWheel.idle`)."""
        return self._wheel_span >= 0.0

    @property
    def deadline(self) -> int:
        """The tick number of the bucket the timer waits in (or was last due at).

        For an idle timer touched since it was armed, the real deadline is
        later: the wheel works it out from ``touched_at`` when it gets there.
        Multiply by the wheel's ``tick`` to get seconds.
        """
        return self._wheel_deadline

    def __repr__(self) -> str:
        state = f"due at tick {self._wheel_deadline}" if self.active else "inactive"
        if self._wheel_payload is _ITSELF:
            return f"<{type(self).__qualname__} at {id(self):#x}, timer {state}>"
        return f"<{type(self).__qualname__} {state} payload={self.payload!r}>"


_RESERVED = frozenset(
    {
        "payload",
        "active",
        "idle",
        "deadline",
        "touched_at",
        "_wheel_deadline",
        "_wheel_payload",
        "_wheel_slot",
        "_wheel_span",
    }
)
"""Names of :class:`WheelTimer` that a subclass must leave alone."""


class HashedWheel(Generic[P]):
    """A ring of ``slots`` buckets, each covering one ``tick`` of time.

    ``schedule``, ``reset`` and ``cancel`` are ``O(1)``.  ``advance`` visits
    at most ``min(elapsed ticks, slots)`` buckets and touches each timer in
    them once, so a call after a long pause (a suspended process, a stalled
    event loop) costs one revolution, not one bucket per elapsed tick.
    Buckets are rebuilt when visited, so a burst of timers leaves no
    oversized set behind for longer than one revolution.

    Choose ``tick`` as the timing precision you can tolerate (timers fire up
    to one tick late) and ``slots * tick`` at least as long as the usual
    timeout, so that a timer is normally looked at once, at its deadline.
    Longer timeouts still work; they are looked at once per revolution.
    """

    __slots__ = (
        "_buckets",
        "_current",
        "_last_deadline",
        "_last_high",
        "_last_low",
        "_live",
        "_slots",
        "_tick",
    )

    def __init__(self, tick: float, slots: int, now: float) -> None:
        """Create an empty wheel whose clock starts at ``now``.

        :raises ValueError: if ``tick`` is not a positive finite number or
            ``slots`` is smaller than 1.
        """
        if not 0 < tick < inf:
            raise ValueError(f"tick must be a positive number of seconds, not {tick!r}")
        if slots < 1:
            raise ValueError(f"slots must be at least 1, not {slots!r}")
        self._tick = float(tick)
        self._slots = int(slots)
        self._current = floor(now / self._tick + _EPSILON)
        self._buckets: list[set[WheelTimer[P]]] = [set() for _ in range(self._slots)]
        self._live = 0
        self._share(self._current + 1)

    @property
    def tick(self) -> float:
        """Length of one tick, in seconds: the timing precision."""
        return self._tick

    @property
    def slots(self) -> int:
        """Number of buckets in the ring."""
        return self._slots

    def __len__(self) -> int:
        """Number of active timers: scheduled and neither expired nor cancelled."""
        return self._live

    def schedule(self, payload: P, delay: float, now: float) -> WheelTimer[P]:
        """Arm a new timer that expires ``delay`` seconds after ``now``.

        The timer is due at the first tick boundary at or after ``now +
        delay`` (see the module docstring for zero and negative delays).
        """
        when = now + delay
        deadline = self._last_deadline if self._last_low < when <= self._last_high else self._deadline_of(when)
        timer: WheelTimer[P] = _new_timer(WheelTimer)
        timer._wheel_payload = payload
        timer._wheel_deadline = deadline
        timer._wheel_span = _FIXED
        timer.touched_at = now
        slot = timer._wheel_slot = deadline % self._slots
        self._buckets[slot].add(timer)
        self._live += 1
        return timer

    def reset(self, timer: WheelTimer[P], delay: float, now: float) -> None:
        """Make ``timer`` a fixed timer due ``delay`` seconds after ``now``, whatever its state.

        Moving a deadline later only rewrites it; the bucket move happens, at
        most once per revolution, when :meth:`advance` finds the timer not yet
        due.  Moving it earlier moves the timer to its new bucket straight
        away, because the bucket it sits in might only be visited after the
        new deadline.

        An inactive timer (expired, cancelled, or never armed: one made with
        ``WheelTimer(payload)`` or an intrusive timer just initialised) is
        scheduled, so a connection can keep a single timer for its whole life,
        and an intrusive timer needs no other call to be armed.
        """
        when = now + delay
        deadline = self._last_deadline if self._last_low < when <= self._last_high else self._deadline_of(when)
        slot = timer._wheel_slot
        if slot < 0:
            slot = timer._wheel_slot = deadline % self._slots
            self._buckets[slot].add(timer)
            self._live += 1
        elif deadline < timer._wheel_deadline:
            self._buckets[slot].discard(timer)
            slot = timer._wheel_slot = deadline % self._slots
            self._buckets[slot].add(timer)
        timer._wheel_deadline = deadline
        timer._wheel_span = _FIXED

    def idle(self, timer: WheelTimer[P], span: float, touched_at: float) -> None:
        """Make ``timer`` an idle timer, due ``span`` seconds after its last touch, whatever its state.

        ``touched_at`` is the last touch so far (usually now).  From then on
        the owner touches the timer by writing the time to
        ``timer.touched_at``, which costs nothing here: :meth:`advance` reads
        it when it reaches the timer's bucket and, if the deadline has moved,
        puts the timer in the bucket of the new one (at most once per
        revolution).  Touching an inactive timer does not re-arm it; a later
        :meth:`reset` makes the timer fixed again, a later :meth:`idle` gives
        it a new span.

        :raises ValueError: if ``span`` is negative or not a number.
        """
        if not span >= 0.0:
            raise ValueError(f"span must be a non-negative number of seconds, not {span!r}")
        self.reset(timer, span, touched_at)
        timer._wheel_span = span
        timer.touched_at = touched_at

    def _deadline_of(self, when: float) -> int:
        """The deadline tick of a timer due at time ``when``, the slow way.

        ``schedule`` and ``reset`` first check whether ``when`` falls in the
        span of times whose deadline is the *shared* one (see :meth:`_share`),
        which costs two float comparisons; this is the fallback.  The result
        becomes the shared deadline when it is later than the current one,
        which happens about once per tick as the clock moves on.
        """
        deadline = ceil(when / self._tick - _EPSILON)
        if deadline <= self._current:
            deadline = self._current + 1
        last = self._last_deadline
        if deadline == last:
            return last
        if deadline > last:
            self._share(deadline)
        return deadline

    def _share(self, deadline: int) -> None:
        """Make ``deadline`` the shared deadline tick and record its span of times.

        Timers armed during the same tick with the same delay get equal
        deadlines; giving them all the same ``int`` object saves an object
        per timer and, above all, means that overwriting a deadline touches
        an ``int`` that is hot in the CPU cache rather than one allocated when
        the timer was last armed, which would be a cache miss per reset with
        a million timers.  Recording the span ``(low, high]`` of times whose
        deadline is ``deadline`` lets the hot path skip the division.  The
        span is computed from the very formula :meth:`_deadline_of` uses, so
        both paths agree to the last bit.

        The shared deadline is always after the last processed tick
        (:meth:`advance` moves it on), so a hit needs no clamping; when it
        is the next tick, every earlier time clamps to it, so its span has no
        lower bound.
        """
        self._last_deadline = deadline
        self._last_high = self._latest_time_due_by(deadline)
        if deadline == self._current + 1:
            self._last_low = -inf
        else:
            self._last_low = self._latest_time_due_by(deadline - 1)

    def _latest_time_due_by(self, deadline: int) -> float:
        """The largest float time whose (unclamped) deadline tick is at most ``deadline``.

        The deadline formula is monotonic in the time, so this walks a few
        ulps from the estimate to the exact edge.  NaN (no time compares
        within it, so the hot path is never taken) if the edge is not finite.
        """
        tick = self._tick
        edge = (deadline + _EPSILON) * tick
        if not isfinite(edge):
            return nan
        while ceil(edge / tick - _EPSILON) > deadline:
            edge = nextafter(edge, -inf)
        while ceil((above := nextafter(edge, inf)) / tick - _EPSILON) <= deadline:
            edge = above
        return edge

    def cancel(self, timer: WheelTimer[P]) -> None:
        """Stop ``timer`` from expiring.

        Cancelling an inactive timer (already cancelled or already expired)
        does nothing, so callers need not track whether the timer has fired.
        """
        slot = timer._wheel_slot
        if slot >= 0:
            self._buckets[slot].discard(timer)
            timer._wheel_slot = _INACTIVE
            self._live -= 1

    def advance(self, now: float) -> list[P]:
        """Move the wheel's clock to ``now`` and return the payloads that expired.

        Every tick boundary between the previous call and ``now`` is
        processed, so each due timer is returned exactly once, in deadline
        order (ties in no particular order).  Expired timers become inactive.

        If more than ``slots`` ticks have elapsed, each bucket is visited once
        and everything due by ``now`` expires; the result is then sorted so
        that the deadline order still holds.

        A ``now`` that does not reach the next tick boundary, including one
        earlier than a previous call, changes nothing and returns ``[]``: the
        wheel's clock never goes backwards.
        """
        target = floor(now / self._tick + _EPSILON)
        current = self._current
        if target <= current:
            return []
        n_slots = self._slots
        tick_length = self._tick
        buckets = self._buckets
        jumped = target - current > n_slots
        first = target - n_slots + 1 if jumped else current + 1
        expired: list[WheelTimer[P]] = []
        for tick in range(first, target + 1):
            index = tick % n_slots
            bucket = buckets[index]
            if not bucket:
                continue
            buckets[index] = set()
            for timer in bucket:
                deadline = timer._wheel_deadline
                if deadline <= tick:
                    span = timer._wheel_span
                    if span >= 0.0:
                        # An idle timer: its deadline counts from its last touch.
                        due = ceil((timer.touched_at + span) / tick_length - _EPSILON)
                        if due > deadline:
                            timer._wheel_deadline = due
                            if due > tick:
                                slot = due % n_slots
                                timer._wheel_slot = slot
                                buckets[slot].add(timer)
                                continue
                    timer._wheel_slot = _INACTIVE
                    expired.append(timer)
                else:
                    slot = deadline % n_slots
                    timer._wheel_slot = slot
                    buckets[slot].add(timer)
        self._current = target
        if self._last_deadline <= target + 1:
            self._share(target + 1)
        self._live -= len(expired)
        if jumped:
            expired.sort(key=_by_deadline)
        itself = _ITSELF
        # An intrusive timer is its own payload; cast once, not per timer.
        return cast(
            "list[P]",
            [timer if (payload := timer._wheel_payload) is itself else payload for timer in expired],
        )
