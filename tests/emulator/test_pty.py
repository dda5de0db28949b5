"""
Tests for L{smartmeter_tx.emulator.pty}, L{smartmeter_tx.emulator.device} and
L{smartmeter_tx.emulator.cli}: the emulator on a real pty, opened through
Twisted's SerialPort in the real reactor at time scale 0 (real I/O, so kept
few and fast), plus the C{emulator:} spec and the command line.

Every emulator here starts its meter clock at L{tests.emuloop.START}
(L{start_pty_emulator} pins it unless the spec names a C{start}), never at the
wall clock.

L{start_pty_emulator} and L{open_serial} are meant for end-to-end tests of
the product's own protocol too::

    handle = start_pty_emulator(self, "emulator:dse?time-scale=0")
    proto = SKStackProtocol(...)
    port = yield open_serial(self, proto, handle.path)
"""

import io
import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.serialport import SerialPort
from twisted.protocols.basic import LineReceiver
from twisted.trial import unittest

from smartmeter_tx.emulator import cli
from smartmeter_tx.emulator.device import DEFAULT_ID, DEFAULT_PASSWORD, parse_spec, start_emulator
from smartmeter_tx.errors import ArgumentError
from smartmeter_tx.sk.values import Dialect, RxUdp
from smartmeter_tx.sk.parse import parse_line
from smartmeter_tx.sk.commands import sk_sendto
from smartmeter_tx.echonet.frame import Frame, get_request
from tests.emuloop import START, pinned

#: How long L{LineClient.wait_for} waits for one line before failing: only a
#: hang takes this long (an answer at time scale 0 comes within milliseconds).
WAIT = 30


def start_pty_emulator(testcase, spec="emulator:?time-scale=0", link=None):
    """
    Start an emulator on a pty in the real reactor, stopped when the test ends.
    Its meter clock starts at L{START} unless C{spec} names a C{start}.

    @return: the L{EmulatorHandle}.
    """
    handle = start_emulator(pinned(spec), reactor, link=link)
    testcase.addCleanup(handle.stop)
    return handle


def open_serial(testcase, protocol, path):
    """
    Open C{path} with SerialPort at 115200 baud; closed (and waited for) when
    the test ends.  C{protocol.connectionLost} must still run its base class.

    @return: the SerialPort.
    """
    lost = Deferred()
    original = protocol.connectionLost

    def connectionLost(reason):
        original(reason)
        if not lost.called:
            lost.callback(None)
    protocol.connectionLost = connectionLost
    port = SerialPort(protocol, path, reactor, baudrate=115200)

    def close():
        if not lost.called:
            port.loseConnection()
        return lost
    testcase.addCleanup(close)
    protocol.lost = lost
    return port


class LineClient(LineReceiver):
    """A tiny raw client: collects CRLF lines; L{wait_for} a line that starts with a prefix."""

    def __init__(self):
        self.lines = []
        self._waiting = []

    def lineReceived(self, line):
        self.lines.append(line)
        for prefix, d in list(self._waiting):
            if line.startswith(prefix):
                self._waiting.remove((prefix, d))
                d.callback(line)

    def wait_for(self, prefix: bytes) -> Deferred:
        for line in self.lines:
            if line.startswith(prefix):
                self.lines.remove(line)
                return _now(line)
        d = Deferred()
        d.addTimeout(WAIT, reactor, onTimeoutCancel=self._timedOut(prefix))
        self._waiting.append((prefix, d))
        return d

    def _timedOut(self, prefix):
        def timedOut(result, timeout):
            self._waiting[:] = [(p, d) for p, d in self._waiting if p != prefix]
            raise unittest.FailTest(f"no line starting with {prefix!r} within {timeout} s; "
                                 f"unclaimed lines: {self.lines!r}")
        return timedOut

    def command(self, line: bytes) -> None:
        self.sendLine(line)


def _now(value):
    d = Deferred()
    d.callback(value)
    return d


