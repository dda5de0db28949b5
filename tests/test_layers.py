"""
The package's shape, enforced: which room (subpackage or top-level module)
may import which, no cycle between rooms, the pure modules load without
Twisted, no module imports another's private names, and no class or function
grows past the size that says it holds two jobs.

The table is the one docs/ARCHITECTURE.md draws; a change to the layering
changes both.
"""

import ast
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

import smartmeter_tx

#: The package's source, wherever it is installed (editable or not), and the
#: folder that holds it (for a child interpreter's PYTHONPATH).
PACKAGE = os.path.dirname(os.path.abspath(smartmeter_tx.__file__))
SOURCE_ROOT = os.path.dirname(PACKAGE)

#: Room -> the rooms it may import.  A room is a subpackage, or a top-level
#: module; C{smartmeter_tx} itself (the version) may be imported by all.
ALLOWED = {
    "errors": set(),
    "redact": set(),
    "model": {"errors"},
    "sk": {"errors", "redact"},
    "echonet": {"errors", "model", "sk"},
    "session": {"errors", "redact", "model", "sk", "echonet"},
    "service": {"errors", "model", "echonet", "session"},
    "bill": {"errors", "model"},
    # (echonet: the LAN bridge speaks ECHONET Lite itself.)
    "outputs": {"errors", "model", "echonet", "service", "session", "bill"},
    "emulator": {"errors", "model", "sk", "echonet"},
    "cli": {"errors", "redact", "model", "sk", "echonet", "session", "service", "outputs",
            "emulator", "bill"},
}

#: Modules that must load without Twisted (each is imported in a fresh
#: interpreter): the codecs and the pure owners of state and formatting.
PURE_MODULES = [
    "smartmeter_tx.errors",
    "smartmeter_tx.redact",
    "smartmeter_tx.model",
    "smartmeter_tx.bill.tariff",
    "smartmeter_tx.bill.pricing",
    "smartmeter_tx.sk.events",
    "smartmeter_tx.sk.values",
    "smartmeter_tx.sk.parse",
    "smartmeter_tx.sk.commands",
    "smartmeter_tx.sk.errors",
    "smartmeter_tx.sk.framing",
    "smartmeter_tx.echonet.frame",
    "smartmeter_tx.echonet.meter",
    "smartmeter_tx.echonet.history",
    "smartmeter_tx.session.linkstate",
    "smartmeter_tx.session.state",
    "smartmeter_tx.service.store",
    "smartmeter_tx.service.backoff",
    "smartmeter_tx.service.radio",
    "smartmeter_tx.service.meterprops",
    "smartmeter_tx.outputs.mackerel",
    # The dashboard's data and words; its page and charts are twisted.web.template
    # tags, which the package loads on first use only.
    "smartmeter_tx.outputs.dashboard",
    "smartmeter_tx.outputs.dashboard.snapshot",
    "smartmeter_tx.outputs.dashboard.text",
    "smartmeter_tx.outputs.mqtt.config",
    "smartmeter_tx.outputs.mqtt.payloads",
    "smartmeter_tx.outputs.mqtt.outbox",
    "smartmeter_tx.outputs.mqtt.faults",
    "smartmeter_tx.outputs.tlshint",
    "smartmeter_tx.outputs.exposition",
    "smartmeter_tx.outputs.homeassistant.statistics",
    "smartmeter_tx.outputs.echonetlan.node",
]

#: The largest class and function, in lines, outside and inside the emulator.
MAX_CLASS, MAX_FUNCTION = 300, 70
MAX_EMULATOR_CLASS = 400


def modules():
    """
    @return: C{[(dotted name, path)]} of every module of the package.
    """
    found = []
    for directory, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3]
                dotted = rel.replace(os.sep, ".")
                if dotted.endswith(".__init__"):
                    dotted = dotted[:-len(".__init__")]
                found.append((dotted, path))
    return found


def parse(path):
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), path)


