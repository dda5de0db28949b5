"""
Tests for the history codec of L{smartmeter_tx.echonet.history}: E5, 0x97/0x98,
the property map 0x9F, ED/EC, E2/E4 day readings, slot energy (no data, the
counter's wrap, D3/E1 missing) and the history record.  Pure: no Twisted.

The E2 EDTs start from the real §21 capture (day 000B and its first two
slots, L{tests.fixtures.captures}); the captures hold no EC, E4 or full E2, so
those EDTs are built by hand from docs/PROTOCOL.md, "Meter properties" and "History".
"""

import datetime
import json
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.echonet import meter as M
from smartmeter_tx.echonet import history as H
from smartmeter_tx import model
from smartmeter_tx.errors import ArgumentError, FrameError
from tests.fixtures import captures as cap

NO_DATA_U32 = b"\xff\xff\xff\xfe"


def u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def bitmap_map(epcs) -> bytes:
    """
    A property map in bitmap form, built here from the 9F row of
    docs/PROTOCOL.md, "Meter properties" (byte i, bit b set means EPC
    0x80 + 0x10 b + i), independently of the emulator.
    """
    epcs = set(epcs)
    bitmap = bytearray(16)
    for epc in epcs:
        i, b = epc & 0x0F, (epc - 0x80) >> 4
        bitmap[i] |= 1 << b
    return bytes([len(epcs)]) + bytes(bitmap)


def history_edt(day: int, slots) -> bytes:
    """E2/E4: u16 day, then 48 u32 (C{None} for no data)."""
    assert len(slots) == 48
    return day.to_bytes(2, "big") + b"".join(
        NO_DATA_U32 if s is None else u32(s) for s in slots)


def ec_edt(start: bytes, pairs) -> bytes:
    """EC: 6 bytes of start (YYYY MM DD hh mm), the count, then the pairs."""
    return start + bytes([len(pairs)]) + b"".join(
        (NO_DATA_U32 if n is None else u32(n)) + (NO_DATA_U32 if r is None else u32(r))
        for n, r in pairs)


def stamp(t: datetime.datetime) -> bytes:
    return t.year.to_bytes(2, "big") + bytes((t.month, t.day, t.hour, t.minute))


#: A realistic Get property map of a meter (the EPCs docs/PROTOCOL.md lists,
#: with EC/ED): more than 16, so in bitmap form.
METER_GET_EPCS = frozenset({
    0x80, 0x81, 0x82, 0x88, 0x8A, 0x8D, 0x97, 0x98, 0x9D, 0x9E, 0x9F, 0xD3, 0xD7,
    0xE0, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE7, 0xE8, 0xEA, 0xEB, 0xEC, 0xED,
})


class HistoryDayTests(SynchronousTestCase):
    """E5: the day E2/E4 report."""

    def test_range(self):
        """0 to 99 encode as one byte; the value itself."""
        for day in (0, 1, 45, 99):
            self.assertEqual(H.encode_history_day(day), bytes([day]))

    @given(st.integers(0, 99))
    def test_everyDay(self, day):
        self.assertEqual(H.encode_history_day(day), bytes([day]))

    def test_outOfRange(self):
        """100 and -1 are ArgumentErrors, never a wrapped byte."""
        for day in (100, -1, 255, 256):
            self.assertRaises(ArgumentError, H.encode_history_day, day)


