"""
Decoding of the low-voltage smart electric energy meter class (0x028801) and of
the node profile's instance list, into the values of L{smartmeter_tx.model}.

Pure: no Twisted, no I/O.  A value the meter marks as "no data", underflow or
overflow decodes to an L{Absent} value, never to 0: a wrong number is worse than
a missing one.  Quantities are L{Decimal} so 0.1 A and 0.01 kWh stay exact.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable, Optional

from smartmeter_tx.echonet.frame import Property
from smartmeter_tx.errors import FrameError
from smartmeter_tx.model import (
    NO_DATA, NO_PHASE, NO_SCALE, OVERFLOW, UNDERFLOW, Absent, FixedReading,
    Reading, Value,
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
HISTORY2 = 0xEC
HISTORY2_TIME = 0xED
METER_TIME = 0x97
METER_DATE = 0x98
GET_MAP = 0x9F
# Node profile 0x0EF001.
INSTANCE_LIST = 0xD5
SELF_INSTANCE_LIST = 0xD6


#: E1 unit code -> kWh per count.
UNITS = {
    0x00: Decimal("1"), 0x01: Decimal("0.1"), 0x02: Decimal("0.01"), 0x03: Decimal("0.001"),
    0x04: Decimal("0.0001"), 0x0A: Decimal("10"), 0x0B: Decimal("100"), 0x0C: Decimal("1000"),
    0x0D: Decimal("10000"),
}


def sized(edt: Optional[bytes], size: int, name: str) -> bytes:
    """
    @return: C{edt}, checked to be C{size} bytes long.
    @raise FrameError: it is missing or of another size (C{name} says which).
    """
    if edt is None or len(edt) != size:
        raise FrameError(f"{name} must be {size} bytes, got {0 if edt is None else len(edt)}")
    return edt


def decode_power(edt: bytes) -> Value:
    """
    E7 instantaneous power: signed 32-bit watts (negative = reverse flow).
    """
    raw = int.from_bytes(sized(edt, 4, "E7"), "big", signed=True)
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
    edt = sized(edt, 4, "E8")
    r = int.from_bytes(edt[:2], "big", signed=True)
    t = int.from_bytes(edt[2:], "big", signed=True)
    return _phase(r, NO_DATA), _phase(t, NO_PHASE)


def decode_coefficient(edt: Optional[bytes]) -> int:
    """
    D3 coefficient; a meter without D3 (Get_SNA, or C{None}) means 1.
    """
    if not edt:
        return 1
    value = int.from_bytes(sized(edt, 4, "D3"), "big")
    if not 0 <= value <= 999999:
        raise FrameError(f"D3 coefficient {value} out of range")
    return value


def decode_unit(edt: bytes) -> Decimal:
    """
    E1 unit of the cumulative energy counters, as kWh per count.
    """
    code = sized(edt, 1, "E1")[0]
    if code not in UNITS:
        raise FrameError(f"E1 unit code {code:#04x} is not defined")
    return UNITS[code]


def decode_digits(edt: bytes) -> int:
    """
    D7 number of effective digits of the cumulative counters (1-8).
    """
    value = sized(edt, 1, "D7")[0]
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
        if isinstance(raw, Absent):
            return raw
        return raw * self.coefficient * self.unit

    @property
    def modulus_kwh(self) -> Optional[Decimal]:
        """Where the counters wrap, in kWh; C{None} while D7 is unknown."""
        if self.digits is None:
            return None
        return Decimal(10 ** self.digits) * self.coefficient * self.unit

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
    raw = int.from_bytes(sized(edt, 4, "cumulative energy"), "big")
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
    edt = sized(edt, 11, "EA/EB")
    year = int.from_bytes(edt[0:2], "big")
    month, day, hour, minute, second = edt[2:7]
    try:
        ts = datetime.datetime(year, month, day, hour, minute, second)
    except ValueError:
        ts = None  # the meter has no clock yet (e.g. all 0xFF)
    return FixedTimeEnergy(ts, decode_energy_raw(edt[7:11]))


def decode_operation_status(edt: bytes) -> bool:
    """80: C{True} when on (0x30), C{False} when off (0x31)."""
    code = sized(edt, 1, "80")[0]
    if code not in (0x30, 0x31):
        raise FrameError(f"operation status {code:#04x} is not defined")
    return code == 0x30


def decode_fault(edt: bytes) -> bool:
    """88: C{True} when the meter reports a fault (0x41), C{False} (0x42) when not."""
    code = sized(edt, 1, "88")[0]
    if code not in (0x41, 0x42):
        raise FrameError(f"fault status {code:#04x} is not defined")
    return code == 0x41


#: Makers that put their ECHONET manufacturer code (8A) in Japan's
#: low-voltage smart meters, and the grid companies some meters name instead,
#: as the ECHONET Consortium's code list has them.
METER_MAKERS = {
    "000001": "Hitachi",
    "000006": "Mitsubishi Electric",
    "00000B": "Panasonic",
    "000016": "Toshiba",
    "00002E": "Shikoku Instrumentation",
    "000035": "Toshiba Toko Meter Systems",
    "000041": "Enegate",
    "000052": "Osaki Electric",
    "000085": "Takaoka Toko",
    "000099": "TEPCO",
    "00009A": "Kansai Electric Power Transmission and Distribution",
    "0000A3": "Chubu Electric Power Grid",
    "0000AE": "Shikoku Electric Power Transmission and Distribution",
    "0000B5": "Chugoku Electric Power",
    "0000B8": "Hokkaido Electric Power Network",
    "0000BB": "Hokuriku Electric Power Transmission and Distribution",
    "0000BC": "Tohoku Electric Power Network",
    "0000BF": "Kyushu Electric Power Transmission and Distribution",
    "0000C2": "Tohoku Keiki Kogyo",
    "0000CB": "Fuji Electric",
    "000140": "Landis+Gyr",
}


def maker_name(code: Optional[str]) -> Optional[str]:
    """
    The maker's name for an 8A code (6 hex digits), or C{None} when the
    code is not one of L{METER_MAKERS}.
    """
    return METER_MAKERS.get(code.upper()) if code else None


def decode_maker_code(edt: bytes) -> str:
    """8A: the 3-byte maker code as 6 hex digits."""
    return sized(edt, 3, "8A").hex().upper()


def decode_serial_number(edt: bytes) -> Optional[str]:
    """
    8D: the 12-byte ASCII serial number, trimmed; C{None} when it is blank
    (spaces, NULs) or not printable ASCII.
    """
    text = sized(edt, 12, "8D").decode("ascii", "replace").strip(" \x00")
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


def decode_reading(properties: Iterable[Property], scale: Optional[EnergyScale]) -> Reading:
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


def decode_fixed_reading(properties: Iterable[Property],
                         scale: Optional[EnergyScale]) -> Optional[FixedReading]:
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


def decode_meter_clock(time_edt: bytes, date_edt: bytes) -> datetime.datetime:
    """
    0x97 (hh mm) and 0x98 (YYYY MM DD): the meter's own clock, naive, in its
    local time (JST).

    @raise FrameError: malformed, or not a real date and time.
    """
    t = sized(time_edt, 2, "97")
    d = sized(date_edt, 4, "98")
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
