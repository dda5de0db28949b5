"""
Tests for the dashboard at C{/} (L{smartmeter_tx.outputs.dashboard} and
L{smartmeter_tx.outputs.web.DashboardResource}): the page with no data yet, with live
data from a real poller on the emulator, and with a backfilled gap, in English
and Japanese, its HTML checked with a parser (and as XML: it is well formed);
markup in any text it shows stays text; the wheel ships its template; and the
same page loaded in headless Chromium over a real socket.
"""

import datetime
import os
import random
import shutil
import signal
import subprocess
import sys
import zipfile
from decimal import Decimal
from html.parser import HTMLParser
from xml.etree import ElementTree

from twisted.internet import defer, protocol, reactor
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.resource import getChildForRequest
from twisted.web.error import FlattenerError
from twisted.web.template import tags
from twisted.web.resource import Resource
from twisted.web.static import Data
from twisted.web.test.requesthelper import DummyRequest

from smartmeter_tx.session import config
from smartmeter_tx.session import join
from smartmeter_tx.outputs import dashboard as D
from smartmeter_tx.outputs.dashboard import svg as charts
from smartmeter_tx.outputs.dashboard.page import CSS, flatten_now
from smartmeter_tx.outputs.dashboard.snapshot import Slot
from smartmeter_tx.service.backfill import Backfill
from smartmeter_tx.service.datalog import DataLog
from smartmeter_tx.echonet import meter as M
from smartmeter_tx import model
from smartmeter_tx.model import JST, NO_DATA, NO_PHASE, HistorySlot, Reading
from smartmeter_tx.emulator.module import DEFAULT_ID, DEFAULT_PASSWORD
from smartmeter_tx.session.linkstate import HOLD_RATE_LIMIT
from smartmeter_tx.service.poller import MeterPoller, PollSchedule
from smartmeter_tx.outputs.web import QuietSite, make_root
from tests.emuloop import Loop
from tests.outputs.test_web import service_view
from tests.test_packaging import dependency_tree, python, wheel_installed

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOUR = 3600.0
#: The emulated meter's clock at the start, and the host's wall clock with it.
METER_START = datetime.datetime(2024, 6, 1, 12, 0)
#: A morning without readings in the meter's own record (before the service ran).
OUTAGE = (datetime.datetime(2024, 6, 1, 3, 0), datetime.datetime(2024, 6, 1, 4, 30))
EXTERNAL = ("http:", "https:", "//", "ftp:", "data:", "javascript:")


# -- the page as a tree ----------------------------------------------------------------


class Node:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent = tag, dict(attrs), parent
        self.children, self.texts = [], []

    def text(self) -> str:
        return "".join(self.texts) + "".join(c.text() for c in self.children)

    def iter(self):
        yield self
        for child in self.children:
            yield from child.iter()

    def classes(self):
        return (self.attrs.get("class") or "").split()

    def find_all(self, tag=None, cls=None):
        return [n for n in self.iter() if (tag is None or n.tag == tag)
                and (cls is None or cls in n.classes())]


class Page(HTMLParser):
    """The page parsed into L{Node}s, with its elements by id."""

    VOID = {"meta", "link", "br", "img", "input", "hr", "source", "area", "base", "col", "wbr"}

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.current = self.root
        self.ids = {}
        self.errors = []
        self.feed(html)
        self.close()
        if self.current is not self.root:
            self.errors.append(f"unclosed <{self.current.tag}>")

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.current)
        self.current.children.append(node)
        if "id" in node.attrs:
            if node.attrs["id"] in self.ids:
                self.errors.append(f"duplicate id {node.attrs['id']}")
            self.ids[node.attrs["id"]] = node
        if tag not in self.VOID:
            self.current = node

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.current = self.current.parent

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if self.current.tag != tag:
            self.errors.append(f"</{tag}> closes <{self.current.tag}>")
            return
        self.current = self.current.parent

    def handle_data(self, data):
        self.current.texts.append(data)

    def __getitem__(self, id_):
        return self.ids[id_]

    def find_all(self, tag=None, cls=None):
        return self.root.find_all(tag, cls)


class PageChecks:
    """Assertions on any rendering of the page."""

    def page(self, html: str) -> Page:
        page = Page(html)
        self.assertEqual(page.errors, [])
        self.xml(html)
        self.assertSelfContained(page, html)
        for id_ in ("power-now", "power-curve", "energy-bars", "today-normal", "today-reverse",
                    "month-normal", "month-reverse", "link-session", "link-rate-limit",
                    "link-last-event", "link-rssi", "link-age", "updated", "lang"):
            self.assertIn(id_, page.ids)
        heads = page.find_all("head")[0]
        metas = {(m.attrs.get("http-equiv") or m.attrs.get("name")): m.attrs.get("content")
                 for m in heads.find_all("meta")}
        self.assertEqual(metas["refresh"], str(D.REFRESH))
        self.assertIn("width=device-width", metas["viewport"])
        for svg in page.find_all("svg"):
            self.assertEqual(svg.attrs.get("role"), "img")
            titles = svg.find_all("title")
            self.assertTrue(titles and titles[0].text().strip(), svg.attrs)
        return page

    def xml(self, html: str) -> ElementTree.Element:
        """The page parsed as XML, which fails unless it is well formed."""
        try:
            return ElementTree.fromstring(html)
        except ElementTree.ParseError as e:
            self.fail(f"not well-formed XML: {e}")

    def assertSelfContained(self, page: Page, html: str):
        """Nothing the page uses comes from another host: no URL, script or font."""
        for node in page.root.iter():
            for name in ("src", "href", "xlink:href", "action", "srcset", "poster"):
                value = (node.attrs.get(name) or "").strip().lower()
                self.assertFalse(value.startswith(EXTERNAL), (node.tag, name, value))
        self.assertNotIn("://", html)
        self.assertEqual(page.find_all("script"), [])
        self.assertEqual(page.find_all("link"), [])
        self.assertNotIn("@import", html)
        self.assertNotIn("@font-face", html)

    def slots(self, page: Page):
        return page["energy-bars"].find_all("g", "slot")


# -- the data --------------------------------------------------------------------------


def wall_at(meter_time: datetime.datetime):
    return meter_time.replace(tzinfo=JST).timestamp()


