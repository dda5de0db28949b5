"""
The meter's 30-minute record as Home Assistant's hourly long-term statistics.

HA keeps one row per hour and statistic: C{start} (on the hour, tz-aware),
C{state} and C{sum}; its energy dashboard shows an hour's energy as that
row's C{sum} minus the C{sum} of the row before it.  So:

  - an hour is written only when both of its half-hour slots are known (an
    outage leaves the hour out, never a zero);
  - C{state} is the meter's cumulative reading at the hour's end;
  - C{sum} grows by exactly each written hour's energy: it starts at 0
    before the first row (not at the meter's reading, which would show the
    whole meter total as one hour's use) and does not carry the energy of
    the hours left out (unknown per hour), so every hour's change is its own
    energy, across a digit wrap too (the slots' energies are wrap-aware).

The meter's times are Japan's (JST, no daylight saving time), so an hour on
the meter is an hour in UTC.  Pure: no Twisted, no I/O.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable, Iterable, Optional

from smartmeter_tx.bill import pricing
from smartmeter_tx.bill.tariff import Tariff
from smartmeter_tx.model import SLOT, HistorySlot, is_absent

__all__ = ["SOURCE", "DIRECTIONS", "MONEY", "Hour", "Row", "hours", "money_hours", "rows",
           "statistic_id", "metadata", "slug_for", "meter_name", "valid_statistic_id"]

#: Our statistics' source: the part of their id before the colon.
SOURCE = "smartmeter_tx"
HOUR = datetime.timedelta(hours=1)
#: Each statistic: the suffix of its id, its name, and the slot fields it sums.
DIRECTIONS = {
    "import": ("energy_import", "energy bought (meter record)", "energy_normal_kwh",
               "cumulative_normal_kwh"),
    "export": ("energy_export", "energy sold (meter record)", "energy_reverse_kwh",
               "cumulative_reverse_kwh"),
}
#: With a tariff: the cost of energy bought (HA's grid "cost") and the pay
#: for energy sold ("compensation"), in yen, hour by hour.
MONEY = {
    "cost": ("energy_import_cost", "energy bought, cost (meter record)"),
    "compensation": ("energy_export_compensation", "energy sold, compensation (meter record)"),
}
#: HA's rule for an external statistic id (lower case, digits, single
#: underscores, one colon, no underscore at either end of a part).
_EXTERNAL_ID = re.compile(r"^(?!.+__)(?!_)[\da-z_]+(?<!_):(?!_)[\da-z_]+(?<!_)$")


@dataclass(frozen=True)
class Hour:
    """One complete hour of the meter's record: its energy and the reading at its end."""

    start: datetime.datetime  # aware, JST, on the hour
    energy: Decimal
    state: Optional[Decimal]


@dataclass(frozen=True)
class Row:
    """One row for HA: an L{Hour} with its running C{sum}."""

    start: datetime.datetime
    state: Optional[Decimal]
    sum: Decimal

    def to_json(self) -> dict:
        row = {"start": self.start.isoformat(), "sum": float(self.sum)}
        if self.state is not None:
            row["state"] = float(self.state)
        return row


def _value(slot: Optional[HistorySlot], name: str) -> Optional[Decimal]:
    value = None if slot is None else getattr(slot, name)
    return None if value is None or is_absent(value) else value


def hours(slots: Iterable[HistorySlot], direction: str = "import") -> list:
    """
    The complete hours among C{slots}, oldest first.

    @param direction: C{"import"} (bought, normal) or C{"export"} (sold, reverse).
    @return: L{Hour}s, only those whose two half hours are both known.
    """
    _, _, energy_field, counter_field = DIRECTIONS[direction]
    by_start = {slot.start: slot for slot in slots}
    found = []
    for start in sorted(s for s in by_start if s.minute == 0 and s.second == 0):
        first, second = by_start[start], by_start.get(start + SLOT)
        e1, e2 = _value(first, energy_field), _value(second, energy_field)
        if e1 is None or e2 is None:
            continue
        # The reading at the hour's end: the next slot's own counter, or the
        # second half's counter plus its energy while that slot is not known.
        state = _value(by_start.get(start + HOUR), counter_field)
        if state is None:
            counter = _value(second, counter_field)
            state = None if counter is None else counter + e2
        found.append(Hour(start, e1 + e2, state))
    return found


