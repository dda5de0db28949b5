"""
Tests for L{smartmeter_tx.cli.options}: what both front ends take from the user.
Every test passes C{environ} explicitly and never reads the real environment.
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.cli import options as O
from smartmeter_tx.session import state as S
from smartmeter_tx.session.join import Credentials
from smartmeter_tx.session.config import SessionConfig
from smartmeter_tx.errors import ArgumentError
from smartmeter_tx.sk.values import Dialect

RBID = "00112233445566778899AABBCCDDEEFF"
PASSWORD = "0123456789AB"
IP = "FE80:0000:0000:0000:021D:1290:1234:5678"
USB0 = O.parse_device("/dev/ttyUSB0")


class _OneLine:
    def assertOneLineError(self, function, *args):
        """C{function(*args)} raises ArgumentError with a one-line message; return it."""
        error = self.assertRaises(ArgumentError, function, *args)
        message = str(error)
        self.assertTrue(message, args)
        self.assertNotIn("\n", message)
        self.assertNotIn("\r", message)
        return message


class ParseTests(_OneLine, SynchronousTestCase):
    """
    The value checks of the command line.
    """

    def test_boolTrue(self):
        """parse_bool takes the bare flag (None) and 1/t/true/yes/on in any case as true."""
        for text in (None, "1", "t", "true", "TRUE", "Yes", "on"):
            self.assertIs(O.parse_bool(text), True, text)

    def test_boolFalse(self):
        """parse_bool takes 0/f/false/no/off in any case as false."""
        for text in ("0", "f", "false", "False", "NO", "off"):
            self.assertIs(O.parse_bool(text), False, text)

    def test_boolInvalid(self):
        """parse_bool rejects other words, the empty string and multi-line text in one line."""
        for text in ("", "maybe", "2", "true\nfalse", " yes"):
            self.assertIn("boolean", self.assertOneLineError(O.parse_bool, text))

    def test_channel(self):
        """parse_channel reads hex as EPANDESC prints it, with or without 0x, any case."""
        for text, value in (("3B", 0x3B), ("3b", 0x3B), ("0x3B", 0x3B), ("0X21", 0x21),
                            (" 21 ", 0x21), ("3C", 0x3C)):
            self.assertEqual(O.parse_channel(text), value, text)

    def test_channelInvalid(self):
        """parse_channel rejects non-hex text and channels outside 21-3C, in one line."""
        for text in ("", "zz", "0x", "3B\n21", "59.5"):
            self.assertIn("not a channel", self.assertOneLineError(O.parse_channel, text))
        for text in ("20", "3D", "0", "FF", "59"):
            self.assertIn("21-3C", self.assertOneLineError(O.parse_channel, text))

    def test_channelDecimal(self):
        """A channel given in decimal (as some guides print it) is named in hex."""
        self.assertEqual(self.assertOneLineError(O.parse_channel, "59"),
                         "channel '59' is outside 21-3C (hex); 59 decimal is 3B")
        self.assertEqual(self.assertOneLineError(O.parse_channel, "20"),
                         "channel '20' is outside 21-3C (hex)")

    def test_seconds(self):
        """parse_seconds takes seconds bare or with s, m or h, in any case."""
        for text, value in (("30", 30.0), ("30s", 30.0), ("2.5", 2.5), ("5m", 300.0),
                            ("1H", 3600.0), (" 10S ", 10.0), ("0", 0.0)):
            self.assertEqual(O.parse_seconds(text), value, text)

    def test_secondsInvalid(self):
        """parse_seconds rejects words, other units, negatives and infinities, in one line."""
        for text in ("", "s", "30x", "-1", "-1m", "inf", "nan", "1d", "5 m s"):
            self.assertIn("not a number of seconds",
                          self.assertOneLineError(O.parse_seconds, text))

    def test_numberHasNoUnits(self):
        """parse_number (a current or a power) takes no unit: 5m is not 300."""
        self.assertEqual(O.parse_number("5"), 5.0)
        for text in ("5m", "-1", "nan"):
            self.assertOneLineError(O.parse_number, text)

    def test_panid(self):
        """parse_panid reads 1 to 4 hex digits."""
        for text, value in (("8888", 0x8888), ("0000", 0), ("ffff", 0xFFFF), ("1", 1)):
            self.assertEqual(O.parse_panid(text), value, text)

    def test_panidInvalid(self):
        """parse_panid rejects non-hex text and values over FFFF, in one line."""
        for text in ("", "zzzz", "10000", "-1", "88\n88"):
            self.assertIn("PAN ID", self.assertOneLineError(O.parse_panid, text))

    def test_ipaddr(self):
        """parse_ipaddr takes a full link-local address in any case and gives it upper case."""
        self.assertEqual(O.parse_ipaddr(IP), IP)
        self.assertEqual(O.parse_ipaddr(" " + IP.lower() + "\n"), IP)

    def test_ipaddrInvalid(self):
        """parse_ipaddr rejects short forms, wrong group sizes and non-hex, in one line."""
        for text in ("", "FE80::1", IP[:-1], IP + ":0000", IP.replace("F", "G"),
                     "FE80:0000:0000:0000:021D:1290:1234:5678\nX", "fe80:０000:0000:0000:021D:1290:1234:5678"):
            self.assertIn("--ipaddr", self.assertOneLineError(O.parse_ipaddr, text))


class SecretsTests(_OneLine, SynchronousTestCase):
    """
    read_secrets: command line, then environment, with --password-file winning.
    """

    ENV = {O.ENV_ID: "E" * 32, O.ENV_PASSWORD: "envpassword"}

    def password_file(self, content):
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)
        return path

    def test_none(self):
        """Nothing given anywhere gives (None, None)."""
        self.assertEqual(O.read_secrets(None, None, None, environ={}), (None, None))

    def test_emptyIsNone(self):
        """Empty arguments and empty environment values count as not given."""
        environ = {O.ENV_ID: "", O.ENV_PASSWORD: ""}
        self.assertEqual(O.read_secrets("", "", None, environ=environ), (None, None))

    def test_environment(self):
        """The environment supplies what the command line did not give."""
        self.assertEqual(O.read_secrets(None, None, None, environ=self.ENV),
                         ("E" * 32, "envpassword"))
        self.assertEqual(O.read_secrets(RBID, None, None, environ=self.ENV),
                         (RBID, "envpassword"))

    def test_argumentWins(self):
        """Command-line values win over the environment."""
        self.assertEqual(O.read_secrets(RBID, PASSWORD, None, environ=self.ENV),
                         (RBID, PASSWORD))

    def test_passwordFileWins(self):
        """The password file's first line, stripped, wins over the argument and environment."""
        path = self.password_file("  filepassword \r\nsecond line\n")
        self.assertEqual(O.read_secrets(RBID, PASSWORD, path, environ=self.ENV),
                         (RBID, "filepassword"))
        self.assertEqual(O.read_secrets(None, None, path, environ={}), (None, "filepassword"))

    def test_passwordFileUnreadable(self):
        """A missing or unreadable password file is an ArgumentError naming the flag, without
        the password."""
        missing = os.path.join(self.mktemp(), "nope")
        directory = self.mktemp()
        os.makedirs(directory)
        for path in (missing, directory):
            message = self.assertOneLineError(
                O.read_secrets, RBID, "s3cretPassw0rd", path, {O.ENV_PASSWORD: "envS3cret"})
            self.assertIn("--password-file", message)
            self.assertNotIn("s3cretPassw0rd", message)
            self.assertNotIn("envS3cret", message)
            self.assertNotIn(RBID, message)


