"""
Tests for L{smartmeter_tx.bill}: tariff files read and refused, and the
meter's record priced period by period, each figure computed by hand in the
test's docstring.
"""

from __future__ import annotations

import datetime
import os
from decimal import Decimal

from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.bill import pricing as P
from smartmeter_tx.bill.tariff import TariffError, load_tariff, parse_tariff
from smartmeter_tx.model import JST, NO_DATA, HistorySlot

D = Decimal
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "examples", "tariffs")
TIERED = {
    "name": "TEPCO Juryo Dento B", "billing_day": 5, "contract": "30A",
    "basic": {"30A": D("935.25"), "40A": D("1247.00")},
    "tiers": [{"up_to": 120, "price": D("29.80")}, {"up_to": 300, "price": D("36.40")},
              {"price": D("40.49")}],
    "adjustments": {"fuel": {"2026-10": D("-2.10"), "2026-11": D("-1.95")},
                    "renewable": {"2025-05": D("3.98")}},
}
BANDED = {
    "name": "Time of use", "billing_day": 1, "contract": "40A", "basic": {"40A": D("1247.00")},
    "bands": [{"name": "holiday", "hours": "00:00-24:00", "days": ["sun", "holiday"],
               "price": 20},
              {"name": "night", "hours": "01:00-06:00", "price": D("27.86")},
              {"name": "day", "hours": "06:00-01:00", "price": D("35.76")}],
    "sell": {"price": 16},
}


def at(day, hour=0, minute=0, month=11, year=2026):
    return datetime.datetime(year, month, day, hour, minute, tzinfo=JST)


def slot(start, bought, counter, sold=D(0), reverse=D(0)):
    """A known slot: its energies, and the counters at its start."""
    return HistorySlot(start, D(bought), D(sold), D(counter), D(reverse), "E2")


def absent(start):
    return HistorySlot(start, NO_DATA, NO_DATA, NO_DATA, NO_DATA, "E2")


class TariffFileTests(SynchronousTestCase):
    def test_examplesLoad(self):
        """The shipped examples are valid tariffs: TEPCO's tiers, and a time-of-use plan."""
        tiered = load_tariff(os.path.join(EXAMPLES, "tepco-juryo-dento-b.toml"))
        self.assertEqual([(t.up_to, t.price) for t in tiered.tiers],
                         [(D(120), D("29.80")), (D(300), D("36.40")), (None, D("40.49"))])
        self.assertEqual((tiered.basic["10A"], tiered.basic["60A"]),
                         (D("311.75"), D("1870.50")))
        self.assertEqual((tiered.basic_yen, tiered.contract_amperes), (D("935.25"), 30))
        banded = load_tariff(os.path.join(EXAMPLES, "tepco-smart-life-s.toml"))
        self.assertEqual(banded.band_at(at(4, 2), False).name, "night")
        self.assertEqual(banded.band_at(at(4, 0, 30), False).name, "day")
        self.assertEqual(banded.sell_price, D("16.0"))

    def test_refused(self):
        """Each mistake is one line naming the file, the key and what is wrong."""
        cases = [
            (dict(TIERED, biling_day=5), "biling_day: unknown key"),
            (dict(TIERED, billing_day=29), "billing_day: must be a whole number from 1 to 28"),
            (dict(TIERED, contract="60A"), "contract: must name one of basic's contracts"),
            (dict(TIERED, bands=BANDED["bands"]), "tiers: give [[tiers]]"),
            (dict(TIERED, tiers=[{"up_to": 120, "price": 1}]), "tiers[0].up_to: the last tier"),
            (dict(TIERED, tiers=[{"up_to": 120, "price": 1}, {"up_to": 100, "price": 2},
                                 {"price": 3}]), "tiers[1].up_to: must be above"),
            (dict(BANDED, bands=[dict(BANDED["bands"][2], hours="06:15-01:00")]),
             "bands[0].hours: '06:15-01:00': times from 00:00 to 24:00, on the hour or half"),
            (dict(BANDED, bands=BANDED["bands"][1:2]), "bands: no band covers mon 00:00"),
            (dict(BANDED, bands=[dict(BANDED["bands"][0], days=["sat", "moon"])]),
             "bands[0].days: must list some of"),
            (dict(TIERED, adjustments={"fuel": {"2026-13": 1}}),
             "adjustments.fuel.2026-13: the key must be a month"),
            (dict(TIERED, sell={"price": "free"}), "sell.price: must be a number"),
        ]
        for data, expected in cases:
            e = self.assertRaises(TariffError, parse_tariff, data, "home.toml")
            self.assertIn(f"tariff home.toml: {expected}", str(e))
            self.assertNotIn("\n", str(e))

    def test_fileErrors(self):
        """A missing file and a TOML syntax error name the file (and the line)."""
        path = self.mktemp()
        e = self.assertRaises(TariffError, load_tariff, path)
        self.assertEqual(str(e), f"cannot read the tariff {path}: No such file or directory")
        with open(path, "w", encoding="utf-8") as f:
            f.write('name = "x"\nbilling_day = \n')
        e = self.assertRaises(TariffError, load_tariff, path)
        self.assertIn(f"tariff {path}: not TOML: ", str(e))
        self.assertIn("line 2", str(e))

    def test_periods(self):
        """A period runs from billing_day 00:00 JST to the same day of the next month."""
        tariff = parse_tariff(TIERED)
        self.assertEqual(tariff.period(at(5)), (at(5), at(5, month=12)))
        self.assertEqual(tariff.period(at(4, 23, 30)), (at(5, month=10), at(5)))
        self.assertEqual(tariff.period(at(20, month=12)), (at(5, month=12), at(5, month=1,
                                                                              year=2027)))

    def test_adjustmentsByThePeriodsMonth(self):
        """
        The rates in force in the month the period starts: the latest key not
        after it; a table with none in force is named, never taken as 0.
        """
        tariff = parse_tariff(TIERED)
        self.assertEqual(tariff.adjustment_rates(at(5)), (D("2.03"), ()))
        self.assertEqual(tariff.adjustment_rates(at(5, month=10)), (D("1.88"), ()))
        self.assertEqual(tariff.adjustment_rates(at(5, month=9)), (D("3.98"), ("fuel",)))


