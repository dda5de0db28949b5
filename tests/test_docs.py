"""
The README's C{/metrics} description matches what C{/metrics} exposes.

The sample names come from a rendered C{/metrics} over a store and link state
in which every family has a sample, so a metric added later fails here until
README.md documents it (in English and in Japanese).

The repository also stands alone: a section of docs/ cited by its heading is
one of that document's headings, nothing cites a document outside the
repository (L{CitationTests}), and every path of the checkout that the
Markdown documents, comments and docstrings name exists (L{PathTests}).
"""

import ast
import datetime
import glob
import io
import os
import re
import tokenize
from decimal import Decimal

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from smartmeter_tx.outputs.guard import HttpGuard
from smartmeter_tx.outputs.homeassistant.importer import HaImporter
from smartmeter_tx.outputs.echonetlan.bridge import EchonetLanBridge
from smartmeter_tx.outputs.mqtt.config import MqttConfig
from smartmeter_tx.outputs.mqtt.publisher import MqttPublisher
from smartmeter_tx.service.radio import FrameWindow
from smartmeter_tx.service.relay import MeterRelay
from smartmeter_tx.outputs.web import make_root
from smartmeter_tx.service.datalog import DataLog
from smartmeter_tx.model import JST, Reading
from tests.outputs.test_bill import bill_figures, records
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
    # The data log, the MQTT publisher, the HTTP limits and the LAN node only
    # report their counters here: no file is opened, no connection made.
    datalog = DataLog("never-written")
    publisher = MqttPublisher(MqttConfig.from_options("mqtt://broker.lan", None), poller,
                              clock, driver_factory=lambda *args: None)
    guard = HttpGuard(None, clock, 64)
    importer = HaImporter("http://ha.lan:8123", "token", poller, clock, lambda why: None)
    importer.last_hour = datetime.datetime(2026, 6, 1, 11, tzinfo=datetime.timezone.utc)
    bill = bill_figures(records(datetime.datetime(2026, 11, 30, 23, 30, tzinfo=JST), [1] * 3))
    bill.view.store.add(Reading(current_r_a=Decimal(12), current_t_a=Decimal(3)), 950.0)
    lan = EchonetLanBridge("192.0.2.1", poller, MeterRelay(
        lambda: None, lambda: None, lambda: None, clock, FrameWindow()), reactor=None)
    root = make_root(poller, clock.seconds, [datalog, publisher, guard, importer, bill, lan])
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


#: The checkout's folders a path may start from.  A path may also start from
#: a folder of the package (C{sk/protocol/host.py} is
#: C{smartmeter_tx/sk/protocol/host.py}): see L{path_roots}.
TOP_FOLDERS = ("smartmeter_tx", "tests", "bench", "docs", "examples", "twisted", ".ci", "addon")

#: The package, which the docs and comments cite paths relative to.
PACKAGE = os.path.join(CHECKOUT, "smartmeter_tx")

#: A word that may be a path: names joined by slashes, perhaps after C{../}.
#: A word glued to something before it (C{/dev/...}, C{~/.cache/...}, a URL's
#: path, C{$DIR/...}) is none of the checkout's.
#: (ASCII only, so that a Japanese word next to a path is not part of it.)
PATH_WORD = re.compile(r"(?<![\w/~$:.@-])((?:\.\.?/)*[\w.-]+(?:/[\w.-]+)*/?)", re.ASCII)

#: A file named without its folder: a module or a document.
BARE_NAME = re.compile(r"[\w-]+(?:\.[\w-]+)*\.(?:py|md)", re.ASCII)

#: What follows a word that is the start of a pattern, not a path
#: (C{docs/C{name}.md}, C{tests/**/*.py}, C{outputs/<name>/}).
PATTERN_AFTER = "{<*"

#: The Markdown documents whose paths are checked.
MARKDOWN = ("README.md", "docs/*.md", "bench/README.md")


def path_roots():
    """
    @return: the folder names a path of the checkout starts with: the
        checkout's own (L{TOP_FOLDERS}) and the package's folders.
    """
    return set(TOP_FOLDERS) | {name for name in os.listdir(PACKAGE)
                               if os.path.isdir(os.path.join(PACKAGE, name))
                               and not name.startswith(("_", "."))}


