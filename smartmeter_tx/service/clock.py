"""
The service's two clocks.  Its schedule (polls, timeouts, backoff, ages)
runs on a monotonic clock, which no wall-clock step moves: NTP correcting a
fast clock, or a Pi's fake-hwclock at boot, would otherwise stop every poll
for as long as the clock went back, or invent polls that never happened.
Wall time (C{time.time}) only stamps records.

L{use_monotonic} turns a running Twisted reactor's timers over to the
monotonic clock (Twisted's reactors run theirs on C{time.time}), and
L{sleep_past_cancelled} keeps a cancelled timer from waking it; only the
entry point calls them, on the global reactor.  L{WallClockSteps} notices
when the wall clock jumps against the monotonic one, so that a step is said
once.  Pure but for L{use_monotonic}.
"""

from __future__ import annotations

import heapq
import time
from typing import Any, Callable, Optional

__all__ = ["use_monotonic", "sleep_past_cancelled", "WallClockSteps"]


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


def sleep_past_cancelled(reactor: Any) -> None:
    """
    Make C{reactor} sleep until its next live timer.  Each poll sets
    deadlines (the command's, the request's, the poll's) and cancels them
    when the answer comes; Twisted's reactors leave a cancelled call in
    their queue until its time, and wake for it, four or five times
    between two polls.  Here the reactor drops the cancelled calls at the
    head of its queue before it sleeps, as it would on waking.  Idempotent;
    a reactor without that queue (a test's clock) is left as it is.
    """
    if getattr(reactor, "_sleepsPastCancelled", False) or not hasattr(
            reactor, "_pendingTimedCalls"):
        return
    timeout = reactor.timeout

    def timeout_of_live_calls() -> Optional[float]:
        reactor._insertNewDelayedCalls()
        queue = reactor._pendingTimedCalls
        while queue and queue[0].cancelled:
            heapq.heappop(queue)
            reactor._cancellations -= 1
        return timeout()
    reactor.timeout = timeout_of_live_calls
    reactor._sleepsPastCancelled = True


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
