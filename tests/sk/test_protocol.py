"""
Tests for L{smartmeter_tx.sk.protocol.SKStackProtocol}.

Module output comes from the real lines of tests/fixtures/captures.py (§n below)
and is fed whole, one byte at a time, and split in two at every offset.
"""

from __future__ import annotations

import random

from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionDone
from twisted.logger import formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.sk import values as V
from smartmeter_tx.sk import commands
from smartmeter_tx.sk.protocol import SKStackProtocol
from smartmeter_tx.sk.protocol.queue import Reply
from smartmeter_tx.sk.errors import SKCommandError, SKDisconnected, SKEventError, SKTimeoutError
from tests.fixtures import captures as C
from tests.sktesting import ModeMixin, connect, feed, lines, modes, send

STD, DSE = V.Dialect.STANDARD, V.Dialect.DSE

METER = C.S4_METER_IP
MODULE = C.S4_MODULE_IP
LLA = C.S4_METER_MAC
FF02 = "FF02:0000:0000:0000:0000:0000:0000:0001"
ZERO = "0000:0000:0000:0000:0000:0000:0000:0000"

#: The §4 credentials, as the author replaced them in the capture.
PASSWORD = "0123456789AB"
RBID = "00112233445566778899AABBCCDDEEFF"
RBID_HEX = RBID.encode().hex().upper()
PAIR_ID = RBID[-8:]

#: An SKINFO answer line (standard module), for the resync after an SKVER.
EINFO = b"EINFO " + MODULE.encode() + b" 001D129012345678 21 FFFF FFFE"

#: §4 Get_Res E7 = 228 W (TID 0x5253), the answer glued to the stray echo.
GET_RES_E7 = bytes.fromhex("1081525302880105FF017201E704000000E4")

#: §4 second PANA message with the author's X redaction filled back in with
#: the hex-encoded B-route ID, which is what that part of the payload carries.
PANA_RX_2_WITH_ID = C.S4_PANA_RX_2.replace(b"X" * 64, RBID_HEX.encode())

#: §4 join transcript with the second PANA message restored (see above).
JOIN_TRANSCRIPT = [PANA_RX_2_WITH_ID if line == C.S4_PANA_RX_2 else line
                   for line in C.S4_JOIN_TRANSCRIPT]


def erxudp(payload: bytes, layout: str = "std", binary: bool = False, sender: str = METER,
           dest: str = MODULE, port: str = "0E1A", secured: str = "1", side: str = "0",
           rssi: str = "A5") -> bytes:
    """
    An ERXUDP line (without CR LF) in one of the three layouts: C{"std"} (9
    tokens), C{"dse"} (10, with SIDE) or C{"rssi"} (11, DSE with SA2=1).
    """
    head = ["ERXUDP", sender, dest, port, port, LLA]
    if layout == "rssi":
        head.append(rssi)
    head.append(secured)
    if layout in ("dse", "rssi"):
        head.append(side)
    head.append("%04X" % len(payload))
    data = payload if binary else payload.hex().upper().encode()
    return " ".join(head).encode() + b" " + data


def expected_rx(payload: bytes, layout: str = "std", binary: bool = False) -> V.RxUdp:
    return V.RxUdp(
        sender=METER, dest=MODULE, rport=0x0E1A, lport=0x0E1A, sender_lla=LLA, secured=True,
        data=payload, side=None if layout == "std" else 0,
        rssi=0xA5 if layout == "rssi" else None, binary=binary,
    )


class CommandWritingTests(SynchronousTestCase):
    """
    What L{SKStackProtocol.command} writes, and when.
    """

    def test_exactBytes(self):
        """
        C{command()} writes each command's exact bytes: CR LF for SK commands,
        CR alone for ROPT/WOPT, and SKSENDTO's raw payload after the length
        field with no line terminator.
        """
        payload = C.S4_SENDTO_PAYLOAD
        cases = [
            (commands.sk_ver(), b"SKVER\r\n"),
            (commands.sk_appver(), b"SKAPPVER\r\n"),
            (commands.sk_info(), b"SKINFO\r\n"),
            (commands.sk_sreg("SFE", "0"), b"SKSREG SFE 0\r\n"),
            (commands.sk_sreg("S2"), b"SKSREG S2\r\n"),
            (commands.sk_sreg("S3", "B5FB"), b"SKSREG S3 B5FB\r\n"),
            (commands.sk_setpwd(PASSWORD), b"SKSETPWD C 0123456789AB\r\n"),
            (commands.sk_setrbid(RBID), b"SKSETRBID 00112233445566778899AABBCCDDEEFF\r\n"),
            (commands.sk_scan(STD), b"SKSCAN 2 FFFFFFFF 6\r\n"),
            (commands.sk_scan(DSE), b"SKSCAN 2 FFFFFFFF 6 0\r\n"),
            (commands.sk_ll64(LLA), b"SKLL64 0011223344556677\r\n"),
            (commands.sk_join(METER), b"SKJOIN " + METER.encode() + b"\r\n"),
            (commands.sk_sendto(STD, METER, payload),
             b"SKSENDTO 1 " + METER.encode() + b" 0E1A 1 000E " + payload),
            (commands.sk_sendto(DSE, METER, payload), C.S4_SENDTO_ECHO + payload),
            (commands.sk_term(), b"SKTERM\r\n"),
            (commands.sk_reset(), b"SKRESET\r\n"),
            (commands.sk_table("2"), b"SKTABLE 2\r\n"),
            (commands.sk_addnbr(METER, LLA), b"SKADDNBR " + METER.encode() + b" 0011223344556677\r\n"),
            (commands.ropt(), b"ROPT\r"),
            (commands.wopt(1), b"WOPT 01\r"),
            (commands.wopt(0), b"WOPT 00\r"),
        ]
        for command, expected in cases:
            proto, transport, clock, heard = connect()
            proto.command(command)
            self.assertEqual(transport.value(), expected, command.name)

    def test_sendtoPayloadHasNoLineEnd(self):
        """
        C{command(sk_sendto(...))} ends the write with the last payload byte,
        even when the payload itself ends in CR LF.
        """
        payload = bytes.fromhex("1081000105FF01028801620102") + b"\r\n"
        proto, transport, clock, heard = connect()
        proto.command(commands.sk_sendto(STD, ZERO, payload))
        self.assertEqual(
            transport.value(),
            b"SKSENDTO 1 0000:0000:0000:0000:0000:0000:0000:0000 0E1A 1 000F " + payload)

    def test_oneCommandOnTheWire(self):
        """
        C{command()} does not write a second command until the first one's OK.
        """
        proto, transport, clock, heard = connect()
        d1 = proto.command(commands.sk_sreg("SFE", "0"))
        d2 = proto.command(commands.sk_ver())
        self.assertEqual(transport.value(), b"SKSREG SFE 0\r\n")
        send(proto, b"SKSREG SFE 0\r\n")
        self.assertEqual(transport.value(), b"SKSREG SFE 0\r\n")
        self.assertNoResult(d1)
        send(proto, b"OK\r\n")
        self.assertIsInstance(self.successResultOf(d1), Reply)
        self.assertEqual(transport.value(), b"SKSREG SFE 0\r\nSKVER\r\n")
        self.assertNoResult(d2)
        self.assertTrue(proto.busy)

    def test_queuedCommandsInOrder(self):
        """
        Queued commands are written in the order C{command()} was called, each
        after the previous one completed.
        """
        proto, transport, clock, heard = connect()
        ds = [proto.command(commands.sk_sreg("S2", "31")), proto.command(commands.sk_sreg("S3", "B5FB")),
              proto.command(commands.sk_ll64(LLA))]
        written = []
        answers = [lines(C.S4_SREG_S2_ECHO, C.S4_OK), lines(C.S4_SREG_S3_ECHO, C.S4_OK),
                   lines(C.S4_LL64_ECHO, C.S4_LL64_ANSWER)]
        for answer in answers:
            written.append(transport.value())
            transport.clear()
            send(proto, answer)
        self.assertEqual(written, [b"SKSREG S2 31\r\n", b"SKSREG S3 B5FB\r\n",
                                   b"SKLL64 0011223344556677\r\n"])
        self.assertEqual([self.successResultOf(d).command.name for d in ds],
                         ["SKSREG", "SKSREG", "SKLL64"])
        self.assertFalse(proto.busy)
        self.assertEqual(transport.value(), b"")


