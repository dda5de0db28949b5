"""
HA's websocket API as our client speaks it (L{websocket}, L{sync}), against
the strict fake of HA 2024.x (L{tests.hafake}) on loopback: the handshake,
refused tokens, imports that HA takes, idempotence, and the fake's own
strictness (it refuses what HA refuses).
"""

import copy
import datetime
import os
from decimal import Decimal

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from smartmeter_tx.outputs.homeassistant import statistics as S
from smartmeter_tx.outputs.homeassistant import sync, websocket as W
from tests.hafake import FakeHomeAssistant
from tests.outputs.test_ha_statistics import slots, T0

TOKEN = "admin-token-0123456789"
NOW = T0 + datetime.timedelta(days=2)
SLUG = "00c094f3daa462bf"
SID = S.statistic_id(SLUG, "import")


class _HaBase:
    timeout = 30  # only catches a hang

    def setUp(self):
        self.ha = FakeHomeAssistant({TOKEN: True, "user-token": False})
        port = self.ha.listen(reactor)
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}"

    async def session(self, token=TOKEN):
        session = await W.connect(reactor, self.url, token)
        self.addCleanup(self.close, session)
        return session

    def close(self, session):
        session.close()
        return session.lost


def coroutine(f):
    def wrapper(self):
        return defer.Deferred.fromCoroutine(f(self))
    wrapper.__name__, wrapper.__doc__ = f.__name__, f.__doc__
    return wrapper


class HandshakeTests(_HaBase, TestCase):
    @coroutine
    async def test_authOk(self):
        """auth_required, our auth with the token, auth_ok; then ids increase from 1."""
        session = await self.session()
        self.assertEqual(session.version, "2024.3.3")
        await session.call("recorder/list_statistic_ids")
        await session.call("recorder/list_statistic_ids")
        self.assertEqual(self.ha.received[0], {"type": "auth", "access_token": TOKEN})
        self.assertEqual([m["id"] for m in self.ha.received[1:]], [1, 2])
        self.assertNotIn(TOKEN, repr(session))

    @coroutine
    async def test_badToken(self):
        """A refused token fails with HaAuthError (a configuration error), without the token."""
        with self.assertRaises(W.HaAuthError) as cm:
            await W.connect(reactor, self.url, "wrong-token")
        self.assertNotIn("wrong-token", str(cm.exception))

    @coroutine
    async def test_unreachable(self):
        """Nothing listening: HaUnreachable naming the URL."""
        from tests.sktesting import refusing_port
        url = f"http://127.0.0.1:{refusing_port(self)}"
        with self.assertRaises(W.HaUnreachable) as cm:
            await W.connect(reactor, url, TOKEN)
        self.assertIn(url, str(cm.exception))

    def test_urls(self):
        """
        --ha-url as the browser shows it, any page's path and query dropped
        (HA's API is at its address's /api/websocket), or the websocket URL
        itself.
        """
        self.assertEqual(W.websocket_url("http://ha.local:8123"), "ws://ha.local:8123/api/websocket")
        self.assertEqual(W.websocket_url("https://ha.example/"), "wss://ha.example/api/websocket")
        self.assertEqual(W.websocket_url("ws://h:1/api/websocket"), "ws://h:1/api/websocket")
        self.assertEqual(W.websocket_url("http://ha.local:8123/lovelace/0"),
                         "ws://ha.local:8123/api/websocket")
        self.assertEqual(W.websocket_url("https://ha.example/config/energy?x=1#y"),
                         "wss://ha.example/api/websocket")
        self.assertEqual(W.websocket_url("wss://proxy.example/ha/api/websocket"),
                         "wss://proxy.example/ha/api/websocket")
        for bad in ("ha.local:8123", "ftp://x", "http://", "http://h:x"):
            self.assertRaises(W.ConfigError, W.websocket_url, bad)

    @coroutine
    async def test_browserPath(self):
        """A URL copied from the browser's address bar (a dashboard's page) reaches HA."""
        session = await W.connect(reactor, self.url + "/lovelace/0", TOKEN)
        self.addCleanup(self.close, session)
        self.assertEqual(session.version, "2024.3.3")


class _Answers400(protocol.Protocol):
    """What HA's web server (aiohttp) does with bytes that are not HTTP: a 400, and close."""

    def dataReceived(self, data):
        self.factory.answered.append(data[:1])
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        self.transport.loseConnection()


class _Page(resource.Resource):
    """Any web page: a server that is not HA, or HA's frontend behind a path."""

    isLeaf = True

    def render_GET(self, request):
        return b"<html><body>a page</body></html>"


