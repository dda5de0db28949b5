"""
The meter's statistics against a real Home Assistant (L{tests.home_assistant}:
the pinned release, started on loopback for each test): imports and
re-imports hour by hour, outages, a digit wrap, sold energy, the energy
dashboard's validation of our statistics, the service's refill after HA was
down or frozen, the strict fake held to HA by one shared scenario, wrong
--ha-url forms, and the entities our MQTT discovery makes (and those of an
earlier version, replaced).
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
from decimal import Decimal

from twisted.internet import defer, reactor, task
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest

from smartmeter_tx.echonet.meter import decode_serial_number
from smartmeter_tx.emulator.meter import MeterModel
from smartmeter_tx.model import JST, NO_DATA, HistorySlot
from smartmeter_tx.outputs.homeassistant import statistics as S
from smartmeter_tx.outputs.homeassistant import sync
from smartmeter_tx.outputs.homeassistant import websocket as W
from smartmeter_tx.outputs.homeassistant.importer import HaImporter
from smartmeter_tx.service.backfill import Backfill
from smartmeter_tx.service.store import LatestStore
from smartmeter_tx.service.view import ServiceView
from smartmeter_tx.session.linkstate import LinkState
from smartmeter_tx.session.state import MeterLink
from tests import ha_scenario
from tests.cli import test_history
from tests.hafake import FakeHomeAssistant
from tests.home_assistant import HomeAssistantTestCase
from tests.emuloop import START
from tests.cli.test_twist import twist_env
from tests.emuloop import pinned
from tests.mosquitto import MOSQUITTO, Broker, Subscriber, wait_for
from tests.outputs.test_ha_sync import coroutine

D = Decimal
MAC = "00C094F3DAA462BF"
SLUG = S.slug_for(MAC)
IMPORT, EXPORT = S.statistic_id(SLUG, "import"), S.statistic_id(SLUG, "export")
#: Late in a month (Japan's time zone, HA's here), so ranges cross its end.
T0 = datetime.datetime(2026, 11, 29, 0, 0, tzinfo=JST)
HALF = datetime.timedelta(minutes=30)
HOUR = datetime.timedelta(hours=1)


def record(energies, start=T0, counter=D("99990"), modulus=D("100000"), sold=None):
    """
    The meter's slots from C{start}: one per bought energy (C{None}: the
    meter has no record of it), sold energy C{sold} (a list, or none sold),
    both counters running on and wrapping at C{modulus}.
    """
    sold = sold or [D(0)] * len(energies)
    out, reverse = [], D(0)
    for k, (bought, out_energy) in enumerate(zip(energies, sold)):
        absent = bought is None
        out.append(HistorySlot(start + k * HALF, NO_DATA if absent else bought,
                               NO_DATA if absent else out_energy,
                               NO_DATA if absent else counter,
                               NO_DATA if absent else reverse, "E2"))
        if not absent:
            counter = (counter + bought) % modulus
            reverse = (reverse + out_energy) % modulus
    return out


class _RealBase(HomeAssistantTestCase):

    async def session(self, token=None):
        session = await W.connect(reactor, self.ha.url, token or self.ha.token)
        self.addCleanup(session.close_and_wait, reactor)
        return session

    async def rows(self, session, sid, start=T0 - 2 * HOUR, end=T0 + 5 * 24 * HOUR):
        """HA's hourly rows of C{sid}: C{{start: (sum, state)}}."""
        result = await session.call("recorder/statistics_during_period",
                                    start_time=start.isoformat(), end_time=end.isoformat(),
                                    statistic_ids=[sid], period="hour",
                                    types=["sum", "state"])
        return {datetime.datetime.fromtimestamp(r["start"] / 1000, JST): (r["sum"], r["state"])
                for r in (result or {}).get(sid, [])}

    async def grid(self, session, cost=None, compensation=None):
        """Our statistics as the grid's in HA's energy preferences (with a cost, if given)."""
        await session.call("energy/save_prefs", energy_sources=[{
            "type": "grid",
            "flow_from": [{"stat_energy_from": IMPORT, "stat_cost": cost,
                           "entity_energy_price": None, "number_energy_price": None}],
            "flow_to": [{"stat_energy_to": EXPORT, "stat_compensation": compensation,
                         "entity_energy_price": None, "number_energy_price": None}],
            "cost_adjustment_day": 0}], device_consumption=[])

    def assertChanges(self, rows, energies):
        """Each row's change from the one before is its hour's energy (the first from 0)."""
        previous = 0.0
        for (start, (total, _)), energy in zip(sorted(rows.items()), energies):
            self.assertAlmostEqual(total - previous, float(energy), places=9, msg=start)
            previous = total


