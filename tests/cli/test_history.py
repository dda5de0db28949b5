"""
Tests for C{smartmeter-history} (L{smartmeter_tx.cli.history}): the real command
logic against the emulator on a pty (compressed time) and against a running
service's C{/history}.
"""

import csv
import datetime
import io
import json
import os
from decimal import Decimal

from twisted.internet import defer, reactor
from twisted.trial import unittest

from smartmeter_tx.cli import history
from smartmeter_tx.echonet import meter as M
from smartmeter_tx import model
from smartmeter_tx.emulator.device import DEFAULT_ID, DEFAULT_PASSWORD, start_emulator
from tests.emuloop import START, expected_slot_starts, pinned


class _Base:
    timeout = 60  # only catches a hang

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.env = {"SMARTMETER_ID": DEFAULT_ID, "SMARTMETER_PASSWORD": DEFAULT_PASSWORD,
                    "MACKEREL_PLUGIN_WORKDIR": os.path.abspath(self.dir)}

    def emulator(self, options="time-scale=0.01"):
        handle = start_emulator(pinned(f"emulator:?{options}"), reactor,
                                link=os.path.join(self.dir, "wisun"))
        self.addCleanup(handle.stop)
        return handle

    async def _invoke(self, argv):
        out, err = io.StringIO(), io.StringIO()
        code = await history.run(reactor, argv, environ=self.env, stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    def run_history(self, *argv):
        return defer.Deferred.fromCoroutine(self._invoke(list(argv)))


class MeterTests(_Base, unittest.TestCase):
    @defer.inlineCallbacks
    def test_csvDefault(self):
        """
        The default: yesterday and today up to the last complete slot, as CSV
        with a header row, oldest first, each energy exactly what the meter
        counted in the slot.
        """
        handle = self.emulator()
        code, out, err = yield self.run_history("--device", handle.path, "--state-file",
                                                os.path.join(self.dir, "state.json"))
        self.assertEqual((code, err), (0, ""))
        rows = list(csv.DictReader(io.StringIO(out)))
        self.assertEqual(tuple(rows[0].keys()), history.COLUMNS)
        self.assertEqual([r["slot"] for r in rows], expected_slot_starts(START, 1))
        meter = handle.emulator.meter
        unit = M.UNITS[handle.emulator.config.unit]
        for r in rows:
            start = datetime.datetime.fromisoformat(r["slot"]).replace(tzinfo=None)
            (n0, v0), (n1, v1) = meter.slot_truth(start), meter.slot_truth(start + model.SLOT)
            modulus = 10 ** meter.digits
            self.assertEqual(Decimal(r["energy_normal_kwh"]), (n1 - n0) % modulus * unit, r)
            self.assertEqual(Decimal(r["energy_reverse_kwh"]), (v1 - v0) % modulus * unit, r)
            self.assertEqual(Decimal(r["cumulative_normal_kwh"]), n0 * unit, r)

    @defer.inlineCallbacks
    def test_jsonlSeveralDays(self):
        """--days 3 --format jsonl: the data log's history records, one a line, oldest first."""
        handle = self.emulator()
        code, out, err = yield self.run_history("--device", handle.path, "--days", "3",
                                                "--format", "jsonl")
        self.assertEqual((code, err), (0, ""))
        records = [json.loads(line) for line in out.splitlines()]
        self.assertEqual([r["slot"] for r in records], expected_slot_starts(START, 3))
        self.assertEqual({r["kind"] for r in records}, {"history"})
        self.assertEqual(set(records[0]), {"kind", "slot", "source"} | set(history.COLUMNS))

    @defer.inlineCallbacks
    def test_progressOnATerminal(self):
        """On a terminal, a multi-day read shows its progress on stderr, then a newline."""
        class Terminal(io.StringIO):
            def isatty(self):
                return True
        handle = self.emulator()
        out, err = io.StringIO(), Terminal()
        code = yield defer.Deferred.fromCoroutine(history.run(
            reactor, ["--device", handle.path, "--days", "2"], environ=self.env, stdout=out,
            stderr=err))
        self.assertEqual(code, 0)
        total = len(expected_slot_starts(START, 2))
        self.assertIn(f"\rsmartmeter-history: {total} of {total} slots read", err.getvalue())
        self.assertTrue(err.getvalue().endswith("\n"))
        self.assertEqual(len(out.getvalue().splitlines()), total + 1)

    @defer.inlineCallbacks
    def test_badFlags(self):
        """--days outside 1-45 or an unknown format: one line, exit 2, nothing on stdout."""
        for argv in (["--days", "0"], ["--days", "46"], ["--days", "x"], ["--format", "xml"],
                     []):
            code, out, err = yield self.run_history(*argv)
            self.assertEqual((code, out), (2, ""), argv)
            self.assertEqual(len(err.splitlines()), 1, (argv, err))
            self.assertTrue(err.startswith("smartmeter-history: "), err)


class ServiceTests(_Base, unittest.TestCase):
    def serve(self, records):
        """A service on loopback whose data log holds C{records}; @return: its URL."""
        from twisted.internet.task import Clock

        from smartmeter_tx.service.backfill import Backfill
        from smartmeter_tx.outputs.web import QuietSite, make_root
        from tests.outputs.test_web import service_view

        view = service_view(Clock(), Backfill(7, Clock(), lambda r, w: None, lambda: 0,
                                            known=records))
        port = reactor.listenTCP(0, QuietSite(make_root(view, reactor.seconds)),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    @defer.inlineCallbacks
    def test_fromService(self):
        """--service prints the slots the service logged, in the same format."""
        now = datetime.datetime.now(model.JST).replace(second=0, microsecond=0)
        start = (now - datetime.timedelta(hours=2)).replace(minute=0)
        records = [model.HistorySlot(start + k * model.SLOT, Decimal("0.25"), Decimal(0),
                                     Decimal("100") + k, Decimal(0), "EC").to_record()
                   for k in range(3)]
        url = self.serve(records)
        code, out, err = yield self.run_history("--service", url, "--format", "jsonl")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual([json.loads(line) for line in out.splitlines()], records)

    @defer.inlineCallbacks
    def test_fromServiceDays(self):
        """
        --days N over --service asks for N days before today: slots logged
        three days ago are printed with --days 3 and left out with --days 1.
        """
        today = datetime.datetime.now(model.JST).replace(hour=0, minute=0, second=0,
                                                          microsecond=0)
        old = today - datetime.timedelta(days=3)
        recent = today - datetime.timedelta(hours=12)
        records = [model.HistorySlot(start, Decimal("0.25"), Decimal(0), Decimal("100"),
                                     Decimal(0), "EC").to_record() for start in (old, recent)]
        url = self.serve(records)
        code, out, err = yield self.run_history("--service", url, "--format", "jsonl",
                                                "--days", "3")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual([json.loads(line) for line in out.splitlines()], records)
        code, out, err = yield self.run_history("--service", url, "--format", "jsonl",
                                                "--days", "1")
        self.assertEqual([json.loads(line) for line in out.splitlines()], records[1:])


class HomeAssistantTests(_Base, unittest.TestCase):
    """smartmeter-history --ha-url against the strict fake of HA, on loopback."""

    TOKEN = "ha-admin-token-abcdef"

    def setUp(self):
        super().setUp()
        from tests.hafake import FakeHomeAssistant
        self.ha = FakeHomeAssistant({self.TOKEN: True})
        port = self.ha.listen(reactor)
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}"
        self.token_file = os.path.join(self.dir, "ha-token")
        with open(self.token_file, "w") as f:
            f.write(self.TOKEN + "\n")

    def truth(self, handle, start):
        """The meter's own energy in the hour from C{start} (naive JST), in kWh."""
        meter = handle.emulator.meter
        unit = M.UNITS[handle.emulator.config.unit]
        (n0, _), (n1, _) = meter.slot_truth(start), meter.slot_truth(
            start + datetime.timedelta(hours=1))
        return (n1 - n0) % 10 ** meter.digits * unit

    @defer.inlineCallbacks
    def test_importFromTheMeter(self):
        """
        One line on stdout; HA's hours are the meter's truth hour by hour
        (each row's change its hour's energy); a second run changes nothing;
        the token appears nowhere.
        """
        from tests.hafake import TIME_ZONE
        handle = self.emulator()
        state = os.path.join(self.dir, "state.json")
        argv = ("--device", handle.path, "--state-file", state, "--days", "2", "--ha-url",
                self.url, "--ha-token-file", self.token_file)
        code, out, err = yield self.run_history(*argv)
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(len(out.splitlines()), 1, out)
        mac = handle.emulator.meter_mac.lower()
        sid = f"smartmeter_tx:{mac}_energy_import"
        self.assertTrue(out.startswith("imported "), out)
        rows = self.ha.sums(sid)
        self.assertIn(f"imported {len(rows)} hours into {sid}", out)
        starts = [s for s in expected_slot_starts(START, 2) if s.endswith(":00:00+09:00")]
        complete = [s for s in starts if s.replace(":00:00+", ":30:00+") in
                    expected_slot_starts(START, 2)]
        self.assertEqual([s.isoformat() for s, _ in rows], complete)
        previous = 0.0
        for start, total in rows:
            expected = self.truth(handle, start.astimezone(TIME_ZONE).replace(tzinfo=None))
            self.assertAlmostEqual(total - previous, float(expected), places=6)
            previous = total
        before = {k: dict(v) for k, v in self.ha.rows.items()}
        code, out2, err = yield self.run_history(*argv)
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(self.ha.rows, before)
        commands = [m for m in self.ha.received if m.get("type") != "auth"]
        for text in (out, out2, err, repr(commands)):
            self.assertNotIn(self.TOKEN, text)

    @defer.inlineCallbacks
    def test_outageHoursAbsent(self):
        """
        Hours the meter has no record for are absent, never zero, and the
        hour after the gap changes the sum by its own energy only.
        """
        from tests.hafake import TIME_ZONE
        handle = self.emulator("time-scale=0.01&outage=2024-05-31T10:00/2024-05-31T13:30")
        code, out, err = yield self.run_history(
            "--device", handle.path, "--days", "1", "--ha-url", self.url, "--ha-token-file",
            self.token_file)
        self.assertEqual((code, err), (0, ""))
        sid = f"smartmeter_tx:{handle.emulator.meter_mac.lower()}_energy_import"
        rows = [(s.astimezone(TIME_ZONE).replace(tzinfo=None), total)
                for s, total in self.ha.sums(sid)]
        hours = [s.hour for s, _ in rows if s.day == 31]
        self.assertEqual(hours, [h for h in range(24) if not 9 <= h <= 13])
        previous = 0.0
        for start, total in rows:
            self.assertAlmostEqual(total - previous, float(self.truth(handle, start)), places=6)
            previous = total

    @defer.inlineCallbacks
    def test_badToken(self):
        """A refused token: one line, exit 78, without the token; nothing imported."""
        handle = self.emulator()
        self.env["SMARTMETER_HA_TOKEN"] = "not-the-token"
        code, out, err = yield self.run_history("--device", handle.path, "--ha-url", self.url)
        self.assertEqual((code, out), (78, ""))
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn("refused the access token", err)
        self.assertNotIn("not-the-token", err)
        self.assertEqual(self.ha.rows, {})

    @defer.inlineCallbacks
    def test_unreachable(self):
        """HA not there: one line naming it, exit 69."""
        from tests.sktesting import refusing_port
        handle = self.emulator()
        url = f"http://127.0.0.1:{refusing_port(self)}"
        code, out, err = yield self.run_history("--device", handle.path, "--ha-url", url,
                                                "--ha-token-file", self.token_file)
        self.assertEqual((code, out), (69, ""))
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn(url, err)

    @defer.inlineCallbacks
    def test_httpsForPlainHomeAssistant(self):
        """
        https:// for an HA that answers plain HTTP (the connection says so:
        HaWrongScheme, held to a real HA in test_ha_real) is a usage error,
        exit 2, one line; a browser's page path after the address is no error.
        """
        from smartmeter_tx.outputs.homeassistant import websocket as W
        handle = self.emulator()
        code, out, err = yield self.run_history(
            "--device", handle.path, "--days", "1", "--ha-url", self.url + "/lovelace/0",
            "--ha-token-file", self.token_file)
        self.assertEqual(code, 0, err)
        self.patch(W, "connect", lambda reactor, url, token: defer.fail(W.HaWrongScheme(
            f"cannot reach Home Assistant at {url}: port 8123 does not speak TLS; for a "
            "plain port use http://")))
        code, out, err = yield self.run_history("--device", handle.path, "--ha-url",
                                                "https://ha.lan:8123", "--ha-token-file",
                                                self.token_file)
        self.assertEqual((code, out), (2, ""), err)
        self.assertEqual(err.splitlines(), ["smartmeter-history: cannot reach Home Assistant "
                                            "at https://ha.lan:8123: port 8123 does not speak "
                                            "TLS; for a plain port use http://"])

    def import_a_day(self):
        """C{smartmeter-history --days 1 --ha-url} from a new emulator: C{(code, out, err)}."""
        handle = self.emulator()
        return self.run_history("--device", handle.path, "--days", "1", "--ha-url", self.url,
                                "--ha-token-file", self.token_file)

    @defer.inlineCallbacks
    def test_notRecorded(self):
        """HA takes the import but its recorder never writes it: one line, exit 69."""
        from smartmeter_tx.outputs.homeassistant import sync
        self.patch(sync, "RECORD_WITHIN", 0.2)
        self.ha.recorder_lag = None
        code, out, err = yield self.import_a_day()
        self.assertEqual((code, out), (69, ""))
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn("accepted the import but had not recorded it after 0.2 s", err)

    @defer.inlineCallbacks
    def test_unexpectedShape(self):
        """An answer of a shape HA never sends: one line, exit 76, no traceback."""
        self.ha.shape = ["sums", "as", "strings"]
        code, out, err = yield self.import_a_day()
        self.assertEqual((code, out), (76, ""))
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn("unexpected_answer", err)
        self.assertNotIn("Traceback", err)

    @defer.inlineCallbacks
    def test_stalledHomeAssistant(self):
        """HA takes the token and answers nothing: exit 69 at the command's deadline."""
        from smartmeter_tx.outputs.homeassistant import websocket as W
        self.patch(W.HaSession, "COMMAND_WITHIN", 0.3)
        self.ha.stall = True
        code, out, err = yield self.import_a_day()
        self.assertEqual((code, out), (69, ""))
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn("did not answer recorder/list_statistic_ids within 0.3 s", err)

    @defer.inlineCallbacks
    def test_needsAToken(self):
        """--ha-url without a token is a usage error before any radio work."""
        code, out, err = yield self.run_history("--device", "/nonexistent/tty", "--ha-url",
                                                self.url)
        self.assertEqual((code, out), (2, ""))
        self.assertIn("--ha-token-file FILE or $SMARTMETER_HA_TOKEN", err)


TARIFF = """\
name = "Test tiers"
billing_day = 1
contract = "30A"
basic = { "30A" = 935.25 }
[[tiers]]
up_to = 120
price = 29.80
[[tiers]]
up_to = 300
price = 36.40
[[tiers]]
price = 40.49
[adjustments]
renewable = { "2024-05" = 3.49 }
fuel = { "2024-06" = -1.50 }
"""


def tiered_yen(energy: Decimal) -> Decimal:
    """The test's own reckoning of the tiers above."""
    return (min(energy, Decimal(120)) * Decimal("29.80")
            + max(Decimal(0), min(energy, Decimal(300)) - 120) * Decimal("36.40")
            + max(Decimal(0), energy - 300) * Decimal("40.49"))


class BillTests(_Base, unittest.TestCase):
    """
    --bill against the emulated meter (its clock at 2024-06-01 12:05, billing
    day 1): May whole, June partial, each period's energy the meter's own
    counter step across it.
    """

    def tariff(self, text=TARIFF, name="tariff.toml"):
        path = os.path.join(self.dir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def truth_kwh(self, handle, start, end):
        meter = handle.emulator.meter
        unit = M.UNITS[handle.emulator.config.unit]
        (n0, _), (n1, _) = meter.slot_truth(start), meter.slot_truth(end)
        return (n1 - n0) % 10 ** meter.digits * unit

    @defer.inlineCallbacks
    def test_periodsFromTheMeter(self):
        """
        May's bill is its counter step priced by the test's own reckoning, to
        the yen: the basic charge, the tiers, and May's renewable rate only
        (no fuel rate in force yet: said on stderr, not taken as 0).  June is
        partial, with June's rates and a projection.
        """
        handle = self.emulator("time-scale=0")
        code, out, err = yield self.run_history("--device", handle.path, "--bill", "--tariff",
                                                self.tariff(), "--format", "json")
        self.assertEqual(code, 0, err)
        may, june = [json.loads(line) for line in out.splitlines()]
        energy = self.truth_kwh(handle, datetime.datetime(2024, 5, 1),
                                datetime.datetime(2024, 6, 1))
        self.assertEqual((may["start"], may["end"], may["partial"]),
                         ("2024-05-01T00:00:00+09:00", "2024-06-01T00:00:00+09:00", False))
        self.assertEqual(Decimal(str(may["energy_kwh"])), energy)
        exact = Decimal("935.25") + tiered_yen(energy) + energy * Decimal("3.49")
        self.assertEqual(may["total_yen"], int(exact))
        self.assertEqual(Decimal(str(may["adjustments_yen"])),
                         (energy * Decimal("3.49")).quantize(Decimal("0.01")))
        self.assertIn("no 'fuel' rate in force in the tariff for 2024-05; billed without it",
                      err)
        self.assertTrue(june["partial"])
        # The meter's clock is 12:05: its newest slot ends at 12:00.
        june_energy = self.truth_kwh(handle, datetime.datetime(2024, 6, 1),
                                     datetime.datetime(2024, 6, 1, 12, 0))
        self.assertEqual(Decimal(str(june["energy_kwh"])), june_energy)
        self.assertGreater(june["projected_total_yen"], june["total_yen"])

    @defer.inlineCallbacks
    def test_outage(self):
        """
        Slots the meter has no record of: their energy is the period's
        gap_kwh, counted in the next known slot, so the period's energy is
        still the counter's whole step.
        """
        handle = self.emulator("time-scale=0&outage=2024-05-10T10:00/2024-05-10T13:30")
        code, out, err = yield self.run_history("--device", handle.path, "--bill", "--tariff",
                                                self.tariff(), "--periods", "2")
        self.assertEqual(code, 0, err)
        may = list(csv.DictReader(io.StringIO(out)))[0]
        self.assertEqual(Decimal(may["energy_kwh"]), self.truth_kwh(
            handle, datetime.datetime(2024, 5, 1), datetime.datetime(2024, 6, 1)))
        # The gap runs from the last counter the meter kept before the outage
        # to the first after it.
        meter = handle.emulator.meter
        boundaries = [datetime.datetime(2024, 5, 10, 8) + k * model.SLOT for k in range(16)]
        missing = [b for b in boundaries if meter.slot_truth(b)[0] is None]
        before, after = missing[0] - model.SLOT, missing[-1] + model.SLOT
        self.assertEqual(Decimal(may["gap_kwh"]), self.truth_kwh(handle, before, after))
        self.assertGreater(Decimal(may["gap_kwh"]), 0)

    @defer.inlineCallbacks
    def test_badBillFlags(self):
        """Each is one line and exit 2: no tariff, a bad tariff, too many periods, --days."""
        bad = self.tariff(TARIFF.replace("billing_day = 1", "billing_day = 31"), "bad.toml")
        for argv, expected in (
                (["--bill"], "--bill needs --tariff FILE"),
                (["--tariff", bad], "--tariff needs --bill or --ha-url"),
                (["--bill", "--tariff", bad], "billing_day: must be a whole number from 1 to 28"),
                (["--bill", "--tariff", self.tariff(), "--periods", "4"], "--periods must be"),
                (["--bill", "--tariff", self.tariff(), "--days", "3"], "--bill takes neither")):
            code, out, err = yield self.run_history("--device", "emulator:", *argv)
            self.assertEqual((code, out, err[-200:]), (2, "", err[-200:]), argv)
            self.assertEqual(len(err.splitlines()), 1, (argv, err))
            self.assertIn(expected, err, argv)
