"""
Tests for L{smartmeter_tx.echonet.meter}: property decoders of the smart meter
class 0x028801 and the node profile, against real EDTs from the captures.

C{§n} names a section of L{tests.fixtures.captures}.
"""

import datetime
from decimal import Decimal

from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.echonet.frame import CONTROLLER, GET_RES, GET_SNA, METER, Frame, Property
from smartmeter_tx.echonet.meter import (
    UNITS, EnergyScale, FixedTimeEnergy, decode_coefficient, decode_current, decode_digits,
    decode_energy_raw, decode_fault, decode_fixed_reading, decode_fixed_time, decode_instance_list,
    decode_maker_code, decode_operation_status, decode_power, decode_reading, decode_unit,
)
from smartmeter_tx.echonet.history import decode_history
from smartmeter_tx.model import (
    NO_DATA, NO_PHASE, NO_SCALE, OVERFLOW, UNDERFLOW, Absent, FixedReading, Reading, is_absent,
    json_value,
)
from smartmeter_tx.errors import FrameError
from tests.fixtures import captures as cap


def _h(hexstr):
    return bytes.fromhex(hexstr)


class AbsentTests(SynchronousTestCase):
    """
    Absent values are distinct from every number.
    """

    def test_noDataNotZero(self):
        """NO_DATA is falsy yet never equal to 0, 0.0 or Decimal 0."""
        self.assertFalse(NO_DATA)
        self.assertNotEqual(NO_DATA, 0)
        self.assertNotEqual(NO_DATA, Decimal(0))
        self.assertNotEqual(NO_DATA, 0.0)
        self.assertNotEqual(0, NO_DATA)

    def test_distinct(self):
        """NO_DATA, UNDERFLOW, OVERFLOW and NO_PHASE differ from each other."""
        values = [NO_DATA, UNDERFLOW, OVERFLOW, NO_PHASE]
        self.assertEqual(len({v.reason for v in values}), 4)
        for a in values:
            self.assertTrue(is_absent(a))
            self.assertFalse(a)
            self.assertEqual([b for b in values if b == a], [a])

    def test_isAbsentNumbers(self):
        """is_absent is false for real numbers, including 0."""
        for value in (0, 1192, Decimal("0"), -524):
            self.assertFalse(is_absent(value))


class PowerTests(SynchronousTestCase):
    """
    E7 instantaneous power, signed 32-bit watts.
    """

    def test_realValues(self):
        """decode_power reads every real §21 E7 EDT, negative ones as reverse flow."""
        for edt, watts in cap.S21_EDT_E7.items():
            self.assertEqual(decode_power(_h(edt)), watts)
        self.assertEqual(decode_power(_h("000004A8")), 1192)
        self.assertEqual(decode_power(_h("FFFFFDF4")), -524)

    def test_specialCodes(self):
        """decode_power maps 7FFFFFFE, 7FFFFFFF and 80000000 to NO_DATA, OVERFLOW, UNDERFLOW."""
        self.assertIs(decode_power(_h("7FFFFFFE")), NO_DATA)
        self.assertIs(decode_power(_h("7FFFFFFF")), OVERFLOW)
        self.assertIs(decode_power(_h("80000000")), UNDERFLOW)

    def test_rangeEdges(self):
        """decode_power keeps the valid extremes 7FFFFFFD and 80000001 as numbers."""
        self.assertEqual(decode_power(_h("7FFFFFFD")), 0x7FFFFFFD)
        self.assertEqual(decode_power(_h("80000001")), -0x7FFFFFFF)

    def test_wrongSize(self):
        """decode_power raises FrameError unless the EDT is 4 bytes."""
        for edt in (b"", b"\x00" * 3, b"\x00" * 5, None):
            self.assertRaises(FrameError, decode_power, edt)


