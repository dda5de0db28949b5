"""
SKSTACK IP line parsing: each line a Wi-SUN module prints becomes one of the
values of L{smartmeter_tx.sk.values}; L{BlockAssembler} joins the lines of an
EPANDESC or EEDSCAN block into one value.

Pure: no Twisted, no I/O.  L{parse_line} never raises anything but
L{SKParseError}; a line it does not recognise becomes L{Unknown}.
"""

from __future__ import annotations

import re
from typing import Optional, Union

from smartmeter_tx.errors import SKParseError
from smartmeter_tx.sk.values import (
    IPV6_RE, MAX_DATALEN, AppVer, Blank, EdScanStart, Echo, Event, Fail, Info, Line, Neighbor,
    Ok, PanDesc, PanDescField, PanDescStart, PortLine, Resynced, RxUdp, RxUdpPartial, SReg,
    TableHeader, Unknown, Ver, Address,
)

__all__ = ["parse_line", "BlockAssembler", "COMMAND_NAMES", "EdScan", "Assembled"]

#: An ED scan's result as L{BlockAssembler} gives it: C{("EEDSCAN", [(channel, lqi), ...])}.
EdScan = tuple[str, list[tuple[int, int]]]
#: What L{BlockAssembler.feed} gives: a line, an assembled L{PanDesc}, or an L{EdScan}.
Assembled = Union[Line, PanDesc, EdScan]

#: Every command name a module may echo back.
COMMAND_NAMES = frozenset(
    """SKVER SKAPPVER SKINFO SKSREG SKSETPWD SKSETRBID SKSCAN SKLL64 SKJOIN SKSENDTO
    SKTERM SKRESET SKTABLE SKADDNBR SKPING SKSTART SKSAVE SKLOAD SKERASE SKSETKEY
    SKRMKEY SKSECENABLE SKSETPSK SKUDPPORT SKDSLEEP SKRFLO ROPT WOPT RUART
    WUART""".split()
)


_HEX_RE = re.compile(rb"^[0-9A-Fa-f]+\Z")




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
    small: list[bytes] = []
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
        return head.with_data(bytes.fromhex(payload.decode("ascii")))
    binary_head = RxUdp(sender, dest, rport, lport, lla, secured == b"1", b"", side, rssi, True)
    if len(payload) == datalen and payload_mode != "hex":
        return binary_head.with_data(payload)
    if len(payload) < datalen and payload_mode != "hex":
        if payload_mode is None and _HEX_RE.match(payload or b"0") and payload:
            # All hex digits and short: a truncated hex line, not a binary payload.
            raise SKParseError("ERXUDP hex payload is shorter than DATALEN")
        # The line reader split at a CR LF inside the payload: it belongs to the data.
        got = payload + b"\r\n"
        if len(got) > datalen:
            raise SKParseError("ERXUDP binary payload is longer than DATALEN")
        return RxUdpPartial(binary_head.with_data(got), datalen - len(got))
    raise SKParseError(f"ERXUDP payload of {len(payload)} bytes does not match DATALEN {datalen}")


def _parse_keyword(line: bytes, payload_mode: Optional[str]) -> Optional[Line]:
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

    def feed(self, value: Line) -> list[Assembled]:
        """
        @return: the values completed by C{value}, in order.
        @raise SKParseError: a PAN descriptor block is malformed; the block is
            dropped and C{value}, if it is not a field line, is still returned
            by the next call's logic (the assembler resets first).
        """
        out: list[Assembled] = []
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

    def flush(self) -> list[Assembled]:
        """
        Complete a block with no PairID line (scan mode 3) when the caller knows
        nothing more is coming.
        """
        if self._fields is None:
            return []
        return [self._finish()]

    def _finish(self) -> Union[PanDesc, Unknown]:
        fields, self._fields = self._fields or {}, None
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