class EchoTests(ModeMixin, SynchronousTestCase):
    """
    Echoed command lines are recognised and skipped with echo on and off.
    """

    def test_echoOn(self):
        """
        With echo on (§4 SKVER), the echoed command is skipped, the result line
        is collected and C{proto.echo} becomes True.
        """
        answer = lines(C.S4_VER_ECHO, C.S4_EVER, C.S4_OK)
        for mode in modes(answer):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                d = proto.command(commands.sk_ver())
                feed(proto, answer, mode)
                reply = self.successResultOf(d)
                self.assertEqual(reply.lines, [V.Ver("1.5.2")])
                self.assertEqual(reply.final, V.Ok())
                self.assertEqual(reply.ok, V.Ok())
                self.assertIs(proto.echo, True)
                self.assertEqual(heard, [])

    def test_echoOff(self):
        """
        With echo off, the result line and OK complete the command and
        C{proto.echo} becomes False.
        """
        answer = lines(b"EVER 1.2.10", C.S1_OK)
        for mode in modes(answer):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                d = proto.command(commands.sk_ver())
                feed(proto, answer, mode)
                reply = self.successResultOf(d)
                self.assertEqual(reply.lines, [V.Ver("1.2.10")])
                self.assertIs(proto.echo, False)

    def test_sregSfe0TurnsEchoOff(self):
        """
        C{SKSREG SFE 0} is itself echoed; after its OK C{proto.echo} is False.
        """
        echo, ok = lines(C.S1_SEND_SREG_SFE), lines(C.S1_OK)
        for mode in modes(echo, ok):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                d = proto.command(commands.sk_sreg("SFE", "0"))
                feed(proto, echo, mode)
                self.assertNoResult(d)
                self.assertIs(proto.echo, True)
                feed(proto, ok, mode)
                self.assertEqual(self.successResultOf(d).final, V.Ok())
                self.assertIs(proto.echo, False)

    def test_sendtoEchoDse(self):
        """
        The §4 SKSENDTO echo (stops after the length field, trailing space) is
        skipped; the EVENT 21 before OK is collected in the reply.
        """
        answer = lines(C.S4_SENDTO_ECHO, C.S4_EVENT_21_SENT, C.S4_OK)
        for mode in modes(answer):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                d = proto.command(commands.sk_sendto(DSE, METER, C.S4_SENDTO_PAYLOAD))
                self.assertEqual(transport.value(), C.S4_SENDTO_ECHO + C.S4_SENDTO_PAYLOAD)
                feed(proto, answer, mode)
                reply = self.successResultOf(d)
                event = V.Event(0x21, METER, 0, 0)
                self.assertEqual(reply.events, [event])
                self.assertEqual(reply.final, V.Ok())
                self.assertEqual(heard, [event])
                self.assertIs(proto.echo, True)

    def test_sendtoEchoOffBareLine(self):
        """
        With echo off SKSENDTO is answered by a bare CR LF, then the §1 EVENT 21
        and OK; the command completes with that event.
        """
        answer = b"\r\n" + lines(C.S1_EVENT_21_SENT, C.S1_OK)
        payload = bytes.fromhex("1081000105FF010288016201D300")  # Get D3, as §1 sent
        for mode in modes(answer):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                d = proto.command(commands.sk_sendto(STD, ZERO, payload))
                self.assertEqual(transport.value(), C.S1_SEND_SENDTO_HEAD + payload)
                feed(proto, answer, mode)
                reply = self.successResultOf(d)
                self.assertEqual(reply.events, [V.Event(0x21, ZERO, None, 0)])
                self.assertIs(proto.echo, False)

    def test_ll64EchoOn(self):
        """
        SKLL64 with echo on (§4): the echoed C{SKLL64 ...} line is not taken as
        the address; the bare address line that follows completes the command.
        """
        echo, answer = lines(C.S4_LL64_ECHO), lines(C.S4_LL64_ANSWER)
        for mode in modes(echo, answer):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                d = proto.command(commands.sk_ll64(LLA))
                feed(proto, echo, mode)
                self.assertNoResult(d)
                feed(proto, answer, mode)
                reply = self.successResultOf(d)
                self.assertEqual(reply.final, V.Address(METER))
                self.assertIsNone(reply.ok)
                self.assertEqual(clock.getDelayedCalls(), [])
                self.assertFalse(proto.busy)

    def test_ll64EchoOff(self):
        """
        SKLL64 with echo off (§1): the bare address line alone completes it.
        """
        answer = lines(C.S1_LL64_ANSWER)
        for mode in modes(answer):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                d = proto.command(commands.sk_ll64("0000000000000000"))
                self.assertEqual(transport.value(), C.S1_SEND_LL64 + b"\r\n")
                feed(proto, answer, mode)
                self.assertEqual(self.successResultOf(d).final, V.Address(ZERO))

    def test_okBeforeEchoIgnoredWhenEchoOn(self):
        """
        With echo known to be on, an OK that arrives before the command's echo
        (the late OK of an earlier command) does not complete the command.
        """
        stray = lines(C.S4_OK)
        answer = lines(C.S4_SREG_S2_ECHO, C.S4_OK)
        for mode in modes(stray, answer):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                self.successResultOf(_done(proto, commands.sk_ver(),
                                           lines(C.S4_VER_ECHO, C.S4_EVER, C.S4_OK)))
                self.assertIs(proto.echo, True)
                d = proto.command(commands.sk_sreg("S2", "31"))
                feed(proto, stray, mode)
                self.assertNoResult(d)
                feed(proto, answer, mode)
                self.assertEqual(self.successResultOf(d).final, V.Ok())


def _done(proto, command, answer):
    d = proto.command(command)
    send(proto, answer)
    return d


class AsynchronousLineTests(ModeMixin, SynchronousTestCase):
    """
    EVENT, ERXUDP and EPANDESC reach listeners at any time.
    """

    def test_eventBetweenCommandAndOk(self):
        """
        An EVENT between a command's result and its OK reaches listeners and
        the command still completes with its result.
        """
        answer = lines(C.S4_VER_ECHO, C.S4_EVER, C.S4_EVENT_21_SENT, C.S4_OK)
        for mode in modes(answer):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                d = proto.command(commands.sk_ver())
                feed(proto, answer, mode)
                reply = self.successResultOf(d)
                self.assertEqual(reply.lines, [V.Ver("1.5.2")])
                self.assertEqual(reply.events, [])
                self.assertEqual(heard, [V.Event(0x21, METER, 0, 0)])

    def test_rxBetweenEchoAndOk(self):
        """
        An ERXUDP between SKSENDTO's echo and its OK (and one before the echo,
        as in §4) reaches listeners; the SKSENDTO still completes.
        """
        answer = lines(C.S4_INF_EA_EB_RX, C.S4_SENDTO_ECHO, C.S4_INF_EA_EB_RX,
                       C.S4_EVENT_21_SENT, C.S4_OK)
        inf = expected_rx(bytes.fromhex(C.S20_INF_EA_EB), "dse")
        for mode in modes(answer):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                d = proto.command(commands.sk_sendto(DSE, METER, C.S4_SENDTO_PAYLOAD))
                feed(proto, answer, mode)
                reply = self.successResultOf(d)
                self.assertEqual(reply.events, [V.Event(0x21, METER, 0, 0)])
                self.assertEqual(heard, [inf, inf, V.Event(0x21, METER, 0, 0)])

    def test_rxWithNoCommand(self):
        """
        An ERXUDP with no command in flight reaches listeners.
        """
        data = lines(C.S4_INF_D5_RX)
        for mode in modes(data):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                feed(proto, data, mode)
                self.assertEqual(len(heard), 1)
                self.assertEqual(heard[0].dest, FF02)
                self.assertEqual(heard[0].data, bytes.fromhex(C.S20_INF_D5_TID_0000))

    def test_raisingListenerLogged(self):
        """
        A listener that raises is logged; later listeners still get the value,
        parsing goes on and the command completes.
        """
        answer = lines(C.S4_SENDTO_ECHO, C.S4_EVENT_21_SENT, C.S4_OK, C.S4_INF_D5_RX)
        runs = modes(answer)
        for mode in runs:
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                proto.remove_listener(heard.append)
                proto.add_listener(lambda value: 1 / 0)
                proto.add_listener(heard.append)
                d = proto.command(commands.sk_sendto(DSE, METER, C.S4_SENDTO_PAYLOAD))
                feed(proto, answer, mode)
                self.assertEqual(self.successResultOf(d).final, V.Ok())
                self.assertEqual([type(v) for v in heard], [V.Event, V.RxUdp])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2 * len(runs))

    def test_removeListener(self):
        """
        C{remove_listener} stops the calls.
        """
        proto, transport, clock, heard = connect()
        proto.remove_listener(heard.append)
        proto.remove_listener(heard.append)  # removing twice is harmless
        send(proto, lines(C.S4_EVENT_25))
        self.assertEqual(heard, [])

    def test_whenEvent(self):
        """
        C{when_event(nums)} fires with the next EVENT of one of those numbers
        only, once; every caller gets its own Deferred.
        """
        data = lines(C.S4_EVENT_21_SENT, C.S4_EVENT_02, C.S4_EVENT_25, C.S4_EVENT_25)
        for mode in modes(data):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                d1 = proto.when_event(0x24, 0x25)
                d2 = proto.when_event(0x25)
                d3 = proto.when_event(0x29)
                feed(proto, data, mode)
                self.assertEqual(self.successResultOf(d1), V.Event(0x25, METER, 0, None))
                self.assertEqual(self.successResultOf(d2), V.Event(0x25, METER, 0, None))
                self.assertNoResult(d3)
                d3.cancel()
                self.failureResultOf(d3, CancelledError)


