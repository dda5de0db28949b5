"""
Tests for L{smartmeter_tx.sk.framing}, in the style of h11's reader tests:
every input is fed whole, one byte at a time, followed by trailing garbage,
and cut at random places (hypothesis), and must give the same items each time.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.sk import values as V
from smartmeter_tx.sk import parse
from smartmeter_tx.sk import commands
from smartmeter_tx.sk.framing import (
    INCOMPLETE, NEED_DATA, Dropped, Line, Raw, Reader, SendtoHeader, parse_sendto_header,
)
from tests.fixtures import captures as C

METER = C.S4_METER_IP
#: Trailing garbage: an unterminated line, which no reader may return yet.
GARBAGE = b"EVENT 2"
RANDOM = dict(rnd=st.randoms(use_true_random=False))
FEW = settings(max_examples=30, deadline=None)


def host(max_line=4096, cr=False):
    """A host-side reader, as L{SKStackProtocol} uses it."""
    return Reader(max_line, cr_ends_line=cr)


def module(max_line=4096):
    """A module-side reader, as the emulator's UART uses it."""
    return Reader(max_line, cr_ends_line=True, lf_ends_line=True, sendto_headers=True)


def raw_after_head(reader, item):
    """
    A consumer that takes C{HEAD <n>} lines for a header followed by C{n} raw
    bytes (as the protocol does after a cut binary ERXUDP), and reads each
    SKSENDTO payload by its LEN.
    """
    if isinstance(item, Line) and item.data.startswith(b"HEAD "):
        reader.read_raw(int(item.data[5:]))
    elif isinstance(item, SendtoHeader):
        reader.read_raw(item.length)


def collect(reader, chunks, respond=raw_after_head) -> list:
    """Feed C{chunks} one by one; after each, take every item ready."""
    items = []
    for chunk in chunks:
        reader.feed(chunk)
        while True:
            item = reader.next()
            if item is NEED_DATA:
                break
            items.append(item)
            respond(reader, item)
    return items


def random_chunks(data: bytes, rnd) -> list:
    chunks, pos = [], 0
    while pos < len(data):
        n = rnd.choice((1, 1, 2, 3, 7, 64, 1000))
        chunks.append(data[pos:pos + n])
        pos += n
    return chunks


class ReaderTestMixin:
    def tr(self, make, data: bytes, expected: list, rnd=None, respond=raw_after_head,
           garbage=GARBAGE):
        """
        Assert that a fresh reader from C{make()} turns C{data} into
        C{expected} fed whole, byte by byte, with trailing garbage (which must
        stay buffered) and in random chunks.
        """
        self.assertEqual(collect(make(), [data], respond), expected, "fed whole")
        self.assertEqual(collect(make(), [data[i:i + 1] for i in range(len(data))], respond),
                         expected, "fed one byte at a time")
        reader = make()
        self.assertEqual(collect(reader, [data + garbage], respond), expected,
                         "fed with trailing garbage")
        self.assertEqual(reader.next(), NEED_DATA)
        self.assertEqual(reader.buffered, garbage)
        if rnd is not None:
            chunks = random_chunks(data, rnd)
            self.assertEqual(collect(make(), chunks, respond), expected,
                             f"fed as {[len(c) for c in chunks]}")