def live_poller(testcase, hours=8.0, **knobs):
    """
    A real L{MeterPoller} with a two-day backfill on the emulator loopback
    (a meter with solar panels and the L{OUTAGE} in its record), run for
    C{hours} of simulated time from L{METER_START}.

    @return: C{(loop, poller, wall clock)}.
    """
    knobs.setdefault("solar", 3000)
    knobs.setdefault("outage", (OUTAGE,))
    loop = Loop(start=METER_START, **knobs)
    testcase.addCleanup(loop.stop)
    wall0 = wall_at(METER_START)

    def wall():
        return wall0 + loop.clock.seconds()

    backfill = Backfill(2, loop.clock, lambda record, when: None, wall)
    poller = MeterPoller(loop.connect, config.SessionConfig(join.Credentials(DEFAULT_ID, DEFAULT_PASSWORD)),
                         loop.clock, PollSchedule(interval=30, energy_interval=300),
                         rng=random.Random(0), wall_clock=wall, backfill=backfill)
    poller.startService()

    def stop():
        if poller.running:
            stopped = poller.stopService()
            loop.flush()  # the loopback says the port is closed when pumped
            return stopped
    testcase.addCleanup(stop)
    loop.advance(hours * HOUR)
    return loop, poller, wall


def get(root, path=b"/", accept_language=None, lang=None):
    """GET C{path} from C{root}: C{(code, headers, body text)}."""
    request = DummyRequest(path.lstrip(b"/").split(b"/"))
    if accept_language is not None:
        request.requestHeaders.setRawHeaders(b"accept-language", [accept_language])
    if lang is not None:
        request.args[b"lang"] = [lang]
    resource = getChildForRequest(root, request)
    body = resource.render(request)
    return request.responseCode or 200, request.responseHeaders, body.decode("utf-8")


def gap_view():
    """
    A L{ServiceView} at 2024-06-02 10:15 JST whose backfill holds the last two
    days, 1 kWh bought and 0.2 kWh sold per slot, except: no data (nulls, as the
    meter reports them) from 23:30 to 01:00 around midnight, and 06:00-07:00
    not logged at all.

    @return: C{(view, wall-clock now, {slot start: state})}.
    """
    now = datetime.datetime(2024, 6, 2, 10, 15, tzinfo=JST)
    clock = Clock()
    clock.advance(5000)
    view = service_view(clock)
    view.backfill = Backfill(2, clock, lambda record, when: None, clock.seconds)
    states = {}
    t = datetime.datetime(2024, 5, 31, 0, 0, tzinfo=JST)
    k = 0
    while t < datetime.datetime(2024, 6, 2, 10, 0, tzinfo=JST):
        normal, reverse = Decimal(1000) + k, Decimal(100) + Decimal("0.2") * k
        k += 1
        if datetime.datetime(2024, 6, 1, 23, 30, tzinfo=JST) <= t < datetime.datetime(
                2024, 6, 2, 1, 0, tzinfo=JST):
            view.backfill.slots[t] = HistorySlot(t, NO_DATA, NO_DATA, NO_DATA, NO_DATA, "E2")
            states[t] = "nodata"
        elif datetime.datetime(2024, 6, 2, 6, 0, tzinfo=JST) <= t < datetime.datetime(
                2024, 6, 2, 7, 0, tzinfo=JST):
            states[t] = "missing"
        else:
            view.backfill.slots[t] = HistorySlot(t, Decimal(1), Decimal("0.2"), normal,
                                                 reverse, "E2")
            states[t] = "ok"
        t += model.SLOT
    # 15 minutes into the running slot: 0.3 kWh more than at 10:00.
    view.store.add(Reading(energy_normal_kwh=Decimal(1000) + k + Decimal("0.3"),
                           energy_reverse_kwh=Decimal(100) + Decimal("0.2") * k),
                   now.timestamp() - 60)
    view.store.add(Reading(power_w=600, current_r_a=Decimal(3), current_t_a=Decimal(3)),
                   now.timestamp() - 20)
    view.state.up(clock.seconds() - 1800)
    return view, now.timestamp(), states


# -- the page, parsed ------------------------------------------------------------------


