"""
The meter's own 30-minute record: E2/E4 (a day of 48 cumulative counts,
chosen with E5) and EC (up to 12 pairs counting back from the time set in
ED), and the slots they make.

Pure: no Twisted, no I/O.  Boundaries are naive datetimes of the meter's own
clock (Japan's time); a slot whose counts are missing is L{Absent}, never 0.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Optional, cast

from smartmeter_tx.echonet.meter import EnergyScale, decode_energy_raw, sized
from smartmeter_tx.errors import ArgumentError, FrameError
from smartmeter_tx.model import (
    JST, NO_DATA, NO_SCALE, SLOT, Absent, HistorySlot, Value, is_absent, is_slot_boundary,
)

__all__ = [
    "HISTORY2_MAX", "HistoryDay", "decode_history", "encode_history_day", "History2",
    "decode_history2", "encode_history2_time", "day_readings", "slot_energy", "history_slots",
]

@dataclass(frozen=True)
class HistoryDay:
    """
    E2/E4: 48 half-hourly cumulative values of one day (slot 0 = 00:00).

    @ivar day: days before today (0-99), or C{None} when E5 was never set.
    """

    day: Optional[int]
    slots: tuple = field(default_factory=tuple)


def decode_history(edt: bytes) -> HistoryDay:
    edt = sized(edt, 194, "E2/E4")
    day = int.from_bytes(edt[:2], "big")
    slots = tuple(decode_energy_raw(edt[2 + 4 * i:6 + 4 * i]) for i in range(48))
    return HistoryDay(None if day == 0x00FF else day, slots)


#: EC carries at most this many (normal, reverse) pairs.
HISTORY2_MAX = 12


def encode_history_day(day: int) -> bytes:
    """E5: the day E2/E4 report, 0 = today, n = n days ago (0-99)."""
    if not 0 <= day <= 99:
        raise ArgumentError(f"history day {day} is outside 0-99")
    return bytes([day])


def encode_history2_time(start: datetime.datetime, count: int) -> bytes:
    """
    ED: the newest boundary EC reports (minute 00 or 30) and how many pairs
    (1-12), stepping back 30 minutes each.
    """
    if not is_slot_boundary(start):
        raise ArgumentError("the history time must be on a :00 or :30 boundary")
    if not 1 <= count <= HISTORY2_MAX:
        raise ArgumentError(f"EC carries 1 to {HISTORY2_MAX} readings, not {count}")
    return (start.year.to_bytes(2, "big")
            + bytes((start.month, start.day, start.hour, start.minute, count)))


@dataclass(frozen=True)
class History2:
    """
    EC: C{readings[k]} is the (normal, reverse) counter pair at C{start - k x
    30 min}; C{start} is C{None} when ED was never set.
    """

    start: Optional[datetime.datetime]
    readings: tuple = ()

    def by_time(self) -> dict:
        """@return: C{{boundary: (normal raw, reverse raw)}}."""
        if self.start is None:
            return {}
        return {self.start - k * SLOT: pair for k, pair in enumerate(self.readings)}


def decode_history2(edt: bytes) -> History2:
    """EC: YYYY MM DD hh mm, n, then n x (normal u32, reverse u32)."""
    if len(edt) < 6:
        raise FrameError(f"EC of {len(edt)} bytes is too short")
    count = edt[6] if len(edt) > 6 else 0
    if not 1 <= count <= HISTORY2_MAX or len(edt) != 7 + 8 * count:
        raise FrameError(f"EC says {count} readings in {len(edt)} bytes")
    try:
        start = datetime.datetime(int.from_bytes(edt[:2], "big"), edt[2], edt[3], edt[4], edt[5])
    except ValueError:
        start = None  # ED never set (FFFF...)
    pairs = tuple((decode_energy_raw(edt[7 + 8 * k:11 + 8 * k]),
                   decode_energy_raw(edt[11 + 8 * k:15 + 8 * k])) for k in range(count))
    return History2(start, pairs)


def day_readings(normal: HistoryDay, reverse: HistoryDay, date: datetime.date) -> dict:
    """
    E2 and E4 of one day as C{{boundary: (normal raw, reverse raw)}}, the
    boundaries of C{date} (the meter's date minus the day E2/E4 echo).

    @raise FrameError: E2 and E4 are not of the same day.
    """
    if normal.day != reverse.day:
        raise FrameError(f"E2 is of day {normal.day} but E4 of day {reverse.day}")
    midnight = datetime.datetime.combine(date, datetime.time())
    return {midnight + k * SLOT: (normal.slots[k], reverse.slots[k]) for k in range(48)}


def slot_energy(earlier: Value, later: Value, scale: Optional[EnergyScale]) -> Value:
    """
    The energy of one slot: the difference of neighbouring cumulative
    readings, modulo 10^D7 (the counter wraps), in kWh with E1 and D3.

    @return: a L{Decimal} kWh, or an L{Absent} when either reading is
        missing, the scale is unknown, or the counter went backwards with D7
        unknown (never a guess).
    """
    if is_absent(earlier) or is_absent(later):
        return NO_DATA
    if scale is None:
        return NO_SCALE
    try:
        # Raw counts are ints (decode_energy_raw); Value also covers kWh.
        counts = scale.delta(cast(int, earlier), cast(int, later))
    except ValueError:
        return Absent("counter went backwards")
    return scale.to_kwh(counts)


def history_slots(readings: dict, scale: Optional[EnergyScale], source: str,
                  until: datetime.datetime) -> list:
    """
    The slots whose two boundaries are both in C{readings} (naive meter-local
    boundary -> (normal raw, reverse raw)) and end at or before C{until}.

    @return: L{HistorySlot}s, oldest first.
    """
    slots = []
    for start in sorted(readings):
        end = start + SLOT
        if end > until or end not in readings:
            continue
        (n0, r0), (n1, r1) = readings[start], readings[end]
        slots.append(HistorySlot(
            start.replace(tzinfo=JST),
            slot_energy(n0, n1, scale), slot_energy(r0, r1, scale),
            n0 if is_absent(n0) else (scale.to_kwh(n0) if scale else NO_SCALE),
            r0 if is_absent(r0) else (scale.to_kwh(r0) if scale else NO_SCALE),
            source))
    return slots

