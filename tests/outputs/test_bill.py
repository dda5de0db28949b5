"""
Tests for L{smartmeter_tx.outputs.bill} (C{twist smartmeter --tariff}): the
current period's bill on C{/metrics} and the page, priced from the slots the
service logged, each figure computed by hand in the test's docstring.
"""

from __future__ import annotations

import datetime
from decimal import Decimal

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.bill.tariff import parse_tariff
from smartmeter_tx.model import JST, HistorySlot
from smartmeter_tx.outputs.bill import BillFigures
from smartmeter_tx.outputs.dashboard.page import render
from smartmeter_tx.outputs.dashboard.snapshot import snapshot
from smartmeter_tx.service.backfill import Backfill
from smartmeter_tx.service.interfaces import figures
from tests.outputs.test_web import service_view

D = Decimal
TARIFF = {"name": "Tiers", "billing_day": 1, "contract": "30A", "basic": {"30A": D("935.25")},
          "tiers": [{"up_to": 120, "price": D("29.80")}, {"price": D("36.40")}],
          "adjustments": {"renewable": {"2025-05": D("3.98")}}}
#: 2026-12-01 03:00 JST: six slots of the period are in the record.
NOW = datetime.datetime(2026, 12, 1, 3, 0, tzinfo=JST)


def records(start, energies, counter=D(1000)):
    """History records from C{start}, one per energy, the counter running on."""
    out = []
    for k, energy in enumerate(energies):
        out.append(HistorySlot(start + k * datetime.timedelta(minutes=30), D(energy), D(0),
                               counter, D(0), "E2").to_record())
        counter += D(energy)
    return out


def bill_figures(known, tariff=TARIFF, now=NOW) -> BillFigures:
    """A L{BillFigures} over a view whose backfill knows C{known}."""
    clock = Clock()
    backfill = Backfill(40, clock, lambda record, when: None, now.timestamp, known=known)
    return BillFigures(parse_tariff(tariff), service_view(clock, backfill), now.timestamp)


class BillFiguresTests(SynchronousTestCase):
    def test_figures(self):
        """
        The slot before the period and six in it, 20 kWh each: 120 kWh, all in
        the first tier: 3,576 yen, adjustments 3.98 x 120 = 477.60, basic
        935.25: 4,988.85 so far.  The next kWh is in the second tier: 36.40 +
        3.98 = 40.38 yen.  Projected over December's 744 hours from 3: 29,760
        kWh, floor(935.25 + 3,576 + 29,640 x 36.40 + 29,760 x 3.98) = 1,201,852.
        """
        known = records(datetime.datetime(2026, 11, 30, 23, 30, tzinfo=JST), [20] * 7)
        shown = figures([bill_figures(known)])
        self.assertEqual(shown["smartmeter_bill_period_energy_kwh"], 120.0)
        self.assertEqual(shown["smartmeter_bill_period_cost_yen"], 4988.85)
        self.assertEqual(shown["smartmeter_price_yen_per_kwh"], 40.38)
        self.assertEqual(shown["smartmeter_bill_period_start_timestamp_seconds"],
                         datetime.datetime(2026, 12, 1, tzinfo=JST).timestamp())
        self.assertEqual(shown["smartmeter_bill_period_projected_cost_yen"], 1201852)
        self.assertEqual(shown["smartmeter_bill_tier"], 2)

    def test_wrapInAGapBridgedByTheMetersScale(self):
        """
        A gap across the counter's wrap is bridged once the meter's scale is
        known (6 digits of 0.01 kWh: 10,000 kWh); before, there is no bill.
        """
        from smartmeter_tx.session.state import MeterLink
        start = datetime.datetime(2026, 11, 30, 23, 30, tzinfo=JST)
        known = (records(start, [20, 20], counter=D("9960"))
                 + records(start + datetime.timedelta(hours=1), [20], counter=D(10)))
        bill = bill_figures(known)
        self.assertIsNone(figures([bill])["smartmeter_bill_period_energy_kwh"])
        bill.view.link = MeterLink(unit="0.01", digits=6)
        # 00:00 bought 20 and ended the counter at 10,000 = 0; 01:00 starts
        # at 10: the gap's 10 and its own 20.
        self.assertEqual(figures([bill])["smartmeter_bill_period_energy_kwh"], 50.0)

    def test_notAllLogged(self):
        """
        While the period's start is not in the log (the backfill still
        reading), there is no bill: no sample, never a short one; the price
        now is known.
        """
        known = records(datetime.datetime(2026, 12, 1, 1, 0, tzinfo=JST), [20] * 4)
        shown = figures([bill_figures(known)])
        self.assertIsNone(shown["smartmeter_bill_period_energy_kwh"])
        self.assertIsNone(shown["smartmeter_bill_period_cost_yen"])
        self.assertIsNone(shown["smartmeter_bill_period_projected_cost_yen"])
        self.assertEqual(shown["smartmeter_price_yen_per_kwh"], 33.78)

    def test_bandNow(self):
        """Under bands the price now is the band of the wall clock's slot, holidays apart."""
        tariff = dict(TARIFF, tiers=None, adjustments={}, bands=[
            {"name": "holiday", "hours": "00:00-24:00", "days": ["holiday"], "price": 20},
            {"name": "night", "hours": "01:00-06:00", "price": D("27.86")},
            {"name": "day", "hours": "06:00-01:00", "price": D("35.76")}])
        del tariff["tiers"]
        known = records(datetime.datetime(2026, 11, 30, 23, 30, tzinfo=JST), [1] * 7)
        self.assertEqual(figures([bill_figures(known, tariff)])["smartmeter_price_yen_per_kwh"],
                         27.86)
        culture_day = datetime.datetime(2026, 11, 3, 12, 0, tzinfo=JST)
        self.assertEqual(figures([bill_figures(known, tariff, culture_day)])[
            "smartmeter_price_yen_per_kwh"], 20.0)