class ScanJoinTests(ModeMixin, SynchronousTestCase):
    """
    Commands that complete on an EVENT after their OK: SKSCAN and SKJOIN.
    """

    def test_scanStandard(self):
        """
        SKSCAN (§1, standard, echo off) completes only at EVENT 22 after OK,
        with the 6-line EPANDESC block collected as a PanDesc.
        """
        ok = lines(C.S1_OK)
        rest = lines(b"EVENT 20 " + ZERO.encode(), b"EPANDESC", *C.S1_PANDESC_FIELDS,
                     b"EVENT 22 " + ZERO.encode())
        desc = V.PanDesc(0x3B, 0x09, 0x0000, "0000000000000000", 0xB2, None, "00000000")
        for mode in modes(ok, rest):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                d = proto.command(commands.sk_scan(STD))
                feed(proto, ok, mode)
                self.assertNoResult(d)
                feed(proto, rest, mode)
                reply = self.successResultOf(d)
                self.assertEqual(reply.pandescs, [desc])
                self.assertEqual(reply.final, V.Event(0x22, ZERO))
                self.assertEqual(heard, [V.Event(0x20, ZERO), desc, V.Event(0x22, ZERO)])
                self.assertEqual(clock.getDelayedCalls(), [])

    def test_scanDseRealTranscript(self):
        """
        The §4 DSE scan transcript (echo on, a stray OK before the echo, the
        SKSCAN echo printed twice, a head-less EVENT 20 line, the 7-line
        EPANDESC block with Side:0) completes at EVENT 22 with the PanDesc.
        """
        answer = (b"OK\r\nSKSCAN 2 FFFFFFFF 6 0 \r\nOK\r\n" + b"SKSCAN 2 FFFF" +
                  b"FFFF 6 0 \r\nOK\r\n" +
                  b" 20 FE80:0000:0000:0000:021D:1291:0004:E578 0\r\n" +
                  lines(*C.S4_PANDESC_BLOCK))
        end = lines(C.S4_EVENT_22)
        desc = V.PanDesc(0x31, 0x09, 0xB5FB, LLA, 0xDD, 0, "XXXXXXXX")
        for mode in modes(answer, end):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                self.successResultOf(_done(proto, commands.sk_setrbid(RBID),
                                           lines(C.S4_SETRBID_ECHO, C.S4_OK)))
                d = proto.command(commands.sk_scan(DSE))
                feed(proto, answer, mode)
                self.assertNoResult(d)
                feed(proto, end, mode)
                reply = self.successResultOf(d)
                self.assertEqual(reply.pandescs, [desc])
                self.assertEqual(reply.final, V.Event(0x22, MODULE, 0))
                self.assertEqual(heard, [desc, V.Event(0x22, MODULE, 0)])

    def test_scanMode3NoPairId(self):
        """
        SKSCAN mode 3 (no PairID line): the block is completed by the EVENT 22
        that ends the scan and is still collected.
        """
        answer = lines(C.S1_OK, b"EVENT 20 " + ZERO.encode(), b"EPANDESC",
                       *C.S1_PANDESC_FIELDS[:-1], b"EVENT 22 " + ZERO.encode())
        desc = V.PanDesc(0x3B, 0x09, 0x0000, "0000000000000000", 0xB2)
        for mode in modes(answer):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                d = proto.command(commands.sk_scan(STD, mode=3))
                self.assertEqual(transport.value(), b"SKSCAN 3 FFFFFFFF 6\r\n")
                feed(proto, answer, mode)
                self.assertEqual(self.successResultOf(d).pandescs, [desc])

    def test_scanNothingFound(self):
        """
        SKSCAN with no PAN found completes at EVENT 22 with no PanDesc.
        """
        answer = lines(C.S4_SCAN_ECHO, C.S4_OK, C.S4_EVENT_22)
        for mode in modes(answer):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                d = proto.command(commands.sk_scan(DSE))
                feed(proto, answer, mode)
                self.assertEqual(self.successResultOf(d).pandescs, [])

    def test_joinRealTranscript(self):
        """
        SKJOIN completes at EVENT 25 (reply.final) of the §4 join transcript;
        listeners see EVENT 21 02, EVENT 02, the four PANA ERXUDPs on 02CC,
        every EVENT 21, EVENT 25 and the D5 INF to FF02::1 in order.
        """
        ok = lines(b"SKJOIN " + METER.encode(), C.S4_OK)
        transcript = lines(*JOIN_TRANSCRIPT)
        for mode in modes(ok, transcript):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                d = proto.command(commands.sk_join(METER))
                feed(proto, ok, mode)
                self.assertNoResult(d)
                feed(proto, transcript, mode)
                reply = self.successResultOf(d)
                self.assertEqual(reply.final, V.Event(0x25, METER, 0, None))
                kinds = [(v.num, v.param) if isinstance(v, V.Event) else (v.rport, len(v.data))
                         for v in heard]
                self.assertEqual(kinds, [
                    (0x21, 2), (0x02, None),
                    (0x02CC, 0x28), (0x21, 0), (0x02CC, 0x68), (0x21, 0), (0x02CC, 0x54),
                    (0x21, 0), (0x02CC, 0x58), (0x21, 0), (0x25, None), (0x0E1A, 0x12),
                ])
                pana = [v for v in heard if isinstance(v, V.RxUdp) and v.rport == 0x02CC]
                self.assertEqual({(v.secured, v.side, v.lport) for v in pana},
                                 {(False, 0, 0x02CC)})
                self.assertEqual(heard[-1].dest, FF02)
                self.assertEqual(clock.getDelayedCalls(), [])

    def test_joinRedactedPanaLineDropped(self):
        """
        The §4 PANA line as stored (hex payload partly replaced by X) is a
        malformed ERXUDP: it is dropped and logged, and SKJOIN still completes.
        """
        ok = lines(b"SKJOIN " + METER.encode(), C.S4_OK)
        transcript = lines(*C.S4_JOIN_TRANSCRIPT)
        logged = self.captureLogs()
        for mode in modes(ok, transcript):
            with self.inMode(mode):
                del logged[:]
                proto, transport, clock, heard = connect()
                d = proto.command(commands.sk_join(METER))
                feed(proto, ok, mode)
                feed(proto, transcript, mode)
                self.assertEqual(self.successResultOf(d).final.num, 0x25)
                self.assertEqual(len([v for v in heard if isinstance(v, V.RxUdp)]), 4)
                self.assertGreater(proto.junk_dropped, 0)
                self.assertTrue(self.dropped(logged))
                self.assertEqual(self.warnings(logged), [])  # junk: info level only
                self.assertFalse(transport.disconnecting)

    def test_joinFailsAtEvent24(self):
        """
        SKJOIN fails with L{SKEventError} carrying the EVENT when EVENT 24
        follows its OK.
        """
        answer = lines(b"SKJOIN " + METER.encode(), C.S4_OK, C.S4_EVENT_21_NS, C.S4_EVENT_02,
                       b"EVENT 24 " + METER.encode() + b" 0")
        for mode in modes(answer):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                d = proto.command(commands.sk_join(METER))
                feed(proto, answer, mode)
                error = self.failureResultOf(d, SKEventError).value
                self.assertEqual(error.command, "SKJOIN")
                self.assertEqual(error.event, V.Event(0x24, METER, 0, None))
                self.assertIn("SKJOIN", str(error))
                self.assertEqual(clock.getDelayedCalls(), [])
                self.assertEqual([v.num for v in heard], [0x21, 0x02, 0x24])

    def test_event25BeforeOkDoesNotComplete(self):
        """
        An EVENT 25 left over from before SKJOIN (it arrives before the OK) does
        not complete SKJOIN; the one after OK does.
        """
        before = lines(b"SKJOIN " + METER.encode(), C.S4_EVENT_25)
        after = lines(C.S4_OK, C.S4_EVENT_25)
        for mode in modes(before, after):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                d = proto.command(commands.sk_join(METER))
                feed(proto, before, mode)
                self.assertNoResult(d)
                feed(proto, after, mode)
                self.assertEqual(self.successResultOf(d).final.num, 0x25)