class StatisticsTests(_RealBase):

    @coroutine
    async def test_rangeImportedAgainChangesNothing(self):
        """
        Three days over a month's end, imported; the same range again, then a
        shorter one inside it, then one that starts in the next month: HA's
        rows are the same row by row each time.
        """
        session = await self.session()
        slots = record([D("0.25") + D(k % 7) / 10 for k in range(144)])
        now = T0 + datetime.timedelta(days=4)
        first = await sync.synchronize(session, slots, SLUG, now, rewrite=True)
        self.assertEqual(first.hours[IMPORT], 72)
        before = await self.rows(session, IMPORT)
        self.assertEqual(len(before), 72)
        self.assertChanges(before, [h.energy for h in S.hours(slots)])
        for again in (slots, slots[30:100], slots[96:]):
            await sync.synchronize(session, again, SLUG, now, rewrite=True)
            self.assertEqual(await self.rows(session, IMPORT), before)
        self.assertEqual(self.ha.log_lines(), [])

    @coroutine
    async def test_outageAndWrap(self):
        """
        Hours the meter has no record of are absent, never 0; across the
        counter's wrap each hour's change is what was used and the state wraps.
        """
        session = await self.session()
        energies = [D("1.5")] * 12 + [None] * 5 + [D("2.0")] * 15
        slots = record(energies)
        await sync.synchronize(session, slots, SLUG, T0 + datetime.timedelta(days=1),
                               rewrite=True)
        rows = await self.rows(session, IMPORT)
        hours = [start for start in sorted(rows)]
        self.assertEqual(hours, [T0 + k * HOUR for k in range(16) if k not in (6, 7, 8)])
        self.assertChanges(rows, [h.energy for h in S.hours(slots)])
        states = [state for _, state in (rows[h] for h in hours)]
        self.assertEqual(states[:3], [99993.0, 99996.0, 99999.0])
        self.assertEqual(states[3], 2.0)  # 99999 + 3 kWh on a 5-digit counter
        sold = await self.rows(session, EXPORT)  # none sold: a sum that stays 0
        self.assertEqual(sorted(sold), hours)
        self.assertEqual({total for total, _ in sold.values()}, {0.0})

    @coroutine
    async def test_soldEnergy(self):
        """Sold energy is its own statistic, hour by hour, beside the bought energy."""
        session = await self.session()
        sold = [D("0.1") * (k % 3) for k in range(24)]
        slots = record([D("0.4")] * 24, sold=sold)
        done = await sync.synchronize(session, slots, SLUG, T0 + datetime.timedelta(days=1),
                                      rewrite=True)
        self.assertEqual((done.hours[IMPORT], done.hours[EXPORT]), (12, 12))
        rows = await self.rows(session, EXPORT)
        self.assertChanges(rows, [h.energy for h in S.hours(slots, "export")])
        listed = await session.call("recorder/list_statistic_ids", statistic_type="sum")
        ours = {item["statistic_id"]: item for item in listed
                if item["statistic_id"] in (IMPORT, EXPORT)}
        self.assertEqual(set(ours), {IMPORT, EXPORT})
        for sid, item in ours.items():
            self.assertEqual((item["source"], item["statistics_unit_of_measurement"],
                              item["has_sum"]), ("smartmeter_tx", "kWh", True), sid)

    @coroutine
    async def test_energyDashboardAcceptsOurStatistics(self):
        """
        Our two statistics set as the grid's consumption and return in HA's
        energy preferences: HA's own validation lists no issue for them.
        """
        session = await self.session()
        slots = record([D("0.4")] * 24, sold=[D("0.1")] * 24)
        await sync.synchronize(session, slots, SLUG, T0 + datetime.timedelta(days=1),
                               rewrite=True)
        await self.grid(session)
        prefs = await session.call("energy/get_prefs")
        self.assertEqual(prefs["energy_sources"][0]["flow_from"][0]["stat_energy_from"], IMPORT)
        validation = await session.call("energy/validate")
        self.assertEqual(validation["energy_sources"], [[]], validation)


