"""
Tests for the history reads of L{smartmeter_tx.session.client.BRouteClient}
(C{read_history}, C{read_history_at}, C{history_source}, C{ensure_scale}) over
the emulator on a task.Clock (L{tests.emuloop}), in both SK dialects: SetC
before the Get, the meter's midnight, EVENT 32 and the one-per-frame fallback.
"""

import datetime
from decimal import Decimal

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.session import client as C
from smartmeter_tx.session import join
from smartmeter_tx.echonet import frame as F
from smartmeter_tx.echonet import meter as M
from smartmeter_tx.echonet import history as H
from smartmeter_tx import model
from smartmeter_tx.emulator.module import DEFAULT_ID, DEFAULT_PASSWORD
from smartmeter_tx.errors import RateLimited, ReadFailed
from smartmeter_tx.sk import values as V
from smartmeter_tx.sk.values import Dialect
from tests.emuloop import Loop

CREDS = join.Credentials(DEFAULT_ID, DEFAULT_PASSWORD)
#: The emulated meter's clock at the start (the emulator's default).
METER_START = datetime.datetime(2024, 6, 1, 12, 0)


def echonet_of(data: bytes) -> F.Frame:
    """The ECHONET Lite frame an SKSENDTO carries, after its header."""
    return F.Frame.decode(data[data.index(b"\x10\x81"):])


def boundaries(date: datetime.date) -> list:
    midnight = datetime.datetime.combine(date, datetime.time())
    return [midnight + k * model.SLOT for k in range(48)]


def as_raw(value):
    """A decoded reading as slot_truth gives it: NO_DATA is None."""
    return None if value is model.NO_DATA else value


class _Harness:
    dialect = Dialect.STANDARD
    knobs: dict = {}

    def setUp(self):
        self.loop = Loop(dialect=self.dialect, time_scale=1.0, **self.knobs)
        self.addCleanup(self.loop.stop)
        #: In order: ("send", frame) for each SKSENDTO, ("recv", frame) for
        #: each ECHONET frame the module printed.
        self.events: list = []
        self.loop.write_observers.append(self._sent)

    def _sent(self, data: bytes) -> None:
        if data.startswith(b"SKSENDTO"):
            self.events.append(("send", echonet_of(data)))

    def _received(self, value) -> None:
        if isinstance(value, V.RxUdp) and value.rport == 0x0E1A:
            try:
                self.events.append(("recv", F.Frame.decode(value.data)))
            except Exception:
                pass

    def client(self, link=None):
        sk = self.loop.connect()
        sk.add_listener(self._received)
        client = C.BRouteClient(sk, CREDS, self.loop.clock, link=link)
        self.addCleanup(client.close)
        return client

    def drive(self, coro, limit=600.0):
        return self.loop.run(defer.Deferred.fromCoroutine(coro), limit)

    def result(self, coro):
        return self.successResultOf(self.drive(coro))

    def sends(self, since=0):
        return [f for kind, f in self.events[since:] if kind == "send"]

    @property
    def meter(self):
        return self.loop.emulator.meter

    def joined(self):
        """A client that has a session and knows the meter's clock."""
        client = self.client()
        self.result(client.history.meter_clock())
        return client

    def assertReadings(self, readings, date, now=None):
        """Each of C{date}'s 48 boundaries as the meter stored it (None <-> NO_DATA)."""
        self.assertEqual(sorted(readings), boundaries(date))
        for boundary, pair in readings.items():
            self.assertEqual(tuple(map(as_raw, pair)), self.meter.slot_truth(boundary, now),
                             boundary)



