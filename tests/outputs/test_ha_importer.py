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

from smartmeter_tx.model import JST
from smartmeter_tx.outputs.homeassistant import statistics as S
from smartmeter_tx.outputs.homeassistant import sync
from smartmeter_tx.outputs.homeassistant.importer import HaImporter
from smartmeter_tx.service.backfill import Backfill
from smartmeter_tx.service.store import LatestStore
from smartmeter_tx.service.view import ServiceView
from smartmeter_tx.session.linkstate import LinkState
from smartmeter_tx.session.state import MeterLink
from smartmeter_tx.service.interfaces import figures as figures_of
from tests.mosquitto import wait_for
from tests.hafake import FakeHomeAssistant
from tests.outputs.test_ha_sync import coroutine, listen_plain_http
from tests.outputs.test_ha_statistics import T0, slots

TOKEN = "importer-admin-token"
MAC = "00C094F3DAA462BF"
SID = S.statistic_id(S.slug_for(MAC), "import")
NOW = (T0 + datetime.timedelta(days=1, hours=1)).timestamp()


class _Importer:
    """An importer against the strict fake, its retries on a Clock."""

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


class ImporterTests(_Importer, TestCase):
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
        figures = figures_of([importer])
        self.assertEqual(figures, {"smartmeter_ha_hours_imported_total": 13,
                                   "smartmeter_ha_last_hour_timestamp_seconds":
                                       (T0 + datetime.timedelta(hours=12)).timestamp(),
                                   "smartmeter_ha_connected": 1})
        self.assertEqual(len(self.ha.imports), 4)  # import and export, twice: nothing resent
        # The log counts hours as the figures do, not once per statistic.
        self.assertEqual(self.texts("imported"), [
            "imported 10 hours of energy bought and sold into Home Assistant, up to 2026-12-01 "
            "09:00 JST",
            "imported 3 hours of energy bought and sold into Home Assistant, up to 2026-12-01 "
            "12:00 JST"])

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
        self.add_slots(48)
        self.ha.drop_imports = True  # the connection ends in the middle of the next sync
        importer.kick()
        await importer.idle()
        self.assertFalse(importer.connected)
        self.ha.drop_imports = False
        self.clock.advance(60)
        await importer.idle()
        self.assertTrue(importer.connected)
        self.assertEqual([total for _, total in self.ha.sums(SID)],
                         [float(k) for k in range(1, 25)])

    @coroutine
    async def test_restsBetweenSlots(self):
        """
        Once HA has what there is, the session is closed until the next
        slot (a session left open is pinged every minute): no timer, no
        connection, and HA still counts as taking our imports.
        """
        importer = self.importer()
        await importer.idle()
        self.assertIsNone(importer.session)
        self.assertTrue(importer.connected)
        await wait_until(lambda: not any(p.transport.connected for p in self.ha.protocols))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        logins = len([m for m in self.ha.received if m.get("type") == "auth"])
        self.add_slots(48)
        importer.kick()
        await importer.idle()
        self.assertEqual(len([m for m in self.ha.received if m.get("type") == "auth"]),
                         logins + 1)
        self.assertEqual(len(self.ha.sums(SID)), 24)
        self.assertIsNone(importer.session)

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
    async def test_httpsAgainstPlainHttp(self):
        """
        https:// for an HA that speaks plain HTTP, at start: no retry can
        cure it, so the service ends (on_fatal), in one line saying use http://.
        """
        port = listen_plain_http(self)
        self.url = f"https://127.0.0.1:{port}"
        importer = self.importer()
        await importer.idle()
        self.assertEqual(self.fatal, [f"cannot reach Home Assistant at {self.url}: port {port} "
                                      "does not speak TLS; for a plain port use http://"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @coroutine
    async def test_wrongSchemeAfterASuccess(self):
        """Once HA has taken the token, the same error is HA away: retried, never fatal."""
        importer = self.importer()
        await importer.idle()
        self.assertTrue(importer.connected)
        answered = []
        importer.link.url = f"https://127.0.0.1:{listen_plain_http(self, answered)}"
        importer.kick()  # the next slot
        await importer.idle()
        await wait_until(lambda: not importer.connected)
        self.clock.advance(60)
        await importer.idle()
        self.assertEqual(answered, [b"\x16"] * 2)  # each try's TLS hello, answered in plain HTTP
        self.assertEqual(self.fatal, [])
        self.assertFalse(importer.connected)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

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


class FaultTests(_Importer, TestCase):
    """HA faults of the second campaign, each once seen stuck or silent."""

    @coroutine
    async def test_stalledHomeAssistant(self):
        """
        HA takes the token, then answers nothing: the command's deadline drops
        the session, one warning, ha_connected 0, a retry within a minute.
        """
        from smartmeter_tx.outputs.homeassistant import websocket as W
        self.patch(W.HaSession, "COMMAND_WITHIN", 0.3)
        self.ha.stall = True
        importer = self.importer()
        await importer.idle()
        self.assertFalse(importer.connected)
        self.assertEqual(figures_of([importer])[
            "smartmeter_ha_connected"], 0)
        self.assertEqual(len(self.texts("did not answer")), 1, self.texts("did not answer"))
        delays = [c.getTime() - self.clock.seconds() for c in self.clock.getDelayedCalls()]
        self.assertEqual(len(delays), 1)
        self.assertLess(delays[0], 60)
        self.ha.stall = False
        self.clock.advance(60)
        await importer.idle()
        self.assertEqual(len(self.ha.sums(SID)), 10)
        self.assertEqual(len(self.texts("is back")), 1)

    @coroutine
    async def test_hungHomeAssistantSeenByMonitor(self):
        """
        After a hung HA's session was dropped, a new record waits for the
        backoff instead of logging in at once, and a login during the outage
        is not "connected": ha_connected stays 0 until an import succeeded.
        """
        from smartmeter_tx.outputs.homeassistant import websocket as W
        self.patch(W.HaSession, "COMMAND_WITHIN", 0.3)
        self.ha.stall = True
        importer = self.importer()
        await importer.idle()
        logins = lambda: len([m for m in self.ha.received if m.get("type") == "auth"])
        self.assertEqual((logins(), importer.connected), (1, False))
        self.add_slots(30)
        importer.kick()
        await importer.idle()
        self.assertEqual(logins(), 1)  # the new slots wait for the backoff
        [call] = self.clock.getDelayedCalls()
        self.clock.advance(call.getTime() - self.clock.seconds())
        await wait_for(lambda: logins() == 2, "the retry's login")
        self.assertFalse(importer.connected)  # logged in, but HA hangs again
        await importer.idle()
        self.ha.stall = False
        [call] = self.clock.getDelayedCalls()
        self.clock.advance(call.getTime() - self.clock.seconds())
        await importer.idle()
        self.assertTrue(importer.connected)
        self.assertEqual(len(self.ha.sums(SID)), 15)

    @coroutine
    async def test_stopIsNoOutage(self):
        """Stopping the service closes the session without an outage's warning or a retry."""
        importer = self.importer()
        await importer.idle()
        self.assertTrue(importer.connected)
        await importer.stopService()
        self.assertEqual(self.texts("trying again"), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @coroutine
    async def test_dropsEveryImport(self):
        """
        HA logs us in and drops every import: no reconnect storm (the backoff
        is reset only after a whole sync), one warning for the outage.
        """
        self.ha.drop_imports = True
        importer = self.importer()
        await importer.idle()
        delays = []
        for _ in range(6):
            [call] = self.clock.getDelayedCalls()
            delays.append(call.getTime() - self.clock.seconds())
            self.clock.advance(delays[-1])
            await importer.idle()
        self.assertEqual(len(self.texts("trying again")), 1, self.texts("trying again"))
        self.assertGreater(delays[-1], delays[0] * 4, delays)  # growing, not reset at login
        self.assertTrue(all(d < 60 for d in delays), delays)
        self.ha.drop_imports = False
        [call] = self.clock.getDelayedCalls()
        self.clock.advance(call.getTime() - self.clock.seconds())
        await importer.idle()
        self.assertEqual(len(self.ha.sums(SID)), 10)
        self.assertEqual(len(self.texts("is back")), 1)

    @coroutine
    async def test_unexpectedShapeOneLine(self):
        """An answer of a shape HA never sends: one error line (not at every kick), no traceback."""
        self.ha.shape = {"a dict": "where a list is due"}
        importer = self.importer()
        await importer.idle()
        for _ in range(3):
            importer.kick()
            await importer.idle()
        said = self.texts("unexpected_answer")
        self.assertEqual(len(said), 1, said)
        self.assertIn("recorder/list_statistic_ids answered with a dict", said[0])
        self.assertEqual([e for e in self.logged if e.get("log_failure")], [])

    @coroutine
    async def test_tokenGoneWhileResting(self):
        """
        The token file emptied between two slots: HA no longer takes our
        imports, and the gauge says so (the rested session is no proof).
        """
        tokens = [TOKEN]
        importer = self.importer(token=lambda: tokens[0])
        await importer.idle()
        self.assertTrue(importer.connected)
        tokens[0] = ""
        self.add_slots(48)
        importer.kick()
        await importer.idle()
        self.assertFalse(importer.connected)
        self.assertEqual(len(self.texts("no Home Assistant access token")), 1)

    @coroutine
    async def test_stopWhileConnecting(self):
        """
        The service stops while a slot's connection is being made: the stop
        waits for it and closes it; nothing is left open.
        """
        importer = self.importer()
        await importer.idle()
        await wait_until(lambda: not any(p.transport.connected for p in self.ha.protocols))
        self.add_slots(48)
        importer.kick()  # the next slot: a connection is being made
        stopped = importer.stopService()
        self.assertIsNotNone(stopped)
        await stopped
        await importer.idle()
        await wait_until(lambda: not any(p.transport.connected for p in self.ha.protocols))
        self.assertIsNone(importer.session)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @coroutine
    async def test_tokenReplaced(self):
        """
        A token revoked while running: one error line, no login storm; the
        token file replaced with a new one is used with the next record.
        """
        tokens = [TOKEN]
        importer = self.importer(token=lambda: tokens[0])
        await importer.idle()
        self.assertTrue(importer.connected)
        del self.ha.tokens[TOKEN]
        logins = len([m for m in self.ha.received if m.get("type") == "auth"])
        importer.kick()  # the next slot: refused
        await importer.idle()
        await wait_until(lambda: not importer.connected)
        for _ in range(10):  # well past the backoff: a look every 5 min, no login
            self.clock.advance(300)
            await importer.idle()
        refused = self.texts("refused the access token")
        self.assertEqual(len(refused), 1, refused)
        self.assertEqual([e["log_level"].name for e in self.logged
                          if "refused the access token" in formatEvent(e)], ["error"])
        self.assertLessEqual(len([m for m in self.ha.received if m.get("type") == "auth"]),
                             logins + 1)
        self.assertEqual(self.fatal, [])
        self.ha.tokens["new-token"] = True
        tokens[0] = "new-token"
        self.add_slots(48)
        importer.kick()  # a new record: the new token is used at once, not at the next look
        await importer.idle()
        self.assertTrue(importer.connected)
        self.assertEqual(len(self.ha.sums(SID)), 24)
        self.assertEqual(len(self.texts("took the access token")), 1)


async def wait_until(predicate, seconds: float = 5.0) -> None:
    """Wait on the reactor for C{predicate}, C{seconds} at most (a hang catcher)."""
    from tests.mosquitto import wait_for
    await wait_for(predicate, "the importer", seconds, 0.02)


class LongAwayTests(TestCase):
    """HA away longer than the backfill's window, or its clock far from the meter's."""

    timeout = 30  # only catches a hang
    DAY = datetime.timedelta(days=1)

    def setUp(self):
        self.ha = FakeHomeAssistant({TOKEN: True})
        port = self.ha.listen(reactor)
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}"
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    async def seed(self, first_day: datetime.datetime, days: int) -> None:
        """What HA had before it went away: C{days} days of hours from C{first_day}."""
        from smartmeter_tx.outputs.homeassistant import websocket as W
        session = await W.connect(reactor, self.url, TOKEN)
        await sync.synchronize(session, slots([Decimal("0.5")] * (48 * days), start=first_day),
                               S.slug_for(MAC), first_day + days * self.DAY, rewrite=True)
        await session.close_and_wait(reactor)

    def importer(self, logged: list, held: list, now: datetime.datetime) -> tuple:
        """An importer whose backfill holds C{held} and whose data log has C{logged}."""
        backfill = Backfill(7, Clock(), lambda r, w: None, now.timestamp,
                            known=[s.to_record() for s in held],
                            read_log=lambda day: [s.to_record() for s in logged
                                                  if s.start.date() >= day])
        view = ServiceView(LatestStore(), LinkState(), Clock(), backfill,
                           link=MeterLink(mac=MAC))
        importer = HaImporter(self.url, TOKEN, view, reactor, self.fail,
                              wall_clock=now.timestamp, clock=Clock())
        importer.startService()
        self.addCleanup(importer.stopService)
        return importer, backfill

    def texts(self, word):
        return [formatEvent(e) for e in self.logged if word in formatEvent(e)]

    @coroutine
    async def test_refillFromTheDataLog(self):
        """
        HA's last hour is 30 days old, the backfill holds the last day: the
        hours in between come from the data log's files, each once, the sum
        continuing; what the log lacks is asked of the meter.
        """
        now = T0
        await self.seed(now - 31 * self.DAY, 1)
        logged = (slots([Decimal("0.5")] * (48 * 10), start=now - 30 * self.DAY)
                  + slots([Decimal("0.5")] * (48 * 15), start=now - 15 * self.DAY))
        held = slots([Decimal("0.5")] * 48, start=now - self.DAY)
        importer, backfill = self.importer(logged, held, now)
        await importer.idle()
        sums = [total for _, total in self.ha.sums(SID)]
        self.assertEqual(len(sums), 24 * 26)  # the seed's day and the 25 days logged
        self.assertEqual(sums, [float(k) for k in range(1, len(sums) + 1)])
        # Days 20 to 15 before now: not in the log, asked of the meter once.
        said = self.texts("asking the meter for")
        self.assertEqual(len(said), 1, said)
        due = backfill.due(now.replace(tzinfo=None))
        self.assertEqual(due[0], (now - 20 * self.DAY).replace(tzinfo=None))
        self.assertEqual(len([t for t in due if t < (now - 7 * self.DAY).replace(tzinfo=None)]),
                         5 * 48)

    @coroutine
    async def test_beyondTheMeterSaidOnce(self):
        """Hours older than the meter keeps and not in the log: one warning naming them."""
        now = T0
        await self.seed(now - 61 * self.DAY, 1)
        logged = slots([Decimal("0.5")] * (48 * 40), start=now - 40 * self.DAY)
        importer, backfill = self.importer(logged, logged[-48:], now)
        await importer.idle()
        importer.kick()
        await importer.idle()
        said = self.texts("neither the data log nor the meter")
        self.assertEqual(len(said), 1, said)
        start = (now - 60 * self.DAY).astimezone(JST)
        self.assertIn(f"from {start:%Y-%m-%d %H:%M}", said[0])
        self.assertEqual(len(self.ha.sums(SID)), 24 * 41)

    @coroutine
    async def test_meterClockFarAhead(self):
        """
        The meter's clock 18 months ahead of the host's: its hours still reach
        HA, dated by the meter.
        """
        meter_day = T0 + 540 * self.DAY
        held = slots([Decimal("0.5")] * 48, start=meter_day)
        importer, _ = self.importer(held, held, T0)
        await importer.idle()
        rows = self.ha.sums(SID)
        self.assertEqual(len(rows), 24)
        self.assertEqual(rows[0][0], meter_day)
