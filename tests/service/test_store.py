"""
Tests for L{smartmeter_tx.service.store}: the newest readings the service serves.
"""

import datetime
from decimal import Decimal

from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.model import JST, NO_DATA, NO_PHASE, NO_SCALE, FixedReading, Reading
from smartmeter_tx.service.store import LatestStore, Stats

INSTANT = Reading(power_w=668, current_r_a=Decimal("4.0"), current_t_a=Decimal("3.4"))
ENERGY = Reading(energy_normal_kwh=Decimal("157563.1"), energy_reverse_kwh=Decimal("2.1"),
                 energy_normal_raw=1575631, energy_reverse_raw=21)
FIXED = FixedReading(datetime.datetime(2026, 6, 1, 11, 30), 1575630, Decimal("157563.0"))


class StatsTests(SynchronousTestCase):
    def test_zero(self):
        """A new Stats has every counter at 0, and so does a new store's."""
        self.assertEqual(Stats(), Stats(0, 0, 0, 0, 0, 0))
        self.assertEqual(LatestStore().stats, Stats())


class LatestRecordTests(SynchronousTestCase):
    """
    latest_record: the newest instantaneous values with the newest energy values.
    """

    def test_noneBeforeFirst(self):
        """latest_record is None and age None before any reading."""
        store = LatestStore()
        self.assertIsNone(store.latest_record())
        self.assertIsNone(store.age(100.0))

    def test_instantOnly(self):
        """A reading without energy gives its instantaneous fields and time, no energy_time."""
        store = LatestStore()
        store.add(INSTANT, 1000.0)
        self.assertEqual(store.latest_record(),
                         {"power_w": 668, "current_r_a": 4, "current_t_a": 3.4, "time": 1000.0})
        self.assertIsNone(store.energy)

    def test_fullReading(self):
        """A reading with both gives every field, with energy_time equal to time."""
        store = LatestStore()
        store.add(INSTANT.with_energy(ENERGY), 1000.0)
        self.assertEqual(store.latest_record(), {
            "power_w": 668, "current_r_a": 4, "current_t_a": 3.4,
            "energy_normal_kwh": 157563.1, "energy_reverse_kwh": 2.1,
            "time": 1000.0, "energy_time": 1000.0})

    def test_energyFromOlderReading(self):
        """A newer reading without energy keeps the older reading's energy and its own time."""
        store = LatestStore()
        store.add(INSTANT.with_energy(ENERGY), 1000.0)
        store.add(Reading(power_w=1192, current_r_a=Decimal("9.8"),
                          current_t_a=Decimal("3.4")), 1060.0)
        record = store.latest_record()
        self.assertEqual(record["power_w"], 1192)
        self.assertEqual(record["current_r_a"], 9.8)
        self.assertEqual(record["energy_normal_kwh"], 157563.1)
        self.assertEqual(record["time"], 1060.0)
        self.assertEqual(record["energy_time"], 1000.0)

    def test_newerEnergyReplaces(self):
        """A newer reading with energy replaces the energy values and energy_time."""
        store = LatestStore()
        store.add(INSTANT.with_energy(ENERGY), 1000.0)
        store.add(Reading(power_w=5, energy_normal_kwh=Decimal("157563.5")), 1800.0)
        record = store.latest_record()
        self.assertEqual(record["energy_normal_kwh"], 157563.5)
        self.assertNotIn("energy_reverse_kwh", record)
        self.assertEqual(record["energy_time"], 1800.0)

    def test_instantOnlyFromNewest(self):
        """Instantaneous fields come only from the newest reading, never from an older one."""
        store = LatestStore()
        store.add(INSTANT, 1000.0)
        store.add(ENERGY, 1010.0)
        record = store.latest_record()
        for name in Reading.INSTANT_FIELDS:
            self.assertNotIn(name, record)
        self.assertEqual(record["energy_normal_kwh"], 157563.1)
        self.assertEqual((record["time"], record["energy_time"]), (1010.0, 1010.0))

    def test_rawCountsNotServed(self):
        """The raw energy counts stay inside: the record holds only RECORD_FIELDS and times."""
        store = LatestStore()
        store.add(INSTANT.with_energy(ENERGY), 1.0)
        self.assertEqual(set(store.latest_record()),
                         set(Reading.RECORD_FIELDS) | {"time", "energy_time"})

    def test_absentValuesNull(self):
        """Absent values (NO_DATA, NO_PHASE, NO_SCALE) are served as None, never 0."""
        store = LatestStore()
        store.add(Reading(power_w=NO_DATA, current_r_a=Decimal("4.0"), current_t_a=NO_PHASE,
                          energy_normal_kwh=NO_SCALE, energy_normal_raw=1575631), 5.0)
        record = store.latest_record()
        self.assertIsNone(record["power_w"])
        self.assertIsNone(record["current_t_a"])
        self.assertIsNone(record["energy_normal_kwh"])
        self.assertEqual(record["energy_time"], 5.0)

    def test_timesRounded(self):
        """time and energy_time are rounded to milliseconds."""
        store = LatestStore()
        store.add(ENERGY, 1000.123456)
        store.add(INSTANT, 1001.98765)
        record = store.latest_record()
        self.assertEqual((record["time"], record["energy_time"]), (1001.988, 1000.123))

    def test_recordIsFresh(self):
        """Changing a returned record does not change the next one."""
        store = LatestStore()
        store.add(INSTANT, 1.0)
        store.latest_record()["power_w"] = 0
        self.assertEqual(store.latest_record()["power_w"], 668)