class PagePanelTests(SynchronousTestCase):
    def page(self, sources, lang="en"):
        view = service_view(Clock())
        return render(snapshot(view, NOW.timestamp(), figures(sources)), lang)

    def test_panel(self):
        """With --tariff the page has the period's panel, in both languages."""
        known = records(datetime.datetime(2026, 11, 30, 23, 30, tzinfo=JST), [20] * 7)
        page = self.page([bill_figures(known)])
        self.assertIn('<section id="bill" aria-label="This billing period">', page)
        self.assertIn('<dd id="bill-cost" data-value="4988.85">¥4,989</dd>', page)
        self.assertIn('<dd id="bill-price" data-value="40.38">¥40.38 / kWh (tier 2)</dd>', page)
        self.assertIn('<dd id="bill-energy" data-value="120.0">120.00 kWh</dd>', page)
        self.assertIn("今期の電気料金", self.page([bill_figures(known)], "ja"))

    def test_noTariffNoPanel(self):
        """Without --tariff there is no panel."""
        self.assertNotIn('id="bill"', self.page([]))


class MissingRateTests(SynchronousTestCase):
    def test_saidOncePerPeriod(self):
        """
        An adjustment with no rate in force for a period is said once at
        start and once for each period a logged slot reaches, never again.
        """
        from twisted.logger import formatEvent, globalLogPublisher
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        tariff = dict(TARIFF, adjustments={"fuel": {"2027-01": D("-1")}})
        bill = bill_figures([], tariff)
        bill.startService()
        for record in records(datetime.datetime(2026, 12, 1, 0, 0, tzinfo=JST), [1] * 3):
            bill.recordReceived(record, 0.0)
        bill.recordReceived(records(datetime.datetime(2027, 1, 1, tzinfo=JST), [1])[0], 0.0)
        said = [e for e in events if "no 'fuel' rate" in formatEvent(e)]
        self.assertEqual(len(said), 1)
        self.assertEqual(said[0]["start"], datetime.datetime(2026, 12, 1, tzinfo=JST))


class ContractTests(SynchronousTestCase):
    """An ampere contract: the load's share of it, on /metrics, /latest and the page."""

    def setUp(self):
        from smartmeter_tx.model import Reading
        self.bill = bill_figures([], dict(TARIFF, contract="40A", basic={"40A": D(1247)}))
        self.bill.view.store.add(Reading(power_w=7000, current_r_a=D(36), current_t_a=D(10)),
                                 NOW.timestamp())

    def test_figures(self):
        """R 36 A of 40 A: 0.9 of the contract, at the 90 % warning: near its limit."""
        shown = figures([self.bill])
        self.assertEqual((shown["smartmeter_contract_amperes"],
                          shown["smartmeter_contract_warning_amperes"],
                          shown["smartmeter_contract_load_ratio"],
                          shown["smartmeter_breaker_near_limit"]), (40, 36.0, 0.9, 1))
        self.bill.tariff = parse_tariff(dict(TARIFF, contract="40A", basic={"40A": D(1247)},
                                             breaker_warning=95))
        self.assertEqual(figures([self.bill])["smartmeter_breaker_near_limit"], 0)

    def test_latestAndPage(self):
        """/latest names the contract and its warning current; the page shows the share."""
        import json

        from twisted.web.resource import getChildForRequest
        from twisted.web.test.requesthelper import DummyRequest

        from smartmeter_tx.outputs.web import make_root
        root = make_root(self.bill.view, NOW.timestamp, [self.bill])
        request = DummyRequest([b"latest"])
        latest = json.loads(getChildForRequest(root, request).render(request))
        self.assertEqual((latest["contract_a"], latest["contract_warning_a"]), (40, 36.0))
        page = render(snapshot(self.bill.view, NOW.timestamp(), figures([self.bill])))
        self.assertIn('<div class="sub" id="contract" data-value="0.9"><span class="bad">'
                      "90% of the 40 A contract (near the breaker&#x27;s limit)</span></div>",
                      page.replace("'", "&#x27;"))


class BandsOnThePageTests(SynchronousTestCase):
    """Under a time-of-use tariff the bought bars are coloured by band, named in the legend."""

    def test_barsByBand(self):
        """
        Slots from 01:00 to 06:00 are night's (band 0), the rest day's; the
        legend names both; the price now (03:00) is night's with the levy.
        """
        from smartmeter_tx.bill.pricing import band_of
        banded = {k: v for k, v in TARIFF.items() if k != "tiers"}
        banded["bands"] = [{"name": "night", "hours": "01:00-06:00", "price": D("27.86")},
                           {"name": "day", "hours": "06:00-01:00", "price": D("35.76")}]
        known = records(datetime.datetime(2026, 11, 30, 23, 30, tzinfo=JST), [1] * 7)
        bill = bill_figures(known, banded)
        snap = snapshot(bill.view, NOW.timestamp(), figures([bill]), band_of(bill.tariff))
        page = render(snap)
        by_slot = {s.start.astimezone(JST).strftime("%H:%M"): s.band for s in snap.slots}
        self.assertEqual((by_slot["00:30"], by_slot["01:00"], by_slot["02:30"]), (1, 0, 0))
        self.assertIn('<i class="lg-band-0"></i>night<i class="lg-band-1"></i>day', page)
        self.assertIn('class="normal band-0"', page)
        self.assertIn('class="normal band-1"', page)
        self.assertIn("¥31.84 / kWh (night)", page)  # 27.86 + the levy's 3.98
