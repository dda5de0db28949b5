"""
C{twist smartmeter} as a user runs it, in a subprocess: a mistake in its
options, an HTTP port that is taken, or missing credentials end it with one
line on stderr and a documented exit status, never a traceback.
"""

import datetime
import os
import signal
import sys

from twisted.internet import defer, protocol, reactor, utils
from twisted.trial.unittest import TestCase

from smartmeter_tx.cli import tap
from smartmeter_tx.emulator.device import start_emulator
from tests.emuloop import pinned
from tests.sktesting import refusing_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def twist_env():
    """The environment without SMARTMETER_*; the checkout's plugin on the path if there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTMETER_")}
    if os.path.exists(os.path.join(ROOT, "twisted", "plugins", "smartmeter_plugin.py")):
        # An editable install maps the package, not twisted/plugins: twist
        # finds our plugin on sys.path only.
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


class TwistCommandTests(TestCase):
    timeout = 60  # only catches a hang

    def twist(self, *argv):
        """
        @return: a Deferred firing with C{(exit status, stderr text)}.
        """
        state = os.path.join(os.path.abspath(self.mktemp()) + "-state.json")
        args = ["-m", "twisted", "--log-format", "text", "smartmeter", *argv,
                "--state-file", state]
        d = utils.getProcessOutputAndValue(sys.executable, args, env=twist_env(),
                                           path=os.path.dirname(state))
        return d.addCallback(lambda r: (r[2], r[1].decode("utf-8", "replace") +
                                        r[0].decode("utf-8", "replace")))

    def assertOneLine(self, text, expected):
        self.assertNotIn("Traceback", text)
        lines = [line for line in text.splitlines() if line.startswith("twist smartmeter:")]
        self.assertEqual(len(lines), 1, text)
        self.assertIn(expected, lines[0])

    async def _badEmulator(self):
        code, text = await self.twist("--device", "emulator:bogus")
        self.assertEqual(code, tap.EXIT_USAGE, text)
        self.assertNotIn("Traceback", text)
        self.assertIn("Error: --device emulator:bogus: invalid emulator dialect 'bogus'", text)

    def test_badEmulatorSpec(self):
        """--device emulator:bogus is a usage error (64), not a traceback."""
        from twisted.internet import defer
        return defer.Deferred.fromCoroutine(self._badEmulator())

    def test_badHttpEndpoint(self):
        """--http bogus:xyz ends twist with one line and exit status 64."""
        def check(result):
            code, text = result
            self.assertEqual(code, tap.EXIT_USAGE, text)
            self.assertOneLine(text, "--http bogus:xyz: not a server endpoint")
        return self.twist("--device", pinned("emulator:?time-scale=0.01"), "--http",
                          "bogus:xyz").addCallback(check)

    def test_httpPortInUse(self):
        """An --http port that is taken ends twist with one line and exit status 69."""
        port = refusing_port(self)

        def check(result):
            code, text = result
            self.assertEqual(code, tap.EXIT_UNAVAILABLE, text)
            self.assertOneLine(text, f"cannot listen on --http tcp:{port}:interface=127.0.0.1:")
        return self.twist("--device", pinned("emulator:?time-scale=0.01"), "--http",
                          f"tcp:{port}:interface=127.0.0.1").addCallback(check)

    async def _configError(self, flag, value, expected):
        code, text = await self.twist("--device", pinned("emulator:?time-scale=0.01"),
                                      "--http", "none", flag, value)
        self.assertEqual(code, tap.EXIT_CONFIG, text)
        self.assertOneLine(text, expected)

    def test_dataLogIsAFile(self):
        """A --data-log that is a file ends twist at once: one line, exit status 78."""
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("x")
        return defer.Deferred.fromCoroutine(self._configError(
            "--data-log", path, f"--data-log {path}: not a directory"))

    def test_deviceIsAFile(self):
        """A --device that is a regular file ends twist at once: one line, exit status 78."""
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("x")

        def check(result):
            code, text = result
            self.assertEqual(code, tap.EXIT_CONFIG, text)
            self.assertOneLine(text, f"--device {path}: not a serial device")
        return self.twist("--device", path, "--http", "none").addCallback(check)

    def test_noCredentials(self):
        """
        No ID or password, and a module without a session: twist ends with one
        line and exit status 78, so that systemd shows the unit as failed.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        handle = start_emulator(pinned("emulator:?time-scale=0.01"), reactor,
                                link=os.path.join(directory, "wisun"))
        self.addCleanup(handle.stop)

        def check(result):
            code, text = result
            self.assertEqual(code, tap.EXIT_CONFIG, text)
            self.assertNotIn("Traceback", text)
            # Once the reactor runs, twist's log is where the reason goes.
            lines = [line for line in text.splitlines() if "#critical]" in line]
            self.assertEqual(len(lines), 1, text)
            self.assertIn("the module has no session with the meter and no B-route ID and "
                          "password were given", lines[0])
        return self.twist("--device", handle.path, "--http", "none").addCallback(check)


