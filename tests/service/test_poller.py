"""
Tests for L{smartmeter_tx.service.poller}: the poller, its holds, rejoin backoff and
port reopening, run against the emulator on a task.Clock.
"""

import random
from decimal import Decimal

from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.session import join
from smartmeter_tx.session import config
from smartmeter_tx.service.backoff import Backoff
from smartmeter_tx.echonet import frame as F
from smartmeter_tx.echonet import meter as M
from smartmeter_tx.emulator.module import DEFAULT_ID, DEFAULT_PASSWORD
from smartmeter_tx.session.linkstate import HOLD_EXPIRY, LinkState
from smartmeter_tx.session.join import Joiner
from smartmeter_tx.service.poller import MeterPoller, PollSchedule
from smartmeter_tx.sk.values import Dialect
from tests.emuloop import Loop

CREDS = join.Credentials(DEFAULT_ID, DEFAULT_PASSWORD)


def make_poller(loop, interval=30, seed=0, **kw):
    """A MeterPoller on C{loop} with the emulator's credentials."""
    return MeterPoller(loop.connect, config.SessionConfig(CREDS), loop.clock,
                       PollSchedule(interval=interval, energy_interval=300),
                       rng=random.Random(seed), wall_clock=loop.clock.seconds, **kw)


def start_poller(testcase, loop, interval=30, seed=0, **kw):
    """A started MeterPoller on C{loop}, stopped when the test ends."""
    poller = make_poller(loop, interval, seed, **kw)
    poller.startService()
    testcase.addCleanup(poller.stopService)
    return poller


class BackoffTests(SynchronousTestCase):
    def test_growsWithJitterAndCap(self):
        """Backoff doubles per failure, jitters within [0.5, 1.5) and caps."""
        b = Backoff(10.0, 100.0, random.Random(1))
        delays = [b.next_delay() for _ in range(8)]
        for n, d in enumerate(delays):
            nominal = min(100.0, 10.0 * 2 ** n)
            self.assertTrue(0.5 * nominal <= d < 1.5 * nominal, (n, d))
        self.assertLess(delays[-1], 150.0)
        b.reset()
        self.assertLess(b.next_delay(), 15.0)


