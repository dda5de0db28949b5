"""
The meter's 30-minute record priced under a L{Tariff}, period by period.

 - Each slot's energy is the meter's record of it (the slots the history
   and the HA statistics use).  Energy the meter counted in slots it has no
   record of (its counter's step across them, minus nothing known) is that
   gap's C{gap_kwh}, counted in the first known slot after it, as the meter
   counts it; a counter that wrapped inside a gap is bridged with the
   meter's modulus, and without one the gap is unknown, never zero.
 - Tiers price the period's cumulative kWh: a slot costs f(E after) - f(E
   before).  Bands price a slot by its start (JST); a national holiday is
   the C{holiday} of a band's days.
 - Adjustments add their rates (in force in the month the period starts)
   times each kWh; the basic charge belongs to the period.
 - A period's bill is the exact sum of its parts, floored to the yen at the
   end.  Sold energy is paid separately: it is not in the total.

Pure: no Twisted, no I/O.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Callable, Iterable, Optional, Sequence

from smartmeter_tx.bill.tariff import HOLIDAY, Tariff
from smartmeter_tx.model import JST, SLOT, HistorySlot, is_absent

__all__ = ["SlotEnergy", "PricedSlot", "Bill", "slot_energies", "bill_for", "tier_cost",
           "japan_holiday", "holiday_test", "yen", "record_end", "band_of"]

ZERO = Decimal(0)


@dataclass(frozen=True)
class SlotEnergy:
    """
    One known slot's energy.  C{bought} and C{sold} include the gaps
    counted in this slot (C{gap}, C{sold_gap}); a gap of C{None} is one
    that could not be bridged (its energy is unknown and left out).
    """

    start: datetime.datetime
    bought: Decimal
    sold: Decimal
    gap: Optional[Decimal] = ZERO
    sold_gap: Optional[Decimal] = ZERO


@dataclass(frozen=True)
class PricedSlot:
    start: datetime.datetime
    bought: Decimal
    energy_yen: Decimal
    adjustments_yen: Decimal
    sold: Decimal
    sell_yen: Decimal
    band: Optional[str] = None


@dataclass(frozen=True)
class Bill:
    """
    One billing period.  Yen are exact (C{Decimal}); C{total_yen} is their
    sum floored.  C{partial}: the record ends before the period does;
    C{projected_*} then extend it to the period's end at the pace so far.
    """

    start: datetime.datetime
    end: datetime.datetime
    partial: bool
    energy_kwh: Decimal
    gap_kwh: Decimal
    basic_yen: Decimal
    energy_yen: Decimal
    adjustments_yen: Decimal
    sell_kwh: Decimal
    sell_yen: Decimal
    total_yen: int
    missing_adjustments: tuple = ()
    unknown_gaps: int = 0
    incomplete: bool = False
    projected_energy_kwh: Optional[Decimal] = None
    projected_total_yen: Optional[int] = None
    slots: tuple = field(default=(), repr=False)

    def to_json(self) -> dict:
        """The period as C{smartmeter-history --bill --format json} prints it."""
        out = {"start": self.start.isoformat(), "end": self.end.isoformat(),
               "partial": self.partial, "energy_kwh": float(self.energy_kwh),
               "gap_kwh": float(self.gap_kwh), "basic_yen": yen(self.basic_yen),
               "energy_yen": yen(self.energy_yen), "adjustments_yen": yen(self.adjustments_yen),
               "sell_kwh": float(self.sell_kwh), "sell_yen": yen(self.sell_yen),
               "total_yen": self.total_yen}
        if self.missing_adjustments:
            out["missing_adjustments"] = list(self.missing_adjustments)
        if self.unknown_gaps:
            out["unknown_gaps"] = self.unknown_gaps
        if self.incomplete:
            out["incomplete"] = True
        if self.partial:
            out["projected_energy_kwh"] = float((self.projected_energy_kwh or ZERO).quantize(
                Decimal("0.01"), rounding=ROUND_HALF_UP))
            out["projected_total_yen"] = self.projected_total_yen
        return out


def yen(amount: Decimal) -> float:
    """An amount of yen as shown: to 0.01, half up."""
    return float(amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _known(value) -> Optional[Decimal]:
    return None if value is None or is_absent(value) else value


def _bridge(before: Optional[Decimal], after: Optional[Decimal],
            modulus: Optional[Decimal]) -> Optional[Decimal]:
    """The counter's step from C{before} to C{after}, across a wrap if it must."""
    if before is None or after is None:
        return None
    step = after - before
    if step < 0:
        return None if modulus is None else step + modulus
    return step


def slot_energies(slots: Iterable[HistorySlot],
                  modulus: Optional[Decimal] = None) -> list:
    """
    The known slots' energies, oldest first, each with the gap before it.

    @param modulus: where the meter's counters wrap (kWh), if known.
    """
    out = []
    end_normal: Optional[Decimal] = None
    end_reverse: Optional[Decimal] = None
    for slot in sorted(slots, key=lambda s: s.start):
        bought = _known(slot.energy_normal_kwh)
        if bought is None:
            continue
        sold = _known(slot.energy_reverse_kwh) or ZERO
        gap = _bridge(end_normal, _known(slot.cumulative_normal_kwh), modulus)
        sold_gap = _bridge(end_reverse, _known(slot.cumulative_reverse_kwh), modulus)
        if end_normal is None:
            gap = ZERO  # the first slot we know: nothing before it to bridge from
        if end_reverse is None:
            sold_gap = ZERO
        out.append(SlotEnergy(slot.start, bought + (gap or ZERO), sold + (sold_gap or ZERO),
                              gap, sold_gap))
        end_normal = _end(_known(slot.cumulative_normal_kwh), bought, modulus)
        end_reverse = _end(_known(slot.cumulative_reverse_kwh), sold, modulus)
    return out


