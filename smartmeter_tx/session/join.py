"""
Joining the meter: the B-route credentials, finding the meter (the saved
link, or a scan), PANA authentication (SKJOIN), and a new scan in the same
run when a join with the saved meter fails (it may have moved to another
channel).
"""

from __future__ import annotations

from typing import Awaitable, Callable, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from smartmeter_tx.echonet import frame as F
from smartmeter_tx.echonet import meter as M
from smartmeter_tx.echonet.requester import EchonetRequester
from smartmeter_tx.errors import (
    ArgumentError, AuthenticationFailed, ConfigError, MeterNotFound, StepTimeout,
)
from smartmeter_tx.session.discovery import MeterDiscovery
from smartmeter_tx.session.state import MeterLink
from smartmeter_tx.session.steps import Budget, ModuleSteps
from smartmeter_tx.sk import commands
from smartmeter_tx.sk import values as V
from smartmeter_tx.sk.errors import SKEventError

__all__ = ["Credentials", "Joiner", "check_credentials"]


_HEX = frozenset("0123456789abcdefABCDEF")


def check_credentials(rbid: str, password: str) -> None:
    """
    The B-route ID and password as the power companies issue them, checked
    before any radio work: a typo would otherwise cost a 40 s refused join.
    The messages never hold the values.

    @raise ConfigError: one of them cannot be right.
    """
    if (isinstance(rbid, str) and isinstance(password, str) and len(rbid) == 12
            and len(password) == 32 and set(password) <= _HEX):
        raise ConfigError("the B-route ID and password look swapped: the ID is the 32 "
                          "hexadecimal digits, the password the 12 characters")
    if not isinstance(rbid, str) or len(rbid) != 32 or not set(rbid) <= _HEX:
        raise ConfigError("the B-route ID must be 32 hexadecimal digits, as on the power "
                          "company's letter (without spaces)")
    if not isinstance(password, str) or len(password) != 12 or not all(
            0x21 <= ord(c) <= 0x7E for c in password):
        raise ConfigError("the B-route password must be 12 characters, as on the power "
                          "company's letter (without spaces)")
    commands.sk_setrbid(rbid)  # and what the module takes
    commands.sk_setpwd(password)


#: The join's step, as a time-out names it (the one-shot commands add what a
#: short run cannot see: L{smartmeter_tx.cli.common.timeout_hint}).
AUTHENTICATING = "authenticating with the meter (SKJOIN)"


class Credentials:
    """
    The B-route ID and password.  Their repr never shows them.
    """

    def __init__(self, rbid: str, password: str) -> None:
        check_credentials(rbid, password)
        # Letters are issued in upper case, and the meter compares the ID as
        # sent: a lower-case copy would be refused (or not found by the scan,
        # which matches its last 8 digits).
        self.rbid = rbid.upper()
        self.password = password

    def __repr__(self) -> str:
        return "<Credentials (redacted)>"