def listen_plain_http(test, answered=None) -> int:
    """
    A plain HTTP server on loopback that answers a TLS hello as HA does
    (400); the test stops it.

    @param answered: a list that gets the first byte of each request answered.
    @return: its port.
    """
    factory = protocol.Factory.forProtocol(_Answers400)
    factory.answered = [] if answered is None else answered
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    test.addCleanup(port.stopListening)
    return port.getHost().port


class WrongAddressTests(TestCase):
    """
    An --ha-url that reaches something, but not HA's websocket as given:
    each error names the cause in one line, without the token.
    """

    timeout = 30  # only catches a hang

    async def refused(self, url):
        with self.assertRaises(W.HaUnreachable) as cm:
            await W.connect(reactor, url, TOKEN)
        text = str(cm.exception)
        self.assertNotIn("\n", text)
        self.assertNotIn(TOKEN, text)
        return cm.exception

    @coroutine
    async def test_tlsAgainstPlain(self):
        """https:// for a plain HTTP server: the MQTT output's words, use http://."""
        port = listen_plain_http(self)
        error = await self.refused(f"https://127.0.0.1:{port}")
        self.assertIsInstance(error, W.HaWrongScheme)
        self.assertEqual(str(error), f"cannot reach Home Assistant at https://127.0.0.1:{port}: "
                                     f"port {port} does not speak TLS; for a plain port use "
                                     "http://")

    @coroutine
    async def test_onlyOurLine(self):
        """
        The log holds no line of autobahn's own about a failed connection
        ("SSL error: wrong version number (in )", "dropping connection"),
        nor a "Starting factory" per connection: the error above says it.
        """
        from twisted.logger import formatEvent, globalLogPublisher
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        port = listen_plain_http(self)
        await self.refused(f"https://127.0.0.1:{port}")
        noise = [formatEvent(e) for e in events
                 if e.get("log_namespace", "").startswith("autobahn")
                 or "Starting factory <smartmeter_tx" in formatEvent(e)]
        self.assertEqual(noise, [])

    @coroutine
    async def test_notAWebsocket(self):
        """A web server that answers with a page: named, with its status, not HA's API."""
        site = reactor.listenTCP(0, server.Site(_Page()), interface="127.0.0.1")
        self.addCleanup(site.stopListening)
        port = site.getHost().port
        error = await self.refused(f"http://127.0.0.1:{port}/lovelace/0")
        self.assertNotIsInstance(error, W.HaWrongScheme)
        self.assertEqual(str(error), f"ws://127.0.0.1:{port}/api/websocket is not Home "
                                     "Assistant's API: it answered HTTP 200 OK instead of a "
                                     "websocket (is --ha-url HA's address? does a proxy before it "
                                     "pass websockets on?)")

    @coroutine
    async def test_plainAgainstTls(self):
        """http:// for a TLS port that drops the connection unanswered: asks about https://."""
        from twisted.internet import ssl
        from tests.mosquitto import Certificates
        directory = self.mktemp()
        os.makedirs(directory)
        certs = Certificates(directory)
        tls = reactor.listenSSL(0, protocol.Factory.forProtocol(protocol.Protocol),
                                ssl.DefaultOpenSSLContextFactory(certs.server_key, certs.server),
                                interface="127.0.0.1")
        self.addCleanup(tls.stopListening)
        port = tls.getHost().port
        error = await self.refused(f"http://127.0.0.1:{port}")
        self.assertEqual(str(error), f"Home Assistant at http://127.0.0.1:{port} closed the "
                                     f"connection before answering; is port {port} a TLS port "
                                     "(https://)?")


class StallTests(_HaBase, TestCase):
    """An HA that takes the token and then stops answering, or answers garbage."""

    @coroutine
    async def test_commandDeadline(self):
        """A command HA never answers fails with HaUnreachable at its deadline; the session ends."""
        self.patch(W.HaSession, "COMMAND_WITHIN", 0.3)
        session = await self.session()
        self.ha.stall = True
        with self.assertRaises(W.HaUnreachable) as cm:
            await session.call("recorder/list_statistic_ids")
        self.assertEqual(str(cm.exception), "Home Assistant did not answer "
                                            "recorder/list_statistic_ids within 0.3 s")
        await session.lost
        self.assertTrue(session.closed)

    @coroutine
    async def test_notJson(self):
        """An answer that is not JSON (a proxy's page) ends the session."""
        session = await self.session()
        self.ha.page = "<html><body>502 Bad Gateway</body></html>"
        with self.assertRaises(W.HaUnreachable) as cm:
            await session.call("recorder/list_statistic_ids")
        self.assertIn("not a JSON object (is a proxy answering in its place?)",
                      str(cm.exception))
        await session.lost

    @coroutine
    async def test_pingsBetweenCommands(self):
        """An idle session whose HA stops answering pings ends by itself."""
        # autobahn's timers come in 0.2 s buckets: a second each is exact enough.
        self.patch(W.HaSession, "PING_EVERY", 1.0)
        self.patch(W.HaSession, "PING_WITHIN", 1.0)
        session = await self.session()
        self.ha.stall = True
        await session.lost
        self.assertTrue(session.closed)
        with self.assertRaises(W.HaUnreachable):
            await session.call("recorder/list_statistic_ids")


