"""
Tests for L{smartmeter_tx.service.backfill}: the service keeps its log's 30-minute
slots complete from the meter's own record, through restarts and gaps, on the
emulator and a task.Clock.
"""

import datetime
import errno
import json
import os
import random
from decimal import Decimal

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.session import join
from smartmeter_tx.session import config
from smartmeter_tx.service.backfill import Backfill, Wanted
from smartmeter_tx.service.datalog import DataLog
from smartmeter_tx.echonet import meter as M
from smartmeter_tx import model
from smartmeter_tx.emulator.module import DEFAULT_ID, DEFAULT_PASSWORD
from smartmeter_tx.service.poller import MeterPoller, PollSchedule
from smartmeter_tx.sk.values import Dialect
from tests.emuloop import Loop, expected_slot_starts

CREDS = join.Credentials(DEFAULT_ID, DEFAULT_PASSWORD)
#: The emulated meter's clock at the start: 2024-06-01 12:00 (Loop's default).
METER_START = datetime.datetime(2024, 6, 1, 12, 0)
HOUR = 3600.0


class _Harness:
    """A data log, an emulator on the loopback clock, and pollers with a backfill."""

    dialect = Dialect.STANDARD
    knobs: dict = {}

    def setUp(self):
        self.loop = Loop(dialect=self.dialect, **self.knobs)
        self.addCleanup(self.loop.stop)
        self.logdir = self.mktemp()
        # The host's wall clock agrees with the meter's (JST) at the start.
        self.wall0 = METER_START.replace(tzinfo=model.JST).timestamp()

    def wall(self):
        return self.wall0 + self.loop.clock.seconds()

    def start(self, days=7, write=os.write):
        """
        A poller with a backfill over the data log, as makeService builds it.

        @param write: the data log's C{os.write} (a test's full disk).
        """
        datalog = DataLog(self.logdir, write=write)
        self.addCleanup(datalog.close)
        since = datetime.date.fromtimestamp(self.wall()) - datetime.timedelta(days=days + 1)
        backfill = Backfill(days, self.loop.clock, datalog.write, self.wall,
                            known=datalog.history_records(since),
                            writable=lambda: not datalog.failing)
        poller = MeterPoller(self.loop.connect, config.SessionConfig(CREDS), self.loop.clock,
                             PollSchedule(interval=30, energy_interval=300),
                             on_reading=datalog.write, rng=random.Random(0),
                             wall_clock=self.wall, backfill=backfill)
        poller.startService()
        self.addCleanup(lambda: poller.running and poller.stopService())
        return poller, datalog

    def stop(self, poller, datalog):
        poller.stopService()
        datalog.close()
        self.loop.advance(1)

    def logged_slots(self):
        """Every history record in the data log, in file order."""
        records = []
        for name in sorted(os.listdir(self.logdir)):
            with open(os.path.join(self.logdir, name), encoding="utf-8") as f:
                records += [r for r in map(json.loads, f) if r.get("kind") == "history"]
        return records

    def assertTrue_(self, records):
        """Each slot's energy is what the emulated meter counted in it, exactly."""
        meter = self.loop.emulator.meter
        unit = M.UNITS[self.loop.emulator.config.unit]
        for r in records:
            start = datetime.datetime.fromisoformat(r["slot"]).replace(tzinfo=None)
            (n0, r0), (n1, r1) = meter.slot_truth(start), meter.slot_truth(start + model.SLOT)
            if n0 is None or n1 is None:
                self.assertIsNone(r["energy_normal_kwh"], r)
                continue
            modulus = 10 ** meter.digits
            self.assertEqual(Decimal(str(r["energy_normal_kwh"])),
                             (n1 - n0) % modulus * unit, r)
            self.assertEqual(Decimal(str(r["energy_reverse_kwh"])),
                             (r1 - r0) % modulus * unit, r)
            self.assertEqual(Decimal(str(r["cumulative_normal_kwh"])), n0 * unit, r)

    def expected_slots(self, days):
        """The slot starts the window holds at the emulated meter's time now."""
        return expected_slot_starts(self.loop.emulator.meter_now(), days)



