"""
The service's Home Assistant importer: keeps HA's long-term statistics up to
date with the data log's 30-minute record.

At start, after each new slot the backfill logs, and after HA was away, it
asks HA for the last hour it has and imports the complete hours after it
(L{smartmeter_tx.outputs.homeassistant.sync}, C{rewrite=False}): so nothing
is lost while HA is down, and nothing is written twice.  HA away: a warning,
then tries with backoff, at least once a minute.  A refused token before
any success ends the service (78); an error HA answers to a command is
logged with its code and message, and tried again only with the next slot.
"""

from __future__ import annotations

import datetime
import random
import time
from typing import Callable, Optional

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from smartmeter_tx.model import JST
from smartmeter_tx.outputs.homeassistant import statistics as S
from smartmeter_tx.outputs.homeassistant import sync
from smartmeter_tx.outputs.homeassistant import websocket as W
from smartmeter_tx.service.backoff import Backoff
from smartmeter_tx.service.interfaces import Figure, IMetricsSource, IRecordReceiver
from smartmeter_tx.service.view import ServiceView

__all__ = ["HaImporter"]


@implementer(IRecordReceiver, IMetricsSource)
class HaImporter(service.Service):
    """
    @ivar hours_imported: hours written to HA (the import statistic) since start.
    @ivar last_hour: the newest hour HA has of the import statistic (JST), or C{None}.
    @ivar connected: whether a session with HA is open and authenticated.
    """

    log = Logger()

    #: How far back the record is read for HA: what the meter itself keeps.
    WINDOW = datetime.timedelta(days=46)

    def __init__(self, url: str, token: str, view: ServiceView, reactor,
                 on_fatal: Callable[[str], None], wall_clock: Optional[Callable] = None,
                 connect: Callable = W.connect, rng: Optional[random.Random] = None,
                 clock=None) -> None:
        """
        @param reactor: what the websocket connects with.
        @param clock: what retries wait on (default the reactor).
        """
        self.url = url
        self._token = token
        self.view = view
        self.reactor = reactor
        self.clock = clock or reactor
        self.on_fatal = on_fatal
        # Records are dated by the wall clock, whatever the reactor runs on.
        self.wall_clock = wall_clock or time.time
        self._connect = connect
        self.backoff = Backoff(2.0, 40.0, rng or random.Random())  # jitter keeps it < 60 s
        self._idle: list = []
        self.session: Optional[W.HaSession] = None
        self.connected = False
        self.hours_imported = 0
        self.last_hour: Optional[datetime.datetime] = None
        self._authenticated_once = False
        self._running = False
        self._again = False
        self._retry = None
        self._soon = None
        self._away_since: Optional[float] = None

    def __repr__(self) -> str:  # never the token
        return f"<HaImporter {self.url}>"

    # -- the service ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.kick()

    def stopService(self):
        super().stopService()
        for call in (self._retry, self._soon):
            if call is not None and call.active():
                call.cancel()
        self._retry = self._soon = None
        if self.session is not None:
            return self.session.close_and_wait(self.reactor)
        return None

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
            Figure("smartmeter_ha_connected", "gauge", "1 while connected to Home Assistant",
                   1 if self.connected else 0),
        ]

    # -- one synchronisation ----------------------------------------------------

    async def _sync(self) -> None:
        link = self.view.link
        slug = S.slug_for(link.mac if link is not None else None)
        backfill = self.view.backfill
        if slug is None or backfill is None:
            return  # the meter is not known yet: its first slot kicks again
        if self.session is None and not await self._open():
            return
        now = datetime.datetime.fromtimestamp(self.wall_clock(), JST)
        try:
            done = await sync.synchronize(self.session, backfill.between(now - self.WINDOW, now),
                                          slug, now, rewrite=False)
        except W.HaError as e:
            # Not a connection problem: again with the next slot, not at once.
            self.log.error("Home Assistant refused the import: {code}: {why}",
                           code=e.code, why=e.message)
            return
        except W.HaUnreachable as e:
            self._lost(str(e))
            return
        self.hours_imported += done.hours.get(S.statistic_id(slug, "import"), 0)
        if done.newest is not None:
            self.last_hour = done.newest
        if done.last is not None:
            self.log.info("imported {n} hours into Home Assistant, up to {last:%Y-%m-%d %H:%M} "
                          "JST", n=sum(done.hours.values()), last=done.last)

    async def _open(self) -> bool:
        """Connect and authenticate; on failure, say so and schedule a retry."""
        try:
            session = await self._connect(self.reactor, self.url, self._token)
        except W.HaAuthError as e:
            if not self._authenticated_once:
                self.on_fatal(str(e))
                return False
            self._lost(str(e))
            return False
        except W.HaUnreachable as e:
            self._lost(str(e))
            return False
        self.session = session
        self.connected = True
        self._authenticated_once = True
        self.backoff.reset()
        if self._away_since is not None:
            self.log.warn("Home Assistant is back after {s:.0f} s; refilling its statistics",
                          s=self.wall_clock() - self._away_since)
            self._away_since = None
        session.lost.addCallback(lambda _: self._closed(session))
        return True

    def _closed(self, session) -> None:
        if self.session is session:
            self.session = None
            self.connected = False
            if self.running:
                self._lost("the connection to Home Assistant ended")

    def _lost(self, why: str) -> None:
        """HA away: one warning an outage, then tries with backoff."""
        if self.session is not None:
            self.session.close()
        self.session = None
        self.connected = False
        if self._away_since is None:
            self._away_since = self.wall_clock()
            self.log.warn("{why}; trying again, at least once a minute, and refilling then",
                          why=why)
        if self._retry is None or not self._retry.active():
            self._retry = self.clock.callLater(self.backoff.next_delay(), self.kick)