class PtyTests(unittest.TestCase):
    """The emulator through a real pty and SerialPort."""

    # Only catches a hang (each test takes well under a second): no timing assertion.
    timeout = 60

    @inlineCallbacks
    def test_standard(self):
        """A standard module on a pty answers SKVER with echo, EVER 1.2.10 and OK."""
        handle = start_pty_emulator(self)
        client = LineClient()
        open_serial(self, client, handle.path)
        client.command(b"SKVER")
        self.assertEqual((yield client.wait_for(b"SKVER")), b"SKVER")
        self.assertEqual((yield client.wait_for(b"EVER")), b"EVER 1.2.10")
        yield client.wait_for(b"OK")

    @inlineCallbacks
    def test_dseLinkJoinAndRead(self):
        """A DSE module behind a symlink: scan, join and a Get answered through the pty."""
        link = self.mktemp()
        handle = start_pty_emulator(self, "emulator:dse?time-scale=0&wopt=hex&echo=off", link)
        self.assertTrue(os.path.islink(link))
        self.assertEqual(os.readlink(handle.path), handle.device.slave_path)
        e = handle.emulator
        client = LineClient()
        open_serial(self, client, link)
        client.command(b"SKINFO")
        self.assertTrue((yield client.wait_for(b"EINFO")).endswith(b" 0"))
        client.command(b"SKSETPWD C " + handle.password.encode())
        client.command(b"SKSETRBID " + handle.id.encode())
        client.command(b"SKSCAN 2 FFFFFFFF 6 0")
        yield client.wait_for(b"EVENT 22")
        self.assertIn(b"  Side:0", client.lines)
        client.command(b"SKSREG S2 %02X" % e.channel)
        client.command(b"SKSREG S3 %04X" % e.pan_id)
        client.command(b"SKJOIN " + e.meter_ip.encode())
        yield client.wait_for(b"EVENT 25")
        client.transport.write(sk_sendto(Dialect.DSE, e.meter_ip,
                                         get_request(0x77, [0xE7]).encode()).to_bytes())
        line = yield client.wait_for(b"ERXUDP %s %s 0E1A" % (e.meter_ip.encode(), e.module_ip.encode()))
        rx = parse_line(line)
        self.assertIsInstance(rx, RxUdp)
        self.assertEqual(Frame.decode(rx.data).tid, 0x77)
        self.assertEqual(e.truth[-1].tid, 0x77)

    @inlineCallbacks
    def test_unplugReplug(self):
        """Unplug closes the client's port and removes the link; a fresh pty appears at the same path."""
        link = self.mktemp()
        handle = start_pty_emulator(
            self, "emulator:?time-scale=0&wopt=hex&echo=off&unplug-keeps-session=on", link)
        handle.emulator.expire_session()  # no-op without a session
        first = LineClient()
        open_serial(self, first, link)
        e = handle.emulator
        first.command(b"SKSETPWD C %s" % handle.password.encode())
        first.command(b"SKSETRBID %s" % handle.id.encode())
        first.command(b"SKSREG S2 %02X" % e.channel)
        first.command(b"SKSREG S3 %04X" % e.pan_id)
        first.command(b"SKJOIN " + e.meter_ip.encode())
        yield first.wait_for(b"EVENT 25")
        replugged = handle.unplug(0.2)
        self.assertFalse(os.path.lexists(link))
        yield first.lost
        path = yield replugged
        self.assertEqual(path, os.path.abspath(link))
        self.assertTrue(os.path.islink(link))
        self.assertEqual(os.readlink(link), handle.device.slave_path)
        second = LineClient()
        open_serial(self, second, link)
        # The module kept its session (knob): the first SKSENDTO is answered.
        second.transport.write(sk_sendto(Dialect.STANDARD, e.meter_ip,
                                         get_request(5, [0xE7]).encode()).to_bytes())
        yield second.wait_for(b"ERXUDP")

    @inlineCallbacks
    def test_unplugPowerCycles(self):
        """By default an unplug is a power cycle: echo back on, session gone."""
        handle = start_pty_emulator(self, "emulator:?time-scale=0&echo=on")
        handle.emulator.registers[0xFE] = 0
        yield handle.unplug(0.05)
        self.assertTrue(handle.emulator.echo)
        client = LineClient()
        open_serial(self, client, handle.path)
        client.command(b"SKVER")
        yield client.wait_for(b"SKVER")