class CostTests(_RealBase):
    """With a tariff: the cost and compensation statistics in real HA."""

    #: December 2026 a period: 744 hours, 1 yen of basic an hour.
    TARIFF = {"name": "Test", "billing_day": 1, "contract": "30A", "basic": {"30A": 744},
              "tiers": [{"up_to": 2, "price": 10}, {"price": 20}],
              "adjustments": {"levy": {"2026-11": 1}}, "sell": {"price": 5}}
    START = datetime.datetime(2026, 12, 1, tzinfo=JST)

    @coroutine
    async def test_costAndCompensationHourByHour(self):
        """
        Slots 0.5, 0.5, 1, 1, 0.25, 0.25 kWh from the period's start, 0.2
        sold in each: the hours cost 1 + 10 + 1 = 12, 1 + (f(3) - f(1) = 40 -
        10) + 2 = 33 and 1 + 10 + 0.5 = 11.5 yen, and earn 2 yen each.  In
        JPY, from the same hours as the energy; HA's energy preferences take
        them as the grid's cost and compensation with no issue.
        """
        from smartmeter_tx.bill.tariff import parse_tariff
        session = await self.session()
        slots = record([D("0.5"), D("0.5"), D(1), D(1), D("0.25"), D("0.25")],
                       start=self.START, sold=[D("0.2")] * 6)
        cost, pay = S.statistic_id(SLUG, "cost"), S.statistic_id(SLUG, "compensation")
        done = await sync.synchronize(session, slots, SLUG, self.START + HOUR * 24,
                                      rewrite=True, tariff=parse_tariff(self.TARIFF))
        self.assertEqual((done.hours[IMPORT], done.hours[cost], done.hours[pay]), (3, 3, 3))
        self.assertChanges(await self.rows(session, cost), [D(12), D(33), D("11.5")])
        self.assertChanges(await self.rows(session, pay), [D(2), D(2), D(2)])
        self.assertEqual(sorted(await self.rows(session, cost)),
                         sorted(await self.rows(session, IMPORT)))
        listed = await session.call("recorder/list_statistic_ids", statistic_type="sum")
        units = {item["statistic_id"]: item["statistics_unit_of_measurement"] for item in listed}
        self.assertEqual((units[cost], units[pay]), ("JPY", "JPY"))
        await self.grid(session, cost, pay)
        validation = await session.call("energy/validate")
        self.assertEqual(validation["energy_sources"], [[]], validation)
        self.assertEqual(self.ha.log_lines(), [])


class WrongUrlTests(_RealBase):

    @coroutine
    async def test_httpsAgainstPlainHomeAssistant(self):
        """
        https:// for HA's plain HTTP port: the error says use http://, in
        one line; a URL copied from the browser (a dashboard's path) works.
        """
        port = self.ha.port
        with self.assertRaises(W.HaWrongScheme) as cm:
            await W.connect(reactor, f"https://127.0.0.1:{port}", self.ha.token)
        self.assertEqual(str(cm.exception), f"cannot reach Home Assistant at "
                                            f"https://127.0.0.1:{port}: port {port} does not "
                                            "speak TLS; for a plain port use http://")
        session = await W.connect(reactor, self.ha.url + "/lovelace/0", self.ha.token)
        self.addCleanup(session.close_and_wait, reactor)
        self.assertIsNotNone(session.version)


