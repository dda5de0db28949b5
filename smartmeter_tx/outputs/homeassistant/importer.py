"""
The service's Home Assistant importer: keeps HA's long-term statistics up to
date with the meter's 30-minute record.

At start, after each new slot the data log takes, and after HA was away, it
asks HA for the last hour it has and imports the complete hours after it
(L{smartmeter_tx.outputs.homeassistant.sync}, C{rewrite=False}), however
long HA was away: from the backfill's slots, the data log's files, and
what the meter still keeps (L{smartmeter_tx.outputs.homeassistant.refill}).
So nothing is lost while HA is down, and nothing is written twice.  The
connection and its troubles (HA away, a refused token) are
L{smartmeter_tx.outputs.homeassistant.connection}'s.  An error HA answers
to a command, or an answer of a shape HA never sends, is logged in one line
(once until it changes) and tried again only with the next slot.
"""

from __future__ import annotations

import datetime
import random
import time
from typing import Any, Callable, Optional, Union

from twisted.application import service
from twisted.internet import defer, threads
from twisted.logger import Logger
from zope.interface import implementer

from smartmeter_tx.bill.tariff import Tariff
from smartmeter_tx.model import JST
from smartmeter_tx.outputs.homeassistant import refill
from smartmeter_tx.outputs.homeassistant import statistics as S
from smartmeter_tx.outputs.homeassistant import sync
from smartmeter_tx.outputs.homeassistant import websocket as W
from smartmeter_tx.outputs.homeassistant.connection import HaConnection
from smartmeter_tx.service.interfaces import Figure, IMetricsSource, IRecordReceiver
from smartmeter_tx.service.view import ServiceView

__all__ = ["HaImporter"]


