"""
Tests for C{check-smartmeter} (L{smartmeter_tx.cli.check}).

Most outcomes are checked against a real C{twist smartmeter} service tree
(L{smartmeter_tx.cli.tap.makeService}) reading the emulator's pty device, its
C{/latest} served on 127.0.0.1 by the real reactor, and the check run as the
console script does (L{check.run}, its blocking GET on a thread).  The
service is driven into a state through the emulator (the meter ends the
session, the module's transmit budget runs out) and through the poller's
own C{poll}; the tests wait for the state by hooking the service's store and
link state, never by sleeping.  States that take too long in real time (a
reading minutes old, an EA/EB 70 minutes old) are served by a real
L{LatestResource} over a real L{LatestStore} and L{LinkState}, as each
test's docstring says.  L{evaluate} and L{interpret} are also tested on their
own.
"""

import datetime
import io
import json
import os
import subprocess
import sys
from decimal import Decimal

from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import SynchronousTestCase, TestCase

from smartmeter_tx.cli import check, common
from smartmeter_tx import model
from smartmeter_tx.model import NO_PHASE, Reading
from smartmeter_tx.emulator.module import DEFAULT_ID, DEFAULT_PASSWORD
from smartmeter_tx.session.linkstate import LinkState
from smartmeter_tx.service.store import LatestStore
from smartmeter_tx.service.view import ServiceView
from smartmeter_tx.outputs.web import make_root
from tests.sktesting import refusing_port, serve
from tests.test_layers import SOURCE_ROOT, imports_twisted

D = Decimal

#: Generous bound on waiting for a state of the real service (a hang, not timing).
WAIT = 60


def coroutine_test(f):
    """Run an C{async def} test method as a Deferred-returning trial test."""
    import functools

    @functools.wraps(f)
    def wrapper(self):
        return defer.Deferred.fromCoroutine(f(self))
    return wrapper


class _Serving(TestCase):
    """Serve a root resource on 127.0.0.1:0 with the real reactor; no tests of its own."""

    timeout = 120  # only catches a hang

    def serve(self, root):
        """Serve C{root} (L{tests.sktesting.serve}); @return: the base URL."""
        return serve(self, root)

    async def check(self, *argv):
        """
        Run the check as the console script does, its GET on a thread (the
        reactor here serves the answer).

        @return: C{(exit status, output line)}; asserts it is exactly one line.
        """
        out = io.StringIO()
        code = await threads.deferToThread(check.run, list(argv), out)
        text = out.getvalue()
        self.assertTrue(text.endswith("\n"), text)
        self.assertEqual(len(text.splitlines()), 1, text)
        line = text[:-1]
        self.assertLessEqual(len(line), check.MAX_LINE)
        self.assertTrue(line.startswith(f"SmartMeter {check.STATUS_NAMES[code]}: "), line)
        return code, line