class MeterClockTests(SynchronousTestCase):
    """0x97 (hh mm) and 0x98 (YYYY MM DD)."""

    def test_valid(self):
        self.assertEqual(M.decode_meter_clock(b"\x17\x3b", bytes.fromhex("07E80601")),
                         datetime.datetime(2024, 6, 1, 23, 59))
        self.assertEqual(M.decode_meter_clock(b"\x00\x00", bytes.fromhex("07E8021D")),
                         datetime.datetime(2024, 2, 29, 0, 0))

    def test_naive(self):
        """The meter's clock is naive meter-local time."""
        self.assertIsNone(M.decode_meter_clock(b"\x0c\x00", bytes.fromhex("07E80601")).tzinfo)

    def test_invalid(self):
        """24:00, minute 60, month 13, day 0, 30 February: FrameError."""
        date = bytes.fromhex("07E80601")
        self.assertRaises(FrameError, M.decode_meter_clock, b"\x18\x00", date)
        self.assertRaises(FrameError, M.decode_meter_clock, b"\x0c\x3c", date)
        for bad in ("07E80D01", "07E80600", "07E8021E", "FFFFFFFF"):
            self.assertRaises(FrameError, M.decode_meter_clock, b"\x0c\x00", bytes.fromhex(bad))

    def test_short(self):
        """A short (or long, or missing) EDT is a FrameError."""
        date = bytes.fromhex("07E80601")
        self.assertRaises(FrameError, M.decode_meter_clock, b"\x0c", date)
        self.assertRaises(FrameError, M.decode_meter_clock, b"\x0c\x00\x00", date)
        self.assertRaises(FrameError, M.decode_meter_clock, b"\x0c\x00", date[:3])
        self.assertRaises(FrameError, M.decode_meter_clock, b"", date)
        self.assertRaises(FrameError, M.decode_meter_clock, b"\x0c\x00", None)


class PropertyMapTests(SynchronousTestCase):
    """0x9F: a list below 16 EPCs, a 16-byte bitmap from 16 on."""

    def test_list(self):
        self.assertEqual(M.decode_property_map(bytes.fromhex("0380E0E7")),
                         frozenset({0x80, 0xE0, 0xE7}))
        self.assertEqual(M.decode_property_map(b"\x00"), frozenset())

    def test_list15(self):
        """15 EPCs are still a list."""
        epcs = list(range(0xE0, 0xEF))
        self.assertEqual(M.decode_property_map(bytes([15] + epcs)), frozenset(epcs))

    def test_listWrongCount(self):
        self.assertRaises(FrameError, M.decode_property_map, bytes.fromhex("0380E0"))
        self.assertRaises(FrameError, M.decode_property_map, bytes.fromhex("0280E0E7"))

    def test_empty(self):
        self.assertRaises(FrameError, M.decode_property_map, b"")

    def test_bitmapRealistic(self):
        """A meter's Get map with EC/ED, in bitmap form, decodes to its EPCs."""
        edt = bitmap_map(METER_GET_EPCS)
        self.assertEqual(len(edt), 17)
        self.assertEqual(edt[0], len(METER_GET_EPCS))
        epcs = M.decode_property_map(edt)
        self.assertEqual(epcs, METER_GET_EPCS)
        self.assertLessEqual({M.HISTORY2, M.HISTORY2_TIME}, epcs)

    def test_bitmapLayout(self):
        """Byte i bit b is EPC 0x80 + 0x10 b + i: 0x80 is byte 0 bit 0, 0xFF byte 15 bit 7."""
        edt = bytes([16]) + b"\x01" + b"\x00" * 14 + b"\x80"
        # The count says 16 but only two bits are set: a FrameError ...
        self.assertRaises(FrameError, M.decode_property_map, edt)
        # ... and with 16 bits set, the right EPCs.
        edt = bytes([16]) + b"\x03" * 8 + b"\x00" * 8
        self.assertEqual(M.decode_property_map(edt),
                         frozenset([0x80 + i for i in range(8)] + [0x90 + i for i in range(8)]))

    def test_bitmapAgreesWithEmulator(self):
        """The emulator's encoder builds the same bytes."""
        from smartmeter_tx.emulator.meter import encode_property_map
        self.assertEqual(encode_property_map(METER_GET_EPCS), bitmap_map(METER_GET_EPCS))

    def test_bitmapWrongLength(self):
        edt = bitmap_map(METER_GET_EPCS)
        self.assertRaises(FrameError, M.decode_property_map, edt[:-1])
        self.assertRaises(FrameError, M.decode_property_map, edt + b"\x00")

    def test_bitmapWrongCount(self):
        edt = bitmap_map(METER_GET_EPCS)
        self.assertRaises(FrameError, M.decode_property_map, bytes([edt[0] + 1]) + edt[1:])
        self.assertRaises(FrameError, M.decode_property_map, bytes([edt[0] - 1]) + edt[1:])

    @given(st.frozensets(st.integers(0x80, 0xFF), min_size=16, max_size=128))
    @settings(max_examples=200)
    def test_bitmapRoundTrip(self, epcs):
        self.assertEqual(M.decode_property_map(bitmap_map(epcs)), epcs)

    @given(st.frozensets(st.integers(0x00, 0xFF), max_size=15))
    def test_listRoundTrip(self, epcs):
        self.assertEqual(M.decode_property_map(bytes([len(epcs)] + sorted(epcs))), epcs)


