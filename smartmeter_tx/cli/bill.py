"""
C{smartmeter-history --bill}: the meter's 30-minute record priced under the
household's tariff, one row per billing period, oldest first; the current
one (that of the record's newest slot) partial, with a projection to its
end.  What the bill could not count (a fuel rate not yet in force, a gap
the meter's counter cannot bridge, a period the record starts inside) is
said on stderr, never taken as zero.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
from decimal import Decimal
from typing import Optional

from smartmeter_tx.bill import pricing
from smartmeter_tx.bill.tariff import Tariff
from smartmeter_tx.errors import ArgumentError
from smartmeter_tx.model import JST, SLOT, HistorySlot

__all__ = ["periods_back", "days_for", "bills", "write_bills", "COLUMNS", "MOST_PERIODS"]

#: The CSV columns (JSON has these and, for a partial period, the projection).
COLUMNS = ("start", "end", "partial", "energy_kwh", "gap_kwh", "basic_yen", "energy_yen",
           "adjustments_yen", "sell_kwh", "sell_yen", "total_yen", "projected_total_yen")
#: The meter keeps 45 days: at most two whole periods back with the current one.
MOST_PERIODS = 3


def periods_back(tariff: Tariff, now: datetime.datetime, count: int) -> list:
    """The starts of the C{count} periods up to the one holding C{now}, oldest first."""
    starts = [tariff.period(now)[0]]
    while len(starts) < count:
        starts.insert(0, tariff.period(starts[0] - datetime.timedelta(days=1))[0])
    return starts


def days_for(tariff: Tariff, now: datetime.datetime, count: int,
             most: Optional[int] = None) -> int:
    """
    The days of record (before today) that C{count} periods need.

    @raise ArgumentError: more than the meter keeps (C{most} days, if given).
    """
    oldest = periods_back(tariff, now, count)[0]
    # The day before the oldest period too, to bridge a gap at its start.
    days = (now.date() - oldest.date()).days + 1
    if most is not None and days > most:
        raise ArgumentError(f"--periods {count} reaches back {days} days; the meter keeps "
                            f"{most}: ask for fewer periods")
    return max(days, 1)


def bills(tariff: Tariff, records: list, count: int, modulus: Optional[Decimal] = None,
          now: Optional[datetime.datetime] = None) -> list:
    """
    The bills of the C{count} periods up to that of the record's newest slot.

    @param records: the record as C{kind: history} records (the data log's).
    @return: L{pricing.Bill}s, oldest first (none without a known slot).
    """
    slots = [HistorySlot.from_record(r) for r in records]
    end = pricing.record_end(slots)
    if end is None:
        return []
    energies = pricing.slot_energies(slots, modulus)
    newest = (end - SLOT).astimezone(JST) if now is None else now
    return [pricing.bill_for(tariff, energies, start, end)
            for start in periods_back(tariff, newest, count)]


def notes(bill: pricing.Bill) -> list:
    """What the bill of a period could not count, one line each."""
    out = []
    day = f"{bill.start:%Y-%m-%d}"
    if bill.incomplete:
        out.append(f"the period from {day}: the meter's record starts after it does; its first "
                   "hours are not in the bill")
    for name in bill.missing_adjustments:
        out.append(f"the period from {day}: no '{name}' rate in force in the tariff for "
                   f"{bill.start:%Y-%m}; billed without it")
    if bill.unknown_gaps:
        out.append(f"the period from {day}: {bill.unknown_gaps} gap(s) in the record the "
                   "meter's counter cannot bridge (it wrapped and its digits are unknown); "
                   "their energy is not in the bill")
    return out


def write_bills(found: list, fmt: str, stdout, stderr, program: str) -> None:
    """The periods as CSV with a header row, or as JSON lines; notes on stderr."""
    if fmt in ("json", "jsonl"):
        stdout.write("".join(json.dumps(b.to_json(), sort_keys=True) + "\n" for b in found))
    else:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        for b in found:
            row = b.to_json()
            row["partial"] = "yes" if b.partial else "no"
            writer.writerow(["" if row.get(c) is None else row[c] for c in COLUMNS])
        stdout.write(out.getvalue())
    stdout.flush()
    for b in found:
        for line in notes(b):
            stderr.write(f"{program}: {line}\n")
    stderr.flush()
