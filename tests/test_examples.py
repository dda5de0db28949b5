"""
The example files under C{examples/}: the systemd unit keeps its secrets off
the command line, is sandboxed, and passes C{systemd-analyze} when the tool is
there; the mackerel-agent.conf commands are flags the plugin takes.
"""

import os
import re
import shutil
import subprocess
import sys
import tomllib

from twisted.trial.unittest import SkipTest, SynchronousTestCase

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
UNIT = os.path.join(EXAMPLES, "smartmeter.service")
MACKEREL_CONF = os.path.join(EXAMPLES, "mackerel-agent.conf")

#: The most exposure C{systemd-analyze security} may score the unit (of 10).
MAX_EXPOSURE = 3.5

#: Messages about our unit that are about the host, not the unit (a test
#: machine without the service's user, group or configuration).
HOST_MESSAGES = re.compile(
    r"(?i)\b(user|group)\b.*\b(not found|unknown|does not exist)\b"
    r"|/etc/smartmeter\b")


def unit_text():
    if not os.path.exists(UNIT):
        raise SkipTest(f"{UNIT} not found (tests run outside a source checkout)")
    with open(UNIT, encoding="utf-8") as f:
        return f.read()


def logical_lines(text):
    """The unit's lines with backslash continuations joined, comments left out."""
    joined = re.sub(r"\\\n", " ", text)
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith(("#", ";"))]


def settings(text, key):
    """Every value of C{key} in the unit, in order."""
    prefix = key + "="
    return [line[len(prefix):] for line in logical_lines(text) if line.startswith(prefix)]


def systemd_analyze():
    tool = shutil.which("systemd-analyze")
    if tool is None:
        raise SkipTest("systemd-analyze is not installed")
    return tool


def run(argv):
    """Run a command; C{(exit code, stdout + stderr as text)}."""
    env = dict(os.environ, SYSTEMD_COLORS="0", SYSTEMD_PAGER="", LC_ALL="C.UTF-8")
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=env, timeout=120)
    return proc.returncode, proc.stdout.decode("utf-8", "replace")


class UnitContentTests(SynchronousTestCase):
    """What the unit must say, whatever tools the machine has."""

    def setUp(self):
        self.text = unit_text()

    def test_umask(self):
        """The data log is created 0640: UMask=0027."""
        self.assertEqual(settings(self.text, "UMask"), ["0027"])

    def test_noDirectoryDeviceUnit(self):
        """No ordering on a device unit for /dev/serial/by-id, which never exists."""
        self.assertNotIn(r"dev-serial-by\x2did.device", self.text)
        for key in ("After", "Requires", "BindsTo", "Wants"):
            for value in settings(self.text, key):
                self.assertNotIn(r"by\x2did.device", value)

    def test_noSecretOnTheCommandLine(self):
        """ExecStart carries neither the password nor the ID (they are in ps and the journal)."""
        (exec_start,) = settings(self.text, "ExecStart")
        self.assertIn("--password-file %d/password", exec_start)
        for flag in ("--password ", "--password=", "--id ", "--id="):
            self.assertNotIn(flag, exec_start + " ")
        self.assertEqual(settings(self.text, "LoadCredential"),
                         ["password:/etc/smartmeter/password"])

    def test_serialPortReachable(self):
        """
        The sandbox leaves the serial port usable: /dev is the host's (no
        PrivateDevices=, so /dev/serial/by-id is there) and USB serial nodes
        are allowed.
        """
        self.assertEqual(settings(self.text, "PrivateDevices"), [])
        self.assertEqual(settings(self.text, "DevicePolicy"), ["closed"])
        self.assertEqual(settings(self.text, "DeviceAllow"),
                         ["char-ttyUSB rw", "char-ttyACM rw"])
        self.assertEqual(settings(self.text, "StateDirectory"), ["smartmeter"])


