"""
Tests for C{mackerel-plugin-smartmeter --service URL}
(L{smartmeter_tx.cli.plugin.run}): the plugin reads the latest reading from a real
C{/latest} served on 127.0.0.1, never touching a serial port.
"""

import functools
from decimal import Decimal
import io
from io import StringIO

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from smartmeter_tx.cli import common, plugin
from smartmeter_tx.model import NO_PHASE, Reading
from smartmeter_tx.session.linkstate import LinkState
from smartmeter_tx.service.store import LatestStore
from smartmeter_tx.service.view import ServiceView
from smartmeter_tx.outputs.web import make_root
from tests.sktesting import refusing_port, serve


def coroutine_test(f):
    """Run an C{async def} test method as a Deferred-returning trial test."""
    @functools.wraps(f)
    def wrapper(self):
        return defer.Deferred.fromCoroutine(f(self))
    return wrapper


class _ServiceHarness(TestCase):
    """A real /latest on 127.0.0.1 over a real store and link state; no tests of its own."""

    def setUp(self):
        self.view = ServiceView(LatestStore(), LinkState(), Clock())
        self.url = serve(self, make_root(self.view, reactor.seconds))
        # Diagnostics written straight to sys.stderr are captured here too.
        self.sys_stderr = StringIO()
        self.patch(plugin.sys, "stderr", self.sys_stderr)

    def fresh(self, age=3.0, current_t_a=Decimal("4.5")):
        """
        Give the store a reading taken C{age} seconds ago by the reactor's
        clock, and an energy reading 200 seconds older.

        @return: the two times as the plugin prints them.
        """
        now = reactor.seconds()
        self.view.store.add(Reading(energy_normal_kwh=Decimal("12345.6"),
                                      energy_reverse_kwh=Decimal("7.8")), now - age - 200)
        self.view.store.add(Reading(power_w=1234, current_r_a=Decimal("12.3"),
                                      current_t_a=current_t_a), now - age)
        return int(round(now - age, 3)), int(round(now - age - 200, 3))

    async def invoke(self, *argv):
        """
        Run the plugin with C{argv}.

        @return: C{(exit code, stdout text, stderr text)}; stderr holds both the
            given stream and anything written to sys.stderr.
        """
        out, err = StringIO(), StringIO()
        code = await plugin.run(reactor, list(argv), environ={}, stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue() + self.sys_stderr.getvalue()


class ServiceModeTests(_ServiceHarness):
    @coroutine_test
    async def test_printsLatestWithItsOwnTime(self):
        """--service prints the service's reading stamped with the reading's own time."""
        stamp, _ = self.fresh(age=30)
        code, out, err = await self.invoke("--service", self.url)
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out, f"smartmeter.power.value\t1234\t{stamp}\n"
                              f"smartmeter.current.r\t12.3\t{stamp}\n"
                              f"smartmeter.current.t\t4.5\t{stamp}\n")

    @coroutine_test
    async def test_energy(self):
        """--service --energy adds the energy lines stamped with the time energy was read."""
        stamp, energy_stamp = self.fresh()
        code, out, err = await self.invoke("--service", self.url + "/latest", "--energy")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out.splitlines(), [
            f"smartmeter.power.value\t1234\t{stamp}",
            f"smartmeter.current.r\t12.3\t{stamp}",
            f"smartmeter.current.t\t4.5\t{stamp}",
            f"smartmeter.energy.normal\t12345.6\t{energy_stamp}",
            f"smartmeter.energy.reverse\t7.8\t{energy_stamp}",
        ])

    @coroutine_test
    async def test_absentLeftOut(self):
        """--service leaves out a value the meter marked absent instead of printing 0."""
        stamp, _ = self.fresh(current_t_a=NO_PHASE)
        code, out, err = await self.invoke("--service", self.url)
        self.assertEqual(code, 0)
        self.assertEqual(out, f"smartmeter.power.value\t1234\t{stamp}\n"
                              f"smartmeter.current.r\t12.3\t{stamp}\n")

    @coroutine_test
    async def test_tooOld(self):
        """--service prints nothing and exits 7 with one stderr line when the reading is too old."""
        self.fresh(age=1000)
        code, out, err = await self.invoke("--service", self.url)
        self.assertEqual((code, out), (7, ""))
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn("old", err)

    @coroutine_test
    async def test_maxAge(self):
        """--max-age sets the limit: a 200 s old reading passes with 300 and fails with 100."""
        stamp, _ = self.fresh(age=200)
        code, out, err = await self.invoke("--service", self.url, "--max-age", "300")
        self.assertEqual(code, 0)
        self.assertEqual(out.splitlines()[0], f"smartmeter.power.value\t1234\t{stamp}")
        code, out, err = await self.invoke("--service", self.url, "--max-age", "100")
        self.assertEqual((code, out), (7, ""))
        self.assertEqual(len(err.splitlines()), 1, err)

    @coroutine_test
    async def test_noReadingYet(self):
        """--service prints nothing and exits non-zero while the service has no reading (503)."""
        code, out, err = await self.invoke("--service", self.url)
        self.assertEqual(out, "")
        self.assertEqual(code, common.EXIT_NO_READING)
        self.assertEqual(err, f"mackerel-plugin-smartmeter: the service has no reading yet "
                              f"(link unknown) ({self.url}/latest)\n")
        self.view.state.port_lost()
        code, out, err = await self.invoke("--service", self.url)
        self.assertEqual(err, f"mackerel-plugin-smartmeter: the service has no reading yet "
                              f"(link no_module) ({self.url}/latest)\n")

    @coroutine_test
    async def test_serviceDown(self):
        """--service against a closed port exits 3 with one stderr line and no traceback."""
        number = refusing_port(self)
        code, out, err = await self.invoke("--service", f"http://127.0.0.1:{number}")
        self.assertEqual((code, out), (3, ""))
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn(f"127.0.0.1:{number}", err)
        self.assertNotIn("Traceback", err)

    @coroutine_test
    async def test_singleDash(self):
        """The Go plugin's single-dash spelling -service works."""
        stamp, _ = self.fresh()
        code, out, err = await self.invoke("-service", self.url, "-metric-key-prefix", "home")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out.splitlines()[0], f"home.power.value\t1234\t{stamp}")

    @coroutine_test
    async def test_metricKeyPrefix(self):
        """--metric-key-prefix applies to every line printed from the service."""
        stamp, energy_stamp = self.fresh()
        code, out, err = await self.invoke("--service", self.url, "--metric-key-prefix", "house.a",
                                        "--energy")
        self.assertEqual(code, 0)
        self.assertEqual([line.split("\t")[0] for line in out.splitlines()], [
            "house.a.power.value", "house.a.current.r", "house.a.current.t",
            "house.a.energy.normal", "house.a.energy.reverse"])

    @coroutine_test
    async def test_diagnosticsToGivenStderr(self):
        """run() writes its one-line diagnostic to the stderr stream it was given."""
        self.fresh(age=1000)
        out, err = StringIO(), StringIO()
        code = await plugin.run(reactor, ["--service", self.url], environ={}, stdout=out,
                                stderr=err)
        self.assertEqual(code, 7)
        self.assertEqual(len(err.getvalue().splitlines()), 1,
                         "given stderr: %r; sys.stderr: %r"
                         % (err.getvalue(), self.sys_stderr.getvalue()))


