"""
Tests for L{smartmeter_tx.outputs.echonetlan.bridge} and the relay under it
(L{smartmeter_tx.service.relay}), in memory: the node on a poller reading
the emulated meter, its socket a recorder.  The real socket, multicast and
real controllers are in C{tests/test_echonet_lan.py}.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IMulticastTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from smartmeter_tx.echonet import frame as F
from smartmeter_tx.echonet import meter as M
from smartmeter_tx.errors import StepTimeout
from smartmeter_tx.outputs.echonetlan.bridge import GROUP, PORT, EchonetLanBridge
from smartmeter_tx.outputs.echonetlan.node import Freshness
from smartmeter_tx.outputs.exposition import exposition
from smartmeter_tx.outputs.web import SourcesCollector
from smartmeter_tx.service.interfaces import IMetricsSource, IRecordReceiver
from smartmeter_tx.service.radio import FrameWindow
from smartmeter_tx.service.relay import MeterRelay
from smartmeter_tx.session.steps import Budget
from smartmeter_tx.sk.values import Dialect
from tests.emuloop import Loop
from tests.service.test_poller import make_poller

OURS = "192.0.2.1"
A, B = ("192.0.2.7", 3610), ("192.0.2.8", 3610)


@implementer(IMulticastTransport, IListeningPort)
class _Socket:
    """The bridge's UDP socket, recording what it sends."""

    def __init__(self, proto) -> None:
        self.sent: list = []
        self.joined = None
        proto.makeConnection(self)

    def write(self, data, addr=None):
        self.sent.append((F.Frame.decode(data) if data[10] != F.SETGET_SNA else data, addr))

    def setLoopbackMode(self, mode):
        self.loopback = mode

    def getLoopbackMode(self):
        return self.loopback

    def setOutgoingInterface(self, addr):
        self.interface = addr
        return defer.succeed(1)

    def getOutgoingInterface(self):
        return self.interface

    def setTTL(self, ttl):
        pass

    def getTTL(self):
        return 1

    def joinGroup(self, addr, interface=""):
        self.joined = (addr, interface)
        return defer.succeed(1)

    def leaveGroup(self, addr, interface=""):
        return defer.succeed(1)

    def connect(self, host, port):
        pass

    def getHost(self):
        return None

    def setBroadcastAllowed(self, enabled):
        pass

    def getBroadcastAllowed(self):
        return False

    def startListening(self):
        pass

    def stopListening(self):
        self.stopped = True


class _Reactor:
    def __init__(self, taken: bool = False) -> None:
        self.taken = taken
        self.socket = None

    def listenMulticast(self, port, proto, interface="", maxPacketSize=8192,
                        listenMultiple=False):
        if self.taken:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        self.listened = (port, listenMultiple)
        self.socket = _Socket(proto)
        return self.socket


def get(epcs, tid=1, deoj=F.METER, esv=F.GET) -> bytes:
    return F.get_request(tid, epcs, deoj=deoj, esv=esv).encode()