class NoDataTests(PageChecks, SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.view = service_view(self.clock)
        self.now = wall_at(datetime.datetime(2024, 6, 1, 9, 0))
        self.root = make_root(self.view, lambda: self.now)

    def test_headers(self):
        """/ is HTML in UTF-8, never cached."""
        code, headers, _ = get(self.root)
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"text/html; charset=utf-8"])
        self.assertEqual(headers.getRawHeaders(b"cache-control"), [b"no-store"])

    def test_nothingYet(self):
        """
        Before the first reading and without a backfill, every value is a
        dash (never 0), the curve is empty and all 96 slots of the energy chart
        are gaps.
        """
        for language, marker in (("en", "No reading yet"), ("ja", "まだ計測値がありません")):
            page = self.page(get(self.root, accept_language=language)[2])
            self.assertEqual(page.find_all("html")[0].attrs["lang"], language)
            self.assertEqual(page["power-now"].text(), "—")
            self.assertEqual(page["power-now"].attrs["data-value"], "")
            self.assertIn(marker, page["power-note"].text())
            for key in ("today-normal", "today-reverse", "month-normal", "month-reverse"):
                self.assertEqual(page[key].text(), "—", key)
            self.assertEqual(page["power-curve"].attrs["data-points"], "0")
            self.assertEqual(page["power-curve"].find_all("polyline"), [])
            slots = self.slots(page)
            self.assertEqual(len(slots), 96)
            self.assertEqual({s.attrs["data-state"] for s in slots}, {"missing"})
            self.assertEqual(page["energy-bars"].find_all("rect", "normal"), [])
            self.assertEqual(page["link-session"].attrs["data-value"], "unknown")
            self.assertEqual(page["link-age"].text(), "—")
            self.assertEqual(page["link-last-event"].text(), "—")
            self.assertEqual(page["link-rssi"].text(), "— / —")

    def test_absentValues(self):
        """Values the meter marks absent show as a dash, not 0."""
        self.view.store.add(Reading(power_w=NO_DATA, current_r_a=Decimal("1.5"),
                                    current_t_a=NO_PHASE), self.now - 5)
        page = self.page(get(self.root)[2])
        self.assertEqual(page["power-now"].attrs["data-value"], "")
        self.assertTrue(page["power-now"].text().startswith("—"))
        self.assertEqual(page["currents"].attrs["data-r"], "1.5")
        self.assertEqual(page["currents"].attrs["data-t"], "")
        self.assertIn("R 1.5 A / T —", page["currents"].text())

    def test_linkHealth(self):
        """Session, the held reason, last EVENT in hex, RSSI/LQI, limit and age."""
        store, state = self.view.store, self.view.state
        # Taken 300 s ago on both clocks: the wall's (stamps) and the service's (ages).
        store.add(Reading(power_w=-250, current_r_a=Decimal("1"), current_t_a=Decimal("2")),
                  self.now - 300, at=self.view.clock.seconds() - 300)
        state.up(900.0)
        state.event(0x32, 990.0)
        state.scanned(208, -40.0)
        state.rssi(-47.4)
        page = self.page(get(self.root)[2])
        self.assertEqual(page["power-now"].attrs["data-value"], "-250")
        self.assertIn("selling", page["power-now"].classes())
        self.assertEqual(page["link-last-event"].text(), "32")
        self.assertEqual(page["link-rate-limit"].attrs["data-value"], "1")
        self.assertEqual(page["link-held"].text(), HOLD_RATE_LIMIT)
        self.assertEqual(page["link-rssi"].text(), "-47 dBm / 208")
        self.assertEqual(page["link-age"].attrs["data-value"], "300")
        self.assertIn("stale", page["link-age"].text())
        # The session came up 100 s before the poller clock's now: 08:58:20.
        self.assertIn("up since 08:58", page["link-session"].text())

    def test_escaped(self):
        """Every text is escaped: markup in a value stays text."""
        snap = D.Snapshot(now=self.now, held="<img src=x onerror=alert(1)>&",
                          session="<b>odd</b>")
        html = D.render(snap, "en")
        page = self.page(html)
        self.assertEqual(page["link-held"].text(), "<img src=x onerror=alert(1)>&")
        self.assertEqual(page.find_all("img"), [])
        self.assertEqual(page.find_all("b"), [])

    def test_language(self):
        """Japanese when Accept-Language prefers it (or ?lang=ja), English otherwise."""
        for header, expected in ((None, "en"), ("", "en"), ("ja", "ja"),
                                 ("ja-JP,ja;q=0.9,en;q=0.8", "ja"),
                                 ("en-US,en;q=0.9,ja;q=0.8", "en"), ("fr,ja;q=0.5", "ja"),
                                 ("en;q=0.5,ja;q=0.7", "ja"), ("de,fr", "en"),
                                 ("ja;q=0,en", "en"), ("ja;q=x", "en")):
            self.assertEqual(D.language(header), expected, header)
        self.assertEqual(D.language("en", "ja"), "ja")
        self.assertEqual(D.language("ja", "xx"), "ja")
        page = Page(get(self.root, accept_language="ja,en;q=0.5")[2])
        self.assertEqual(page.find_all("h1")[0].text(), "スマートメーター")
        self.assertEqual(page["lang"].attrs["href"], "?lang=en")
        page = Page(get(self.root, accept_language="ja", lang=b"en")[2])
        self.assertEqual(page.find_all("h1")[0].text(), "Smart meter")

    def test_pure(self):
        """
        The snapshot and the words import nothing from Twisted; the page
        loads twisted.web.template when it is first asked for.
        """
        code = ("import sys, smartmeter_tx.outputs.dashboard as D\n"
                "from smartmeter_tx.outputs.dashboard import snapshot, text\n"
                "def twisted(): return any(m.split('.')[0] == 'twisted' for m in sys.modules)\n"
                "print(twisted())\n"
                "D.render\n"
                "print(twisted(), 'twisted.web.template' in sys.modules)")
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, timeout=60,
                             capture_output=True, text=True)
        self.assertEqual((out.returncode, out.stdout.split()), (0, ["False", "True", "True"]),
                         out.stderr)


class ChartTests(SynchronousTestCase):
    """The two charts' scales and marks, whatever the data."""

    NOW = wall_at(datetime.datetime(2024, 6, 1, 9, 0))

    def svg(self, chart):
        page = Page(flatten_now(chart))
        self.assertEqual(page.errors, [])
        return page

    def labels(self, page):
        return [n.text() for n in page.find_all("text", "ylab")]

    def bars(self, values):
        from smartmeter_tx.outputs.dashboard.snapshot import Slot, Snapshot
        start = datetime.datetime(2024, 5, 31, 9, 0, tzinfo=JST)
        slots = [Slot(start + k * model.SLOT, v, None if v is None else Decimal(0),
                      "ok" if v is not None else "missing") for k, v in enumerate(values)]
        return self.svg(charts.bars_svg(Snapshot(self.NOW, slots=slots), D.TEXT["en"]))

    def test_emptyChartsHaveNoScale(self):
        """Without data neither chart has numbers on its axis; each says why it is empty."""
        from smartmeter_tx.outputs.dashboard.snapshot import Snapshot
        bars = self.bars([None] * 96)
        self.assertEqual(self.labels(bars), [])
        self.assertEqual([n.text() for n in bars.find_all("text", "empty")],
                         ["No 30-minute record yet."])
        curve = self.svg(charts.curve_svg(Snapshot(self.NOW), D.TEXT["en"]))
        self.assertEqual(self.labels(curve), [])
        self.assertEqual([n.text() for n in curve.find_all("text", "empty")],
                         ["No readings today yet."])

    def test_ticksDistinct(self):
        """
        Whatever the largest slot, from 0.01 to 30 kWh, the energy axis has
        at least two ticks, all different and in ascending order from 0.
        """
        for top in ("0", "0.01", "0.03", "0.05", "0.07", "0.1", "0.12", "0.25", "0.5", "0.9",
                    "1", "1.3", "2.5", "7", "30"):
            labels = self.labels(self.bars([Decimal(top), None, Decimal("0.01")]))
            self.assertGreaterEqual(len(labels), 2, (top, labels))
            self.assertEqual(len(set(labels)), len(labels), (top, labels))
            numbers = [Decimal(x) for x in labels]
            self.assertEqual(numbers, sorted(numbers), (top, labels))
            self.assertEqual(numbers[0], 0, (top, labels))
            self.assertGreaterEqual(numbers[-1], Decimal(top), (top, labels))

    def test_singleReadingIsAPoint(self):
        """
        One reading today (or one between two gaps) is drawn as a dot, and so
        is the end of a run too short to be seen as a line (the first minutes
        after a start); every dot is drawn after the now line, over it.
        """
        from smartmeter_tx.outputs.dashboard.snapshot import Snapshot
        curve = self.svg(charts.curve_svg(Snapshot(self.NOW, curve=[(self.NOW - 60, 420)]),
                                         D.TEXT["en"]))
        self.assertEqual(curve.find_all("polyline"), [])
        self.assertEqual(len(curve.find_all("circle", "point")), 1)
        self.assertEqual(curve["power-curve"].attrs["data-points"], "1")
        self.assertOver(curve, "point", "now")
        two = self.svg(charts.curve_svg(Snapshot(self.NOW, curve=[
            (self.NOW - 3600, 300), (self.NOW - 60, 420), (self.NOW - 30, 430)]),
            D.TEXT["en"]))
        points = two.find_all("circle", "point")
        self.assertEqual(len(points), 2)  # the one before the gap, the newest of the two after
        self.assertEqual(len(two.find_all("polyline")), 1)
        now_x = float(two.find_all("line", "now")[0].attrs["x1"])
        self.assertLess(abs(float(points[1].attrs["cx"]) - now_x), 0.2)  # right on it
        self.assertOver(two, "point", "now")
        # An hour of readings is a line of 13 px: no dot.
        hour = self.svg(charts.curve_svg(Snapshot(self.NOW, curve=[
            (self.NOW - 3600 + 30 * k, 400) for k in range(120)]), D.TEXT["en"]))
        self.assertEqual(hour.find_all("circle"), [])

    def assertOver(self, page, cls, under):
        """Every mark of C{cls} comes after (is drawn over) the C{under} line."""
        marks = list(page.find_all("svg")[0].iter())
        first = min(n for n, node in enumerate(marks) if cls in node.classes())
        self.assertLess(max(n for n, node in enumerate(marks) if under in node.classes()),
                        first)


