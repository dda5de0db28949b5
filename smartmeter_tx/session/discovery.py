"""
Finding the meter: the module's neighbour table (free: no radio), then an
active scan with the pairing ID, narrowed to the known channel when there is
one, and the choice among the PANs that answered.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Optional, Sequence

from twisted.internet import task
from twisted.logger import Logger

from smartmeter_tx.errors import MeterNotFound
from smartmeter_tx.sk import values as V
from smartmeter_tx.sk import commands
from smartmeter_tx.session.state import MeterLink
from smartmeter_tx.session.steps import Budget, ModuleSteps

__all__ = ["MeterDiscovery", "matching_pans"]


def matching_pans(descs: Iterable[V.PanDesc], rbid: Optional[str]) -> list[V.PanDesc]:
    """
    The PANs worth joining among the descriptors a scan heard.  Pure.

    Only the B-route side of a DSE module counts (SIDE 0), only PANs whose
    pairing ID is the last 8 characters of our B-route ID (when the module
    prints it), and several descriptors of one PAN (heard with different LQI)
    count once, with their best LQI.

    @return: L{V.PanDesc}s, best LQI first.
    """
    found: dict[tuple[int, int, str], V.PanDesc] = {}
    for desc in descs:
        if desc.side not in (None, 0):
            continue
        if rbid and desc.pair_id not in (None, rbid[-8:]):
            continue
        key = (desc.channel, desc.pan_id, desc.addr)
        keep = found.get(key)
        if keep is None or desc.lqi > keep.lqi:
            found[key] = desc
    return sorted(found.values(), key=lambda d: d.lqi, reverse=True)


class MeterDiscovery:
    """
    @ivar link: the L{MeterLink} to fill in (shared with the session).
    """

    log = Logger()

    #: Seconds to keep listening for PAN descriptors after EVENT 22 (some
    #: modules print the last EPANDESC after it; docs/PROTOCOL.md, "Scanning").
    SCAN_GRACE = 1.0
    #: SKSCAN durations tried in turn while nothing is found.
    DURATIONS = (5, 6, 7)
    #: Seconds between "still scanning" reports within one long scan step.
    PROGRESS_EVERY = 10.0

    def __init__(self, steps: ModuleSteps, link: MeterLink, rbid: Optional[str]) -> None:
        self.steps = steps
        self.link = link
        self.rbid = rbid
        #: the hinted channel the last L{locate} found the meter away from.
        self.moved_from: Optional[int] = None
        #: called with a line at each scan step and every L{PROGRESS_EVERY}
        #: seconds within one (C{--scan} shows them; by default logged).
        self.progress: Callable[[str], None] = lambda text: self.log.info("{text}", text=text)

    async def find_neighbour(self, budget: Budget) -> bool:
        """
        Without a known meter address, ask the module: one that still holds a
        session lists the meter in its neighbour cache (SKTABLE 2), and SKINFO
        shows the session's channel and PAN ID.  Serial only, no radio.

        @return: whether the meter's address is now known.
        """
        reply = await self.steps.run(commands.sk_table("2"), "reading the module's neighbour table",
                                     budget)
        rows = [n for n in reply.lines if isinstance(n, V.Neighbor)]
        if len(rows) != 1:
            return False  # none, or several we cannot tell apart
        info = await self.steps.ask_info(budget)
        self.link.meter_found(rows[0].addr64, rows[0].ipaddr)
        if info is not None and info.pan_id != 0xFFFF and 0x21 <= info.channel <= 0x3C:
            self.link.channel = info.channel
            self.link.pan_id = info.pan_id
        self.log.info("the module knows a neighbour: trying it as the meter")
        return True

    async def locate(self, budget: Budget) -> V.PanDesc:
        """
        Scan for the meter: the known channel first (saved, or given with
        C{--channel}: a hint, not a cage), then all channels.  Fills in the
        link's channel, PAN ID, MAC, LQI and IPv6 address.

        @return: the chosen PAN's descriptor.
        @raise MeterNotFound: no scan found it.
        """
        hinted = self.link.channel
        self.moved_from = None
        channels = [hinted] if hinted else None
        found = await self.scan(channels, budget)
        if not found and channels:
            self.log.info("nothing on the saved channel; scanning all channels")
            self.link.channel = None
            found = await self.scan(None, budget)
        if not found:
            where = f"channel {self.link.channel:#04x}" if self.link.channel else "any channel"
            raise MeterNotFound(f"no smart meter answered on {where}; check the B-route ID, "
                                "and move the module closer to the meter")
        best = found[0]
        link = self.link
        reply = await self.steps.run(commands.sk_ll64(best.addr), "converting the meter's MAC (SKLL64)",
                                     budget)
        if hinted is not None and best.channel != hinted:
            # The channel given (saved, or --channel) no longer holds it.
            self.moved_from = hinted
            link.moved_from_channel = hinted
        link.channel, link.pan_id, link.lqi = best.channel, best.pan_id, best.lqi
        assert isinstance(reply.final, V.Address)  # SKLL64 completes on its address line
        link.meter_found(best.addr, reply.final.ipaddr)
        return best

    async def scan(self, channels: Optional[Sequence[int]], budget: Budget,
                   durations: Optional[Iterable[int]] = None) -> list[V.PanDesc]:
        """
        Active scan with the pairing ID; longer durations while nothing is found.

        @return: the matching PAN descriptors, best first (possibly none).
        """
        mask = commands.channel_mask(channels) if channels else 0xFFFFFFFF
        late: list[V.PanDesc] = []

        def catch(value: object) -> None:
            if isinstance(value, V.PanDesc):
                late.append(value)
        self.steps.sk.add_listener(catch)
        try:
            for duration in durations or self.DURATIONS:
                step = f"scanning for the meter (duration {duration})"
                with self._reporting(channels, duration):
                    reply = await self.steps.when_free(
                        lambda: self.steps.run_in_dialect(
                            lambda dialect: commands.sk_scan(dialect, mask, duration), step,
                            budget),
                        step, budget)
                if not reply.pandescs:
                    # The last channel's descriptor can follow EVENT 22 (captures.py §13).
                    await budget.pause(self.SCAN_GRACE, "scanning")
                found = matching_pans(reply.pandescs + late, self.rbid)
                if found:
                    return found
            return []
        finally:
            self.steps.sk.remove_listener(catch)

    @contextmanager
    def _reporting(self, channels: Optional[Sequence[int]], duration: int) -> Iterator[None]:
        """Say what this scan step covers and how long it takes, then every 10 s."""
        count = len(channels) if channels else 28
        where = (f"channel {channels[0]:02X}" if channels and count == 1
                 else f"all {count} channels")
        seconds = commands.scan_seconds(duration, count)
        clock = self.steps.clock
        started = clock.seconds()
        length = f"about {seconds:.0f} s" if seconds >= 1 else "under a second"
        self.progress(f"scanning {where} (duration {duration}, {length})")
        ticker = task.LoopingCall(lambda: self.progress(
            f"still scanning: {clock.seconds() - started:.0f} s of about {seconds:.0f} s"))
        ticker.clock = clock
        ticker.start(self.PROGRESS_EVERY, now=False)
        try:
            yield
        finally:
            ticker.stop()