class FakeAgreesTests(_RealBase):

    @coroutine
    async def test_fakeAnswersAsHomeAssistantDoes(self):
        """
        The shared scenario (tests/ha_scenario.py) gets the same answers from
        the strict fake as from HA, step by step.
        """
        fake = FakeHomeAssistant({"fake-admin": True, "fake-user": False})
        port = fake.listen(reactor)
        self.addCleanup(port.stopListening)
        fake_url = f"http://127.0.0.1:{port.getHost().port}"
        sessions = []
        for url, token in ((fake_url, "fake-admin"), (fake_url, "fake-user")):
            session = await W.connect(reactor, url, token)
            self.addCleanup(session.close_and_wait, reactor)
            sessions.append(session)
        from_fake = await ha_scenario.play(*sessions)
        from_ha = await ha_scenario.play(await self.session(),
                                         await self.session(self.ha.tokens["user"]))
        from_ha = ha_scenario.keys_the_fake_has(from_fake, from_ha)
        self.assertEqual([name for name, _ in from_fake], [name for name, _ in from_ha])
        self.maxDiff = None
        for (name, fake_answer), (_, ha_answer) in zip(from_fake, from_ha):
            self.assertEqual(fake_answer, ha_answer, f"step {name!r}")


class ImporterTests(_RealBase):

    async def importer(self, known):
        """
        The service's importer over a backfill holding C{known} slots (the
        first 10 hours of T0's day), started and idle.

        @return: C{(importer, backfill, retry clock, fatal messages)}.
        """
        now = (T0 + datetime.timedelta(days=1, hours=1)).timestamp()
        backfill = Backfill(7, Clock(), lambda r, w: None, lambda: now,
                            known=[s.to_record() for s in known])
        view = ServiceView(LatestStore(), LinkState(), Clock(), backfill,
                           link=MeterLink(mac=MAC))
        retries, fatal = Clock(), []
        importer = HaImporter(self.ha.url, self.ha.token, view, reactor, fatal.append,
                              wall_clock=lambda: now, clock=retries)
        importer.startService()
        self.addCleanup(importer.stopService)
        await importer.idle()
        self.assertEqual((importer.hours_imported, importer.connected), (10, True))
        return importer, backfill, retries, fatal

    async def assertDay(self, fatal):
        """HA holds T0's 24 hours once, each 0.5 + 0.5 kWh, its sums running on; nothing fatal."""
        session = await self.session()
        rows = await self.rows(session, IMPORT)
        self.assertEqual(sorted(rows), [T0 + k * HOUR for k in range(24)])
        self.assertEqual([total for total, _ in (rows[h] for h in sorted(rows))],
                         [float(k) for k in range(1, 25)])
        self.assertEqual(fatal, [])

    @coroutine
    async def test_refillAfterHomeAssistantWasDown(self):
        """
        The service's importer: the complete hours at start; HA stopped while
        slots arrive (a warning, retries); HA back: every hour in HA once,
        continuing its sums, nothing lost.
        """
        slots = record([D("0.5")] * 48)
        importer, backfill, retries, fatal = await self.importer(slots[:20])
        self.ha.stop()  # between two slots: no session open, nothing to see yet
        for slot in slots[20:]:
            backfill.slots[slot.start] = slot
        importer.kick()
        await importer.idle()
        self.assertFalse(importer.connected)
        self.assertEqual(importer.hours_imported, 10)
        await self.ha.start()
        retries.advance(60)  # the backoff is under a minute
        await importer.idle()
        await wait_for(lambda: importer.hours_imported == 24, "the refill", 30)
        await self.assertDay(fatal)

    @coroutine
    async def test_frozenHomeAssistantDropped(self):
        """
        HA frozen (SIGSTOP: its socket open, nothing answering) while hours
        wait: the command's deadline drops the session instead of waiting
        forever; HA running again: the hours imported once, sums continuing.
        """
        self.patch(W.HaSession, "COMMAND_WITHIN", 3.0)
        self.patch(W.HaSession, "PING_EVERY", 2.0)
        self.patch(W.HaSession, "PING_WITHIN", 2.0)
        slots = record([D("0.5")] * 48)
        importer, backfill, retries, fatal = await self.importer(slots[:20])
        self.ha.pause()
        self.addCleanup(self.ha.resume)  # before the fixture stops it
        for slot in slots[20:]:
            backfill.slots[slot.start] = slot
        importer.kick()
        await wait_for(lambda: not importer.connected, "the frozen session dropped", 20)
        self.assertEqual(importer.hours_imported, 10)
        self.ha.resume()
        retries.advance(60)
        await wait_for(lambda: importer.hours_imported == 24, "the import after HA thawed", 60)
        await self.assertDay(fatal)


