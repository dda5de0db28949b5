"""
Bounded SK steps: one command at a time within a L{Budget}, the module's
dialect (learnt from SKINFO, corrected by the module's ER05) and its echo.

This is the layer the session (L{smartmeter_tx.session.client}) and meter discovery
(L{smartmeter_tx.session.discovery}) send their commands through, so that "how long
may this take", "which dialect" and "what did we send" are answered once.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Awaitable, Callable, Coroutine, NoReturn, Optional, TypeVar, Union

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from smartmeter_tx.errors import DialectMismatch, StepTimeout
from smartmeter_tx.sk import values as V
from smartmeter_tx.sk import commands
from smartmeter_tx.sk.protocol import SKStackProtocol
from smartmeter_tx.sk.protocol.queue import Reply
from smartmeter_tx.sk.errors import SKCommandError, SKTimeoutError

__all__ = ["Budget", "ModuleSteps", "IDEMPOTENT", "ONESHOT_DIALECT_FLAGS",
           "SERVICE_DIALECT_FLAGS"]

_T = TypeVar("_T")

#: FAIL ER05: the command has the other dialect's argument count.
_WRONG_DIALECT = 5
#: FAIL ER10: accepted, but the module cannot execute it now.
_BUSY = 10

#: The SK commands L{ModuleSteps.run} may send again when the module did not
#: answer them: serial only (no radio: nothing goes on the air, nothing
#: counts against the ARIB budget), and one more of them leaves the module as
#: one does, since they only read (versions, info, registers, tables, the
#: output mode), set a register or a credential to the value sent (SKSREG,
#: SKSETPWD, SKSETRBID, SKADDNBR), or compute an address (SKLL64).  Not
#: SKSCAN, SKJOIN, SKSENDTO and SKTERM, which act on the radio; not SKRESET,
#: which drops the session; not WOPT and SKSAVE, which write the flash.
IDEMPOTENT = frozenset(("SKVER", "SKAPPVER", "SKINFO", "SKSREG", "SKSETPWD", "SKSETRBID",
                        "SKLL64", "SKTABLE", "SKADDNBR", "ROPT"))

#: The options that force a dialect, as each front end spells them (the
#: message of a module that speaks the other dialect names the one given):
#: the one-shot commands' Go-style C{--dse}, and C{twist smartmeter}'s flags.
ONESHOT_DIALECT_FLAGS = {V.Dialect.DSE: "--dse", V.Dialect.STANDARD: "--dse=false"}
SERVICE_DIALECT_FLAGS = {V.Dialect.DSE: "--dse", V.Dialect.STANDARD: "--standard"}


class Budget:
    """
    The time a caller allows for a whole operation, on an injected clock:
    the one object the session's layers read the deadline from.

    The caller at the top arms it once (L{bound}): at the deadline the
    whole operation is cancelled, and with it whatever it waits on.  The
    layers below read it only where they truly need the deadline: before a
    radio step, so that no step starts that cannot finish within it (air
    time is the scarcest thing here), and to name the step that ran out.

    @ivar deadline: the clock time at which the operation must be over.
    @ivar retries: how many times each idempotent SK command of the
        operation may be sent again when the module did not answer it
        (L{ModuleSteps.run}); 0 unless the operation asks (L{with_retries}).
    """

    #: Seconds past the deadline before L{bound} cancels: the steps end at
    #: the deadline themselves and name theirs; this catches only a wait that
    #: nothing else bounds.
    GRACE = 1.0

    def __init__(self, clock: IReactorTime, seconds: float, retries: int = 0) -> None:
        self.clock = clock
        self.deadline = clock.seconds() + seconds
        self.retries = retries
        # Shared with the budgets derived from this one: one operation's count.
        self._frames = [0]

    @property
    def frames(self) -> int:
        """
        Frames this operation put on the air (SKSENDTOs the module took),
        whatever else the connection sends meanwhile.
        """
        return self._frames[0]

    def sent(self) -> None:
        """Count one frame of this operation on the air."""
        self._frames[0] += 1

    def __repr__(self) -> str:
        return f"<Budget {self.remaining():.1f} s left>"

    def with_retries(self, retries: int) -> Budget:
        """
        @return: a budget with this one's clock and deadline, under which each
            idempotent SK command the module did not answer is sent again up
            to C{retries} times (the caller's budget is left as it is).
        """
        budget = Budget(self.clock, 0.0, retries)
        budget.deadline = self.deadline
        budget._frames = self._frames
        return budget

    def remaining(self) -> float:
        """Seconds left, possibly negative."""
        return self.deadline - self.clock.seconds()

    def left(self, step: str) -> float:
        """
        @return: the seconds left for C{step}.
        @raise StepTimeout: none are left.
        """
        left = self.remaining()
        if left <= 0:
            raise StepTimeout(step)
        return left

    def bound(self, awaitable: Union[Coroutine[Any, Any, _T], defer.Deferred[_T]],
              step: str) -> defer.Deferred[_T]:
        """
        Run C{awaitable}, the operation this budget is for, cancelled if it
        is not over by the deadline (and L{GRACE}): what it waits on then is
        undone (a queued SK command dropped, one on the wire abandoned).

        @return: a Deferred firing with its result, or failing with its own
            error, or with L{StepTimeout} naming C{step} if it was cancelled.
        """
        d = defer.ensureDeferred(awaitable)

        def timed_out(result: object, timeout: float) -> NoReturn:
            raise StepTimeout(step)
        d.addTimeout(max(0.0, self.remaining()) + self.GRACE, self.clock,
                     onTimeoutCancel=timed_out)
        return d

    async def pause(self, seconds: float, step: str) -> None:
        """
        Wait C{seconds}, or what is left of the budget if that is less.

        @raise StepTimeout: nothing is left.
        """
        await task.deferLater(self.clock, min(seconds, self.left(step)), lambda: None)


class ModuleSteps:
    """
    @ivar dialect: the module's dialect, or C{None} until L{prepare} learnt it.
    @ivar fixed_dialect: a dialect the user forced (C{--dse}); never switched.
    @ivar dialect_flag: the option that forced it, as the front end spells it
        (for the message when the module speaks the other dialect); the
        one-shot commands' spelling (L{ONESHOT_DIALECT_FLAGS}) if C{None}.
    @ivar info: the module's SKINFO answer, once asked.
    @ivar steps: names of the last SK commands sent (for tests and benchmarks).
    @ivar on_dialect: called with the new L{V.Dialect} whenever it changes.
    """

    log = Logger()

    #: Seconds between tries while the module is busy (L{when_free}).
    BUSY_PAUSE = 2.0

    def __init__(self, sk: SKStackProtocol, clock: IReactorTime,
                 dialect: Optional[V.Dialect] = None, fixed_dialect: Optional[V.Dialect] = None,
                 on_dialect: Optional[Callable[[V.Dialect], None]] = None,
                 dialect_flag: Optional[str] = None) -> None:
        self.sk = sk
        self.clock = clock
        self.fixed_dialect = fixed_dialect
        self.dialect_flag = dialect_flag
        self.dialect = fixed_dialect or dialect
        self.on_dialect = on_dialect or (lambda dialect: None)
        self.info: Optional[V.Info] = None
        self.prepared = False
        self.steps: deque[str] = deque(maxlen=64)  # bounded: a service runs for years

    async def run(self, command: commands.Command, step: str, budget: Budget) -> Reply:
        """
        Send one SK command, bounded by what is left of C{budget}.

        An idempotent command (L{IDEMPOTENT}) that the module did not answer
        in its time is sent again, up to C{budget.retries} times: the command
        queue abandoned it and resyncs before the next command, so a byte
        lost on the serial line costs one command timeout instead of the
        whole operation.  Not when the module did not answer that resync
        either: it is deaf then, not losing bytes, and more tries would only
        spend the budget.

        @return: the command's L{smartmeter_tx.sk.protocol.queue.Reply}.
        @raise StepTimeout: the budget ran out, or the module did not answer
            (nor the tries allowed after it).
        @raise SKCommandError: FAIL ERxx.
        """
        retries = budget.retries if command.name in IDEMPOTENT else 0
        while True:
            try:
                return await self._run_once(command, step, budget)
            except SKTimeoutError as e:
                if retries <= 0 or e.unsent:
                    raise StepTimeout(step) from None
            retries -= 1
            # The name only: the arguments may be the B-route ID or password.
            self.log.info("the module did not answer {command} ({step}); sending it again "
                          "(serial only, no radio)", command=command.name, step=step)

    async def _run_once(self, command: commands.Command, step: str, budget: Budget) -> Reply:
        """
        L{run}'s one try.

        @raise SKTimeoutError: the module did not answer in the command's time.
        @raise StepTimeout: the budget ran out first.
        """
        left = budget.left(step)
        self.steps.append(command.name)
        d = self.sk.command(command)
        if left < command.timeout:
            d.addTimeout(left, self.clock)
        try:
            return await d
        except defer.TimeoutError:
            raise StepTimeout(step) from None

    async def when_free(self, attempt: Callable[[], Awaitable[_T]], step: str,
                        budget: Budget) -> _T:
        """
        Await C{attempt()}; while the module refuses it with ER10, pause and
        try again within C{budget}.  A join that an earlier run gave up on
        goes on inside the module for up to about 40 s, and until it ends
        SKSCAN and SKJOIN are refused: that is waited out, not a failure.

        @raise StepTimeout: the budget ran out while the module was busy.
        """
        said = False
        while True:
            try:
                return await attempt()
            except SKCommandError as e:
                if e.code != _BUSY:
                    raise
            if not said:
                self.log.info("the module is busy (FAIL ER10), most likely still with an "
                              "earlier join; waiting for it")
                said = True
            await budget.pause(self.BUSY_PAUSE, f"{step}: the module stayed busy (FAIL ER10)")

    async def run_in_dialect(self, build: Callable[[V.Dialect], commands.Command], step: str,
                             budget: Budget) -> Reply:
        """
        L{run} a command whose syntax depends on the dialect; when the module
        rejects it with ER05 (the other dialect's argument count), switch
        dialect once and send it again.
        """
        return await self.in_dialect(
            lambda: self.run(build(self.dialect or V.Dialect.STANDARD), step, budget))

    async def in_dialect(self, attempt: Callable[[], Awaitable[_T]]) -> _T:
        """
        Await C{attempt()}; on ER05 switch the dialect and await it once more.
        """
        try:
            return await attempt()
        except SKCommandError as e:
            if e.code != _WRONG_DIALECT:
                raise
        self.switch_dialect()
        return await attempt()

    def switch_dialect(self) -> None:
        """
        @raise DialectMismatch: the dialect was forced, so the module and the
            user disagree: a setting that cannot work, never retried.
        """
        if self.fixed_dialect is not None:
            raise DialectMismatch(self.fixed_dialect.value, self.dialect_flag
                                  or ONESHOT_DIALECT_FLAGS[self.fixed_dialect])
        self.dialect = V.Dialect.STANDARD if self.dialect is V.Dialect.DSE else V.Dialect.DSE
        self.log.info("module rejected the syntax; switching to the {d} dialect",
                      d=self.dialect.value)
        self.on_dialect(self.dialect)

    async def ask_info(self, budget: Budget) -> Optional[V.Info]:
        """SKINFO, once per connection.  No radio."""
        if self.info is None:
            reply = await self.run(commands.sk_info(), "asking the module for its info (SKINFO)", budget)
            self.info = reply.first(V.Info)
        return self.info

    async def prepare(self, budget: Budget, rssi: bool = False) -> None:
        """
        Learn the dialect (SKINFO's fifth field) unless known, and turn echo
        off.  No radio; done once per connection.

        @param rssi: on a DSE module, ask for the RSSI of every ERXUDP (SA2=1).
        """
        if self.prepared:
            return
        if self.dialect is None:
            info = await self.ask_info(budget)
            self.dialect = (info.dialect_hint if info else None) or V.Dialect.STANDARD
            self.log.info("module speaks the {dialect} SK dialect", dialect=self.dialect.value)
        self.on_dialect(self.dialect)
        await self.echo_off(budget)
        if rssi and self.dialect is V.Dialect.DSE:
            # Free link-quality data for /metrics; the parser reads ERXUDP
            # with and without the field.
            try:
                await self.run(commands.sk_sreg("SA2", "1"), "asking for RSSI (SA2)", budget)
            except SKCommandError as e:
                self.log.info("module does not take SA2 (no RSSI): {e}", e=e)
        self.prepared = True

    async def echo_off(self, budget: Budget) -> None:
        # Echo is the power-on default; turning it off saves serial time.  It
        # is recognised either way, so this is an optimisation only.
        if self.sk.echo:
            await self.run(commands.sk_sreg("SFE", "0"), "turning command echo off", budget)