class SystemdAnalyzeTests(SynchronousTestCase):
    """The unit through systemd's own checks, on a copy in the test's directory."""

    def setUp(self):
        self.tool = systemd_analyze()
        text = unit_text()
        # verify wants ExecStart's binary to exist: point it at this Python.
        text, n = re.subn(r"^ExecStart=\S+", lambda m: "ExecStart=" + sys.executable,
                          text, count=1, flags=re.MULTILINE)
        self.assertEqual(n, 1, "no ExecStart= in the unit")
        directory = self.mktemp()
        os.makedirs(directory)
        self.path = os.path.join(directory, "smartmeter.service")
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(text)

    def test_verify(self):
        """C{systemd-analyze verify} finds nothing wrong with the unit."""
        code, output = run([self.tool, "verify", "--man=no", "--generators=no", self.path])
        if output.strip():
            print(f"systemd-analyze verify (exit {code}):\n{output}")
        ours = [line for line in output.splitlines()
                if ("smartmeter.service" in line or self.path in line)
                and not HOST_MESSAGES.search(line)]
        self.assertEqual(ours, [], "systemd-analyze verify complains about the unit")
        if code != 0 and not output.strip():
            self.fail(f"systemd-analyze verify exited {code} without a message")

    def test_securityExposure(self):
        """C{systemd-analyze security --offline=true} scores the unit at most L{MAX_EXPOSURE}."""
        code, output = run([self.tool, "security", "--no-pager", "--offline=true", self.path])
        found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", output)
        if found is None:
            if re.search(r"(?i)unrecognized option|unknown option|invalid option", output):
                raise SkipTest("this systemd-analyze has no security --offline "
                               f"(systemd >= 250 needed): {output.strip()[:200]}")
            self.fail(f"no exposure level in systemd-analyze security output "
                      f"(exit {code}):\n{output}")
        score = float(found.group(1))
        print(found.group(0))
        self.assertTrue(score <= MAX_EXPOSURE,
                        f"exposure {score} > {MAX_EXPOSURE}; lines still exposed:\n"
                        + "\n".join(line for line in output.splitlines()
                                    if line.startswith("\N{BALLOT X}")))


class MackerelConfTests(SynchronousTestCase):
    """examples/mackerel-agent.conf, its active block and the commented-out one."""

    def setUp(self):
        if not os.path.exists(MACKEREL_CONF):
            raise SkipTest(f"{MACKEREL_CONF} not found (tests run outside a source checkout)")
        with open(MACKEREL_CONF, encoding="utf-8") as f:
            self.text = f.read()

    def plugin(self, toml_text):
        return tomllib.loads(toml_text)["plugin"]["metrics"]["smartmeter"]

    def test_serviceBlock(self):
        """The active block reads the service over loopback: flags the plugin takes."""
        from smartmeter_tx.cli.plugin import parse_args
        command = self.plugin(self.text)["command"]
        self.assertEqual(os.path.basename(command[0]), "mackerel-plugin-smartmeter")
        args = parse_args(command[1:])
        self.assertEqual(args.service, "http://127.0.0.1:9580")
        self.assertIsNone(args.device)

    def test_portBlock(self):
        """
        The commented-out block (the plugin owning the port) takes valid flags,
        keeps the secrets off the command line and stays under the agent's
        timeout.
        """
        from smartmeter_tx.cli.options import ENV_ID
        from smartmeter_tx.cli.plugin import parse_args
        block = "\n".join(line[2:] for line in self.text.splitlines()
                          if line.startswith("# ") and ("=" in line or line.startswith("# [")))
        plugin = self.plugin(block)
        args = parse_args(plugin["command"][1:])
        self.assertIsNotNone(args.device)
        self.assertIsNotNone(args.password_file)
        self.assertIsNone(args.password)
        self.assertIsNone(args.id)
        self.assertIn(ENV_ID, plugin["env"])
        self.assertLess(args.timeout, plugin["timeout_seconds"])

    def test_checkBlock(self):
        """
        The check block runs check-smartmeter by its absolute path with flags
        its parser takes, against the service's loopback endpoint, within the
        agent's check timeout, every minute.
        """
        from smartmeter_tx.cli import check
        block = tomllib.loads(self.text)["plugin"]["checks"]["smartmeter"]
        command = block["command"]
        self.assertTrue(os.path.isabs(command[0]), command[0])
        self.assertEqual(os.path.basename(command[0]), "check-smartmeter")
        args = check.parse_args(command[1:])
        self.assertEqual(args.url, "http://127.0.0.1:9580/latest")
        self.assertLess(args.timeout, block.get("timeout_seconds", 30))
        self.assertEqual(block["check_interval"], 1)
        self.assertGreaterEqual(block["max_check_attempts"], 1)

    def test_checkCurrentExample(self):
        """The current thresholds the check block's comment suggests parse, warning below critical."""
        from smartmeter_tx.cli import check
        suggested = re.search(r'add ("--warning-current".*?)\.?$', self.text, re.M).group(1)
        flags = [flag.strip().strip('"') for flag in suggested.split(",")]
        args = check.parse_args(flags)
        self.assertLess(args.warning_current, args.critical_current)


