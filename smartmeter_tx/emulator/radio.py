"""
The emulator's radio: latencies calibrated on real captures, frame loss and
the other random faults, and the ARIB STD-T108 transmit-time budget.

Every random draw comes from one seeded L{random.Random}, so a run is
repeatable for a given seed and sequence of host commands.  All durations here
are in device seconds; the caller applies the time scale.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Optional

__all__ = ["Radio", "TxBudget", "airtime"]

#: SKSENDTO -> EVENT 21: 115-343 ms, median 216 ms (BP35A1, n=42;
#: docs/PROTOCOL.md, "Timing").  The triangular mode is chosen so the median matches.
SEND_DONE = (0.115, 0.343, 0.2015)
#: SKSENDTO -> ERXUDP answer: 340-810 ms, median 569 ms (docs/PROTOCOL.md, "Timing").
ANSWER = (0.340, 0.810, 0.5628)
#: 920 MHz Wi-SUN at 100 kbit/s; about 50 bytes of PHY/MAC/6LoWPAN/UDP headers.
BITRATE = 100_000
OVERHEAD = 50


def airtime(payload_len: int) -> float:
    """Seconds on air for one UDP datagram of C{payload_len} bytes."""
    return (payload_len + OVERHEAD) * 8 / BITRATE


@dataclass
class Radio:
    """
    The random side of the radio.

    @ivar loss: probability that an exchange loses its request or its answer
        (the host still sees EVENT 21 00 and OK).
    @ivar fail21: probability of C{EVENT 21 ... 01} (nothing sent).
    @ivar stale: probability that an answer is held back until after the next
        request, so it arrives with a stale TID.
    @ivar garbage: probability, per output burst, of a stray line or junk bytes.
    """

    rng: random.Random
    loss: float = 0.0
    fail21: float = 0.0
    stale: float = 0.0
    garbage: float = 0.0

    def send_done_delay(self) -> float:
        return self.rng.triangular(SEND_DONE[0], SEND_DONE[1], SEND_DONE[2])

    def answer_delay(self, send_done: float) -> float:
        # The answer can never overtake the EVENT 21 of its own request.
        return max(self.rng.triangular(ANSWER[0], ANSWER[1], ANSWER[2]), send_done + 0.05)

    def lost(self) -> Optional[str]:
        """C{None}, C{"request"} (the meter never saw it) or C{"answer"}."""
        if self.loss and self.rng.random() < self.loss:
            return self.rng.choice(("request", "answer"))
        return None

    def send_fails(self) -> bool:
        return bool(self.fail21) and self.rng.random() < self.fail21

    def held_back(self) -> bool:
        return bool(self.stale) and self.rng.random() < self.stale

    def junk(self) -> Optional[bytes]:
        """
        Stray output for the garbage knob, or C{None}: line noise, a truncated
        line, or an empty line, each ending with CRLF so the next line is whole.
        """
        if not self.garbage or self.rng.random() >= self.garbage:
            return None
        kind = self.rng.randrange(3)
        if kind == 0:
            return bytes(self.rng.randrange(0x80, 0x100) for _ in range(self.rng.randint(1, 8))) + b"\r\n"
        if kind == 1:
            return b"EVEN\r\n"
        return b"\r\n"

    def lqi(self, base: int) -> int:
        return max(0, min(0xFF, base + self.rng.randint(-3, 3)))


class TxBudget:
    """
    ARIB STD-T108: total transmit time per rolling window (360 s per hour).

    L{spend} records a transmission and says whether the limit is now engaged;
    L{release_at} says when the rolling sum will have dropped back under it.
    """

    def __init__(self, budget: float = 360.0, window: float = 3600.0) -> None:
        self.budget = budget
        self.window = window
        self.limited = False
        self.total_ms = 0
        self._spent: deque = deque()

    def _expire(self, now: float) -> float:
        while self._spent and self._spent[0][0] <= now - self.window:
            self._spent.popleft()
        return sum(s for _, s in self._spent)

    def used(self, now: float) -> float:
        return self._expire(now)

    def spend(self, now: float, seconds: float) -> bool:
        """
        @return: C{True} when this transmission engaged the limit.
        """
        self._spent.append((now, seconds))
        self.total_ms += int(seconds * 1000)
        if not self.limited and self._expire(now) > self.budget:
            self.limited = True
            return True
        return False

    def release_at(self, now: float) -> float:
        """The device time at which the rolling sum is back within the budget."""
        total = self._expire(now)
        for at, seconds in self._spent:
            if total <= self.budget:
                break
            total -= seconds
            now = at + self.window
        return now

    def try_release(self, now: float) -> bool:
        """@return: C{True} when the limit was engaged and is now released."""
        if self.limited and self._expire(now) <= self.budget:
            self.limited = False
            return True
        return False
