"""
What the service's importer brings to Home Assistant: every complete hour
after HA's last one, however long HA was away.

The backfill holds the slots of its window; when HA's last hour is older
than those (HA restored from an old backup, away for weeks, a new
statistic), the older slots come from the data log's files, as far back as
it goes.  Hours the data log lacks are asked of the meter, which keeps 45
days; older ones cannot be had, and are said once.  Dates are the meter's:
a meter whose clock is far from the host's still has its hours imported.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Awaitable, Callable, Optional

from smartmeter_tx.model import JST, SLOT
from smartmeter_tx.outputs.homeassistant import statistics as S
from smartmeter_tx.outputs.homeassistant import sync

__all__ = ["Gathered", "gather", "every_slot", "METER_KEEPS"]

#: How far back the meter's own record goes.
METER_KEEPS = datetime.timedelta(days=45)
_FAR = datetime.timedelta(days=365 * 100)


@dataclass
class Gathered:
    """
    @ivar slots: the slots to import, from HA's last hour on, oldest first.
    @ivar now: the time the import is made for: the host's, or the newest
        slot's hour end when the meter's clock is ahead of the host's.
    @ivar reach: C{(since, until)} to ask of the meter (the data log lacks
        it and the meter still keeps it), or C{None}.
    @ivar lost: C{(since, until)} that no one holds any more, or C{None}.
    """

    slots: list
    now: datetime.datetime
    reach: Optional[tuple] = None
    lost: Optional[tuple] = None


async def gather(session, held: list, slug: str, host_now: datetime.datetime,
                 logged_since: Callable[[Optional[datetime.datetime]], Awaitable[list]]
                 ) -> Gathered:
    """
    @param held: the slots the backfill holds, oldest first.
    @param logged_since: C{await logged_since(since)} gives every logged
        slot from C{since} on (all for C{None}), oldest first.
    @raise HaError: HA refused a command or answered nonsense.
    @raise HaUnreachable: the session ended.
    """
    now = host_now
    if held and held[-1].start + S.HOUR > now:
        now = held[-1].start + S.HOUR  # the meter's clock is ahead of the host's
    last = await sync.last_row(session, S.statistic_id(slug, "import"), now + S.HOUR)
    since = None if last is None else last.start
    slots = held
    if since is None or not held or since < held[0].start:
        slots = await logged_since(since)
    slots = [slot for slot in slots if since is None or slot.start >= since]
    found = Gathered(slots, now)
    if since is not None:
        _gaps(found, since + S.HOUR, held[0].start if held else now)
    return found


def _gaps(found: Gathered, since: datetime.datetime, until: datetime.datetime) -> None:
    """What of [since, until) no slot covers: ask the meter for it, or say it is gone."""
    have = {slot.start for slot in found.slots}
    missing = [t for t in _slots(since, until) if t not in have]
    if not missing:
        return
    oldest = found.now - METER_KEEPS
    kept = [t for t in missing if t >= oldest]
    gone = [t for t in missing if t < oldest]
    if kept:
        found.reach = (kept[0], kept[-1] + SLOT)
    if gone:
        found.lost = (gone[0], gone[-1] + SLOT)


def _slots(since: datetime.datetime, until: datetime.datetime) -> list:
    """The half-hour starts in [since, until) (aware, JST)."""
    out, t = [], since.astimezone(JST)
    while t < until:
        out.append(t)
        t += SLOT
    return out


def every_slot(backfill) -> list:
    """@return: all the slots C{backfill} holds, oldest first."""
    origin = datetime.datetime(2000, 1, 1, tzinfo=JST)
    return backfill.between(origin, origin + _FAR)

