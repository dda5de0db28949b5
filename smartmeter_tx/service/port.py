"""
Keeping the serial port to the module open for as long as the service runs:
open it, notice when it is lost (an unplugged dongle), reopen it with backoff
at the same path, and hand a fresh L{BRouteClient} to the owner each time.
"""

from __future__ import annotations

from typing import Callable, Optional, cast

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITransport
from twisted.logger import Logger

from smartmeter_tx.service.backoff import Backoff
from smartmeter_tx.session.client import BRouteClient
from smartmeter_tx.session.config import Connection

__all__ = ["PortKeeper"]


class PortKeeper:
    """
    @param open_port: C{open_port(protocol)} connects C{protocol} to the module
        (SerialPort in production, a pty or a loopback in tests); it raises
        when the device is missing.
    @param new_protocol: C{new_protocol()} makes the SK protocol of one
        connection (L{smartmeter_tx.session.config.SessionConfig.new_protocol}).
    @param make_client: C{make_client(protocol)} builds the client for one
        connection.
    @param on_open: called with the new client after every successful open.
    @param on_lost: called when the port is lost or cannot be opened.

    @ivar client: the client of the open connection, or C{None}.
    @ivar reopens: how many times a lost port was opened again.
    """

    log = Logger()

    def __init__(self, open_port: Callable[[Connection], object], clock: IReactorTime,
                 new_protocol: Callable[[], Connection],
                 make_client: Callable[[Connection], BRouteClient],
                 on_open: Callable[[BRouteClient], None], backoff: Backoff,
                 on_lost: Callable[[], None] = lambda: None) -> None:
        self.open_port = open_port
        self.new_protocol = new_protocol
        self.clock = clock
        self.make_client = make_client
        self.on_open = on_open
        self.on_lost = on_lost
        self.backoff = backoff
        self.client: Optional[BRouteClient] = None
        self.reopens = 0
        self._before = dict.fromkeys(self.COUNTERS, 0)
        self._opened = False
        self._call: Optional[IDelayedCall] = None
        self._stopping = False

    #: Client counters summed over every connection.
    COUNTERS = ("frames", "busy_retries", "junk_dropped")

    def total(self, counter: str) -> int:
        """
        @param counter: one of L{COUNTERS}.
        @return: its sum over every connection so far.
        """
        current = getattr(self.client, counter) if self.client is not None else 0
        return self._before[counter] + current

    @property
    def frames(self) -> int:
        """SKSENDTO frames sent over every connection so far."""
        return self.total("frames")

    def start(self) -> None:
        """Open the port now; on failure, keep trying with backoff."""
        self._stopping = False
        self._open()

    #: Seconds a closing port may take to say it is closed.
    CLOSE_WITHIN = 5.0

    def stop(self) -> defer.Deferred[None]:
        """
        Stop reopening and close the port.

        @return: a Deferred that fires with C{None} once the port is closed
            (or after L{CLOSE_WITHIN} seconds, whichever comes first).
        """
        self._stopping = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self.client is None or not self.client.sk.connected_now:
            return defer.succeed(None)
        closed = self.client.sk.when_disconnected()
        # Not None: the protocol is connected now.
        cast(ITransport, self.client.sk.transport).loseConnection()
        closed.addTimeout(self.CLOSE_WITHIN, self.clock)
        return closed.addBoth(lambda _: None)

    def _open(self) -> bool:
        self._call = None
        proto = self.new_protocol()
        try:
            self.open_port(proto)
        except Exception as e:
            self.on_lost()
            self._retry(f"cannot open the module ({_first_line(e)})")
            return False
        self._close_client()
        if self._opened:
            self.reopens += 1
            self.log.info("serial port reopened")
        self._opened = True
        self.backoff.reset()
        self.client = self.make_client(proto)
        proto.when_disconnected().addCallback(self._lost, proto)
        self.on_open(self.client)
        return True

    def _lost(self, reason: BaseException, proto: Connection) -> None:
        if self.client is None or self.client.sk is not proto:
            return
        self._close_client()
        if not self._stopping:
            self.on_lost()
            self._retry(f"serial link lost ({_first_line(reason)})")

    def _close_client(self) -> None:
        if self.client is not None:
            for counter in self.COUNTERS:
                self._before[counter] += getattr(self.client, counter)
            self.client.close()
        self.client = None

    def _retry(self, why: str) -> None:
        if self._stopping:
            return
        delay = self.backoff.next_delay()
        self.log.warn("{why}; retrying in {delay:.1f} s", why=why, delay=delay)
        self._call = self.clock.callLater(delay, self._open)


def _first_line(error: object) -> str:
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__
