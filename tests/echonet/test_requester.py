"""
Tests for L{smartmeter_tx.echonet.requester.EchonetRequester}, on a real
L{SKStackProtocol} over a StringTransport with a Clock, in both SK dialects:
standard (§1 BP35A1, echo off, zeroed addresses) and DSE (§4 RS-WSUHA-P, echo on).

C{§n} names a section of L{tests.fixtures.captures}.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.echonet import frame as F
from smartmeter_tx.echonet.requester import (
    EchonetError, EchonetRequester, EchonetTimeout, NotSent, SendFailed,
)
from smartmeter_tx.sk import values as V
from smartmeter_tx.sk.errors import SKCommandError, SKDisconnected
from tests.fixtures import captures as C
from tests.sktesting import ModeMixin, connect, feed, lines, modes, send

#: Get E7 with TID 0001, the 14 bytes of docs/PROTOCOL.md, "Frames".
GET_E7_TID1 = bytes.fromhex("1081000105FF010288016201E700")


class RequesterTestsMixin(ModeMixin):
    """
    Tests run for each dialect; subclasses say how that dialect's module talks.
    """

    dialect: V.Dialect
    meter: str
    module: str
    lla: str
    other: str  # a sender that is not the meter

    def setUp(self):
        self.logged = self.captureLogs()
        self.fresh()

    def fresh(self):
        """
        Connect a new protocol and requester (used per feeding mode).
        """
        self.proto, self.transport, self.clock, self.heard = connect()
        self.unsolicited = []
        self.requester = EchonetRequester(
            self.proto, self.dialect, meter_addr=self.meter, clock=self.clock, first_tid=1)
        self.requester.add_unsolicited_listener(
            lambda frame, rx: self.unsolicited.append((frame, rx)))
        del self.logged[:]

    # -- what the module prints, per dialect ------------------------------------

    def head(self, payload: bytes) -> bytes:
        """The SKSENDTO text part, up to and including the space after LEN."""
        side = b" 0" if self.dialect is V.Dialect.DSE else b""
        return (b"SKSENDTO 1 " + self.meter.encode() + b" 0E1A 1" + side +
                b" %04X " % len(payload))

    def sendto(self, payload: bytes) -> bytes:
        """The exact bytes of a SKSENDTO of C{payload} to the meter."""
        return self.head(payload) + payload

    def event21(self, param: int) -> bytes:
        side = b" 0" if self.dialect is V.Dialect.DSE else b""
        return b"EVENT 21 " + self.meter.encode() + side + b" %02X" % param

    def echo(self, payload: bytes) -> bytes:
        """The module's echo of the SKSENDTO line (or a bare CR LF with echo off)."""
        raise NotImplementedError

    def accepted(self, payload: bytes, param: int = 0) -> bytes:
        """Echo, EVENT 21 with C{param}, OK."""
        return self.echo(payload) + lines(self.event21(param), b"OK")

    def rx(self, payload_hex: str, sender: str = None, dest: str = None, port: str = "0E1A",
           side: str = "0") -> bytes:
        """An ERXUDP line with CR LF, in this dialect's layout."""
        secured = "1" if port == "0E1A" else "0"
        fields = ["ERXUDP", sender or self.meter, dest or self.module, port, port, self.lla,
                  secured]
        if self.dialect is V.Dialect.DSE:
            fields.append(side)
        fields += ["%04X" % (len(payload_hex) // 2), payload_hex]
        return " ".join(fields).encode() + b"\r\n"

    def written_frames(self) -> list:
        """The ECHONET frames of every SKSENDTO written so far."""
        fields = 6 if self.dialect is V.Dialect.DSE else 5
        out = []
        for chunk in self.transport.value().split(b"SKSENDTO ")[1:]:
            tokens = chunk.split(b" ", fields)
            out.append(F.Frame.decode(tokens[-1][:int(tokens[-2], 16)]))
        return out

    # -- tests --------------------------------------------------------------------

    def test_getWritesSendto(self):
        """
        C{get([0xE7])} writes one SKSENDTO to the meter with the Get frame
        (TID 0001, 05FF01 -> 028801, ESV 62, E7 with PDC 0).
        """
        d = self.requester.get([0xE7])
        self.assertEqual(self.transport.value(), self.sendto(GET_E7_TID1))
        self.assertNoResult(d)
        self.assertEqual(self.requester.pending, 1)
        # A frame counts once the module took it (OK), not when it was written.
        self.assertEqual(self.requester.frames_sent, 0)
        send(self.proto, self.accepted(GET_E7_TID1))
        self.assertEqual(self.requester.frames_sent, 1)

    def test_refusedSendIsNoFrame(self):
        """An SKSENDTO the module refuses (FAIL ER10) puts nothing on the air: not counted."""
        d = self.requester.get([0xE7])
        send(self.proto, b"FAIL ER10\r\n")
        self.failureResultOf(d)
        self.assertEqual(self.requester.frames_sent, 0)

    def test_getResponse(self):
        """
        C{get()} fires with the Get_Res frame (§1: E7 = 1192 W) that arrives
        after echo, EVENT 21 00 and OK; no timer is left behind.
        """
        answer = self.accepted(GET_E7_TID1) + self.rx(C.S1_GET_RES_E7_04A8)
        for mode in modes(answer):
            with self.inMode(mode):
                self.fresh()
                d = self.requester.get([0xE7])
                feed(self.proto, answer, mode)
                frame = self.successResultOf(d)
                self.assertEqual(frame, F.Frame.decode(bytes.fromhex(C.S1_GET_RES_E7_04A8)))
                self.assertEqual((frame.tid, frame.seoj, frame.deoj, frame.esv),
                                 (1, F.METER, F.CONTROLLER, F.GET_RES))
                self.assertEqual(frame.get(0xE7), bytes.fromhex("000004A8"))
                self.assertEqual(self.requester.pending, 0)
                self.assertEqual(self.clock.getDelayedCalls(), [])
                self.assertEqual(self.unsolicited, [])

    def test_getSna(self):
        """
        A Get_SNA (ESV 52, §1: D3 not provided) answers C{get([0xD3])}.
        """
        d = self.requester.get([0xD3])
        payload = bytes.fromhex("1081000105FF010288016201D300")
        self.assertEqual(self.transport.value(), self.sendto(payload))
        send(self.proto, self.accepted(payload) + self.rx(C.S1_GET_SNA_D3))
        frame = self.successResultOf(d)
        self.assertEqual(frame.esv, F.GET_SNA)
        self.assertEqual(frame.properties, (F.Property(0xD3, b""),))
        self.assertEqual(self.requester.pending, 0)

    def test_answerBeforeOk(self):
        """
        An answer that overtakes SKSENDTO's OK still fires the request, and no
        timer is started after the OK.
        """
        answer = (self.echo(GET_E7_TID1) + lines(self.event21(0)) +
                  self.rx(C.S1_GET_RES_E7_03F8) + lines(b"OK"))
        for mode in modes(answer):
            with self.inMode(mode):
                self.fresh()
                d = self.requester.get([0xE7])
                feed(self.proto, answer, mode)
                self.assertEqual(self.successResultOf(d).get(0xE7), bytes.fromhex("000003F8"))
                self.assertEqual(self.clock.getDelayedCalls(), [])
                self.assertEqual(self.requester.pending, 0)

    def foreign(self):
        """
        (description, ERXUDP line, goes to the unsolicited listeners) for frames that must
        not answer a pending Get E7 with TID 0001.
        """
        res = C.S1_GET_RES_E7_04A8
        return [
            ("wrong TID", self.rx("1081000202880105FF017201E704000004A8"), True),
            ("EOJs not swapped", self.rx("1081000105FF010288017201E704000004A8"), True),
            ("other EPC", self.rx(C.S1_GET_RES_E8_00620022), True),
            ("two EPCs", self.rx("1081000102880105FF017202E704000004A8E80400620022"), True),
            ("ESV 62 echoed back", self.rx("1081000102880105FF016201E700"), True),
            ("other sender", self.rx(res, sender=self.other), False),
            ("PANA port 02CC", self.rx(res, port="02CC"), False),
        ]

    def test_foreignFramesNotTaken(self):
        """
        A frame with the wrong TID, un-swapped EOJs, another EPC set, from
        another sender or on another port does not answer the request; valid
        frames from the meter go to the unsolicited listeners; the request then times out
        with L{EchonetTimeout} and nothing stays pending.
        """
        for what, line, reported in self.foreign():
            self.fresh()
            d = self.requester.get([0xE7], timeout=20)
            send(self.proto, self.accepted(GET_E7_TID1) + line)
            self.assertNoResult(d)
            self.assertEqual(len(self.unsolicited), 1 if reported else 0, what)
            self.clock.advance(19.9)
            self.assertNoResult(d)
            self.clock.advance(0.1)
            error = self.failureResultOf(d, EchonetTimeout).value
            self.assertEqual(error.tid, 1, what)
            self.assertEqual(self.requester.pending, 0, what)
            self.assertEqual(self.clock.getDelayedCalls(), [], what)

    def test_timeout(self):
        """
        A request with no answer fails with L{EchonetTimeout} (naming the TID)
        at its timeout, counted from the SKSENDTO's completion.
        """
        d = self.requester.get([0xE7], timeout=3)
        self.clock.advance(1)
        send(self.proto, self.accepted(GET_E7_TID1))
        self.clock.advance(2.99)
        self.assertNoResult(d)
        self.clock.advance(0.01)
        error = self.failureResultOf(d, EchonetTimeout).value
        self.assertEqual(error.tid, 1)
        self.assertIn("0001", str(error))
        self.assertEqual(self.requester.pending, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_staleAnswer(self):
        """
        A late answer to a timed-out TID that arrives during the next request
        goes to the unsolicited listeners; the next request still gets its own answer.
        """
        d1 = self.requester.get([0xE7], timeout=5)
        send(self.proto, self.accepted(GET_E7_TID1))
        self.clock.advance(5)
        self.failureResultOf(d1, EchonetTimeout)
        self.transport.clear()
        d2 = self.requester.get([0xE7], timeout=5)
        get2 = bytes.fromhex("1081000205FF010288016201E700")
        self.assertEqual(self.transport.value(), self.sendto(get2))
        send(self.proto, self.accepted(get2) + self.rx(C.S1_GET_RES_E7_04A8))
        self.assertNoResult(d2)
        self.assertEqual([f.tid for f, rx in self.unsolicited], [1])
        send(self.proto, self.rx("1081000202880105FF017201E704000003F8"))
        frame = self.successResultOf(d2)
        self.assertEqual((frame.tid, frame.get(0xE7)), (2, bytes.fromhex("000003F8")))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_infWhilePending(self):
        """
        The §4 EA+EB INF (ESV 73, TID 0001 like the pending Get) goes to
        the unsolicited listeners, not to the request, which still gets its answer.
        """
        d = self.requester.get([0xE7])
        send(self.proto, self.rx(C.S20_INF_EA_EB) + self.accepted(GET_E7_TID1) +
             self.rx(C.S20_INF_EA_EB))
        self.assertNoResult(d)
        self.assertEqual(len(self.unsolicited), 2)
        frame, rx = self.unsolicited[0]
        self.assertEqual((frame.tid, frame.esv, frame.epcs), (1, F.INF, (0xEA, 0xEB)))
        self.assertEqual(frame.get(0xEA), bytes.fromhex("07E70C13001E000000458E"))
        self.assertEqual(rx.sender, self.meter)
        send(self.proto, self.rx(C.S1_GET_RES_E7_04A8))
        self.assertEqual(self.successResultOf(d).esv, F.GET_RES)
        self.assertEqual(self.transport.value(), self.sendto(GET_E7_TID1))

    def test_multicastD5Inf(self):
        """
        The node profile's D5 instance-list INF to FF02::1 (§4, after EVENT 25)
        goes to the unsolicited listeners with its datagram.
        """
        send(self.proto, self.rx(C.S20_INF_D5_TID_0000,
                                 dest="FF02:0000:0000:0000:0000:0000:0000:0001"))
        [(frame, rx)] = self.unsolicited
        self.assertEqual((frame.tid, frame.seoj, frame.deoj, frame.esv),
                         (0, F.NODE_PROFILE, F.NODE_PROFILE, F.INF))
        self.assertEqual(frame.get(0xD5), bytes.fromhex("01028801"))
        self.assertEqual(rx.dest, "FF02:0000:0000:0000:0000:0000:0000:0001")
        self.assertEqual(self.transport.value(), b"")

    def test_infcAnswered(self):
        """
        An INFC from the meter is reported to the unsolicited listeners and answered with
        an INFC_Res SKSENDTO (same TID, EOJs swapped, same EPC with PDC 0).
        """
        infc = "1081000502880105FF017401EA0B07E60801141E0000012D02"
        send(self.proto, self.rx(infc))
        infc_res = bytes.fromhex("1081000505FF010288017A01EA00")
        self.assertEqual(self.transport.value(), self.sendto(infc_res))
        [(frame, rx)] = self.unsolicited
        self.assertEqual((frame.tid, frame.esv), (5, F.INFC))
        send(self.proto, self.accepted(infc_res))
        self.assertFalse(self.proto.busy)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_infcAnswerWaitsForCommand(self):
        """
        An INFC arriving while a SKSENDTO is in flight is answered once that
        command completes (one command on the wire).
        """
        d = self.requester.get([0xE7])
        infc = "1081000502880105FF017401EA0B07E60801141E0000012D02"
        send(self.proto, self.rx(infc))
        self.assertEqual(self.transport.value(), self.sendto(GET_E7_TID1))
        send(self.proto, self.accepted(GET_E7_TID1))
        infc_res = bytes.fromhex("1081000505FF010288017A01EA00")
        self.assertEqual(self.transport.value(),
                         self.sendto(GET_E7_TID1) + self.sendto(infc_res))
        self.assertNoResult(d)

    def test_sendFailed(self):
        """
        EVENT 21 with PARAM 01 fails the request with L{SendFailed}; nothing
        stays pending and no timer is left.
        """
        answer = self.accepted(GET_E7_TID1, param=1)
        for mode in modes(answer):
            with self.inMode(mode):
                self.fresh()
                d = self.requester.get([0xE7])
                feed(self.proto, answer, mode)
                self.failureResultOf(d, SendFailed)
                self.assertEqual(self.requester.pending, 0)
                self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_notSent(self):
        """
        EVENT 21 with PARAM 02 (neighbour solicitation instead of the frame)
        fails the request with L{NotSent}; no timer is left behind.
        """
        answer = self.accepted(GET_E7_TID1, param=2)
        for mode in modes(answer):
            with self.inMode(mode):
                self.fresh()
                d = self.requester.get([0xE7])
                feed(self.proto, answer, mode)
                self.failureResultOf(d, NotSent)
                self.assertEqual(self.requester.pending, 0)
                self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_skFail(self):
        """
        A SKSENDTO answered C{FAIL ER10} fails the request with the
        L{SKCommandError}; the next request works.
        """
        d = self.requester.get([0xE7])
        send(self.proto, self.echo(GET_E7_TID1) + lines(b"FAIL ER10"))
        error = self.failureResultOf(d, SKCommandError).value
        self.assertEqual((error.code, error.command), (10, "SKSENDTO"))
        self.assertEqual(self.requester.pending, 0)
        d2 = self.requester.get([0xE7])
        get2 = bytes.fromhex("1081000205FF010288016201E700")
        send(self.proto, self.accepted(get2) + self.rx("1081000202880105FF017201E704000004A8"))
        self.assertEqual(self.successResultOf(d2).tid, 2)

    def test_malformedFrameDropped(self):
        """
        A malformed ECHONET payload from the meter (wrong EHD, truncated) is
        logged and dropped: no handler sees it and the request still waits.
        """
        d = self.requester.get([0xE7])
        send(self.proto, self.accepted(GET_E7_TID1) +
             self.rx("1082000102880105FF017201E704000004A8") +
             self.rx("1081000102880105FF017201E70400") +
             self.rx("108100010288"))
        self.assertNoResult(d)
        self.assertEqual(self.unsolicited, [])
        self.assertEqual(len(self.warnings(self.logged)), 3)
        send(self.proto, self.rx(C.S1_GET_RES_E7_04A8))
        self.assertEqual(self.successResultOf(d).tid, 1)

    def test_unsolicitedHandlerRaises(self):
        """
        An unsolicited listener that raises is logged; the listeners after it
        still hear the frame, and the next answer is still matched.
        """
        later = []
        self.requester.remove_unsolicited_listener(self.requester._listeners[0])
        self.requester.add_unsolicited_listener(lambda frame, rx: 1 / 0)
        self.requester.add_unsolicited_listener(lambda frame, rx: later.append(frame.tid))
        d = self.requester.get([0xE7])
        send(self.proto, self.accepted(GET_E7_TID1) + self.rx(C.S20_INF_EA_EB) +
             self.rx(C.S1_GET_RES_E7_04A8))
        self.assertEqual(self.successResultOf(d).tid, 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(later, [1])

    def test_listenersAddedAndRemoved(self):
        """
        Several unsolicited listeners hear the same frame; a removed one hears
        no more (the client's D5 wait and the service's EA/EB log coexist).
        """
        first, second = [], []

        def one(frame, rx):
            first.append(frame.epcs)
        self.requester.add_unsolicited_listener(one)
        self.requester.add_unsolicited_listener(lambda frame, rx: second.append(frame.epcs))
        send(self.proto, self.rx(C.S20_INF_EA_EB))
        self.requester.remove_unsolicited_listener(one)
        self.requester.remove_unsolicited_listener(one)  # twice is harmless
        send(self.proto, self.rx(C.S20_INF_EA_EB))
        self.assertEqual(first, [(0xEA, 0xEB)])
        self.assertEqual(second, [(0xEA, 0xEB)] * 2)
        self.assertEqual(len(self.unsolicited), 2)

    def test_tidsNeverReusedWhilePending(self):
        """
        Pending requests get distinct TIDs; allocation wraps past 0xFFFF to 1,
        skipping 0 and every TID still pending.
        """
        ds = [self.requester.get([0xE7]) for _ in range(5)]
        for tid in range(1, 6):
            send(self.proto, self.accepted(bytes.fromhex("1081%04X05FF010288016201E700" % tid)))
        self.assertEqual([f.tid for f in self.written_frames()], [1, 2, 3, 4, 5])
        send(self.proto, self.rx("1081000302880105FF017201E704000004A8"))
        self.assertEqual(self.successResultOf(ds[2]).tid, 3)
        self.assertEqual(self.requester.pending, 4)
        seen = [self.requester.allocate_tid() for _ in range(0xFFFF - 5)]
        self.assertEqual(seen, list(range(6, 0x10000)))
        self.transport.clear()
        d3 = self.requester.get([0xE7])
        d6 = self.requester.get([0xE7])
        self.assertEqual([f.tid for f in self.written_frames()], [3])
        send(self.proto, self.accepted(bytes.fromhex("1081000305FF010288016201E700")))
        self.assertEqual([f.tid for f in self.written_frames()], [3, 6])
        self.assertNoResult(d3)
        self.assertNoResult(d6)
        self.assertEqual(self.requester.pending, 6)

    def test_tidAlreadyPending(self):
        """
        C{request()} with a frame whose TID is pending fails at once and
        writes nothing.
        """
        self.requester.get([0xE7])
        self.transport.clear()
        d = self.requester.request(F.get_request(1, [0xE8]))
        self.assertIsInstance(self.failureResultOf(d, EchonetError).value, EchonetError)
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(self.requester.pending, 1)

    def test_noMeterAddress(self):
        """
        C{get()} before the meter's address is known fails with
        L{EchonetError} and writes nothing.
        """
        requester = EchonetRequester(self.proto, self.dialect, clock=self.clock)
        self.failureResultOf(requester.get([0xE7]), EchonetError)
        self.assertEqual(self.transport.value(), b"")

    def test_cancel(self):
        """
        Cancelling a request's Deferred forgets its TID and leaves no timer.
        """
        d = self.requester.get([0xE7])
        send(self.proto, self.accepted(GET_E7_TID1))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.requester.pending, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        send(self.proto, self.rx(C.S1_GET_RES_E7_04A8))
        self.assertEqual(len(self.unsolicited), 1)

    def test_cancelWhileAnotherCommandIsOnTheWire(self):
        """
        A Get cancelled while another command is on the wire never goes on
        the air: its SKSENDTO is not written, then or after that command's OK.
        """
        from smartmeter_tx.sk import commands
        ver = self.proto.command(commands.sk_ver())
        d = self.requester.get([0xE7])
        self.assertEqual(self.transport.value(), b"SKVER\r\n")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        send(self.proto, self.ver_echo + lines(C.S4_EVER, b"OK"))
        self.successResultOf(ver)
        self.assertNotIn(b"SKSENDTO", self.transport.value())
        self.assertEqual(self.requester.pending, 0)
        self.assertEqual(self.requester.frames_sent, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelOnTheWire(self):
        """
        A Get cancelled while its SKSENDTO is on the wire (no OK yet) is
        abandoned: the next command waits for a resync, and the late answer
        is nobody's.
        """
        d = self.requester.get([0xE7])
        self.assertIn(b"SKSENDTO", self.transport.value())
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.transport.clear()
        d2 = self.requester.get([0xE7])
        self.assertTrue(self.transport.value().startswith(b"SKVER"), self.transport.value())
        self.assertNotIn(b"SKSENDTO", self.transport.value())
        self.assertEqual(self.requester.pending, 1)
        d2.cancel()
        self.failureResultOf(d2, CancelledError)

    def test_connectionLostBeforeOk(self):
        """
        Losing the link while the SKSENDTO is in flight fails the request with
        L{SKDisconnected}.
        """
        d = self.requester.get([0xE7])
        self.transport.loseConnection()
        self.failureResultOf(d, SKDisconnected)
        self.assertEqual(self.requester.pending, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connectionLostWhileWaiting(self):
        """
        Losing the link while a request waits for its answer (after the OK)
        fails it at once with L{SKDisconnected}, leaving no timer.
        """
        d = self.requester.get([0xE7])
        send(self.proto, self.accepted(GET_E7_TID1))
        self.transport.loseConnection()
        self.failureResultOf(d, SKDisconnected)
        self.assertEqual(self.requester.pending, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_requestAfterConnectionLost(self):
        """
        A request after the link was lost fails at once with L{SKDisconnected}.
        """
        self.transport.loseConnection()
        self.failureResultOf(self.requester.get([0xE7]), SKDisconnected)
        self.assertEqual(self.requester.pending, 0)

    def test_close(self):
        """
        After C{close()} the requester no longer sees datagrams.
        """
        self.requester.close()
        send(self.proto, self.rx(C.S20_INF_EA_EB))
        self.assertEqual(self.unsolicited, [])


class StandardRequesterTests(RequesterTestsMixin, SynchronousTestCase):
    """
    Standard edition (§1, BP35A1): echo off, SKSENDTO answered by a bare CR LF.
    """

    dialect = V.Dialect.STANDARD
    meter = "0000:0000:0000:0000:0000:0000:0000:0000"
    module = "0000:0000:0000:0000:0000:0000:0000:0000"
    lla = "0000000000000000"
    other = "FE80:0000:0000:0000:021D:1291:0004:E578"

    ver_echo = b""

    def echo(self, payload: bytes) -> bytes:
        return b"\r\n"

    def test_realStandardHead(self):
        """
        The standard SKSENDTO text part matches §1's logged line.
        """
        self.requester.get([0xE7])
        self.assertEqual(self.transport.value(), C.S1_SEND_SENDTO_HEAD + GET_E7_TID1)


class DSERequesterTests(RequesterTestsMixin, SynchronousTestCase):
    """
    Dual stack edition (§4, RS-WSUHA-P): echo on, SIDE fields.
    """

    dialect = V.Dialect.DSE
    meter = C.S4_METER_IP
    module = C.S4_MODULE_IP
    lla = C.S4_METER_MAC
    other = "FE80:0000:0000:0000:021D:1291:0004:E579"

    ver_echo = b"SKVER\r\n"

    def echo(self, payload: bytes) -> bytes:
        return self.head(payload) + b"\r\n"

    def test_hanSideNotTaken(self):
        """
        A matching frame on DSE SIDE 1 (the HAN side) is neither taken nor
        reported; the request then times out.
        """
        d = self.requester.get([0xE7], timeout=20)
        send(self.proto, self.accepted(GET_E7_TID1) + self.rx(C.S1_GET_RES_E7_04A8, side="1"))
        self.assertNoResult(d)
        self.assertEqual(self.unsolicited, [])
        self.clock.advance(20)
        self.failureResultOf(d, EchonetTimeout)
        self.assertEqual(self.requester.pending, 0)

    def test_realSection4Exchange(self):
        """
        The §4 exchange: request(Get E7, TID 5253) writes exactly the logged
        SKSENDTO, and the real read after it (INF, echo, EVENT 21, OK, the
        glued C{SKSENDTOERXUDP} line) fires it with E7 = 228 W and reports the
        INF.
        """
        read = lines(C.S4_INF_EA_EB_RX, C.S4_SENDTO_ECHO, C.S4_EVENT_21_SENT, C.S4_OK,
                     C.S4_GLUED_RX)
        for mode in modes(read):
            with self.inMode(mode):
                self.fresh()
                d = self.requester.request(F.Frame.decode(C.S4_SENDTO_PAYLOAD))
                self.assertEqual(self.transport.value(),
                                 C.S4_SENDTO_ECHO + C.S4_SENDTO_PAYLOAD)
                feed(self.proto, read, mode)
                frame = self.successResultOf(d)
                self.assertEqual((frame.tid, frame.esv, frame.get(0xE7)),
                                 (0x5253, F.GET_RES, bytes.fromhex("000000E4")))
                self.assertEqual([f.epcs for f, rx in self.unsolicited], [(0xEA, 0xEB)])
                self.assertEqual(self.clock.getDelayedCalls(), [])


class RequesterHardeningTests(SynchronousTestCase):
    def test_randomFirstTid(self):
        """Without first_tid, each requester starts at a random TID, not always 1."""
        starts = set()
        for _ in range(8):
            proto, transport, clock, heard = connect()
            starts.add(EchonetRequester(proto, V.Dialect.STANDARD, clock=clock).allocate_tid())
        self.assertGreater(len(starts), 1)
        self.assertTrue(all(1 <= t <= 0xFFFF for t in starts))

    def test_plaintextFrameNotTaken(self):
        """A Get_Res with SECURED 0 (not under the PANA key) is never taken as the answer."""
        meter = "FE80:0000:0000:0000:021D:1290:1234:5678"
        proto, transport, clock, heard = connect()
        requester = EchonetRequester(proto, V.Dialect.STANDARD, meter_addr=meter, clock=clock,
                                     first_tid=7)
        d = requester.get([0xE7])
        proto.dataReceived(b"EVENT 21 " + meter.encode() + b" 00\r\nOK\r\n")
        answer = F.Frame(7, F.METER, F.CONTROLLER, F.GET_RES,
                         (F.Property(0xE7, b"\x00\x00\x01\xf8"),)).encode()
        rx = V.RxUdp(meter, "FE80:0000:0000:0000:021D:1291:0004:E578", 0x0E1A, 0x0E1A,
                     "001D129012345678", False, answer)
        proto.dataReceived(rx.to_line() + b"\r\n")
        self.assertNoResult(d)
        secured = V.RxUdp(rx.sender, rx.dest, rx.rport, rx.lport, rx.sender_lla, True, answer)
        proto.dataReceived(secured.to_line() + b"\r\n")
        self.assertEqual(self.successResultOf(d).get(0xE7), b"\x00\x00\x01\xf8")
