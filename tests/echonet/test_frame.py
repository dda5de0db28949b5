"""
Tests for L{smartmeter_tx.echonet.frame}: ECHONET Lite format-1 frame
encoding, decoding and request/response matching, against real payloads.

C{§n} names a section of L{tests.fixtures.captures}.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.echonet.frame import (
    CONTROLLER, GET, GET_RES, GET_SNA, INF, INF_REQ, INF_SNA, INFC, INFC_RES, METER,
    NODE_PROFILE, SETC, SETC_SNA, SETGET, SETGET_RES, SETGET_SNA, SET_RES, Frame, Property,
    get_request, infc_response,
)
from smartmeter_tx.errors import ArgumentError, FrameError, RemoteDataError
from tests.fixtures import captures as cap


def _decode(hexstr):
    return Frame.decode(bytes.fromhex(hexstr))


class DecodeTests(SynchronousTestCase):
    """
    Frame.decode reads real payloads from the captures.
    """

    def test_getResE7(self):
        """Frame.decode reads the §1 Get_Res of E7 = 000004A8 from the meter to the controller."""
        frame = _decode(cap.S1_GET_RES_E7_04A8)
        self.assertEqual(frame, Frame(0x0001, METER, CONTROLLER, GET_RES,
                                      (Property(0xE7, bytes.fromhex("000004A8")),)))
        self.assertEqual(frame.get(0xE7), b"\x00\x00\x04\xa8")
        self.assertEqual(frame.epcs, (0xE7,))

    def test_getSnaD3(self):
        """Frame.decode reads the §1 Get_SNA for D3 with PDC 0, and get() gives None for it."""
        frame = _decode(cap.S1_GET_SNA_D3)
        self.assertEqual(frame, Frame(0x0001, METER, CONTROLLER, GET_SNA, (Property(0xD3),)))
        self.assertEqual(frame.properties[0].edt, b"")
        self.assertIsNone(frame.get(0xD3))

    def test_infD5NodeProfile(self):
        """Frame.decode reads the §20 D5 INF from node profile to node profile, TID 0000."""
        frame = _decode(cap.S20_INF_D5_TID_0000)
        self.assertEqual((frame.tid, frame.seoj, frame.deoj, frame.esv),
                         (0x0000, NODE_PROFILE, NODE_PROFILE, INF))
        self.assertEqual(frame.get(0xD5), bytes.fromhex("01028801"))
        self.assertEqual(_decode(cap.S20_INF_D5_TID_2EDA).tid, 0x2EDA)
        self.assertEqual(_decode(cap.S1_INF_D5_TID_0361).tid, 0x0361)

    def test_infEaEb(self):
        """Frame.decode reads the §20 INF carrying EA and EB (OPC 2) in order."""
        frame = _decode(cap.S20_INF_EA_EB)
        self.assertEqual(frame.esv, INF)
        self.assertEqual(frame.epcs, (0xEA, 0xEB))
        self.assertEqual(frame.get(0xEA), bytes.fromhex("07E70C13001E000000458E"))
        self.assertEqual(frame.get(0xEB), bytes.fromhex("07E70C13001E0000000015"))

    def test_infEaTid(self):
        """Frame.decode reads the §1 unsolicited EA INF with TID 0362 to the controller."""
        frame = _decode(cap.S1_INF_EA_TID_0362)
        self.assertEqual((frame.tid, frame.seoj, frame.deoj, frame.esv),
                         (0x0362, METER, CONTROLLER, INF))

    def test_getAbsentEpc(self):
        """Frame.get returns None for an EPC the frame does not carry."""
        self.assertIsNone(_decode(cap.S1_GET_RES_E7_04A8).get(0xE8))

    def test_realPayloadsReencode(self):
        """Frame.encode gives back the exact bytes of every real §1 and §20 payload."""
        for hexstr in [cap.S1_GET_SNA_D3, cap.S1_GET_RES_E1_02, cap.S1_GET_RES_D7_07,
                       cap.S1_GET_RES_EA, cap.S1_GET_RES_E7_04A8, cap.S1_GET_RES_E8_00620022,
                       cap.S1_INF_D5_TID_0361, cap.S1_INF_EA_TID_0362, cap.S1_GET_RES_E7_03F8,
                       cap.S1_GET_RES_E8_00420026, cap.S20_INF_D5_TID_0000,
                       cap.S20_INF_D5_TID_2EDA, cap.S20_INF_EA_EB, cap.S20_INF_EA_TID_2EDB,
                       cap.S20_GET_SNA_83]:
            data = bytes.fromhex(hexstr)
            self.assertEqual(Frame.decode(data).encode(), data)

    def test_describe(self):
        """Frame.describe names the ESV, TID, EOJs and each property."""
        self.assertEqual(_decode(cap.S1_GET_RES_E7_04A8).describe(),
                         "Get_Res tid=0001 028801->05FF01 E7=000004A8")
        self.assertEqual(Frame(1, METER, CONTROLLER, 0x99, (Property(0x80),)).describe(),
                         "ESV99 tid=0001 028801->05FF01 80=")


class EncodeTests(SynchronousTestCase):
    """
    Frame.encode and the request helpers write the documented bytes.
    """

    def test_getE7(self):
        """get_request(1, [E7]).encode() is the 14-byte Get E7 of the protocol reference."""
        self.assertEqual(get_request(1, [0xE7]).encode(),
                         bytes.fromhex("10 81 00 01 05 FF 01 02 88 01 62 01 E7 00"))

    def test_getE7Tid5253(self):
        """get_request with TID 0x5253 gives the 14 bytes sent after the §4 SKSENDTO."""
        self.assertEqual(get_request(0x5253, [0xE7]).encode(), cap.S4_SENDTO_PAYLOAD)

    def test_getSeveral(self):
        """get_request puts several EPCs in one frame with OPC = their count."""
        self.assertEqual(get_request(0x0102, [0xE7, 0xE8]).encode(),
                         bytes.fromhex("1081010205FF010288016202E700E800"))

    def test_infReqNodeProfile(self):
        """get_request can ask the node profile for D5 with INF_REQ."""
        self.assertEqual(get_request(7, [0xD5], deoj=NODE_PROFILE, esv=INF_REQ).encode(),
                         bytes.fromhex("1081000705FF010EF0016301D500"))

    def test_encodeErrors(self):
        """Frame.encode raises ArgumentError for out-of-range fields or no properties."""
        bad = [
            Frame(0x10000, CONTROLLER, METER, GET, (Property(0xE7),)),
            Frame(-1, CONTROLLER, METER, GET, (Property(0xE7),)),
            Frame(1, 0x1000000, METER, GET, (Property(0xE7),)),
            Frame(1, CONTROLLER, METER, 0x100, (Property(0xE7),)),
            Frame(1, CONTROLLER, METER, GET, ()),
            Frame(1, CONTROLLER, METER, GET, (Property(0x100),)),
            Frame(1, CONTROLLER, METER, GET, (Property(0xE7, b"\x00" * 256),)),
            Frame(1, CONTROLLER, METER, GET, tuple(Property(0x80) for _ in range(256))),
        ]
        for frame in bad:
            self.assertRaises(ArgumentError, frame.encode)


class MatchingTests(SynchronousTestCase):
    """
    Frame.is_response_to applies TID, EOJ, ESV and EPC matching.
    """

    REQUEST = get_request(1, [0xE7])

    def test_match(self):
        """Frame.is_response_to accepts the §1 Get_Res E7 for a Get E7 with TID 1."""
        self.assertTrue(_decode(cap.S1_GET_RES_E7_04A8).is_response_to(self.REQUEST))

    def test_matchDseCapture(self):
        """Frame.is_response_to accepts the §4 reply for the §4 request with TID 0x5253."""
        request = Frame.decode(cap.S4_SENDTO_PAYLOAD)
        reply = Frame.decode(bytes.fromhex("1081525302880105FF017201E704000000E4"))
        self.assertTrue(reply.is_response_to(request))
        self.assertFalse(reply.is_response_to(self.REQUEST))

    def test_snaIsResponse(self):
        """Frame.is_response_to accepts a Get_SNA (ESV - 0x10) as the answer to a Get."""
        self.assertTrue(_decode(cap.S1_GET_SNA_D3).is_response_to(get_request(1, [0xD3])))
        self.assertTrue(_decode(cap.S20_GET_SNA_83).is_response_to(get_request(1, [0x83])))

    def test_otherEsvPairs(self):
        """Frame.is_response_to pairs SetC with Set_Res/SetC_SNA and INF_REQ with INF/INF_SNA."""
        setc = Frame(9, CONTROLLER, METER, SETC, (Property(0xE5, b"\x00"),))
        for esv in (SET_RES, SETC_SNA):
            self.assertTrue(Frame(9, METER, CONTROLLER, esv, (Property(0xE5),))
                            .is_response_to(setc))
        inf_req = get_request(3, [0xD5], deoj=NODE_PROFILE, esv=INF_REQ)
        for esv in (INF, INF_SNA):
            reply = Frame(3, NODE_PROFILE, CONTROLLER, esv, (Property(0xD5, b"\x00"),))
            self.assertTrue(reply.is_response_to(inf_req))

    def test_wrongTid(self):
        """Frame.is_response_to rejects a reply whose TID differs (a stale reply)."""
        self.assertFalse(_decode(cap.S1_GET_RES_E7_04A8).is_response_to(get_request(2, [0xE7])))

    def test_eojNotSwapped(self):
        """Frame.is_response_to rejects a reply whose EOJs are not the request's swapped."""
        reply = Frame(1, CONTROLLER, METER, GET_RES, (Property(0xE7, b"\x00\x00\x00\x01"),))
        self.assertFalse(reply.is_response_to(self.REQUEST))
        reply = Frame(1, NODE_PROFILE, CONTROLLER, GET_RES, (Property(0xE7, b"\x00" * 4),))
        self.assertFalse(reply.is_response_to(self.REQUEST))

    def test_wrongEsv(self):
        """Frame.is_response_to rejects an INF or a second Get with the same TID and EPCs."""
        inf = Frame(1, METER, CONTROLLER, INF, (Property(0xE7, b"\x00\x00\x00\x01"),))
        self.assertFalse(inf.is_response_to(self.REQUEST))
        get = Frame(1, METER, CONTROLLER, GET, (Property(0xE7),))
        self.assertFalse(get.is_response_to(self.REQUEST))

    def test_differentEpcs(self):
        """Frame.is_response_to rejects a reply whose EPC set differs from the request's."""
        reply = _decode(cap.S1_GET_RES_E7_04A8)
        self.assertFalse(reply.is_response_to(get_request(1, [0xE8])))
        self.assertFalse(reply.is_response_to(get_request(1, [0xE7, 0xE8])))
        two = Frame(1, METER, CONTROLLER, GET_RES,
                    (Property(0xE7, b"\x00" * 4), Property(0xE8, b"\x00" * 4)))
        self.assertFalse(two.is_response_to(self.REQUEST))
        self.assertTrue(two.is_response_to(get_request(1, [0xE7, 0xE8])))