class CredentialsTests(_OneLine, SynchronousTestCase):
    """
    make_credentials: both or neither, and never the values in an error.
    """

    def test_neither(self):
        """Neither the ID nor the password gives None."""
        self.assertIsNone(O.make_credentials(None, None))
        self.assertIsNone(O.make_credentials("", ""))

    def test_onlyOne(self):
        """Only one of them is an ArgumentError whose message holds neither value."""
        for rbid, password in ((RBID, None), (None, PASSWORD), (RBID, ""), ("", PASSWORD)):
            message = self.assertOneLineError(O.make_credentials, rbid, password)
            self.assertNotIn(RBID, message)
            self.assertNotIn(PASSWORD, message)
            self.assertIn("both", message)

    def test_both(self):
        """A valid ID and password give Credentials holding them, with a redacted repr."""
        credentials = O.make_credentials(RBID, PASSWORD)
        self.assertIsInstance(credentials, Credentials)
        self.assertEqual((credentials.rbid, credentials.password), (RBID, PASSWORD))
        self.assertNotIn(PASSWORD, repr(credentials))

    def test_lowerCaseId(self):
        """An ID typed in lower case is the power company's upper-case one."""
        self.assertEqual(O.make_credentials(RBID.lower(), PASSWORD).rbid, RBID)

    def test_swapped(self):
        """The ID in the password's place and back: named as swapped, neither value shown."""
        message = self.assertOneLineError(O.make_credentials, PASSWORD, RBID)
        self.assertEqual(message, "the B-route ID and password look swapped: the ID is the 32 "
                                  "hexadecimal digits, the password the 12 characters")

    def test_malformed(self):
        """A malformed ID or password is an ArgumentError that does not repeat it."""
        for rbid, password in ((RBID[:-1], PASSWORD), (RBID, "pass word"), (RBID, "x" * 33)):
            message = self.assertOneLineError(O.make_credentials, rbid, password)
            self.assertNotIn(rbid, message)
            self.assertNotIn(password, message)


