"""
The host's L{SKStackProtocol} wired to an emulated module through an
in-memory loopback on a L{task.Clock}: the whole stack with no pty and no real
reactor, where simulated time jumps straight to the next timer.  Used by the
tests and the benchmarks (24 simulated hours take about a second).
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.test import iosim

from smartmeter_tx.emulator.module import Emulator, ModuleProtocol
from smartmeter_tx.sk.protocol import SKStackProtocol

__all__ = ["Loopback"]


class _HostTransport(iosim.FakeTransport):
    """The host's end of a connection: what it writes goes to the write observers first."""

    def __init__(self, protocol: SKStackProtocol, loopback: Loopback) -> None:
        super().__init__(protocol, isServer=False)
        self._loopback = loopback

    def write(self, data: bytes) -> None:
        for observer in self._loopback.write_observers:
            observer(data)
        super().write(data)


class Loopback:
    """
    One emulated module and any number of successive host connections to it.

    @ivar unplugged: while set, L{connect} fails as opening a missing tty does.
    @ivar write_observers: called with every chunk of bytes the host writes.
    @ivar connects: how many connections were opened.
    """

    def __init__(self, emulator: Emulator, clock: Clock) -> None:
        self.clock = clock
        self.emulator = emulator
        self.pump: Optional[iosim.IOPump] = None
        self.sk: Optional[SKStackProtocol] = None
        self.unplugged = False
        self.connects = 0
        self.write_observers: list[Callable[[bytes], None]] = []

    def connect(self, sk: Optional[SKStackProtocol] = None) -> SKStackProtocol:
        """
        Open a fresh host connection for C{sk} (or a new protocol); usable as
        the service's C{open_port}.

        @raise OSError: while L{unplugged} is set.
        """
        if self.unplugged:
            raise OSError(2, "No such file or directory")
        if self.sk is not None and self.sk.connected_now:
            self.disconnect()
        sk = sk or SKStackProtocol(clock=self.clock)
        module = ModuleProtocol(self.emulator)
        server = iosim.FakeTransport(module, isServer=True)
        client = _HostTransport(sk, self)
        self.pump = iosim.connect(module, server, sk, client, greet=False)
        self.sk = sk
        self.connects += 1
        return sk

    def disconnect(self) -> None:
        """Close the host's side of the current connection (a pulled cable)."""
        assert self.pump is not None  # connect() came first: there is a connection
        self.pump.clientIO.loseConnection()
        self.pump.flush(advanceClock=False)

    def flush(self) -> None:
        if self.pump is not None:
            self.pump.flush(advanceClock=False)

    def advance(self, seconds: float) -> None:
        """
        Let C{seconds} of simulated time pass, pumping bytes at every timer.
        """
        end = self.clock.seconds() + seconds
        while True:
            self.flush()
            calls = [c.getTime() for c in self.clock.getDelayedCalls()]
            target = min(min(calls), end) if calls else end
            self.clock.advance(max(0.0, target - self.clock.seconds()))
            self.flush()
            if self.clock.seconds() >= end:
                return

    def run(self, d: defer.Deferred, limit: float = 3600.0) -> defer.Deferred:
        """
        Pump and advance to each next timer until C{d} has a result or C{limit}
        simulated seconds have passed.

        @return: C{d}.
        """
        end = self.clock.seconds() + limit
        while True:
            self.flush()
            if d.called:
                return d
            calls = [c.getTime() for c in self.clock.getDelayedCalls()]
            if not calls or min(calls) > end:
                return d
            self.clock.advance(max(0.0, min(calls) - self.clock.seconds()))

    def stop(self) -> None:
        self.emulator.stop()
