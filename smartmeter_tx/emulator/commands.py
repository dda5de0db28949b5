"""
The emulated module's own commands (all but SKJOIN and SKSENDTO): versions,
SKINFO, registers, credentials, the active scan, SKLL64, the tables, ROPT/WOPT,
SKRESET and SKTERM, each answered as the captures show real modules do.

A mixin of L{smartmeter_tx.emulator.module.Emulator}, which holds the state
and the output helpers these handlers use.  Commands answer at once; real
modules take 3-12 ms (docs/PROTOCOL.md, "Timing").
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional, Union

from smartmeter_tx.errors import ArgumentError
from smartmeter_tx.emulator.wire import CRLF, HEX
from smartmeter_tx.sk.commands import ll64
from smartmeter_tx.sk.events import EventNum
from smartmeter_tx.sk.values import IPV6_RE, Dialect, PanDesc

if TYPE_CHECKING:
    import random

    from twisted.internet.interfaces import IDelayedCall

    from smartmeter_tx.emulator.module import EmulatorConfig
    from smartmeter_tx.emulator.pana import Session
    from smartmeter_tx.emulator.radio import Radio

__all__ = ["ModuleCommands", "REGISTERS", "VERSIONS"]

#: One register: its power-on value, the digits ESREG prints, what may be written
#: (a range, C{"pair"} for the 8-character pairing ID, or C{None}: read-only).
_Register = tuple[Union[int, str], int, Union[tuple[int, int], Literal["pair"], None]]

# Register number -> (power-on value, digits printed by ESREG, writable range or None).
REGISTERS: dict[int, _Register] = {
    0x02: (0x21, 2, (0x21, 0x3C)),
    0x03: (0xFFFF, 4, (0, 0xFFFF)),
    0x07: (0, 8, None),
    0x0A: ("00000000", 8, "pair"),
    0x15: (1, 1, (0, 1)),
    0x16: (0x384, 8, (0x3C, 0xFFFFFFFF)),
    0x17: (1, 1, (0, 1)),
    0xA0: (1, 1, (0, 1)),
    0xA1: (1, 1, (0, 1)),
    0xA2: (0, 1, (0, 1)),  # DSE only: RSSI in ERXUDP
    0xFB: (0, 1, None),
    0xFD: (0, 8, None),
    0xFE: (1, 1, (0, 1)),
    0xFF: (0, 1, (0, 1)),
}


VERSIONS = {Dialect.STANDARD: "1.2.10", Dialect.DSE: "1.5.2"}  # as real modules print them



class ModuleCommands:
    """The C{_cmd_<NAME>} handlers of the module's own commands."""

    if TYPE_CHECKING:  # the Emulator's, which this part of it uses
        config: EmulatorConfig
        rng: random.Random
        dialect: Dialect
        radio: Radio
        #: ints, but for the pairing ID (S0A), which is text
        registers: dict[int, Any]
        module_ip: str
        module_mac: str
        meter_mac: str
        neighbours: dict[str, str]
        rbid: Optional[str]
        password: Optional[str]
        channel: int
        pan_id: int
        lqi: int
        binary: bool
        wopt_writes: int
        session: Optional[Session]
        _joining: bool

        def _later(self, delay: float, f: Callable[..., object], *args: object,
                   group: str = ..., long: bool = ...) -> Optional[IDelayedCall]: ...
        def _cancel(self, *groups: str) -> None: ...
        def _write(self, data: bytes) -> None: ...
        def _side(self) -> Optional[int]: ...
        def _event(self, num: int, sender: str, param: Optional[int] = None) -> None: ...
        def _fail(self, code: int) -> None: ...
        def _ok(self) -> None: ...
        def _drop_session(self) -> None: ...
        def _transmit(self, payload_len: int) -> None: ...
        def reset(self) -> None: ...

    def _cmd_SKVER(self, args):
        if args:
            return self._fail(5)
        self._write(b"EVER %s\r\n" % VERSIONS[self.dialect].encode())
        self._ok()

    def _cmd_SKAPPVER(self, args):
        if not self.config.ropt:  # RL7023 Stick-D/DSS (captures.py §17)
            return self._fail(4)
        if args:
            return self._fail(5)
        self._write(b"EAPPVER rev26e\r\n")
        self._ok()

    def _cmd_SKINFO(self, args):
        if args:
            return self._fail(5)
        fifth = b"0" if self.dialect is Dialect.DSE else b"FFFE"  # docs/PROTOCOL.md, "Dialects"
        self._write(b"EINFO %s %s %02X %04X %s\r\n" % (
            self.module_ip.encode(), self.module_mac.encode(), self.registers[0x02],
            self.registers[0x03], fifth))
        self._ok()

    def _cmd_SKSREG(self, args):
        if len(args) not in (1, 2):
            return self._fail(5)
        name = args[0].upper()
        if not re.match(r"^S[0-9A-F]{1,2}$", name):
            return self._fail(6)
        reg = int(name[1:], 16)  # "S2" and "S02" are the same register
        spec = REGISTERS.get(reg)
        if spec is None or (reg == 0xA2 and self.dialect is not Dialect.DSE):
            return self._fail(6)
        if len(args) == 1:
            value = self.registers[reg]
            text = value if isinstance(value, str) else "%0*X" % (spec[1], value)
            self._write(b"ESREG %s\r\n" % text.encode())
            return self._ok()
        value, allowed = args[1], spec[2]
        if allowed is None:
            return self._fail(6)
        if allowed == "pair":
            if len(value) != 8:
                return self._fail(6)
            self.registers[reg] = value
            return self._ok()
        if not HEX.match(value) or len(value) > 8 or not allowed[0] <= int(value, 16) <= allowed[1]:
            return self._fail(6)
        self.registers[reg] = int(value, 16)
        self._ok()

    def _cmd_SKSETPWD(self, args):
        if len(args) != 2:
            return self._fail(5)
        length, password = args
        if not HEX.match(length) or int(length, 16) != len(password) or not 1 <= len(password) <= 32:
            return self._fail(6)
        self.password = password
        self._ok()

    def _cmd_SKSETRBID(self, args):
        if len(args) != 1:
            return self._fail(5)
        if len(args[0]) != 32:
            return self._fail(6)
        self.rbid = args[0]
        self.registers[0x0A] = args[0][-8:]  # the pairing ID (S0A) follows the ID
        self._ok()

    def _cmd_SKSCAN(self, args):
        dse = self.dialect is Dialect.DSE
        if len(args) != (4 if dse else 3):  # the other dialect's form: ER05 (captures.py §17)
            return self._fail(5)
        mode, mask, duration = args[:3]
        side = args[3] if dse else "0"
        if (mode not in ("0", "2", "3") or not HEX.match(mask) or len(mask) > 8
                or not HEX.match(duration) or len(duration) > 2 or int(duration, 16) > 14
                or side not in ("0", "1")):
            return self._fail(6)
        if self._joining:
            # Still busy with a join (perhaps one the host gave up on): the
            # scan is refused, as real modules were seen to do.
            return self._fail(10)
        mode, mask, duration = int(mode), int(mask, 16), int(duration, 16)
        self._ok()
        self._cancel("scan")
        dwell = 0.0096 * (2 ** duration + 1)
        channels = [0x21 + i for i in range(28) if mask >> i & 1]
        found = (mode in (2, 3) and side == "0" and self.channel in channels
                 and duration >= self.config.scan_min_duration
                 # mode 2 matches the pairing ID: the last 8 characters of the ID
                 and (mode == 3 or (self.rbid is not None
                                    and self.registers[0x0A] == self.config.rbid[-8:])))
        t = 0.0
        for ch in channels:
            t += dwell
            if found and ch == self.channel:
                # captures.py §1: EVENT 20 as the channel's dwell starts, the
                # EPANDESC block one dwell later.  On the last channel that is
                # when EVENT 22 comes too, and some modules print the block
                # after it (captures.py §13): the late-pandesc knob.
                late = ch == channels[-1] and self.rng.random() < self.config.late_pandesc
                self._later(t - dwell, self._event, EventNum.BEACON, self.module_ip, group="scan")
                self._later(t + (0.001 if late else 0.0), self._pandesc, mode, group="scan")
        self._later(t, self._scan_done, mode, channels, group="scan")

    def _pandesc(self, mode: int) -> None:
        # EVENT 20's sender is the module's own address (captures.py §4).
        desc = PanDesc(self.channel, 0x09, self.pan_id, self.meter_mac, self.radio.lqi(self.lqi),
                       self._side(), self.registers[0x0A] if mode == 2 else None)
        self._write(b"".join(line + CRLF for line in desc.to_lines()))

    def _scan_done(self, mode: int, channels: list) -> None:
        if mode == 0:
            self._event(EventNum.ED_SCAN_DONE, self.module_ip)
            pairs = []
            for ch in channels:
                lqi = self.radio.lqi(self.lqi) if ch == self.channel else self.rng.randint(0x10, 0x30)
                pairs.append(b"%02X %02X" % (ch, lqi))
            self._write(b"EEDSCAN\r\n" + b" ".join(pairs) + CRLF)
        else:
            self._event(EventNum.SCAN_DONE, self.module_ip)

    def _cmd_SKLL64(self, args):
        if len(args) != 1:
            return self._fail(5)
        try:
            address = ll64(args[0])
        except ArgumentError:
            return self._fail(6)
        # A bare address line and no OK (captures.py §13).
        self._write(address.encode() + CRLF)

    def _cmd_SKADDNBR(self, args):
        if len(args) != 2:
            return self._fail(5)
        ip, mac = args
        if not IPV6_RE.match(ip.encode()) or not re.match(r"^[0-9A-Fa-f]{16}$", mac):
            return self._fail(6)
        self.neighbours[ip.upper()] = mac.upper()
        self._ok()

    def _cmd_SKTABLE(self, args):
        if len(args) != 1:
            return self._fail(5)
        kind = args[0].upper()
        if kind == "1":
            self._write(b"EADDR\r\n" + self.module_ip.encode() + CRLF)
        elif kind == "2":
            rows = b"".join(b"%s %s FFFF\r\n" % (ip.encode(), mac.encode())
                            for ip, mac in sorted(self.neighbours.items()))
            self._write(b"ENEIGHBOR\r\n" + rows)
        elif kind == "E":
            self._write(b"EPORT\r\n3610\r\n716\r\n0\r\n0\r\n0\r\n0\r\n")
        else:
            return self._fail(6)
        self._ok()

    def _cmd_ROPT(self, args):
        if not self.config.ropt:
            return self._fail(4)
        # Answers of the ROHM "product" commands end with CR only (captures.py §4, §17).
        self._write(b"OK %s\r" % (b"00" if self.binary else b"01"))

    def _cmd_WOPT(self, args):
        if not self.config.ropt:
            return self._fail(4)
        if len(args) != 1:
            return self._fail(5)
        if args[0] not in ("00", "01", "0", "1"):
            return self._fail(6)
        self.binary = int(args[0]) == 0
        self.wopt_writes += 1  # flash has a limited write count
        self._write(b"OK\r")

    def _cmd_SKRESET(self, args):
        if args:
            return self._fail(5)
        self._ok()
        self.reset()

    def _cmd_SKSAVE(self, args):
        self._ok()

    def _cmd_SKLOAD(self, args):
        self._ok()

    def _cmd_SKTERM(self, args):
        if args:
            return self._fail(5)
        if self.session is None or self._joining:
            return self._fail(10)
        peer = self.session.peer
        self._drop_session()
        self._ok()
        self._transmit(40)
        if self.radio.lost():
            self._later(10.0, self._event, EventNum.TERMINATE_TIMED_OUT, peer, group="term")
        else:
            self._later(0.3, self._event, EventNum.TERMINATED, peer, group="term")