class History2TimeTests(SynchronousTestCase):
    """ED: YYYY MM DD hh mm(00|30) n(1-12)."""

    def test_encode(self):
        self.assertEqual(H.encode_history2_time(datetime.datetime(2024, 6, 1, 12, 30), 12),
                         bytes.fromhex("07E806010C1E0C"))
        self.assertEqual(H.encode_history2_time(datetime.datetime(2024, 12, 31, 0, 0), 1),
                         bytes.fromhex("07E80C1F000001"))

    def test_boundaryOnly(self):
        """Only :00 and :30, with no seconds: anything else is an ArgumentError."""
        for t in (datetime.datetime(2024, 6, 1, 12, 15), datetime.datetime(2024, 6, 1, 12, 1),
                  datetime.datetime(2024, 6, 1, 12, 0, 1),
                  datetime.datetime(2024, 6, 1, 12, 30, 0, 1)):
            self.assertRaises(ArgumentError, H.encode_history2_time, t, 1)

    def test_count(self):
        """1 to 12 readings; 0 and 13 are ArgumentErrors."""
        t = datetime.datetime(2024, 6, 1, 12, 0)
        for count in range(1, 13):
            self.assertEqual(H.encode_history2_time(t, count)[-1], count)
        for count in (0, 13, -1):
            self.assertRaises(ArgumentError, H.encode_history2_time, t, count)

    @given(st.datetimes(datetime.datetime(2000, 1, 1), datetime.datetime(2099, 12, 31)),
           st.booleans(), st.integers(1, 12))
    def test_roundTripThroughEC(self, t, half, count):
        """The start ED sets is the start EC echoes (EDTs built by hand)."""
        t = t.replace(minute=30 if half else 0, second=0, microsecond=0)
        ed = H.encode_history2_time(t, count)
        history = H.decode_history2(ed + (u32(1) + u32(2)) * count)
        self.assertEqual(history.start, t)
        self.assertEqual(len(history.readings), count)


class History2Tests(SynchronousTestCase):
    """EC: start, n, n x (normal, reverse), item k at start - k x 30 min."""

    START = datetime.datetime(2024, 6, 1, 12, 30)

    def test_one(self):
        history = H.decode_history2(ec_edt(stamp(self.START), [(123456, 789)]))
        self.assertEqual(history.start, self.START)
        self.assertEqual(history.readings, ((123456, 789),))
        self.assertEqual(history.by_time(), {self.START: (123456, 789)})

    def test_twelve(self):
        pairs = [(1000 - 10 * k, 50 - k) for k in range(12)]
        history = H.decode_history2(ec_edt(stamp(self.START), pairs))
        self.assertEqual(history.readings, tuple(pairs))
        by_time = history.by_time()
        self.assertEqual(len(by_time), 12)
        for k, pair in enumerate(pairs):
            self.assertEqual(by_time[self.START - k * datetime.timedelta(minutes=30)], pair)
        self.assertEqual(min(by_time), datetime.datetime(2024, 6, 1, 7, 0))

    def test_startUnset(self):
        """ED never set (FFFF FF FF FF FF): start None, by_time() empty."""
        history = H.decode_history2(ec_edt(b"\xff" * 6, [(None, None)]))
        self.assertIsNone(history.start)
        self.assertEqual(history.by_time(), {})
        self.assertEqual(history.readings, ((model.NO_DATA, model.NO_DATA),))

    def test_noData(self):
        """0xFFFFFFFE is NO_DATA, never 0."""
        history = H.decode_history2(ec_edt(stamp(self.START), [(None, 5), (7, None)]))
        (n0, r0), (n1, r1) = history.readings
        self.assertIs(n0, model.NO_DATA)
        self.assertIs(r1, model.NO_DATA)
        self.assertNotEqual(n0, 0)
        self.assertEqual((r0, n1), (5, 7))

    def test_lengthMismatch(self):
        good = ec_edt(stamp(self.START), [(1, 2), (3, 4)])
        for bad in (good[:-1], good + b"\x00", good[:7], good[:6], good[:3], b"",
                    good[:6] + b"\x03" + good[7:]):
            self.assertRaises(FrameError, H.decode_history2, bad)

    def test_countOutOfRange(self):
        """Counts 0 and 13 are FrameErrors even when the length fits."""
        self.assertRaises(FrameError, H.decode_history2, stamp(self.START) + b"\x00")
        self.assertRaises(FrameError, H.decode_history2,
                          ec_edt(stamp(self.START), [(1, 2)] * 13))

    def test_counterOutOfRange(self):
        """A count above 99999999 that is not FFFFFFFE is a FrameError."""
        self.assertRaises(FrameError, H.decode_history2,
                          stamp(self.START) + b"\x01" + u32(100000000) + u32(0))


