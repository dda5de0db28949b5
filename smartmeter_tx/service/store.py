"""
What the service knows to tell: the newest reading, the newest energy
reading, and the counters of its work.  Pure: no Twisted, no I/O; the HTTP
endpoints and the logs read it, the poller writes it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Optional

from smartmeter_tx.model import FixedReading, Reading

__all__ = ["LatestStore", "Stats"]


@dataclass
class Stats:
    """Counters of the poller's work, exported on /metrics."""

    polls_answered: int = 0
    polls_failed: int = 0
    polls_skipped: int = 0
    rejoins: int = 0
    reopens: int = 0
    frames_sent: int = 0
    busy_retries: int = 0
    junk_dropped: int = 0


class LatestStore:
    """
    Times are of two clocks: C{*_time} the wall clock's (epoch seconds, what
    records are stamped with), C{*_at} the service's own monotonic clock,
    which ages are taken on: a wall-clock step never makes a reading look
    newer or older than it is.

    @ivar latest: the newest L{Reading} (power and current), or C{None}.
    @ivar latest_time: its wall-clock time (epoch seconds).
    @ivar energy: the newest reading that carried the energy counters.
    @ivar energy_time: its wall-clock time.
    @ivar last_poll_at: when the poll loop last ticked (service clock), or
        C{None} before its first tick.
    @ivar stats: the L{Stats}.
    """

    #: Readings kept for the dashboard's power curve: two days at one a 30 s.
    RECENT = 6000

    def __init__(self) -> None:
        self.latest: Optional[Reading] = None
        self.latest_time: Optional[float] = None
        self.energy: Optional[Reading] = None
        self.energy_time: Optional[float] = None
        self.fixed: Optional[FixedReading] = None
        self.fixed_time: Optional[float] = None
        self.latest_at: Optional[float] = None
        self.fixed_at: Optional[float] = None
        self.last_poll_at: Optional[float] = None
        #: C{(when, Reading)} of the newest readings, oldest first.
        self.recent: deque = deque(maxlen=self.RECENT)
        self._rejoins: deque = deque()
        #: who the meter is (MAC, maker 0x8A, serial 0x8D), once asked.
        self.identity: Optional[dict] = None
        self.stats = Stats()

    def add(self, reading: Reading, when: float, at: Optional[float] = None) -> None:
        """
        Keep C{reading}, taken at C{when} (wall clock), C{at} (service
        clock; C{when} if not given: a store filled by hand has one clock).
        """
        self.latest = reading
        self.latest_time = when
        self.latest_at = when if at is None else at
        self.recent.append((when, reading))
        if reading.has_energy:
            self.energy = reading
            self.energy_time = when

    def add_fixed(self, fixed: FixedReading, when: float, at: Optional[float] = None) -> None:
        """
        Keep the meter's newest half-hourly EA/EB reading, received at C{when}
        (wall clock), C{at} (service clock; C{when} if not given).
        """
        self.fixed = fixed
        self.fixed_time = when
        self.fixed_at = when if at is None else at

    def rejoined(self, when: float) -> None:
        """Count a rejoin at C{when} (for the rate over the last hour)."""
        self.stats.rejoins += 1
        self._rejoins.append(when)

    def rejoins_since(self, since: float) -> int:
        """Rejoins at or after C{since}; older ones are forgotten."""
        while self._rejoins and self._rejoins[0] < since:
            self._rejoins.popleft()
        return len(self._rejoins)

    def age(self, now: float) -> Optional[float]:
        """
        Seconds since the newest reading, on the service clock (C{now} is
        its time), or C{None} before the first.  Never clamped: a negative
        age would be a bug to see, not to hide.
        """
        return None if self.latest_at is None else now - self.latest_at

    def fixed_age(self, now: float) -> Optional[float]:
        """Seconds since the meter's last EA/EB arrived (service clock), or C{None}."""
        return None if self.fixed_at is None else now - self.fixed_at

    def poll_age(self, now: float) -> Optional[float]:
        """Seconds since the poll loop last ticked (service clock), or C{None}."""
        return None if self.last_poll_at is None else now - self.last_poll_at

    def latest_record(self) -> Optional[dict]:
        """
        The newest reading's record with the newest energy values and their
        own time (C{energy_time}), as C{/latest} serves it; C{None} before the
        first reading.
        """
        if self.latest is None or self.latest_time is None:
            return None
        record = self.latest.to_record(Reading.INSTANT_FIELDS)
        if self.energy is not None and self.energy_time is not None:
            record.update(self.energy.to_record(Reading.ENERGY_FIELDS))
            record["energy_time"] = round(self.energy_time, 3)
        if self.fixed is not None and self.fixed_time is not None:
            # When the meter's own half-hourly EA/EB last arrived: a check can
            # tell a meter that stopped pushing from one that never did.
            record["fixed_time"] = round(self.fixed_time, 3)
            record["fixed_meter_time"] = self.fixed.to_record()["meter_time"]
        record["time"] = round(self.latest_time, 3)
        return record