class CurrentTests(SynchronousTestCase):
    """
    E8 instantaneous current, R and T phases in 0.1 A.
    """

    def test_realValues(self):
        """decode_current reads every real §21 E8 EDT into exact Decimal amperes."""
        for edt, (r, t) in cap.S21_EDT_E8.items():
            self.assertEqual(decode_current(_h(edt)), (Decimal(r), Decimal(t)))

    def test_exactDecimal(self):
        """decode_current gives 00620022 as Decimal 9.8 A and 3.4 A, not floats."""
        r, t = decode_current(_h("00620022"))
        self.assertIsInstance(r, Decimal)
        self.assertEqual((str(r), str(t)), ("9.8", "3.4"))

    def test_singlePhase(self):
        """decode_current gives T = 7FFE (single-phase two-wire) as NO_PHASE."""
        self.assertEqual(decode_current(_h("00287FFE")), (Decimal("4.0"), NO_PHASE))

    def test_rNoData(self):
        """decode_current gives R = 7FFE as NO_DATA."""
        self.assertEqual(decode_current(_h("7FFE0028")), (NO_DATA, Decimal("4.0")))

    def test_flowCodes(self):
        """decode_current maps 7FFF to OVERFLOW and 8000 to UNDERFLOW on either phase."""
        self.assertEqual(decode_current(_h("7FFF8000")), (OVERFLOW, UNDERFLOW))
        self.assertEqual(decode_current(_h("80007FFF")), (UNDERFLOW, OVERFLOW))

    def test_negative(self):
        """decode_current reads signed values (FFF6 = -1.0 A)."""
        self.assertEqual(decode_current(_h("FFF60000")), (Decimal("-1.0"), Decimal(0)))

    def test_wrongSize(self):
        """decode_current raises FrameError unless the EDT is 4 bytes."""
        for edt in (b"", b"\x00" * 2, b"\x00" * 6):
            self.assertRaises(FrameError, decode_current, edt)


class ScaleTests(SynchronousTestCase):
    """
    D3 coefficient, E1 unit, D7 digits and EnergyScale.
    """

    def test_coefficient(self):
        """decode_coefficient reads §21 D3 00000001 as 1 and larger values as they are."""
        self.assertEqual(decode_coefficient(_h(cap.S21_EDT_D3)), 1)
        self.assertEqual(decode_coefficient(_h("0000000A")), 10)
        self.assertEqual(decode_coefficient(_h("000F423F")), 999999)

    def test_coefficientAbsent(self):
        """decode_coefficient gives 1 when D3 is absent (None or the Get_SNA PDC 0)."""
        self.assertEqual(decode_coefficient(None), 1)
        sna = Frame.decode(_h(cap.S1_GET_SNA_D3))
        self.assertEqual(decode_coefficient(sna.get(0xD3)), 1)
        self.assertEqual(decode_coefficient(sna.properties[0].edt), 1)

    def test_coefficientErrors(self):
        """decode_coefficient raises FrameError for a wrong size or a value over 999999."""
        self.assertRaises(FrameError, decode_coefficient, b"\x01")
        self.assertRaises(FrameError, decode_coefficient, _h("000F4240"))

    def test_unitTable(self):
        """decode_unit maps every E1 code to its kWh multiplier."""
        expected = {0x00: "1", 0x01: "0.1", 0x02: "0.01", 0x03: "0.001", 0x04: "0.0001",
                    0x0A: "10", 0x0B: "100", 0x0C: "1000", 0x0D: "10000"}
        for code, multiplier in expected.items():
            self.assertEqual(decode_unit(bytes([code])), Decimal(multiplier))
        self.assertEqual(set(UNITS), set(expected))
        self.assertEqual(decode_unit(_h(cap.S21_EDT_E1_001)), Decimal("0.01"))

    def test_unitInvalid(self):
        """decode_unit raises FrameError for an undefined code or a wrong size."""
        for edt in (b"\x05", b"\x09", b"\x0e", b"\xff", b"", b"\x01\x01"):
            self.assertRaises(FrameError, decode_unit, edt)

    def test_digits(self):
        """decode_digits reads §21 D7 06 and 07 and rejects 0, 9 and wrong sizes."""
        self.assertEqual(decode_digits(_h(cap.S21_EDT_D7_6)), 6)
        self.assertEqual(decode_digits(_h(cap.S21_EDT_D7_7)), 7)
        for edt in (b"\x00", b"\x09", b"", b"\x06\x00"):
            self.assertRaises(FrameError, decode_digits, edt)

    def test_deltaWrap(self):
        """EnergyScale.delta counts across a wrap at 10^D7 (D7=6: 999990 -> 5 is 15)."""
        scale = EnergyScale(digits=6)
        self.assertEqual(scale.delta(999990, 5), 15)
        self.assertEqual(scale.delta(5, 20), 15)
        self.assertEqual(scale.delta(7, 7), 0)

    def test_deltaUnknownDigits(self):
        """EnergyScale.delta refuses a backwards counter when D7 is unknown."""
        self.assertRaises(ValueError, EnergyScale().delta, 10, 5)

    def test_toKwhAbsent(self):
        """EnergyScale.to_kwh passes an Absent value through instead of multiplying it."""
        self.assertIs(EnergyScale(10, Decimal("0.1")).to_kwh(NO_DATA), NO_DATA)


