"""
C{twist smartmeter} as a user runs it, in a subprocess: a mistake in its
options, an HTTP port that is taken, or missing credentials end it with one
line on stderr and a documented exit status, never a traceback.
"""

import os
import sys

from twisted.internet import defer, reactor, utils
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