class FakeIsStrictTests(_HaBase, TestCase):
    """The fake refuses what HA 2024.x refuses, so passing it means something."""

    async def refused(self, session, metadata=None, stats=None, extra=None):
        message = dict(metadata=metadata or S.metadata(SLUG, "import"),
                       stats=stats if stats is not None else
                       [{"start": "2026-12-01T00:00:00+09:00", "sum": 1.0}], **(extra or {}))
        with self.assertRaises(W.HaError) as cm:
            await session.call("recorder/import_statistics", **message)
        return cm.exception.code

    @coroutine
    async def test_refusals(self):
        session = await self.session()
        meta = S.metadata(SLUG, "import")
        cases = [
            (dict(stats=[{"start": "2026-12-01T00:00:00", "sum": 1}]), "home_assistant_error"),
            (dict(stats=[{"start": "2026-12-01T00:30:00+09:00", "sum": 1}]),
             "home_assistant_error"),
            (dict(stats=[{"start": "2026-12-01T00:00:00+09:00", "sum": 1, "kwh": 1}]),
             "invalid_format"),
            (dict(stats=[{"start": "2026-12-01T00:00:00+09:00", "sum": "1"}]), "invalid_format"),
            (dict(metadata=dict(meta, source="other")), "home_assistant_error"),
            (dict(metadata=dict(meta, statistic_id="smartmeter_tx:Bad")), "home_assistant_error"),
            (dict(metadata=dict(meta, statistic_id="sensor.energy")), "home_assistant_error"),
            (dict(metadata=dict(meta, extra=1)), "invalid_format"),
            (dict(extra={"hint": 1}), "invalid_format"),
        ]
        for kwargs, code in cases:
            self.assertEqual(await self.refused(session, **kwargs), code, kwargs)
        self.assertEqual(self.ha.rows, {})

    @coroutine
    async def test_nonAdmin(self):
        """A non-admin user's token may not import: 'unauthorized'."""
        session = await self.session("user-token")
        self.assertEqual(await self.refused(session), "unauthorized")


class SynchronizeTests(_HaBase, TestCase):
    @coroutine
    async def test_importAndIdempotence(self):
        """
        The hours go in once; the same range imported again, or a shorter
        one, changes nothing in HA.
        """
        session = await self.session()
        record = slots([Decimal("0.25")] * 96)
        done = await sync.synchronize(session, record, SLUG, NOW, rewrite=True)
        self.assertEqual(done.hours[SID], 48)
        self.assertEqual((done.first, done.last), (T0, T0 + datetime.timedelta(hours=47)))
        before = copy.deepcopy(self.ha.rows)
        first = [r for r in before[SID].values()]
        self.assertEqual(first[0]["sum"], 0.5)
        self.assertEqual(first[-1]["sum"], 24.0)
        await sync.synchronize(session, record, SLUG, NOW, rewrite=True)
        await sync.synchronize(session, record[48:], SLUG, NOW, rewrite=True)
        self.assertEqual(self.ha.rows, before)

    @coroutine
    async def test_refillFromTheLastHour(self):
        """
        The service's way: only the hours after HA's last one, continuing its
        sum, so the hours HA has are untouched.
        """
        session = await self.session()
        record = slots([Decimal("0.5")] * 48)
        await sync.synchronize(session, record[:20], SLUG, NOW, rewrite=False)
        self.assertEqual(len(self.ha.rows[SID]), 10)
        done = await sync.synchronize(session, record, SLUG, NOW, rewrite=False)
        self.assertEqual(done.hours[SID], 14)
        sums = [total for _, total in self.ha.sums(SID)]
        self.assertEqual(sums, [float(k) for k in range(1, 25)])

    @coroutine
    async def test_continueFromAnOldRow(self):
        """A row older than the lookback is continued from (a monthly query finds it)."""
        session = await self.session()
        old = slots([Decimal(1)] * 2, start=T0 - datetime.timedelta(days=90))
        await sync.synchronize(session, old, SLUG, NOW - datetime.timedelta(days=90),
                               rewrite=True)
        await sync.synchronize(session, slots([Decimal(1)] * 2), SLUG, NOW, rewrite=False)
        self.assertEqual([total for _, total in self.ha.sums(SID)], [2.0, 4.0])