def money_hours(slots: Iterable[HistorySlot], tariff: Tariff, kind: str = "cost",
                holiday: Optional[Callable[[datetime.date], bool]] = None,
                modulus: Optional[Decimal] = None) -> list:
    """
    The hours of the record priced under C{tariff}, oldest first: each
    hour's cost (its slots' energy and adjustments, as the bill prices them,
    and its share of its period's basic charge: an equal one an hour), or
    its compensation (the energy sold in it at the sell price).

    Only the periods whose record starts with them (their tiers count from
    the period's first kWh), up to the last known slot.  An hour without a
    known slot carries its share of the basic charge only (its energy is
    counted, as the meter counts it, in the first known slot after it), so
    the hours of a whole period add up to its bill before the rounding.

    @param kind: C{"cost"} or C{"compensation"}.
    @param modulus: where the meter's counters wrap (kWh), if known.
    """
    slots = list(slots)
    end = pricing.record_end(slots)
    if end is None or (kind == "compensation" and tariff.sell_price is None):
        return []
    energies = pricing.slot_energies(slots, modulus)
    holiday = pricing.holiday_test(tariff, holiday)  # one calendar for every period
    found = []
    start = tariff.period(energies[0].start)[0]
    while start < end:
        bill = pricing.bill_for(tariff, energies, start, end, holiday)
        if not bill.incomplete:
            found += _priced_hours(bill, min(bill.end, end), tariff, kind)
        start = bill.end
    return found


def _priced_hours(bill: pricing.Bill, end: datetime.datetime, tariff: Tariff,
                  kind: str) -> list:
    """The hours of one period's bill up to C{end}: cost or compensation."""
    priced = {p.start: p for p in bill.slots}
    share = bill.basic_yen / Decimal((bill.end - bill.start) // HOUR)
    out = []
    hour = bill.start
    while hour < end:
        halves = [p for p in (priced.get(hour), priced.get(hour + SLOT)) if p is not None]
        if kind == "cost":
            value = share + sum((p.energy_yen + p.adjustments_yen for p in halves), Decimal(0))
        else:
            value = sum((p.sell_yen for p in halves), Decimal(0))
        out.append(Hour(hour, value, None))
        hour += HOUR
    return out


def rows(found: list, base: Decimal = Decimal(0), after: Optional[datetime.datetime] = None
         ) -> list:
    """
    The rows for the hours after C{after} (all when C{None}), each C{sum} the
    C{base} (the C{sum} of HA's row before the first of them, 0 when there is
    none) plus the energy of every written hour up to it.

    @return: L{Row}s, oldest first.
    """
    out = []
    total = base
    for hour in found:
        if after is not None and hour.start <= after:
            continue
        total += hour.energy
        out.append(Row(hour.start, hour.state, total))
    return out


def slug_for(mac: Optional[str]) -> Optional[str]:
    """
    The one id of a meter, in our statistic ids and in MQTT's topics and
    unique ids alike: its MAC address (EUI-64, from the scan; known once
    linked, unlike the serial number, which some meters lack), lower case,
    ASCII letters and digits only.  C{None} while it is not known.
    """
    if not mac:
        return None
    slug = "".join(c for c in mac.lower() if c.isascii() and c.isalnum())
    return slug or None


def meter_name(slug: str) -> str:
    """
    The meter's name for people, the same wherever HA shows it (the MQTT
    device, our statistics): C{Smart meter 00C094F3DAA462BF}.
    """
    return f"Smart meter {slug.upper()}"


def statistic_id(slug: str, direction: str) -> str:
    """
    C{smartmeter_tx:<slug>_energy_import} (or C{_energy_export}, and with a
    tariff C{_energy_import_cost}, C{_energy_export_compensation}).
    """
    return f"{SOURCE}:{slug}_{(DIRECTIONS.get(direction) or MONEY[direction])[0]}"


def valid_statistic_id(text: str) -> bool:
    """Whether HA takes C{text} as an external statistic's id."""
    return bool(_EXTERNAL_ID.match(text))


def metadata(slug: str, direction: str) -> dict:
    """The C{metadata} of an import: exactly the keys HA's schema has."""
    money = direction in MONEY
    return {"has_mean": False, "has_sum": True,
            "name": f"{meter_name(slug)} {(MONEY if money else DIRECTIONS)[direction][1]}",
            "source": SOURCE, "statistic_id": statistic_id(slug, direction),
            "unit_of_measurement": "JPY" if money else "kWh"}
