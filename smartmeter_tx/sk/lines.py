"""
SKSTACK IP line codec: every line a Wi-SUN module prints becomes a typed value,
and every command the product sends is built (and validated) here.

Pure: no Twisted, no I/O.  Both editions of the command set are covered:

 - C{Dialect.STANDARD}: B-route-only modules (BP35A1, RL7023 Stick-D/IPS, WSR35A1).
 - C{Dialect.DSE}: "dual stack edition" modules (BP35C0/C2, RS-WSUHA, UDG-1-WSNE),
   which add a SIDE field to EVENT, ERXUDP, SKSCAN and SKSENDTO.

Values are frozen dataclasses.  L{parse_line} never raises anything but
L{SKParseError}; a line it does not recognise becomes L{Unknown}.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Optional, Union

from smartmeter_tx.errors import ArgumentError, SKParseError

__all__ = [
    "Dialect", "Ok", "Fail", "Event", "RxUdp", "RxUdpPartial", "PanDesc", "PanDescStart",
    "PanDescField", "Ver", "AppVer", "Info", "SReg", "TableHeader", "Neighbor", "Address",
    "PortLine", "EdScanStart", "Echo", "Blank", "Unknown", "Resynced", "BlockAssembler",
    "parse_line", "Command", "Completion", "FAIL_MEANINGS", "EVENT_NAMES",
    "COMMAND_NAMES", "IPV6_RE", "ll64", "channel_mask", "lqi_to_dbm",
    "sk_ver", "sk_appver", "sk_info", "sk_sreg", "sk_setpwd", "sk_setrbid", "sk_scan",
    "sk_ll64", "sk_join", "sk_sendto", "sk_term", "sk_reset", "sk_table", "sk_addnbr",
    "ropt", "wopt", "parse_command",
]


class Dialect(enum.Enum):
    """
    The two SKSTACK IP command-set editions.
    """

    STANDARD = "standard"
    DSE = "dse"


#: The meaning of each C{FAIL ERxx} code, as the SKSTACK IP vendor names them.
FAIL_MEANINGS = {
    4: "command not supported",
    5: "wrong number of arguments",
    6: "argument format or range invalid",
    9: "UART input error",
    10: "command accepted but execution failed",
}

#: Human names of the EVENT numbers a B-route client meets.
EVENT_NAMES = {
    0x01: "NS received",
    0x02: "NA received",
    0x05: "echo request received",
    0x1F: "ED scan finished",
    0x20: "beacon received",
    0x21: "UDP send finished",
    0x22: "active scan finished",
    0x24: "PANA authentication failed",
    0x25: "PANA authentication succeeded",
    0x26: "session termination requested by peer",
    0x27: "session termination completed",
    0x28: "session termination timed out",
    0x29: "PANA session lifetime expired",
    0x32: "transmit-time limit engaged",
    0x33: "transmit-time limit released",
    0x45: "DSE key index mismatch",
    0xC0: "woke up",
}

#: Every command name a module may echo back.
COMMAND_NAMES = frozenset(
    """SKVER SKAPPVER SKINFO SKSREG SKSETPWD SKSETRBID SKSCAN SKLL64 SKJOIN SKSENDTO
    SKTERM SKRESET SKTABLE SKADDNBR SKPING SKSTART SKSAVE SKLOAD SKERASE SKSETKEY
    SKRMKEY SKSECENABLE SKSETPSK SKUDPPORT SKDSLEEP SKRFLO ROPT WOPT RUART
    WUART""".split()
)

IPV6_RE = re.compile(rb"^[0-9A-Fa-f]{4}(?::[0-9A-Fa-f]{4}){7}\Z")
_HEX_RE = re.compile(rb"^[0-9A-Fa-f]+\Z")
_MAC_RE = re.compile(r"^[0-9A-Fa-f]{16}\Z")


# ---------------------------------------------------------------------------
# Values


@dataclass(frozen=True)
class Ok:
    """
    C{OK}, or C{OK <param>} as ROPT answers (C{OK 01}).
    """

    param: Optional[str] = None


@dataclass(frozen=True)
class Fail:
    """
    C{FAIL ERxx}.
    """

    code: int

    @property
    def meaning(self) -> str:
        return FAIL_MEANINGS.get(self.code, "reserved error code")

    def __str__(self) -> str:
        return f"FAIL ER{self.code:02d} ({self.meaning})"


@dataclass(frozen=True)
class Event:
    """
    C{EVENT <NUM> <SENDER> [<SIDE>] [<PARAM>]}.

    @ivar side: the DSE SIDE field (0 = B-route), C{None} on a standard module.
    @ivar param: the PARAM field (EVENT 21: 0 sent, 1 failed, 2 neighbour
        solicitation sent instead), or C{None}.
    """

    num: int
    sender: Optional[str]
    side: Optional[int] = None
    param: Optional[int] = None

    @property
    def name(self) -> str:
        return EVENT_NAMES.get(self.num, "unknown event")

    def to_line(self) -> bytes:
        parts = [b"EVENT", b"%02X" % self.num]
        if self.sender is not None:
            parts.append(self.sender.encode("ascii"))
        if self.side is not None:
            parts.append(b"%d" % self.side)
        if self.param is not None:
            parts.append(b"%02X" % self.param)
        return b" ".join(parts)


@dataclass(frozen=True)
class RxUdp:
    """
    A received UDP datagram (C{ERXUDP}), in any of the three layouts.

    @ivar rssi: the raw RSSI field (DSE with register SA2=1), else C{None}.
    @ivar side: the DSE SIDE field, C{None} on a standard module.
    @ivar binary: C{True} when DATA came as raw bytes (WOPT 00), C{False} for hex.
    """

    sender: str
    dest: str
    rport: int
    lport: int
    sender_lla: str
    secured: bool
    data: bytes
    side: Optional[int] = None
    rssi: Optional[int] = None
    binary: bool = False

    def to_line(self) -> bytes:
        """
        Format as the module prints it (without the CRLF).  Binary payloads
        are written raw, exactly as a module in WOPT 00 mode does.
        """
        parts = [
            b"ERXUDP", self.sender.encode(), self.dest.encode(), b"%04X" % self.rport,
            b"%04X" % self.lport, self.sender_lla.encode(),
        ]
        if self.rssi is not None:
            parts.append(b"%02X" % self.rssi)
        parts.append(b"1" if self.secured else b"0")
        if self.side is not None:
            parts.append(b"%d" % self.side)
        parts.append(b"%04X" % len(self.data))
        parts.append(self.data if self.binary else self.data.hex().upper().encode())
        return b" ".join(parts)


@dataclass(frozen=True)
class RxUdpPartial:
    """
    The head of a binary ERXUDP whose payload contained CR LF, so the line was
    cut inside the payload.  The reader must take C{remaining} more raw bytes
    and pass them to L{complete}.
    """

    head: RxUdp
    remaining: int

    def complete(self, rest: bytes) -> RxUdp:
        if len(rest) != self.remaining:
            raise SKParseError(f"binary ERXUDP needs {self.remaining} more bytes, got {len(rest)}")
        return _replace_data(self.head, self.head.data + rest)


def _replace_data(rx: RxUdp, data: bytes) -> RxUdp:
    return RxUdp(rx.sender, rx.dest, rx.rport, rx.lport, rx.sender_lla, rx.secured, data,
                 rx.side, rx.rssi, rx.binary)


@dataclass(frozen=True)
class PanDesc:
    """
    One PAN descriptor: an C{EPANDESC} line and its field lines, assembled by
    L{BlockAssembler}.  C{side} is present on DSE, C{pair_id} with scan mode 2.
    """

    channel: int
    channel_page: int
    pan_id: int
    addr: str
    lqi: int
    side: Optional[int] = None
    pair_id: Optional[str] = None

    @property
    def rssi_dbm(self) -> float:
        return lqi_to_dbm(self.lqi)

    def to_lines(self) -> list[bytes]:
        lines = [
            b"EPANDESC",
            b"  Channel:%02X" % self.channel,
            b"  Channel Page:%02X" % self.channel_page,
            b"  Pan ID:%04X" % self.pan_id,
            b"  Addr:" + self.addr.encode(),
            b"  LQI:%02X" % self.lqi,
        ]
        if self.side is not None:
            lines.append(b"  Side:%d" % self.side)
        if self.pair_id is not None:
            lines.append(b"  PairID:" + self.pair_id.encode())
        return lines


@dataclass(frozen=True)
class PanDescStart:
    """The C{EPANDESC} keyword line that opens a PAN descriptor block."""


@dataclass(frozen=True)
class PanDescField:
    """One indented C{  Key:Value} line of an EPANDESC block."""

    key: str
    value: str


@dataclass(frozen=True)
class Ver:
    """C{EVER <version>} (SKVER)."""

    version: str


@dataclass(frozen=True)
class AppVer:
    """C{EAPPVER <text>} (SKAPPVER)."""

    text: str


@dataclass(frozen=True)
class Info:
    """
    C{EINFO <IPADDR> <ADDR64> <CHANNEL> <PANID> <ADDR16|SIDE>} (SKINFO).
    """

    ipaddr: str
    addr64: str
    channel: int
    pan_id: int
    fifth: str

    @property
    def dialect_hint(self) -> Optional[Dialect]:
        """
        Standard modules print ADDR16 (normally C{FFFE}) last; DSE modules print a
        one-digit SIDE there.
        """
        if len(self.fifth) == 4:
            return Dialect.STANDARD
        if self.fifth in ("0", "1"):
            return Dialect.DSE
        return None


@dataclass(frozen=True)
class SReg:
    """C{ESREG <value>} (SKSREG read)."""

    value: str


@dataclass(frozen=True)
class TableHeader:
    """C{EADDR}, C{ENEIGHBOR} or C{EPORT}: the first line of an SKTABLE answer."""

    kind: str


@dataclass(frozen=True)
class Neighbor:
    """A neighbour-cache row: C{<IPADDR> <ADDR64> <ADDR16>}."""

    ipaddr: str
    addr64: str
    addr16: str


@dataclass(frozen=True)
class Address:
    """
    A bare IPv6 address line: SKLL64's whole answer, or an EADDR table row.
    """

    ipaddr: str


@dataclass(frozen=True)
class PortLine:
    """A decimal port number line of an EPORT table."""

    port: int


@dataclass(frozen=True)
class EdScanStart:
    """C{EEDSCAN}: an ED scan result line follows."""


@dataclass(frozen=True)
class Echo:
    """
    A command echoed back by the module (register SFE=1).  For SKSENDTO the
    echo stops after the length field.
    """

    text: str

    @property
    def name(self) -> str:
        return self.text.split(" ", 1)[0]


@dataclass(frozen=True)
class Blank:
    """An empty line (SKSENDTO's answer when echo is off, or a stray CRLF)."""


@dataclass(frozen=True)
class Unknown:
    """A line that matches no known shape.  Log it and carry on."""

    raw: bytes


@dataclass(frozen=True)
class Resynced:
    """
    A known line that began after junk on the same line, e.g. a partial echo
    glued to an asynchronous ERXUDP (C{SKSENDTOERXUDP ...}, seen on RS-WSUHA).
    """

    junk: bytes
    value: object


Line = Union[Ok, Fail, Event, RxUdp, RxUdpPartial, PanDescStart, PanDescField, Ver, AppVer,
             Info, SReg, TableHeader, Neighbor, Address, PortLine, EdScanStart, Echo, Blank,
             Unknown, Resynced]


def lqi_to_dbm(lqi: int) -> float:
    """
    Convert a module's LQI byte to received power in dBm (BP35A1 manual formula).
    """
    return round(0.275 * lqi - 104.27, 2)


def ll64(mac: str) -> str:
    """
    The link-local IPv6 address of a 64-bit MAC, as SKLL64 computes it: the
    universal/local bit is flipped.

    @raise ArgumentError: if C{mac} is not 16 hex digits.
    """
    _check_mac(mac)
    value = int(mac, 16) ^ (1 << 57)
    h = "%016X" % value
    return "FE80:0000:0000:0000:" + ":".join(h[i:i + 4] for i in range(0, 16, 4))


# ---------------------------------------------------------------------------
# Parsing


def _hexint(token: bytes, width: Optional[int] = None) -> int:
    if not _HEX_RE.match(token) or (width is not None and len(token) != width):
        raise SKParseError(f"expected {width or ''} hex digits, got {token[:20]!r}")
    return int(token, 16)


def _ipv6(token: bytes) -> str:
    if not IPV6_RE.match(token):
        raise SKParseError(f"expected a full IPv6 address, got {token[:48]!r}")
    return token.decode("ascii").upper()


def _mac(token: bytes) -> str:
    if len(token) != 16 or not _HEX_RE.match(token):
        raise SKParseError(f"expected a 16-digit MAC address, got {token[:20]!r}")
    return token.decode("ascii").upper()


def _parse_event(tokens: list[bytes]) -> Event:
    # EVENT NUM [SENDER] [SIDE] [PARAM]; parse by width, not position: SIDE is one
    # digit, PARAM two hex digits (go-smartmeter's fixed offsets miss DSE).
    if len(tokens) < 2 or len(tokens) > 5:
        raise SKParseError(f"EVENT with {len(tokens)} fields")
    num = _hexint(tokens[1], 2)
    rest = tokens[2:]
    sender = None
    if rest and IPV6_RE.match(rest[0]):
        sender = _ipv6(rest.pop(0))
    side = param = None
    if rest and len(rest[0]) == 1:
        side = _hexint(rest.pop(0), 1)
    if rest:
        param = _hexint(rest.pop(0), 2)
    if rest:
        raise SKParseError(f"EVENT {num:02X} has trailing fields")
    return Event(num, sender, side, param)


def _parse_rxudp(line: bytes, payload_mode: Optional[str]) -> Union[RxUdp, RxUdpPartial]:
    # The payload may be raw bytes containing spaces, so walk the header field by
    # field and keep everything after DATALEN as the payload.
    pos = 7  # after "ERXUDP "
    fields = []
    for _ in range(5):
        end = line.find(b" ", pos)
        if end < 0:
            raise SKParseError("ERXUDP header is too short")
        fields.append(line[pos:end])
        pos = end + 1
    sender, dest = _ipv6(fields[0]), _ipv6(fields[1])
    rport, lport = _hexint(fields[2], 4), _hexint(fields[3], 4)
    lla = _mac(fields[4])
    small = []
    while True:
        end = line.find(b" ", pos)
        if end < 0:
            if len(small) >= 2 and len(line) - pos == 4 and _HEX_RE.match(line[pos:]):
                # DATALEN with nothing after it: the payload began with CR LF.
                small.append(line[pos:])
                pos = len(line) + 1
                break
            raise SKParseError("ERXUDP header is too short")
        token = line[pos:end]
        pos = end + 1
        if len(token) == 4:
            small.append(token)
            break
        if len(token) > 2 or len(small) >= 3:
            raise SKParseError(f"unexpected ERXUDP field {token[:8]!r}")
        small.append(token)
    datalen = _hexint(small.pop(), 4)
    if datalen > MAX_DATALEN:
        # No datagram this long fits a 6LoWPAN frame; a corrupted length must
        # not make a reader wait for 64 KiB.
        raise SKParseError(f"ERXUDP DATALEN {datalen:#x} is larger than any datagram")
    rssi = side = None
    if len(small) == 1:  # standard: SECURED
        secured = small[0]
    elif len(small) == 2 and len(small[0]) == 1:  # DSE: SECURED SIDE
        secured, side = small[0], _hexint(small[1], 1)
    elif len(small) == 3 and len(small[0]) == 2:  # DSE, SA2=1: RSSI SECURED SIDE
        rssi, secured, side = _hexint(small[0], 2), small[1], _hexint(small[2], 1)
    else:
        raise SKParseError("unrecognised ERXUDP layout")
    if secured not in (b"0", b"1"):
        raise SKParseError(f"ERXUDP SECURED field is {secured!r}")
    payload = line[pos:]
    head = RxUdp(sender, dest, rport, lport, lla, secured == b"1", b"", side, rssi)
    if payload_mode != "binary" and len(payload) == 2 * datalen and _HEX_RE.match(payload or b"0"):
        return _replace_data(head, bytes.fromhex(payload.decode("ascii")))
    binary_head = RxUdp(sender, dest, rport, lport, lla, secured == b"1", b"", side, rssi, True)
    if len(payload) == datalen and payload_mode != "hex":
        return _replace_data(binary_head, payload)
    if len(payload) < datalen and payload_mode != "hex":
        if payload_mode is None and _HEX_RE.match(payload or b"0") and payload:
            # All hex digits and short: a truncated hex line, not a binary payload.
            raise SKParseError("ERXUDP hex payload is shorter than DATALEN")
        # The line reader split at a CR LF inside the payload: it belongs to the data.
        got = payload + b"\r\n"
        if len(got) > datalen:
            raise SKParseError("ERXUDP binary payload is longer than DATALEN")
        return RxUdpPartial(_replace_data(binary_head, got), datalen - len(got))
    raise SKParseError(f"ERXUDP payload of {len(payload)} bytes does not match DATALEN {datalen}")


def _parse_keyword(line: bytes, payload_mode: Optional[str]):
    if line.startswith(b"ERXUDP "):
        return _parse_rxudp(line, payload_mode)
    text = line.decode("ascii")
    tokens = text.split()
    if not tokens:
        return Blank()
    word = tokens[0]
    btokens = [t.encode() for t in tokens]
    if word == "OK":
        if len(tokens) > 2:
            raise SKParseError("OK with extra fields")
        return Ok(tokens[1] if len(tokens) == 2 else None)
    if word == "FAIL":
        if len(tokens) != 2 or not re.match(r"^ER\d\d$", tokens[1]):
            raise SKParseError(f"malformed FAIL line {text[:30]!r}")
        return Fail(int(tokens[1][2:]))
    if word == "EVENT":
        return _parse_event(btokens)
    if word == "EPANDESC" and len(tokens) == 1:
        return PanDescStart()
    if line.startswith(b"  ") and b":" in line:
        key, _, value = text.strip().partition(":")
        return PanDescField(key, value.strip())
    if word == "EVER" and len(tokens) == 2:
        return Ver(tokens[1])
    if word == "EAPPVER":
        return AppVer(text[len("EAPPVER"):].strip())
    if word == "EINFO":
        if len(tokens) != 6:
            raise SKParseError(f"EINFO with {len(tokens) - 1} fields")
        return Info(_ipv6(btokens[1]), _mac(btokens[2]), _hexint(btokens[3], 2),
                    _hexint(btokens[4], 4), tokens[5].upper())
    if word == "ESREG" and len(tokens) == 2:
        return SReg(tokens[1])
    if word in ("EADDR", "ENEIGHBOR", "EPORT") and len(tokens) == 1:
        return TableHeader(word)
    if word == "EEDSCAN" and len(tokens) == 1:
        return EdScanStart()
    if word in COMMAND_NAMES:
        return Echo(text.strip())
    if IPV6_RE.match(btokens[0]):
        if len(tokens) == 1:
            return Address(_ipv6(btokens[0]))
        if len(tokens) == 3:
            return Neighbor(_ipv6(btokens[0]), _mac(btokens[1]), tokens[2].upper())
    if len(tokens) == 1 and word.isdigit() and len(word) <= 5:
        return PortLine(int(word))
    return None


_RESYNC_WORDS = (b"ERXUDP ", b"EVENT ", b"EPANDESC")
#: The largest UDP payload a module carries (1280-byte IPv6 MTU less headers).
MAX_DATALEN = 0x04D0


def parse_line(line: bytes, payload_mode: Optional[str] = None) -> Line:
    """
    Parse one line from the module, without its line terminator.

    @param payload_mode: C{"hex"} or C{"binary"} when the module's ERXUDP output
        mode is known (ROPT), C{None} to decide from DATALEN.
    @return: one of the value types of this module; L{Unknown} for a line of no
        known shape; L{RxUdpPartial} for a binary ERXUDP cut short by a CR LF in
        its payload.
    @raise SKParseError: the line starts with a known keyword but is malformed.
    """
    raw = line
    if not line.startswith(b"ERXUDP ") and b"\r" in line:
        line = line.replace(b"\r", b"")
    try:
        value = _parse_keyword(line, payload_mode)
    except UnicodeDecodeError:
        value = None
    except SKParseError:
        raise
    except (ValueError, IndexError) as e:  # defensive: report as our own error
        raise SKParseError(str(e)) from None
    if value is not None:
        return value
    for word in _RESYNC_WORDS:
        # Search the unstripped line: a glued binary ERXUDP keeps its CR bytes.
        at = raw.find(word, 1)
        if at > 0:
            return Resynced(raw[:at], parse_line(raw[at:], payload_mode))
    return Unknown(line)


class BlockAssembler:
    """
    Turns the line values of L{parse_line} into whole messages: an EPANDESC
    line plus its field lines become one L{PanDesc}; an EEDSCAN line plus its
    result line become an C{("EEDSCAN", [(channel, lqi), ...])} tuple.

    Pure and incremental: L{feed} returns the values that are complete.
    """

    _FIELDS = {"Channel", "Channel Page", "Pan ID", "Addr", "LQI", "Side", "PairID"}

    def __init__(self) -> None:
        self._fields: Optional[dict[str, str]] = None
        self._edscan = False

    def feed(self, value) -> list:
        """
        @return: the values completed by C{value}, in order.
        @raise SKParseError: a PAN descriptor block is malformed; the block is
            dropped and C{value}, if it is not a field line, is still returned
            by the next call's logic (the assembler resets first).
        """
        out: list = []
        if self._edscan:
            self._edscan = False
            if isinstance(value, Unknown):
                out.append(("EEDSCAN", _edscan_pairs(value.raw)))
                return out
        if self._fields is not None:
            if isinstance(value, PanDescField) and value.key in self._FIELDS:
                self._fields[value.key] = value.value
                if value.key == "PairID":
                    out.append(self._finish())
                return out
            out.append(self._finish())
        if isinstance(value, PanDescStart):
            self._fields = {}
        elif isinstance(value, EdScanStart):
            self._edscan = True
        else:
            out.append(value)
        return out

    def flush(self) -> list:
        """
        Complete a block with no PairID line (scan mode 3) when the caller knows
        nothing more is coming.
        """
        if self._fields is None:
            return []
        return [self._finish()]

    def _finish(self):
        fields, self._fields = self._fields, None
        try:
            return PanDesc(
                channel=_hexint(fields["Channel"].encode(), 2),
                channel_page=_hexint(fields["Channel Page"].encode(), 2),
                pan_id=_hexint(fields["Pan ID"].encode(), 4),
                addr=_mac(fields["Addr"].encode()),
                lqi=_hexint(fields["LQI"].encode(), 2),
                side=_hexint(fields["Side"].encode(), 1) if "Side" in fields else None,
                pair_id=fields.get("PairID"),
            )
        except KeyError as e:
            return Unknown(b"EPANDESC block without " + str(e).encode())
        except SKParseError as e:
            return Unknown(b"malformed EPANDESC block: " + str(e).encode())


def _edscan_pairs(raw: bytes) -> list[tuple[int, int]]:
    tokens = raw.split()
    try:
        values = [int(t, 16) for t in tokens]
    except ValueError:
        return []
    return list(zip(values[0::2], values[1::2]))


# ---------------------------------------------------------------------------
# Commands


@dataclass(frozen=True)
class Completion:
    """
    What ends a command, as data, so the protocol needs no per-command code.

    @ivar ok: the command ends with C{OK} / C{FAIL} (false for SKLL64).
    @ivar result: a line type whose arrival completes the command (SKLL64's
        bare L{Address}).
    @ivar success_events: after C{OK}, wait for one of these EVENT numbers.
    @ivar failure_events: after C{OK}, these EVENT numbers fail the command.
    @ivar collect_events: EVENT numbers recorded in the reply (they still reach
        listeners), e.g. EVENT 21 for SKSENDTO.
    @ivar collect_pandesc: record EPANDESC blocks in the reply (SKSCAN).
    """

    ok: bool = True
    result: Optional[type] = None
    success_events: frozenset = frozenset()
    failure_events: frozenset = frozenset()
    collect_events: frozenset = frozenset()
    collect_pandesc: bool = False


_PLAIN = Completion()


@dataclass(frozen=True)
class Command:
    """
    One SK command, ready to write.

    @ivar payload: raw bytes written after the arguments (SKSENDTO), with no
        line terminator after them.
    @ivar secret: indexes of C{args} that must never be logged.
    @ivar timeout: seconds to wait for completion.
    """

    name: str
    args: tuple = ()
    payload: bytes = b""
    terminator: bytes = b"\r\n"
    secret: frozenset = frozenset()
    completion: Completion = _PLAIN
    timeout: float = 5.0

    @property
    def text(self) -> str:
        return " ".join((self.name,) + tuple(self.args))

    def to_bytes(self) -> bytes:
        """
        The exact bytes to write to the module.
        """
        if self.payload:
            # The module reads LEN bytes after "<LEN> " and expects no CRLF.
            return self.text.encode("ascii") + b" " + self.payload
        return self.text.encode("ascii") + self.terminator

    def redacted(self) -> str:
        """
        The command as it may appear in logs and transcripts.
        """
        args = ["<redacted>" if i in self.secret else a for i, a in enumerate(self.args)]
        text = " ".join([self.name] + args)
        if self.payload:
            text += " <%d bytes: %s>" % (len(self.payload), self.payload.hex().upper())
        return text

    def is_echo(self, echo: Echo) -> bool:
        """
        Whether C{echo} is this command echoed back (SKSENDTO's echo stops after
        the length field, with a trailing space we strip).
        """
        return echo.text.split() == self.text.split()


def _check_ipv6(ipaddr: str) -> str:
    if not isinstance(ipaddr, str) or not IPV6_RE.match(ipaddr.encode("ascii", "replace")):
        raise ArgumentError("IPv6 address must be in the full 39-character form, "
                            "e.g. FE80:0000:0000:0000:021D:1290:1234:5678")
    return ipaddr.upper()


def _check_mac(mac: str) -> str:
    if not isinstance(mac, str) or not _MAC_RE.match(mac):
        raise ArgumentError("MAC address must be 16 hex digits")
    return mac.upper()


def _check_channel(channel: int) -> int:
    if not isinstance(channel, int) or not 0x21 <= channel <= 0x3C:
        raise ArgumentError("channel must be between 0x21 (33) and 0x3C (60)")
    return channel


def channel_mask(channels) -> int:
    """
    The SKSCAN channel mask for an iterable of channels (bit n = channel 0x21+n).
    """
    mask = 0
    for ch in channels:
        mask |= 1 << (_check_channel(ch) - 0x21)
    return mask


def sk_ver() -> Command:
    return Command("SKVER")


def sk_appver() -> Command:
    return Command("SKAPPVER")


def sk_info() -> Command:
    return Command("SKINFO")


_REG_RE = re.compile(r"^S[0-9A-F]{1,2}\Z")


def sk_sreg(register: str, value: Optional[str] = None) -> Command:
    """
    Read (no C{value}) or write an S register, e.g. C{sk_sreg("SFE", "0")}.
    """
    register = register.upper()
    if not _REG_RE.match(register):
        raise ArgumentError(f"invalid register name {register!r}")
    if value is None:
        return Command("SKSREG", (register,))
    if not isinstance(value, str) or not re.match(r"^[0-9A-Fa-f]{1,16}\Z", value):
        raise ArgumentError("register value must be 1-16 hex digits")
    return Command("SKSREG", (register, value.upper()))


def sk_setpwd(password: str) -> Command:
    """
    Set the B-route password (1-32 printable ASCII characters).
    """
    if (not isinstance(password, str) or not 1 <= len(password) <= 32
            or not all(0x21 <= ord(c) <= 0x7E for c in password)):
        raise ArgumentError("B-route password must be 1 to 32 printable ASCII characters "
                            "without spaces")
    return Command("SKSETPWD", ("%X" % len(password), password), secret=frozenset({1}))


def sk_setrbid(rbid: str) -> Command:
    """
    Set the B-route ID (32 ASCII characters, as printed on the power company's letter).
    """
    if (not isinstance(rbid, str) or len(rbid) != 32
            or not all(0x21 <= ord(c) <= 0x7E for c in rbid)):
        raise ArgumentError("B-route ID must be exactly 32 ASCII characters without spaces")
    return Command("SKSETRBID", (rbid,), secret=frozenset({0}))


def scan_seconds(duration: int, channels: int) -> float:
    """
    How long an active scan takes: 9.6 ms x (2^duration + 1) per channel.
    """
    return 0.0096 * (2 ** duration + 1) * channels


def sk_scan(dialect: Dialect, mask: int = 0xFFFFFFFF, duration: int = 6, mode: int = 2,
            side: int = 0) -> Command:
    """
    An active scan; completes at EVENT 22, with the PAN descriptors found.
    """
    if mode not in (0, 2, 3):
        raise ArgumentError("scan mode must be 0, 2 or 3")
    if not isinstance(mask, int) or not 0 < mask <= 0xFFFFFFFF:
        raise ArgumentError("channel mask must be a non-zero 32-bit value")
    if not isinstance(duration, int) or not 0 <= duration <= 14:
        raise ArgumentError("scan duration must be 0 to 14")
    if side not in (0, 1):
        raise ArgumentError("SIDE must be 0 (B-route) or 1 (HAN)")
    args = ("%d" % mode, "%08X" % mask, "%X" % duration)
    if dialect is Dialect.DSE:
        args += ("%d" % side,)
    channels = bin(mask & 0x0FFFFFFF).count("1") or 28
    end = frozenset({0x1F}) if mode == 0 else frozenset({0x22})
    return Command("SKSCAN", args,
                   completion=Completion(success_events=end, collect_pandesc=True),
                   timeout=scan_seconds(duration, channels) * 1.2 + 5.0)


def sk_ll64(mac: str) -> Command:
    """
    Link-local address of a MAC; the module answers with a bare address line and
    no OK, which completes the command.
    """
    return Command("SKLL64", (_check_mac(mac),), completion=Completion(ok=False, result=Address))


def sk_join(ipaddr: str) -> Command:
    """
    PANA authentication; completes at EVENT 25, fails at EVENT 24.  A failing
    PANA exchange retransmits for about 40 s before EVENT 24.
    """
    return Command("SKJOIN", (_check_ipv6(ipaddr),),
                   completion=Completion(success_events=frozenset({0x25}),
                                         failure_events=frozenset({0x24})),
                   timeout=50.0)


MAX_SENDTO = MAX_DATALEN


def sk_sendto(dialect: Dialect, ipaddr: str, payload: bytes, port: int = 0x0E1A,
              sec: int = 1, handle: int = 1, side: int = 0) -> Command:
    """
    Send a UDP datagram; completes at OK with the EVENT 21 that came before it.
    """
    _check_ipv6(ipaddr)
    if not isinstance(payload, (bytes, bytearray)) or not 1 <= len(payload) <= MAX_SENDTO:
        raise ArgumentError(f"payload must be 1 to {MAX_SENDTO} bytes")
    if not 1 <= handle <= 6 or sec not in (0, 1, 2) or not 0 <= port <= 0xFFFF:
        raise ArgumentError("invalid SKSENDTO handle, security flag or port")
    if side not in (0, 1):
        raise ArgumentError("SIDE must be 0 (B-route) or 1 (HAN)")
    args = ("%d" % handle, ipaddr.upper(), "%04X" % port, "%d" % sec)
    if dialect is Dialect.DSE:
        args += ("%d" % side,)
    args += ("%04X" % len(payload),)
    return Command("SKSENDTO", args, payload=bytes(payload),
                   completion=Completion(collect_events=frozenset({0x21})), timeout=10.0)


def sk_term() -> Command:
    """
    End the PANA session; completes at EVENT 27 (done) or 28 (timed out).
    """
    return Command("SKTERM", completion=Completion(success_events=frozenset({0x27, 0x28})),
                   timeout=30.0)


def sk_reset() -> Command:
    return Command("SKRESET")


def sk_table(kind: str) -> Command:
    """
    SKTABLE 1 (addresses), 2 (neighbour cache) or E (ports).
    """
    if kind not in ("1", "2", "E"):
        raise ArgumentError("SKTABLE takes 1, 2 or E")
    return Command("SKTABLE", (kind,))


def sk_addnbr(ipaddr: str, mac: str) -> Command:
    return Command("SKADDNBR", (_check_ipv6(ipaddr), _check_mac(mac)))


def ropt() -> Command:
    """
    Read the ERXUDP output mode; the answer C{OK 00|01} ends with CR only.
    """
    return Command("ROPT", terminator=b"\r")


def wopt(mode: int) -> Command:
    """
    Write the ERXUDP output mode (0 binary, 1 hex) to flash.  Flash has a limited
    write count: only send this when ROPT shows a different mode.
    """
    if mode not in (0, 1):
        raise ArgumentError("WOPT mode must be 0 (binary) or 1 (hex)")
    return Command("WOPT", ("%02X" % mode,), terminator=b"\r")


def parse_command(line: bytes) -> tuple[str, list[str]]:
    """
    Split a command line written by a host into its name and arguments (module
    side, used by the emulator).

    @raise SKParseError: the line is empty or not ASCII.
    """
    try:
        tokens = line.decode("ascii").split()
    except UnicodeDecodeError:
        raise SKParseError("command line is not ASCII") from None
    if not tokens:
        raise SKParseError("empty command line")
    return tokens[0].upper(), tokens[1:]
