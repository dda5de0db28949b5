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
from smartmeter_tx.echonet import history as H
from smartmeter_tx import model
from smartmeter_tx.echonet.frame import (
    CONTROLLER, GET, GET_RES, GET_SNA, INF, INF_REQ, METER, NODE_PROFILE, SET_RES, SETC,
    SETC_SNA, SETI, Frame, Property, get_request,
)
from smartmeter_tx.emulator.household import REFERENCE
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

    def test_powerChanges(self):
        """Appliances switch: power over a day ranges from a base load to kilowatts."""
        meter = MeterModel(seed=3)
        day = [meter.power(NOON + datetime.timedelta(minutes=m)) for m in range(1440)]
        self.assertGreater(min(day), 100)
        self.assertGreater(max(day) - min(day), 1000)
        self.assertGreater(len(set(day)), 50)

    def test_currentsConsistent(self):
        """On 100/200 V three-wire service P = 100 V x (R + T), up to 0.1 A rounding."""
        meter = MeterModel(seed=4, solar_w=3000)
        for m in range(0, 1440, 3):
            t = NOON + datetime.timedelta(minutes=m)
            r, tt = meter.currents(t)
            self.assertLessEqual(abs(meter.power(t) - 10 * (r + tt)), 10)

    def test_energyIntegratesPower(self):
        """E0 advances by the integral of the per-minute power."""
        meter = MeterModel(seed=5, unit=0x04, digits=8)  # 0.1 Wh resolution
        start = NOON
        e0 = meter.counters(start)[0]
        ws = sum(meter.power(start + datetime.timedelta(minutes=m)) * 60 for m in range(120))
        e1 = meter.counters(start + datetime.timedelta(minutes=120))[0]
        self.assertLessEqual(abs((e1 - e0) - ws / 360), 1)

    def test_energyMonotonicAndWraps(self):
        """E0 never decreases except when it wraps at 10^D7."""
        midnight = REFERENCE  # where E0 is initial_counts
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

    def test_noDataBeforeHistory(self):
        """Before the meter's history begins the counters have no data."""
        meter = MeterModel(seed=1, history_days=1)
        self.assertEqual(meter.counters(NOON - datetime.timedelta(days=3)), (None, None))

    def test_badParameters(self):
        """Invalid E1, D7 or D3 raise ArgumentError."""
        self.assertRaises(ArgumentError, MeterModel, unit=0x05)
        self.assertRaises(ArgumentError, MeterModel, digits=9)
        self.assertRaises(ArgumentError, MeterModel, coefficient=0)


