"""
The emulated module's UDP side: SKSENDTO to the meter over the simulated
radio (EVENT 21, loss, the ARIB limit), the meter's answers as ERXUDP, and
the meter's own half-hourly EA/EB notification.

A mixin of L{smartmeter_tx.emulator.module.Emulator}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

from smartmeter_tx.echonet.frame import CONTROLLER, Frame
from smartmeter_tx.emulator.wire import CRLF, HEX, PORT_ECHONET
from smartmeter_tx.model import SLOT, slot_start
from smartmeter_tx.sk.events import EventNum, SendResult
from smartmeter_tx.sk.values import IPV6_RE, Dialect

if TYPE_CHECKING:
    import datetime
    import random

    from smartmeter_tx.emulator.meter import MeterModel
    from smartmeter_tx.emulator.module import EmulatorConfig
    from smartmeter_tx.emulator.pana import Session
    from smartmeter_tx.emulator.radio import Radio, TxBudget

__all__ = ["UdpSide"]


@dataclass(eq=False)
class Held:
    frame: Frame
    call: Optional[IDelayedCall] = None




class UdpSide:
    """SKSENDTO, the meter's answers and its :00/:30 INF."""

    if TYPE_CHECKING:  # the Emulator's, which this part of it uses
        config: EmulatorConfig
        rng: random.Random
        dialect: Dialect
        radio: Radio
        budget: TxBudget
        meter: MeterModel
        meter_ip: str
        module_ip: str
        neighbours: dict[str, str]
        session: Optional[Session]
        _joining: bool
        _held: list[Held]

        @property
        def echo(self) -> bool: ...
        def meter_now(self) -> datetime.datetime: ...
        def _later(self, delay: float, f: Callable[..., object], *args: object,
                   group: str = ..., long: bool = ...) -> Optional[IDelayedCall]: ...
        def _write(self, data: bytes) -> None: ...
        def _junk(self) -> None: ...
        def _event(self, num: int, sender: str, param: Optional[int] = None) -> None: ...
        def _fail(self, code: int) -> None: ...
        def _ok(self) -> None: ...
        def _rxudp(self, sender: str, dest: str, port: int, secured: bool,
                   data: bytes) -> None: ...
        def _transmit(self, payload_len: int) -> None: ...
        def _record(self, frame: Frame) -> None: ...

    def _cmd_SKSENDTO(self, args: list[str]) -> None:
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
        # (captures.py §4, §17).
        self._write((header if self.echo else b"") + CRLF)
        if form is not self.dialect:
            self._fail(5)
            return None
        handle, ip, port, sec = args[:4]
        side = args[4] if form is Dialect.DSE else "0"
        if (handle not in ("1", "2", "3", "4", "5", "6") or not IPV6_RE.match(ip.encode())
                or len(port) != 4 or not HEX.match(port) or sec not in ("0", "1", "2")
                or side not in ("0", "1") or not 1 <= len(payload) <= 0x04D0):
            self._fail(6)
            return None
        if self._joining or self.config.busy and self.rng.random() < self.config.busy:
            self._fail(10)  # accepted, but the module cannot execute it now
            return None
        dest, port = ip.upper(), int(port, 16)
        done: Deferred[None] = Deferred()
        send_done = self.radio.send_done_delay()
        multicast = dest.startswith("FF02:")
        usable = self.session is not None and self.session.usable
        answer = None
        if self.budget.limited:
            # ARIB limit engaged: the send is silently cancelled (docs/PROTOCOL.md, "Holds").
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
            if (usable and self.session is not None and not self.session.peer_gone
                    and port == PORT_ECHONET and sec != "0" and lost != "request"):
                reply = self.meter.handle(payload, self.meter_now())
                if reply is not None and lost != "answer":
                    answer = reply
        # Replies held back by earlier requests come out after this one's OK.
        previous, self._held = self._held, []
        if answer is not None and self.radio.held_back():
            # Delivered after the next request: a reply with a stale TID.
            held = Held(answer, None)
            held.call = self._later(30.0, self._release_held, held, group="held", long=True)
            self._held.append(held)
            answer = None
        self._later(send_done, self._send_finished, dest, param, previous, done, group="send")
        if answer is not None:
            self._later(self.radio.answer_delay(send_done), self._deliver, answer, group="session")
        return done

    def _send_finished(self, dest: str, param: int, previous: list, done: Deferred) -> None:
        self._junk()
        # EVENT 21 always comes before OK (captures.py §1).
        self._event(EventNum.UDP_SENT, dest, param)
        self._ok()
        for item in previous:
            if item.call is not None and item.call.active():
                item.call.cancel()
            self._later(0.02, self._deliver, item.frame, group="session")
        done.callback(None)

    def _release_held(self, item: "Held") -> None:
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

    def _schedule_fixed_inf(self) -> None:
        now = self.meter_now()
        wait = (slot_start(now) + SLOT - now).total_seconds()
        # Meters push EA/EB "within 5 minutes" after :00/:30 (docs/PROTOCOL.md, "Timing").
        self._later(wait + self.rng.uniform(2.0, 90.0), self._push_fixed, group="meter", long=True)

    def _push_fixed(self) -> None:
        if self.session is not None and self.session.usable:
            self._deliver(self.meter.fixed_time_inf(self.meter_now(), CONTROLLER))
        self._schedule_fixed_inf()