def _end(start: Optional[Decimal], energy: Decimal, modulus: Optional[Decimal]
         ) -> Optional[Decimal]:
    if start is None:
        return None
    end = start + energy
    return end % modulus if modulus is not None and end >= modulus else end


def tier_cost(tariff: Tariff, energy: Decimal) -> Decimal:
    """f(E): the price of a period's first C{energy} kWh under the tiers."""
    cost, floor = ZERO, ZERO
    for tier in tariff.tiers:
        top = energy if tier.up_to is None else min(energy, tier.up_to)
        if top > floor:
            cost += (top - floor) * tier.price
        if tier.up_to is None or energy <= tier.up_to:
            break
        floor = tier.up_to
    return cost


def japan_holiday() -> Callable[[datetime.date], bool]:
    """
    Whether a date is one of Japan's national holidays, from the maintained
    C{holidays} package.
    """
    import holidays

    calendar = holidays.country_holidays("JP")
    return lambda day: day in calendar


def holiday_test(tariff: Tariff, holiday: Optional[Callable[[datetime.date], bool]] = None
                 ) -> Callable[[datetime.date], bool]:
    """
    The national-holiday test a tariff needs: C{holiday} if given, else
    L{japan_holiday} when one of its bands names holidays (no calendar is
    loaded otherwise).
    """
    if holiday is not None:
        return holiday
    if any(b.days is not None and HOLIDAY in b.days for b in tariff.bands):
        return japan_holiday()
    return lambda day: False


def bill_for(tariff: Tariff, energies: Sequence[SlotEnergy], start: datetime.datetime,
             record_end: datetime.datetime,
             holiday: Optional[Callable[[datetime.date], bool]] = None) -> Bill:
    """
    The bill of the period that starts at C{start}.

    @param energies: L{slot_energies} of the record (any span: the
        period's slots are taken from it).
    @param record_end: the end of the newest slot of the record; a period
        that ends after it is partial.
    @param holiday: the national-holiday test (L{japan_holiday} when a band
        names holidays and none is given).
    """
    _, end = tariff.period(start)
    holiday = holiday_test(tariff, holiday)
    rate, missing = tariff.adjustment_rates(start)
    priced, total = [], ZERO
    inside = [e for e in energies if start <= e.start < end]
    bridged = any(e.start < start for e in energies)
    for slot in inside:
        if tariff.tiers:
            cost, band = tier_cost(tariff, total + slot.bought) - tier_cost(tariff, total), None
        else:
            chosen = tariff.band_at(slot.start, holiday(slot.start.date()))
            cost, band = slot.bought * chosen.price, chosen.name
        total += slot.bought
        sell = slot.sold * (tariff.sell_price or ZERO)
        priced.append(PricedSlot(slot.start, slot.bought, cost, slot.bought * rate, slot.sold,
                                 sell, band))
    energy_yen = sum((p.energy_yen for p in priced), ZERO)
    adjustments_yen = sum((p.adjustments_yen for p in priced), ZERO)
    partial = record_end < end
    projected_energy = projected_total = None
    if partial and record_end > start:
        ratio = Decimal((end - start) / (record_end - start))
        projected_energy = total * ratio
        projected_yen = (tier_cost(tariff, projected_energy) if tariff.tiers
                         else energy_yen * ratio)
        projected_total = math.floor(tariff.basic_yen + projected_yen + projected_energy * rate)
    return Bill(
        start=start, end=end, partial=partial, energy_kwh=total,
        gap_kwh=sum((e.gap or ZERO for e in inside), ZERO),
        basic_yen=tariff.basic_yen, energy_yen=energy_yen, adjustments_yen=adjustments_yen,
        sell_kwh=sum((p.sold for p in priced), ZERO),
        sell_yen=sum((p.sell_yen for p in priced), ZERO),
        total_yen=math.floor(tariff.basic_yen + energy_yen + adjustments_yen),
        missing_adjustments=missing,
        unknown_gaps=sum(1 for e in inside if e.gap is None),
        incomplete=not bridged and (not inside or inside[0].start > start),
        projected_energy_kwh=projected_energy, projected_total_yen=projected_total,
        slots=tuple(priced))


def band_of(tariff: Tariff, holiday: Optional[Callable[[datetime.date], bool]] = None
            ) -> Optional[Callable[[datetime.datetime], tuple]]:
    """
    What band a slot is in, for a tariff of bands (C{None} for tiers): a
    function of the slot's start (aware) giving C{(index, name)}.
    """
    if not tariff.bands:
        return None
    test = holiday_test(tariff, holiday)

    def band(start: datetime.datetime) -> tuple:
        start = start.astimezone(JST)
        chosen = tariff.band_at(start, test(start.date()))
        return tariff.bands.index(chosen), chosen.name
    return band


def record_end(slots: Iterable[HistorySlot]) -> Optional[datetime.datetime]:
    """The end of the newest known slot, or C{None}."""
    known = [s.start for s in slots if _known(s.energy_normal_kwh) is not None]
    return max(known) + SLOT if known else None
