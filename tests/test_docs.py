"""
The README's C{/metrics} description matches what C{/metrics} exposes.

The sample names come from a rendered C{/metrics} over a store and link state
in which every family has a sample, so a metric added later fails here until
README.md documents it (in English and in Japanese).
"""

import datetime
import os
import re

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from smartmeter_tx.outputs.guard import HttpGuard
from smartmeter_tx.outputs.homeassistant.importer import HaImporter
from smartmeter_tx.outputs.mqtt.config import MqttConfig
from smartmeter_tx.outputs.mqtt.publisher import MqttPublisher
from smartmeter_tx.outputs.web import make_root
from smartmeter_tx.service.datalog import DataLog
from tests.outputs.test_web import service_view, fill_view

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")

#: Where the Japanese part of README.md begins.
JAPANESE_HEADING = "## 日本語"

#: Names matching the metric pattern that are not metrics.
NOT_METRICS = {"smartmeter_tx", "smartmeter_tx_"}  # the package; the HA device id prefix

#: A Prometheus-style name of ours, as written in the README.
METRIC_NAME = re.compile(r"\bsmartmeter_[a-z_]+")

#: Fenced code blocks holding other tools' configuration (mackerel-agent.conf
#: and the like), whose names are not ours to check.
OTHER_CONFIG_BLOCK = re.compile(r"^```(?:toml|ini|conf)\b.*?^```", re.MULTILINE | re.DOTALL)


def populated_metrics():
    """
    Render C{/metrics} over a store and link state holding a value for
    everything the collector can report.

    @return: the parsed metric families.
    """
    clock = Clock()
    clock.advance(1000)
    poller = service_view(clock)
    fill_view(poller)
    # The data log, the MQTT publisher and the HTTP limits only report their
    # counters here: no file is opened, no connection made.
    datalog = DataLog("never-written")
    publisher = MqttPublisher(MqttConfig.from_options("mqtt://broker.lan", None), poller,
                              clock, driver_factory=lambda *args: None)
    guard = HttpGuard(None, clock, 64)
    importer = HaImporter("http://ha.lan:8123", "token", poller, clock, lambda why: None)
    importer.last_hour = datetime.datetime(2026, 6, 1, 11, tzinfo=datetime.timezone.utc)
    root = make_root(poller, clock.seconds, [datalog, publisher, guard, importer])
    request = DummyRequest([b"metrics"])
    body = getChildForRequest(root, request).render(request)
    return list(text_string_to_metric_families(body.decode("utf-8")))


def readme_parts():
    """
    README.md split at the Japanese heading.

    @return: C{(whole text, English part, Japanese part)}.
    @raise SkipTest: when README.md is not beside the tests (an installed
        package run from elsewhere).
    """
    if not os.path.exists(README):
        raise SkipTest(f"README.md not found at {README} (tests run outside a source checkout)")
    with open(README, encoding="utf-8") as f:
        text = f.read()
    english, heading, japanese = text.partition(JAPANESE_HEADING)
    if not heading:
        raise AssertionError(f"README.md has no {JAPANESE_HEADING!r} heading")
    return text, english, japanese


def documented_names(text):
    """The C{smartmeter_...} names written in C{text}, other tools' config left out."""
    return set(METRIC_NAME.findall(OTHER_CONFIG_BLOCK.sub("", text))) - NOT_METRICS


class MetricsDocumentedTests(SynchronousTestCase):
    def setUp(self):
        self.families = populated_metrics()
        self.samples = {s.name for f in self.families for s in f.samples}

    def test_everyFamilyHasASample(self):
        """
        The populated /metrics has a sample in every family, so that every
        name is checked below (a new family needs a value in
        L{populated_metrics}).
        """
        empty = [f.name for f in self.families if not f.samples]
        self.assertEqual(empty, [])
        self.assertIn("smartmeter_polls_answered_total", self.samples)
        self.assertIn("smartmeter_power_watts", self.samples)

    def test_englishListsEverySample(self):
        """Every sample name /metrics exposes appears in the English part of README.md."""
        _, english, _ = readme_parts()
        missing = sorted(n for n in self.samples if n not in documented_names(english))
        self.assertEqual(missing, [], "sample names not in the English README")

    def test_japaneseListsEverySample(self):
        """Every sample name /metrics exposes appears in the Japanese part of README.md."""
        _, _, japanese = readme_parts()
        missing = sorted(n for n in self.samples if n not in documented_names(japanese))
        self.assertEqual(missing, [], "sample names not in the Japanese README")

    def test_readmeNamesAreReal(self):
        """
        Every C{smartmeter_...} name README.md mentions is a sample name
        /metrics exposes (a query copied from it finds something): counters
        with C{_total}.
        """
        text, _, _ = readme_parts()
        unknown = sorted(documented_names(text) - self.samples)
        self.assertEqual(unknown, [], "names in README.md that /metrics does not expose")