class _PollerBase:
    dialect = Dialect.STANDARD
    knobs: dict = {}

    def setUp(self):
        self.loop = Loop(dialect=self.dialect, **self.knobs)
        self.addCleanup(self.loop.stop)
        self.readings = []
        self.poller = make_poller(self.loop, on_reading=lambda r, w: self.readings.append(r))
        self.poller.startService()
        self.addCleanup(self.stop)

    def stop(self):
        if self.poller.running:
            self.poller.stopService()

    def assertAllTrue(self):
        """Every power reading equals a value the emulated meter sent."""
        sent = {r.value for r in self.loop.emulator.truth if r.epc == M.POWER}
        powers = [r["power_w"] for r in self.readings if "power_w" in r]
        self.assertTrue(powers)
        for p in powers:
            self.assertIn(p, sent)

    def test_pollsAndJoinsOnce(self):
        """The poller joins once, then reads every interval with one SKSENDTO each."""
        self.loop.advance(20)
        self.assertTrue(self.poller.state.session_up)
        joins = self.loop.sent.count("SKJOIN")
        before = self.loop.sent.count("SKSENDTO")
        answered = self.poller.stats.polls_answered
        self.loop.advance(300)
        self.assertEqual(self.loop.sent.count("SKJOIN"), joins)
        self.assertEqual(self.poller.stats.polls_answered - answered, 10)
        self.assertEqual(self.loop.sent.count("SKSENDTO") - before, 10)
        self.assertAllTrue()
        self.assertIsNotNone(self.poller.store.latest)

    def test_energyEveryInterval(self):
        """Energy is read at start and every energy interval, exactly as the meter counts."""
        self.loop.advance(20)
        first = [r for r in self.readings if "energy_normal_kwh" in r]
        self.assertEqual(len(first), 1)
        truth = [r.kwh for r in self.loop.emulator.truth if r.epc == M.ENERGY_NORMAL]
        # The record is the data log's JSON form: the exact decimal as a number.
        self.assertEqual(Decimal(str(first[0]["energy_normal_kwh"])), truth[-1])
        self.loop.advance(600)
        self.assertEqual(len([r for r in self.readings if "energy_normal_kwh" in r]), 3)

    def test_expiryHoldsThenResumes(self):
        """EVENT 29 holds polls until the module's own re-authentication (EVENT 25)."""
        self.loop.advance(20)
        joins = self.loop.sent.count("SKJOIN")
        self.loop.emulator.expire_session()
        self.loop.pump.flush()
        self.assertTrue(self.poller.held == HOLD_EXPIRY or self.poller.state.session_up)
        self.loop.advance(120)
        self.assertFalse(self.poller.held == HOLD_EXPIRY)
        self.assertTrue(self.poller.state.session_up)
        self.assertEqual(self.loop.sent.count("SKJOIN"), joins)
        answered = self.poller.stats.polls_answered
        self.loop.advance(60)
        self.assertEqual(self.poller.stats.polls_answered - answered, 2)

    def test_peerTerminationRejoins(self):
        """EVENT 26 (peer ended the session) makes the poller join again and go on."""
        self.loop.advance(20)
        joins = self.loop.sent.count("SKJOIN")
        self.loop.emulator.terminate_by_peer()
        self.loop.advance(200)
        self.assertEqual(self.loop.sent.count("SKJOIN"), joins + 1)
        self.assertTrue(self.poller.state.session_up)
        self.assertAllTrue()

    def test_unplugReopens(self):
        """An unplugged port is reopened with backoff and polling carries on."""
        self.loop.advance(20)
        answered = self.poller.stats.polls_answered
        self.loop.unplugged = True
        self.loop.disconnect()
        self.loop.emulator.power_cycle()
        self.loop.advance(20)
        self.assertIsNone(self.poller.client)
        self.assertEqual(self.poller.stats.reopens, 0)  # tries, but nothing to open
        self.loop.unplugged = False
        self.loop.advance(120)
        self.assertIsNotNone(self.poller.client)
        self.assertEqual(self.poller.stats.reopens, 1)
        self.assertGreater(self.poller.stats.polls_answered, answered + 1)
        self.assertAllTrue()

    def test_stopCleanly(self):
        """stopService stops polling and leaves no timer of the poller behind."""
        self.loop.advance(20)
        self.poller.stopService()
        sends = self.loop.sent.count("SKSENDTO")
        self.loop.advance(300)
        self.assertEqual(self.loop.sent.count("SKSENDTO"), sends)


    def test_stopWaitsForThePollAndThePort(self):
        """
        stopService during a poll cancels it (its SKSENDTO abandoned, nothing
        more on the air) and fires only once the poll has ended and the
        serial port is closed; the link is saved then.
        """
        self.loop.advance(20)
        self.assertTrue(self.poller.state.session_up)
        # The next poll: its SKSENDTO on the wire, the answer not yet pumped.
        self.loop.clock.advance(10)
        self.assertTrue(self.poller._polling)
        proto = self.poller.client.sk
        sends = self.loop.sent.count("SKSENDTO")
        saved = []
        self.poller._save = lambda: saved.append(proto.connected_now)
        stopped = self.poller.stopService()
        self.assertNoResult(stopped)  # the port has not said it is closed yet
        self.assertFalse(self.poller._polling)
        self.loop.flush()
        self.assertIsNone(self.successResultOf(stopped))
        self.assertFalse(proto.connected_now)
        self.assertEqual(saved, [False])
        self.loop.advance(300)
        self.assertEqual(self.loop.sent.count("SKSENDTO"), sends)
        self.assertEqual(self.poller.stats.polls_failed, 0)


class StandardPollerTests(_PollerBase, SynchronousTestCase):
    pass


class DSEPollerTests(_PollerBase, SynchronousTestCase):
    dialect = Dialect.DSE


