"""
Tests for L{smartmeter_tx.session.client.BRouteClient}: the whole session flow over
the emulator, on a task.Clock (see L{tests.emuloop}).
"""

from decimal import Decimal

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.session import client as C
from smartmeter_tx.session import join
from smartmeter_tx import errors
from smartmeter_tx.session import steps
from smartmeter_tx.echonet import meter as M
from smartmeter_tx import model
from smartmeter_tx.emulator.module import DEFAULT_ID, DEFAULT_PASSWORD
from smartmeter_tx.errors import ArgumentError
from smartmeter_tx.sk import commands
from smartmeter_tx.sk import values as V
from smartmeter_tx.sk.values import Dialect
from smartmeter_tx.session.state import MeterLink
from tests.emuloop import Loop

CREDS = join.Credentials(DEFAULT_ID, DEFAULT_PASSWORD)


def truth_of(loop, epc):
    """The last value the emulated meter put on the air for C{epc}."""
    for record in reversed(loop.emulator.truth):
        if record.epc == epc and record.seoj == 0x028801:
            return record
    raise AssertionError(f"the meter never sent EPC {epc:02X}")


class _Base:
    dialect = Dialect.STANDARD
    knobs: dict = {}

    def setUp(self):
        self.loop = Loop(dialect=self.dialect, time_scale=1.0, **self.knobs)
        self.addCleanup(self.loop.stop)

    def client(self, link=None, credentials=CREDS, **kw):
        sk = self.loop.connect()
        client = C.BRouteClient(sk, credentials, self.loop.clock, link=link, **kw)
        self.addCleanup(client.close)
        return client

    def drive(self, coro, limit=600.0):
        d = self.loop.run(defer.Deferred.fromCoroutine(coro), limit)
        return d

    def read(self, client, energy=False):
        return self.successResultOf(self.drive(client.read_values(energy=energy)))

    def assertTrue_(self, reading):
        power = truth_of(self.loop, M.POWER).value
        r, t = truth_of(self.loop, M.CURRENT).value
        self.assertEqual(reading.power_w, power)
        self.assertEqual((reading.current_r_a, reading.current_t_a), (r, t))

    def test_coldRun(self):
        """A first read scans, joins and returns the values the meter sent."""
        client = self.client()
        reading = self.read(client)
        self.assertTrue_(reading)
        self.assertIsInstance(reading.power_w, int)
        self.assertEqual(client.dialect, self.dialect)
        self.assertEqual(list(client.steps)[-2:], ["SKJOIN", "SKSENDTO"])
        self.assertIn("SKSCAN", client.steps)
        self.assertTrue(client.link.joinable)
        self.assertEqual(client.link.ipaddr, self.loop.emulator.meter_ip)
        self.assertEqual(client.link.channel, self.loop.emulator.channel)
        self.assertEqual(client.link.pan_id, self.loop.emulator.pan_id)
        self.assertEqual(client.frames, 1)

    def test_warmRunOneFrame(self):
        """A second run finds the module's session: one SKSENDTO, no scan, no join."""
        first = self.client()
        self.read(first)
        first.close()
        self.loop.disconnect()
        del self.loop.sent[:]
        second = self.client(link=first.link)
        reading = self.read(second)
        self.assertTrue_(reading)
        self.assertEqual(self.loop.sent.count("SKSENDTO"), 1)
        self.assertNotIn("SKSCAN", self.loop.sent)
        self.assertNotIn("SKJOIN", self.loop.sent)
        self.assertEqual(second.frames, 1)

    def test_noStateSessionKept(self):
        """
        Without a state file, a module that kept its session is asked for its
        neighbour table (SKTABLE 2): one SKSENDTO, no scan, no join.
        """
        first = self.client()
        self.read(first)
        first.close()
        self.loop.disconnect()
        del self.loop.sent[:]
        second = self.client()
        self.assertTrue_(self.read(second))
        self.assertEqual(self.loop.sent.count("SKSENDTO"), 1)
        self.assertIn("SKTABLE", self.loop.sent)
        self.assertNotIn("SKSCAN", self.loop.sent)
        self.assertNotIn("SKJOIN", self.loop.sent)
        self.assertEqual(second.link.ipaddr, self.loop.emulator.meter_ip)
        self.assertEqual((second.link.channel, second.link.pan_id),
                         (self.loop.emulator.channel, self.loop.emulator.pan_id))

    def test_coldRunWithStateNoScan(self):
        """With the state known but no session, the client joins without scanning."""
        first = self.client()
        self.read(first)
        first.close()
        self.loop.disconnect()
        self.loop.emulator.power_cycle()  # session and registers gone
        del self.loop.sent[:]
        second = self.client(link=first.link)
        reading = self.read(second)
        self.assertTrue_(reading)
        self.assertNotIn("SKSCAN", self.loop.sent)
        self.assertEqual(self.loop.sent.count("SKJOIN"), 1)
        self.assertEqual(self.loop.sent.count("SKSENDTO"), 2)

    def test_wrongPassword(self):
        """EVENT 24 after SKJOIN fails the read with AuthenticationFailed."""
        client = self.client(credentials=join.Credentials(DEFAULT_ID, "WRONGPASSWOR"))
        failure = self.failureResultOf(self.drive(client.read_values()), errors.AuthenticationFailed)
        self.assertIn("EVENT 24", str(failure.value))
        self.assertNotIn("WRONGPASSWOR", str(failure.value))

    def test_wrongIdNotFound(self):
        """With an ID whose pairing ID matches no meter, the scan finds nothing."""
        client = self.client(credentials=join.Credentials("F" * 32, DEFAULT_PASSWORD))
        self.failureResultOf(self.drive(client.read_values()), errors.MeterNotFound)

    def test_energy(self):
        """Energy is read with D3/E1/D7 in the same frame and converted exactly to kWh."""
        client = self.client()
        reading = self.read(client, energy=True)
        record = truth_of(self.loop, M.ENERGY_NORMAL)
        self.assertEqual(reading.energy_normal_kwh, record.kwh)
        self.assertIsInstance(reading.energy_normal_kwh, Decimal)
        self.assertEqual(client.link.unit, str(M.UNITS[self.loop.emulator.config.unit]))
        self.assertEqual(client.frames, 1)
        # The scale is cached: the next read asks for the counters only.
        self.read(client, energy=True)
        self.assertEqual(client.frames, 2)

    def test_budget(self):
        """A budget too short for the scan fails with StepTimeout naming the step."""
        client = self.client()
        budget = steps.Budget(self.loop.clock, 3)
        failure = self.failureResultOf(self.drive(client.read_values(budget=budget)),
                                       errors.StepTimeout)
        self.assertIn("scanning", str(failure.value))
        self.assertLessEqual(self.loop.clock.seconds(), budget.deadline + 0.01)

    def test_cancelledReadSendsNothing(self):
        """
        A read cancelled while another command is on the wire puts no frame
        on the air: its SKSENDTO is never written, and the link is usable.
        """
        first = self.client()
        self.read(first)
        del self.loop.sent[:]
        ver = first.sk.command(commands.sk_ver())  # on the wire while the read starts
        d = defer.Deferred.fromCoroutine(first.read_values())
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.loop.advance(30)
        self.successResultOf(ver)
        self.assertEqual(self.loop.sent, ["SKVER"])
        self.assertTrue_(self.read(first))

    def test_channelNarrowsScan(self):
        """With the channel given, the scan covers that one channel only."""
        client = self.client(link=MeterLink().with_overrides(channel=self.loop.emulator.channel))
        self.read(client)
        scans = [c for c in client.steps if c == "SKSCAN"]
        self.assertEqual(len(scans), 1)
        self.assertLess(self.loop.clock.seconds(), 15)


