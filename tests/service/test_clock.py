"""
Tests for L{smartmeter_tx.service.clock}: the wall clock watched against
the service's monotonic one, and a reactor's timers moved onto it.
"""

from __future__ import annotations

import time

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.service.clock import WallClockSteps, sleep_past_cancelled, use_monotonic


class WallClockStepsTests(SynchronousTestCase):
    def test_stepsSeenOnce(self):
        """A step back and one forward are each reported once, with their size; drift is not."""
        mono, wall = [100.0], [1000.0]
        steps = WallClockSteps(lambda: mono[0], lambda: wall[0])
        self.assertIsNone(steps.check())
        mono[0] += 30
        wall[0] += 31  # a second of drift and poll time: no step
        self.assertIsNone(steps.check())
        mono[0] += 30
        wall[0] += 30 - 300
        self.assertEqual(steps.check(), -300)
        mono[0] += 30
        wall[0] += 30
        self.assertIsNone(steps.check())
        mono[0] += 30
        wall[0] += 30 + 7200
        self.assertEqual(steps.check(), 7200)
        self.assertEqual(steps.steps, 2)


class UseMonotonicTests(SynchronousTestCase):
    def test_timersKeepTheirDelays(self):
        """
        A reactor's pending calls keep their delays and order when its
        clock becomes the monotonic one; later calls run on it too.
        """
        mono = [500.0]  # the monotonic clock, held still: no timing of the real one
        self.patch(time, "monotonic", lambda: mono[0])
        reactor = Clock()
        reactor.advance(1_700_000_000.0)  # a wall-clock reactor, as Twisted's are
        first = reactor.callLater(5, lambda: None)
        second = reactor.callLater(10, lambda: None)
        use_monotonic(reactor)
        self.assertIs(reactor.seconds, time.monotonic)
        self.assertEqual((first.getTime(), second.getTime()), (505.0, 510.0))
        mono[0] = 502.0
        third = reactor.callLater(1, lambda: None)
        self.assertEqual(third.getTime(), 503.0)
        use_monotonic(reactor)  # idempotent
        self.assertEqual((first.getTime(), second.getTime()), (505.0, 510.0))


class SleepPastCancelledTests(SynchronousTestCase):
    def reactor(self):
        """Twisted's reactor base, with its timer queue and no I/O (never run)."""
        from twisted.internet.base import ReactorBase

        class Timers(ReactorBase):
            def installWaker(self):
                pass
        return Timers()

    def test_sleepsUntilTheNextLiveCall(self):
        """
        A Twisted reactor, whose cancelled timers would each wake it, sleeps
        until its next live one; the cancelled ones are gone from its queue.
        """
        reactor = self.reactor()
        deadlines = [reactor.callLater(delay, lambda: None) for delay in (3, 10, 11)]
        poll = reactor.callLater(30, lambda: None)
        reactor.timeout()  # an iteration: the calls are queued
        for call in deadlines:  # the answer came
            call.cancel()
        self.assertLess(reactor.timeout(), 4)  # Twisted's own: up for the first cancelled
        sleep_past_cancelled(reactor)
        sleep_past_cancelled(reactor)  # idempotent
        self.assertLess(abs(reactor.timeout() - 30), 1)
        self.assertEqual(reactor.getDelayedCalls(), [poll])
        self.assertEqual(reactor._cancellations, 0)
        poll.cancel()
        self.assertIsNone(reactor.timeout())

    def test_aClockIsLeftAlone(self):
        """A test's clock has no queue to clean and is left as it is."""
        clock = Clock()
        sleep_past_cancelled(clock)
        self.assertFalse(hasattr(clock, "timeout"))