class _Twist(protocol.ProcessProtocol):
    """
    A C{twist smartmeter} left running: its output as it comes, a wait for a
    text in it, and its end.

    @ivar ended: fires with the exit status, or the signal's number negated.
    """

    def __init__(self):
        self.stdout = ""
        self.stderr = ""
        self.ended = defer.Deferred()
        self._waits = []  # (text, Deferred)

    def outReceived(self, data):
        self.stdout += data.decode("utf-8", "replace")
        self._check()

    def errReceived(self, data):
        self.stderr += data.decode("utf-8", "replace")
        self._check()

    def _check(self):
        for wait in [w for w in self._waits if w[0] in self.stdout + self.stderr]:
            self._waits.remove(wait)
            wait[1].callback(True)

    def seen(self, text):
        """
        @return: a Deferred firing with C{True} once C{text} is in the output,
            or with C{False} if the process ends without it.
        """
        d = defer.Deferred()
        self._waits.append((text, d))
        self._check()
        return d

    def processEnded(self, reason):
        waits, self._waits = self._waits, []
        for _, d in waits:
            d.callback(False)
        status = reason.value.exitCode
        self.ended.callback(status if status is not None else -reason.value.signal)


class DataLogLockTests(TestCase):
    """One data-log directory has one writer: a second service on it is refused."""

    timeout = 60  # only catches a hang

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.data = os.path.join(self.dir, "log")
        self.runs = 0

    def spawn(self):
        """Start C{twist smartmeter} on the emulator and the shared data log."""
        self.runs += 1
        state = os.path.join(self.dir, f"state-{self.runs}.json")
        twist = _Twist()
        args = [sys.executable, "-m", "twisted", "--log-format", "text", "smartmeter",
                "--device", pinned("emulator:?time-scale=0.01"), "--data-log", self.data,
                "--http", "none", "--state-file", state]
        process = reactor.spawnProcess(twist, sys.executable, args, env=twist_env(),
                                       path=self.dir)

        def stop():
            if not twist.ended.called:
                process.signalProcess("KILL")
                return twist.ended
        self.addCleanup(stop)
        return twist

    async def _secondRefused(self):
        first = self.spawn()
        self.assertTrue(await first.seen("first reading"), first.stdout + first.stderr)
        second = self.spawn()
        if await second.seen("Starting reactor"):
            self.fail("a second service started on the same data log:\n" + second.stdout)
        code = await second.ended
        self.assertEqual(code, tap.EXIT_CONFIG, second.stdout + second.stderr)
        self.assertNotIn("Traceback", second.stdout + second.stderr)
        self.assertEqual(second.stderr.splitlines(), [
            f"twist smartmeter: --data-log {self.data}: another twist smartmeter uses this "
            "directory; stop it, or give this one a --data-log of its own"])
        self.assertFalse(first.ended.called, first.stdout)
        # A crash cannot leave the lock behind: the kernel drops it.
        first.transport.signalProcess("KILL")
        self.assertEqual(await first.ended, -signal.SIGKILL)
        third = self.spawn()
        self.assertTrue(await third.seen("first reading"), third.stdout + third.stderr)
        third.transport.signalProcess("TERM")
        await third.ended
        self.assertNotIn("Traceback", third.stdout + third.stderr)

    def test_secondServiceRefused(self):
        """
        A second twist smartmeter on a data log in use ends with one line and
        exit status 78, the first one running on; once the first is killed
        (kill -9) a new one starts.
        """
        return defer.Deferred.fromCoroutine(self._secondRefused())


