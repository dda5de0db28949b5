"""
Tests for L{smartmeter_tx.outputs.guard}: the connection cap and the header
deadline in front of the HTTP site, on a L{Clock} with string transports.
(The flood against a running service with a low open-file limit is in
L{tests.cli.test_flood}.)
"""

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import resource, server, static

from smartmeter_tx.outputs.guard import HEADER_TIMEOUT, HttpGuard, default_max_connections
from smartmeter_tx.service.interfaces import figures as figures_of

ADDRESS = IPv4Address("TCP", "127.0.0.1", 40000)


def site(clock):
    root = resource.Resource()
    root.putChild(b"latest", static.Data(b'{"power_w": 1}', "application/json"))
    return server.Site(root, reactor=clock)


class Transport(StringTransport):
    """A string transport that, like TCP's, can be told its connection is lost."""

    def connectionLost(self, reason):
        if not self.disconnected:
            self.disconnected = True
            self.protocol.connectionLost(reason)


class _Peers:
    """Connections to C{self.guard} from one address, hung up when the test ends."""

    def connect(self, trickle: bytes = b""):
        """
        A newcomer, sending C{trickle} (part of a request, or nothing).

        @return: C{(protocol, transport)}, or C{(None, None)} when refused.
        """
        protocol = self.guard.buildProtocol(ADDRESS)
        if protocol is None:
            return None, None
        transport = Transport(peerAddress=ADDRESS)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        self.transports.append(transport)
        self.addCleanup(self.close, protocol)
        if trickle:
            protocol.dataReceived(trickle)
        return protocol, transport

    def close(self, protocol):
        """The peer hangs up (once)."""
        if protocol in self.guard.protocols:
            protocol.connectionLost(Failure(ConnectionDone()))


class GuardTests(_Peers, SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.guard = HttpGuard(site(self.clock), self.clock, max_connections=2)
        self.transports = []

    def test_answers(self):
        """A whole request is answered as the site answers it."""
        protocol, transport = self.connect()
        self.request(protocol)
        self.assertIn(b'{"power_w": 1}', transport.value())
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))

    def request(self, protocol):
        protocol.dataReceived(b"GET /latest HTTP/1.1\r\nHost: x\r\n\r\n")

    def test_waitingGiveWay(self):
        """
        At the cap a newcomer takes the place of the oldest connection still
        waiting for its headers, closed at once; a busy one is kept.
        """
        busy, busy_transport = self.connect()
        self.request(busy)
        idle, idle_transport = self.connect()
        newcomer, transport = self.connect()
        self.assertTrue(idle_transport.disconnected)
        self.assertFalse(busy_transport.disconnected)
        self.assertEqual(len(self.guard.protocols), 2)
        self.request(newcomer)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))
        figures = figures_of([self.guard])
        self.assertEqual(figures, {"smartmeter_http_connections": 2,
                                   "smartmeter_http_refused": 0,
                                   "smartmeter_http_evicted": 1,
                                   "smartmeter_http_header_timeouts": 0})

    def test_allBusy(self):
        """When every connection has just had a request, the newcomer is closed instead."""
        for _ in range(2):
            protocol, _ = self.connect()
            self.request(protocol)
        self.assertEqual(self.connect(), (None, None))
        self.assertEqual(self.guard.refused, 1)
        # A second later they count as idle: the longest idle gives way.
        self.clock.advance(1.5)
        first = next(iter(self.guard.protocols))
        protocol, _ = self.connect()
        self.assertIsNotNone(protocol)
        self.assertNotIn(first, self.guard.protocols)
        self.assertEqual(self.guard.evicted, 1)

    def test_slowHeaders(self):
        """Headers that trickle in, however steadily, are cut off at the deadline."""
        protocol, transport = self.connect()
        for byte in b"GET /latest HTTP/1.1\r\nHost: x\r\n":
            self.clock.advance(HEADER_TIMEOUT / 40)
            protocol.dataReceived(bytes([byte]))
        self.assertFalse(transport.disconnecting)
        self.clock.advance(HEADER_TIMEOUT)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.guard.timeouts, 1)
        self.assertEqual(len(self.guard.protocols), 0)

    def test_idleAfterConnecting(self):
        """A connection that sends nothing is dropped at the deadline."""
        protocol, transport = self.connect()
        self.clock.advance(HEADER_TIMEOUT - 0.1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnected)

    def test_keepAliveRearms(self):
        """Each request of a kept-alive connection has its own deadline, from its first byte."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /latest HTTP/1.1\r\nHost: x\r\n\r\n")
        self.clock.advance(HEADER_TIMEOUT * 3)  # idle between requests: the site's timeout
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"GET /latest HTTP/1.1\r\n")
        self.clock.advance(HEADER_TIMEOUT)
        self.assertTrue(transport.disconnected)

    def test_headersSplitAcrossReads(self):
        """The blank line that ends the headers is found across two reads."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET /latest HTTP/1.1\r\nHost: x\r\n\r")
        protocol.dataReceived(b"\n")
        self.clock.advance(HEADER_TIMEOUT * 2)
        self.assertFalse(transport.disconnected)
        self.assertEqual(self.guard.timeouts, 0)


