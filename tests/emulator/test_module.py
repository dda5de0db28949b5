"""
Tests for L{smartmeter_tx.emulator.module} (and the radio knobs of
L{smartmeter_tx.emulator.radio}): the module side of SKSTACK IP in both
dialects, driven over a StringTransport with a task.Clock.  Everything the
emulator prints is read back with the project's own line codec.
"""

import datetime

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from smartmeter_tx.echonet import meter as em
from smartmeter_tx import model
from smartmeter_tx.echonet.frame import GET, GET_RES, METER, Frame, Property, get_request
from smartmeter_tx.emulator.module import (
    DEFAULT_ID, DEFAULT_PASSWORD, MULTICAST, Emulator, EmulatorConfig, ModuleProtocol,
)
from smartmeter_tx.emulator.radio import TxBudget
from smartmeter_tx.errors import ArgumentError
from smartmeter_tx.sk.values import (
    Address, Blank, Dialect, Echo, Event, Info, Ok, PanDesc, RxUdp, RxUdpPartial, Unknown, Ver,
)
from smartmeter_tx.sk.parse import BlockAssembler, parse_line
from smartmeter_tx.sk.commands import sk_sendto

START = datetime.datetime(2024, 6, 1, 12, 0)
STD, DSE = Dialect.STANDARD, Dialect.DSE


def parse_output(data: bytes, payload_mode=None) -> list:
    """
    Read module output the way a host does: CRLF lines through parse_line,
    binary ERXUDP payloads by DATALEN, EPANDESC blocks through BlockAssembler.
    """
    values, assembler, pos = [], BlockAssembler(), 0
    while pos < len(data):
        end = data.find(b"\r\n", pos)
        assert end >= 0, f"unterminated output {data[pos:]!r}"
        value = parse_line(data[pos:end], payload_mode)
        pos = end + 2
        if isinstance(value, RxUdpPartial):
            rest = data[pos:pos + value.remaining]
            pos += value.remaining
            assert data[pos:pos + 2] == b"\r\n"
            pos += 2
            value = value.complete(rest)
        values.extend(assembler.feed(value))
    values.extend(assembler.flush())
    return values


class Harness:
    """An emulator with a UART on a StringTransport and a Clock."""

    def __init__(self, dialect=STD, **knobs):
        knobs.setdefault("start", START)
        self.clock = Clock()
        self.emulator = Emulator(EmulatorConfig(dialect=dialect, **knobs), self.clock)
        self.connect()

    def connect(self):
        self.protocol = ModuleProtocol(self.emulator)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def disconnect(self):
        self.protocol.connectionLost(None)

    def send(self, data: bytes) -> bytes:
        """Write host bytes; return what the module printed at once."""
        self.protocol.dataReceived(data)
        return self.take()

    def take(self) -> bytes:
        out = self.transport.value()
        self.transport.clear()
        return out

    def advance(self, seconds: float) -> bytes:
        self.clock.advance(seconds)
        return self.take()

    def run(self, seconds: float, step: float = 0.01) -> bytes:
        """Advance in steps (so chained timers fire) and collect the output."""
        out = b""
        for _ in range(int(seconds / step) + 1):
            out += self.advance(step)
        return out

    @property
    def dse(self):
        return self.emulator.dialect is DSE

    def credentials(self, rbid=DEFAULT_ID, password=DEFAULT_PASSWORD):
        return self.send(b"SKSETPWD %X %s\r\nSKSETRBID %s\r\n" % (
            len(password), password.encode(), rbid.encode()))

    def scan_cmd(self, duration=6, mask="FFFFFFFF", mode=2):
        return b"SKSCAN %d %s %X%s\r\n" % (mode, mask.encode(), duration, b" 0" if self.dse else b"")

    def join(self, **kw) -> bytes:
        """Credentials, S2/S3, SKJOIN, and 4 s of clock: the session is up."""
        e = self.emulator
        self.credentials(**kw)
        self.send(b"SKSREG S2 %02X\r\nSKSREG S3 %04X\r\n" % (e.channel, e.pan_id))
        out = self.send(b"SKJOIN %s\r\n" % e.meter_ip.encode())
        return out + self.run(4.0, 0.05)

    def sendto(self, payload: bytes, ip=None) -> bytes:
        return self.send(sk_sendto(self.emulator.dialect, ip or self.emulator.meter_ip,
                                   payload).to_bytes())


def events(values, num=None):
    return [v for v in values if isinstance(v, Event) and (num is None or v.num == num)]


def rxudps(values, port=0x0E1A):
    return [v for v in values if isinstance(v, RxUdp) and v.rport == port]