class DeepJsonStartTests(TestCase):
    """A state file or data-log line nested past Python's recursion limit is corrupt input."""

    timeout = 60  # only catches a hang

    async def _deepFiles(self):
        directory = os.path.abspath(self.mktemp())
        data = os.path.join(directory, "log")
        os.makedirs(data)
        state = os.path.join(directory, "state.json")
        with open(state, "w") as f:
            f.write("[" * 100000)
        today = os.path.join(data, f"smartmeter-{datetime.date.today():%Y-%m-%d}.jsonl")
        deep = "[" * 100000 + "]" * 100000
        with open(today, "w") as f:
            f.write('{"power_w":300,"time":1}\n')
            f.write('{"kind":"history","slot":' + deep + '}\n')  # the history reader's
            f.write("[" * 100000 + "\n")  # the last line, for the newest reading's reader
        twist = _Twist()
        args = [sys.executable, "-m", "twisted", "--log-format", "text", "smartmeter",
                "--device", pinned("emulator:?time-scale=0.01"), "--data-log", data,
                "--http", "none", "--state-file", state]
        process = reactor.spawnProcess(twist, sys.executable, args, env=twist_env(),
                                       path=directory)
        self.addCleanup(lambda: None if twist.ended.called else process.signalProcess("KILL"))
        read = await twist.seen("first reading")
        if read:
            process.signalProcess("TERM")
        await twist.ended
        text = twist.stdout + twist.stderr
        self.assertTrue(read, text)
        self.assertNotIn("Traceback", text)
        self.assertNotIn("RecursionError", text)
        # The saved link was ignored: the meter was looked for anew.
        self.assertIn("no saved meter", text)
        self.assertIn(f"skipping line 2 of {today}: not a JSON record", text)

    def test_deeplyNestedStateAndDataLog(self):
        """
        twist smartmeter starts and reads with a state file and data-log lines
        nested 100,000 deep: the state is ignored, the bad line skipped and named.
        """
        return defer.Deferred.fromCoroutine(self._deepFiles())


class HomeAssistantTokenTests(TestCase):
    timeout = 60  # only catches a hang

    def test_refusedTokenEndsWith78(self):
        """
        twist smartmeter whose Home Assistant token is refused ends with exit
        status 78 and one critical line, never showing the token.
        """
        from tests.hafake import FakeHomeAssistant
        ha = FakeHomeAssistant({"the-right-token": True})
        port = ha.listen(reactor)
        self.addCleanup(port.stopListening)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        env = dict(twist_env(), SMARTMETER_HA_TOKEN="a-refused-token")
        args = ["-m", "twisted", "--log-format", "text", "smartmeter", "--device",
                pinned("emulator:?time-scale=0.01"), "--http", "none", "--state-file",
                os.path.join(directory, "state.json"), "--data-log",
                os.path.join(directory, "log"), "--ha-url",
                f"http://127.0.0.1:{port.getHost().port}"]

        def check(result):
            out, err, code = result
            text = err.decode() + out.decode()
            self.assertEqual(code, tap.EXIT_CONFIG, text)
            self.assertNotIn("Traceback", text)
            critical = [line for line in text.splitlines() if "#critical]" in line]
            self.assertEqual(len(critical), 1, text)
            self.assertIn("Home Assistant refused the access token", critical[0])
            self.assertNotIn("a-refused-token", text)
        return utils.getProcessOutputAndValue(sys.executable, args, env=env,
                                              path=directory).addCallback(check)