class OtherCompletionTests(ModeMixin, SynchronousTestCase):
    """
    SKTERM and SKRESET.
    """

    def test_termCompletesAtEvent27(self):
        """
        SKTERM completes at EVENT 27 after its OK, with that event as final.
        """
        ok = lines(b"SKTERM", C.S4_OK)
        end = lines(b"EVENT 27 " + METER.encode() + b" 0")
        for mode in modes(ok, end):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                d = proto.command(commands.sk_term())
                feed(proto, ok, mode)
                self.assertNoResult(d)
                feed(proto, end, mode)
                self.assertEqual(self.successResultOf(d).final, V.Event(0x27, METER, 0))
                self.assertEqual(clock.getDelayedCalls(), [])

    def test_resetForgetsEcho(self):
        """
        After SKRESET's OK the echo state is unknown again (registers reset).
        """
        answer = lines(b"SKRESET", C.S4_OK)
        for mode in modes(answer):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                self.successResultOf(_done(proto, commands.sk_sreg("SFE", "0"),
                                           lines(C.S1_SEND_SREG_SFE, C.S1_OK)))
                self.assertIs(proto.echo, False)
                d = proto.command(commands.sk_reset())
                feed(proto, answer, mode)
                self.assertEqual(self.successResultOf(d).final, V.Ok())
                self.assertIsNone(proto.echo)


class OptionTests(ModeMixin, SynchronousTestCase):
    """
    ROPT/WOPT: CR-terminated commands and answers.
    """

    def _ropt(self, answer, expected_mode):
        after = lines(C.S4_EVENT_21_SENT)
        skver = lines(C.S4_VER_ECHO, C.S4_EVER, C.S4_OK)
        for mode in modes(answer + after, skver):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                d = proto.command(commands.ropt())
                d2 = proto.command(commands.sk_ver())
                self.assertEqual(transport.value(), b"ROPT\r")
                feed(proto, answer + after, mode)
                reply = self.successResultOf(d)
                self.assertEqual(reply.final, V.Ok(expected_mode[0]))
                self.assertEqual(proto.payload_mode, expected_mode[1])
                self.assertEqual(heard, [V.Event(0x21, METER, 0, 0)])
                self.assertEqual(transport.value(), b"ROPT\rSKVER\r\n")
                feed(proto, skver, mode)
                self.assertEqual(self.successResultOf(d2).lines, [V.Ver("1.5.2")])

    def test_roptHex(self):
        """
        ROPT answered C{OK 01\\r} (CR only, §4) completes, sets payload_mode to
        C{"hex"}, and the CR LF lines after it still parse.
        """
        self._ropt(C.S4_ROPT_ECHO + b"\r\n" + C.S4_ROPT_OK_01, ("01", "hex"))

    def test_roptBinary(self):
        """
        ROPT answered C{OK 00\\r} sets payload_mode to C{"binary"}.
        """
        self._ropt(b"ROPT\r\nOK 00\r", ("00", "binary"))

    def test_roptEchoOff(self):
        """
        ROPT with echo off: C{OK 01\\r} alone completes it.
        """
        self._ropt(C.S17_ROPT_OK_01, ("01", "hex"))

    def test_roptUnsupported(self):
        """
        ROPT answered C{FAIL ER04} (§17, RL7023) fails with L{SKCommandError}
        code 4, leaves payload_mode unknown, and the next command works.
        """
        answer = lines(C.S4_ROPT_ECHO, C.S17_FAIL_ER04)
        skver = lines(C.S4_VER_ECHO, C.S4_EVER, C.S4_OK)
        for mode in modes(answer, skver):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                d = proto.command(commands.ropt())
                d2 = proto.command(commands.sk_ver())
                feed(proto, answer, mode)
                self.assertEqual(self.failureResultOf(d, SKCommandError).value.code, 4)
                self.assertIsNone(proto.payload_mode)
                feed(proto, skver, mode)
                self.assertEqual(self.successResultOf(d2).lines, [V.Ver("1.5.2")])

    def test_wopt(self):
        """
        WOPT 01 answered C{OK\\r} completes and sets payload_mode to C{"hex"};
        WOPT 00 sets C{"binary"}.
        """
        for arg, expected in ((1, "hex"), (0, "binary")):
            answer = b"WOPT %02X\r\nOK\r" % arg + lines(C.S4_EVENT_25)
            for mode in modes(answer):
                with self.inMode(mode):
                    proto, transport, clock, heard = connect()
                    d = proto.command(commands.wopt(arg))
                    feed(proto, answer, mode)
                    self.assertEqual(self.successResultOf(d).final, V.Ok())
                    self.assertEqual(proto.payload_mode, expected)
                    self.assertEqual(heard, [V.Event(0x25, METER, 0)])


class RxUdpTests(ModeMixin, SynchronousTestCase):
    """
    ERXUDP in all three layouts, hex and binary, including payloads holding CR LF.
    """

    LAYOUTS = ("std", "dse", "rssi")

    def _check(self, payload, layout, binary, payload_mode):
        data = lines(erxudp(payload, layout, binary), C.S4_EVENT_25)
        expected = [expected_rx(payload, layout, binary), V.Event(0x25, METER, 0)]
        for mode in modes(data):
            with self.inMode(mode):
                proto, transport, clock, heard = connect(payload_mode=payload_mode)
                feed(proto, data, mode)
                self.assertEqual(
                    heard, expected,
                    f"layout {layout}, {'binary' if binary else 'hex'}, mode {payload_mode}")

    def test_layoutsHex(self):
        """
        Hex ERXUDP in the 9-, 10- and 11-token layouts reaches listeners with
        its fields and payload decoded.
        """
        for layout in self.LAYOUTS:
            for payload_mode in (None, "hex"):
                self._check(GET_RES_E7, layout, False, payload_mode)

    def test_layoutsBinary(self):
        """
        Binary ERXUDP in the 9-, 10- and 11-token layouts reaches listeners
        with its raw payload.
        """
        for layout in self.LAYOUTS:
            for payload_mode in (None, "binary"):
                self._check(GET_RES_E7, layout, True, payload_mode)

    def test_binaryPayloadWithCrLf(self):
        """
        A binary payload containing CR LF (TID 0D0A) arrives intact, and the
        next line parses.
        """
        payload = bytes.fromhex("10810D0A02880105FF017201E704000000E4")
        for layout in self.LAYOUTS:
            for payload_mode in (None, "binary"):
                self._check(payload, layout, True, payload_mode)

    def test_binaryPayloadEndingInCr(self):
        """
        A binary payload ending in CR arrives intact.
        """
        payload = bytes.fromhex("1081000102880105FF017201E70400000D0D")
        for layout in self.LAYOUTS:
            for payload_mode in (None, "binary"):
                self._check(payload, layout, True, payload_mode)

    def test_binaryPayloadEndingInCrLf(self):
        """
        A binary payload ending in CR LF arrives intact.
        """
        payload = bytes.fromhex("1081000102880105FF017201E70400000D0A")
        for layout in self.LAYOUTS:
            for payload_mode in (None, "binary"):
                self._check(payload, layout, True, payload_mode)

    def test_binaryPayloadStartingWithCrLfAndMany(self):
        """
        A binary payload that starts with CR LF and holds several more arrives
        intact.
        """
        payload = b"\r\n\r\n\x10\x81\r\n\r\r\n\n"
        for layout in ("std", "dse"):
            self._check(payload, layout, True, "binary")

    def test_binaryGetResInSendto(self):
        """
        A binary Get_Res whose payload holds CR LF, arriving between SKSENDTO's
        EVENT 21 and OK, reaches listeners and the SKSENDTO completes.
        """
        payload = bytes.fromhex("10810D0A02880105FF017201E70400000D0A")
        answer = lines(C.S4_SENDTO_ECHO, C.S4_EVENT_21_SENT, erxudp(payload, "dse", True),
                       C.S4_OK)
        for mode in modes(answer):
            with self.inMode(mode):
                proto, transport, clock, heard = connect(payload_mode="binary")
                d = proto.command(commands.sk_sendto(DSE, METER, C.S4_SENDTO_PAYLOAD))
                feed(proto, answer, mode)
                self.assertEqual(self.successResultOf(d).final, V.Ok())
                self.assertEqual(heard[1], expected_rx(payload, "dse", True))