class RateLimitTests(SynchronousTestCase):
    def test_event32HoldsUntil33(self):
        """EVENT 32 holds every send until EVENT 33; the episode is counted."""
        loop = Loop(tx_budget=0.1, tx_window=600.0)
        self.addCleanup(loop.stop)
        poller = start_poller(self, loop, interval=10)
        held_sends = None
        for _ in range(200):
            loop.advance(10)
            if poller.state.rate_limited:
                held_sends = loop.sent.count("SKSENDTO")
                break
        self.assertIsNotNone(held_sends, "the transmit budget was never exhausted")
        self.assertEqual(poller.state.rate_limited_count, 1)
        loop.advance(60)
        if poller.state.rate_limited:
            self.assertEqual(loop.sent.count("SKSENDTO"), held_sends)
            self.assertGreater(poller.stats.polls_skipped, 0)
        loop.advance(1200)
        self.assertFalse(poller.state.rate_limited)
        self.assertGreater(loop.sent.count("SKSENDTO"), held_sends)


class FailedReauthTests(SynchronousTestCase):
    def test_event24AfterExpiryRejoins(self):
        """When the module's own re-authentication fails (EVENT 24), the poller joins."""
        loop = Loop(reauth_fail=1.0)
        self.addCleanup(loop.stop)
        poller = start_poller(self, loop, interval=30)
        loop.advance(20)
        joins = loop.sent.count("SKJOIN")
        loop.emulator.expire_session()
        loop.advance(400)
        self.assertGreater(loop.sent.count("SKJOIN"), joins)
        self.assertTrue(poller.state.session_up)


class FaultScenarioTests(SynchronousTestCase):
    """
    The service end to end on the emulator, on a task.Clock: 10 % frame loss,
    stray lines, EVENT 29, an EVENT 32/33 episode and an unplug/replug.
    """

    def test_readingsContinueAndAreTrue(self):
        """
        Readings continue through every fault, each equals the meter's answer to
        its own request, every data-log line is JSON and both endpoints answer.
        """
        import json
        import os

        from twisted.web.test.requesthelper import DummyRequest

        from smartmeter_tx.service.datalog import DataLog
        from smartmeter_tx.outputs.web import make_root

        for dialect in Dialect:
            loop = Loop(dialect=dialect, loss=0.1, garbage=0.05, seed=7)
            self.addCleanup(loop.stop)
            logdir = self.mktemp()
            datalog = DataLog(logdir)
            self.addCleanup(datalog.close)
            checked = []

            def on_reading(record, when, loop=loop, datalog=datalog):
                datalog.write(record, when)
                if "power_w" not in record:
                    return
                # The newest E7 the meter put on the air before the reading:
                # an answer that was lost on the way is never recorded, and a
                # stale one never matches a newer request.
                answers = [r for r in loop.emulator.truth if r.epc == M.POWER and r.at <= when]
                self.assertEqual(record["power_w"], answers[-1].value)
                checked.append(when)

            poller = start_poller(self, loop, seed=3, on_reading=on_reading)
            loop.advance(600)
            loop.emulator.expire_session()            # EVENT 29, then re-auth
            loop.advance(600)
            budget = loop.emulator.budget
            budget.budget, saved = 0.01, budget.budget  # EVENT 32 on the next send
            loop.advance(120)
            self.assertEqual(poller.state.rate_limited_count, 1)
            budget.budget = saved
            loop.advance(3600)                         # EVENT 33 within the window
            self.assertFalse(poller.state.rate_limited)
            loop.unplugged = True                      # the dongle is pulled
            loop.disconnect()
            loop.emulator.power_cycle()
            loop.advance(120)
            loop.unplugged = False
            replug = loop.clock.seconds()
            loop.advance(600)
            after = [t for t in checked if t > replug]
            self.assertTrue(after, "no reading after the replug")
            self.assertLessEqual(after[0] - replug, 2 * 30)
            s = poller.stats
            self.assertEqual(len(checked), s.polls_answered)
            self.assertGreater(s.polls_skipped, 30)  # the EVENT 32 hold lasted a while
            self.assertGreaterEqual(s.polls_answered, 0.85 * (s.polls_answered + s.polls_failed))
            self.assertGreaterEqual(s.frames_sent, s.polls_answered)
            self.assertGreater(poller.stats.reopens, 0)
            lines = 0
            for name in os.listdir(logdir):
                with open(os.path.join(logdir, name)) as f:
                    for line in f:
                        json.loads(line)
                        lines += 1
            self.assertEqual(lines, datalog.lines_written)
            root = make_root(poller.view(), loop.clock.seconds)
            for path in (b"latest", b"metrics"):
                request = DummyRequest([path])
                body = root.getChildWithDefault(path, request).render(request)
                self.assertIn(request.responseCode, (None, 200))
                self.assertTrue(body)
            request = DummyRequest([b"latest"])
            latest = json.loads(root.getChildWithDefault(b"latest", request).render(request))
            self.assertEqual(latest["power_w"], poller.store.latest.power_w)


