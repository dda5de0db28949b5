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

__all__ = ["Household", "mix", "SLOT_MINUTES"]

SLOT_MINUTES = 30

_MASK64 = (1 << 64) - 1


#: Minutes are counted from this fixed origin so that the household's habits
#: depend only on the seed and the time, never on when the emulator started.
_ORIGIN = datetime.datetime(2000, 1, 1)


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
    """

    def __init__(self, seed: int, solar_w: int, start: datetime.datetime) -> None:
        """
        @param start: the meter's start: the energy is kept relative to the
            slot holding it.
        """
        self.solar_w = solar_w
        self._windows: dict = {}
        self._minutes_cache: dict = {}
        # mix(seed, a, b) == _mix_on(mix(seed, a), b): the constant part once.
        self._mix_jitter = mix(seed, 0xBA5E)
        self._mix_cloud = mix(seed, 0x50AA)
        self._mix_appliance = [mix(seed, i) for i in range(len(_HOUSEHOLD))]
        # Cumulative (import, export) Ws at slot boundaries relative to the
        # boundary before start: _ahead[i] for anchor + i, _behind[i] for anchor - i.
        self._anchor_slot = _minute(start) // SLOT_MINUTES
        self._ahead = [(0, 0)]
        self._behind = [(0, 0)]

    def cached(self) -> int:
        """How many per-window and per-slot values are kept (for memory checks)."""
        return len(self._windows) + self.boundaries_known()

    def boundaries_known(self) -> int:
        """How many slot boundaries' energy has been integrated so far."""
        return len(self._ahead) + len(self._behind)

    def _on(self, index: int, appliance: _Appliance, minute: int) -> bool:
        span = self._span(index, appliance, minute // appliance.period)
        return span[0] <= minute < span[1]

    def _span(self, index: int, appliance: _Appliance, window: int) -> tuple:
        """The (first, end) minutes an appliance runs in one of its windows."""
        key = (index, window)
        span = self._windows.get(key)
        if span is None:
            p = appliance.hours[(window * appliance.period % 1440) // 60]
            r = _mix_on(self._mix_appliance[index], window) if p else 0
            if p and (r & 0xFFFF) / 65536.0 < p:
                length = appliance.on_min + (r >> 16) % (appliance.on_max - appliance.on_min + 1)
                length = min(length, appliance.period)
                first = window * appliance.period + (r >> 32) % (appliance.period - length + 1)
                span = (first, first + length)
            else:
                span = (0, 0)
            if len(self._windows) > 4096:  # a pure cache: keep memory flat
                self._windows.clear()
            self._windows[key] = span
        return span

    def _legs(self, minute: int) -> tuple:
        """
        The load of one minute as (R-leg W, T-leg W, 200 V W, solar W).
        """
        jitter = _mix_on(self._mix_jitter, minute // 5)
        r = 90 + jitter % 40
        t = 50 + (jitter >> 8) % 30
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

    def _solar(self, minute: int) -> int:
        if not self.solar_w:
            return 0
        of_day = minute % 1440
        if not 360 <= of_day < 1080:  # 06:00 to 18:00
            return 0
        return self._solar_at(of_day, 0.55 + (_mix_on(self._mix_cloud, minute // 10) % 450) / 1000)

    def _solar_at(self, of_day: int, cloud: float) -> int:
        sun = math.sin(math.pi * (of_day - 360) / 720)
        return int(self.solar_w * sun * sun * cloud)

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
    # The counters are anchored at C{start}: E0 there is C{initial_counts}.
    # The energy of every 30-minute slot is computed once (from the
    # appliances' on-spans and the 5-minute base-load blocks, minute by
    # minute only where the sun shines) and kept as a running sum relative
    # to the slot holding C{start}, growing forwards as time passes and
    # backwards only as far as a history read asks (never before the epoch).

    def _slot_minutes(self, slot: int) -> list:
        """The 30 per-minute net powers (W) of absolute slot C{slot}."""
        cached = self._minutes_cache.get(slot)
        if cached is not None:
            return cached
        m0 = slot * SLOT_MINUTES
        m1 = m0 + SLOT_MINUTES
        load = [0] * SLOT_MINUTES
        for block in range(m0 // 5, m1 // 5):
            j = _mix_on(self._mix_jitter, block)
            base = 90 + j % 40 + 50 + (j >> 8) % 30
            k = block * 5 - m0
            load[k:k + 5] = [base] * 5
        for i, a in enumerate(_HOUSEHOLD):
            for w in range(m0 // a.period, (m1 - 1) // a.period + 1):
                first, end = self._span(i, a, w)
                for m in range(max(first, m0), min(end, m1)):
                    load[m - m0] += a.watts
        if self.solar_w and 360 <= m0 % 1440 < 1080:
            clouds = {b: 0.55 + (_mix_on(self._mix_cloud, b) % 450) / 1000
                      for b in range(m0 // 10, (m1 - 1) // 10 + 1)}
            of_day = m0 % 1440
            load = [p - self._solar_at(of_day + k, clouds[(m0 + k) // 10])
                    for k, p in enumerate(load)]
        if len(self._minutes_cache) > 8:
            self._minutes_cache.clear()
        self._minutes_cache[slot] = load
        return load

    def slot_ws(self, slot: int) -> tuple:
        """(import, export) watt-seconds of absolute slot C{slot}."""
        m0 = slot * SLOT_MINUTES
        if self.solar_w and 360 <= m0 % 1440 < 1080:
            imp = exp = 0
            for p in self._slot_minutes(slot):
                if p >= 0:
                    imp += p
                else:
                    exp -= p
            return imp * 60, exp * 60
        # No generation: every minute imports; sum the spans, not the minutes.
        m1 = m0 + SLOT_MINUTES
        total = 0
        for block in range(m0 // 5, m1 // 5):
            j = _mix_on(self._mix_jitter, block)
            total += 5 * (140 + j % 40 + (j >> 8) % 30)
        for i, a in enumerate(_HOUSEHOLD):
            for w in range(m0 // a.period, (m1 - 1) // a.period + 1):
                first, end = self._span(i, a, w)
                overlap = min(end, m1) - max(first, m0)
                if overlap > 0:
                    total += a.watts * overlap
        return total * 60, 0

    def _boundary_ws(self, slot: int) -> tuple:
        """Cumulative (import, export) Ws at the start of absolute slot C{slot},
        relative to the start of the anchor slot."""
        offset = slot - self._anchor_slot
        if offset >= 0:
            ahead = self._ahead
            while len(ahead) <= offset:
                i, e = self.slot_ws(self._anchor_slot + len(ahead) - 1)
                last = ahead[-1]
                ahead.append((last[0] + i, last[1] + e))
            return ahead[offset]
        behind = self._behind
        while len(behind) <= -offset:
            i, e = self.slot_ws(self._anchor_slot - len(behind))
            last = behind[-1]
            behind.append((last[0] - i, last[1] - e))
        return behind[-offset]

    def ws(self, now: datetime.datetime) -> tuple:
        """Cumulative (import, export) Ws at C{now}, relative to the anchor slot."""
        seconds = int((now - _ORIGIN).total_seconds())
        slot, rest = divmod(seconds, SLOT_MINUTES * 60)
        imp, exp = self._boundary_ws(slot)
        if rest:
            whole, partial = divmod(rest, 60)
            powers = self._slot_minutes(slot)
            for k in range(whole + (1 if partial else 0)):
                p = powers[k] * (60 if k < whole else partial)
                if p >= 0:
                    imp += p
                else:
                    exp -= p
        return imp, exp