class FailTests(ModeMixin, SynchronousTestCase):
    """
    C{FAIL ERxx} answers.
    """

    MEANINGS = {
        4: "command not supported",
        5: "wrong number of arguments",
        6: "argument format or range invalid",
        9: "UART input error",
        10: "command accepted but execution failed",
    }

    def test_failCodes(self):
        """
        C{FAIL ER04/05/06/09/10} fails the command with L{SKCommandError}
        carrying the code and its meaning; the next command then works.
        """
        for code, meaning in self.MEANINGS.items():
            for echo in (True, False):
                answer = lines(*([b"SKTERM"] if echo else []), b"FAIL ER%02d" % code)
                skver = lines(C.S4_VER_ECHO, C.S4_EVER, C.S4_OK)
                for mode in modes(answer, skver):
                    with self.inMode(mode):
                        proto, transport, clock, heard = connect()
                        d = proto.command(commands.sk_term())
                        d2 = proto.command(commands.sk_ver())
                        feed(proto, answer, mode)
                        error = self.failureResultOf(d, SKCommandError).value
                        self.assertEqual((error.code, error.meaning, error.command),
                                         (code, meaning, "SKTERM"))
                        self.assertIn("SKTERM", str(error))
                        self.assertIn("ER%02d" % code, str(error))
                        self.assertEqual(transport.value(), b"SKTERM\r\nSKVER\r\n")
                        feed(proto, skver, mode)
                        self.assertEqual(self.successResultOf(d2).lines, [V.Ver("1.5.2")])
                        self.assertEqual(clock.getDelayedCalls(), [])


class TimeoutTests(ModeMixin, SynchronousTestCase):
    """
    Per-command timeouts on the injected clock.
    """

    def test_timeoutThenNextCommandWorks(self):
        """
        A command with no answer fails with L{SKTimeoutError} naming it at its
        timeout, not before; after a resync the queued command is written and
        works.
        """
        proto, transport, clock, heard = connect()
        d = proto.command(commands.sk_sreg("S3", "B5FB"))
        d2 = proto.command(commands.sk_sreg("S2", "31"))
        clock.advance(commands.sk_sreg("S3", "B5FB").timeout - 0.01)
        self.assertNoResult(d)
        self.assertEqual(transport.value(), b"SKSREG S3 B5FB\r\n")
        clock.advance(0.01)
        error = self.failureResultOf(d, SKTimeoutError).value
        self.assertEqual(error.command, "SKSREG")
        self.assertEqual(error.seconds, 5.0)
        self.assertFalse(error.unsent)
        self.assertIn("SKSREG", str(error))
        self.assertEqual(transport.value(), b"SKSREG S3 B5FB\r\nSKVER\r\n")
        send(proto, lines(C.S4_VER_ECHO, C.S4_EVER, C.S4_OK))
        self.assertEqual(transport.value(), b"SKSREG S3 B5FB\r\nSKVER\r\nSKSREG S2 31\r\n")
        send(proto, lines(C.S4_SREG_S2_ECHO, C.S4_OK))
        self.assertEqual(self.successResultOf(d2).final, V.Ok())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_joinTimeout(self):
        """
        SKJOIN's timeout runs until its completing EVENT, not just its OK.
        """
        proto, transport, clock, heard = connect()
        d = proto.command(commands.sk_join(METER))
        send(proto, lines(b"SKJOIN " + METER.encode(), C.S4_OK))
        clock.advance(commands.sk_join(METER).timeout)
        error = self.failureResultOf(d, SKTimeoutError).value
        self.assertEqual(error.command, "SKJOIN")

    def test_noDelayedCallsAfterCompletion(self):
        """
        A completed command leaves no delayed call on the clock.
        """
        proto, transport, clock, heard = connect()
        d = proto.command(commands.sk_ver())
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        send(proto, lines(C.S4_VER_ECHO, C.S4_EVER, C.S4_OK))
        self.successResultOf(d)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_lateAnswerAfterTimeoutNotTaken(self):
        """
        With echo on, the late answer of a timed-out command (its echo, result
        and OK) is not taken as the next command's answer: the next command
        completes only with its own echo and OK, with no foreign result lines.
        """
        late = lines(C.S4_VER_ECHO, C.S4_EVER, C.S4_OK)
        resync = lines(b"SKINFO", EINFO, C.S4_OK)
        own = lines(C.S4_SREG_S2_ECHO, C.S4_OK)
        for mode in modes(late, own):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                self.successResultOf(_done(proto, commands.sk_ver(), late))
                d1 = proto.command(commands.sk_ver())
                d2 = proto.command(commands.sk_sreg("S2", "31"))
                clock.advance(commands.sk_ver().timeout)
                self.failureResultOf(d1, SKTimeoutError)
                feed(proto, late, mode)
                self.assertNoResult(d2)
                feed(proto, resync, mode)
                self.assertNoResult(d2)
                feed(proto, own, mode)
                reply = self.successResultOf(d2)
                self.assertEqual(reply.lines, [])
                self.assertEqual(reply.final, V.Ok())

    def test_timeoutKeepsEcho(self):
        """
        A timeout does not make SKStackProtocol forget that the module echoes,
        so a late answer of the timed-out command is still recognised as stale.
        """
        proto, transport, clock, heard = connect()
        self.successResultOf(_done(proto, commands.sk_ver(), lines(C.S4_VER_ECHO, C.S4_EVER, C.S4_OK)))
        self.assertIs(proto.echo, True)
        d = proto.command(commands.sk_ver())
        clock.advance(5)
        self.failureResultOf(d, SKTimeoutError)
        self.assertIs(proto.echo, True)


def lost_reason(case, d):
    """
    The reason C{when_disconnected()}'s Deferred C{d} fired with.  It cannot
    succeed with a Failure (Twisted treats that as an errback), so either
    outcome carrying the reason counts as firing.
    """
    results = []
    d.addBoth(results.append)
    case.assertEqual(len(results), 1, "when_disconnected() has not fired")
    reason = results[0]
    if isinstance(reason, BaseException):
        reason = Failure(reason)
    case.assertIsInstance(reason, Failure)
    return reason


class DisconnectTests(SynchronousTestCase):
    """
    Losing the serial link fails everything that waits.
    """

    def test_connectionLostFailsEverything(self):
        """
        C{connectionLost} fails the in-flight command, every queued one and
        every C{when_event} waiter with L{SKDisconnected}, naming the command,
        and fires C{when_disconnected}.
        """
        proto, transport, clock, heard = connect()
        lost = proto.when_disconnected()
        d1 = proto.command(commands.sk_scan(DSE))
        d2 = proto.command(commands.sk_ll64(LLA))
        d3 = proto.command(commands.sk_join(METER))
        waiter = proto.when_event(0x25)
        send(proto, lines(C.S4_SCAN_ECHO, C.S4_OK))
        self.assertNoResult(lost)
        transport.loseConnection()
        errors = [self.failureResultOf(d, SKDisconnected).value for d in (d1, d2, d3)]
        self.assertEqual([e.command for e in errors], ["SKSCAN", "SKLL64", "SKJOIN"])
        for e, name in zip(errors, ["SKSCAN", "SKLL64", "SKJOIN"]):
            self.assertIn(name, str(e))
            self.assertTrue(e.reason.check(ConnectionDone))
        self.failureResultOf(waiter, SKDisconnected)
        self.assertTrue(lost_reason(self, lost).check(ConnectionDone))
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertFalse(proto.busy)
        self.assertEqual(transport.value(), b"SKSCAN 2 FFFFFFFF 6 0\r\n")

    def test_afterConnectionLost(self):
        """
        After C{connectionLost}, C{command()} and C{when_event()} fail at once
        and C{when_disconnected()} fires at once; nothing is written.
        """
        proto, transport, clock, heard = connect()
        transport.loseConnection()
        error = self.failureResultOf(proto.command(commands.sk_ver()), SKDisconnected).value
        self.assertEqual(error.command, "SKVER")
        self.assertIn("SKVER", str(error))
        self.failureResultOf(proto.when_event(0x25), SKDisconnected)
        self.assertTrue(lost_reason(self, proto.when_disconnected()).check(ConnectionDone))
        self.assertEqual(transport.value(), b"")
        self.assertEqual(clock.getDelayedCalls(), [])