class TieredBillTests(SynchronousTestCase):
    """
    A period of TEPCO's tiers from 2026-11-05 (billing day 5, 30 A): the
    counter wraps at 100,000 kWh in the first slot, two slots have no
    record (the meter counted 30 kWh in them), and a tier boundary falls
    inside a slot.
    """

    def setUp(self):
        self.tariff = parse_tariff(TIERED)
        self.slots = [slot(at(5, 0, 0), 100, 99900), slot(at(5, 0, 30), 100, 0),
                      absent(at(5, 1, 0)), absent(at(5, 1, 30)),
                      slot(at(5, 2, 0), 50, 130), slot(at(5, 2, 30), 10, 180)]
        self.energies = P.slot_energies(self.slots, modulus=D(100000))
        self.bill = P.bill_for(self.tariff, self.energies, at(5), P.record_end(self.slots))

    def test_energiesWithGapAndWrap(self):
        """
        Energies 100, 100 (across the wrap), 80 (50 of its own and the gap's
        130 - 100 = 30), 10: 290 kWh, 30 of them in the gap.
        """
        self.assertEqual([(e.bought, e.gap) for e in self.energies],
                         [(D(100), 0), (D(100), 0), (D(80), D(30)), (D(10), 0)])
        self.assertEqual((self.bill.energy_kwh, self.bill.gap_kwh), (D(290), D(30)))

    def test_tierCostsBySlot(self):
        """
        f(100) = 2,980; f(200) = 120 x 29.80 + 80 x 36.40 = 6,488; f(280) =
        3,576 + 160 x 36.40 = 9,400; f(290) = 9,764.  Each slot costs its
        step: 2,980, 3,508, 2,912, 364.
        """
        self.assertEqual([p.energy_yen for p in self.bill.slots],
                         [D("2980.00"), D("3508.00"), D("2912.00"), D("364.00")])
        self.assertEqual(self.bill.energy_yen, D("9764.00"))

    def test_tierBoundaryInsideASlot(self):
        """119.5 kWh before, 1 kWh in the slot: 0.5 x 29.80 + 0.5 x 36.40 = 33.10."""
        cost = P.tier_cost(self.tariff, D("120.5")) - P.tier_cost(self.tariff, D("119.5"))
        self.assertEqual(cost, D("33.100"))

    def test_bill(self):
        """
        Basic 935.25; energy 9,764; adjustments (-1.95 + 3.98) x 290 = 588.70;
        total floor(11,287.95) = 11,287.  The record ends at 03:00: partial,
        projected at 290 kWh a 6 slots to 1,440 slots: 69,600 kWh, floor(935.25 +
        f(69,600) + 69,600 x 2.03) = floor(935.25 + 2,816,085 + 141,288).
        """
        bill = self.bill
        self.assertEqual((bill.basic_yen, bill.adjustments_yen), (D("935.25"), D("588.70")))
        self.assertEqual(bill.total_yen, 11287)
        self.assertTrue(bill.partial)
        self.assertEqual(bill.projected_energy_kwh, D(69600))
        self.assertEqual(bill.projected_total_yen, 2958308)
        self.assertEqual(bill.to_json(), {
            "start": "2026-11-05T00:00:00+09:00", "end": "2026-12-05T00:00:00+09:00",
            "partial": True, "energy_kwh": 290.0, "gap_kwh": 30.0, "basic_yen": 935.25,
            "energy_yen": 9764.0, "adjustments_yen": 588.7, "sell_kwh": 0.0, "sell_yen": 0.0,
            "total_yen": 11287, "projected_energy_kwh": 69600.0,
            "projected_total_yen": 2958308})

    def test_fuelRateChangeBetweenPeriods(self):
        """
        The October period (from 2026-10-05) takes October's fuel rate: 10 kWh
        before 2026-11-05 cost 298 + (-2.10 + 3.98) x 10 = 18.80, plus its basic.
        """
        slots = [slot(at(4, 23, 30), 10, 99890)] + self.slots
        energies = P.slot_energies(slots, modulus=D(100000))
        october = P.bill_for(self.tariff, energies, at(5, month=10), P.record_end(slots))
        self.assertEqual((october.energy_kwh, october.energy_yen, october.adjustments_yen),
                         (D(10), D("298.00"), D("18.80")))
        self.assertEqual(october.total_yen, 1252)  # floor(935.25 + 298 + 18.80)
        self.assertFalse(october.partial)
        self.assertTrue(october.incomplete)  # the record starts on its last evening
        november = P.bill_for(self.tariff, energies, at(5), P.record_end(slots))
        self.assertEqual(november.total_yen, self.bill.total_yen)
        self.assertFalse(november.incomplete)

    def test_wrapInsideAGapWithoutModulus(self):
        """Without the meter's modulus a gap across a wrap is unknown, and said."""
        slots = [slot(at(5, 0, 0), 50, 99960), absent(at(5, 0, 30)), slot(at(5, 1, 0), 5, 20)]
        bill = P.bill_for(self.tariff, P.slot_energies(slots), at(5), P.record_end(slots))
        self.assertEqual((bill.energy_kwh, bill.unknown_gaps), (D(55), 1))
        bridged = P.bill_for(self.tariff, P.slot_energies(slots, modulus=D(100000)), at(5),
                             P.record_end(slots))
        self.assertEqual((bridged.energy_kwh, bridged.gap_kwh, bridged.unknown_gaps),
                         (D(65), D(10), 0))