class HelpersTests(SynchronousTestCase):
    """The name extraction the tests above rely on."""

    def test_namesFound(self):
        """Names are found in code spans, tables and with labels; the package name is not one."""
        text = ("`smartmeter_power_watts`, | `smartmeter_energy_kwh{direction}` |\n"
                "smartmeter_tx/outputs/web.py and smartmeter.power.value\n")
        self.assertEqual(documented_names(text),
                         {"smartmeter_power_watts", "smartmeter_energy_kwh"})

    def test_otherConfigLeftOut(self):
        """Names inside a toml block (another tool's config) are not checked."""
        text = "```toml\nkey = \"smartmeter_whatever\"\n```\n`smartmeter_lqi`\n"
        self.assertEqual(documented_names(text), {"smartmeter_lqi"})

    def test_oldCounterNamesRejected(self):
        """A counter without C{_total} is not a sample name (the bug this test file guards)."""
        samples = {s.name for f in populated_metrics() for s in f.samples}
        self.assertNotIn("smartmeter_rejoins", samples)
        self.assertIn("smartmeter_rejoins_total", samples)


#: The checkout: the tests sit in its tests/ folder.
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: A citation of one of the project's documents: its path, a comma, a heading in quotes.
CITATION = re.compile(r'docs/([A-Z]+)\.md, "([^"]+)"')

#: Texts that must not appear in the repository: documents outside it, and
#: this machine's paths.
#: (Written with character classes, so that the pattern does not name itself.)
FOREIGN = re.compile(r"\.\./s[h]ared|/w[o]rk/|c[a]ptures\.md|r[e]ference/protocol\.md|D[E]SIGN\.md")


def source_texts():
    """
    @return: C{[(relative path, text)]} of the package's, the tests', the
        benchmarks' and the docs' source files.
    """
    out = []
    for top in ("smartmeter_tx", "tests", "bench", "docs", "examples", "twisted"):
        for directory, dirs, files in os.walk(os.path.join(CHECKOUT, top)):
            dirs[:] = [d for d in dirs if not d.startswith((".", "_trial_temp", "__pycache__"))]
            for name in files:
                if name.endswith((".py", ".md", ".conf", ".service")):
                    path = os.path.join(directory, name)
                    with open(path, encoding="utf-8") as f:
                        out.append((os.path.relpath(path, CHECKOUT), f.read()))
    for name in ("README.md", "pyproject.toml"):
        with open(os.path.join(CHECKOUT, name), encoding="utf-8") as f:
            out.append((name, f.read()))
    return out


def headings(name):
    """The C{## } headings of docs/C{name}.md."""
    with open(os.path.join(CHECKOUT, "docs", f"{name}.md"), encoding="utf-8") as f:
        return {line[3:].strip() for line in f if line.startswith("## ")}


class CitationTests(SynchronousTestCase):
    """The repository stands alone: what it cites is in it."""

    def setUp(self):
        if not os.path.exists(os.path.join(CHECKOUT, "docs", "PROTOCOL.md")):
            raise SkipTest("docs/ not found beside the tests (run outside a source checkout)")
        self.texts = source_texts()

    def test_citedSectionsExist(self):
        """Every citation of a section of docs/ names a document there and one of its headings."""
        cited = {(path, doc, section) for path, text in self.texts
                 for doc, section in CITATION.findall(text)}
        self.assertTrue(cited, "no citation found: the pattern is stale")
        missing = sorted(f"{path}: docs/{doc}.md, {section!r}" for path, doc, section in cited
                         if not os.path.exists(os.path.join(CHECKOUT, "docs", f"{doc}.md"))
                         or section not in headings(doc))
        self.assertEqual(missing, [])

    def test_noForeignCitations(self):
        """No file cites a document outside the repository or a path of this machine."""
        found = sorted(f"{path}: {m.group(0)}" for path, text in self.texts
                       for m in FOREIGN.finditer(text) if path != "tests/test_docs.py")
        self.assertEqual(found, [])

    def test_foreignPatternFindsThem(self):
        """The pattern above catches the kinds of citation it is for."""
        for text in ("see ../" "shared/x", "/" "work/main/x", "captures" ".md §4",
                     "reference/" "protocol.md §3", "DESIGN" ".md"):
            self.assertIsNotNone(FOREIGN.search(text), text)
