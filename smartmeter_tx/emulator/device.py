"""
The C{emulator:} device spec: run the emulator in this process on a pty.

Spec syntax::

    emulator:                       standard dialect, healthy radio, real time
    emulator:dse                    BP35C2-like dual-stack module
    emulator:standard?loss=0.1&time-scale=0.01&echo=off&wopt=bin&seed=3

Options (shared with the C{smartmeter-emulator} command, which spells them
C{--time-scale} etc.) are listed in L{OPTIONS}; C{id} and C{password}
default to L{DEFAULT_ID} and L{DEFAULT_PASSWORD}, so a product started with
C{--device emulator:} and no credentials joins.  Values that contain C{&} or
C{=} must be percent-encoded.
"""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass
from typing import Callable, Optional
from urllib.parse import parse_qsl

from smartmeter_tx.emulator.module import (
    DEFAULT_ID, DEFAULT_PASSWORD, Emulator, EmulatorConfig, ModuleProtocol,
)
from smartmeter_tx.emulator.pty import PtyDevice
from smartmeter_tx.errors import ArgumentError
from smartmeter_tx.model import JST
from smartmeter_tx.sk.values import Dialect

__all__ = ["OPTIONS", "EmulatorHandle", "start_emulator", "run_emulator", "parse_spec",
           "config_from_options",
           "DEFAULT_ID", "DEFAULT_PASSWORD"]