class RangeBaseTests(_HaBase, TestCase):
    """
    A range continues from HA's last hourly row before it, however old, and
    never from a month row that holds the range itself (whose sum is the
    month's last, the range's own hours included).
    """

    async def imported(self, session, record, now=NOW):
        await sync.synchronize(session, record, SLUG, now, rewrite=True)
        return copy.deepcopy(self.ha.rows)

    @coroutine
    async def test_rangeAgainInTheSameMonth(self):
        """A second import of a range, and of a shorter one inside it, changes no row."""
        session = await self.session()
        record = slots([Decimal("0.25")] * 96, start=T0 + datetime.timedelta(days=3))
        now = NOW + datetime.timedelta(days=3)
        before = await self.imported(session, record, now)
        self.assertEqual(await self.imported(session, record, now), before)
        self.assertEqual(await self.imported(session, record[20:60], now), before)
        self.assertEqual(self.ha.sums(SID)[0][1], 0.5)

    @coroutine
    async def test_rangeAcrossAMonthEnd(self):
        """A range over the end of a month, imported again, stays as it was."""
        session = await self.session()
        record = slots([Decimal(1)] * 96, start=T0 - datetime.timedelta(days=1))
        before = await self.imported(session, record)
        self.assertEqual(await self.imported(session, record), before)
        self.assertEqual(await self.imported(session, record[48:]), before)

    @coroutine
    async def test_rowInTheMonthBefore(self):
        """The last row before the range is days back, in the month before: continued from."""
        session = await self.session()
        await self.imported(session, slots([Decimal(1)] * 4, start=T0 - datetime.timedelta(
            days=20)))
        await self.imported(session, slots([Decimal(1)] * 4))
        self.assertEqual([total for _, total in self.ha.sums(SID)], [2.0, 4.0, 6.0, 8.0])

    @coroutine
    async def test_rowMonthsBefore(self):
        """The last row is two months back: its month's row tells its sum."""
        session = await self.session()
        old = T0 - datetime.timedelta(days=47)  # mid-October
        await self.imported(session, slots([Decimal(3)] * 4, start=old))
        await self.imported(session, slots([Decimal(1)] * 2, start=old + datetime.timedelta(
            hours=5)))
        await self.imported(session, slots([Decimal(1)] * 2))
        self.assertEqual([total for _, total in self.ha.sums(SID)], [6.0, 12.0, 14.0, 16.0])

    @coroutine
    async def test_waitsForTheRecorder(self):
        """HA writes an import after answering: synchronize returns once it is written."""
        self.ha.recorder_lag = 0.3
        session = await self.session()
        await sync.synchronize(session, slots([Decimal(1)] * 4), SLUG, NOW, rewrite=True)
        self.assertEqual([total for _, total in self.ha.sums(SID)], [2.0, 4.0])

    @coroutine
    async def test_recorderNeverWrites(self):
        """An import HA accepts but never writes: HaNotRecorded after RECORD_WITHIN."""
        self.patch(sync, "RECORD_WITHIN", 0.2)
        self.ha.recorder_lag = None
        session = await self.session()
        with self.assertRaises(sync.HaNotRecorded) as cm:
            await sync.synchronize(session, slots([Decimal(1)] * 4), SLUG, NOW, rewrite=True)
        self.assertIsInstance(cm.exception, W.HaUnreachable)
        self.assertIn("had not recorded it after 0.2 s", str(cm.exception))

    @coroutine
    async def test_waitsForEveryRowItWrote(self):
        """
        A longer range moves the bought energy's sums but not the sold one's
        (none sold): synchronize still returns only once every changed row
        is written.
        """
        session = await self.session()
        record = slots([Decimal(1)] * 8)
        await sync.synchronize(session, record[4:], SLUG, NOW, rewrite=True)
        self.ha.recorder_lag = 0.3
        await sync.synchronize(session, record, SLUG, NOW, rewrite=True)
        self.assertEqual([total for _, total in self.ha.sums(SID)], [2.0, 4.0, 6.0, 8.0])
        export = S.statistic_id(SLUG, "export")
        self.assertEqual([total for _, total in self.ha.sums(export)], [0.0] * 4)
