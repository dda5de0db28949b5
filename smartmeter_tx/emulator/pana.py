"""
The emulated module's PANA session with the meter: SKJOIN's exchange and its
events, the session's lifetime and the module's own re-authentication, a
meter that moves or ends the session.

A mixin of L{smartmeter_tx.emulator.module.Emulator}; the session belongs to
the module, not to a serial connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional, Union

from smartmeter_tx.emulator.wire import MULTICAST, PORT_ECHONET, PORT_PANA
from smartmeter_tx.sk.events import EventNum, SendResult
from smartmeter_tx.sk.values import IPV6_RE

if TYPE_CHECKING:
    import random

    from twisted.internet.interfaces import IDelayedCall
    from twisted.logger import Logger

    from smartmeter_tx.echonet.frame import Frame
    from smartmeter_tx.emulator.meter import MeterModel
    from smartmeter_tx.emulator.module import EmulatorConfig
    from smartmeter_tx.emulator.radio import TxBudget

__all__ = ["PanaSide", "Session"]


@dataclass
class Session:
    """The PANA session, owned by the module, not by a serial connection."""

    peer: str
    since: float
    usable: bool = True
    #: the meter has left: frames go out but nothing answers them.
    peer_gone: bool = False




class PanaSide:
    """SKJOIN and everything the PANA session does afterwards."""

    if TYPE_CHECKING:  # the Emulator's, which this part of it uses
        log: Logger
        config: EmulatorConfig
        rng: random.Random
        meter: MeterModel
        budget: TxBudget
        #: ints, but for the pairing ID (S0A), which is text
        registers: dict[int, Any]
        meter_ip: str
        meter_mac: str
        module_ip: str
        neighbours: dict[str, str]
        rbid: Optional[str]
        password: Optional[str]
        channel: int
        pan_id: int
        session: Optional[Session]
        _joining: bool
        _pana_session_id: int
        _pana_seq: int

        def device_time(self) -> float: ...
        def _later(self, delay: float, f: Callable[..., object], *args: object,
                   group: str = ..., long: bool = ...) -> Optional[IDelayedCall]: ...
        def _cancel(self, *groups: str) -> None: ...
        def _event(self, num: int, sender: str, param: Optional[int] = None) -> None: ...
        def _fail(self, code: int) -> None: ...
        def _ok(self) -> None: ...
        def _rxudp(self, sender: str, dest: str, port: int, secured: bool,
                   data: bytes) -> None: ...
        def _drop_session(self) -> None: ...
        def _transmit(self, payload_len: int) -> None: ...
        def _record(self, frame: Frame) -> None: ...

    def _cmd_SKJOIN(self, args: list[str]) -> None:
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
        # captures.py §4 (docs/PROTOCOL.md, "Joining"): OK, EVENT 21 02 (neighbour solicitation), EVENT 02,
        # then 4 x (PANA ERXUDP on 02CC, EVENT 21 00), EVENT 25, D5 INF; ~3.3 s
        # in all (captures.py §1).  A failing PANA exchange retransmits for ~38 s.
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

    def _join_step(self, step: Union[int, Literal["ns", "sent"]], target: str) -> None:
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
        if self.config.reauth_stuck:
            self._later(self.config.reauth_stuck, self._expired_again, peer, group="session",
                        long=True)
            return
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

    def _expired_again(self, peer: str) -> None:
        # The reauth-stuck knob: the re-authentication starts over, says so
        # with another EVENT 29 (from the meter's address, like the first),
        # and never ends by itself; a SKJOIN drops it with the session.
        self._event(EventNum.SESSION_EXPIRED, peer)
        self._later(self.config.reauth_stuck, self._expired_again, peer, group="session",
                    long=True)

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
        A PANA-Auth message from the meter, shaped like the ones in captures.py §4
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
