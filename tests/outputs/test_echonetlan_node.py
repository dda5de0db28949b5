"""
Tests for L{smartmeter_tx.outputs.echonetlan.node}: what the LAN node
answers, without a network.  The meter's values are served byte for byte
as the meter said them, only while fresh; what is not fresh is for the
meter; nothing is invented; Sets are refused.
"""

import datetime

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.echonet import frame as F
from smartmeter_tx.echonet import meter as M
from smartmeter_tx.outputs.echonetlan.node import (
    STATIC, Answer, Drop, Freshness, LanNode, Relay, SourceLimiter, encode_property_map,
    identification_number)
from smartmeter_tx.model import JST
from smartmeter_tx.service.meterprops import MeterProperties

MAC = "C0F945004012A3F1"
#: A Get_Res of a real meter's poll (coefficient and unit apart): 440 W,
#: R 4.0 A, T 0.4 A, counters 0x000A36C4 and 0.
POLL = ((M.POWER, bytes.fromhex("000001B8")), (M.CURRENT, bytes.fromhex("00280004")),
        (M.ENERGY_NORMAL, bytes.fromhex("000A36C4")), (M.ENERGY_REVERSE, bytes(4)))


def get(epcs, deoj=F.METER, esv=F.GET, tid=7) -> bytes:
    return F.get_request(tid, epcs, deoj=deoj, seoj=F.CONTROLLER, esv=esv).encode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class NodeTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.said = MeterProperties()
        self.node = LanNode(self.said, self.clock, Freshness(live=60, energy=330, fixed=1800))

    def heard(self, *pairs):
        self.said.heard(pairs, self.clock.now, MAC)

    def decided(self, data) -> Answer:
        decision = self.node.decide(data)
        self.assertIsInstance(decision, Answer)
        return decision

    def test_searchAnsweredWithTheInstanceList(self):
        """A controller's search (Get D6 of the node profile, any instance) finds the meter."""
        for deoj in (F.NODE_PROFILE, 0x0EF000):
            answer = self.decided(get([M.SELF_INSTANCE_LIST, 0xD7], deoj=deoj))
            frame = answer.frame
            self.assertEqual((frame.esv, frame.seoj, frame.deoj, frame.tid),
                             (F.GET_RES, F.NODE_PROFILE, F.CONTROLLER, 7))
            self.assertEqual(M.decode_instance_list(frame.get(M.SELF_INSTANCE_LIST)), (F.METER,))
            self.assertEqual(frame.get(0xD7), bytes.fromhex("010288"))
            self.assertFalse(answer.multicast)

    def test_nodeProfileMapsAgree(self):
        """The node profile's get map lists exactly what it answers, and it has no set map."""
        profile = self.node.node_profile()
        self.assertEqual(M.decode_property_map(profile[M.GET_MAP]), frozenset(profile))
        self.assertEqual(M.decode_property_map(profile[0x9E]), frozenset())
        for epc in (0x80, 0x82, 0x83, 0x8A, 0x8C, 0x9D, 0x9E, 0x9F, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7):
            self.assertIn(epc, profile)

    def test_identificationFollowsTheMeter(self):
        """0x83 is 17 bytes, 0xFE first, the same for the same meter and another for another."""
        self.heard(*POLL)
        first = self.node.node_profile()[0x83]
        self.assertEqual((len(first), first[0]), (17, 0xFE))
        self.assertEqual(first, identification_number(MAC))
        self.assertNotEqual(first, identification_number("C0F945004012A3F2"))

    def test_unknownNodePropertyIsRefusedAlone(self):
        """A Get with a property the node has not: Get_SNA, the others still answered."""
        frame = self.decided(get([0x80, 0x8E], deoj=F.NODE_PROFILE)).frame
        self.assertEqual(frame.esv, F.GET_SNA)
        self.assertEqual(frame.properties, (F.Property(0x80, b"\x30"), F.Property(0x8E, b"")))

    def test_freshValuesAreTheMetersBytes(self):
        """While fresh, power, current and counters are answered with the meter's own EDTs."""
        self.heard(*POLL)
        self.clock.now += 59
        answer = self.decided(get([M.POWER, M.CURRENT, M.ENERGY_NORMAL, M.ENERGY_REVERSE]))
        self.assertEqual(answer.outcome, "cache")
        self.assertEqual((answer.frame.esv, answer.frame.seoj), (F.GET_RES, F.METER))
        self.assertEqual(tuple((p.epc, p.edt) for p in answer.frame.properties), POLL)

    def test_staleValuesGoToTheMeter(self):
        """Past its age a value is not served: the request is for the meter, with what is fresh."""
        self.heard(*POLL)
        self.clock.now += 61
        decision = self.node.decide(get([M.POWER, M.ENERGY_NORMAL]))
        self.assertIsInstance(decision, Relay)
        self.assertIn(M.POWER, decision.epcs)
        self.assertNotIn(M.ENERGY_NORMAL, decision.epcs)
        self.assertEqual(decision.known, {M.ENERGY_NORMAL: POLL[2][1]})

    def test_historyAlwaysGoesToTheMeter(self):
        """E2 is never served from what the meter said before: its day may have changed."""
        self.heard((M.HISTORY_NORMAL, bytes(194)))
        decision = self.node.decide(get([M.HISTORY_NORMAL]))
        self.assertIsInstance(decision, Relay)
        self.assertEqual(decision.epcs[0], M.HISTORY_NORMAL)

    def test_staticOnesAskedWithTheFirstRelay(self):
        """The first relay asks every static property not yet said, in the same frame."""
        decision = self.node.decide(get([M.HISTORY_NORMAL]))
        self.assertEqual(set(decision.epcs), {M.HISTORY_NORMAL} | STATIC)
        self.heard(*[(e, b"\x01") for e in STATIC])
        self.assertEqual(self.node.decide(get([M.HISTORY_NORMAL])).epcs, (M.HISTORY_NORMAL,))

    def test_mergedAnswer(self):
        """The meter's answer and what was fresh, in the request's order; the meter's SNA kept."""
        self.heard(*POLL)
        relay = self.node.decide(get([M.POWER, M.HISTORY_NORMAL, 0x8D]))
        meter = F.Frame(3, F.METER, F.CONTROLLER, F.GET_SNA,
                        (F.Property(M.HISTORY_NORMAL, b"\x00\x01"), F.Property(0x8D, b"")))
        frame = self.node.answer(relay, meter).frame
        self.assertEqual(frame.tid, 7)
        self.assertEqual(frame.esv, F.GET_SNA)
        self.assertEqual(frame.properties, (F.Property(M.POWER, POLL[0][1]),
                                            F.Property(M.HISTORY_NORMAL, b"\x00\x01"),
                                            F.Property(0x8D, b"")))

    def test_unansweredRelayInventsNothing(self):
        """When the meter does not answer, its properties go back with PDC 0."""
        relay = self.node.decide(get([M.HISTORY_NORMAL]))
        frame = self.node.answer(relay, None).frame
        self.assertEqual(frame.esv, F.GET_SNA)
        self.assertEqual(frame.properties, (F.Property(M.HISTORY_NORMAL, b""),))

    def test_whatTheMeterCannotGiveStaysRefused(self):
        """A property the meter answered with PDC 0 is refused again, without the radio."""
        self.heard((0x8D, b""))
        answer = self.decided(get([0x8D]))
        self.assertEqual(answer.frame.esv, F.GET_SNA)

    def test_infRequestAnsweredToTheGroup(self):
        """INF_REQ is answered with an INF to the group (an INF_SNA back to the sender)."""
        self.heard(*POLL)
        answer = self.decided(get([M.POWER], esv=F.INF_REQ))
        self.assertEqual((answer.frame.esv, answer.multicast), (F.INF, True))
        answer = self.decided(get([0x8E], deoj=F.NODE_PROFILE, esv=F.INF_REQ))
        self.assertEqual((answer.frame.esv, answer.multicast), (F.INF_SNA, False))

    def test_setsRefused(self):
        """SetC and SetI are refused with their properties echoed: nothing changes the meter."""
        for esv, refusal in ((F.SETC, F.SETC_SNA), (F.SETI, F.SETI_SNA)):
            request = F.Frame(9, F.CONTROLLER, F.METER, esv, (F.Property(0xE5, b"\x01"),))
            answer = self.decided(request.encode())
            self.assertEqual(answer.outcome, "refused")
            self.assertEqual((answer.frame.esv, answer.frame.properties),
                             (refusal, request.properties))

    def test_setGetRefused(self):
        """A SetGet: SetGet_SNA, the Set echoed and the Get with PDC 0."""
        data = (F.EHD + b"\x00\x09" + bytes.fromhex("05FF01028801") + bytes((F.SETGET, 1))
                + b"\xe5\x01\x01" + b"\x01\xe7\x00")
        answer = self.decided(data)
        self.assertEqual(answer.frame, F.EHD + b"\x00\x09" + bytes.fromhex("02880105FF01")
                         + bytes((F.SETGET_SNA, 1)) + b"\xe5\x01\x01" + b"\x01\xe7\x00")

    def test_dropped(self):
        """What is not a request for one of our objects is dropped, and why is named."""
        cases = {
            b"\x10\x81\x00": "malformed",
            b"\x10\x82" + bytes(12): "malformed",
            get([0x80])[:-1] + b"\x05": "malformed",
            get([0x80], deoj=0x013001): "unknown_object",
            get([0x80], deoj=0x028802): "unknown_object",
            get([0x80], esv=0x99): "unknown_esv",
            F.Frame(1, F.NODE_PROFILE, F.NODE_PROFILE, F.INF,
                    (F.Property(0xD5, b"\x00"),)).encode(): "not_request",
            F.EHD + bytes(2) + bytes.fromhex("05FF01028801") + bytes((F.SETGET, 1, 0xE5)):
                "malformed",
        }
        for data, reason in cases.items():
            self.assertEqual(self.node.decide(data), Drop(reason), data.hex())

    def test_mirrorCarriesTheMetersBytes(self):
        """The meter's EA is sent on as the node's INF with its bytes; nothing when none was said."""
        self.assertIsNone(self.node.mirror(1, [M.FIXED_NORMAL]))
        ea = bytes.fromhex("07E80601123000000A36C4")
        self.heard((M.FIXED_NORMAL, ea))
        frame = self.node.mirror(5, [M.FIXED_NORMAL, M.FIXED_REVERSE])
        self.assertEqual((frame.esv, frame.seoj, frame.tid), (F.INF, F.METER, 5))
        self.assertEqual(frame.properties, (F.Property(M.FIXED_NORMAL, ea),))

    def test_anotherMeterForgetsTheFirst(self):
        """What one meter said is never served as another's."""
        self.heard(*POLL)
        self.said.heard([], self.clock.now, "C0F945004012A3F2")
        self.assertIsInstance(self.node.decide(get([M.POWER])), Relay)

    def test_freshnessFromTheSchedule(self):
        """Two polls for the live values, an energy read and a poll for the counters."""
        fresh = Freshness.for_schedule(30, 300)
        self.assertEqual((fresh.max_age(M.POWER), fresh.max_age(M.ENERGY_REVERSE)), (60, 330))
        self.assertEqual(fresh.max_age(M.UNIT), float("inf"))
        self.assertIsNone(fresh.max_age(M.HISTORY2))


