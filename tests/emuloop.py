"""
Test harness: L{smartmeter_tx.emulator.loopback.Loopback} built from emulator
knobs, recording the name of every command the host writes; and L{pinned}, for
tests that start an emulator on a pty from an C{emulator:} spec.
"""

import datetime
from urllib.parse import parse_qsl

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


#: The meter clock that emulators started by the tests begin at: a fixed time,
#: not the wall clock, and well away from the half-hourly INF at :00 and :30
#: (25 device minutes before 12:30: 15 real seconds even at time scale 0.01).
START = datetime.datetime(2024, 6, 1, 12, 5)


def pinned(spec: str, start: datetime.datetime = START) -> str:
    """
    C{spec} (an C{emulator:[dialect][?options]} device spec) with its C{start}
    option set to C{start} unless it already names one, so that the emulated
    meter's clock, and with it the radio's random pattern, does not depend on
    when the test runs.
    """
    head, sep, query = spec.partition("?")
    if any(name == "start" for name, _ in parse_qsl(query, keep_blank_values=True)):
        return spec
    option = "start=" + start.isoformat(timespec="seconds")
    return f"{head}?{query}&{option}" if query else f"{head}?{option}"


def expected_slot_starts(now, days):
    """
    The test oracle for a backfill window: the starts (ISO, +09:00) of the
    complete 30-minute slots from midnight C{days} days before the meter's
    C{now} up to its last boundary.  Written apart from the product's own
    L{smartmeter_tx.service.backfill.Backfill.due}, on purpose.
    """
    import datetime

    from smartmeter_tx.model import JST, SLOT
    last_end = now.replace(minute=now.minute - now.minute % 30, second=0, microsecond=0)
    t = datetime.datetime.combine(now.date() - datetime.timedelta(days=days), datetime.time())
    starts = []
    while t + SLOT <= last_end:
        starts.append(t.replace(tzinfo=JST).isoformat())
        t += SLOT
    return starts
