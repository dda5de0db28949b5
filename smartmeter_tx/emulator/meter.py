"""
The virtual low-voltage smart electric energy meter (ECHONET Lite class
0x028801) and its node profile (0x0EF001).

Pure and deterministic: no Twisted, no I/O, no wall clock.  Every method that
depends on time takes the meter's local time (a naive L{datetime.datetime}) as
an argument, and every value is a function of the seed, the options and that
time only (C{start} only sets the epoch, which no read at or after C{start}
can reach), so two models with the same seed answer the same question with the
same bytes, whenever each started.

What the meter measures is its L{Household}'s
(L{smartmeter_tx.emulator.household}); this module counts it the way a meter
does (E0/E3 with D3, E1 and D7, outages, the history it keeps) and answers
ECHONET Lite requests about it.

This module also holds the inverse of L{smartmeter_tx.echonet.meter}'s decoders
(the encoders a meter needs) and the ground-truth record.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Callable, Optional

from smartmeter_tx.echonet import meter as em
from smartmeter_tx.echonet import history as H
from smartmeter_tx import model
from smartmeter_tx.echonet.frame import (
    GET, GET_RES, GET_SNA, INF, INF_REQ, INF_SNA, METER, NODE_PROFILE, SET_RES, SETC,
    SETC_SNA, SETI, SETI_SNA, Frame, Property,
)
from smartmeter_tx.emulator.household import Household, mix
from smartmeter_tx.errors import ArgumentError, FrameError

__all__ = [
    "MeterModel", "TruthRecord", "encode_property_map", "decode_value", "NO_DATA_U32",
    "check_outage",
]

NO_DATA_U32 = 0xFFFFFFFE
METER_TIME = em.METER_TIME
METER_DATE = em.METER_DATE
HISTORY2 = em.HISTORY2
HISTORY2_TIME = em.HISTORY2_TIME


def encode_property_map(epcs) -> bytes:
    """
    A property map (9D/9E/9F): the count, then the EPCs when fewer than 16,
    else a 16-byte bitmap where byte i bit b means EPC 0x80 + 0x10*b + i.
    """
    epcs = sorted(set(epcs))
    if len(epcs) < 16:
        return bytes([len(epcs)] + epcs)
    bitmap = bytearray(16)
    for epc in epcs:
        if epc < 0x80:
            raise ArgumentError(f"EPC {epc:#04x} cannot appear in a property map")
        bitmap[epc & 0x0F] |= 1 << ((epc - 0x80) >> 4)
    return bytes([len(epcs)]) + bytes(bitmap)


def check_outage(windows) -> tuple:
    """
    Validate outage windows: C{((start, end), ...)} naive datetimes (meter
    local time) with C{start < end}.

    @return: the windows as a tuple of pairs, sorted.
    @raise ArgumentError: a window is malformed.
    """
    out = []
    for window in windows or ():
        try:
            start, end = window
        except (TypeError, ValueError):
            raise ArgumentError("an outage is a (start, end) pair") from None
        if not (isinstance(start, datetime.datetime) and isinstance(end, datetime.datetime)):
            raise ArgumentError("an outage's start and end must be date-times")
        if start.tzinfo is not None or end.tzinfo is not None:
            raise ArgumentError("an outage is in the meter's local time, without a time zone")
        if not start < end:
            raise ArgumentError(f"the outage {start.isoformat()}/{end.isoformat()} does not "
                                "end after it starts")
        out.append((start, end))
    return tuple(sorted(out))


def _u32(v: int) -> bytes:
    return v.to_bytes(4, "big")


def _stamp(t: datetime.datetime) -> bytes:
    return t.year.to_bytes(2, "big") + bytes((t.month, t.day, t.hour, t.minute, t.second))


@dataclass(frozen=True)
class TruthRecord:
    """
    One property value the meter put on the air, and what it means.

    @ivar at: the emulator clock's C{seconds()} when it reached the host.
    @ivar meter_time: the meter's local time when the value was produced.
    @ivar value: the decoded value (see L{decode_value}); for E0/E3/EA/EB
        C{kwh} also carries the value in kWh.  History answers: E2/E4 give
        C{{"day", "date", "slots"}} (C{slots[k]} is the raw count at
        C{date} 00:00 + k x 30 min, an L{model.Absent} for no data), EC gives
        C{{"start", "normal", "reverse"}} (item k at C{start} - k x 30 min);
        compare them with L{MeterModel.slot_truth}.
    """

    at: float
    meter_time: datetime.datetime
    tid: int
    esv: int
    epc: int
    edt: bytes
    value: object
    kwh: Optional[Decimal] = None
    seoj: int = METER

    def to_json(self) -> dict:
        """A JSON-friendly dict (Decimals and datetimes as strings)."""
        return {
            "at": self.at, "meter_time": self.meter_time.isoformat(), "tid": self.tid,
            "esv": self.esv, "seoj": "%06X" % self.seoj, "epc": "%02X" % self.epc,
            "edt": self.edt.hex().upper(), "value": _jsonable(self.value),
            "kwh": None if self.kwh is None else str(self.kwh),
        }


def _jsonable(value):
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, model.Absent):
        return None
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def decode_value(epc: int, edt: bytes, seoj: int = METER):
    """
    Decode one property the way a correct client would, with the project's own
    decoders, for the ground truth.  Unknown EPCs decode to their hex EDT.
    """
    if not edt:
        return None
    if seoj >> 8 == NODE_PROFILE >> 8:
        if epc in (em.INSTANCE_LIST, em.SELF_INSTANCE_LIST):
            return ["%06X" % e for e in em.decode_instance_list(edt)]
        return edt.hex().upper()
    if epc == em.POWER:
        return em.decode_power(edt)
    if epc == em.CURRENT:
        return list(em.decode_current(edt))
    if epc in (em.ENERGY_NORMAL, em.ENERGY_REVERSE):
        return em.decode_energy_raw(edt)
    if epc in (em.FIXED_NORMAL, em.FIXED_REVERSE):
        fixed = em.decode_fixed_time(edt)
        return {"time": fixed.timestamp, "raw": fixed.raw}
    if epc in (em.HISTORY_NORMAL, em.HISTORY_REVERSE):
        day = H.decode_history(edt)
        return {"day": day.day, "slots": list(day.slots)}
    if epc == em.HISTORY_DAY:
        return None if edt[0] == 0xFF else edt[0]
    if epc in (HISTORY2, HISTORY2_TIME):
        start = _decode_time5(edt[:6])
        count = edt[6] if len(edt) > 6 else 0
        if epc == HISTORY2_TIME:
            return {"start": start, "count": count}
        pairs = [(em.decode_energy_raw(edt[7 + 8 * k:11 + 8 * k]),
                  em.decode_energy_raw(edt[11 + 8 * k:15 + 8 * k])) for k in range(count)]
        return {"start": start, "normal": [p[0] for p in pairs],
                "reverse": [p[1] for p in pairs]}
    if epc == METER_TIME and len(edt) == 2:
        return datetime.time(edt[0], edt[1])
    if epc == METER_DATE and len(edt) == 4:
        return datetime.date(int.from_bytes(edt[:2], "big"), edt[2], edt[3])
    if epc in (0x9D, 0x9E, 0x9F):
        return ["%02X" % e for e in sorted(_decode_map(edt))]
    if epc == em.COEFFICIENT:
        return em.decode_coefficient(edt)
    if epc == em.UNIT:
        return em.decode_unit(edt)
    if epc == em.DIGITS:
        return em.decode_digits(edt)
    if epc == em.OPERATION_STATUS:
        return em.decode_operation_status(edt)
    if epc == em.FAULT_STATUS:
        return em.decode_fault(edt)
    return edt.hex().upper()


def _decode_time5(edt: bytes) -> Optional[datetime.datetime]:
    """YYYY(u16) MM DD hh mm, or C{None} when unset (e.g. all 0xFF)."""
    try:
        return datetime.datetime(int.from_bytes(edt[:2], "big"), edt[2], edt[3], edt[4], edt[5])
    except (ValueError, IndexError):
        return None


def _decode_map(edt: bytes) -> set:
    """The inverse of L{encode_property_map}."""
    count = edt[0]
    if count < 16:
        return set(edt[1:1 + count])
    return {0x80 + 0x10 * b + i for i in range(16) for b in range(8) if edt[1 + i] >> b & 1}


class MeterModel:
    """
    A deterministic meter.  Construct it, then call L{handle} with request
    frames and the meter's current time.

    @ivar coefficient: D3, or C{None} for a meter without D3 (Get_SNA, like
        the meter of captures.py §1).
    @ivar unit: the E1 code (0x02 = 0.01 kWh).
    @ivar digits: D7; the counters wrap at 10**digits.
    @ivar solar_w: peak solar output in W, 0 for none.
    @ivar initial_counts, initial_reverse: E0 and E3 at
        L{smartmeter_tx.emulator.household.REFERENCE}, a fixed midnight,
        whether or not the meter existed then.  The counters are anchored
        there, not at C{start}, and run forwards and backwards from it (older
        readings are smaller, modulo 10**digits): so every reading, and every
        slot of the history, is a function of the seed, the meter's options
        and the time only, whenever the emulator starts and whatever its
        time scale.
    @ivar history_days: how many days the meter remembers: E2/E4/EC have
        data for boundaries from midnight C{history_days} days before today
        (so E5 = 0 ... C{history_days} are readable); older slots read as "no
        data" (0xFFFFFFFE).  The meter was installed (the epoch) at midnight
        C{history_days} before C{start}: nothing exists before that, not even
        E0 (like a freshly installed meter).
    @ivar outage: C{((start, end), ...)} windows, meter local time, start
        inclusive, end exclusive, during which the meter has no readings.
        The model: the metrology keeps counting (the household keeps
        consuming and nothing resets), but the meter neither answers readings
        nor records them: inside a window E0/E3 read 0xFFFFFFFE, E7
        0x7FFFFFFE, E8 0x7FFE/0x7FFE, and every :00/:30 boundary inside it is
        0xFFFFFFFE in EA/EB, E2/E4 and EC, for ever.  The first reading after
        the window (E0, or the first boundary at or after C{end}) carries the
        energy used during the outage, so the difference between the last
        valid boundary before and the first one after is the whole gap's energy.
    @ivar has_history2: whether the meter has EC/ED (historical data 2);
        without them they are absent from 9F/9E and answered with SNA.
    """

    def __init__(self, seed: int = 0, start: datetime.datetime = datetime.datetime(2024, 6, 1, 12),
                 coefficient: Optional[int] = None, unit: int = 0x02, digits: int = 6,
                 solar_w: int = 0, history_days: int = 45,
                 initial_counts: Optional[int] = None, outage=(),
                 history2: bool = True) -> None:
        if unit not in em.UNITS:
            raise ArgumentError(f"E1 unit code {unit:#04x} is not defined")
        if not 1 <= digits <= 8:
            raise ArgumentError("D7 digits must be 1 to 8")
        if coefficient is not None and not 1 <= coefficient <= 999999:
            raise ArgumentError("D3 coefficient must be 1 to 999999")
        if solar_w < 0 or history_days < 0:
            raise ArgumentError("solar power and history days must not be negative")
        self.outage = check_outage(outage)
        self.seed = seed
        self.start = start.replace(microsecond=0)
        self.coefficient = coefficient
        self.unit = unit
        self.digits = digits
        self.solar_w = solar_w
        self.history_days = history_days
        self.has_history2 = bool(history2)
        #: The meter's installation: midnight C{history_days} before start.
        self.epoch = datetime.datetime.combine(
            start.date() - datetime.timedelta(days=history_days), datetime.time())
        # Watt-seconds per count of the cumulative counters.
        self._ws_per_count = Fraction(em.UNITS[unit]) * (coefficient or 1) * 3600 * 1000
        modulus = 10 ** digits
        if initial_counts is None:
            initial_counts = modulus // 4 + mix(seed, 1) % max(modulus // 2, 1)
        self.initial_counts = initial_counts % modulus
        self.initial_reverse = (modulus // 10 + mix(seed, 2) % max(modulus // 10, 1)
                                if solar_w else 0)
        self.history_day = 0xFF  # E5, never set
        self.history2_time = b"\xff\xff\xff\xff\xff\xff\x01"  # ED initial value
        self.location = 0x61
        self.household = Household(seed, solar_w)
        # Integrate from the reference to start now, not at the first reading
        # (a fraction of a second a year away: the host's first Get must not wait).
        self.household.ws(self.start)
        self._tid = mix(seed, 3) & 0x0FFF
        self.mac = "%016X" % ((mix(seed, 4) & 0x0000FFFFFFFFFFFF) | 0x00C0000000000000)
        self.serial = b"F%09d\x00\x00" % (mix(seed, 5) % 10 ** 9)


    def power(self, now: datetime.datetime) -> int:
        """E7: instantaneous power in W (negative while exporting)."""
        return self.household.power(now)

    def currents(self, now: datetime.datetime) -> tuple:
        """E8: (R, T) in units of 0.1 A."""
        return self.household.currents(now)

    def counters(self, now: datetime.datetime) -> tuple:
        """
        (E0, E3) raw counts at C{now} as the meter's metrology counts them,
        wrapped at 10**digits; C{None} each before the meter was installed
        (the epoch).  Outages do not stop this counter (see L{reading}).
        """
        if now < self.epoch:
            return None, None
        imp, exp = self.household.ws(now)
        modulus = 10 ** self.digits
        return ((self.initial_counts + math.floor(imp / self._ws_per_count)) % modulus,
                (self.initial_reverse + math.floor(exp / self._ws_per_count)) % modulus)

    def in_outage(self, now: datetime.datetime) -> bool:
        """Whether C{now} lies in an outage window (start inclusive, end exclusive)."""
        return any(a <= now < b for a, b in self.outage)

    def reading(self, now: datetime.datetime) -> tuple:
        """
        (E0, E3) as the meter reports them at C{now}: L{counters}, or
        C{(None, None)} inside an outage window.
        """
        if self.in_outage(now):
            return None, None
        return self.counters(now)

    def oldest_boundary(self, now: datetime.datetime) -> datetime.datetime:
        """The oldest boundary the meter still remembers at C{now}: midnight
        C{history_days} days before today, but never before the epoch."""
        return max(self.epoch, datetime.datetime.combine(
            now.date() - datetime.timedelta(days=self.history_days), datetime.time()))

    def slot_truth(self, start: datetime.datetime,
                   now: Optional[datetime.datetime] = None) -> tuple:
        """
        Ground truth for history reads: the cumulative (normal, reverse) raw
        counts the meter stores for the boundary C{start} (a :00 or :30), the
        values E2/E4/EC report for it and E0/E3 showed at that instant.
        C{None} where the meter has no data: in an outage, before the epoch,
        and, given C{now}, in the future or beyond the history depth.
        """
        if not model.is_slot_boundary(start):
            raise ArgumentError(f"{start} is not a :00 or :30 boundary")
        if now is not None and not self.oldest_boundary(now) <= start <= now:
            return None, None
        return self.reading(start)

    def to_kwh(self, raw: int) -> Decimal:
        return raw * (self.coefficient or 1) * em.UNITS[self.unit]

    def _fixed(self, now: datetime.datetime, which: int) -> bytes:
        at = model.slot_start(now)
        raw = self.reading(at)[which]
        return _stamp(at) + _u32(NO_DATA_U32 if raw is None else raw)

    def _history(self, now: datetime.datetime, which: int) -> bytes:
        if self.history_day == 0xFF:
            return b"\x00\xff" + _u32(NO_DATA_U32) * 48
        day = datetime.datetime.combine(now.date(), datetime.time()) - datetime.timedelta(
            days=self.history_day)
        out = bytearray(self.history_day.to_bytes(2, "big"))
        for k in range(48):
            raw = self.slot_truth(day + datetime.timedelta(minutes=30 * k), now)[which]
            out += _u32(NO_DATA_U32 if raw is None else raw)
        return bytes(out)

    def _history2(self, now: datetime.datetime) -> bytes:
        spec = self.history2_time
        count = spec[6]
        out = bytearray(spec[:6] + bytes([count]))
        try:
            start = datetime.datetime(int.from_bytes(spec[:2], "big"), spec[2], spec[3],
                                      spec[4], spec[5])
        except ValueError:
            start = None
        for k in range(count):
            pair = ((None, None) if start is None
                    else self.slot_truth(start - datetime.timedelta(minutes=30 * k), now))
            out += b"".join(_u32(NO_DATA_U32 if v is None else v) for v in pair)
        return bytes(out)

    # -- properties --------------------------------------------------------

    @property
    def settable(self) -> tuple:
        """The EPCs SetC/SetI accept (9E)."""
        if self.has_history2:
            return (0x81, em.HISTORY_DAY, HISTORY2_TIME)
        return (0x81, em.HISTORY_DAY)

    def _getters(self) -> dict:
        getters: dict = {
            em.OPERATION_STATUS: lambda now: b"\x30",
            0x81: lambda now: bytes([self.location]),
            0x82: lambda now: b"\x00\x00F\x00",
            em.FAULT_STATUS: lambda now: b"\x42",
            em.MAKER_CODE: lambda now: b"\x00\x00\x16",
            0x8D: lambda now: self.serial,
            0x97: lambda now: bytes((now.hour, now.minute)),
            0x98: lambda now: now.year.to_bytes(2, "big") + bytes((now.month, now.day)),
            em.DIGITS: lambda now: bytes([self.digits]),
            em.ENERGY_NORMAL: lambda now: _u32(_or_nodata(self.reading(now)[0])),
            em.UNIT: lambda now: bytes([self.unit]),
            em.HISTORY_NORMAL: lambda now: self._history(now, 0),
            em.ENERGY_REVERSE: lambda now: _u32(_or_nodata(self.reading(now)[1])),
            em.HISTORY_REVERSE: lambda now: self._history(now, 1),
            em.HISTORY_DAY: lambda now: bytes([self.history_day]),
            em.POWER: lambda now: (b"\x7f\xff\xff\xfe" if self.in_outage(now)
                                   else self.power(now).to_bytes(4, "big", signed=True)),
            em.CURRENT: lambda now: (b"\x7f\xfe\x7f\xfe" if self.in_outage(now) else b"".join(
                v.to_bytes(2, "big", signed=True) for v in self.currents(now))),
            em.FIXED_NORMAL: lambda now: self._fixed(now, 0),
            em.FIXED_REVERSE: lambda now: self._fixed(now, 1),
        }
        if self.has_history2:
            getters[HISTORY2] = self._history2
            getters[HISTORY2_TIME] = lambda now: self.history2_time
        if self.coefficient is not None:
            getters[em.COEFFICIENT] = lambda now: _u32(self.coefficient)
        getters[0x9D] = lambda now: encode_property_map((0x80, 0x81, 0x88))
        getters[0x9E] = lambda now: encode_property_map(self.settable)
        getters[0x9F] = lambda now: encode_property_map(list(getters) + [0x9F])
        return getters

    def _node_getters(self) -> dict:
        getters: dict = {
            0x80: lambda now: b"\x30",
            0x82: lambda now: b"\x01\x0c\x01\x00",
            0x8A: lambda now: b"\x00\x00\x16",
            0xD3: lambda now: b"\x00\x00\x01",
            0xD4: lambda now: b"\x00\x02",
            em.INSTANCE_LIST: lambda now: b"\x01" + METER.to_bytes(3, "big"),
            em.SELF_INSTANCE_LIST: lambda now: b"\x01" + METER.to_bytes(3, "big"),
            0xD7: lambda now: b"\x01\x02\x88",
        }
        getters[0x9D] = lambda now: encode_property_map((0x80, em.INSTANCE_LIST))
        getters[0x9E] = lambda now: encode_property_map(())
        getters[0x9F] = lambda now: encode_property_map(list(getters) + [0x9F])
        return getters

    def get(self, epc: int, now: datetime.datetime) -> Optional[bytes]:
        """The EDT of a meter property, or C{None} if the meter has no such property."""
        getter = self._getters().get(epc)
        return None if getter is None else getter(now)

    def _set(self, epc: int, edt: bytes, now: datetime.datetime) -> bool:
        if epc == 0x81 and len(edt) == 1:
            self.location = edt[0]
            return True
        if epc == em.HISTORY_DAY and len(edt) == 1 and edt[0] <= 99:
            self.history_day = edt[0]
            return True
        if (epc == HISTORY2_TIME and self.has_history2 and len(edt) == 7
                and 1 <= edt[6] <= 12 and edt[5] in (0, 30)):
            try:
                at = datetime.datetime(int.from_bytes(edt[:2], "big"), edt[2], edt[3], edt[4], edt[5])
            except ValueError:
                return False
            if at > now:
                return False
            self.history2_time = bytes(edt)
            return True
        return False

    # -- frames ------------------------------------------------------------

    def next_tid(self) -> int:
        """The TID of the meter's own next notification."""
        self._tid = (self._tid + 1) & 0xFFFF
        return self._tid

    def handle(self, data: bytes, now: datetime.datetime) -> Optional[Frame]:
        """
        Answer one ECHONET Lite request.

        @return: the reply frame, or C{None} when the meter stays silent
            (garbage, a frame for another object, SetI success, a response).
        """
        try:
            request = Frame.decode(data)
        except FrameError:
            return None
        eoj = request.deoj
        if eoj in (METER, METER & 0xFFFF00):
            getters, own = self._getters(), METER
        elif eoj in (NODE_PROFILE, NODE_PROFILE & 0xFFFF00):
            getters, own = self._node_getters(), NODE_PROFILE
        else:
            return None
        esv = request.esv
        if esv in (GET, INF_REQ):
            props, ok = [], True
            for p in request.properties:
                getter = getters.get(p.epc)
                if getter is None:
                    ok = False
                    props.append(Property(p.epc))
                else:
                    props.append(Property(p.epc, getter(now)))
            if esv == GET:
                reply_esv = GET_RES if ok else GET_SNA
            else:
                reply_esv = INF if ok else INF_SNA
            return Frame(request.tid, own, request.seoj, reply_esv, tuple(props))
        if esv in (SETC, SETI):
            props, ok = [], True
            for p in request.properties:
                if own == METER and p.epc in self.settable and self._set(p.epc, p.edt, now):
                    props.append(Property(p.epc))
                else:
                    ok = False
                    props.append(p)
            if ok:
                if esv == SETI:
                    return None
                return Frame(request.tid, own, request.seoj, SET_RES,
                             tuple(Property(p.epc) for p in request.properties))
            return Frame(request.tid, own, request.seoj, SETC_SNA if esv == SETC else SETI_SNA,
                         tuple(props))
        return None

    def instance_list_inf(self) -> Frame:
        """
        The node profile's D5 announcement the meter multicasts after PANA
        (captures.py §4: C{108100000EF0010EF0017301D50401028801}).
        """
        return Frame(self.next_tid(), NODE_PROFILE, NODE_PROFILE, INF,
                     (Property(em.INSTANCE_LIST, b"\x01" + METER.to_bytes(3, "big")),))

    def fixed_time_inf(self, now: datetime.datetime, controller: int) -> Frame:
        """
        The INF pushed after every :00/:30 (captures.py §1 and §4): EA,
        plus EB when the meter also counts reverse energy (solar).
        """
        props = [Property(em.FIXED_NORMAL, self._fixed(now, 0))]
        if self.solar_w:
            props.append(Property(em.FIXED_REVERSE, self._fixed(now, 1)))
        return Frame(self.next_tid(), METER, controller, INF, tuple(props))

    def truth_of(self, frame: Frame, at: float, now: datetime.datetime) -> list:
        """
        The ground-truth records of a frame the meter sent.
        """
        out = []
        for p in frame.properties:
            if not p.edt:
                continue
            value = decode_value(p.epc, p.edt, frame.seoj)
            if (frame.seoj == METER and p.epc in (em.HISTORY_NORMAL, em.HISTORY_REVERSE)
                    and value["day"] is not None):
                # The day the slots belong to, by the meter's own clock.
                value["date"] = now.date() - datetime.timedelta(days=value["day"])
            kwh = None
            if frame.seoj == METER:
                raw = value.get("raw") if isinstance(value, dict) and "raw" in value else value
                if p.epc in (em.ENERGY_NORMAL, em.ENERGY_REVERSE, em.FIXED_NORMAL,
                             em.FIXED_REVERSE) and isinstance(raw, int):
                    kwh = self.to_kwh(raw)
            out.append(TruthRecord(at, now, frame.tid, frame.esv, p.epc, p.edt, value, kwh,
                                   frame.seoj))
        return out


def _or_nodata(raw: Optional[int]) -> int:
    return NO_DATA_U32 if raw is None else raw


TruthSink = Callable[[TruthRecord], None]