class EnergyTests(SynchronousTestCase):
    """
    E0/E3 cumulative energy and its conversion to kWh.
    """

    def test_raw(self):
        """decode_energy_raw reads the §21 E0 EDTs as 65139, 75313 and 1575631."""
        self.assertEqual([decode_energy_raw(_h(e)) for e in cap.S21_EDT_E0],
                         [65139, 75313, 1575631])

    def test_kwhExact(self):
        """EnergyScale turns E0 00180ACF with D3 1 and E1 01 into exactly 157563.1 kWh."""
        scale = EnergyScale(coefficient=decode_coefficient(_h(cap.S21_EDT_D3)),
                            unit=decode_unit(_h(cap.S21_EDT_E1_01)), digits=7)
        kwh = scale.to_kwh(decode_energy_raw(_h("00180ACF")))
        self.assertEqual(kwh, Decimal("157563.1"))
        self.assertEqual(str(kwh), "157563.1")

    def test_kwhUnit001(self):
        """EnergyScale turns E0 0000FE73 with E1 02 into exactly 651.39 kWh."""
        kwh = EnergyScale(1, decode_unit(b"\x02")).to_kwh(decode_energy_raw(_h("0000FE73")))
        self.assertEqual(str(kwh), "651.39")

    def test_kwhCoefficient(self):
        """EnergyScale multiplies by the D3 coefficient as well as the E1 unit."""
        self.assertEqual(EnergyScale(10, Decimal("0.01")).to_kwh(12345), Decimal("1234.50"))

    def test_noData(self):
        """decode_energy_raw maps FFFFFFFE to NO_DATA."""
        self.assertIs(decode_energy_raw(_h("FFFFFFFE")), NO_DATA)

    def test_outOfRange(self):
        """decode_energy_raw raises FrameError above 99999999 and for a wrong size."""
        self.assertEqual(decode_energy_raw(_h("05F5E0FF")), 99999999)
        self.assertRaises(FrameError, decode_energy_raw, _h("05F5E100"))
        self.assertRaises(FrameError, decode_energy_raw, _h("FFFFFFFF"))
        self.assertRaises(FrameError, decode_energy_raw, _h("000000"))