class SilentMeterTests(SynchronousTestCase):
    def test_rejoinAfterSilentPolls(self):
        """With the session believed up but the meter silent, the poller rejoins after 3 polls."""
        loop = Loop()
        self.addCleanup(loop.stop)
        poller = start_poller(self, loop, interval=30)
        loop.advance(20)
        self.assertTrue(poller.state.session_up)
        joins = loop.sent.count("SKJOIN")
        loop.emulator.radio.loss = 1.0  # every exchange lost from now on
        loop.advance(2 * 30)
        self.assertEqual(loop.sent.count("SKJOIN"), joins)  # two silent polls: keep trying
        self.assertTrue(poller.state.session_up)
        loop.advance(30)
        self.assertFalse(poller.state.session_up)  # the third: the session is given up
        loop.emulator.radio.loss = 0.0
        loop.advance(60)
        self.assertEqual(loop.sent.count("SKJOIN"), joins + 1)
        self.assertTrue(poller.state.session_up)
        answered = poller.stats.polls_answered
        loop.advance(60)
        self.assertEqual(poller.stats.polls_answered, answered + 2)


class HoldRecoveryTests(SynchronousTestCase):
    """Holds whose releasing event never comes do not stop the service for good."""

    def start(self, **knobs):
        loop = Loop(**knobs)
        self.addCleanup(loop.stop)
        poller = start_poller(self, loop, interval=30)
        loop.advance(20)
        self.assertTrue(poller.state.session_up)
        return loop, poller

    def test_rateLimitThenUnplug(self):
        """EVENT 32, then the dongle is replugged (power-cycled): polling resumes."""
        loop, poller = self.start()
        loop.emulator.budget.budget = 1e-6
        loop.advance(40)
        self.assertTrue(poller.state.rate_limited)
        loop.unplugged = True
        loop.disconnect()
        loop.emulator.power_cycle()
        loop.emulator.budget.budget = 360.0
        loop.emulator.budget.try_release(loop.emulator.device_time() + 7200)
        loop.unplugged = False
        answered = poller.stats.polls_answered
        loop.advance(300)
        self.assertFalse(poller.state.rate_limited)
        self.assertGreater(poller.stats.polls_answered, answered + 5)

    def test_expiryWithoutReauth(self):
        """EVENT 29 with no re-authentication after it: the poller joins itself after a minute."""
        loop, poller = self.start()
        joins = loop.sent.count("SKJOIN")
        loop.emulator._event(0x29, loop.emulator.meter_ip)  # the module prints 29, then nothing
        loop.flush()
        self.assertTrue(poller.held == HOLD_EXPIRY)
        loop.advance(LinkState.EXPIRY_HOLD_MAX + 60)
        self.assertFalse(poller.held == HOLD_EXPIRY)
        self.assertEqual(loop.sent.count("SKJOIN"), joins + 1)
        answered = poller.stats.polls_answered
        loop.advance(60)
        self.assertEqual(poller.stats.polls_answered, answered + 2)

    def test_repeatedExpiryWithoutReauth(self):
        """
        EVENT 29 every 30 s and never EVENT 25: the hold counts from the first,
        the poller joins after the hold's bound, and the episode is one line.
        """
        from twisted.logger import formatEvent, globalLogPublisher
        loop, poller = self.start(reauth_stuck=30)
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        said = []
        poller.client.sk.add_listener(
            lambda v: getattr(v, "num", None) == 0x29 and said.append(loop.clock.seconds()))
        joins = loop.sent.count("SKJOIN")
        loop.emulator.expire_session()
        first = loop.clock.seconds()
        # The hold's bound, then at most one poll interval until a poll sees
        # it over, and the join (3.3 s).
        loop.advance(LinkState.EXPIRY_HOLD_MAX + 30 + 5)
        self.assertEqual(loop.sent.count("SKJOIN"), joins + 1)
        self.assertTrue(poller.state.session_up)
        self.assertIsNone(poller.held)
        self.assertEqual([t - first for t in said], [0, 30, 60])  # then the join ended it
        texts = [formatEvent(e) for e in logged]
        self.assertEqual(len([t for t in texts if "lifetime expired" in t]), 1)
        self.assertEqual(len([t for t in texts if "no re-authentication" in t]), 1)
        answered = poller.stats.polls_answered
        loop.advance(60)
        self.assertEqual(poller.stats.polls_answered, answered + 2)

    def test_missedEvent33(self):
        """An EVENT 32 hold ends when the module's SFB flag reads 0, even without EVENT 33."""
        loop, poller = self.start()
        loop.emulator._event(0x32, loop.emulator.module_ip)  # a stray or stale EVENT 32
        loop.flush()
        self.assertTrue(poller.state.rate_limited)
        loop.advance(LinkState.RATE_CHECK_INTERVAL + 60)
        self.assertFalse(poller.state.rate_limited)
        self.assertIn("SKSREG", loop.sent)
        answered = poller.stats.polls_answered
        loop.advance(60)
        self.assertEqual(poller.stats.polls_answered, answered + 2)


