"""
Tests for L{smartmeter_tx.service.clock}: the wall clock watched against
the service's monotonic one, and a reactor's timers moved onto it.
"""

from __future__ import annotations

import time

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.service.clock import WallClockSteps, use_monotonic


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
        reactor = Clock()
        reactor.advance(time.time())  # a wall-clock reactor, as Twisted's are
        first = reactor.callLater(5, lambda: None)
        second = reactor.callLater(10, lambda: None)
        use_monotonic(reactor)
        self.assertIs(reactor.seconds, time.monotonic)
        now = time.monotonic()
        self.assertLess(abs(first.getTime() - now - 5), 0.5)
        self.assertLess(abs(second.getTime() - now - 10), 0.5)
        third = reactor.callLater(1, lambda: None)
        self.assertLess(abs(third.getTime() - time.monotonic() - 1), 0.5)
        use_monotonic(reactor)  # idempotent
        self.assertLess(abs(first.getTime() - now - 5), 0.5)