class HistoryRunner(test_history._Base):
    """The history command's test helpers (an emulator, the command in-process) for C{test}."""

    def __init__(self, test) -> None:
        self.mktemp, self.addCleanup = test.mktemp, test.addCleanup
        test_history._Base.setUp(self)

    def run(self, argv):
        return self._invoke(argv)

    truth = test_history.HomeAssistantTests.truth


class HistoryCommandTests(_RealBase):
    """C{smartmeter-history --ha-url} as a user runs it, on the emulated meter."""

    TOKEN_FILE = "ha-token"

    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        self.runner = HistoryRunner(self)

    @coroutine
    async def test_rangeAgainAndShorterChangeNothing(self):
        """
        One day from the meter into HA, then two (which start earlier): hour
        by hour the meter's truth.  The same command again, then one day
        only: HA's rows stay as they were.
        """
        handle = self.runner.emulator()
        token_file = os.path.join(self.runner.dir, self.TOKEN_FILE)
        with open(token_file, "w") as f:
            f.write(self.ha.token + "\n")
        argv = ["--device", handle.path, "--state-file", os.path.join(self.runner.dir, "s.json"),
                "--ha-url", self.ha.url, "--ha-token-file", token_file]
        sid = f"smartmeter_tx:{handle.emulator.meter_mac.lower()}_energy_import"
        session = await self.session()
        meter_now = START.replace(tzinfo=JST)
        window = dict(start=meter_now - 10 * 24 * HOUR, end=meter_now + 24 * HOUR)
        outputs = []
        for days in ("1", "2"):
            code, out, err = await self.runner.run(argv + ["--days", days])
            self.assertEqual((code, err), (0, ""))
            outputs.append(out)
            rows = await self.rows(session, sid, **window)
            self.assertIn(f"imported {len(rows)} hours into {sid}", out)
            previous = 0.0
            for start in sorted(rows):
                truth = self.runner.truth(handle, start.replace(tzinfo=None))
                self.assertAlmostEqual(rows[start][0] - previous, float(truth), places=6,
                                       msg=f"--days {days}: {start}")
                previous = rows[start][0]
        self.assertGreater(len(rows), 48)
        for days in ("2", "1"):
            code, out, err = await self.runner.run(argv + ["--days", days])
            self.assertEqual((code, err), (0, ""))
            outputs.append(out)
            self.assertEqual(await self.rows(session, sid, **window), rows, f"--days {days}")
        self.assertNotIn(self.ha.token, "".join(outputs))


