"""
C{twist smartmeter --echonet-lan} read by real ECHONET Lite controllers,
over a real link: the service (on the emulator) in one network namespace,
the controller in another (L{tests.netns}), so that both bind UDP 3610 and
multicast to 224.0.23.0 crosses a veth as it crosses a home LAN.

 - pychonet, driven as Home Assistant's echonetlite integration drives it,
   finds the node and reads the meter's power, currents and energy counters;
 - npm's echonet-lite (echonetlite2mqtt's and Node-RED's library) finds it
   by its own multicast search and reads the same;
 - a flood of valid and malformed frames from three addresses leaves the
   service polling, its data log whole, the drops counted and the relays to
   the meter within their rate.

What the controllers decode must equal the reading in force on the
service's C{/latest}, read before and after (the HTTP socket is a Unix one
in the test's directory: reachable from the root namespace, which binds
nothing).  The client scripts are in C{tests/lan/}; the npm packages come
from C{python -m tests.lanclients install}.
"""

import json
import os
import socket
import sys
from http.client import HTTPConnection
from typing import Optional

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, threads
from twisted.trial.unittest import TestCase

from tests import lanclients, netns
from tests.cli.test_flood import data_log_records
from tests.cli.test_twist import twist_env
from tests.emuloop import pinned
from tests.mosquitto import wait_for

#: Seconds a wait may last before the test calls it a hang.
HANG = 60.0
#: Seconds a client may take (its own deadline is a little shorter).
CLIENT_WITHIN = 40.0
#: The fields of /latest the controllers read, and when they were read.
READING = ("power_w", "current_r_a", "current_t_a", "energy_normal_kwh", "energy_reverse_kwh")
STAMPS = ("time", "energy_time")
#: E1's codes: kWh per count, before the coefficient (D3).
UNITS = {0x00: 1, 0x01: 0.1, 0x02: 0.01, 0x03: 0.001, 0x04: 0.0001,
         0x0A: 10, 0x0B: 100, 0x0C: 1000, 0x0D: 10000}
#: How often a client is run again when a poll lands inside its read.
READ_TRIES = 3
#: The flood: from this many source addresses, frames a second each, for
#: seconds, then listening for late answers for FLOOD_GRACE seconds;
#: the service polls every FLOOD_INTERVAL seconds meanwhile.
SOURCES = 3
FLOOD_RATE, FLOOD_SECONDS, FLOOD_GRACE, FLOOD_INTERVAL = 10, 10, 3, 2
#: The flood's kinds of frame the node must drop (tests/lan/flood.py's KINDS).
MALFORMED = ("bad_ehd", "short", "opc_lies", "pdc_overrun")
#: Seconds between two relays to the meter for one source, at the least.
RELAY_EVERY = 3
#: The service's samples read here.
ANSWERED = "smartmeter_polls_answered_total"
LINES = "smartmeter_datalog_lines_total"
LOST = "smartmeter_datalog_lost_total"
DROPPED = "smartmeter_echonet_lan_dropped_total"
REQUESTS = "smartmeter_echonet_lan_requests_total"


