"""
Tests for L{smartmeter_tx.service.tree}: the one way in for outputs.  The
records' fan-out (the data log first, then each output in order; a failing
output logged while the others go on), and an output registered on the
service C{makeService} builds: it gets the emulated meter's readings, fixed
readings and history slots in order, and its figures are on C{/metrics}.
"""

from __future__ import annotations

import json
import os

from twisted.application import service
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from smartmeter_tx.emulator.module import DEFAULT_ID, DEFAULT_PASSWORD
from smartmeter_tx.errors import ArgumentError
from smartmeter_tx.service.interfaces import Figure, IMetricsSource, IRecordReceiver
from smartmeter_tx.service.tree import RecordFanout
from tests.cli.test_tap import WALL, clean_environ, parse
from tests.emuloop import Loop


@implementer(IRecordReceiver, IMetricsSource)
class TallyOutput(service.Service):
    """A small output: it keeps what it receives and counts it on /metrics."""

    def __init__(self, name="tally", fail=False) -> None:
        self.name = name
        self.fail = fail
        self.records: list = []

    def recordReceived(self, record, when):
        self.records.append((record.get("kind", "reading"), record, when))
        if self.fail:
            raise RuntimeError("this output breaks on every record")

    def metrics(self):
        return [Figure(f"smartmeter_{self.name}_records", "counter", "Records received",
                       len(self.records))]


class _Log:
    """A stand-in data log: writes what it is told to, or refuses."""

    def __init__(self, order: list, writes: bool = True) -> None:
        self.order = order
        self.writes = writes

    def write(self, record, when):
        self.order.append(("log", record))
        return self.writes


@implementer(IRecordReceiver)
class _Ordered:
    def __init__(self, name: str, order: list, fail: bool = False) -> None:
        self.name, self.order, self.fail = name, order, fail

    def recordReceived(self, record, when):
        self.order.append((self.name, record))
        if self.fail:
            raise RuntimeError("broken")


