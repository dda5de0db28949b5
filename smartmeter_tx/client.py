"""
The B-route session: dialect and echo detection, credentials, scan, join, and
reading the meter with as few radio frames as possible.

Flow (DESIGN.md): query first, because the module may still hold its PANA
session from the last run; on EVENT 21 02 or no answer, authenticate (skipping
the scan when the channel, PAN ID and address are known) and query again.
Every step is bounded by a deadline on the injected clock.
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from typing import Callable, Optional

from twisted.internet import defer, task
from twisted.logger import Logger

from smartmeter_tx.errors import ArgumentError, SmartMeterError
from smartmeter_tx.echonet import frame as F
from smartmeter_tx.echonet import meter as M
from smartmeter_tx.requester import (
    EchonetRequester, EchonetTimeout, NotSent, SendFailed,
)
from smartmeter_tx.sk import lines as L
from smartmeter_tx.sk.protocol import (
    SKCommandError, SKEventError, SKStackProtocol, SKTimeoutError,
)
from smartmeter_tx.state import MeterLink

__all__ = [
    "Credentials", "BRouteClient", "StepTimeout", "AuthenticationFailed", "MeterNotFound",
    "RateLimited", "ReadFailed", "POWER_EPCS", "ENERGY_EPCS",
]

POWER_EPCS = (M.POWER, M.CURRENT)
ENERGY_EPCS = (M.ENERGY_NORMAL, M.ENERGY_REVERSE)
SCALE_EPCS = (M.COEFFICIENT, M.UNIT, M.DIGITS)


class Credentials:
    """
    The B-route ID and password.  Their repr never shows them.
    """

    def __init__(self, rbid: str, password: str) -> None:
        L.sk_setrbid(rbid)  # validate now, with a clear error
        L.sk_setpwd(password)
        self.rbid = rbid
        self.password = password

    def __repr__(self) -> str:
        return "<Credentials (redacted)>"


class StepTimeout(SmartMeterError):
    """A step of the session did not finish within the time left."""

    def __init__(self, step: str) -> None:
        super().__init__(f"timed out while {step}")
        self.step = step


class AuthenticationFailed(SmartMeterError):
    """EVENT 24: the meter refused PANA authentication."""


class MeterNotFound(SmartMeterError):
    """No scan found a PAN answering with our pairing ID."""


class RateLimited(SmartMeterError):
    """EVENT 32: the module's ARIB transmit-time budget is spent."""


class ReadFailed(SmartMeterError):
    """The meter did not answer within the budget."""