class FirstGetAfterJoinTests(SynchronousTestCase):
    """
    The client's wait for the meter's D5 instance list and the service's own
    frame listener (EA/EB) coexist: the service's first Get after a join goes
    out as soon as the D5 INF arrives, as the one-shot's does.
    """

    def test_getFollowsInstanceList(self):
        """On the loopback clock, the first SKSENDTO follows EVENT 25 + D5 within 0.1 s."""
        for dialect in Dialect:
            loop = Loop(dialect=dialect)
            self.addCleanup(loop.stop)
            times, sends = {}, []

            def wrote(data, loop=loop, sends=sends):
                if data.startswith(b"SKSENDTO"):
                    sends.append(loop.clock.seconds())
            loop.write_observers.append(wrote)
            poller = make_poller(loop)

            def heard(value, loop=loop, times=times):
                if getattr(value, "num", None) == 0x25:
                    times.setdefault("25", loop.clock.seconds())

            def frame(f, rx, loop=loop, times=times):
                if f.seoj == F.NODE_PROFILE and M.INSTANCE_LIST in f.epcs:
                    times.setdefault("d5", loop.clock.seconds())
            poller.startService()
            self.addCleanup(poller.stopService)
            poller.client.sk.add_listener(heard)
            poller.client.add_frame_listener(frame)
            loop.advance(30)
            self.assertTrue(poller.state.session_up, dialect)
            self.assertEqual(set(times), {"25", "d5"}, dialect)
            times["get"] = min(t for t in sends if t >= times["25"])
            self.assertGreaterEqual(times["get"], times["d5"])
            self.assertLessEqual(times["get"] - times["d5"], 0.1, (dialect, times))
            self.assertLess(times["get"] - times["25"], Joiner.INSTANCE_LIST_WAIT,
                            (dialect, times))


class LostByteInJoinTests(SynchronousTestCase):
    """
    One byte of the module's answer to a serial-only step of the service's
    first join is lost (a UART overrun).
    """

    def first_reading(self, dialect, drop, saved):
        """When the service's first reading came, and the emulator's loop."""
        from smartmeter_tx.session.state import MeterLink
        loop = Loop(dialect=dialect, drop_byte=drop)
        self.addCleanup(loop.stop)
        e = loop.emulator
        link = (MeterLink(channel=e.channel, pan_id=e.pan_id, ipaddr=e.meter_ip, mac=e.meter_mac)
                if saved else MeterLink())
        times = []
        poller = MeterPoller(loop.connect, config.SessionConfig(CREDS, link=link), loop.clock,
                             PollSchedule(interval=30, energy_interval=300),
                             rng=random.Random(0), wall_clock=loop.clock.seconds,
                             on_reading=lambda r, w: times.append(w))
        poller.startService()
        self.addCleanup(poller.stopService)
        loop.advance(150)
        self.assertTrue(times, (dialect, drop))
        return times[0], loop

    def test_firstReadingOneTimeoutLater(self):
        """
        The first reading comes one command timeout after it comes without
        the fault, after one join and no scan but the one a new meter needs.
        """
        from smartmeter_tx.sk.commands import sk_info
        timeout = sk_info().timeout
        cases = ((True, ("SKSETRBID", "SKSETPWD", "SKSREG S2", "SKSREG S3")),
                 (False, ("SKSETPWD", "SKLL64", "SKSREG S3")))
        for dialect in Dialect:
            for saved, drops in cases:
                clean, _ = self.first_reading(dialect, "", saved)
                for drop in drops:
                    at, loop = self.first_reading(dialect, drop, saved)
                    self.assertLessEqual(at, clean + timeout + 1, (dialect, saved, drop))
                    self.assertEqual((loop.sent.count("SKJOIN"), loop.sent.count("SKSCAN")),
                                     (1, 0 if saved else 1), (dialect, saved, drop))


