"""
The emulated meter's household: what it draws and generates, minute by
minute, and the energy that makes, integrated exactly.

Pure and deterministic: every value is a function of the seed and the time
only.  A base load plus appliances (fridge, air conditioner, rice cooker,
microwave, IH hob, TV, lights, washing machine, hair dryer) switch on and off
in per-appliance windows, with time-of-day habits.  Power is constant within
each minute; the energy integrates exactly that piecewise-constant power, so
the counters are always consistent with the power the meter reports.  Loads
sit on the R leg (100 V), the T leg (100 V) or across R-T (200 V) of a
single-phase three-wire service, so M{P = 100 V x (I_R + I_T)} holds up to
rounding.  An optional solar array (a 200 V inverter) makes the power negative
at midday and feeds the reverse counter.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

__all__ = ["Household", "mix", "SLOT_MINUTES", "REFERENCE"]

SLOT_MINUTES = 30
_DAY_MINUTES = 1440
_DAY_SLOTS = _DAY_MINUTES // SLOT_MINUTES

_MASK64 = (1 << 64) - 1


#: Minutes are counted from this fixed origin so that the household's habits
#: depend only on the seed and the time, never on when the emulator started.
_ORIGIN = datetime.datetime(2000, 1, 1)

#: The midnight the cumulative energy is counted from.  The meter's counters
#: are anchored here, not at the emulator's start, so that the seed alone
#: fixes every reading and every 30-minute record, whenever the emulator
#: starts and whatever its time scale.  The energy between here and a reading
#: is integrated a day at a time (well under a millisecond a day), once.
REFERENCE = datetime.datetime(2024, 6, 1)
_REFERENCE_DAY = (REFERENCE - _ORIGIN).days

#: How many days' per-slot energy a household keeps (history reads go back
#: at most 99 days); older ones are computed again if asked.
_DAYS_KEPT = 128

#: sin() of the sun's path from 06:00 (index 0) to 18:00, per minute.
_SUN = [math.sin(math.pi * k / 720) for k in range(720)]


def mix(*values: int) -> int:
    """
    A deterministic 64-bit hash (splitmix64 steps): cheap, seedable, stable
    across Python versions (unlike C{hash()}).
    """
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = _mix_on(x, v)
    return x


def _mix_on(x: int, v: int) -> int:
    """One step of L{_mix}: C{mix(a, b) == _mix_on(mix(a), b)}."""
    x = ((x ^ (v & _MASK64)) * 0xBF58476D1CE4E5B9) & _MASK64
    x ^= x >> 31
    x = (x * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 29)


def _minute(t: datetime.datetime) -> int:
    return int((t - _ORIGIN).total_seconds() // 60)


def _at_minute(m: int) -> datetime.datetime:
    return _ORIGIN + datetime.timedelta(minutes=m)


@dataclass(frozen=True)
class _Appliance:
    name: str
    watts: int
    leg: str  # "R", "T" (100 V) or "RT" (200 V across both legs)
    period: int  # minutes of one scheduling window
    on_min: int  # shortest run within a window, minutes
    on_max: int
    hours: tuple  # 24 probabilities that it runs in a window starting at that hour


def _profile(default: float, **hours: float) -> tuple:
    table = [default] * 24
    for key, p in hours.items():
        for h in key[1:].split("_"):
            table[int(h)] = p
    return tuple(table)


_HOUSEHOLD = (
    _Appliance("fridge", 110, "R", 30, 10, 16, _profile(1.0)),
    _Appliance("air conditioner", 750, "RT", 60, 20, 60,
               _profile(0.35, h0_1_2_3_4_5=0.2, h13_14_15_16=0.6, h19_20_21_22=0.6)),
    _Appliance("rice cooker", 1000, "R", 60, 10, 25, _profile(0.0, h6=0.7, h17_18=0.6)),
    _Appliance("microwave", 1300, "T", 20, 1, 4,
               _profile(0.02, h7=0.5, h12=0.5, h18_19=0.5)),
    _Appliance("IH hob", 1800, "RT", 60, 8, 30, _profile(0.0, h12=0.3, h18_19=0.6)),
    _Appliance("TV", 140, "T", 60, 30, 60,
               _profile(0.1, h0_1_2_3_4_5=0.0, h19_20_21_22=0.8)),
    _Appliance("lights", 180, "T", 60, 45, 60,
               _profile(0.0, h6_7=0.5, h17_18_19_20_21_22=0.9, h23=0.5)),
    _Appliance("washing machine", 450, "R", 90, 30, 60, _profile(0.0, h8_9_10=0.35)),
    _Appliance("hair dryer", 1200, "T", 30, 3, 8, _profile(0.0, h7=0.3, h21_22=0.3)),
)

class Household:
    """
    @ivar solar_w: peak solar output in W, 0 for none.
    @ivar days_integrated: how many days' energy has been computed (for
        checks that deep reads integrate each day once).
    """

    def __init__(self, seed: int, solar_w: int) -> None:
        self.solar_w = solar_w
        self._windows: dict = {}
        self._minutes_cache: dict = {}
        # mix(seed, a, b) == _mix_on(mix(seed, a), b): the constant part once.
        self._mix_jitter = mix(seed, 0xBA5E)
        self._mix_cloud = mix(seed, 0x50AA)
        self._mix_appliance = [mix(seed, i) for i in range(len(_HOUSEHOLD))]
        # Clear-sky output per minute from 06:00, W (a float: clouds scale it).
        self._peak = [solar_w * sun * sun for sun in _SUN]
        # Cumulative (import, export) Ws at the midnights around REFERENCE:
        # _after[i] at day _REFERENCE_DAY + i, _before[i] at _REFERENCE_DAY - i.
        self._after = [(0, 0)]
        self._before = [(0, 0)]
        # Day -> cumulative Ws at its 49 slot boundaries, from its midnight.
        self._days: dict = {}
        self.days_integrated = 0

    def cached(self) -> int:
        """How many per-window, per-slot and per-day values are kept (for memory checks)."""
        return (len(self._windows) + SLOT_MINUTES * len(self._minutes_cache)
                + (_DAY_SLOTS + 1) * len(self._days) + len(self._after) + len(self._before))

    def _on(self, index: int, appliance: _Appliance, minute: int) -> bool:
        key = (index, minute // appliance.period)
        span = self._windows.get(key)
        if span is None:
            span = self._span(index, appliance, key[1])
            if len(self._windows) > 4096:  # a pure cache: keep memory flat
                self._windows.clear()
            self._windows[key] = span
        return span[0] <= minute < span[1]

    def _span(self, index: int, appliance: _Appliance, window: int) -> tuple:
        """The (first, end) minutes an appliance runs in one of its windows."""
        p = appliance.hours[(window * appliance.period % 1440) // 60]
        if not p:
            return (0, 0)
        r = _mix_on(self._mix_appliance[index], window)
        if (r & 0xFFFF) / 65536.0 >= p:
            return (0, 0)
        length = appliance.on_min + (r >> 16) % (appliance.on_max - appliance.on_min + 1)
        length = min(length, appliance.period)
        first = window * appliance.period + (r >> 32) % (appliance.period - length + 1)
        return (first, first + length)

    def _base(self, block: int) -> tuple:
        """The (R-leg, T-leg) base load in W of a 5-minute block."""
        jitter = _mix_on(self._mix_jitter, block)
        return 90 + jitter % 40, 50 + (jitter >> 8) % 30

    def _legs(self, minute: int) -> tuple:
        """
        The load of one minute as (R-leg W, T-leg W, 200 V W, solar W).
        """
        r, t = self._base(minute // 5)
        rt = 0
        for i, a in enumerate(_HOUSEHOLD):
            if self._on(i, a, minute):
                if a.leg == "R":
                    r += a.watts
                elif a.leg == "T":
                    t += a.watts
                else:
                    rt += a.watts
        return r, t, rt, self._solar(minute)

    def _cloud(self, block: int) -> float:
        """The share of clear-sky output reaching the panels in a 10-minute block."""
        return 0.55 + (_mix_on(self._mix_cloud, block) % 450) / 1000

    def _solar(self, minute: int) -> int:
        if not self.solar_w:
            return 0
        of_day = minute % 1440
        if not 360 <= of_day < 1080:  # 06:00 to 18:00
            return 0
        return self._solar_at(of_day, self._cloud(minute // 10))

    def _solar_at(self, of_day: int, cloud: float) -> int:
        return int(self._peak[of_day - 360] * cloud)

    def power_of_minute(self, minute: int) -> int:
        r, t, rt, gen = self._legs(minute)
        return r + t + rt - gen

    def power(self, now: datetime.datetime) -> int:
        """E7: instantaneous power in W (negative while exporting)."""
        return self.power_of_minute(_minute(now))

    def currents(self, now: datetime.datetime) -> tuple:
        """
        E8: (R, T) in units of 0.1 A.  200 V loads and the 200 V solar inverter
        draw the same current through both legs.
        """
        r, t, rt, gen = self._legs(_minute(now))
        return (round((r / 100 + (rt - gen) / 200) * 10), round((t / 100 + (rt - gen) / 200) * 10))

    # -- energy ------------------------------------------------------------
    #
    # The counters are anchored at REFERENCE.  A day's energy is computed in
    # one pass (from the appliances' on-spans and the 5-minute base-load
    # blocks, minute by minute only with solar) and kept as a running sum of
    # midnights relative to REFERENCE, growing outwards only as far as a
    # reading asks; the per-slot values of the days read lately are kept too.

    def _minutes(self, m0: int, count: int) -> list:
        """
        The per-minute net powers (W) of the C{count} minutes from minute
        C{m0} (a slot boundary; C{count} a whole number of slots).
        """
        m1 = m0 + count
        load: list = []
        for block in range(m0 // 5, m1 // 5):
            r, t = self._base(block)
            load += [r + t] * 5
        for i, a in enumerate(_HOUSEHOLD):
            for w in range(m0 // a.period, (m1 - 1) // a.period + 1):
                first, end = self._span(i, a, w)
                lo, hi = max(first, m0) - m0, min(end, m1) - m0
                if lo < hi:
                    load[lo:hi] = [p + a.watts for p in load[lo:hi]]
        if self.solar_w:
            peak = self._peak
            for block in range(m0 // 10, m1 // 10):
                of_day = block * 10 % 1440
                if 360 <= of_day < 1080:  # 06:00 to 18:00
                    cloud, k, sun = self._cloud(block), block * 10 - m0, of_day - 360
                    load[k:k + 10] = [p - int(w * cloud)
                                      for p, w in zip(load[k:k + 10], peak[sun:sun + 10])]
        return load

    def _slot_minutes(self, slot: int) -> list:
        """The 30 per-minute net powers (W) of absolute slot C{slot}."""
        cached = self._minutes_cache.get(slot)
        if cached is None:
            cached = self._minutes(slot * SLOT_MINUTES, SLOT_MINUTES)
            if len(self._minutes_cache) > 8:
                self._minutes_cache.clear()
            self._minutes_cache[slot] = cached
        return cached

    def _day_slots(self, day: int) -> list:
        """(import, export) watt-seconds of each of the 48 slots of absolute day C{day}."""
        self.days_integrated += 1
        m0 = day * _DAY_MINUTES
        if self.solar_w:
            load = self._minutes(m0, _DAY_MINUTES)
            out = []
            for k in range(0, _DAY_MINUTES, SLOT_MINUTES):
                minutes = load[k:k + SLOT_MINUTES]
                exp = -sum(p for p in minutes if p < 0) if 360 <= k < 1080 else 0
                out.append(((sum(minutes) + exp) * 60, exp * 60))
            return out
        # No generation: every minute imports; sum the spans, not the minutes.
        totals = [0] * _DAY_SLOTS
        for block in range(m0 // 5, (m0 + _DAY_MINUTES) // 5):
            r, t = self._base(block)
            totals[(block * 5 - m0) // SLOT_MINUTES] += 5 * (r + t)
        for i, a in enumerate(_HOUSEHOLD):
            for w in range(m0 // a.period, (m0 + _DAY_MINUTES) // a.period):
                first, end = self._span(i, a, w)
                while first < end:  # split the run at slot boundaries
                    k = (first - m0) // SLOT_MINUTES
                    stop = min(end, m0 + (k + 1) * SLOT_MINUTES)
                    totals[k] += a.watts * (stop - first)
                    first = stop
        return [(w * 60, 0) for w in totals]

    def _day(self, day: int) -> list:
        """Cumulative (import, export) Ws at the 49 slot boundaries of absolute
        day C{day}, from its midnight."""
        boundaries = self._days.get(day)
        if boundaries is None:
            imp = exp = 0
            boundaries = [(0, 0)]
            for i, e in self._day_slots(day):
                imp, exp = imp + i, exp + e
                boundaries.append((imp, exp))
            if len(self._days) >= _DAYS_KEPT:  # forget the one computed first
                del self._days[next(iter(self._days))]
            self._days[day] = boundaries
        return boundaries

    def slot_ws(self, slot: int) -> tuple:
        """(import, export) watt-seconds of absolute slot C{slot}."""
        day, k = divmod(slot, _DAY_SLOTS)
        boundaries = self._day(day)
        return (boundaries[k + 1][0] - boundaries[k][0], boundaries[k + 1][1] - boundaries[k][1])

    def _midnight_ws(self, day: int) -> tuple:
        """Cumulative (import, export) Ws at the start of absolute day C{day},
        relative to REFERENCE."""
        offset = day - _REFERENCE_DAY
        if offset >= 0:
            after = self._after
            while len(after) <= offset:
                i, e = self._day(_REFERENCE_DAY + len(after) - 1)[-1]
                last = after[-1]
                after.append((last[0] + i, last[1] + e))
            return after[offset]
        before = self._before
        while len(before) <= -offset:
            i, e = self._day(_REFERENCE_DAY - len(before))[-1]
            last = before[-1]
            before.append((last[0] - i, last[1] - e))
        return before[-offset]

    def ws(self, now: datetime.datetime) -> tuple:
        """Cumulative (import, export) Ws at C{now}, relative to REFERENCE
        (negative before it)."""
        seconds = int((now - _ORIGIN).total_seconds())
        day, rest = divmod(seconds, _DAY_MINUTES * 60)
        k, rest = divmod(rest, SLOT_MINUTES * 60)
        midnight = self._midnight_ws(day)
        within = self._day(day)[k]
        imp, exp = midnight[0] + within[0], midnight[1] + within[1]
        if rest:
            whole, partial = divmod(rest, 60)
            powers = self._slot_minutes(day * _DAY_SLOTS + k)
            for m in range(whole + (1 if partial else 0)):
                p = powers[m] * (60 if m < whole else partial)
                if p >= 0:
                    imp += p
                else:
                    exp -= p
        return imp, exp
