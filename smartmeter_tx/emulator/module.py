"""
The virtual Wi-SUN module: the module side of SKSTACK IP, in both dialects,
with the meter at the far end of a simulated radio.

Two objects:

 - L{Emulator} is the device: registers, credentials, the PANA session, the
   radio, the meter and every timer.  It outlives any one serial connection,
   exactly like a USB dongle that keeps its PANA session while no program has
   the port open (a one-shot client's next run finds the session).
 - L{ModuleProtocol} is the UART: it frames host input into command lines and
   SKSENDTO payloads (raw bytes after the length field, no CRLF, CR/LF allowed
   inside) and feeds them to the L{Emulator} one command at a time.

Behaviour follows ../shared/reference/protocol.md and every line of
../shared/fixtures/captures.md ("captures §n" below).  Timings are in device
seconds, multiplied by C{time_scale} for latencies (0 = answer at once) and by
C{time_scale or 1} for the long timers (session lifetime, the :00/:30 INF,
the ARIB window), so the meter's clock also runs C{1/time_scale} times faster.

The emulator knows the B-route ID and password but never logs them.
"""

from __future__ import annotations

import datetime
import random
import re
from dataclasses import dataclass
from typing import Callable, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from smartmeter_tx.echonet.frame import CONTROLLER, Frame
from smartmeter_tx.emulator.household import mix
from smartmeter_tx.emulator.meter import MeterModel, check_outage
from smartmeter_tx.emulator.radio import Radio, TxBudget, airtime
from smartmeter_tx.errors import ArgumentError, SKParseError
from smartmeter_tx.model import SLOT, slot_start
from smartmeter_tx.sk.events import EventNum, SendResult
from smartmeter_tx.sk.framing import NEED_DATA, Dropped, Raw, Reader, SendtoHeader
from smartmeter_tx.sk.values import IPV6_RE, Dialect, Event, PanDesc, RxUdp
from smartmeter_tx.sk.commands import ll64, parse_command

__all__ = [
    "EmulatorConfig", "Emulator", "ModuleProtocol", "DEFAULT_ID", "DEFAULT_PASSWORD",
    "MULTICAST",
]

#: Credentials used when none are given (documented in the CLI's --help).
DEFAULT_ID = "00112233445566778899AABBCCDDEEFF"
DEFAULT_PASSWORD = "0123456789AB"
MULTICAST = "FF02:0000:0000:0000:0000:0000:0000:0001"
CRLF = b"\r\n"
PORT_ECHONET = 0x0E1A
PORT_PANA = 0x02CC

_VERSIONS = {Dialect.STANDARD: "1.2.10", Dialect.DSE: "1.5.2"}  # captures §1, §4
_HEX = re.compile(r"^[0-9A-Fa-f]+$")