class StandardClientTests(_Base, SynchronousTestCase):
    dialect = Dialect.STANDARD


class DSEClientTests(_Base, SynchronousTestCase):
    dialect = Dialect.DSE

    def test_stateDialectWrong(self):
        """A state file naming the wrong dialect is corrected by the module's ER05."""
        first = self.client()
        self.read(first)
        first.close()
        self.loop.disconnect()
        link = first.link
        link.dialect = "standard"
        second = self.client(link=link)
        self.assertTrue_(self.read(second))
        self.assertEqual(second.dialect, Dialect.DSE)
        self.assertEqual(second.link.dialect, "dse")

    def test_forcedWrongDialect(self):
        """Forcing the standard dialect on a DSE module fails with a clear error."""
        client = self.client(dialect=Dialect.STANDARD)
        failure = self.failureResultOf(self.drive(client.read_values()), ArgumentError)
        self.assertIn("dialect", str(failure.value))


class HexEchoOffTests(_Base, SynchronousTestCase):
    dialect = Dialect.DSE
    knobs = {"echo": False, "wopt": "hex"}


class LossyRadioTests(SynchronousTestCase):
    """
    With 30 % of frames lost, reads retried within the budget still give
    exactly the meter's values.
    """

    def test_lossyReads(self):
        """Twenty reads over a lossy radio all match the emulator's ground truth."""
        for dialect in Dialect:
            loop = Loop(dialect=dialect, loss=0.3, seed=4)
            self.addCleanup(loop.stop)
            client = C.BRouteClient(loop.connect(), CREDS, loop.clock)
            self.addCleanup(client.close)
            answered = 0
            for i in range(20):
                d = loop.run(defer.Deferred.fromCoroutine(client.read_values(energy=True)))
                if not d.called:
                    self.fail("read never finished")
                result = []
                d.addBoth(result.append)
                if isinstance(result[0], model.Reading):
                    answered += 1
                    self.assertEqual(result[0].power_w, truth_of(loop, M.POWER).value)
                    self.assertEqual(result[0].energy_normal_kwh,
                                     truth_of(loop, M.ENERGY_NORMAL).kwh)
                else:
                    result[0].trap(errors.ReadFailed)
                loop.clock.advance(30)
            self.assertGreaterEqual(answered, 18)
            self.assertGreater(client.frames, 20)  # some frames were lost and resent