class SpecTests(unittest.TestCase):
    """The emulator: device spec."""

    def test_defaults(self):
        """emulator: is a standard module with the default credentials."""
        config, link = parse_spec("emulator:")
        self.assertEqual((config.dialect, config.rbid, config.password, config.time_scale, link),
                         (Dialect.STANDARD, DEFAULT_ID, DEFAULT_PASSWORD, 1.0, None))
        self.assertEqual(parse_spec("emulator")[0].dialect, Dialect.STANDARD)

    def test_options(self):
        """Dialect and options after '?' set the knobs."""
        config, link = parse_spec("emulator:standard?loss=0.1&time-scale=0.01&echo=off&wopt=bin"
                                  "&seed=3&channel=3B&reauth_fail=0.5&link=/tmp/x")
        self.assertEqual((config.loss, config.time_scale, config.echo, config.wopt, config.seed,
                          config.channel, config.reauth_fail, link),
                         (0.1, 0.01, False, "bin", 3, 0x3B, 0.5, "/tmp/x"))
        self.assertEqual(parse_spec("emulator:dse")[0].dialect, Dialect.DSE)

    def test_errors(self):
        """Unknown options and bad values raise ArgumentError; secrets are not quoted."""
        for spec in ("emulator:?bogus=1", "emulator:?loss=2", "emulator:hal", "serial:/dev/x",
                     "emulator:?loss", "emulator:?time-scale=-1"):
            self.assertRaises(ArgumentError, parse_spec, spec)
        error = self.assertRaises(ArgumentError, parse_spec, "emulator:?password=has%20space")
        self.assertNotIn("has space", str(error))
        self.assertIn("loss", str(self.assertRaises(ArgumentError, parse_spec, "emulator:?bogus=1")))

    timeout = 60

    def test_pinnedStart(self):
        """Emulators started by these tests begin at START, not at the wall clock."""
        handle = start_pty_emulator(self)
        self.assertEqual(handle.emulator.meter.start, START)
        handle = start_pty_emulator(self, "emulator:?time-scale=0&start=2024-01-02T03:04:05")
        self.assertEqual(handle.emulator.meter.start.isoformat(), "2024-01-02T03:04:05")

    def test_meterKeepsJapanTime(self):
        """
        Whatever the host's time zone, the meter's clock starts at Japan's
        time (a meter keeps JST); meter-offset skews it; a start with an
        offset is turned into Japan time.
        """
        import datetime

        from smartmeter_tx.model import JST
        from tests.sktesting import host_zone

        for zone in ("UTC", "America/New_York", "Asia/Tokyo"):
            host_zone(self, zone)
            for spec, offset in (("emulator:?time-scale=0", 0),
                                 ("emulator:?time-scale=0&meter-offset=-600", -600)):
                handle = start_emulator(spec, reactor)
                self.addCleanup(handle.stop)
                japan = datetime.datetime.now(JST).replace(tzinfo=None)
                skew = (handle.emulator.meter.start - japan).total_seconds() - offset
                self.assertLess(abs(skew), 5, (zone, spec, handle.emulator.meter.start))
        handle = start_pty_emulator(self, "emulator:?time-scale=0&start=2024-01-02T03:04:05Z")
        self.assertEqual(handle.emulator.meter.start.isoformat(), "2024-01-02T12:04:05")

    def test_handleReprHidesCredentials(self):
        """The handle's repr names the dialect and path, never the credentials."""
        handle = start_pty_emulator(self, "emulator:dse?password=SECRETSECRET&time-scale=0")
        self.assertNotIn("SECRET", repr(handle))
        self.assertEqual(handle.password, "SECRETSECRET")
        self.assertTrue(os.path.exists(handle.path))

    def test_secondEmulatorOnALinkRefused(self):
        """
        A second emulator on a link in use is refused with a clear message;
        the first keeps its link; once it stops, the link is free again.
        """
        link = os.path.abspath(self.mktemp())
        first = start_pty_emulator(self, link=link)
        error = self.assertRaises(ArgumentError, start_emulator,
                                  pinned("emulator:?time-scale=0"), reactor, link)
        self.assertEqual(str(error), f"{link} is in use by another emulator; stop that one or "
                                     "choose another --link")
        self.assertEqual(os.readlink(link), first.device.slave_path)
        first.stop()
        self.assertFalse(os.path.lexists(link))
        again = start_pty_emulator(self, link=link)
        self.assertEqual(os.readlink(link), again.device.slave_path)

    def test_existingFileNotReplaced(self):
        """A link path that is a regular file is refused."""
        path = self.mktemp()
        open(path, "w").close()
        self.assertRaises(ArgumentError, start_emulator, pinned("emulator:?time-scale=0"),
                          reactor, path)


class CommandLineTests(unittest.TestCase):
    """smartmeter-emulator's argument handling (serving is tried by hand)."""

    def run_main(self, argv):
        err = io.StringIO()
        self.patch(cli.sys, "stderr", err)
        exc = self.assertRaises(SystemExit, cli.main, argv)
        return exc.code, err.getvalue()

    def test_badArguments(self):
        """A bad argument is one line on stderr and exit code 2."""
        for argv in (["--loss", "2"], ["--bogus"], ["--dialect", "x"], ["--password", "a b"]):
            code, err = self.run_main(argv)
            self.assertEqual(code, 2)
            self.assertEqual(err.count("\n"), 1, err)
            self.assertNotIn("Traceback", err)
        code, err = self.run_main(["--password", "a b"])
        self.assertNotIn("a b", err)

    def test_helpDocumentsDefaults(self):
        """--help names the default credentials and every knob."""
        text = cli.build_parser().format_help()
        for word in (DEFAULT_ID, DEFAULT_PASSWORD, "--time-scale", "--loss", "--seed", "--link",
                     "--truth-log", "--stale", "--tx-budget", "--unplug-after"):
            self.assertIn(word, text)