class UnixHTTPConnection(HTTPConnection):
    """HTTP over the service's Unix socket (bench/echonet_lan.py uses it too)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class LanService:
    """
    C{twist smartmeter --echonet-lan} on the emulator inside namespace A of
    C{pair}, its files and log in C{directory}.
    """

    def __init__(self, pair: netns.Netns, directory: str, device: str,
                 interval: float = 60, extra: tuple = ()) -> None:
        self.pair = pair
        self.directory = directory
        self.data = os.path.join(directory, "data")
        # Named from the directory (twist's working one): the full path may
        # be longer than a Unix socket's name can be.
        self.socket = "http.sock"
        self._directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        self.log = os.path.join(directory, "twist.log")
        self.argv = [sys.executable, "-m", "twisted", "--log-format", "text", "smartmeter",
                     "--device", pinned(device), "--echonet-lan", pair.address("a"),
                     "--data-log", self.data, "--http", "unix:" + self.socket,
                     "--state-file", os.path.join(directory, "state.json"),
                     "--interval", str(interval), *extra]
        self.process = None

    def start(self) -> None:
        with open(self.log, "wb") as log:
            self.process = self.pair.spawn("a", self.argv, env=twist_env(), stdout=log,
                                           cwd=self.directory)

    def close(self) -> None:
        """Forget the directory (after the process has ended)."""
        if self._directory_fd is not None:
            os.close(self._directory_fd)
            self._directory_fd = None

    def get(self, path: str, timeout: float = 5.0) -> bytes:
        """GET C{path} over the socket, reached through the directory's descriptor."""
        socket_path = f"/proc/self/fd/{self._directory_fd}/{self.socket}"
        connection = UnixHTTPConnection(socket_path, timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.read()
        finally:
            connection.close()

    def latest(self) -> dict:
        """@return: /latest, or C{{}} while the service does not answer."""
        try:
            return json.loads(self.get("/latest"))
        except (OSError, ValueError):
            return {}

    def metrics(self) -> dict:
        """@return: C{{(sample name, labels as sorted tuple): value}} of /metrics."""
        text = self.get("/metrics").decode("utf-8")
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def exited(self) -> Optional[int]:
        return None if self.process is None else self.process.poll()

    def log_text(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()

    def logged_records(self) -> list:
        """@return: every line of the data log, decoded (a torn line raises)."""
        return data_log_records(self.data)


def scaled(count: int, coefficient: int, unit: int) -> float:
    """@return: an energy count in kWh, as the meter's D3 and E1 say (rounded off float noise)."""
    return round(count * coefficient * UNITS[unit], 6)


def signed(hex_text: str) -> int:
    return int.from_bytes(bytes.fromhex(hex_text), "big", signed=True)


class EchonetLanTests(TestCase):
    """Real controllers in namespace B read the service's node in namespace A."""

    timeout = 120  # only catches a hang

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)

    @defer.inlineCallbacks
    def startService(self, device: str, extra_b: int = 0, interval: float = 60,
                     extra: tuple = ()):
        """
        Make the namespaces, start the service in A and wait for its first reading.

        @return: a Deferred firing with the L{LanService}.
        """
        self.pair = netns.opened(self, extra_b)
        service = LanService(self.pair, self.directory, device, interval, extra)
        self.addCleanup(service.close)
        service.start()
        self.service = service
        yield wait_for(lambda: service.exited() is not None or "power_w" in service.latest(),
                       "the service's first reading", HANG, 0.1)
        if service.exited() is not None:
            self.fail(f"twist ended ({service.exited()}):\n{service.log_text()[-3000:]}")
        return service

    def stopCleanly(self, service: LanService) -> None:
        """twist ends on SIGTERM, by the signal, with no traceback in its log."""
        self.assertEqual(self.pair.stop(service.process), -15, service.log_text()[-3000:])
        text = service.log_text()
        self.assertIn("Main loop terminated", text)
        self.assertNotIn("Traceback", text)

    @defer.inlineCallbacks
    def client(self, name: str, argv: list, env: Optional[dict] = None):
        """
        Run a client in namespace B (in a thread: the reactor stays free).

        @return: a Deferred firing with its JSON report; the test fails with
            the client's reason and the service's log when it fails.
        """
        result = yield threads.deferToThread(self.pair.run, "b", argv, CLIENT_WITHIN, env)
        if result.returncode != 0:
            self.fail(f"{name} failed ({result.returncode}): {result.stderr.strip()[-3000:]}"
                      f"\n--- twist's log ---\n{self.service.log_text()[-3000:]}")
        return json.loads(result.stdout)

    @defer.inlineCallbacks
    def readInForce(self, name: str, argv: list, env: Optional[dict] = None):
        """
        Run a client between two reads of /latest that agree (again when a
        poll lands inside its read).

        @return: a Deferred firing with C{(the reading in force, the report)}.
        """
        for _ in range(READ_TRIES):
            before = self.service.latest()
            report = yield self.client(name, argv, env)
            after = self.service.latest()
            if all(before.get(k) == after.get(k) for k in READING + STAMPS):
                return before, report
        self.fail(f"a poll landed inside each of {READ_TRIES} reads by {name}")

    def assertReading(self, reading: dict, raw: dict, coefficient: int) -> None:
        """
        The raw EDTs (hex by EPC) say what the service's reading says: E7 in
        W, E8 R and T in 0.1 A, E0 and E3 in counts of E1 times D3 kWh.
        """
        self.assertEqual(len(raw["E7"]), 8)
        self.assertEqual(signed(raw["E7"]), reading["power_w"])
        self.assertEqual(len(raw["E8"]), 8)
        self.assertEqual(signed(raw["E8"][:4]) / 10, reading["current_r_a"])
        self.assertEqual(signed(raw["E8"][4:]) / 10, reading["current_t_a"])
        unit = int(raw["E1"], 16)
        for epc, field in (("E0", "energy_normal_kwh"), ("E3", "energy_reverse_kwh")):
            self.assertEqual(len(raw[epc]), 8)
            self.assertEqual(scaled(int(raw[epc], 16), coefficient, unit),
                             round(reading[field], 6), epc)
        self.assertIn(int(raw["D7"], 16), range(1, 9))

    @defer.inlineCallbacks
    def test_pychonetReadsTheMeter(self):
        """
        pychonet finds the node by multicast as HA's integration does, and
        decodes power, currents and both energy counters as the service read them.
        """
        netns.need(lanclients.pychonet_missing())
        service = yield self.startService("emulator:?time-scale=0.01")
        node = self.pair.address("a")
        argv = [sys.executable, os.path.join(lanclients.SCRIPTS, "pychonet_client.py"), node,
                "--local", self.pair.address("b"), "--multicast",
                "--timeout", str(CLIENT_WITHIN - 5)]
        reading, report = yield self.readInForce("pychonet", argv)
        self.assertIn(node, report["announced"])
        self.assertEqual(list(report["instances"]), ["028801"])
        self.assertLessEqual({"E7", "E8", "E0", "E3", "E1", "D7"},
                             set(report["instances"]["028801"]["get"]))
        self.assertRegex(report["uid"], "^[0-9a-f]{32}$")
        self.assertTrue(report["identification_answered"])
        decoded, raw = report["decoded"], report["raw"]
        self.assertEqual(decoded["E7"], reading["power_w"])
        self.assertEqual(decoded["E8"], {"r_phase_amperes": reading["current_r_a"],
                                         "t_phase_amperes": reading["current_t_a"]})
        unit = int(raw["E1"], 16)
        self.assertEqual(decoded["E1"], UNITS[unit])
        coefficient = decoded["D3"] if raw["D3"] is not None else 1
        for epc, field in (("E0", "energy_normal_kwh"), ("E3", "energy_reverse_kwh")):
            self.assertEqual(decoded[epc], int(raw[epc], 16))
            self.assertEqual(round(decoded[epc] * coefficient * decoded["E1"], 6),
                             round(reading[field], 6), epc)
        self.assertReading(reading, raw, coefficient)
        self.stopCleanly(service)

    @defer.inlineCallbacks
    def test_echonetLiteFindsAndReadsTheMeter(self):
        """
        npm's echonet-lite finds the node by its own multicast search and
        reads what the service read: here power flowing out (negative), energy
        sold, and a D3 coefficient.
        """
        path, why = lanclients.node_modules()
        netns.need(why)
        service = yield self.startService(
            "emulator:?time-scale=0.01&solar=5000&coefficient=10&unit=01")
        node = self.pair.address("a")
        argv = ["node", os.path.join(lanclients.SCRIPTS, "echonet_lite_client.js"),
                "--local", self.pair.address("b"), "--node", node,
                "--timeout", str(CLIENT_WITHIN - 5)]
        reading, report = yield self.readInForce("echonet-lite", argv,
                                                 dict(os.environ, NODE_PATH=path))
        self.assertEqual(report["node"], node)
        found = report["responders"][node]
        self.assertEqual(found["d6"], "01028801")
        self.assertRegex(found["83"], "^fe[0-9a-f]{32}$")
        self.assertEqual(set(report["esv"].values()), {"72"})
        self.assertEqual(report["edt"]["D3"], "0000000a")
        self.assertLess(reading["power_w"], 0)
        self.assertGreater(reading["energy_reverse_kwh"], 0)
        self.assertReading(reading, report["edt"], 10)
        # The library's own view of the node holds the same.
        self.assertEqual(report["facilities"][node]["028801"]["e7"], report["edt"]["E7"])
        self.assertEqual(report["errors"], [])
        self.stopCleanly(service)

    @defer.inlineCallbacks
    def test_floodFromThreeSources(self):
        """
        A few hundred frames in ~10 s from three addresses, valid and not:
        the service polls on, its data log stays whole, what it drops it
        counts, and it relays to the meter at most once every 3 s per source.
        """
        # Polls every 2 s, to count them over the flood; no backfill, so that
        # the hour's frames beyond the polls are the relays' alone.
        service = yield self.startService("emulator:?time-scale=0.01", extra_b=SOURCES,
                                          interval=FLOOD_INTERVAL,
                                          extra=("--backfill-days", "0"))
        before = service.metrics()
        argv = [sys.executable, os.path.join(lanclients.SCRIPTS, "flood.py"),
                self.pair.address("a"), "--rate", str(FLOOD_RATE),
                "--seconds", str(FLOOD_SECONDS), "--grace", str(FLOOD_GRACE)]
        for source in self.pair.extra:
            argv += ["--source", source]
        report = yield self.client("the flood", argv)
        after = service.metrics()
        self.assertPolledOn(before, after)
        self.assertFloodAnswered(report["sources"])
        self.assertDropsCounted(report["sources"], before, after)
        self.assertRelaysLimited(report["sources"], before, after)
        records = service.logged_records()  # a torn line raises
        self.assertGreaterEqual(len(records), after[(LINES, ())])
        self.assertEqual(after[(LOST, ())], 0)
        self.stopCleanly(service)

    def assertPolledOn(self, before: dict, after: dict) -> None:
        """The polls answered while the flood went on kept to their schedule."""
        polls = after[(ANSWERED, ())] - before[(ANSWERED, ())]
        self.assertGreaterEqual(polls, FLOOD_SECONDS // FLOOD_INTERVAL - 1)

    def assertFloodAnswered(self, sources: dict) -> None:
        """
        Every valid Get of E7 answered from the reading; nothing malformed
        or for an unknown object answered; a SetC of E5 refused, never done.
        """
        for source, seen in sources.items():
            answers = seen["answers"]
            self.assertEqual(answers.get("get_e7"), {"72": seen["sent"]["get_e7"]}, source)
            for kind in MALFORMED + ("unknown_object",):
                self.assertNotIn(kind, answers, source)
            self.assertLessEqual(set(answers.get("setc_e5", {})), {"51"}, source)
            self.assertEqual(seen["strays"], 0, source)

    def assertDropsCounted(self, sources: dict, before: dict, after: dict) -> None:
        """/metrics counts at least every frame the node should have dropped."""
        bad = sum(seen["sent"].get(kind, 0) for seen in sources.values()
                  for kind in MALFORMED + ("unknown_object",))
        dropped = sum(after[key] - before.get(key, 0) for key in after if key[0] == DROPPED)
        self.assertGreaterEqual(dropped, bad)

    def assertRelaysLimited(self, sources: dict, before: dict, after: dict) -> None:
        """
        Each source had its history relayed at least once (the relay works),
        and the relays begun stay within one per source every 3 s.
        """
        for source, seen in sources.items():
            self.assertGreaterEqual(len(seen["relayed"]), 1, source)
            self.assertIn("52", seen["answers"]["get_e2"], source)  # some refused
        begun = sum(after[key] - before.get(key, 0) for key in after
                    if key[0] == REQUESTS and ("outcome", "relay") in key[1])
        window = FLOOD_SECONDS + FLOOD_GRACE
        self.assertLessEqual(begun, len(sources) * (window // RELAY_EVERY + 1))