#: Markup, both quotes and ampersands, as a hostile text would hold them.
HOSTILE = """<script>alert("x")</script><b title='t'>&amp; & "q" 'a'"""


def full_snapshot(now: float, **fields) -> D.Snapshot:
    """
    A L{D.Snapshot} at C{now} that takes every branch showing a text: a
    stale reading, sold and bought energy, a curve with a lone point, slots
    of each state with midnight and noon ticks, a held send, the rate limit
    and Home Assistant away; C{fields} override.
    """
    boundary = datetime.datetime.fromtimestamp(now, JST).replace(minute=0, second=0)
    first = boundary - datetime.timedelta(hours=48)
    slots = [Slot(first + k * model.SLOT, Decimal("0.5"), Decimal("0.1"), "ok")
             for k in range(94)]
    slots += [Slot(first + 94 * model.SLOT, None, None, "nodata"),
              Slot(first + 95 * model.SLOT, None, None, "missing")]
    values = dict(
        power_w=-1234, current_r_a=Decimal("5"), current_t_a=Decimal("7"),
        reading_time=now - 600, curve=[(now - 3600, 300), (now - 600, 400), (now - 570, 420)],
        slots=slots, today={"normal": (Decimal("1.25"), boundary), "reverse": None},
        month={"normal": None, "reverse": (Decimal("3.5"), boundary)}, session="up",
        session_since=now - 900, held="rate limit", rate_limited=True, last_event=0x32,
        rssi=-50.0, lqi=200, rejoins_last_hour=2,
        ha=(boundary - datetime.timedelta(hours=1), False))
    values.update(fields)
    return D.Snapshot(now=now, **values)


class EscapingTests(PageChecks, SynchronousTestCase):
    """
    Whatever a text holds, the page shows it as text: the flattener escapes
    every text and attribute, with no escaping call of ours to forget.
    """

    NOW = wall_at(datetime.datetime(2024, 6, 1, 9, 0))

    def assertShown(self, page: Page, tree: ElementTree.Element, ident: str, text: str):
        """Element C{ident} shows C{text} and holds it in its C{data-value}, in both parsers."""
        self.assertEqual(page[ident].text(), text)
        self.assertEqual(page[ident].attrs["data-value"], text)
        [node] = tree.iterfind(f".//*[@id='{ident}']")
        self.assertEqual("".join(node.itertext()), text)
        self.assertEqual(node.get("data-value"), text)

    def assertNoMarkup(self, page: Page, html: str):
        """No element of the page came from a text."""
        self.assertNotIn("<script", html)
        self.assertNotIn("<b ", html)
        self.assertEqual(page.find_all("script") + page.find_all("b"), [])

    def test_hostileFields(self):
        """The snapshot's strings show as they are, in text and in attributes."""
        html = D.render(full_snapshot(self.NOW, held=HOSTILE, session=HOSTILE), "en")
        page = self.page(html)
        self.assertNoMarkup(page, html)
        tree = self.xml(html)
        self.assertShown(page, tree, "link-held", HOSTILE)
        self.assertShown(page, tree, "link-session", HOSTILE)
        self.assertEqual(page["link-held"].find_all("span", "bad")[0].text(), HOSTILE)

    def test_hostileWords(self):
        """
        A language whose name and every word hold markup and quotes: each
        shows as it is, in the page's text, its attributes and its charts.
        """
        words = {key: HOSTILE + value for key, value in D.TEXT["en"].items()}
        D.TEXT[HOSTILE] = words
        self.addCleanup(D.TEXT.pop, HOSTILE)
        html = D.render(full_snapshot(self.NOW), HOSTILE)
        page = self.page(html)
        self.assertNoMarkup(page, html)
        tree = self.xml(html)
        self.assertEqual(tree.get("lang"), HOSTILE)
        self.assertEqual(page.find_all("html")[0].attrs["lang"], HOSTILE)
        self.assertEqual(page.find_all("title")[0].text(), f"−1,234 W · {words['title']}")
        self.assertEqual(page.find_all("h1")[0].text(), words["title"])
        self.assertEqual(page["power-now"].attrs["aria-label"], f"{words['power_now']}: −1,234 W")
        self.assertEqual(page["energy"].attrs["aria-label"], f"{words['today']} / {words['month']}")
        for section in page.find_all("section"):
            self.assertTrue(section.attrs["aria-label"].startswith(HOSTILE), section.attrs)
            self.assertTrue(section.find_all("h2")[0].text().startswith(HOSTILE), section.attrs)
        for chart in page.find_all("svg"):
            for tag in ("title", "desc"):
                self.assertTrue(chart.find_all(tag)[0].text().startswith(HOSTILE), chart.attrs)
        for g in self.slots(page):
            self.assertIn(HOSTILE, g.find_all("title")[0].text())
        for dt in page["link"].find_all("dt"):
            self.assertTrue(dt.text().startswith(HOSTILE), dt.text())
        self.assertEqual(page["link-age"].find_all("span", "bad")[0].text(),
                         f"({words['stale']})")
        self.assertEqual(page["updated"].text(), words["updated"].format(
            "2024-06-01 09:00", D.REFRESH))

    def test_styleVerbatim(self):
        """The style holds nothing the flattener escapes, so the page carries it unchanged."""
        for c in "<>&":
            self.assertNotIn(c, CSS)
        self.assertIn(f"<style>{CSS}</style>", D.render(full_snapshot(self.NOW), "ja"))

    def test_flattenNowFailsLoudly(self):
        """Flattening that would wait, or that fails, raises instead of giving a page."""
        self.assertRaises(RuntimeError, flatten_now, tags.div(defer.Deferred()))
        self.assertRaises(FlattenerError, flatten_now, tags.div(object()))
        self.assertEqual(flatten_now(tags.p(HOSTILE, title=HOSTILE)),
                         '<p title="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;b '
                         "title='t'&gt;&amp;amp; &amp; &quot;q&quot; 'a'\">&lt;script&gt;"
                         "alert(\"x\")&lt;/script&gt;&lt;b title='t'&gt;&amp;amp; &amp; \"q\" "
                         "'a'</p>")