class CommandTests(unittest.TestCase):
    """Every command's reply bytes, in both dialects."""

    def test_skver(self):
        """SKVER is echoed (SFE=1 at power-on), then EVER and OK."""
        self.assertEqual(Harness(STD).send(b"SKVER\r\n"), b"SKVER\r\nEVER 1.2.10\r\nOK\r\n")
        self.assertEqual(Harness(DSE).send(b"SKVER\r\n"), b"SKVER\r\nEVER 1.5.2\r\nOK\r\n")

    def test_echoOff(self):
        """SKSREG SFE 0 is itself echoed; later commands are not."""
        h = Harness()
        self.assertEqual(h.send(b"SKSREG SFE 0\r\n"), b"SKSREG SFE 0\r\nOK\r\n")
        self.assertEqual(h.send(b"SKVER\r\n"), b"EVER 1.2.10\r\nOK\r\n")
        self.assertEqual(h.send(b"SKSREG SFE\r\n"), b"ESREG 0\r\nOK\r\n")

    def test_echoKnob(self):
        """echo=False is a module with echo saved off."""
        self.assertEqual(Harness(echo=False).send(b"SKVER\r\n"), b"EVER 1.2.10\r\nOK\r\n")

    def test_skinfo(self):
        """EINFO's fifth field is FFFE on standard modules and 0 on DSE."""
        for dialect, fifth in ((STD, "FFFE"), (DSE, "0")):
            h = Harness(dialect, echo=False)
            values = parse_output(h.send(b"SKINFO\r\n"))
            info = values[0]
            self.assertIsInstance(info, Info)
            self.assertEqual((info.ipaddr, info.channel, info.pan_id, info.fifth),
                             (h.emulator.module_ip, 0x21, 0xFFFF, fifth))
            self.assertEqual(info.dialect_hint, dialect)
            self.assertEqual(values[1], Ok())

    def test_sksreg(self):
        """S2 and S02 are one register; reads answer ESREG then OK."""
        h = Harness(echo=False)
        self.assertEqual(h.send(b"SKSREG S2 3B\r\n"), b"OK\r\n")
        self.assertEqual(h.send(b"SKSREG S02\r\n"), b"ESREG 3B\r\nOK\r\n")
        self.assertEqual(h.send(b"SKSREG S03 B5FB\r\nSKSREG S3\r\n"), b"OK\r\nESREG B5FB\r\nOK\r\n")
        self.assertEqual(h.send(b"SKSREG S16\r\n"), b"ESREG 00000384\r\nOK\r\n")
        self.assertEqual(h.send(b"SKSREG S2 20\r\n"), b"FAIL ER06\r\n")
        self.assertEqual(h.send(b"SKSREG S07 1\r\n"), b"FAIL ER06\r\n")
        self.assertEqual(h.send(b"SKSREG SA2 1\r\n"), b"FAIL ER06\r\n")  # DSE only
        self.assertEqual(h.send(b"SKSREG\r\n"), b"FAIL ER05\r\n")
        self.assertEqual(Harness(DSE, echo=False).send(b"SKSREG SA2 1\r\n"), b"OK\r\n")

    def test_credentials(self):
        """SKSETPWD checks its length field; SKSETRBID wants 32 characters."""
        h = Harness(echo=False)
        self.assertEqual(h.send(b"SKSETPWD C 0123456789AB\r\n"), b"OK\r\n")
        self.assertEqual(h.send(b"SKSETPWD B 0123456789AB\r\n"), b"FAIL ER06\r\n")
        self.assertEqual(h.send(b"SKSETPWD C\r\n"), b"FAIL ER05\r\n")
        self.assertEqual(h.send(b"SKSETRBID " + DEFAULT_ID.encode() + b"\r\n"), b"OK\r\n")
        self.assertEqual(h.send(b"SKSETRBID 0011\r\n"), b"FAIL ER06\r\n")
        self.assertEqual(h.send(b"SKSREG S0A\r\n"), b"ESREG CCDDEEFF\r\nOK\r\n")

    def test_unknownCommand(self):
        """Unknown commands and garbage answer FAIL ER04."""
        h = Harness(echo=False)
        self.assertEqual(h.send(b"SKFOO\r\n"), b"FAIL ER04\r\n")
        self.assertEqual(h.send(b"\xff\xfe\r\n"), b"FAIL ER04\r\n")
        self.assertEqual(h.send(b"skver\r\n"), b"FAIL ER04\r\n")

    def test_emptyLine(self):
        """An empty line is echoed as an empty line and answers nothing."""
        self.assertEqual(Harness().send(b"\r\n"), b"\r\n")
        self.assertEqual(Harness(echo=False).send(b"\r\n"), b"")

    def test_skll64(self):
        """SKLL64 answers a bare address line and no OK (captures.py §13)."""
        h = Harness()
        self.assertEqual(h.send(b"SKLL64 001D129012345678\r\n"),
                         b"SKLL64 001D129012345678\r\nFE80:0000:0000:0000:021D:1290:1234:5678\r\n")
        values = parse_output(h.send(b"SKLL64 0011223344556677\r\n"))
        self.assertEqual(values, [Echo("SKLL64 0011223344556677"),
                                  Address("FE80:0000:0000:0000:0211:2233:4455:6677")])
        self.assertEqual(h.send(b"SKLL64 00112233\r\n"), b"SKLL64 00112233\r\nFAIL ER06\r\n")

    def test_sktableAndSkaddnbr(self):
        """SKTABLE 1/2/E list addresses, neighbours and ports, then OK."""
        h = Harness(echo=False)
        ip = "FE80:0000:0000:0000:0211:2233:4455:6677"
        self.assertEqual(h.send(b"SKADDNBR %s 0011223344556677\r\n" % ip.encode()), b"OK\r\n")
        self.assertEqual(h.send(b"SKTABLE 2\r\n"),
                         b"ENEIGHBOR\r\n%s 0011223344556677 FFFF\r\nOK\r\n" % ip.encode())
        self.assertEqual(h.send(b"SKTABLE E\r\n"), b"EPORT\r\n3610\r\n716\r\n0\r\n0\r\n0\r\n0\r\nOK\r\n")
        self.assertEqual(h.send(b"SKTABLE 1\r\n"),
                         b"EADDR\r\n%s\r\nOK\r\n" % h.emulator.module_ip.encode())
        self.assertEqual(h.send(b"SKTABLE 9\r\n"), b"FAIL ER06\r\n")
        self.assertEqual(h.send(b"SKADDNBR 1 2\r\n"), b"FAIL ER06\r\n")

    def test_roptWopt(self):
        """ROPT/WOPT end with CR only and so do their answers (captures.py §4)."""
        h = Harness()
        self.assertEqual(h.send(b"ROPT\r"), b"ROPT\r\nOK 00\r")
        self.assertEqual(h.send(b"WOPT 01\r"), b"WOPT 01\r\nOK\r")
        self.assertEqual(h.send(b"ROPT\r"), b"ROPT\r\nOK 01\r")
        self.assertEqual(h.emulator.wopt_writes, 1)
        self.assertEqual(h.send(b"WOPT 02\r"), b"WOPT 02\r\nFAIL ER06\r\n")
        # A host that appends LF anyway: the LF is not a second (empty) command.
        self.assertEqual(h.send(b"ROPT\r\n"), b"ROPT\r\nOK 01\r")
        self.assertEqual(Harness(wopt="hex", echo=False).send(b"ROPT\r"), b"OK 01\r")

    def test_noRopt(self):
        """An RL7023-like module answers ROPT, WOPT and SKAPPVER with FAIL ER04."""
        h = Harness(ropt=False, echo=False)
        self.assertEqual(h.send(b"ROPT\r"), b"FAIL ER04\r\n")
        self.assertEqual(h.send(b"WOPT 00\r"), b"FAIL ER04\r\n")
        self.assertEqual(h.send(b"SKAPPVER\r\n"), b"FAIL ER04\r\n")
        self.assertFalse(h.emulator.binary)
        self.assertEqual(Harness(echo=False).send(b"SKAPPVER\r\n")[:8], b"EAPPVER ")

    def test_skscanOtherDialect(self):
        """The other dialect's SKSCAN argument count is FAIL ER05 (captures.py §17)."""
        self.assertEqual(Harness(STD, echo=False).send(b"SKSCAN 2 FFFFFFFF 6 0\r\n"), b"FAIL ER05\r\n")
        self.assertEqual(Harness(DSE, echo=False).send(b"SKSCAN 2 FFFFFFFF 6\r\n"), b"FAIL ER05\r\n")
        self.assertEqual(Harness(STD, echo=False).send(b"SKSCAN 2 FFFFFFFF F\r\n"), b"FAIL ER06\r\n")
        self.assertEqual(Harness(STD, echo=False).send(b"SKSCAN 7 FFFFFFFF 6\r\n"), b"FAIL ER06\r\n")

    def test_sktermWithoutSession(self):
        """SKTERM without a PANA session is FAIL ER10."""
        self.assertEqual(Harness(echo=False).send(b"SKTERM\r\n"), b"FAIL ER10\r\n")

    def test_byteByByte(self):
        """Input split at any point gives the same answers (serial reads split arbitrarily)."""
        whole = Harness()
        data = b"SKVER\r\nSKSREG S2 3B\r\nROPT\rSKINFO\r\n"
        expected = whole.send(data)
        split = Harness()
        got = b"".join(split.send(data[i:i + 1]) for i in range(len(data)))
        self.assertEqual(got, expected)

    def test_resyncCommands(self):
        """
        SKVER and SKINFO, the host's resync commands, answer their result line
        then OK in both dialects, after their echo with echo on and without
        one with echo off.
        """
        for dialect in (STD, DSE):
            for echo in (True, False):
                h = Harness(dialect, echo=echo)
                for command, kind in ((b"SKVER", Ver), (b"SKINFO", Info)):
                    values = parse_output(h.send(command + b"\r\n"))
                    expected = ([Echo, kind, Ok] if echo else [kind, Ok])
                    self.assertEqual([type(v) for v in values], expected,
                                     (dialect, echo, command))

    def test_overlongLine(self):
        """
        A command line longer than MAX_LINE is dropped up to its end and
        answered FAIL ER09 once, whether it comes whole or a byte at a time;
        the command after it is answered.
        """
        data = b"SKSREG " + b"1" * ModuleProtocol.MAX_LINE + b"\r\nSKVER\r\n"
        expected = b"FAIL ER09\r\nEVER 1.2.10\r\nOK\r\n"
        self.assertEqual(Harness(echo=False).send(data), expected)
        h = Harness(echo=False)
        self.assertEqual(b"".join(h.send(data[i:i + 1]) for i in range(len(data))), expected)


