"""
Bringing HA's statistics up to date with the meter's record, over one
L{smartmeter_tx.outputs.homeassistant.websocket.HaSession} (anything with its
C{call}): what HA has (its rows, its last hour), then one
C{recorder/import_statistics} per statistic.  Shared by C{smartmeter-history
--ha-url} and the service's importer.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Optional

from smartmeter_tx.model import JST
from smartmeter_tx.outputs.homeassistant import statistics as S

__all__ = ["Imported", "synchronize", "ha_rows"]

#: How far back HA's hourly rows are read: the meter keeps 45 days, so an
#: older row is never rewritten, only continued from.
LOOKBACK = datetime.timedelta(days=46)
#: Where the search for the row before a range starts (monthly rows: one
#: query finds the last row however old it is).
EPOCH = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)


@dataclass
class Imported:
    """What one synchronisation wrote: hours per statistic, the first and last hour."""

    hours: dict = field(default_factory=dict)
    first: Optional[datetime.datetime] = None
    last: Optional[datetime.datetime] = None
    #: the newest hour HA has of the import statistic after this, or C{None}.
    newest: Optional[datetime.datetime] = None

    def add(self, sid: str, rows: list) -> None:
        self.hours[sid] = len(rows)
        if rows:
            self.first = min(self.first or rows[0].start, rows[0].start)
            self.last = max(self.last or rows[-1].start, rows[-1].start)


def _when(value) -> datetime.datetime:
    """A row's start as HA gives it: epoch milliseconds (2023.3 on) or ISO 8601."""
    if isinstance(value, (int, float)):
        return datetime.datetime.fromtimestamp(value / 1000, JST)
    return datetime.datetime.fromisoformat(value).astimezone(JST)


async def ha_rows(session, sid: str, start: datetime.datetime, end: datetime.datetime,
                  period: str = "hour") -> list:
    """
    HA's rows of C{sid} starting in [start, end), oldest first.

    @return: C{[(start, sum)]} with C{sum} a L{Decimal}.
    """
    result = await session.call("recorder/statistics_during_period",
                                start_time=start.isoformat(), end_time=end.isoformat(),
                                statistic_ids=[sid], period=period, types=["sum"])
    rows = (result or {}).get(sid) or []
    return sorted((_when(r["start"]), Decimal(repr(r["sum"]))) for r in rows
                  if r.get("sum") is not None)


async def _base_before(session, sid: str, first: datetime.datetime, known: list) -> Decimal:
    """The C{sum} of HA's row just before C{first}: from C{known}, else any month."""
    before = [total for start, total in known if start < first]
    if before:
        return before[-1]
    months = await ha_rows(session, sid, EPOCH, first, "month")
    return months[-1][1] if months else Decimal(0)


async def synchronize(session, slots: list, slug: str, now: datetime.datetime,
                      rewrite: bool) -> Imported:
    """
    Import the complete hours of C{slots} for meter C{slug}.

    @param rewrite: C{True} (a range asked for: every hour of C{slots} is
        written again, continuing from HA's row before the first); C{False}
        (the service: only the hours after HA's last one, continuing from it).
    @return: what was written.
    @raise HaError: HA refused a command (its code and message).
    """
    done = Imported()
    listed = await session.call("recorder/list_statistic_ids", statistic_type="sum")
    existing = {item.get("statistic_id") for item in listed or ()}
    for direction in ("import", "export"):
        found = S.hours(slots, direction)
        if not found:
            continue  # no sold energy on this meter, or nothing complete yet
        sid = S.statistic_id(slug, direction)
        if sid not in existing:
            # A new statistic: nothing to continue from, nothing to ask.
            rows = S.rows(found)
            await _import(session, slug, direction, rows)
            done.add(sid, rows)
            if direction == "import":
                done.newest = rows[-1].start
            continue
        known = await ha_rows(session, sid, min(found[0].start, now - LOOKBACK),
                              now + S.HOUR)
        if rewrite or not known:
            rows = S.rows(found, await _base_before(session, sid, found[0].start, known))
        else:
            last, total = known[-1]
            rows = S.rows(found, total, after=last)
        await _import(session, slug, direction, rows)
        done.add(sid, rows)
        if direction == "import":
            newest = [start for start, _ in known[-1:]] + [row.start for row in rows[-1:]]
            done.newest = max(newest, default=None)
    return done


async def _import(session, slug: str, direction: str, rows: list) -> None:
    if rows:
        await session.call("recorder/import_statistics", metadata=S.metadata(slug, direction),
                           stats=[row.to_json() for row in rows])
