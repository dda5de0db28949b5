"""
The pure codec modules import nothing from Twisted: each is imported in a fresh
interpreter (a subprocess, not the reactor) and its sys.modules inspected.
"""

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

#: The repository root, so the subprocess imports this checkout (trial runs
#: tests from its own _trial_temp directory).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PURE_MODULES = [
    "smartmeter_tx.errors",
    "smartmeter_tx.model",
    "smartmeter_tx.sk.events",
    "smartmeter_tx.sk.values",
    "smartmeter_tx.sk.parse",
    "smartmeter_tx.sk.commands",
    "smartmeter_tx.sk.framing",
    "smartmeter_tx.echonet.frame",
    "smartmeter_tx.echonet.meter",
    "smartmeter_tx.echonet.history",
    "smartmeter_tx.outputs.mackerel",
    "smartmeter_tx.outputs.dashboard",
    "smartmeter_tx.outputs.mqtt.config",
    "smartmeter_tx.outputs.mqtt.payloads",
    "smartmeter_tx.redact",
    "smartmeter_tx.session.linkstate",
    "smartmeter_tx.service.store",
    "smartmeter_tx.service.backoff",
]


def _imports_twisted(module):
    """
    Import C{module} in a fresh interpreter and report whether any Twisted
    module got loaded along with it.
    """
    code = ("import %s, sys; print(any(m == 'twisted' or m.startswith('twisted.') "
            "for m in sys.modules))" % (module,))
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError("importing %s failed:\n%s" % (module, result.stderr))
    return result.stdout.strip()


class PurityTests(SynchronousTestCase):
    """
    Each pure module loads without Twisted.
    """

    def test_errors(self):
        """Importing smartmeter_tx.errors loads no Twisted module."""
        self.assertEqual(_imports_twisted("smartmeter_tx.errors"), "False")

    def test_lines(self):
        """Importing the SK line codec (values, parse, commands, events) loads no Twisted module."""
        self.assertEqual(_imports_twisted("smartmeter_tx.sk.values, smartmeter_tx.sk.parse, "
                                          "smartmeter_tx.sk.commands, smartmeter_tx.sk.events"),
                         "False")

    def test_framing(self):
        """Importing smartmeter_tx.sk.framing loads no Twisted module."""
        self.assertEqual(_imports_twisted("smartmeter_tx.sk.framing"), "False")

    def test_frame(self):
        """Importing smartmeter_tx.echonet.frame loads no Twisted module."""
        self.assertEqual(_imports_twisted("smartmeter_tx.echonet.frame"), "False")

    def test_meter(self):
        """Importing smartmeter_tx.echonet.meter loads no Twisted module."""
        self.assertEqual(_imports_twisted("smartmeter_tx.echonet.meter"), "False")

    def test_stateAndFormatting(self):
        """
        The pure owners of link state, latest readings, backoff, secrets and
        Mackerel output each load without Twisted.
        """
        for module in ("smartmeter_tx.outputs.mackerel", "smartmeter_tx.redact",
                       "smartmeter_tx.session.linkstate", "smartmeter_tx.service.store", "smartmeter_tx.service.backoff"):
            self.assertEqual(_imports_twisted(module), "False", module)

    def test_all_together(self):
        """Importing all the pure modules in one interpreter loads no Twisted module."""
        self.assertEqual(_imports_twisted(", ".join(PURE_MODULES)), "False")

    def test_check_detects_twisted(self):
        """The check reports True for a module that does import Twisted, so it can fail."""
        self.assertEqual(_imports_twisted("twisted.internet.defer"), "True")


class LayeringTests(SynchronousTestCase):
    """
    The service talks to the meter only through the client: neither the
    poller nor the HTTP face imports the SK layer.
    """

    def test_serviceImportsNoSK(self):
        """smartmeter_tx/service/poller.py, store.py and web.py import nothing from smartmeter_tx.sk."""
        import ast
        for name in ("service/poller.py", "service/store.py", "outputs/web.py"):
            path = os.path.join(ROOT, "smartmeter_tx", *name.split("/"))
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            imported = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module:
                    imported.add(node.module)
                    imported.update(f"{node.module}.{a.name}" for a in node.names)
                elif isinstance(node, ast.Import):
                    imported.update(a.name for a in node.names)
            self.assertTrue(imported, name)
            self.assertEqual([m for m in imported if m.startswith("smartmeter_tx.sk")
                              or m == "smartmeter_tx.sk"], [], name)
