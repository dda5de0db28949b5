"""
Tests for L{smartmeter_tx.session.steps}: the time budget of an operation and SK
commands sent within it, in the module's dialect (corrected by ER05).
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.errors import ArgumentError, StepTimeout
from smartmeter_tx.sk import commands
from smartmeter_tx.sk import values as V
from smartmeter_tx.sk.errors import SKCommandError
from smartmeter_tx.session.steps import Budget, ModuleSteps
from tests.sktesting import METER, connect, lines

MODULE_IP = b"FE80:0000:0000:0000:021D:1291:0004:E578"
EVENT_22 = b"EVENT 22 " + MODULE_IP + b" 0"
SCAN_STD = b"SKSCAN 2 FFFFFFFF 6\r\n"
SCAN_DSE = b"SKSCAN 2 FFFFFFFF 6 0\r\n"


def scan(dialect):
    return commands.sk_scan(dialect, 0xFFFFFFFF, 6)


class BudgetTests(SynchronousTestCase):
    """
    Budget: seconds left on an injected clock.
    """

    def test_left(self):
        """left() gives the seconds left and remaining() goes negative after the deadline."""
        clock = Clock()
        clock.advance(1000)
        budget = Budget(clock, 10)
        self.assertEqual(budget.deadline, 1010)
        self.assertEqual(budget.left("reading"), 10)
        clock.advance(7.5)
        self.assertEqual(budget.left("reading"), 2.5)
        clock.advance(5)
        self.assertEqual(budget.remaining(), -2.5)

    def test_leftRaisesAtDeadline(self):
        """left() raises StepTimeout naming the step once the deadline is reached or passed."""
        clock = Clock()
        budget = Budget(clock, 10)
        clock.advance(10)
        error = self.assertRaises(StepTimeout, budget.left, "joining the meter")
        self.assertEqual(error.step, "joining the meter")
        self.assertEqual(str(error), "timed out while joining the meter")
        clock.advance(100)
        self.assertRaises(StepTimeout, budget.left, "joining the meter")

    def test_repr(self):
        """The repr shows the seconds left."""
        self.assertEqual(repr(Budget(Clock(), 3)), "<Budget 3.0 s left>")

    def test_pauseSeconds(self):
        """pause(3) with 10 s left waits exactly 3 s on the clock."""
        clock = Clock()
        budget = Budget(clock, 10)
        d = defer.ensureDeferred(budget.pause(3, "waiting"))
        clock.advance(2.999)
        self.assertNoResult(d)
        clock.advance(0.001)
        self.assertIsNone(self.successResultOf(d))

    def test_pauseClipped(self):
        """pause(30) with 4 s left waits only the 4 s left."""
        clock = Clock()
        budget = Budget(clock, 10)
        clock.advance(6)
        d = defer.ensureDeferred(budget.pause(30, "waiting"))
        clock.advance(3.999)
        self.assertNoResult(d)
        clock.advance(0.001)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_pauseNothingLeft(self):
        """pause() with nothing left fails with StepTimeout at once, scheduling nothing."""
        clock = Clock()
        budget = Budget(clock, 1)
        clock.advance(1)
        d = defer.ensureDeferred(budget.pause(5, "scanning"))
        self.failureResultOf(d, StepTimeout)
        self.assertEqual(clock.getDelayedCalls(), [])


class BoundTests(SynchronousTestCase):
    """Budget.bound: one timeout at the top, cancelling the whole operation."""

    def test_cancelsWhatNothingElseBounds(self):
        """
        An operation still waiting at the deadline (and the grace) is
        cancelled down to what it waits on, and fails with StepTimeout.
        """
        clock = Clock()
        cancelled = []
        inner = defer.Deferred(cancelled.append)

        async def operation():
            await inner

        budget = Budget(clock, 10)
        d = budget.bound(operation(), "waiting for the meter")
        clock.advance(10 + Budget.GRACE - 0.01)
        self.assertNoResult(d)
        clock.advance(0.01)
        self.assertEqual(cancelled, [inner])
        failure = self.failureResultOf(d, StepTimeout)
        self.assertEqual(str(failure.value), "timed out while waiting for the meter")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_resultAndErrorPassThrough(self):
        """An operation that ends in time gives its own result or error, and no timer stays."""
        clock = Clock()

        async def fine():
            return 42

        async def broken():
            raise ArgumentError("its own error")

        budget = Budget(clock, 5)
        self.assertEqual(self.successResultOf(budget.bound(fine(), "x")), 42)
        self.failureResultOf(budget.bound(broken(), "x"), ArgumentError)
        self.assertEqual(clock.getDelayedCalls(), [])


class RunTests(SynchronousTestCase):
    """
    ModuleSteps.run: one command within the budget.
    """

    def setUp(self):
        self.sk, self.transport, self.clock, _ = connect()
        self.steps = ModuleSteps(self.sk, self.clock, dialect=V.Dialect.STANDARD)

    def test_run(self):
        """run writes the command, records its name and gives the module's reply."""
        d = defer.ensureDeferred(self.steps.run(commands.sk_sreg("SFE", "0"), "echo off",
                                                Budget(self.clock, 10)))
        self.assertEqual(self.transport.value(), b"SKSREG SFE 0\r\n")
        self.sk.dataReceived(lines(b"OK"))
        self.assertIsNotNone(self.successResultOf(d).ok)
        self.assertEqual(list(self.steps.steps), ["SKSREG"])

    def test_runBudgetSpent(self):
        """run with nothing left raises StepTimeout without writing anything."""
        budget = Budget(self.clock, 1)
        self.clock.advance(1)
        d = defer.ensureDeferred(self.steps.run(commands.sk_info(), "asking", budget))
        self.assertEqual(self.failureResultOf(d, StepTimeout).value.step, "asking")
        self.assertEqual(self.transport.value(), b"")

    def test_runBoundedByBudget(self):
        """A command whose own timeout is longer than the budget fails when the budget ends."""
        d = defer.ensureDeferred(self.steps.run(commands.sk_info(), "asking for info",
                                                Budget(self.clock, 2)))
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertEqual(self.failureResultOf(d, StepTimeout).value.step, "asking for info")

    def test_runModuleSilent(self):
        """A module that does not answer within the command's timeout is a StepTimeout."""
        command = commands.sk_info()
        d = defer.ensureDeferred(self.steps.run(command, "asking", Budget(self.clock, 600)))
        self.clock.advance(command.timeout + 1)
        self.failureResultOf(d, StepTimeout)


