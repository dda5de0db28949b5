"""
Test harness: our SKStackProtocol wired to the emulator's module protocol
through an in-memory loopback, on a task.Clock — the whole stack, no pty, no
real reactor, no sleeping.  Simulated time jumps straight to the next timer.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.test import iosim

from smartmeter_tx.emulator.module import Emulator, EmulatorConfig, ModuleProtocol
from smartmeter_tx.sk.protocol import SKStackProtocol


class Loop:
    """
    One emulated module and any number of successive host connections to it.

    @ivar sent: every command name the host wrote, over all connections.
    """

    def __init__(self, clock=None, **knobs) -> None:
        self.clock = clock or Clock()
        self.emulator = Emulator(EmulatorConfig(**knobs), self.clock)
        self.sent: list = []
        self.pump = None
        self.sk = None
        self.unplugged = False

    def connect(self, sk=None) -> SKStackProtocol:
        """
        Open a fresh host connection (as a new one-shot run would), for C{sk}
        or a new L{SKStackProtocol}.

        @raise OSError: while L{unplugged} is set, as opening a missing device does.
        """
        if self.unplugged:
            raise OSError(2, "No such file or directory")
        if self.sk is not None and self.sk.connected_now:
            self.disconnect()
        sk = sk or SKStackProtocol(clock=self.clock)
        module = ModuleProtocol(self.emulator)
        server = iosim.FakeTransport(module, isServer=True)
        client = iosim.FakeTransport(sk, isServer=False)
        original = client.write

        def write(data, record=self.sent):
            head = data.split(b" ", 1)[0].split(b"\r", 1)[0]
            record.append(head.decode("ascii", "replace"))
            return original(data)

        client.write = write
        self.pump = iosim.connect(module, server, sk, client, greet=False)
        self.sk = sk
        return sk

    def disconnect(self) -> None:
        self.pump.clientIO.loseConnection()
        self.pump.flush(advanceClock=False)

    def advance(self, seconds: float) -> None:
        """
        Let C{seconds} of simulated time pass, pumping bytes at every timer.
        """
        end = self.clock.seconds() + seconds
        while True:
            if self.pump is not None:
                self.pump.flush(advanceClock=False)
            calls = [c.getTime() for c in self.clock.getDelayedCalls()]
            target = min(calls) if calls else end
            if target > end:
                target = end
            self.clock.advance(max(0.0, target - self.clock.seconds()))
            if self.pump is not None:
                self.pump.flush(advanceClock=False)
            if self.clock.seconds() >= end:
                return

    def run(self, d: defer.Deferred, limit: float = 3600.0):
        """
        Pump bytes and advance the clock to each next timer until C{d} has a
        result or C{limit} simulated seconds have passed.

        @return: C{d}.
        """
        end = self.clock.seconds() + limit
        while True:
            self.pump.flush(advanceClock=False)
            if d.called:
                return d
            calls = [c.getTime() for c in self.clock.getDelayedCalls()]
            if not calls:
                return d
            target = min(calls)
            if target > end:
                return d
            self.clock.advance(max(0.0, target - self.clock.seconds()))

    def stop(self) -> None:
        self.emulator.stop()