class DayReadingsTests(SynchronousTestCase):
    """E2 and E4 of one day as 48 boundaries of the right date."""

    def capture_e2(self):
        """The real §21 E2 head (day 11, two slots), the rest by hand."""
        head = bytes.fromhex(cap.S21_EDT_E2_HEAD + "".join(cap.S21_EDT_E2_FIRST_SLOTS))
        rest = b"".join(u32(0xF768 + 3 * k) for k in range(1, 47))
        return head + rest

    def test_day(self):
        normal = H.decode_history(self.capture_e2())
        reverse = H.decode_history(history_edt(11, [None] * 24 + list(range(24))))
        date = datetime.date(2024, 5, 21)
        readings = H.day_readings(normal, reverse, date)
        self.assertEqual(len(readings), 48)
        midnight = datetime.datetime(2024, 5, 21)
        self.assertEqual(sorted(readings),
                         [midnight + k * datetime.timedelta(minutes=30) for k in range(48)])
        self.assertEqual(readings[midnight], (0xF766, model.NO_DATA))
        self.assertEqual(readings[midnight + model.SLOT], (0xF768, model.NO_DATA))
        self.assertEqual(readings[datetime.datetime(2024, 5, 21, 12)], (0xF768 + 3 * 23, 0))
        self.assertEqual(readings[datetime.datetime(2024, 5, 21, 23, 30)], (0xF768 + 3 * 46, 23))
        self.assertTrue(all(t.date() == date and t.tzinfo is None for t in readings))

    def test_mismatchedDays(self):
        normal = H.decode_history(history_edt(3, [1] * 48))
        reverse = H.decode_history(history_edt(4, [1] * 48))
        self.assertRaises(FrameError, H.day_readings, normal, reverse, datetime.date(2024, 6, 1))

    def test_unsetDay(self):
        """E5 never set: day None, every slot NO_DATA."""
        day = H.decode_history(b"\x00\xff" + NO_DATA_U32 * 48)
        self.assertIsNone(day.day)
        self.assertEqual(set(day.slots), {model.NO_DATA})


SCALE_001 = M.EnergyScale(1, Decimal("0.01"), 6)