class RecordFanoutTests(SynchronousTestCase):
    def setUp(self):
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def test_logFirstThenOutputsInOrder(self):
        """RecordFanout writes the data log first, then each output in the order registered."""
        order = []
        fanout = RecordFanout(_Log(order))
        for name in ("a", "b"):
            fanout.add(_Ordered(name, order))
        record = {"power_w": 1}
        self.assertIs(fanout(record, 1.0), True)
        self.assertEqual(order, [("log", record), ("a", record), ("b", record)])

    def test_failingOutputIsLogged(self):
        """An output that raises is logged, and the outputs after it still get the record."""
        order = []
        fanout = RecordFanout()
        fanout.add(_Ordered("broken", order, fail=True))
        fanout.add(_Ordered("fine", order))
        fanout({"power_w": 2}, 1.0)
        self.assertEqual([name for name, _ in order], ["broken", "fine"])
        failures = [e for e in self.logged if e.get("log_failure") is not None]
        self.assertEqual(len(failures), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_unloggedSlotGoesNowhere(self):
        """
        A slot the data log cannot write reaches no output (the backfill reads
        it again later); a reading it cannot write still does.
        """
        order = []
        fanout = RecordFanout(_Log(order, writes=False))
        fanout.add(_Ordered("out", order))
        slot = {"kind": "history", "slot": "2026-06-01T10:00:00+09:00"}
        self.assertIs(fanout(slot, 1.0), False)
        self.assertIs(fanout({"power_w": 3}, 2.0), False)
        self.assertEqual([name for name, _ in order], ["log", "log", "out"])

    def test_refusesANonReceiver(self):
        """Only an IRecordReceiver may be added."""
        self.assertRaises(ArgumentError, RecordFanout().add, object())

    def test_outputsProvideTheContract(self):
        """The product's outputs declare and provide the contracts."""
        from smartmeter_tx.outputs.homeassistant.importer import HaImporter
        from smartmeter_tx.outputs.mqtt.publisher import MqttPublisher
        from smartmeter_tx.outputs.web import WebService
        for cls in (MqttPublisher, HaImporter):
            self.assertTrue(IRecordReceiver.implementedBy(cls), cls)
            self.assertTrue(IMetricsSource.implementedBy(cls), cls)
        self.assertTrue(IMetricsSource.implementedBy(WebService))
        verifyObject(IRecordReceiver, TallyOutput())
        verifyObject(IMetricsSource, TallyOutput())


class _BuiltService:
    """The tree makeService builds, on the emulator and a memory reactor."""

    def setUp(self):
        clean_environ(self)
        self.reactor = MemoryReactorClock()
        self.loop = Loop(clock=self.reactor)
        self.addCleanup(self.loop.stop)
        from smartmeter_tx.cli.tap import makeService
        options = parse("--device", "/dev/ttyUSB-test", "--state-file", self.mktemp(),
                        "--interval", "10", "--energy-interval", "60", "--id", DEFAULT_ID,
                        "--password", DEFAULT_PASSWORD, "--data-log", self.mktemp())
        self.top = makeService(options, reactor=self.reactor, open_port=self.loop.connect,
                               wall_clock=lambda: WALL + self.reactor.seconds())

    def start(self):
        self.top.startService()
        self.addCleanup(lambda: self.top.running and self.top.stopService())

    def scrape(self) -> bytes:
        [(_, guard, _, _)] = self.reactor.tcpServers
        request = DummyRequest([b"metrics"])
        return getChildForRequest(guard.wrappedFactory.resource, request).render(request)


class RegisterAnOutputTests(_BuiltService, SynchronousTestCase):
    """A new output is one registration on the tree makeService builds."""

    def test_smallOutput(self):
        """
        A registered output gets every record the data log gets, in its
        order (readings, fixed readings, history slots), and its figure is
        on /metrics.
        """
        tally = TallyOutput()
        self.top.addOutput(tally)
        self.assertIn(tally, list(self.top))
        self.start()
        self.loop.advance(2400)  # the meter announces its :30 reading meanwhile
        kinds = [kind for kind, _, _ in tally.records]
        self.assertEqual(set(kinds), {"reading", "fixed", "history"}, kinds)
        directory = self.top.records.datalog.directory
        logged = []
        for name in sorted(os.listdir(directory)):
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                logged += [json.loads(line)["time"] for line in f]
        self.assertEqual([round(when, 3) for _, _, when in tally.records], logged)
        self.assertIn(f"smartmeter_tally_records_total {len(tally.records)}.0".encode(),
                      self.scrape())

    def test_brokenOutputStopsNothing(self):
        """An output that fails on every record leaves the data log and the others whole."""
        broken, tally = TallyOutput("broken", fail=True), TallyOutput()
        self.top.addOutput(broken)
        self.top.addOutput(tally)
        self.start()
        self.loop.advance(25)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), len(broken.records))
        self.assertEqual(len(broken.records), len(tally.records))
        self.assertEqual(self.top.records.datalog.lines_written, len(tally.records))
        self.assertEqual(self.top.poller.stats.polls_answered, 2)


class IdleTests(_BuiltService, SynchronousTestCase):
    """
    Between two polls nothing of the service runs: its only timer is the
    next poll's.  A timer that fires while there is nothing to do wakes a
    small board for nothing (Twisted's HTTP factory refreshes a log date
    every second, for instance).
    """

    def test_onlyTheNextPollIsDue(self):
        """
        With the data log, the backfill and HTTP, once the backfill is done
        and a poll answered, the one timer of the service is the poll loop's.
        """
        self.start()
        [(_, guard, _, _)] = self.reactor.tcpServers
        guard.doStart()  # as listening does; a MemoryReactor does not
        self.addCleanup(guard.doStop)
        self.loop.advance(605)  # half way between two polls (every 10 s)
        self.assertGreater(self.top.poller.backfill.written, 0)
        self.assertEqual(self.top.poller.backfill.missing, 0)  # the backfill is done
        self.assertTrue(self.top.poller.stats.polls_answered)
        ours = [call for call in self.reactor.getDelayedCalls()
                if not call.func.__module__.startswith("smartmeter_tx.emulator")]
        self.assertEqual([describe(call) for call in ours], ["LoopingCall"])


def describe(call) -> str:
    """A delayed call's function, by its class or name."""
    owner = getattr(call.func, "__self__", None)
    if owner is not None:
        return type(owner).__name__
    return getattr(call.func, "__qualname__", type(call.func).__name__)