class MqttDiscoveryTests(_RealBase):
    """
    C{twist smartmeter --mqtt} on the emulated meter, a real mosquitto, and
    HA's MQTT integration on it: the entities HA builds from our discovery.
    """

    timeout = 240  # only catches a hang

    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        if MOSQUITTO is None:
            raise SkipTest("mosquitto not installed: apt-get install mosquitto")
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.broker = Broker(self.dir)
        self.addCleanup(self.broker.kill)
        yield self.broker.start()
        yield self.ha.add_mqtt(self.broker.port)
        self.configs = Subscriber(self.broker.port, ["homeassistant/+/+/config"])
        self.addCleanup(self.configs.close)

    def twist(self, *extra):
        args = [sys.executable, "-m", "twisted", "--log-format", "text", "smartmeter",
                "--device", pinned("emulator:?time-scale=0.01"),
                "--mqtt", f"mqtt://127.0.0.1:{self.broker.port}",
                "--state-file", os.path.join(self.dir, "state.json"),
                "--interval", "2", "--energy-interval", "4", *extra]
        with open(os.path.join(self.dir, "twist.log"), "wb") as log:
            process = subprocess.Popen(args, env=twist_env(), cwd=self.dir, stdout=log,
                                       stderr=subprocess.STDOUT)
        self.addCleanup(lambda: process.poll() is None and (process.kill(), process.wait()))
        return process

    async def states(self) -> dict:
        """HA's states of the entities our discovery made: C{{unique_id: state}}."""
        session = await self.session()
        registry = await session.call("config/entity_registry/list")
        ours = {e["entity_id"]: e["unique_id"] for e in registry
                if e.get("platform") == "mqtt" and e["unique_id"].startswith("smartmeter_tx_")}
        states = await self.ha.request("GET", "/api/states")
        await session.close_and_wait(reactor)
        return {ours[s["entity_id"]]: s for s in states if s["entity_id"] in ours}

    @coroutine
    async def test_entitiesFromOurDiscovery(self):
        """
        Every config we publish becomes an entity with our device class,
        state class and unit, numbers once the meter is read, accepted by the
        energy dashboard; after the service is killed, HA marks them
        unavailable (our Last Will).  HA logs no error or warning about them.
        """
        process = self.twist()
        configs = await wait_for(lambda: len(self.configs.got()) >= 14 and self.configs.got(),
                                 "the discovery configs", 60)
        published = {json.loads(payload)["unique_id"]: json.loads(payload)
                     for _, payload, _ in configs}

        async def numbers():
            states = await self.states()
            energy = [s for u, s in states.items() if u.endswith("_energy_bought")]
            if len(states) == len(published) and energy and energy[0]["state"] not in (
                    "unknown", "unavailable"):
                return states
            return None
        states = await poll(numbers, "HA's entities with a reading", 90)
        for unique, config in published.items():
            attributes = states[unique]["attributes"]
            for key in ("device_class", "state_class", "unit_of_measurement"):
                self.assertEqual(attributes.get(key), config.get(key), f"{unique} {key}")
        power = next(s for u, s in states.items() if u.endswith("_power"))
        self.assertGreater(float(power["state"]), 0)
        prefix = next(iter(published.values()))["device"]["identifiers"][0] + "_"
        by_suffix = {u[len(prefix):]: s["entity_id"] for u, s in states.items()}
        session = await self.session()
        await session.call("energy/save_prefs", energy_sources=[{
            "type": "grid",
            "flow_from": [{"stat_energy_from": by_suffix["energy_bought"], "stat_cost": None,
                           "entity_energy_price": None, "number_energy_price": None}],
            "flow_to": [{"stat_energy_to": by_suffix["energy_sold"],
                         "stat_compensation": None, "entity_energy_price": None,
                         "number_energy_price": None}],
            "cost_adjustment_day": 0}], device_consumption=[])
        validation = await session.call("energy/validate")
        # HA compiles an entity's statistics every five minutes: until the
        # first time, a new entity is "not defined" there.  Every check of
        # its state (class, unit, recorded, a number) is made already.
        issues = [issue for issue in validation["energy_sources"][0]
                  if issue["type"] != "statistics_not_defined"]
        self.assertEqual(issues, [], validation)
        process.send_signal(signal.SIGKILL)
        process.wait(30)

        async def unavailable():
            states = await self.states()
            return all(s["state"] == "unavailable" for s in states.values()) and states
        await poll(unavailable, "every entity unavailable after the Last Will", 30)
        ours = [line for line in self.ha.log_lines(("ERROR", "WARNING"))
                if "mqtt" in line.lower() or "smartmeter" in line.lower()]
        self.assertEqual(ours, [])


    @coroutine
    async def test_billEntities(self):
        """
        With --tariff (TEPCO's example, 30 A): the bill's entities as HA
        builds them: the period's yen a JPY monetary total, the price in
        JPY/kWh with a number, the breaker's binary sensor; HA logs no error
        or warning about them.
        """
        tariff = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))), "examples", "tariffs", "tepco-juryo-dento-b.toml")
        self.twist("--tariff", tariff, "--data-log", os.path.join(self.dir, "log"))
        await wait_for(lambda: len(self.configs.got()) >= 19, "the discovery configs", 60)

        async def priced():
            states = await self.states()
            price = [s for u, s in states.items() if u.endswith("_price")]
            return price and price[0]["state"] not in ("unknown", "unavailable") and states
        states = await poll(priced, "the price of a kWh in HA", 90)
        def attributes(suffix):
            return next(s for u, s in states.items() if u.endswith(suffix))["attributes"]
        cost = attributes("_bill_cost")
        self.assertEqual((cost.get("device_class"), cost.get("state_class"),
                          cost.get("unit_of_measurement")), ("monetary", "total", "JPY"))
        self.assertEqual(attributes("_price").get("unit_of_measurement"), "JPY/kWh")
        self.assertTrue(any(u.endswith("_breaker_near_limit") for u in states))
        ours = [line for line in self.ha.log_lines(("ERROR", "WARNING"))
                if "mqtt" in line.lower() or "smartmeter" in line.lower()]
        self.assertEqual(ours, [])

    @coroutine
    async def test_earlierEntitiesReplaced(self):
        """
        HA holds the entities an earlier version announced (under the
        meter's serial number, energy "normal"/"reverse", the fixed-time
        ones with a state class); once the service runs, HA holds only the
        new ones, the old device is gone, and the Energy dashboard's
        candidates of this meter (HA's "sum" statistics of energy, as its
        picker lists them) are one MQTT sensor per direction and our two
        statistics.
        """
        meter = MeterModel()  # the emulator's meter (seed 0)
        serial = decode_serial_number(meter.serial)
        old = earlier_configs(serial)
        publisher = Subscriber(self.broker.port, ["nothing/here"])
        self.addCleanup(publisher.close)
        for topic, config in old.items():
            publisher.client.publish(topic, json.dumps(config), qos=1, retain=True)
        publisher.client.publish(f"smartmeter/{serial}/energy", json.dumps(
            {"energy_normal_kwh": 1.5, "energy_reverse_kwh": 0.5, "time": 1.0}), qos=1,
            retain=True)
        olds = {config["unique_id"] for config in old.values()}

        async def ours():
            session = await self.session()
            registry = await session.call("config/entity_registry/list")
            devices = await session.call("config/device_registry/list")
            await session.close_and_wait(reactor)
            return ({e["unique_id"]: e["entity_id"] for e in registry
                     if e.get("platform") == "mqtt" and e["unique_id"].startswith("smartmeter_tx_")},
                    [d for d in devices if any(i[1].startswith("smartmeter_tx_")
                                               for i in d["identifiers"])])

        async def earlier_there():
            entities, devices = await ours()
            return set(entities) == olds and entities
        await poll(earlier_there, "the earlier version's entities in HA", 30)
        self.twist()
        mid = S.slug_for(meter.mac)
        new = {f"smartmeter_tx_{mid}_{key}" for key in NEW_KEYS}

        async def replaced():
            entities, devices = await ours()
            return set(entities) == new and len(devices) == 1 and (entities, devices)
        entities, devices = await poll(replaced, "only the new entities in HA", 90)
        self.assertEqual(devices[0]["identifiers"], [["mqtt", f"smartmeter_tx_{mid}"]])
        self.assertEqual((devices[0]["name"], devices[0]["serial_number"]),
                         (S.meter_name(mid), serial))
        session = await self.session()
        slots = record([D("0.4")] * 4, sold=[D("0.1")] * 4)
        await sync.synchronize(session, slots, mid, T0 + datetime.timedelta(days=1),
                               rewrite=True)
        listed = await session.call("recorder/list_statistic_ids", statistic_type="sum")
        candidates = {item["statistic_id"]: item.get("name") for item in listed
                      if item.get("unit_class") == "energy"}
        ours_listed = {sid: name for sid, name in candidates.items()
                       if sid.startswith(("sensor.smartmeter_tx_", "smartmeter_tx:"))}
        self.assertEqual(set(ours_listed), {
            entities[f"smartmeter_tx_{mid}_energy_bought"],
            entities[f"smartmeter_tx_{mid}_energy_sold"],
            S.statistic_id(mid, "import"), S.statistic_id(mid, "export")})
        self.assertEqual(ours_listed[S.statistic_id(mid, "import")],
                         f"{S.meter_name(mid)} energy bought (meter record)")
        # The broker holds nothing of the earlier version: mosquitto sends the retained
        # messages of one SUBSCRIBE filter by filter, so once the new config (the last
        # filter) is in, any earlier one would have come before it.
        current = f"homeassistant/sensor/smartmeter_tx_{mid}_energy_bought/config"
        late = Subscriber(self.broker.port, [f"smartmeter/{serial}/+", *old, current])
        self.addCleanup(late.close)
        await wait_for(lambda: late.got(current), "the new config, retained")
        self.assertEqual([topic for topic, _, _ in late.got()], [current])


