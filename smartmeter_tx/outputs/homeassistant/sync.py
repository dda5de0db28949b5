"""
Bringing HA's statistics up to date with the meter's record, over one
L{smartmeter_tx.outputs.homeassistant.websocket.HaSession} (anything with its
C{call} and C{clock}): what HA has (its rows, its last hour), then one
C{recorder/import_statistics} per statistic, and a wait until HA's recorder
has written them.  Shared by C{smartmeter-history --ha-url} and the
service's importer.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple, Optional

from twisted.internet import task

from smartmeter_tx.bill.tariff import Tariff
from smartmeter_tx.model import JST
from smartmeter_tx.outputs.homeassistant import statistics as S
from smartmeter_tx.outputs.homeassistant.websocket import HaError, HaUnreachable

__all__ = ["Imported", "HaRow", "HaNotRecorded", "HaBadAnswer", "synchronize", "ha_rows",
           "sum_before", "last_row", "statistic_ids", "recorded"]

#: How far back HA's hourly rows are read: the meter keeps 45 days, so an
#: older row is never rewritten, only continued from.
LOOKBACK = datetime.timedelta(days=46)
#: Longer than any month: HA's hourly rows in this window before an instant,
#: and its month rows that end before the window, hold the last row before it.
MONTH = datetime.timedelta(days=32)
#: Where the search for the row before a range ends (HA's month rows start
#: at the first month it has, however old).
EPOCH = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
#: How long HA's recorder may take to write what HA accepted.
RECORD_WITHIN = 10.0
#: Hours in one import message.
IMPORT_CHUNK = 2000


class HaNotRecorded(HaUnreachable):
    """HA accepted an import but its recorder had not written it in time."""


class HaBadAnswer(HaError):
    """HA answered a command with something of a shape it never sends."""

    def __init__(self, command: str, what: str) -> None:
        super().__init__("unexpected_answer", f"{command} answered with {what}")


class HaRow(NamedTuple):
    """One row of HA's answer: the period's start and end (JST) and its C{sum}."""

    start: datetime.datetime
    end: datetime.datetime
    sum: Decimal


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


def _when(value: object) -> datetime.datetime:
    """
    A row's start as HA gives it: epoch milliseconds (2023.3 on) or ISO 8601.

    @raise ValueError: neither.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.datetime.fromtimestamp(value / 1000, JST)
    if isinstance(value, str):
        return datetime.datetime.fromisoformat(value).astimezone(JST)
    raise ValueError(f"not a time: {value!r}")


def _rows_of(result: object, sid: str) -> list:
    """
    The rows of C{sid} in a C{statistics_during_period} answer.

    @raise HaBadAnswer: the answer is not HA's shape (an object of lists of
        rows, each with a time and a numeric or null C{sum}).
    """
    command = "recorder/statistics_during_period"
    if result is None:
        return []
    if not isinstance(result, dict) or not isinstance(result.get(sid, []), list):
        raise HaBadAnswer(command, f"a {type(result).__name__}, not rows by statistic")
    rows = []
    for raw in result.get(sid, []):
        total = raw.get("sum") if isinstance(raw, dict) else None
        if not isinstance(raw, dict) or (total is not None and (
                isinstance(total, bool) or not isinstance(total, (int, float)))):
            raise HaBadAnswer(command, f"a row {str(raw)[:60]!r}")
        if total is None:
            continue
        try:
            rows.append(HaRow(_when(raw.get("start")), _when(raw.get("end")),
                              Decimal(repr(total))))
        except (ValueError, OverflowError, OSError):
            raise HaBadAnswer(command, f"a row without a time: {str(raw)[:60]!r}") from None
    return sorted(rows)


async def ha_rows(session, sid: str, start: datetime.datetime, end: datetime.datetime,
                  period: str = "hour") -> list:
    """
    HA's rows of C{sid} for C{period}, as HA selects them: hours that start
    in [start, end); months (in HA's time zone) from the one holding
    C{start} to the one holding C{end}, each with the sum at the end of what
    HA holds in it, even past C{end}.

    @return: L{HaRow}s, oldest first.
    """
    result = await session.call("recorder/statistics_during_period",
                                start_time=start.isoformat(), end_time=end.isoformat(),
                                statistic_ids=[sid], period=period, types=["sum"])
    return _rows_of(result, sid)


async def sum_before(session, sid: str, first: datetime.datetime) -> Decimal:
    """
    The C{sum} of HA's last hourly row of C{sid} that starts before C{first},
    however old; 0 when HA has none.

    A month row's C{sum} is that of the month's last hour, so only months
    that end by C{first} tell a sum before it; the hours of the month that
    holds C{first} are asked for directly.  Nothing older than that month is
    read hour by hour.
    """
    recent = await ha_rows(session, sid, first - MONTH, first)
    if recent:
        return recent[-1].sum
    months = [row for row in await ha_rows(session, sid, EPOCH, first, "month")
              if row.end <= first]
    return months[-1].sum if months else Decimal(0)