class BlockingServiceTests(SynchronousTestCase):
    """
    The command line's --service path (from_service_blocking): one stdlib GET,
    no reactor, against a canned /latest served from a thread.
    """

    def serve(self, status, body):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(body)
                seen.append(self.path)

            def log_message(self, *args):
                pass

        seen = []
        server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.handle_request)
        thread.start()
        self.addCleanup(server.server_close)
        self.addCleanup(thread.join, 5)
        return f"http://127.0.0.1:{server.server_address[1]}", seen

    def invoke(self, *argv):
        args = plugin.parse_args(list(argv))
        out, err = io.StringIO(), io.StringIO()
        code = plugin.from_service_blocking(args, args.prefix, out, err)
        return code, out.getvalue(), err.getvalue()

    def test_printsReading(self):
        """A fresh reading prints with its own timestamp; energy with energy_time."""
        import json
        import time
        now = time.time()
        body = json.dumps({"time": now - 3, "power_w": 296, "current_r_a": 2.3,
                           "current_t_a": None, "energy_normal_kwh": 15756.31,
                           "energy_reverse_kwh": 0, "energy_time": now - 100}).encode()
        url, seen = self.serve(200, body)
        code, out, err = self.invoke("-service", url, "--energy")
        self.assertEqual(code, 0, err)
        stamp, estamp = int(now - 3), int(now - 100)
        self.assertEqual(out.splitlines(), [
            f"smartmeter.power.value\t296\t{stamp}",
            f"smartmeter.current.r\t2.3\t{stamp}",
            f"smartmeter.energy.normal\t15756.31\t{estamp}",
            f"smartmeter.energy.reverse\t0\t{estamp}",
        ])
        self.assertEqual(seen, ["/latest"])

    def test_saysWhereFrom(self):
        """With --verbosity 2 one info line says the reading came from the service."""
        import json
        import time
        body = json.dumps({"time": time.time() - 3, "power_w": 296}).encode()
        url, _ = self.serve(200, body)
        code, out, err = self.invoke("--service", url, "--verbosity", "2")
        self.assertEqual((code, err), (0, f"[info] read from the service at {url}/latest "
                                          "over HTTP, not from the module\n"))
        url, _ = self.serve(200, body)
        self.assertEqual(self.invoke("--service", url)[2], "")

    def test_staleAndMissing(self):
        """A reading older than --max-age, or none yet, prints nothing and exits 7."""
        import json
        import time
        url, _ = self.serve(200, json.dumps({"time": time.time() - 500, "power_w": 1}).encode())
        code, out, err = self.invoke("--service", url, "--max-age", "120")
        self.assertEqual((code, out), (common.EXIT_NO_READING, ""))
        self.assertIn("old", err)
        url, _ = self.serve(503, b'{"error": "no reading yet"}')
        code, out, err = self.invoke("--service", url)
        self.assertEqual((code, out), (common.EXIT_NO_READING, ""))
        self.assertEqual(len(err.strip().splitlines()), 1)

    def test_noReadingWithCause(self):
        """The service's cause (its joins refused) is in the one line, before the link."""
        import json
        refused = ("the meter refused authentication (EVENT 24): check the B-route ID and "
                   "password")
        url, _ = self.serve(503, json.dumps({"error": "no reading yet", "cause": refused,
                                             "link": "down", "held": None}).encode())
        code, out, err = self.invoke("--service", url)
        self.assertEqual((code, out, err), (
            common.EXIT_NO_READING, "", f"mackerel-plugin-smartmeter: the service has no "
                                        f"reading yet: {refused} (link down) ({url}/latest)\n"))

    def test_answerTooDeep(self):
        """
        JSON nested past Python's recursion limit (json.loads raises
        RecursionError, not ValueError) is one line and exit 7, no traceback.
        """
        url, _ = self.serve(200, b"[" * 100000)
        code, out, err = self.invoke("--service", url)
        self.assertEqual((code, out), (common.EXIT_NO_READING, ""))
        self.assertEqual(err.strip().splitlines(), [err.strip()])
        self.assertIn("did not answer with JSON", err)

    def test_unreachable(self):
        """A service that is not running gives one line and exit 3."""
        port = refusing_port(self)
        code, out, err = self.invoke("--service", f"http://127.0.0.1:{port}")
        self.assertEqual((code, out), (common.EXIT_DEVICE, ""))
        self.assertEqual(err, f"mackerel-plugin-smartmeter: cannot reach the service at "
                              f"http://127.0.0.1:{port}/latest: Connection refused; is twist "
                              "smartmeter running, with this --http?\n")