class ScanTests(unittest.TestCase):
    """SKSCAN timing and when the PAN is found."""

    def scan(self, dialect=STD, duration=6, mask="FFFFFFFF", mode=2, rbid=DEFAULT_ID, creds=True):
        h = Harness(dialect, echo=False)
        if creds:
            h.credentials(rbid=rbid)
        self.assertEqual(h.send(h.scan_cmd(duration, mask, mode)), b"OK\r\n")
        return h

    def test_found(self):
        """
        EVENT 20 (the module's own address) as the meter's channel is scanned,
        and its EPANDESC block one channel dwell later (captures.py §1).
        """
        for dialect in (STD, DSE):
            h = self.scan(dialect)
            e = h.emulator
            per = 0.0096 * (2 ** 6 + 1)
            index = e.channel - 0x21
            self.assertEqual(h.advance(per * index - 0.001), b"")
            values = parse_output(h.advance(0.002))
            self.assertEqual(events(values), [Event(0x20, e.module_ip, 0 if dialect is DSE else None)])
            self.assertEqual(h.advance(per - 0.002), b"")
            values = parse_output(h.advance(0.002))
            desc = values[0]
            self.assertIsInstance(desc, PanDesc)
            self.assertEqual((desc.channel, desc.channel_page, desc.pan_id, desc.addr, desc.pair_id),
                             (e.channel, 9, e.pan_id, e.meter_mac, DEFAULT_ID[-8:]))
            self.assertEqual(desc.side, 0 if dialect is DSE else None)
            rest = parse_output(h.advance(per * 28))
            self.assertEqual([v.num for v in events(rest)], [0x22])
            self.assertEqual(h.clock.getDelayedCalls()[0].func.__name__, "run")  # only the :00/:30 INF

    def test_dsePandescLines(self):
        """The DSE block has '  Side:0' between LQI and PairID (captures.py §4)."""
        h = self.scan(DSE)
        out = h.advance(20)
        self.assertIn(b"  LQI:", out)
        self.assertIn(b"\r\n  Side:0\r\n  PairID:CCDDEEFF\r\n", out)

    def test_totalTime(self):
        """A full scan takes 28 x 9.6 ms x (2^DUR + 1): 17.5 s at duration 6."""
        h = self.scan()
        h.advance(17.47)
        self.assertNotIn(b"EVENT 22", h.take())
        self.assertIn(b"EVENT 22", h.advance(0.02))

    def test_notFound(self):
        """Wrong ID, no ID, a short duration or a mask without the channel: only EVENT 22."""
        cases = [dict(rbid="F" * 32), dict(creds=False), dict(duration=4)]
        for kwargs in cases:
            h = self.scan(**kwargs)
            values = parse_output(h.advance(40))
            self.assertEqual([v.num for v in events(values)], [0x22], kwargs)
            self.assertFalse([v for v in values if isinstance(v, PanDesc)])
        h = Harness(echo=False)
        h.credentials()
        other = "%08X" % (0x0FFFFFFF & ~(1 << (h.emulator.channel - 0x21)))
        h.send(h.scan_cmd(mask=other))
        self.assertNotIn(b"EPANDESC", h.advance(40))

    def test_mode3WithoutId(self):
        """Scan mode 3 (no IE) finds the PAN without an ID, and prints no PairID."""
        h = self.scan(mode=3, creds=False)
        values = parse_output(h.advance(40))
        descs = [v for v in values if isinstance(v, PanDesc)]
        self.assertEqual(len(descs), 1)
        self.assertIsNone(descs[0].pair_id)

    def test_edScan(self):
        """Scan mode 0 ends with EVENT 1F and an EEDSCAN line."""
        h = self.scan(mode=0, duration=2, mask="00000003")
        values = parse_output(h.advance(1))
        self.assertEqual(values[0], Event(0x1F, h.emulator.module_ip))
        self.assertEqual([c for c, _ in values[1][1]], [0x21, 0x22])


