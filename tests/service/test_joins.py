"""
Tests for L{smartmeter_tx.service.joins} through the poller, on the emulator
and a task.Clock: a refused join's cause is kept for the outputs and said in
the service's own words, the next try comes when the log says it does, a
forced dialect the module does not speak ends the service, and a stop during
a join or a poll is said as a stop.
"""

import random

from twisted.internet import defer
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.errors import DialectMismatch
from smartmeter_tx.service.poller import MeterPoller, PollSchedule
from smartmeter_tx.session import config
from smartmeter_tx.session.steps import ONESHOT_DIALECT_FLAGS, SERVICE_DIALECT_FLAGS
from smartmeter_tx.sk.values import Dialect
from tests.emuloop import Loop
from tests.service.test_poller import CREDS, start_poller

#: What the emulated meter takes instead of the emulator's default password.
OTHER_PASSWORD = "BA9876543210"


class _Logged:
    """The service's log events, each with the test clock's time when said."""

    def logged(self, clock):
        """@return: the list that C{(clock time, event)} pairs go to from now on."""
        events = []

        def observe(event):
            events.append((clock.seconds(), event))
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return events

    @staticmethod
    def lines(events, namespace="smartmeter_tx.service", level=None):
        """The text of the events under C{namespace} (of C{level} only, if given)."""
        return [formatEvent(e) for _, e in events
                if e.get("log_namespace", "").startswith(namespace)
                and (level is None or e["log_level"] is level)]


class RefusedJoinTests(_Logged, SynchronousTestCase):
    """The meter refuses the service's password (EVENT 24)."""

    def setUp(self):
        self.loop = Loop(password=OTHER_PASSWORD)
        self.addCleanup(self.loop.stop)
        self.events = self.logged(self.loop.clock)
        self.joins = []  # when each SKJOIN went out
        self.loop.write_observers.append(
            lambda data: data.startswith(b"SKJOIN")
            and self.joins.append(self.loop.clock.seconds()))
        self.poller = start_poller(self, self.loop)

    def failures(self):
        """C{(clock time, event)} of each refused join's warning."""
        return [(at, e) for at, e in self.events
                if e.get("log_namespace", "").endswith("JoinPolicy")
                and e["log_level"] is LogLevel.warn]

    def test_causeKeptUntilSession(self):
        """
        After a refused join the store holds why, in the service's words; once
        the password is right and a join succeeds, it is gone.
        """
        self.loop.advance(120)
        failure = self.poller.store.join_failure
        self.assertIsNotNone(failure)
        self.assertEqual((failure.kind, failure.text),
                         ("refused", "the meter refused authentication (EVENT 24): check the "
                                     "B-route ID and password"))
        self.assertIsNone(self.poller.store.latest)
        self.loop.emulator.config.password = CREDS.password
        self.loop.advance(1200)
        self.assertTrue(self.poller.state.session_up)
        self.assertIsNone(self.poller.store.join_failure)

    def test_logLineIsTheServices(self):
        """
        The warning of a refused join says the cause and the service's next
        try, never what "the next run" of a one-shot command does.
        """
        self.loop.advance(120)
        lines = [formatEvent(e) for _, e in self.failures()]
        self.assertTrue(lines)
        for line in lines:
            self.assertNotIn("next run", line)
        self.assertRegex(lines[0], r"^joining the meter failed \(the meter refused authentication "
                                   r"\(EVENT 24\): check the B-route ID and password\); next try "
                                   r"in \d+ s$")

    def test_nextTryWhenSaid(self):
        """
        Each refused join's next try starts when the log says, not at the
        next poll tick: its SKJOIN goes out the said delay after the
        warning, plus the join's own serial steps (well under a second).
        """
        self.loop.advance(3600)
        failures = self.failures()
        self.assertGreaterEqual(len(failures), 3)
        for n, (at, event) in enumerate(failures[:3]):
            due = at + event["delay"]
            following = [t for t in self.joins if t > at]
            self.assertTrue(following, n)
            self.assertGreaterEqual(following[0], due, (n, at, event["delay"], self.joins))
            self.assertLess(following[0] - due, 1.0, (n, at, event["delay"], self.joins))


