"""
C{mackerel-plugin-smartmeter} as mackerel-agent runs it: the console entry
point in a subprocess, with the built-in emulator, its logging as set up by
C{main()}.
"""

import os
import sys

from twisted.internet import utils
from twisted.trial.unittest import TestCase

from tests.emuloop import pinned

ENTRY = "from smartmeter_tx.cli.plugin import main; main()"


class JunkAtOpenTests(TestCase):
    """
    The port starts with the tail of an interrupted earlier run: a run that
    succeeds says nothing about it at the default verbosity; --verbosity 2
    shows it.
    """

    timeout = 60  # only catches a hang

    def plugin(self, *argv):
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTMETER_")}
        env["MACKEREL_PLUGIN_WORKDIR"] = workdir
        spec = pinned("emulator:?junk-at-open=on&time-scale=0.01")
        d = utils.getProcessOutputAndValue(sys.executable, ["-c", ENTRY, "--device", spec, *argv],
                                           env=env, path=workdir)
        return d.addCallback(lambda r: (r[2], r[0].decode(), r[1].decode()))

    def test_quietByDefault(self):
        """Exit 0, the metric lines on stdout, and nothing on stderr."""
        def check(result):
            code, out, err = result
            self.assertEqual((code, err), (0, ""))
            self.assertIn("smartmeter.power.value\t", out)
        return self.plugin().addCallback(check)

    def test_shownAtVerbosity2(self):
        """With --verbosity 2 the dropped junk is reported, and the run still succeeds."""
        def check(result):
            code, out, err = result
            self.assertEqual(code, 0, err)
            self.assertIn("smartmeter.power.value\t", out)
            self.assertIn("dropping unrecognised line from the module", err)
        return self.plugin("--verbosity", "2").addCallback(check)


class VersionTests(TestCase):
    """Every command answers --version with its name and ours, exit 0."""

    timeout = 60  # only catches a hang

    def test_everyCommand(self):
        from smartmeter_tx import __version__
        commands = {
            "mackerel-plugin-smartmeter": ["-c", ENTRY],
            "smartmeter-history": ["-c", "from smartmeter_tx.cli.history import main; main()"],
            "check-smartmeter": ["-c", "from smartmeter_tx.cli.check import main; main()"],
            "smartmeter-emulator": ["-c", "from smartmeter_tx.emulator.cli import main; main()"],
            "twist smartmeter": ["-m", "twisted", "smartmeter"],
        }
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)

        def run(argv):
            return utils.getProcessOutputAndValue(sys.executable, argv + ["--version"],
                                                  env=dict(os.environ), path=workdir)

        def check(results):
            for name, (ok, (out, err, code)) in zip(commands, results):
                self.assertTrue(ok, name)
                self.assertEqual((code, out.decode(), err.decode()),
                                 (0, f"{name} (smartmeter_tx) {__version__}\n", ""), name)
        from twisted.internet import defer
        return defer.DeferredList([run(argv) for argv in commands.values()]).addCallback(check)