class PropertyMapTests(SynchronousTestCase):
    @given(st.sets(st.integers(0x80, 0xFF)))
    def test_roundTrip(self, epcs):
        """Both forms (list below 16, bitmap from 16) decode to what was encoded."""
        self.assertEqual(M.decode_property_map(encode_property_map(epcs)), frozenset(epcs))


class SourceLimiterTests(SynchronousTestCase):
    def test_oneEveryInterval(self):
        """One relay per source every 3 s; other sources are not held back."""
        limiter = SourceLimiter(3.0)
        self.assertTrue(limiter.allow("a", 0.0))
        self.assertFalse(limiter.allow("a", 2.9))
        self.assertTrue(limiter.allow("b", 2.9))
        self.assertTrue(limiter.allow("a", 3.0))

    def test_boundedMemory(self):
        """A flood of forged sources is refused past the capacity, and forgotten later."""
        limiter = SourceLimiter(3.0, capacity=4)
        self.assertEqual([limiter.allow(str(i), 0.0) for i in range(6)], [True] * 4 + [False] * 2)
        self.assertTrue(limiter.allow("5", 3.0))


class GarbageTests(SynchronousTestCase):
    """Whatever arrives on UDP 3610, the node decides without raising."""

    def setUp(self):
        said = MeterProperties()
        said.heard(POLL, 0.0, MAC)
        self.node = LanNode(said, lambda: 1.0)

    @given(st.binary(max_size=64))
    def test_anyBytes(self, data):
        """Random datagrams: a decision, never an exception."""
        self.assertIsInstance(self.node.decide(data), (Answer, Relay, Drop))

    @given(st.sampled_from([get([M.POWER, M.HISTORY_NORMAL]), get([0xD6], deoj=F.NODE_PROFILE),
                            F.EHD + b"\x00\x01" + bytes.fromhex("05FF01028801")
                            + bytes((F.SETGET, 1)) + b"\xe5\x01\x01\x01\xe7\x00"]),
           st.integers(0, 40), st.integers(0, 255))
    def test_mutatedRequests(self, data, at, byte):
        """A valid request with one byte changed or cut short: still a decision, and an
        answer encodes."""
        mutated = data[:at] + bytes([byte]) + data[at + 1:] if at < len(data) else data[:at % 12]
        decision = self.node.decide(mutated)
        self.assertIsInstance(decision, (Answer, Relay, Drop))
        if isinstance(decision, Answer) and isinstance(decision.frame, F.Frame):
            decision.frame.encode()
        if isinstance(decision, Relay):
            self.node.answer(decision, None).frame.encode()