class GarbageTests(ModeMixin, SynchronousTestCase):
    """
    Garbage from the module is dropped and logged; the port stays open.
    """

    def _survives(self, garbage, expect_heard=()):
        answer = garbage + lines(C.S4_VER_ECHO, C.S4_EVER, C.S4_OK)
        logged = self.captureLogs()
        for mode in modes(answer):
            with self.inMode(mode):
                del logged[:]
                proto, transport, clock, heard = connect()
                d = proto.command(commands.sk_ver())
                feed(proto, answer, mode)
                self.assertEqual(self.successResultOf(d).lines, [V.Ver("1.5.2")])
                self.assertFalse(transport.disconnecting)
                self.assertTrue(transport.connected)
                self.assertGreater(proto.junk_dropped, 0)
                self.assertTrue(self.dropped(logged))
                self.assertEqual(self.warnings(logged), [])  # junk: info level only
                self.assertEqual(heard, list(expect_heard))

    def test_overlongLine(self):
        """
        A line longer than MAX_LENGTH is dropped and logged, the transport is
        not closed, and the command after it completes.
        """
        self._survives(b"A" * (SKStackProtocol.MAX_LENGTH + 904) + b"\r\n")

    def test_overlongLineEndSplit(self):
        """
        An over-long line whose CR LF is split across reads (or by a byte at
        a time) is dropped up to that CR LF only: the EVENT line after it
        still reaches listeners.
        """
        data = b"A" * (SKStackProtocol.MAX_LENGTH + 1) + b"\r\n" + lines(C.S4_EVENT_25)
        logged = self.captureLogs()
        for mode in modes(data):
            with self.inMode(mode):
                del logged[:]
                proto, transport, clock, heard = connect()
                feed(proto, data, mode)
                self.assertEqual(heard, [V.Event(0x25, METER, 0)])
                self.assertGreater(proto.junk_dropped, 0)
                self.assertTrue(self.dropped(logged))
                self.assertEqual(self.warnings(logged), [])  # junk: info level only

    def test_overlongRxLine(self):
        """
        An over-long ERXUDP line is dropped without closing the port.
        """
        self._survives(erxudp(GET_RES_E7 * 130, "dse") + b"\r\n")

    def test_undecodableBytes(self):
        """
        Undecodable bytes (C{ff fe 00}) and random bytes are dropped and
        logged; the command after them completes.
        """
        noise = random.Random(20231219).randbytes(300).replace(b"\r\n", b"\n")
        self._survives(b"\xff\xfe\x00\r\n" + noise + b"\r\n")

    def test_malformedEventAndRx(self):
        """
        Malformed EVENT and ERXUDP lines are dropped and logged; listeners get
        nothing from them.
        """
        garbage = lines(
            b"EVENT 2G " + METER.encode(),
            b"EVENT 21 " + METER.encode() + b" 0 00 00",
            b"ERXUDP FE80:0000",
            b"ERXUDP " + METER.encode() + b" " + MODULE.encode() + b" 0E1A 0E1A " +
            LLA.encode() + b" 1 0 0012 10810001",
        )
        self._survives(garbage)

    def test_gluedEchoAndRx(self):
        """
        The §4 line C{SKSENDTOERXUDP ...} (a stray echo glued to an ERXUDP)
        still delivers the ERXUDP to listeners.
        """
        data = lines(C.S4_GLUED_RX)
        for mode in modes(data):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                feed(proto, data, mode)
                self.assertEqual(heard, [expected_rx(GET_RES_E7, "dse")])

    def test_realDseSendtoRead(self):
        """
        The whole §4 read after SKSENDTO (INF, echo, EVENT 21, OK, glued
        ERXUDP) completes the SKSENDTO and gives listeners both ERXUDPs.
        """
        data = lines(C.S4_INF_EA_EB_RX, C.S4_SENDTO_ECHO, C.S4_EVENT_21_SENT, C.S4_OK,
                     C.S4_GLUED_RX)
        for mode in modes(data):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                d = proto.command(commands.sk_sendto(DSE, METER, C.S4_SENDTO_PAYLOAD))
                feed(proto, data, mode)
                self.assertEqual(self.successResultOf(d).events, [V.Event(0x21, METER, 0, 0)])
                self.assertEqual(heard, [expected_rx(bytes.fromhex(C.S20_INF_EA_EB), "dse"),
                                         V.Event(0x21, METER, 0, 0),
                                         expected_rx(GET_RES_E7, "dse")])


class SecretTests(ModeMixin, SynchronousTestCase):
    """
    The B-route password and ID never reach the transcript or the log.
    """

    def test_secretsRedacted(self):
        """
        After SKSETPWD and SKSETRBID with echo on, the transcript shows
        C{SKSETPWD C <redacted>} and never the password, the ID, its hex form
        (in a PANA payload) or its PairID (in EPANDESC), even in a garbled
        echo; neither does the log.
        """
        scan = lines(C.S4_SCAN_ECHO, C.S4_OK, b"EVENT 20 " + MODULE.encode() + b" 0",
                     *[line.replace(b"XXXXXXXX", PAIR_ID.encode())
                       for line in C.S4_PANDESC_BLOCK],
                     C.S4_EVENT_22)
        join = lines(b"SKJOIN " + METER.encode(), C.S4_OK, *JOIN_TRANSCRIPT)
        secrets = [PASSWORD, RBID, RBID_HEX, PAIR_ID, PASSWORD.encode().hex().upper()]
        logged = self.captureLogs()
        for mode in modes(scan):
            with self.inMode(mode):
                del logged[:]
                proto, transport, clock, heard = connect()
                transcript = []
                proto.transcript = lambda direction, text: transcript.append((direction, text))
                d1 = proto.command(commands.sk_setpwd(PASSWORD))
                feed(proto, lines(C.S4_SETPWD_ECHO, C.S4_OK), mode)
                d2 = proto.command(commands.sk_setrbid(RBID))
                feed(proto, lines(C.S4_SETRBID_ECHO, C.S4_OK), mode)
                d3 = proto.command(commands.sk_scan(DSE))
                feed(proto, scan, mode)
                d4 = proto.command(commands.sk_join(METER))
                feed(proto, join, mode)
                # Serial noise in front of an echo makes it an unknown line.
                feed(proto, b"\xff" + lines(C.S4_SETPWD_ECHO, b"\x00" + C.S4_SETRBID_ECHO), mode)
                replies = [self.successResultOf(d) for d in (d1, d2, d3, d4)]
                self.assertIn((">", "SKSETPWD C <redacted>"), transcript)
                self.assertIn((">", "SKSETRBID <redacted>"), transcript)
                self.assertEqual(replies[2].pandescs[0].pair_id, PAIR_ID)
                texts = [text for _, text in transcript]
                self.assertTrue(any("02CC" in t or "PANA" in t for t in texts))
                for secret in secrets:
                    for text in texts:
                        self.assertNotIn(secret, text)
                    for event in logged:
                        self.assertNotIn(secret, formatEvent(event))


    def test_sharedRedactor(self):
        """
        C{add_secret} feeds the public C{redactor}, and a secret another layer
        adds to that redactor is kept out of the transcript too.
        """
        proto, transport, clock, heard = connect()
        transcript = []
        proto.transcript = lambda direction, text: transcript.append((direction, text))
        proto.add_secret(PASSWORD)
        proto.redactor.add("B5FB")
        self.assertEqual(proto.redactor.scrub(PASSWORD + " " + RBID), "<redacted> " + RBID)
        d = proto.command(commands.sk_sreg("S3", "B5FB"))
        send(proto, lines(C.S4_SREG_S3_ECHO, C.S4_OK))
        self.successResultOf(d)
        self.assertEqual(transcript, [(">", "SKSREG S3 <redacted>"),
                                      ("<", "SKSREG S3 <redacted>"), ("<", "OK")])