class RejoinCountTests(SynchronousTestCase):
    def test_firstJoinIsNoRejoin(self):
        """smartmeter_rejoins counts joins after a session was up, not the first join."""
        loop = Loop()
        self.addCleanup(loop.stop)
        poller = start_poller(self, loop, interval=30)
        loop.advance(20)
        self.assertTrue(poller.state.session_up)
        self.assertEqual(loop.sent.count("SKJOIN"), 1)
        self.assertEqual(poller.stats.rejoins, 0)
        loop.emulator.terminate_by_peer()
        loop.advance(200)
        self.assertEqual(loop.sent.count("SKJOIN"), 2)
        self.assertEqual(poller.stats.rejoins, 1)


class _FieldServiceBase:
    """The service through a busy module and a meter that moved, per dialect."""

    dialect = Dialect.STANDARD

    def test_busyModulePollsGoOn(self):
        """FAIL ER10 on a third of the sends: polls still answer, the retries are counted."""
        loop = Loop(dialect=self.dialect, busy=0.3, seed=5)
        self.addCleanup(loop.stop)
        poller = start_poller(self, loop)
        loop.advance(600)
        s = poller.stats
        self.assertGreater(s.busy_retries, 0)
        self.assertGreaterEqual(s.polls_answered, 19)
        self.assertLessEqual(s.polls_failed, 1)

    def test_movedMeterFoundAgain(self):
        """The meter moves channel: the service rejoins, rescans in the same join and reads on."""
        loop = Loop(dialect=self.dialect)
        self.addCleanup(loop.stop)
        poller = start_poller(self, loop)
        loop.advance(60)
        self.assertTrue(poller.state.session_up)
        old = poller.link.where()
        loop.emulator.move_meter()
        moved_at = loop.clock.seconds()
        loop.advance(400)
        self.assertTrue(poller.state.session_up)
        self.assertEqual(poller.link.where(), (loop.emulator.channel, loop.emulator.pan_id,
                                               loop.emulator.meter_ip))
        self.assertNotEqual(poller.link.where(), old)
        later = [r for r in loop.emulator.truth if r.at > moved_at and r.epc == M.POWER]
        self.assertTrue(later, "no reading after the move")
        answered = poller.stats.polls_answered
        loop.advance(60)
        self.assertEqual(poller.stats.polls_answered, answered + 2)


class StandardFieldServiceTests(_FieldServiceBase, SynchronousTestCase):
    pass


class DSEFieldServiceTests(_FieldServiceBase, SynchronousTestCase):
    dialect = Dialect.DSE


class IdentityTests(SynchronousTestCase):
    def test_identityOnlyWhenAsked(self):
        """
        With identify (MQTT on) the service learns the meter's maker and serial
        once a session; without it, it spends no frame on them.
        """
        for identify in (False, True):
            loop = Loop()
            self.addCleanup(loop.stop)
            asked = []
            loop.write_observers.append(
                lambda data, asked=asked: data.startswith(b"SKSENDTO") and b"\x8d\x00" in data
                and asked.append(data))
            poller = start_poller(self, loop, identify=identify)
            loop.advance(120)
            self.assertTrue(poller.state.session_up)
            if not identify:
                self.assertEqual((asked, poller.store.identity), ([], None))
                continue
            self.assertEqual(len(asked), 1)
            identity = poller.store.identity
            self.assertEqual(identity["mac"], loop.emulator.meter_mac)
            self.assertEqual(identity["serial"],
                             loop.emulator.meter.serial.decode("ascii").strip(" \x00") or None)
            self.assertEqual(identity["maker"], "000016")
            self.assertEqual(identity["maker_name"], "Toshiba")


