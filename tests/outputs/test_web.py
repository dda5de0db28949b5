"""
Tests for L{smartmeter_tx.outputs.web}: C{/latest} (JSON) and C{/metrics}
(Prometheus exposition), rendered with DummyRequest.
"""

import json
import random
from decimal import Decimal

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor, threads
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from smartmeter_tx.session import config
from smartmeter_tx.session import join
from smartmeter_tx.echonet import meter as M
from smartmeter_tx import model
from smartmeter_tx.model import NO_DATA, NO_PHASE, Reading
from smartmeter_tx.emulator.module import DEFAULT_ID, DEFAULT_PASSWORD
from smartmeter_tx.service.backfill import Backfill
from smartmeter_tx.session.linkstate import HOLD_EXPIRY, LinkState
from smartmeter_tx.service.poller import MeterPoller
from smartmeter_tx.service.store import JoinFailure, LatestStore
from smartmeter_tx.service.view import ServiceView
from smartmeter_tx.outputs.web import make_root
from tests.emuloop import Loop


def service_view(clock, backfill=None) -> ServiceView:
    """
    A L{ServiceView} of a real store and link state, on C{clock}, without a
    poller behind them.
    """
    return ServiceView(LatestStore(), LinkState(), clock, backfill)


def fill_view(poller):
    """Give C{poller} (a L{ServiceView}) a value for everything /metrics reports."""
    store, state, s = poller.store, poller.state, poller.store.stats
    store.add(Reading(energy_normal_kwh=Decimal("12345.6"),
                      energy_reverse_kwh=Decimal("7.8")), 900.0)
    store.add(Reading(power_w=-250, current_r_a=Decimal("12.3"),
                      current_t_a=Decimal("4.5")), 985.0)
    state.up(850.0)
    store.last_poll_at = 990.0
    s.polls_answered = 40
    s.polls_failed = 3
    s.polls_skipped = 2
    s.rejoins = 5
    s.reopens = 1
    s.frames_sent = 44
    s.busy_retries = 6
    s.junk_dropped = 7
    state.event(0x32, 860.0)
    state.event(0x33, 870.0)
    state.event(0x32, 880.0)  # a second episode, still on
    state.scanned(208, -40.0)
    state.rssi(-47.07)
    poller.backfill = Backfill(7, poller.clock, lambda record, when: None, poller.clock.seconds)
    poller.backfill.written, poller.backfill.frames, poller.backfill.missing = 96, 9, 3


def get(root, path):
    """
    GET C{path} (bytes, below the root) from C{root}.

    @return: C{(code, content type, body bytes)}.
    """
    request = DummyRequest(path.lstrip(b"/").split(b"/"))
    resource = getChildForRequest(root, request)
    body = resource.render(request)
    return (request.responseCode or 200,
            request.responseHeaders.getRawHeaders(b"content-type")[0], body)


def families(body):
    """The parsed metric families of a /metrics body, by name."""
    return {f.name: f for f in text_string_to_metric_families(body.decode("utf-8"))}