class Joiner:
    """
    The joins of one connection.

    @ivar credentials_set: whether SKSETRBID and SKSETPWD were sent on it.
    """

    log = Logger()

    #: Seconds to wait after EVENT 25 for the meter's instance-list INF.
    INSTANCE_LIST_WAIT = 2.0
    #: Refused joins with the saved meter before it is looked for by a new
    #: scan (it may have moved to another channel).  The scan tries the saved
    #: channel first, so a wrong password costs one short scan per run.
    RESCAN_AFTER = 1
    #: Joins with the saved meter that did not end within their runs before
    #: a new scan.  One is no evidence (a short --timeout, a noisy hour, and
    #: the module goes on with it after the run: the next run waits for it).
    RESCAN_AFTER_TIMEOUTS = 2
    #: Seconds a run must have left, after a failed join with the saved meter,
    #: to scan for it again in the same run: a scan of all channels (about
    #: 9 s at duration 5), a join (3.3 s) and a Get.
    RESCAN_MIN_BUDGET = 13.0
    #: Times each serial-only step of a join (the credentials, the channel
    #: and PAN ID, SKLL64, the preparation: the commands in
    #: L{smartmeter_tx.session.steps.IDEMPOTENT}) is sent again when the
    #: module did not answer it: a byte lost on the serial line then costs a
    #: command timeout, not the join and the backoff after it.  SKSCAN and
    #: SKJOIN, on the radio, are never sent again this way.
    RETRIES = 2

    def __init__(self, module: ModuleSteps, discovery: MeterDiscovery, link: MeterLink,
                 requester: EchonetRequester, credentials: Optional[Credentials],
                 clock: IReactorTime, prepare: Callable[[Budget], Awaitable[None]]) -> None:
        """
        @param requester: the connection's request layer: pointed at the
            meter before SKJOIN, it hears the meter's instance-list INF.
        @param prepare: the connection's own preparation (dialect, echo),
            awaited before the credentials are set.
        """
        self.module = module
        self.discovery = discovery
        self.link = link
        self.requester = requester
        self.credentials = credentials
        self.clock = clock
        self._prepare = prepare
        self.credentials_set = False
        self._instance_list: Optional[defer.Deferred] = None
        requester.add_unsolicited_listener(self._on_frame)

    def close(self) -> None:
        self.requester.remove_unsolicited_listener(self._on_frame)

    def _on_frame(self, frame: F.Frame, rx: V.RxUdp) -> None:
        if (frame.seoj == F.NODE_PROFILE and M.INSTANCE_LIST in frame.epcs
                and self._instance_list is not None and not self._instance_list.called):
            self._instance_list.callback(frame)

    async def set_credentials(self, budget: Budget) -> None:
        """
        SKSETRBID and SKSETPWD (the scan matches the ID's last 8 characters, so
        this comes before any SKSCAN).

        @raise ArgumentError: no credentials were given.
        """
        if self.credentials is None:
            raise ArgumentError("no B-route ID and password given, and the module has no session")
        await self._prepare(budget)
        await self.module.run(commands.sk_setrbid(self.credentials.rbid), "setting the B-route ID",
                              budget)
        await self.module.run(commands.sk_setpwd(self.credentials.password),
                              "setting the B-route password", budget)
        self.credentials_set = True

    async def locate(self, budget: Budget) -> V.PanDesc:
        """
        Scan for the meter (C{--scan}); updates the link.

        @return: the chosen PAN's descriptor.
        @raise MeterNotFound: no scan found the meter.
        """
        budget = budget.with_retries(self.RETRIES)
        if not self.credentials_set:
            await self.set_credentials(budget)
        return await self.discovery.locate(budget)

    async def authenticate(self, budget: Budget) -> None:
        """
        Credentials, then find the meter (state file, or a scan), then PANA
        (SKJOIN).  A join with the saved meter that fails is followed by a new
        scan in the same run when the budget allows (the meter may have moved
        to another channel), else the next run scans.  A serial-only step the
        module did not answer is sent again (L{RETRIES}).

        @raise AuthenticationFailed: EVENT 24.
        @raise MeterNotFound: no scan found the meter.
        @raise StepTimeout: the budget ran out.
        """
        budget = budget.with_retries(self.RETRIES)
        await self.set_credentials(budget)
        link = self.link
        known = link.where() if link.joinable else None
        rescanned = False
        if link.joinable and (link.join_failures >= self.RESCAN_AFTER
                              or link.join_timeouts >= self.RESCAN_AFTER_TIMEOUTS):
            why = ("was refused" if link.join_failures else
                   f"did not complete in {link.join_timeouts} runs")
            self.log.warn("the last join with the saved meter {why}; scanning to see where "
                          "the meter answers", why=why)
            link.forget_meter(keep_channel=True)
            rescanned = True
        if not link.joinable:
            await self.discovery.locate(budget)
        try:
            await self._join(budget)
        except (AuthenticationFailed, StepTimeout) as e:
            if isinstance(e, StepTimeout):
                link.join_timeouts += 1
            else:
                link.join_failures += 1
            if (known is None or rescanned or link.where() != known
                    or budget.remaining() < self.RESCAN_MIN_BUDGET):
                raise
            await self._rescan_and_join(known, e, budget)
        link.join_failures = link.join_timeouts = 0
        if known is not None and link.where() != known:
            self._moved(known)
        elif self.discovery.moved_from is not None:
            # Found away from the channel given (no saved meter to compare).
            self.log.warn("the meter answers on channel {ch:02X}, not {old:02X}; saved (update "
                          "--channel in the configuration)", ch=link.channel,
                          old=self.discovery.moved_from)
            self.discovery.moved_from = None

    async def _rescan_and_join(self, known: tuple, failed: Exception, budget: Budget) -> None:
        """After a failed join with the saved meter: scan all channels, join there."""
        self.log.warn("joining the saved meter failed ({e}); scanning all channels for it",
                      e=failed)
        # Not the saved channel first: the join there has just failed.
        self.link.forget_meter()
        await self.discovery.locate(budget)
        if self.link.where() == known:
            raise failed  # the meter is where it was: the credentials are at fault
        try:
            await self._join(budget)
        except AuthenticationFailed:
            self.link.join_failures += 1
            raise
        except StepTimeout:
            self.link.join_timeouts += 1
            raise

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
        channel, pan_id, ipaddr = self.link.where()
        if channel is None or pan_id is None or ipaddr is None:
            raise MeterNotFound("the meter's channel, PAN ID and address are not known")
        await self.module.run(commands.sk_sreg("S2", "%02X" % channel),
                              "setting the channel", budget)
        await self.module.run(commands.sk_sreg("S3", "%04X" % pan_id),
                              "setting the PAN ID", budget)
        # Listening before EVENT 25, for the D5 INF from the meter alone.
        self.requester.meter_addr = ipaddr
        waiting: defer.Deferred = defer.Deferred()
        self._instance_list = waiting
        step = AUTHENTICATING
        try:
            await self.module.when_free(
                lambda: self.module.run(commands.sk_join(ipaddr), step, budget), step, budget)
        except SKEventError:
            raise AuthenticationFailed(
                "the meter refused authentication (EVENT 24): check the B-route ID and "
                "password",
                next_run="the next run scans the channels first, in case the meter is elsewhere"
            ) from None
        # The meter announces its instances right after EVENT 25; a Get sent
        # before that is often lost (docs/PROTOCOL.md, "After the join").  Wait
        # for it, a little, and go on as soon as it is there.
        if not waiting.called:
            waiting.addTimeout(min(self.INSTANCE_LIST_WAIT, budget.left("waiting for the meter")),
                               self.clock)
        try:
            await waiting
        except defer.TimeoutError:
            pass
        finally:
            self._instance_list = None
