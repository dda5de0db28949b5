"""
Tests for L{smartmeter_tx.service.port.PortKeeper}: opening the serial port,
reopening it with backoff when it is lost or missing, on a task.Clock.
"""

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.session import config
from smartmeter_tx.session import join
from smartmeter_tx.service.backoff import Backoff
from smartmeter_tx.emulator.module import DEFAULT_ID, DEFAULT_PASSWORD
from smartmeter_tx.service.port import PortKeeper
from tests.emuloop import Loop

CONFIG = config.SessionConfig(join.Credentials(DEFAULT_ID, DEFAULT_PASSWORD))


class PortKeeperTests(SynchronousTestCase):
    def setUp(self):
        self.loop = Loop(clock=Clock())
        self.addCleanup(self.loop.stop)
        self.opened = []
        self.keeper = PortKeeper(self.loop.connect, self.loop.clock,
                                 lambda: CONFIG.new_protocol(self.loop.clock),
                                 lambda proto: CONFIG.client(proto, self.loop.clock),
                                 self.opened.append, Backoff(1.0, 10.0, random.Random(0)))
        self.addCleanup(self.keeper.stop)

    def test_opensAtStart(self):
        """start() opens the port at once and hands the new client to on_open."""
        self.keeper.start()
        self.assertEqual(self.opened, [self.keeper.client])
        self.assertTrue(self.keeper.client.sk.connected_now)
        self.assertEqual(self.keeper.reopens, 0)

    def test_missingThenPlugged(self):
        """A device missing at start is tried again with backoff until it opens."""
        tries = []
        connect = self.keeper.open_port

        def open_port(proto):
            tries.append(self.loop.clock.seconds())
            return connect(proto)
        self.keeper.open_port = open_port
        self.loop.unplugged = True
        self.keeper.start()
        self.assertIsNone(self.keeper.client)
        self.loop.advance(30)
        self.assertEqual(self.opened, [])
        self.assertGreater(len(tries), 3)  # tried again and again, with backoff
        gaps = [b - a for a, b in zip(tries, tries[1:])]
        self.assertLessEqual(max(gaps), 15.0)
        self.loop.unplugged = False
        self.loop.advance(15)  # the backoff is capped at 10 s (x 1.5 jitter)
        self.assertEqual(len(self.opened), 1)
        self.assertEqual(self.keeper.reopens, 0)  # the first open is not a reopen

    def test_lostIsReopened(self):
        """A lost link is reopened at the same path; the frames of both connections add up."""
        self.keeper.start()
        first = self.keeper.client
        first.requester.frames_sent = 3  # as if three Gets had gone out
        self.loop.disconnect()
        self.assertIsNone(self.keeper.client)
        self.loop.advance(2)
        self.assertEqual(len(self.opened), 2)
        self.assertIsNot(self.keeper.client, first)
        self.assertEqual(self.keeper.reopens, 1)
        self.keeper.client.requester.frames_sent = 2
        self.assertEqual(self.keeper.frames, 5)

    def test_stopCancelsReopen(self):
        """stop() leaves no reopen timer behind and closes the port."""
        self.keeper.start()
        self.loop.unplugged = True
        self.loop.disconnect()
        self.assertTrue(self.loop.clock.getDelayedCalls())
        self.keeper.stop()
        pending = [c for c in self.loop.clock.getDelayedCalls()
                   if getattr(c.func, "__self__", None) is self.keeper]
        self.assertEqual(pending, [])
        self.loop.unplugged = False
        self.loop.advance(60)
        self.assertEqual(len(self.opened), 1)

    def test_portHeldElsewhere(self):
        """A port held by another program is logged as such and tried again with backoff."""
        from twisted.logger import formatEvent, globalLogPublisher

        from smartmeter_tx.cli.options import DeviceBusy
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        held = [True]

        def open_port(proto):
            if held[0]:
                raise DeviceBusy("/dev/ttyUSB0")
            return self.loop.connect(proto)
        self.keeper.open_port = open_port
        self.keeper.start()
        self.loop.advance(20)
        texts = [formatEvent(e) for e in logged if "in use" in formatEvent(e)]
        self.assertGreaterEqual(len(texts), 2)
        self.assertIn("cannot open the module (/dev/ttyUSB0 is in use by another program); "
                      "retrying in", texts[0])
        held[0] = False
        self.loop.advance(15)
        self.assertEqual(len(self.opened), 1)