class NoSessionNoCredentialsTests(SynchronousTestCase):
    def test_noCredentials(self):
        """Without credentials and without a session the client says what is missing."""
        loop = Loop()
        self.addCleanup(loop.stop)
        sk = loop.connect()
        client = C.BRouteClient(sk, None, loop.clock,
                                link=MeterLink(channel=0x21, pan_id=1, ipaddr="FE80:0000:0000:"
                                               "0000:0211:2233:4455:6677"))
        self.addCleanup(client.close)
        d = loop.run(defer.Deferred.fromCoroutine(client.read_values()))
        failure = self.failureResultOf(d, ArgumentError)
        self.assertIn("B-route ID", str(failure.value))


class HardeningTests(SynchronousTestCase):
    """Recovery paths found in review: late descriptors, rate limit, a moved meter."""

    def test_lateDescriptorAfterEvent22(self):
        """A PAN descriptor printed just after EVENT 22 still counts (captures.py §13)."""
        from tests.sktesting import connect
        proto, transport, clock, heard = connect()
        client = C.BRouteClient(proto, CREDS, clock, dialect=Dialect.STANDARD)
        self.addCleanup(client.close)
        d = defer.Deferred.fromCoroutine(
            client.discovery.scan([0x3B], steps.Budget(clock, 60), durations=(6,)))
        self.assertIn(b"SKSCAN 2 04000000 6", transport.value())
        me = b"FE80:0000:0000:0000:021D:1290:1234:5678"
        proto.dataReceived(b"OK\r\nEVENT 22 " + me + b"\r\n")
        clock.advance(0.4)
        proto.dataReceived(b"EVENT 20 " + me + b"\r\nEPANDESC\r\n  Channel:3B\r\n"
                           b"  Channel Page:09\r\n  Pan ID:8888\r\n  Addr:001D129012345678\r\n"
                           b"  LQI:B2\r\n  PairID:" + DEFAULT_ID[-8:].encode() + b"\r\n")
        clock.advance(1)
        found = self.successResultOf(d)
        self.assertEqual([(f.channel, f.pan_id) for f in found], [(0x3B, 0x8888)])

    def test_lateDescriptorFromEmulator(self):
        """
        Scanning only the meter's channel, with the module describing it after
        EVENT 22, finds the meter at the first duration (no second scan).
        """
        loop = Loop(late_pandesc=1.0)
        self.addCleanup(loop.stop)
        client = C.BRouteClient(loop.connect(), CREDS, loop.clock,
                                link=MeterLink(channel=loop.emulator.channel))
        self.addCleanup(client.close)
        reading = self.successResultOf(loop.run(defer.Deferred.fromCoroutine(
            client.read_values())))
        self.assertEqual(reading.power_w, truth_of(loop, M.POWER).value)
        self.assertEqual(loop.sent.count("SKSCAN"), 1)

    def test_rateLimitedOneShot(self):
        """
        A run that finds the module's send-restricted flag set stops with
        RateLimited instead of joining (a join would be cancelled too).
        """
        loop = Loop()
        self.addCleanup(loop.stop)
        first = C.BRouteClient(loop.connect(), CREDS, loop.clock)
        self.successResultOf(loop.run(defer.Deferred.fromCoroutine(first.read_values())))
        first.close()
        loop.disconnect()
        # The limit engaged while no client had the port (EVENT 32 went unseen).
        loop.emulator.budget.budget = 1e-6
        loop.emulator._transmit(14)
        self.assertEqual(loop.emulator.registers[0xFB], 1)
        del loop.sent[:]
        second = C.BRouteClient(loop.connect(), CREDS, loop.clock, link=first.link)
        self.addCleanup(second.close)
        d = loop.run(defer.Deferred.fromCoroutine(second.read_values()))
        self.failureResultOf(d, errors.RateLimited)
        self.assertNotIn("SKJOIN", loop.sent)
        self.assertLessEqual(loop.sent.count("SKSENDTO"), 2)

    def test_movedMeterFoundAgain(self):
        """After repeated failed joins with the saved link, the meter is scanned for anew."""
        loop = Loop(channel=0x21)
        self.addCleanup(loop.stop)
        first = C.BRouteClient(loop.connect(), CREDS, loop.clock)
        self.successResultOf(loop.run(defer.Deferred.fromCoroutine(first.read_values())))
        first.close()
        link = first.link
        loop.stop()
        moved = Loop(clock=loop.clock, channel=0x30)  # same meter, another channel
        self.addCleanup(moved.stop)
        results = []
        for run in range(4):
            client = C.BRouteClient(moved.connect(), CREDS, moved.clock, link=link)
            d = moved.run(defer.Deferred.fromCoroutine(
                client.read_values(budget=steps.Budget(moved.clock, 60))))
            d.addBoth(results.append)
            client.close()
            moved.disconnect()
            link = client.link
            if isinstance(results[-1], model.Reading):
                break
        self.assertIsInstance(results[-1], model.Reading)
        self.assertEqual(link.channel, 0x30)
        self.assertEqual(link.join_failures, 0)
        for r in results[:-1]:
            self.assertIsInstance(r.value, (errors.AuthenticationFailed, errors.StepTimeout))