class HostLineTests(ReaderTestMixin, SynchronousTestCase):
    """
    L{Reader} on the host side: the module's CR LF lines.
    """

    @FEW
    @given(**RANDOM)
    def test_crlfLines(self, rnd):
        """CR LF ends a line; empty lines are lines; the line end is not in the data."""
        self.tr(host, b"SKVER\r\nEVER 1.2.10\r\n\r\nOK\r\n",
                [Line(b"SKVER"), Line(b"EVER 1.2.10"), Line(b""), Line(b"OK")], rnd)

    @FEW
    @given(**RANDOM)
    def test_bareLfAndCrAreData(self, rnd):
        """A bare LF or a lone CR inside a line does not end it on the host side."""
        self.tr(host, b"A\nB\r\nC\rD\r\n", [Line(b"A\nB"), Line(b"C\rD")], rnd)

    @FEW
    @given(**RANDOM)
    def test_leadingLfDropped(self, rnd):
        """One LF at the start of a line (the tail of a CR LF) is dropped, not two."""
        self.tr(host, b"\nOK\r\n\n\nEVER 1\r\n", [Line(b"OK"), Line(b"\nEVER 1")], rnd)

    @FEW
    @given(**RANDOM)
    def test_crOnly(self, rnd):
        """
        With C{cr_ends_line}, a lone CR ends a line (the ROPT answer) and the
        LF of a CR LF is not an empty line.
        """
        self.tr(lambda: host(cr=True), b"ROPT\r\nOK 01\rOK\r",
                [Line(b"ROPT"), Line(b"OK 01"), Line(b"OK")], rnd)

    @FEW
    @given(**RANDOM)
    def test_crOnlySwitchedOff(self, rnd):
        """
        The consumer switches C{cr_ends_line} off after the CR-only answer;
        an LF right after that CR is still swallowed and CR LF lines follow.
        """
        def respond(reader, item):
            if item == Line(b"OK 01"):
                reader.cr_ends_line = False

        data = b"ROPT\r\nOK 01\r\nEVENT 21 X\rY\r\n"
        self.tr(lambda: host(cr=True), data,
                [Line(b"ROPT"), Line(b"OK 01"), Line(b"EVENT 21 X\rY")], rnd, respond)
        self.tr(lambda: host(cr=True), data.replace(b"OK 01\r\n", b"OK 01\r"),
                [Line(b"ROPT"), Line(b"OK 01"), Line(b"EVENT 21 X\rY")], rnd, respond)

    @FEW
    @given(**RANDOM)
    def test_capturedRopt(self, rnd):
        """The captured ROPT exchange (echo, CR-only OK) frames as two lines."""
        data = C.S4_ROPT_ECHO + b"\r\n" + C.S4_ROPT_OK_01
        self.tr(lambda: host(cr=True), data, [Line(C.S4_ROPT_ECHO), Line(b"OK 01")], rnd)


class OverlongTests(ReaderTestMixin, SynchronousTestCase):
    """
    Lines longer than C{max_line} are dropped up to their end and reported.
    """

    @FEW
    @given(**RANDOM)
    def test_overlongDropped(self, rnd):
        """An over-long line is one L{Dropped} with its length; lines after it are read."""
        self.tr(lambda: host(8), b"0123456789ABCDEF\r\nOK\r\n", [Dropped(16), Line(b"OK")], rnd)
        # Garbage longer than the limit is not kept either: it is being dropped.
        reader = host(4)
        self.assertEqual(collect(reader, [b"OK\r\n" + GARBAGE]), [Line(b"OK")])
        self.assertEqual(reader.buffered, b"")

    @FEW
    @given(**RANDOM)
    def test_limit(self, rnd):
        """A line of exactly C{max_line} bytes is kept; one byte more is dropped."""
        self.tr(lambda: host(8), b"01234567\r\n012345678\r\n\r\n",
                [Line(b"01234567"), Dropped(9), Line(b"")], rnd)

    @FEW
    @given(**RANDOM)
    def test_severalOverlong(self, rnd):
        """Over-long lines in a row are each reported; the CR of their CR LF may come alone."""
        self.tr(lambda: host(4), b"AAAAAAAA\rB\r\nCCCCC\r\nOK\r\nDDDDDDD\r\n",
                [Dropped(10), Dropped(5), Line(b"OK"), Dropped(7)], rnd, garbage=b"EV")

    @FEW
    @given(**RANDOM)
    def test_overlongCrOnly(self, rnd):
        """In CR-only mode an over-long line ends at its CR."""
        self.tr(lambda: host(4, cr=True), b"AAAAAAAA\r\nOK\r", [Dropped(8), Line(b"OK")], rnd,
                garbage=b"EV")

    @FEW
    @given(**RANDOM)
    def test_overlongModule(self, rnd):
        """On the module side an over-long line may end with a bare LF."""
        self.tr(lambda: module(6), b"AAAAAAAA\nSKVER\r\n", [Dropped(8), Line(b"SKVER")], rnd,
                garbage=b"SK")

    def test_runawayInputNotKept(self):
        """
        Input with no line end for ever is not kept in memory, and the reader
        reports it once its line end comes.
        """
        reader = host(16)
        for _ in range(100):
            reader.feed(b"X" * 1000)
            self.assertEqual(reader.next(), NEED_DATA)
            self.assertLessEqual(len(reader.buffered), 16)
        reader.feed(b"X\r")
        self.assertEqual(reader.next(), NEED_DATA)
        reader.feed(b"\nOK\r\n")
        self.assertEqual(list(reader), [Dropped(100001), Line(b"OK")])

    def test_maxLineMustBePositive(self):
        """A zero maximum is the consumer's mistake: ValueError."""
        self.assertRaises(ValueError, Reader, 0)