class FixedTimeTests(SynchronousTestCase):
    """
    EA/EB fixed-time cumulative energy.
    """

    def test_ea(self):
        """decode_fixed_time reads §21 EA 07EA05140E00000000FE68 as 2026-05-20 14:00:00, 65128."""
        self.assertEqual(decode_fixed_time(_h(cap.S21_EDT_EA)),
                         FixedTimeEnergy(datetime.datetime(2026, 5, 20, 14, 0, 0), 65128))

    def test_ea2022(self):
        """decode_fixed_time reads the §1 EA as 2022-08-01 20:00:00, 76999."""
        self.assertEqual(decode_fixed_time(_h(cap.S21_EDT_EA_2022)),
                         FixedTimeEnergy(datetime.datetime(2022, 8, 1, 20, 0, 0), 76999))

    def test_eb(self):
        """decode_fixed_time reads §21 EB as 2026-05-24 22:30:00, 22."""
        self.assertEqual(decode_fixed_time(_h(cap.S21_EDT_EB)),
                         FixedTimeEnergy(datetime.datetime(2026, 5, 24, 22, 30, 0), 22))

    def test_infEaEb(self):
        """decode_fixed_time reads both EDTs of the §20 EA+EB INF (17806 and 21)."""
        frame = Frame.decode(_h(cap.S20_INF_EA_EB))
        when = datetime.datetime(2023, 12, 19, 0, 30, 0)
        self.assertEqual(decode_fixed_time(frame.get(0xEA)), FixedTimeEnergy(when, 17806))
        self.assertEqual(decode_fixed_time(frame.get(0xEB)), FixedTimeEnergy(when, 21))

    def test_noClock(self):
        """decode_fixed_time gives timestamp None when the date is invalid (meter clock unset)."""
        value = decode_fixed_time(_h("FFFFFFFFFFFFFF" + "FFFFFFFE"))
        self.assertEqual(value, FixedTimeEnergy(None, NO_DATA))

    def test_wrongSize(self):
        """decode_fixed_time raises FrameError unless the EDT is 11 bytes."""
        self.assertRaises(FrameError, decode_fixed_time, _h(cap.S21_EDT_EA)[:-1])
        self.assertRaises(FrameError, decode_fixed_time, _h(cap.S21_EDT_EA) + b"\x00")


class HistoryTests(SynchronousTestCase):
    """
    E2/E4 half-hourly history of one day.
    """

    def _edt(self, day="000B"):
        slots = cap.S21_EDT_E2_FIRST_SLOTS + ["FFFFFFFE"] * 46
        return _h(day + "".join(slots))

    def test_history(self):
        """decode_history reads day 11, the two real §21 slots, and FFFFFFFE slots as NO_DATA."""
        edt = self._edt()
        self.assertEqual(len(edt), 194)
        history = decode_history(edt)
        self.assertEqual(history.day, 11)
        self.assertEqual(len(history.slots), 48)
        self.assertEqual(history.slots[:2], (0xF766, 0xF768))
        self.assertEqual(set(history.slots[2:]), {NO_DATA})

    def test_dayUnset(self):
        """decode_history gives day None for 0x00FF (E5 never set)."""
        self.assertIsNone(decode_history(self._edt("00FF")).day)
        self.assertEqual(decode_history(self._edt("0000")).day, 0)

    def test_wrongSize(self):
        """decode_history raises FrameError unless the EDT is 194 bytes."""
        self.assertRaises(FrameError, decode_history, self._edt()[:-1])
        self.assertRaises(FrameError, decode_history, self._edt() + b"\x00")


class MiscPropertyTests(SynchronousTestCase):
    """
    80, 88, 8A and the node profile D5.
    """

    def test_operationStatus(self):
        """decode_operation_status reads §21 80 30 as on and 31 as off."""
        self.assertIs(decode_operation_status(_h(cap.S21_EDT_80_ON)), True)
        self.assertIs(decode_operation_status(b"\x31"), False)
        self.assertRaises(FrameError, decode_operation_status, b"\x32")
        self.assertRaises(FrameError, decode_operation_status, b"")

    def test_fault(self):
        """decode_fault reads §21 88 42 as no fault and 41 as fault."""
        self.assertIs(decode_fault(_h(cap.S21_EDT_88_NO_FAULT)), False)
        self.assertIs(decode_fault(b"\x41"), True)
        self.assertRaises(FrameError, decode_fault, b"\x40")

    def test_makerCode(self):
        """decode_maker_code reads §21 8A 000016 as "000016"."""
        self.assertEqual(decode_maker_code(_h(cap.S21_EDT_8A)), "000016")
        self.assertRaises(FrameError, decode_maker_code, b"\x00\x16")

    def test_instanceList(self):
        """decode_instance_list reads D5 01028801 as the single EOJ 0x028801."""
        self.assertEqual(decode_instance_list(_h("01028801")), (METER,))
        frame = Frame.decode(_h(cap.S20_INF_D5_TID_0000))
        self.assertEqual(decode_instance_list(frame.get(0xD5)), (0x028801,))
        self.assertEqual(decode_instance_list(_h("020288010EF001")), (METER, 0x0EF001))
        self.assertEqual(decode_instance_list(b"\x00"), ())

    def test_instanceListErrors(self):
        """decode_instance_list raises FrameError when the count disagrees with the length."""
        for edt in (b"", _h("02028801"), _h("0102880100"), _h("010288")):
            self.assertRaises(FrameError, decode_instance_list, edt)


