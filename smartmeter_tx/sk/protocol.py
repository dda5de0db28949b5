"""
SKStackProtocol: SKSTACK IP over any byte transport (a SerialPort in
production, a StringTransport in tests, a pty to the emulator in between).

One command is on the wire at a time; each returns a Deferred.  What completes a
command is data (L{smartmeter_tx.sk.commands.Completion}), so SKLL64 (no OK), SKSCAN
(EVENT 22) and SKJOIN (EVENT 25/24) need no special cases here.  EVENT, ERXUDP
and EPANDESC reach listeners at any time, including between a command and its OK.

Bytes are framed by the pure L{smartmeter_tx.sk.framing.Reader}; this module
keeps only what needs a clock or a transport (the raw-payload watchdog, the
command timeouts) and the routing of parsed lines.

After a command is abandoned (timed out or cancelled) before its OK, its late
answer may still be on the way, and with echo off nothing tells it apart from
the next command's.  So before the next command the protocol resynchronises,
with echo on or off: it sends a command of its own whose result line the
abandoned one cannot produce (L{SYNC_COMMANDS}), drops every answer line up
to that result, and resumes the queue after the OK that follows.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from smartmeter_tx.errors import SKParseError, SmartMeterError
from smartmeter_tx.redact import Redactor
from smartmeter_tx.sk import values as V
from smartmeter_tx.sk import commands
from smartmeter_tx.sk import parse
from smartmeter_tx.sk.framing import NEED_DATA, Dropped, Line, Raw, Reader

__all__ = [
    "SKStackProtocol", "Reply", "SKCommandError", "SKEventError", "SKTimeoutError",
    "SKDisconnected", "SKError",
]


class SKError(SmartMeterError):
    """
    Base class of the errors an SK command's Deferred fails with.

    @ivar command: the name of the command concerned (never its arguments,
        which may be secret).
    """

    def __init__(self, command: Optional[str], message: str) -> None:
        super().__init__(message)
        self.command = command


class SKCommandError(SKError):
    """
    The module answered C{FAIL ERxx}.
    """

    def __init__(self, command: str, fail: V.Fail) -> None:
        super().__init__(command, f"{command} failed: {fail}")
        self.code = fail.code
        self.meaning = fail.meaning


class SKEventError(SKError):
    """
    The module reported an EVENT that means the command failed (EVENT 24 after
    SKJOIN: PANA authentication failed).
    """

    def __init__(self, command: str, event: V.Event) -> None:
        super().__init__(command, f"{command} failed: EVENT {event.num:02X} ({event.name})")
        self.event = event


class SKTimeoutError(SKError):
    """
    A command did not complete in its time.

    @ivar unsent: C{True} when the command was never written because the
        resynchronisation before it got no answer (L{SKStackProtocol}).
    """

    def __init__(self, command: str, seconds: float, unsent: bool = False) -> None:
        if unsent:
            message = (f"{command} was not sent: the module did not answer the resync "
                       f"within {seconds:g} s")
        else:
            message = f"{command} got no answer within {seconds:g} s"
        super().__init__(command, message)
        self.seconds = seconds
        self.unsent = unsent


class SKDisconnected(SKError):
    """
    The serial link was lost (or already gone) before the command completed.
    """

    def __init__(self, command: Optional[str], reason: Optional[Failure] = None) -> None:
        what = f"{command} was lost" if command else "waiting was abandoned"
        why = reason.getErrorMessage() if reason is not None else "not connected"
        super().__init__(command, f"serial link closed ({why}); {what}")
        self.reason = reason


@dataclass
class Reply:
    """
    What a completed command produced.

    @ivar lines: result lines before the end (L{V.Ver}, L{V.Info}, L{V.SReg},
        L{V.Neighbor}, ...), in order.
    @ivar events: events the command collects (EVENT 21 for SKSENDTO).
    @ivar pandescs: PAN descriptors received during the command (SKSCAN).
    @ivar ok: the L{V.Ok} line, or C{None} for commands that end without one.
    @ivar final: the value that completed the command: the L{V.Ok}, SKLL64's
        L{V.Address}, or the EVENT that ended SKSCAN/SKJOIN/SKTERM.
    """

    command: commands.Command
    lines: list = field(default_factory=list)
    events: list = field(default_factory=list)
    pandescs: list = field(default_factory=list)
    ok: Optional[V.Ok] = None
    final: object = None

    def first(self, kind: type):
        """
        @return: the first result line of type C{kind}, or C{None}.
        """
        for line in self.lines:
            if isinstance(line, kind):
                return line
        return None


class _Pending:
    """
    A command queued or in flight.  A resync (C{sync} set) has no caller: its
    C{deferred} is C{None}, and C{result_seen} says whether its result line
    (the end of the stale answers) has arrived.
    """

    __slots__ = ("command", "deferred", "reply", "echo_seen", "timer", "sync", "result_seen")

    def __init__(self, command: commands.Command, deferred: Optional[defer.Deferred],
                 sync: Optional[type] = None) -> None:
        self.command = command
        self.deferred = deferred
        self.reply = Reply(command)
        self.echo_seen = False
        self.timer = None
        self.sync = sync
        self.result_seen = False


#: Resync commands and the result line that ends the stale answers: serial
#: only (no radio), on every module and in both dialects.  The second serves
#: when the first is itself among the abandoned commands, whose late result
#: line would otherwise pass for the resync's.
SYNC_COMMANDS = ((commands.sk_ver, V.Ver), (commands.sk_info, V.Info))


_SECRET_ECHO = re.compile(r"^(SKSETPWD|SKSETRBID)\b.*$")


class SKStackProtocol(Protocol):
    """
    The host side of SKSTACK IP.

    A plain L{Protocol}, not a LineReceiver: its framing (CR-only answers, a
    stray LF, over-long lines, raw payload bytes) is the pure
    L{smartmeter_tx.sk.framing.Reader}'s, which a LineReceiver's delimiter
    and raw mode could only duplicate.

    @ivar echo: whether the module echoes commands: C{True}, C{False}, or
        C{None} while unknown (at start, after a timeout or SKRESET).
    @ivar payload_mode: C{"hex"} or C{"binary"} once ROPT/WOPT told us the ERXUDP
        output mode, else C{None} (decided per line from DATALEN).
    @ivar transcript: if set, called with C{(direction, text)} for every line
        sent (C{">"}) or received (C{"<"}), with secrets redacted.
    @ivar redactor: the L{Redactor} that keeps secrets out of this protocol's
        logs and transcript; other layers may share it.
    """

    #: The longest line kept, in bytes; longer ones are dropped and logged.
    #: The longest legitimate line is a hex ERXUDP of 0x4D0 bytes (~2.6 kB).
    MAX_LENGTH = 4096
    #: Seconds to wait for the rest of a binary ERXUDP payload.
    RAW_TIMEOUT = 2.0

    log = Logger()

    def __init__(self, clock=None, payload_mode: Optional[str] = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self._clock = clock
        self._queue: deque = deque()
        self._current: Optional[_Pending] = None
        self._listeners: list = []
        self._waiters: list = []
        self._lost_waiters: list = []
        self._assembler = parse.BlockAssembler()
        self._reader = Reader(self.MAX_LENGTH)
        self._receiving = False
        self._partial: Optional[V.RxUdpPartial] = None
        self._unechoed_timeouts = 0
        self._raw_timer = None
        self._handlers: dict = {}
        # Names of the commands abandoned since the stream was last known to
        # be in step; non-empty means a resync must precede the next command.
        self._abandoned: set = set()
        self._lost: Optional[Failure] = None
        self.redactor = Redactor()
        self.echo: Optional[bool] = None
        self.payload_mode = payload_mode
        self.transcript: Optional[Callable[[str, str], None]] = None
        self.connected_once = False
        #: Lines and fragments from the module that were dropped as garbage.
        self.junk_dropped = 0

    # -- public API ---------------------------------------------------------

    def command(self, command: commands.Command) -> defer.Deferred:
        """
        Queue C{command}; it is written once every earlier command completed.

        After a command was abandoned before its OK (timed out or cancelled),
        a resync (L{SYNC_COMMANDS}) is written before C{command}.

        @return: a Deferred that fires with a L{Reply}, or fails with
            L{SKCommandError} (FAIL ERxx), L{SKEventError} (a failure event such
            as EVENT 24), L{SKTimeoutError} (also, with C{unsent} set, when the
            resync before it went unanswered) or L{SKDisconnected}.  Cancelling
            it drops a queued command; an in-flight one is abandoned.
        """
        for index in command.secret:
            self.add_secret(command.args[index])
        if self._lost is not None:
            return defer.fail(SKDisconnected(command.name, self._lost))
        d = defer.Deferred(self._cancel)
        self._queue.append(_Pending(command, d))
        self._issue()
        return d

    def add_listener(self, listener: Callable[[object], None]) -> None:
        """
        Call C{listener(value)} for every L{V.Event}, L{V.RxUdp} and L{V.PanDesc}
        the module prints, whenever it prints it.  Exceptions it raises are
        logged and otherwise ignored.
        """
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[object], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def when_event(self, *nums: int) -> defer.Deferred:
        """
        @return: a fresh Deferred that fires with the next L{V.Event} whose
            number is in C{nums}, or fails with L{SKDisconnected}.
        """
        if self._lost is not None:
            return defer.fail(SKDisconnected(None, self._lost))
        entry = [frozenset(nums), None]
        d = defer.Deferred(lambda _: self._waiters.remove(entry) if entry in self._waiters else None)
        entry[1] = d
        self._waiters.append(entry)
        return d

    def when_disconnected(self) -> defer.Deferred:
        """
        @return: a fresh Deferred that fires with the exception that ended the
            link (e.g. L{ConnectionDone}) when it is lost.
        """
        if self._lost is not None:
            return defer.succeed(self._lost.value)
        d = defer.Deferred()
        self._lost_waiters.append(d)
        return d

    @property
    def busy(self) -> bool:
        """Whether a command is in flight or queued."""
        return self._current is not None or bool(self._queue)

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

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:
        if not isinstance(reason, Failure):
            reason = Failure(reason())
        self._lost = reason
        if self._raw_timer is not None and self._raw_timer.active():
            self._raw_timer.cancel()
        pending = ([self._current] if self._current else []) + list(self._queue)
        self._current = None
        self._queue.clear()
        for p in pending:
            if p.timer is not None and p.timer.active():
                p.timer.cancel()
            if p.deferred is not None:
                p.deferred.errback(SKDisconnected(p.command.name, reason))
        waiters, self._waiters = self._waiters, []
        for _, d in waiters:
            d.errback(SKDisconnected(None, reason))
        lost, self._lost_waiters = self._lost_waiters, []
        for d in lost:
            d.callback(reason.value)

    def dataReceived(self, data: bytes) -> None:
        self._reader.feed(data)
        self._drain()

    # -- framing -------------------------------------------------------------

    def _drain(self) -> None:
        """Handle every item the reader has complete, in order."""
        if self._receiving:
            return  # called back from a handler: the loop below goes on
        self._receiving = True
        try:
            while self._lost is None:
                item = self._reader.next()
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
            self._reader.read_raw(value.remaining)
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
        self._reader.cancel_raw()
        self._junk("dropping an incomplete binary ERXUDP: {why}", why=why)
        if drain:
            self._drain()

    # -- internals -----------------------------------------------------------

    def _issue(self) -> None:
        if self._current is not None or not self._queue or self._lost is not None:
            return
        p = self._resync() if self._abandoned else self._queue.popleft()
        self._current = p
        cmd = p.command
        # ROPT/WOPT answers end with CR alone (captures section 4).
        self._reader.cr_ends_line = cmd.terminator == b"\r"
        text = self.redactor.scrub(cmd.redacted())
        if self.transcript:
            self.transcript(">", text)
        else:
            self.log.debug("> {command}", command=text)
        p.timer = self._clock.callLater(cmd.timeout, self._timed_out, p)
        self.transport.write(cmd.to_bytes())

    def _resync(self) -> _Pending:
        """The resync to write before the next queued command."""
        for build, result in SYNC_COMMANDS:
            command = build()
            if command.name not in self._abandoned:
                break
        else:
            # Both were abandoned: no choice is safe, so take the first.
            build, result = SYNC_COMMANDS[0]
            command = build()
        self.log.info("resynchronising with {command} after abandoning {abandoned}",
                      command=command.name, abandoned=", ".join(sorted(self._abandoned)))
        return _Pending(command, None, sync=result)

    def _abandon(self, p: _Pending) -> None:
        """
        Note that C{p}, the command in flight, is given up.  Unless it had its
        OK already (SKSCAN or SKJOIN waiting for their EVENT: whatever else
        they print is an EVENT, which never completes another command), its
        late answer may still come and the next command needs a resync.
        """
        if p.sync is not None or not (p.command.completion.ok and p.reply.ok is not None):
            self._abandoned.add(p.command.name)

    def _cancel(self, d: defer.Deferred) -> None:
        for p in list(self._queue):
            if p.deferred is d:
                self._queue.remove(p)
                return
        if self._current is not None and self._current.deferred is d:
            self._abandon(self._current)
            self._finish(self._current)

    def _timed_out(self, p: _Pending) -> None:
        if p is not self._current:
            return
        p.timer = None
        if self.echo and not p.echo_seen:
            # Echo may have been switched off behind our back (a module reset):
            # after two silent commands in a row, stop relying on it.
            self._unechoed_timeouts += 1
            if self._unechoed_timeouts >= 2:
                self.echo = None
                self._unechoed_timeouts = 0
        self._abandon_raw("the command in flight timed out", drain=False)
        self._abandon(p)
        seconds = p.command.timeout
        if p.sync is not None:
            # One resync per queued command: the command it was for fails, so a
            # dead module fails each command in bounded time.
            self.log.warn("the module did not answer {command} (resync) within {seconds} s",
                          command=p.command.name, seconds=seconds)
            waiting = self._queue.popleft() if self._queue else None
            self._finish(p)
            if waiting is not None:
                waiting.deferred.errback(SKTimeoutError(waiting.command.name, seconds, unsent=True))
        else:
            self._fail(p, SKTimeoutError(p.command.name, seconds))
        # Bytes held for a payload that never completed are lines after all.
        self._drain()

    def _finish(self, p: _Pending) -> None:
        if p.timer is not None and p.timer.active():
            p.timer.cancel()
        p.timer = None
        if self._current is p:
            self._current = None
            self._reader.cr_ends_line = False
        self._issue()

    def _succeed(self, p: _Pending, final) -> None:
        p.reply.final = final
        if p.sync is not None:
            self._synced(p)
            return
        self._learn(p)
        self._finish(p)
        p.deferred.callback(p.reply)

    def _fail(self, p: _Pending, error: Exception) -> None:
        self._finish(p)
        p.deferred.errback(error)

    def _synced(self, p: _Pending) -> None:
        """The resync C{p} ended: the stream is in step, the queue resumes."""
        self.log.info("in step with the module again after {command}", command=p.command.name)
        self._abandoned.clear()
        self._finish(p)

    def _learn(self, p: _Pending) -> None:
        """Keep what a completed command tells us about the module's modes."""
        cmd = p.command
        if cmd.name == "SKSREG" and len(cmd.args) == 2 and cmd.args[0] == "SFE":
            self.echo = cmd.args[1] != "0"
        elif cmd.name == "SKRESET":
            self.echo = None
        elif cmd.name == "ROPT" and p.reply.ok is not None and p.reply.ok.param in ("00", "01"):
            self.payload_mode = "binary" if p.reply.ok.param == "00" else "hex"
        elif cmd.name == "WOPT":
            self.payload_mode = "binary" if cmd.args[0] == "00" else "hex"

    def _dispatch(self, value) -> None:
        kind = type(value)
        handler = self._handlers.get(kind)
        if handler is None:
            # Route by kind (memcache's cmd_ / pop3's state_ pattern), looked up once per kind.
            handler = getattr(self, "_line_" + kind.__name__, self._line_result)
            self._handlers[kind] = handler
        handler(value)

    def _notify(self, value) -> None:
        for listener in list(self._listeners):
            try:
                listener(value)
            except Exception:
                self.log.failure("listener {listener!r} failed on {kind}",
                                 listener=listener, kind=type(value).__name__)

    def _line_Event(self, event: V.Event) -> None:
        p = self._current
        if p is not None:
            c = p.command.completion
            if event.num in c.collect_events:
                p.reply.events.append(event)
        self._notify(event)
        for entry in list(self._waiters):
            nums, d = entry
            if event.num in nums and entry in self._waiters:
                self._waiters.remove(entry)
                d.callback(event)
        p = self._current
        if p is not None and p.reply.ok is not None:
            c = p.command.completion
            if event.num in c.success_events:
                self._succeed(p, event)
            elif event.num in c.failure_events:
                self._fail(p, SKEventError(p.command.name, event))

    def _line_RxUdp(self, rx: V.RxUdp) -> None:
        self._notify(rx)

    def _line_PanDesc(self, desc: V.PanDesc) -> None:
        p = self._current
        if p is not None and p.command.completion.collect_pandesc:
            p.reply.pandescs.append(desc)
        self._notify(desc)

    def _line_Echo(self, echo: V.Echo) -> None:
        p = self._current
        if p is not None and not p.echo_seen and p.command.is_echo(echo):
            p.echo_seen = True
            # Only the echo of our own command proves echo is on: a stray line
            # that merely looks like one must not make us ignore real answers.
            self.echo = True
            self._unechoed_timeouts = 0
        else:
            self.log.debug("ignoring an echo that is not the command in flight")

    def _line_Blank(self, _blank) -> None:
        pass  # SKSENDTO's answer with echo off, or the CRLF after a binary payload

    def _line_Unknown(self, unknown: V.Unknown) -> None:
        self._junk("dropping unrecognised line from the module: {line}",
                   line=self.redactor.scrub_fragments(repr(unknown.raw))[:100])

    def _junk(self, format: str, **fields) -> None:
        # Junk is expected now and then (the tail of an interrupted earlier
        # run, radio noise on the UART): counted, and shown at info level
        # only, so that a run that succeeds prints nothing at the default
        # verbosity.
        self.junk_dropped += 1
        self.log.info(format, **fields)

    def _end_ok(self, value) -> Optional[_Pending]:
        """The command an OK/FAIL line ends, or None if it is a stray one."""
        p = self._current
        if p is None or not p.command.completion.ok or p.reply.ok is not None:
            self.log.info("ignoring {line} with no command waiting for it", line=str(value))
            return None
        if self.echo and not p.echo_seen:
            # With echo on, an answer before the echo belongs to an earlier,
            # abandoned command (e.g. one that timed out).
            self.log.info("ignoring {line} that came before the echo of {command}",
                          line=str(value), command=p.command.name)
            return None
        if p.sync is not None and not p.result_seen:
            self.log.info("dropping {line}: it answers an abandoned command", line=str(value))
            return None
        if not p.echo_seen and p.command.name != "SKRESET":
            self.echo = False
        return p

    def _line_Ok(self, ok: V.Ok) -> None:
        p = self._end_ok(ok)
        if p is None:
            return
        p.reply.ok = ok
        if not p.command.completion.success_events:
            self._succeed(p, ok)

    def _line_Fail(self, fail: V.Fail) -> None:
        p = self._end_ok(fail)
        if p is None:
            return
        if p.sync is not None:
            # After the resync's own result line, so its answer: odd, but the
            # stream is in step all the same.
            self.log.warn("{command} (resync) answered {fail}", command=p.command.name, fail=str(fail))
            self._synced(p)
            return
        self._fail(p, SKCommandError(p.command.name, fail))

    def _line_result(self, value) -> None:
        p = self._current
        if p is None:
            self.log.info("ignoring a result line with no command waiting: {kind}",
                          kind=type(value).__name__)
            return
        if self.echo and not p.echo_seen:
            # With echo on, lines before the echo answer an earlier command.
            self.log.info("ignoring a {kind} line that came before the echo of {command}",
                          kind=type(value).__name__, command=p.command.name)
            return
        if p.sync is not None and not p.result_seen:
            if not isinstance(value, p.sync):
                self.log.info("dropping a {kind} line: it answers an abandoned command",
                              kind=type(value).__name__)
                return
            p.result_seen = True  # everything after it answers the resync
        p.reply.lines.append(value)
        result = p.command.completion.result
        if result is not None and isinstance(value, result):
            self._succeed(p, value)

    # -- transcript ------------------------------------------------------------

    def _record_line(self, value, raw: bytes) -> None:
        if self.transcript is None:
            return
        if isinstance(value, V.RxUdp):
            if value.rport == 0x02CC or value.lport == 0x02CC:
                # PANA payloads carry the B-route ID: show only their size.
                text = f"ERXUDP {value.sender} PANA <{len(value.data)} bytes>"
            else:
                text = f"ERXUDP {value.sender} {value.rport:04X} {value.data.hex().upper()}"
        elif isinstance(value, V.Echo) and _SECRET_ECHO.match(value.text):
            text = value.name + " <redacted>"
        elif isinstance(value, V.PanDescField) and value.key == "PairID":
            text = "  PairID:<redacted>"  # the last 8 characters of the B-route ID
        else:
            text = raw.decode("ascii", "replace")
        self.transcript("<", self.redactor.scrub(text))