class FrameTests(unittest.TestCase):
    """The meter's ECHONET Lite answers."""

    def test_multiPropertyGet(self):
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

    def test_getSna(self):
        """Unknown EPCs turn the reply into Get_SNA: PDC 0 for them, EDT for the rest."""
        meter = MeterModel(seed=1)
        reply = ask(meter, [em.POWER, 0x83, em.COEFFICIENT])
        self.assertEqual(reply.esv, GET_SNA)
        self.assertEqual([(p.epc, len(p.edt)) for p in reply.properties],
                         [(em.POWER, 4), (0x83, 0), (em.COEFFICIENT, 0)])
        # The real Get_SNA of 83 (captures.py §20, S20_GET_SNA_83).
        self.assertEqual(ask(meter, [0x83]).encode().hex().upper(), "1081000102880105FF0152018300")

    def test_coefficient(self):
        """D3 is answered when configured."""
        reply = ask(MeterModel(coefficient=10), [em.COEFFICIENT])
        self.assertEqual(em.decode_coefficient(reply.get(em.COEFFICIENT)), 10)

    def test_staticProperties(self):
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

    def test_propertyMaps(self):
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

    def test_fixedTime(self):
        """EA/EB carry the counter at the last :00/:30 and that time."""
        meter = MeterModel(seed=2, solar_w=3000)
        now = datetime.datetime(2024, 6, 1, 12, 44, 10)
        reply = ask(meter, [em.FIXED_NORMAL, em.FIXED_REVERSE], now)
        ea = em.decode_fixed_time(reply.get(em.FIXED_NORMAL))
        eb = em.decode_fixed_time(reply.get(em.FIXED_REVERSE))
        boundary = datetime.datetime(2024, 6, 1, 12, 30)
        self.assertEqual((ea.timestamp, eb.timestamp), (boundary, boundary))
        self.assertEqual((ea.raw, eb.raw), meter.counters(boundary))

    def test_fixedTimeInf(self):
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
        never = H.decode_history(ask(meter, [em.HISTORY_NORMAL]).get(em.HISTORY_NORMAL))
        self.assertIsNone(never.day)
        setc = Frame(5, CONTROLLER, METER, SETC, (Property(em.HISTORY_DAY, b"\x01"),))
        reply = meter.handle(setc.encode(), NOON)
        self.assertEqual((reply.esv, reply.properties), (SET_RES, (Property(em.HISTORY_DAY),)))
        day = H.decode_history(ask(meter, [em.HISTORY_NORMAL]).get(em.HISTORY_NORMAL))
        self.assertEqual(day.day, 1)
        self.assertEqual(day.slots[0], meter.counters(datetime.datetime(2024, 5, 31))[0])
        self.assertEqual(list(day.slots), sorted(day.slots))
        meter.handle(Frame(6, CONTROLLER, METER, SETC, (Property(em.HISTORY_DAY, b"\x00"),)).encode(), NOON)
        today = H.decode_history(ask(meter, [em.HISTORY_NORMAL, em.HISTORY_REVERSE]).get(em.HISTORY_NORMAL))
        self.assertEqual(today.slots[24], meter.counters(NOON)[0])
        self.assertTrue(all(model.is_absent(s) for s in today.slots[25:]))
        old = Frame(7, CONTROLLER, METER, SETC, (Property(em.HISTORY_DAY, b"\x09"),))
        meter.handle(old.encode(), NOON)
        slots = H.decode_history(ask(meter, [em.HISTORY_NORMAL]).get(em.HISTORY_NORMAL)).slots
        self.assertTrue(all(model.is_absent(s) for s in slots))

    def test_setRejected(self):
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

    def test_nodeProfile(self):
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


MINUTE = datetime.timedelta(minutes=1)
SLOT = datetime.timedelta(minutes=30)


def setc(meter, epc, edt, now=NOON, tid=9):
    return meter.handle(Frame(tid, CONTROLLER, METER, SETC, (Property(epc, edt),)).encode(), now)


def ed(start, count):
    return start.year.to_bytes(2, "big") + bytes((start.month, start.day, start.hour,
                                                  start.minute, count))


def read_day(meter, day, now):
    """SetC E5 (checking Set_Res), then E2 and E4 in one Get: {boundary: (normal, reverse)}."""
    reply = setc(meter, em.HISTORY_DAY, bytes([day]), now)
    assert (reply.esv, reply.properties) == (SET_RES, (Property(em.HISTORY_DAY),)), reply
    reply = ask(meter, [em.HISTORY_NORMAL, em.HISTORY_REVERSE], now)
    assert reply.esv == GET_RES and reply.epcs == (0xE2, 0xE4), reply
    normal = H.decode_history(reply.get(em.HISTORY_NORMAL))
    reverse = H.decode_history(reply.get(em.HISTORY_REVERSE))
    assert normal.day == reverse.day == day
    midnight = datetime.datetime.combine(now.date() - datetime.timedelta(days=day), datetime.time())
    return {midnight + k * SLOT: (normal.slots[k], reverse.slots[k]) for k in range(48)}


def read_ec(meter, start, count, now):
    """SetC ED (checking Set_Res), then Get EC: {boundary: (normal, reverse)}."""
    reply = setc(meter, 0xED, ed(start, count), now)
    assert (reply.esv, reply.properties) == (SET_RES, (Property(0xED),)), reply
    edt = ask(meter, [0xEC], now).get(0xEC)
    assert edt[:7] == ed(start, count) and len(edt) == 7 + 8 * count
    return {start - k * SLOT: (em.decode_energy_raw(edt[7 + 8 * k:11 + 8 * k]),
                               em.decode_energy_raw(edt[11 + 8 * k:15 + 8 * k]))
            for k in range(count)}