class AgeTests(SynchronousTestCase):
    def test_age(self):
        """age is the seconds since the newest reading."""
        store = LatestStore()
        store.add(INSTANT, 1000.0)
        self.assertEqual(store.age(1000.0), 0.0)
        self.assertEqual(store.age(1042.5), 42.5)
        store.add(INSTANT, 1040.0)
        self.assertEqual(store.age(1042.5), 2.5)

    def test_ageOnTheServiceClock(self):
        """
        age is taken on the service's clock: a wall clock that stepped back
        (the reading stamped later than now) changes nothing, and no age is
        clamped to hide a clock that runs backwards.
        """
        store = LatestStore()
        store.add(INSTANT, 1000.0, at=50.0)  # wall time 1000, service clock 50
        self.assertEqual(store.age(60.0), 10.0)
        self.assertEqual(store.latest_record()["time"], 1000.0)
        self.assertEqual(store.age(40.0), -10.0)
        store.add_fixed(FIXED, 990.0, at=45.0)
        self.assertEqual(store.fixed_age(60.0), 15.0)
        self.assertIsNone(store.poll_age(60.0))
        store.last_poll_at = 55.0
        self.assertEqual(store.poll_age(60.0), 5.0)


class CurveTests(SynchronousTestCase):
    """The power readings kept for the dashboard's curve (recent)."""

    #: 2024-06-01 00:00 JST.
    MIDNIGHT = datetime.datetime(2024, 6, 1, tzinfo=JST).timestamp()

    def test_dayAtOneSecondFits(self):
        """
        A whole day at the shortest interval (1 s) stays in the bounded
        curve from midnight on, thinned to the lowest and highest reading of
        each 30 s: a two-second spike is kept; the curve stays in time order.
        """
        store = LatestStore()
        for k in range(86400):
            watts = 3000 if 40000 <= k < 40002 else 300 + k % 7
            store.add(Reading(power_w=watts), self.MIDNIGHT + k)
        recent = list(store.recent)
        self.assertLessEqual(len(recent), LatestStore.RECENT)
        self.assertEqual(recent[0], (self.MIDNIGHT, 300))
        self.assertGreaterEqual(recent[-1][0], self.MIDNIGHT + 86370)
        self.assertEqual([when for when, _ in recent], sorted(when for when, _ in recent))
        self.assertIn(3000, [watts for _, watts in recent])
        buckets: dict = {}
        for when, watts in recent:
            buckets.setdefault(when // 30, []).append(watts)
        self.assertEqual(len(buckets), 2880)
        self.assertEqual({len(v) for v in buckets.values()}, {2})
        for bucket, kept in buckets.items():
            seconds = [k for k in range(int(bucket * 30 - self.MIDNIGHT),
                                        int(bucket * 30 - self.MIDNIGHT) + 30)]
            watts = [3000 if 40000 <= k < 40002 else 300 + k % 7 for k in seconds]
            self.assertEqual(sorted(kept), [min(watts), max(watts)], bucket)

    def test_defaultIntervalKeepsAll(self):
        """At the default interval (30 s), every reading is on the curve."""
        store = LatestStore()
        for k in range(2880):
            store.add(Reading(power_w=k), self.MIDNIGHT + 30 * k + (k % 3) * 7.5)
        self.assertEqual([watts for _, watts in store.recent], list(range(2880)))

    def test_absentIsAGap(self):
        """
        A power the meter marked absent is a gap on the curve (None, never
        0), one for a run of them; a reading without power (only energy) is
        not on it.
        """
        store = LatestStore()
        store.add(Reading(power_w=500), 1000.0)
        store.add(Reading(power_w=NO_DATA), 1030.0)
        store.add(Reading(power_w=NO_DATA), 1060.0)
        store.add(ENERGY, 1070.0)
        store.add(Reading(power_w=0), 1090.0)
        self.assertEqual(list(store.recent), [(1000.0, 500), (1030.0, None), (1090.0, 0)])

    def test_seedToday(self):
        """
        seed_today reads the log from Japan's midnight to now and puts the
        power readings on the curve in time order (a null power as a gap,
        records without power and out of order skipped); the newest reading
        stays the service's own: none yet.
        """
        now = self.MIDNIGHT + 15 * 3600
        asked = []

        def read_log(since, until):
            asked.append((since, until))
            return iter([(now - 7200, {"power_w": 410, "current_r_a": 4}),
                         (now - 7170, {"power_w": None}),
                         (now - 7140, {"energy_normal_kwh": 12.5}),
                         (now - 7110, {"power_w": 420}),
                         (now - 9000, {"power_w": 999}),  # the wall clock stepped back
                         (now - 7080, {"power_w": "junk"})])

        store_seeded = LatestStore()
        self.assertEqual(store_seeded.seed_today(read_log, now), 4)
        self.assertEqual(asked, [(self.MIDNIGHT, now)])
        self.assertEqual(list(store_seeded.recent), [(now - 7200, 410), (now - 7170, None),
                                                     (now - 7110, 420), (now - 7080, None)])
        self.assertIsNone(store_seeded.latest)
        self.assertIsNone(store_seeded.latest_record())
        # Japan's midnight, whatever the hour: 23:59 JST is still that day.
        LatestStore().seed_today(read_log, self.MIDNIGHT + 86399)
        self.assertEqual(asked[-1], (self.MIDNIGHT, self.MIDNIGHT + 86399))