class GarbledTests(SynchronousTestCase):
    """
    Frame.decode raises FrameError for anything that is not a whole frame.
    """

    GOOD = bytes.fromhex(cap.S1_GET_RES_E7_04A8)

    def test_errorClass(self):
        """FrameError is a RemoteDataError and a ValueError."""
        self.assertTrue(issubclass(FrameError, RemoteDataError))
        self.assertTrue(issubclass(FrameError, ValueError))

    def test_wrongEhd(self):
        """Frame.decode rejects a frame whose EHD is not 10 81."""
        for ehd in (b"\x10\x82", b"\x11\x81", b"\x00\x00"):
            self.assertRaises(FrameError, Frame.decode, ehd + self.GOOD[2:])

    def test_truncatedProperty(self):
        """Frame.decode rejects a frame whose last EDT is shorter than its PDC."""
        for cut in (1, 3, 4):
            self.assertRaises(FrameError, Frame.decode, self.GOOD[:-cut])

    def test_truncatedPropertyHeader(self):
        """Frame.decode rejects a frame that ends inside a property's EPC/PDC pair."""
        self.assertRaises(FrameError, Frame.decode, self.GOOD[:13])
        self.assertRaises(FrameError, Frame.decode, self.GOOD[:12])

    def test_missingSecondProperty(self):
        """Frame.decode rejects a frame whose OPC promises more properties than it has."""
        data = bytearray(self.GOOD)
        data[11] = 2
        self.assertRaises(FrameError, Frame.decode, bytes(data))

    def test_trailingBytes(self):
        """Frame.decode rejects a frame with bytes after the last property."""
        self.assertRaises(FrameError, Frame.decode, self.GOOD + b"\x00")
        self.assertRaises(FrameError, Frame.decode, self.GOOD + b"\r\n")

    def test_short(self):
        """Frame.decode rejects anything under 12 bytes, including the empty string."""
        for size in range(12):
            self.assertRaises(FrameError, Frame.decode, self.GOOD[:size])

    def test_noProperties(self):
        """Frame.decode rejects a frame with OPC 0."""
        self.assertRaises(FrameError, Frame.decode, bytes.fromhex("1081000102880105FF017200"))

    def test_setget(self):
        """Frame.decode rejects SetGet frames, which meters do not use."""
        for esv in (SETGET, SETGET_RES, SETGET_SNA):
            data = bytearray(self.GOOD)
            data[10] = esv
            self.assertRaises(FrameError, Frame.decode, bytes(data))