class BandedBillTests(SynchronousTestCase):
    """A time-of-use period from 2026-11-01 with a holiday band first."""

    def test_bill(self):
        """
        2026-11-03 (Culture Day, a Tuesday) 10:00, 2 kWh at the holiday's 20:
        40; 11-04 02:00, 2 kWh at night's 27.86: 55.72; 11-04 10:00, 2 kWh at
        day's 35.76: 71.52; 1 kWh sold at 16.  Energy 167.24, total
        floor(1,247 + 167.24) = 1,414, sold 16.00 apart.
        """
        tariff = parse_tariff(BANDED)
        slots = [slot(at(3, 10), 2, 1000, sold=1, reverse=50), slot(at(4, 2), 2, 1002, 0, 51),
                 slot(at(4, 10), 2, 1004, 0, 51)]
        bill = P.bill_for(tariff, P.slot_energies(slots), at(1), P.record_end(slots))
        self.assertEqual([(p.band, p.energy_yen) for p in bill.slots],
                         [("holiday", D(40)), ("night", D("55.72")), ("day", D("71.52"))])
        self.assertEqual((bill.energy_yen, bill.total_yen), (D("167.24"), 1414))
        self.assertEqual((bill.sell_kwh, bill.sell_yen), (D(1), D(16)))
        self.assertEqual(bill.adjustments_yen, 0)
        self.assertTrue(bill.incomplete)  # its first two days are not in the record

    def test_japanHolidays(self):
        """Japan's holidays come from the holidays package: 2026-11-03 is, 11-04 is not."""
        holiday = P.japan_holiday()
        self.assertTrue(holiday(datetime.date(2026, 11, 3)))
        self.assertTrue(holiday(datetime.date(2026, 9, 22)))  # a national holiday between two
        self.assertFalse(holiday(datetime.date(2026, 11, 4)))


class ReadmeTariffTests(SynchronousTestCase):
    def test_readmeExampleIsATariff(self):
        """The tariff README shows is one the service takes, as written."""
        import re
        import tomllib
        with open(os.path.join(os.path.dirname(EXAMPLES), os.pardir, "README.md"),
                  encoding="utf-8") as f:
            blocks = [b for b in re.findall(r"```toml\n(.*?)```", f.read(), re.S)
                      if "billing_day" in b]
        self.assertTrue(blocks)
        for block in blocks:
            tariff = parse_tariff(tomllib.loads(block, parse_float=Decimal), "README")
            self.assertEqual((tariff.billing_day, tariff.basic_yen), (5, D("1247.00")))