class _HistoryTests(_Harness):
    """History reads of a meter started at METER_START."""

    # -- read_history --------------------------------------------------------------

    def test_setcBeforeGet(self):
        """
        SetC E5, its Set_Res, and only then one Get of E2, E4, 0x97 and 0x98.
        """
        client = self.joined()
        mark = len(self.events)
        self.result(client.history.read_history(1))
        events = [(kind, f.esv, [p.epc for p in f.properties]) for kind, f in self.events[mark:]]
        self.assertEqual(events, [
            ("send", F.SETC, [M.HISTORY_DAY]),
            ("recv", F.SET_RES, [M.HISTORY_DAY]),
            ("send", F.GET, [M.HISTORY_NORMAL, M.HISTORY_REVERSE, M.METER_TIME, M.METER_DATE]),
            ("recv", F.GET_RES, [M.HISTORY_NORMAL, M.HISTORY_REVERSE, M.METER_TIME,
                                 M.METER_DATE]),
        ])
        setc = self.sends(mark)[0]
        self.assertEqual(setc.properties[0].edt, b"\x01")

    def test_esvOnTheWire(self):
        """The ESV byte at offset 10 of each SKSENDTO's frame: 0x61 SetC, then 0x62 Get."""
        client = self.joined()
        esvs = []
        self.loop.write_observers.append(
            lambda data: data.startswith(b"SKSENDTO")
            and esvs.append(data[data.index(b"\x10\x81") + 10]))
        self.result(client.history.read_history(2))
        self.assertEqual(esvs, [0x61, 0x62])

    def test_getWaitsForSetRes(self):
        """
        When the Set_Res is lost the client sends the SetC again, not the
        Get: the Get goes only after a Set_Res.
        """
        client = self.joined()
        meter = self.meter
        original = meter.handle
        dropped = []

        def handle(data, now):
            reply = original(data, now)
            if reply is not None and reply.esv == F.SET_RES and not dropped:
                dropped.append(reply)
                return None
            return reply
        meter.handle = handle
        mark = len(self.events)
        readings, clock = self.result(client.history.read_history(1))
        self.assertEqual(len(dropped), 1)
        self.assertEqual([f.esv for f in self.sends(mark)], [F.SETC, F.SETC, F.GET])
        self.assertReadings(readings, clock.date() - datetime.timedelta(days=1))

    def test_readingsAreTheTruth(self):
        """Every boundary of day 1 and day 3 is what the meter stored."""
        client = self.joined()
        for day in (1, 3):
            readings, clock = self.result(client.history.read_history(day))
            self.assertEqual(clock.date(), METER_START.date())
            self.assertReadings(readings, METER_START.date() - datetime.timedelta(days=day))
            self.assertFalse(any(model.is_absent(v) for pair in readings.values() for v in pair))

    def test_todayFutureIsNoData(self):
        """Day 0: boundaries up to the meter's time have data, later ones are NO_DATA."""
        client = self.joined()
        readings, clock = self.result(client.history.read_history(0))
        self.assertEqual(sorted(readings), boundaries(METER_START.date()))
        now = self.loop.emulator.meter_now()
        for boundary, pair in readings.items():
            if boundary <= now:
                self.assertEqual(tuple(map(as_raw, pair)), self.meter.slot_truth(boundary))
                self.assertNotIn(model.NO_DATA, pair)
            else:
                self.assertEqual(pair, (model.NO_DATA, model.NO_DATA), boundary)
        self.assertEqual(readings[METER_START][0], self.meter.slot_truth(METER_START)[0])
        self.assertEqual(readings[METER_START + model.SLOT], (model.NO_DATA, model.NO_DATA))

    def test_readHistoryLearnsTheClock(self):
        """A fresh client reads the meter's clock first, then SetC and Get."""
        client = self.client()
        readings, clock = self.result(client.history.read_history(1))
        self.assertEqual([f.esv for f in self.sends()], [F.GET, F.SETC, F.GET])
        self.assertEqual([p.epc for p in self.sends()[0].properties],
                         [M.METER_TIME, M.METER_DATE])
        self.assertReadings(readings, METER_START.date() - datetime.timedelta(days=1))

    def test_oldestDay(self):
        """Day 45 (the meter's depth) has data; day 46 is all NO_DATA."""
        client = self.joined()
        readings, _ = self.result(client.history.read_history(45))
        self.assertReadings(readings, METER_START.date() - datetime.timedelta(days=45))
        self.assertNotIn(model.NO_DATA, readings[min(readings)])
        readings, _ = self.result(client.history.read_history(46))
        self.assertEqual(set(readings.values()), {(model.NO_DATA, model.NO_DATA)})

    def test_wrongDayEcho(self):
        """A meter that echoes another day than the one set: ReadFailed."""
        client = self.joined()
        meter = self.meter
        original = meter._set

        def set_(epc, edt, now):
            if epc == M.HISTORY_DAY:
                edt = bytes([edt[0] + 1])
            return original(epc, edt, now)
        meter._set = set_
        self.failureResultOf(self.drive(client.history.read_history(1)), ReadFailed)

    def test_daySelectedOnce(self):
        """
        A day already selected on this connection is read again with one Get,
        no SetC: one frame per new slot in continuous operation.
        """
        client = self.joined()
        self.result(client.history.read_history(1))
        mark = len(self.events)
        readings, clock = self.result(client.history.read_history(1))
        self.assertEqual([f.esv for f in self.sends(mark)], [F.GET])
        self.assertReadings(readings, clock.date() - datetime.timedelta(days=1))
        # Another day is selected again.
        mark = len(self.events)
        self.result(client.history.read_history(2))
        self.assertEqual([f.esv for f in self.sends(mark)], [F.SETC, F.GET])

    def test_dayChangedByAnother(self):
        """
        Another controller (a HEMS) set another day since: the answer says
        so, and the day is selected again before it is trusted.
        """
        client = self.joined()
        self.result(client.history.read_history(1))
        self.meter._set(M.HISTORY_DAY, b"\x03", self.loop.emulator.meter_now())
        mark = len(self.events)
        readings, clock = self.result(client.history.read_history(1))
        self.assertEqual([f.esv for f in self.sends(mark)], [F.GET, F.SETC, F.GET])
        self.assertReadings(readings, clock.date() - datetime.timedelta(days=1))



    # -- EVENT 32 ------------------------------------------------------------------

    def rate_limit(self):
        self.loop.emulator._event(0x32, self.loop.emulator.module_ip)
        self.loop.flush()

    def test_rateLimitStops(self):
        """With EVENT 32 in force read_history raises RateLimited and sends nothing."""
        client = self.joined()
        self.rate_limit()
        mark = len(self.events)
        self.failureResultOf(self.drive(client.history.read_history(1)), RateLimited)
        self.assertEqual(self.sends(mark), [])
        self.failureResultOf(self.drive(client.history.read_history_at(METER_START, 4)), RateLimited)
        self.assertEqual(self.sends(mark), [])

    def test_rateLimitBetweenSetAndGet(self):
        """EVENT 32 after the Set_Res: the Get is not sent."""
        client = self.joined()
        original = client.read

        async def read(epcs=C.POWER_EPCS, budget=None, may_join=True):
            if M.HISTORY_NORMAL in epcs:
                # EVENT 32 comes in after the Set_Res, before the Get.
                self.loop.emulator._event(0x32, self.loop.emulator.module_ip)
                await task.deferLater(self.loop.clock, 0.01, lambda: None)
            return await original(epcs, budget, may_join)
        client.read = read
        mark = len(self.events)
        self.failureResultOf(self.drive(client.history.read_history(1)), RateLimited)
        self.assertEqual([f.esv for f in self.sends(mark)], [F.SETC])

    # -- one history per frame -----------------------------------------------------

    def test_oneHistoryPerFrame(self):
        """
        A meter that answers E4 only alone (Get_SNA with E4's PDC 0 when E2
        is asked too): the client gets E4 with a second Get.
        """
        client = self.joined()
        one_history_per_frame(self.meter)
        mark = len(self.events)
        readings, clock = self.result(client.history.read_history(2))
        gets = [[p.epc for p in f.properties] for f in self.sends(mark) if f.esv == F.GET]
        self.assertEqual(gets, [[M.HISTORY_NORMAL, M.HISTORY_REVERSE, M.METER_TIME,
                                 M.METER_DATE],
                                [M.HISTORY_REVERSE, M.METER_TIME, M.METER_DATE]])
        self.assertReadings(readings, clock.date() - datetime.timedelta(days=2))
        # E4 came with the second Get's answer, and only there.
        answers = [f for kind, f in self.events[mark:] if kind == "recv"]
        self.assertEqual([f.esv for f in answers], [F.SET_RES, F.GET_SNA, F.GET_RES])
        self.assertIsNone(answers[1].get(M.HISTORY_REVERSE))
        self.assertEqual(len(answers[2].get(M.HISTORY_REVERSE)), 194)

    def test_noHistory(self):
        """A meter that gives no E2 at all: ReadFailed."""
        client = self.joined()
        meter = self.meter
        original = meter.handle

        def handle(data, now):
            reply = original(data, now)
            if reply is not None and M.HISTORY_NORMAL in reply.epcs:
                props = tuple(F.Property(p.epc) if p.epc in (M.HISTORY_NORMAL, M.HISTORY_REVERSE)
                              else p for p in reply.properties)
                reply = F.Frame(reply.tid, reply.seoj, reply.deoj, F.GET_SNA, props)
            return reply
        meter.handle = handle
        self.failureResultOf(self.drive(client.history.read_history(1)), ReadFailed)

    # -- EC / ED ---------------------------------------------------------------------

    def test_historySourceEC(self):
        """A meter whose 0x9F lists EC and ED: "EC", asked once."""
        client = self.joined()
        mark = len(self.events)
        self.assertEqual(self.result(client.history.history_source()), "EC")
        self.assertEqual(self.result(client.history.history_source()), "EC")
        gets = self.sends(mark)
        self.assertEqual([[p.epc for p in f.properties] for f in gets], [[M.GET_MAP]])

    def test_readHistoryAt(self):
        """SetC ED (end, count), Set_Res, then Get EC: the meter's readings."""
        client = self.joined()
        end = datetime.datetime(2024, 6, 1, 12, 0)
        mark = len(self.events)
        readings = self.result(client.history.read_history_at(end, 12))
        events = [(kind, f.esv, [p.epc for p in f.properties]) for kind, f in self.events[mark:]]
        self.assertEqual(events, [
            ("send", F.SETC, [M.HISTORY2_TIME]), ("recv", F.SET_RES, [M.HISTORY2_TIME]),
            ("send", F.GET, [M.HISTORY2]), ("recv", F.GET_RES, [M.HISTORY2])])
        self.assertEqual(self.sends(mark)[0].properties[0].edt,
                         H.encode_history2_time(end, 12))
        self.assertEqual(sorted(readings), [end - k * model.SLOT for k in range(11, -1, -1)])
        for boundary, pair in readings.items():
            self.assertEqual(tuple(map(as_raw, pair)), self.meter.slot_truth(boundary))
            self.assertNotIn(model.NO_DATA, pair)

    def test_readHistoryAtOne(self):
        client = self.joined()
        end = datetime.datetime(2024, 5, 20, 7, 30)
        readings = self.result(client.history.read_history_at(end, 1))
        self.assertEqual(list(readings), [end])
        self.assertEqual(tuple(map(as_raw, readings[end])), self.meter.slot_truth(end))

    def test_historyAtAgreesWithDay(self):
        """EC and E2/E4 give the same readings for the same boundaries."""
        client = self.joined()
        day, _ = self.result(client.history.read_history(1))
        end = datetime.datetime(2024, 5, 31, 18, 0)
        at = self.result(client.history.read_history_at(end, 12))
        for boundary, pair in at.items():
            self.assertEqual(pair, day[boundary])


