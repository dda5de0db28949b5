"""
Tests for L{smartmeter_tx.emulator.meter}: the deterministic household and
the ECHONET Lite answers of the virtual meter, checked with the project's own
decoders.
"""

import datetime
import json
from decimal import Decimal

from twisted.trial import unittest

from smartmeter_tx.echonet import meter as em
from smartmeter_tx.echonet.frame import (
    CONTROLLER, GET, GET_RES, GET_SNA, INF, INF_REQ, METER, NODE_PROFILE, SET_RES, SETC,
    SETC_SNA, SETI, Frame, Property, get_request,
)
from smartmeter_tx.emulator.meter import MeterModel, encode_property_map
from smartmeter_tx.errors import ArgumentError

NOON = datetime.datetime(2024, 6, 1, 12, 0, 0)


def decode_map(edt: bytes) -> set:
    """Decode a property map (the inverse of encode_property_map)."""
    count = edt[0]
    if count < 16:
        return set(edt[1:])
    return {0x80 + 0x10 * b + i for i in range(16) for b in range(8) if edt[1 + i] >> b & 1}


def ask(meter, epcs, now=NOON, esv=GET, deoj=METER, tid=1):
    return meter.handle(get_request(tid, epcs, deoj=deoj, esv=esv).encode(), now)


class HouseholdTests(unittest.TestCase):
    """Power, currents and energy of the simulated household."""

    def test_deterministic(self):
        """The same seed gives the same power curve; another seed another one."""
        times = [NOON + datetime.timedelta(minutes=7 * i) for i in range(200)]
        a = [MeterModel(seed=1).power(t) for t in times]
        self.assertEqual(a, [MeterModel(seed=1).power(t) for t in times])
        self.assertNotEqual(a, [MeterModel(seed=2).power(t) for t in times])

    def test_power_changes(self):
        """Appliances switch: power over a day ranges from a base load to kilowatts."""
        meter = MeterModel(seed=3)
        day = [meter.power(NOON + datetime.timedelta(minutes=m)) for m in range(1440)]
        self.assertGreater(min(day), 100)
        self.assertGreater(max(day) - min(day), 1000)
        self.assertGreater(len(set(day)), 50)

    def test_currents_consistent(self):
        """On 100/200 V three-wire service P = 100 V x (R + T), up to 0.1 A rounding."""
        meter = MeterModel(seed=4, solar_w=3000)
        for m in range(0, 1440, 3):
            t = NOON + datetime.timedelta(minutes=m)
            r, tt = meter.currents(t)
            self.assertLessEqual(abs(meter.power(t) - 10 * (r + tt)), 10)

    def test_energy_integrates_power(self):
        """E0 advances by the integral of the per-minute power."""
        meter = MeterModel(seed=5, unit=0x04, digits=8)  # 0.1 Wh resolution
        start = NOON
        e0 = meter.counters(start)[0]
        ws = sum(meter.power(start + datetime.timedelta(minutes=m)) * 60 for m in range(120))
        e1 = meter.counters(start + datetime.timedelta(minutes=120))[0]
        self.assertLessEqual(abs((e1 - e0) - ws / 360), 1)

    def test_energy_monotonic_and_wraps(self):
        """E0 never decreases except when it wraps at 10^D7."""
        midnight = datetime.datetime(2024, 6, 1)
        meter = MeterModel(seed=6, unit=0x03, digits=5, start=midnight, history_days=0,
                           initial_counts=10 ** 5 - 3000)
        values = [meter.counters(midnight + datetime.timedelta(minutes=10 * i))[0] for i in range(145)]
        self.assertEqual(values[0], 10 ** 5 - 3000)
        wraps = [i for i in range(1, len(values)) if values[i] < values[i - 1]]
        self.assertEqual(len(wraps), 1)
        scale = em.EnergyScale(1, em.UNITS[0x03], 5)
        total = sum(scale.delta(a, b) for a, b in zip(values, values[1:]))
        self.assertGreater(total, 3000)
        self.assertEqual(total, (values[-1] - values[0]) % 10 ** 5)

    def test_solar(self):
        """With solar, E7 goes negative at midday and E3 counts; E3 stands still at night."""
        meter = MeterModel(seed=7, solar_w=4000)
        powers = [meter.power(NOON + datetime.timedelta(minutes=m)) for m in range(-60, 60)]
        self.assertTrue(any(p < 0 for p in powers))
        self.assertGreater(meter.counters(NOON + datetime.timedelta(hours=2))[1],
                           meter.counters(NOON - datetime.timedelta(hours=2))[1])
        night = datetime.datetime(2024, 6, 1, 21, 0)
        self.assertEqual(meter.counters(night)[1], meter.counters(night + datetime.timedelta(hours=3))[1])
        self.assertTrue(all(meter.power(night + datetime.timedelta(minutes=m)) > 0 for m in range(60)))

    def test_no_data_before_history(self):
        """Before the meter's history begins the counters have no data."""
        meter = MeterModel(seed=1, history_days=1)
        self.assertEqual(meter.counters(NOON - datetime.timedelta(days=3)), (None, None))

    def test_bad_parameters(self):
        """Invalid E1, D7 or D3 raise ArgumentError."""
        self.assertRaises(ArgumentError, MeterModel, unit=0x05)
        self.assertRaises(ArgumentError, MeterModel, digits=9)
        self.assertRaises(ArgumentError, MeterModel, coefficient=0)