class ForcedDialectTests(_Logged, SynchronousTestCase):
    """A dialect forced on the command line that the module does not speak."""

    def test_serviceEndsNamingItsFlag(self):
        """
        --standard on a DSE module: the service calls its end once, with one
        line naming --standard and the dialect the module speaks; no join is
        tried again and no backoff is announced.
        """
        loop = Loop(dialect=Dialect.DSE)
        self.addCleanup(loop.stop)
        events = self.logged(loop.clock)
        fatal = []
        poller = MeterPoller(loop.connect, config.SessionConfig(CREDS, dialect=Dialect.STANDARD),
                             loop.clock, PollSchedule(interval=30, energy_interval=300),
                             rng=random.Random(0), wall_clock=loop.clock.seconds,
                             on_fatal=fatal.append)
        poller.startService()
        self.addCleanup(poller.stopService)
        loop.advance(600)
        self.assertEqual(fatal, [
            "--standard: the module rejects the commands of the standard SK dialect (FAIL "
            "ER05), so it speaks the DSE one; leave out --standard and the dialect is detected"])
        self.assertEqual(loop.sent.count("SKSCAN"), 1)
        self.assertEqual(self.lines(events, level=LogLevel.warn), [])

    def test_flagsOfEachFrontEnd(self):
        """
        The mismatch is a configuration error (exit 78 in the service, 2 in
        the one-shot commands) naming the flag as each front end spells it.
        """
        for dialect, module in ((Dialect.STANDARD, Dialect.DSE), (Dialect.DSE, Dialect.STANDARD)):
            for flags in (ONESHOT_DIALECT_FLAGS, SERVICE_DIALECT_FLAGS):
                loop = Loop(dialect=module)
                self.addCleanup(loop.stop)
                session = config.SessionConfig(CREDS, dialect=dialect)
                client = session.client(loop.connect(), loop.clock, dialect_flags=flags)
                self.addCleanup(client.close)
                read = defer.Deferred.fromCoroutine(client.read_values())
                failure = self.failureResultOf(loop.run(read, 600.0), DialectMismatch)
                flag = flags[dialect]
                spoken = "DSE" if module is Dialect.DSE else "standard"
                self.assertEqual(str(failure.value).split(":")[0], flag)
                self.assertIn(f"so it speaks the {spoken} one; leave out {flag} and the "
                              "dialect is detected", str(failure.value))
        self.assertEqual((ONESHOT_DIALECT_FLAGS[Dialect.STANDARD],
                          SERVICE_DIALECT_FLAGS[Dialect.STANDARD]), ("--dse=false", "--standard"))


class StopTests(_Logged, SynchronousTestCase):
    """stopService while the poller joins or polls."""

    def stopDuring(self, knobs, until):
        """
        Start a poller on an emulator with C{knobs}, advance until C{until()},
        stop it and let everything settle.

        @return: the service's log lines from the stop on, and their events.
        """
        loop = Loop(**knobs)
        self.addCleanup(loop.stop)
        poller = start_poller(self, loop)
        for _ in range(4000):
            if until(loop, poller):
                break
            loop.clock.advance(0.05)
            loop.flush()
        self.assertTrue(until(loop, poller))
        events = self.logged(loop.clock)
        stopped = poller.stopService()
        loop.advance(600)
        self.successResultOf(stopped)
        return self.lines(events), events

    def assertStopOnly(self, lines, events, what):
        self.assertEqual(lines, [f"stopping: {what} abandoned"])
        levels = {e["log_level"] for _, e in events
                  if e.get("log_namespace", "").startswith("smartmeter_tx")}
        self.assertLessEqual(levels, {LogLevel.info, LogLevel.debug})

    def test_stopDuringScan(self):
        """A stop during the join's scan says so once, at info: no failure, no next try."""
        lines, events = self.stopDuring({}, lambda loop, poller: loop.sent[-1:] == ["SKSCAN"])
        self.assertStopOnly(lines, events, "join")

    def test_stopDuringRefusedJoin(self):
        """A stop while SKJOIN waits for the meter's refusal says so once, at info."""
        lines, events = self.stopDuring({"password": OTHER_PASSWORD},
                                        lambda loop, poller: loop.sent[-1:] == ["SKJOIN"])
        self.assertStopOnly(lines, events, "join")

    def test_stopDuringPoll(self):
        """A stop while a poll waits for the meter's answer says so once, at info."""
        def waiting(loop, poller):
            return (poller.store.latest is not None and poller._polling
                    and loop.sent[-1:] == ["SKSENDTO"])
        lines, events = self.stopDuring({}, waiting)
        self.assertStopOnly(lines, events, "poll")