@implementer(IRecordReceiver, IMetricsSource)
class HaImporter(service.Service):
    """
    @ivar hours_imported: hours written to HA (the import statistic) since start.
    @ivar last_hour: the newest hour HA has of the import statistic (JST), or C{None}.
    @ivar connected: whether HA takes our imports: the last session took them, no outage on.
    """

    log = Logger()

    #: How far back the record is read for HA: what the meter itself keeps.
    WINDOW = datetime.timedelta(days=46)

    def __init__(self, url: str, token: Union[str, Callable[[], Optional[str]]],
                 view: ServiceView, reactor: Any, on_fatal: Callable[[str], None],
                 wall_clock: Optional[Callable[[], float]] = None,
                 connect: Callable = W.connect, rng: Optional[random.Random] = None,
                 clock: Any = None, tariff: Optional[Tariff] = None) -> None:
        """
        @param token: the access token, or what reads it afresh before each
            connection (the token file, or the environment).
        @param tariff: with one, the cost (and compensation) statistics too.
        @param reactor: what the websocket connects with.
        @param clock: what retries wait on (default the reactor).
        """
        self.url = url
        self.tariff = tariff
        self.view = view
        self.reactor = reactor
        self.clock = clock or reactor
        # Records are dated by the wall clock, whatever the reactor runs on.
        self.wall_clock = wall_clock or time.time
        self.link = HaConnection(url, token, reactor, self.clock, self.kick, on_fatal,
                                 self.wall_clock, connect, rng)
        self._idle: list = []
        self.hours_imported = 0
        self.last_hour: Optional[datetime.datetime] = None
        self._running = False
        self._again = False
        self._soon = None
        self._said: Optional[str] = None  # the last HA error said
        self._reaching: Optional[tuple] = None
        self._said_lost: Optional[tuple] = None

    @property
    def connected(self) -> bool:
        """Whether HA takes our imports (L{HaConnection.connected})."""
        return self.link.connected

    @property
    def session(self) -> Optional[W.HaSession]:
        return self.link.session

    def __repr__(self) -> str:  # never the token
        return f"<HaImporter {self.url}>"

    # -- the service ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.kick()

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self._soon is not None and self._soon.active():
            self._soon.cancel()
        self._soon = None
        return self.link.stop()

    def kick(self) -> None:
        """New slots may complete an hour: bring HA up to date (once, after any running sync)."""
        if not self.running:
            return
        if self._running:
            self._again = True
            return
        self._running = True
        defer.Deferred.fromCoroutine(self._sync()).addErrback(
            lambda f: self.log.failure("Home Assistant import failed", f)).addBoth(self._done)

    def _done(self, _):
        self._running = False
        if self._again and self.running:
            self._again = False
            self.kick()
            return
        if self.running:
            self.link.rest()  # until the next slot: no pings meanwhile
        waiting, self._idle = self._idle, []
        for d in waiting:
            d.callback(None)

    def idle(self) -> defer.Deferred:
        """@return: a Deferred that fires once no synchronisation runs."""
        if not self._running:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._idle.append(d)
        return d

    def recordReceived(self, record: dict, when: float) -> None:
        """
        A logged 30-minute slot may complete an hour: sync once the backfill
        is done with the slots it logs now (the next turn of the reactor).
        """
        if record.get("kind") != "history":
            return
        if self._soon is None or not self._soon.active():
            self._soon = self.reactor.callLater(0, self.kick)

    def metrics(self) -> list:
        """@return: the importer's L{Figure}s, for C{/metrics}."""
        last = None if self.last_hour is None else self.last_hour.timestamp()
        return [
            Figure("smartmeter_ha_hours_imported_total", "counter",
                   "Hours of the meter's record imported into Home Assistant's statistics",
                   self.hours_imported),
            Figure("smartmeter_ha_last_hour_timestamp_seconds", "gauge",
                   "Start of the newest hour Home Assistant has of the meter's record", last),
            Figure("smartmeter_ha_connected", "gauge",
                   "1 while Home Assistant takes our imports (connected, no outage on)",
                   1 if self.connected else 0),
        ]

    # -- one synchronisation ----------------------------------------------------

    async def _sync(self) -> None:
        link = self.view.link
        slug = S.slug_for(link.mac if link is not None else None)
        backfill = self.view.backfill
        if slug is None or backfill is None:
            return  # the meter is not known yet: its first slot kicks again
        if not await self.link.open():
            return
        session = self.session
        assert session is not None  # open() said so
        host_now = datetime.datetime.fromtimestamp(self.wall_clock(), JST)
        try:
            found = await refill.gather(session, refill.every_slot(backfill), slug, host_now,
                                        self._logged_since)
            priced = None
            if self.tariff is not None:
                # The tiers count from each period's start: the backfill holds it.
                held = {slot.start: slot for slot in refill.every_slot(backfill)}
                held.update((slot.start, slot) for slot in found.slots)
                priced = [held[start] for start in sorted(held)]
            done = await sync.synchronize(session, found.slots, slug, found.now,
                                          rewrite=False, tariff=self.tariff, priced=priced,
                                          modulus=link.modulus_kwh if link else None)
        except W.HaError as e:
            # Not a connection problem: again with the next slot, not at once.
            text = f"Home Assistant refused the import: {e.code}: {e.message}"
            if text != self._said:
                self._said = text
                self.log.error("{why}", why=text)
            return
        except W.HaUnreachable as e:
            self.link.lost(str(e))
            return
        self._synced(found, done, slug)

    async def _logged_since(self, since: Optional[datetime.datetime]) -> list:
        """Every logged slot from C{since} on: the data log's files read in a thread."""
        backfill = self.view.backfill
        assert backfill is not None
        day = None if since is None else since.astimezone(JST).date()
        records = await threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), backfill.read_logged, day)
        return backfill.logged_since(since, records)

    def _synced(self, found: refill.Gathered, done: sync.Imported, slug: str) -> None:
        self.link.synced()
        self._said = None
        self.hours_imported += done.hours.get(S.statistic_id(slug, "import"), 0)
        if done.newest is not None:
            self.last_hour = done.newest
        if done.last is not None:
            sold = S.statistic_id(slug, "export") in done.hours
            self.log.info("imported {n} hours of energy bought{sold} into Home Assistant, up "
                          "to {last:%Y-%m-%d %H:%M} JST", last=done.last, sold=" and sold" * sold,
                          n=done.hours.get(S.statistic_id(slug, "import"), 0))
        backfill = self.view.backfill
        if found.reach is not None and found.reach != self._reaching and backfill is not None:
            self._reaching = found.reach
            self.log.info("asking the meter for {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} "
                          "JST, which Home Assistant and the data log lack",
                          since=found.reach[0], until=found.reach[1])
            since, until = found.reach
            backfill.reach_back(since, until, have=[slot.start for slot in found.slots])
        if found.lost is not None and found.lost != self._said_lost:
            self._said_lost = found.lost
            self.log.warn("Home Assistant has no hours from {since:%Y-%m-%d %H:%M} to "
                          "{until:%Y-%m-%d %H:%M} JST, and neither the data log nor the meter "
                          "(which keeps 45 days) holds them: they stay out of its statistics",
                          since=found.lost[0], until=found.lost[1])
