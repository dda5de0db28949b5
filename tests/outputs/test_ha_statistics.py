"""
Tests for L{smartmeter_tx.outputs.homeassistant.statistics}: the meter's
30-minute slots as HA's hourly rows.
"""

import datetime
from decimal import Decimal

from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.model import JST, NO_DATA, HistorySlot
from smartmeter_tx.outputs.homeassistant import statistics as S

D = Decimal
T0 = datetime.datetime(2026, 12, 1, 0, 0, tzinfo=JST)
HALF = datetime.timedelta(minutes=30)


def slots(energies, start=T0, counter=D("1000"), modulus=None, reverse=None):
    """
    Slots from C{start}, one per energy (C{None}: the meter has no data for
    it); counters follow (wrapping at C{modulus}).
    """
    out = []
    for k, energy in enumerate(energies):
        out.append(HistorySlot(start + k * HALF, energy if energy is not None else NO_DATA,
                               D(0) if reverse is None else reverse, counter, D(0), "E2"))
        if energy is not None:
            counter += energy
            if modulus is not None and counter >= modulus:
                counter -= modulus
    return out


class HoursTests(SynchronousTestCase):
    def test_bothHalvesMakeAnHour(self):
        """An hour's energy is its two slots'; its state the reading at its end."""
        found = S.hours(slots([D("0.25"), D("0.5"), D("1.0"), D("0.75")]))
        self.assertEqual(found, [S.Hour(T0, D("0.75"), D("1000.75")),
                                 S.Hour(T0 + 2 * HALF, D("1.75"), D("1002.50"))])

    def test_halfHourAlone(self):
        """A trailing half hour, or an hour starting at :30, makes no row."""
        self.assertEqual(S.hours(slots([D(1), D(1), D(1)])), [S.Hour(T0, D(2), D(1002))])
        self.assertEqual(S.hours(slots([D(1), D(1)], start=T0 + HALF)), [])

    def test_outageLeavesHoursOut(self):
        """A slot without data leaves its hour out, never a zero; the next hours go on."""
        found = S.hours(slots([D(1), D(1), None, D(1), D(1), D(1)]))
        self.assertEqual([h.start for h in found], [T0, T0 + 4 * HALF])

    def test_wrap(self):
        """Across the counter's wrap the hour's energy is what was used; the state wraps."""
        found = S.hours(slots([D("0.5"), D("0.75"), D("0.5"), D("0.5")], counter=D("999999"),
                              modulus=D("1000000")))
        self.assertEqual(found[0].energy, D("1.25"))
        self.assertEqual(found[0].state, D("0.25"))
        row = S.rows(found)
        self.assertEqual([r.sum for r in row], [D("1.25"), D("2.25")])

    def test_export(self):
        """The export statistic sums the reverse energies."""
        found = S.hours(slots([D(0), D(0)], reverse=D("0.4")), "export")
        self.assertEqual([h.energy for h in found], [D("0.8")])


class RowsTests(SynchronousTestCase):
    def test_sumStartsAtZero(self):
        """The first row's sum is its hour's energy, not the meter's reading."""
        out = S.rows(S.hours(slots([D(1), D(2), D(3), D(4)])))
        self.assertEqual([(r.start, r.sum) for r in out], [(T0, D(3)), (T0 + 2 * HALF, D(10))])

    def test_gapCarriesNothing(self):
        """Across a gap each row's change from the row before is exactly its hour's energy."""
        energies = [D(1), D(1), None, D(5), D(2), D(2), D(3), D(3)]
        found = S.hours(slots(energies))
        out = S.rows(found)
        changes = [out[0].sum] + [b.sum - a.sum for a, b in zip(out, out[1:])]
        self.assertEqual(changes, [h.energy for h in found])
        self.assertEqual(changes, [D(2), D(4), D(6)])

    def test_baseAndAfter(self):
        """Rows after HA's last hour continue from its sum; the same range gives the same rows."""
        found = S.hours(slots([D(1)] * 8))
        whole = S.rows(found)
        tail = S.rows(found, base=whole[1].sum, after=whole[1].start)
        self.assertEqual(tail, whole[2:])
        self.assertEqual(S.rows(found), whole)

    def test_json(self):
        """A row for HA: tz-aware start on the hour, numbers for sum and state."""
        row = S.rows(S.hours(slots([D("0.25"), D("0.5")])))[0].to_json()
        self.assertEqual(row, {"start": "2026-12-01T00:00:00+09:00", "sum": 0.75,
                               "state": 1000.75})
        start = datetime.datetime.fromisoformat(row["start"])
        self.assertEqual(start.astimezone(datetime.timezone.utc).minute, 0)