def live(meter, at):
    """E0 and E3 read live at C{at}, and EA/EB there."""
    reply = ask(meter, [em.ENERGY_NORMAL, em.ENERGY_REVERSE, em.FIXED_NORMAL, em.FIXED_REVERSE], at)
    assert reply.esv == GET_RES
    ea = em.decode_fixed_time(reply.get(em.FIXED_NORMAL))
    eb = em.decode_fixed_time(reply.get(em.FIXED_REVERSE))
    assert ea.timestamp == eb.timestamp == model.slot_start(at)
    return ((em.decode_energy_raw(reply.get(em.ENERGY_NORMAL)),
             em.decode_energy_raw(reply.get(em.ENERGY_REVERSE))), (ea.raw, eb.raw))


class HistoryTests(unittest.TestCase):
    """E5/E2/E4 and ED/EC agree with what the meter said live."""

    def test_slotEnergyIsTheMinutes(self):
        """The per-slot shortcut integrates exactly the per-minute E7 (with and without sun)."""
        for solar in (0, 5000):
            meter = MeterModel(seed=11, solar_w=solar)
            first = (model.slot_start(NOON) - datetime.datetime(2000, 1, 1)) // SLOT
            for slot in range(first - 50, first + 10):
                minutes = [meter.household.power_of_minute(slot * 30 + k) for k in range(30)]
                self.assertEqual(meter.household.slot_ws(slot), (sum(p * 60 for p in minutes if p > 0),
                                                        -sum(p * 60 for p in minutes if p < 0)))

    def test_defaultDepth(self):
        """45 days by default: E5 = 45 has data at start, 46 has none."""
        meter = MeterModel(seed=1)
        self.assertEqual(meter.history_days, 45)
        self.assertFalse(model.is_absent(read_day(meter, 45, NOON)[datetime.datetime(2024, 4, 17)][0]))
        self.assertTrue(all(model.is_absent(n) for n, r in read_day(meter, 46, NOON).values()))

    def test_depthIsRolling(self):
        """Three days later the oldest three days are forgotten; EC that far back has no data."""
        meter = MeterModel(seed=1, history_days=10, solar_w=2000)
        later = NOON + datetime.timedelta(days=3)
        day10 = read_day(meter, 10, later)
        self.assertFalse(any(model.is_absent(n) for n, r in day10.values()))
        self.assertTrue(all(model.is_absent(n) and model.is_absent(r)
                            for n, r in read_day(meter, 11, later).values()))
        oldest = datetime.datetime(2024, 5, 25)
        pairs = read_ec(meter, oldest + SLOT, 3, later)
        self.assertFalse(model.is_absent(pairs[oldest][0]))
        self.assertTrue(model.is_absent(pairs[oldest - SLOT][0]))
        self.assertEqual(meter.slot_truth(oldest - SLOT, later), (None, None))
        self.assertEqual(meter.slot_truth(oldest, later), meter.counters(oldest))

    def test_futureSlots(self):
        """Slots after now, in E2 and EC, have no data; E5 never set gives day 0x00FF."""
        meter = MeterModel(seed=2)
        now = NOON + datetime.timedelta(minutes=45)
        today = read_day(meter, 0, now)
        self.assertFalse(model.is_absent(today[NOON + SLOT][0]))
        self.assertTrue(all(model.is_absent(v[0]) for t, v in today.items() if t > now))
        self.assertEqual(meter.slot_truth(NOON + 2 * SLOT, now), (None, None))

    def check_consistent(self, solar=3000, **knobs):
        """
        Read E0/E3 (and EA/EB) live on boundaries over three days around
        start, then the same boundaries from E2/E4 and EC: all equal.
        """
        meter = MeterModel(seed=knobs.pop("seed", 7), solar_w=solar, **knobs)
        boundaries = [NOON + k * 7 * SLOT for k in range(-60, 90)]
        said = {}
        for b in boundaries:
            e0e3, eaeb = live(meter, b)
            self.assertEqual(e0e3, eaeb)  # EA/EB at :00/:30 are E0/E3 then
            self.assertEqual(live(meter, b + 17 * MINUTE)[1], eaeb)  # and until the next
            said[b] = e0e3
        self.assertTrue(any(r > 0 for n, r in said.values()), "no reverse energy")
        now = boundaries[-1] + datetime.timedelta(hours=5, minutes=10)
        from_e2, from_ec = {}, {}
        for day in range((now.date() - boundaries[0].date()).days + 1):
            from_e2.update(read_day(meter, day, now))
        for b in boundaries[::3]:
            from_ec.update(read_ec(meter, b, 12, now))
        for b in boundaries:
            self.assertEqual(from_e2[b], said[b], b)
            self.assertEqual(meter.slot_truth(b, now), said[b])
        for b, pair in from_ec.items():
            self.assertEqual(pair, from_e2[b], b)
        return meter, said

    def test_consistent(self):
        """The default meter with solar."""
        self.check_consistent()

    def test_consistentAcrossAWrap(self):
        """D7 = 3 at 0.001 kWh wraps every kWh: history has the wrapped values, as E0 had."""
        meter, said = self.check_consistent(unit=0x03, digits=3, solar=4000)
        values = [said[b][0] for b in sorted(said)]
        self.assertTrue(any(b < a for a, b in zip(values, values[1:])), "no wrap")
        self.assertTrue(all(v < 1000 for v in values))

    def test_consistentWithCoefficientAndUnits(self):
        """D3 and E1 variations change the counts, not the agreement."""
        for knobs in ({"coefficient": 10, "unit": 0x01, "digits": 8},
                      {"coefficient": 3, "unit": 0x04, "digits": 7},
                      {"unit": 0x0A, "digits": 5, "seed": 3}):
            self.check_consistent(**knobs)

    def test_setcThenGet(self):
        """SetC E5/ED is Set_Res with PDC 0; the next Get sees it; E5 and ED in one SetC."""
        meter = MeterModel(seed=4)
        frame = Frame(3, CONTROLLER, METER, SETC, (Property(em.HISTORY_DAY, b"\x02"),
                                                   Property(0xED, ed(NOON - SLOT, 2))))
        reply = meter.handle(frame.encode(), NOON)
        self.assertEqual((reply.esv, reply.tid, reply.properties),
                         (SET_RES, 3, (Property(em.HISTORY_DAY), Property(0xED))))
        reply = ask(meter, [em.HISTORY_DAY, 0xED, em.HISTORY_NORMAL, em.HISTORY_REVERSE, 0xEC])
        self.assertEqual(reply.esv, GET_RES)
        self.assertEqual(reply.get(em.HISTORY_DAY), b"\x02")
        self.assertEqual(reply.get(0xED), ed(NOON - SLOT, 2))
        self.assertEqual(H.decode_history(reply.get(em.HISTORY_REVERSE)).day, 2)
        self.assertEqual(int.from_bytes(reply.get(0xEC)[7:11], "big"),
                         meter.counters(NOON - SLOT)[0])
        # ED in the future or off the :00/:30 grid is refused, echoing the EDT.
        for bad in (ed(NOON + SLOT, 1), ed(NOON, 13), ed(NOON, 0),
                    ed(NOON, 1)[:5] + b"\x0f\x01"):
            reply = setc(meter, 0xED, bad)
            self.assertEqual((reply.esv, reply.properties), (SETC_SNA, (Property(0xED, bad),)))
        self.assertEqual(ask(meter, [0xED]).get(0xED), ed(NOON - SLOT, 2))

    def test_outage(self):
        """
        No readings in the window: E0/E3/E7/E8 and every boundary inside have no
        data; the counter went on, so the first reading after has the outage's energy.
        """
        start, end = datetime.datetime(2024, 5, 30, 10), datetime.datetime(2024, 5, 30, 13, 30)
        meter = MeterModel(seed=5, solar_w=3000, outage=((start, end),))
        inside = start + datetime.timedelta(hours=1, minutes=5)
        reply = ask(meter, [em.ENERGY_NORMAL, em.ENERGY_REVERSE, em.POWER, em.CURRENT,
                            em.FIXED_NORMAL], inside)
        self.assertEqual(reply.esv, GET_RES)
        self.assertIs(em.decode_energy_raw(reply.get(em.ENERGY_NORMAL)), model.NO_DATA)
        self.assertIs(em.decode_energy_raw(reply.get(em.ENERGY_REVERSE)), model.NO_DATA)
        self.assertTrue(model.is_absent(em.decode_power(reply.get(em.POWER))))
        self.assertTrue(all(model.is_absent(v) for v in em.decode_current(reply.get(em.CURRENT))))
        self.assertIs(em.decode_fixed_time(reply.get(em.FIXED_NORMAL)).raw, model.NO_DATA)
        # 13:10: EA still has the 13:00 boundary (inside: no data); 13:40 the 13:30 one.
        self.assertIs(live(meter, end - 20 * MINUTE)[1][0], model.NO_DATA)
        self.assertEqual(live(meter, end + 10 * MINUTE)[1], meter.counters(end))
        self.assertEqual(live(meter, end)[0], meter.counters(end))
        self.assertEqual(live(meter, start - MINUTE)[0], meter.counters(start - MINUTE))
        day = read_day(meter, 2, NOON)
        gap = [t for t, (n, r) in day.items() if model.is_absent(n) or model.is_absent(r)]
        self.assertEqual(gap, [start + k * SLOT for k in range(7)])  # 10:00 ... 13:00
        pairs = read_ec(meter, end, 12, NOON)
        self.assertEqual([t for t, (n, r) in pairs.items() if model.is_absent(n)], gap[::-1])
        self.assertEqual(pairs[end], day[end])
        self.assertEqual(meter.slot_truth(start), (None, None))
        self.assertEqual(meter.slot_truth(end), meter.counters(end))
        # The reading after the gap holds the energy of the whole outage.
        minutes = range(int((start - SLOT - datetime.datetime(2000, 1, 1)) / MINUTE),
                        int((end - datetime.datetime(2000, 1, 1)) / MINUTE))
        powers = [meter.household.power_of_minute(m) for m in minutes]
        for which, wh in ((0, sum(p for p in powers if p > 0) / 60),
                          (1, -sum(p for p in powers if p < 0) / 60)):
            counts = day[end][which] - day[start - SLOT][which]
            self.assertLessEqual(abs(counts * 10 - wh), 10)  # counts of 0.01 kWh
        self.assertGreater(day[end][1] - day[start - SLOT][1], 0)  # exported at midday

    def test_outageValidated(self):
        """An outage must end after it starts and be local (naive) date-times."""
        t = datetime.datetime(2024, 5, 30, 10)
        self.assertRaises(ArgumentError, MeterModel, outage=((t, t),))
        self.assertRaises(ArgumentError, MeterModel, outage=((t, "13:00"),))
        self.assertRaises(ArgumentError, MeterModel, outage=(t,))
        aware = t.replace(tzinfo=datetime.timezone.utc)
        self.assertRaises(ArgumentError, MeterModel, outage=((aware, aware + SLOT),))

    def test_withoutHistory2(self):
        """history2=False: no EC/ED in 9F/9E; Get gives Get_SNA (PDC 0), SetC gives SetC_SNA."""
        meter = MeterModel(seed=1, history2=False)
        maps = ask(meter, [0x9E, 0x9F])
        self.assertNotIn(0xEC, decode_map(maps.get(0x9F)))
        self.assertNotIn(0xED, decode_map(maps.get(0x9F)))
        self.assertIn(0xE2, decode_map(maps.get(0x9F)))
        self.assertEqual(decode_map(maps.get(0x9E)), {0x81, 0xE5})
        reply = ask(meter, [em.POWER, 0xEC])
        self.assertEqual(reply.esv, GET_SNA)
        self.assertEqual([(p.epc, len(p.edt)) for p in reply.properties], [(em.POWER, 4), (0xEC, 0)])
        self.assertEqual(ask(meter, [0xED]).encode().hex().upper(), "1081000102880105FF015201ED00")
        spec = ed(NOON, 1)
        reply = setc(meter, 0xED, spec)
        self.assertEqual((reply.esv, reply.properties), (SETC_SNA, (Property(0xED, spec),)))
        self.assertEqual(read_day(meter, 1, NOON)[NOON - datetime.timedelta(days=1)][0],
                         meter.counters(NOON - datetime.timedelta(days=1))[0])

    def test_truthOfHistory(self):
        """E2/E4/EC/ED/E5/97/98/9F decode in the truth; slots compare with slot_truth."""
        meter = MeterModel(seed=6, solar_w=3000, outage=((NOON - 4 * SLOT, NOON - 2 * SLOT),))
        now = NOON + 10 * MINUTE
        setc(meter, em.HISTORY_DAY, b"\x00", now)
        setc(meter, 0xED, ed(NOON, 6), now)
        reply = ask(meter, [em.HISTORY_NORMAL, em.HISTORY_REVERSE, 0xEC, 0xED, em.HISTORY_DAY,
                            0x97, 0x98, 0x9F], now)
        records = {r.epc: r for r in meter.truth_of(reply, 1.0, now)}
        midnight = datetime.datetime(2024, 6, 1)
        for epc, which in ((em.HISTORY_NORMAL, 0), (em.HISTORY_REVERSE, 1)):
            value = records[epc].value
            self.assertEqual((value["day"], value["date"]), (0, midnight.date()))
            expect = [meter.slot_truth(midnight + k * SLOT, now)[which] for k in range(48)]
            self.assertEqual([None if model.is_absent(v) else v for v in value["slots"]], expect)
        ec = records[0xEC].value
        self.assertEqual(ec["start"], NOON)
        for k in range(6):
            n, r = meter.slot_truth(NOON - k * SLOT, now)
            self.assertEqual((ec["normal"][k], ec["reverse"][k]),
                             (model.NO_DATA if n is None else n, model.NO_DATA if r is None else r))
        self.assertEqual(sum(model.is_absent(v) for v in ec["normal"]), 2)
        self.assertEqual(records[0xED].value, {"start": NOON, "count": 6})
        self.assertEqual(records[em.HISTORY_DAY].value, 0)
        self.assertEqual(records[0x97].value, datetime.time(12, 10))
        self.assertEqual(records[0x98].value, datetime.date(2024, 6, 1))
        self.assertIn("EC", records[0x9F].value)
        as_json = json.loads(json.dumps(records[0xEC].to_json()))
        self.assertEqual(as_json["value"]["start"], "2024-06-01T12:00:00")
        self.assertIn(None, as_json["value"]["normal"])
        self.assertEqual(json.loads(json.dumps(records[em.HISTORY_NORMAL].to_json()))
                         ["value"]["date"], "2024-06-01")

    def test_slotTruthBoundariesOnly(self):
        """slot_truth takes a :00/:30 boundary."""
        self.assertRaises(ArgumentError, MeterModel().slot_truth, NOON + MINUTE)

    def test_deepReadsIntegrateOnce(self):
        """
        45 days deep: the first read of day 44 integrates each day back to it
        once; later E2/E4 and EC reads of those days, as the clock moves on
        within the day, integrate nothing again, and the memory kept stays
        bounded, even a year on.
        """
        meter = MeterModel(seed=8, solar_w=4000)
        setc(meter, em.HISTORY_DAY, bytes([44]))
        ask(meter, [em.HISTORY_NORMAL])
        first = meter.household.days_integrated
        self.assertGreaterEqual(first, 45)
        self.assertLessEqual(first, 46)
        for i in range(20):
            now = NOON + i * 7 * MINUTE
            ask(meter, [em.HISTORY_NORMAL, em.HISTORY_REVERSE], now)
            setc(meter, 0xED, ed(NOON - datetime.timedelta(days=44), 12), now)
            ask(meter, [0xEC], now)
        self.assertEqual(meter.household.days_integrated, first)
        bound = 128 * 49 + 4097 + 9 * 30
        self.assertLess(meter.household.cached(), bound + 100)
        later = NOON + datetime.timedelta(days=365)
        for day in range(0, 46, 5):
            read_day(meter, day, later)
        self.assertLess(meter.household.cached(), bound + 100 + 366)