class _MidnightTests(_Harness):
    """A meter started at 23:59:00: reads across its midnight."""

    knobs = {"start": datetime.datetime(2024, 6, 1, 23, 59, 0)}

    # -- the meter's midnight -----------------------------------------------------

    def midnight_client(self):
        """
        A client of a meter started at 23:59:00 that knows its clock; the
        loop then runs to 23:59:55 (meter time).
        """
        client = self.joined()
        now = self.loop.emulator.meter_now()
        self.assertEqual(now.date(), datetime.date(2024, 6, 1))
        self.loop.advance((datetime.datetime(2024, 6, 1, 23, 59, 55) - now).total_seconds())
        return client

    def delay_first_history_get(self, client, seconds):
        """Hold the first Get of E2 back for C{seconds} (after its SetC)."""
        original = client.read
        delayed = []

        async def read(epcs=C.POWER_EPCS, budget=None, may_join=True):
            if M.HISTORY_NORMAL in epcs and not delayed:
                delayed.append(self.loop.emulator.meter_now())
                await task.deferLater(self.loop.clock, seconds, lambda: None)
            return await original(epcs, budget, may_join)
        client.read = read
        return delayed

    def test_midnightStraddled(self):
        """
        The SetC goes before the meter's midnight and the Get after it: the
        client reads again (day 1 is still selected: no second SetC) and
        dates the day by the meter's new date.
        """
        client = self.midnight_client()
        delayed = self.delay_first_history_get(client, 10)
        mark = len(self.events)
        readings, clock = self.result(client.history.read_history(1))
        self.assertEqual(len(delayed), 1)
        self.assertEqual(delayed[0].date(), datetime.date(2024, 6, 1))  # Set_Res before 00:00
        sends = self.sends(mark)
        setcs = [f for f in sends if f.esv == F.SETC]
        gets = [f for f in sends if f.esv == F.GET and M.HISTORY_NORMAL in f.epcs]
        self.assertEqual(len(setcs), 1, [f.describe() for f in sends])
        self.assertEqual(len(gets), 2)
        self.assertEqual(clock.date(), datetime.date(2024, 6, 2))
        self.assertEqual(self.loop.emulator.meter_now().date(), datetime.date(2024, 6, 2))
        self.assertReadings(readings, datetime.date(2024, 6, 1))
        self.assertEqual(min(readings), datetime.datetime(2024, 6, 1))

    def test_midnightToday(self):
        """Day 0 across midnight is the new day: all but 00:00 in the future."""
        client = self.midnight_client()
        self.delay_first_history_get(client, 10)
        readings, clock = self.result(client.history.read_history(0))
        self.assertEqual(clock.date(), datetime.date(2024, 6, 2))
        self.assertEqual(sorted(readings), boundaries(datetime.date(2024, 6, 2)))
        midnight = datetime.datetime(2024, 6, 2)
        self.assertEqual(tuple(map(as_raw, readings[midnight])), self.meter.slot_truth(midnight))
        self.assertEqual(readings[midnight + model.SLOT], (model.NO_DATA, model.NO_DATA))

    def test_noMidnightNoReread(self):
        """A read wholly before midnight is done once, dated by the old date."""
        client = self.midnight_client()
        mark = len(self.events)
        readings, clock = self.result(client.history.read_history(1))
        self.assertEqual(clock.date(), datetime.date(2024, 6, 1))
        self.assertEqual([f.esv for f in self.sends(mark)], [F.SETC, F.GET])
        self.assertReadings(readings, datetime.date(2024, 5, 31))