class ReadingTests(SynchronousTestCase):
    """
    decode_reading turns a Get_Res or Get_SNA into a Reading.
    """

    SCALE = EnergyScale(1, Decimal("0.1"), 7)

    def test_e7E8(self):
        """decode_reading reads the §21 OPC 2 Get_Res (E7 0000029C, E8 00280028) as 668 W,
        4.0 A, 4.0 A."""
        frame = Frame(1, METER, CONTROLLER, GET_RES,
                      (Property(0xE7, _h(cap.S21_EDT_E7_OPC2)),
                       Property(0xE8, _h(cap.S21_EDT_E8_OPC2))))
        frame = Frame.decode(frame.encode())
        reading = decode_reading(frame.properties, self.SCALE)
        self.assertEqual(reading, Reading(power_w=668, current_r_a=Decimal("4.0"),
                                          current_t_a=Decimal("4.0")))
        self.assertIsNone(reading.energy_normal_kwh)

    def test_realGetRes(self):
        """decode_reading reads the §1 Get_Res E7 payload as 1192 W and nothing else."""
        frame = Frame.decode(_h(cap.S1_GET_RES_E7_04A8))
        self.assertEqual(decode_reading(frame.properties, self.SCALE), Reading(power_w=1192))

    def test_energy(self):
        """decode_reading reads E0 and E3 as raw counts and as kWh through the scale."""
        props = (Property(0xE0, _h("00180ACF")), Property(0xE3, _h("00000015")))
        reading = decode_reading(props, self.SCALE)
        self.assertEqual((reading.energy_normal_raw, reading.energy_normal_kwh),
                         (1575631, Decimal("157563.1")))
        self.assertEqual((reading.energy_reverse_raw, reading.energy_reverse_kwh),
                         (21, Decimal("2.1")))

    def test_getSna(self):
        """decode_reading turns the PDC 0 properties of a Get_SNA into NO_DATA, never 0."""
        frame = Frame.decode(_h("1081000102880105FF015204E700E800E000E300"))
        self.assertEqual(frame.esv, GET_SNA)
        reading = decode_reading(frame.properties, self.SCALE)
        for value in (reading.power_w, reading.current_r_a, reading.current_t_a,
                      reading.energy_normal_raw, reading.energy_normal_kwh,
                      reading.energy_reverse_raw, reading.energy_reverse_kwh):
            self.assertIs(value, NO_DATA)
            self.assertNotEqual(value, 0)

    def test_partialSna(self):
        """decode_reading keeps the readable EDT of a Get_SNA and marks the other NO_DATA."""
        props = (Property(0xE7, _h("000001F8")), Property(0xE8))
        reading = decode_reading(props, self.SCALE)
        self.assertEqual(reading, Reading(power_w=504, current_r_a=NO_DATA,
                                          current_t_a=NO_DATA))

    def test_specialValues(self):
        """decode_reading keeps the meter's special codes as Absent values."""
        props = (Property(0xE7, _h("7FFFFFFE")), Property(0xE8, _h("00287FFE")),
                 Property(0xE0, _h("FFFFFFFE")))
        reading = decode_reading(props, self.SCALE)
        self.assertIs(reading.power_w, NO_DATA)
        self.assertEqual((reading.current_r_a, reading.current_t_a), (Decimal("4.0"), NO_PHASE))
        self.assertIs(reading.energy_normal_kwh, NO_DATA)
        self.assertIsInstance(reading.energy_normal_raw, Absent)

    def test_ignoresOtherEpcs(self):
        """decode_reading ignores EPCs it does not decode."""
        self.assertEqual(decode_reading((Property(0xD3, b"\x00\x00\x00\x01"),), self.SCALE),
                         Reading())

    def test_wrongSizes(self):
        """decode_reading raises FrameError for an E7, E8 or E0 of the wrong size."""
        for prop in (Property(0xE7, b"\x00\x00\x01"), Property(0xE8, b"\x00\x28"),
                     Property(0xE0, b"\x00" * 5), Property(0xE3, b"\x01")):
            self.assertRaises(FrameError, decode_reading, (prop,), self.SCALE)