class BrokerOnTheLanTests(SynchronousTestCase):
    def test_unitSaysHowToAllowABroker(self):
        """
        The unit blocks every host but this one, so next to its address
        filter it shows how to allow a broker (an IPAddressAllow= line and
        the MQTT flags with the password as a credential), and the README's
        MQTT example says so in English and Japanese.
        """
        text = unit_text()
        self.assertEqual(settings(text, "IPAddressDeny"), ["any"])
        comments = [line.strip() for line in text.splitlines() if line.strip().startswith("#")]
        self.assertIn("#IPAddressAllow=192.168.1.10", comments)
        self.assertIn("#LoadCredential=mqtt-password:/etc/smartmeter/mqtt.pw", comments)
        self.assertTrue([c for c in comments if "--mqtt-password-file %d/mqtt-password" in c])
        readme = os.path.join(os.path.dirname(EXAMPLES), "README.md")
        with open(readme, encoding="utf-8") as f:
            english, japanese = f.read().split("## 日本語", 1)
        for part in (english, japanese):
            mqtt = part[part.index("--mqtt mqtt"):]
            self.assertIn("IPAddressAllow=192.168.1.10", mqtt[:1500])


class ContainerSettingsTests(SynchronousTestCase):
    """
    compose.yaml (shown whole in README) and the Containerfile's settings:
    every SMARTMETER_ variable they set or suggest is one the service reads,
    and compose.yaml's, with its secret files, is a configuration twist
    smartmeter accepts.
    """

    def setUp(self):
        root = os.path.dirname(EXAMPLES)
        self.compose_path = os.path.join(root, "compose.yaml")
        if not os.path.exists(self.compose_path):
            raise SkipTest("compose.yaml not found (tests run outside a source checkout)")
        with open(self.compose_path, encoding="utf-8") as f:
            self.compose = f.read()
        with open(os.path.join(root, "Containerfile"), encoding="utf-8") as f:
            self.containerfile = f.read()
        with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
            self.readme = f.read()

    def test_readmeShowsComposeFile(self):
        """README's compose example is compose.yaml itself."""
        self.assertIn("```yaml\n" + self.compose + "```", self.readme)

    def test_variablesAreTheServices(self):
        """Each SMARTMETER_ variable named is an option's, or a secret's own."""
        from smartmeter_tx.cli import options as O
        from smartmeter_tx.cli.settings import ENV_MQTT_PASSWORD, environment_name
        from smartmeter_tx.cli.tap import Options
        known = {environment_name(o[0]) for o in Options.optParameters + Options.optFlags}
        known |= {O.ENV_ID_FILE, O.ENV_HA_TOKEN, ENV_MQTT_PASSWORD}
        named = set(re.findall(r"SMARTMETER_[A-Z_]+", self.compose + self.containerfile))
        self.assertGreater(len(named), 8)
        self.assertEqual(named - known, set())

    def test_composeConfigurationWorks(self):
        """compose.yaml's environment, its secrets in files, parses into the settings meant."""
        import yaml

        from smartmeter_tx.cli.tap import Options
        from tests.cli.test_tap import clean_environ
        service = yaml.safe_load(self.compose)["services"]["smartmeter"]
        secrets = self.mktemp()
        os.makedirs(secrets)
        environ = {}
        for name, value in service["environment"].items():
            if value.startswith("/run/secrets/"):
                value = os.path.join(secrets, os.path.basename(value))
                with open(value, "w", encoding="utf-8") as f:
                    f.write({"broute_id": "0123456789ABCDEF0123456789ABCDEF",
                             "broute_password": "ABCDEFGH2345"}[os.path.basename(value)] + "\n")
            environ[name] = value
        self.assertEqual(set(service["secrets"]),
                         {os.path.basename(v) for v in service["environment"].values()
                          if v.startswith("/run/secrets/")})
        clean_environ(self, **environ, SMARTMETER_STATE_FILE=self.mktemp(),
                      SMARTMETER_DATA_LOG=self.mktemp())
        options = Options()
        options.parseOptions([])
        settings = options.settings
        self.assertEqual(settings.device.text, "/dev/ttyUSB0")
        self.assertEqual((settings.rbid, settings.password),
                         ("0123456789ABCDEF0123456789ABCDEF", "ABCDEFGH2345"))
        self.assertTrue(service["devices"][0].endswith(":/dev/ttyUSB0"))