def cited_paths(text, roots):
    """
    The words of C{text} that are paths of the checkout.

    A word is one when it starts with C{../} or C{./}, when its first folder
    is one of C{roots}, or when it is a file name ending in C{.py} or C{.md}.  Absolute
    and home paths, URLs, dotted module names and slashed words such as
    C{E2/E4} are not.

    @return: C{[(line number from 1, path)]}.
    """
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for m in PATH_WORD.finditer(line):
            if line[m.end():m.end() + 1] and line[m.end()] in PATTERN_AFTER:
                continue
            word = m.group(1)
            if not word.endswith("../"):
                word = word.rstrip(".")
            parts = [p for p in word.split("/") if p not in ("", ".", "..")]
            if not parts:
                continue
            if ("/" in word and (parts[0] in roots or word.startswith(("./", "../")))
                    or "/" not in word and BARE_NAME.fullmatch(word)):
                found.append((number, word))
    return found


def top_level_names(module):
    """The names a module's file defines at its top level (functions, classes, assignments)."""
    with open(module, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def file_names():
    """The names of the checkout's files, for a file cited without its folder."""
    names = {name for name in os.listdir(CHECKOUT) if os.path.isfile(os.path.join(CHECKOUT, name))}
    for top in TOP_FOLDERS:
        for directory, dirs, files in os.walk(os.path.join(CHECKOUT, top)):
            dirs[:] = [d for d in dirs if not d.startswith(("_trial_temp", "__pycache__"))]
            names.update(files)
    return names


def path_exists(path, citer, names=None):
    """
    Whether C{path}, cited in the file C{citer} (relative to the checkout), is
    one of the checkout's.

    A path starting with C{../} or C{./} is taken from C{citer}'s folder.
    Otherwise it may be taken from C{citer}'s folder or one above it, or from
    the package; a module may be cited without C{.py}, and with one of its
    top-level names after a dot (C{echonet/meter.decode_reading}).  A file
    name alone must be the name of one of the checkout's files (C{names}, by
    default L{file_names}).
    """
    if "/" not in path:
        return path in (file_names() if names is None else names)
    here = os.path.dirname(os.path.join(CHECKOUT, citer))
    if path.startswith(("./", "../")):
        bases = [here]
    else:
        bases = [PACKAGE]
        while True:
            bases.append(here)
            if here == CHECKOUT or here == os.path.dirname(here):
                break
            here = os.path.dirname(here)
    for base in bases:
        full = os.path.normpath(os.path.join(base, path))
        if not full.startswith(CHECKOUT + os.sep):
            continue
        if os.path.exists(full) or os.path.isfile(full + ".py"):
            return True
        stem, dot, name = full.rpartition(os.sep)[2].partition(".")
        if dot and not path.endswith("/"):
            module = os.path.join(os.path.dirname(full), stem)
            module = module + ".py" if os.path.isfile(module + ".py") else os.path.join(module, "__init__.py")
            if os.path.isfile(module) and name.split(".")[0] in top_level_names(module):
                return True
    return False


def comments_and_docstrings(text):
    """
    The comments and docstrings of Python source C{text} (a string that
    stands alone as a statement counts as a docstring, as the C{#:} and
    attribute strings of epydoc do).

    @return: C{[(line number of the first line, text)]}.
    """
    out = [(tok.start[0], tok.string)
           for tok in tokenize.generate_tokens(io.StringIO(text).readline)
           if tok.type == tokenize.COMMENT]
    out.extend((node.lineno, node.value.value) for node in ast.walk(ast.parse(text))
               if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
               and isinstance(node.value.value, str))
    return out


def markdown_files():
    """The Markdown documents of L{MARKDOWN}, relative to the checkout."""
    return sorted(os.path.relpath(path, CHECKOUT) for pattern in MARKDOWN
                  for path in glob.glob(os.path.join(CHECKOUT, pattern)))


class PathTests(SynchronousTestCase):
    """
    Every path of the checkout that the Markdown documents, or the comments
    and docstrings of the Python files, name exists.
    """

    def setUp(self):
        if not os.path.exists(os.path.join(CHECKOUT, "docs", "PROTOCOL.md")):
            raise SkipTest("docs/ not found beside the tests (run outside a source checkout)")
        self.roots = path_roots()
        self.names = file_names()

    def missing(self, citer, text, first_line=1):
        """The paths C{text} (of C{citer}, from C{first_line}) names that do not exist."""
        return [f"{citer}:{first_line + number - 1}: {path}"
                for number, path in cited_paths(text, self.roots)
                if not path_exists(path, citer, self.names)]

    def test_markdownPathsExist(self):
        """Every path README.md, docs/*.md and bench/README.md name exists."""
        missing = []
        for citer in markdown_files():
            with open(os.path.join(CHECKOUT, citer), encoding="utf-8") as f:
                missing.extend(self.missing(citer, f.read()))
        self.assertEqual(missing, [])

    def test_sourcePathsExist(self):
        """Every path the Python files' comments and docstrings name exists."""
        missing = []
        for citer, text in source_texts():
            if citer.endswith(".py"):
                for line, part in comments_and_docstrings(text):
                    missing.extend(self.missing(citer, part, line))
        self.assertEqual(missing, [])

    def test_pathsFound(self):
        """The paths of the checkout are found, in the forms the docs write them."""
        text = ("see `sk/protocol.py` and smartmeter_tx/sk/protocol/host.py, [captures]"
                "(../tests/fixtures/captures.py); redact.py. `session/linkstate`,\n"
                "`echonet/meter.decode_reading`; venv/bin/python bench/soak.py; .ci/run "
                "twisted/plugins/ docs/ [up](../README.md)\n")
        self.assertEqual([path for _, path in cited_paths(text, path_roots())],
                         ["sk/protocol.py", "smartmeter_tx/sk/protocol/host.py",
                          "../tests/fixtures/captures.py", "redact.py", "session/linkstate",
                          "echonet/meter.decode_reading", "bench/soak.py", ".ci/run",
                          "twisted/plugins/", "docs/", "../README.md"])

    def test_otherPathsLeftOut(self):
        """Paths that are not the checkout's, and words that only look like paths, are left out."""
        text = ("/dev/ttyUSB0 /etc/smartmeter/password --data-log /var/lib/smartmeter/log "
                "`~/.cache/smartmeter_tx` ~/.local/state/smartmeter_tx /path/to/smartmeter_tx "
                "https://github.com/owner/repo/blob/main/tests/x.py /tmp/wisun "
                "$HOME/sk/x.py E2/E4 ROPT/WOPT smartmeter/ID/state homeassistant/sensor "
                "smartmeter_tx.emulator.loopback L{tests.fixtures.captures} docs/C{name}.md "
                "tests/**/*.py outputs/<name>/ DIR/smartmeter-YYYY-MM-DD.jsonl *.py .md\n"
                "/dev/serial/by-id/... C{(name, help)} 0.5 ms/s readings/s\n")
        self.assertEqual(cited_paths(text, path_roots()), [])

    def test_lineNumbers(self):
        """A path is reported on its own line of the text."""
        self.assertEqual(cited_paths("a\nb bench/soak.py\n\nsk/x.py\n", path_roots()),
                         [(2, "bench/soak.py"), (4, "sk/x.py")])

    def test_resolved(self):
        """Paths are taken from the checkout, the package and the citing file's folder."""
        for path, citer in [("sk/protocol/host.py", "docs/PROTOCOL.md"),
                            ("smartmeter_tx/sk/protocol/host.py", "README.md"),
                            ("../tests/fixtures/captures.py", "docs/PROTOCOL.md"),
                            ("session/linkstate", "docs/ARCHITECTURE.md"),
                            ("echonet/meter.decode_reading", "docs/ARCHITECTURE.md"),
                            ("sk/protocol/", "docs/ARCHITECTURE.md"),
                            ("captures.py", "smartmeter_tx/emulator/module.py"),
                            ("twisted/plugins/", "README.md")]:
            self.assertTrue(path_exists(path, citer), (path, citer))

    def test_missingFound(self):
        """A path that is not there, or a module's name that it does not define, is missing."""
        for path, citer in [("sk/protocol.py", "docs/PROTOCOL.md"),
                            ("../fixtures/captures.py", "docs/PROTOCOL.md"),
                            ("echonet/meter.no_such_name", "docs/ARCHITECTURE.md"),
                            ("bench/no_such_bench.py", "tests/cli/test_flood.py"),
                            ("no_such_module.py", "smartmeter_tx/emulator/module.py"),
                            ("../../etc/passwd", "docs/PROTOCOL.md")]:
            self.assertFalse(path_exists(path, citer), (path, citer))