class _Texts:
    def __init__(self, events, format_event):
        self.events, self.format_event = events, format_event

    def __call__(self):
        return [self.format_event(e) for e in self.events]


class _FieldBase:
    """
    Situations found in the field (busy module, EVENT 29 during a run, a meter
    that moved to another channel), in each dialect.
    """

    dialect = Dialect.STANDARD

    def loop(self, **knobs):
        loop = Loop(dialect=self.dialect, **knobs)
        self.addCleanup(loop.stop)
        return loop

    def attempt(self, loop, client, seconds=25.0, energy=False):
        """One run of C{seconds} budget; its result or failure."""
        d = loop.run(defer.Deferred.fromCoroutine(
            client.read_values(energy=energy, budget=steps.Budget(loop.clock, seconds))))
        self.assertTrue(d.called, "the run never ended")
        result = []
        d.addBoth(result.append)
        return result[0]

    def warm(self, loop):
        """A first run that joins; returns the link it learnt."""
        first = C.BRouteClient(loop.connect(), CREDS, loop.clock)
        self.assertIsInstance(self.attempt(loop, first, 120), model.Reading)
        first.close()
        loop.disconnect()
        return first.link

    def test_busyModuleRetried(self):
        """FAIL ER10 on SKSENDTO is retried after a pause and counted; values stay true."""
        loop = self.loop(busy=0.5, seed=3)
        client = C.BRouteClient(loop.connect(), CREDS, loop.clock)
        self.addCleanup(client.close)
        for _ in range(8):
            reading = self.attempt(loop, client, 55)
            self.assertIsInstance(reading, model.Reading)
            self.assertEqual(reading.power_w, truth_of(loop, M.POWER).value)
            loop.clock.advance(30)
        self.assertGreater(client.busy_retries, 0)

    def test_expiryDuringRunWaitsForReauthentication(self):
        """
        EVENT 29 just before a Get: the run waits for the module's own EVENT 25
        (8 s here), then reads; it never sends SKJOIN.
        """
        loop = self.loop(reauth_delay=8.0)
        link = self.warm(loop)
        del loop.sent[:]
        client = C.BRouteClient(loop.connect(), CREDS, loop.clock, link=link)
        self.addCleanup(client.close)
        events = []
        client.sk.add_listener(
            lambda v: isinstance(v, V.Event) and events.append((v.num, loop.clock.seconds())))
        sends = []
        loop.write_observers.append(
            lambda data: data.startswith(b"SKSENDTO") and sends.append(loop.clock.seconds()))
        loop.emulator.expire_session()
        loop.flush()
        reading = self.attempt(loop, client)
        self.assertIsInstance(reading, model.Reading)
        self.assertEqual(reading.power_w, truth_of(loop, M.POWER).value)
        self.assertNotIn("SKJOIN", loop.sent)
        reauth = [t for num, t in events if num == 0x25]
        self.assertEqual(len(reauth), 1)
        self.assertEqual(len(sends), 1)
        self.assertGreaterEqual(sends[0], reauth[0])

    def test_expiryDuringGet(self):
        """EVENT 29 while the Get is on the air (EVENT 21 02 follows): wait, then read."""
        loop = self.loop(reauth_delay=6.0)
        link = self.warm(loop)
        del loop.sent[:]
        client = C.BRouteClient(loop.connect(), CREDS, loop.clock, link=link)
        self.addCleanup(client.close)
        loop.clock.callLater(0.01, loop.emulator.expire_session)
        reading = self.attempt(loop, client)
        self.assertIsInstance(reading, model.Reading)
        self.assertNotIn("SKJOIN", loop.sent)

    def test_movedMeterSameRun(self):
        """
        The meter moved to another channel: with a 70 s budget the run that
        finds the saved link failing (EVENT 24 after ~40 s) scans and reads.
        """
        loop = self.loop()
        link = self.warm(loop)
        old = link.where()
        loop.emulator.move_meter()
        client = C.BRouteClient(loop.connect(), CREDS, loop.clock, link=link)
        self.addCleanup(client.close)
        logged = []
        from twisted.logger import globalLogPublisher, formatEvent
        observer = logged.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        reading = self.attempt(loop, client, 70)
        self.assertIsInstance(reading, model.Reading)
        self.assertEqual(reading.power_w, truth_of(loop, M.POWER).value)
        self.assertEqual(link.where(), (loop.emulator.channel, loop.emulator.pan_id,
                                        loop.emulator.meter_ip))
        self.assertNotEqual(link.where(), old)
        self.assertEqual((link.moved_from_channel, link.moved_from_ipaddr), (old[0], old[2]))
        moved = [formatEvent(e) for e in logged if "the meter moved" in formatEvent(e)]
        self.assertEqual(len(moved), 1)
        self.assertIn("%02X" % loop.emulator.channel, moved[0])

    def logged(self):
        """The text of every event logged from now on."""
        from twisted.logger import formatEvent, globalLogPublisher
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return _Texts(events, formatEvent)

    def test_movedMeterNextRuns(self):
        """
        With a 25 s budget no run sees the refusal (about 40 s): two joins
        that time out say nothing of a move; the next run scans, reads, and
        only then says that the meter moved.
        """
        loop = self.loop()
        link = self.warm(loop)
        loop.emulator.move_meter()
        logged = self.logged()
        results = []
        for run in range(3):
            client = C.BRouteClient(loop.connect(), CREDS, loop.clock, link=link)
            results.append(self.attempt(loop, client, 25))
            client.close()
            loop.disconnect()
            link = client.link
            if run < 2:
                results[-1].trap(errors.StepTimeout)
                self.assertNotIn("moved", str(results[-1].value))
                self.assertEqual([t for t in logged() if "moved" in t], [])
                loop.advance(35)  # mackerel-agent runs the plugin once a minute
        self.assertIsInstance(results[-1], model.Reading)
        self.assertEqual(link.channel, loop.emulator.channel)
        self.assertEqual((link.join_timeouts, link.join_failures), (0, 0))
        self.assertEqual(len([t for t in logged() if "the meter moved" in t]), 1)

    def test_joinLeftInTheModuleIsWaitedOut(self):
        """
        A run right after one whose join timed out (the module still busy with
        it, FAIL ER10 to SKJOIN and SKSCAN) waits for the module and reads
        within its budget: no rescan, no word of a moved meter.
        """
        loop = self.loop()
        link = self.warm(loop)
        old = (loop.emulator.channel, loop.emulator.pan_id)
        loop.emulator.move_meter()  # out of reach for a while: the join drags on
        first = C.BRouteClient(loop.connect(), CREDS, loop.clock, link=link)
        self.attempt(loop, first, 25).trap(errors.StepTimeout)
        first.close()
        loop.disconnect()
        loop.emulator.move_meter(*old)  # back in reach
        loop.advance(5)
        self.assertTrue(loop.emulator._joining)
        logged = self.logged()
        del loop.sent[:]
        second = C.BRouteClient(loop.connect(), CREDS, loop.clock, link=first.link)
        self.addCleanup(second.close)
        reading = self.attempt(loop, second, 25)
        self.assertIsInstance(reading, model.Reading)
        self.assertEqual(reading.power_w, truth_of(loop, M.POWER).value)
        self.assertNotIn("SKSCAN", loop.sent)
        self.assertEqual([t for t in logged() if "moved" in t], [])
        self.assertTrue([t for t in logged() if "FAIL ER10" in t])

    def test_pinnedChannelIsAHint(self):
        """
        A --channel that names where the meter was no longer cages it: the run
        scans all channels, and later runs with the same stale flag keep the
        saved link (no scan).
        """
        loop = self.loop()
        link = self.warm(loop)
        pinned = link.channel
        loop.emulator.move_meter()
        client = C.BRouteClient(loop.connect(), CREDS, loop.clock,
                                link=link.with_overrides(channel=pinned))
        self.assertIsInstance(self.attempt(loop, client, 120), model.Reading)
        client.close()
        loop.disconnect()
        saved = client.link
        self.assertEqual(saved.channel, loop.emulator.channel)
        del loop.sent[:]
        again = C.BRouteClient(loop.connect(), CREDS, loop.clock,
                               link=saved.with_overrides(channel=pinned))
        self.addCleanup(again.close)
        self.assertIsInstance(self.attempt(loop, again), model.Reading)
        self.assertEqual(loop.sent.count("SKSCAN"), 0)
        self.assertEqual(loop.sent.count("SKSENDTO"), 1)