class ReviewedTests(SynchronousTestCase):
    """What the node does with time passing, refusals and who it is."""

    def setUp(self):
        self.clock = Clock()
        # 2024-06-01 12:10 JST.
        self.wall = [datetime.datetime(2024, 6, 1, 12, 10, tzinfo=JST).timestamp()]
        self.said = MeterProperties()
        self.link_mac = [None]
        self.node = LanNode(self.said, self.clock, Freshness(live=60, energy=330),
                            wall=lambda: self.wall[0], mac=lambda: self.link_mac[0])

    def heard(self, *pairs):
        self.said.heard(pairs, self.clock.now, MAC)

    def test_relayedAnswerTakesFreshValuesAgain(self):
        """A relay that waited (behind a poll, say) answers with the values as they stand then."""
        self.heard(*POLL)
        relay = self.node.decide(get([M.POWER, M.HISTORY_NORMAL]))
        self.assertEqual(relay.known, {M.POWER: POLL[0][1]})
        self.clock.now += 61  # E7 went stale while the relay waited...
        meter = F.Frame(3, F.METER, F.CONTROLLER, F.GET_RES,
                        (F.Property(M.HISTORY_NORMAL, b"\x00\x01"),))
        self.assertEqual(self.node.answer(relay, meter).frame.get(M.POWER), None)
        self.heard((M.POWER, b"\x00\x00\x01\x00"))  # ... and a poll renewed it
        self.assertEqual(self.node.answer(relay, meter).frame.get(M.POWER), b"\x00\x00\x01\x00")

    def test_fixedFreshOnlyInItsHalfHour(self):
        """EA of 12:00 is served until 12:30 (Japan's time), then asked of the meter again."""
        ea = bytes.fromhex("07E806010C000000000A36C4")[:11]
        self.heard((M.FIXED_NORMAL, ea))
        self.assertIsInstance(self.node.decide(get([M.FIXED_NORMAL])), Answer)
        self.wall[0] += 20 * 60 + 1  # 12:30:01: the meter's EA is of 12:30 now
        self.assertIsInstance(self.node.decide(get([M.FIXED_NORMAL])), Relay)
        self.heard((M.FIXED_NORMAL, b"\xff" * 11))  # a meter without a clock yet
        self.assertIsInstance(self.node.decide(get([M.FIXED_NORMAL])), Relay)

    def test_refusalAskedAgainLater(self):
        """What the meter could not give is refused from memory for an hour, then asked again."""
        self.heard((M.COEFFICIENT, b""))
        self.assertIsInstance(self.node.decide(get([M.COEFFICIENT])), Answer)
        self.clock.now += 3601
        self.assertIsInstance(self.node.decide(get([M.COEFFICIENT])), Relay)

    def test_identificationFromTheSavedMac(self):
        """0x83 comes from the saved link's MAC before the meter has said anything."""
        self.link_mac[0] = MAC
        self.assertEqual(self.node.node_profile()[0x83], identification_number(MAC))

    def test_setGetWithoutSetsRefused(self):
        """A SetGet of Gets only is refused too; a SetGet's answer is not a request."""
        data = (F.EHD + b"\x00\x09" + bytes.fromhex("05FF01028801") + bytes((F.SETGET, 0))
                + b"\x01\xe7\x00")
        answer = self.node.decide(data)
        self.assertIsInstance(answer, Answer)
        self.assertEqual(answer.frame[10:], bytes((F.SETGET_SNA, 0)) + b"\x01\xe7\x00")
        for esv in (F.SETGET_RES, F.SETGET_SNA):
            self.assertEqual(self.node.decide(data[:10] + bytes((esv,)) + data[11:]),
                             Drop("not_request"))