class SlotEnergyTests(SynchronousTestCase):
    """The difference of neighbouring readings, mod 10^D7, with E1 and D3, exact."""

    def test_plain(self):
        energy = H.slot_energy(1000, 1042, SCALE_001)
        self.assertIsInstance(energy, Decimal)
        self.assertEqual(energy, Decimal("0.42"))
        self.assertEqual(H.slot_energy(1000, 1000, SCALE_001), Decimal(0))

    def test_wrap(self):
        """Digits 6: 999990 -> 5 is 15 counts."""
        self.assertEqual(H.slot_energy(999990, 5, SCALE_001), Decimal("0.15"))
        self.assertEqual(H.slot_energy(999999, 0, M.EnergyScale(1, Decimal(1), 6)), 1)
        self.assertEqual(H.slot_energy(99999999, 1, M.EnergyScale(1, Decimal(1), 8)), 2)

    @given(st.integers(1, 8), st.data())
    def test_wrapAny(self, digits, data):
        modulus = 10 ** digits
        earlier = data.draw(st.integers(0, modulus - 1))
        counts = data.draw(st.integers(0, modulus - 1))
        later = (earlier + counts) % modulus
        scale = M.EnergyScale(1, Decimal("0.001"), digits)
        self.assertEqual(H.slot_energy(earlier, later, scale), counts * Decimal("0.001"))

    def test_noData(self):
        """NO_DATA on either side is NO_DATA, with or without a scale."""
        for scale in (SCALE_001, None):
            self.assertIs(H.slot_energy(model.NO_DATA, 5, scale), model.NO_DATA)
            self.assertIs(H.slot_energy(5, model.NO_DATA, scale), model.NO_DATA)
            self.assertIs(H.slot_energy(model.NO_DATA, model.NO_DATA, scale), model.NO_DATA)

    def test_unitUnknown(self):
        """E1 unknown (scale None): NO_SCALE, never a guessed unit."""
        energy = H.slot_energy(1000, 1042, None)
        self.assertIs(energy, model.NO_SCALE)
        self.assertFalse(energy)

    def test_digitsUnknownBackwards(self):
        """D7 unknown and the counter went backwards: Absent, not negative, not a guess."""
        scale = M.EnergyScale(1, Decimal("0.01"), None)
        energy = H.slot_energy(999990, 5, scale)
        self.assertTrue(model.is_absent(energy), energy)
        self.assertFalse(energy)
        # Forwards is fine without D7.
        self.assertEqual(H.slot_energy(5, 20, scale), Decimal("0.15"))

    def test_coefficientAndUnit(self):
        """Unit 0.001 with coefficient 10: 15 counts are exactly 0.150 kWh."""
        scale = M.EnergyScale(10, M.decode_unit(b"\x03"), 6)
        energy = H.slot_energy(999990, 5, scale)
        self.assertIsInstance(energy, Decimal)
        self.assertEqual(energy, Decimal("0.15"))
        self.assertEqual(H.slot_energy(0, 1, M.EnergyScale(3, Decimal("0.1"), 6)),
                         Decimal("0.3"))  # not 0.30000000000000004
        self.assertEqual(H.slot_energy(1, 2, M.EnergyScale(999999, Decimal("10000"), 8)),
                         Decimal(9999990000))

    def test_coefficientMissing(self):
        """A meter without D3 (Get_SNA, no EDT) has coefficient 1."""
        for edt in (None, b""):
            scale = M.EnergyScale(M.decode_coefficient(edt), M.decode_unit(b"\x01"), 6)
            self.assertEqual(H.slot_energy(10, 25, scale), Decimal("1.5"))


class HistorySlotsTests(SynchronousTestCase):
    """history_slots: both boundaries known, end <= until, oldest first, JST."""

    DAY = datetime.datetime(2024, 6, 1)

    def at(self, k):
        return self.DAY + k * model.SLOT

    def test_slots(self):
        readings = {self.at(3): (130, 3), self.at(0): (100, 0), self.at(2): (120, 2),
                    self.at(1): (110, 1), self.at(5): (150, 5), self.at(6): (160, 6)}
        slots = H.history_slots(readings, SCALE_001, "E2", until=self.at(6))
        # 3->4 lacks its end, 4 is not known, 6->7 ends after until.
        self.assertEqual([s.start for s in slots],
                         [self.at(k).replace(tzinfo=model.JST) for k in (0, 1, 2, 5)])
        for s in slots:
            self.assertIsNotNone(s.start.tzinfo)
            self.assertEqual(s.start.utcoffset(), datetime.timedelta(hours=9))
            self.assertEqual(s.source, "E2")
            self.assertEqual(s.energy_normal_kwh, Decimal("0.10"))
            self.assertEqual(s.energy_reverse_kwh, Decimal("0.01"))
        self.assertEqual(slots[1].cumulative_normal_kwh, Decimal("1.10"))
        self.assertEqual(slots[1].cumulative_reverse_kwh, Decimal("0.01"))
        self.assertEqual(slots[1].slot, "2024-06-01T00:30:00+09:00")

    def test_until(self):
        """A slot ending exactly at until is in, one ending later is not."""
        readings = {self.at(k): (100 + k, 0) for k in range(4)}
        self.assertEqual(len(H.history_slots(readings, SCALE_001, "EC", self.at(3))), 3)
        self.assertEqual(len(H.history_slots(readings, SCALE_001, "EC", self.at(2))), 2)
        self.assertEqual(H.history_slots(readings, SCALE_001, "EC", self.at(0)), [])

    def test_noData(self):
        """A missing reading makes the slots on both sides null, never 0."""
        readings = {self.at(0): (100, 0), self.at(1): (model.NO_DATA, model.NO_DATA),
                    self.at(2): (130, 0)}
        first, second = H.history_slots(readings, SCALE_001, "E2", self.at(2))
        self.assertIs(first.energy_normal_kwh, model.NO_DATA)
        self.assertIs(second.energy_normal_kwh, model.NO_DATA)
        self.assertIs(second.cumulative_normal_kwh, model.NO_DATA)
        self.assertEqual(first.cumulative_normal_kwh, Decimal("1.00"))

    def test_noScale(self):
        readings = {self.at(0): (100, 0), self.at(1): (110, 0)}
        [slot] = H.history_slots(readings, None, "E2", self.at(1))
        self.assertIs(slot.energy_normal_kwh, model.NO_SCALE)
        self.assertIs(slot.cumulative_normal_kwh, model.NO_SCALE)

    def test_acrossMidnightAndWrap(self):
        """The 23:30 slot takes the next day's 00:00; the wrap is counted."""
        readings = {self.at(47): (999990, 0), self.at(48): (5, 0)}
        [slot] = H.history_slots(readings, SCALE_001, "E2", self.at(48))
        self.assertEqual(slot.slot, "2024-06-01T23:30:00+09:00")
        self.assertEqual(slot.energy_normal_kwh, Decimal("0.15"))
        self.assertEqual(slot.cumulative_normal_kwh, Decimal("9999.90"))