def _switch(text: str) -> bool:
    value = text.lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise ValueError("expected on or off")


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError("expected a probability between 0 and 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError("expected a number of seconds >= 0")
    return value


def _dialect(text: str) -> Dialect:
    try:
        return Dialect(text.lower())
    except ValueError:
        raise ValueError("expected standard or dse") from None


def _wopt(text: str) -> str:
    value = {"bin": "bin", "binary": "bin", "00": "bin", "hex": "hex", "01": "hex"}.get(text.lower())
    if value is None:
        raise ValueError("expected hex or bin")
    return value


def _hex(text: str) -> int:
    return int(text, 16)


def _start(text: str) -> datetime.datetime:
    # The meter keeps Japan time, without an offset; one given is honoured.
    when = datetime.datetime.fromisoformat(text)
    return when if when.tzinfo is None else when.astimezone(JST).replace(tzinfo=None)


def _offset(text: str) -> float:
    value = float(text)
    if not abs(value) < 86400 * 45:
        raise ValueError("expected seconds, within 45 days")
    return value


def _days(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 99:
        raise ValueError("expected 0 to 99 days")
    return value


def _outage(text: str) -> tuple:
    """C{START/END[,START/END...]}, ISO 8601, the meter's local time."""
    windows = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        start, sep, end = part.partition("/")
        if not sep or "/" in end:
            raise ValueError("expected START/END, e.g. 2024-05-30T10:00/2024-05-30T13:30")
        try:
            a, b = datetime.datetime.fromisoformat(start), datetime.datetime.fromisoformat(end)
        except ValueError:
            raise ValueError("START and END must be ISO 8601 date-times, e.g. "
                             "2024-05-30T10:00/2024-05-30T13:30") from None
        if a.tzinfo is not None or b.tzinfo is not None:
            raise ValueError("give the meter's local time, without a UTC offset")
        if not a < b:
            raise ValueError("the outage must end after it starts")
        windows.append((a, b))
    return tuple(windows)


@dataclass(frozen=True)
class Option:
    attr: str
    convert: Callable[[str], object]
    help: str
    metavar: str = "X"
    secret: bool = False


#: Option name -> how it sets an L{EmulatorConfig} field.
OPTIONS = {
    "dialect": Option("dialect", _dialect, "module dialect: standard (BP35A1-like) or dse "
                      "(BP35C2-like)", "standard|dse"),
    "echo": Option("echo", _switch, "echo at power-on and after SKRESET (default on)", "on|off"),
    "wopt": Option("wopt", _wopt, "ERXUDP payload format stored in flash (default bin, as "
                   "BP35A1/BP35C2 ship)", "hex|bin"),
    "ropt": Option("ropt", _switch, "off: no ROPT/WOPT/SKAPPVER (FAIL ER04), always hex, like "
                   "RL7023 (default on)", "on|off"),
    "id": Option("rbid", str, f"B-route ID the meter accepts (default {DEFAULT_ID})", "ID",
                 secret=True),
    "password": Option("password", str, f"B-route password the meter accepts (default "
                       f"{DEFAULT_PASSWORD})", "PW", secret=True),
    "seed": Option("seed", int, "random seed: household (and so the meter's history, "
                   "whenever it starts), addresses, radio (default 0)", "N"),
    "time-scale": Option("time_scale", _seconds, "multiply every delay; 0 = no latency "
                         "(default 1)", "F"),
    "loss": Option("loss", _probability, "probability a request or its answer is lost", "P"),
    "fail21": Option("fail21", _probability, "probability of EVENT 21 ... 01", "P"),
    "stale": Option("stale", _probability, "probability an answer arrives only after the next "
                    "request (stale TID)", "P"),
    "garbage": Option("garbage", _probability, "probability of junk bytes or a stray line per "
                      "output burst", "P"),
    "lifetime": Option("lifetime", _seconds, "PANA session lifetime in seconds (default 86400); "
                       "at expiry EVENT 29, then re-authentication", "S"),
    "reauth-fail": Option("reauth_fail", _probability, "probability that re-authentication "
                          "after EVENT 29 fails (EVENT 24)", "P"),
    "peer-term": Option("peer_term", _seconds, "the meter ends the session (EVENT 26) this many "
                        "seconds after each join; 0 = never", "S"),
    "tx-budget": Option("tx_budget", _seconds, "ARIB transmit-time budget in seconds per window "
                        "(default 360); EVENT 32/33", "S"),
    "tx-window": Option("tx_window", _seconds, "ARIB rolling window in seconds (default 3600)", "S"),
    "scan-min-duration": Option("scan_min_duration", int, "shortest SKSCAN duration that finds "
                                "the meter (default 5)", "N"),
    "late-pandesc": Option("late_pandesc", _probability, "probability that a PAN on the last "
                           "scanned channel is described only after EVENT 22", "P"),
    "channel": Option("channel", _hex, "the meter's channel, hex 21-3C (default from seed)", "HEX"),
    "pan-id": Option("pan_id", _hex, "the meter's PAN ID, hex (default from seed)", "HEX"),
    "coefficient": Option("coefficient", int, "D3 coefficient (default: the meter has no D3)", "N"),
    "unit": Option("unit", _hex, "E1 unit code, hex (default 02 = 0.01 kWh)", "HEX"),
    "digits": Option("digits", int, "D7 effective digits, 1-8 (default 6)", "N"),
    "solar": Option("solar", int, "peak solar output in W (default 0 = none)", "W"),
    "history-days": Option("history_days", _days, "days of 30-minute history the meter keeps, "
                           "0-99 (default 45)", "N"),
    "outage": Option("outage", _outage, "the meter has no readings from START to END (ISO "
                     "8601, meter local time; several comma-separated): 0xFFFFFFFE in E0/E3 "
                     "and for those slots in E2/E4/EC", "START/END"),
    "history2": Option("history2", _switch, "off: a meter without EC/ED (historical data 2; "
                       "default on)", "on|off"),
    "start": Option("start", _start, "the meter's clock at start, ISO 8601, Japan time "
                    "unless an offset is given (default: now in Japan)", "TIME"),
    "meter-offset": Option("meter_offset", _offset, "the meter's clock runs this many seconds "
                           "ahead of Japan time (negative: behind; default 0)", "S"),
    "unplug-after": Option("unplug_after", _seconds, "unplug the pty every S seconds "
                           "(0 = never)", "S"),
    "unplug-for": Option("unplug_for", _seconds, "how long an unplug lasts (default 5)", "S"),
    "unplug-keeps-session": Option("unplug_keeps_session", _switch, "keep the module's state "
                                   "over an unplug (default off: power cycle)", "on|off"),
    "busy": Option("busy", _probability, "probability that SKSENDTO answers FAIL ER10 "
                   "(module busy)", "P"),
    "reauth-delay": Option("reauth_delay", _seconds, "seconds from EVENT 29 to the module's own "
                           "EVENT 25 (default 3)", "S"),
    "move-after": Option("move_after", _seconds, "the meter moves to another channel and PAN "
                         "ID this many seconds after start; 0 = never", "S"),
    "junk-at-open": Option("junk_at_open", _switch, "print an interrupted line's tail when the "
                           "port is opened (default off)", "on|off"),
    "reauth-stuck": Option("reauth_stuck", _seconds, "after the session's expiry, EVENT 29 "
                           "again every S seconds and never EVENT 25 or 24, until a SKJOIN "
                           "(0 = never)", "S"),
    "drop-byte": Option("drop_byte", str, "the answer to the first command line starting with "
                        "TEXT (e.g. SKSETPWD) loses a byte, as in a UART overrun", "TEXT"),
}


def config_from_options(items, base: Optional[EmulatorConfig] = None) -> EmulatorConfig:
    """
    Build an L{EmulatorConfig} from C{(name, text)} pairs (option names as in
    L{OPTIONS}; C{_} and C{-} are interchangeable).

    @raise ArgumentError: unknown option or bad value.  Messages never quote
        the ID or the password.
    """
    config = base or EmulatorConfig()
    for name, text in items:
        key = name.lower().replace("_", "-")
        option = OPTIONS.get(key)
        if option is None:
            raise ArgumentError(f"unknown emulator option {name!r} (known: "
                                f"{', '.join(sorted(OPTIONS))}, link)")
        try:
            value = option.convert(text)
        except ValueError as e:
            if option.secret:
                raise ArgumentError(f"invalid emulator {key}") from None
            raise ArgumentError(f"invalid emulator {key} {text!r}: {e}") from None
        setattr(config, option.attr, value)
    try:
        return config.validate()
    except ArgumentError:
        raise
    except (ValueError, TypeError) as e:
        raise ArgumentError(f"invalid emulator options: {e}") from None


def parse_spec(spec: str) -> tuple:
    """
    Parse an C{emulator:[dialect][?options]} device spec.

    @return: C{(config, link)}; C{link} is the C{link} option or C{None}.
    @raise ArgumentError: not an emulator spec, an unknown option or a bad value.
    """
    head, _, query = spec.partition("?")
    kind, _, dialect = head.partition(":")
    if kind.lower() != "emulator":
        raise ArgumentError("an emulator device spec starts with 'emulator:'")
    items = []
    if dialect:
        items.append(("dialect", dialect))
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ArgumentError("emulator options must look like name=value&name=value") from None
    link = None
    for name, value in pairs:
        if name == "link":
            link = value
        else:
            items.append((name, value))
    return config_from_options(items), link


class EmulatorHandle:
    """
    A running emulator on a pty.

    @ivar path: where to open the serial port (the link, else the pty slave).
    @ivar id: the B-route ID the emulated meter accepts.
    @ivar password: the password it accepts.  Do not log it.
    @ivar emulator: the L{Emulator} (ground truth in C{.truth}; fault methods
        C{expire_session()}, C{terminate_by_peer()}; knobs in C{.config} and
        C{.radio}).
    @ivar device: the L{PtyDevice}.
    """

    def __init__(self, emulator: Emulator, device: PtyDevice, reactor) -> None:
        self.emulator = emulator
        self.device = device
        self._reactor = reactor
        self._cycle = None
        self._stopped = False
        if emulator.config.unplug_after:
            self._schedule_unplug()

    @property
    def path(self) -> str:
        path = self.device.path
        assert path is not None  # plugged before the handle was made; kept over an unplug
        return path

    @property
    def id(self) -> str:
        return self.emulator.config.rbid

    @property
    def password(self) -> str:
        return self.emulator.config.password

    def __repr__(self) -> str:  # never show the credentials
        return f"<EmulatorHandle {self.emulator.dialect.value} at {self.path}>"

    def _scale(self, seconds: float) -> float:
        return seconds * (self.emulator.config.time_scale or 1.0)

    def _schedule_unplug(self) -> None:
        self._cycle = self._reactor.callLater(
            self._scale(self.emulator.config.unplug_after), self._auto_unplug)

    def _auto_unplug(self) -> None:
        self._cycle = None
        self.unplug(self.emulator.config.unplug_for).addCallback(
            lambda _: None if self._stopped else self._schedule_unplug())

    def unplug(self, seconds: Optional[float] = None):
        """
        Pull the dongle: the pty closes (clients see their port fail), and
        unless the C{unplug-keeps-session} knob is on, the module loses its
        registers and session.  After C{seconds} (scaled like the long timers:
        real seconds at time scale 0 or 1) a fresh pty appears at the same path.

        @return: a L{Deferred} that fires with the path when plugged in again.
        """
        if not self.emulator.config.unplug_keeps_session:
            self.emulator.power_cycle()
        return self.device.unplug(None if seconds is None else self._scale(seconds))

    def replug(self) -> None:
        """Plug in again now (after C{unplug(None)})."""
        self.device.plug()

    def stop(self) -> None:
        """Stop the emulator, close the pty and remove the link."""
        self._stopped = True
        if self._cycle is not None and self._cycle.active():
            self._cycle.cancel()
        self._cycle = None
        self.device.stop()
        self.emulator.stop()


def start_emulator(spec: str, reactor, link: Optional[str] = None,
                   config: Optional[EmulatorConfig] = None) -> EmulatorHandle:
    """
    Start an emulator on a new pty.

    @param spec: an C{emulator:...} device spec (see the module docstring).
    @param link: publish the pty slave under this path (overrides the spec's
        C{link} option).
    @param config: use this configuration instead of the spec's options.
    @return: an L{EmulatorHandle}; open C{handle.path} with a SerialPort.
    @raise ArgumentError: a bad spec.
    """
    parsed, spec_link = parse_spec(spec)
    return run_emulator(config or parsed, reactor, link or spec_link)


def run_emulator(config: EmulatorConfig, reactor, link: Optional[str] = None) -> EmulatorHandle:
    """
    Start an emulator of C{config} (a spec parsed once, by L{parse_spec}) on
    a new pty.

    @param link: publish the pty slave under this path.
    @return: an L{EmulatorHandle}; open C{handle.path} with a SerialPort.
    """
    if config.start is None:
        # The only wall-clock read: the meter's clock starts at "now" in
        # Japan, whatever the host's time zone (a meter keeps JST).
        now = datetime.datetime.now(JST).replace(tzinfo=None, microsecond=0)
        config = dataclasses.replace(
            config, start=now + datetime.timedelta(seconds=config.meter_offset))
    emulator = Emulator(config, reactor)
    try:
        device = PtyDevice(lambda: ModuleProtocol(emulator), reactor, link)
        device.plug()
    except BaseException:
        emulator.stop()
        raise
    return EmulatorHandle(emulator, device, reactor)
