"""
C{mackerel-plugin-smartmeter} (L{smartmeter_tx.cli.plugin.run}) over a lossy
radio, on the L{task.Clock} loopback instead of a pty: the plugin's whole run
(argument parsing, state file, L{BRouteClient}, L{SKStackProtocol},
transcript and output) against the emulator, with only Twisted's SerialPort
replaced by the in-memory loopback.  Simulated time, so the loss pattern is
the same on every run and no half-hourly INF can land in the middle of it.
"""

import datetime
import io
import os
import re

from twisted.internet import defer, serialport
from twisted.trial import unittest

from smartmeter_tx.cli import common, plugin
from smartmeter_tx.echonet import meter as M
from smartmeter_tx.emulator.device import DEFAULT_ID, DEFAULT_PASSWORD
from smartmeter_tx.sk.values import Dialect
from tests.emuloop import START, Loop
from tests.outputs.test_mackerel import agent_parse


class PluginOnLoopback:
    """
    Run L{plugin.run} with a L{Loop}'s clock as its reactor and the loop as
    its device: C{twisted.internet.serialport.SerialPort} (which the product
    looks up when it opens the device) is replaced by one that connects the
    plugin's protocol to the loop, so everything above the serial port is the
    product's.
    """

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.state = os.path.join(self.dir, "state.json")
        self.env = {"SMARTMETER_ID": DEFAULT_ID, "SMARTMETER_PASSWORD": DEFAULT_PASSWORD}
        self.opened = []

    def loop(self, **knobs):
        loop = Loop(start=START, **knobs)
        self.addCleanup(loop.stop)

        test = self

        class SerialPort:
            # A class, as the product subclasses it (to lock the port).
            def __init__(self, protocol, path, reactor, baudrate=9600, **kwargs):
                test.assertIs(reactor, loop.clock)
                test.opened.append((path, baudrate))
                loop.connect(protocol)
        self.patch(serialport, "SerialPort", SerialPort)
        return loop

    def run_plugin(self, loop, *argv):
        """
        Run the plugin to completion in simulated time.

        @return: C{(exit code, stdout, stderr)}.
        """
        out, err = io.StringIO(), io.StringIO()
        argv = [*argv, "--state-file", self.state]
        d = defer.Deferred.fromCoroutine(
            plugin.run(loop.clock, argv, environ=self.env, stdout=out, stderr=err))
        # The plugin's own --timeout (25 s by default) bounds the run; the
        # limit only turns a run that never ends into a failure.
        loop.run(d, limit=600)
        loop.flush()
        self.assertTrue(d.called, "the plugin run did not finish in 600 simulated seconds")
        return self.successResultOf(d), out.getvalue(), err.getvalue()

    def truth(self, loop, epc):
        return [r for r in loop.emulator.truth if r.epc == epc and r.seoj == 0x028801]


class LossyRadioTests(PluginOnLoopback, unittest.TestCase):
    def test_staleAndLossy(self):
        """
        With lost frames, late answers carrying stale TIDs and stray lines, every
        printed power is the value of the frame that answered the last request.
        """
        loop = self.loop(dialect=Dialect.DSE, loss=0.2, stale=0.3, garbage=0.2, seed=11,
                         echo=False)
        printed = 0
        for i in range(6):
            code, out, err = self.run_plugin(loop, "--device", "/dev/ttyLOOP", "--verbosity", "3")
            if code != 0:
                # A run that gives up fails cleanly: nothing printed, no bug.
                self.assertEqual(out, "")
                self.assertNotEqual(code, common.EXIT_BUG, err)
                continue
            printed += 1
            tids = re.findall(r"^> SKSENDTO .*<\d+ bytes: 1081(\w{4})", err, re.M)
            answers = [r for r in self.truth(loop, M.POWER) if r.tid == int(tids[-1], 16)]
            self.assertEqual(agent_parse(out)["smartmeter.power.value"], answers[-1].value)
        self.assertEqual(self.opened, [("/dev/ttyLOOP", 115200)] * 6)
        self.assertGreaterEqual(printed, 5)
        # The radio really was lossy: requests were sent again.
        self.assertGreater(loop.sent.count("SKSENDTO"), 6, loop.sent)
        # No half-hourly INF fell inside the runs: the scenario is the one intended.
        self.assertLess(loop.emulator.meter_now(), datetime.datetime(2024, 6, 1, 12, 30))