class PackagingTests(SynchronousTestCase):
    """The page's template, outside the checkout."""

    def test_templateShips(self):
        """The wheel holds the page template, and a normal install of it renders the page."""
        wheel, target = wheel_installed(self)
        with zipfile.ZipFile(wheel) as z:
            self.assertIn("smartmeter_tx/outputs/dashboard/page.xml", z.namelist())
        # Only the install and Twisted on the path: not the checkout.
        path = os.pathsep.join([target, dependency_tree(self, ["twisted"])])
        page = python("import smartmeter_tx.outputs.dashboard as D\n"
                      "print(D.__file__)\n"
                      f"print(D.render(D.Snapshot(now={EscapingTests.NOW!r}), 'ja'))\n",
                      cwd=target, pythonpath=path, isolated=True)
        self.assertEqual(page.returncode, 0, page.stderr)
        where, html = page.stdout.split("\n", 1)
        self.assertTrue(where.startswith(target + os.sep), (where, target))
        self.assertIn("<h1>スマートメーター</h1>", html)
        self.assertIn('<svg id="energy-bars"', html)


class LiveTests(PageChecks, SynchronousTestCase):
    """The page of a real poller that ran 8 simulated hours on the emulator."""

    def setUp(self):
        self.loop, self.poller, self.wall = live_poller(self)
        self.root = make_root(self.poller.view(), self.wall)

    def test_groundTruth(self):
        """
        The power now, the currents, the curve, each 30-minute bar and today's
        kWh are what the emulated meter counted, in both languages.
        """
        store, backfill = self.poller.store, self.poller.backfill
        truth = self.loop.emulator.truth
        power = [r.value for r in truth if r.epc == M.POWER][-1]
        meter = self.loop.emulator.meter
        now = datetime.datetime.fromtimestamp(self.wall(), JST)
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        for language in ("en", "ja"):
            page = self.page(get(self.root, accept_language=language)[2])
            self.assertEqual(page["power-now"].attrs["data-value"], str(power))
            self.assertEqual(page["power-now"].text().replace(",", ""), f"{power}W".replace(
                "-", "−"))
            # Today's curve: every reading since the service started at 12:00.
            points = [w for when, w in store.recent if when >= midnight.timestamp()]
            self.assertGreater(len(points), 900)
            curve = page["power-curve"]
            self.assertEqual(curve.attrs["data-points"], str(len(points)))
            self.assertEqual(curve.attrs["data-segments"], "1")
            self.assertEqual(len(curve.find_all("polyline")), 1)
            self.assertEqual(Decimal(curve.attrs["data-max"]), max(points))
            # 48 h of bars, each as logged (the backfill read the meter's record).
            slots = self.slots(page)
            self.assertEqual(len(slots), 96)
            boundary = now.replace(minute=now.minute - now.minute % 30, second=0, microsecond=0)
            self.assertEqual(slots[0].attrs["data-slot"],
                             (boundary - datetime.timedelta(hours=48)).isoformat())
            self.assertEqual(slots[-1].attrs["data-slot"],
                             (boundary - model.SLOT).isoformat())
            for g in slots:
                start = datetime.datetime.fromisoformat(g.attrs["data-slot"])
                logged = backfill.slots.get(start)
                if logged is None:  # the newest, not read yet (the backfill is paced)
                    self.assertEqual(g.attrs["data-state"], "missing")
                    continue
                if g.attrs["data-state"] == "ok":
                    self.assertEqual(Decimal(g.attrs["data-normal"]), logged.energy_normal_kwh)
                    self.assertEqual(Decimal(g.attrs["data-reverse"]),
                                     logged.energy_reverse_kwh)
                    self.assertEqual(len(g.find_all("rect", "normal")),
                                     1 if logged.energy_normal_kwh else 0)
            # Today, from midnight to the newest E0/E3: across the outage too.
            normal0, reverse0 = meter.slot_truth(midnight.replace(tzinfo=None))
            energy = store.energy
            self.assertEqual(Decimal(page["today-normal"].attrs["data-value"]),
                             energy.energy_normal_kwh - meter.to_kwh(normal0))
            self.assertEqual(Decimal(page["today-reverse"].attrs["data-value"]),
                             energy.energy_reverse_kwh - meter.to_kwh(reverse0))
            # June 1st: the month so far is today.
            self.assertEqual(page["month-normal"].attrs["data-value"],
                             page["today-normal"].attrs["data-value"])
            self.assertEqual(page["link-session"].attrs["data-value"], "up")
            self.assertEqual(page["link-rate-limit"].attrs["data-value"], "0")

    def test_backfilledGap(self):
        """
        The slots of the meter's outage, backfilled with no data, are drawn
        as gaps (a hatched band, no bar), never as 0.
        """
        meter = self.loop.emulator.meter
        page = self.page(get(self.root)[2])
        gaps = [g for g in self.slots(page) if g.attrs["data-state"] == "nodata"]
        self.assertTrue(gaps)
        for g in self.slots(page):
            start = datetime.datetime.fromisoformat(g.attrs["data-slot"])
            if g.attrs["data-state"] == "missing":  # the newest, not read yet: paced
                self.assertNotIn(start, self.poller.backfill.slots)
                self.assertGreater(start, self.slots_end() - 2 * model.SLOT)
                continue
            start = start.replace(tzinfo=None)
            no_truth = None in (meter.slot_truth(start)[0], meter.slot_truth(start + model.SLOT)[0])
            self.assertEqual(g.attrs["data-state"], "nodata" if no_truth else "ok", start)
        for g in gaps:
            self.assertEqual(g.attrs["data-normal"], "")
            self.assertEqual(g.find_all("rect", "normal") + g.find_all("rect", "reverse"), [])
            self.assertEqual(len(g.find_all("rect", "gap")), 1)
            self.assertIn("no data", g.find_all("title")[0].text())
        missing = [g for g in self.slots(page) if g.attrs["data-state"] == "missing"]
        self.assertEqual(page["energy-bars"].attrs["data-gaps"], str(len(gaps) + len(missing)))

    def slots_end(self):
        now = datetime.datetime.fromtimestamp(self.wall(), JST)
        return now.replace(minute=now.minute - now.minute % 30, second=0, microsecond=0)


