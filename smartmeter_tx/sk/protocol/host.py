"""
SKStackProtocol: SKSTACK IP over any byte transport (a SerialPort in
production, a StringTransport in tests, a pty to the emulator in between).

One command is on the wire at a time; each returns a Deferred.  What completes a
command is data (L{smartmeter_tx.sk.commands.Completion}), so SKLL64 (no OK), SKSCAN
(EVENT 22) and SKJOIN (EVENT 25/24) need no special cases here.  EVENT, ERXUDP
and EPANDESC reach listeners at any time, including between a command and its OK.

Bytes are framed by the pure L{smartmeter_tx.sk.framing.Reader} and parsed
by L{smartmeter_tx.sk.parse}; the commands, their answers, timeouts and the
resync after an abandoned one are L{smartmeter_tx.sk.protocol.queue.CommandQueue}'s.
This module keeps the transport, the raw-payload watchdog, the routing of
parsed lines, the listeners and the transcript.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Optional, cast

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from smartmeter_tx.errors import SKParseError
from smartmeter_tx.redact import Redactor
from smartmeter_tx.sk import commands, parse
from smartmeter_tx.sk import values as V
from smartmeter_tx.sk.errors import SKDisconnected
from smartmeter_tx.sk.protocol.queue import CommandQueue, Reply
from smartmeter_tx.sk.framing import NEED_DATA, Dropped, Line, Raw, Reader

__all__ = ["SKStackProtocol"]


_SECRET_ECHO = re.compile(r"^(SKSETPWD|SKSETRBID)\b.*$")
#: PANA's UDP port: its payloads carry the B-route ID.
PANA_PORT = 0x02CC


class SKStackProtocol(Protocol):
    """
    The host side of SKSTACK IP.

    A plain L{Protocol}, not a LineReceiver: its framing (CR-only answers, a
    stray LF, over-long lines, raw payload bytes) is the pure
    L{smartmeter_tx.sk.framing.Reader}'s, which a LineReceiver's delimiter
    and raw mode could only duplicate.

    @ivar payload_mode: C{"hex"} or C{"binary"} once ROPT/WOPT told us the ERXUDP
        output mode, else C{None} (decided per line from DATALEN).
    @ivar transcript: if set, called with C{(direction, text)} for every line
        sent (C{">"}) or received (C{"<"}), with secrets redacted.
    @ivar redactor: the L{Redactor} that keeps secrets out of this protocol's
        logs and transcript; other layers may share it.
    @ivar reader: the byte reader (read-only: for diagnostics).
    """

    #: The longest line kept, in bytes; longer ones are dropped and logged.
    #: The longest legitimate line is a hex ERXUDP of 0x4D0 bytes (~2.6 kB).
    MAX_LENGTH = 4096
    #: Seconds to wait for the rest of a binary ERXUDP payload.
    RAW_TIMEOUT = 2.0

    log = Logger()

    def __init__(self, clock: IReactorTime, payload_mode: Optional[str] = None) -> None:
        """
        @param clock: what the command timeouts run on (only entry points
            know the reactor).
        """
        self._clock = clock
        self._commands = CommandQueue(clock, self._send, self._idle, self._stop_raw,
                                      self._drain, self._learned_mode)
        self._audience = _Audience()
        self._assembler = parse.BlockAssembler()
        self.reader = Reader(self.MAX_LENGTH)
        self._receiving = False
        self._partial: Optional[V.RxUdpPartial] = None
        self._raw_timer: Optional[IDelayedCall] = None
        # The lines that answer a command go straight to the command queue.
        self._handlers: dict[type, Callable[[Any], None]] = {
            V.Ok: self._commands.ok, V.Fail: self._commands.fail,
            V.Echo: self._commands.echo_line,
        }
        self._lost: Optional[Failure] = None
        self.redactor = Redactor()
        self.payload_mode = payload_mode
        self.transcript: Optional[Callable[[str, str], None]] = None
        self.connected_once = False
        #: Lines and fragments from the module that were dropped as garbage.
        self.junk_dropped = 0

    # -- public API ---------------------------------------------------------

    def command(self, command: commands.Command) -> defer.Deferred[Reply]:
        """
        Queue C{command}; it is written once every earlier command completed.

        After a command was abandoned before its OK (timed out or cancelled),
        a resync (L{smartmeter_tx.sk.protocol.queue.SYNC_COMMANDS}) is written
        before C{command}.

        @return: a Deferred that fires with a
            L{smartmeter_tx.sk.protocol.queue.Reply}, or fails with
            L{smartmeter_tx.sk.errors.SKCommandError} (FAIL ERxx),
            L{smartmeter_tx.sk.errors.SKEventError} (a failure event such as
            EVENT 24), L{smartmeter_tx.sk.errors.SKTimeoutError} (also, with
            C{unsent} set, when the resync before it went unanswered) or
            L{SKDisconnected}.  Cancelling it drops a queued command; an
            in-flight one is abandoned.
        """
        for index in command.secret:
            self.add_secret(command.args[index])
        if self._lost is not None:
            return defer.fail(SKDisconnected(command.name, self._lost))
        return self._commands.submit(command)

    def add_listener(self, listener: Callable[[object], None]) -> None:
        """
        Call C{listener(value)} for every L{V.Event}, L{V.RxUdp} and L{V.PanDesc}
        the module prints, whenever it prints it.  Exceptions it raises are
        logged and otherwise ignored.
        """
        self._audience.listeners.append(listener)

    def remove_listener(self, listener: Callable[[object], None]) -> None:
        if listener in self._audience.listeners:
            self._audience.listeners.remove(listener)

    def when_event(self, *nums: int) -> defer.Deferred:
        """
        @return: a fresh Deferred that fires with the next L{V.Event} whose
            number is in C{nums}, or fails with L{SKDisconnected}.
        """
        return self._audience.when_event(frozenset(nums))

    def when_disconnected(self) -> defer.Deferred[BaseException]:
        """
        @return: a fresh Deferred that fires with the exception that ended the
            link (e.g. L{ConnectionDone}) when it is lost.
        """
        return self._audience.when_lost()

    @property
    def busy(self) -> bool:
        """Whether a command is in flight or queued."""
        return self._commands.busy

    @property
    def in_flight(self) -> Optional[str]:
        """The name of the command on the wire, or C{None}."""
        return self._commands.in_flight

    @property
    def echo(self) -> Optional[bool]:
        """
        Whether the module echoes commands: C{True}, C{False}, or C{None}
        while unknown (at start, after a timeout or SKRESET).
        """
        return self._commands.echo

    @property
    def connected_now(self) -> bool:
        return self.connected_once and self._lost is None

    def add_secret(self, secret: str) -> None:
        """
        Never let C{secret} (or its hex form, as PANA carries the B-route ID)
        reach a log or transcript.
        """
        self.redactor.add(secret)

    # -- Twisted hooks ------------------------------------------------------

    def connectionMade(self) -> None:
        self.connected_once = True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = reason
        if self._raw_timer is not None and self._raw_timer.active():
            self._raw_timer.cancel()
        self._commands.lost(reason)
        self._audience.lost(reason)

    def dataReceived(self, data: bytes) -> None:
        self.reader.feed(data)
        self._drain()

    # -- framing -------------------------------------------------------------

    def _drain(self) -> None:
        """Handle every item the reader has complete, in order."""
        if self._receiving:
            return  # called back from a handler: the loop below goes on
        self._receiving = True
        try:
            while self._lost is None:
                item = self.reader.next()
                if item is NEED_DATA:
                    break
                if isinstance(item, Line):
                    self._line(item.data)
                elif isinstance(item, Raw):
                    self._raw_done(item.data)
                elif isinstance(item, Dropped):
                    # Garbage on the serial line must never close the port.
                    self._junk("dropping an over-long line from the module ({n} bytes)",
                               n=item.count)
        finally:
            self._receiving = False

    def _line(self, line: bytes) -> None:
        try:
            value = parse.parse_line(line, self.payload_mode)
        except SKParseError as e:
            self._junk("dropping malformed line from the module: {error}: {line}",
                       error=self.redactor.scrub_fragments(str(e)),
                       line=self.redactor.scrub_fragments(repr(line))[:100])
            return
        if isinstance(value, V.Resynced):
            self._junk("dropping {junk} glued before a line",
                       junk=self.redactor.scrub_fragments(repr(value.junk))[:100])
            value = value.value
        if isinstance(value, V.RxUdpPartial):
            # A binary payload held CR LF: the rest of it comes as raw bytes.
            self._partial = value
            self.reader.read_raw(value.remaining)
            # A module prints the whole payload at once (1232 bytes take 0.1 s
            # at 115200 baud): if the rest never comes, the head was garbage.
            self._raw_timer = self._clock.callLater(self.RAW_TIMEOUT, self._abandon_raw,
                                                    "the binary payload stopped short")
            return
        self._record_line(value, line)
        for complete in self._assembler.feed(value):
            self._dispatch(complete)

    def _raw_done(self, body: bytes) -> None:
        partial, self._partial = self._partial, None
        if partial is None:  # raw bytes are asked for only after a partial line
            return
        if self._raw_timer is not None and self._raw_timer.active():
            self._raw_timer.cancel()
        self._raw_timer = None
        value = partial.complete(body)
        self._record_line(value, b"")
        for complete in self._assembler.feed(value):
            self._dispatch(complete)
        # The CR LF that ends the ERXUDP line follows; it parses as a blank line.

    def _abandon_raw(self, why: str, drain: bool = True) -> None:
        """
        Give up a binary ERXUDP that never completed: drop its head and parse
        what came after it as lines again, so the protocol is never deaf.

        @param drain: parse those lines now (else the caller does, later).
        """
        if self._partial is None:
            return
        if self._raw_timer is not None and self._raw_timer.active():
            self._raw_timer.cancel()
        self._raw_timer = None
        self._partial = None
        self.reader.cancel_raw()
        self._junk("dropping an incomplete binary ERXUDP: {why}", why=why)
        if drain:
            self._drain()

    # -- the wire, for the command queue --------------------------------------------

    def _send(self, command: commands.Command) -> None:
        # ROPT/WOPT answers end with CR alone (see docs/PROTOCOL.md, "Line ends").
        self.reader.cr_ends_line = command.terminator == b"\r"
        text = self.redactor.scrub(command.redacted())
        if self.transcript:
            self.transcript(">", text)
        else:
            self.log.debug("> {command}", command=text)
        # Not None: makeConnection set it, and commands are written only once connected.
        cast(ITransport, self.transport).write(command.to_bytes())

    def _idle(self) -> None:
        self.reader.cr_ends_line = False

    def _stop_raw(self) -> None:
        self._abandon_raw("the command in flight timed out", drain=False)

    def _learned_mode(self, mode: str) -> None:
        self.payload_mode = mode

    # -- routing -----------------------------------------------------------------

    def _dispatch(self, value: parse.Assembled) -> None:
        kind = type(value)
        handler = self._handlers.get(kind)
        if handler is None:
            # Route by kind (memcache's cmd_ / pop3's state_ pattern), looked up once per kind.
            route: Callable[[Any], None] = getattr(self, "_line_" + kind.__name__,
                                                   self._commands.result)
            handler = self._handlers[kind] = route
        handler(value)

    def _line_Event(self, event: V.Event) -> None:
        self._commands.collect_event(event)
        self._audience.notify(event)
        self._audience.event(event)
        self._commands.end_on_event(event)

    def _line_RxUdp(self, rx: V.RxUdp) -> None:
        self._audience.notify(rx)

    def _line_PanDesc(self, desc: V.PanDesc) -> None:
        self._commands.collect_pandesc(desc)
        self._audience.notify(desc)

    def _line_Blank(self, _blank: V.Blank) -> None:
        pass  # SKSENDTO's answer with echo off, or the CRLF after a binary payload

    def _line_Unknown(self, unknown: V.Unknown) -> None:
        self._junk("dropping unrecognised line from the module: {line}",
                   line=self.redactor.scrub_fragments(repr(unknown.raw))[:100])

    def _junk(self, format: str, **fields: object) -> None:
        # Junk is expected now and then (the tail of an interrupted earlier
        # run, radio noise on the UART): counted, and shown at info level
        # only, so that a run that succeeds prints nothing at the default
        # verbosity.
        self.junk_dropped += 1
        self.log.info(format, **fields)

    def _record_line(self, value: V.Line, raw: bytes) -> None:
        if self.transcript is not None:
            self.transcript("<", self.redactor.scrub(transcript_text(value, raw)))


def transcript_text(value: V.Line, raw: bytes) -> str:
    """
    How a received line shows in a transcript, before the redactor's pass:
    as it came, but for what carries a secret in another form (PANA payloads
    hold the B-route ID, the PairID its last 8 characters, an echoed
    SKSETPWD/SKSETRBID the secret itself).  Pure.
    """
    if isinstance(value, V.RxUdp):
        if value.rport == PANA_PORT or value.lport == PANA_PORT:
            return f"ERXUDP {value.sender} PANA <{len(value.data)} bytes>"
        return f"ERXUDP {value.sender} {value.rport:04X} {value.data.hex().upper()}"
    if isinstance(value, V.Echo) and _SECRET_ECHO.match(value.text):
        return value.name + " <redacted>"
    if isinstance(value, V.PanDescField) and value.key == "PairID":
        return "  PairID:<redacted>"
    return raw.decode("ascii", "replace")


class _Audience:
    """
    Who hears the module's asynchronous lines: the listeners, the one-shot
    waiters for an EVENT, and the waiters for the end of the link.
    """

    log = Logger()

    def __init__(self) -> None:
        self.listeners: list[Callable[[object], None]] = []
        self._events: list = []  # [nums, Deferred] entries
        self._lost_waiters: list[defer.Deferred[BaseException]] = []
        self._lost: Optional[Failure] = None

    def notify(self, value: object) -> None:
        for listener in list(self.listeners):
            try:
                listener(value)
            except Exception:
                self.log.failure("listener {listener!r} failed on {kind}",
                                 listener=listener, kind=type(value).__name__)

    def when_event(self, nums: frozenset) -> defer.Deferred:
        if self._lost is not None:
            return defer.fail(SKDisconnected(None, self._lost))
        entry: list = [nums, None]
        d: defer.Deferred = defer.Deferred(
            lambda _: self._events.remove(entry) if entry in self._events else None)
        entry[1] = d
        self._events.append(entry)
        return d

    def event(self, event: V.Event) -> None:
        for entry in list(self._events):
            nums, d = entry
            if event.num in nums and entry in self._events:
                self._events.remove(entry)
                d.callback(event)

    def when_lost(self) -> defer.Deferred[BaseException]:
        if self._lost is not None:
            # A Failure always holds its exception (Twisted leaves .value unannotated).
            return defer.succeed(cast(BaseException, self._lost.value))
        d: defer.Deferred[BaseException] = defer.Deferred()
        self._lost_waiters.append(d)
        return d

    def lost(self, reason: Failure) -> None:
        self._lost = reason
        waiters, self._events = self._events, []
        for _, d in waiters:
            d.errback(SKDisconnected(None, reason))
        lost, self._lost_waiters = self._lost_waiters, []
        for waiter in lost:
            waiter.callback(cast(BaseException, reason.value))  # as in when_lost