def samples(family):
    """A family's samples as C{{(sample name, frozen labels): value}}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}


class LatestTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.poller = service_view(self.clock)
        self.root = make_root(self.poller, self.clock.seconds)

    def test_noReadingYet(self):
        """/latest answers 503 with a JSON error before the first reading."""
        self.poller.state.event(0x32, 1000.0)
        code, ctype, body = get(self.root, b"/latest")
        self.assertEqual(code, 503)
        self.assertEqual(ctype, b"application/json")
        self.assertEqual(json.loads(body), {"error": "no reading yet",
                                            "held": "transmit-time limit (EVENT 32)",
                                            "link": "unknown"})

    def test_newestReadingWithTimeAndAge(self):
        """/latest returns the newest reading with its time, its clock-based age, session and held."""
        self.poller.store.add(Reading(power_w=1234, current_r_a=Decimal("12.3"),
                                      current_t_a=Decimal("4.5")), 990.25)
        self.poller.state.up(990.0)
        code, ctype, body = get(self.root, b"/latest")
        self.assertEqual(code, 200)
        self.assertEqual(ctype, b"application/json")
        self.assertEqual(json.loads(body, parse_float=Decimal), {
            "power_w": 1234, "current_r_a": Decimal("12.3"), "current_t_a": Decimal("4.5"),
            "time": Decimal("990.25"), "age": Decimal("9.75"), "session": True, "link": "up",
            "held": None,
            "rate_limited": False, "rejoins_last_hour": 0,
        })
        self.clock.advance(20)
        self.assertEqual(json.loads(get(self.root, b"/latest")[2])["age"], 29.75)

    def test_fixedTimeAndRejoins(self):
        """
        /latest tells when the meter's last EA/EB came and how many rejoins the
        last hour saw (what a check plugin alerts on).
        """
        import datetime
        store = self.poller.store
        store.add(Reading(power_w=100, current_r_a=Decimal(1), current_t_a=Decimal(0)), 995.0)
        store.add_fixed(model.FixedReading(datetime.datetime(2026, 6, 1, 11, 30), 1000, Decimal(10)),
                        990.0)
        store.rejoined(-3000.0)  # more than an hour before the poller clock's 1000
        store.rejoined(500.0)
        store.rejoined(900.0)
        body = json.loads(get(self.root, b"/latest")[2])
        self.assertEqual(body["fixed_time"], 990.0)
        self.assertEqual(body["fixed_meter_time"], "2026-06-01T11:30:00")
        self.assertEqual(body["rejoins_last_hour"], 2)
        self.assertEqual(store.stats.rejoins, 3)

    def test_absentIsNull(self):
        """/latest shows a value the meter marked absent as null, not 0."""
        self.poller.store.add(Reading(power_w=NO_DATA, current_r_a=Decimal("1.0"),
                                      current_t_a=NO_PHASE), 999.0)
        self.poller.state.event(0x29, 999.0)
        body = json.loads(get(self.root, b"/latest")[2])
        self.assertIsNone(body["power_w"])
        self.assertIsNone(body["current_t_a"])
        self.assertEqual(body["current_r_a"], 1)
        self.assertIs(body["session"], False)
        self.assertEqual(body["held"], HOLD_EXPIRY)


class MetricsTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.poller = service_view(self.clock)
        self.root = make_root(self.poller, self.clock.seconds)

    def fill(self):
        fill_view(self.poller)

    def test_parsesAndCarriesEverything(self):
        """/metrics is Prometheus text carrying the reading and every link-health figure."""
        self.fill()
        code, ctype, body = get(self.root, b"/metrics")
        self.assertEqual(code, 200)
        self.assertTrue(ctype.startswith(b"text/plain"), ctype)
        fam = families(body)
        expected = {
            "smartmeter_power_watts": ("gauge", {("smartmeter_power_watts", ()): -250.0}),
            "smartmeter_current_amperes": ("gauge", {
                ("smartmeter_current_amperes", (("phase", "r"),)): 12.3,
                ("smartmeter_current_amperes", (("phase", "t"),)): 4.5}),
            "smartmeter_energy_kwh": ("gauge", {
                ("smartmeter_energy_kwh", (("direction", "normal"),)): 12345.6,
                ("smartmeter_energy_kwh", (("direction", "reverse"),)): 7.8}),
            "smartmeter_reading_age_seconds": (
                "gauge", {("smartmeter_reading_age_seconds", ()): 15.0}),
            "smartmeter_polls_answered": (
                "counter", {("smartmeter_polls_answered_total", ()): 40.0}),
            "smartmeter_polls_failed": ("counter", {("smartmeter_polls_failed_total", ()): 3.0}),
            "smartmeter_polls_skipped": (
                "counter", {("smartmeter_polls_skipped_total", ()): 2.0}),
            "smartmeter_rejoins": ("counter", {("smartmeter_rejoins_total", ()): 5.0}),
            "smartmeter_reopens": ("counter", {("smartmeter_reopens_total", ()): 1.0}),
            "smartmeter_rate_limited": ("counter", {("smartmeter_rate_limited_total", ()): 2.0}),
            "smartmeter_frames_sent": ("counter", {("smartmeter_frames_sent_total", ()): 44.0}),
            "smartmeter_module_busy": ("counter", {("smartmeter_module_busy_total", ()): 6.0}),
            "smartmeter_junk_dropped": ("counter", {("smartmeter_junk_dropped_total", ()): 7.0}),
            "smartmeter_backfill_slots": (
                "counter", {("smartmeter_backfill_slots_total", ()): 96.0}),
            "smartmeter_backfill_frames": (
                "counter", {("smartmeter_backfill_frames_total", ()): 9.0}),
            "smartmeter_backfill_missing_slots": (
                "gauge", {("smartmeter_backfill_missing_slots", ()): 3.0}),
            "smartmeter_rate_limited_now": ("gauge", {("smartmeter_rate_limited_now", ()): 1.0}),
            "smartmeter_session_up": ("gauge", {("smartmeter_session_up", ()): 1.0}),
            "smartmeter_session_age_seconds": (
                "gauge", {("smartmeter_session_age_seconds", ()): 150.0}),
            "smartmeter_last_event": ("gauge", {("smartmeter_last_event", ()): 50.0}),
            "smartmeter_rssi_dbm": ("gauge", {("smartmeter_rssi_dbm", ()): -47.07}),
            "smartmeter_lqi": ("gauge", {("smartmeter_lqi", ()): 208.0}),
            "smartmeter_last_poll_age_seconds": (
                "gauge", {("smartmeter_last_poll_age_seconds", ()): 10.0}),
        }
        self.assertEqual(sorted(fam), sorted(expected))
        for name, (kind, values) in expected.items():
            self.assertEqual((fam[name].type, samples(fam[name])), (kind, values), name)

    def test_absentValuesHaveNoSample(self):
        """/metrics leaves out the sample of an absent value instead of exporting 0."""
        self.fill()
        store = self.poller.store
        store.add(Reading(energy_normal_kwh=NO_DATA, energy_reverse_kwh=Decimal("7.8")), 990.0)
        store.add(Reading(power_w=NO_DATA, current_r_a=Decimal("3.5"), current_t_a=NO_PHASE),
                  995.0)
        fam = families(get(self.root, b"/metrics")[2])
        self.assertEqual(fam["smartmeter_power_watts"].samples, [])
        self.assertEqual(samples(fam["smartmeter_current_amperes"]),
                         {("smartmeter_current_amperes", (("phase", "r"),)): 3.5})
        self.assertEqual(samples(fam["smartmeter_energy_kwh"]),
                         {("smartmeter_energy_kwh", (("direction", "reverse"),)): 7.8})

    def test_beforeAnything(self):
        """/metrics before any reading or event has counters at 0 and no reading samples."""
        fam = families(get(self.root, b"/metrics")[2])
        for name in ("smartmeter_power_watts", "smartmeter_current_amperes",
                     "smartmeter_energy_kwh", "smartmeter_reading_age_seconds",
                     "smartmeter_session_age_seconds", "smartmeter_last_event",
                     "smartmeter_rssi_dbm", "smartmeter_lqi"):
            self.assertEqual(fam[name].samples, [], name)
        self.assertEqual(samples(fam["smartmeter_polls_answered"]),
                         {("smartmeter_polls_answered_total", ()): 0.0})
        self.assertEqual(samples(fam["smartmeter_session_up"]),
                         {("smartmeter_session_up", ()): 0.0})
        self.assertEqual(samples(fam["smartmeter_rate_limited_now"]),
                         {("smartmeter_rate_limited_now", ()): 0.0})


class RealPollerTests(SynchronousTestCase):
    def setUp(self):
        self.loop = Loop()
        self.addCleanup(self.loop.stop)
        self.poller = MeterPoller(self.loop.connect,
                                  config.SessionConfig(join.Credentials(DEFAULT_ID, DEFAULT_PASSWORD)),
                                  self.loop.clock, rng=random.Random(0),
                                  wall_clock=self.loop.clock.seconds)
        self.root = make_root(self.poller.view(), self.loop.clock.seconds)

    def test_unpluggedIsDown(self):
        """
        While the dongle is unplugged, /latest, /metrics and the page say the
        link is down (no module); once it is back, up again.
        """
        self.poller.startService()
        self.addCleanup(self.poller.stopService)
        self.loop.advance(20)
        self.assertEqual(json.loads(get(self.root, b"/latest")[2])["link"], "up")
        self.loop.unplugged = True
        self.loop.disconnect()
        self.loop.emulator.power_cycle()
        self.loop.advance(20)
        latest = json.loads(get(self.root, b"/latest")[2])
        self.assertEqual((latest["session"], latest["link"]), (False, "no_module"))
        self.assertEqual(samples(families(get(self.root, b"/metrics")[2])[
            "smartmeter_session_up"]), {("smartmeter_session_up", ()): 0.0})
        page = get(self.root, b"")[2].decode()
        self.assertIn("the Wi-SUN module is not there", page)
        self.loop.unplugged = False
        self.loop.advance(120)
        latest = json.loads(get(self.root, b"/latest")[2])
        self.assertEqual((latest["session"], latest["link"]), (True, "up"))

    def test_latestIsGroundTruth(self):
        """/latest and /metrics of a real MeterPoller show exactly what the emulated meter sent."""
        self.assertEqual(get(self.root, b"/latest")[0], 503)
        self.poller.startService()
        self.addCleanup(self.poller.stopService)
        self.loop.advance(20)
        truth = self.loop.emulator.truth
        power = [r.value for r in truth if r.epc == M.POWER][-1]
        current = [r.value for r in truth if r.epc == M.CURRENT][-1]
        energy = [r.kwh for r in truth if r.epc == M.ENERGY_NORMAL][-1]
        code, _, body = get(self.root, b"/latest")
        self.assertEqual(code, 200)
        latest = json.loads(body, parse_float=Decimal)
        self.assertEqual(latest["power_w"], power)
        self.assertEqual([latest["current_r_a"], latest["current_t_a"]], list(current))
        self.assertEqual(latest["energy_normal_kwh"], energy)
        self.assertEqual(latest["time"], Decimal(str(round(self.poller.store.latest_time, 3))))
        self.assertEqual(float(latest["age"]),
                         round(self.loop.clock.seconds() - self.poller.store.latest_time, 3))
        self.assertIs(latest["session"], True)
        self.assertIsNone(latest["held"])
        fam = families(get(self.root, b"/metrics")[2])
        self.assertEqual(samples(fam["smartmeter_power_watts"]),
                         {("smartmeter_power_watts", ()): float(power)})
        self.assertEqual(samples(fam["smartmeter_polls_answered"]),
                         {("smartmeter_polls_answered_total", ()): 1.0})
        self.assertEqual(samples(fam["smartmeter_session_up"]),
                         {("smartmeter_session_up", ()): 1.0})


class UnknownUntilKnownTests(SynchronousTestCase):
    """Values the service does not know yet, on a real poller over the emulator."""

    def test_missingSlotsUnknownUntilTheWindowIs(self):
        """
        smartmeter_backfill_missing_slots has no sample while the backfill has
        not yet read the meter's clock (its window unknown), never 0; then
        the slots really missing.
        """
        loop = Loop()
        self.addCleanup(loop.stop)
        backfill = Backfill(7, loop.clock, lambda record, when: None, loop.clock.seconds)
        poller = MeterPoller(loop.connect,
                             config.SessionConfig(join.Credentials(DEFAULT_ID, DEFAULT_PASSWORD)),
                             loop.clock, rng=random.Random(0), wall_clock=loop.clock.seconds,
                             backfill=backfill)
        root = make_root(poller.view(), loop.clock.seconds)

        def missing():
            family = families(get(root, b"/metrics")[2])["smartmeter_backfill_missing_slots"]
            return samples(family)
        self.assertEqual(missing(), {})
        poller.startService()
        self.addCleanup(poller.stopService)
        while backfill.missing is None:
            self.assertEqual(missing(), {})
            self.assertLess(loop.clock.seconds(), 120, "the backfill never looked")
            loop.advance(0.5)
        self.assertGreater(backfill.missing, 7 * 48)
        self.assertEqual(missing(), {("smartmeter_backfill_missing_slots", ()):
                                     float(backfill.missing)})

    def test_causeOnLatest(self):
        """
        /latest's 503 before the first reading says why the joins fail, and so
        does a 200 after a session was lost, until a session is up again.
        """
        clock = Clock()
        view = service_view(clock)
        root = make_root(view, clock.seconds)
        refused = ("the meter refused authentication (EVENT 24): check the B-route ID and "
                   "password")
        view.store.join_failed(JoinFailure("refused", refused))
        code, _, body = get(root, b"/latest")
        self.assertEqual((code, json.loads(body)), (503, {
            "error": "no reading yet", "cause": refused, "held": None, "link": "unknown"}))
        view.store.add(Reading(power_w=300), clock.seconds())
        code, _, body = get(root, b"/latest")
        self.assertEqual((code, json.loads(body)["cause"]), (200, refused))
        view.store.join_failure = None
        self.assertNotIn("cause", json.loads(get(root, b"/latest")[2]))


class PlainAnswersTests(TestCase):
    """HEAD, other methods and unknown paths, over a real loopback site."""

    timeout = 30  # only catches a hang

    def setUp(self):
        from tests.sktesting import serve
        self.view = service_view(Clock())
        self.url = serve(self, make_root(self.view, reactor.seconds))
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def ask(self, method, path):
        import http.client
        import urllib.parse

        def blocking():
            parts = urllib.parse.urlsplit(self.url)
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            try:
                conn.request(method, path)
                response = conn.getresponse()
                return response.status, dict(response.getheaders()), response.read()
            finally:
                conn.close()
        return threads.deferToThread(blocking)

    @inlineCallbacks
    def test_headIsTheGetsHeaders(self):
        """HEAD on every page: the GET's status and length, no body, nothing logged."""
        for path in ("/", "/latest", "/metrics", "/history"):
            got = yield self.ask("GET", path)
            head = yield self.ask("HEAD", path)
            self.assertEqual(head[0], got[0], path)
            self.assertEqual(head[2], b"", path)
            self.assertEqual(int(head[1]["Content-Length"]), len(got[2]), path)
        texts = [formatEvent(e) for e in self.logged]
        self.assertEqual([t for t in texts if "HEAD" in t or "eat it" in t], [])

    @inlineCallbacks
    def test_unknownPathAndMethod(self):
        """An unknown path is a plain 404, another method a plain 405 with Allow."""
        status, headers, body = yield self.ask("GET", "/nope")
        self.assertEqual((status, headers["Content-Type"]), (404, "text/plain; charset=utf-8"))
        self.assertEqual(body, b"not found: the service serves /, /latest, /history and "
                               b"/metrics\n")
        status, headers, body = yield self.ask("POST", "/latest")
        self.assertEqual((status, headers["Allow"]), (405, "GET, HEAD"))
        self.assertEqual(body, b"method not allowed: GET or HEAD only\n")
        status, headers, body = yield self.ask("HEAD", "/nope")
        self.assertEqual((status, body), (404, b""))
        for text in (b"Sorry", b"No luck", b"Huh", b"browser approached"):
            self.assertNotIn(text, body)