class HistoryRecordTests(SynchronousTestCase):
    """HistorySlot.to_record / from_record."""

    START = datetime.datetime(2024, 6, 1, 23, 30, tzinfo=model.JST)

    def slot(self, **kw):
        values = dict(energy_normal_kwh=Decimal("0.15"), energy_reverse_kwh=Decimal(0),
                      cumulative_normal_kwh=Decimal("9999.90"),
                      cumulative_reverse_kwh=Decimal("12.34"), source="EC")
        values.update(kw)
        return model.HistorySlot(self.START, **values)

    def test_record(self):
        record = self.slot().to_record()
        self.assertEqual(record, {
            "kind": "history", "slot": "2024-06-01T23:30:00+09:00", "source": "EC",
            "energy_normal_kwh": 0.15, "energy_reverse_kwh": 0,
            "cumulative_normal_kwh": 9999.9, "cumulative_reverse_kwh": 12.34})

    def test_roundTrip(self):
        slot = self.slot()
        back = model.HistorySlot.from_record(json.loads(json.dumps(slot.to_record())))
        self.assertEqual(back, slot)
        self.assertEqual(back.start.utcoffset(), datetime.timedelta(hours=9))

    def test_nulls(self):
        slot = self.slot(energy_normal_kwh=model.NO_DATA, cumulative_normal_kwh=model.NO_DATA)
        record = json.loads(json.dumps(slot.to_record()))
        self.assertIsNone(record["energy_normal_kwh"])
        self.assertIsNone(record["cumulative_normal_kwh"])
        back = model.HistorySlot.from_record(record)
        self.assertEqual(back, slot)
        self.assertIs(back.energy_normal_kwh, model.NO_DATA)

    def test_missingFieldsAreNoData(self):
        back = model.HistorySlot.from_record({"slot": "2024-06-01T23:30:00+09:00"})
        for name in model.HistorySlot.FIELDS:
            self.assertIs(getattr(back, name), model.NO_DATA)

    def test_noSlot(self):
        for record in ({"kind": "history", "energy_normal_kwh": 1}, {"slot": None},
                       {"slot": 5}, {"slot": "yesterday"}, {"slot": ""}):
            self.assertRaises(FrameError, model.HistorySlot.from_record, record)

    def test_naiveIsJST(self):
        back = model.HistorySlot.from_record({"slot": "2024-06-01T23:30:00", "source": "E2"})
        self.assertEqual(back.start, self.START)
        self.assertEqual(back.slot, "2024-06-01T23:30:00+09:00")

    def test_otherOffset(self):
        """A slot written with another offset is the same instant, in JST."""
        back = model.HistorySlot.from_record({"slot": "2024-06-01T14:30:00+00:00"})
        self.assertEqual(back.slot, "2024-06-01T23:30:00+09:00")