class InfcTests(SynchronousTestCase):
    """
    infc_response builds the INFC_Res answering an INFC.
    """

    def test_infcResponse(self):
        """infc_response keeps the TID, swaps the EOJs and lists the EPCs with PDC 0."""
        infc = Frame(0x0362, METER, CONTROLLER, INFC,
                     (Property(0xEA, bytes.fromhex("07E60801141E0000012D02")),))
        response = infc_response(infc)
        self.assertEqual(response, Frame(0x0362, CONTROLLER, METER, INFC_RES,
                                         (Property(0xEA),)))
        self.assertEqual(response.encode(), bytes.fromhex("1081036205FF010288017A01EA00"))

    def test_infcResponseTwo(self):
        """infc_response answers an INFC carrying EA and EB with both EPCs, in order."""
        infc = Frame.decode(bytes.fromhex(cap.S20_INF_EA_EB[:20] + "74" +
                                          cap.S20_INF_EA_EB[22:]))
        self.assertEqual(infc.esv, INFC)
        self.assertEqual(infc_response(infc).encode(),
                         bytes.fromhex("1081000105FF010288017A02EA00EB00"))


_props = st.builds(Property, epc=st.integers(0, 0xFF), edt=st.binary(max_size=40))
_ESVS = [e for e in range(0x100) if e not in (SETGET, SETGET_RES, SETGET_SNA)]
_frames = st.builds(
    Frame, tid=st.integers(0, 0xFFFF), seoj=st.integers(0, 0xFFFFFF),
    deoj=st.integers(0, 0xFFFFFF), esv=st.sampled_from(_ESVS),
    properties=st.lists(_props, min_size=1, max_size=8).map(tuple))