class _E2OnlyTests(_Harness):
    knobs = {"history2": False}

    def test_historySourceE2(self):
        """A meter without EC/ED in 0x9F: "E2"."""
        client = self.joined()
        self.assertEqual(self.result(client.history.history_source()), "E2")

    def test_readHistoryAtRefused(self):
        """SetC ED refused (SetC_SNA): ReadFailed, and no Get of EC."""
        client = self.joined()
        mark = len(self.events)
        self.failureResultOf(
            self.drive(client.history.read_history_at(datetime.datetime(2024, 6, 1, 11, 30), 4)),
            ReadFailed)
        self.assertEqual([f.esv for f in self.sends(mark)], [F.SETC])
        self.assertEqual([f.esv for kind, f in self.events[mark:] if kind == "recv"],
                         [F.SETC_SNA])

    def test_readHistoryStillWorks(self):
        client = self.joined()
        readings, clock = self.result(client.history.read_history(1))
        self.assertReadings(readings, clock.date() - datetime.timedelta(days=1))


class _ScaleTests(_Harness):
    knobs = {"coefficient": 10, "unit": 0x03, "digits": 7}

    def test_ensureScaleOnce(self):
        """D3, E1 and D7 in one Get, the first time only."""
        client = self.joined()
        mark = len(self.events)
        scale = self.result(client.ensure_scale())
        self.assertEqual(scale, M.EnergyScale(10, Decimal("0.001"), 7))
        self.assertEqual(self.result(client.ensure_scale()), scale)
        gets = self.sends(mark)
        self.assertEqual([[p.epc for p in f.properties] for f in gets],
                         [[M.COEFFICIENT, M.UNIT, M.DIGITS]])

    def test_slotsFromHistory(self):
        """The day's slots in kWh: exact, D3 and E1 applied, wrap counted."""
        client = self.joined()
        scale = self.result(client.ensure_scale())
        readings, clock = self.result(client.history.read_history(1))
        slots = H.history_slots(readings, scale, "E2", until=clock)
        self.assertEqual(len(slots), 47)  # 23:30 needs the next day's 00:00
        modulus = 10 ** 7
        for slot in slots:
            start = slot.start.replace(tzinfo=None)
            (n0, _), (n1, _) = self.meter.slot_truth(start), self.meter.slot_truth(start + model.SLOT)
            self.assertEqual(slot.energy_normal_kwh, (n1 - n0) % modulus * 10 * Decimal("0.001"))
            self.assertEqual(slot.cumulative_normal_kwh, n0 * 10 * Decimal("0.001"))


