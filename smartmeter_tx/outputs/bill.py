"""
The bill of the current period on C{/metrics} and the page (C{twist
smartmeter --tariff}): the meter's 30-minute record the service logged,
priced under the household's tariff as L{smartmeter_tx.bill.pricing} prices
it for C{smartmeter-history --bill}, at each scrape (it keeps nothing of
its own: the slots are the backfill's).
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Callable, Optional

from twisted.application import service
from twisted.logger import Logger
from zope.interface import implementer

from smartmeter_tx.bill import pricing
from smartmeter_tx.bill.tariff import Tariff
from smartmeter_tx.model import JST, SLOT
from smartmeter_tx.service.interfaces import Figure, IMetricsSource, IRecordReceiver
from smartmeter_tx.service.view import ServiceView

__all__ = ["BillFigures"]


@implementer(IMetricsSource, IRecordReceiver)
class BillFigures(service.Service):
    """
    The current period's bill so far, its projection and the price of a
    kWh now, as figures.  An adjustment the tariff has no rate for in a
    period the record reaches is said once (the bill is without it).
    """

    name = "bill"
    log = Logger()

    def __init__(self, tariff: Tariff, view: ServiceView, wall_clock: Callable[[], float],
                 holiday: Optional[Callable[[datetime.date], bool]] = None) -> None:
        """
        @param holiday: the national-holiday test (Japan's, from the
            holidays package, when a band names holidays and none is given).
        """
        self.tariff, self.view, self.wall_clock = tariff, view, wall_clock
        self.holiday = pricing.holiday_test(tariff, holiday)
        self._said: set = set()
        # The last bill and what it was priced from: a scrape, the page and
        # /latest ask again and again between two slots.
        self._priced: Optional[tuple] = None

    def startService(self) -> None:
        super().startService()
        self._check(datetime.datetime.fromtimestamp(self.wall_clock(), JST))

    def recordReceived(self, record: dict, when: float) -> None:
        if record.get("kind") == "history" and isinstance(record.get("slot"), str):
            try:
                self._check(datetime.datetime.fromisoformat(record["slot"]))
            except ValueError:
                return

    def _check(self, at: datetime.datetime) -> None:
        """Say once a period which adjustments have no rate in force in it."""
        start, _ = self.tariff.period(at.astimezone(JST))
        _, missing = self.tariff.adjustment_rates(start)
        for name in missing:
            if (start, name) not in self._said:
                self._said.add((start, name))
                self.log.warn("the tariff has no '{name}' rate in force for the period from "
                              "{start:%Y-%m-%d}: it is billed without it; add the month's rate "
                              "to [adjustments]", name=name, start=start)

    def bill(self) -> Optional[pricing.Bill]:
        """The current period's bill from the logged record, or C{None} without one."""
        if self.view.backfill is None:
            return None
        now = datetime.datetime.fromtimestamp(self.wall_clock(), JST)
        start, end = self.tariff.period(now)
        # The slot before the period too: a gap at its start is bridged from it.
        slots = self.view.backfill.between(start - SLOT, end)
        record_end = pricing.record_end(slots) or start
        link = self.view.link
        modulus = None if link is None else link.modulus_kwh  # bridges a wrap in a gap
        key = (start, record_end, len(slots), modulus)
        if self._priced is None or self._priced[0] != key:
            self._priced = (key, pricing.bill_for(
                self.tariff, pricing.slot_energies(slots, modulus), start, record_end,
                self.holiday))
        return self._priced[1]

    def price_now(self, bill: pricing.Bill) -> Decimal:
        """What a kWh bought now costs: the tier or band now, and the adjustments."""
        rate, _ = self.tariff.adjustment_rates(bill.start)
        if self.tariff.tiers:
            return self.tariff.tier_at(bill.energy_kwh)[1].price + rate
        now = datetime.datetime.fromtimestamp(self.wall_clock(), JST)
        return self.tariff.band_at(now, self.holiday(now.date())).price + rate

    def contract(self) -> list:
        """The contract's figures: its amperes, the load's share of it, near the limit."""
        amperes = self.tariff.contract_amperes
        if amperes is None:
            return []
        latest = self.view.store.latest
        currents = [] if latest is None else [
            c for c in (latest.current_r_a, latest.current_t_a) if isinstance(c, Decimal)]
        ratio = max(currents) / amperes if currents else None
        near = None if ratio is None else int(ratio * 100 >= self.tariff.breaker_warning)
        return [
            Figure("smartmeter_contract_amperes", "gauge",
                   "The ampere contract (the meter's breaker trips above it)", amperes),
            Figure("smartmeter_contract_warning_amperes", "gauge",
                   "The current at which the breaker is said to be near its limit",
                   float(self.tariff.breaker_warning * amperes / 100)),
            Figure("smartmeter_contract_load_ratio", "gauge",
                   "The larger phase current (R or T) as a share of the contract",
                   None if ratio is None else round(float(ratio), 4)),
            Figure("smartmeter_breaker_near_limit", "gauge",
                   "1 while the larger phase current is at or above the warning share of "
                   "the contract", near),
        ]

    def metrics(self) -> list:
        bill = self.bill()
        if bill is None:
            return self.contract()
        # A bill short of some of the period's energy (its start not logged
        # yet, a gap the counter cannot bridge) is no bill: no sample.
        whole = not bill.incomplete and not bill.unknown_gaps
        cost = bill.basic_yen + bill.energy_yen + bill.adjustments_yen
        return [
            Figure("smartmeter_bill_period_energy_kwh", "gauge",
                   "Energy bought in the current billing period, from the meter's record",
                   float(bill.energy_kwh) if whole else None),
            Figure("smartmeter_bill_period_cost_yen", "gauge",
                   "The current billing period's bill so far (basic charge, energy, "
                   "adjustments), in yen", round(float(cost), 2) if whole else None),
            Figure("smartmeter_bill_period_projected_cost_yen", "gauge",
                   "The current billing period's bill projected to its end, in yen",
                   bill.projected_total_yen if whole else None),
            Figure("smartmeter_bill_period_start_timestamp_seconds", "gauge",
                   "Start of the current billing period", bill.start.timestamp()),
            Figure("smartmeter_price_yen_per_kwh", "gauge",
                   "What a kWh bought now costs under the tariff (its tier or band, and the "
                   "adjustments)", float(self.price_now(bill))),
        ] + self.tier(bill) + self.contract()

    def tier(self, bill: pricing.Bill) -> list:
        """Under tiers, the tier the period's next kWh is in (1 is the first)."""
        if not self.tariff.tiers:
            return []
        index, _ = self.tariff.tier_at(bill.energy_kwh)
        return [Figure("smartmeter_bill_tier", "gauge",
                       "The tier of the tariff the period's next kWh is in (1: the first)",
                       index if not bill.incomplete else None)]
