"""Tests for gochat.wheel: the hashed timing wheel behind per-connection timeouts.

Time is plain numbers throughout: the wheel reads no clock, so no reactor,
``Clock`` or sleep is needed.
"""

from __future__ import annotations

import gc
import random
import weakref
from math import ceil, floor, nextafter
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from gochat.wheel import HashedWheel, WheelTimer

EPSILON = 1e-9


class Owner(WheelTimer["Owner"]):
    """An intrusive timer: the object that owns the deadline is the timer."""

    __slots__ = ("frames", "key")

    def __init__(self, key: int) -> None:
        super().__init__(self)
        self.key = key
        self.frames = 0


class DictOwner(WheelTimer["DictOwner"]):
    """An intrusive timer whose subclass has a ``__dict__`` (no ``__slots__``)."""

    def __init__(self, name: str) -> None:
        WheelTimer.__init__(self, self)
        self.name = name


def due_tick(when: float, tick: float, current: int) -> int:
    """The specified deadline tick: round up with tolerance, never at or before ``current``."""
    return max(ceil(when / tick - EPSILON), current + 1)


class ConstructorTests(SynchronousTestCase):
    def test_rejects_non_positive_tick(self) -> None:
        for tick in (0.0, -1.0, float("nan"), float("inf")):
            with self.subTest(tick=tick):
                self.assertRaises(ValueError, HashedWheel, tick, 8, 0.0)

    def test_rejects_fewer_than_one_slot(self) -> None:
        for slots in (0, -4):
            with self.subTest(slots=slots):
                self.assertRaises(ValueError, HashedWheel, 1.0, slots, 0.0)

    def test_properties(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(0.5, 16, 100.0)
        self.assertEqual(wheel.tick, 0.5)
        self.assertEqual(wheel.slots, 16)
        self.assertEqual(len(wheel), 0)
        self.assertEqual(wheel.advance(1000.0), [])

    def test_single_slot(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 1, 0.0)
        wheel.schedule("late", 3.0, 0.0)
        wheel.schedule("early", 1.0, 0.0)
        self.assertEqual(wheel.advance(1.0), ["early"])
        self.assertEqual(wheel.advance(2.0), [])
        self.assertEqual(wheel.advance(3.0), ["late"])


class ExpiryTests(SynchronousTestCase):
    def test_expires_at_the_boundary_not_before(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        timer = wheel.schedule("a", 5.0, 0.0)
        self.assertEqual(wheel.advance(4.999), [])
        self.assertTrue(timer.active)
        self.assertEqual(wheel.advance(5.0), ["a"])
        self.assertFalse(timer.active)
        self.assertEqual(wheel.advance(6.0), [])

    def test_fractional_deadline_rounds_up_to_the_next_boundary(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        wheel.schedule("a", 1.25, 0.3)
        self.assertEqual(wheel.advance(1.55), [])
        self.assertEqual(wheel.advance(1.99), [])
        self.assertEqual(wheel.advance(2.0), ["a"])

    def test_float_noise_does_not_make_it_late_or_early(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(0.1, 8, 0.0)
        wheel.schedule("a", 0.3, 0.0)
        wheel.schedule("b", 0.6, 0.3)
        self.assertEqual(wheel.advance(0.29), [])
        self.assertEqual(wheel.advance(0.3), ["a"])
        self.assertEqual(wheel.advance(0.89), [])
        self.assertEqual(wheel.advance(0.9), ["b"])

    def test_never_early_and_at_most_one_tick_late(self) -> None:
        rng = random.Random(7)
        tick = 0.25
        step = tick / 8
        wheel: HashedWheel[int] = HashedWheel(tick, 16, 0.0)
        wanted = {}
        for payload in range(300):
            delay = rng.uniform(0.0, 12.0)
            wheel.schedule(payload, delay, 0.0)
            wanted[payload] = delay
        fired_at = {}
        for i in range(1, 16 * 8 * 8):
            now = i * step
            for payload in wheel.advance(now):
                fired_at[payload] = now
        self.assertEqual(set(fired_at), set(wanted))
        for payload, when in wanted.items():
            self.assertGreaterEqual(fired_at[payload], when - 1e-9)
            self.assertLess(fired_at[payload], when + tick + step)

    def test_returns_each_tick_in_deadline_order(self) -> None:
        wheel: HashedWheel[int] = HashedWheel(1.0, 16, 0.0)
        for delay in (7, 3, 5, 1, 6, 2, 4):
            wheel.schedule(delay, float(delay), 0.0)
        self.assertEqual(wheel.advance(10.0), [1, 2, 3, 4, 5, 6, 7])

    def test_len_counts_live_timers(self) -> None:
        wheel: HashedWheel[int] = HashedWheel(1.0, 8, 0.0)
        timers = [wheel.schedule(i, float(i + 1), 0.0) for i in range(5)]
        self.assertEqual(len(wheel), 5)
        wheel.cancel(timers[4])
        self.assertEqual(len(wheel), 4)
        self.assertEqual(wheel.advance(2.0), [0, 1])
        self.assertEqual(len(wheel), 2)
        wheel.reset(timers[0], 2.5, 2.0)
        self.assertEqual(len(wheel), 3)
        self.assertEqual(wheel.advance(10.0), [2, 3, 0])
        self.assertEqual(len(wheel), 0)

    def test_deadline_property_is_the_tick(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(0.5, 8, 10.0)
        timer = wheel.schedule("a", 1.2, 10.0)
        self.assertEqual(timer.deadline, 23)
        self.assertIn("23", repr(timer))


class ResetTests(SynchronousTestCase):
    def test_reset_pushes_expiry_out(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        timer = wheel.schedule("a", 5.0, 0.0)
        self.assertEqual(wheel.advance(3.0), [])
        wheel.reset(timer, 5.0, 3.0)
        self.assertEqual(wheel.advance(7.0), [])
        self.assertEqual(wheel.advance(8.0), ["a"])

    def test_many_resets_keep_it_alive(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        timer = wheel.schedule("a", 5.0, 0.0)
        now = 0.0
        for _ in range(1000):
            now += 0.7
            wheel.reset(timer, 5.0, now)
            wheel.reset(timer, 5.0, now)
            self.assertEqual(wheel.advance(now), [])
        self.assertEqual(len(wheel), 1)
        self.assertEqual(wheel.advance(now + 4.9), [])
        self.assertEqual(wheel.advance(now + 5.0), ["a"])

    def test_reset_earlier_expires_earlier(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        timer = wheel.schedule("a", 50.0, 0.0)
        self.assertEqual(wheel.advance(10.0), [])
        wheel.reset(timer, 3.0, 10.0)
        self.assertEqual(wheel.advance(12.0), [])
        self.assertEqual(wheel.advance(13.0), ["a"])
        self.assertEqual(wheel.advance(100.0), [])

    def test_reset_earlier_then_later_again(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        timer = wheel.schedule("a", 6.0, 0.0)
        wheel.reset(timer, 2.0, 0.0)
        wheel.reset(timer, 4.0, 0.0)
        self.assertEqual(wheel.advance(3.0), [])
        self.assertEqual(wheel.advance(4.0), ["a"])
        self.assertEqual(wheel.advance(7.0), [])

    def test_reset_after_expiry_reschedules(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        timer = wheel.schedule("a", 1.0, 0.0)
        self.assertEqual(wheel.advance(1.0), ["a"])
        wheel.reset(timer, 2.0, 1.0)
        self.assertTrue(timer.active)
        self.assertEqual(len(wheel), 1)
        self.assertEqual(wheel.advance(2.0), [])
        self.assertEqual(wheel.advance(3.0), ["a"])

    def test_reset_after_cancel_reschedules(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        timer = wheel.schedule("a", 2.0, 0.0)
        wheel.cancel(timer)
        wheel.reset(timer, 4.0, 0.0)
        self.assertEqual(len(wheel), 1)
        self.assertEqual(wheel.advance(3.0), [])
        self.assertEqual(wheel.advance(4.0), ["a"])

    def test_reset_activates_a_timer_made_directly(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        timer = WheelTimer("a")
        self.assertFalse(timer.active)
        self.assertIn("inactive", repr(timer))
        wheel.reset(timer, 2.0, 0.0)
        self.assertEqual(wheel.advance(2.0), ["a"])

    def test_interleaved_delays_keep_their_own_deadlines(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 128, 0.0)
        short = wheel.schedule("short", 8.0, 0.0)
        long = wheel.schedule("long", 60.0, 0.0)
        for now in (0.5, 1.5, 2.5):
            wheel.reset(long, 60.0, now)
            wheel.reset(short, 8.0, now)
            wheel.reset(long, 60.0, now)
        self.assertEqual((short.deadline, long.deadline), (11, 63))
        self.assertEqual(wheel.advance(10.9), [])
        self.assertEqual(wheel.advance(11.0), ["short"])
        self.assertEqual(wheel.advance(63.0), ["long"])


class IdleTests(SynchronousTestCase):
    """Idle timers: due ``span`` after the last write to ``touched_at``."""

    def test_touches_push_the_deadline_back(self) -> None:
        wheel: HashedWheel[Owner] = HashedWheel(1.0, 8, 0.0)
        owner = Owner(1)
        wheel.idle(owner, 5.0, 0.0)
        for now in (3.0, 6.0, 9.0):
            owner.touched_at = now
            self.assertEqual(wheel.advance(now), [])
        self.assertEqual(wheel.advance(13.0), [])
        self.assertEqual(wheel.advance(14.0), [owner])
        self.assertFalse(owner.active)

    def test_untouched_it_expires_at_its_span(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        timer = WheelTimer("a")
        wheel.idle(timer, 2.5, 0.0)
        self.assertEqual(wheel.advance(2.9), [])
        self.assertEqual(wheel.advance(3.0), ["a"])

    def test_touched_beyond_the_ring(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 4, 0.0)
        timer = WheelTimer("a")
        wheel.idle(timer, 3.0, 0.0)
        timer.touched_at = 2.0
        self.assertEqual(wheel.advance(4.0), [])
        timer.touched_at = 4.0
        self.assertEqual([wheel.advance(float(t)) for t in range(5, 8)], [[], [], ["a"]])

    def test_touching_an_expired_timer_does_not_rearm_it(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        timer = WheelTimer("a")
        wheel.idle(timer, 1.0, 0.0)
        self.assertEqual(wheel.advance(1.0), ["a"])
        timer.touched_at = 1.5
        self.assertEqual(len(wheel), 0)
        self.assertEqual(wheel.advance(10.0), [])

    def test_reset_makes_it_fixed_again(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        timer = WheelTimer("a")
        wheel.idle(timer, 2.0, 0.0)
        self.assertTrue(timer.idle)
        wheel.reset(timer, 3.0, 0.0)
        self.assertFalse(timer.idle)
        timer.touched_at = 2.5
        self.assertEqual(wheel.advance(3.0), ["a"])

    def test_idle_can_pull_the_deadline_in(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        timer = wheel.schedule("a", 7.0, 0.0)
        wheel.idle(timer, 2.0, 0.0)
        self.assertEqual(wheel.advance(2.0), ["a"])

    def test_a_far_jump_orders_touched_timers_by_their_real_deadline(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 4, 0.0)
        late, early = WheelTimer("late"), WheelTimer("early")
        wheel.idle(late, 1.0, 0.0)
        wheel.idle(early, 2.0, 0.0)
        late.touched_at = 2.5
        self.assertEqual(wheel.advance(40.0), ["early", "late"])

    def test_rejects_a_negative_or_nan_span(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        timer = WheelTimer("a")
        self.assertRaises(ValueError, wheel.idle, timer, -1.0, 0.0)
        self.assertRaises(ValueError, wheel.idle, timer, float("nan"), 0.0)
        self.assertFalse(timer.active)

    def test_touched_at_is_reserved(self) -> None:
        with self.assertRaises(TypeError):

            class Clash(WheelTimer["Clash"]):
                touched_at = 0.0


class CancelTests(SynchronousTestCase):
    def test_cancel_prevents_expiry(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        timer = wheel.schedule("a", 2.0, 0.0)
        other = wheel.schedule("b", 2.0, 0.0)
        wheel.cancel(timer)
        self.assertFalse(timer.active)
        self.assertTrue(other.active)
        self.assertEqual(wheel.advance(10.0), ["b"])

    def test_cancel_is_idempotent(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        timer = wheel.schedule("a", 2.0, 0.0)
        wheel.schedule("b", 2.0, 0.0)
        wheel.cancel(timer)
        wheel.cancel(timer)
        self.assertEqual(len(wheel), 1)

    def test_cancel_after_expiry_is_harmless(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        timer = wheel.schedule("a", 1.0, 0.0)
        wheel.schedule("b", 5.0, 0.0)
        self.assertEqual(wheel.advance(1.0), ["a"])
        wheel.cancel(timer)
        self.assertEqual(len(wheel), 1)
        self.assertEqual(wheel.advance(5.0), ["b"])

    def test_cancel_after_lazy_reset(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        timer = wheel.schedule("a", 2.0, 0.0)
        wheel.reset(timer, 20.0, 0.0)
        self.assertEqual(wheel.advance(2.0), [])
        wheel.cancel(timer)
        self.assertEqual(wheel.advance(100.0), [])
        self.assertEqual(len(wheel), 0)


class IntrusiveTests(SynchronousTestCase):
    """An owner object that subclasses WheelTimer is scheduled in place, with no timer object."""

    def test_armed_by_reset_and_expires_as_itself(self) -> None:
        wheel: HashedWheel[Owner] = HashedWheel(1.0, 8, 0.0)
        owner = Owner(1)
        self.assertIs(owner.payload, owner)
        self.assertFalse(owner.active)
        self.assertEqual(len(wheel), 0)
        self.assertIsNone(wheel.reset(owner, 2.0, 0.0))  # type: ignore[func-returns-value]
        self.assertTrue(owner.active)
        self.assertEqual(owner.deadline, 2)
        self.assertEqual(len(wheel), 1)
        self.assertEqual(wheel.advance(1.0), [])
        got = wheel.advance(2.0)
        self.assertEqual(len(got), 1)
        self.assertIs(got[0], owner)
        self.assertFalse(owner.active)
        self.assertEqual(len(wheel), 0)
        self.assertEqual(owner.key, 1)

    def test_reset_pushes_out_and_pulls_in(self) -> None:
        wheel: HashedWheel[Owner] = HashedWheel(1.0, 8, 0.0)
        owner = Owner(1)
        wheel.reset(owner, 5.0, 0.0)
        for now in (1.0, 2.0, 3.0, 4.0):
            owner.frames += 1
            wheel.reset(owner, 5.0, now)
            self.assertEqual(wheel.advance(now), [])
        self.assertEqual(owner.deadline, 9)
        wheel.reset(owner, 1.0, 4.0)
        self.assertEqual(owner.deadline, 5)
        self.assertEqual(len(wheel), 1)
        self.assertEqual(wheel.advance(5.0), [owner])
        self.assertEqual(wheel.advance(20.0), [])
        self.assertEqual(owner.frames, 4)

    def test_cancel_then_rearm(self) -> None:
        wheel: HashedWheel[Owner] = HashedWheel(1.0, 8, 0.0)
        owner, other = Owner(1), Owner(2)
        wheel.reset(owner, 3.0, 0.0)
        wheel.reset(other, 3.0, 0.0)
        wheel.cancel(owner)
        wheel.cancel(owner)
        self.assertFalse(owner.active)
        self.assertEqual(len(wheel), 1)
        self.assertEqual(wheel.advance(3.0), [other])
        wheel.cancel(other)
        self.assertEqual(len(wheel), 0)
        wheel.reset(owner, 2.0, 3.0)
        self.assertEqual(wheel.advance(5.0), [owner])

    def test_rearmed_after_expiry(self) -> None:
        wheel: HashedWheel[Owner] = HashedWheel(0.5, 4, 0.0)
        owner = Owner(1)
        wheel.reset(owner, 1.0, 0.0)
        for round_ in range(1, 6):
            self.assertEqual(wheel.advance(round_ * 1.0), [owner])
            wheel.reset(owner, 1.0, round_ * 1.0)
        self.assertEqual(len(wheel), 1)

    def test_subclass_with_a_dict(self) -> None:
        wheel: HashedWheel[DictOwner] = HashedWheel(1.0, 8, 0.0)
        owner = DictOwner("d")
        owner.extra = "anything"  # type: ignore[attr-defined]
        wheel.reset(owner, 30.0, 0.0)
        self.assertEqual(wheel.advance(29.0), [])
        self.assertEqual(wheel.advance(30.0), [owner])
        self.assertEqual(vars(owner), {"name": "d", "extra": "anything"})

    def test_payload_can_be_replaced_and_restored(self) -> None:
        wheel: HashedWheel[Owner] = HashedWheel(1.0, 8, 0.0)
        owner, stand_in = Owner(1), Owner(2)
        wheel.reset(owner, 1.0, 0.0)
        owner.payload = stand_in
        self.assertIs(owner.payload, stand_in)
        self.assertEqual(wheel.advance(1.0), [stand_in])
        owner.payload = owner
        self.assertIs(owner.payload, owner)
        wheel.reset(owner, 1.0, 1.0)
        self.assertEqual(wheel.advance(2.0), [owner])

    def test_no_reference_cycle(self) -> None:
        """Being a timer adds no cycle: a dropped owner goes by reference counting.

        The wheel keeps an armed owner alive, as it keeps a scheduled timer.
        """
        wheel: HashedWheel[DictOwner] = HashedWheel(1.0, 8, 0.0)
        owner = DictOwner("d")
        self.assertNotIn(owner, gc.get_referents(owner))
        wheel.reset(owner, 5.0, 0.0)
        ref = weakref.ref(owner)
        collecting = gc.isenabled()
        gc.disable()
        try:
            del owner
            self.assertIsNotNone(ref())
            armed = ref()
            assert armed is not None
            wheel.cancel(armed)
            del armed
            self.assertIsNone(ref())
        finally:
            if collecting:
                gc.enable()

    def test_the_slotted_owner_has_no_dict(self) -> None:
        self.assertFalse(hasattr(Owner(1), "__dict__"))

    def test_far_jump_sorts_owners_by_deadline(self) -> None:
        wheel: HashedWheel[Owner] = HashedWheel(1.0, 4, 0.0)
        owners = [Owner(key) for key in range(20)]
        for owner in reversed(owners):
            wheel.reset(owner, float(owner.key + 1), 0.0)
        self.assertEqual(wheel.advance(100.0), owners)

    def test_repr_does_not_recurse(self) -> None:
        wheel: HashedWheel[Owner] = HashedWheel(1.0, 8, 0.0)
        owner = Owner(1)
        self.assertIn("Owner", repr(owner))
        self.assertIn("inactive", repr(owner))
        wheel.reset(owner, 3.0, 0.0)
        self.assertIn("due at tick 3", repr(owner))

    def test_refuses_value_equality(self) -> None:
        with self.assertRaises(TypeError):

            class Equal(WheelTimer["Equal"]):
                def __eq__(self, other: object) -> bool:
                    return True

                __hash__ = object.__hash__

        with self.assertRaises(TypeError):

            class Hashed(WheelTimer["Hashed"]):
                def __hash__(self) -> int:
                    return 0

    def test_refuses_reserved_names(self) -> None:
        for name in ("payload", "active", "deadline", "_wheel_deadline", "_wheel_payload", "_wheel_slot"):
            with self.subTest(name=name), self.assertRaises(TypeError):
                type("Clash", (WheelTimer,), {"__slots__": (), name: None})
        with self.assertRaises(TypeError):

            class SlotClash(WheelTimer["SlotClash"]):
                __slots__ = ("payload",)


class MultiRoundTests(SynchronousTestCase):
    def test_delay_longer_than_the_ring(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        wheel.schedule("a", 30.0, 0.0)
        for now in range(1, 30):
            self.assertEqual(wheel.advance(float(now)), [], now)
        self.assertEqual(wheel.advance(30.0), ["a"])

    def test_reset_across_rounds(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 4, 0.0)
        timer = wheel.schedule("a", 3.0, 0.0)
        for now in range(1, 21):
            wheel.reset(timer, 9.0, float(now))
            self.assertEqual(wheel.advance(float(now)), [], now)
        for now in range(21, 29):
            self.assertEqual(wheel.advance(float(now)), [], now)
        self.assertEqual(wheel.advance(29.0), ["a"])

    def test_many_rounds_mixed(self) -> None:
        wheel: HashedWheel[int] = HashedWheel(1.0, 5, 0.0)
        for delay in range(1, 40):
            wheel.schedule(delay, float(delay), 0.0)
        fired = []
        for now in range(1, 45):
            got = wheel.advance(float(now))
            self.assertEqual(got, [now] if now < 40 else [])
            fired.extend(got)
        self.assertEqual(fired, list(range(1, 40)))


class TimeJumpTests(SynchronousTestCase):
    def test_far_jump_expires_everything_due_exactly_once(self) -> None:
        wheel: HashedWheel[int] = HashedWheel(1.0, 8, 0.0)
        for delay in range(1, 200):
            wheel.schedule(delay, float(delay), 0.0)
        got = wheel.advance(150.0)
        self.assertEqual(got, list(range(1, 151)))
        self.assertEqual(len(wheel), 49)
        self.assertEqual(wheel.advance(150.5), [])
        rest = []
        for now in range(151, 201):
            got = wheel.advance(float(now))
            self.assertEqual(got, [now] if now < 200 else [])
            rest.extend(got)
        self.assertEqual(rest, list(range(151, 200)))

    def test_jump_with_lazily_reset_timers(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        early = wheel.schedule("early", 2.0, 0.0)
        wheel.reset(early, 30.0, 0.0)
        wheel.schedule("middle", 20.0, 0.0)
        late = wheel.schedule("late", 3.0, 0.0)
        wheel.reset(late, 100.0, 0.0)
        self.assertEqual(wheel.advance(50.0), ["middle", "early"])
        self.assertEqual(wheel.advance(99.0), [])
        self.assertEqual(wheel.advance(100.0), ["late"])

    def test_huge_jump_is_bounded_by_the_ring(self) -> None:
        wheel: HashedWheel[int] = HashedWheel(1.0, 16, 0.0)
        for payload in range(10):
            wheel.schedule(payload, float(payload * 1000), 0.0)
        got = wheel.advance(1e15)
        self.assertEqual(got, list(range(10)))
        wheel.schedule(99, 1.0, 1e15)
        self.assertEqual(wheel.advance(1e15 + 1.0), [99])


class BackwardsTimeTests(SynchronousTestCase):
    def test_backwards_advance_is_a_no_op(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        wheel.schedule("a", 12.0, 0.0)
        self.assertEqual(wheel.advance(10.0), [])
        self.assertEqual(wheel.advance(5.0), [])
        self.assertEqual(wheel.advance(-100.0), [])
        self.assertEqual(wheel.advance(11.0), [])
        self.assertEqual(wheel.advance(12.0), ["a"])

    def test_advance_within_the_same_tick_is_a_no_op(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        wheel.schedule("a", 0.5, 0.0)
        self.assertEqual(wheel.advance(0.5), [])
        self.assertEqual(wheel.advance(0.99), [])
        self.assertEqual(wheel.advance(1.0), ["a"])

    def test_stale_now_is_clamped_to_the_next_tick(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        self.assertEqual(wheel.advance(10.0), [])
        timer = wheel.schedule("a", 2.0, 5.0)
        self.assertEqual(timer.deadline, 11)
        self.assertEqual(wheel.advance(11.0), ["a"])


class ZeroAndNegativeDelayTests(SynchronousTestCase):
    """A delay of zero or less fires at the next tick boundary the wheel processes.

    The deadline is ``now + delay`` rounded up to a boundary; if that
    boundary was already processed, the next one is used instead.
    """

    def test_zero_delay_mid_tick(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        wheel.schedule("a", 0.0, 0.5)
        self.assertEqual(wheel.advance(0.9), [])
        self.assertEqual(wheel.advance(1.0), ["a"])

    def test_zero_delay_on_a_processed_boundary(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        self.assertEqual(wheel.advance(3.0), [])
        wheel.schedule("a", 0.0, 3.0)
        self.assertEqual(wheel.advance(3.0), [])
        self.assertEqual(wheel.advance(3.9), [])
        self.assertEqual(wheel.advance(4.0), ["a"])

    def test_zero_delay_at_construction_time(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        wheel.schedule("a", 0.0, 0.0)
        self.assertEqual(wheel.advance(0.0), [])
        self.assertEqual(wheel.advance(1.0), ["a"])

    def test_negative_delay(self) -> None:
        wheel: HashedWheel[str] = HashedWheel(1.0, 8, 0.0)
        self.assertEqual(wheel.advance(3.5), [])
        wheel.schedule("a", -10.0, 3.5)
        timer = wheel.schedule("b", 5.0, 3.5)
        wheel.reset(timer, -1.0, 3.5)
        self.assertEqual(sorted(wheel.advance(4.0)), ["a", "b"])


class DeadlineArithmeticTests(SynchronousTestCase):
    """The fast and slow ways of computing a deadline agree to the last bit."""

    def test_edges_match_the_formula(self) -> None:
        rng = random.Random(11)
        for tick in (0.1, 0.3, 1 / 3, 1e-3, 1.0, 7.0, 0.25):
            for origin in (0, 10**6, 10**9, 17 * 10**10):
                with self.subTest(tick=tick, origin=origin):
                    self.check_edges(rng, tick, origin)

    def check_edges(self, rng: random.Random, tick: float, origin: int) -> None:
        """Probe times on, just below and just above tick boundaries, twice each.

        The second call with the same time usually takes the hot path that
        the first one prepared.
        """
        now = origin * tick
        wheel: HashedWheel[int] = HashedWheel(tick, 32, now)
        current = floor(now / tick + EPSILON)
        timer = wheel.schedule(0, 1.0, now)
        for _ in range(100):
            base = (current + rng.randrange(1, 50)) * tick
            below, above = nextafter(base, -1.0), nextafter(base, 1e300)
            for when in (base, below, nextafter(below, -1.0), above, nextafter(above, 1e300), base + tick / 2):
                for _ in range(2):
                    wheel.reset(timer, when - now, now)
                    self.assertEqual(timer.deadline, due_tick(now + (when - now), tick, current))
            if rng.random() < 0.2:
                now += rng.randrange(1, 5) * tick
                wheel.advance(now)
                current = max(current, floor(now / tick + EPSILON))

    def test_large_clock_values(self) -> None:
        start = 1.7e9
        wheel: HashedWheel[str] = HashedWheel(0.01, 64, start)
        timer = wheel.schedule("a", 0.05, start)
        self.assertEqual(timer.deadline, due_tick(start + 0.05, 0.01, floor(start / 0.01 + EPSILON)))
        self.assertEqual(wheel.advance(start + 0.04), [])
        self.assertEqual(wheel.advance(start + 0.05), ["a"])


class RandomisedModelTests(SynchronousTestCase):
    """Random operations checked against a dict of deadline ticks.

    Each run mixes schedules, resets (of live, expired and cancelled timers),
    cancels and advances: small steps, steps onto exact boundaries, jumps of
    several revolutions and steps back in time, with delays that are
    negative, zero, whole ticks or arbitrary, sometimes from a stale ``now``.
    """

    def check(
        self,
        seed: int,
        tick: float,
        slots: int,
        operations: int = 3000,
        intrusive: float = 0.0,
        idle: float = 0.0,
    ) -> None:
        run = _ModelRun(self, random.Random(seed), tick, slots, intrusive, idle)
        for op in range(operations):
            run.step(f"seed {seed} op {op}")
        run.check_timers()

    def test_one_second_ticks(self) -> None:
        self.check(seed=1, tick=1.0, slots=16)

    def test_tenth_of_a_second_ticks(self) -> None:
        self.check(seed=2, tick=0.1, slots=64)

    def test_awkward_tick(self) -> None:
        self.check(seed=3, tick=1 / 3, slots=7)

    def test_single_slot(self) -> None:
        self.check(seed=4, tick=0.5, slots=1)

    def test_more_seeds(self) -> None:
        for seed in range(5, 10):
            self.check(seed=seed, tick=0.25, slots=8, operations=1500)

    def test_intrusive_timers(self) -> None:
        self.check(seed=21, tick=1.0, slots=16, intrusive=1.0)
        self.check(seed=22, tick=0.1, slots=64, intrusive=1.0)
        self.check(seed=23, tick=1 / 3, slots=7, intrusive=1.0)
        self.check(seed=24, tick=0.5, slots=1, intrusive=1.0)

    def test_intrusive_and_separate_timers_on_one_wheel(self) -> None:
        for seed in range(25, 30):
            self.check(seed=seed, tick=0.25, slots=8, operations=1500, intrusive=0.5)

    def test_idle_timers(self) -> None:
        self.check(seed=31, tick=1.0, slots=16, idle=1.0)
        self.check(seed=32, tick=0.1, slots=64, intrusive=1.0, idle=1.0)
        self.check(seed=33, tick=1 / 3, slots=7, intrusive=0.5, idle=1.0)
        self.check(seed=34, tick=0.5, slots=1, idle=1.0)

    def test_idle_and_fixed_timers_on_one_wheel(self) -> None:
        for seed in range(35, 40):
            self.check(seed=seed, tick=0.25, slots=8, operations=1500, intrusive=0.5, idle=0.5)


class _ModelRun:
    """A wheel and its reference model, driven by one random generator.

    Timers are keyed by an ``int``.  A new timer is intrusive (an
    :class:`Owner`, armed with ``reset``, whose payload is itself) with
    probability ``intrusive``, else made by ``schedule`` with its key as the
    payload; the wheel's payloads are mapped back to keys to compare.  With
    probability ``idle`` a new timer is then (and a re-armed one instead)
    made idle by ``idle``, and idle timers are touched at random: the model
    expects one due at the later of the tick it was armed for and the tick
    its last touch plus its span gives.
    """

    def __init__(
        self,
        case: SynchronousTestCase,
        rng: random.Random,
        tick: float,
        slots: int,
        intrusive: float = 0.0,
        idle: float = 0.0,
    ) -> None:
        self.case = case
        self.rng = rng
        self.tick = tick
        self.slots = slots
        self.intrusive = intrusive
        self.idle = idle
        self.armed: dict[int, int] = {}
        self.idle_spans: dict[int, float] = {}
        self.span = 3 * slots * tick
        self.now = rng.uniform(0.0, 100.0)
        self.wheel: HashedWheel[Any] = HashedWheel(tick, slots, self.now)
        self.current = floor(self.now / tick + EPSILON)
        self.timers: dict[int, WheelTimer[Any]] = {}
        self.model: dict[int, int] = {}

    @staticmethod
    def key(payload: int | Owner) -> int:
        return payload.key if isinstance(payload, Owner) else payload

    def delay(self) -> float:
        roll = self.rng.random()
        if roll < 0.05:
            return -self.rng.uniform(0.0, self.span)
        if roll < 0.10:
            return 0.0
        if roll < 0.25:
            return self.rng.randrange(0, 3 * self.slots) * self.tick
        return self.rng.uniform(0.0, self.span)

    def when(self) -> float:
        if self.rng.random() < 0.1:
            return self.now - self.rng.uniform(0.0, 3 * self.tick)
        return self.now

    def step(self, where: str) -> None:
        roll = self.rng.random()
        if roll < 0.25 or not self.timers:
            payload = len(self.timers)
            at, delay = self.when(), self.delay()
            if self.rng.random() < self.intrusive:
                timer: WheelTimer[Any] = Owner(payload)
                self.wheel.reset(timer, delay, at)
            else:
                timer = self.wheel.schedule(payload, delay, at)
            self.timers[payload] = timer
            self.model[payload] = due_tick(at + delay, self.tick, self.current)
            if self.rng.random() < self.idle:
                self.arm_idle(payload)
        elif roll < 0.55:
            payload = self.rng.choice(list(self.timers))
            if self.rng.random() < self.idle:
                self.arm_idle(payload)
            else:
                at, delay = self.when(), self.delay()
                self.wheel.reset(self.timers[payload], delay, at)
                self.model[payload] = due_tick(at + delay, self.tick, self.current)
                self.idle_spans.pop(payload, None)
        elif roll < 0.7:
            self.touch()
        elif roll < 0.8:
            payload = self.rng.choice(list(self.timers))
            self.wheel.cancel(self.timers[payload])
            self.model.pop(payload, None)
            self.idle_spans.pop(payload, None)
        else:
            self.advance(where)
        self.case.assertEqual(len(self.wheel), len(self.model), where)

    def arm_idle(self, payload: int) -> None:
        """Arm a timer as an idle one, from a last touch that may be stale."""
        at, span = self.when(), abs(self.delay())
        timer = self.timers[payload]
        self.wheel.idle(timer, span, at)
        self.case.assertTrue(timer.idle)
        self.idle_spans[payload] = span
        self.armed[payload] = due_tick(at + span, self.tick, self.current)
        self.model[payload] = self.armed[payload]

    def touch(self) -> None:
        """Touch an idle timer (live or not) at the current time, as its owner would."""
        if not self.idle_spans:
            return
        payload = self.rng.choice(list(self.idle_spans))
        timer = self.timers[payload]
        timer.touched_at = max(timer.touched_at, self.now)
        if payload in self.model:
            due = ceil((timer.touched_at + self.idle_spans[payload]) / self.tick - EPSILON)
            self.model[payload] = max(self.armed[payload], due)

    def advance(self, where: str) -> None:
        roll = self.rng.random()
        if roll < 0.03:
            self.now -= self.rng.uniform(0.0, self.span)
        elif roll < 0.06:
            self.now += self.rng.uniform(self.slots * self.tick, 4 * self.span)
        elif roll < 0.2:
            self.now = (ceil(self.now / self.tick) + self.rng.randrange(0, 3)) * self.tick
        else:
            self.now += self.rng.uniform(0.0, 1.5 * self.tick)
        model = self.model
        target = max(self.current, floor(self.now / self.tick + EPSILON))
        expected = [p for p, d in model.items() if d <= target]
        got = [self.key(p) for p in self.wheel.advance(self.now)]
        self.case.assertEqual(sorted(got), sorted(expected), where)
        deadlines = [model[p] for p in got]
        self.case.assertEqual(deadlines, sorted(deadlines), where)
        for payload in got:
            del model[payload]
            self.idle_spans.pop(payload, None)
        self.current = target

    def check_timers(self) -> None:
        for payload, timer in self.timers.items():
            self.case.assertEqual(timer.active, payload in self.model)
            if payload in self.model and payload not in self.idle_spans:
                self.case.assertEqual(timer.deadline, self.model[payload])