class FloodTests(_Peers, SynchronousTestCase):
    """
    The cap under a flood of connections that never send a whole request,
    step by step on a L{Clock}: what L{tests.cli.test_flood} sees from
    outside a running service.
    """

    CAP = 4

    def setUp(self):
        self.clock = Clock()
        self.guard = HttpGuard(site(self.clock), self.clock, max_connections=self.CAP)
        self.transports = []

    def held(self) -> int:
        """@return: the connections whose transport is still open."""
        return sum(1 for t in self.transports if not t.disconnected)

    def finished(self, protocol):
        """A whole request, answered: the connection is busy, then idle."""
        protocol.dataReceived(b"GET /latest HTTP/1.1\r\nHost: x\r\n\r\n")

    def test_neverOverCap(self):
        """
        However many idle and slow connections come, no more than the cap
        are ever open, the newest are the ones kept, and a client with a
        whole request still gets in and is answered.
        """
        flood = 200
        for n in range(flood):
            self.connect(b"GET /latest HTTP/1.1\r\n" if n % 2 else b"")
            self.assertLessEqual(len(self.guard.protocols), self.CAP)
            self.assertLessEqual(self.held(), self.CAP)
            self.clock.advance(0.01)
        self.assertEqual(self.guard.evicted, flood - self.CAP)
        self.assertEqual(self.guard.refused, 0)
        self.assertEqual([not t.disconnected for t in self.transports],
                         [False] * (flood - self.CAP) + [True] * self.CAP)
        scraper, transport = self.connect()
        self.finished(scraper)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))
        self.assertEqual(self.held(), self.CAP)

    def test_oldestWaitingFirst(self):
        """Newcomers over the cap close the connections waiting for headers, oldest first."""
        waiting = [self.connect(b"GET /lat" if n % 2 else b"")[1] for n in range(self.CAP)]
        for n in range(self.CAP):
            self.connect()
            self.assertEqual([t.disconnected for t in waiting],
                             [True] * (n + 1) + [False] * (self.CAP - n - 1))

    def test_waitingBeforeIdle(self):
        """
        A connection waiting for headers gives way before one idle for long,
        even when the idle one is older.
        """
        idle, idle_transport = self.connect()
        self.finished(idle)
        self.clock.advance(30)
        for _ in range(self.CAP - 1):
            self.connect(b"GET /")
        self.connect()
        self.assertFalse(idle_transport.disconnected)
        self.assertEqual(self.guard.evicted, 1)

    def test_longestIdleGivesWay(self):
        """With none waiting, the connection idle longest gives way, not the oldest."""
        connections = [self.connect() for _ in range(self.CAP)]
        for protocol, _ in connections:
            self.finished(protocol)
            self.clock.advance(1)
        # The oldest is active again: the second is now the one idle longest.
        self.finished(connections[0][0])
        self.clock.advance(1)
        self.connect()
        self.assertEqual([t.disconnected for _, t in connections],
                         [False, True] + [False] * (self.CAP - 2))

    def test_idleForASecond(self):
        """A connection idle under a second is kept, the newcomer refused; at a second it goes."""
        connections = [self.connect() for _ in range(self.CAP)]
        for protocol, _ in connections:
            self.finished(protocol)
        self.clock.advance(0.5)
        self.assertEqual(self.connect(), (None, None))
        self.assertEqual((self.guard.refused, self.guard.evicted), (1, 0))
        self.assertEqual(self.held(), self.CAP)
        self.clock.advance(0.5)
        protocol, _ = self.connect()
        self.assertIsNotNone(protocol)
        self.assertEqual((self.guard.refused, self.guard.evicted), (1, 1))
        self.assertEqual(self.held(), self.CAP)

    def test_surplusTimesOut(self):
        """The slow connections a flood leaves at the cap are dropped at the header deadline."""
        for n in range(50):
            self.connect(b"GET /latest HTTP/1.1\r\n" if n % 2 else b"")
        self.clock.advance(HEADER_TIMEOUT)
        self.assertEqual(self.held(), 0)
        self.assertEqual((self.guard.evicted, self.guard.timeouts), (50 - self.CAP, self.CAP))


class DefaultTests(SynchronousTestCase):
    def test_defaultCap(self):
        """64 connections, fewer under a low open-file limit, never below 4."""
        self.assertEqual(default_max_connections(1024), 64)
        self.assertEqual(default_max_connections(64), 32)
        self.assertEqual(default_max_connections(20), 4)