class JoinTests(unittest.TestCase):
    """SKJOIN: the PANA exchange, its timing and its failures."""

    def test_success(self):
        """OK, EVENT 21 02, EVENT 02, 4 x (PANA ERXUDP, EVENT 21 00), EVENT 25, D5 INF; ~3.3 s."""
        for dialect in (STD, DSE):
            h = Harness(dialect, echo=False)
            e = h.emulator
            h.credentials()
            h.send(b"SKSREG S2 %02X\r\nSKSREG S3 %04X\r\n" % (e.channel, e.pan_id))
            self.assertEqual(h.send(b"SKJOIN %s\r\n" % e.meter_ip.encode()), b"OK\r\n")
            early = h.run(3.2, 0.05)
            self.assertNotIn(b"EVENT 25", early)
            values = parse_output(early + h.run(0.5, 0.05))
            kinds = [(v.num, v.param) if isinstance(v, Event) else v.rport for v in values]
            self.assertEqual(kinds, [(0x21, 2), (0x02, None)] + [0x02CC, (0x21, 0)] * 4
                             + [(0x25, None), 0x0E1A])
            side = 0 if dialect is DSE else None
            for v in values:
                if isinstance(v, Event):
                    self.assertEqual((v.sender, v.side), (e.meter_ip, side))
            pana = rxudps(values, 0x02CC)
            self.assertTrue(all(not p.secured and p.data[4:6] == b"%c\x00" % p.data[4]
                                for p in pana))
            self.assertEqual([p.data[4:6] for p in pana],
                             [b"\xc0\x00", b"\x80\x00", b"\x80\x00", b"\xa0\x00"])
            self.assertIn(b"\x00\x08\x00\x00\x00\x04\x00\x00\x00\x01\x51\x80", pana[3].data)
            d5 = values[-1]
            self.assertEqual((d5.dest, d5.secured), (MULTICAST, True))
            self.assertEqual(d5.data[4:].hex().upper(), "0EF0010EF0017301D50401028801")
            self.assertIsNotNone(e.session)

    def test_panaNeverCarriesCredentials(self):
        """The PANA payloads never contain the ID or the password."""
        h = Harness(echo=False, rbid="A" * 32, password="B" * 12)
        out = h.join(rbid="A" * 32, password="B" * 12)
        self.assertIn(b"EVENT 25", out)
        self.assertNotIn(b"AAAAAAAA", out)
        self.assertNotIn(b"BBBBBBBB", out)

    def test_wrongPassword(self):
        """A wrong password ends in EVENT 24 after tens of seconds, and no session."""
        h = Harness(echo=False)
        out = h.join(password="WRONGPASSWRD")
        self.assertNotIn(b"EVENT 25", out)
        self.assertNotIn(b"EVENT 24", out)
        out = h.run(40, 0.5)
        values = parse_output(out)
        self.assertEqual([v.num for v in events(values)], [0x24])
        self.assertIsNone(h.emulator.session)

    def test_wrongChannelIdPanAddress(self):
        """A wrong channel, PAN ID, ID or address also fails with EVENT 24."""
        e = Harness().emulator
        for setup in (b"SKSREG S2 %02X\r\n" % (0x21 + (e.channel - 0x20) % 28),
                      b"SKSREG S3 %04X\r\n" % (e.pan_id ^ 1),
                      b"SKSETRBID " + b"F" * 32 + b"\r\n"):
            h = Harness(echo=False)
            h.credentials()
            h.send(b"SKSREG S2 %02X\r\nSKSREG S3 %04X\r\n" % (e.channel, e.pan_id) + setup)
            h.send(b"SKJOIN %s\r\n" % e.meter_ip.encode())
            self.assertIn(b"EVENT 24", h.run(45, 0.5), setup)
        h = Harness(echo=False)
        h.credentials()
        h.send(b"SKJOIN FE80:0000:0000:0000:0211:2233:4455:6677\r\n")
        self.assertIn(b"EVENT 24", h.run(45, 0.5))

    def test_joinFormat(self):
        """SKJOIN with a short address is FAIL ER06."""
        self.assertEqual(Harness(echo=False).send(b"SKJOIN FE80::1\r\n"), b"FAIL ER06\r\n")


