"""
The B-route session: credentials, join, and reading the meter with as few
radio frames as possible.  The one read policy of the product: the one-shot
plugin and the service both read through L{BRouteClient.read}.

Flow (DESIGN.md): query first, because the module may still hold its PANA
session from the last run; on EVENT 21 02 or lasting silence, authenticate
(skipping the scan when the channel, PAN ID and address are known) and query
again.  Every step is bounded by the caller's L{Budget}.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable, Optional

from twisted.internet import defer
from twisted.logger import Logger

from smartmeter_tx.session.discovery import MeterDiscovery
from smartmeter_tx.echonet import frame as F
from smartmeter_tx.echonet import meter as M
from smartmeter_tx.echonet import history as H
from smartmeter_tx import model
from smartmeter_tx.errors import (
    ArgumentError, AuthenticationFailed, MeterNotFound, NoSession, RateLimited, ReadFailed,
    SendsHeld, SmartMeterError, StepTimeout,
)
from smartmeter_tx.session.linkstate import (
    HOLD_EXPIRY, HOLD_RATE_LIMIT, WARNING_EVENTS, LinkState, Session,
)
from smartmeter_tx.echonet.requester import EchonetRequester, EchonetTimeout, NotSent, SendFailed
from smartmeter_tx.sk import commands
from smartmeter_tx.sk import values as V
from smartmeter_tx.sk.events import EventNum
from smartmeter_tx.sk.protocol import SKStackProtocol
from smartmeter_tx.sk.errors import SKCommandError, SKEventError
from smartmeter_tx.session.state import MeterLink
from smartmeter_tx.session.steps import Budget, ModuleSteps

__all__ = [
    "Credentials", "SessionConfig", "BRouteClient", "Budget", "StepTimeout", "AuthenticationFailed",
    "MeterNotFound", "RateLimited", "ReadFailed", "NoSession", "SendsHeld",
    "POWER_EPCS", "ENERGY_EPCS",
]

POWER_EPCS = (M.POWER, M.CURRENT)
ENERGY_EPCS = (M.ENERGY_NORMAL, M.ENERGY_REVERSE)
SCALE_EPCS = (M.COEFFICIENT, M.UNIT, M.DIGITS)

#: The budget of a call that was given none: long, but not for ever.
_NO_BUDGET = 3600.0
#: The EPCs of history requests (their frames are counted apart, for /metrics).
_HISTORY_EPCS = frozenset((M.HISTORY_DAY, M.HISTORY_NORMAL, M.HISTORY_REVERSE, M.HISTORY2,
                           M.HISTORY2_TIME, M.GET_MAP, M.METER_TIME, M.METER_DATE))

#: FAIL codes of a module that is busy for a moment (UART input error,
#: accepted but not executed): worth a retry.  Others mean a wrong command.
_TRANSIENT_FAILS = frozenset((9, 10))


class Credentials:
    """
    The B-route ID and password.  Their repr never shows them.
    """

    def __init__(self, rbid: str, password: str) -> None:
        commands.sk_setrbid(rbid)  # validate now, with a clear error
        commands.sk_setpwd(password)
        self.rbid = rbid
        self.password = password

    def __repr__(self) -> str:
        return "<Credentials (redacted)>"


@dataclass
class SessionConfig:
    """
    What a session needs from the user: the credentials, the saved link with
    the command line's overrides applied and a forced dialect.  Built once by
    L{smartmeter_tx.cli.options} for either front end; each connection gets its
    client from L{client}.
    """

    credentials: Optional[Credentials] = None
    link: MeterLink = field(default_factory=MeterLink)
    dialect: Optional[V.Dialect] = None
    #: the --device it reads through, as given (for /latest and the logs)
    device: Optional[str] = None

    def client(self, sk: SKStackProtocol, clock, state: Optional[LinkState] = None,
               rssi: bool = False) -> "BRouteClient":
        """
        @return: a L{BRouteClient} over C{sk}, sharing this config's link; the
            credentials are registered with C{sk} as secrets first.
        """
        if self.credentials is not None:
            sk.add_secret(self.credentials.rbid)
            sk.add_secret(self.credentials.password)
        return BRouteClient(sk, self.credentials, clock, link=self.link, dialect=self.dialect,
                            state=state, rssi=rssi)


class BRouteClient:
    """
    One module, one meter.

    @ivar link: what is known about the meter; updated as the session learns it,
        for the caller to save.
    @ivar state: the L{LinkState} (session, holds, link quality) this client
        keeps up to date from the module's events.
    @ivar busy_retries: SKSENDTOs sent again after the module was busy (ER10).
    @ivar history_frames: frames of history requests (E5/E2/E4, ED/EC, 9F).
    @ivar steps: names of the last SK commands sent (for tests and benchmarks).
    """

    log = Logger()

    #: Seconds to wait after EVENT 25 for the meter's instance-list INF.
    INSTANCE_LIST_WAIT = 2.0
    #: Seconds to pause after EVENT 21 01 before sending again.
    SEND_RETRY_PAUSE = 1.0
    #: Failed joins with a saved meter before it is looked for by a new scan:
    #: the meter may have moved to another channel.  The scan tries the saved
    #: channel first, so a wrong password costs one short scan per run.
    RESCAN_AFTER = 1
    #: Seconds a run must have left, after a failed join with the saved meter,
    #: to scan for it again in the same run: a scan of all channels (about
    #: 9 s at duration 5), a join (3.3 s) and a Get.
    RESCAN_MIN_BUDGET = 13.0
    #: Seconds to pause after FAIL ER09/ER10 (the module was busy) before
    #: sending again, and how many such retries in a row cost no Get.
    BUSY_PAUSE = 1.5
    MAX_BUSY = 3
    #: Seconds to wait for the answer to one Get: the meter answers within
    #: about a second (captures §19), so waiting longer only wastes the budget.
    ATTEMPT_TIMEOUT = 3.0
    #: Get frames per session (before and after a join) before giving up.
    MAX_GETS = 4
    #: Unanswered Gets, with the session unknown, before authenticating.
    SILENT_BEFORE_JOIN = 2

    def __init__(self, sk: SKStackProtocol, credentials: Optional[Credentials], clock,
                 link: Optional[MeterLink] = None, dialect: Optional[V.Dialect] = None,
                 state: Optional[LinkState] = None, rssi: bool = False) -> None:
        """
        @param link: the saved link, with the user's overrides already applied
            (L{MeterLink.with_overrides}).
        @param dialect: a dialect the user forced; else learnt from the module.
        @param state: a L{LinkState} to keep up to date (the service keeps one
            across connections); a fresh one by default.
        @param rssi: ask a DSE module for the RSSI of each frame (SA2=1).
        """
        self.sk = sk
        self.credentials = credentials
        self.clock = clock
        self.link = link or MeterLink()
        self.state = state or LinkState()
        self.rssi = rssi
        saved = V.Dialect(self.link.dialect) if self.link.dialect else None
        self.module = ModuleSteps(sk, clock, dialect=saved, fixed_dialect=dialect,
                                  on_dialect=self._dialect_changed)
        self.steps = self.module.steps
        self.discovery = MeterDiscovery(self.module, self.link,
                                        credentials.rbid if credentials else None)
        self.requester = EchonetRequester(sk, self.module.dialect or V.Dialect.STANDARD,
                                          self.link.ipaddr, clock=clock)
        self.requester.add_unsolicited_listener(self._on_frame)
        self.busy_retries = 0
        self.history_frames = 0
        self._history_source: Optional[str] = None
        self._clock_offset: Optional[float] = None
        self._credentials_set = False
        self._instance_list: Optional[defer.Deferred] = None
        sk.add_listener(self._on_line)

    @property
    def dialect(self) -> Optional[V.Dialect]:
        return self.module.dialect

    @property
    def prepared(self) -> bool:
        return self.module.prepared

    @property
    def frames(self) -> int:
        """Frames this connection put on the air (SKSENDTOs the module took)."""
        return self.requester.frames_sent

    @property
    def junk_dropped(self) -> int:
        """Garbage lines from the module dropped on this connection."""
        return self.sk.junk_dropped

    def add_frame_listener(self, listener: Callable[[F.Frame], None]) -> None:
        """
        Call C{listener(frame, rxudp)} for every unsolicited ECHONET frame from the
        meter (INF, INFC, late answers), with any number of other listeners.
        """
        self.requester.add_unsolicited_listener(listener)

    def remove_frame_listener(self, listener: Callable[[F.Frame], None]) -> None:
        self.requester.remove_unsolicited_listener(listener)

    def close(self) -> None:
        self.sk.remove_listener(self._on_line)
        self.requester.close()

    # -- what the module says -----------------------------------------------------

    def _on_line(self, value) -> None:
        now = self.clock.seconds()
        if isinstance(value, V.Event):
            change = self.state.event(value.num, now)
            if change is not None:
                level = self.log.warn if value.num in WARNING_EVENTS else self.log.info
                level("{change} (EVENT {num:02X}: {name})", change=change, num=value.num,
                      name=value.name)
        elif isinstance(value, V.RxUdp):
            if value.rssi is not None:
                self.state.rssi(V.lqi_to_dbm(value.rssi))
        elif isinstance(value, V.PanDesc):
            self.state.scanned(value.lqi, value.rssi_dbm)

    def _on_frame(self, frame: F.Frame, rx: V.RxUdp) -> None:
        if (frame.seoj == F.NODE_PROFILE and M.INSTANCE_LIST in frame.epcs
                and self._instance_list is not None and not self._instance_list.called):
            self._instance_list.callback(frame)
        self.log.info("unsolicited frame from the meter: {frame}", frame=frame.describe())

    def _dialect_changed(self, dialect: V.Dialect) -> None:
        self.link.dialect = dialect.value
        self.requester.dialect = dialect

    def _aim(self) -> None:
        # The meter's address is learnt during the session (state file,
        # neighbour table, scan): point the request layer at it before sending
        # or joining, so that answers and the D5 INF are taken from it alone.
        self.requester.meter_addr = self.link.ipaddr

    # -- session ------------------------------------------------------------------

    async def prepare(self, budget: Optional[Budget] = None) -> None:
        """Dialect and echo, once per connection.  No radio."""
        await self.module.prepare(budget or Budget(self.clock, _NO_BUDGET), rssi=self.rssi)

    async def set_credentials(self, budget: Budget) -> None:
        """
        SKSETRBID and SKSETPWD (the scan matches the ID's last 8 characters, so
        this comes before any SKSCAN).

        @raise ArgumentError: no credentials were given.
        """
        if self.credentials is None:
            raise ArgumentError("no B-route ID and password given, and the module has no session")
        await self.prepare(budget)
        await self.module.run(commands.sk_setrbid(self.credentials.rbid), "setting the B-route ID",
                              budget)
        await self.module.run(commands.sk_setpwd(self.credentials.password),
                              "setting the B-route password", budget)
        self._credentials_set = True

    async def locate(self, budget: Optional[Budget] = None) -> V.PanDesc:
        """
        Scan for the meter (C{--scan}); updates L{link}.

        @return: the chosen PAN's descriptor.
        @raise MeterNotFound: no scan found the meter.
        """
        budget = budget or Budget(self.clock, _NO_BUDGET)
        if not self._credentials_set:
            await self.set_credentials(budget)
        return await self.discovery.locate(budget)

    async def authenticate(self, budget: Optional[Budget] = None) -> None:
        """
        Credentials, then find the meter (state file, or a scan), then PANA
        (SKJOIN).  A join with the saved meter that fails is followed by a new
        scan in the same run when the budget allows (the meter may have moved
        to another channel), else the next run scans.

        @raise AuthenticationFailed: EVENT 24.
        @raise MeterNotFound: no scan found the meter.
        @raise StepTimeout: the budget ran out.
        """
        budget = budget or Budget(self.clock, _NO_BUDGET)
        await self.set_credentials(budget)
        link = self.link
        known = link.where() if link.joinable else None
        rescanned = False
        if link.joinable and link.join_failures >= self.RESCAN_AFTER:
            self.log.warn("the last join with the saved meter failed; scanning for it again "
                          "(it may have moved to another channel)")
            link.forget_meter(keep_channel=True)
            rescanned = True
        if not link.joinable:
            await self.discovery.locate(budget)
        try:
            await self._join(budget)
        except (AuthenticationFailed, StepTimeout) as e:
            link.join_failures += 1
            if (known is None or rescanned or link.where() != known
                    or budget.remaining() < self.RESCAN_MIN_BUDGET):
                raise
            self.log.warn("joining the saved meter failed ({e}); scanning all channels for it",
                          e=e)
            # Not the saved channel first: the join there has just failed.
            link.forget_meter()
            await self.discovery.locate(budget)
            if link.where() == known:
                raise e  # the meter is where it was: the credentials are at fault
            try:
                await self._join(budget)
            except (AuthenticationFailed, StepTimeout):
                link.join_failures += 1
                raise
        link.join_failures = 0
        if known is not None and link.where() != known:
            self._moved(known)
        elif self.discovery.moved_from is not None:
            # Found away from the channel given (no saved meter to compare).
            self.log.warn("the meter answers on channel {ch:02X}, not {old:02X}; saved (update "
                          "--channel in the configuration)", ch=link.channel,
                          old=self.discovery.moved_from)
            self.discovery.moved_from = None

    def _moved(self, known: tuple) -> None:
        # Said once: the new place is saved, and a --channel/--ipaddr that
        # still names the old one is ignored from now on (MeterLink.moved_from).
        link = self.link
        channel, pan_id, ipaddr = known
        link.moved_from_channel, link.moved_from_ipaddr = channel, ipaddr
        self.discovery.moved_from = None
        self.log.warn("the meter moved: channel {old_ch:02X} -> {ch:02X}, PAN ID {old_pan:04X} -> "
                      "{pan:04X}, address {ip}; saved (update --channel/--panid/--ipaddr in "
                      "the configuration)", old_ch=channel, ch=link.channel, old_pan=pan_id,
                      pan=link.pan_id, ip=link.ipaddr)

    async def _join(self, budget: Budget) -> None:
        """SKSREG S2/S3 then SKJOIN; waits for EVENT 25 and the meter's D5 INF."""
        link = self.link
        await self.module.run(commands.sk_sreg("S2", "%02X" % link.channel), "setting the channel", budget)
        await self.module.run(commands.sk_sreg("S3", "%04X" % link.pan_id), "setting the PAN ID", budget)
        self._aim()  # listening before EVENT 25, for the D5 INF
        self._instance_list = waiting = defer.Deferred()
        try:
            await self.module.run(commands.sk_join(link.ipaddr),
                                  "authenticating with the meter (SKJOIN; a wrong B-route ID or "
                                  "password, or a meter that moved to another channel, takes "
                                  "about 40 s to be refused: raise --timeout to see EVENT 24; "
                                  "the next run scans for the meter)", budget)
        except SKEventError:
            raise AuthenticationFailed(
                "the meter refused authentication (EVENT 24): check the B-route ID and "
                "password; the meter may also have moved to another channel (the next run "
                "scans for it)"
            ) from None
        # The meter announces its instances right after EVENT 25; a Get sent
        # before that is often lost (protocol.md pitfall 10).  Wait for it, a
        # little, and go on as soon as it is there.
        if not waiting.called:
            waiting.addTimeout(min(self.INSTANCE_LIST_WAIT, budget.left("waiting for the meter")),
                               self.clock)
        try:
            await waiting
        except defer.TimeoutError:
            pass
        finally:
            self._instance_list = None

    async def check_send_restricted(self, budget: Budget) -> bool:
        """
        Read the module's send-restricted flag (SFB) into L{state}.  No radio.

        @return: whether every send is being cancelled under the ARIB limit.
        """
        try:
            reply = await self.module.run(commands.sk_sreg("SFB"),
                                          "reading the module's send-restricted flag", budget)
        except SKCommandError:
            return False  # a module without SFB: nothing to learn
        value = reply.first(V.SReg)
        return value is not None and self.state.sfb(value.value, self.clock.seconds())

    # -- reading ------------------------------------------------------------------

    def _held_error(self) -> SendsHeld:
        reason = self.state.held
        if reason == HOLD_RATE_LIMIT:
            return RateLimited(reason, "the module's transmit-time budget is spent (ARIB "
                                       "limit, EVENT 32); it recovers by itself within the hour")
        return SendsHeld(reason)

    async def _await_reauthentication(self, budget: Budget) -> None:
        """
        Wait for the end of the EVENT 29 hold: EVENT 25 or 24, or the hold's
        longest wait (L{LinkState.EXPIRY_HOLD_MAX}), after which the session
        counts as gone.

        @raise StepTimeout: the budget ran out first.
        """
        state = self.state
        step = "waiting for the module's own re-authentication (EVENT 29)"
        wait = state.EXPIRY_HOLD_MAX - (self.clock.seconds() - state.expired_at)
        left = budget.left(step)  # before waiting: a spent budget leaves no waiter behind
        d = self.sk.when_event(EventNum.PANA_OK, EventNum.PANA_FAILED)
        d.addTimeout(max(0.0, min(wait, left)) + 0.001, self.clock)
        try:
            await d
        except defer.TimeoutError:
            if budget.remaining() <= 0:
                # Not the meter's silence: the module is still re-authenticating.
                raise SendsHeld(HOLD_EXPIRY, f"timed out while {step}") from None
        ended = state.review(self.clock.seconds())
        if ended is not None:
            self.log.warn("{why}; the session counts as gone", why=ended)

    async def send(self, build: Callable[[int], F.Frame], budget: Budget) -> F.Frame:
        """
        One request frame to the meter, C{build(tid)}, answered within
        L{ATTEMPT_TIMEOUT}.

        @return: the answering frame (a success or an SNA answer).
        @raise NotSent: no session (EVENT 21 02).
        @raise SendFailed: EVENT 21 01.
        @raise EchonetTimeout: no answer in time.
        @raise StepTimeout: the budget ran out.
        """
        step = "waiting for the meter's answer"
        left = budget.left(step)

        async def attempt():
            self._aim()
            self.steps.append("SKSENDTO")
            request = build(self.requester.allocate_tid())
            d = self.requester.request(request, timeout=min(self.ATTEMPT_TIMEOUT, left))
            # The SKSENDTO itself may hang on a stuck module: the whole exchange,
            # not only the wait after OK, must end within the budget.
            d.addTimeout(left, self.clock)
            history = not _HISTORY_EPCS.isdisjoint(request.epcs)
            try:
                frame = await d
            except defer.TimeoutError:
                raise StepTimeout(step) from None
            except (NotSent, SendFailed, EchonetTimeout):
                self.history_frames += int(history)  # the module took it: it was on the air
                raise
            self.history_frames += int(history)
            return frame
        return await self.module.in_dialect(attempt)

    async def read(self, epcs=POWER_EPCS, budget: Optional[Budget] = None,
                   may_join: bool = True) -> F.Frame:
        """
        Read C{epcs} in one Get frame; see L{exchange}.

        @return: the answering frame.
        """
        return await self.exchange(lambda tid: F.get_request(tid, epcs), budget, may_join)

    async def exchange(self, build: Callable[[int], F.Frame], budget: Optional[Budget] = None,
                       may_join: bool = True) -> F.Frame:
        """
        Send the request C{build(tid)} and get its answer, re-sending lost
        frames while the budget lasts, and authenticating when the module has
        no session: the one request policy of the product.

        @param may_join: when false, fail with L{NoSession} instead of joining
            (the service decides itself when to join).
        @return: the answering frame (success or SNA).
        @raise SendsHeld: EVENT 29 or EVENT 32 holds sends (L{RateLimited}).
        @raise NoSession: a join is needed and C{may_join} is false.
        @raise ReadFailed: L{MAX_GETS} requests went unanswered.
        @raise StepTimeout: the budget ran out.
        """
        budget = budget or Budget(self.clock, _NO_BUDGET)
        await self.prepare(budget)
        if self.link.ipaddr is None:
            await self.discovery.find_neighbour(budget)
        state = self.state
        if self.link.ipaddr is None:
            state.down()
        joined = False
        gets = silent = busy = 0
        last: Exception = ReadFailed("the meter did not answer")
        while True:
            if state.held == HOLD_EXPIRY:
                # The module re-authenticates by itself after EVENT 29: wait for
                # its EVENT 25 (or 24); a SKJOIN now would only disturb it.
                await self._await_reauthentication(budget)
                continue
            if state.held:
                raise self._held_error()
            if state.session is Session.DOWN:
                if joined or not may_join:
                    raise NoSession(f"the module has no session with the meter ({last})")
                await self.authenticate(budget)
                joined = True
                gets = silent = 0
            if gets >= self.MAX_GETS:
                raise ReadFailed(f"the meter did not answer after {gets} requests: {last}")
            gets += 1
            try:
                frame = await self.send(build, budget)
            except NotSent as e:
                busy = 0
                # EVENT 21 02 is the sure sign of no session.
                last = e
                if not state.held:  # not the module's own re-authentication
                    self.log.info("no session in the module; authenticating")
                    state.down()
                continue
            except SendFailed as e:
                busy = 0
                last = e
                self.log.info("module could not send; pausing before a retry")
                await budget.pause(self.SEND_RETRY_PAUSE, "retrying")
                continue
            except SKCommandError as e:
                if e.code not in _TRANSIENT_FAILS:
                    raise
                # A busy module refuses SKSENDTO for a moment (FAIL ER10):
                # nothing was sent, so the retry costs no air time and does not
                # count against MAX_GETS; the budget bounds it.
                last = e
                self.busy_retries += 1
                busy += 1
                if busy <= self.MAX_BUSY:
                    gets -= 1
                    self.log.info("module busy ({e}); pausing before a retry", e=e)
                    await budget.pause(self.BUSY_PAUSE, "retrying after the module was busy")
                    continue
                # Busy for good (some firmware answers ER10 for "no session"):
                # count it as a Get that went unanswered.
                busy = 0
                silent += 1
                await self._after_silence(silent, "module busy for good", budget)
                continue
            except EchonetTimeout as e:
                busy = 0
                # Silence is usually a lost frame: one more Get (one frame)
                # costs less air time than a join (several frames, seconds).
                last = e
                silent += 1
                self.log.info("request unanswered ({e})", e=e)
                await self._after_silence(silent, "meter silent twice", budget)
                continue
            state.up(self.clock.seconds())
            await self.module.echo_off(budget)  # a module reset turns echo back on
            return frame

    async def _after_silence(self, silent: int, why: str, budget: Budget) -> None:
        """
        With the session unknown, unanswered Gets in a row mean no session:
        but before a join (several frames), ask the module whether it is
        cancelling every send under the ARIB limit (register SFB).
        """
        if self.state.session is Session.UNKNOWN and silent >= self.SILENT_BEFORE_JOIN:
            if not await self.check_send_restricted(budget):
                self.log.info("{why}; authenticating again", why=why)
                self.state.down()

    async def read_values(self, energy: bool = False,
                          budget: Optional[Budget] = None, may_join: bool = True) -> model.Reading:
        """
        Read power and current (and, with C{energy}, the cumulative counters)
        in one frame; the energy scale (D3/E1/D7) travels in the same frame
        until it is known.

        @return: a L{model.Reading}; see L{read} for its failures.
        """
        epcs = list(POWER_EPCS)
        need_scale = energy and (self.link.unit is None or self.link.coefficient is None)
        if energy:
            epcs += ENERGY_EPCS
            if need_scale:
                epcs += SCALE_EPCS
        frame = await self.read(tuple(epcs), budget, may_join=may_join)
        if need_scale:
            self.learn_scale(frame)
        elif energy and self.scale is None:
            # The scan during this read found another meter: its scale first.
            await self.ensure_scale(budget)
        return M.decode_reading(frame.properties, self.scale)

    async def identity(self, budget: Optional[Budget] = None) -> dict:
        """
        Who the meter is: its maker code (0x8A) and serial number (0x8D, when
        it has one) in one Get, with the MAC the session knows.

        @return: C{{"mac": ..., "maker": ..., "serial": ...}} (C{None} where unknown).
        """
        frame = await self.read((M.MAKER_CODE, M.SERIAL_NUMBER), budget)
        maker = frame.get(M.MAKER_CODE)
        serial = frame.get(M.SERIAL_NUMBER)
        return {"mac": self.link.mac,
                "maker": M.decode_maker_code(maker) if maker else None,
                "serial": M.decode_serial_number(serial) if serial else None}

    async def ensure_scale(self, budget: Optional[Budget] = None) -> M.EnergyScale:
        """
        The energy scale, read from the meter (D3, E1, D7 in one frame) unless
        the link knows it already.
        """
        if self.scale is None:
            self.learn_scale(await self.read(SCALE_EPCS, budget))
        return self.scale

    def learn_scale(self, frame: F.Frame) -> None:
        """
        Take the energy scale (E1, D3, D7) from a frame that carried it.

        @raise ReadFailed: the unit is missing.
        """
        unit = frame.get(M.UNIT)
        if unit is None:
            raise ReadFailed("the meter did not report the energy unit (E1)")
        self.link.unit = str(M.decode_unit(unit))
        self.link.scale_mac = self.link.mac
        self.link.coefficient = M.decode_coefficient(frame.get(M.COEFFICIENT))
        digits = frame.get(M.DIGITS)
        self.link.digits = M.decode_digits(digits) if digits else None

    # -- the meter's history ---------------------------------------------------------

    async def history_source(self, budget: Optional[Budget] = None) -> str:
        """
        Which history the meter keeps: C{"EC"} when its Get property map
        (0x9F) lists EC and ED, else C{"E2"} (E2/E4, which every meter has).
        Asked once per connection.
        """
        if self._history_source is None:
            frame = await self.read((M.GET_MAP,), budget)
            edt = frame.get(M.GET_MAP)
            try:
                epcs = M.decode_property_map(edt) if edt else frozenset()
            except SmartMeterError:
                epcs = frozenset()
            self._history_source = "EC" if {M.HISTORY2, M.HISTORY2_TIME} <= epcs else "E2"
        return self._history_source

    async def meter_clock(self, budget: Optional[Budget] = None) -> datetime.datetime:
        """
        The meter's own date and time (0x97, 0x98); slots are dated by it, not
        by the host's clock.

        @return: a naive datetime in the meter's local time (JST).
        """
        frame = await self.read((M.METER_TIME, M.METER_DATE), budget)
        return self._learn_clock(frame)

    def _learn_clock(self, frame: F.Frame) -> datetime.datetime:
        time_edt, date_edt = frame.get(M.METER_TIME), frame.get(M.METER_DATE)
        if time_edt is None or date_edt is None:
            raise ReadFailed("the meter did not tell its date and time (0x97/0x98)")
        clock = M.decode_meter_clock(time_edt, date_edt)
        # The meter's clock has minutes only: keep the offset to the host's
        # clock so that later reads can tell the meter's time without a frame.
        self._clock_offset = clock.replace(tzinfo=model.JST).timestamp() - self.clock.seconds()
        return clock

    def _clock_of(self, frame: F.Frame) -> Optional[datetime.datetime]:
        """The meter's clock from a frame that carries 0x97/0x98, else C{None}."""
        try:
            return self._learn_clock(frame)
        except ReadFailed:
            return None
        except SmartMeterError as e:  # a clock that is not a date
            self.log.warn("ignoring the meter's clock: {error}", error=e)
            return None

    def meter_now(self) -> Optional[datetime.datetime]:
        """
        The meter's time now, from the last clock read (to the minute), or
        C{None} before the first.
        """
        if self._clock_offset is None:
            return None
        when = datetime.datetime.fromtimestamp(self.clock.seconds() + self._clock_offset, model.JST)
        return when.replace(tzinfo=None)

    async def _setc(self, epc: int, edt: bytes, budget: Optional[Budget]) -> None:
        frame = await self.exchange(lambda tid: F.setc_request(tid, [(epc, edt)]), budget)
        if frame.esv != F.SET_RES:
            raise ReadFailed(f"the meter refused to set {epc:02X} (SetC_SNA)")

    async def read_history(self, day: int, budget: Optional[Budget] = None) -> tuple:
        """
        One day of the meter's 30-minute record: SetC E5 (and wait for its
        Set_Res: a Get right after a SetI reads the previous day), then E2,
        E4 and the meter's clock in one Get.  A read that straddled the
        meter's midnight is done again.

        @param day: 0 = today, n = n days ago.
        @return: C{(readings, meter clock)}: C{{boundary: (normal raw, reverse
            raw)}} for the 48 boundaries of that day (naive, meter time).
        @raise ReadFailed: the meter refused or answered for another day.
        @raise SendsHeld: a hold (EVENT 32) stops it.
        """
        return await self._read_day(lambda today: day, budget)

    async def read_history_of(self, date: datetime.date, budget: Optional[Budget] = None) -> tuple:
        """
        L{read_history} of the meter's day C{date}: the E5 day is worked out
        from the meter's clock at each try, so a read redone after the
        meter's midnight still reads C{date}.
        """
        return await self._read_day(lambda today: (today - date).days, budget)

    async def _read_day(self, day_of: Callable[[datetime.date], int],
                        budget: Optional[Budget]) -> tuple:
        for _ in range(2):
            if self._clock_offset is None:
                await self.meter_clock(budget)
            before = self.meter_now()
            day = day_of(before.date())
            await self._setc(M.HISTORY_DAY, H.encode_history_day(day), budget)
            frame = await self.read((M.HISTORY_NORMAL, M.HISTORY_REVERSE, M.METER_TIME,
                                     M.METER_DATE), budget)
            normal, reverse = frame.get(M.HISTORY_NORMAL), frame.get(M.HISTORY_REVERSE)
            clocks = [self._clock_of(frame)]
            if normal is not None and reverse is None:
                # Some meters give one history per frame (Get_SNA for E4): the
                # second Get carries the clock too, for the midnight check.
                second = await self.read((M.HISTORY_REVERSE, M.METER_TIME, M.METER_DATE), budget)
                reverse = second.get(M.HISTORY_REVERSE)
                clocks.append(self._clock_of(second))
            if normal is None or reverse is None:
                raise ReadFailed("the meter did not give its history (E2/E4)")
            clocks = [c for c in clocks if c is not None] or [self.meter_now()]
            clock = clocks[-1]
            if any(c.date() != before.date() for c in clocks):
                self.log.info("the meter's midnight passed during a history read; reading again")
                continue
            normal_day, reverse_day = H.decode_history(normal), H.decode_history(reverse)
            if normal_day.day != day:
                raise ReadFailed(f"the meter gave the history of day {normal_day.day}, not {day}")
            date = clock.date() - datetime.timedelta(days=day)
            return H.day_readings(normal_day, reverse_day, date), clock
        raise ReadFailed("the meter's midnight passed during two history reads")

    async def read_history_at(self, end: datetime.datetime, count: int,
                              budget: Optional[Budget] = None) -> dict:
        """
        C{count} readings (1-12) of the meter's record ending at the boundary
        C{end} (meter time): SetC ED, wait for Set_Res, Get EC.

        @return: C{{boundary: (normal raw, reverse raw)}}.
        @raise ReadFailed: the meter refused or answered for another time.
        """
        await self._setc(M.HISTORY2_TIME, H.encode_history2_time(end, count), budget)
        frame = await self.read((M.HISTORY2,), budget)
        edt = frame.get(M.HISTORY2)
        if edt is None:
            raise ReadFailed("the meter did not give its history (EC)")
        history = H.decode_history2(edt)
        if history.start != end:
            raise ReadFailed(f"the meter gave EC from {history.start}, not {end}")
        return history.by_time()

    @property
    def scale(self) -> Optional[M.EnergyScale]:
        """The energy scale, or C{None} until the meter told it."""
        if self.link.unit is None:
            return None
        return M.EnergyScale(self.link.coefficient or 1, Decimal(self.link.unit),
                             self.link.digits)