#: The keys of the entities this version announces (their unique ids end in them).
NEW_KEYS = ("power", "current_r", "current_t", "energy_bought", "energy_sold",
            "energy_bought_half_hour", "energy_sold_half_hour", "half_hour_time", "rssi", "lqi",
            "session", "rate_limited", "reading_age", "polls_failed")


def earlier_configs(serial: str) -> dict:
    """
    The discovery configs an earlier version published for the emulated
    meter: its serial number as the id, energy "normal" and "reverse", the
    fixed-time counters with a state class.  C{{config topic: payload}}.
    """
    energy = dict(unit_of_measurement="kWh", device_class="energy",
                  state_class="total_increasing")
    table = [
        ("sensor", "power", "Power", "state", "power_w",
         dict(unit_of_measurement="W", device_class="power", state_class="measurement")),
        ("sensor", "current_r", "Current R", "state", "current_r_a",
         dict(unit_of_measurement="A", device_class="current", state_class="measurement")),
        ("sensor", "current_t", "Current T", "state", "current_t_a",
         dict(unit_of_measurement="A", device_class="current", state_class="measurement")),
        ("sensor", "energy_normal", "Energy normal", "energy", "energy_normal_kwh", energy),
        ("sensor", "energy_reverse", "Energy reverse", "energy", "energy_reverse_kwh", energy),
        ("sensor", "fixed_energy_normal", "Fixed-time energy normal", "fixed",
         "energy_normal_kwh", energy),
        ("sensor", "fixed_energy_reverse", "Fixed-time energy reverse", "fixed",
         "energy_reverse_kwh", energy),
        ("sensor", "fixed_time", "Fixed-time reading time", "fixed", "meter_time",
         dict(device_class="timestamp")),
        ("sensor", "rssi", "RSSI", "link", "rssi_dbm",
         dict(unit_of_measurement="dBm", device_class="signal_strength",
              state_class="measurement", entity_category="diagnostic")),
        ("sensor", "lqi", "LQI", "link", "lqi",
         dict(state_class="measurement", entity_category="diagnostic")),
        ("binary_sensor", "session", "Session", "link", None,
         dict(device_class="connectivity", entity_category="diagnostic")),
        ("binary_sensor", "rate_limited", "Rate limited", "link", None,
         dict(device_class="problem", entity_category="diagnostic")),
        ("sensor", "reading_age", "Reading age", "link", "reading_age_s",
         dict(unit_of_measurement="s", device_class="duration", state_class="measurement",
              entity_category="diagnostic")),
        ("sensor", "polls_failed", "Polls failed", "link", "polls_failed",
         dict(state_class="total_increasing", entity_category="diagnostic")),
    ]
    device = {"identifiers": [f"smartmeter_tx_{serial}"], "name": f"Smart meter {serial}",
              "manufacturer": "Toshiba", "model": "Low-voltage smart electric energy meter",
              "serial_number": serial}
    configs = {}
    for component, key, name, suffix, field, extra in table:
        unique = f"smartmeter_tx_{serial}_{key}"
        template = ("{{ value_json.%s }}" % field if field
                    else "{{ 'ON' if value_json.session_up else 'OFF' }}")
        configs[f"homeassistant/{component}/{unique}/config"] = dict(
            extra, name=name, unique_id=unique, object_id=unique,
            state_topic=f"smartmeter/{serial}/{suffix}", value_template=template,
            availability_topic=f"smartmeter/{serial}/availability", payload_available="online",
            payload_not_available="offline", qos=1, device=device)
    return configs


async def poll(check, what: str, timeout: float, step: float = 0.5):
    """Ask C{check} (a coroutine function) until it returns a true value, within C{timeout} s."""
    deadline = reactor.seconds() + timeout
    while True:
        value = await check()
        if value:
            return value
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await task.deferLater(reactor, step, lambda: None)