class RetryTests(SynchronousTestCase):
    """
    ModuleSteps.run under a budget with retries: an idempotent command the
    module did not answer is sent again after the queue's resync.
    """

    def setUp(self):
        self.sk, self.transport, self.clock, _ = connect()
        self.steps = ModuleSteps(self.sk, self.clock, dialect=V.Dialect.STANDARD)

    def start(self, command, retries=2):
        budget = Budget(self.clock, 600).with_retries(retries)
        return defer.ensureDeferred(self.steps.run(command, "setting the channel", budget))

    def written(self):
        """The command lines written since the last call."""
        data = self.transport.value()
        self.transport.clear()
        return [line for line in data.split(b"\r\n") if line]

    def test_withRetries(self):
        """with_retries gives a budget with the same clock and deadline; the first is unchanged."""
        budget = Budget(self.clock, 30)
        retrying = budget.with_retries(2)
        self.assertEqual((retrying.clock, retrying.deadline, retrying.retries),
                         (self.clock, budget.deadline, 2))
        self.assertEqual(budget.retries, 0)

    def test_sentAgainAfterResync(self):
        """An unanswered SKSREG is sent again after the resync (SKVER); its answer is the reply."""
        command = commands.sk_sreg("S2", "21")
        d = self.start(command)
        self.assertEqual(self.written(), [b"SKSREG S2 21"])
        self.clock.advance(command.timeout)
        self.assertEqual(self.written(), [b"SKVER"])
        self.sk.dataReceived(lines(b"EVER 1.2.10", b"OK"))
        self.assertEqual(self.written(), [b"SKSREG S2 21"])
        self.sk.dataReceived(lines(b"OK"))
        self.assertIsNotNone(self.successResultOf(d).ok)
        self.assertEqual(list(self.steps.steps), ["SKSREG", "SKSREG"])

    def test_retriesBounded(self):
        """After the retries allowed, an unanswered command is a StepTimeout naming the step."""
        command = commands.sk_setrbid("00112233445566778899AABBCCDDEEFF")
        d = self.start(command, retries=1)
        for _ in range(2):
            self.clock.advance(command.timeout)
            self.sk.dataReceived(lines(b"EVER 1.2.10", b"OK"))
        self.assertEqual(self.failureResultOf(d, StepTimeout).value.step, "setting the channel")
        self.clock.advance(600)
        self.assertEqual([line.split()[0] for line in self.written()],
                         [b"SKSETRBID", b"SKVER", b"SKSETRBID"])
        self.assertEqual(list(self.steps.steps), ["SKSETRBID", "SKSETRBID"])

    def test_notWhenResyncUnanswered(self):
        """A module that answers neither the command nor the resync is not tried again."""
        command = commands.sk_info()
        d = self.start(command)
        self.clock.advance(command.timeout)
        self.assertNoResult(d)
        self.clock.advance(command.timeout)  # the resync before the retry: no answer
        self.failureResultOf(d, StepTimeout)
        self.written()
        self.clock.advance(600)
        self.assertEqual(self.written(), [])
        self.assertEqual(list(self.steps.steps), ["SKINFO", "SKINFO"])

    def test_radioCommandsNotSentAgain(self):
        """SKJOIN and SKSCAN, which act on the radio, are never sent again."""
        for command in (commands.sk_join(METER), scan(V.Dialect.STANDARD)):
            self.setUp()  # a fresh connection for each
            d = self.start(command)
            self.assertEqual([line.split()[0] for line in self.written()],
                             [command.name.encode()])
            self.clock.advance(command.timeout)
            self.failureResultOf(d, StepTimeout)
            self.clock.advance(600)
            self.assertEqual(self.written(), [])
            self.assertEqual(list(self.steps.steps), [command.name])

    def test_noRetriesByDefault(self):
        """Without retries in the budget, an unanswered idempotent command fails at once."""
        command = commands.sk_sreg("S2", "21")
        d = self.start(command, retries=0)
        self.clock.advance(command.timeout)
        self.failureResultOf(d, StepTimeout)
        self.assertEqual(self.written(), [b"SKSREG S2 21"])


