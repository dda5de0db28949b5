"""
End-to-end tests of C{mackerel-plugin-smartmeter} (L{smartmeter_tx.cli.plugin}):
the real command logic, Twisted's SerialPort and a pty served by the emulator
in this process, with compressed time.  Real I/O in the real reactor (no
sleeping; each run ends when the plugin's own Deferred fires).

Every emulator starts its meter clock at L{tests.emuloop.START}, never at the
wall clock.  Lossy radios are exercised on the L{task.Clock} loopback instead
(L{tests.cli.test_plugin_lossy}): with real time their pattern of losses depends
on how fast this machine is.
"""

import io
import json
import os
import re

from twisted.internet import defer, reactor
from twisted.trial import unittest

from smartmeter_tx.cli import common, plugin
from smartmeter_tx.cli import options as O
from smartmeter_tx.echonet import meter as M
from smartmeter_tx.emulator.device import DEFAULT_ID, DEFAULT_PASSWORD, start_emulator
from tests.emuloop import pinned
from tests.outputs.test_mackerel import agent_meta, agent_parse

SCALE = "time-scale=0.01"


class _Run:
    # Only catches a hang (each test takes well under a second): no timing assertion.
    timeout = 60

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.state = os.path.join(self.dir, "state.json")
        self.env = {"SMARTMETER_ID": DEFAULT_ID, "SMARTMETER_PASSWORD": DEFAULT_PASSWORD}
        # A run without --state-file would write under $HOME; this keeps even
        # that inside the test's own directory (the default path is read from
        # os.environ, not from the environ given to plugin.run).
        workdir = os.environ.get("MACKEREL_PLUGIN_WORKDIR")
        os.environ["MACKEREL_PLUGIN_WORKDIR"] = os.path.abspath(self.dir)
        self.addCleanup(_restore_environ, "MACKEREL_PLUGIN_WORKDIR", workdir)

    def emulator(self, options=""):
        link = os.path.join(self.dir, "wisun")
        handle = start_emulator(pinned(f"emulator:{options}"), reactor, link=link)
        self.addCleanup(handle.stop)
        return handle

    async def _invoke(self, argv, env):
        out, err = io.StringIO(), io.StringIO()
        code = await plugin.run(reactor, argv, environ=env, stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    def run_plugin(self, *argv, env=None, state=True):
        argv = list(argv)
        if state:
            argv += ["--state-file", self.state]
        return defer.Deferred.fromCoroutine(self._invoke(argv, self.env if env is None else env))

    def truth(self, handle, epc):
        return [r for r in handle.emulator.truth if r.epc == epc and r.seoj == 0x028801]


def agent_conf_env(out):
    """The C{env} table of the mackerel-agent.conf block in C{out}, as a dict."""
    import tomllib
    block = out[out.index("[plugin.metrics.smartmeter]"):]
    return tomllib.loads(block)["plugin"]["metrics"]["smartmeter"]["env"]


def _restore_environ(name, value):
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


class RunTests(_Run, unittest.TestCase):
    dialect = "standard"

    @defer.inlineCallbacks
    def test_coldThenWarm(self):
        """
        A cold run scans and joins; the next run finds the module's session and
        sends exactly one SKSENDTO, no SKSCAN or SKJOIN; both print the meter's values.
        """
        handle = self.emulator(f"{self.dialect}?{SCALE}")
        code, out, err = yield self.run_plugin("--device", handle.path, "--verbosity", "3")
        self.assertEqual(code, 0, err)
        self.assertIn("> SKSCAN", err)
        values = agent_parse(out)
        power = self.truth(handle, M.POWER)[-1].value
        self.assertEqual(values["smartmeter.power.value"], power)
        r, t = self.truth(handle, M.CURRENT)[-1].value
        self.assertEqual(values["smartmeter.current.r"], float(r))
        self.assertEqual(values["smartmeter.current.t"], float(t))
        code, out, err = yield self.run_plugin("--device", handle.path, "--verbosity", "3")
        self.assertEqual(code, 0, err)
        sent = re.findall(r"^> (\S+)", err, re.M)
        self.assertEqual(sent.count("SKSENDTO"), 1, sent)
        self.assertNotIn("SKSCAN", sent)
        self.assertNotIn("SKJOIN", sent)
        self.assertEqual(agent_parse(out)["smartmeter.power.value"],
                         self.truth(handle, M.POWER)[-1].value)

    @defer.inlineCallbacks
    def test_coldWithStateNoScan(self):
        """After the module lost its session, a run with a state file joins without a scan."""
        handle = self.emulator(f"{self.dialect}?{SCALE}")
        code, _, err = yield self.run_plugin("--device", handle.path)
        self.assertEqual(code, 0, err)
        handle.emulator.power_cycle()
        code, out, err = yield self.run_plugin("--device", handle.path, "--verbosity", "3")
        self.assertEqual(code, 0, err)
        sent = re.findall(r"^> (\S+)", err, re.M)
        self.assertNotIn("SKSCAN", sent)
        self.assertEqual(sent.count("SKJOIN"), 1)
        self.assertIn("smartmeter.power.value", out)

    @defer.inlineCallbacks
    def test_energyAndPrefix(self):
        """--energy prints kWh exactly as the meter counts, under --metric-key-prefix."""
        handle = self.emulator(f"{self.dialect}?{SCALE}")
        code, out, err = yield self.run_plugin("--device", handle.path, "--energy",
                                               "--metric-key-prefix", "home")
        self.assertEqual(code, 0, err)
        values = agent_parse(out)
        self.assertEqual(values["home.energy.normal"],
                         float(self.truth(handle, M.ENERGY_NORMAL)[-1].kwh))
        self.assertIn("home.energy.reverse", values)
        self.assertNotIn("smartmeter.power.value", values)

    @defer.inlineCallbacks
    def test_wrongPassword(self):
        """A wrong password: nothing on stdout, one stderr line about authentication, exit 4."""
        handle = self.emulator(f"{self.dialect}?{SCALE}")
        env = dict(self.env, SMARTMETER_PASSWORD="WRONGPASSWOR")
        code, out, err = yield self.run_plugin("--device", handle.path, env=env)
        self.assertEqual(code, common.EXIT_AUTH)
        self.assertEqual(out, "")
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("authentication", err)
        self.assertNotIn("WRONGPASSWOR", err)

    @defer.inlineCallbacks
    def test_secretsNeverShown(self):
        """At verbosity 3 the transcript redacts SKSETPWD/SKSETRBID; no secret appears anywhere."""
        handle = self.emulator(f"{self.dialect}?{SCALE}")
        code, out, err = yield self.run_plugin("--device", handle.path, "--verbosity", "3",
                                               env={})
        self.assertEqual(code, 2)  # no credentials and no session: a usage error
        code, out, err = yield self.run_plugin(
            "--device", handle.path, "--verbosity", "3", "--id", DEFAULT_ID,
            "--password", DEFAULT_PASSWORD, env={})
        self.assertEqual(code, 0, err)
        self.assertIn("SKSETPWD C <redacted>", err)
        self.assertIn("SKSETRBID <redacted>", err)
        for secret in (DEFAULT_ID, DEFAULT_PASSWORD, DEFAULT_ID[-8:],
                       DEFAULT_ID.encode().hex().upper()):
            self.assertNotIn(secret, out + err)

    @defer.inlineCallbacks
    def test_goSpelling(self):
        """The Go plugin's single-dash flags work unchanged."""
        handle = self.emulator(f"{self.dialect}?{SCALE}")
        code, out, err = yield self.run_plugin(
            "-device", handle.path, "-id", DEFAULT_ID, "-password", DEFAULT_PASSWORD,
            "-metric-key-prefix", "sm", "-tempfile", self.state, env={}, state=False)
        self.assertEqual(code, 0, err)
        self.assertIn("sm.power.value", agent_parse(out))
        self.assertTrue(os.path.exists(self.state))


    @defer.inlineCallbacks
    def test_scan(self):
        """
        --scan prints the meter's channel, PAN ID, MAC, IPv6 and LQI in dBm, saves
        them, and prints a mackerel-agent.conf block without the secrets.
        """
        handle = self.emulator(f"{self.dialect}?{SCALE}")
        code, out, err = yield self.run_plugin("--device", handle.path, "--scan")
        self.assertEqual(code, 0, err)
        emu = handle.emulator
        self.assertIn(f"channel   {emu.channel:02X}", out)
        self.assertIn(f"PAN ID    {emu.pan_id:04X}", out)
        self.assertIn(emu.meter_mac, out)
        self.assertIn(emu.meter_ip, out)
        self.assertIn("dBm", out)
        self.assertIn("[plugin.metrics.smartmeter]", out)
        # The scan's progress on stderr, one line a step.
        self.assertRegex(err, r"^mackerel-plugin-smartmeter: scanning all 28 channels "
                              r"\(duration 5, about 9 s\)$")
        # mackerel-agent's PATH rarely holds a venv's bin/: the command is absolute.
        command = re.search(r'^command = \["([^"]+)"', out, re.M).group(1)
        self.assertTrue(os.path.isabs(command), command)
        self.assertTrue(os.access(command, os.X_OK), command)
        self.assertEqual(os.path.basename(command), "mackerel-plugin-smartmeter")
        self.assertNotIn(DEFAULT_PASSWORD, out + err)
        # The credentials where the user keeps them: both in the environment.
        self.assertEqual(agent_conf_env(out),
                         {"SMARTMETER_ID": DEFAULT_ID,
                          "SMARTMETER_PASSWORD": "<your 12-character B-route password>"})
        self.assertNotIn("--password-file", out)
        # mackerel-agent runs the block's command in its own environment (its
        # own MACKEREL_PLUGIN_WORKDIR): it goes straight to the join, the scan's
        # findings read from the state file the block names.
        command = json.loads(re.search(r"^command = (\[.*\])$", out, re.M).group(1))
        self.assertEqual(command[command.index("--state-file") + 1], os.path.abspath(self.state))
        agent_dir = os.path.abspath(self.mktemp())
        os.makedirs(agent_dir)
        os.environ["MACKEREL_PLUGIN_WORKDIR"] = agent_dir  # restored by setUp's cleanup
        code, out, err = yield self.run_plugin(*command[1:], "--verbosity", "3", state=False)
        self.assertEqual(code, 0, err)
        self.assertNotIn("> SKSCAN", err)
        self.assertIn("smartmeter.power.value\t", out)
        self.assertEqual(os.listdir(agent_dir), [])

    @defer.inlineCallbacks
    def test_scanKeepsThePasswordFile(self):
        """
        --scan with --password-file: the mackerel-agent.conf block names that
        file (absolute) and the ID given, and no placeholder.
        """
        handle = self.emulator(f"{self.dialect}?{SCALE}")
        secret = os.path.join(self.dir, "password")
        with open(secret, "w") as f:
            f.write(DEFAULT_PASSWORD + "\n")
        code, out, err = yield self.run_plugin("--device", handle.path, "--scan",
                                               "--password-file", os.path.relpath(secret),
                                               env={"SMARTMETER_ID": DEFAULT_ID})
        self.assertEqual(code, 0, err)
        command = json.loads(re.search(r"^command = (\[.*\])$", out, re.M).group(1))
        self.assertEqual(command[command.index("--password-file") + 1], os.path.abspath(secret))
        self.assertEqual(agent_conf_env(out), {"SMARTMETER_ID": DEFAULT_ID})
        self.assertNotIn("<", out)
        self.assertNotIn(DEFAULT_PASSWORD, out + err)

    @defer.inlineCallbacks
    def test_lowerCaseIdReads(self):
        """An ID typed in lower case joins: the module gets it as the letter prints it."""
        handle = self.emulator(f"{self.dialect}?{SCALE}")
        env = dict(self.env, SMARTMETER_ID=DEFAULT_ID.lower())
        code, out, err = yield self.run_plugin("--device", handle.path, env=env)
        self.assertEqual(code, 0, err)
        self.assertIn("smartmeter.power.value\t", out)

    @defer.inlineCallbacks
    def test_refusalNamedInAShortRun(self):
        """
        A wrong password in a run shorter than the meter's 40 s to refuse it:
        the time-out says the credentials are the likely cause.
        """
        handle = self.emulator(f"{self.dialect}?{SCALE}")
        code, out, err = yield self.run_plugin("--device", handle.path)  # saves the link
        self.assertEqual(code, 0, err)
        yield handle.stop()
        handle = self.emulator(f"{self.dialect}?password=BA9876543210")  # real time
        code, out, err = yield self.run_plugin("--device", handle.path, "--timeout", "3")
        self.assertEqual((code, out), (common.EXIT_TIMEOUT, ""), err)
        self.assertEqual(err, "mackerel-plugin-smartmeter: timed out while authenticating with "
                              "the meter (SKJOIN); the meter refuses a wrong B-route ID or "
                              "password only after about 40 s, so that is the likely cause: "
                              "check them, or run once with --timeout 55 to see its answer\n")


class DSERunTests(RunTests):
    dialect = "dse"


class RadioTests(_Run, unittest.TestCase):
    @defer.inlineCallbacks
    def test_negativePowerHexOutput(self):
        """A selling household (solar at noon) prints negative power; hex ERXUDP mode."""
        handle = self.emulator(f"standard?{SCALE}&solar=6000&start=2024-06-01T12:05:00"
                               "&wopt=hex")
        code, out, err = yield self.run_plugin("--device", handle.path)
        self.assertEqual(code, 0, err)
        power = agent_parse(out)["smartmeter.power.value"]
        self.assertLess(power, 0)
        self.assertEqual(power, self.truth(handle, M.POWER)[-1].value)

    @defer.inlineCallbacks
    def test_inProcessEmulatorDevice(self):
        """--device emulator: runs the emulator in-process with matching credentials."""
        code, out, err = yield self.run_plugin("--device", pinned(f"emulator:dse?{SCALE}"),
                                               env={})
        self.assertEqual(code, 0, err)
        self.assertEqual(sorted(agent_parse(out)),
                         ["smartmeter.current.r", "smartmeter.current.t",
                          "smartmeter.power.value"])


class UserErrorTests(_Run, unittest.TestCase):
    @defer.inlineCallbacks
    def test_missingDevice(self):
        """A missing device gives one line naming the path and exit 3, no traceback."""
        path = os.path.join(self.dir, "ttyNOPE")
        code, out, err = yield self.run_plugin("--device", path)
        self.assertEqual(code, common.EXIT_DEVICE)
        self.assertEqual(out, "")
        self.assertEqual(len(err.strip().splitlines()), 1)
        self.assertIn(path, err)
        self.assertNotIn("Traceback", err)

    @defer.inlineCallbacks
    def test_usageErrors(self):
        """Bad flags give one line and exit 2."""
        for argv in (["--device", "x", "--channel", "99"], ["--nonsense"], [],
                     ["--device", "x", "--timeout", "0"],
                     ["--device", "emulator:bogus?x=1"]):
            code, out, err = yield self.run_plugin(*argv)
            self.assertEqual(code, common.EXIT_USAGE, (argv, err))
            self.assertEqual(out, "")
            self.assertEqual(len(err.strip().splitlines()), 1, (argv, err))

    @defer.inlineCallbacks
    def test_badIdLength(self):
        """A B-route ID of the wrong length is a usage error that does not echo the ID."""
        env = dict(self.env, SMARTMETER_ID="SHORTID")
        code, out, err = yield self.run_plugin("--device", pinned("emulator:"), env=env)
        self.assertEqual(code, common.EXIT_USAGE)
        self.assertNotIn("SHORTID", err)

    @defer.inlineCallbacks
    def test_credentialsCheckedFirst(self):
        """
        An ID that is not 32 hex digits, a password that is not 12 characters
        or an empty password file: one line saying so, exit 2, before the
        serial port is even opened (the device here does not exist).
        """
        empty = os.path.join(self.dir, "empty")
        open(empty, "w").close()
        missing = os.path.join(self.dir, "ttyNOPE")
        cases = [
            ({"SMARTMETER_ID": "G" * 32, "SMARTMETER_PASSWORD": DEFAULT_PASSWORD}, [],
             "the B-route ID must be 32 hexadecimal digits"),
            ({"SMARTMETER_ID": DEFAULT_ID, "SMARTMETER_PASSWORD": "SHORTPASS"}, [],
             "the B-route password must be 12 characters"),
            ({"SMARTMETER_ID": DEFAULT_ID}, ["--password-file", empty],
             f"--password-file {empty} is empty"),
        ]
        for env, extra, expected in cases:
            code, out, err = yield self.run_plugin("--device", missing, *extra, env=env)
            self.assertEqual((code, out), (common.EXIT_USAGE, ""), err)
            self.assertEqual(err, f"mackerel-plugin-smartmeter: {expected}" +
                             err.split(expected, 1)[-1], err)
            self.assertEqual(len(err.splitlines()), 1, err)
            self.assertNotIn("SHORTPASS", err)
            self.assertNotIn("G" * 32, err)

    @defer.inlineCallbacks
    def test_meta(self):
        """With MACKEREL_AGENT_PLUGIN_META set, the graph definitions are printed."""
        code, out, err = yield self.run_plugin("--device", "x", "--energy",
                                               env={"MACKEREL_AGENT_PLUGIN_META": "1"})
        self.assertEqual(code, 0)
        graphs = agent_meta(out)["graphs"]
        self.assertEqual(sorted(graphs), ["smartmeter.current", "smartmeter.energy",
                                          "smartmeter.power"])
        code, out, err = yield self.run_plugin("--device", "x", "--energy",
                                               env={"MACKEREL_AGENT_PLUGIN_META": ""})
        self.assertNotIn("mackerel-agent-plugin", out)


class AgentConfTests(unittest.SynchronousTestCase):
    def test_passwordOnTheCommandLine(self):
        """
        A password given with --password is not copied: the block points at a
        password file to create, and says so; the ID given is kept.
        """
        import argparse
        import tomllib

        from smartmeter_tx.session.state import MeterLink

        args = argparse.Namespace(device=O.parse_device("/dev/ttyUSB0"))
        link = MeterLink(channel=0x3B, ipaddr="FE80:0000:0000:0000:021D:1290:1234:5678")
        lines = plugin.agent_conf("/opt/sm/bin/mackerel-plugin-smartmeter", args, link,
                                  DEFAULT_ID, "argv", "/var/lib/smartmeter_tx/m.json")
        conf = tomllib.loads("\n".join(lines[2:]))["plugin"]["metrics"]["smartmeter"]
        self.assertEqual(conf["command"], [
            "/opt/sm/bin/mackerel-plugin-smartmeter", "--device", "/dev/ttyUSB0",
            "--channel", "3B", "--ipaddr", link.ipaddr, "--state-file",
            "/var/lib/smartmeter_tx/m.json", "--password-file",
            plugin.PASSWORD_FILE_HINT, "--timeout", "55"])
        self.assertEqual(conf["env"], {"SMARTMETER_ID": DEFAULT_ID})
        self.assertIn(f"# Put the B-route password on the first line of "
                      f"{plugin.PASSWORD_FILE_HINT}", lines)
        unknown = plugin.agent_conf("x", args, link, None, None, "/s.json")
        self.assertEqual(tomllib.loads("\n".join(unknown[2:]))["plugin"]["metrics"][
            "smartmeter"]["env"], {"SMARTMETER_ID": "<your 32-digit B-route ID>"})
