"""
Test harness: L{smartmeter_tx.emulator.loopback.Loopback} built from emulator
knobs, recording the name of every command the host writes.
"""

from twisted.internet.task import Clock

from smartmeter_tx.emulator.loopback import Loopback
from smartmeter_tx.emulator.module import Emulator, EmulatorConfig


class Loop(Loopback):
    """
    @ivar sent: every command name the host wrote, over all connections.
    """

    def __init__(self, clock=None, **knobs) -> None:
        clock = clock or Clock()
        super().__init__(Emulator(EmulatorConfig(**knobs), clock), clock)
        self.sent: list = []
        self.write_observers.append(self._record)

    def _record(self, data: bytes) -> None:
        head = data.split(b" ", 1)[0].split(b"\r", 1)[0]
        self.sent.append(head.decode("ascii", "replace"))