def remembered(meter, now):
    """Every boundary the meter's E2/E4 give at C{now}, present or not:
    {boundary: (normal, reverse)} over days 0 ... history_days."""
    out = {}
    for day in range(meter.history_days + 1):
        out.update(read_day(meter, day, now))
    return {b: v for b, v in out.items() if meter.oldest_boundary(now) <= b <= now}


class SeedFixesHistoryTests(unittest.TestCase):
    """
    The history is a function of the seed and the meter's options: not of
    when the emulator started (issue 27, item 17).
    """

    #: Remembered by every meter of test_sameSeedSameRecords.
    OUTAGE = ((datetime.datetime(2024, 5, 20, 9, 0), datetime.datetime(2024, 5, 20, 11, 30)),)

    def runs(self, seed, solar, starts):
        """For each start, a meter read 2 h 3 min after it: (meter, now, remembered)."""
        out = []
        for start in starts:
            meter = MeterModel(seed=seed, start=start, solar_w=solar, history_days=20,
                               outage=self.OUTAGE)
            now = start + datetime.timedelta(hours=2, minutes=3)
            out.append((meter, now, remembered(meter, now)))
        return out

    def test_sameSeedSameRecords(self):
        """
        Meters with one seed started 37 s and 3 days later and 8 days
        earlier (mid-slot) give the same counters, and the same absent slots
        (an outage), for every boundary both remember; E0/E3 read live at a
        boundary are what the other meter recorded there.
        """
        starts = [NOON, NOON + datetime.timedelta(seconds=37),
                  NOON + datetime.timedelta(days=3, hours=5, minutes=17, seconds=23),
                  NOON - datetime.timedelta(days=9, hours=-11, minutes=2, seconds=5)]
        lives = 0
        for solar in (0, 3000):
            runs = self.runs(5, solar, starts)
            for i, (meter, now, mine) in enumerate(runs):
                for _, _, theirs in runs[:i]:
                    common = sorted(set(mine) & set(theirs))
                    self.assertGreater(len(common), 8 * 48)
                    self.assertEqual([mine[b] for b in common], [theirs[b] for b in common])
                    self.assertEqual(sum(mine[b][0] is model.NO_DATA for b in common), 5)
                    boundary = model.slot_start(now)
                    if boundary in theirs:
                        self.assertEqual(live(meter, boundary)[0], theirs[boundary])
                        lives += 1
        self.assertEqual(lives, 8)

    def test_otherSeedOtherRecords(self):
        """Another seed, same start: other counters (the seed does decide the history)."""
        (_, _, a), = self.runs(5, 0, [NOON])
        (_, _, b), = self.runs(6, 0, [NOON])
        present = [t for t in a if not model.is_absent(a[t][0])]
        self.assertGreater(len(present), 10 * 48)
        self.assertLess(sum(a[t] == b[t] for t in present), len(present) // 10)

    def test_liveContinuesTheHistory(self):
        """
        Read live at any second, E0/E3 are at least the last boundary's
        record, at most the next one's, and never go back from one read to
        the next, wherever the meter started.
        """
        for start in (NOON + datetime.timedelta(days=2, seconds=731), NOON):
            meter = MeterModel(seed=9, start=start, solar_w=3000, digits=8)
            last = (0, 0)
            for k in range(0, 3 * 3600, 97):
                at = start + datetime.timedelta(seconds=k)
                e0e3 = meter.reading(at)
                before = meter.slot_truth(model.slot_start(at), at)
                after = meter.slot_truth(model.slot_start(at) + SLOT)
                for which in (0, 1):
                    self.assertLessEqual(before[which], e0e3[which])
                    self.assertLessEqual(e0e3[which], after[which])
                    self.assertLessEqual(last[which], e0e3[which])
                last = e0e3