class SendToTests(unittest.TestCase):
    """SKSENDTO: framing, echo, EVENT 21, OK and the answer."""

    def joined(self, dialect=STD, **knobs):
        h = Harness(dialect, **knobs)
        h.join()
        return h

    def test_binaryPayloadWithCrlf(self):
        """A payload holding 0D 0A is read by its length; the binary answer too."""
        for dialect in (STD, DSE):
            h = self.joined(dialect)
            request = get_request(0x0D0A, [em.POWER, em.CURRENT])
            self.assertIn(b"\r\n", request.encode())
            command = sk_sendto(dialect, h.emulator.meter_ip, request.encode())
            out = h.send(command.to_bytes())
            self.assertEqual(out, command.to_bytes()[:-len(request.encode())] + b"\r\n")
            self.assertEqual(parse_output(out), [Echo(command.text)])
            self.assertTrue(command.is_echo(parse_output(out)[0]))
            self.assertEqual(h.advance(0.114), b"")
            values = parse_output(h.advance(0.23))
            side = 0 if dialect is DSE else None
            self.assertEqual(values, [Event(0x21, h.emulator.meter_ip, side, 0), Ok()])
            values = parse_output(h.advance(0.47))  # by 0.81 s
            self.assertEqual(len(values), 1)
            rx = values[0]
            self.assertTrue(rx.binary and rx.secured)
            self.assertEqual((rx.sender, rx.dest, rx.rport, rx.lport, rx.sender_lla, rx.side),
                             (h.emulator.meter_ip, h.emulator.module_ip, 0x0E1A, 0x0E1A,
                              h.emulator.meter_mac, side))
            reply = Frame.decode(rx.data)
            self.assertTrue(reply.is_response_to(request))
            self.assertEqual(reply.esv, GET_RES)
            self.assertIn(b"\r\n", rx.data)

    def test_hexOutput(self):
        """After WOPT 01 ERXUDP data is ASCII hex (9 tokens standard, 10 DSE)."""
        for dialect, tokens in ((STD, 9), (DSE, 10)):
            h = self.joined(dialect, echo=False)
            h.send(b"WOPT 01\r")
            h.sendto(get_request(1, [em.POWER]).encode())
            out = h.advance(1.0)
            line = [ln for ln in out.split(b"\r\n") if ln.startswith(b"ERXUDP")][0]
            self.assertEqual(len(line.split(b" ")), tokens)
            rx = parse_line(line, "hex")
            self.assertFalse(rx.binary)
            self.assertEqual(Frame.decode(rx.data).esv, GET_RES)

    def test_dseRssi(self):
        """DSE with SA2=1 prints RSSI before SECURED (11 tokens)."""
        h = self.joined(DSE, echo=False, wopt="hex")
        h.send(b"SKSREG SA2 1\r\n")
        h.sendto(get_request(1, [em.POWER]).encode())
        values = parse_output(h.advance(1.0))
        rx = rxudps(values)[0]
        self.assertIsNotNone(rx.rssi)
        self.assertEqual((rx.secured, rx.side), (True, 0))
        self.assertTrue(-80 < rx.rssi * 0.275 - 104.27 < -40)

    def test_otherDialectSendto(self):
        """The other dialect's SKSENDTO is framed by its LEN, answered ER05, and the stream stays in sync."""
        for dialect, other in ((STD, DSE), (DSE, STD)):
            h = Harness(dialect, echo=False)
            payload = b"\x10\x81\r\n\x00" * 3
            command = sk_sendto(other, h.emulator.meter_ip, payload)
            self.assertEqual(h.send(command.to_bytes()), b"\r\nFAIL ER05\r\n")
            self.assertEqual(h.send(b"SKVER\r\n")[:5], b"EVER ")

    def test_payloadSplitAnywhere(self):
        """
        An SKSENDTO whose payload holds CR LF, followed by SKVER, gives the
        same answers fed whole, a byte at a time, or cut at any offset.
        """
        payload = b"\x10\x81\r\n\x00\x01\x05\xff\x01\x02\x88\x01\x62\x01\xe7\x00\r"
        for dialect in (STD, DSE):
            h = Harness(dialect, echo=False)
            data = sk_sendto(dialect, h.emulator.meter_ip, payload).to_bytes() + b"SKVER\r\n"
            expected = h.send(data) + h.run(3, 0.1)
            self.assertEqual([type(v) for v in parse_output(expected)], [Blank, Event, Ok, Ver, Ok])
            cuts = [[data[i:i + 1] for i in range(len(data))]] + [
                [data[:i], data[i:]] for i in range(1, len(data))]
            for chunks in cuts:
                h = Harness(dialect, echo=False)
                got = b"".join(h.send(chunk) for chunk in chunks) + h.run(3, 0.1)
                self.assertEqual(got, expected, [len(c) for c in chunks])

    def test_badFormat(self):
        """Bad SKSENDTO fields are FAIL ER06; a header cut by CRLF is ER05."""
        h = Harness(echo=False)
        ip = h.emulator.meter_ip.encode()
        self.assertEqual(h.send(b"SKSENDTO 9 %s 0E1A 1 0002 ab" % ip), b"\r\nFAIL ER06\r\n")
        self.assertEqual(h.send(b"SKSENDTO 1 FE80::1 0E1A 1 0002 ab"), b"\r\nFAIL ER06\r\n")
        self.assertEqual(h.send(b"SKSENDTO 1 %s 0E1A\r\n" % ip), b"FAIL ER05\r\n")

    def test_echoOffBareCrlf(self):
        """With echo off SKSENDTO answers a bare CRLF first."""
        h = self.joined(echo=False)
        out = h.sendto(get_request(1, [em.POWER]).encode())
        self.assertEqual(parse_output(out), [Blank()])

    def test_noSession(self):
        """Without a session SKSENDTO gives EVENT 21 ... 02, OK, and no answer."""
        for dialect in (STD, DSE):
            h = Harness(dialect, echo=False)
            h.sendto(get_request(1, [em.POWER]).encode())
            values = parse_output(h.run(3, 0.1))
            self.assertEqual([(v.num, v.param) for v in events(values)], [(0x21, 2)])
            self.assertEqual(values[-1], Ok())
            self.assertFalse(rxudps(values))

    def test_commandsWaitForOk(self):
        """A command sent right behind SKSENDTO is answered after its OK."""
        h = self.joined(echo=False)
        out = h.send(sk_sendto(STD, h.emulator.meter_ip, b"\x10\x81\x00\x01\x05\xff\x01\x02\x88\x01"
                               b"\x62\x01\xe7\x00").to_bytes() + b"SKVER\r\n")
        self.assertEqual(out, b"\r\n")
        values = parse_output(h.advance(0.35))
        self.assertEqual([type(v) for v in values], [Event, Ok, Ver, Ok])

    def test_sessionSurvivesDisconnect(self):
        """The PANA session lives in the module: a new connection's first SKSENDTO is answered."""
        h = self.joined(echo=False)
        h.disconnect()
        h.advance(60)
        h.connect()
        h.sendto(get_request(7, [em.POWER]).encode())
        values = parse_output(h.advance(1.0))
        self.assertEqual(events(values)[0].param, 0)
        self.assertEqual(Frame.decode(rxudps(values)[0].data).tid, 7)

    def test_outputDroppedWhileDisconnected(self):
        """Output produced while no UART is attached goes nowhere (and does not fail)."""
        h = self.joined(echo=False)
        h.sendto(get_request(7, [em.POWER]).encode())
        h.disconnect()
        h.advance(1.0)
        h.connect()
        self.assertEqual(h.take(), b"")

    def test_skterm(self):
        """SKTERM: OK then EVENT 27; afterwards sends get EVENT 21 02."""
        h = self.joined(echo=False)
        self.assertEqual(h.send(b"SKTERM\r\n"), b"OK\r\n")
        values = parse_output(h.advance(1.0))
        self.assertEqual(values, [Event(0x27, h.emulator.meter_ip)])
        h.sendto(get_request(1, [em.POWER]).encode())
        self.assertIn(b" 02\r\n", h.advance(1.0))

    def test_skreset(self):
        """SKRESET: OK; echo back on, credentials and session gone."""
        h = self.joined()
        h.send(b"SKSREG SFE 0\r\nSKSREG S2 3B\r\n")
        self.assertEqual(h.send(b"SKRESET\r\n"), b"OK\r\n")
        self.assertEqual(h.send(b"SKSREG S2\r\n"), b"SKSREG S2\r\nESREG 21\r\nOK\r\n")
        self.assertIsNone(h.emulator.session)
        self.assertIsNone(h.emulator.password)
        h.send(b"SKSREG SFE 0\r\n")
        h.sendto(get_request(1, [em.POWER]).encode())
        self.assertIn(b" 02\r\n", h.advance(1.0))

    def test_latencyDistribution(self):
        """EVENT 21 comes 115-343 ms and the answer 340-810 ms after SKSENDTO."""
        h = self.joined(echo=False)
        t21, tans = [], []
        for tid in range(40):
            h.sendto(get_request(tid, [em.POWER]).encode())
            start = h.clock.seconds()
            got21 = gotans = None
            for _ in range(200):
                out = h.advance(0.005)
                if b"EVENT 21" in out and got21 is None:
                    got21 = h.clock.seconds() - start
                if b"ERXUDP" in out:
                    gotans = h.clock.seconds() - start
                    break
            t21.append(got21)
            tans.append(gotans)
        self.assertTrue(all(0.115 <= t <= 0.35 for t in t21), t21)
        self.assertTrue(all(0.34 <= t <= 0.82 for t in tans), tans)
        median = sorted(tans)[20]
        self.assertTrue(0.45 < median < 0.7, median)

    def test_zeroLatency(self):
        """time_scale=0 answers everything at once, with no clock turn."""
        h = Harness(echo=False, time_scale=0)
        out = h.join()
        self.assertIn(b"EVENT 25", out)
        values = parse_output(h.sendto(get_request(3, [em.POWER]).encode()))
        self.assertEqual([type(v) for v in values], [Blank, Event, Ok, RxUdp])

    def test_groundTruth(self):
        """Every value delivered is recorded with its TID; lost answers are not."""
        h = self.joined(echo=False)
        h.sendto(get_request(0x42, [em.POWER, em.ENERGY_NORMAL]).encode())
        values = parse_output(h.advance(1.0))
        reply = Frame.decode(rxudps(values)[0].data)
        truth = [t for t in h.emulator.truth if t.tid == 0x42]
        self.assertEqual([(t.epc, t.edt) for t in truth],
                         [(p.epc, p.edt) for p in reply.properties])
        self.assertEqual(truth[0].value, em.decode_power(reply.get(em.POWER)))
        self.assertEqual(truth[1].kwh, truth[1].value * em.UNITS[0x02])

    def test_determinism(self):
        """The same seed and the same input give the same bytes."""
        outs = []
        for _ in range(2):
            h = Harness(seed=5, loss=0.3, fail21=0.2, garbage=0.2)
            out = h.join()
            for tid in range(10):
                out += h.sendto(get_request(tid, [em.POWER]).encode()) + h.advance(1.0)
            outs.append(out)
        self.assertEqual(outs[0], outs[1])


