#!/usr/bin/env python3
"""
Fuzz SKStackProtocol (with an EchonetRequester on top) with hostile module
output, and check after every iteration that a normal exchange still works.

Each iteration, on a StringTransport with a task.Clock:

 1. zero to two random commands are put in flight (SKVER, SKINFO, SKSREG,
    SKLL64, SKTABLE, ROPT with its CR-only answer, SKSCAN, SKJOIN, or an ECHONET
    Get through the requester);
 2. junk is fed in random chunks (one byte up to a few hundred): real capture
    lines, lines cut short, garbage bytes, truncated binary ERXUDP, binary
    ERXUDP with a corrupted DATALEN, over-long lines (with and without their
    end), and interleaved EVENT / ERXUDP / EPANDESC blocks, then a CR LF;
 3. the clock runs until every command in flight has completed or failed;
 4. a normal exchange must complete: SKVER -> EVER 1.2.10 / OK, then a Get of
    E7+E8 -> EVENT 21 00, OK, ERXUDP Get_Res (binary or hex, sometimes with CR
    LF inside the payload) whose values must come back exactly.  A failed
    attempt (timeout) is retried up to --attempts times.  When a command was
    abandoned (timed out or cancelled) the protocol first writes a resync
    (SKVER, or SKINFO if SKVER was the abandoned one); the exchange answers it
    as a module would (EVER / EINFO, OK) and counts it.

Asserted throughout: no exception escapes dataReceived, no log event at level
error/critical or carrying a failure (that includes Twisted's "Unhandled error
in Deferred", flushed with gc every 100 iterations), every Deferred created
here fires with a result or an expected SK/ECHONET error.  The fuzzing "module"
keeps one echo setting per session (a session is a fresh protocol, renewed
every 20-200 iterations); a stray echo line is fed only to sessions whose
module echoes, unless --stray-echo is given.

Run:  python bench/fuzz_protocol.py [--iterations N] [--seed S] [--check]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import re
import sys
import time
import traceback
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from twisted.internet import defer  # noqa: E402
from twisted.internet.error import ConnectionDone  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.logger import (  # noqa: E402
    LogLevel, formatEvent, globalLogBeginner, globalLogPublisher,
)
from twisted.python.failure import Failure  # noqa: E402

from smartmeter_tx.echonet import frame as F  # noqa: E402
from smartmeter_tx.echonet import meter as M  # noqa: E402
from smartmeter_tx.echonet.requester import (  # noqa: E402
    EchonetError, EchonetRequester,
)
from smartmeter_tx.sk import values as V  # noqa: E402
from smartmeter_tx.sk import commands  # noqa: E402
from smartmeter_tx.sk.protocol import SKStackProtocol  # noqa: E402
from smartmeter_tx.sk.errors import (  # noqa: E402
    SKCommandError, SKDisconnected, SKEventError, SKTimeoutError,
)

# -- real lines (copied from tests/fixtures/captures.py, §1, §4, §17) --

METER = "FE80:0000:0000:0000:C2F9:4500:4058:B5FB"
MODULE = "FE80:0000:0000:0000:021D:1291:0004:E578"
LLA = "0011223344556677"
FF02 = "FF02:0000:0000:0000:0000:0000:0000:0001"

REAL_LINES = [
    b"OK",
    b"EVENT 21 0000:0000:0000:0000:0000:0000:0000:0000 00",
    b"0000:0000:0000:0000:0000:0000:0000:0000",
    b"EVER 1.5.2",
    b"FAIL ER04",
    b"OK 00",
    b"ESREG 1",
    b"EVENT 22 FE80:0000:0000:0000:021D:1291:0004:E578 0",
    b"FE80:0000:0000:0000:C2F9:4500:4058:B5FB",
    b"EVENT 21 FE80:0000:0000:0000:C2F9:4500:4058:B5FB 0 02",
    b"EVENT 02 FE80:0000:0000:0000:C2F9:4500:4058:B5FB 0",
    b"EVENT 21 FE80:0000:0000:0000:C2F9:4500:4058:B5FB 0 00",
    b"EVENT 25 FE80:0000:0000:0000:C2F9:4500:4058:B5FB 0",
    b"ERXUDP FE80:0000:0000:0000:C2F9:4500:4058:B5FB FE80:0000:0000:0000:021D:1291:0004:E578"
    b" 02CC 02CC 0011223344556677 0 0 0028 "
    b"00000028C0000002136F0BFE2FDA83DC00060000000400000000000500030000000400000000000C",
    b"ERXUDP FE80:0000:0000:0000:C2F9:4500:4058:B5FB FF02:0000:0000:0000:0000:0000:0000:0001"
    b" 0E1A 0E1A 0011223344556677 1 0 0012 108100000EF0010EF0017301D50401028801",
    b"ERXUDP FE80:0000:0000:0000:C2F9:4500:4058:B5FB FE80:0000:0000:0000:021D:1291:0004:E578"
    b" 0E1A 0E1A 0011223344556677 1 0 0026 "
    b"1081000102880105FF017302EA0B07E70C13001E000000458EEB0B07E70C13001E0000000015",
    b"SKSENDTOERXUDP FE80:0000:0000:0000:C2F9:4500:4058:B5FB"
    b" FE80:0000:0000:0000:021D:1291:0004:E578 0E1A 0E1A 0011223344556677 1 0 0012 "
    b"1081525302880105FF017201E704000000E4",
]
PANDESC_BLOCK = [
    b"EPANDESC", b"  Channel:31", b"  Channel Page:09", b"  Pan ID:B5FB",
    b"  Addr:0011223344556677", b"  LQI:DD", b"  Side:0", b"  PairID:XXXXXXXX",
]
CR_ONLY = [b"OK 01\r", b"OK 80\r"]
ECHO_LINES = [
    b"SKVER", b"SKSREG S2 31", b"SKLL64 0011223344556677", b"SKINFO",
    b"SKSENDTO 1 FE80:0000:0000:0000:C2F9:4500:4058:B5FB 0E1A 1 0 000E ",
]
#: Real Get_Res / INF payloads (captures.py §1, §20).
REAL_FRAMES = [bytes.fromhex(h) for h in (
    "1081000102880105FF015201D300",
    "1081000102880105FF017201E10102",
    "1081000102880105FF017201EA0B07E6080114000000012CC7",
    "1081000102880105FF017201E704000004A8",
    "1081000102880105FF017201E80400620022",
    "108103610EF0010EF0017301D50401028801",
    "1081525302880105FF017201E704000000E4",
)]

#: What the module answers to the protocol's resync commands (and to our SKVER).
RESYNC_ANSWERS = {
    b"SKVER\r\n": b"EVER 1.2.10\r\nOK\r\n",
    b"SKINFO\r\n": b"EINFO " + MODULE.encode() + b" 001D12910004E578 21 B5FB FFFE\r\nOK\r\n",
}

EXPECTED_ERRORS = (SKTimeoutError, SKCommandError, SKEventError, SKDisconnected, EchonetError,
                   defer.CancelledError)


class Junk:
    """Hostile module output, one piece at a time."""

    def __init__(self, rng: random.Random, stray_echo: bool) -> None:
        self.rng = rng
        self.stray_echo = stray_echo
        self.kinds = [
            ("real", self.real), ("cut", self.cut), ("garbage", self.garbage),
            ("truncated-erxudp", self.truncated_erxudp), ("bad-datalen", self.bad_datalen),
            ("overlong", self.overlong), ("interleaved", self.interleaved),
            ("cr-only", self.cr_only), ("echo", self.echo),
        ]
        self.weights = [6, 4, 5, 3, 1, 2, 6, 1, 1]

    def piece(self, echo_session: bool):
        kind, make = self.rng.choices(self.kinds, self.weights)[0]
        if kind == "echo" and not (echo_session or self.stray_echo):
            kind, make = "real", self.real
        return kind, make()

    def erxudp(self, payload: bytes, binary: bool, sender: str = METER, port: str = "0E1A",
               datalen=None) -> bytes:
        layout = self.rng.choice(("std", "dse", "rssi"))
        head = ["ERXUDP", sender, MODULE, port, port, LLA]
        if layout == "rssi":
            head.append("%02X" % self.rng.randrange(256))
        head.append("1")
        if layout != "std":
            head.append("0")
        head.append("%04X" % (len(payload) if datalen is None else datalen))
        data = payload if binary else payload.hex().upper().encode()
        return " ".join(head).encode() + b" " + data

    def event(self) -> bytes:
        num = self.rng.choice((0x01, 0x02, 0x05, 0x1F, 0x20, 0x21, 0x22, 0x24, 0x25, 0x26,
                               0x27, 0x28, 0x29, 0x32, 0x33, 0x45))
        who = self.rng.choice((METER, MODULE))
        parts = [b"EVENT", b"%02X" % num, who.encode()]
        if self.rng.random() < 0.5:
            parts.append(b"0")
        if num == 0x21:
            parts.append(b"%02X" % self.rng.randrange(3))
        return b" ".join(parts)

    def frame_payload(self) -> bytes:
        r = self.rng.random()
        if r < 0.5:
            return self.rng.choice(REAL_FRAMES)
        if r < 0.8:
            tid = self.rng.randrange(0x10000)
            props = (F.Property(M.POWER, self.rng.randbytes(4)),
                     F.Property(M.CURRENT, self.rng.randbytes(4)))
            return F.Frame(tid, F.METER, F.CONTROLLER, F.GET_RES, props).encode()
        return self.rng.randbytes(self.rng.randint(1, 40))

    # -- kinds ---------------------------------------------------------------

    def real(self) -> bytes:
        return self.rng.choice(REAL_LINES) + b"\r\n"

    def cut(self) -> bytes:
        line = self.rng.choice(REAL_LINES + PANDESC_BLOCK)
        return line[:self.rng.randrange(len(line) + 1)] + self.rng.choice((b"\r\n", b"\r", b"\n", b""))

    def garbage(self) -> bytes:
        n = self.rng.randint(1, 64)
        alphabet = b"\r\n \x00\xff:0123456789ABCDEFOKERXUDPVNT"
        if self.rng.random() < 0.5:
            return self.rng.randbytes(n)
        return bytes(self.rng.choice(alphabet) for _ in range(n))

    def truncated_erxudp(self) -> bytes:
        payload = self.frame_payload()
        if self.rng.random() < 0.5:
            at = self.rng.randrange(len(payload) + 1)
            payload = payload[:at] + b"\r\n" + payload[at:]  # a CR LF inside the data
        line = self.erxudp(payload, binary=True)
        return line[:self.rng.randrange(10, len(line) + 1)] + b"\r\n"

    def bad_datalen(self) -> bytes:
        payload = self.frame_payload() + b"\r\n" + self.rng.randbytes(self.rng.randint(0, 8))
        datalen = self.rng.choice((self.rng.randrange(0x10000), len(payload) + 1,
                                   len(payload) + self.rng.randint(2, 64)))
        return self.erxudp(payload, binary=True, datalen=datalen) + b"\r\n"

    def overlong(self) -> bytes:
        n = self.rng.randint(4097, 9000)
        start = self.rng.choice((b"", b"ERXUDP ", b"EVENT 21 ", b"OK"))
        body = start + bytes(self.rng.choice(b"0123456789ABCDEF ") for _ in range(n))
        return body + (b"\r\n" if self.rng.random() < 0.7 else b"")

    def interleaved(self) -> bytes:
        out = []
        for _ in range(self.rng.randint(2, 8)):
            r = self.rng.random()
            if r < 0.35:
                out.append(self.event())
            elif r < 0.7:
                binary = self.rng.random() < 0.5
                port = self.rng.choice(("0E1A", "0E1A", "02CC"))
                out.append(self.erxudp(self.frame_payload(), binary, port=port,
                                       sender=self.rng.choice((METER, METER, MODULE))))
            else:
                block = list(PANDESC_BLOCK)
                if self.rng.random() < 0.5:
                    del block[self.rng.randrange(1, len(block)):]  # cut short
                if self.rng.random() < 0.5:
                    block.insert(self.rng.randrange(1, len(block) + 1), self.event())
                out.extend(block)
        return b"".join(line + b"\r\n" for line in out)

    def cr_only(self) -> bytes:
        return self.rng.choice(CR_ONLY)

    def echo(self) -> bytes:
        return self.rng.choice(ECHO_LINES) + b"\r\n"


class Session:
    """One connection: protocol, transport, requester, and the module's habits."""

    def __init__(self, rng: random.Random, clock: Clock) -> None:
        self.clock = clock
        self.echo = rng.random() < 0.5
        self.payload_mode = rng.choice((None, None, "binary", "hex"))
        self.binary = (self.payload_mode == "binary"
                       or (self.payload_mode is None and rng.random() < 0.5))
        self.dialect = rng.choice((V.Dialect.STANDARD, V.Dialect.DSE))
        self.sk = SKStackProtocol(clock=clock, payload_mode=self.payload_mode)
        self.transport = StringTransport()
        self.sk.makeConnection(self.transport)
        self.requester = EchonetRequester(self.sk, self.dialect, METER, clock=clock)

    def close(self) -> None:
        self.requester.close()
        self.sk.connectionLost(Failure(ConnectionDone()))


