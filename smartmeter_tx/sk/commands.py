"""
The SK commands the product sends, built and checked before anything is
written, in both dialects; what completes each command, as data
(L{Completion}); and the module side's split of a host's command line.

Pure: no Twisted, no I/O.  A builder raises L{ArgumentError} for an argument
that would make a command the module rejects or misreads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Optional

from smartmeter_tx.errors import ArgumentError, SKParseError
from smartmeter_tx.sk.events import EventNum
from smartmeter_tx.sk.values import IPV6_RE, MAX_DATALEN, Address, Dialect, Echo

__all__ = [
    "Command", "Completion", "ll64", "channel_mask", "scan_seconds", "MAX_SENDTO",
    "sk_ver", "sk_appver", "sk_info", "sk_sreg", "sk_setpwd", "sk_setrbid", "sk_scan",
    "sk_ll64", "sk_join", "sk_sendto", "sk_term", "sk_reset", "sk_table", "sk_addnbr",
    "ropt", "wopt", "parse_command",
]

_MAC_RE = re.compile(r"^[0-9A-Fa-f]{16}\Z")

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


def channel_mask(channels: Iterable[int]) -> int:
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
    args: tuple[str, ...] = ("%d" % mode, "%08X" % mask, "%X" % duration)
    if dialect is Dialect.DSE:
        args += ("%d" % side,)
    channels = bin(mask & 0x0FFFFFFF).count("1") or 28
    end = frozenset({EventNum.ED_SCAN_DONE if mode == 0 else EventNum.SCAN_DONE})
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
                   completion=Completion(success_events=frozenset({EventNum.PANA_OK}),
                                         failure_events=frozenset({EventNum.PANA_FAILED})),
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
    args: tuple[str, ...] = ("%d" % handle, ipaddr.upper(), "%04X" % port, "%d" % sec)
    if dialect is Dialect.DSE:
        args += ("%d" % side,)
    args += ("%04X" % len(payload),)
    return Command("SKSENDTO", args, payload=bytes(payload),
                   completion=Completion(collect_events=frozenset({EventNum.UDP_SENT})),
                   timeout=10.0)


def sk_term() -> Command:
    """
    End the PANA session; completes at EVENT 27 (done) or 28 (timed out).
    """
    return Command("SKTERM", completion=Completion(success_events=frozenset({
                       EventNum.TERMINATED, EventNum.TERMINATE_TIMED_OUT})),
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