class FrameTests(unittest.TestCase):
    """The meter's ECHONET Lite answers."""

    def test_multi_property_get(self):
        """A Get of several properties is answered in one Get_Res with the request's TID."""
        meter = MeterModel(seed=1)
        request = get_request(0x1234, [em.POWER, em.CURRENT, em.ENERGY_NORMAL, em.UNIT, em.DIGITS])
        reply = meter.handle(request.encode(), NOON)
        self.assertTrue(reply.is_response_to(request))
        self.assertEqual(reply.esv, GET_RES)
        self.assertEqual(em.decode_power(reply.get(em.POWER)), meter.power(NOON))
        r, t = em.decode_current(reply.get(em.CURRENT))
        self.assertEqual((r * 10, t * 10), meter.currents(NOON))
        self.assertEqual(em.decode_energy_raw(reply.get(em.ENERGY_NORMAL)), meter.counters(NOON)[0])
        self.assertEqual(em.decode_unit(reply.get(em.UNIT)), Decimal("0.01"))
        self.assertEqual(em.decode_digits(reply.get(em.DIGITS)), 6)

    def test_get_sna(self):
        """Unknown EPCs turn the reply into Get_SNA: PDC 0 for them, EDT for the rest."""
        meter = MeterModel(seed=1)
        reply = ask(meter, [em.POWER, 0x83, em.COEFFICIENT])
        self.assertEqual(reply.esv, GET_SNA)
        self.assertEqual([(p.epc, len(p.edt)) for p in reply.properties],
                         [(em.POWER, 4), (0x83, 0), (em.COEFFICIENT, 0)])
        # The real Get_SNA of captures section 10.
        self.assertEqual(ask(meter, [0x83]).encode().hex().upper(), "1081000102880105FF0152018300")

    def test_coefficient(self):
        """D3 is answered when configured."""
        reply = ask(MeterModel(coefficient=10), [em.COEFFICIENT])
        self.assertEqual(em.decode_coefficient(reply.get(em.COEFFICIENT)), 10)

    def test_static_properties(self):
        """80, 82, 88, 8A, 8D, 97, 98 have their documented encodings."""
        reply = ask(MeterModel(seed=1), [0x80, 0x82, 0x88, 0x8A, 0x8D, 0x97, 0x98])
        self.assertEqual(reply.esv, GET_RES)
        self.assertTrue(em.decode_operation_status(reply.get(0x80)))
        self.assertEqual(reply.get(0x82), bytes.fromhex("00004600"))
        self.assertFalse(em.decode_fault(reply.get(0x88)))
        self.assertEqual(em.decode_maker_code(reply.get(0x8A)), "000016")
        self.assertEqual(len(reply.get(0x8D)), 12)
        self.assertEqual(reply.get(0x97), bytes((12, 0)))
        self.assertEqual(reply.get(0x98), bytes.fromhex("07E80601"))

    def test_property_maps(self):
        """9F lists every readable property (bitmap form); 9E the settable ones."""
        meter = MeterModel(seed=1)
        reply = ask(meter, [0x9D, 0x9E, 0x9F])
        readable = decode_map(reply.get(0x9F))
        for epc in (0x80, 0x82, 0x8A, 0x8D, 0x97, 0x98, 0x9D, 0x9E, 0x9F, 0xD7, 0xE0, 0xE1,
                    0xE2, 0xE3, 0xE4, 0xE5, 0xE7, 0xE8, 0xEA, 0xEB, 0xEC, 0xED):
            self.assertIn(epc, readable)
        self.assertNotIn(0xD3, readable)
        self.assertEqual(decode_map(reply.get(0x9E)), {0x81, 0xE5, 0xED})
        self.assertEqual(ask(meter, sorted(readable)).esv, GET_RES)
        self.assertEqual(encode_property_map([0x81, 0x80]), b"\x02\x80\x81")

    def test_fixed_time(self):
        """EA/EB carry the counter at the last :00/:30 and that time."""
        meter = MeterModel(seed=2, solar_w=3000)
        now = datetime.datetime(2024, 6, 1, 12, 44, 10)
        reply = ask(meter, [em.FIXED_NORMAL, em.FIXED_REVERSE], now)
        ea = em.decode_fixed_time(reply.get(em.FIXED_NORMAL))
        eb = em.decode_fixed_time(reply.get(em.FIXED_REVERSE))
        boundary = datetime.datetime(2024, 6, 1, 12, 30)
        self.assertEqual((ea.timestamp, eb.timestamp), (boundary, boundary))
        self.assertEqual((ea.raw, eb.raw), meter.counters(boundary))

    def test_fixed_time_inf(self):
        """The :00/:30 push is an INF (0x73) to the controller: EA, plus EB with solar."""
        inf = MeterModel(seed=2).fixed_time_inf(NOON, CONTROLLER)
        self.assertEqual((inf.esv, inf.seoj, inf.deoj, inf.epcs), (INF, METER, CONTROLLER, (0xEA,)))
        inf = MeterModel(seed=2, solar_w=1000).fixed_time_inf(NOON, CONTROLLER)
        self.assertEqual(inf.epcs, (0xEA, 0xEB))
        self.assertEqual(len(inf.encode()), len(bytes.fromhex(
            "1081000102880105FF017302EA0B07E70C13001E000000458EEB0B07E70C13001E0000000015")))

    def test_history(self):
        """SetC E5 then Get E2 gives that day's 48 half-hour counters; future slots have no data."""
        meter = MeterModel(seed=3, history_days=5)
        never = em.decode_history(ask(meter, [em.HISTORY_NORMAL]).get(em.HISTORY_NORMAL))
        self.assertIsNone(never.day)
        setc = Frame(5, CONTROLLER, METER, SETC, (Property(em.HISTORY_DAY, b"\x01"),))
        reply = meter.handle(setc.encode(), NOON)
        self.assertEqual((reply.esv, reply.properties), (SET_RES, (Property(em.HISTORY_DAY),)))
        day = em.decode_history(ask(meter, [em.HISTORY_NORMAL]).get(em.HISTORY_NORMAL))
        self.assertEqual(day.day, 1)
        self.assertEqual(day.slots[0], meter.counters(datetime.datetime(2024, 5, 31))[0])
        self.assertEqual(list(day.slots), sorted(day.slots))
        meter.handle(Frame(6, CONTROLLER, METER, SETC, (Property(em.HISTORY_DAY, b"\x00"),)).encode(), NOON)
        today = em.decode_history(ask(meter, [em.HISTORY_NORMAL, em.HISTORY_REVERSE]).get(em.HISTORY_NORMAL))
        self.assertEqual(today.slots[24], meter.counters(NOON)[0])
        self.assertTrue(all(em.is_absent(s) for s in today.slots[25:]))
        old = Frame(7, CONTROLLER, METER, SETC, (Property(em.HISTORY_DAY, b"\x09"),))
        meter.handle(old.encode(), NOON)
        slots = em.decode_history(ask(meter, [em.HISTORY_NORMAL]).get(em.HISTORY_NORMAL)).slots
        self.assertTrue(all(em.is_absent(s) for s in slots))

    def test_set_rejected(self):
        """A SetC the meter refuses is SetC_SNA with the rejected EDT echoed."""
        meter = MeterModel(seed=3)
        reply = meter.handle(Frame(5, CONTROLLER, METER, SETC,
                                   (Property(em.HISTORY_DAY, b"\x64"),)).encode(), NOON)
        self.assertEqual((reply.esv, reply.properties), (SETC_SNA, (Property(0xE5, b"\x64"),)))
        reply = meter.handle(Frame(5, CONTROLLER, METER, SETC, (Property(em.POWER, b"\x00" * 4),)).encode(), NOON)
        self.assertEqual(reply.esv, SETC_SNA)
        # SetI success has no reply.
        self.assertIsNone(meter.handle(Frame(5, CONTROLLER, METER, SETI,
                                             (Property(em.HISTORY_DAY, b"\x02"),)).encode(), NOON))

    def test_history2(self):
        """SetC ED then Get EC: n pairs going back 30 minutes each."""
        meter = MeterModel(seed=3)
        spec = bytes.fromhex("07E806010C0003")  # 2024-06-01 12:00, 3 items
        meter.handle(Frame(5, CONTROLLER, METER, SETC, (Property(0xED, spec),)).encode(), NOON)
        edt = ask(meter, [0xEC]).get(0xEC)
        self.assertEqual(len(edt), 7 + 8 * 3)
        first = int.from_bytes(edt[7:11], "big")
        self.assertEqual(first, meter.counters(NOON)[0])
        second = int.from_bytes(edt[15:19], "big")
        self.assertEqual(second, meter.counters(NOON - datetime.timedelta(minutes=30))[0])

    def test_node_profile(self):
        """INF_REQ / Get of the node profile's D5 and D6 list the meter."""
        meter = MeterModel(seed=1)
        reply = ask(meter, [em.INSTANCE_LIST], esv=INF_REQ, deoj=NODE_PROFILE)
        self.assertEqual((reply.esv, reply.seoj), (INF, NODE_PROFILE))
        self.assertEqual(em.decode_instance_list(reply.get(em.INSTANCE_LIST)), (METER,))
        reply = ask(meter, [em.SELF_INSTANCE_LIST], deoj=NODE_PROFILE)
        self.assertEqual(em.decode_instance_list(reply.get(em.SELF_INSTANCE_LIST)), (METER,))
        announce = meter.instance_list_inf().encode().hex().upper()
        self.assertEqual(announce[8:], "0EF0010EF0017301D50401028801")

    def test_silence(self):
        """Garbage, responses and frames for other objects get no reply."""
        meter = MeterModel(seed=1)
        self.assertIsNone(meter.handle(b"\x10\x81garbage", NOON))
        self.assertIsNone(ask(meter, [0x80], deoj=0x013001))
        self.assertIsNone(ask(meter, [0x80], esv=GET_RES))
        self.assertEqual(ask(meter, [0x80], deoj=0x028800).seoj, METER)

    def test_truth(self):
        """truth_of decodes every property with the project's decoders, JSON-ready."""
        meter = MeterModel(seed=1)
        reply = ask(meter, [em.POWER, em.CURRENT, em.ENERGY_NORMAL, em.FIXED_NORMAL, 0x83])
        records = meter.truth_of(reply, 12.5, NOON)
        self.assertEqual([r.epc for r in records], [em.POWER, em.CURRENT, em.ENERGY_NORMAL, em.FIXED_NORMAL])
        self.assertEqual(records[0].value, meter.power(NOON))
        self.assertEqual(records[2].kwh, meter.to_kwh(meter.counters(NOON)[0]))
        self.assertEqual(records[3].value["time"], NOON)
        for r in records:
            json.dumps(r.to_json())
        self.assertEqual(records[0].to_json()["epc"], "E7")