class IdentityTests(SynchronousTestCase):
    def test_idsAndMetadata(self):
        """Our ids are valid external statistic ids; the metadata has exactly HA's keys."""
        slug = S.slug_for("00C094F3DAA462BF")
        self.assertEqual(slug, "00c094f3daa462bf")
        for direction in ("import", "export"):
            sid = S.statistic_id(slug, direction)
            self.assertTrue(S.valid_statistic_id(sid), sid)
            meta = S.metadata(slug, direction)
            self.assertEqual(set(meta), {"has_mean", "has_sum", "name", "source", "statistic_id",
                                         "unit_of_measurement"})
            self.assertEqual((meta["source"], meta["unit_of_measurement"], meta["has_sum"]),
                             ("smartmeter_tx", "kWh", True))
        self.assertEqual(S.statistic_id(slug, "import"),
                         "smartmeter_tx:00c094f3daa462bf_energy_import")
        self.assertIsNone(S.slug_for(None))
        for bad in ("sensor.x", "smartmeter_tx:_x", "a__b:c", "Smartmeter:x", "a:b:c"):
            self.assertFalse(S.valid_statistic_id(bad), bad)

    def test_names(self):
        """
        Each statistic is named by the meter's one name (its MAC in upper
        case, as its MQTT device), says bought or sold, and that it is the
        meter's record (the MQTT sensor beside it in HA's energy picker is
        "Smart meter ... Energy bought").
        """
        slug = S.slug_for("00C094F3DAA462BF")
        self.assertEqual(S.meter_name(slug), "Smart meter 00C094F3DAA462BF")
        self.assertEqual([S.metadata(slug, d)["name"] for d in ("import", "export")],
                         ["Smart meter 00C094F3DAA462BF energy bought (meter record)",
                          "Smart meter 00C094F3DAA462BF energy sold (meter record)"])

    def test_slugValidWhateverTheMac(self):
        """A MAC with separators or stray characters still gives a valid statistic id."""
        slug = S.slug_for("00:c0-94/f3 dA.a4é62bf")
        self.assertEqual(slug, "00c094f3daa462bf")
        self.assertTrue(S.valid_statistic_id(S.statistic_id(slug, "export")))


class TimeZoneTests(SynchronousTestCase):
    def test_hostZoneChangesNothing(self):
        """
        On a host whose zone has daylight saving time (New York, across its
        spring change) or is UTC, the meter's hours are the same: 24 a day,
        each on the hour in UTC, none twice.
        """
        from tests.sktesting import host_zone

        start = datetime.datetime(2026, 3, 8, 0, 0, tzinfo=JST)  # the US change is that night
        results = []
        for zone in ("UTC", "America/New_York", "Asia/Tokyo"):
            host_zone(self, zone)
            rows = S.rows(S.hours(slots([D("0.5")] * 96, start=start)))
            starts = [datetime.datetime.fromisoformat(r.to_json()["start"]) for r in rows]
            self.assertEqual(len(starts), 48, zone)
            self.assertEqual(len(set(s.timestamp() for s in starts)), 48, zone)
            self.assertEqual({s.astimezone(datetime.timezone.utc).minute for s in starts}, {0})
            self.assertEqual([b.timestamp() - a.timestamp() for a, b in zip(starts, starts[1:])],
                             [3600.0] * 47)
            results.append([r.to_json() for r in rows])
        self.assertEqual(results[0], results[1])
        self.assertEqual(results[0], results[2])