class RawTests(ReaderTestMixin, SynchronousTestCase):
    """
    C{read_raw(n)}: the next n bytes as one L{Raw}, whatever they hold.
    """

    @FEW
    @given(**RANDOM)
    def test_rawHoldsLineEnds(self, rnd):
        """Raw bytes may hold CR LF, CR and LF; lines resume right after them."""
        self.tr(host, b"HEAD 7\r\n\r\nA\r\r\n\n\r\nOK\r\n",
                [Line(b"HEAD 7"), Raw(b"\r\nA\r\r\n\n"), Line(b""), Line(b"OK")], rnd)

    @FEW
    @given(**RANDOM)
    def test_rawStartsWithLf(self, rnd):
        """A raw payload's leading LF is payload, not the tail of a line end."""
        self.tr(host, b"HEAD 2\r\n\n\n\r\n", [Line(b"HEAD 2"), Raw(b"\n\n"), Line(b"")], rnd)

    @FEW
    @given(**RANDOM)
    def test_rawZero(self, rnd):
        """C{read_raw(0)} gives an empty L{Raw} at once."""
        self.tr(host, b"HEAD 0\r\n\r\n", [Line(b"HEAD 0"), Raw(b""), Line(b"")], rnd)

    @FEW
    @given(**RANDOM)
    def test_rawLongerThanMaxLine(self, rnd):
        """The line limit does not apply to raw bytes."""
        payload = bytes(range(256)) * 4
        self.tr(lambda: host(16), b"HEAD 1024\r\n" + payload + b"\r\nOK\r\n",
                [Line(b"HEAD 1024"), Raw(payload), Line(b""), Line(b"OK")], rnd)

    @FEW
    @given(**RANDOM)
    def test_binaryErxudp(self, rnd):
        """
        The protocol's own use: a binary ERXUDP cut at a CR LF in its payload
        is completed by C{read_raw(partial.remaining)}.
        """
        payload = bytes.fromhex("10810D0A02880105FF017201E70400000D0A")
        rx = V.RxUdp(METER, METER, 0x0E1A, 0x0E1A, C.S4_METER_MAC, True, payload, 0, None, True)
        data = rx.to_line() + b"\r\n" + b"OK\r\n"
        got = []

        def respond(reader, item):
            value = parse.parse_line(item.data) if isinstance(item, Line) else item
            if isinstance(value, V.RxUdpPartial):
                got.append(value)
                reader.read_raw(value.remaining)
            elif isinstance(value, Raw):
                got[-1] = got[-1].complete(value.data)

        head = rx.to_line().split(b"\r\n")[0]
        rest = rx.to_line()[len(head) + 2:]
        self.tr(host, data, [Line(head), Raw(rest), Line(b""), Line(b"OK")], rnd, respond)
        self.assertEqual(got[-1], rx)

    def test_cancelRaw(self):
        """
        C{cancel_raw()} gives up a payload that never completed: what was
        held for it is framed as lines again.
        """
        reader = host()
        reader.feed(b"HEAD 50\r\nEVER 1\r\nOK")
        self.assertEqual(collect(reader, [b""]), [Line(b"HEAD 50")])
        self.assertEqual(reader.raw_pending, 50)
        self.assertEqual(reader.cancel_raw(), b"EVER 1\r\nOK")
        self.assertIsNone(reader.raw_pending)
        self.assertEqual(collect(reader, [b"\r\n"]), [Line(b"EVER 1"), Line(b"OK")])
        self.assertEqual(reader.cancel_raw(), b"")

    def test_misuse(self):
        """A negative count, or a second request while one is pending, is ValueError."""
        reader = host()
        self.assertRaises(ValueError, reader.read_raw, -1)
        reader.read_raw(3)
        self.assertRaises(ValueError, reader.read_raw, 3)
        self.assertEqual(reader.raw_pending, 3)