class _RealService(_Serving):
    """
    A real service tree (makeService, --http none) polling the emulator's pty
    every 30 s, its site (make_root over the real poller) on a free port.
    """

    #: Emulator spec options beyond the time scale.
    emulator_options = ""
    #: The emulated meter's clock at start (default L{tests.emuloop.START}).
    emulator_start = None

    def setUp(self):
        from smartmeter_tx.emulator.device import start_emulator
        from smartmeter_tx.cli.tap import Options, makeService
        from tests.emuloop import START, pinned

        env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTMETER_")}
        self.patch(os, "environ", env)
        directory = self.mktemp()
        os.makedirs(directory)
        spec = "emulator:?time-scale=0.01" + self.emulator_options
        self.handle = start_emulator(pinned(spec, self.emulator_start or START), reactor,
                                     link=os.path.join(directory, "wisun"))
        self.addCleanup(self.handle.stop)
        options = Options()
        options.parseOptions(["--device", self.handle.path, "--id", DEFAULT_ID,
                              "--password", DEFAULT_PASSWORD, "--http", "none",
                              "--state-file", os.path.join(directory, "state.json"),
                              "--interval", "30", "--energy-interval", "300"])
        self.top = makeService(options, reactor=reactor)
        self.poller = self.top.poller
        self._waiters = []
        for obj, names in ((self.poller.store, ("add", "add_fixed", "rejoined")),
                           (self.poller.state, ("event", "up", "down", "sfb"))):
            for name in names:
                self._watch(obj, name)
        self._polls_running = 0
        self._watch_polls()
        self.url = self.serve(make_root(self.poller.view(), self.poller.wall_clock))
        self.top.startService()
        self.addCleanup(self._stop)

    def _stop(self):
        if self.top.running:
            return self.top.stopService()

    def _watch(self, obj, name):
        original = getattr(obj, name)

        def watched(*args, **kwargs):
            result = original(*args, **kwargs)
            self._changed()
            return result
        setattr(obj, name, watched)

    def _watch_polls(self):
        """Count the poller's running polls (the poll loop calls the instance's poll)."""
        original = self.poller.poll

        def poll():
            self._polls_running += 1

            def over(result):
                self._polls_running -= 1
                self._changed()
                return result
            return original().addBoth(over)
        self.poller.poll = poll

    def _changed(self):
        for predicate, d in list(self._waiters):
            if predicate():
                self._waiters.remove((predicate, d))
                d.callback(None)

    def until(self, predicate):
        """
        A Deferred that fires once C{predicate()} holds, checked after every
        change of the service's store or link state (no polling, no sleep).
        """
        if predicate():
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiters.append((predicate, d))
        return d.addTimeout(WAIT, reactor)

    def first_reading(self):
        """The first reading is in and its poll is over."""
        return self.until(lambda: self.poller.store.latest is not None
                          and self._polls_running == 0)

    def poll(self):
        """
        One poll of the real poller now, instead of waiting for its 30 s.

        @return: a Deferred firing when the poll is over.
        """
        self.assertEqual(self._polls_running, 0, "a poll is running already")
        return self.poller.poll()