class RecordTests(SynchronousTestCase):
    """
    json_value, Reading.to_record/from_record/with_energy, FixedReading.to_record
    and decode_fixed_reading: the one record shape of a reading outside the process.
    """

    SCALE = EnergyScale(1, Decimal("0.1"), 7)

    @staticmethod
    def _through_json(record):
        import json
        return json.loads(json.dumps(record))

    def test_jsonValue(self):
        """json_value keeps ints, gives integral Decimals as int, fractional ones as float,
        Absent and None as None and a datetime as ISO 8601."""
        self.assertEqual(json_value(1192), 1192)
        self.assertEqual(json_value(-524), -524)
        for value, expected in ((Decimal("4.0"), 4), (Decimal("1234.50"), 1234.5),
                                (Decimal("0.1"), 0.1), (Decimal("12345.67"), 12345.67),
                                (Decimal("-1.0"), -1), (Decimal("0"), 0)):
            result = json_value(value)
            self.assertEqual(result, expected, value)
            self.assertIs(type(result), type(expected), value)
        for absent in (None, NO_DATA, OVERFLOW, UNDERFLOW, NO_PHASE, NO_SCALE):
            self.assertIsNone(json_value(absent))
        self.assertEqual(json_value(datetime.datetime(2026, 5, 20, 14, 0, 0)),
                         "2026-05-20T14:00:00")

    def test_toRecord(self):
        """to_record holds the record fields that were asked for, never the raw counts."""
        reading = Reading(power_w=668, current_r_a=Decimal("4.0"), current_t_a=NO_PHASE,
                          energy_normal_kwh=Decimal("157563.1"), energy_normal_raw=1575631)
        self.assertEqual(reading.to_record(), {"power_w": 668, "current_r_a": 4,
                                               "current_t_a": None,
                                               "energy_normal_kwh": 157563.1})
        self.assertEqual(reading.to_record(Reading.INSTANT_FIELDS),
                         {"power_w": 668, "current_r_a": 4, "current_t_a": None})
        self.assertEqual(reading.to_record(Reading.ENERGY_FIELDS),
                         {"energy_normal_kwh": 157563.1})
        self.assertEqual(Reading().to_record(), {})

    def test_roundTripExact(self):
        """Decimals like 0.1, 12345.67 and 157563.1 come back from a JSON record exactly."""
        reading = Reading(power_w=-524, current_r_a=Decimal("0.1"), current_t_a=Decimal("9.8"),
                          energy_normal_kwh=Decimal("12345.67"),
                          energy_reverse_kwh=Decimal("157563.1"))
        back = Reading.from_record(self._through_json(reading.to_record()))
        self.assertEqual(back, reading)
        self.assertEqual(str(back.current_r_a), "0.1")
        self.assertEqual(str(back.energy_normal_kwh), "12345.67")
        self.assertIsInstance(back.energy_reverse_kwh, Decimal)

    def test_roundTripAnyMeterValue(self):
        """Every value a meter can give (E7, E8 and E0 with any D3 and E1) survives a
        JSON record exactly."""
        from hypothesis import given, strategies as st

        phase = st.integers(-0x7FFF, 0x7FFD).map(lambda raw: Decimal(raw) / 10)

        @given(power=st.integers(-0x7FFFFFFF, 0x7FFFFFFD), r=phase, t=phase,
               raw=st.integers(0, 99999999), coefficient=st.integers(0, 999999),
               unit=st.sampled_from(sorted(UNITS.values())))
        def check(power, r, t, raw, coefficient, unit):
            kwh = EnergyScale(coefficient, unit).to_kwh(raw)
            reading = Reading(power_w=power, current_r_a=r, current_t_a=t,
                              energy_normal_kwh=kwh, energy_reverse_kwh=kwh)
            back = Reading.from_record(self._through_json(reading.to_record()))
            self.assertEqual(back, reading)
            self.assertIs(type(back.power_w), int)
            self.assertIsInstance(back.energy_normal_kwh, Decimal)
        check()

    def test_absentRoundTrip(self):
        """An Absent value becomes null in the record and NO_DATA when read back."""
        reading = Reading(power_w=OVERFLOW, current_r_a=NO_DATA, current_t_a=NO_PHASE,
                          energy_normal_kwh=NO_SCALE, energy_reverse_kwh=UNDERFLOW)
        record = self._through_json(reading.to_record())
        self.assertEqual(record, dict.fromkeys(Reading.RECORD_FIELDS))
        back = Reading.from_record(record)
        for name in Reading.RECORD_FIELDS:
            self.assertIs(getattr(back, name), NO_DATA, name)

    def test_missingFieldNone(self):
        """A field missing from a record stays None (not asked for), not NO_DATA."""
        back = Reading.from_record({"power_w": 504, "time": 1000.0})
        self.assertEqual(back, Reading(power_w=504))
        self.assertEqual(Reading.from_record({}), Reading())
        self.assertFalse(back.has_energy)

    def test_onlyFieldsAsked(self):
        """from_record reads only the fields it is given, ignoring the others present."""
        record = {"power_w": 504, "energy_normal_kwh": 1.5}
        self.assertEqual(Reading.from_record(record, Reading.ENERGY_FIELDS),
                         Reading(energy_normal_kwh=Decimal("1.5")))
        self.assertEqual(Reading.from_record(record, Reading.INSTANT_FIELDS),
                         Reading(power_w=504))

    def test_nonNumbersNoData(self):
        """Booleans, strings, null, lists and dicts in a record are NO_DATA, never 0 or 1."""
        for bad in (True, False, "668", "", None, [1], {"v": 1}):
            for name in Reading.RECORD_FIELDS:
                value = getattr(Reading.from_record({name: bad}), name)
                self.assertIs(value, NO_DATA, (name, bad))
                self.assertNotEqual(value, 0)

    def test_powerInt(self):
        """power_w reads back as an int, from 668 or 668.0; a fractional power is NO_DATA."""
        for value in (668, 668.0):
            power = Reading.from_record({"power_w": value}).power_w
            self.assertEqual(power, 668)
            self.assertIs(type(power), int)
        self.assertIs(Reading.from_record({"power_w": 668.5}).power_w, NO_DATA)

    def test_currentFromInt(self):
        """An integral current in a record (JSON 4) reads back as Decimal 4."""
        value = Reading.from_record({"current_r_a": 4}).current_r_a
        self.assertIsInstance(value, Decimal)
        self.assertEqual(value, Decimal("4.0"))

    def test_withEnergy(self):
        """with_energy takes the kWh and raw counts of another reading, keeping power and current."""
        instant = Reading(power_w=668, current_r_a=Decimal("4.0"), current_t_a=Decimal("4.0"),
                          energy_normal_kwh=Decimal("1"))
        energy = Reading(power_w=1, energy_normal_kwh=Decimal("157563.1"), energy_normal_raw=1575631,
                         energy_reverse_kwh=NO_DATA, energy_reverse_raw=NO_DATA)
        both = instant.with_energy(energy)
        self.assertEqual(both, Reading(power_w=668, current_r_a=Decimal("4.0"),
                                       current_t_a=Decimal("4.0"),
                                       energy_normal_kwh=Decimal("157563.1"),
                                       energy_normal_raw=1575631, energy_reverse_kwh=NO_DATA,
                                       energy_reverse_raw=NO_DATA))
        self.assertEqual(instant.power_w, 668)
        self.assertEqual(instant.energy_normal_kwh, Decimal("1"))
        self.assertEqual(Reading(power_w=5).with_energy(Reading()), Reading(power_w=5))

    def test_fixedBoth(self):
        """decode_fixed_reading reads the §20 EA+EB INF into both counters, raw and kWh."""
        frame = Frame.decode(_h(cap.S20_INF_EA_EB))
        fixed = decode_fixed_reading(frame.properties, self.SCALE)
        when = datetime.datetime(2023, 12, 19, 0, 30, 0)
        self.assertEqual(fixed, FixedReading(when, 17806, Decimal("1780.6"), 21, Decimal("2.1")))
        self.assertEqual(self._through_json(fixed.to_record()), {
            "kind": "fixed", "meter_time": "2023-12-19T00:30:00",
            "energy_normal_raw": 17806, "energy_normal_kwh": 1780.6,
            "energy_reverse_raw": 21, "energy_reverse_kwh": 2.1})

    def test_fixedEaOnly(self):
        """decode_fixed_reading reads the §1 EA Get_Res as the normal counter only."""
        frame = Frame.decode(_h(cap.S1_GET_RES_EA))
        fixed = decode_fixed_reading(frame.properties, self.SCALE)
        self.assertEqual(fixed, FixedReading(datetime.datetime(2022, 8, 1, 20, 0, 0),
                                             76999, Decimal("7699.9")))
        self.assertEqual(fixed.to_record(), {"kind": "fixed",
                                             "meter_time": "2022-08-01T20:00:00",
                                             "energy_normal_raw": 76999,
                                             "energy_normal_kwh": 7699.9})

    def test_fixedEbOnly(self):
        """decode_fixed_reading reads a lone §21 EB as the reverse counter only."""
        fixed = decode_fixed_reading((Property(0xEB, _h(cap.S21_EDT_EB)),), self.SCALE)
        self.assertEqual(fixed.meter_time, datetime.datetime(2026, 5, 24, 22, 30, 0))
        self.assertEqual((fixed.energy_reverse_raw, fixed.energy_reverse_kwh),
                         (22, Decimal("2.2")))
        self.assertIsNone(fixed.energy_normal_raw)
        record = fixed.to_record()
        self.assertNotIn("energy_normal_raw", record)
        self.assertNotIn("energy_normal_kwh", record)

    def test_fixedNone(self):
        """decode_fixed_reading gives None for a frame without EA or EB (§1 E7 Get_Res)."""
        frame = Frame.decode(_h(cap.S1_GET_RES_E7_04A8))
        self.assertIsNone(decode_fixed_reading(frame.properties, self.SCALE))
        self.assertIsNone(decode_fixed_reading((), self.SCALE))

    def test_fixedUnknownScale(self):
        """Without a known scale the kWh are NO_SCALE (null in the record); the raw count stays."""
        fixed = decode_fixed_reading((Property(0xEA, _h(cap.S21_EDT_EA)),), None)
        self.assertIs(fixed.energy_normal_kwh, NO_SCALE)
        self.assertEqual(fixed.energy_normal_raw, 65128)
        record = fixed.to_record()
        self.assertIn("energy_normal_kwh", record)
        self.assertIsNone(record["energy_normal_kwh"])
        self.assertEqual(record["energy_normal_raw"], 65128)

    def test_fixedNoDataNoClock(self):
        """An EA with the meter clock unset and FFFFFFFE gives meter_time and values null."""
        fixed = decode_fixed_reading((Property(0xEA, _h("FFFFFFFFFFFFFF" + "FFFFFFFE")),),
                                     self.SCALE)
        self.assertEqual(fixed.to_record(), {"kind": "fixed", "meter_time": None,
                                             "energy_normal_raw": None,
                                             "energy_normal_kwh": None})

    def test_fixedMalformed(self):
        """decode_fixed_reading raises FrameError for an EA/EB of the wrong size or range."""
        edt = _h(cap.S21_EDT_EA)
        for prop in (Property(0xEA, edt[:-1]), Property(0xEB, edt + b"\x00"),
                     Property(0xEA, edt[:7] + _h("FFFFFFFF"))):
            self.assertRaises(FrameError, decode_fixed_reading, (prop,), self.SCALE)


class NonFiniteRecordTests(SynchronousTestCase):
    def test_nanAndInfinityAreNoData(self):
        """NaN and Infinity, which json.loads accepts, read back as NO_DATA, never raise."""
        import json
        record = json.loads('{"power_w": NaN, "current_r_a": Infinity, '
                            '"energy_normal_kwh": -Infinity}')
        back = Reading.from_record(record)
        self.assertIs(back.power_w, NO_DATA)
        self.assertIs(back.current_r_a, NO_DATA)
        self.assertIs(back.energy_normal_kwh, NO_DATA)