class _BackfillBase(_Harness):
    def test_windowFilledOnceAcrossRestarts(self):
        """
        The first run fills 7 days; after three days down, the next run fills
        the gap; a third run writes only the new slots: no slot twice, every
        value exact.
        """
        poller, datalog = self.start()
        self.loop.advance(2 * HOUR + 600)  # not right at a boundary
        records = self.logged_slots()
        self.assertEqual([r["slot"] for r in records][-len(self.expected_slots(7)):],
                         self.expected_slots(7))
        self.assertEqual(poller.backfill.missing, 0)
        self.stop(poller, datalog)

        self.loop.advance(3 * 24 * HOUR)  # the Pi was off for three days
        poller, datalog = self.start()
        self.loop.advance(2 * HOUR)
        self.stop(poller, datalog)
        poller, datalog = self.start()
        self.loop.advance(HOUR)
        self.assertEqual(poller.backfill.written, 2)  # only the two new slots
        records = self.logged_slots()
        slots = [r["slot"] for r in records]
        self.assertEqual(len(slots), len(set(slots)), "a slot was logged twice")
        self.assertLessEqual(set(self.expected_slots(7)), set(slots))
        self.assertTrue_(records)
        self.assertEqual({r["source"] for r in records}, self.sources)

    def test_neverDelaysAPoll(self):
        """
        While backfilling, each poll's Get goes out within one exchange of
        its tick (it queues behind at most one command of the backfill).
        """
        ticks, gets = [], []
        self.loop.write_observers.append(
            lambda data: data.startswith(b"SKSENDTO") and b"\xe7\x00" in data
            and gets.append(self.loop.clock.seconds()))
        poller, datalog = self.start(days=7)
        original = poller.poll

        def poll():
            ticks.append(self.loop.clock.seconds())
            return original()
        poller.poll = poll
        poller._loop.f = poll  # the running LoopingCall's function
        self.loop.advance(HOUR)
        self.assertGreater(poller.backfill.written, 7 * 48)
        late = []
        for tick in ticks[1:]:
            first = [g for g in gets if g >= tick]
            self.assertTrue(first, tick)
            late.append(first[0] - tick)
        self.assertLess(max(late), 1.0, late)

    def test_outageIsNoData(self):
        """
        Slots whose readings the meter lacks (a power cut) are logged once with
        null energies, never 0, and never asked for again.
        """
        poller, datalog = self.start()
        self.loop.advance(2 * HOUR + 600)
        frames = poller.backfill.frames
        self.loop.advance(HOUR)
        records = {r["slot"]: r for r in self.logged_slots()}
        nulls = sorted(s for s, r in records.items() if r["energy_normal_kwh"] is None)
        self.assertEqual(nulls[0], "2024-05-30T09:30:00+09:00")
        self.assertEqual(nulls[-1], "2024-05-30T13:00:00+09:00")
        self.assertEqual(len(nulls), 8)
        self.assertIsNotNone(records["2024-05-30T13:30:00+09:00"]["energy_normal_kwh"])
        self.assertIsNotNone(records["2024-05-30T09:00:00+09:00"]["energy_normal_kwh"])
        # Two new slots in the hour, and no frame spent on the outage again.
        self.assertLessEqual(poller.backfill.frames - frames, 2 * 3)

    def test_holdStopsBackfill(self):
        """EVENT 32 stops the backfill until the limit is released."""
        poller, datalog = self.start()
        self.loop.advance(40)
        frames = poller.backfill.frames
        self.loop.emulator._event(0x32, self.loop.emulator.module_ip)
        self.loop.flush()
        self.loop.advance(120)
        self.assertTrue(poller.state.rate_limited)
        self.assertLessEqual(poller.backfill.frames - frames, 3)  # the step under way at most
        held = poller.backfill.frames
        self.loop.advance(120)
        self.assertEqual(poller.backfill.frames, held)

    def test_diskFullReadsNothing(self):
        """
        While the data log cannot be written, the backfill spends no frame on
        the meter's record, whatever the polls do; once it can, it fills the
        window, each slot once.
        """
        full = [True]

        def write(fd, data):
            if full[0]:
                raise OSError(errno.ENOSPC, "No space left on device")
            return os.write(fd, data)
        poller, datalog = self.start(write=write)
        self.loop.advance(HOUR)
        self.assertGreater(poller.stats.polls_answered, 100)
        self.assertEqual(poller.backfill.frames, 0)
        self.assertEqual(poller.backfill.written, 0)
        self.assertGreater(datalog.lines_lost, 100)
        full[0] = False
        self.loop.advance(HOUR + 600)  # not right at a boundary
        slots = [r["slot"] for r in self.logged_slots()]
        self.assertEqual(sorted(set(slots)), sorted(slots))
        self.assertEqual(slots[-len(self.expected_slots(7)):], self.expected_slots(7))


OUTAGE = [(datetime.datetime(2024, 5, 30, 10), datetime.datetime(2024, 5, 30, 13, 30))]