class RealServiceTests(_RealService):
    @coroutine_test
    async def test_ok(self):
        """
        Real service on the emulator: a fresh reading is OK, and the line
        carries the power, both phases' currents and the age.
        """
        await self.first_reading()
        code, line = await self.check("--service", self.url)
        self.assertEqual(code, check.OK, line)
        latest = self.poller.store.latest
        self.assertRegex(line, rf"^SmartMeter OK: {latest.power_w} W, "
                               rf"R {latest.current_r_a:.1f} A / T {latest.current_t_a:.1f} A, "
                               r"age \d+ s$")

    @coroutine_test
    async def test_urlWithLatest(self):
        """Real service: --service may name /latest itself (with a trailing slash)."""
        await self.first_reading()
        code, line = await self.check("--service", self.url + "/latest/")
        self.assertEqual(code, check.OK, line)

    @coroutine_test
    async def test_sessionDown(self):
        """
        Real service on the emulator: the meter ends the session (EVENT 26);
        until the next poll rejoins, the check warns that there is no session
        and still shows the last values.
        """
        await self.first_reading()
        self.handle.emulator.terminate_by_peer()
        await self.until(lambda: not self.poller.state.session_up)
        code, line = await self.check("--service", self.url)
        self.assertEqual(code, check.WARNING, line)
        self.assertIn("no session with the meter", line)
        self.assertIn(f"{self.poller.store.latest.power_w} W", line)

    @coroutine_test
    async def test_rejoins(self):
        """
        Real service on the emulator: after the meter ended the session and
        the service rejoined it, one rejoin in the last hour is above
        --warning-rejoins 0 (WARNING) and within the default 3 (OK).
        """
        await self.first_reading()
        self.handle.emulator.terminate_by_peer()
        await self.until(lambda: not self.poller.state.session_up)
        answered = self.poller.stats.polls_answered
        await self.poll()
        await self.until(lambda: self.poller.stats.polls_answered > answered)
        self.assertEqual(self.poller.store.stats.rejoins, 1)
        code, line = await self.check("--service", self.url, "--warning-rejoins", "0")
        self.assertEqual(code, check.WARNING, line)
        self.assertIn("1 rejoin in the last hour (> 0)", line)
        code, line = await self.check("--service", self.url)
        self.assertEqual(code, check.OK, line)

    @coroutine_test
    async def test_rateLimited(self):
        """
        Real service on the emulator: the module's transmit budget runs out
        (EVENT 32) at the next poll; the check warns while sends are held.
        """
        await self.first_reading()
        self.handle.emulator.budget.budget = 0.0  # the next transmission engages the limit
        self.poll()  # the next poll now; it ends after EVENT 32 or at the service's stop
        await self.until(lambda: self.poller.state.rate_limited)
        code, line = await self.check("--service", self.url)
        self.assertEqual(code, check.WARNING, line)
        self.assertIn("transmit-time limit active, sends held (EVENT 32)", line)

    @coroutine_test
    async def test_currentThresholds(self):
        """
        Real service on the emulator: a phase drawing more than
        --warning-current warns, more than --critical-current is CRITICAL; a
        threshold above both phases is OK.  (The service polls every 30 s,
        so the reading does not change between the checks.)
        """
        await self.first_reading()
        latest = self.poller.store.latest
        high = max(latest.current_r_a, latest.current_t_a)
        self.assertGreater(high, 0)
        below = f"{high - Decimal('0.1'):f}"
        code, line = await self.check("--service", self.url, "--warning-current", below)
        self.assertEqual(code, check.WARNING, line)
        self.assertIn(f"A (> {float(below):g} A)", line)
        code, line = await self.check("--service", self.url, "--warning-current", "0",
                                      "--critical-current", below)
        self.assertEqual(code, check.CRITICAL, line)
        code, line = await self.check("--service", self.url, "--warning-current", f"{high:f}",
                                      "--critical-current", "1000")
        self.assertEqual(code, check.OK, line)

    @coroutine_test
    async def test_powerThresholds(self):
        """
        Real service on the emulator: power above --warning-power warns,
        above --critical-power is CRITICAL, and power at the threshold is OK.
        """
        await self.first_reading()
        power = self.poller.store.latest.power_w
        self.assertGreater(power, 0)
        code, line = await self.check("--service", self.url, "--warning-power", str(power - 1))
        self.assertEqual(code, check.WARNING, line)
        self.assertIn(f"power {power} W (> {power - 1} W)", line)
        code, line = await self.check("--service", self.url, "--warning-power", "0",
                                      "--critical-power", str(power - 1))
        self.assertEqual(code, check.CRITICAL, line)
        self.assertIn(f"power {power} W (> {power - 1} W)", line)
        code, line = await self.check("--service", self.url, "--warning-power", str(power))
        self.assertEqual(code, check.OK, line)

    @coroutine_test
    async def test_notJSON(self):
        """
        Real service: a URL that reaches the service's /metrics (Prometheus
        text, not JSON) is an unreadable answer: UNKNOWN, naming the URL.
        """
        await self.first_reading()
        code, line = await self.check("--service", self.url + "/metrics")
        self.assertEqual(code, check.UNKNOWN, line)
        self.assertIn("did not answer with JSON", line)
        self.assertIn(self.url + "/metrics/latest", line)

    @coroutine_test
    async def test_noTime(self):
        """
        Real service: a URL that reaches the service's /history (JSON, but
        no reading time) is an unreadable answer: UNKNOWN.
        """
        await self.first_reading()
        code, line = await self.check("--service", self.url + "/history")
        self.assertEqual(code, check.UNKNOWN, line)
        self.assertIn("no time", line)

    @coroutine_test
    async def test_notFound(self):
        """Real service: a URL below an unknown path answers 404: UNKNOWN."""
        code, line = await self.check("--service", self.url + "/nothing")
        self.assertEqual(code, check.UNKNOWN, line)


class FixedTimeTests(_RealService):
    """The emulated meter's clock starts 10 s before its half-hourly EA/EB push."""

    emulator_start = datetime.datetime(2024, 6, 1, 12, 29, 50)

    @coroutine_test
    async def test_fixedTimeFresh(self):
        """
        Real service on the emulator: once the meter pushed its EA/EB, a
        fresh one is OK with the default --warning-fixed-age.
        """
        await self.first_reading()
        await self.until(lambda: self.poller.store.fixed_time is not None)
        code, line = await self.check("--service", self.url)
        self.assertEqual(code, check.OK, line)