@dataclass
class EmulatorConfig:
    """
    Every knob of the emulator.  Defaults give a healthy radio.

    @ivar dialect: L{Dialect.STANDARD} (BP35A1-like) or L{Dialect.DSE} (BP35C2-like).
    @ivar echo: the power-on value of register SFE (restored by SKRESET).
    @ivar wopt: ERXUDP output mode stored in flash: C{"bin"} (how BP35A1/BP35C2
        ship, captures §17) or C{"hex"}.
    @ivar ropt: C{False} for an RL7023-like module: ROPT/WOPT/SKAPPVER answer
        C{FAIL ER04} and ERXUDP is always hex.
    @ivar time_scale: multiplies every delay; 0 answers at once.
    @ivar loss: probability that a request or its answer is lost.
    @ivar fail21: probability of C{EVENT 21 ... 01}.
    @ivar stale: probability that an answer is held until after the next request.
    @ivar garbage: probability of junk bytes or a stray line per output burst.
    @ivar lifetime: PANA session lifetime granted by the meter, seconds.
    @ivar reauth_fail: probability that the automatic re-authentication after
        EVENT 29 fails (EVENT 24).
    @ivar peer_term: seconds after each successful join at which the meter ends
        the session (EVENT 26); 0 = never.
    @ivar tx_budget, tx_window: the ARIB transmit-time budget (seconds of
        airtime per rolling window).
    @ivar late_pandesc: probability that the EPANDESC block of a PAN on the
        last scanned channel is printed just after EVENT 22 (captures §13).
    @ivar scan_min_duration: an active scan shorter than this finds nothing
        (captures §1, §5: duration 4 found nothing, 5 or 6 did).
    @ivar unplug_after, unplug_for: unplug the pty every C{unplug_after} seconds
        for C{unplug_for} seconds (0 = never); used by the pty layer.
    @ivar unplug_keeps_session: keep registers and session over an unplug
        (default: an unplug is a power cycle).
    @ivar busy: probability that SKSENDTO answers C{FAIL ER10} (accepted, but
        the module could not execute it right now) instead of sending.
    @ivar reauth_delay: seconds from EVENT 29 to the module's own EVENT 25
        (real modules take a few to about 15 s).
    @ivar move_after: seconds after start at which the meter moves to another
        channel and PAN ID (a replaced meter, or a PAN coordinator that chose
        a new channel); the module's session then goes unanswered; 0 = never.
    @ivar junk_at_open: print the tail of an interrupted earlier output when
        the host opens the port.
    @ivar history_days: how many days of 30-minute history the meter keeps
        (E5 0 to this; default 45).
    @ivar outage: C{((start, end), ...)} windows (meter local time, end
        exclusive) in which the meter has no readings; see L{MeterModel}.
    @ivar history2: C{False} for a meter without EC/ED (historical data 2).
    """

    dialect: Dialect = Dialect.STANDARD
    echo: bool = True
    wopt: str = "bin"
    ropt: bool = True
    rbid: str = DEFAULT_ID
    password: str = DEFAULT_PASSWORD
    seed: int = 0
    time_scale: float = 1.0
    loss: float = 0.0
    fail21: float = 0.0
    stale: float = 0.0
    garbage: float = 0.0
    lifetime: float = 86400.0
    reauth_fail: float = 0.0
    peer_term: float = 0.0
    tx_budget: float = 360.0
    tx_window: float = 3600.0
    scan_min_duration: int = 5
    late_pandesc: float = 0.0
    channel: Optional[int] = None
    pan_id: Optional[int] = None
    coefficient: Optional[int] = None
    unit: int = 0x02
    digits: int = 6
    solar: int = 0
    history_days: int = 45
    outage: tuple = ()
    history2: bool = True
    start: Optional[datetime.datetime] = None
    unplug_after: float = 0.0
    unplug_for: float = 5.0
    unplug_keeps_session: bool = False
    busy: float = 0.0
    reauth_delay: float = 3.0
    move_after: float = 0.0
    junk_at_open: bool = False

    def validate(self) -> "EmulatorConfig":
        """
        @raise ArgumentError: a knob is out of range.
        @return: C{self}.
        """
        for name in ("loss", "fail21", "stale", "garbage", "reauth_fail", "late_pandesc", "busy"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ArgumentError(f"{name} must be a probability between 0 and 1")
        for name in ("time_scale", "peer_term", "unplug_after", "unplug_for", "move_after"):
            if getattr(self, name) < 0:
                raise ArgumentError(f"{name} must not be negative")
        if not 0.5 <= self.reauth_delay <= 120:
            raise ArgumentError("reauth_delay must be 0.5 to 120 seconds")
        if self.lifetime <= 0 or self.tx_budget <= 0 or self.tx_window <= 0:
            raise ArgumentError("lifetime, tx_budget and tx_window must be positive")
        if self.wopt not in ("bin", "hex"):
            raise ArgumentError("wopt must be 'bin' or 'hex'")
        if len(self.rbid) != 32 or not all(0x21 <= ord(c) <= 0x7E for c in self.rbid):
            raise ArgumentError("the B-route ID must be 32 printable ASCII characters")
        if not 1 <= len(self.password) <= 32 or not all(0x21 <= ord(c) <= 0x7E for c in self.password):
            raise ArgumentError("the B-route password must be 1 to 32 printable ASCII characters")
        if self.channel is not None and not 0x21 <= self.channel <= 0x3C:
            raise ArgumentError("channel must be 0x21 to 0x3C")
        if self.pan_id is not None and not 0 <= self.pan_id <= 0xFFFF:
            raise ArgumentError("PAN ID must be 0000 to FFFF")
        if not 0 <= self.scan_min_duration <= 15:
            raise ArgumentError("scan_min_duration must be 0 to 15")
        if not 0 <= self.history_days <= 99:
            raise ArgumentError("history_days must be 0 to 99")
        self.outage = check_outage(self.outage)
        return self


# Register number -> (power-on value, digits printed by ESREG, writable range or None).
_REGISTERS = {
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


@dataclass
class Session:
    """The PANA session, owned by the module, not by a serial connection."""

    peer: str
    since: float
    usable: bool = True
    #: the meter has left: frames go out but nothing answers them.
    peer_gone: bool = False


@dataclass(eq=False)
class _Held:
    frame: Frame
    call: object = None


class Emulator:
    """
    The emulated module + radio + meter.

    @ivar truth: every L{TruthRecord} the meter put on the air and the host
        received, in order.
    @ivar truth_sinks: callables called with each new L{TruthRecord}.
    @ivar session: the current L{Session} or C{None}.
    @ivar wopt_writes: how many times WOPT wrote the flash.
    """

    log = Logger()

    def __init__(self, config: Optional[EmulatorConfig] = None,
                 clock: Optional[IReactorTime] = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.config = config = (config or EmulatorConfig()).validate()
        self.clock = clock
        self.dialect = config.dialect
        self.rng = random.Random(config.seed)
        self.meter = MeterModel(
            seed=config.seed, start=config.start or datetime.datetime(2024, 6, 1, 12),
            coefficient=config.coefficient, unit=config.unit, digits=config.digits,
            solar_w=config.solar, history_days=config.history_days, outage=config.outage,
            history2=config.history2)
        self.radio = Radio(self.rng, config.loss, config.fail21, config.stale, config.garbage)
        self.budget = TxBudget(config.tx_budget, config.tx_window)
        self.truth: list = []
        self.truth_sinks: list = []
        self.module_mac = "001D129%09X" % (mix(config.seed, 7) % 16 ** 9)
        self.module_ip = ll64(self.module_mac)
        self.meter_mac = self.meter.mac
        self.meter_ip = ll64(self.meter_mac)
        self.channel = config.channel or 0x21 + mix(config.seed, 8) % 28
        self.pan_id = config.pan_id if config.pan_id is not None else mix(config.seed, 9) & 0xFFFF
        self.lqi = 0xA0 + mix(config.seed, 10) % 0x40
        self.binary = config.ropt and config.wopt == "bin"
        self.wopt_writes = 0
        self.session: Optional[Session] = None
        self._t0 = clock.seconds()
        self._long = config.time_scale if config.time_scale > 0 else 1.0
        self._calls: dict = {}
        self._protocol: Optional[Protocol] = None
        self._held: list = []
        self._pana_session_id = mix(config.seed, 11) & 0xFFFFFFFF
        self._pana_seq = mix(config.seed, 12) & 0xFFFFFFFF
        self._power_on()
        self._schedule_fixed_inf()
        if config.move_after:
            self._later(config.move_after, self.move_meter, group="move", long=True)

    # -- time --------------------------------------------------------------

    def device_time(self) -> float:
        """Device seconds since the emulator started."""
        return (self.clock.seconds() - self._t0) / self._long

    def meter_now(self) -> datetime.datetime:
        """The meter's local time."""
        return self.meter.start + datetime.timedelta(seconds=self.device_time())

    def _later(self, delay: float, f: Callable, *args, group: str = "misc", long: bool = False):
        """
        Run C{f} after C{delay} device seconds, scaled; at once (synchronously)
        when the scaled delay is 0, so zero-latency mode needs no reactor turn.
        """
        real = delay * (self._long if long else self.config.time_scale)
        if real <= 0:
            f(*args)
            return None
        calls = self._calls.setdefault(group, set())

        def run():
            calls.discard(call)
            f(*args)
        call = self.clock.callLater(real, run)
        calls.add(call)
        return call

    def _cancel(self, *groups: str) -> None:
        for group in groups or tuple(self._calls):
            for call in self._calls.pop(group, set()):
                if call.active():
                    call.cancel()

    def stop(self) -> None:
        """Cancel every timer (the emulator is being shut down)."""
        self._cancel()

    # -- output ------------------------------------------------------------

    def attach(self, protocol: Protocol) -> None:
        """A UART (pty) is connected: output goes to C{protocol.transport}."""
        self._protocol = protocol
        if self.config.junk_at_open:
            # What an earlier run left unread in the UART when it was killed:
            # the tail of an ERXUDP line, cut in the middle.
            self._write(b"0000:021D:1290:1234:5678 0E1A 0E1A 001D129012345678 1 0012 "
                        b"1081000102880105FF017201E704000001F8\r\n")

    def detach(self, protocol: Protocol) -> None:
        if self._protocol is protocol:
            self._protocol = None

    def _write(self, data: bytes) -> None:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            protocol.transport.write(data)

    def _junk(self) -> None:
        junk = self.radio.junk()
        if junk:
            self._write(junk)

    def _side(self) -> Optional[int]:
        return 0 if self.dialect is Dialect.DSE else None

    def _event(self, num: int, sender: str, param: Optional[int] = None) -> None:
        self._write(Event(num, sender, self._side(), param).to_line() + CRLF)

    def _fail(self, code: int) -> None:
        self._write(b"FAIL ER%02d\r\n" % code)

    def _ok(self) -> None:
        self._write(b"OK\r\n")

    def _rxudp(self, sender: str, dest: str, port: int, secured: bool, data: bytes) -> None:
        rssi = None
        if self.dialect is Dialect.DSE and self.registers[0xA2]:
            rssi = self.radio.lqi(self.lqi)
        line = RxUdp(sender, dest, port, port, self.meter_mac, secured, data, self._side(), rssi,
                     self.binary).to_line()
        self._write(line + CRLF)

    # -- state -------------------------------------------------------------

    def _power_on(self) -> None:
        self.registers = {reg: spec[0] for reg, spec in _REGISTERS.items()}
        self.registers[0xFE] = 1 if self.config.echo else 0
        self.rbid: Optional[str] = None
        self.password: Optional[str] = None
        self.neighbours: dict = {}
        self._joining = False

    @property
    def echo(self) -> bool:
        return bool(self.registers[0xFE])

    def _drop_session(self) -> None:
        self._cancel("session", "join", "held")
        self.session = None
        self._held = []
        self._joining = False

    def reset(self) -> None:
        """What SKRESET and a power cycle do: registers, credentials, session gone."""
        self._cancel("scan", "term")
        self._drop_session()
        self._power_on()

    def power_cycle(self) -> None:
        """The dongle lost power (unplugged)."""
        self.reset()
        self.budget = TxBudget(self.config.tx_budget, self.config.tx_window)
        self._cancel("budget")

    def _transmit(self, payload_len: int) -> None:
        """Account for one transmission against the ARIB budget."""
        self.registers[0x07] = (self.registers[0x07] + 1) & 0xFFFFFFFF
        now = self.device_time()
        if self.budget.spend(now, airtime(payload_len)):
            self.log.info("ARIB transmit-time budget spent: EVENT 32")
            self.registers[0xFB] = 1
            self._event(EventNum.TX_LIMITED, self.module_ip)
            self._later(self.budget.release_at(now) - now + 0.001, self._budget_check,
                        group="budget", long=True)
        self.registers[0xFD] = min(self.budget.total_ms, 0xFFFFFFFF)

    def _budget_check(self) -> None:
        now = self.device_time()
        if self.budget.try_release(now):
            self.registers[0xFB] = 0
            self._event(EventNum.TX_RELEASED, self.module_ip)
        elif self.budget.limited:
            self._later(max(self.budget.release_at(now) - now, 0.001) + 0.001, self._budget_check,
                        group="budget", long=True)

    def _record(self, frame: Frame) -> None:
        for record in self.meter.truth_of(frame, self.clock.seconds(), self.meter_now()):
            self.truth.append(record)
            for sink in self.truth_sinks:
                try:
                    sink(record)
                except Exception:
                    self.log.failure("truth sink failed")

    # -- input -------------------------------------------------------------

    def line_received(self, line: bytes) -> Optional[Deferred]:
        """
        One command line from the host (without its CR/LF).

        @return: C{None}, or a L{Deferred} that fires when the module is ready
            for the next command.
        """
        if self.echo:
            self._write(line + CRLF)
        if not line.strip():
            return None
        try:
            name, args = parse_command(line)
        except SKParseError:
            self._fail(4)
            return None
        handler = getattr(self, "_cmd_" + name, None)
        if handler is None or not line.startswith(name.encode()):
            self._fail(4)
            return None
        return handler(args)

    # Commands answer at once; real modules take 3-12 ms (captures §19).

    def _cmd_SKVER(self, args):
        if args:
            return self._fail(5)
        self._write(b"EVER %s\r\n" % _VERSIONS[self.dialect].encode())
        self._ok()

    def _cmd_SKAPPVER(self, args):
        if not self.config.ropt:  # RL7023 Stick-D/DSS (captures §17)
            return self._fail(4)
        if args:
            return self._fail(5)
        self._write(b"EAPPVER rev26e\r\n")
        self._ok()

    def _cmd_SKINFO(self, args):
        if args:
            return self._fail(5)
        fifth = b"0" if self.dialect is Dialect.DSE else b"FFFE"  # captures §0 EINFO
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
        spec = _REGISTERS.get(reg)
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
        if not _HEX.match(value) or len(value) > 8 or not allowed[0] <= int(value, 16) <= allowed[1]:
            return self._fail(6)
        self.registers[reg] = int(value, 16)
        self._ok()

    def _cmd_SKSETPWD(self, args):
        if len(args) != 2:
            return self._fail(5)
        length, password = args
        if not _HEX.match(length) or int(length, 16) != len(password) or not 1 <= len(password) <= 32:
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
        if len(args) != (4 if dse else 3):  # the other dialect's form: ER05 (captures §17)
            return self._fail(5)
        mode, mask, duration = args[:3]
        side = args[3] if dse else "0"
        if (mode not in ("0", "2", "3") or not _HEX.match(mask) or len(mask) > 8
                or not _HEX.match(duration) or len(duration) > 2 or int(duration, 16) > 14
                or side not in ("0", "1")):
            return self._fail(6)
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
                # Captures §1: EVENT 20 as the channel's dwell starts, the
                # EPANDESC block one dwell later.  On the last channel that is
                # when EVENT 22 comes too, and some modules print the block
                # after it (captures §13): the late-pandesc knob.
                late = ch == channels[-1] and self.rng.random() < self.config.late_pandesc
                self._later(t - dwell, self._event, EventNum.BEACON, self.module_ip, group="scan")
                self._later(t + (0.001 if late else 0.0), self._pandesc, mode, group="scan")
        self._later(t, self._scan_done, mode, channels, group="scan")

    def _pandesc(self, mode: int) -> None:
        # EVENT 20's sender is the module's own address (captures §4).
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
        # A bare address line and no OK (captures §13).
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
        # Answers of the ROHM "product" commands end with CR only (captures §4, §17).
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

    # -- PANA ----------------------------------------------------------------

    def _cmd_SKJOIN(self, args):
        if len(args) != 1:
            return self._fail(5)
        target = args[0].upper()
        if not IPV6_RE.match(target.encode()):
            return self._fail(6)
        if self._joining:
            return self._fail(10)
        self._ok()
        self._drop_session()
        self._joining = True
        reason = None
        if target != self.meter_ip:
            reason = "address"
        elif self.registers[0x02] != self.channel:
            reason = "channel (S02)"
        elif self.registers[0x03] != self.pan_id:
            reason = "PAN ID (S03)"
        elif self.rbid != self.config.rbid:
            reason = "B-route ID"
        elif self.password != self.config.password:
            reason = "password"
        elif self.budget.limited:
            reason = "transmit-time limit (the PANA messages are cancelled)"
        if reason:
            self.log.info("SKJOIN will fail: wrong {reason}", reason=reason)
        # Captures §4/§18: OK, EVENT 21 02 (neighbour solicitation), EVENT 02,
        # then 4 x (PANA ERXUDP on 02CC, EVENT 21 00), EVENT 25, D5 INF; ~3.3 s
        # in all (captures §1).  A failing PANA exchange retransmits for ~38 s.
        self._later(0.25, self._join_step, "ns", target, group="join")
        if reason in ("address", "channel (S02)", "PAN ID (S03)"):
            self._later(self.rng.uniform(36.0, 40.0), self._join_failed, target, group="join")
            return None
        self._later(0.30, self._event, EventNum.NA_RECEIVED, target, group="join")
        rounds = 4 if reason is None else 2
        for i in range(rounds):
            self._later(0.80 + 0.70 * i, self._join_step, i, target, group="join")
            self._later(0.94 + 0.70 * i, self._join_step, "sent", target, group="join")
        if reason is None:
            self._later(3.30, self._join_done, target, group="join")
        else:
            self._later(self.rng.uniform(36.0, 40.0), self._join_failed, target, group="join")
        return None

    def _join_step(self, step, target: str) -> None:
        if step == "ns":
            self._transmit(40)
            self._event(EventNum.UDP_SENT, target, SendResult.NEIGHBOUR_SOLICITATION)
        elif step == "sent":
            self._transmit(60)
            self._event(EventNum.UDP_SENT, target, SendResult.SENT)
        else:
            self._rxudp(target, self.module_ip, PORT_PANA, False, self._pana_message(step))

    def _join_done(self, target: str) -> None:
        self._joining = False
        self._open_session(target)
        self._event(EventNum.PANA_OK, target)
        self._later(0.05, self._announce, group="session")

    def _join_failed(self, target: str) -> None:
        self._joining = False
        self._event(EventNum.PANA_FAILED, target)

    def _announce(self) -> None:
        frame = self.meter.instance_list_inf()
        self._record(frame)
        self._rxudp(self.meter_ip, MULTICAST, PORT_ECHONET, True, frame.encode())

    def _open_session(self, peer: str) -> None:
        self._cancel("session")
        self.session = Session(peer, self.device_time())
        self.neighbours[peer] = self.meter_mac
        self._later(self.config.lifetime, self.expire_session, group="session", long=True)
        if self.config.peer_term:
            self._later(self.config.peer_term, self.terminate_by_peer, group="session", long=True)

    def expire_session(self) -> None:
        """
        The PANA session lifetime ran out: EVENT 29, then the module
        re-authenticates on its own: EVENT 25, or EVENT 24 when that fails.
        """
        if self.session is None:
            return
        self._cancel("session")
        self.session.usable = False
        peer = self.session.peer
        self._event(EventNum.SESSION_EXPIRED, peer)
        ok = not (self.config.reauth_fail and self.rng.random() < self.config.reauth_fail)
        # The four PANA rounds spread over the re-authentication (3 s by default).
        pace = self.config.reauth_delay / 3.0
        for i in range(4 if ok else 2):
            self._later(pace * (0.5 + 0.7 * i), self._join_step, i, peer, group="session")
            self._later(pace * (0.64 + 0.7 * i), self._join_step, "sent", peer, group="session")
        if ok:
            self._later(self.config.reauth_delay, self._reauth_done, peer, group="session")
        else:
            self._later(self.rng.uniform(36.0, 40.0), self._reauth_failed, peer, group="session")

    def _reauth_done(self, peer: str) -> None:
        self._open_session(peer)
        self._event(EventNum.PANA_OK, peer)

    def _reauth_failed(self, peer: str) -> None:
        self._drop_session()
        self._event(EventNum.PANA_FAILED, peer)

    def move_meter(self, channel: Optional[int] = None, pan_id: Optional[int] = None) -> None:
        """
        The meter now answers on another channel (and PAN ID): a session with
        it goes unanswered, and only a scan finds it again.
        """
        self.channel = channel or 0x21 + (self.channel - 0x21 + 7) % 28
        self.pan_id = pan_id if pan_id is not None else self.pan_id ^ 0x5A5A
        if self.session is not None:
            self.session.peer_gone = True
        self.log.info("the meter moved to channel {ch:02X}, PAN {pan:04X}",
                      ch=self.channel, pan=self.pan_id)

    def terminate_by_peer(self) -> None:
        """The meter ends the session (EVENT 26)."""
        if self.session is None:
            return
        peer = self.session.peer
        self._drop_session()
        self._event(EventNum.TERMINATE_REQUESTED, peer)

    def _pana_message(self, index: int) -> bytes:
        """
        A PANA-Auth message from the meter, shaped like the ones in captures §4
        (header, then AVPs).  Random bytes stand in for the EAP-PSK exchange, so
        neither the ID nor the password ever appears in it.
        """
        def avp(code: int, value: bytes) -> bytes:
            pad = b"\x00" * (-len(value) % 4)
            return code.to_bytes(2, "big") + b"\x00\x00" + len(value).to_bytes(2, "big") + b"\x00\x00" + value + pad

        rand = self.rng.randbytes
        if index == 0:
            flags, avps = 0xC000, avp(6, b"\x00\x00\x00\x05") + avp(3, b"\x00\x00\x00\x0c")
        elif index == 1:
            flags, avps = 0x8000, avp(5, rand(16)) + avp(2, b"\x01" + rand(1) + b"\x00\x38\x2f\x00" + rand(50))
        elif index == 2:
            flags, avps = 0x8000, avp(2, b"\x01" + rand(1) + b"\x00\x3b\x2f\x80" + rand(53))
        else:
            lifetime = min(int(self.config.lifetime), 0xFFFFFFFF).to_bytes(4, "big")
            flags, avps = 0xA000, (avp(7, b"\x00\x00\x00\x00") + avp(2, b"\x03" + rand(1) + b"\x00\x04")
                                   + avp(4, b"\x00\x00\x00\x01") + avp(8, lifetime) + avp(1, rand(16)))
        self._pana_seq = (self._pana_seq + 1) & 0xFFFFFFFF
        length = 16 + len(avps)
        return (b"\x00\x00" + length.to_bytes(2, "big") + flags.to_bytes(2, "big") + b"\x00\x02"
                + self._pana_session_id.to_bytes(4, "big") + self._pana_seq.to_bytes(4, "big") + avps)

    # -- SKSENDTO ------------------------------------------------------------

    def _cmd_SKSENDTO(self, args):
        # Only reached when a line ended before "<LEN> " did: the header is short.
        n = 6 if self.dialect is Dialect.DSE else 5
        return self._fail(5 if len(args) < n else 6)

    def sendto(self, header: bytes, form: Dialect, args: list, payload: bytes) -> Optional[Deferred]:
        """
        One SKSENDTO with its payload, as framed by L{ModuleProtocol}.

        @param header: the command text up to and including LEN and its space.
        @param form: the dialect whose argument count the host used.
        @return: a L{Deferred} that fires when OK has been written (the module
            takes no other command before), or C{None} after a FAIL.
        """
        # The echo stops after the length field; with echo off a bare CRLF
        # (captures §4, §17).
        self._write((header if self.echo else b"") + CRLF)
        if form is not self.dialect:
            self._fail(5)
            return None
        handle, ip, port, sec = args[:4]
        side = args[4] if form is Dialect.DSE else "0"
        if (handle not in ("1", "2", "3", "4", "5", "6") or not IPV6_RE.match(ip.encode())
                or len(port) != 4 or not _HEX.match(port) or sec not in ("0", "1", "2")
                or side not in ("0", "1") or not 1 <= len(payload) <= 0x04D0):
            self._fail(6)
            return None
        if self.config.busy and self.rng.random() < self.config.busy:
            self._fail(10)  # accepted, but the module cannot execute it now
            return None
        dest, port = ip.upper(), int(port, 16)
        done = Deferred()
        send_done = self.radio.send_done_delay()
        multicast = dest.startswith("FF02:")
        usable = self.session is not None and self.session.usable
        answer = None
        if self.budget.limited:
            # ARIB limit engaged: the send is silently cancelled (protocol.md §2.1).
            param = SendResult.SENT
        elif not multicast and dest not in (self.meter_ip,) and dest not in self.neighbours:
            param = SendResult.NEIGHBOUR_SOLICITATION
        elif not multicast and sec == "1" and not usable:
            # No PANA session: neighbour solicitation instead of the frame.
            param = SendResult.NEIGHBOUR_SOLICITATION
        elif self.radio.send_fails():
            param = SendResult.FAILED
        else:
            param = SendResult.SENT
            self._transmit(len(payload))
            lost = self.radio.lost()
            if (usable and not self.session.peer_gone and port == PORT_ECHONET and sec != "0"
                    and lost != "request"):
                reply = self.meter.handle(payload, self.meter_now())
                if reply is not None and lost != "answer":
                    answer = reply
        # Replies held back by earlier requests come out after this one's OK.
        previous, self._held = self._held, []
        if answer is not None and self.radio.held_back():
            # Delivered after the next request: a reply with a stale TID.
            held = _Held(answer, None)
            held.call = self._later(30.0, self._release_held, held, group="held", long=True)
            self._held.append(held)
            answer = None
        self._later(send_done, self._send_finished, dest, param, previous, done, group="send")
        if answer is not None:
            self._later(self.radio.answer_delay(send_done), self._deliver, answer, group="session")
        return done

    def _send_finished(self, dest: str, param: int, previous: list, done: Deferred) -> None:
        self._junk()
        # EVENT 21 always comes before OK (captures §1).
        self._event(EventNum.UDP_SENT, dest, param)
        self._ok()
        for item in previous:
            if item.call is not None and item.call.active():
                item.call.cancel()
            self._later(0.02, self._deliver, item.frame, group="session")
        done.callback(None)

    def _release_held(self, item: "_Held") -> None:
        if item in self._held:
            self._held.remove(item)
            self._deliver(item.frame)

    def _deliver(self, frame: Frame, dest: Optional[str] = None) -> None:
        """A frame from the meter reaches the module and is printed as ERXUDP."""
        if self.session is None:
            return
        self._junk()
        self._record(frame)
        self._rxudp(self.meter_ip, dest or self.module_ip, PORT_ECHONET, True, frame.encode())

    # -- the meter's own notifications ------------------------------------------

    def _schedule_fixed_inf(self) -> None:
        now = self.meter_now()
        wait = (slot_start(now) + SLOT - now).total_seconds()
        # Meters push EA/EB "within 5 minutes" after :00/:30 (captures §19).
        self._later(wait + self.rng.uniform(2.0, 90.0), self._push_fixed, group="meter", long=True)

    def _push_fixed(self) -> None:
        if self.session is not None and self.session.usable:
            self._deliver(self.meter.fixed_time_inf(self.meter_now(), CONTROLLER))
        self._schedule_fixed_inf()


class ModuleProtocol(Protocol):
    """
    The module's UART: frames host bytes into command lines and SKSENDTO
    payloads with a module-side L{Reader} and hands them to the L{Emulator},
    one command at a time (input that arrives while a command is still
    running waits, like bytes in the module's UART buffer).

    Lines end with CR LF, or with CR alone for ROPT/WOPT; a bare LF is also
    accepted.  After C{SKSENDTO <args> <LEN> } exactly LEN raw bytes follow.
    """

    MAX_LINE = 4096

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self._reader = Reader(self.MAX_LINE, cr_ends_line=True, lf_ends_line=True,
                              sendto_headers=True)
        self._sendto: Optional[SendtoHeader] = None
        self._busy = False
        self._running = False

    def connectionMade(self) -> None:
        self.emulator.attach(self)

    def connectionLost(self, reason=None) -> None:
        self.emulator.detach(self)

    def dataReceived(self, data: bytes) -> None:
        self._reader.feed(data)
        self._run()

    def _run(self) -> None:
        if self._running:
            return
        self._running = True
        try:
            while not self._busy and self._step():
                pass
        finally:
            self._running = False

    def _ready(self, result) -> None:
        self._busy = False
        self._run()

    def _dispatch(self, result) -> None:
        if isinstance(result, Deferred):
            self._busy = True
            result.addBoth(self._ready)

    def _step(self) -> bool:
        item = self._reader.next()
        if item is NEED_DATA:
            return False
        if isinstance(item, SendtoHeader):
            self._sendto = item
            self._reader.read_raw(item.length)
        elif isinstance(item, Raw):
            header, self._sendto = self._sendto, None
            self._dispatch(self.emulator.sendto(header.data, header.form, list(header.args),
                                                item.data))
        elif isinstance(item, Dropped):
            self.emulator._fail(9)  # runaway input: answered like a UART overrun
        else:
            self._dispatch(self.emulator.line_received(item.data))
        return True
