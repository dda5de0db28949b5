"""
ECHONET Lite frames (format 1): encoding, decoding and request/response matching.

Pure: no Twisted, no I/O.  Garbage raises L{FrameError} and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from smartmeter_tx.errors import ArgumentError, FrameError

EHD = b"\x10\x81"

# EOJs (class group, class, instance) packed in one int.
CONTROLLER = 0x05FF01
METER = 0x028801
NODE_PROFILE = 0x0EF001

# ESV codes.
SETI_SNA = 0x50
SETC_SNA = 0x51
GET_SNA = 0x52
INF_SNA = 0x53
SETGET_SNA = 0x5E
SETI = 0x60
SETC = 0x61
GET = 0x62
INF_REQ = 0x63
SETGET = 0x6E
SET_RES = 0x71
GET_RES = 0x72
INF = 0x73
INFC = 0x74
INFC_RES = 0x7A
SETGET_RES = 0x7E

REQUESTS = frozenset({SETI, SETC, GET, INF_REQ, SETGET})
SNA_CODES = frozenset({SETI_SNA, SETC_SNA, GET_SNA, INF_SNA, SETGET_SNA})

ESV_NAMES = {
    SETI_SNA: "SetI_SNA", SETC_SNA: "SetC_SNA", GET_SNA: "Get_SNA", INF_SNA: "INF_SNA",
    SETGET_SNA: "SetGet_SNA", SETI: "SetI", SETC: "SetC", GET: "Get", INF_REQ: "INF_REQ",
    SETGET: "SetGet", SET_RES: "Set_Res", GET_RES: "Get_Res", INF: "INF", INFC: "INFC",
    INFC_RES: "INFC_Res", SETGET_RES: "SetGet_Res",
}


@dataclass(frozen=True)
class Property:
    """
    One EPC with its data (EDT); an empty C{edt} is a PDC of 0.
    """

    epc: int
    edt: bytes = b""


@dataclass(frozen=True)
class Frame:
    """
    An ECHONET Lite format-1 frame.  SetGet frames (two property lists) are
    not used with smart meters and are rejected by L{decode}.
    """

    tid: int
    seoj: int
    deoj: int
    esv: int
    properties: tuple[Property, ...] = ()

    @property
    def epcs(self) -> tuple[int, ...]:
        return tuple(p.epc for p in self.properties)

    def get(self, epc: int) -> Optional[bytes]:
        """
        @return: the EDT of C{epc}, or C{None} if the frame does not carry it or
            carries it with PDC 0.
        """
        for p in self.properties:
            if p.epc == epc:
                return p.edt or None
        return None

    def encode(self) -> bytes:
        """
        @raise ArgumentError: a field is out of range.
        """
        if not 0 <= self.tid <= 0xFFFF or not 0 <= self.esv <= 0xFF:
            raise ArgumentError("TID or ESV out of range")
        if not 0 <= self.seoj <= 0xFFFFFF or not 0 <= self.deoj <= 0xFFFFFF:
            raise ArgumentError("EOJ out of range")
        if not 1 <= len(self.properties) <= 255:
            raise ArgumentError("a frame carries 1 to 255 properties")
        out = bytearray(EHD)
        out += self.tid.to_bytes(2, "big")
        out += self.seoj.to_bytes(3, "big") + self.deoj.to_bytes(3, "big")
        out += bytes((self.esv, len(self.properties)))
        for p in self.properties:
            if not 0 <= p.epc <= 0xFF or len(p.edt) > 255:
                raise ArgumentError("EPC or EDT out of range")
            out += bytes((p.epc, len(p.edt))) + p.edt
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> "Frame":
        """
        @raise FrameError: not an ECHONET Lite format-1 frame, short, or with
            bytes left over.
        """
        if len(data) < 12:
            raise FrameError(f"frame of {len(data)} bytes is too short")
        if data[:2] != EHD:
            raise FrameError(f"not an ECHONET Lite format-1 frame (EHD {data[:2].hex()})")
        tid = int.from_bytes(data[2:4], "big")
        seoj = int.from_bytes(data[4:7], "big")
        deoj = int.from_bytes(data[7:10], "big")
        esv, opc = data[10], data[11]
        if esv in (SETGET, SETGET_RES, SETGET_SNA):
            raise FrameError("SetGet frames are not supported")
        pos = 12
        props = []
        for _ in range(opc):
            if pos + 2 > len(data):
                raise FrameError("frame ends inside a property header")
            epc, pdc = data[pos], data[pos + 1]
            pos += 2
            if pos + pdc > len(data):
                raise FrameError(f"EPC {epc:02X} says {pdc} bytes but the frame ends first")
            props.append(Property(epc, bytes(data[pos:pos + pdc])))
            pos += pdc
        if pos != len(data):
            raise FrameError(f"{len(data) - pos} bytes after the last property")
        if opc == 0:
            raise FrameError("frame with no properties")
        return cls(tid, seoj, deoj, esv, tuple(props))

    def is_response_to(self, request: "Frame") -> bool:
        """
        The matching rule: same TID, EOJs swapped, ESV the request's +0x10
        (success) or -0x10 (SNA), and the same set of EPCs.
        """
        return (self.tid == request.tid
                and self.seoj == request.deoj and self.deoj == request.seoj
                and self.esv in (request.esv + 0x10, request.esv - 0x10)
                and sorted(self.epcs) == sorted(request.epcs))

    def describe(self) -> str:
        """
        A short human description for logs, e.g. C{Get_Res tid=0001 028801->05FF01 E7=000001F8}.
        """
        name = ESV_NAMES.get(self.esv, "ESV%02X" % self.esv)
        props = " ".join("%02X=%s" % (p.epc, p.edt.hex().upper()) for p in self.properties)
        return f"{name} tid={self.tid:04X} {self.seoj:06X}->{self.deoj:06X} {props}"


def get_request(tid: int, epcs: Iterable[int], deoj: int = METER, seoj: int = CONTROLLER,
                esv: int = GET) -> Frame:
    """
    A Get (or INF_REQ) frame asking for C{epcs} in one frame.
    """
    return Frame(tid, seoj, deoj, esv, tuple(Property(e) for e in epcs))


def infc_response(frame: Frame) -> Frame:
    """
    The INFC_Res answering an INFC: same TID, EOJs swapped, same EPCs with PDC 0.
    """
    return Frame(frame.tid, frame.deoj, frame.seoj, INFC_RES,
                 tuple(Property(p.epc) for p in frame.properties))


def setc_request(tid: int, properties: Iterable[tuple], deoj: int = METER,
                 seoj: int = CONTROLLER) -> Frame:
    """
    A SetC frame (answered with Set_Res, or SetC_SNA when refused) setting
    C{properties}, C{(epc, edt)} pairs, in one frame.
    """
    return Frame(tid, seoj, deoj, SETC, tuple(Property(epc, edt) for epc, edt in properties))
