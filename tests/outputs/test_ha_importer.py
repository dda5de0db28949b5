"""
Tests for L{smartmeter_tx.outputs.homeassistant.importer}: the service's
importer against the strict fake of HA (L{tests.hafake}) on loopback, its
retries on a task.Clock: start, HA away and back (nothing lost, nothing
twice), a refused token, an error HA answers, the figures on /metrics.
"""

import datetime
from decimal import Decimal

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from smartmeter_tx.outputs.homeassistant import statistics as S
from smartmeter_tx.outputs.homeassistant.importer import HaImporter
from smartmeter_tx.service.backfill import Backfill
from smartmeter_tx.service.store import LatestStore
from smartmeter_tx.service.view import ServiceView
from smartmeter_tx.session.linkstate import LinkState
from smartmeter_tx.session.state import MeterLink
from tests.hafake import FakeHomeAssistant
from tests.outputs.test_ha_sync import coroutine
from tests.outputs.test_ha_statistics import T0, slots

TOKEN = "importer-admin-token"
MAC = "00C094F3DAA462BF"
SID = S.statistic_id(S.slug_for(MAC), "import")
NOW = (T0 + datetime.timedelta(days=1, hours=1)).timestamp()


class ImporterTests(TestCase):
    timeout = 30  # only catches a hang

    def setUp(self):
        self.ha = FakeHomeAssistant({TOKEN: True, "user-token": False})
        self.port = self.ha.listen(reactor)
        self.addCleanup(self.port.stopListening)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"
        self.record = slots([Decimal("0.5")] * 48)  # one day, two half hours an hour
        self.backfill = Backfill(7, Clock(), lambda r, w: None, lambda: NOW,
                                 known=[s.to_record() for s in self.record[:20]])
        self.view = ServiceView(LatestStore(), LinkState(), Clock(), self.backfill,
                                link=MeterLink(mac=MAC))
        self.clock = Clock()
        self.fatal = []
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def importer(self, token=TOKEN):
        importer = HaImporter(self.url, token, self.view, reactor, self.fatal.append,
                              wall_clock=lambda: NOW, clock=self.clock)
        importer.startService()
        self.addCleanup(importer.stopService)
        return importer

    def add_slots(self, upto):
        for slot in self.record[:upto]:
            self.backfill.slots[slot.start] = slot

    def texts(self, word):
        return [formatEvent(e) for e in self.logged if word in formatEvent(e)]

    @coroutine
    async def test_startAndNewSlots(self):
        """At start the complete hours go in; new slots add only the hours they complete."""
        importer = self.importer()
        await importer.idle()
        self.assertEqual(len(self.ha.sums(SID)), 10)
        self.assertEqual((importer.hours_imported, importer.connected), (10, True))
        self.add_slots(26)
        importer.kick()
        await importer.idle()
        self.assertEqual([total for _, total in self.ha.sums(SID)],
                         [float(k) for k in range(1, 14)])
        self.assertEqual(importer.hours_imported, 13)
        self.assertEqual(importer.last_hour, T0 + datetime.timedelta(hours=12))
        figures = {name: value for name, _, _, value in importer.metrics()}
        self.assertEqual(figures, {"smartmeter_ha_hours_imported_total": 13,
                                   "smartmeter_ha_last_hour_timestamp_seconds":
                                       (T0 + datetime.timedelta(hours=12)).timestamp(),
                                   "smartmeter_ha_connected": 1})
        self.assertEqual(len(self.ha.imports), 4)  # import and export, twice: nothing resent

    @coroutine
    async def test_awayAndBack(self):
        """
        HA away at start: one warning, retries within a minute; the slots
        logged meanwhile all reach HA once it is back, each hour once.
        """
        self.ha.refuse = True
        importer = self.importer()
        await importer.idle()
        self.assertFalse(importer.connected)
        self.assertEqual(len(self.texts("trying again")), 1)
        delays = [c.getTime() - self.clock.seconds() for c in self.clock.getDelayedCalls()]
        self.assertEqual(len(delays), 1)
        self.assertLess(delays[0], 60)
        self.add_slots(48)
        importer.kick()  # a new slot while HA is away: no second warning
        await importer.idle()
        self.assertEqual(len(self.texts("trying again")), 1)
        for _ in range(10):  # the backoff grows, but never past a minute
            self.clock.advance(60)
            await importer.idle()
        self.assertEqual(len(self.texts("trying again")), 1)
        self.ha.refuse = False
        self.clock.advance(60)
        await importer.idle()
        self.assertTrue(importer.connected)
        self.assertEqual([total for _, total in self.ha.sums(SID)],
                         [float(k) for k in range(1, 25)])
        self.assertEqual(len(self.texts("is back")), 1)
        self.assertEqual(self.texts(TOKEN), [])
        self.assertNotIn(TOKEN, repr(importer) + repr(importer.session))

    @coroutine
    async def test_lostMidwayRefills(self):
        """A connection that ends is retried; the hours after HA's last one are refilled."""
        importer = self.importer()
        await importer.idle()
        for proto in list(self.ha.protocols):
            proto.dropConnection(abort=True)
        await importer.session.lost if importer.session else None
        self.assertFalse(importer.connected)
        self.add_slots(48)
        self.clock.advance(60)
        await importer.idle()
        self.assertEqual([total for _, total in self.ha.sums(SID)],
                         [float(k) for k in range(1, 25)])

    @coroutine
    async def test_refusedToken(self):
        """A token HA refuses at start ends the service (on_fatal), without retries."""
        importer = self.importer("not-a-token")
        await importer.idle()
        self.assertEqual(len(self.fatal), 1)
        self.assertIn("refused the access token", self.fatal[0])
        self.assertNotIn("not-a-token", self.fatal[0])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @coroutine
    async def test_resultErrorNoStorm(self):
        """An error HA answers is logged with its code and message, and not retried at once."""
        importer = self.importer("user-token")
        await importer.idle()
        errors = self.texts("refused the import")
        self.assertEqual(errors, ["Home Assistant refused the import: unauthorized: "
                                  "Unauthorized"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        sent = len(self.ha.received)
        await importer.idle()
        self.assertEqual(len(self.ha.received), sent)

    @coroutine
    async def test_recorderStalls(self):
        """
        HA takes the import but does not write it: one warning, the session
        dropped and tried again with backoff; written on a later try.
        """
        from smartmeter_tx.outputs.homeassistant import sync
        self.patch(sync, "RECORD_WITHIN", 0.2)
        self.ha.recorder_lag = None
        importer = self.importer()
        await importer.idle()
        self.assertFalse(importer.connected)
        self.assertEqual(importer.hours_imported, 0)
        warned = self.texts("had not recorded it")
        self.assertEqual(len(warned), 1, warned)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.ha.recorder_lag = 0.0
        self.clock.advance(60)
        await importer.idle()
        self.assertTrue(importer.connected)
        self.assertEqual(len(self.ha.sums(SID)), 10)
