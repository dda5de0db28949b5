"""
Decoding of the low-voltage smart electric energy meter class (0x028801) and of
the node profile's instance list, into the values of L{smartmeter_tx.model}.

Pure: no Twisted, no I/O.  A value the meter marks as "no data", underflow or
overflow decodes to an L{Absent} value, never to 0: a wrong number is worse than
a missing one.  Quantities are L{Decimal} so 0.1 A and 0.01 kWh stay exact.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Optional

from smartmeter_tx.errors import ArgumentError, FrameError
from smartmeter_tx.model import (
    JST, NO_DATA, NO_PHASE, NO_SCALE, OVERFLOW, SLOT, UNDERFLOW, Absent, FixedReading,
    HistorySlot, Reading, Value, is_absent, is_slot_boundary,
)

# EPCs of class 0x028801.
OPERATION_STATUS = 0x80
FAULT_STATUS = 0x88
MAKER_CODE = 0x8A
SERIAL_NUMBER = 0x8D
COEFFICIENT = 0xD3
DIGITS = 0xD7
ENERGY_NORMAL = 0xE0
UNIT = 0xE1
HISTORY_NORMAL = 0xE2
ENERGY_REVERSE = 0xE3
HISTORY_REVERSE = 0xE4
HISTORY_DAY = 0xE5
POWER = 0xE7
CURRENT = 0xE8
FIXED_NORMAL = 0xEA
FIXED_REVERSE = 0xEB
# Node profile 0x0EF001.
INSTANCE_LIST = 0xD5
SELF_INSTANCE_LIST = 0xD6


#: E1 unit code -> kWh per count.
UNITS = {
    0x00: Decimal("1"), 0x01: Decimal("0.1"), 0x02: Decimal("0.01"), 0x03: Decimal("0.001"),
    0x04: Decimal("0.0001"), 0x0A: Decimal("10"), 0x0B: Decimal("100"), 0x0C: Decimal("1000"),
    0x0D: Decimal("10000"),
}


def _need(edt: Optional[bytes], size: int, name: str) -> bytes:
    if edt is None or len(edt) != size:
        raise FrameError(f"{name} must be {size} bytes, got {0 if edt is None else len(edt)}")
    return edt


def decode_power(edt: bytes) -> Value:
    """
    E7 instantaneous power: signed 32-bit watts (negative = reverse flow).
    """
    raw = int.from_bytes(_need(edt, 4, "E7"), "big", signed=True)
    if raw == 0x7FFFFFFE:
        return NO_DATA
    if raw == 0x7FFFFFFF:
        return OVERFLOW
    if raw == -0x80000000:
        return UNDERFLOW
    return raw


def _phase(raw: int, absent: Absent) -> Value:
    if raw == 0x7FFE:
        return absent
    if raw == 0x7FFF:
        return OVERFLOW
    if raw == -0x8000:
        return UNDERFLOW
    return Decimal(raw) / 10


def decode_current(edt: bytes) -> tuple:
    """
    E8 instantaneous current: R and T phases, signed 16-bit in 0.1 A.

    @return: C{(r, t)} as L{Decimal} amperes or L{Absent}; on single-phase
        two-wire service T is L{NO_PHASE}.
    """
    edt = _need(edt, 4, "E8")
    r = int.from_bytes(edt[:2], "big", signed=True)
    t = int.from_bytes(edt[2:], "big", signed=True)
    return _phase(r, NO_DATA), _phase(t, NO_PHASE)


def decode_coefficient(edt: Optional[bytes]) -> int:
    """
    D3 coefficient; a meter without D3 (Get_SNA, or C{None}) means 1.
    """
    if not edt:
        return 1
    value = int.from_bytes(_need(edt, 4, "D3"), "big")
    if not 0 <= value <= 999999:
        raise FrameError(f"D3 coefficient {value} out of range")
    return value


def decode_unit(edt: bytes) -> Decimal:
    """
    E1 unit of the cumulative energy counters, as kWh per count.
    """
    code = _need(edt, 1, "E1")[0]
    if code not in UNITS:
        raise FrameError(f"E1 unit code {code:#04x} is not defined")
    return UNITS[code]


def decode_digits(edt: bytes) -> int:
    """
    D7 number of effective digits of the cumulative counters (1-8).
    """
    value = _need(edt, 1, "D7")[0]
    if not 1 <= value <= 8:
        raise FrameError(f"D7 digits {value} out of range")
    return value


@dataclass(frozen=True)
class EnergyScale:
    """
    How raw cumulative counts become kWh: raw x coefficient (D3) x unit (E1);
    the counter wraps at 10^digits (D7).
    """

    coefficient: int = 1
    unit: Decimal = Decimal("1")
    digits: Optional[int] = None

    def to_kwh(self, raw: Value) -> Value:
        if is_absent(raw):
            return raw
        return raw * self.coefficient * self.unit

    def delta(self, earlier: int, later: int) -> int:
        """
        Counts between two readings of a counter that may have wrapped once.
        """
        if later >= earlier:
            return later - earlier
        if self.digits is None:
            raise ValueError("counter went backwards and D7 is unknown")
        return later + 10 ** self.digits - earlier


def decode_energy_raw(edt: bytes) -> Value:
    """
    E0/E3 cumulative energy counter (unsigned 32-bit counts; 0xFFFFFFFE = no data).
    """
    raw = int.from_bytes(_need(edt, 4, "cumulative energy"), "big")
    if raw == 0xFFFFFFFE:
        return NO_DATA
    if raw > 99999999:
        raise FrameError(f"cumulative energy {raw} out of range")
    return raw


@dataclass(frozen=True)
class FixedTimeEnergy:
    """
    EA/EB: the cumulative counter at the last :00 or :30, with the meter's time.
    """

    timestamp: Optional[datetime.datetime]
    raw: Value


def decode_fixed_time(edt: bytes) -> FixedTimeEnergy:
    edt = _need(edt, 11, "EA/EB")
    year = int.from_bytes(edt[0:2], "big")
    month, day, hour, minute, second = edt[2:7]
    try:
        ts = datetime.datetime(year, month, day, hour, minute, second)
    except ValueError:
        ts = None  # the meter has no clock yet (e.g. all 0xFF)
    return FixedTimeEnergy(ts, decode_energy_raw(edt[7:11]))


@dataclass(frozen=True)
class HistoryDay:
    """
    E2/E4: 48 half-hourly cumulative values of one day (slot 0 = 00:00).

    @ivar day: days before today (0-99), or C{None} when E5 was never set.
    """

    day: Optional[int]
    slots: tuple = field(default_factory=tuple)


def decode_history(edt: bytes) -> HistoryDay:
    edt = _need(edt, 194, "E2/E4")
    day = int.from_bytes(edt[:2], "big")
    slots = tuple(decode_energy_raw(edt[2 + 4 * i:6 + 4 * i]) for i in range(48))
    return HistoryDay(None if day == 0x00FF else day, slots)


def decode_operation_status(edt: bytes) -> bool:
    """80: C{True} when on (0x30), C{False} when off (0x31)."""
    code = _need(edt, 1, "80")[0]
    if code not in (0x30, 0x31):
        raise FrameError(f"operation status {code:#04x} is not defined")
    return code == 0x30


def decode_fault(edt: bytes) -> bool:
    """88: C{True} when the meter reports a fault (0x41), C{False} (0x42) when not."""
    code = _need(edt, 1, "88")[0]
    if code not in (0x41, 0x42):
        raise FrameError(f"fault status {code:#04x} is not defined")
    return code == 0x41


def decode_maker_code(edt: bytes) -> str:
    """8A: the 3-byte maker code as 6 hex digits."""
    return _need(edt, 3, "8A").hex().upper()


def decode_serial_number(edt: bytes) -> Optional[str]:
    """
    8D: the 12-byte ASCII serial number, trimmed; C{None} when it is blank
    (spaces, NULs) or not printable ASCII.
    """
    text = _need(edt, 12, "8D").decode("ascii", "replace").strip(" \x00")
    if not text or not all(0x21 <= ord(c) <= 0x7E for c in text):
        return None
    return text


def decode_instance_list(edt: bytes) -> tuple:
    """
    Node profile D5/D6: a count then that many 3-byte EOJs.
    """
    if not edt:
        raise FrameError("empty instance list")
    count = edt[0]
    if len(edt) != 1 + 3 * count:
        raise FrameError(f"instance list says {count} objects but has {len(edt) - 1} bytes")
    return tuple(int.from_bytes(edt[1 + 3 * i:4 + 3 * i], "big") for i in range(count))


def decode_reading(properties, scale: Optional[EnergyScale]) -> Reading:
    """
    Decode E7, E8, E0 and E3 from a frame's properties.  A property with PDC 0
    (Get_SNA) becomes L{NO_DATA}; kWh are L{NO_SCALE} while C{scale} is not
    known (a guessed unit would be a wrong value).

    @raise FrameError: a property has the wrong size or an invalid value.
    """
    values: dict = {}
    for p in properties:
        if p.epc == POWER:
            values["power_w"] = decode_power(p.edt) if p.edt else NO_DATA
        elif p.epc == CURRENT:
            if p.edt:
                values["current_r_a"], values["current_t_a"] = decode_current(p.edt)
            else:
                values["current_r_a"] = values["current_t_a"] = NO_DATA
        elif p.epc in (ENERGY_NORMAL, ENERGY_REVERSE):
            which = "normal" if p.epc == ENERGY_NORMAL else "reverse"
            raw = decode_energy_raw(p.edt) if p.edt else NO_DATA
            values[f"energy_{which}_raw"] = raw
            values[f"energy_{which}_kwh"] = scale.to_kwh(raw) if scale else NO_SCALE
    return Reading(**values)


def decode_fixed_reading(properties, scale: Optional[EnergyScale]) -> Optional[FixedReading]:
    """
    Decode EA and EB from a frame's properties.

    @return: a L{FixedReading}, or C{None} when the frame carries neither.
    @raise FrameError: a value is malformed.
    """
    values: dict = {}
    for p in properties:
        if p.epc in (FIXED_NORMAL, FIXED_REVERSE):
            which = "normal" if p.epc == FIXED_NORMAL else "reverse"
            fixed = decode_fixed_time(p.edt)
            values[f"energy_{which}_raw"] = fixed.raw
            values[f"energy_{which}_kwh"] = scale.to_kwh(fixed.raw) if scale else NO_SCALE
            values["meter_time"] = fixed.timestamp
    return FixedReading(**values) if values else None


# -- history: the meter's own 30-minute record (E2/E4 with E5; EC with ED) ----------

METER_TIME = 0x97
METER_DATE = 0x98
GET_MAP = 0x9F
HISTORY2 = 0xEC
HISTORY2_TIME = 0xED

#: EC carries at most this many (normal, reverse) pairs.
HISTORY2_MAX = 12


def encode_history_day(day: int) -> bytes:
    """E5: the day E2/E4 report, 0 = today, n = n days ago (0-99)."""
    if not 0 <= day <= 99:
        raise ArgumentError(f"history day {day} is outside 0-99")
    return bytes([day])


def decode_meter_clock(time_edt: bytes, date_edt: bytes) -> datetime.datetime:
    """
    0x97 (hh mm) and 0x98 (YYYY MM DD): the meter's own clock, naive, in its
    local time (JST).

    @raise FrameError: malformed, or not a real date and time.
    """
    t = _need(time_edt, 2, "97")
    d = _need(date_edt, 4, "98")
    try:
        return datetime.datetime(int.from_bytes(d[:2], "big"), d[2], d[3], t[0], t[1])
    except ValueError:
        raise FrameError(f"the meter's clock reads {d.hex()} {t.hex()}") from None


def decode_property_map(edt: bytes) -> frozenset:
    """
    0x9D/0x9E/0x9F: the first byte counts the EPCs; below 16 they follow as a
    list, from 16 on as a 16-byte bitmap (byte i, bit b: EPC 0x80 + 0x10 b + i).
    """
    if not edt:
        raise FrameError("empty property map")
    count = edt[0]
    if count < 16:
        if len(edt) != 1 + count:
            raise FrameError(f"property map says {count} EPCs but has {len(edt) - 1} bytes")
        return frozenset(edt[1:])
    if len(edt) != 17:
        raise FrameError(f"property bitmap of {len(edt) - 1} bytes, not 16")
    epcs = frozenset(0x80 + 0x10 * b + i for i in range(16) for b in range(8)
                     if edt[1 + i] >> b & 1)
    if len(epcs) != count:
        raise FrameError(f"property map says {count} EPCs but its bitmap has {len(epcs)}")
    return epcs


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
        counts = scale.delta(earlier, later)
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