class CancelTests(SynchronousTestCase):
    """
    Cancelling a command's Deferred.
    """

    def test_cancelQueued(self):
        """
        Cancelling a queued command removes it: it is never written.
        """
        proto, transport, clock, heard = connect()
        d1 = proto.command(commands.sk_sreg("S2", "31"))
        d2 = proto.command(commands.sk_ver())
        d3 = proto.command(commands.sk_sreg("S3", "B5FB"))
        d2.cancel()
        self.failureResultOf(d2, CancelledError)
        send(proto, lines(C.S4_SREG_S2_ECHO, C.S4_OK))
        self.successResultOf(d1)
        self.assertEqual(transport.value(), b"SKSREG S2 31\r\nSKSREG S3 B5FB\r\n")
        send(proto, lines(C.S4_SREG_S3_ECHO, C.S4_OK))
        self.successResultOf(d3)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cancelInFlight(self):
        """
        Cancelling the in-flight command before its OK lets the next one go
        after a resync.
        """
        proto, transport, clock, heard = connect()
        d1 = proto.command(commands.sk_scan(DSE))
        d2 = proto.command(commands.sk_sreg("S2", "31"))
        d1.cancel()
        self.failureResultOf(d1, CancelledError)
        self.assertEqual(transport.value(), b"SKSCAN 2 FFFFFFFF 6 0\r\nSKVER\r\n")
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        send(proto, lines(C.S4_VER_ECHO, C.S4_EVER, C.S4_OK))
        self.assertEqual(transport.value(), b"SKSCAN 2 FFFFFFFF 6 0\r\nSKVER\r\nSKSREG S2 31\r\n")
        send(proto, lines(C.S4_SREG_S2_ECHO, C.S4_OK))
        self.assertEqual(self.successResultOf(d2).final, V.Ok())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cancelAfterOk(self):
        """
        Cancelling a scan after its OK (it waits for EVENT 22) needs no resync:
        the next command goes at once.
        """
        proto, transport, clock, heard = connect()
        d1 = proto.command(commands.sk_scan(DSE))
        send(proto, lines(C.S4_SCAN_ECHO, C.S4_OK))
        d2 = proto.command(commands.sk_sreg("S2", "31"))
        d1.cancel()
        self.failureResultOf(d1, CancelledError)
        self.assertEqual(transport.value(), b"SKSCAN 2 FFFFFFFF 6 0\r\nSKSREG S2 31\r\n")
        send(proto, lines(C.S4_SREG_S2_ECHO, C.S4_OK))
        self.assertEqual(self.successResultOf(d2).final, V.Ok())


class RecoveryTests(SynchronousTestCase):
    """
    SKStackProtocol never stays deaf or wedged after garbage (cases found by
    bench/fuzz_protocol.py).
    """

    HEAD = (b"ERXUDP FE80:0000:0000:0000:C2F9:4500:4058:B5FB "
            b"FE80:0000:0000:0000:021D:1291:0004:E578 0E1A 0E1A 0011223344556677 1 0 0040 "
            b"\x10\x81\x00\x01\r\n")

    def test_truncatedBinaryPayloadAbandoned(self):
        """A binary ERXUDP that stops short is dropped after RAW_TIMEOUT; lines parse again."""
        proto, transport, clock, heard = connect()
        proto.dataReceived(self.HEAD)
        d = proto.command(commands.sk_ver())
        proto.dataReceived(b"EVER 1.2.10\r\nOK\r\n")
        self.assertNoResult(d)  # swallowed as payload bytes for now
        clock.advance(proto.RAW_TIMEOUT)
        reply = self.successResultOf(d)
        self.assertEqual(reply.lines, [V.Ver("1.2.10")])
        self.assertFalse([v for v in heard if isinstance(v, V.RxUdp)])
        self.flushLoggedErrors()

    def test_timeoutLeavesRawMode(self):
        """A command timing out while a payload is incomplete also leaves raw mode."""
        proto, transport, clock, heard = connect()
        d = proto.command(commands.sk_info())
        proto.dataReceived(self.HEAD)
        clock.advance(commands.sk_info().timeout)
        self.failureResultOf(d, SKTimeoutError)
        d = proto.command(commands.sk_ver())
        proto.dataReceived(b"EVER 1.2.10\r\nOK\r\n")  # the resync's answer
        self.assertNoResult(d)
        proto.dataReceived(b"EVER 1.2.10\r\nOK\r\n")
        self.assertEqual(self.successResultOf(d).lines, [V.Ver("1.2.10")])

    def test_hugeDatalenRejected(self):
        """An ERXUDP whose DATALEN exceeds any datagram is dropped at once, not waited for."""
        proto, transport, clock, heard = connect()
        head = self.HEAD.replace(b" 0040 ", b" FFFF ")
        proto.dataReceived(head)
        d = proto.command(commands.sk_ver())
        proto.dataReceived(b"EVER 1.2.10\r\nOK\r\n")
        self.assertEqual(self.successResultOf(d).lines, [V.Ver("1.2.10")])

    def test_strayEchoDoesNotWedge(self):
        """A stray line that looks like an echo does not make an echo-off module's OK ignored."""
        proto, transport, clock, heard = connect()
        proto.dataReceived(b"SKVER\r\n")  # nothing in flight: not proof of echo
        self.assertIsNot(proto.echo, True)
        d = proto.command(commands.sk_ver())
        proto.dataReceived(b"EVER 1.2.10\r\nOK\r\n")
        self.assertEqual(self.successResultOf(d).lines, [V.Ver("1.2.10")])

    def test_echoForgottenAfterTwoSilentTimeouts(self):
        """After two timeouts without the command's echo, echo is unknown again."""
        proto, transport, clock, heard = connect()
        d = proto.command(commands.sk_ver())
        proto.dataReceived(b"SKVER\r\nEVER 1.2.10\r\nOK\r\n")
        self.successResultOf(d)
        self.assertIs(proto.echo, True)
        for _ in range(2):  # SKVER, then the resync (SKINFO) before the next one
            d = proto.command(commands.sk_ver())
            clock.advance(commands.sk_ver().timeout)
            self.failureResultOf(d, SKTimeoutError)
        self.assertIsNone(proto.echo)
        d = proto.command(commands.sk_ver())
        # The module lost its echo setting: the resync, then SKVER, unechoed.
        proto.dataReceived(b"EVER 1.2.10\r\nOK\r\n")
        self.assertNoResult(d)
        proto.dataReceived(b"EVER 1.2.10\r\nOK\r\n")
        self.successResultOf(d)


def _echo_off(case, proto):
    """Turn echo off as the client does (C{SKSREG SFE 0}, itself echoed)."""
    case.successResultOf(_done(proto, commands.sk_sreg("SFE", "0"), lines(C.S1_SEND_SREG_SFE, C.S1_OK)))
    case.assertIs(proto.echo, False)


def _echo_on(case, proto):
    """Let the protocol see that the module echoes (an echoed SKVER)."""
    case.successResultOf(_done(proto, commands.sk_ver(), lines(C.S4_VER_ECHO, C.S4_EVER, C.S4_OK)))
    case.assertIs(proto.echo, True)