class Fuzzer:
    def __init__(self, args) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.clock = Clock()
        self.junk = Junk(self.rng, args.stray_echo)
        self.log_counts: Counter = Counter()
        self.bad_events: list = []
        self.escaped: list = []
        self.unexpected: list = []
        self.outcomes: Counter = Counter()
        self.kinds: Counter = Counter()
        self.attempts: Counter = Counter()
        self.stuck: list = []
        self.bytes_fed = 0
        self.chunks_fed = 0
        self.exchanges = 0
        self.resyncs: Counter = Counter()
        self.sessions = 0
        self.tracked: list = []
        self.session = None
        self.session_left = 0
        self.iteration = 0

    # -- logging ---------------------------------------------------------------

    def observe(self, event) -> None:
        level = event.get("log_level")
        fmt = event.get("log_format") or ""
        if level is LogLevel.debug:
            return
        if level is not None and level >= LogLevel.error or "log_failure" in event:
            text = formatEvent(event)
            if "log_failure" in event:
                text += "\n" + event["log_failure"].getTraceback()
            self.bad_events.append((self.iteration, text))
            return
        if "malformed line" in fmt:
            key = "malformed line dropped"
        elif "unrecognised line" in fmt:
            key = "unknown line dropped"
        elif "over-long line" in fmt:
            key = "over-long line dropped"
        elif "glued before a line" in fmt:
            key = "junk before a line dropped (resync)"
        elif "malformed ECHONET frame" in fmt:
            key = "malformed ECHONET frame dropped"
        elif "answers an abandoned command" in fmt:
            key = "late answer of an abandoned command dropped (resync)"
        else:
            key = re.sub(r"\{[^}]*\}", "_", fmt)[:70] or "?"
        self.log_counts[key] += 1

    # -- plumbing ----------------------------------------------------------------

    def new_session(self) -> None:
        if self.session is not None:
            self.session.close()
            self.settle()
        self.session = Session(self.rng, self.clock)
        self.sessions += 1
        self.session_left = self.rng.randint(20, 200)

    def feed(self, data: bytes) -> None:
        sk = self.session.sk
        pos = 0
        while pos < len(data):
            r = self.rng.random()
            size = 1 if r < 0.15 else self.rng.randint(1, 16) if r < 0.6 else self.rng.randint(17, 400)
            chunk = data[pos:pos + size]
            pos += size
            self.bytes_fed += len(chunk)
            self.chunks_fed += 1
            try:
                sk.dataReceived(chunk)
            except Exception:
                self.escaped.append((self.iteration, traceback.format_exc()))

    def track(self, d: defer.Deferred, what: str) -> list:
        box: list = []

        def done(result):
            box.append(result)
            if isinstance(result, Failure):
                if result.check(*EXPECTED_ERRORS):
                    self.outcomes[f"{what}: {result.type.__name__}"] += 1
                else:
                    self.unexpected.append((self.iteration, what, result.getTraceback()))
            else:
                self.outcomes[f"{what}: ok"] += 1
            return None

        d.addBoth(done)
        self.tracked.append(box)
        return box

    def settle(self, limit: float = 7200.0) -> None:
        """Run the clock until every tracked Deferred has fired."""
        end = self.clock.seconds() + limit
        while any(not box for box in self.tracked):
            calls = self.clock.getDelayedCalls()
            if not calls:
                break
            when = min(c.getTime() for c in calls)
            if when > end:
                break
            self.clock.advance(max(0.0, when - self.clock.seconds()))
        pending = [box for box in self.tracked if not box]
        if pending:
            self.unexpected.append((self.iteration, "settle",
                                    f"{len(pending)} Deferred(s) never fired"))
        self.tracked = []

    def in_flight(self) -> None:
        s = self.session
        rng = self.rng
        for _ in range(rng.choice((0, 0, 1, 1, 2))):
            r = rng.randrange(9)
            if r == 0:
                d, what = s.sk.command(commands.sk_ver()), "SKVER"
            elif r == 1:
                d, what = s.sk.command(commands.sk_info()), "SKINFO"
            elif r == 2:
                d, what = s.sk.command(commands.sk_sreg("S2", "31")), "SKSREG"
            elif r == 3:
                d, what = s.sk.command(commands.sk_ll64(LLA)), "SKLL64"
            elif r == 4:
                d, what = s.sk.command(commands.sk_table("2")), "SKTABLE"
            elif r == 5:
                d, what = s.sk.command(commands.ropt()), "ROPT"
            elif r == 6:
                d, what = s.sk.command(commands.sk_scan(s.dialect, 0xFFFFFFFF, 4)), "SKSCAN"
            elif r == 7:
                d, what = s.sk.command(commands.sk_join(METER)), "SKJOIN"
            else:
                d, what = s.requester.get((M.POWER, M.CURRENT), timeout=5.0), "Get"
            self.track(d, what)

    # -- the normal exchange -------------------------------------------------------

    def answer(self, written: bytes) -> None:
        """Answer an SKVER or SKINFO as the module does (echo first if it echoes)."""
        self.feed((written if self.session.echo else b"") + RESYNC_ANSWERS[written])

    def written(self) -> bytes:
        s = self.session
        data = s.transport.value()
        s.transport.clear()
        return data

    def exchange(self) -> bool:
        s = self.session
        s.transport.clear()
        # SKVER -> EVER / OK.  A resync may come first: SKINFO (never ours) or
        # an SKVER that leaves ours unanswered; answer each write in turn.
        box = self.track(s.sk.command(commands.sk_ver()), "exchange SKVER")
        for _ in range(3):
            written = self.written()
            if written not in RESYNC_ANSWERS:
                if written:
                    self.unexpected.append((self.iteration, "exchange", f"wrote {written[:60]!r}"))
                self.settle()
                return False
            self.answer(written)
            if box:
                break
            self.resyncs[written.strip().decode()] += 1
        if not box or isinstance(box[0], Failure) or box[0].first(V.Ver) is None \
                or box[0].first(V.Ver).version != "1.2.10":
            self.settle()
            return False
        # Get E7+E8 -> EVENT 21 00, OK, ERXUDP Get_Res (after a resync, if one
        # is written first: nothing should be abandoned by now).
        box = self.track(s.requester.get((M.POWER, M.CURRENT), timeout=5.0), "exchange Get")
        written = self.written()
        if written in RESYNC_ANSWERS:
            self.resyncs[written.strip().decode() + " before Get"] += 1
            self.answer(written)
            written = self.written()
        if not written.startswith(b"SKSENDTO "):
            self.settle()
            return False
        n = 7 if s.dialect is V.Dialect.DSE else 6  # SKSENDTO and its arguments up to LEN
        tokens = written.split(b" ", n)
        header, payload = b" ".join(tokens[:n]) + b" ", tokens[n]
        if len(payload) != int(tokens[n - 1], 16):
            self.unexpected.append((self.iteration, "exchange", f"SKSENDTO LEN mismatch {written!r}"))
        request = F.Frame.decode(payload)
        power = self.rng.choice((0x00000D0A, 0x0D0A0D0A, self.rng.randrange(-5000, 10000)))
        currents = self.rng.choice((b"\x00\x0d\x0a\x00", self.rng.randbytes(2) + b"\x00\x11"))
        edt7 = power.to_bytes(4, "big", signed=True)
        reply = F.Frame(request.tid, F.METER, F.CONTROLLER, F.GET_RES,
                        (F.Property(M.POWER, edt7), F.Property(M.CURRENT, currents))).encode()
        side = b" 0" if s.dialect is V.Dialect.DSE else b""
        out = (header if s.echo else b"") + b"\r\n"
        out += b"EVENT 21 " + METER.encode() + side + b" 00\r\nOK\r\n"
        # If junk answered an in-flight ROPT ("OK 00"/"OK 01"), the protocol
        # took it for the module's mode: the module adopts it, as if genuine.
        binary = s.binary if s.sk.payload_mode is None else s.sk.payload_mode == "binary"
        rx = V.RxUdp(METER, MODULE, 0x0E1A, 0x0E1A, LLA, True, reply,
                     0 if s.dialect is V.Dialect.DSE else None, None, binary)
        out += rx.to_line() + b"\r\n"
        self.feed(out)
        if not box or isinstance(box[0], Failure):
            self.settle()
            return False
        frame = box[0]
        if frame.get(M.POWER) != edt7 or frame.get(M.CURRENT) != currents:
            self.unexpected.append((self.iteration, "exchange", "Get returned a wrong value"))
            return False
        self.tracked = []
        return True

    # -- the loop ---------------------------------------------------------------------

    def one(self) -> None:
        if self.session is None or self.session_left <= 0:
            self.new_session()
        self.session_left -= 1
        self.in_flight()
        pieces = []
        for _ in range(self.rng.randint(1, 8)):
            kind, data = self.junk.piece(self.session.echo)
            self.kinds[kind] += 1
            pieces.append((kind, data))
        self.feed(b"".join(data for _, data in pieces) + b"\r\n")
        self.settle()
        reader = self.session.sk.reader
        raw_left = (reader.raw_pending - len(reader.buffered)
                    if reader.raw_pending is not None else 0)
        for attempt in range(1, self.args.attempts + 1):
            self.exchanges += 1
            if self.exchange():
                self.attempts[attempt] += 1
                return
        # Stuck: say why, then start over with a fresh connection.
        sk = self.session.sk
        why = []
        if raw_left:
            why.append(f"raw mode waiting for {raw_left} bytes after junk")
        if sk.echo and not self.session.echo:
            why.append("believes the module echoes (it does not)")
        reader = sk.reader
        state = (f"echo={sk.echo} module_echo={self.session.echo} payload_mode={sk.payload_mode} "
                 f"raw_pending={reader.raw_pending} buffered={reader.buffered[-80:]!r} "
                 f"current={sk.in_flight}")
        self.stuck.append((self.iteration, ", ".join(why) or "unexplained",
                           sorted({k for k, _ in pieces}), state))
        self.attempts["stuck"] += 1
        self.session_left = 0

    def run(self) -> float:
        globalLogBeginner.beginLoggingTo([lambda e: None], discardBuffer=True,
                                         redirectStandardIO=False)
        globalLogPublisher.addObserver(self.observe)
        t0 = time.perf_counter()
        try:
            for self.iteration in range(1, self.args.iterations + 1):
                self.one()
                if self.iteration % 100 == 0:
                    gc.collect()  # Deferreds that die with an unhandled error log it now
        finally:
            if self.session is not None:
                self.session.close()
                self.settle()
            gc.collect()
            globalLogPublisher.removeObserver(self.observe)
        return time.perf_counter() - t0