class _MeterWithoutD3Tests(_Harness):
    knobs = {"coefficient": None, "unit": 0x01}

    def test_ensureScaleWithoutD3(self):
        """A meter without D3 (Get_SNA for it): coefficient 1, once."""
        client = self.joined()
        mark = len(self.events)
        self.assertEqual(self.result(client.ensure_scale()),
                         M.EnergyScale(1, Decimal("0.1"), 6))
        self.result(client.ensure_scale())
        self.assertEqual(len(self.sends(mark)), 1)


class StandardHistoryTests(_HistoryTests, SynchronousTestCase):
    dialect = Dialect.STANDARD


class DSEHistoryTests(_HistoryTests, SynchronousTestCase):
    dialect = Dialect.DSE


class StandardMidnightTests(_MidnightTests, SynchronousTestCase):
    dialect = Dialect.STANDARD


class DSEMidnightTests(_MidnightTests, SynchronousTestCase):
    dialect = Dialect.DSE


class StandardE2OnlyTests(_E2OnlyTests, SynchronousTestCase):
    dialect = Dialect.STANDARD


class DSEE2OnlyTests(_E2OnlyTests, SynchronousTestCase):
    dialect = Dialect.DSE


class ScaleTests(_ScaleTests, SynchronousTestCase):
    pass


