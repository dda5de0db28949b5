"""
The one request policy of the product: send a request to the meter and get
its answer, re-sending lost frames while the budget lasts, waiting out the
module's own re-authentication, reading SFB before silence is taken for no
session, and authenticating when the module has none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Awaitable, Callable

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from smartmeter_tx.echonet import frame as F
from smartmeter_tx.echonet.requester import EchonetRequester, EchonetTimeout, NotSent, SendFailed
from smartmeter_tx.errors import NoSession, RateLimited, ReadFailed, SendsHeld, StepTimeout
from smartmeter_tx.session.discovery import MeterDiscovery
from smartmeter_tx.session.join import Joiner
from smartmeter_tx.session.linkstate import HOLD_EXPIRY, HOLD_RATE_LIMIT, LinkState, Session
from smartmeter_tx.session.state import MeterLink
from smartmeter_tx.session.steps import Budget, ModuleSteps
from smartmeter_tx.sk import commands
from smartmeter_tx.sk import values as V
from smartmeter_tx.sk.errors import SKCommandError
from smartmeter_tx.sk.events import EventNum
from smartmeter_tx.sk.protocol import SKStackProtocol

__all__ = ["MeterRequests"]

#: FAIL codes of a module that is busy for a moment (UART input error,
#: accepted but not executed): worth a retry.  Others mean a wrong command.
_TRANSIENT_FAILS = frozenset((9, 10))


@dataclass
class _Tries:
    """What one exchange has tried so far."""

    gets: int = 0
    silent: int = 0
    busy: int = 0
    joined: bool = False
    last: Exception = field(default_factory=lambda: ReadFailed("the meter did not answer"))


class MeterRequests:
    """
    The requests of one connection.

    @ivar busy_retries: SKSENDTOs sent again after the module was busy (ER10).
    """

    log = Logger()

    #: Seconds to pause after EVENT 21 01 before sending again.
    SEND_RETRY_PAUSE = 1.0
    #: Seconds to pause after FAIL ER09/ER10 (the module was busy) before
    #: sending again, and how many such retries in a row cost no Get.
    BUSY_PAUSE = 1.5
    MAX_BUSY = 3
    #: Seconds to wait for the answer to one Get: the meter answers within
    #: about a second (docs/PROTOCOL.md, "Timing"), so waiting longer only
    #: wastes the budget.
    ATTEMPT_TIMEOUT = 3.0
    #: Get frames per session (before and after a join) before giving up.
    MAX_GETS = 4

    def __init__(self, sk: SKStackProtocol, clock: IReactorTime, state: LinkState, link: MeterLink,
                 module: ModuleSteps, discovery: MeterDiscovery, joiner: Joiner,
                 requester: EchonetRequester,
                 prepare: Callable[[Budget], Awaitable[None]]) -> None:
        """
        @param prepare: the connection's own preparation (dialect, echo),
            awaited before every exchange.
        """
        self.sk = sk
        self.clock = clock
        self.state = state
        self.link = link
        self.module = module
        self.discovery = discovery
        self.joiner = joiner
        self.requester = requester
        self._prepare = prepare
        self.busy_retries = 0
        #: Called with every frame that answers an exchange (success or SNA).
        self.answer_listeners: list[Callable[[F.Frame], None]] = []

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

    def _held_error(self) -> SendsHeld:
        reason = self.state.held or ""
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
        assert state.expired_at is not None  # the caller saw the EVENT 29 hold
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

        async def attempt() -> F.Frame:
            # The meter's address is learnt during the session (state file,
            # neighbour table, scan): aim at it, so that answers are taken
            # from it alone.
            self.requester.meter_addr = self.link.ipaddr
            self.module.steps.append("SKSENDTO")
            request = build(self.requester.allocate_tid())
            # Counted on the operation's budget when the module takes it,
            # whatever comes after.
            d = self.requester.request(request, timeout=min(self.ATTEMPT_TIMEOUT, left),
                                       on_sent=budget.sent)
            # The SKSENDTO itself may hang on a stuck module: the whole exchange,
            # not only the wait after OK, must end within the budget.
            d.addTimeout(left, self.clock)
            try:
                return await d
            except defer.TimeoutError:
                raise StepTimeout(step) from None
        return await self.module.in_dialect(attempt)

    async def exchange(self, build: Callable[[int], F.Frame], budget: Budget,
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
        await self._prepare(budget)
        if self.link.ipaddr is None:
            await self.discovery.find_neighbour(budget)
        if self.link.ipaddr is None:
            self.state.down()
        tries = _Tries()
        while True:
            if not await self._may_send(tries, budget, may_join):
                continue
            tries.gets += 1
            try:
                frame = await self.send(build, budget)
            except (NotSent, SendFailed, EchonetTimeout) as e:
                await self._unanswered(e, tries, budget)
                continue
            except SKCommandError as e:
                if e.code not in _TRANSIENT_FAILS:
                    raise
                await self._busy(e, tries, budget)
                continue
            self.state.up(self.clock.seconds())
            for listener in list(self.answer_listeners):
                listener(frame)
            await self.module.echo_off(budget)  # a module reset turns echo back on
            return frame

    async def _may_send(self, tries: _Tries, budget: Budget, may_join: bool) -> bool:
        """
        Deal with what stands before the next request: a hold, a session to
        join, the requests spent.

        @return: C{False} when a hold was waited out (look again first).
        @raise SendsHeld: a hold stops every send.
        @raise NoSession: a join is needed but was made already, or not allowed.
        @raise ReadFailed: L{MAX_GETS} requests went unanswered.
        """
        state = self.state
        if state.held == HOLD_EXPIRY:
            # The module re-authenticates by itself after EVENT 29: wait for
            # its EVENT 25 (or 24); a SKJOIN now would only disturb it.
            await self._await_reauthentication(budget)
            return False
        if state.held:
            raise self._held_error()
        if state.session is Session.DOWN:
            if tries.joined or not may_join:
                raise NoSession(f"the module has no session with the meter ({tries.last})")
            await self.joiner.authenticate(budget)
            tries.joined = True
            tries.gets = tries.silent = 0
        if tries.gets >= self.MAX_GETS:
            raise ReadFailed(f"the meter did not answer after {tries.gets} requests: {tries.last}")
        return True

    async def _unanswered(self, error: Exception, tries: _Tries, budget: Budget) -> None:
        """A request got no answer: EVENT 21 02 or 01, or silence."""
        tries.busy = 0
        tries.last = error
        if isinstance(error, NotSent):
            # EVENT 21 02 is the sure sign of no session.
            if not self.state.held:  # not the module's own re-authentication
                self.log.info("no session in the module; authenticating")
                self.state.down()
        elif isinstance(error, SendFailed):
            self.log.info("module could not send; pausing before a retry")
            await budget.pause(self.SEND_RETRY_PAUSE, "retrying")
        else:
            # Silence is usually a lost frame: one more Get (one frame)
            # costs less air time than a join (several frames, seconds).
            tries.silent += 1
            self.log.info("request unanswered ({e})", e=error)
            await self._after_silence(tries.silent, "meter silent twice", budget)

    async def _busy(self, error: SKCommandError, tries: _Tries, budget: Budget) -> None:
        """
        A busy module refuses SKSENDTO for a moment (FAIL ER10): nothing was
        sent, so the retry costs no air time and does not count against
        L{MAX_GETS}; the budget bounds it.
        """
        tries.last = error
        self.busy_retries += 1
        tries.busy += 1
        if tries.busy <= self.MAX_BUSY:
            tries.gets -= 1
            self.log.info("module busy ({e}); pausing before a retry", e=error)
            await budget.pause(self.BUSY_PAUSE, "retrying after the module was busy")
            return
        # Busy for good (some firmware answers ER10 for "no session"): count
        # it as a Get that went unanswered.
        tries.busy = 0
        tries.silent += 1
        await self._after_silence(tries.silent, "module busy for good", budget)

    async def _after_silence(self, silent: int, why: str, budget: Budget) -> None:
        """
        When the link state takes C{silent} unanswered Gets in a row for no
        session, ask the module first whether it is cancelling every send
        under the ARIB limit (register SFB): a join costs several frames.
        """
        if self.state.silence_means_no_session(silent):
            if not await self.check_send_restricted(budget):
                self.log.info("{why}; authenticating again", why=why)
                self.state.down()