class HangupTests(TestCase):
    """SIGHUP (a closed terminal, a session's end) stops the service in order."""

    timeout = 60  # only catches a hang

    async def _hangup(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        data = os.path.join(directory, "log")
        twist = _Twist()
        args = [sys.executable, "-m", "twisted", "--log-format", "text", "smartmeter",
                "--device", pinned("emulator:?time-scale=0.01"), "--data-log", data,
                "--http", "none", "--state-file", os.path.join(directory, "state.json")]
        # The emulator's link directory goes where the test can see it.
        env = dict(twist_env(), TMPDIR=directory)
        process = reactor.spawnProcess(twist, sys.executable, args, env=env, path=directory)
        self.addCleanup(lambda: twist.ended.called or (process.signalProcess("KILL"),
                                                       twist.ended)[1])
        self.assertTrue(await twist.seen("first reading"), twist.stdout + twist.stderr)
        process.signalProcess("HUP")
        code = await twist.ended
        output = twist.stdout + twist.stderr
        self.assertEqual(code, 0, output)
        self.assertEqual(output.count("SIGHUP"), 1, output)
        self.assertIn("Main loop terminated", output)
        self.assertNotIn("Traceback", output)
        self.assertEqual([name for name in os.listdir(directory)
                          if name.startswith("smartmeter-emu-")], [])
        for name in os.listdir(data):
            with open(os.path.join(data, name), "rb") as f:
                self.assertTrue(f.read().endswith(b"\n"), name)

    def test_hangupStopsInOrder(self):
        """
        SIGHUP: one log line, the service stopped as for SIGTERM (the data
        log whole, the emulator's directory removed), exit status 0.
        """
        return defer.Deferred.fromCoroutine(self._hangup())


class ForcedDialectTests(TestCase):
    """A dialect forced with a flag that the module does not speak."""

    timeout = 60  # only catches a hang

    async def _standardOnDse(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        args = ["-m", "twisted", "--log-format", "text", "smartmeter", "--device",
                pinned("emulator:dse?time-scale=0.01"), "--http", "none", "--standard",
                "--state-file", os.path.join(directory, "state.json")]
        out, err, code = await utils.getProcessOutputAndValue(sys.executable, args,
                                                              env=twist_env(), path=directory)
        text = err.decode() + out.decode()
        self.assertEqual(code, tap.EXIT_CONFIG, text)
        self.assertNotIn("Traceback", text)
        self.assertNotIn("next try", text)
        critical = [line for line in text.splitlines() if "#critical]" in line]
        self.assertEqual(len(critical), 1, text)
        self.assertIn("--standard: the module rejects the commands of the standard SK dialect "
                      "(FAIL ER05), so it speaks the DSE one; leave out --standard and the "
                      "dialect is detected", critical[0])

    def test_standardOnDseModuleEndsWith78(self):
        """
        twist smartmeter --standard on a DSE module ends with exit status 78
        and one critical line naming --standard, never retrying the join.
        """
        return defer.Deferred.fromCoroutine(self._standardOnDse())


class RepeatedSignalTests(TestCase):
    """Stop signals that keep coming while the service stops in order."""

    timeout = 60  # only catches a hang

    async def _signals(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        twist = _Twist()
        args = [sys.executable, "-m", "twisted", "--log-format", "text", "smartmeter",
                "--device", pinned("emulator:?time-scale=0.01"), "--http", "none",
                "--state-file", os.path.join(directory, "state.json")]
        process = reactor.spawnProcess(twist, sys.executable, args, env=twist_env(),
                                       path=directory)
        self.addCleanup(lambda: twist.ended.called or (process.signalProcess("KILL"),
                                                       twist.ended)[1])
        self.assertTrue(await twist.seen("first reading"), twist.stdout + twist.stderr)
        # Held while they arrive, the three are handled at once on SIGCONT: the
        # later two while the first one's stop has begun (the lowest first: HUP).
        process.signalProcess("STOP")
        for name in ("TERM", "INT", "HUP"):
            process.signalProcess(name)
        process.signalProcess(signal.SIGCONT)
        code = await twist.ended
        output = twist.stdout + twist.stderr
        self.assertEqual(code, 0, output)
        self.assertNotIn("Traceback", output)
        self.assertNotIn("ReactorNotRunning", output)
        self.assertEqual(output.count("SIGHUP: stopping, as for SIGTERM"), 1, output)
        self.assertNotIn("Received SIG", output)
        for name in ("SIGINT", "SIGTERM"):
            self.assertEqual(output.count(f"{name} while stopping: the orderly stop goes on"), 1,
                             output)
        self.assertIn("Main loop terminated", output)

    def test_moreSignalsWhileStopping(self):
        """
        SIGHUP, SIGINT and SIGTERM at once: the first stops the service in
        order, each other one says in one line that the stop goes on; no
        traceback (ReactorNotRunning), exit status 0 as for SIGHUP.
        """
        return defer.Deferred.fromCoroutine(self._signals())