class MeterWithoutD3Tests(_MeterWithoutD3Tests, SynchronousTestCase):
    pass


def one_history_per_frame(meter):
    """
    Make the emulated meter answer E4 only alone: a Get of E2 and E4 gets
    Get_SNA with E4's PDC 0, as some meters answer.
    """
    original = meter.handle

    def handle(data, now):
        reply = original(data, now)
        if (reply is not None and reply.esv == F.GET_RES
                and {M.HISTORY_NORMAL, M.HISTORY_REVERSE} <= set(reply.epcs)):
            props = tuple(F.Property(M.HISTORY_REVERSE) if p.epc == M.HISTORY_REVERSE
                          else p for p in reply.properties)
            reply = F.Frame(reply.tid, reply.seoj, reply.deoj, F.GET_SNA, props)
        return reply
    meter.handle = handle


class FallbackAcrossMidnightTests(_MidnightTests, SynchronousTestCase):
    """
    A meter that gives E4 only in a Get of its own, with the meter's midnight
    between the two Gets: the read is done again, never dated half by one
    day and half by the next.
    """

    knobs = {"start": datetime.datetime(2024, 6, 1, 23, 59, 0), "solar": 3000}

    def test_e4AloneAfterMidnight(self):
        """The second Get carries the clock; a straddle there re-reads the day."""
        client = self.midnight_client()
        one_history_per_frame(self.meter)
        read = client.read
        when = []

        async def slow(epcs=C.POWER_EPCS, budget=None, may_join=True):
            if tuple(epcs)[0] == M.HISTORY_REVERSE and not when:
                await task.deferLater(self.loop.clock, 10, lambda: None)
                when.append(self.loop.emulator.meter_now())
            return await read(epcs, budget, may_join)
        client.read = slow
        readings, clock = self.result(client.history.read_history(1))
        self.assertTrue(when, "the E4 Get was not delayed past midnight")
        self.assertReadings(readings, clock.date() - datetime.timedelta(days=1))