class E2BackfillTests(_BackfillBase, SynchronousTestCase):
    """A meter without EC/ED: E2/E4 day reads only."""

    sources = {"E2"}
    knobs = {"history2": False, "outage": OUTAGE}

    def test_oneFramePerNewSlot(self):
        """
        Once the window is full, each new slot of the day costs one frame
        (a Get of E2/E4: today stays selected in E5), not a SetC as well.
        """
        poller, datalog = self.start()
        self.loop.advance(2 * HOUR + 600)  # 14:10 at the meter
        self.assertEqual(poller.backfill.missing, 0)
        frames, written = poller.backfill.frames, poller.backfill.written
        self.loop.advance(4 * HOUR)  # until 18:10: eight new slots, the same day
        self.assertEqual(poller.backfill.written - written, 8)
        self.assertEqual(poller.backfill.frames - frames, 8)


class ECBackfillTests(_BackfillBase, SynchronousTestCase):
    """A meter with EC/ED: days of holes from E2/E4, the half-hourly slot from EC."""

    sources = {"E2", "EC"}
    dialect = Dialect.DSE
    knobs = {"outage": OUTAGE}


class MidnightBackfillTests(_Harness, SynchronousTestCase):
    """
    A 45-day fill that runs across the meter's midnight (it starts at 23:57:30):
    a read redone after midnight still reads the date it wanted, and no slot is
    logged as "no data" for a reading the meter has.
    """

    sources = {"E2"}
    knobs = {"history2": False, "start": datetime.datetime(2024, 6, 1, 23, 57, 30)}

    def setUp(self):
        super().setUp()
        self.wall0 = datetime.datetime(2024, 6, 1, 23, 57, 30, tzinfo=model.JST).timestamp()

    def test_fillAcrossMidnight(self):
        """Every slot of the 45-day window is logged once, each value the meter's own."""
        poller, datalog = self.start(days=45)
        self.loop.advance(600)
        self.assertEqual(poller.backfill.missing, 0)
        records = self.logged_slots()
        slots = [r["slot"] for r in records]
        self.assertEqual(len(slots), len(set(slots)))
        self.assertLessEqual(set(self.expected_slots(45)), set(slots))
        self.assertTrue_(records)
        self.assertEqual([r for r in records if r["energy_normal_kwh"] is None], [])


class MeterClockApartTests(_Harness, SynchronousTestCase):
    """The host's clock 18 months behind the meter's (a Pi that lost its date)."""

    def setUp(self):
        super().setUp()
        self.wall0 -= 540 * 86400
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def test_saidOnceSlotsStillLogged(self):
        """One warning with both times; the slots are logged all the same, by the meter's dates."""
        poller, datalog = self.start(days=1)
        self.loop.advance(7200)  # the meter's clock is read again after an hour
        said = [formatEvent(e) for e in self.logged
                if "the meter's clock says" in formatEvent(e)]
        self.assertEqual(len(said), 1, said)
        self.assertIn(f"says {METER_START:%Y-%m-%d}", said[0])
        host = datetime.datetime.fromtimestamp(self.wall0, model.JST)
        self.assertIn(f"the host's {host:%Y-%m-%d}", said[0])
        slots = {r["slot"][:10] for r in self.logged_slots()}
        self.assertIn(f"{METER_START:%Y-%m-%d}", slots)


class WantedTests(SynchronousTestCase):
    """The slots wanted: asked at every poll, they change only when a slot ends."""

    def fill(self, slots, starts):
        for start in starts:
            slots[start.replace(tzinfo=model.JST)] = object()

    def test_completeUntilTheNextSlotEnds(self):
        """
        Once the window is complete nothing is due until the next slot ends,
        then that slot alone; a reach further back is due at once.
        """
        slots: dict = {}
        wanted = Wanted(1, 45, slots)
        now = datetime.datetime(2024, 6, 1, 12, 5)
        due = wanted.due(now)
        self.assertEqual([start.replace(tzinfo=model.JST).isoformat() for start in due],
                         expected_slot_starts(now, 1))
        self.fill(slots, due)
        self.assertEqual(wanted.due(now), [])
        self.assertEqual(wanted.due(now + datetime.timedelta(minutes=20)), [])
        later = now + datetime.timedelta(minutes=30)
        self.assertEqual(wanted.due(later), [datetime.datetime(2024, 6, 1, 12, 0)])
        self.fill(slots, [datetime.datetime(2024, 6, 1, 12, 0)])
        self.assertEqual(wanted.due(later), [])
        since = datetime.datetime(2024, 5, 20, tzinfo=model.JST)
        wanted.reach_back(since, since + datetime.timedelta(hours=1))
        self.assertEqual(wanted.due(later), [datetime.datetime(2024, 5, 20, 0, 0),
                                             datetime.datetime(2024, 5, 20, 0, 30)])
        wanted.reached(datetime.datetime(2024, 5, 20, 0, 0))
        self.fill(slots, [datetime.datetime(2024, 5, 20, 0, 30)])
        self.assertEqual(wanted.due(later), [])