class TickAccountingTests(SynchronousTestCase):
    def test_everyTickCounted(self):
        """
        Every tick of the schedule is answered, failed or skipped: the ticks
        that go by while a poll runs longer than the interval (the first
        one joins) are counted as skipped.
        """
        loop = Loop()
        self.addCleanup(loop.stop)
        poller = start_poller(self, loop, interval=2)
        loop.advance(121)  # the poll of the tick at 120 s has ended by 121 s
        s = poller.stats
        ticks = 120 // 2 + 1  # the first at start
        self.assertGreater(s.polls_skipped, 0)
        self.assertEqual(s.polls_answered + s.polls_failed + s.polls_skipped, ticks)
        self.assertEqual(poller.state.rate_limited_count, 0)


class StartLogTests(SynchronousTestCase):
    """What the service says when it starts and when it first reads."""

    def logged(self):
        from twisted.logger import formatEvent, globalLogPublisher
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return lambda: [formatEvent(e) for e in events
                        if e.get("log_namespace", "").endswith("MeterPoller")]

    def test_freshStart(self):
        """No saved meter: the start says so; the first reading says it joined."""
        loop = Loop()
        self.addCleanup(loop.stop)
        lines = self.logged()
        poller = start_poller(self, loop)
        self.assertEqual(lines()[0], "reading the module - no saved meter (the first poll looks "
                                     "for it)")
        loop.advance(20)
        power = [r.value for r in loop.emulator.truth if r.epc == M.POWER][0]
        first = [t for t in lines() if t.startswith("first reading")]
        self.assertEqual(first, [f"first reading: {power} W, after joining the meter on "
                                 f"channel {loop.emulator.channel:02X}"])
        loop.advance(120)
        self.assertEqual(len([t for t in lines() if t.startswith("first reading")]), 1)
        self.assertTrue(poller.running)

    def test_resumedSession(self):
        """
        A restart on a module that still holds its session: the start names
        the saved meter and the data log's last reading; the first reading
        says no join was needed.
        """
        import datetime

        loop = Loop()
        self.addCleanup(loop.stop)
        first = start_poller(self, loop)
        loop.advance(20)
        link = first.link
        first.stopService()
        loop.disconnect()
        lines = self.logged()
        second = MeterPoller(loop.connect, config.SessionConfig(CREDS, link=link, device="/dev/x"),
                             loop.clock, PollSchedule(interval=30, energy_interval=300),
                             rng=random.Random(1), wall_clock=loop.clock.seconds)
        second.last_logged = datetime.datetime(2026, 12, 4, 7, 10, 5,
                                                tzinfo=datetime.timezone.utc).timestamp()
        second.startService()
        self.addCleanup(second.stopService)
        self.assertEqual(lines()[0], f"reading /dev/x - the saved meter on channel "
                                     f"{link.channel:02X}, PAN ID {link.pan_id:04X} ({link.mac}); "
                                     "the data log's last reading is from 2026-12-04 16:10:05 JST")
        loop.advance(20)
        self.assertEqual([t for t in lines() if t.startswith("first reading")][0].split(", ", 1)[1],
                         f"through the session the module still held (no join) on channel "
                         f"{link.channel:02X}")


class LostByteInEchoOffTests(SynchronousTestCase):
    """The answer to SKSREG SFE 0 (echo off) loses a byte at the first poll."""

    def test_echoUnknownAfterAbandonedSfe(self):
        """
        The module did turn echo off; the queue no longer trusts that echo is
        on, so the resync's answer is taken and the first reading comes one
        command timeout later, not after two more timeouts.
        """
        from smartmeter_tx.sk.commands import sk_info
        timeout = sk_info().timeout
        times = {}
        for drop in ("", "SKSREG SFE"):
            loop = Loop(drop_byte=drop)  # echo on at power-on, as modules are
            self.addCleanup(loop.stop)
            readings = []
            poller = make_poller(loop, on_reading=lambda r, w, got=readings: got.append(w))
            poller.startService()
            self.addCleanup(poller.stopService)
            loop.advance(150)
            self.assertTrue(readings, drop)
            times[drop] = readings[0]
        self.assertLessEqual(times["SKSREG SFE"], times[""] + timeout + 1, times)
