"""
What the service knows to tell: the newest reading, the newest energy
reading, and the counters of its work.  Pure: no Twisted, no I/O; the HTTP
endpoints and the logs read it, the poller writes it.
"""

from __future__ import annotations

import datetime
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from smartmeter_tx.model import JST, FixedReading, Reading, Value, is_absent
from smartmeter_tx.service.meterprops import MeterProperties

__all__ = ["LatestStore", "Stats", "day_start", "JoinFailure"]


def day_start(when: float) -> float:
    """The epoch seconds of midnight, Japan time, on the day of C{when}: where the curve starts."""
    local = datetime.datetime.fromtimestamp(when, JST)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


@dataclass(frozen=True)
class JoinFailure:
    """
    Why the service's last join failed.

    @ivar kind: C{"refused"} (EVENT 24: the ID or password), C{"not_found"}
        (no scan found the meter) or C{"other"}: for the page's own words.
    @ivar text: the cause in one line, as the log says it.
    """

    kind: str
    text: str


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


def _watts(power: Value) -> Optional[int]:
    """A reading's power for the curve: C{None} where the meter marked it absent."""
    return None if is_absent(power) else int(power)


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
    @ivar recent: C{(when, watts)} of the power readings for the dashboard's
        curve, oldest first; watts C{None} where the meter marked the power
        absent (a gap, never 0).
    @ivar stats: the L{Stats}.
    @ivar join_failure: why the last join failed (L{JoinFailure}), until a
        session is up; C{None} when none failed since.
    @ivar properties: the meter's last words, property by property, as it
        said them (L{MeterProperties}).
    """

    #: The curve keeps at most two readings (the lowest and the highest) per
    #: bucket of this many seconds: a 24-hour chart a few hundred pixels wide
    #: shows no more, and a spike still shows.  At the default poll interval
    #: (30 s) nothing is dropped.
    CURVE_BUCKET = 30.0
    #: Points kept for the curve: a whole day at any interval (2880 buckets of
    #: at most two) and room for the gaps.
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
        self.join_failure: Optional[JoinFailure] = None
        self.properties = MeterProperties()

    def add(self, reading: Reading, when: float, at: Optional[float] = None) -> None:
        """
        Keep C{reading}, taken at C{when} (wall clock), C{at} (service
        clock; C{when} if not given: a store filled by hand has one clock).
        """
        self.latest = reading
        self.latest_time = when
        self.latest_at = when if at is None else at
        if reading.power_w is not None:  # else not asked for: nothing to draw
            self.add_power(when, _watts(reading.power_w))
        if reading.has_energy:
            self.energy = reading
            self.energy_time = when

    def add_power(self, when: float, watts: Optional[int]) -> None:
        """
        Put a power reading taken at C{when} on the curve (L{recent}),
        thinned to the lowest and highest of its L{CURVE_BUCKET}: of three
        readings in one bucket, the one between the other two goes.

        @param watts: the power, or C{None} where the meter marked it absent:
            one such gap is kept however many follow it.
        """
        recent = self.recent
        if watts is None:
            if not recent or recent[-1][1] is not None:
                recent.append((when, None))
            return
        bucket = when // self.CURVE_BUCKET
        if len(recent) >= 2 and all(w is not None and t // self.CURVE_BUCKET == bucket
                                    for t, w in (recent[-1], recent[-2])):
            a, b = recent[-2][1], recent[-1][1]
            if min(a, watts) <= b <= max(a, watts):
                recent[-1] = (when, watts)  # b is between: the newer replaces it
            elif min(b, watts) < a < max(b, watts):
                recent[-2] = recent[-1]  # a is between
                recent[-1] = (when, watts)
            return  # else the new one is between: it goes
        recent.append((when, watts))

    def seed_today(self, read_log: Callable[[float, float], Iterable[tuple]],
                   now: float) -> int:
        """
        Fill the curve with today's (Japan time) readings from the data log,
        before the service's own: after a restart the day is not forgotten.
        Records out of time order (a wall clock stepped back) are skipped,
        so that the curve never runs backwards.

        @param read_log: called with C{(since, until)} (epoch seconds), gives
            the log's reading records taken then as C{(when, record)}, in
            file order (L{smartmeter_tx.service.datalog.DataLog.readings}).
        @param now: the wall clock.
        @return: how many of the records carried the power.
        """
        last = None
        count = 0
        for when, record in read_log(day_start(now), now):
            power = Reading.from_record(record, ("power_w",)).power_w
            if power is None or (last is not None and when < last):
                continue  # not asked for, or out of order
            self.add_power(when, _watts(power))
            last = when
            count += 1
        return count

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

    def join_failed(self, failure: JoinFailure) -> None:
        """Keep why the last join failed (C{join_failure = None} once a session is up)."""
        self.join_failure = failure

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