class ModuleSideTests(ReaderTestMixin, SynchronousTestCase):
    """
    L{Reader} on the module side: host commands and SKSENDTO payloads.
    """

    @FEW
    @given(**RANDOM)
    def test_lineEnds(self, rnd):
        """CR LF, CR and LF each end a command; the LF of a CR LF is not an empty line."""
        self.tr(module, b"SKVER\r\nSKINFO\nROPT\rWOPT 01\r\n\n",
                [Line(b"SKVER"), Line(b"SKINFO"), Line(b"ROPT"), Line(b"WOPT 01"), Line(b"")],
                rnd)

    @FEW
    @given(**RANDOM)
    def test_leadingLfIsEmptyLine(self, rnd):
        """On the module side a bare LF after a CR LF is an empty command line."""
        self.tr(module, b"\nSKVER\r\n\n", [Line(b""), Line(b"SKVER"), Line(b"")], rnd)

    @FEW
    @given(**RANDOM)
    def test_sendtoBothDialects(self, rnd):
        """
        A real SKSENDTO in either dialect is a L{SendtoHeader} with the
        dialect, arguments and LEN, then its payload (CR LF inside) as L{Raw}.
        """
        payload = b"\x10\x81\r\n\x00\x01\x05\xff\x01\x02\x88\x01\x62\x01\xe7\x00\r"
        for dialect, n in ((V.Dialect.STANDARD, 5), (V.Dialect.DSE, 6)):
            wire = commands.sk_sendto(dialect, METER, payload).to_bytes()
            head = wire[:-len(payload)]
            args = tuple(head.decode().split(" ")[1:-1])
            self.assertEqual(len(args), n)
            self.tr(module, wire + b"SKVER\r\n",
                    [SendtoHeader(head, dialect, args, len(payload)), Raw(payload),
                     Line(b"SKVER")], rnd)

    @FEW
    @given(**RANDOM)
    def test_sendtoNotAHeader(self, rnd):
        """A header cut by a line end, or with a LEN that is not hex, is an ordinary line."""
        self.tr(module, b"SKSENDTO 1 " + METER.encode() + b" 0E1A\r\n"
                b"SKSENDTO 1 X 0E1A 1 00G2 ab\r\nSKSEND\r\n",
                [Line(b"SKSENDTO 1 " + METER.encode() + b" 0E1A"),
                 Line(b"SKSENDTO 1 X 0E1A 1 00G2 ab"), Line(b"SKSEND")], rnd)

    def test_hostSideHasNoHeaders(self):
        """A host-side reader takes SKSENDTO text for a line like any other."""
        self.assertEqual(collect(host(), [b"SKSENDTO 1 X 0E1A 1 0002 ab\r\n"]),
                         [Line(b"SKSENDTO 1 X 0E1A 1 0002 ab")])


class ParseSendtoHeaderTests(SynchronousTestCase):
    """
    L{parse_sendto_header}.
    """

    def test_incomplete(self):
        """A prefix of a header may still become one: INCOMPLETE."""
        for buf in (b"S", b"SKSEND", b"SKSENDTO ", b"SKSENDTO 1 FE80 0E1A 1", b"SKSENDTO 1 FE80 0E1A 1 0"):
            self.assertIs(parse_sendto_header(buf), INCOMPLETE, buf)

    def test_notAHeader(self):
        """Other text, a line end inside, a runaway argument or a bad LEN: None."""
        for buf in (b"SKVER\r\n", b"SKSENDTOX", b"SKSENDTO 1 FE80\r\n", b"SKSENDTO " + b"1" * 64,
                    b"SKSENDTO 1 FE80 0E1A 1 12345 ", b"SKSENDTO 1 FE80 0E1A 1 0 ZZ "):
            self.assertIsNone(parse_sendto_header(buf), buf)

    def test_forms(self):
        """The 5th argument tells the form: four hex digits standard, one character DSE."""
        std = parse_sendto_header(b"SKSENDTO 1 FE80 0E1A 1 000E payload")
        self.assertEqual((std.form, std.length, std.data),
                         (V.Dialect.STANDARD, 14, b"SKSENDTO 1 FE80 0E1A 1 000E "))
        dse = parse_sendto_header(b"SKSENDTO 1 FE80 0E1A 1 0 00A ")
        self.assertEqual((dse.form, dse.length, dse.args),
                         (V.Dialect.DSE, 10, ("1", "FE80", "0E1A", "1", "0", "00A")))
