"""
The limits in front of the service's HTTP site, so that a flood of
connections (a misbehaving client, a port scan, a script gone wrong) can
neither starve the service of file descriptors (its serial port, data log and
state file need some) nor keep its real clients out:

 - at most C{max_connections} at once.  A connection over the cap takes the
   place of the oldest one still waiting for its request's headers (or, if
   none, of the one idle longest, for a second or more), which is closed at
   once; when every connection is busy with a request, the newcomer is closed
   instead.  So a flood of idle or slow connections churns among itself, and
   a client that sends its request at once (a scraper, a browser) gets in;
 - a request's headers must be complete within C{header_timeout} seconds of
   its first byte (of the connection, for the first request), however slowly
   they trickle in; otherwise the connection is dropped;
 - an idle keep-alive connection is closed by the site's own timeout.

Closing is done at once, not at the reactor's next turn, so the descriptors
of the HTTP side never exceed the cap (plus the one being accepted).
"""

from __future__ import annotations

from typing import Protocol, cast

from twisted.internet.error import ConnectionAborted
from twisted.internet.protocol import connectionDone
from twisted.protocols import policies
from twisted.python.failure import Failure
from zope.interface import implementer

from smartmeter_tx.service.interfaces import Figure, IMetricsSource

__all__ = ["HttpGuard", "default_max_connections", "HEADER_TIMEOUT", "IDLE_TIMEOUT"]

#: Seconds a request's headers may take to arrive.
HEADER_TIMEOUT = 10.0
#: Seconds an idle keep-alive connection stays open (twisted.web's default: 12 hours).
IDLE_TIMEOUT = 60.0
#: File descriptors kept for the service itself (serial port, data log, state
#: file, MQTT, the reactor's own, the thread pool's DNS) when the open-file
#: limit is low.
_RESERVED_FDS = 32
_MOST_CONNECTIONS = 64

#: Seconds without traffic after which a connection with a whole request
#: behind it counts as idle, and may give way to a newcomer.
_IDLE_EVICT = 1.0


def default_max_connections(open_files: int) -> int:
    """
    The cap of concurrent HTTP connections for an open-file limit
    (C{RLIMIT_NOFILE}): 64, or fewer so that C{32} descriptors stay free for
    the service, but never below 4.
    """
    return max(4, min(_MOST_CONNECTIONS, open_files - _RESERVED_FDS))


class _Closable(Protocol):
    """A transport that can be told its connection is lost, as TCP's can."""

    def connectionLost(self, reason: Failure) -> None: ...


class _Guarded(policies.ProtocolWrapper):
    """One connection of the site, with its header deadline."""

    def connectionMade(self) -> None:
        self._deadline = None
        self._tail = b""
        self.active = self.factory.clock.seconds()
        self._arm()
        super().connectionMade()

    @property
    def waiting(self) -> bool:
        """Whether the headers of a request are awaited."""
        return self._deadline is not None

    def _arm(self) -> None:
        self._deadline = self.factory.clock.callLater(self.factory.header_timeout, self._expired)
        self._tail = b""

    def write(self, data: bytes) -> None:
        self.active = self.factory.clock.seconds()
        super().write(data)

    def writeSequence(self, data) -> None:
        self.active = self.factory.clock.seconds()
        super().writeSequence(data)

    def dataReceived(self, data: bytes) -> None:
        self.active = self.factory.clock.seconds()
        if self._deadline is None:  # the first byte of the next request
            self._arm()
        seen = self._tail + data
        if b"\r\n\r\n" in seen or b"\n\n" in seen:
            if self._deadline is not None and self._deadline.active():
                self._deadline.cancel()
            self._deadline = None
        else:
            self._tail = seen[-3:]
        super().dataReceived(data)

    def _expired(self) -> None:
        self._deadline = None
        self.factory.timeouts += 1
        self.evict()

    def evict(self) -> None:
        """
        Close the connection now.  (abortConnection would close it at the
        reactor's next turn, after the newcomer has taken its descriptor;
        a TCP transport ignores its own later connectionLost.)
        """
        # The port's own connection (ITransport does not declare connectionLost).
        transport = cast(_Closable, self.transport)
        transport.connectionLost(Failure(ConnectionAborted("closed by the HTTP limits")))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        super().connectionLost(reason)


@implementer(IMetricsSource)
class HttpGuard(policies.WrappingFactory):
    """
    The site behind the limits.

    @ivar refused: newcomers closed because every connection was busy.
    @ivar evicted: connections closed to make room for a newcomer.
    @ivar timeouts: connections dropped because their headers did not arrive
        in time.
    """

    protocol = _Guarded
    noisy = False

    def __init__(self, site, clock, max_connections: int,
                 header_timeout: float = HEADER_TIMEOUT) -> None:
        """
        @param site: the L{twisted.web.server.Site}.
        @param clock: the reactor (C{callLater}).
        """
        super().__init__(site)
        self.clock = clock
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.refused = 0
        self.evicted = 0
        self.timeouts = 0

    def buildProtocol(self, addr):
        if len(self.protocols) >= self.max_connections:
            victim = self._victim()
            if victim is None:
                self.refused += 1
                return None  # the port closes it at once
            self.evicted += 1
            victim.evict()
        return super().buildProtocol(addr)

    def _victim(self):
        """The connection to give way: the oldest waiting for headers, else the longest idle."""
        idle = None
        for connection in self.protocols:  # oldest first
            if connection.waiting:
                return connection
            if idle is None or connection.active < idle.active:
                idle = connection
        if idle is not None and self.clock.seconds() - idle.active >= _IDLE_EVICT:
            return idle
        return None

    def metrics(self) -> list:
        """
        @return: the limits' L{Figure}s, for C{/metrics}.
        """
        return [
            Figure("smartmeter_http_connections", "gauge", "HTTP connections open now",
                   len(self.protocols)),
            Figure("smartmeter_http_refused", "counter",
                   "HTTP connections closed because every one was busy at the cap",
                   self.refused),
            Figure("smartmeter_http_evicted", "counter",
                   "Idle or slow HTTP connections closed to make room for a new one",
                   self.evicted),
            Figure("smartmeter_http_header_timeouts", "counter",
                   "HTTP connections dropped because a request's headers came too slowly",
                   self.timeouts),
        ]