class BridgeTests(SynchronousTestCase):
    """The node on a standard-dialect module (BP35A1-like)."""

    dialect = Dialect.STANDARD

    def setUp(self):
        self.loop = Loop(dialect=self.dialect)
        self.addCleanup(self.loop.stop)
        self.poller = make_poller(self.loop)
        self.window = FrameWindow(120)
        self.relay = MeterRelay(lambda: self.poller.client, self.poller.running_poll,
                                lambda: self.poller.held, self.loop.clock, self.window)
        self.reactor = _Reactor()
        self.bridge = EchonetLanBridge(OURS, self.poller.view(), self.relay, self.reactor,
                                       Freshness.for_schedule(30, 300))
        self.poller.on_reading = self.bridge.recordReceived  # (the fan-out's part)
        self.poller.startService()
        self.bridge.startService()
        self.addCleanup(self.stop)
        self.loop.advance(20)  # joined, and the first reading (with the counters) is in
        self.assertEqual(self.poller.stats.polls_answered, 1)
        self.socket = self.reactor.socket
        del self.socket.sent[1:]

    def stop(self):
        self.bridge.stopService()
        if self.poller.running:
            self.poller.stopService()

    def answers(self, to=A):
        return [frame for frame, addr in self.socket.sent if addr == to]

    def test_contracts(self):
        """The bridge is an output: it receives records and has figures."""
        verifyObject(IRecordReceiver, self.bridge)
        verifyObject(IMetricsSource, self.bridge)

    def test_listensAndAnnounces(self):
        """UDP 3610 not shared, the group joined on our address, the instance list announced."""
        self.assertEqual(self.reactor.listened, (PORT, False))
        self.assertEqual(self.socket.joined, (GROUP, OURS))
        self.assertFalse(self.socket.loopback)
        announce, to = self.socket.sent[0]
        self.assertEqual(to, (GROUP, PORT))
        self.assertEqual((announce.esv, announce.seoj), (F.INF, F.NODE_PROFILE))
        self.assertEqual(M.decode_instance_list(announce.get(M.INSTANCE_LIST)), (F.METER,))

    def test_freshAnswerIsThePollsBytesWithoutRadio(self):
        """A Get of the polled values is answered at once with the meter's EDTs: no frame."""
        before = self.loop.sent.count("SKSENDTO")
        self.bridge.received(get([M.POWER, M.CURRENT, M.ENERGY_NORMAL]), A)
        [answer] = self.answers()
        self.assertEqual(self.loop.sent.count("SKSENDTO"), before)
        self.assertEqual(answer.esv, F.GET_RES)
        latest = self.poller.store.latest
        self.assertEqual(M.decode_power(answer.get(M.POWER)), latest.power_w)
        self.assertEqual(M.decode_current(answer.get(M.CURRENT)),
                         (latest.current_r_a, latest.current_t_a))
        truth = [r.value for r in self.loop.emulator.truth if r.epc == M.POWER]
        self.assertEqual(M.decode_power(answer.get(M.POWER)), truth[-1])
        scale = self.poller.client.scale
        self.assertEqual(scale.to_kwh(M.decode_energy_raw(answer.get(M.ENERGY_NORMAL))),
                         self.poller.store.energy.energy_normal_kwh)

    def test_answersGoToThePort3610(self):
        """An answer goes to the asker's port 3610, and to the port it asked from if another."""
        self.bridge.received(get([M.POWER]), ("192.0.2.9", 23610))
        self.bridge.received(get([M.POWER], tid=2), A)
        self.bridge.received(get([M.POWER], tid=3), ("127.0.0.1", 40000))  # 3610 is ours here
        to = [addr for _, addr in self.socket.sent[1:]]
        self.assertEqual(to, [("192.0.2.9", 23610), ("192.0.2.9", 3610), A,
                              ("127.0.0.1", 40000)])

    def test_relayedThroughTheSession(self):
        """E2 goes to the meter in one frame; its answer is the meter's, to the asker."""
        before = self.loop.sent.count("SKSENDTO")
        self.bridge.received(get([M.HISTORY_NORMAL], tid=0x42), A)
        self.assertEqual(self.answers(), [])
        self.loop.advance(3)
        [answer] = self.answers()
        self.assertEqual(self.loop.sent.count("SKSENDTO") - before, 1)
        self.assertEqual((answer.tid, answer.esv), (0x42, F.GET_RES))
        said = self.poller.store.properties.get(M.HISTORY_NORMAL)
        self.assertEqual(answer.get(M.HISTORY_NORMAL), said.edt)
        self.assertEqual(self.relay.frames, 1)
        self.assertEqual(self.window.spent(self.loop.clock.seconds()), 1)

    def test_relayCountsItsOwnFramesOnly(self):
        """A poll that goes out while a relay waits for the meter is not the relay's frame."""
        polls, sent = self.poller.stats.polls_answered, self.loop.sent.count("SKSENDTO")
        self.loop.advance(30 - self.loop.clock.seconds() % 30 - 0.2)  # just before a tick
        self.bridge.received(get([M.HISTORY_NORMAL]), A)
        self.loop.advance(3)
        self.assertEqual(self.poller.stats.polls_answered, polls + 1)
        self.assertEqual(self.loop.sent.count("SKSENDTO") - sent, 2)
        self.assertEqual(len(self.answers()), 1)
        self.assertEqual((self.relay.frames, self.window.spent(self.loop.clock.seconds())),
                         (1, 1))

    def test_identicalRequestsShareOneFrame(self):
        """Two controllers asking the same while it is under way: one frame, both answered."""
        before = self.loop.sent.count("SKSENDTO")
        self.bridge.received(get([M.HISTORY_NORMAL], tid=1), A)
        self.bridge.received(get([M.HISTORY_NORMAL], tid=2), B)
        self.loop.advance(3)
        self.assertEqual(self.loop.sent.count("SKSENDTO") - before, 1)
        [a], [b] = self.answers(A), self.answers(B)
        self.assertEqual((a.tid, b.tid), (1, 2))
        self.assertEqual(a.properties, b.properties)
        self.assertEqual(self.bridge.answered[("Get", "shared")], 1)

    def test_oneRelayEveryThreeSecondsPerSource(self):
        """Past its source's limit a request is refused (PDC 0), without a frame; later it goes."""
        self.bridge.received(get([M.HISTORY_NORMAL], tid=1), A)
        self.loop.advance(1)
        before = self.loop.sent.count("SKSENDTO")
        self.bridge.received(get([M.HISTORY_REVERSE], tid=2), A)
        refused = self.answers()[-1]
        self.assertEqual((refused.tid, refused.esv), (2, F.GET_SNA))
        self.assertEqual(refused.get(M.HISTORY_REVERSE), None)
        self.bridge.received(get([M.HISTORY_REVERSE], tid=3), B)  # another source may
        self.loop.advance(2.5)
        self.bridge.received(get([M.HISTORY_REVERSE], tid=4), A)
        self.loop.advance(3)
        self.assertEqual(self.loop.sent.count("SKSENDTO") - before, 2)
        self.assertEqual([f.esv for f in self.answers() if f.tid == 4], [F.GET_RES])
        self.assertEqual(self.bridge.answered[("Get", "refused")], 1)

    def test_relayWaitsForThePoll(self):
        """A relay that arrives during a poll goes on the air after it, and the poll is answered."""
        answered = self.poller.stats.polls_answered
        self.loop.advance(10)  # the next tick is at 30 s: a poll is under way at once
        self.assertIsNotNone(self.poller.running_poll())
        self.bridge.received(get([M.HISTORY_NORMAL]), A)
        relayed_then = []
        self.poller.running_poll().addCallback(
            lambda _: relayed_then.append(len(self.answers())))
        self.loop.advance(5)
        self.assertEqual(self.poller.stats.polls_answered, answered + 1)
        self.assertEqual(relayed_then, [0])  # the poll was over before the relay was answered
        self.assertEqual(len(self.answers()), 1)

    def test_spentWindowRefuses(self):
        """With the hour's frames spent (by the backfill, say), a relay is refused, no frame."""
        self.window.spend(self.loop.clock.seconds(), 120)
        before = self.loop.sent.count("SKSENDTO")
        self.bridge.received(get([M.HISTORY_NORMAL]), A)
        self.loop.advance(3)
        self.assertEqual(self.loop.sent.count("SKSENDTO"), before)
        self.assertEqual(self.answers()[0].esv, F.GET_SNA)
        self.assertEqual(self.bridge.answered[("Get", "refused")], 1)

    def test_ownAndMalformedDropped(self):
        """Our own address and garbage are counted and not answered."""
        self.bridge.received(get([M.POWER]), (OURS, PORT))
        self.bridge.received(b"\x10\x81garbage", A)
        self.assertEqual(self.answers(), [])
        self.assertEqual((self.bridge.dropped["own"], self.bridge.dropped["malformed"]), (1, 1))

    def test_meterInfSentOn(self):
        """The meter's half-hourly EA/EB go to the group as the node's INF, byte for byte."""
        self.loop.advance(1800 + 95)  # the meter pushes within 90 s of :00 and :30
        infs = [f for f, to in self.socket.sent if to == (GROUP, PORT) and f.seoj == F.METER]
        self.assertTrue(infs)
        said = self.poller.store.properties.get(M.FIXED_NORMAL)
        self.assertEqual(infs[-1].esv, F.INF)
        self.assertEqual(infs[-1].get(M.FIXED_NORMAL), said.edt)
        self.assertEqual(self.poller.store.fixed.meter_time,
                         M.decode_fixed_time(said.edt).timestamp)

    def test_metricsLabelled(self):
        """Requests by ESV and outcome, drops by reason, on /metrics as labelled counters."""
        self.bridge.received(get([M.POWER]), A)
        self.bridge.received(F.setc_request(3, [(0xE5, b"\x01")]).encode(), A)
        self.bridge.received(b"junk", A)
        text = exposition(SourcesCollector([self.bridge]).collect()).decode()
        self.assertIn('smartmeter_echonet_lan_requests_total{esv="Get",outcome="cache"} 1.0',
                      text)
        self.assertIn('smartmeter_echonet_lan_requests_total{esv="SetC",outcome="refused"} 1.0',
                      text)
        self.assertIn('smartmeter_echonet_lan_dropped_total{reason="malformed"} 1.0', text)
        self.assertIn("smartmeter_echonet_lan_relay_frames_total 0", text)

    def test_neverJoins(self):
        """Without a session a relay is refused at once: the poller alone decides to join."""
        self.poller.state.down()
        before = (self.loop.sent.count("SKSENDTO"), self.loop.sent.count("SKJOIN"))
        self.bridge.received(get([M.HISTORY_NORMAL]), A)
        self.loop.advance(1)
        self.assertEqual((self.loop.sent.count("SKSENDTO"), self.loop.sent.count("SKJOIN")),
                         before)
        self.assertEqual(self.answers()[0].esv, F.GET_SNA)

    def test_sharersCapped(self):
        """One question asked over and over while it is under way: a bounded number share it."""
        for tid in range(MeterRelay.SHARERS + 3):
            self.bridge.received(get([M.HISTORY_NORMAL], tid=tid), A)
        refused = [f for f in self.answers() if f.esv == F.GET_SNA]
        self.assertEqual(len(refused), 3)  # at once, past the first and its sharers
        self.loop.advance(3)
        self.assertEqual(self.bridge.answered[("Get", "shared")], MeterRelay.SHARERS - 1)

    def test_relaysLeaveTheBackfillItsHalf(self):
        """Relays stop at their half of the hour's window; the backfill keeps the rest."""
        self.relay.own.spend(self.loop.clock.seconds(), MeterRelay.FRAMES_PER_HOUR)
        before = self.loop.sent.count("SKSENDTO")
        self.bridge.received(get([M.HISTORY_NORMAL]), A)
        self.loop.advance(3)
        self.assertEqual(self.loop.sent.count("SKSENDTO"), before)
        self.assertEqual(self.answers()[0].esv, F.GET_SNA)
        self.assertTrue(self.window.room(self.loop.clock.seconds()))

    def test_infRequestsToTheGroupLimited(self):
        """An INF_REQ is answered to the whole group once every 3 s a source; past it, INF_SNA."""
        for tid in (1, 2):
            self.bridge.received(get([M.POWER], tid=tid, esv=F.INF_REQ), A)
        group = [f for f, to in self.socket.sent if to == (GROUP, PORT) and f.seoj == F.METER]
        self.assertEqual([f.tid for f in group], [1])
        self.assertEqual([(f.tid, f.esv) for f in self.answers()], [(2, F.INF_SNA)])

    def test_aToolOnOurAddressAnswered(self):
        """From our own address but another port (a tool on this host): answered there only."""
        self.bridge.received(get([M.POWER]), (OURS, 40000))
        self.assertEqual([to for _, to in self.socket.sent[1:]], [(OURS, 40000)])

    def test_silentMeterFramesCounted(self):
        """Each frame the module took counts, even when the meter never answers it."""
        self.loop.advance(31 - self.loop.clock.seconds())  # the poll at 30 s is over
        self.loop.emulator.radio.loss = 1.0
        before = self.loop.sent.count("SKSENDTO")
        self.bridge.received(get([M.HISTORY_NORMAL]), A)
        self.loop.advance(15)  # (the next poll is at 60 s)
        sent = self.loop.sent.count("SKSENDTO") - before
        self.assertGreater(sent, 1)
        self.assertEqual(self.relay.frames, sent)
        self.assertEqual(self.answers()[0].esv, F.GET_SNA)

    def test_stopAbandonsRelays(self):
        """A stop abandons a relay under way: nothing answered, nothing logged as failed."""
        self.bridge.received(get([M.HISTORY_NORMAL]), A)
        self.bridge.stopService()
        self.loop.advance(3)
        self.assertEqual(self.answers(), [])
        self.assertTrue(self.socket.stopped)