class RateLimitedBeforeReadingTests(_RealService):
    """The module's transmit budget is spent by the first join's frames."""

    emulator_options = "&tx-budget=0.0001"

    @coroutine_test
    async def test_noReadingYetHeld(self):
        """
        Real service on the emulator that never got a reading (the transmit
        limit engaged during the join): CRITICAL "no reading yet" with the hold.
        """
        await self.until(lambda: self.poller.state.rate_limited)
        self.assertIsNone(self.poller.store.latest)
        code, line = await self.check("--service", self.url)
        self.assertEqual((code, line), (check.CRITICAL, "SmartMeter CRITICAL: no reading yet; "
                                        "held: transmit-time limit (EVENT 32)"))




class StoreServedTests(_Serving):
    """
    States too slow to reach with a real service in real time (readings
    minutes old, an EA/EB over an hour old), and the state before any
    reading: a real /latest (make_root's LatestResource) over a real
    LatestStore and LinkState, served on 127.0.0.1 by the real reactor.
    """

    def setUp(self):
        self.view = ServiceView(LatestStore(), LinkState(), reactor)
        self.url = self.serve(make_root(self.view, reactor.seconds))

    def add(self, age, **values):
        """A reading C{age} seconds old by the reactor's clock, with a session up."""
        fields = dict(power_w=412, current_r_a=Decimal("3.1"), current_t_a=Decimal("1.2"))
        fields.update(values)
        now = reactor.seconds()
        self.view.store.add(Reading(**fields), now - age)
        self.view.state.up(now - age - 100)
        return now

    @coroutine_test
    async def test_okValues(self):
        """LatestStore served: the line shows the values as the issue's example does."""
        self.add(42.2)
        code, line = await self.check("--service", self.url)
        self.assertEqual((code, line), (check.OK, "SmartMeter OK: 412 W, R 3.1 A / T 1.2 A, "
                                                  "age 42 s"))

    @coroutine_test
    async def test_absentPhaseLeftOut(self):
        """LatestStore served: a phase the meter marks absent is left out, not shown as 0."""
        self.add(5, current_t_a=NO_PHASE)
        code, line = await self.check("--service", self.url)
        self.assertEqual((code, line), (check.OK, "SmartMeter OK: 412 W, R 3.1 A, age 5 s"))

    @coroutine_test
    async def test_staleWarning(self):
        """LatestStore served: a reading 200 s old is above the default -w 120: WARNING."""
        self.add(200)
        code, line = await self.check("--service", self.url)
        self.assertEqual(code, check.WARNING, line)
        self.assertIn("last reading 200 s old (> 120 s)", line)

    @coroutine_test
    async def test_staleCritical(self):
        """LatestStore served: a reading 400 s old is above the default -c 300: CRITICAL."""
        self.add(400)
        code, line = await self.check("--service", self.url)
        self.assertEqual(code, check.CRITICAL, line)
        self.assertIn("last reading 400 s old (> 300 s)", line)

    @coroutine_test
    async def test_ageFlags(self):
        """LatestStore served: -w and -c move the limits (200 s: OK with -w 250 -c 600)."""
        self.add(200)
        code, line = await self.check("--service", self.url, "-w", "250", "-c", "600")
        self.assertEqual(code, check.OK, line)
        code, line = await self.check("--service", self.url, "--warning-age", "10",
                                      "--critical-age", "100")
        self.assertEqual(code, check.CRITICAL, line)

    @coroutine_test
    async def test_fixedTimeOld(self):
        """
        LatestStore served: the meter's last EA/EB came 80 min ago, over the
        default 70 min: WARNING; --warning-fixed-age 6000 makes it OK.
        """
        now = self.add(5)
        self.view.store.add_fixed(model.FixedReading(datetime.datetime(2026, 6, 1, 11, 0), 1000,
                                                 Decimal(10)), now - 80 * 60)
        code, line = await self.check("--service", self.url)
        self.assertEqual(code, check.WARNING, line)
        self.assertIn("no fixed-time EA/EB from the meter for 80 min (> 70 min)", line)
        code, line = await self.check("--service", self.url, "--warning-fixed-age", "6000")
        self.assertEqual(code, check.OK, line)

    @coroutine_test
    async def test_worstWinsAndAllListed(self):
        """
        LatestStore served: several problems are all listed, then the values,
        and the worst status wins.
        """
        self.add(400)
        self.view.state.down()
        self.view.state.event(0x32, reactor.seconds())
        code, line = await self.check("--service", self.url, "--warning-power", "100")
        self.assertEqual(line, "SmartMeter CRITICAL: last reading 400 s old (> 300 s); "
                               "transmit-time limit active, sends held (EVENT 32); "
                               "no session with the meter; power 412 W (> 100 W); "
                               "412 W, R 3.1 A / T 1.2 A, age 400 s")
        self.assertEqual(code, check.CRITICAL)

    @coroutine_test
    async def test_noReadingYet(self):
        """LatestStore served before any reading (503): CRITICAL "no reading yet"."""
        code, line = await self.check("--service", self.url)
        self.assertEqual((code, line), (check.CRITICAL, "SmartMeter CRITICAL: no reading yet"))