class DeviceTests(SynchronousTestCase):
    """--device is read once, into a L{O.DeviceSpec}."""

    def test_serialPath(self):
        """A path is a serial device, kept as given; an emulator spec is the emulator's."""
        self.assertEqual(O.parse_device("/dev/serial/by-id/usb-ROHM"),
                         O.DeviceSpec("/dev/serial/by-id/usb-ROHM"))
        self.assertFalse(USB0.is_emulator)
        spec = O.parse_device("emulator:dse?loss=0.1&link=/tmp/x")
        self.assertTrue(spec.is_emulator)
        config, link = spec.emulator
        self.assertEqual((config.dialect, config.loss, link), (Dialect.DSE, 0.1, "/tmp/x"))
        self.assertEqual(str(spec), "emulator:dse?loss=0.1&link=/tmp/x")
        self.assertTrue(O.parse_device("EMULATOR:").is_emulator)

    def test_badSpec(self):
        """A bad emulator spec is one line naming --device and the spec."""
        e = self.assertRaises(ArgumentError, O.parse_device, "emulator:bogus")
        self.assertEqual(str(e), "--device emulator:bogus: invalid emulator dialect 'bogus': "
                                 "expected standard or dse")

    def test_required(self):
        """No --device: one line saying what to give."""
        e = self.assertRaises(ArgumentError, O.require_device, None, ", or --service")
        self.assertIn("--device is required", str(e))
        self.assertTrue(str(e).endswith(", or --service"))

    def test_parsedOnce(self):
        """
        twist's options and makeService read an emulator spec once: the
        emulator starts from the configuration the options parsed.
        """
        from smartmeter_tx.cli import tap
        from smartmeter_tx.emulator import device as emulator_device
        from twisted.internet.testing import MemoryReactorClock
        calls = []
        parse_spec = emulator_device.parse_spec
        self.patch(emulator_device, "parse_spec",
                   lambda text: calls.append(text) or parse_spec(text))
        self.patch(os, "environ", {})
        options = tap.Options()
        options.parseOptions(["--device", "emulator:?time-scale=0", "--http", "none",
                              "--state-file", os.path.join(self.mktemp(), "s.json")])
        top = tap.makeService(options, reactor=MemoryReactorClock())
        self.addCleanup(top.stopService)
        self.assertEqual(calls, ["emulator:?time-scale=0"])