class BRouteClient:
    """
    One module, one meter.

    @ivar link: what is known about the meter; updated as the session learns it,
        for the caller to save.
    @ivar frames: SKSENDTO frames sent so far (radio use).
    @ivar steps: names of the last SK steps taken (for tests and benchmarks).
    """

    log = Logger()

    #: Seconds to wait after EVENT 25 for the meter's instance-list INF.
    INSTANCE_LIST_WAIT = 2.0
    #: Seconds to pause after EVENT 21 01 before sending again.
    SEND_RETRY_PAUSE = 1.0
    #: Failed joins with a saved meter before it is looked for by a new scan.
    RESCAN_AFTER = 2
    #: Seconds to keep listening for PAN descriptors after EVENT 22 (some
    #: modules print the last EPANDESC after it; captures §13).
    SCAN_GRACE = 1.0

    def __init__(self, sk: SKStackProtocol, credentials: Optional[Credentials], clock,
                 link: Optional[MeterLink] = None, dialect: Optional[L.Dialect] = None,
                 channel: Optional[int] = None, pan_id: Optional[int] = None,
                 ipaddr: Optional[str] = None,
                 progress: Optional[Callable[[str], None]] = None) -> None:
        self.sk = sk
        self.credentials = credentials
        self.clock = clock
        self.link = link or MeterLink()
        self.fixed_channel = channel is not None
        if channel is not None:
            L.channel_mask([channel])
            if self.link.channel not in (None, channel):
                self.link = MeterLink()  # the user moved to another meter
            self.link.channel = channel
        if pan_id is not None:
            self.link.pan_id = pan_id
        if ipaddr is not None:
            ipaddr = ipaddr.upper()
            if not L.IPV6_RE.match(ipaddr.encode("ascii", "replace")):
                raise ArgumentError("--ipaddr must be a full IPv6 address, "
                                    "e.g. FE80:0000:0000:0000:021D:1290:1234:5678")
            if self.link.ipaddr not in (None, ipaddr):
                self.link.pan_id = pan_id
            self.link.ipaddr = ipaddr
        self.fixed_dialect = dialect
        self.dialect = dialect or (L.Dialect(self.link.dialect) if self.link.dialect else None)
        self.progress = progress or (lambda step: None)
        self.rate_limited = False
        self.frames = 0
        self.steps: deque = deque(maxlen=64)  # bounded: a service runs for years
        self._credentials_set = False
        self.deadline: Optional[float] = None
        self._requester: Optional[EchonetRequester] = None
        self.prepared = False
        self.info: Optional[L.Info] = None
        self.unsolicited: list = []
        self._instance_list: Optional[defer.Deferred] = None
        sk.add_listener(self._on_line)

    # -- helpers ---------------------------------------------------------------

    def _left(self, step: str) -> float:
        if self.deadline is None:
            return 3600.0
        left = self.deadline - self.clock.seconds()
        if left <= 0:
            raise StepTimeout(step)
        return left

    async def _run(self, command: L.Command, step: str):
        """Send one SK command bounded by the time left."""
        left = self._left(step)
        self.steps.append(command.name)
        self.progress(step)
        d = self.sk.command(command)
        if left < command.timeout:
            d.addTimeout(left, self.clock)
        try:
            return await d
        except (defer.TimeoutError, SKTimeoutError):
            raise StepTimeout(step) from None

    def _on_line(self, value) -> None:
        if isinstance(value, L.Event):
            if value.num == 0x32:
                self.rate_limited = True
                self.log.warn("module reports its transmit-time budget is spent (EVENT 32)")
            elif value.num == 0x33:
                self.rate_limited = False

    def _on_unsolicited(self, frame: F.Frame, rx: L.RxUdp) -> None:
        self.unsolicited.append(frame)
        if (frame.seoj == F.NODE_PROFILE and M.INSTANCE_LIST in frame.epcs
                and self._instance_list is not None and not self._instance_list.called):
            self._instance_list.callback(frame)
        self.log.info("unsolicited frame from the meter: {frame}", frame=frame.describe())

    @property
    def requester(self) -> EchonetRequester:
        if self._requester is None:
            self._requester = EchonetRequester(self.sk, self.dialect or L.Dialect.STANDARD,
                                               self.link.ipaddr, clock=self.clock,
                                               on_unsolicited=self._on_unsolicited)
        self._requester.dialect = self.dialect or L.Dialect.STANDARD
        self._requester.meter_addr = self.link.ipaddr
        return self._requester

    # -- steps -----------------------------------------------------------------

    async def prepare(self) -> None:
        """
        Learn the dialect (SKINFO's fifth field) unless it is known.  No radio.
        """
        if self.prepared:
            return
        if self.dialect is None:
            reply = await self._run(L.sk_info(), "asking the module for its info (SKINFO)")
            info = self.info = reply.first(L.Info)
            self.dialect = (info.dialect_hint if info else None) or L.Dialect.STANDARD
            self.log.info("module speaks the {dialect} SK dialect", dialect=self.dialect.value)
        self.link.dialect = self.dialect.value
        await self._echo_off()
        self.prepared = True

    async def _check_send_restricted(self) -> None:
        """
        @raise RateLimited: the module's send-restricted flag (SFB) is set, so
            it silently cancels every transmission until the limit is released.
        """
        try:
            reply = await self._run(L.sk_sreg("SFB"), "reading the module's send-restricted flag")
        except SKCommandError:
            return  # a module without SFB: nothing to learn
        value = reply.first(L.SReg)
        if value is not None and value.value.strip("0") == "1":
            self.rate_limited = True
            raise RateLimited("the module's transmit-time budget is spent (ARIB limit, EVENT 32); "
                              "it releases by itself within the hour")

    async def _echo_off(self) -> None:
        # Echo is the power-on default; turning it off saves serial time.  It
        # is recognised either way, so this is an optimisation only.
        if self.sk.echo:
            await self._run(L.sk_sreg("SFE", "0"), "turning command echo off")

    async def _other_dialect(self) -> None:
        if self.fixed_dialect is not None:
            raise ArgumentError("the module rejected the command syntax of the dialect "
                                f"given ({self.fixed_dialect.value}); try without --dse "
                                "or with it")
        self.dialect = (L.Dialect.STANDARD if self.dialect is L.Dialect.DSE else L.Dialect.DSE)
        self.link.dialect = self.dialect.value
        self.log.info("module rejected the syntax; switching to the {d} dialect",
                      d=self.dialect.value)

    async def get(self, epcs, deoj: int = F.METER, timeout: float = 5.0,
                  _switched: bool = False) -> F.Frame:
        """
        One Get frame to the meter.

        @raise NotSent: no session (EVENT 21 02).
        @raise EchonetTimeout: no answer in C{timeout}.
        """
        if self.rate_limited:
            raise RateLimited("the module's transmit-time budget is spent (EVENT 32); "
                              "it recovers by itself within the hour")
        step = "waiting for the meter's answer"
        left = self._left(step)
        self.frames += 1
        self.steps.append("SKSENDTO")
        self.progress("asking the meter")
        d = self.requester.get(epcs, deoj=deoj, timeout=min(timeout, left))
        # The SKSENDTO itself may hang on a stuck module: the whole exchange,
        # not only the wait after OK, must end before the run's deadline.
        d.addTimeout(left, self.clock)
        try:
            return await d
        except defer.TimeoutError:
            raise StepTimeout(step) from None
        except SKCommandError as e:
            if e.code == 5 and not _switched:
                # ER05: our SKSENDTO has the other dialect's argument count.
                await self._other_dialect()
                return await self.get(epcs, deoj, timeout, _switched=True)
            raise
        except SKTimeoutError:
            raise StepTimeout("sending to the meter (SKSENDTO)") from None

    async def authenticate(self) -> None:
        """
        Credentials, then find the meter (state file, --channel scan or full
        scan), then PANA (SKJOIN).

        @raise AuthenticationFailed: EVENT 24.
        @raise MeterNotFound: no scan found the meter.
        @raise StepTimeout: the deadline passed.
        """
        await self.set_credentials()
        if self.link.joinable and self.link.join_failures >= self.RESCAN_AFTER:
            # The saved channel, PAN ID and address failed too often: the meter
            # may have moved to another channel or been replaced.  Find it anew.
            self.log.warn("{n} joins with the saved meter failed; scanning again",
                          n=self.link.join_failures)
            self.link.pan_id = self.link.ipaddr = self.link.mac = None
            if not self.fixed_channel:
                self.link.channel = None
        if not self.link.joinable:
            await self.locate()
        try:
            await self.join()
        except (AuthenticationFailed, StepTimeout):
            self.link.join_failures += 1
            raise
        self.link.join_failures = 0

    async def find_neighbour(self) -> bool:
        """
        Without a known meter address, ask the module: one that still holds a
        session lists the meter in its neighbour cache (SKTABLE 2), and SKINFO
        shows the session's channel and PAN ID.  Serial only, no radio.

        @return: whether the meter's address is now known.
        """
        reply = await self._run(L.sk_table("2"), "reading the module's neighbour table")
        rows = [n for n in reply.lines if isinstance(n, L.Neighbor)]
        if len(rows) != 1:
            return False  # none, or several we cannot tell apart
        if self.info is None:
            reply = await self._run(L.sk_info(), "asking the module for its info (SKINFO)")
            self.info = reply.first(L.Info)
        self.link.ipaddr = rows[0].ipaddr
        self.link.mac = rows[0].addr64
        if self.info is not None and self.info.pan_id != 0xFFFF and 0x21 <= self.info.channel <= 0x3C:
            self.link.channel = self.info.channel
            self.link.pan_id = self.info.pan_id
        self.log.info("the module knows a neighbour: trying it as the meter")
        return True

    async def set_credentials(self) -> None:
        """
        SKSETRBID and SKSETPWD (the scan matches the ID's last 8 characters, so
        this comes before any SKSCAN).
        """
        if self.credentials is None:
            raise ArgumentError("no B-route ID and password given, and the module has no session")
        await self.prepare()
        await self._run(L.sk_setrbid(self.credentials.rbid), "setting the B-route ID")
        await self._run(L.sk_setpwd(self.credentials.password), "setting the B-route password")
        self._credentials_set = True

    async def locate(self) -> L.PanDesc:
        """
        Scan for the meter: only the known channel if any, else all channels,
        with increasing duration.  Updates L{link}.
        """
        channels = [self.link.channel] if self.link.channel else None
        if not self._credentials_set:
            await self.set_credentials()
        found = await self.scan(channels)
        if not found and channels and not self.fixed_channel:
            self.log.info("nothing on the saved channel; scanning all channels")
            self.link.channel = None
            channels = None
            found = await self.scan(None)
        if not found:
            where = f"channel {self.link.channel:#04x}" if self.link.channel else "any channel"
            raise MeterNotFound(f"no smart meter answered on {where}; check the B-route ID, "
                                "and move the module closer to the meter")
        best = max(found, key=lambda p: p.lqi)
        self.link.channel = best.channel
        self.link.pan_id = best.pan_id
        self.link.mac = best.addr
        self.link.lqi = best.lqi
        reply = await self._run(L.sk_ll64(best.addr), "converting the meter's MAC (SKLL64)")
        self.link.ipaddr = reply.final.ipaddr
        return best

    async def scan(self, channels=None, durations=(5, 6, 7)) -> list:
        """
        Active scan with the pairing ID; tries longer durations when nothing is
        found.  Several descriptors of one PAN (different LQI) are merged.

        @return: the PAN descriptors found (possibly empty).
        """
        await self.prepare()
        mask = L.channel_mask(channels) if channels else 0xFFFFFFFF
        late: list = []

        def catch(value):
            if isinstance(value, L.PanDesc):
                late.append(value)
        self.sk.add_listener(catch)
        try:
            return await self._scan(mask, durations, late)
        finally:
            self.sk.remove_listener(catch)

    async def _scan(self, mask: int, durations, late: list) -> list:
        for duration in durations:
            cmd = L.sk_scan(self.dialect, mask, duration)
            try:
                reply = await self._run(cmd, f"scanning for the meter (duration {duration})")
            except SKCommandError as e:
                if e.code != 5:
                    raise
                await self._other_dialect()
                reply = await self._run(L.sk_scan(self.dialect, mask, duration),
                                        f"scanning for the meter (duration {duration})")
            if not reply.pandescs:
                # The last channel's descriptor can follow EVENT 22 (captures §13).
                await task.deferLater(self.clock, min(self.SCAN_GRACE, self._left("scanning")),
                                      lambda: None)
            found = {}
            for desc in reply.pandescs + late:
                if desc.side not in (None, 0):
                    continue
                if self.credentials and desc.pair_id not in (None, self.credentials.rbid[-8:]):
                    continue
                keep = found.get((desc.channel, desc.pan_id, desc.addr))
                if keep is None or desc.lqi > keep.lqi:
                    found[(desc.channel, desc.pan_id, desc.addr)] = desc
            if found:
                return list(found.values())
        return []

    async def join(self) -> None:
        """
        SKSREG S2/S3 then SKJOIN; waits for EVENT 25.
        """
        link = self.link
        await self._run(L.sk_sreg("S2", "%02X" % link.channel), "setting the channel")
        await self._run(L.sk_sreg("S3", "%04X" % link.pan_id), "setting the PAN ID")
        requester = self.requester  # listening before EVENT 25, for the D5 INF
        self._instance_list = defer.Deferred()
        try:
            await self._run(L.sk_join(link.ipaddr),
                            "authenticating with the meter (SKJOIN; a wrong B-route ID or "
                            "password takes about 40 s to be refused: raise --timeout to see "
                            "EVENT 24)")
        except SKEventError:
            raise AuthenticationFailed(
                "the meter refused authentication (EVENT 24): check the B-route ID and "
                "password, and that the channel, PAN ID and address belong to your meter"
            ) from None
        # The meter announces its instances right after EVENT 25; a Get sent
        # before that is often lost (protocol.md pitfall 10).  Wait briefly.
        waiting = self._instance_list
        waiting.addTimeout(min(self.INSTANCE_LIST_WAIT, self._left("waiting for the meter")),
                           self.clock)
        try:
            await waiting
        except defer.TimeoutError:
            pass
        del requester

    async def read(self, epcs=POWER_EPCS, retries: int = 3) -> F.Frame:
        """
        Read C{epcs} in one frame, authenticating when the module has no
        session.  Retries lost frames while time is left.

        @return: the answering frame.
        """
        await self.prepare()
        if self.link.ipaddr is None:
            await self.find_neighbour()
        if self.link.ipaddr is not None:
            # EVENT 21 02 is the sure sign of no session; silence is usually a
            # lost frame, so one more Get (one frame) comes before a join
            # (several frames and seconds of air time).
            for attempt in range(2):
                try:
                    frame = await self.get(epcs)
                except NotSent:
                    self.log.info("no session in the module; authenticating")
                    break
                except (EchonetTimeout, SendFailed) as e:
                    self.log.info("request unanswered ({e})", e=e)
                else:
                    await self._echo_off()
                    return frame
            else:
                # Before a join (several frames), ask the module whether it is
                # cancelling every send under the ARIB limit (register SFB).
                await self._check_send_restricted()
                self.log.info("meter silent twice; authenticating again")
        await self.authenticate()
        last: Exception = ReadFailed("the meter did not answer")
        for attempt in range(retries + 1):
            try:
                return await self.get(epcs)
            except SendFailed as e:
                last = e
                self.log.info("module could not send; pausing before a retry")
                await task.deferLater(self.clock, min(self.SEND_RETRY_PAUSE,
                                                      self._left("retrying")), lambda: None)
            except EchonetTimeout as e:
                last = e
                self.log.info("request lost ({e}); retrying", e=e)
            except NotSent as e:
                last = e
        raise ReadFailed(f"the meter did not answer after {retries + 1} requests: {last}")

    async def read_values(self, energy: bool = False) -> M.Reading:
        """
        Read power and current (and, with C{energy}, the cumulative counters)
        in one frame; the energy scale (D3/E1/D7) travels in the same frame
        until it is known.

        @return: a L{M.Reading}.
        """
        epcs = list(POWER_EPCS)
        need_scale = energy and (self.link.unit is None or self.link.coefficient is None)
        if energy:
            epcs += ENERGY_EPCS
            if need_scale:
                epcs += SCALE_EPCS
        frame = await self.read(tuple(epcs))
        if need_scale:
            self.learn_scale(frame)
        return M.decode_reading(frame.properties, self.scale)

    def learn_scale(self, frame: F.Frame) -> None:
        """
        Take the energy scale (E1, D3, D7) from a frame that carried it.

        @raise ReadFailed: the unit is missing.
        """
        unit = frame.get(M.UNIT)
        if unit is None:
            raise ReadFailed("the meter did not report the energy unit (E1)")
        self.link.unit = str(M.decode_unit(unit))
        self.link.coefficient = M.decode_coefficient(frame.get(M.COEFFICIENT))
        digits = frame.get(M.DIGITS)
        self.link.digits = M.decode_digits(digits) if digits else None

    @property
    def scale(self) -> M.EnergyScale:
        return M.EnergyScale(self.link.coefficient or 1,
                             Decimal(self.link.unit) if self.link.unit else Decimal(1),
                             self.link.digits)

    def close(self) -> None:
        self.sk.remove_listener(self._on_line)
        if self._requester is not None:
            self._requester.close()