class ResyncTests(ModeMixin, SynchronousTestCase):
    """
    After a command is abandoned (timeout or cancel) before its OK, the next
    command is preceded by a resync, so that the abandoned command's late
    answer never completes it.
    """

    S2, S3 = commands.sk_sreg("S2", "31"), commands.sk_sreg("S3", "B5FB")
    #: Late answers of an abandoned SKSREG with echo off: OK, FAIL, or a
    #: result line then OK.
    LATE_ECHO_OFF = [lines(C.S1_OK), lines(b"FAIL ER10"), lines(b"ESREG 31", C.S1_OK)]
    RESYNC_ECHO_OFF = lines(b"EVER 1.2.10", C.S1_OK)

    def _abandon(self, proto, clock, how):
        """Abandon an in-flight SKSREG S2 by C{how}: "timeout" or "cancel"."""
        d1 = proto.command(self.S2)
        d2 = proto.command(self.S3)
        if how == "timeout":
            clock.advance(self.S2.timeout)
            self.failureResultOf(d1, SKTimeoutError)
        else:
            d1.cancel()
            self.failureResultOf(d1, CancelledError)
        return d2

    def test_lateAnswerEchoOff(self):
        """
        With echo off, a late OK, FAIL or result line of a timed-out or
        cancelled command does not complete the next command: SKVER goes out
        first, everything up to its EVER is dropped, and the next command is
        written after the OK that follows EVER, and completes with its own
        answer only.
        """
        for how in ("timeout", "cancel"):
            for late in self.LATE_ECHO_OFF:
                for mode in modes(late, self.RESYNC_ECHO_OFF):
                    with self.inMode(mode):
                        proto, transport, clock, heard = connect()
                        _echo_off(self, proto)
                        transport.clear()
                        d2 = self._abandon(proto, clock, how)
                        self.assertEqual(transport.value(), b"SKSREG S2 31\r\nSKVER\r\n", how)
                        feed(proto, late, mode)
                        self.assertNoResult(d2)
                        self.assertEqual(transport.value(), b"SKSREG S2 31\r\nSKVER\r\n", how)
                        feed(proto, self.RESYNC_ECHO_OFF, mode)
                        self.assertNoResult(d2)
                        self.assertEqual(transport.value(),
                                         b"SKSREG S2 31\r\nSKVER\r\nSKSREG S3 B5FB\r\n", how)
                        feed(proto, lines(C.S1_OK), mode)
                        reply = self.successResultOf(d2)
                        self.assertEqual((reply.lines, reply.final), ([], V.Ok()))
                        self.assertIs(proto.echo, False)
                        self.assertFalse(proto.busy)
                        self.assertEqual(clock.getDelayedCalls(), [])

    def test_lateAnswerEchoOn(self):
        """
        With echo on, the late echo and OK of an abandoned command and the
        resync's own echo are handled as before: the resync completes at its
        OK and the next command at its own.
        """
        late = lines(C.S4_SREG_S2_ECHO, C.S4_OK)
        resync = lines(C.S4_VER_ECHO, C.S4_EVER, C.S4_OK)
        own = lines(C.S4_SREG_S3_ECHO, C.S4_OK)
        for how in ("timeout", "cancel"):
            for mode in modes(late + resync, own):
                with self.inMode(mode):
                    proto, transport, clock, heard = connect()
                    _echo_on(self, proto)
                    transport.clear()
                    d2 = self._abandon(proto, clock, how)
                    self.assertEqual(transport.value(), b"SKSREG S2 31\r\nSKVER\r\n")
                    feed(proto, late, mode)
                    self.assertNoResult(d2)
                    feed(proto, resync, mode)
                    self.assertEqual(transport.value(),
                                     b"SKSREG S2 31\r\nSKVER\r\nSKSREG S3 B5FB\r\n")
                    self.assertNoResult(d2)
                    feed(proto, own, mode)
                    reply = self.successResultOf(d2)
                    self.assertEqual((reply.lines, reply.final), ([], V.Ok()))
                    self.assertIs(proto.echo, True)

    def test_resyncAfterAbandonedSkver(self):
        """
        When the abandoned command is SKVER itself, the resync is SKINFO: the
        late EVER and OK are dropped and only EINFO ends the stale answers.
        """
        late = lines(b"EVER 1.2.10", C.S1_OK)
        resync = lines(EINFO, C.S1_OK)
        for mode in modes(late, resync):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                _echo_off(self, proto)
                transport.clear()
                d1 = proto.command(commands.sk_ver())
                d2 = proto.command(self.S3)
                clock.advance(commands.sk_ver().timeout)
                self.failureResultOf(d1, SKTimeoutError)
                self.assertEqual(transport.value(), b"SKVER\r\nSKINFO\r\n")
                feed(proto, late, mode)
                self.assertEqual(transport.value(), b"SKVER\r\nSKINFO\r\n")
                feed(proto, resync, mode)
                self.assertEqual(transport.value(), b"SKVER\r\nSKINFO\r\nSKSREG S3 B5FB\r\n")
                feed(proto, lines(C.S1_OK), mode)
                self.assertEqual(self.successResultOf(d2).lines, [])

    def test_resyncInTranscript(self):
        """
        The resync is written and logged like any command: the transcript
        shows it going out and its answer coming in.
        """
        proto, transport, clock, heard = connect()
        transcript = []
        proto.transcript = lambda direction, text: transcript.append((direction, text))
        d2 = self._abandon(proto, clock, "timeout")
        send(proto, lines(C.S1_OK, b"EVER 1.2.10", C.S1_OK))
        self.assertEqual(transcript, [(">", "SKSREG S2 31"), (">", "SKVER"), ("<", "OK"),
                                      ("<", "EVER 1.2.10"), ("<", "OK"),
                                      (">", "SKSREG S3 B5FB")])
        self.assertNoResult(d2)

    def test_noResyncWithoutAbandon(self):
        """
        Commands that complete, fail with FAIL, or time out after their OK
        (SKJOIN waiting for its EVENT) are followed by the next command alone:
        exactly one command per call on the wire.
        """
        proto, transport, clock, heard = connect()
        _echo_off(self, proto)
        d1 = proto.command(commands.sk_term())
        d2 = proto.command(commands.sk_join(METER))
        d3 = proto.command(self.S2)
        send(proto, lines(b"FAIL ER10"))
        self.failureResultOf(d1, SKCommandError)
        send(proto, lines(C.S1_OK))  # SKJOIN's OK; its EVENT 25 never comes
        clock.advance(commands.sk_join(METER).timeout)
        self.failureResultOf(d2, SKTimeoutError)
        send(proto, lines(C.S1_OK))
        self.successResultOf(d3)
        self.assertEqual(transport.value(), b"SKSREG SFE 0\r\nSKTERM\r\nSKJOIN " + METER.encode() +
                         b"\r\nSKSREG S2 31\r\n")

    def test_noResyncUntilNextCommand(self):
        """
        A timeout with nothing queued writes nothing; the resync goes out with
        the next command.
        """
        proto, transport, clock, heard = connect()
        d1 = proto.command(self.S2)
        clock.advance(self.S2.timeout)
        self.failureResultOf(d1, SKTimeoutError)
        self.assertEqual(transport.value(), b"SKSREG S2 31\r\n")
        self.assertFalse(proto.busy)
        self.assertEqual(clock.getDelayedCalls(), [])
        d2 = proto.command(self.S3)
        self.assertEqual(transport.value(), b"SKSREG S2 31\r\nSKVER\r\n")
        self.assertTrue(proto.busy)
        send(proto, lines(b"EVER 1.2.10", C.S1_OK, C.S1_OK))
        self.successResultOf(d2)

    def test_deadModule(self):
        """
        On a module that never answers, each queued command gets one resync
        and fails with L{SKTimeoutError} (C{unsent}) when it goes unanswered;
        nothing is left on the clock and the queued commands are never written.
        """
        proto, transport, clock, heard = connect()
        ds = [proto.command(self.S2), proto.command(self.S3), proto.command(commands.sk_info()),
              proto.command(commands.sk_ver())]
        for _ in range(len(ds)):
            clock.advance(5.0)
        errors = [self.failureResultOf(d, SKTimeoutError).value for d in ds]
        self.assertEqual([(e.command, e.unsent) for e in errors],
                         [("SKSREG", False), ("SKSREG", True), ("SKINFO", True), ("SKVER", True)])
        self.assertIn("SKSREG was not sent", str(errors[1]))
        self.assertEqual(transport.value(), b"SKSREG S2 31\r\nSKVER\r\nSKINFO\r\nSKVER\r\n")
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertFalse(proto.busy)
        # The module comes back: the next command still resyncs first.
        d = proto.command(self.S2)
        send(proto, lines(b"EVER 1.2.10", C.S1_OK))
        send(proto, lines(C.S1_OK))
        self.successResultOf(d)

    def test_asyncLinesDuringResync(self):
        """
        EVENT and ERXUDP lines that arrive during a resync reach listeners and
        C{when_event} waiters; they neither end nor fail the resync.
        """
        data = lines(C.S1_OK, C.S4_EVENT_21_SENT, C.S4_INF_D5_RX, b"EVER 1.2.10",
                     C.S4_EVENT_25, C.S1_OK)
        for mode in modes(data):
            with self.inMode(mode):
                proto, transport, clock, heard = connect()
                d2 = self._abandon(proto, clock, "timeout")
                waiter = proto.when_event(0x25)
                feed(proto, data, mode)
                self.assertEqual([type(v) for v in heard], [V.Event, V.RxUdp, V.Event])
                self.assertEqual(self.successResultOf(waiter).num, 0x25)
                self.assertTrue(transport.value().endswith(b"SKVER\r\nSKSREG S3 B5FB\r\n"))
                self.assertNoResult(d2)

    def test_disconnectDuringResync(self):
        """
        Losing the link during a resync fails the queued commands with
        L{SKDisconnected} and leaves nothing on the clock.
        """
        proto, transport, clock, heard = connect()
        d2 = self._abandon(proto, clock, "timeout")
        transport.loseConnection()
        self.assertEqual(self.failureResultOf(d2, SKDisconnected).value.command, "SKSREG")
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(self.flushLoggedErrors(), [])


class JunkSecretTests(SynchronousTestCase):
    """Junk that holds a secret, whole or cut short, never shows it in the log."""

    def test_secretAcrossTheCut(self):
        """A secret straddling the log's length limit, or cut by the junk itself, is hidden."""
        logged = self.captureLogs() if hasattr(self, "captureLogs") else None
        from twisted.logger import formatEvent, globalLogPublisher
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        password = "SECRETPASS12"
        rbid = "0011223344556677889900AABBCCDDEE"
        for junk in (b"Z" * 60 + b"SKSETPWD C " + password.encode(),
                     b"Z" * 85 + rbid.encode(),
                     b"EVENT 2X " + rbid[:20].encode(),
                     b"\xff\xfe" + password[:9].encode()):
            del events[:]
            proto, transport, clock, heard = connect()
            proto.add_secret(password)
            proto.add_secret(rbid)
            proto.dataReceived(junk + b"\r\n")
            text = " ".join(formatEvent(e) for e in events)
            self.assertTrue(text, junk)
            self.assertNotIn(password[:6], text)
            for start in range(0, len(rbid) - 6):
                self.assertNotIn(rbid[start:start + 6], text, junk)
        del logged