class PortInUseTests(_ServiceHarness):
    """
    Two programs on one dongle: the port is locked for the program that has
    it; the one-shot plugin that finds it held reads the service instead.
    """

    timeout = 60  # only catches a hang

    def setUp(self):
        super().setUp()
        import os

        from smartmeter_tx.emulator.device import start_emulator
        from tests.emuloop import pinned
        directory = self.mktemp()
        os.makedirs(directory)
        self.handle = start_emulator(pinned("emulator:?time-scale=0.01"), reactor,
                                     link=os.path.join(directory, "wisun"))
        self.addCleanup(self.handle.stop)
        self.holder = self.hold()

    def hold(self):
        """Open the emulator's port as another program would; closed at cleanup."""
        from twisted.internet.protocol import Protocol

        from smartmeter_tx.cli import options as O
        holder = Protocol()
        lost = defer.Deferred()
        holder.connectionLost = lambda reason: lost.callback(None)
        O.open_serial(holder, self.handle.path, reactor)

        def close():
            if holder.transport.connected:
                holder.transport.loseConnection()
                return lost
        self.addCleanup(close)
        holder.lost = lost
        return holder

    def test_secondOpenIsBusy(self):
        """A second open of a held port fails with DeviceBusy naming the path."""
        from smartmeter_tx.cli import options as O
        from twisted.internet.protocol import Protocol
        e = self.assertRaises(O.DeviceBusy, O.open_serial, Protocol(), self.handle.path, reactor)
        self.assertEqual(str(e), f"{self.handle.path} is in use by another program")

    @coroutine_test
    async def test_releasedOnClose(self):
        """Once the holder closes the port, the next program opens it."""
        self.holder.transport.loseConnection()
        await self.holder.lost
        self.hold()

    @coroutine_test
    async def test_pluginReadsTheService(self):
        """
        The plugin that finds the port held by the service reading that very
        device prints the service's reading, as --service does.
        """
        self.view.device = self.handle.path
        self.patch(common, "DEFAULT_SERVICE", self.url)
        stamp, _ = self.fresh(age=5)
        code, out, err = await self.invoke("--device", self.handle.path,
                                           "--state-file", self.mktemp())
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out.splitlines()[0], f"smartmeter.power.value\t1234\t{stamp}")

    @coroutine_test
    async def test_serviceOfAnotherDongle(self):
        """
        A service that reads another device is no stand-in: the plugin says
        the port is in use (two dongles, two services, never the wrong meter).
        """
        self.view.device = "/dev/ttyUSB-other"
        self.patch(common, "DEFAULT_SERVICE", self.url)
        self.fresh(age=5)
        code, out, err = await self.invoke("--device", self.handle.path,
                                           "--state-file", self.mktemp())
        self.assertEqual((code, out), (common.EXIT_DEVICE, ""))
        self.assertIn("is in use by another program", err)

    @coroutine_test
    async def test_pluginSaysInUse(self):
        """Without a service to read, the plugin says in one line who to blame, exit 3."""
        self.patch(common, "DEFAULT_SERVICE", f"http://127.0.0.1:{refusing_port(self)}")
        code, out, err = await self.invoke("--device", self.handle.path,
                                           "--state-file", self.mktemp())
        self.assertEqual((code, out), (common.EXIT_DEVICE, ""))
        self.assertEqual(err, f"mackerel-plugin-smartmeter: {self.handle.path} is in use by "
                              "another program (is twist smartmeter running? use --service "
                              "URL)\n")


    async def history(self, *argv):
        from smartmeter_tx.cli import history
        from smartmeter_tx.emulator.device import DEFAULT_ID, DEFAULT_PASSWORD
        out, err = io.StringIO(), io.StringIO()
        code = await history.run(reactor, list(argv), environ={
            "SMARTMETER_ID": DEFAULT_ID, "SMARTMETER_PASSWORD": DEFAULT_PASSWORD},
            stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    @coroutine_test
    async def test_historySuggestsTheService(self):
        """
        smartmeter-history on a port that the local service reads says, in
        one line, to ask the service with --service and its URL; without
        such a service, the general hint.
        """
        self.view.device = self.handle.path
        self.patch(common, "DEFAULT_SERVICE", self.url)
        code, out, err = await self.history("--device", self.handle.path,
                                            "--state-file", self.mktemp())
        self.assertEqual((code, out), (common.EXIT_DEVICE, ""))
        self.assertEqual(err, f"smartmeter-history: {self.handle.path} is in use by another "
                              f"program: twist smartmeter reads it; ask it instead with "
                              f"--service {self.url}\n")
        self.patch(common, "DEFAULT_SERVICE", f"http://127.0.0.1:{refusing_port(self)}")
        code, out, err = await self.history("--device", self.handle.path,
                                            "--state-file", self.mktemp())
        self.assertEqual(err, f"smartmeter-history: {self.handle.path} is in use by another "
                              "program (is twist smartmeter running? use --service URL)\n")


class ServiceURLTests(SynchronousTestCase):
    def test_malformedURLs(self):
        """A malformed --service URL is a one-line usage error, not a traceback."""
        for url in ("http://localhost:abc", "http://[::1", "http://127.0.0.1:99999", "ftp://x",
                    "127.0.0.1:9580", "http://"):
            out, err = io.StringIO(), io.StringIO()
            args = plugin.parse_args(["--service", url])
            code = plugin.from_service_blocking(args, "smartmeter", out, err)
            self.assertEqual((code, out.getvalue()), (common.EXIT_USAGE, ""), url)
            self.assertEqual(len(err.getvalue().splitlines()), 1, url)
            self.assertIn("--service must be an http:// URL", err.getvalue())


class SameDeviceTests(SynchronousTestCase):
    """Whether the service on the default port reads the device we were given."""

    def test_sameDevice(self):
        """The path in /latest matches, symlinks resolved."""
        import json
        import os
        path = os.path.abspath(self.mktemp())
        open(path, "w").close()
        link = self.mktemp()
        os.symlink(path, link)
        body = json.dumps({"device": path}).encode()
        self.assertTrue(common.same_device(body, path))
        self.assertTrue(common.same_device(body, link))
        self.assertFalse(common.same_device(body, path + "-other"))

    def test_unreadableAnswer(self):
        """Anything but an object with a string device is not the same device."""
        for body in (b"<html>", b"[1]", b'{"device": 3}', b"[" * 100000, b"\xff"):
            self.assertFalse(common.same_device(body, "/dev/ttyUSB0"), body[:10])


class LogTests(SynchronousTestCase):
    """The one-shot commands' log lines on stderr."""

    def test_noReactorEndLine(self):
        """
        At --verbosity 2 our info lines are written, the reactor's
        "Main loop terminated." at the end of every run is not.
        """
        from twisted.logger import Logger, LogPublisher
        stream = io.StringIO()
        publisher = LogPublisher(common.log_observer(2, stream))
        Logger(namespace="twisted.internet.base", observer=publisher).info(
            "Main loop terminated.")
        Logger(namespace="smartmeter_tx.session", observer=publisher).info(
            "no session in the module; authenticating")
        Logger(namespace="smartmeter_tx.session", observer=publisher).debug("hidden")
        self.assertEqual(stream.getvalue(),
                         "[info] no session in the module; authenticating\n")
