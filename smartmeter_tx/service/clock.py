"""
The service's two clocks.  Its schedule (polls, timeouts, backoff, ages)
runs on a monotonic clock, which no wall-clock step moves: NTP correcting a
fast clock, or a Pi's fake-hwclock at boot, would otherwise stop every poll
for as long as the clock went back, or invent polls that never happened.
Wall time (C{time.time}) only stamps records.

L{use_monotonic} turns a running Twisted reactor's timers over to the
monotonic clock (Twisted's reactors run theirs on C{time.time}); only the
entry point calls it, on the global reactor.  L{WallClockSteps} notices
when the wall clock jumps against the monotonic one, so that a step is said
once.  Pure but for L{use_monotonic}.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

__all__ = ["use_monotonic", "WallClockSteps"]


def use_monotonic(reactor: Any) -> None:
    """
    Make C{reactor}'s timers run on C{time.monotonic}: its C{seconds()},
    every call already scheduled (moved by one offset, so their order
    holds) and every one scheduled from now on.  Idempotent.
    """
    if getattr(reactor, "seconds", None) is time.monotonic:
        return
    offset = time.monotonic() - reactor.seconds()
    for call in reactor.getDelayedCalls():
        call.time += offset
        call.seconds = time.monotonic
    reactor.seconds = time.monotonic


class WallClockSteps:
    """
    Watches the wall clock against the service's monotonic one.

    @ivar steps: the steps seen so far.
    """

    #: Seconds of disagreement below which a difference is drift or the
    #: time a poll took, not a step.
    TOLERANCE = 5.0

    def __init__(self, clock: Callable[[], float], wall_clock: Callable[[], float]) -> None:
        self.clock = clock
        self.wall_clock = wall_clock
        self.steps = 0
        self._last: Optional[tuple] = None

    def check(self) -> Optional[float]:
        """
        @return: how far the wall clock stepped (seconds, negative when it
            went back) since the last check, or C{None} when it did not.
        """
        now = (self.clock(), self.wall_clock())
        last, self._last = self._last, now
        if last is None:
            return None
        step = (now[1] - last[1]) - (now[0] - last[0])
        if abs(step) < self.TOLERANCE:
            return None
        self.steps += 1
        return step

    def say(self, log: Any) -> None:
        """L{check}, and log a step once, with its size."""
        step = self.check()
        if step is not None:
            log.warn("the host's clock stepped {way} by {s:.0f} s; the polls keep their "
                     "schedule, and records are stamped with the new time",
                     way="forward" if step > 0 else "back", s=abs(step))