def imported(tree):
    """
    @return: C{[(module, name or None, line)]} for every absolute import of
        C{tree}, wherever it stands (functions' lazy imports included).
    """
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, None, node.lineno))
            out.extend((node.module, alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.Import):
            out.extend((alias.name, None, node.lineno) for alias in node.names)
    return out


def room(dotted):
    """
    The room of a module of ours (C{smartmeter_tx.session.client} ->
    C{session}), C{""} for the package itself, C{None} for anything else.
    """
    parts = dotted.split(".")
    if parts[0] != "smartmeter_tx":
        return None
    return parts[1] if len(parts) > 1 else ""


def room_imports():
    """
    @return: C{{(from room, to room): [where, ...]}} over the whole package,
        C{where} naming the file and line.
    """
    edges = {}
    for dotted, path in modules():
        source = room(dotted)
        for module, name, line in imported(parse(path)):
            target = room(f"{module}.{name}" if name else module)
            if target in (None, "", source) or target not in ALLOWED:
                continue
            edges.setdefault((source, target), []).append(
                f"{os.path.relpath(path, PACKAGE)}:{line}")
    return edges


def cycles(edges):
    """@return: a cycle among rooms as a list, or C{None}."""
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def imports_twisted(module):
    """
    Import C{module} in a fresh interpreter and report whether any Twisted
    module got loaded along with it.
    """
    code = ("import %s, sys; print(any(m == 'twisted' or m.startswith('twisted.') "
            "for m in sys.modules))" % (module,))
    env = dict(os.environ)
    env["PYTHONPATH"] = SOURCE_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-c", code], cwd=SOURCE_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError("importing %s failed:\n%s" % (module, result.stderr))
    return result.stdout.strip()


class LayeringTests(SynchronousTestCase):
    """The rooms of the package import downward only, as L{ALLOWED} says."""

    def test_everyRoomInTheTable(self):
        """Every subpackage and top-level module of the package has a row in the table."""
        rooms = {room(dotted) for dotted, _ in modules()} - {""}
        self.assertEqual(rooms - set(ALLOWED), set())

    def test_onlyAllowedImports(self):
        """No room imports a room its row does not list."""
        wrong = {f"{a} -> {b}": where for (a, b), where in room_imports().items()
                 if b not in ALLOWED[a]}
        self.assertEqual(wrong, {})

    def test_noCycle(self):
        """The rooms' imports form no cycle."""
        self.assertIsNone(cycles(room_imports()))

    def test_cycleFound(self):
        """The cycle search finds one, so the test above can fail."""
        self.assertEqual(cycles({("a", "b"): [], ("b", "c"): [], ("c", "a"): []}),
                         ["a", "b", "c", "a"])
        self.assertIsNone(cycles({("a", "b"): [], ("a", "c"): [], ("b", "c"): []}))

    def test_serviceNeitherSKNorOutputs(self):
        """The service reaches the meter through the session and never imports an output."""
        edges = room_imports()
        self.assertNotIn(("service", "sk"), edges)
        self.assertNotIn(("service", "outputs"), edges)
        self.assertNotIn(("service", "cli"), edges)

    def test_emulatorOnlyFromTheFrontEnds(self):
        """Nothing but the front ends (the emulator: device, the commands) imports the emulator."""
        importers = {a for (a, b) in room_imports() if b == "emulator"}
        self.assertEqual(importers - {"cli"}, set())

    def test_noPrivateImports(self):
        """No module imports a private name (C{_x}) of another module of ours."""
        found = []
        for dotted, path in modules():
            for module, name, line in imported(parse(path)):
                if room(module) is not None and name and name.startswith("_") \
                        and not name.startswith("__"):
                    found.append(f"{os.path.relpath(path, PACKAGE)}:{line} {module}.{name}")
        self.assertEqual(found, [])


class ReactorTests(SynchronousTestCase):
    """Time is injected: only the entry points know the global reactor."""

    #: The entry points: twist's makeService and smartmeter-emulator's main
    #: (the one-shot commands get theirs from task.react).
    ENTRY_POINTS = {"smartmeter_tx.cli.tap", "smartmeter_tx.emulator.cli"}

    def test_onlyEntryPointsImportTheReactor(self):
        """No module but an entry point imports twisted.internet.reactor."""
        found = set()
        for dotted, path in modules():
            for module, name, _ in imported(parse(path)):
                if (module, name) == ("twisted.internet", "reactor") or \
                        module == "twisted.internet.reactor":
                    found.add(dotted)
        self.assertEqual(found - self.ENTRY_POINTS, set())
        self.assertEqual(found, self.ENTRY_POINTS)


class SizeTests(SynchronousTestCase):
    """No class or function holds two jobs' worth of lines."""

    def test_sizes(self):
        """
        Outside the emulator no class is over 300 lines and no function
        over 70; inside it no class over 400 and no function over 70.
        """
        big = []
        for dotted, path in modules():
            max_class = MAX_EMULATOR_CLASS if ".emulator" in dotted else MAX_CLASS
            for node in ast.walk(parse(path)):
                size = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
                if isinstance(node, ast.ClassDef) and size > max_class:
                    big.append(f"class {dotted}.{node.name}: {size} lines")
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                        and size > MAX_FUNCTION:
                    big.append(f"function {dotted}.{node.name}: {size} lines")
        self.assertEqual(big, [])


class PurityTests(SynchronousTestCase):
    """The pure modules load without Twisted."""

    def test_pureModules(self):
        """Importing all the pure modules in one fresh interpreter loads no Twisted module."""
        self.assertEqual(imports_twisted(", ".join(PURE_MODULES)), "False")

    def test_eachPureModule(self):
        """Each pure module alone loads no Twisted module (its own imports are pure too)."""
        loaded = [m for m in PURE_MODULES if imports_twisted(m) != "False"]
        self.assertEqual(loaded, [])

    def test_checkDetectsTwisted(self):
        """The check reports True for a module that does import Twisted, so it can fail."""
        self.assertEqual(imports_twisted("twisted.internet.defer"), "True")