class FaultTests(unittest.TestCase):
    """Each fault knob produces what the reference says."""

    def joined(self, **knobs):
        h = Harness(echo=False, **knobs)
        self.assertIn(b"EVENT 25", h.join())
        return h

    def exchange(self, h, tid=1, seconds=1.0):
        h.sendto(get_request(tid, [em.POWER]).encode())
        return parse_output(h.advance(seconds))

    def test_loss(self):
        """loss=1: EVENT 21 00 and OK, but no answer."""
        h = self.joined(loss=1.0)
        for tid in range(5):
            values = self.exchange(h, tid, 2.0)
            self.assertEqual([(v.num, v.param) for v in events(values)], [(0x21, 0)])
            self.assertFalse(rxudps(values))

    def test_fail21(self):
        """fail21=1: EVENT 21 01 and no answer."""
        h = self.joined(fail21=1.0)
        values = self.exchange(h)
        self.assertEqual([(v.num, v.param) for v in events(values)], [(0x21, 1)])
        self.assertFalse(rxudps(values))

    def test_staleTid(self):
        """stale=1: an answer arrives only after the next request's OK, with the old TID."""
        h = self.joined(stale=1.0)
        self.assertFalse(rxudps(self.exchange(h, 1, 2.0)))
        h.sendto(get_request(2, [em.POWER]).encode())
        values = parse_output(h.run(2.0, 0.05))
        self.assertEqual([type(v) for v in values], [Event, Ok, RxUdp])
        self.assertEqual(Frame.decode(values[2].data).tid, 1)
        # Nobody asks again: the held answer still comes, much later.
        self.assertFalse(rxudps(parse_output(h.advance(25))))
        self.assertEqual(Frame.decode(rxudps(parse_output(h.advance(5)))[0].data).tid, 2)

    def test_garbage(self):
        """garbage=1: junk lines around the output; the real lines still parse."""
        h = self.joined(garbage=1.0)
        out = b""
        for tid in range(6):
            h.sendto(get_request(tid, [em.POWER]).encode())
            out += h.advance(1.0)
        values = parse_output(out)
        self.assertTrue([v for v in values if isinstance(v, (Unknown, Blank))])
        self.assertEqual(len(rxudps(values)), 6)

    def test_lifetimeReauth(self):
        """At lifetime expiry: EVENT 29, PANA frames, then EVENT 25 again; sends work after."""
        h = self.joined(lifetime=600)
        out = h.advance(h.emulator.session.since + 600 - h.clock.seconds() - 0.1)
        self.assertNotIn(b"EVENT 29", out)
        values = parse_output(h.advance(0.2))
        self.assertEqual(values, [Event(0x29, h.emulator.meter_ip)])
        # During re-authentication the session is not usable.
        self.assertIn(b" 02\r\n", h.sendto(get_request(1, [em.POWER]).encode()) + h.advance(0.4))
        values = parse_output(h.run(3.5, 0.05))
        self.assertEqual([v.num for v in events(values) if v.num != 0x21], [0x25])
        self.assertTrue(rxudps(values, 0x02CC))
        self.assertTrue(rxudps(self.exchange(h)))

    def test_lifetimeReauthFails(self):
        """reauth_fail=1: EVENT 29 then EVENT 24 and the session is gone."""
        h = self.joined(lifetime=600, reauth_fail=1.0)
        values = parse_output(h.advance(600) + h.run(41, 0.5))
        self.assertEqual([v.num for v in events(values) if v.num != 0x21], [0x29, 0x24])
        self.assertIsNone(h.emulator.session)

    def test_reauthStuck(self):
        """reauth_stuck: EVENT 29 from the meter again and again, never 25 or 24, until SKJOIN."""
        h = self.joined(reauth_stuck=30)
        h.emulator.expire_session()
        values = parse_output(h.take() + h.run(100, 0.5))
        meter = h.emulator.meter_ip
        self.assertEqual([v for v in events(values) if v.num != 0x21],
                         [Event(0x29, meter)] * 4)  # at 0, 30, 60 and 90 s
        self.assertFalse(h.emulator.session.usable)
        self.assertIn(b" 02\r\n", h.sendto(get_request(1, [em.POWER]).encode()) + h.advance(0.4))
        self.assertIn(b"EVENT 25", h.send(b"SKJOIN %s\r\n" % meter.encode()) + h.run(4.0, 0.05))
        self.assertNotIn(b"EVENT 29", h.run(100, 0.5))
        self.assertTrue(rxudps(self.exchange(h)))

    def test_dropByte(self):
        """drop_byte: the first matching command's OK loses its first byte; later ones are whole."""
        h = Harness(echo=False, drop_byte="SKSREG S2")
        self.assertEqual(h.send(b"SKSREG S3 1234\r\n"), b"OK\r\n")
        self.assertEqual(h.send(b"SKSREG S2 2A\r\n"), b"K\r\n")
        self.assertEqual(h.emulator.registers[0x02], 0x2A)  # the command itself was done
        self.assertEqual(h.send(b"SKSREG S2 2B\r\n"), b"OK\r\n")

    def test_dropByteLastLine(self):
        """drop_byte takes the byte from the line that completes the command, echo or not."""
        h = Harness(drop_byte="SKINFO")
        out = h.send(b"SKINFO\r\n")
        self.assertTrue(out.startswith(b"SKINFO\r\nEINFO "), out)
        self.assertTrue(out.endswith(b"\r\nK\r\n"), out)
        h = Harness(echo=False, drop_byte="SKLL64")
        out = h.send(b"SKLL64 001D129012345678\r\n")
        self.assertEqual(out, b"E80:0000:0000:0000:021D:1290:1234:5678\r\n")
        self.assertIsInstance(parse_output(out)[0], Unknown)

    def test_newKnobsInSpec(self):
        """reauth-stuck and drop-byte are spec options, checked like the others."""
        from smartmeter_tx.emulator.device import parse_spec
        config, _ = parse_spec("emulator:?reauth-stuck=30&drop-byte=SKSREG+S2")
        self.assertEqual((config.reauth_stuck, config.drop_byte), (30.0, "SKSREG S2"))
        for query in ("reauth-stuck=-1", "drop-byte=" + "S" * 65, "drop-byte=SK%0D"):
            self.assertRaises(ArgumentError, parse_spec, "emulator:?" + query)

    def test_peerTermination(self):
        """peer_term: the meter ends the session with EVENT 26."""
        h = self.joined(peer_term=100)
        values = parse_output(h.advance(h.emulator.session.since + 100 - h.clock.seconds()))
        self.assertEqual(values, [Event(0x26, h.emulator.meter_ip)])
        self.assertIsNone(h.emulator.session)
        self.assertEqual(h.send(b"SKTERM\r\n"), b"FAIL ER10\r\n")

    def test_aribBudget(self):
        """The transmit budget: EVENT 32 when spent, sends silently cancelled, EVENT 33 later."""
        h = self.joined(tx_budget=0.1, tx_window=600)  # the join spends 42 ms
        seen, tid = b"", 0
        while b"EVENT 32" not in seen and tid < 20:
            seen += h.sendto(get_request(tid, [em.POWER]).encode()) + h.advance(1.0)
            tid += 1
        self.assertIn(b"EVENT 32", seen)
        self.assertEqual(h.send(b"SKSREG SFB\r\n"), b"ESREG 1\r\nOK\r\n")
        values = self.exchange(h, 99, 2.0)
        self.assertEqual([(v.num, v.param) for v in events(values)], [(0x21, 0)])
        self.assertFalse(rxudps(values))
        self.assertIn(b"EVENT 33", h.advance(600))
        self.assertTrue(rxudps(self.exchange(h, 100)))

    def test_txBudgetReleaseTime(self):
        """TxBudget releases when the oldest transmissions leave the window."""
        budget = TxBudget(1.0, 10.0)
        self.assertFalse(budget.spend(0.0, 0.6))
        self.assertTrue(budget.spend(1.0, 0.6))
        self.assertEqual(budget.release_at(2.0), 10.0)
        self.assertFalse(budget.try_release(9.9))
        self.assertTrue(budget.try_release(10.0))

    def test_fixedTimeInf(self):
        """With a session, EA arrives as an INF to the controller after every :00/:30."""
        h = self.joined()
        out = h.advance(30 * 60 + 100)
        frames = [Frame.decode(rx.data) for rx in rxudps(parse_output(out))]
        self.assertEqual(len(frames), 1)
        inf = frames[0]
        self.assertEqual((inf.esv, inf.seoj, inf.deoj, inf.epcs), (0x73, METER, 0x05FF01, (0xEA,)))
        fixed = em.decode_fixed_time(inf.get(0xEA))
        self.assertEqual(fixed.timestamp, datetime.datetime(2024, 6, 1, 12, 30))

    def test_configValidation(self):
        """Out-of-range knobs raise ArgumentError."""
        for bad in (dict(loss=2), dict(time_scale=-1), dict(rbid="short"), dict(wopt="x"),
                    dict(channel=0x50), dict(password="with space")):
            self.assertRaises(ArgumentError, EmulatorConfig(**bad).validate)

    def test_getRequestEchoMatches(self):
        """The echo of SKSENDTO is what the host codec expects (Command.is_echo)."""
        h = self.joined()
        h.send(b"SKSREG SFE 1\r\n")
        command = sk_sendto(STD, h.emulator.meter_ip, Frame(1, 0x05FF01, METER, GET,
                                                            (Property(0xE7),)).encode())
        echo = parse_output(h.send(command.to_bytes()))[0]
        self.assertTrue(command.is_echo(echo))