class GapTests(PageChecks, SynchronousTestCase):
    """A backfill with slots of no data and slots not logged."""

    def setUp(self):
        self.view, self.now, self.states = gap_view()
        self.root = make_root(self.view, lambda: self.now)

    def test_gapsDrawnAsGaps(self):
        """
        Each slot is drawn as its state says; today's kWh, which starts in a
        slot without data, is a dash, while the month bridges the gap with the
        meter's counters.
        """
        for language, why in (("en", "no data"), ("ja", "データなし")):
            page = self.page(get(self.root, accept_language=language)[2])
            slots = self.slots(page)
            self.assertEqual(len(slots), 96)
            for g in slots:
                start = datetime.datetime.fromisoformat(g.attrs["data-slot"])
                self.assertEqual(g.attrs["data-state"], self.states[start], start)
                if self.states[start] == "ok":
                    self.assertEqual(g.attrs["data-normal"], "1")
                    self.assertEqual(g.attrs["data-reverse"], "0.2")
                    self.assertEqual(len(g.find_all("rect", "normal")), 1)
                    self.assertEqual(len(g.find_all("rect", "reverse")), 1)
                else:
                    self.assertEqual((g.attrs["data-normal"], g.attrs["data-reverse"]), ("", ""))
                    self.assertEqual(len(g.find_all("rect")), 1)
                    self.assertEqual(g.find_all("rect")[0].classes(), ["gap"])
                    if self.states[start] == "nodata":
                        self.assertIn(why, g.text())
            self.assertEqual(page["energy-bars"].attrs["data-gaps"], "5")
            self.assertEqual(page["today-normal"].text(), "—")
            self.assertEqual(page["today-normal"].attrs["data-value"], "")
            # June 1st 00:00 to 2nd 10:00 is 68 slots of 1 kWh, plus the running 0.3.
            self.assertEqual(Decimal(page["month-normal"].attrs["data-value"]), Decimal("68.3"))
            self.assertEqual(Decimal(page["month-reverse"].attrs["data-value"]),
                             Decimal("13.6"))
            self.assertEqual(page["power-now"].attrs["data-value"], "600")

    def test_curveSteps(self):
        """
        Where the service has no readings today, the power curve shows each
        slot of the meter's record as its average power ((bought - sold) x
        2000 W), drawn as steps apart from the readings and named in a legend
        and the description; a slot without data (or not logged) draws
        nothing, never 0.
        """
        for language, legend in (("en", "Half-hour averages from the meter's record"),
                                 ("ja", "メーターの記録による30分ごとの平均")):
            page = self.page(get(self.root, accept_language=language)[2])
            curve = page["power-curve"]
            today = {start.isoformat() for start, state in self.states.items()
                     if state == "ok" and start.day == 2}
            steps = curve.find_all("g", "step")
            self.assertEqual({g.attrs["data-slot"] for g in steps}, today)
            self.assertEqual(len(steps), 16)
            self.assertEqual(curve.attrs["data-steps"], "16")
            self.assertEqual({g.attrs["data-watts"] for g in steps}, {"1600"})
            for g in steps:
                [line] = g.find_all("line", "step-line")
                self.assertEqual(line.attrs["y1"], line.attrs["y2"])
                self.assertEqual(len(g.find_all("rect", "step-area")), 1)
                self.assertIn("1.6 kW", g.find_all("title")[0].text())
            # The slots are 1600 W: the scale reaches them, and 0 W is below.
            level = float(steps[0].find_all("line", "step-line")[0].attrs["y1"])
            zero = float(curve.find_all("line", "zero")[0].attrs["y1"])
            self.assertTrue(charts.TOP <= level < zero, (level, zero))
            self.assertEqual([n.text() for n in curve.find_all("text", "legend")], [legend])
            self.assertIn("16", curve.find_all("desc")[0].text())
            # The one reading is a point of its own, joined to no step.
            self.assertEqual(curve.attrs["data-points"], "1")
            self.assertEqual(len(curve.find_all("circle", "point")), 1)
            self.assertEqual(curve.find_all("polyline"), [])
        self.assertEqual(self.view.store.latest.power_w, 600)

    def test_periodEnergy(self):
        """
        Today's kWh: the sum of the slots plus the running one; across a gap
        the counters at both ends; without the running slot's reading, until
        the last boundary; a dash when neither end is known.
        """
        slots = self.view.backfill.slots
        day2 = datetime.datetime(2024, 6, 2, tzinfo=JST)
        boundary = day2.replace(hour=10)
        at = boundary + datetime.timedelta(minutes=14)
        # From 07:00 (after the gap not logged): 6 slots and the running one.
        self.assertEqual(D.period_energy(slots, day2.replace(hour=7), boundary, "normal",
                                         Decimal("1116.3"), at),
                         (Decimal("6.3"), at))
        # From 01:00, across 06:00-07:00 not logged: the counters.
        self.assertEqual(D.period_energy(slots, day2.replace(hour=1), boundary, "normal",
                                         None, None), (Decimal(18), boundary))
        # A reading from before the boundary is not the running slot's.
        self.assertEqual(D.period_energy(slots, day2.replace(hour=1), boundary, "normal",
                                         Decimal(1200), boundary - model.SLOT),
                         (Decimal(18), boundary))
        self.assertIsNone(D.period_energy(slots, day2, boundary, "normal", Decimal(1200), at))
        self.assertIsNone(D.period_energy({}, day2, boundary, "normal", Decimal(1200), at))
        # The newest slot not logged yet: the newest reading bridges it.
        newest = dict(slots)
        del newest[boundary - model.SLOT]
        self.assertEqual(D.period_energy(newest, day2.replace(hour=7), boundary, "normal",
                                         Decimal("1116.3"), at), (Decimal("6.3"), at))
        self.assertEqual(D.period_energy(newest, day2.replace(hour=7), boundary, "normal",
                                         None, None), None)
        # Just after midnight: only the running slot.
        self.assertEqual(D.period_energy({day2 - model.SLOT: slots[day2.replace(day=1, hour=22)]},
                                         day2, day2, "normal", None, None), (Decimal(0), day2))


# -- after a restart -------------------------------------------------------------------


