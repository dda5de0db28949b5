"""
The emulator's serial port: the master side of a pseudo-terminal attached to
the reactor, its slave published under a stable path (a symlink, like
C{/dev/serial/by-id/...}), and unplug/replug.

A client opens the slave path exactly like C{/dev/ttyACM0}, e.g. with
C{twisted.internet.serialport.SerialPort(protocol, path, reactor, baudrate=115200)}.

We keep our own slave descriptor open for the life of the pty, so the master
never sees EIO when a client closes the port and the module side survives
client reconnects.  Output written while no client has the port open stays
in the pty and is discarded by the next client's open (pyserial flushes its
input when it opens a port), much like bytes a USB dongle sends to a closed
port.
"""

from __future__ import annotations

import os
import tty
from typing import Callable, Optional

from twisted.internet import abstract, fdesc, main
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from smartmeter_tx.errors import ArgumentError

__all__ = ["PtyMaster", "PtyDevice"]


class PtyMaster(abstract.FileDescriptor):
    """
    A transport over the master side of a new pty in raw mode.

    @ivar slave_path: the slave device path (e.g. C{/dev/pts/5}).
    """

    def __init__(self, protocol: Protocol, reactor) -> None:
        abstract.FileDescriptor.__init__(self, reactor)
        self._master, self._slave = os.openpty()
        try:
            tty.setraw(self._slave)
            fdesc.setNonBlocking(self._master)
            self.slave_path = os.ttyname(self._slave)
        except BaseException:
            self._close_fds()
            raise
        self.protocol: Optional[Protocol] = protocol
        self.connected = 1
        protocol.makeConnection(self)
        self.startReading()

    def fileno(self) -> int:
        return self._master

    def doRead(self):
        assert self.protocol is not None  # reading stops when the connection is lost
        return fdesc.readFromFD(self._master, self.protocol.dataReceived)

    def writeSomeData(self, data: bytes):
        return fdesc.writeToFD(self._master, data)

    def _close_fds(self) -> None:
        for name in ("_master", "_slave"):
            fd = getattr(self, name)
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, name, -1)

    def connectionLost(self, reason) -> None:
        abstract.FileDescriptor.connectionLost(self, reason)
        self._close_fds()
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            protocol.connectionLost(reason)

    def close(self) -> None:
        """
        Close at once, dropping unsent output (loseConnection would wait for
        a reader that may never come).
        """
        if self.connected:
            self.connectionLost(Failure(main.CONNECTION_DONE))


class PtyDevice:
    """
    A pty that can be unplugged and replugged, each time with a new protocol
    from C{protocol_factory}, its slave published at C{link} if given.
    """

    log = Logger()

    def __init__(self, protocol_factory: Callable[[], Protocol], reactor,
                 link: Optional[str] = None) -> None:
        self._factory = protocol_factory
        self._reactor = reactor
        self.link = os.path.abspath(link) if link else None
        if self.link and os.path.lexists(self.link) and not os.path.islink(self.link):
            raise ArgumentError(f"{self.link} exists and is not a symlink; not replacing it")
        self._lock = _lock_link(self.link) if self.link else None
        self._pty: Optional[PtyMaster] = None
        self._replug = None
        self._waiting: list = []
        self.slave_path: Optional[str] = None

    @property
    def path(self) -> Optional[str]:
        """Where a client opens the port: the link, or the slave itself."""
        return self.link or self.slave_path

    @property
    def plugged(self) -> bool:
        return self._pty is not None

    def plug(self) -> None:
        """Create a fresh pty (with a fresh protocol) and publish it."""
        if self._pty is not None:
            return
        self._pty = PtyMaster(self._factory(), self._reactor)
        self.slave_path = self._pty.slave_path
        if self.link:
            tmp = "%s.%d.tmp" % (self.link, os.getpid())
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(self.slave_path, tmp)
            os.replace(tmp, self.link)  # atomic: a client never sees a missing link
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(self.path)

    def unplug(self, seconds: Optional[float] = None) -> Deferred:
        """
        Close the pty (a client sees its port fail) and remove the link.

        @param seconds: replug after this many real seconds; C{None} stays unplugged.
        @return: a L{Deferred} that fires with the path when plugged in again.
        """
        self._close()
        d: Deferred[Optional[str]] = Deferred()
        self._waiting.append(d)
        if seconds is not None:
            self._replug = self._reactor.callLater(seconds, self._replugged)
        return d

    def _replugged(self) -> None:
        self._replug = None
        self.plug()

    def _close(self) -> None:
        if self._replug is not None and self._replug.active():
            self._replug.cancel()
        self._replug = None
        pty, self._pty = self._pty, None
        if pty is not None:
            pty.close()
        if self.link and os.path.islink(self.link) and os.readlink(self.link) == self.slave_path:
            os.unlink(self.link)

    def stop(self) -> None:
        """Close for good, and give the link up."""
        self._close()
        self._waiting = []
        if self._lock is not None:
            # Unlinked while still held: a newcomer that opened it meanwhile
            # fails its lock and retries nothing; one after this makes a new one.
            try:
                os.unlink(self._lock.name)
            except OSError:
                pass
            self._lock.close()
            self._lock = None


def _lock_link(link: str):
    """
    Hold C{link}.lock for as long as this emulator publishes C{link}: a second
    emulator on the same link would take it over and, when it stops, remove
    the first one's link.  The kernel drops the lock if the process dies.

    @return: the open lock file.
    @raise ArgumentError: another emulator holds the link.
    """
    import fcntl

    lock = open(link + ".lock", "a+")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise ArgumentError(f"{link} is in use by another emulator; stop that one or choose "
                            "another --link") from None
    return lock
