"""
Tests for L{smartmeter_tx.cli.tap}: the Options and makeService of
C{twist smartmeter}, built against the emulator on a MemoryReactorClock.
"""

import datetime
import io
import json
import os
import resource
import sys
from decimal import Decimal

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from smartmeter_tx.echonet import meter as M
from smartmeter_tx.emulator.module import DEFAULT_ID, DEFAULT_PASSWORD
from smartmeter_tx.service.poller import MeterPoller
from smartmeter_tx.sk.values import Dialect
from smartmeter_tx.cli import options as O
from smartmeter_tx.cli.tap import EXIT_CONFIG, Options, makeService
from smartmeter_tx.outputs.guard import IDLE_TIMEOUT, HttpGuard, default_max_connections
from tests.emuloop import Loop

IPADDR = "fe80:0000:0000:0000:021d:1290:1234:5678"
#: The wall clock of the made services: 2026-06-01 12:00 in Japan.
WALL = datetime.datetime(2026, 6, 1, 3, 0, tzinfo=datetime.timezone.utc).timestamp()


def clean_environ(test, **extra):
    """Replace os.environ for the test with one free of SMARTMETER_* plus C{extra}."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTMETER_")}
    env.update(extra)
    test.patch(os, "environ", env)


def capture_stderr(test):
    """Replace sys.stderr for the test; @return: the StringIO."""
    stream = io.StringIO()
    test.patch(sys, "stderr", stream)
    return stream


def parse(*argv):
    options = Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    def setUp(self):
        clean_environ(self)

    def test_everyOption(self):
        """Options parses every service option, the channel and PAN ID as hex."""
        data = self.mktemp()
        state = self.mktemp()
        options = parse("--device", "/dev/ttyUSB0", "--interval", "10", "--energy-interval", "60",
                        "--data-log", data, "--http", "tcp:9581:interface=127.0.0.1",
                        "--channel", "3B", "--panid", "8a2f", "--ipaddr", IPADDR,
                        "--state-file", state, "--dse")
        settings = options.settings
        self.assertEqual(settings.device, O.DeviceSpec("/dev/ttyUSB0"))
        self.assertEqual(settings.interval, 10.0)
        self.assertEqual(settings.energy_interval, 60.0)
        self.assertEqual(settings.data_log, data)
        self.assertEqual(settings.http, "tcp:9581:interface=127.0.0.1")
        self.assertEqual(settings.channel, 0x3B)
        self.assertEqual(settings.panid, 0x8A2F)
        self.assertEqual(settings.ipaddr, IPADDR.upper())
        self.assertEqual(settings.state_file, state)
        self.assertEqual(settings.dialect, Dialect.DSE)
        self.assertIsNone(settings.credentials)
        # The options keep the text given: nothing derived goes back.
        self.assertEqual((options["device"], options["channel"]), ("/dev/ttyUSB0", "3B"))

    def test_defaults(self):
        """Options defaults to 30 s polls, 300 s energy reads, no data log and HTTP on loopback."""
        options = parse("--device", "/dev/ttyUSB0")
        settings = options.settings
        self.assertEqual(settings.interval, 30.0)
        self.assertEqual(settings.energy_interval, 300.0)
        self.assertIsNone(settings.data_log)
        self.assertEqual(settings.http, "tcp:9580:interface=127.0.0.1")
        self.assertIsNone(settings.dialect)

    def test_dseAndStandardExclusive(self):
        """Options rejects --dse together with --standard."""
        self.assertRaises(usage.UsageError, parse, "--device", "x", "--dse", "--standard")
        self.assertTrue(parse("--device", "x", "--standard")["standard"])

    def test_deviceRequired(self):
        """Options without --device is a usage error."""
        e = self.assertRaises(usage.UsageError, parse, "--interval", "10")
        self.assertIn("--device", str(e))

    def test_badChannel(self):
        """Options rejects a channel outside 21-3C (hex) and a PAN ID that is not hex."""
        self.assertRaises(usage.UsageError, parse, "--device", "x", "--channel", "3D")
        self.assertRaises(usage.UsageError, parse, "--device", "x", "--panid", "zz")

    def test_intervals(self):
        """Options rejects an interval below 1 s or an energy interval shorter than it."""
        self.assertRaises(usage.UsageError, parse, "--device", "x", "--interval", "0.5")
        self.assertRaises(usage.UsageError, parse, "--device", "x", "--interval", "60",
                          "--energy-interval", "30")

    def test_intervalUnits(self):
        """
        --interval and --energy-interval take seconds bare or with s, m or h;
        anything else is one usage line naming the option.
        """
        settings = parse("--device", "x", "--interval", "30s", "--energy-interval", "5m").settings
        self.assertEqual((settings.interval, settings.energy_interval), (30.0, 300.0))
        e = self.assertRaises(usage.UsageError, parse, "--device", "x", "--interval", "30x")
        self.assertEqual(str(e), "--interval: not a number of seconds >= 0: '30x' "
                                 "(e.g. 30, 30s, 5m)")

    def test_shortIntervalWarned(self):
        """
        An interval under 10 s works, and the log says at start what it
        costs; the default and 10 s say nothing.
        """
        self.assertEqual(parse("--device", "x").settings.warnings, ())
        self.assertEqual(parse("--device", "x", "--interval", "10").settings.warnings, ())
        (warning,) = parse("--device", "x", "--interval", "2").settings.warnings
        self.assertTrue(warning.startswith("--interval 2 s sends 1800 requests an hour, 15 "
                                           "times the default's 120"), warning)

    def test_environment(self):
        """Options takes the ID and password from SMARTMETER_ID and SMARTMETER_PASSWORD."""
        clean_environ(self, SMARTMETER_ID=DEFAULT_ID, SMARTMETER_PASSWORD=DEFAULT_PASSWORD)
        options = parse("--device", "x")
        self.assertEqual((options.settings.rbid, options.settings.password),
                         (DEFAULT_ID, DEFAULT_PASSWORD))

    def test_commandLineBeatsEnvironment(self):
        """Options prefers --id and --password over the environment."""
        clean_environ(self, SMARTMETER_ID="E" * 32, SMARTMETER_PASSWORD="ENVPASSWORD1")
        options = parse("--device", "x", "--id", DEFAULT_ID, "--password", DEFAULT_PASSWORD)
        self.assertEqual((options.settings.rbid, options.settings.password),
                         (DEFAULT_ID, DEFAULT_PASSWORD))

    def test_passwordFile(self):
        """Options reads the password from the first line of --password-file, stripped."""
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(DEFAULT_PASSWORD + "\n# second line ignored\n")
        clean_environ(self, SMARTMETER_ID=DEFAULT_ID, SMARTMETER_PASSWORD="ENVPASSWORD1")
        options = parse("--device", "x", "--password-file", path)
        self.assertEqual(options.settings.password, DEFAULT_PASSWORD)

    def test_passwordFileMissing(self):
        """
        An unreadable --password-file ends twist with one line naming it and
        exit status 78 (a setting that cannot work), without a traceback.
        """
        path = self.mktemp()
        stderr = capture_stderr(self)
        e = self.assertRaises(SystemExit, parse, "--device", "x", "--password-file", path)
        self.assertEqual(e.code, EXIT_CONFIG)
        self.assertEqual(stderr.getvalue(), f"twist smartmeter: cannot read --password-file "
                                            f"{path}: No such file or directory\n")

    def test_reprHidesSecrets(self):
        """repr() of parsed Options shows neither the B-route ID nor the password."""
        options = parse("--device", "x", "--id", DEFAULT_ID, "--password", DEFAULT_PASSWORD)
        text = repr(options)
        self.assertNotIn(DEFAULT_ID, text)
        self.assertNotIn(DEFAULT_PASSWORD, text)


    def test_optionsFromEnvironment(self):
        """
        SMARTMETER_<OPTION> gives any option (a container's settings), a
        switch as 1 or 0; the command line overrides a variable.
        """
        data = self.mktemp()
        clean_environ(self, SMARTMETER_DEVICE="/dev/ttyUSB0", SMARTMETER_DATA_LOG=data,
                      SMARTMETER_HTTP="tcp:9580", SMARTMETER_INTERVAL="1m",
                      SMARTMETER_BACKFILL_DAYS="3", SMARTMETER_DSE="1", SMARTMETER_STANDARD="0",
                      SMARTMETER_CHANNEL="3B")
        settings = parse("--interval", "45").settings
        self.assertEqual(settings.device, O.DeviceSpec("/dev/ttyUSB0"))
        self.assertEqual((settings.data_log, settings.http), (data, "tcp:9580"))
        self.assertEqual((settings.interval, settings.backfill_days), (45.0, 3))
        self.assertEqual((settings.dialect, settings.channel), (Dialect.DSE, 0x3B))

    def test_environmentErrorNamesVariable(self):
        """
        A bad value from a variable is a usage error that names the
        variables used; a switch's variable must be true or false.
        """
        clean_environ(self, SMARTMETER_DEVICE="x", SMARTMETER_CHANNEL="3D")
        e = self.assertRaises(usage.UsageError, parse)
        self.assertIn("$SMARTMETER_CHANNEL", str(e))
        clean_environ(self, SMARTMETER_DEVICE="x", SMARTMETER_DSE="maybe")
        e = self.assertRaises(usage.UsageError, parse)
        self.assertEqual(str(e), "$SMARTMETER_DSE must be true or false (1/0), not 'maybe'")

    def test_idFile(self):
        """
        The B-route ID may come from the file $SMARTMETER_ID_FILE names (a
        container's secret); a missing one is one line naming the variable.
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(DEFAULT_ID + "\n")
        clean_environ(self, SMARTMETER_ID_FILE=path, SMARTMETER_PASSWORD=DEFAULT_PASSWORD)
        self.assertEqual(parse("--device", "x").settings.rbid, DEFAULT_ID)
        stderr = capture_stderr(self)
        clean_environ(self, SMARTMETER_ID_FILE=path + ".missing")
        e = self.assertRaises(SystemExit, parse, "--device", "x")
        self.assertEqual(e.code, EXIT_CONFIG)
        self.assertEqual(stderr.getvalue(), f"twist smartmeter: cannot read $SMARTMETER_ID_FILE "
                                            f"{path}.missing: No such file or directory\n")

class MakeServiceTests(SynchronousTestCase):
    def setUp(self):
        clean_environ(self)
        self.reactor = MemoryReactorClock()
        self.loop = Loop(clock=self.reactor)
        self.addCleanup(self.loop.stop)
        self.data = self.mktemp()
        self.state = self.mktemp()
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def make(self, *extra, credentials=True):
        argv = ["--device", "/dev/ttyUSB-test", "--state-file", self.state,
                "--interval", "10", "--energy-interval", "60"]
        if credentials:
            argv += ["--id", DEFAULT_ID, "--password", DEFAULT_PASSWORD]
        self.options = parse(*argv, *extra)
        top = makeService(self.options, reactor=self.reactor, open_port=self.loop.connect,
                          wall_clock=lambda: WALL + self.reactor.seconds())
        return top

    def start(self, top):
        top.startService()
        self.addCleanup(lambda: top.running and top.stopService())

    def test_tree(self):
        """makeService returns a MultiService holding the poller and the HTTP service."""
        top = self.make("--data-log", self.data, "--standard")
        self.assertIsInstance(top, MultiService)
        children = list(top)
        self.assertIsInstance(top.poller, MeterPoller)
        self.assertIn(top.poller, children)
        self.assertEqual(len([s for s in children
                              if isinstance(s, StreamServerEndpointService)]), 1)
        self.assertIs(top.poller.clock, self.reactor)
        schedule = top.poller.schedule
        self.assertEqual((schedule.interval, schedule.energy_interval), (10.0, 60.0))
        self.assertEqual(top.poller.config.dialect, Dialect.STANDARD)
        self.assertEqual(top.poller.state_path, self.state)

    def test_linkOptions(self):
        """makeService gives the poller the channel, PAN ID and address from the options."""
        top = self.make("--channel", "3B", "--panid", "8A2F", "--ipaddr", IPADDR, "--dse")
        link = top.poller.link
        self.assertEqual((link.channel, link.pan_id, link.ipaddr), (0x3B, 0x8A2F, IPADDR.upper()))
        self.assertEqual(top.poller.config.dialect, Dialect.DSE)

    def test_pollsLogsAndServes(self):
        """The made service polls the meter, appends readings to the data log and serves /latest."""
        top = self.make("--data-log", self.data)
        self.start(top)
        [(port, guard, backlog, interface)] = self.reactor.tcpServers
        self.assertEqual((port, interface), (9580, "127.0.0.1"))
        # The site behind the connection cap and the header deadline.
        self.assertIsInstance(guard, HttpGuard)
        self.assertEqual(guard.max_connections, default_max_connections(
            resource.getrlimit(resource.RLIMIT_NOFILE)[0]))
        site = guard.wrappedFactory
        self.assertEqual(site.timeOut, IDLE_TIMEOUT)
        self.loop.advance(25)
        truth = [r.value for r in self.loop.emulator.truth if r.epc == M.POWER]
        self.assertEqual(len(truth), 2)
        [name] = os.listdir(self.data)
        # Named by the injected wall clock: midday in Japan, the same date
        # in every time zone from UTC-3 to UTC+20.
        self.assertEqual(name, "smartmeter-2026-06-01.jsonl")
        with open(os.path.join(self.data, name), encoding="utf-8") as f:
            records = [json.loads(line, parse_float=Decimal) for line in f]
        # The meter's own 30-minute record is logged too (kind: history).
        lines = [r for r in records if "kind" not in r]
        self.assertTrue([r for r in records if r.get("kind") == "history"])
        self.assertEqual([line["power_w"] for line in lines], truth)
        self.assertIn("energy_normal_kwh", lines[0])
        self.assertNotIn("energy_normal_kwh", lines[1])
        self.assertEqual(lines[0]["energy_normal_kwh"],
                         [r.kwh for r in self.loop.emulator.truth if r.epc == M.ENERGY_NORMAL][-1])

        request = DummyRequest([b"latest"])
        body = getChildForRequest(site.resource, request).render(request)
        self.assertEqual(json.loads(body)["power_w"], truth[-1])
        self.assertEqual(json.loads(body)["device"], "/dev/ttyUSB-test")

        top.stopService()
        self.assertEqual([child.running for child in top], [False] * len(list(top)))
        sends = self.loop.sent.count("SKSENDTO")
        self.loop.advance(60)
        self.assertEqual(self.loop.sent.count("SKSENDTO"), sends)

    def test_noCredentialsStopsWithStatus78(self):
        """
        No credentials and a module without a session: the service stops the
        reactor and arranges exit status 78 instead of idling for ever.
        """
        top = self.make("--http", "none", credentials=False)
        self.start(top)
        self.loop.advance(25)
        self.assertTrue(self.reactor.hasStopped)
        after = self.reactor.triggers.get("after", {}).get("shutdown", [])
        self.assertEqual(len(after), 1)
        critical = [e for e in self.events if e.get("log_level") is not None
                    and e["log_level"].name == "critical"]
        self.assertEqual(len(critical), 1)
        self.assertIn("no B-route ID and password", formatEvent(critical[0]))

    def test_httpNone(self):
        """makeService with --http none listens nowhere and still polls."""
        top = self.make("--http", "none")
        self.assertEqual([s for s in top if isinstance(s, StreamServerEndpointService)], [])
        self.start(top)
        self.loop.advance(25)
        self.assertEqual(self.reactor.tcpServers, [])
        self.assertEqual(top.poller.stats.polls_answered, 2)

    def test_dataLogNotADirectory(self):
        """
        A --data-log that is a file ends the start at once: one line naming
        the option and the cause, exit status 78, no service left running.
        """
        blocker = self.mktemp()
        with open(blocker, "w") as f:
            f.write("not a directory")
        stderr = capture_stderr(self)
        e = self.assertRaises(SystemExit, self.make, "--http", "none", "--data-log", blocker)
        self.assertEqual(e.code, EXIT_CONFIG)
        self.assertEqual(stderr.getvalue(),
                         f"twist smartmeter: --data-log {blocker}: not a directory\n")
        self.assertEqual(self.loop.sent, [])

    def test_stateFileUnwritable(self):
        """
        A --state-file whose directory cannot be made ends the start in one
        line (78), instead of a warning at every save naming a temporary file.
        """
        blocker = self.mktemp()
        with open(blocker, "w") as f:
            f.write("not a directory")
        path = os.path.join(blocker, "state", "meter.json")
        stderr = capture_stderr(self)
        e = self.assertRaises(SystemExit, self.make, "--http", "none", "--state-file", path)
        self.assertEqual(e.code, EXIT_CONFIG)
        self.assertEqual(stderr.getvalue(), f"twist smartmeter: --state-file {path}: cannot "
                                            f"create {os.path.dirname(os.path.abspath(path))}: "
                                            "Not a directory\n")
        self.assertEqual(self.loop.sent, [])

    def test_mqttCaMissing(self):
        """An --mqtt-ca file that is not there ends the start in one line, exit status 78."""
        missing = os.path.abspath(self.mktemp())
        stderr = capture_stderr(self)
        e = self.assertRaises(SystemExit, self.make, "--http", "none", "--mqtt",
                              "mqtts://broker.lan", "--mqtt-ca", missing)
        self.assertEqual(e.code, EXIT_CONFIG)
        self.assertEqual(stderr.getvalue(), f"twist smartmeter: --mqtt-ca {missing}: "
                                            "No such file or directory\n")

    def test_shortIntervalLogged(self):
        """A poll interval under 10 s is said once, at warning level, when the service is made."""
        self.make("--interval", "2")
        said = [formatEvent(e) for e in self.events if e.get("log_level") is not None
                and e["log_level"].name == "warn" and "--interval 2 s" in formatEvent(e)]
        self.assertEqual(len(said), 1, said)

    def test_secretsNeverLogged(self):
        """No log event of the service, nor the poller's repr, carries the ID or the password."""
        top = self.make("--data-log", self.data)
        self.start(top)
        self.loop.advance(30)
        self.loop.emulator.terminate_by_peer()  # a rejoin sends the credentials again
        self.loop.advance(200)
        top.stopService()
        self.assertGreater(self.loop.sent.count("SKSETPWD"), 1)
        ours = [e for e in self.events
                if not e.get("log_namespace", "").startswith("smartmeter_tx.emulator")]
        # The SK transcript (debug level) is among them, so the commands carrying
        # the secrets were logged, redacted.
        self.assertTrue([e for e in ours if "SKSETPWD" in formatEvent(e)])
        for event in ours:
            text = formatEvent(event) + repr(event)
            self.assertNotIn(DEFAULT_ID, text)
            self.assertNotIn(DEFAULT_PASSWORD, text)
        text = repr(top.poller) + repr(top.poller.config) + repr(top) + repr(self.options)
        self.assertNotIn(DEFAULT_ID, text)
        self.assertNotIn(DEFAULT_PASSWORD, text)


class _ConfigErrors:
    def assertConfigError(self, argv, expected):
        """Parsing C{argv} ends twist with exit status 78 and exactly one line."""
        stderr = capture_stderr(self)
        e = self.assertRaises(SystemExit, parse, *argv)
        self.assertEqual(e.code, EXIT_CONFIG)
        self.assertEqual(stderr.getvalue(), f"twist smartmeter: {expected}\n")


class OptionValidationTests(_ConfigErrors, SynchronousTestCase):

    def test_badCredentialsAreConfigErrors(self):
        """
        An ID that is not 32 hex digits or a password that is not 12
        characters ends twist with one line and exit status 78, without the
        value.
        """
        self.assertConfigError(
            ["--device", "/dev/x", "--id", "SHORTID", "--password", DEFAULT_PASSWORD],
            "the B-route ID must be 32 hexadecimal digits, as on the power company's letter "
            "(without spaces)")
        self.assertConfigError(
            ["--device", "/dev/x", "--id", "0" * 32, "--password", "has space 12"],
            "the B-route password must be 12 characters, as on the power company's letter "
            "(without spaces)")
        self.assertConfigError(
            ["--device", "/dev/x", "--id", "0" * 32, "--password", "ELEVENCHARS"],
            "the B-route password must be 12 characters, as on the power company's letter "
            "(without spaces)")

    def test_emptyPasswordFile(self):
        """An empty --password-file is named as such (78), not as a missing password."""
        path = self.mktemp()
        open(path, "w").close()
        self.assertConfigError(["--device", "/dev/x", "--id", "0" * 32, "--password-file", path],
                               f"--password-file {path} is empty: the password goes on its "
                               "first line")

    def test_backfillDaysNeedsDataLog(self):
        """
        --backfill-days without --data-log would do nothing: 78, one line.
        With --data-log alone the backfill keeps 7 days; without it, none.
        """
        self.assertConfigError(["--device", "/dev/x", "--backfill-days", "3"],
                               "--backfill-days needs --data-log: the 30-minute record is kept "
                               "in the data log")
        self.assertEqual(parse("--device", "/dev/x", "--data-log", "d").settings.backfill_days, 7)
        self.assertEqual(parse("--device", "/dev/x").settings.backfill_days, 0)
        self.assertEqual(parse("--device", "/dev/x", "--data-log", "d",
                               "--backfill-days", "0").settings.backfill_days, 0)

    def test_shortIpv6Rejected(self):
        """--ipaddr in the short IPv6 form is rejected before it reaches the state file."""
        self.assertRaises(usage.UsageError, parse, "--device", "/dev/x", "--ipaddr", "fe80::1")
        options = parse("--device", "/dev/x", "--ipaddr",
                        "fe80:0000:0000:0000:021d:1290:1234:5678")
        self.assertEqual(options.settings.ipaddr, "FE80:0000:0000:0000:021D:1290:1234:5678")


class MqttOptionTests(SynchronousTestCase):
    def setUp(self):
        clean_environ(self)

    def test_mqttOptions(self):
        """--mqtt with its password file, topic and discovery prefix builds the MQTT config."""
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write("brokerpw\n")
        options = parse("--device", "/dev/x", "--mqtt", "mqtt://me@127.0.0.1:1884",
                        "--mqtt-password-file", path, "--mqtt-topic", "home",
                        "--ha-discovery", "none")
        config = options.settings.mqtt
        self.assertEqual((config.host, config.port, config.username, config.password),
                         ("127.0.0.1", 1884, "me", "brokerpw"))
        self.assertEqual(config.topic_prefix, "home")
        self.assertIsNone(config.discovery_prefix)
        self.assertNotIn("brokerpw", repr(options))

    def test_mqttPasswordFromEnvironment(self):
        """SMARTMETER_MQTT_PASSWORD gives the broker password when no file is named."""
        clean_environ(self, SMARTMETER_MQTT_PASSWORD="envpw")
        options = parse("--device", "/dev/x", "--mqtt", "mqtt://me@broker")
        self.assertEqual(options.settings.mqtt.password, "envpw")

    def test_badMqttURL(self):
        """A bad --mqtt URL is a usage error that names the flag, without the password."""
        clean_environ(self, SMARTMETER_MQTT_PASSWORD="envpw")
        for url in ("http://broker", "mqtt://", "mqtt://broker:99999"):
            e = self.assertRaises(usage.UsageError, parse, "--device", "/dev/x", "--mqtt", url)
            self.assertNotIn("envpw", str(e))

    def test_noMqttByDefault(self):
        """Without --mqtt there is no publisher."""
        self.assertIsNone(parse("--device", "/dev/x").settings.mqtt)


class MissingExtraTests(_ConfigErrors, SynchronousTestCase):
    """An option whose extra is not installed: one line with this installation's own pip."""

    def setUp(self):
        clean_environ(self)
        import importlib.util
        find_spec = importlib.util.find_spec
        self.patch(importlib.util, "find_spec",
                   lambda name, *a: None if name.split(".")[0] in ("paho", "autobahn")
                   else find_spec(name, *a))
        self.pip = os.path.join(os.path.dirname(sys.executable), "pip")

    def test_mqtt(self):
        """--mqtt without paho-mqtt: 78, the requirement from our metadata, no usage."""
        self.assertConfigError(["--device", "x", "--mqtt", "mqtt://127.0.0.1"],
                               "--mqtt needs paho-mqtt (the [mqtt] extra), which this "
                               f"installation lacks: {self.pip} install 'paho-mqtt<3,>=2'")

    def test_homeAssistant(self):
        """--ha-url without autobahn: the same, in the service and in smartmeter-history."""
        expected = ("--ha-url needs autobahn (the [homeassistant] extra), which this "
                    f"installation lacks: {self.pip} install 'autobahn[twisted]>=23.1' "
                    "'twisted[tls]'")
        self.assertConfigError(["--device", "x", "--data-log", "d", "--ha-url",
                                "http://ha.lan:8123"], expected)
        from smartmeter_tx.cli import common, ha
        e = self.assertRaises(common.UsageError, ha.check_ready, "http://ha.lan:8123", "t")
        self.assertEqual(str(e), expected)


class HomeAssistantOptionTests(_ConfigErrors, SynchronousTestCase):
    """--ha-url/--ha-token-file of the service."""

    def setUp(self):
        clean_environ(self)
        self.token = self.mktemp()
        with open(self.token, "w") as f:
            f.write("service-ha-token\n")

    def test_settings(self):
        """
        The token from its file (or the environment), never in the options'
        repr; --ha-url needs the data log and a token, and a real URL (78).
        """
        options = parse("--device", "x", "--data-log", "d", "--ha-url", "http://ha.lan:8123",
                        "--ha-token-file", self.token)
        self.assertEqual(options.settings.ha_token, "service-ha-token")
        self.assertNotIn("service-ha-token", repr(options))
        clean_environ(self, SMARTMETER_HA_TOKEN="env-token")
        self.assertEqual(parse("--device", "x", "--data-log", "d", "--ha-url",
                               "http://ha.lan:8123").settings.ha_token, "env-token")
        clean_environ(self)
        self.assertConfigError(["--device", "x", "--ha-url", "http://ha.lan:8123",
                                "--ha-token-file", self.token],
                               "--ha-url needs --data-log (with --backfill-days above 0): the "
                               "meter's 30-minute record is kept there")
        self.assertConfigError(["--device", "x", "--data-log", "d", "--ha-url",
                                "http://ha.lan:8123"],
                               "--ha-url needs an access token: --ha-token-file FILE or "
                               "$SMARTMETER_HA_TOKEN")
        self.assertConfigError(["--device", "x", "--data-log", "d", "--ha-url", "ha.lan",
                                "--ha-token-file", self.token],
                               "--ha-url must be Home Assistant's address, such as "
                               "http://homeassistant.local:8123, not 'ha.lan'")

    def test_wiring(self):
        """
        The importer is in the tree, on /metrics and on the page, and each
        slot the backfill logs kicks it (once the slot is held).
        """
        from smartmeter_tx.outputs.homeassistant.importer import HaImporter
        reactor = MemoryReactorClock()
        loop = Loop(clock=reactor)
        self.addCleanup(loop.stop)
        options = parse("--device", "/dev/ttyUSB-test", "--state-file", self.mktemp(),
                        "--id", DEFAULT_ID, "--password", DEFAULT_PASSWORD, "--data-log",
                        self.mktemp(), "--ha-url", "http://ha.lan:8123", "--ha-token-file",
                        self.token)
        top = makeService(options, reactor=reactor, open_port=loop.connect,
                          wall_clock=lambda: WALL + reactor.seconds())
        [importer] = [s for s in top if isinstance(s, HaImporter)]
        kicks = []
        importer.kick = lambda: kicks.append(1)
        backfill = top.poller.backfill
        slot = {"kind": "history", "slot": "2026-06-01T10:00:00+09:00", "source": "E2"}
        backfill.on_slot(slot, WALL)
        reactor.advance(0)
        self.assertEqual(kicks, [1])
        [http] = [s for s in top if isinstance(s, StreamServerEndpointService)]
        guard = http.factory
        request = DummyRequest([b"metrics"])
        body = getChildForRequest(guard.wrappedFactory.resource, request).render(request)
        self.assertIn(b"smartmeter_ha_connected 0.0", body)
        request = DummyRequest([b""])
        page = getChildForRequest(guard.wrappedFactory.resource, request).render(request)
        self.assertIn(b'id="link-ha"', page)


class TariffOptionTests(_ConfigErrors, SynchronousTestCase):
    """--tariff: read at start, with the data log it prices; a bad one is 78."""

    def setUp(self):
        clean_environ(self)
        self.tariff = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))), "examples", "tariffs", "tepco-juryo-dento-b.toml")

    def test_tariffKeepsAWholePeriod(self):
        """
        With --tariff the backfill keeps 32 days complete (a whole period and
        the day before); a smaller --backfill-days is raised, and said.
        """
        settings = parse("--device", "x", "--data-log", self.mktemp(), "--tariff",
                         self.tariff).settings
        self.assertEqual((settings.tariff.billing_day, settings.backfill_days), (1, 32))
        settings = parse("--device", "x", "--data-log", self.mktemp(), "--tariff", self.tariff,
                         "--backfill-days", "7").settings
        self.assertEqual(settings.backfill_days, 32)
        self.assertIn("--tariff keeps 32 days of the meter's record complete", settings.warnings[0])

    def test_settingsThatCannotWork(self):
        """No data log, --backfill-days 0, a tariff that does not fit: one line, 78."""
        bad = self.mktemp()
        with open(bad, "w", encoding="utf-8") as f:
            f.write('name = "x"\nbilling_day = 0\n')
        for argv, expected in (
                (["--tariff", self.tariff], "--tariff needs --data-log: the bill is priced "
                                            "from the meter's 30-minute record kept there"),
                (["--tariff", self.tariff, "--data-log", self.mktemp(), "--backfill-days", "0"],
                 "--tariff prices the meter's 30-minute record, which --backfill-days 0 "
                 "turns off"),
                (["--tariff", bad, "--data-log", self.mktemp()],
                 f"tariff {bad}: billing_day: must be a whole number from 1 to 28")):
            self.assertConfigError(["--device", "x", *argv], expected)