class HistoryKnobTests(unittest.TestCase):
    """outage, history2 and history-days through the device spec, into the meter."""

    def test_spec(self):
        from smartmeter_tx.emulator.device import parse_spec
        config, _ = parse_spec("emulator:?outage=2024-05-30T10:00/2024-05-30T13:30&history2=off")
        window = (datetime.datetime(2024, 5, 30, 10), datetime.datetime(2024, 5, 30, 13, 30))
        self.assertEqual((config.outage, config.history2, config.history_days),
                         ((window,), False, 45))
        meter = Emulator(config, Clock()).meter
        self.assertEqual((meter.outage, meter.has_history2, meter.history_days),
                         ((window,), False, 45))
        self.assertTrue(meter.in_outage(window[0]))
        self.assertFalse(meter.in_outage(window[1]))
        config, _ = parse_spec("emulator:?outage=2024-05-30T10:00/2024-05-30T11:00,"
                               "2024-05-31T00:00/2024-05-31T00:30&history-days=60")
        self.assertEqual((len(config.outage), config.history2, config.history_days), (2, True, 60))
        self.assertEqual(parse_spec("emulator:")[0].outage, ())

    def test_badValues(self):
        """Each bad value is an ArgumentError with a one-line message."""
        from smartmeter_tx.emulator.device import parse_spec
        for query in ("outage=2024-05-30T10:00", "outage=2024-05-30T13:00/2024-05-30T10:00",
                      "outage=noon/later", "outage=2024-05-30T10:00/2024-05-30T11:00/x",
                      "outage=2024-05-30T10:00Z/2024-05-30T11:00Z", "history2=maybe",
                      "history-days=100", "history-days=-1"):
            e = self.assertRaises(ArgumentError, parse_spec, "emulator:?" + query)
            self.assertNotIn("\n", str(e))
            self.assertTrue(str(e).startswith("invalid emulator"), str(e))
        t = datetime.datetime(2024, 5, 30, 10)
        self.assertRaises(ArgumentError, EmulatorConfig(outage=((t, t),)).validate)

    def test_historyOverTheAir(self):
        """SetC E5 then Get E2+E4 in one frame through the module; the truth has the slots."""
        h = Harness(echo=False, time_scale=0, solar=2000,
                    outage=((START - datetime.timedelta(hours=3), START - datetime.timedelta(hours=2)),))
        self.assertIn(b"EVENT 25", h.join())
        out = h.sendto(Frame(0x51, 0x05FF01, METER, 0x61,
                             (Property(em.HISTORY_DAY, b"\x00"),)).encode())
        out += h.sendto(get_request(0x52, [em.HISTORY_NORMAL, em.HISTORY_REVERSE]).encode())
        replies = [Frame.decode(v.data) for v in rxudps(parse_output(out + h.advance(1.0)))]
        self.assertEqual([(r.tid, r.esv) for r in replies], [(0x51, 0x71), (0x52, GET_RES)])
        truth = [t for t in h.emulator.truth if t.tid == 0x52]
        self.assertEqual([t.epc for t in truth], [em.HISTORY_NORMAL, em.HISTORY_REVERSE])
        meter, now = h.emulator.meter, truth[0].meter_time
        midnight = datetime.datetime(2024, 6, 1)
        for which, record in enumerate(truth):
            expect = [meter.slot_truth(midnight + k * datetime.timedelta(minutes=30), now)[which]
                      for k in range(48)]
            got = [None if model.is_absent(v) else v for v in record.value["slots"]]
            self.assertEqual(got, expect)
            self.assertEqual(got[18:20], [None, None])  # 09:00 and 09:30: the outage
            self.assertIsNotNone(got[24])
