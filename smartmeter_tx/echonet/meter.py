"""
Decoding of the low-voltage smart electric energy meter class (0x028801) and of
the node profile's instance list.

Pure: no Twisted, no I/O.  A value the meter marks as "no data", underflow or
overflow decodes to an L{Absent} value, never to 0: a wrong number is worse than
a missing one.  Quantities are L{Decimal} so 0.1 A and 0.01 kWh stay exact.
"""

from __future__ import annotations

import datetime
import dataclasses
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Optional, Union

from smartmeter_tx.errors import FrameError

# EPCs of class 0x028801.
OPERATION_STATUS = 0x80
FAULT_STATUS = 0x88
MAKER_CODE = 0x8A
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


@dataclass(frozen=True)
class Absent:
    """
    A property value the meter does not provide.  Falsy, never equal to a number.
    """

    reason: str

    def __bool__(self) -> bool:
        return False


NO_DATA = Absent("no data")
UNDERFLOW = Absent("underflow")
OVERFLOW = Absent("overflow")
NO_PHASE = Absent("phase not present")
NO_SCALE = Absent("energy unit not known yet")

Value = Union[int, Decimal, Absent]


def is_absent(value) -> bool:
    return isinstance(value, Absent)


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


def json_value(value):
    """
    The JSON form of a decoded value: numbers stay numbers (a fractional
    L{Decimal} through its exact string form), L{Absent} becomes C{None}, a
    datetime its ISO 8601 text.
    """
    if value is None or isinstance(value, Absent):
        return None
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(str(value))
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return value


def _record_number(value, integer: bool) -> Value:
    # A record is ours (data log, the service's /latest), but it crossed a file
    # or a socket: anything that is not a number becomes "no data", never 0.
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return NO_DATA
    if isinstance(value, float) and not math.isfinite(value):
        return NO_DATA  # json.loads takes NaN and Infinity
    if integer:
        return int(value) if value == int(value) else NO_DATA
    return Decimal(str(value))


@dataclass(frozen=True)
class Reading:
    """
    What one Get_Res carried, decoded.  A field is C{None} when it was not asked
    for, an L{Absent} when the meter marked it as unavailable.

    Its record form (L{to_record}, L{from_record}) is the one shape a reading
    has outside the process: the data log's lines, the service's C{/latest}
    and what C{--service} reads back.
    """

    power_w: Optional[Value] = None
    current_r_a: Optional[Value] = None
    current_t_a: Optional[Value] = None
    energy_normal_kwh: Optional[Value] = None
    energy_reverse_kwh: Optional[Value] = None
    energy_normal_raw: Optional[Value] = None
    energy_reverse_raw: Optional[Value] = None

    #: The fields a record holds, in order; the raw counts stay inside.
    RECORD_FIELDS = ("power_w", "current_r_a", "current_t_a", "energy_normal_kwh",
                     "energy_reverse_kwh")
    INSTANT_FIELDS = RECORD_FIELDS[:3]
    ENERGY_FIELDS = RECORD_FIELDS[3:]

    @property
    def has_energy(self) -> bool:
        return self.energy_normal_kwh is not None or self.energy_reverse_kwh is not None

    def to_record(self, fields=RECORD_FIELDS) -> dict:
        """
        @return: a JSON-ready dict of the C{fields} that were asked for; an
            L{Absent} value is C{None} (JSON null), never 0.
        """
        return {name: json_value(getattr(self, name)) for name in fields
                if getattr(self, name) is not None}

    @classmethod
    def from_record(cls, record: dict, fields=RECORD_FIELDS) -> "Reading":
        """
        The reverse of L{to_record}: a missing field was not asked for
        (C{None}), a null or non-numeric one is L{NO_DATA}.
        """
        return cls(**{name: _record_number(record[name], name == "power_w")
                      for name in fields if name in record})

    def with_energy(self, energy: "Reading") -> "Reading":
        """This reading with the energy fields of C{energy}."""
        return dataclasses.replace(self, **{
            name: getattr(energy, name) for name in
            self.ENERGY_FIELDS + ("energy_normal_raw", "energy_reverse_raw")})


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


@dataclass(frozen=True)
class FixedReading:
    """
    EA/EB from the meter's half-hourly INF: the cumulative counters at the
    last :00 or :30, by the meter's own clock.  A field is C{None} when the
    frame did not carry it.
    """

    meter_time: Optional[datetime.datetime] = None
    energy_normal_raw: Optional[Value] = None
    energy_normal_kwh: Optional[Value] = None
    energy_reverse_raw: Optional[Value] = None
    energy_reverse_kwh: Optional[Value] = None

    KIND = "fixed"

    def to_record(self) -> dict:
        """
        @return: the data-log record: C{kind} C{fixed}, the meter's time and
            the counters carried (raw and kWh; kWh null while the scale is not
            known).
        """
        record = {"kind": self.KIND, "meter_time": json_value(self.meter_time)}
        for name in ("energy_normal_raw", "energy_normal_kwh", "energy_reverse_raw",
                     "energy_reverse_kwh"):
            if getattr(self, name) is not None:
                record[name] = json_value(getattr(self, name))
        return record


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