async def last_row(session, sid: str, before: datetime.datetime) -> Optional[HaRow]:
    """
    HA's newest hourly row of C{sid} that starts before C{before}, however
    old; C{None} when HA has none.  The last month is read hour by hour; an
    older one only when that month has no row (the newest month that has
    one is then read hour by hour).
    """
    recent = await ha_rows(session, sid, before - MONTH, before)
    if recent:
        return recent[-1]
    months = await ha_rows(session, sid, EPOCH, before, "month")
    if not months:
        return None
    hours = await ha_rows(session, sid, months[-1].start, min(months[-1].end, before))
    return hours[-1] if hours else None


async def statistic_ids(session) -> set:
    """
    The ids of HA's statistics that have a sum.

    @raise HaBadAnswer: the answer is not a list of statistics.
    """
    listed = await session.call("recorder/list_statistic_ids", statistic_type="sum")
    if listed is None:
        return set()
    if not isinstance(listed, list) or not all(isinstance(item, dict) for item in listed):
        raise HaBadAnswer("recorder/list_statistic_ids", f"a {type(listed).__name__}, not a "
                          "list of statistics")
    return {item.get("statistic_id") for item in listed}


async def recorded(session, sid: str, rows: list, within: Optional[float] = None) -> None:
    """
    Wait until HA shows C{rows} of C{sid} as we wrote them.  HA answers an
    import once its recorder has it queued and writes it a moment later; a
    range read in between would still show the sums from before.  (Rows
    written again with the values they had match at once: nothing to wait
    for, since nothing changes.)

    @param rows: the L{S.Row}s written, oldest first.
    @param within: seconds (default L{RECORD_WITHIN}).
    @raise HaNotRecorded: not written within C{within} seconds.
    """
    within = RECORD_WITHIN if within is None else within
    clock = session.clock
    deadline = clock.seconds() + within
    wanted = {row.start: float(row.sum) for row in rows}
    delay = 0.05
    while True:
        shown = await ha_rows(session, sid, rows[0].start, rows[-1].start + S.HOUR)
        found = {row.start: float(row.sum) for row in shown if row.start in wanted}
        if found == wanted:
            return
        if clock.seconds() >= deadline:
            raise HaNotRecorded(f"Home Assistant accepted the import but had not recorded "
                                f"it after {within:g} s (is its recorder busy?)")
        await task.deferLater(clock, delay, lambda: None)
        delay = min(delay * 2, 1.0)


async def synchronize(session, slots: list, slug: str, now: datetime.datetime,
                      rewrite: bool, tariff: Optional[Tariff] = None,
                      priced: Optional[list] = None,
                      modulus: Optional[Decimal] = None) -> Imported:
    """
    Import the complete hours of C{slots} for meter C{slug}, and wait until
    HA has recorded them.

    @param rewrite: C{True} (a range asked for: every hour of C{slots} is
        written again, continuing from HA's row before the first, so a range
        written again is written as it was); C{False} (the service: only the
        hours after HA's last one, continuing from it).
    @param tariff: with one, the cost and compensation too, priced from
        C{priced} (slots from the start of their periods; default C{slots}),
        a wrap inside a gap bridged with C{modulus} (kWh) if known.
    @return: what was written.
    @raise HaError: HA refused a command (its code and message).
    @raise HaUnreachable: the connection ended, or HA did not record the
        import in time (L{HaNotRecorded}).
    """
    done = Imported()
    existing = await statistic_ids(session)
    written = []
    series = [(direction, S.hours(slots, direction)) for direction in ("import", "export")]
    if tariff is not None:
        series += [(kind, S.money_hours(slots if priced is None else priced, tariff, kind,
                                        modulus=modulus)) for kind in S.MONEY]
    for direction, found in series:
        if not found:
            continue  # no sold energy on this meter, or nothing complete yet
        sid = S.statistic_id(slug, direction)
        known = []
        if sid not in existing:
            # A new statistic: nothing to continue from, nothing to ask.
            rows = S.rows(found)
        else:
            known = await ha_rows(session, sid, min(found[0].start, now - LOOKBACK),
                                  now + S.HOUR)
            if rewrite or not known:
                rows = S.rows(found, await _base(session, sid, found[0].start, known))
            else:
                rows = S.rows(found, known[-1].sum, after=known[-1].start)
        # Years of a data log are tens of thousands of hours: imports of a
        # size HA's websocket takes (it refuses messages over a few MB).
        for k in range(0, len(rows), IMPORT_CHUNK):
            await session.call("recorder/import_statistics",
                               metadata=S.metadata(slug, direction),
                               stats=[row.to_json() for row in rows[k:k + IMPORT_CHUNK]])
        if rows:
            written.append((sid, rows))
        done.add(sid, rows)
        if direction == "import":
            newest = [row.start for row in known[-1:]] + [row.start for row in rows[-1:]]
            done.newest = max(newest, default=None)
    for sid, rows in written:
        await recorded(session, sid, rows)
    return done


async def _base(session, sid: str, first: datetime.datetime, known: list) -> Decimal:
    """The sum before C{first}: from C{known} (every row up to now) if it has one, else asked."""
    before = [row for row in known if row.start < first]
    return before[-1].sum if before else await sum_before(session, sid, first)