class DseBridgeTests(BridgeTests):
    """The same on a DSE-dialect module (BP35C2-like): relays go out in its SKSENDTO."""

    dialect = Dialect.DSE


class RelayDeadlineTests(SynchronousTestCase):
    def test_boundedFromArrival(self):
        """A relay behind a poll that does not end (a long join) is refused within its budget."""
        clock = Clock()
        relay = MeterRelay(lambda: None, lambda: defer.Deferred(), lambda: None, clock,
                           FrameWindow())
        failures = []
        relay.request((M.HISTORY_NORMAL,)).addErrback(failures.append)
        clock.advance(MeterRelay.BUDGET + Budget.GRACE)
        self.assertEqual(len(failures), 1)
        self.assertTrue(failures[0].check(StepTimeout))


class PortTakenTests(SynchronousTestCase):
    def test_cannotListenSaid(self):
        """UDP 3610 taken: the service's own line, not a traceback."""
        loop = Loop()
        self.addCleanup(loop.stop)
        poller = make_poller(loop)
        said = []
        bridge = EchonetLanBridge(OURS, poller.view(), MeterRelay(
            lambda: None, lambda: None, lambda: None, loop.clock, FrameWindow()),
            _Reactor(taken=True), cannot_listen=said.append)
        bridge.startService()
        self.assertEqual(len(said), 1)
        self.assertIn("Address already in use", said[0])
