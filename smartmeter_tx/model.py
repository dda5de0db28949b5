"""
The product's own record of a meter's values, shared by every layer above the
codecs: a value that may be absent, the reading and its record form (the data
log, C{/latest}, C{--service}), the meter's half-hourly EA/EB, one 30-minute
slot of its history, Japan's time and the half-hour slot arithmetic.

Pure: no Twisted, no I/O.  A value the meter marks as "no data", underflow or
overflow is an L{Absent} value, never 0: a wrong number is worse than a
missing one.  Quantities are L{Decimal} so 0.1 A and 0.01 kWh stay exact.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Iterable, Iterator, Optional, Union

from smartmeter_tx.errors import FrameError

if TYPE_CHECKING:  # typing.TypeIs is Python 3.13's
    from typing_extensions import TypeIs

__all__ = [
    "amps_text",
    "Absent", "NO_DATA", "UNDERFLOW", "OVERFLOW", "NO_PHASE", "NO_SCALE", "Value", "is_absent",
    "json_value", "parse_json_object", "JST", "SLOT", "slot_start", "is_slot_boundary",
    "slot_range", "Reading", "FixedReading", "HistorySlot",
]


# -- values --------------------------------------------------------------------------

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


def is_absent(value: object) -> TypeIs[Absent]:
    return isinstance(value, Absent)


def amps_text(value: Union[int, float, Decimal]) -> str:
    """
    A current as people read it, everywhere (the page, the check): the
    meter's resolution, 0.1 A, so C{1} and C{1.0} both show as C{"1.0 A"}.
    """
    return f"{Decimal(str(value)):.1f} A"


def json_value(value: object) -> object:
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


def parse_json_object(data: Union[str, bytes]) -> Optional[dict]:
    """
    The JSON object in a file or a line that anyone may have written or
    damaged (the state file, a data-log line), or C{None} for anything else:
    not UTF-8, not JSON, JSON that is not an object, or JSON nested deeper
    than Python's recursion limit (a line of 100,000 C{[}), on which
    C{json.loads} fails with L{RecursionError}, not L{ValueError}.  Never
    raises: the caller treats C{None} as corrupt input.
    """
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return value if isinstance(value, dict) else None


def _record_number(value: object, integer: bool) -> Value:
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

    def to_record(self, fields: Iterable[str] = RECORD_FIELDS) -> dict:
        """
        @return: a JSON-ready dict of the C{fields} that were asked for; an
            L{Absent} value is C{None} (JSON null), never 0.
        """
        return {name: json_value(getattr(self, name)) for name in fields
                if getattr(self, name) is not None}

    @classmethod
    def from_record(cls, record: dict, fields: Iterable[str] = RECORD_FIELDS) -> "Reading":
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


# -- time: Japan's clock and the meter's half-hour slots ----------------------------

#: Japanese meters keep Japan's wall-clock time, which has no daylight saving.
JST = datetime.timezone(datetime.timedelta(hours=9), "JST")
#: The meter records its counters every 30 minutes, at :00 and :30.
SLOT = datetime.timedelta(minutes=30)


def slot_start(t: datetime.datetime) -> datetime.datetime:
    """The last :00 or :30 at or before C{t} (naive or aware, kept as it is)."""
    return t.replace(minute=t.minute - t.minute % 30, second=0, microsecond=0)


def is_slot_boundary(t: datetime.datetime) -> bool:
    """Whether C{t} is exactly a :00 or :30."""
    return t.minute % 30 == 0 and not t.second and not t.microsecond


def slot_range(first: datetime.datetime, end: datetime.datetime) -> Iterator[datetime.datetime]:
    """The slot starts C{first}, C{first + SLOT}, ... before C{end}."""
    t = first
    while t < end:
        yield t
        t += SLOT


# -- records: a reading's one shape outside the process --------------------------------


@dataclass(frozen=True)
class HistorySlot:
    """
    One 30-minute slot of the meter's history.

    @ivar start: the slot's start, aware, in JST.
    @ivar energy_normal_kwh: bought during the slot (next reading minus this).
    @ivar cumulative_normal_kwh: the counter at the slot's start, as the meter
        stored it (the same value E0 showed then).
    @ivar source: C{"E2"} (E2/E4 day reads) or C{"EC"}.
    """

    start: datetime.datetime
    energy_normal_kwh: Value
    energy_reverse_kwh: Value
    cumulative_normal_kwh: Value
    cumulative_reverse_kwh: Value
    source: str

    KIND = "history"
    FIELDS = ("energy_normal_kwh", "energy_reverse_kwh", "cumulative_normal_kwh",
              "cumulative_reverse_kwh")

    @property
    def slot(self) -> str:
        """The slot's start in ISO 8601 with the +09:00 offset: its key."""
        return self.start.isoformat()

    def to_record(self) -> dict:
        record: dict[str, object] = {"kind": self.KIND, "slot": self.slot, "source": self.source}
        record.update((name, json_value(getattr(self, name))) for name in self.FIELDS)
        return record

    @classmethod
    def from_record(cls, record: dict) -> "HistorySlot":
        """
        @raise FrameError: the record has no valid C{slot}.
        """
        try:
            start = datetime.datetime.fromisoformat(record["slot"])
        except (KeyError, TypeError, ValueError):
            raise FrameError("a history record without a valid slot") from None
        if start.tzinfo is None:
            start = start.replace(tzinfo=JST)
        values = {name: _record_number(record.get(name), False) for name in cls.FIELDS}
        return cls(start.astimezone(JST), source=str(record.get("source", "")), **values)