def logged(directory: str) -> tuple:
    """
    What a data log holds, read here apart from the product's reader: every
    whole line of every file.

    @return: C{([(time, power or None)] of the readings with power, {slot
        start: (bought, sold) or None} of the history records)}.
    """
    readings, slots = [], {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            for line in f:
                record = model.parse_json_object(line)
                if record is None:
                    continue
                if record.get("kind") == "history":
                    normal, reverse = record["energy_normal_kwh"], record["energy_reverse_kwh"]
                    slots[datetime.datetime.fromisoformat(record["slot"])] = (
                        None if None in (normal, reverse)
                        else (Decimal(str(normal)), Decimal(str(reverse))))
                elif "kind" not in record and "power_w" in record:
                    readings.append((record["time"], record["power_w"]))
    return sorted(readings), slots


class RestartTests(PageChecks, SynchronousTestCase):
    """
    The service as twist builds it (makeService), run over its data log from
    07:30 to 10:30 on 2024-06-01, stopped for an hour and started again: on a
    host on UTC, whose data-log files change date at 09:00 Japan time.
    """

    START = datetime.datetime(2024, 6, 1, 7, 30)

    def setUp(self):
        from tests.cli.test_tap import clean_environ
        from tests.sktesting import host_zone
        clean_environ(self)
        host_zone(self, "UTC")
        self.reactor = MemoryReactorClock()
        self.loop = Loop(clock=self.reactor, start=self.START, solar=3000, outage=(OUTAGE,))
        self.addCleanup(self.loop.stop)
        self.data = self.mktemp()
        self.state = self.mktemp()
        self.wall0 = wall_at(self.START)

    def wall(self):
        return self.wall0 + self.reactor.seconds()

    def service(self):
        """The service tree, built (and its store seeded) as twist builds it."""
        from smartmeter_tx.cli.tap import makeService
        from tests.cli.test_tap import parse
        options = parse("--device", "/dev/ttyUSB-test", "--state-file", self.state,
                        "--interval", "30", "--id", DEFAULT_ID, "--password", DEFAULT_PASSWORD,
                        "--data-log", self.data, "--backfill-days", "1", "--http", "none")
        return makeService(options, reactor=self.reactor, open_port=self.loop.connect,
                           wall_clock=self.wall)

    def curve(self, top):
        root = make_root(top.view(), self.wall)
        return self.page(get(root)[2])["power-curve"]

    def first_run(self):
        """Run the service three hours, stop it; a null power and a torn line end the log."""
        top = self.service()
        top.startService()
        self.loop.advance(3 * HOUR)
        top.stopService()
        self.loop.flush()
        self.assertGreater(len(os.listdir(self.data)), 1)  # 07:30-09:00 and 09:00-10:30
        with open(top.records.datalog.path_for(self.wall()), "ab") as f:
            f.write(b'{"power_w":null,"time":%.3f}\n{"power_w":4' % (self.wall() + 5))
        self.loop.advance(HOUR)

    def steps(self, curve) -> dict:
        return {datetime.datetime.fromisoformat(g.attrs["data-slot"]): Decimal(
            g.attrs["data-watts"]) for g in curve.find_all("g", "step")}

    def test_curveSurvivesRestart(self):
        """
        Started again at 11:30, the page's curve holds the morning's logged
        readings, from both files and before any poll; the meter's record
        fills the hours without readings as half-hour steps (none for the
        outage's slots without data, none where readings are); the null
        power stays a gap; the first new reading is a point of its own; and
        once the backfill has read the hour the service was down, that hour
        has its steps too, apart from the readings on either side.
        """
        self.first_run()
        readings, slots = logged(self.data)
        points = [(when, watts) for when, watts in readings if watts is not None]
        self.assertGreater(len(points), 300)
        top = self.service()
        self.assertEqual(list(top.poller.store.recent), readings)
        curve = self.curve(top)
        self.assertEqual(curve.attrs["data-points"], str(len(points)))
        self.assertEqual(curve.attrs["data-segments"], "1")
        self.assertEqual(Decimal(curve.attrs["data-max"]), max(w for _, w in points))

        def expected(slots, after=None):
            """Today's slots with data before the first reading (or from C{after} on)."""
            wanted = {}
            for start, value in slots.items():
                if value is None or start.date() != self.START.date():
                    continue
                if start.timestamp() + 1800 <= points[0][0] or (
                        after is not None and start.timestamp() >= after):
                    wanted[start] = (value[0] - value[1]) * 2000
            return wanted
        steps = self.steps(curve)
        self.assertEqual(steps, expected(slots))
        self.assertIn(datetime.datetime(2024, 6, 1, 2, 0, tzinfo=JST), steps)
        for hour, minute in ((3, 0), (3, 30), (4, 0)):  # the outage: no data
            start = datetime.datetime(2024, 6, 1, hour, minute, tzinfo=JST)
            self.assertIsNone(slots[start])
            self.assertNotIn(start, steps)

        top.startService()
        self.addCleanup(lambda: top.running and top.stopService())
        self.loop.advance(5)
        curve = self.curve(top)
        self.assertEqual(curve.attrs["data-points"], str(len(points) + 1))
        self.assertEqual(curve.attrs["data-segments"], "2")
        [point] = curve.find_all("circle", "point")
        now_x = float(curve.find_all("line", "now")[0].attrs["x1"])
        self.assertLess(abs(float(point.attrs["cx"]) - now_x), 0.2)

        self.loop.advance(0.5 * HOUR)  # the backfill reads 10:00-11:30 meanwhile
        steps = self.steps(self.curve(top))
        down = {start for start in steps if start.hour >= 10}
        self.assertEqual(down, {datetime.datetime(2024, 6, 1, 10, 30, tzinfo=JST),
                                datetime.datetime(2024, 6, 1, 11, 0, tzinfo=JST)})
        self.assertEqual(steps, expected(logged(self.data)[1], after=points[-1][0]))


# -- in a real browser -----------------------------------------------------------------


def chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise SkipTest("chromium not installed: apt-get install chromium")


class _Collect(protocol.ProcessProtocol):
    def __init__(self, done):
        self.done, self.out, self.err = done, [], []

    def outReceived(self, data):
        self.out.append(data)

    def errReceived(self, data):
        self.err.append(data)

    def processEnded(self, reason):
        self.done.callback((b"".join(self.out), b"".join(self.err), reason.value.exitCode))


class BrowserTests(PageChecks, TestCase):
    """The page served on 127.0.0.1, loaded by headless Chromium."""

    #: Seconds before a Chromium run is killed as hung.
    KILL_AFTER = 60
    timeout = 240

    def setUp(self):
        self.chromium = chromium()
        self.tmp = os.path.abspath(self.mktemp())
        os.makedirs(self.tmp)

    def serve(self, resource) -> str:
        """Serve C{resource} on 127.0.0.1 for the test; @return: its URL."""
        port = reactor.listenTCP(0, QuietSite(resource), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}/"

    def live(self):
        """The page of a poller that ran 8 simulated hours on the emulator."""
        self.loop, self.poller, self.wall = live_poller(self)
        self.now = self.wall()
        self.url = self.serve(make_root(self.poller.view(), lambda: self.now))

    def run_chromium(self, *args):
        """
        Run headless Chromium with C{args}, with its profile, cache and
        temporary files in the test's directory; killed after L{KILL_AFTER}.

        @return: a Deferred firing with its standard output.
        """
        home = os.path.join(self.tmp, "home")
        os.makedirs(home, exist_ok=True)
        # TMPDIR relative to the working directory (the test's): the absolute
        # path of a trial temp dir is too long for Chromium's singleton socket.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home,
               "TMPDIR": "home", "XDG_CONFIG_HOME": os.path.join(home, ".config"),
               "XDG_CACHE_HOME": os.path.join(home, ".cache"), "LANG": "C.UTF-8"}
        argv = [self.chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--disable-extensions", "--disable-sync",
                "--disable-background-networking", "--disable-component-update",
                "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
                f"--user-data-dir={os.path.join(home, 'profile')}",
                f"--timeout={(self.KILL_AFTER - 20) * 1000}", *args]
        done = defer.Deferred()
        process = reactor.spawnProcess(_Collect(done), argv[0], argv, env=env, path=self.tmp)

        def kill():
            try:
                process.signalProcess(signal.SIGKILL)
            except Exception:
                pass

        killer = reactor.callLater(self.KILL_AFTER, kill)

        def ended(result):
            out, err, code = result
            if killer.active():
                killer.cancel()
            else:
                self.fail(f"chromium hung: killed after {self.KILL_AFTER} s; "
                          f"stderr: {err[-2000:]!r}")
            self.assertEqual(code, 0, err[-2000:])
            return out

        return done.addCallback(ended)

    @defer.inlineCallbacks
    def test_domAndScreenshot(self):
        """
        Chromium loads the page and its server-side SVG charts: the DOM it
        dumps has the power now, 96 bars with the outage as gaps, and today's
        curve; a screenshot of it is taken (into the test's directory).
        """
        self.live()
        store, backfill = self.poller.store, self.poller.backfill
        out = yield self.run_chromium("--dump-dom", self.url)
        dom = out.decode("utf-8")
        page = Page(dom)
        self.assertEqual(page.errors, [])
        self.assertSelfContained(page, dom)
        power = store.latest.power_w
        self.assertEqual(page["power-now"].attrs["data-value"], str(power))
        self.assertEqual(page["power-now"].text().replace(",", ""),
                         f"{power}W".replace("-", "−"))
        slots = self.slots(page)
        self.assertEqual(len(slots), 96)
        gaps = [g.attrs["data-slot"] for g in slots if g.attrs["data-state"] != "ok"]
        expected = []
        for g in slots:
            slot = backfill.slots.get(datetime.datetime.fromisoformat(g.attrs["data-slot"]))
            if slot is None or model.is_absent(slot.energy_normal_kwh):
                expected.append(g.attrs["data-slot"])
        self.assertEqual(gaps, expected)
        self.assertIn("2024-06-01T03:00:00+09:00", gaps)  # the outage
        for g in slots:
            self.assertEqual(len(g.find_all("rect", "gap")), 1 if g.attrs["data-slot"] in gaps
                             else 0)
        curve = page["power-curve"]
        self.assertEqual(curve.tag, "svg")
        self.assertEqual(len(curve.find_all("polyline")), 1)
        self.assertGreater(len(curve.find_all("polyline")[0].attrs["points"].split()), 900)
        self.assertEqual(page.find_all("html")[0].attrs["lang"], "en")

        # The Japanese page, as a phone would show it.
        out = yield self.run_chromium("--dump-dom", self.url + "?lang=ja")
        page = Page(out.decode("utf-8"))
        self.assertEqual(page.find_all("html")[0].attrs["lang"], "ja")
        self.assertEqual(page.find_all("h1")[0].text(), "スマートメーター")
        self.assertEqual(len(self.slots(page)), 96)

        shot = os.path.join(self.tmp, "dashboard.png")
        yield self.run_chromium("--window-size=412,1400", f"--screenshot={shot}", self.url)
        with open(shot, "rb") as f:
            png = f.read()
        self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")
        self.assertGreater(len(png), 10000)

    @defer.inlineCallbacks
    def test_firstPointSeen(self):
        """
        Just after a restart, the first reading is a dot right at the now
        line that Chromium draws over it (the topmost element at its centre,
        a few pixels wide), after the logged afternoon and beside the steps
        of the meter's record.  The page is the real one, with a probe
        script added at its end for the test.
        """
        now = wall_at(datetime.datetime(2024, 6, 1, 15, 30))
        log = DataLog(os.path.join(self.tmp, "log"), utc=True)
        for k in range(240):  # 13:00 to 15:00
            log.write({"power_w": 300 + k}, now - 2.5 * HOUR + 30 * k)
        log.close()
        clock = Clock()
        view = service_view(clock)
        view.backfill = Backfill(1, clock, lambda record, when: None, lambda: now)
        for hour in range(13):
            start = datetime.datetime(2024, 6, 1, hour, tzinfo=JST)
            view.backfill.slots[start] = HistorySlot(start, Decimal("0.3"), Decimal(0),
                                                     Decimal(100 + hour), Decimal(0), "E2")
        view.store.seed_today(log.readings, now)
        view.store.add(Reading(power_w=2500), now - 5)
        html = get(make_root(view, lambda: now))[2]
        self.assertIn("</body>", html)
        root = Resource()
        root.putChild(b"", Data(html.replace("</body>", PROBE + "</body>").encode("utf-8"),
                                "text/html; charset=utf-8"))
        out = yield self.run_chromium("--window-size=1200,1600", "--dump-dom", self.serve(root))
        page = Page(out.decode("utf-8"))
        curve = page["power-curve"]
        self.assertEqual(curve.attrs["data-points"], "241")
        self.assertEqual(curve.attrs["data-steps"], "13")
        hit, width = page.find_all("body")[0].attrs["data-probe"].split()
        self.assertEqual(hit, "point")
        self.assertGreaterEqual(float(width), 4.0)


#: Finds what Chromium draws topmost at the centre of the curve's newest dot,
#: and how wide the dot is, into the body's data-probe (for --dump-dom).
PROBE = """<script>
var dots = document.querySelectorAll("#power-curve circle.point");
var dot = dots[dots.length - 1];
var box = dot.getBoundingClientRect();
var hit = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
document.body.setAttribute("data-probe", (hit === dot ? "point" : hit ? hit.tagName + "." +
  hit.getAttribute("class") : "nothing") + " " + box.width.toFixed(2));
</script>"""