class UnreachableTests(_Serving):
    @coroutine_test
    async def test_unreachable(self):
        """A service that does not listen is CRITICAL, naming the URL, no traceback."""
        number = refusing_port(self)
        code, line = await self.check("--service", f"http://127.0.0.1:{number}")
        self.assertEqual(code, check.CRITICAL, line)
        self.assertIn(f"cannot reach the service at http://127.0.0.1:{number}/latest", line)

    @coroutine_test
    async def test_defaultService(self):
        """Without --service the check asks the service's default endpoint."""
        number = refusing_port(self)
        self.patch(common, "DEFAULT_SERVICE", f"http://127.0.0.1:{number}")
        code, line = await self.check()
        self.assertIn(f"127.0.0.1:{number}/latest", line)


class BadFlagsTests(SynchronousTestCase):
    """Bad command lines: UNKNOWN with the reason and the usage on one line."""

    def run_check(self, *argv):
        out = io.StringIO()
        code = check.run(list(argv), out, fetch=self.fail_fetch)
        text = out.getvalue()
        self.assertEqual(len(text.splitlines()), 1, text)
        return code, text.rstrip("\n")

    def fail_fetch(self, url, timeout):
        raise AssertionError("a bad command line must not reach the service")

    def test_unknownFlag(self):
        """An unknown flag: UNKNOWN, the argparse message and the usage on one line."""
        code, line = self.run_check("--bogus")
        self.assertEqual(code, check.UNKNOWN)
        self.assertTrue(line.startswith("SmartMeter UNKNOWN: unrecognized arguments: --bogus; "
                                        "usage: check-smartmeter [-h] [--version] [--service URL]"), line)
        self.assertLessEqual(len(line), check.MAX_LINE)

    def test_badValues(self):
        """Bad values, a warning above its critical and a bad URL are UNKNOWN."""
        for argv, why in ((["-w", "abc"], "not a number"),
                          (["-c", "-5"], "not a number of seconds >= 0"),
                          (["-w", "500", "-c", "300"], "--warning-age (500) must not be "
                                                       "above --critical-age (300)"),
                          (["--warning-current", "40", "--critical-current", "30"],
                           "--warning-current (40) must not be above --critical-current (30)"),
                          (["--warning-power", "5000", "--critical-power", "4000"],
                           "--warning-power"),
                          (["--warning-rejoins", "1.5"], "not a whole number"),
                          (["-t", "0"], "--timeout must be above 0"),
                          (["--service", "ftp://x"], "--service must be an http:// URL"),
                          (["--service", "http://127.0.0.1:99999"], "--service must be"),
                          (["extra"], "unrecognized arguments")):
            code, line = self.run_check(*argv)
            self.assertEqual(code, check.UNKNOWN, argv)
            self.assertIn(why, line, argv)
            self.assertIn("; usage: check-smartmeter ", line, argv)

    def test_consoleScript(self):
        """
        The entry point in a real process: bad flags print one UNKNOWN line
        on stdout, nothing on stderr, and exit 3.
        """
        env = dict(os.environ)
        env["PYTHONPATH"] = SOURCE_ROOT + os.pathsep + env.get("PYTHONPATH", "")
        result = subprocess.run(
            [sys.executable, "-c", "from smartmeter_tx.cli.check import main; main()", "-w", "x"],
            cwd=SOURCE_ROOT, env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual((result.returncode, result.stderr), (3, ""))
        self.assertEqual(len(result.stdout.splitlines()), 1, result.stdout)
        self.assertTrue(result.stdout.startswith("SmartMeter UNKNOWN: argument -w/--warning-age"),
                        result.stdout)

    def test_noTwisted(self):
        """A check runs every minute: importing it loads no Twisted."""
        self.assertEqual(imports_twisted("smartmeter_tx.cli.check"), "False")


class EvaluateTests(SynchronousTestCase):
    """L{check.evaluate} and L{check.interpret} on their own: no I/O."""

    def record(self, **extra):
        data = {"time": 1000.0, "age": 42.0, "power_w": 412, "current_r_a": Decimal("3.1"),
                "current_t_a": Decimal("1.2"), "session": True, "held": None,
                "rate_limited": False, "rejoins_last_hour": 0}
        data.update(extra)
        return data

    def test_ok(self):
        """A fresh complete record: OK with the values."""
        self.assertEqual(check.evaluate(self.record(), 1042.0),
                         (check.OK, "412 W, R 3.1 A / T 1.2 A, age 42 s"))

    def test_currentsAsOnThePage(self):
        """
        A whole-ampere current (JSON C{10}) shows as the page shows it,
        C{10.0 A}, not C{10 A}.
        """
        from smartmeter_tx.outputs.dashboard.text import show_amps

        status, message = check.evaluate(self.record(current_r_a=10, current_t_a=0), 1042.0)
        self.assertEqual(message, "412 W, R 10.0 A / T 0.0 A, age 42 s")
        self.assertEqual((show_amps(10), show_amps(Decimal("0"))), ("10.0 A", "0.0 A"))

    def test_nullsLeftOut(self):
        """Null values are left out of the message, never shown as 0."""
        self.assertEqual(check.evaluate(self.record(power_w=None, current_r_a=None,
                                                    current_t_a=None), 0.0),
                         (check.OK, "age 42 s"))

    def test_ageFromTimeWithoutAge(self):
        """Without C{age} (an older service) the age is C{now - time}."""
        data = self.record()
        del data["age"]
        status, message = check.evaluate(data, 1400.0)
        self.assertEqual(status, check.CRITICAL)
        self.assertIn("last reading 400 s old", message)

    def test_ageLimitsFollowTheInterval(self):
        """
        Without -w and -c the ages are four and ten of the service's polls
        (its C{interval}), never under 120 and 300 s; given ones are kept.
        """
        for interval, age, expected in ((30, 121, check.WARNING), (30, 301, check.CRITICAL),
                                        (10, 121, check.WARNING), (300, 1100, check.OK),
                                        (300, 1201, check.WARNING), (300, 3001, check.CRITICAL)):
            status, message = check.evaluate(self.record(interval=interval, age=age), 0.0)
            self.assertEqual(status, expected, (interval, age, message))
        given = check.Limits(warning_age=100.0, critical_age=200.0)
        self.assertEqual(check.evaluate(self.record(interval=300, age=201), 0.0, given)[0],
                         check.CRITICAL)
        self.assertEqual(check.evaluate(self.record(interval=300, age=401), 0.0,
                                        check.Limits(warning_age=400.0))[0], check.WARNING)

    def test_currentLimitsFromTheContract(self):
        """
        A service with an ampere contract (--tariff) gives the current
        thresholds not given: WARNING over its warning current, CRITICAL over
        the contract; given ones win.
        """
        contract = {"contract_a": 40, "contract_warning_a": 36.0}
        for amps, expected in ((D("35.9"), check.OK), (D("36.1"), check.WARNING),
                               (D("40.5"), check.CRITICAL)):
            status, message = check.evaluate(self.record(current_r_a=amps, **contract), 0.0)
            self.assertEqual(status, expected, message)
        given = check.Limits(warning_current=38.0)
        self.assertEqual(check.evaluate(self.record(current_r_a=D("37"), **contract), 0.0,
                                        given)[0], check.OK)
        self.assertEqual(check.evaluate(self.record(current_r_a=D("45")), 0.0)[0], check.OK)

    def test_ageOnTheServiceClock(self):
        """With C{age}, the checker's clock does not matter (skew between hosts)."""
        self.assertEqual(check.evaluate(self.record(), 99999.0)[0], check.OK)

    def test_fixedAge(self):
        """The EA/EB's age is judged on the service's clock: time + age - fixed_time."""
        limits = check.Limits(warning_fixed_age=4200.0)
        fresh = self.record(fixed_time=1042.0 - 4200)
        self.assertEqual(check.evaluate(fresh, 0.0, limits)[0], check.OK)
        stale = self.record(fixed_time=1042.0 - 4201)
        status, message = check.evaluate(stale, 0.0, limits)
        self.assertEqual(status, check.WARNING)
        self.assertIn("no fixed-time EA/EB from the meter for 70 min (> 70 min)", message)

    def test_fixedAgeAsTheServiceTookIt(self):
        """
        C{fixed_age}, taken on the service's clock, wins over the wall times:
        a host clock that stepped between the reading and the EA/EB changes
        nothing.
        """
        limits = check.Limits(warning_fixed_age=4200.0)
        # The wall times say 100 s; the service's own clock says 2 hours.
        stepped = self.record(fixed_time=1042.0 - 100, fixed_age=7200.0)
        status, message = check.evaluate(stepped, 0.0, limits)
        self.assertEqual(status, check.WARNING)
        self.assertIn("no fixed-time EA/EB from the meter for 120 min", message)
        self.assertEqual(check.evaluate(self.record(fixed_time=1042.0 - 9000, fixed_age=60.0),
                                        0.0, limits)[0], check.OK)

    def test_stalledPollLoop(self):
        """A poll loop that has not run for longer than the critical age is CRITICAL."""
        self.assertEqual(check.evaluate(self.record(poll_age=12.0, interval=30), 0.0)[0],
                         check.OK)
        status, message = check.evaluate(self.record(poll_age=400.0, interval=30), 0.0)
        self.assertEqual(status, check.CRITICAL)
        self.assertIn("the service's poll loop has not run for 400 s (> 300 s)", message)

    def test_fixedAbsentNoAlarm(self):
        """No C{fixed_time} (none seen yet, or a meter that never pushes): no alarm."""
        self.assertEqual(check.evaluate(self.record(), 0.0)[0], check.OK)

    def test_heldShown(self):
        """A hold other than the rate limit (EVENT 29 re-authentication) is shown, not alarmed."""
        status, message = check.evaluate(self.record(held="session re-authentication "
                                                          "(EVENT 29)"), 0.0)
        self.assertEqual(status, check.OK)
        self.assertTrue(message.endswith("held: session re-authentication (EVENT 29)"), message)

    def test_rejoinsAtLimit(self):
        """Rejoins equal to --warning-rejoins are fine; one more warns."""
        self.assertEqual(check.evaluate(self.record(rejoins_last_hour=3), 0.0)[0], check.OK)
        status, message = check.evaluate(self.record(rejoins_last_hour=4), 0.0)
        self.assertEqual((status, message.split(";")[0]),
                         (check.WARNING, "4 rejoins in the last hour (> 3)"))

    def test_negativePowerNeverAbove(self):
        """Power sold (negative) never crosses a power threshold."""
        limits = check.Limits(warning_power=0.0, critical_power=0.0)
        self.assertEqual(check.evaluate(self.record(power_w=-250), 0.0, limits),
                         (check.OK, "-250 W, R 3.1 A / T 1.2 A, age 42 s"))

    def test_currentEitherPhase(self):
        """The T phase alone above the threshold alarms too."""
        limits = check.Limits(warning_current=2.0, critical_current=30.0)
        status, message = check.evaluate(self.record(current_r_a=Decimal("1.5"),
                                                     current_t_a=Decimal("2.5")), 0.0, limits)
        self.assertEqual((status, message.split(";")[0]),
                         (check.WARNING, "current T 2.5 A (> 2 A)"))

    def test_interpretUnreadable(self):
        """Not JSON, no time, a bad time, a non-object, nested too deep: UNKNOWN."""
        for body in (b"<html>", b"", b"[1, 2]", b"[" * 100000, b'{"power_w": 1}', b'{"time": "x"}',
                     b'{"time": NaN}', b'{"time": 1, "power_w": "412"}', b"\xff\xfe"):
            status, message = check.interpret(200, body, 0.0)
            self.assertEqual(status, check.UNKNOWN, body)

    def test_interpretNoReadingYet(self):
        """503 before the first reading: CRITICAL, with the hold when there is one."""
        self.assertEqual(check.interpret(503, b'{"error": "no reading yet", "held": null}', 0),
                         (check.CRITICAL, "no reading yet"))
        self.assertEqual(check.interpret(503, json.dumps(
            {"error": "no reading yet", "held": "transmit-time limit (EVENT 32)"}).encode(), 0),
            (check.CRITICAL, "no reading yet; held: transmit-time limit (EVENT 32)"))

    def test_interpretOtherStatus(self):
        """Another status with JSON: UNKNOWN with the status and error."""
        self.assertEqual(check.interpret(400, b'{"error": "bad"}', 0),
                         (check.UNKNOWN, "unexpected HTTP 400 from the service (bad)"))

    def test_formatLine(self):
        """One line, whitespace folded, at most 1024 characters."""
        self.assertEqual(check.format_line(check.WARNING, "a\nb  c"), "SmartMeter WARNING: a b c")
        line = check.format_line(check.OK, "x" * 2000)
        self.assertEqual(len(line), check.MAX_LINE)
        self.assertTrue(line.endswith("..."))

    def test_timeoutAndUnreachable(self):
        """A timeout or an unreachable service is CRITICAL (the fetch raising as the client does)."""
        def timeout(url, t):
            raise TimeoutError("timed out")

        def refused(url, t):
            raise ConnectionRefusedError(111, "Connection refused")

        self.assertEqual(check.check(["-t", "2"], fetch=timeout),
                         (check.CRITICAL, "no answer from the service at "
                                          "http://127.0.0.1:9580/latest within 2 s"))
        self.assertEqual(check.check([], fetch=refused),
                         (check.CRITICAL, "cannot reach the service at "
                                          "http://127.0.0.1:9580/latest (Connection refused; "
                                          "is twist smartmeter running, with this --http?)"))


class RefusedJoinTests(_RealService):
    """The emulated meter takes another password than the service sends."""

    emulator_options = "&password=BA9876543210"

    @coroutine_test
    async def test_criticalSaysWhy(self):
        """
        Real service whose joins the meter refuses (EVENT 24): CRITICAL "no
        reading yet" with the cause, as /latest gives it, not only in the log.
        """
        self._watch(self.poller.store, "join_failed")
        await self.until(lambda: self.poller.store.join_failure is not None)
        self.assertIsNone(self.poller.store.latest)
        code, line = await self.check("--service", self.url)
        self.assertEqual((code, line), (
            check.CRITICAL, "SmartMeter CRITICAL: no reading yet: the meter refused "
                            "authentication (EVENT 24): check the B-route ID and password"))


class CauseTests(SynchronousTestCase):
    """Why the service's joins fail, as /latest says it."""

    REFUSED = ("the meter refused authentication (EVENT 24): check the B-route ID and "
               "password")

    def test_noReadingYetWithCause(self):
        """503 with a cause: CRITICAL with the cause, then the hold."""
        body = json.dumps({"error": "no reading yet", "cause": self.REFUSED,
                           "held": "transmit-time limit (EVENT 32)"}).encode()
        self.assertEqual(check.interpret(503, body, 0), (
            check.CRITICAL, f"no reading yet: {self.REFUSED}; held: transmit-time limit "
                            "(EVENT 32)"))

    def test_sessionDownWithCause(self):
        """A reading but no session, and a cause: the warning says why."""
        status, message = check.evaluate({"time": 100, "age": 10, "power_w": 300,
                                          "session": False, "cause": self.REFUSED}, 110)
        self.assertEqual((status, message), (
            check.WARNING, f"no session with the meter ({self.REFUSED}); 300 W, age 10 s"))