class DialectTests(SynchronousTestCase):
    """
    ModuleSteps.run_in_dialect: ER05 switches the dialect once and resends.
    """

    def setUp(self):
        self.sk, self.transport, self.clock, _ = connect()
        self.seen = []

    def steps(self, **kw):
        return ModuleSteps(self.sk, self.clock, on_dialect=self.seen.append, **kw)

    def start(self, steps):
        return defer.ensureDeferred(
            steps.run_in_dialect(scan, "scanning", Budget(self.clock, 600)))

    def test_rightDialect(self):
        """A command the module takes is sent once, in the current dialect, with no switch."""
        steps = self.steps(dialect=V.Dialect.DSE)
        d = self.start(steps)
        self.assertEqual(self.transport.value(), SCAN_DSE)
        self.sk.dataReceived(lines(b"OK", EVENT_22))
        self.successResultOf(d)
        self.assertIs(steps.dialect, V.Dialect.DSE)
        self.assertEqual(self.seen, [])

    def test_er05Switches(self):
        """FAIL ER05 switches STANDARD to DSE, calls on_dialect, and resends in DSE syntax."""
        steps = self.steps(dialect=V.Dialect.STANDARD)
        d = self.start(steps)
        self.assertEqual(self.transport.value(), SCAN_STD)
        self.transport.clear()
        self.sk.dataReceived(lines(b"FAIL ER05"))
        self.assertEqual(self.transport.value(), SCAN_DSE)
        self.assertIs(steps.dialect, V.Dialect.DSE)
        self.assertEqual(self.seen, [V.Dialect.DSE])
        self.sk.dataReceived(lines(b"OK", EVENT_22))
        self.assertEqual(self.successResultOf(d).final.num, 0x22)
        self.assertEqual(list(steps.steps), ["SKSCAN", "SKSCAN"])

    def test_er05SwitchesBack(self):
        """FAIL ER05 in DSE switches to STANDARD and resends without the SIDE argument."""
        steps = self.steps(dialect=V.Dialect.DSE)
        d = self.start(steps)
        self.transport.clear()
        self.sk.dataReceived(lines(b"FAIL ER05"))
        self.assertEqual(self.transport.value(), SCAN_STD)
        self.assertEqual(self.seen, [V.Dialect.STANDARD])
        self.sk.dataReceived(lines(b"OK", EVENT_22))
        self.successResultOf(d)

    def test_secondEr05Fails(self):
        """A second FAIL ER05 is not retried: the step fails with SKCommandError, after one
        switch only."""
        steps = self.steps(dialect=V.Dialect.STANDARD)
        d = self.start(steps)
        self.sk.dataReceived(lines(b"FAIL ER05"))
        self.transport.clear()
        self.sk.dataReceived(lines(b"FAIL ER05"))
        failure = self.failureResultOf(d, SKCommandError)
        self.assertEqual(failure.value.code, 5)
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(self.seen, [V.Dialect.DSE])
        self.assertEqual(len(steps.steps), 2)

    def test_otherFailureNotRetried(self):
        """Another FAIL code (ER04) fails the step at once, without switching dialect."""
        steps = self.steps(dialect=V.Dialect.STANDARD)
        d = self.start(steps)
        self.transport.clear()
        self.sk.dataReceived(lines(b"FAIL ER04"))
        self.assertEqual(self.failureResultOf(d, SKCommandError).value.code, 4)
        self.assertEqual(self.transport.value(), b"")
        self.assertIs(steps.dialect, V.Dialect.STANDARD)
        self.assertEqual(self.seen, [])

    def test_fixedDialectRefuses(self):
        """With a forced dialect, ER05 is an ArgumentError naming it; nothing is resent."""
        steps = self.steps(fixed_dialect=V.Dialect.DSE)
        self.assertIs(steps.dialect, V.Dialect.DSE)
        d = self.start(steps)
        self.assertEqual(self.transport.value(), SCAN_DSE)
        self.transport.clear()
        self.sk.dataReceived(lines(b"FAIL ER05"))
        error = self.failureResultOf(d, ArgumentError).value
        self.assertIn("dse", str(error))
        self.assertEqual(self.transport.value(), b"")
        self.assertIs(steps.dialect, V.Dialect.DSE)
        self.assertEqual(self.seen, [])

    def test_fixedWinsOverDialect(self):
        """A forced dialect wins over the given (e.g. saved) one."""
        steps = self.steps(dialect=V.Dialect.STANDARD, fixed_dialect=V.Dialect.DSE)
        self.assertIs(steps.dialect, V.Dialect.DSE)
        self.start(steps)
        self.assertEqual(self.transport.value(), SCAN_DSE)