class StandardFieldTests(_FieldBase, SynchronousTestCase):
    dialect = Dialect.STANDARD


class DSEFieldTests(_FieldBase, SynchronousTestCase):
    dialect = Dialect.DSE


class ReplacedMeterTests(SynchronousTestCase):
    def test_scaleOfTheNewMeter(self):
        """
        A meter replaced by one with another unit (E1): the scan that finds it
        drops the old scale, so kWh are the new meter's, exactly.
        """
        loop = Loop(unit=0x01, seed=1)
        self.addCleanup(loop.stop)
        first = C.BRouteClient(loop.connect(), CREDS, loop.clock)
        self.successResultOf(loop.run(defer.Deferred.fromCoroutine(
            first.read_values(energy=True))))
        first.close()
        self.assertEqual(first.link.unit, "0.1")
        loop.stop()
        new = Loop(clock=loop.clock, unit=0x02, seed=2)  # another meter, another MAC
        self.addCleanup(new.stop)
        link = first.link
        for _ in range(3):
            client = C.BRouteClient(new.connect(), CREDS, new.clock, link=link)
            d = new.run(defer.Deferred.fromCoroutine(client.read_values(
                energy=True, budget=steps.Budget(new.clock, 120))))
            result = []
            d.addBoth(result.append)
            client.close()
            new.disconnect()
            link = client.link
            if isinstance(result[0], model.Reading):
                break
            new.clock.advance(60)
        reading = result[0]
        self.assertIsInstance(reading, model.Reading)
        self.assertEqual(link.unit, "0.01")
        self.assertEqual(reading.energy_normal_kwh, truth_of(new, M.ENERGY_NORMAL).kwh)


