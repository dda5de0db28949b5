"""
The ECHONET Lite request layer over an L{SKStackProtocol}: send a frame to the
meter with SKSENDTO and get a Deferred for the frame that answers it.

Modelled on C{twisted.names.dns.DNSMixin}: pending requests are keyed by TID
with their timers; a datagram that answers none of them (INF, INFC, a late
reply to a request that already timed out) goes to the unsolicited listeners.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Callable, Iterable, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from smartmeter_tx.errors import FrameError, SmartMeterError
from smartmeter_tx.echonet import frame as F
from smartmeter_tx.sk import values as V
from smartmeter_tx.sk import commands
from smartmeter_tx.sk.events import EventNum, SendResult

if TYPE_CHECKING:
    from smartmeter_tx.sk.protocol import SKStackProtocol
    from smartmeter_tx.sk.protocol.queue import Reply

ECHONET_PORT = 0x0E1A

#: A pending request: the frame sent, the Deferred of its answer, and the
#: answer's timer (C{None} until the module took the SKSENDTO).
_Entry = tuple[F.Frame, defer.Deferred[F.Frame], Optional[IDelayedCall]]

__all__ = ["EchonetRequester", "EchonetError", "EchonetTimeout", "SendFailed", "NotSent"]


class EchonetError(SmartMeterError):
    """Base class of ECHONET request failures."""


class EchonetTimeout(EchonetError):
    """
    No matching answer arrived in time (the request or the answer was lost).
    """

    def __init__(self, tid: int, seconds: float) -> None:
        super().__init__(f"no answer from the meter within {seconds:g} s (TID {tid:04X})")
        self.tid = tid


class SendFailed(EchonetError):
    """
    EVENT 21 with PARAM 01: the module failed to send the frame.  Retryable
    after a pause.
    """

    def __init__(self) -> None:
        super().__init__("the module could not send the frame (EVENT 21 01)")


class NotSent(EchonetError):
    """
    EVENT 21 with PARAM 02: the module did neighbour discovery instead of
    sending; without a PANA session this is what every send gets.
    """

    def __init__(self) -> None:
        super().__init__("the frame was not sent: no route or no session (EVENT 21 02)")


class EchonetRequester:
    """
    Request/response matching for ECHONET Lite frames to and from one meter.

    @ivar meter_addr: the meter's IPv6 address (full form); datagrams from any
        other sender are not taken as answers.  Its owner sets it when it
        learns the address.
    @ivar dialect: the SK dialect of the SKSENDTO commands; set by its owner.
    """

    log = Logger()

    def __init__(self, sk: SKStackProtocol, dialect: V.Dialect, meter_addr: Optional[str] = None, *,
                 clock: IReactorTime, first_tid: Optional[int] = None) -> None:
        self.sk = sk
        self.dialect = dialect
        self.meter_addr = meter_addr.upper() if meter_addr else None
        self._listeners: list[Callable[[F.Frame, V.RxUdp], None]] = []
        self._clock = clock
        self._pending: dict[int, _Entry] = {}
        # A random start: a late answer from a previous process or connection
        # must not meet a request that happens to reuse its TID.
        self._next_tid = first_tid or random.randint(1, 0xFFFF)
        #: SKSENDTOs the module took (OK): request frames and INFC answers.
        self.frames_sent = 0
        sk.add_listener(self._received)
        sk.when_disconnected().addCallback(self._lost)

    def _lost(self, reason: BaseException) -> None:
        from smartmeter_tx.sk.errors import SKDisconnected
        pending, self._pending = self._pending, {}
        for tid, (frame, d, timer) in pending.items():
            if timer is not None and timer.active():
                timer.cancel()
            if not d.called:
                d.errback(SKDisconnected("SKSENDTO", Failure(reason)))

    def close(self) -> None:
        """
        Stop listening to the SK protocol.
        """
        self.sk.remove_listener(self._received)

    def add_unsolicited_listener(self, listener: Callable[[F.Frame, V.RxUdp], None]) -> None:
        """
        Call C{listener(frame, rxudp)} for every valid ECHONET frame from the meter
        that answers no pending request (INF, INFC, a late answer).  Any number
        of listeners may listen; one that raises is logged and the others
        still hear the frame.
        """
        self._listeners.append(listener)

    def remove_unsolicited_listener(self, listener: Callable[[F.Frame, V.RxUdp], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def allocate_tid(self) -> int:
        """
        A TID not used by any pending request (0 is left to the meter's own INF).
        """
        for _ in range(0x10000):
            tid = self._next_tid
            self._next_tid = tid % 0xFFFF + 1
            if tid not in self._pending:
                return tid
        raise EchonetError("every TID is pending")

    def get(self, epcs: Iterable[int], deoj: int = F.METER,
            timeout: float = 20.0) -> defer.Deferred[F.Frame]:
        """
        Get C{epcs} from C{deoj} in one frame.

        @return: see L{request}.
        """
        frame = F.get_request(self.allocate_tid(), epcs, deoj=deoj)
        return self.request(frame, timeout)

    def request(self, frame: F.Frame, timeout: float = 20.0,
                on_sent: Optional[Callable[[], None]] = None) -> defer.Deferred[F.Frame]:
        """
        Send C{frame} and wait for the frame that answers it.

        @param timeout: seconds from the send to the answer (the ECHONET AIF
            response timer is 20 s for one property; smaller is fine for a meter
            that answers in under a second).
        @param on_sent: called once the module took the frame (it is on the
            air), whatever comes of the request afterwards.
        @return: a Deferred that fires with the answering L{F.Frame} (a success
            or SNA response), or fails with L{SendFailed}, L{NotSent},
            L{EchonetTimeout} or an SK error from the protocol.  Cancelling
            it undoes the request: its C{SKSENDTO} is dropped while still
            queued (nothing goes on the air), abandoned while on the wire
            (the protocol resyncs), and its TID forgotten.
        """
        if self.meter_addr is None:
            return defer.fail(EchonetError("the meter's address is not known yet"))
        if frame.tid in self._pending:
            return defer.fail(EchonetError(f"TID {frame.tid:04X} is already pending"))
        try:
            command = commands.sk_sendto(self.dialect, self.meter_addr, frame.encode())
        except Exception as e:
            return defer.fail(e)
        def cancel(_: defer.Deferred) -> None:
            self._forget(frame.tid)
            if not sent.called:
                sent.cancel()

        answer: defer.Deferred[F.Frame] = defer.Deferred(cancel)
        # Registered before sending: an answer may overtake the SKSENDTO's OK.
        self._pending[frame.tid] = (frame, answer, None)
        sent = self.sk.command(command)

        def judged(reply: Reply) -> None:
            self.frames_sent += 1  # the module took it (a FAIL puts nothing on the air)
            if on_sent is not None:
                on_sent()
            events = [e for e in reply.events if e.num == EventNum.UDP_SENT]
            param = events[-1].param if events else None
            if param == SendResult.FAILED:
                raise SendFailed()
            if param == SendResult.NEIGHBOUR_SOLICITATION:
                raise NotSent()
            if frame.tid in self._pending:
                timer = self._clock.callLater(timeout, self._timed_out, frame.tid, timeout)
                req, d, _ = self._pending[frame.tid]
                self._pending[frame.tid] = (req, d, timer)

        def failed(failure: Failure) -> None:
            entry = self._forget(frame.tid)
            if entry is not None and not entry[1].called:
                entry[1].errback(failure)

        sent.addCallback(judged)
        sent.addErrback(failed)
        return answer

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _forget(self, tid: int) -> Optional[_Entry]:
        entry = self._pending.pop(tid, None)
        if entry is not None and entry[2] is not None and entry[2].active():
            entry[2].cancel()
        return entry

    def _timed_out(self, tid: int, seconds: float) -> None:
        entry = self._pending.pop(tid, None)
        if entry is not None:
            entry[1].errback(EchonetTimeout(tid, seconds))

    def _received(self, value: object) -> None:
        if not isinstance(value, V.RxUdp):
            return
        if value.rport != ECHONET_PORT or value.lport != ECHONET_PORT:
            return  # PANA (02CC) and anything else that is not ECHONET Lite
        if value.side not in (None, 0):
            return  # the HAN side of a DSE module
        if not value.secured:
            # Meter traffic on 0E1A is always encrypted by the PANA session key;
            # a plaintext frame claiming to be the meter is not taken as a reading.
            self.log.warn("ignoring an unencrypted ECHONET frame from {sender}",
                          sender=value.sender)
            return
        if self.meter_addr is None or value.sender != self.meter_addr:
            self.log.info("ignoring an ECHONET frame from {sender}", sender=value.sender)
            return
        try:
            frame = F.Frame.decode(value.data)
        except FrameError as e:
            self.log.warn("dropping a malformed ECHONET frame from the meter: {error}", error=e)
            return
        entry = self._pending.get(frame.tid)
        if entry is not None and frame.is_response_to(entry[0]):
            self._forget(frame.tid)
            entry[1].callback(frame)
            return
        if frame.esv == F.INFC:
            self._answer_infc(frame, value.sender)
        self.log.debug("unsolicited frame {frame}", frame=frame.describe())
        for listener in list(self._listeners):
            try:
                listener(frame, value)
            except Exception:
                self.log.failure("unsolicited-frame listener {listener!r} failed",
                                 listener=listener)

    def _answer_infc(self, frame: F.Frame, meter_addr: str) -> None:
        command = commands.sk_sendto(self.dialect, meter_addr, F.infc_response(frame).encode())

        def sent(reply: Reply) -> None:
            self.frames_sent += 1
        self.sk.command(command).addCallback(sent).addErrback(
            lambda f: self.log.info("INFC_Res not sent: {error}", error=f.getErrorMessage()))