class PropertyTests(SynchronousTestCase):
    """
    Hypothesis: frames round-trip, and garbage raises only FrameError.
    """

    @settings(max_examples=200, deadline=None)
    @given(frame=_frames)
    def test_roundTrip(self, frame):
        """Frame.decode(frame.encode()) gives back the same Frame."""
        data = frame.encode()
        self.assertEqual(len(data), 12 + sum(2 + len(p.edt) for p in frame.properties))
        self.assertEqual(Frame.decode(data), frame)

    @settings(max_examples=200, deadline=None)
    @given(data=st.binary(max_size=80))
    def test_randomBytes(self, data):
        """Frame.decode on random bytes returns a Frame or raises FrameError."""
        try:
            frame = Frame.decode(data)
        except FrameError:
            return
        self.assertEqual(frame.encode(), data)

    @settings(max_examples=200, deadline=None)
    @given(data=st.binary(min_size=8, max_size=60))
    def test_randomAfterEhd(self, data):
        """Frame.decode on random bytes after a valid EHD returns a Frame or raises FrameError."""
        try:
            frame = Frame.decode(b"\x10\x81" + data)
        except FrameError:
            return
        self.assertEqual(frame.encode(), b"\x10\x81" + data)

    @settings(max_examples=200, deadline=None)
    @given(frame=_frames, cut=st.integers(1, 20))
    def test_truncated(self, frame, cut):
        """Frame.decode rejects every proper prefix of a valid frame with FrameError."""
        data = frame.encode()
        self.assertRaises(FrameError, Frame.decode, data[:max(0, len(data) - cut)])