def _bucket(why: str) -> str:
    if why.startswith("raw mode waiting for "):
        n = int(why.split()[4])
        if n > 0x4D0:
            return "raw mode, > 1232 bytes left (DATALEN beyond any real payload)"
        return "raw mode, <= 1232 bytes left (a truncated binary ERXUDP eats later lines)"
    return why


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=40_000,
                   help="iterations (default 40000, about a minute on a 2-core AMD EPYC VM)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--attempts", type=int, default=3,
                   help="normal-exchange attempts allowed after each junk (default 3)")
    p.add_argument("--stray-echo", action="store_true",
                   help="also feed stray command echoes to sessions whose module has echo off")
    p.add_argument("--show", type=int, default=3, help="problems of each kind to print in full")
    p.add_argument("--check", action="store_true",
                   help="exit 1 on any escaped exception, error log, unexpected Deferred "
                        "result or exchange that did not complete")
    args = p.parse_args(argv)
    fz = Fuzzer(args)
    elapsed = fz.run()

    print(f"iterations: {args.iterations} (seed {args.seed}), sessions: {fz.sessions}")
    print(f"bytes fed: {fz.bytes_fed} in {fz.chunks_fed} chunks; elapsed {elapsed:.1f} s "
          f"({args.iterations / elapsed:.0f} iterations/s, {fz.bytes_fed / elapsed / 1e6:.2f} MB/s); "
          f"simulated time {fz.clock.seconds():.0f} s")
    print("junk pieces: " + ", ".join(f"{k} {v}" for k, v in sorted(fz.kinds.items())))
    print("log events (dropped / ignored lines): " + (", ".join(
        f"{k}: {v}" for k, v in sorted(fz.log_counts.items(), key=lambda kv: -kv[1])) or "none"))
    ok_after = {k: v for k, v in fz.attempts.items() if k != "stuck"}
    print("normal exchange completed after attempt: " + ", ".join(
        f"#{k}: {v}" for k, v in sorted(ok_after.items())) + f"; never (stuck): {fz.attempts['stuck']}")
    flight = Counter()
    for k, v in fz.outcomes.items():
        if not k.startswith("exchange"):
            flight[k] += v
    print("commands in flight during junk, outcomes: " + ", ".join(
        f"{k} {v}" for k, v in sorted(flight.items())))
    print(f"normal exchanges: {fz.exchanges}; resyncs answered in them: "
          + (", ".join(f"{k} {v}" for k, v in sorted(fz.resyncs.items())) or "none"))
    print(f"exceptions escaping dataReceived: {len(fz.escaped)}")
    print(f"log events at error/critical or with a failure: {len(fz.bad_events)}")
    print(f"Deferreds with an unexpected result: {len(fz.unexpected)}")
    reasons = Counter(_bucket(why) for _, why, *_ in fz.stuck)
    print(f"exchanges that never completed: {len(fz.stuck)}" + (
        " (" + "; ".join(f"{why}: {n}" for why, n in reasons.items()) + ")" if fz.stuck else ""))
    for title, items in (("escaped", fz.escaped), ("error log", fz.bad_events),
                         ("unexpected", fz.unexpected), ("stuck", fz.stuck)):
        for item in items[:args.show]:
            print(f"--- {title} at iteration {item[0]}:")
            print("\n".join(str(x) for x in item[1:]))
    failed = fz.escaped or fz.bad_events or fz.unexpected or fz.stuck
    print("check: " + ("FAILED" if failed else "passed"))
    return 1 if (args.check and failed) else 0


if __name__ == "__main__":
    sys.exit(main())