class SessionTests(SynchronousTestCase):
    """
    dialect_for, session_config and start_device.
    """

    def test_dialectFor(self):
        """dialect_for maps --dse to DSE, --dse=false to STANDARD and no flag to None."""
        self.assertIs(O.dialect_for(True), Dialect.DSE)
        self.assertIs(O.dialect_for(False), Dialect.STANDARD)
        self.assertIsNone(O.dialect_for(None))

    def saved(self):
        path = os.path.join(self.mktemp(), "state.json")
        link = S.MeterLink(channel=0x3B, pan_id=0x8888, mac="001D129012345678", ipaddr=IP,
                           dialect="dse", unit="0.01")
        S.save_state(path, link)
        return path, link

    def test_savedState(self):
        """Without overrides the saved link is used as it is."""
        path, link = self.saved()
        credentials = O.make_credentials(RBID, PASSWORD)
        config, state_path = O.session_config(USB0, path, credentials, Dialect.DSE,
                                              environ={})
        self.assertIsInstance(config, SessionConfig)
        self.assertEqual(state_path, path)
        self.assertEqual(config.link, link)
        self.assertIs(config.credentials, credentials)
        self.assertIs(config.dialect, Dialect.DSE)

    def test_overrides(self):
        """A channel override over the saved state drops the old meter."""
        path, link = self.saved()
        config, _ = O.session_config(USB0, path, None, None, channel=0x21,
                                     pan_id=0x1234, environ={})
        self.assertEqual(config.link, S.MeterLink(channel=0x21, pan_id=0x1234, dialect="dse"))
        self.assertEqual(S.load_state(path), link)

    def test_sameChannel(self):
        """The saved channel given again keeps the saved link."""
        path, link = self.saved()
        config, _ = O.session_config(USB0, path, None, None, channel=0x3B, environ={})
        self.assertEqual(config.link, link)

    def test_ipaddrOverride(self):
        """An ipaddr override over the saved state is applied."""
        path, _ = self.saved()
        other = "FE80:0000:0000:0000:C2F9:4500:4058:B5FB"
        config, _ = O.session_config(USB0, path, None, None, ipaddr=other, environ={})
        self.assertEqual(config.link, S.MeterLink(channel=0x3B, ipaddr=other, dialect="dse"))

    def test_defaultStatePath(self):
        """Without --state-file the path comes from the given environ, not the real one."""
        workdir = self.mktemp()
        environ = {"MACKEREL_PLUGIN_WORKDIR": workdir}
        config, state_path = O.session_config(USB0, None, None, None, environ=environ)
        self.assertEqual(state_path, S.default_state_path("/dev/ttyUSB0", environ))
        self.assertTrue(state_path.startswith(workdir + os.sep))
        self.assertEqual(config.link, S.MeterLink())

    def test_startDevicePath(self):
        """start_device for a plain path gives a Device at that path with no default
        credentials, whose stop() does nothing, twice."""
        device = O.start_device(USB0, reactor=None)
        self.assertIsInstance(device, O.Device)
        self.assertEqual(device.path, "/dev/ttyUSB0")
        self.assertIsNone(device.default_credentials)
        device.stop()
        device.stop()


class InstallHintTests(SynchronousTestCase):
    def test_markersAndOrder(self):
        """
        The extra's requirements that hold on this machine, in one order,
        whichever way the metadata writes them (a wheel's, or an editable
        install's egg-info with the rest of a marker in parentheses).
        """
        from unittest import mock
        import platform
        forms = [['autobahn[twisted]>=23.1; platform_machine != "armv7l" and extra == "ha"',
                  'autobahn[twisted]<25.11; platform_machine == "armv7l" and extra == "ha"',
                  'twisted[tls]; extra == "ha"', 'paho-mqtt; extra == "mqtt"'],
                 ['twisted[tls]; extra == "ha"',
                  'autobahn[twisted]>=23.1; (platform_machine != "armv7l") and extra == "ha"',
                  'autobahn[twisted]<25.11; (platform_machine == "armv7l") and extra == "ha"']]
        hints = set()
        for requires in forms:
            distribution = mock.Mock(requires=requires)
            with mock.patch("importlib.metadata.distribution", lambda name: distribution):
                hints.add(O.install_hint("ha").split(" install ", 1)[1])
        armv7 = platform.machine() == "armv7l"
        self.assertEqual(hints, {"'autobahn[twisted]<25.11' 'twisted[tls]'" if armv7
                                 else "'autobahn[twisted]>=23.1' 'twisted[tls]'"})