class BusyForGoodTests(SynchronousTestCase):
    def test_busyForGoodEscalates(self):
        """
        A module that answers FAIL ER10 to every SKSENDTO is not retried for
        ever: after three busy answers in a row a Get counts as unanswered,
        and the run ends with the cause in its message.
        """
        for dialect in Dialect:
            loop = Loop(dialect=dialect)
            self.addCleanup(loop.stop)
            first = C.BRouteClient(loop.connect(), CREDS, loop.clock)
            self.successResultOf(loop.run(defer.Deferred.fromCoroutine(first.read_values())))
            first.close()
            loop.disconnect()
            loop.emulator.config.busy = 1.0
            del loop.sent[:]
            client = C.BRouteClient(loop.connect(), CREDS, loop.clock, link=first.link)
            self.addCleanup(client.close)
            d = loop.run(defer.Deferred.fromCoroutine(
                client.read_values(budget=steps.Budget(loop.clock, 60))))
            failure = self.failureResultOf(d, errors.ReadFailed, errors.StepTimeout)
            self.assertIn("ER10", str(failure.value))
            self.assertIn("SKSREG", loop.sent)  # the send-restricted flag was read
            self.assertLess(loop.sent.count("SKSENDTO"), 25)


class LostByteInJoinTests(SynchronousTestCase):
    """
    One byte of the module's answer to a serial-only step of the join is
    lost (a UART overrun): the step is sent again, not the join given up.
    """

    def test_joinStepSentAgain(self):
        """
        A one-shot read whose join loses the answer to one of its serial-only
        steps succeeds one command timeout later, with that step sent once
        more after the resync (SKVER) and nothing else sent again.
        """
        from collections import Counter
        timeout = commands.sk_info().timeout
        for dialect in Dialect:
            for drop in ("", "SKSETRBID", "SKSETPWD", "SKSREG S2", "SKSREG S3", "SKLL64"):
                loop = Loop(dialect=dialect, drop_byte=drop)
                self.addCleanup(loop.stop)
                client = C.BRouteClient(loop.connect(), CREDS, loop.clock)
                self.addCleanup(client.close)
                d = loop.run(defer.Deferred.fromCoroutine(
                    client.read_values(budget=steps.Budget(loop.clock, 60))))
                reading = self.successResultOf(d)
                self.assertEqual(reading.power_w, truth_of(loop, M.POWER).value)
                if not drop:
                    clean, clean_sent = loop.clock.seconds(), Counter(loop.sent)
                    continue
                self.assertLessEqual(loop.clock.seconds(), clean + timeout + 1, (dialect, drop))
                self.assertEqual(Counter(loop.sent) - clean_sent,
                                 Counter({drop.split()[0]: 1, "SKVER": 1}), (dialect, drop))
                self.assertEqual(loop.sent.count("SKJOIN"), 1)
