"""
SKSTACK IP values: the dialects, and every kind of line a Wi-SUN module
prints, as frozen dataclasses (L{smartmeter_tx.sk.parse} makes them from
bytes; the emulator and tests turn some back into lines).

Pure: no Twisted, no I/O.  Both editions of the command set are covered:

 - C{Dialect.STANDARD}: B-route-only modules (BP35A1, RL7023 Stick-D/IPS, WSR35A1).
 - C{Dialect.DSE}: "dual stack edition" modules (BP35C0/C2, RS-WSUHA, UDG-1-WSNE),
   which add a SIDE field to EVENT, ERXUDP, SKSCAN and SKSENDTO.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Optional, Union

from smartmeter_tx.errors import SKParseError
from smartmeter_tx.sk.events import event_name

__all__ = [
    "Dialect", "Ok", "Fail", "Event", "RxUdp", "RxUdpPartial", "PanDesc", "PanDescStart",
    "PanDescField", "Ver", "AppVer", "Info", "SReg", "TableHeader", "Neighbor", "Address",
    "PortLine", "EdScanStart", "Echo", "Blank", "Unknown", "Resynced", "Line",
    "FAIL_MEANINGS", "IPV6_RE", "MAX_DATALEN", "lqi_to_dbm",
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

#: An IPv6 address in the full form modules print (8 groups of 4 hex digits).
IPV6_RE = re.compile(rb"^[0-9A-Fa-f]{4}(?::[0-9A-Fa-f]{4}){7}\Z")


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
        return event_name(self.num)

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

    def with_data(self, data: bytes) -> "RxUdp":
        """This datagram with C{data} as its payload."""
        # Spelled out: dataclasses.replace costs a tenth of a reading's parse.
        return RxUdp(self.sender, self.dest, self.rport, self.lport, self.sender_lla, self.secured,
                     data, self.side, self.rssi, self.binary)

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
        return self.head.with_data(self.head.data + rest)


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
    value: "Line"


Line = Union[Ok, Fail, Event, RxUdp, RxUdpPartial, PanDescStart, PanDescField, Ver, AppVer,
             Info, SReg, TableHeader, Neighbor, Address, PortLine, EdScanStart, Echo, Blank,
             Unknown, Resynced]


def lqi_to_dbm(lqi: int) -> float:
    """
    Convert a module's LQI byte to received power in dBm (BP35A1 manual formula).
    """
    return round(0.275 * lqi - 104.27, 2)


#: The largest UDP payload a module carries (1280-byte IPv6 MTU less headers).
MAX_DATALEN = 0x04D0
