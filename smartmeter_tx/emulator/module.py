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

Behaviour follows docs/PROTOCOL.md and the real lines of
tests/fixtures/captures.py ("captures.py §n" below).  Timings are in device
seconds, multiplied by C{time_scale} for latencies (0 = answer at once) and by
C{time_scale or 1} for the long timers (session lifetime, the :00/:30 INF,
the ARIB window), so the meter's clock also runs C{1/time_scale} times faster.

The emulator knows the B-route ID and password but never logs them.
"""

from __future__ import annotations

import datetime
import random
from dataclasses import dataclass
from typing import Callable, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from smartmeter_tx.echonet.frame import Frame
from smartmeter_tx.emulator.commands import REGISTERS, ModuleCommands
from smartmeter_tx.emulator.household import mix
from smartmeter_tx.emulator.meter import MeterModel, check_outage
from smartmeter_tx.emulator.pana import PanaSide, Session
from smartmeter_tx.emulator.radio import Radio, TxBudget, airtime
from smartmeter_tx.emulator.udp import UdpSide
from smartmeter_tx.emulator.wire import CRLF, MULTICAST
from smartmeter_tx.errors import ArgumentError, SKParseError
from smartmeter_tx.sk.events import EventNum
from smartmeter_tx.sk.framing import NEED_DATA, Dropped, Raw, Reader, SendtoHeader
from smartmeter_tx.sk.values import Dialect, Event, RxUdp
from smartmeter_tx.sk.commands import ll64, parse_command

__all__ = [
    "EmulatorConfig", "Emulator", "ModuleProtocol", "DEFAULT_ID", "DEFAULT_PASSWORD",
    "MULTICAST",
]

#: Credentials used when none are given (documented in the CLI's --help).
DEFAULT_ID = "00112233445566778899AABBCCDDEEFF"
DEFAULT_PASSWORD = "0123456789AB"


@dataclass
class EmulatorConfig:
    """
    Every knob of the emulator.  Defaults give a healthy radio.

    @ivar dialect: L{Dialect.STANDARD} (BP35A1-like) or L{Dialect.DSE} (BP35C2-like).
    @ivar echo: the power-on value of register SFE (restored by SKRESET).
    @ivar wopt: ERXUDP output mode stored in flash: C{"bin"} (how BP35A1/BP35C2
        ship, captures.py §17) or C{"hex"}.
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
        last scanned channel is printed just after EVENT 22 (captures.py §13).
    @ivar scan_min_duration: an active scan shorter than this finds nothing
        (docs/PROTOCOL.md, "Scanning": duration 4 found nothing, 5 or 6 did).
    @ivar unplug_after, unplug_for: unplug the pty every C{unplug_after} seconds
        for C{unplug_for} seconds (0 = never); used by the pty layer.
    @ivar unplug_keeps_session: keep registers and session over an unplug
        (default: an unplug is a power cycle).
    @ivar busy: probability that SKSENDTO answers C{FAIL ER10} (accepted, but
        the module could not execute it right now) instead of sending.
    @ivar reauth_delay: seconds from EVENT 29 to the module's own EVENT 25
        (real modules take a few to about 15 s).
    @ivar reauth_stuck: seconds between the EVENT 29s of a module whose own
        re-authentication never ends: from the session's expiry on it says
        EVENT 29 again every that many seconds, and neither EVENT 25 nor 24,
        until a SKJOIN (or SKTERM, SKRESET) ends the session; 0 = never.
    @ivar move_after: seconds after start at which the meter moves to another
        channel and PAN ID (a replaced meter, or a PAN coordinator that chose
        a new channel); the module's session then goes unanswered; 0 = never.
    @ivar junk_at_open: print the tail of an interrupted earlier output when
        the host opens the port.
    @ivar drop_byte: the module's answer to the first command line that
        starts with this text (C{"SKSETPWD"}, C{"SKSREG S2"}) loses one byte,
        the first of its last line (the line that completes the command), as
        a UART overrun loses one; empty = never.
    @ivar history_days: how many days of 30-minute history the meter keeps
        (E5 0 to this; default 45).
    @ivar outage: C{((start, end), ...)} windows (meter local time, end
        exclusive) in which the meter has no readings; see L{MeterModel}.
    @ivar history2: C{False} for a meter without EC/ED (historical data 2).
    @ivar start: the meter's clock at start (naive, Japan time); default now.
    @ivar meter_offset: seconds the meter's clock is ahead of Japan time
        when C{start} is not given (negative: behind).
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
    meter_offset: float = 0.0
    unplug_after: float = 0.0
    unplug_for: float = 5.0
    unplug_keeps_session: bool = False
    busy: float = 0.0
    reauth_delay: float = 3.0
    move_after: float = 0.0
    junk_at_open: bool = False
    reauth_stuck: float = 0.0
    drop_byte: str = ""

    def validate(self) -> "EmulatorConfig":
        """
        @raise ArgumentError: a knob is out of range.
        @return: C{self}.
        """
        for name in ("loss", "fail21", "stale", "garbage", "reauth_fail", "late_pandesc", "busy"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ArgumentError(f"{name} must be a probability between 0 and 1")
        for name in ("time_scale", "peer_term", "unplug_after", "unplug_for", "move_after",
                     "reauth_stuck"):
            if getattr(self, name) < 0:
                raise ArgumentError(f"{name} must not be negative")
        if not 0.5 <= self.reauth_delay <= 120:
            raise ArgumentError("reauth_delay must be 0.5 to 120 seconds")
        if len(self.drop_byte) > 64 or not all(
                0x20 <= ord(c) <= 0x7E for c in self.drop_byte):
            raise ArgumentError("drop_byte must be the start of a command line (printable "
                                "ASCII, at most 64 characters)")
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


class Emulator(ModuleCommands, PanaSide, UdpSide):
    """
    The emulated module + radio + meter.

    @ivar truth: every L{TruthRecord} the meter put on the air and the host
        received, in order.
    @ivar truth_sinks: callables called with each new L{TruthRecord}.
    @ivar session: the current L{Session} or C{None}.
    @ivar wopt_writes: how many times WOPT wrote the flash.
    """

    log = Logger()

    def __init__(self, config: Optional[EmulatorConfig], clock: IReactorTime) -> None:
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
        # The drop-byte fault, armed until it has struck once; while a struck
        # command runs, its output is held here to lose its byte.
        self._drop_armed = bool(config.drop_byte)
        self._captured: Optional[list] = None
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
        if self._captured is not None:
            self._captured.append(data)
            return
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
        self.registers = {reg: spec[0] for reg, spec in REGISTERS.items()}
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
        if self._drop_armed and line.startswith(self.config.drop_byte.encode("ascii")):
            self._drop_armed = False
            return self._overrun(line)
        return self._command(line)

    def _command(self, line: bytes) -> Optional[Deferred]:
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

    def _overrun(self, line: bytes) -> Optional[Deferred]:
        """
        Run the command C{line}, but lose one byte of what it prints at once
        (the drop-byte knob): the first byte of its last line, the one that
        completes it (C{OK}, SKLL64's address), so that the host sees the
        command go unanswered, as after a real UART overrun.
        """
        self._captured = []
        try:
            result = self._command(line)
        finally:
            out, self._captured = b"".join(self._captured), None
        body = out[:-2] if out.endswith(CRLF) else out.rstrip(b"\r")
        start = body.rfind(b"\n") + 1
        if start < len(body):
            out = out[:start] + out[start + 1:]
            self.log.info("drop-byte: the answer to {name} lost a byte",
                          name=line.split(b" ", 1)[0].decode("ascii", "replace"))
        self._write(out)
        return result


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
            assert header is not None  # raw bytes are read only after a SKSENDTO header
            self._dispatch(self.emulator.sendto(header.data, header.form, list(header.args),
                                                item.data))
        elif isinstance(item, Dropped):
            self.emulator._fail(9)  # runaway input: answered like a UART overrun
        else:
            self._dispatch(self.emulator.line_received(item.data))
        return True
